//! How much memory this process may still allocate, and allocation that reports failure
//! instead of aborting.
//!
//! [`available`] reads every limit that applies on this machine ([`limits`]: the address-space
//! and data-segment rlimits, the cgroup v2 and v1 memory limits, `/proc/meminfo`'s
//! `MemAvailable`) and returns the one that leaves the least room; [`alloc`] grows buffers
//! with `try_reserve`, so that a size the estimate missed is an error, not an abort.

pub mod alloc;
pub mod limits;

pub use alloc::{OutOfMemory, try_filled_vec, try_grow};
pub use limits::{LimitSource, MemoryLimit, available};

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `824.0 GiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_formatted_in_binary_units() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(824 << 30), "824.0 GiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
    }
}
