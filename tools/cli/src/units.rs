//! Human-readable quantities shared by the subcommands' reports.

/// Bytes in binary units: `512 B`, `1.50 KiB`, `12.50 MiB` … up to TiB.
pub fn bytes_h(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes() {
        assert_eq!(bytes_h(0), "0 B");
        assert_eq!(bytes_h(512), "512 B");
        assert_eq!(bytes_h(1536), "1.50 KiB");
        assert_eq!(bytes_h(3 << 20), "3.00 MiB");
        assert_eq!(bytes_h(90 << 20), "90.00 MiB");
        assert_eq!(bytes_h(5 << 30), "5.00 GiB");
        assert_eq!(bytes_h(3 << 40), "3.00 TiB");
    }
}
