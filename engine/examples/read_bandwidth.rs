//! Memory read bandwidth of this machine with N threads: each thread sums its share of a buffer
//! far larger than the caches, and the best of several passes is reported in bytes per second.
//! The speed scripts (`scripts/bench-vs-llamacpp.sh`) run it beside each benchmark, because the
//! machines here change speed from hour to hour and a decode's share of the bandwidth is only
//! meaningful against a figure taken in the same run.
//!
//! ```text
//! cargo run --release -p tessera-engine --example read_bandwidth -- [THREADS] [MIB] [PASSES]
//! ```
//! Prints one line: `read_bandwidth_bytes_per_s <value>` (defaults: 2 threads, 1024 MiB, 5
//! passes).

use std::time::Instant;

/// Sums `words` with eight independent accumulators (so the loop is bound by loads, not by one
/// addition chain); the result is returned so the reads cannot be optimised away.
fn sum_words(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = words.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, w) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(*w);
        }
    }
    let mut s = tail.iter().fold(0u64, |s, w| s.wrapping_add(*w));
    for a in acc {
        s = s.wrapping_add(a);
    }
    s
}

/// One pass: `threads` scoped threads each read their contiguous share; returns the seconds it
/// took and a checksum.
fn pass(buf: &[u64], threads: usize) -> (f64, u64) {
    let share = buf.len().div_ceil(threads);
    let t0 = Instant::now();
    let sum = std::thread::scope(|s| {
        let handles: Vec<_> = buf
            .chunks(share)
            .map(|part| s.spawn(move || sum_words(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a reader thread panicked"))
            .fold(0u64, u64::wrapping_add)
    });
    (t0.elapsed().as_secs_f64(), sum)
}

fn main() {
    let args: Result<Vec<usize>, _> = std::env::args().skip(1).map(|a| a.parse()).collect();
    let Ok(args) = args else {
        eprintln!("usage: read_bandwidth [THREADS] [MIB] [PASSES] (whole numbers)");
        std::process::exit(2);
    };
    let threads = args.first().copied().unwrap_or(2).max(1);
    let mib = args.get(1).copied().unwrap_or(1024).max(1);
    let passes = args.get(2).copied().unwrap_or(5).max(1);
    let n = mib * (1 << 20) / 8;
    // Distinct values in every page, so no page is shared zero memory.
    let buf: Vec<u64> = (0..n as u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    let mut best = f64::INFINITY;
    let mut check = 0u64;
    for _ in 0..passes {
        let (secs, sum) = pass(&buf, threads);
        best = best.min(secs);
        check ^= sum;
    }
    let bytes = (n * 8) as f64;
    eprintln!("{threads} threads, {mib} MiB, best of {passes} passes (checksum {check:x})");
    println!("read_bandwidth_bytes_per_s {:.0}", bytes / best);
}
