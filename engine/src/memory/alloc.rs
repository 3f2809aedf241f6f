//! Fallible allocation for the large buffers (KV stores, logits, scratch): `try_reserve`
//! first, so a request the system refuses returns [`OutOfMemory`] instead of aborting the
//! process as `vec!` and `Vec::resize` do.

use std::collections::TryReserveError;

/// An allocation the system refused (or whose size overflows).
#[derive(Debug, thiserror::Error)]
#[error("cannot allocate {what}: {bytes} bytes were refused ({source})")]
pub struct OutOfMemory {
    /// What the memory was for.
    pub what: String,
    /// Bytes asked for (saturated at `u64::MAX` when the size overflows).
    pub bytes: u64,
    /// The allocator's reason.
    pub source: TryReserveError,
}

/// Bytes of `n` values of `T`, saturated.
fn bytes_of<T>(n: usize) -> u64 {
    (n as u64).saturating_mul(std::mem::size_of::<T>() as u64)
}

/// A vector of `n` copies of `value`, or [`OutOfMemory`] naming `what`.
pub fn try_filled_vec<T: Clone>(n: usize, value: T, what: &str) -> Result<Vec<T>, OutOfMemory> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|source| OutOfMemory {
        what: what.to_string(),
        bytes: bytes_of::<T>(n),
        source,
    })?;
    v.resize(n, value);
    Ok(v)
}

/// Grow `v` to at least `n` elements (new ones `T::default()`), or [`OutOfMemory`] naming
/// `what`; a no-op when it is long enough already.
pub fn try_grow<T: Default + Clone>(
    v: &mut Vec<T>,
    n: usize,
    what: &str,
) -> Result<(), OutOfMemory> {
    if v.len() < n {
        v.try_reserve_exact(n - v.len())
            .map_err(|source| OutOfMemory {
                what: what.to_string(),
                bytes: bytes_of::<T>(n),
                source,
            })?;
        v.resize(n, T::default());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impossible_size_is_an_error_not_an_abort() {
        let e = try_filled_vec(usize::MAX / 2, 0u32, "test buffer").unwrap_err();
        assert_eq!(e.what, "test buffer");
        assert!(e.to_string().contains("cannot allocate test buffer"), "{e}");
        let mut v: Vec<u64> = vec![1, 2];
        assert!(try_grow(&mut v, usize::MAX / 4, "grown").is_err());
        assert_eq!(v, [1, 2]);
    }

    #[test]
    fn sizes_that_fit_are_filled() {
        assert_eq!(try_filled_vec(3, 7u8, "x").unwrap(), [7, 7, 7]);
        let mut v = vec![1u32];
        try_grow(&mut v, 3, "x").unwrap();
        assert_eq!(v, [1, 0, 0]);
        try_grow(&mut v, 2, "x").unwrap();
        assert_eq!(v.len(), 3);
    }
}
