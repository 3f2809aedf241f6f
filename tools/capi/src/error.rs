//! Status codes, the per-thread last-error message, and the guard every entry point runs its
//! body in: it clears the message, catches panics, and turns an `Error` into a status code
//! with the message stored for `tessera_last_error`.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The result of every fallible function: `TESSERA_OK` (0) or a negative error code.
/// In C it is an `int32_t`; the values never change once published.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum tessera_status {
    /// Success.
    TESSERA_OK = 0,
    /// An argument is out of its documented domain (a negative size, a bad parameter value).
    TESSERA_ERR_INVALID_ARGUMENT = -1,
    /// A required pointer (handle, buffer, out-parameter, string) is NULL.
    TESSERA_ERR_NULL_POINTER = -2,
    /// The output buffer is too small; `*needed` (or `*n_out`) holds the size required.
    TESSERA_ERR_BUFFER_TOO_SMALL = -3,
    /// An index or token id is outside its range (e.g. a token id not in `[0, n_vocab)`).
    TESSERA_ERR_OUT_OF_RANGE = -4,
    /// Input text is not valid UTF-8.
    TESSERA_ERR_INVALID_UTF8 = -5,
    /// The handle is not a live handle of the expected kind (freed, foreign or corrupt).
    TESSERA_ERR_INVALID_HANDLE = -6,
    /// The model file could not be opened, parsed or loaded.
    TESSERA_ERR_LOAD_FAILED = -7,
    /// The tokens do not fit in the context's remaining space.
    TESSERA_ERR_CONTEXT_FULL = -8,
    /// A looked-up item (a metadata key) does not exist.
    TESSERA_ERR_NOT_FOUND = -9,
    /// The context or sampler is being used by another thread right now.
    TESSERA_ERR_BUSY = -10,
    /// The chat template failed to compile or to render.
    TESSERA_ERR_TEMPLATE = -11,
    /// The request is valid but not supported by this build (e.g. a device other than "cpu").
    TESSERA_ERR_UNSUPPORTED = -12,
    /// Evaluation failed inside the engine.
    TESSERA_ERR_DECODE_FAILED = -13,
    /// No logits are available (nothing decoded since the context was created or cleared).
    TESSERA_ERR_NO_LOGITS = -14,
    /// A sampler's grammar cannot go on: no token can continue it, or a token came after its
    /// end.
    TESSERA_ERR_GRAMMAR = -15,
    /// A Rust panic was caught at the boundary (a bug in Tessera): the handle involved should
    /// be freed.
    TESSERA_ERR_PANIC = -99,
}

pub use tessera_status::*;

/// An error on its way to the C caller: a status code and a message.
#[derive(Debug)]
pub(crate) struct Error {
    pub(crate) status: tessera_status,
    pub(crate) msg: String,
}

impl Error {
    /// An error with `status` and `msg`.
    pub(crate) fn new(status: tessera_status, msg: impl Into<String>) -> Error {
        Error {
            status,
            msg: msg.into(),
        }
    }

    /// `TESSERA_ERR_INVALID_ARGUMENT`.
    pub(crate) fn invalid(msg: impl Into<String>) -> Error {
        Error::new(TESSERA_ERR_INVALID_ARGUMENT, msg)
    }

    /// `TESSERA_ERR_NULL_POINTER` naming the parameter.
    pub(crate) fn null(what: &str) -> Error {
        Error::new(TESSERA_ERR_NULL_POINTER, format!("{what} is NULL"))
    }

    /// `TESSERA_ERR_OUT_OF_RANGE`.
    pub(crate) fn range(msg: impl Into<String>) -> Error {
        Error::new(TESSERA_ERR_OUT_OF_RANGE, msg)
    }

    /// A failed decode: `TESSERA_ERR_CONTEXT_FULL` where the KV pool the sequences share
    /// had no room (nothing was evaluated), else `TESSERA_ERR_DECODE_FAILED`.
    pub(crate) fn decode(e: tessera_models::ModelError) -> Error {
        use tessera_engine::backend::BackendError;
        let status = match e {
            tessera_models::ModelError::Backend(BackendError::KvFull(_)) => {
                TESSERA_ERR_CONTEXT_FULL
            }
            _ => TESSERA_ERR_DECODE_FAILED,
        };
        Error::new(status, e.to_string())
    }
}

/// Result of an entry point's body.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

thread_local! {
    /// The message of the last call on this thread, NUL-terminated ("" after a success).
    static LAST_ERROR: RefCell<Vec<u8>> = RefCell::new(vec![0]);
}

/// Store `msg` as this thread's last error (interior NULs become '?').
fn set_last_error(msg: &str) {
    let _ = LAST_ERROR.try_with(|cell| {
        if let Ok(mut buf) = cell.try_borrow_mut() {
            buf.clear();
            buf.extend(msg.bytes().map(|b| if b == 0 { b'?' } else { b }));
            buf.push(0);
        }
    });
}

/// Make this thread's last error the empty string, keeping the allocation.
fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|cell| {
        if let Ok(mut buf) = cell.try_borrow_mut() {
            buf.clear();
            buf.push(0);
        }
    });
}

/// The text of a panic payload.
fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Run the body of entry point `name`: clear the last error, catch panics, and turn the
/// outcome into a status code, storing the message of a failure as `"{name}: {message}"`.
pub(crate) fn guard(name: &str, body: impl FnOnce() -> Result<()>) -> tessera_status {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => TESSERA_OK,
        Ok(Err(e)) => {
            set_last_error(&format!("{name}: {}", e.msg));
            e.status
        }
        Err(payload) => {
            let text = catch_unwind(AssertUnwindSafe(|| panic_text(&*payload)))
                .unwrap_or_else(|_| "unprintable panic".to_string());
            // Dropping a payload can itself panic; never let that unwind into C.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            set_last_error(&format!("{name}: internal panic: {text}"));
            TESSERA_ERR_PANIC
        }
    }
}

/// Run `body` for an entry point that returns a value rather than a status; a panic yields
/// `fallback`. The last error is left untouched.
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// The message of the most recent `tessera_*` call on the calling thread: empty ("") when it
/// succeeded, never NULL.
///
/// Ownership: the string belongs to the library; it stays valid until the next `tessera_*`
/// call on the same thread (this function and `tessera_status_str` do not change it). Copy it
/// to keep it.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_last_error() -> *const c_char {
    static EMPTY: &[u8] = b"\0";
    guard_value(EMPTY.as_ptr().cast(), || {
        LAST_ERROR
            .try_with(|cell| match cell.try_borrow() {
                Ok(buf) if buf.last() == Some(&0) => buf.as_ptr().cast(),
                _ => EMPTY.as_ptr().cast(),
            })
            .unwrap_or(EMPTY.as_ptr().cast())
    })
}

/// A short constant description of `status` (e.g. "buffer too small"); "unknown status" for
/// a value that is not a `tessera_status`. Never NULL.
///
/// Ownership: a static string; never free it.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_status_str(status: i32) -> *const c_char {
    let s: &'static [u8] = match status {
        0 => b"ok\0",
        -1 => b"invalid argument\0",
        -2 => b"null pointer\0",
        -3 => b"buffer too small\0",
        -4 => b"out of range\0",
        -5 => b"invalid UTF-8\0",
        -6 => b"invalid handle\0",
        -7 => b"load failed\0",
        -8 => b"context full\0",
        -9 => b"not found\0",
        -10 => b"busy in another thread\0",
        -11 => b"chat template error\0",
        -12 => b"unsupported\0",
        -13 => b"decode failed\0",
        -14 => b"no logits\0",
        -15 => b"grammar error\0",
        -99 => b"internal panic\0",
        _ => b"unknown status\0",
    };
    s.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: `tessera_last_error` always returns a NUL-terminated string that lives until
        // the next call on this thread.
        unsafe { CStr::from_ptr(tessera_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn guard_sets_and_clears_the_message() {
        assert_eq!(
            guard("f", || Err(Error::invalid("bad\0thing"))),
            TESSERA_ERR_INVALID_ARGUMENT
        );
        assert_eq!(last(), "f: bad?thing");
        assert_eq!(guard("g", || Ok(())), TESSERA_OK);
        assert_eq!(last(), "");
    }

    #[test]
    fn guard_catches_panics() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let st = guard("h", || panic!("boom {}", 1));
        std::panic::set_hook(prev);
        assert_eq!(st, TESSERA_ERR_PANIC);
        assert_eq!(last(), "h: internal panic: boom 1");
    }

    #[test]
    fn every_status_has_a_description() {
        for st in [
            TESSERA_OK,
            TESSERA_ERR_INVALID_ARGUMENT,
            TESSERA_ERR_NULL_POINTER,
            TESSERA_ERR_BUFFER_TOO_SMALL,
            TESSERA_ERR_OUT_OF_RANGE,
            TESSERA_ERR_INVALID_UTF8,
            TESSERA_ERR_INVALID_HANDLE,
            TESSERA_ERR_LOAD_FAILED,
            TESSERA_ERR_CONTEXT_FULL,
            TESSERA_ERR_NOT_FOUND,
            TESSERA_ERR_BUSY,
            TESSERA_ERR_TEMPLATE,
            TESSERA_ERR_UNSUPPORTED,
            TESSERA_ERR_DECODE_FAILED,
            TESSERA_ERR_NO_LOGITS,
            TESSERA_ERR_GRAMMAR,
            TESSERA_ERR_PANIC,
        ] {
            // SAFETY: `tessera_status_str` returns a static NUL-terminated string.
            let s = unsafe { CStr::from_ptr(tessera_status_str(st as i32)) };
            assert_ne!(s.to_bytes(), b"unknown status", "{st:?}");
        }
    }
}
