//! Per-turn and per-session numbers of `tessera chat`, and how they are printed.
//!
//! The line printed after each reply reads
//! `prompt: 14 new + 56 cached tokens, 312.5 t/s | reply: 23 tokens, 41.2 t/s | KV: 1.40 MiB / 90.00 MiB (93/4096 tokens)`;
//! the tests read the `new + cached` counts from it.

use crate::units::bytes_h;

/// Why a reply ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnEnd {
    /// The model wrote an end-of-turn token.
    EndOfTurn,
    /// Ctrl-C.
    Interrupted,
    /// `-n/--n-predict` tokens were written.
    Limit,
    /// The context is full (and `--context-full stop`, or nothing left to drop).
    ContextFull,
}

/// What one turn cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct TurnStats {
    /// Tokens in the KV cache when the turn began.
    pub cached_before: usize,
    /// Tokens of the rendered prompt (the whole conversation so far).
    pub prompt_tokens: usize,
    /// Of those, the tokens kept from the KV cache.
    pub reused: usize,
    /// Prompt tokens evaluated (`prompt_tokens - reused`, summed over re-evaluations after
    /// old turns were dropped).
    pub evaluated: usize,
    /// Seconds spent evaluating the prompt.
    pub prompt_seconds: f64,
    /// Tokens generated (including the end-of-turn token).
    pub generated: usize,
    /// Seconds spent generating.
    pub generation_seconds: f64,
    /// Messages dropped to make room.
    pub dropped_messages: usize,
    /// Whether the cache had to be evaluated again from the start (ring layers).
    pub full_reeval: bool,
}

impl TurnStats {
    /// Prompt tokens per second.
    pub fn prompt_tps(&self) -> f64 {
        rate(self.evaluated, self.prompt_seconds)
    }

    /// Generated tokens per second.
    pub fn generation_tps(&self) -> f64 {
        rate(self.generated, self.generation_seconds)
    }
}

/// Totals over a session.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    /// Replies produced.
    pub turns: usize,
    /// Prompt tokens evaluated.
    pub evaluated: usize,
    /// Seconds spent on prompts.
    pub prompt_seconds: f64,
    /// Tokens generated.
    pub generated: usize,
    /// Seconds spent generating.
    pub generation_seconds: f64,
}

impl Totals {
    /// Add one turn.
    pub fn add(&mut self, t: &TurnStats) {
        self.turns += 1;
        self.evaluated += t.evaluated;
        self.prompt_seconds += t.prompt_seconds;
        self.generated += t.generated;
        self.generation_seconds += t.generation_seconds;
    }
}

/// The state of the KV cache.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvState {
    /// Bytes holding tokens.
    pub used_bytes: usize,
    /// Bytes allocated.
    pub total_bytes: usize,
    /// Tokens cached.
    pub n_past: usize,
    /// Context size.
    pub n_ctx: usize,
}

/// `n / seconds`, 0 for nothing done.
fn rate(n: usize, seconds: f64) -> f64 {
    if n == 0 || seconds <= 0.0 {
        0.0
    } else {
        n as f64 / seconds
    }
}

/// The KV part of the stats lines.
pub fn kv_line(kv: &KvState) -> String {
    format!(
        "KV: {} / {} ({}/{} tokens)",
        bytes_h(kv.used_bytes as u64),
        bytes_h(kv.total_bytes as u64),
        kv.n_past,
        kv.n_ctx
    )
}

/// The line printed after a reply.
pub fn turn_line(t: &TurnStats, kv: &KvState) -> String {
    let mut s = format!(
        "prompt: {} new + {} cached tokens, {:.1} t/s | reply: {} tokens, {:.1} t/s | {}",
        t.evaluated,
        t.reused,
        t.prompt_tps(),
        t.generated,
        t.generation_tps(),
        kv_line(kv)
    );
    if t.dropped_messages > 0 {
        s.push_str(&format!(" | dropped {} old messages", t.dropped_messages));
    }
    if t.full_reeval {
        s.push_str(" | cache rebuilt");
    }
    s
}

/// What `/stats` prints: the last turn, the totals and the cache.
pub fn report(last: Option<&TurnStats>, totals: &Totals, kv: &KvState) -> String {
    let mut s = String::new();
    match last {
        Some(t) => s.push_str(&format!(
            "last turn: prompt {} tokens ({} evaluated, {} reused of {} cached), {:.1} t/s; \
             reply {} tokens, {:.1} t/s\n",
            t.prompt_tokens,
            t.evaluated,
            t.reused,
            t.cached_before,
            t.prompt_tps(),
            t.generated,
            t.generation_tps()
        )),
        None => s.push_str("last turn: none yet\n"),
    }
    s.push_str(&format!(
        "session: {} replies; prompt {} tokens, {:.1} t/s; generated {} tokens, {:.1} t/s\n",
        totals.turns,
        totals.evaluated,
        rate(totals.evaluated, totals.prompt_seconds),
        totals.generated,
        rate(totals.generated, totals.generation_seconds)
    ));
    s.push_str(&format!(
        "KV cache: {} used of {} ({} of {} tokens)",
        bytes_h(kv.used_bytes as u64),
        bytes_h(kv.total_bytes as u64),
        kv.n_past,
        kv.n_ctx
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let t = TurnStats {
            evaluated: 14,
            reused: 56,
            prompt_seconds: 0.5,
            generated: 10,
            generation_seconds: 0.25,
            ..Default::default()
        };
        let kv = KvState {
            used_bytes: 3 << 20,
            total_bytes: 90 << 20,
            n_past: 80,
            n_ctx: 4096,
        };
        assert_eq!(
            turn_line(&t, &kv),
            "prompt: 14 new + 56 cached tokens, 28.0 t/s | reply: 10 tokens, 40.0 t/s | \
             KV: 3.00 MiB / 90.00 MiB (80/4096 tokens)"
        );
        let r = report(None, &Totals::default(), &KvState::default());
        assert!(
            r.contains("KV cache: 0 B used of 0 B (0 of 0 tokens)"),
            "{r}"
        );
    }
}
