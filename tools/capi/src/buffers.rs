//! Reading arguments from C and writing results back: NUL-terminated and counted strings,
//! arrays, out-parameters, and the "needed size" buffer convention the header documents.
//!
//! Every helper checks for NULL, negative sizes and misalignment before it forms a Rust
//! reference, so a hostile argument becomes an `Error` rather than undefined behaviour.

use std::ffi::{CStr, c_char};

use crate::error::{Error, Result, TESSERA_ERR_BUFFER_TOO_SMALL, TESSERA_ERR_INVALID_UTF8};

/// Check that `p` is non-NULL and aligned for `T`.
fn check_ptr<T>(p: *const T, what: &str) -> Result<()> {
    if p.is_null() {
        return Err(Error::null(what));
    }
    if !(p as usize).is_multiple_of(align_of::<T>()) {
        return Err(Error::invalid(format!(
            "{what} is not aligned for its type ({} bytes)",
            align_of::<T>()
        )));
    }
    Ok(())
}

/// A count or capacity from C: must be `>= min`.
pub(crate) fn count(n: i32, what: &str, min: i32) -> Result<usize> {
    if n < min {
        return Err(Error::invalid(format!("{what} is {n}, must be >= {min}")));
    }
    Ok(n as usize)
}

/// Store `value` through the out-parameter `p`.
///
/// # Safety
/// `p`, when non-NULL and aligned, must point to writable memory for a `T`.
pub(crate) unsafe fn put<T>(p: *mut T, value: T, what: &str) -> Result<()> {
    check_ptr(p, what)?;
    // SAFETY: checked non-NULL and aligned; the caller vouches for the memory.
    unsafe { p.write(value) };
    Ok(())
}

/// Check an out-parameter before any work is done, so that a NULL one is reported first.
pub(crate) fn out_ptr<T>(p: *mut T, what: &str) -> Result<()> {
    check_ptr(p, what)
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p`, when non-NULL, must point to a NUL-terminated string.
pub(crate) unsafe fn cstr<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::null(what));
    }
    // SAFETY: the caller vouches for the terminating NUL.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    utf8(bytes, what)
}

/// A NUL-terminated string as raw bytes (file paths need not be UTF-8).
///
/// # Safety
/// `p`, when non-NULL, must point to a NUL-terminated string.
pub(crate) unsafe fn cbytes<'a>(p: *const c_char, what: &str) -> Result<&'a [u8]> {
    if p.is_null() {
        return Err(Error::null(what));
    }
    // SAFETY: the caller vouches for the terminating NUL.
    Ok(unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// `bytes` as UTF-8, or `TESSERA_ERR_INVALID_UTF8` naming the first bad byte.
pub(crate) fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        Error::new(
            TESSERA_ERR_INVALID_UTF8,
            format!("{what} is not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })
}

/// A counted array argument of `n >= min_len` elements.
///
/// # Safety
/// `p`, when non-NULL and aligned, must point to `n` readable elements.
pub(crate) unsafe fn slice<'a, T>(
    p: *const T,
    n: i32,
    what: &str,
    min_len: i32,
) -> Result<&'a [T]> {
    let n = count(n, &format!("the length of {what}"), min_len)?;
    if n == 0 && p.is_null() {
        return Ok(&[]);
    }
    check_ptr(p, what)?;
    // SAFETY: checked non-NULL and aligned; the caller vouches for `n` elements.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Copy `items` into the caller's buffer `buf` of `capacity` elements and store the count in
/// `*n_out`; when it does not fit, store the count and return `TESSERA_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `buf`, when non-NULL, must have room for `capacity` elements; `n_out` must be writable.
pub(crate) unsafe fn write_items<T: Copy>(
    items: &[T],
    buf: *mut T,
    capacity: i32,
    n_out: *mut i32,
    what: &str,
) -> Result<()> {
    let cap = check_capacity(buf, capacity, what)?;
    let n = i32::try_from(items.len())
        .map_err(|_| Error::range(format!("{} {what} do not fit in an int32_t", items.len())))?;
    // SAFETY: the caller vouches for `n_out`.
    unsafe { put(n_out, n, "the count out-parameter")? };
    if items.len() > cap {
        return Err(Error::new(
            TESSERA_ERR_BUFFER_TOO_SMALL,
            format!("{what}: room for {cap}, {} needed", items.len()),
        ));
    }
    if !items.is_empty() {
        // SAFETY: `buf` is non-NULL and aligned (check_capacity) with room for `cap >= len`.
        unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), buf, items.len()) };
    }
    Ok(())
}

/// Copy `bytes` plus a terminating NUL into `buf` of `capacity` bytes and store
/// `bytes.len() + 1` in `*needed`; when it does not fit, store the size, write an empty string
/// (when `capacity > 0`) and return `TESSERA_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `buf`, when non-NULL, must have room for `capacity` bytes; `needed` must be writable.
pub(crate) unsafe fn write_text(
    bytes: &[u8],
    buf: *mut c_char,
    capacity: i32,
    needed: *mut i32,
    what: &str,
) -> Result<()> {
    let cap = check_capacity(buf, capacity, what)?;
    let size = bytes.len() + 1;
    let size_i32 = i32::try_from(size)
        .map_err(|_| Error::range(format!("{what} of {size} bytes is too large")))?;
    // SAFETY: the caller vouches for `needed`.
    unsafe { put(needed, size_i32, "the size out-parameter `needed`")? };
    if size > cap {
        if cap > 0 {
            // SAFETY: non-NULL with room for at least one byte.
            unsafe { buf.write(0) };
        }
        return Err(Error::new(
            TESSERA_ERR_BUFFER_TOO_SMALL,
            format!("{what}: buffer of {cap} bytes, {size} needed (including the NUL)"),
        ));
    }
    // SAFETY: `buf` has room for `cap >= size` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), bytes.len());
        buf.add(bytes.len()).write(0);
    }
    Ok(())
}

/// Validate an output buffer: capacity `>= 0`, and `buf` non-NULL and aligned unless the
/// capacity is 0 (a size query).
fn check_capacity<T>(buf: *mut T, capacity: i32, what: &str) -> Result<usize> {
    let cap = count(capacity, &format!("the capacity for {what}"), 0)?;
    if cap > 0 || !buf.is_null() {
        check_ptr(buf, &format!("the buffer for {what}"))?;
    }
    Ok(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{TESSERA_ERR_INVALID_ARGUMENT, TESSERA_ERR_NULL_POINTER};

    #[test]
    fn text_follows_the_needed_size_convention() {
        let mut needed = 0;
        let mut buf = [1 as c_char; 4];
        // SAFETY: `buf` holds the 4 bytes given as capacity and `needed` is a live i32.
        let e = unsafe { write_text(b"abcd", buf.as_mut_ptr(), 4, &mut needed, "t") };
        assert_eq!(e.unwrap_err().status, TESSERA_ERR_BUFFER_TOO_SMALL);
        assert_eq!(needed, 5);
        assert_eq!(buf[0], 0);
        // SAFETY: a NULL buffer with capacity 0 is a size query; `needed` is a live i32.
        let e = unsafe { write_text(b"abcd", std::ptr::null_mut(), 0, &mut needed, "t") };
        assert_eq!(e.unwrap_err().status, TESSERA_ERR_BUFFER_TOO_SMALL);
        assert_eq!(needed, 5);
        // SAFETY: a NULL buffer is refused before any write; `needed` is a live i32.
        let e = unsafe { write_text(b"abcd", std::ptr::null_mut(), 3, &mut needed, "t") };
        assert_eq!(e.unwrap_err().status, TESSERA_ERR_NULL_POINTER);
        // SAFETY: a negative capacity is refused before any write; `needed` is a live i32.
        let e = unsafe { write_text(b"abcd", buf.as_mut_ptr(), -1, &mut needed, "t") };
        assert_eq!(e.unwrap_err().status, TESSERA_ERR_INVALID_ARGUMENT);
        let mut big = [1 as c_char; 5];
        // SAFETY: `big` holds the 5 bytes given as capacity and `needed` is a live i32.
        unsafe { write_text(b"abcd", big.as_mut_ptr(), 5, &mut needed, "t") }.unwrap();
        assert_eq!(&big, &[97, 98, 99, 100, 0]);
    }

    #[test]
    fn items_follow_the_count_convention() {
        let mut n = 0;
        let mut buf = [0u32; 2];
        // SAFETY: `buf` holds the 2 items given as capacity and `n` is a live i32.
        let e = unsafe { write_items(&[1, 2, 3], buf.as_mut_ptr(), 2, &mut n, "t") };
        assert_eq!(e.unwrap_err().status, TESSERA_ERR_BUFFER_TOO_SMALL);
        assert_eq!(n, 3);
        // SAFETY: `buf` holds the 2 items given as capacity and `n` is a live i32.
        unsafe { write_items(&[7, 8], buf.as_mut_ptr(), 2, &mut n, "t") }.unwrap();
        assert_eq!((n, buf), (2, [7, 8]));
    }

    #[test]
    fn misaligned_pointers_are_refused() {
        let words = [0u32; 4];
        // SAFETY: byte 1 of the 16-byte array `words`.
        let p = unsafe { (words.as_ptr() as *const u8).add(1) } as *const u32;
        // SAFETY: the misaligned pointer is refused before any read (and 4 bytes from it are
        // inside `words` anyway).
        let e = unsafe { slice(p, 1, "ids", 1) };
        assert_eq!(e.unwrap_err().status, TESSERA_ERR_INVALID_ARGUMENT);
    }
}
