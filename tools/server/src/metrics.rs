//! Counters and gauges shared by the HTTP side and the engine thread, and their Prometheus
//! text rendering (`GET /metrics`).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The server's counters (monotonic) and gauges (current values).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Completion requests accepted by an endpoint (valid or not).
    pub requests_total: AtomicU64,
    /// Prompt tokens evaluated (cached ones not counted).
    pub prompt_tokens_total: AtomicU64,
    /// Tokens generated.
    pub generated_tokens_total: AtomicU64,
    /// Requests waiting for a slot.
    pub queue_depth: AtomicI64,
    /// Slots serving a request.
    pub busy_slots: AtomicI64,
    /// KV cells (token positions) in use, all slots together; an idle slot keeps its last
    /// request's tokens for prefix reuse.
    pub kv_cells_used: AtomicI64,
    /// KV cells (token positions) held by slots serving a request.
    pub kv_cells_busy: AtomicI64,
    /// KV cells of all slots together (the pool they share).
    pub kv_cells_total: AtomicI64,
    /// Times a request gave its KV cells up for older ones (the pool was full) and evaluated
    /// its tokens again later.
    pub preemptions_total: AtomicU64,
}

impl Metrics {
    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, v: i64| {
            let _ = writeln!(s, "# HELP tessera_{name} {help}");
            let _ = writeln!(s, "# TYPE tessera_{name} {kind}");
            let _ = writeln!(s, "tessera_{name} {v}");
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
        let gauge = |a: &AtomicI64| a.load(Ordering::Relaxed);
        metric(
            "requests_total",
            "counter",
            "Completion requests received.",
            get(&self.requests_total),
        );
        metric(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens evaluated (cached prefixes not counted).",
            get(&self.prompt_tokens_total),
        );
        metric(
            "tokens_generated_total",
            "counter",
            "Tokens generated.",
            get(&self.generated_tokens_total),
        );
        metric(
            "preemptions_total",
            "counter",
            "Requests that gave their KV cells up to older ones (the cells were all taken) and \
             evaluated their tokens again later.",
            get(&self.preemptions_total),
        );
        metric(
            "queue_depth",
            "gauge",
            "Requests waiting for a slot.",
            gauge(&self.queue_depth),
        );
        metric(
            "busy_slots",
            "gauge",
            "Slots serving a request.",
            gauge(&self.busy_slots),
        );
        metric(
            "kv_cells_used",
            "gauge",
            "KV cache cells holding tokens, all slots (idle ones keep theirs for prefix reuse).",
            gauge(&self.kv_cells_used),
        );
        metric(
            "kv_cells_busy",
            "gauge",
            "KV cache cells held by slots serving a request (idle slots' cached prefixes are \
             in kv_cells_used only).",
            gauge(&self.kv_cells_busy),
        );
        metric(
            "kv_cells_total",
            "gauge",
            "KV cache cells, all slots (on the CPU, one pool they share).",
            gauge(&self.kv_cells_total),
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_its_type() {
        let m = Metrics::default();
        m.busy_slots.store(2, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("# TYPE tessera_busy_slots gauge\ntessera_busy_slots 2\n"));
        assert!(text.contains("tessera_requests_total 0\n"));
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 9);
    }
}
