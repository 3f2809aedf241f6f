//! Progress samples of a long `tessera run` (`--stats-interval N`): every N generated tokens,
//! how many tokens so far, the speed over the last interval (with and without the time spent
//! in context shifts), the process's resident memory and how full the context is. Printed to
//! stderr as they are taken, and listed in `--json`.

use std::time::Instant;

use serde::Serialize;

/// Resident set size of this process in bytes (`VmRSS` of `/proc/self/status`); `None` where
/// there is no procfs.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// The `VmRSS:` line of a `/proc/PID/status` text, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(n * 1024),
        _ => None,
    }
}

/// One progress sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Tokens generated so far.
    pub generated: usize,
    /// Seconds since generation started.
    pub seconds: f64,
    /// Tokens per second over the interval that ends here (context shifts included).
    pub tokens_per_second: f64,
    /// Tokens per second over the interval, not counting the time spent in context shifts.
    pub decode_tokens_per_second: f64,
    /// Seconds spent in context shifts during the interval.
    pub shift_seconds: f64,
    /// Resident memory in bytes, when it can be read.
    pub rss_bytes: Option<u64>,
    /// Tokens in the KV cache.
    pub n_past: usize,
    /// Context shifts so far.
    pub context_shifts: usize,
}

impl Sample {
    /// The sample as a line for stderr.
    pub fn line(&self) -> String {
        let rss = match self.rss_bytes {
            Some(b) => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
            None => "unknown".to_string(),
        };
        format!(
            "tessera: stats: {:6} tokens | {:7.2} t/s | {:7.2} t/s without shifts | \
             {} context shifts ({:.2} s in this interval) | RSS {rss} | n_past {}",
            self.generated,
            self.tokens_per_second,
            self.decode_tokens_per_second,
            self.context_shifts,
            self.shift_seconds,
            self.n_past
        )
    }
}

/// Takes a [`Sample`] every `interval` generated tokens (never when `interval` is 0).
pub struct Progress {
    interval: usize,
    start: Instant,
    last: Instant,
    last_generated: usize,
    last_shift_seconds: f64,
    samples: Vec<Sample>,
}

impl Progress {
    /// Start counting now.
    pub fn new(interval: usize) -> Progress {
        let now = Instant::now();
        Progress {
            interval,
            start: now,
            last: now,
            last_generated: 0,
            last_shift_seconds: 0.0,
            samples: Vec::new(),
        }
    }

    /// Called after each generated token with the counts so far (`shift_seconds`: all the
    /// time spent in context shifts): returns the new sample when `generated` completes an
    /// interval.
    pub fn tick(
        &mut self,
        generated: usize,
        n_past: usize,
        context_shifts: usize,
        shift_seconds: f64,
    ) -> Option<Sample> {
        if self.interval == 0 || generated == 0 || !generated.is_multiple_of(self.interval) {
            return None;
        }
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64().max(1e-9);
        let shifting = (shift_seconds - self.last_shift_seconds).clamp(0.0, dt);
        let n = (generated - self.last_generated) as f64;
        let sample = Sample {
            generated,
            seconds: now.duration_since(self.start).as_secs_f64(),
            tokens_per_second: n / dt,
            decode_tokens_per_second: n / (dt - shifting).max(1e-9),
            shift_seconds: shifting,
            rss_bytes: resident_bytes(),
            n_past,
            context_shifts,
        };
        self.last = now;
        self.last_generated = generated;
        self.last_shift_seconds = shift_seconds;
        self.samples.push(sample);
        Some(sample)
    }

    /// The samples taken so far.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\ttessera\nVmPeak:\t  300000 kB\nVmRSS:\t  123456 kB\nThreads:\t2\n";
        assert_eq!(parse_vm_rss(status), Some(123456 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 pages\n"), None);
    }

    #[test]
    fn this_process_has_resident_memory() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(resident_bytes().unwrap() > 0);
        }
    }

    #[test]
    fn samples_every_interval() {
        let mut p = Progress::new(3);
        let taken: Vec<usize> = (1..=10)
            .filter_map(|g| p.tick(g, g + 5, g / 4, 0.0))
            .map(|s| s.generated)
            .collect();
        assert_eq!(taken, [3, 6, 9]);
        let s = p.samples()[1];
        assert_eq!((s.n_past, s.context_shifts), (11, 1));
        assert!(s.tokens_per_second > 0.0 && s.seconds >= p.samples()[0].seconds);
        assert!(s.line().contains("t/s"));
        assert_eq!(s.shift_seconds, 0.0);
        assert_eq!(s.tokens_per_second, s.decode_tokens_per_second);

        // Time spent shifting is taken out of the decode speed.
        let mut p = Progress::new(1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let s = p.tick(1, 1, 1, 0.01).unwrap();
        assert!(s.shift_seconds > 0.0 && s.shift_seconds <= 0.01);
        assert!(s.decode_tokens_per_second > s.tokens_per_second);

        let mut off = Progress::new(0);
        assert!((1..100).all(|g| off.tick(g, g, 0, 0.0).is_none()));
        assert!(off.samples().is_empty());
    }
}
