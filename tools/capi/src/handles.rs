//! Opaque handles: boxed Rust structs handed to C as pointers, checked on every call.
//!
//! Two checks guard a handle. A process-wide table of live handles (address → kind) is
//! consulted *before* the pointer is dereferenced, so NULL, random pointers, handles of the
//! wrong kind and freed handles are refused without touching their memory. Then the magic
//! number at the start of the struct is compared, which catches memory corruption. The limit:
//! once a freed handle's address is reused by a new handle of the same kind, the stale pointer
//! is indistinguishable from the new handle (C gives us nothing but the address).
//!
//! Contexts and samplers keep their mutable state behind a mutex that is only ever
//! `try_lock`ed: a second thread using the same handle gets `TESSERA_ERR_BUSY` instead of a
//! data race, and a panic inside a call poisons the handle, which then refuses further use.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::error::{
    Error, Result, TESSERA_ERR_BUSY, TESSERA_ERR_INVALID_HANDLE, TESSERA_ERR_PANIC,
};

/// The kinds of handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `tessera_model`.
    Model,
    /// `tessera_context`.
    Context,
    /// `tessera_sampler`.
    Sampler,
}

/// Live handles: address → kind.
static LIVE: Mutex<BTreeMap<usize, Kind>> = Mutex::new(BTreeMap::new());

/// The table, even when a panic poisoned its lock (its content is always consistent: every
/// update is a single insert or remove).
fn live() -> MutexGuard<'static, BTreeMap<usize, Kind>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Rust struct that crosses the boundary as an opaque pointer.
pub(crate) trait Handle: Sized + 'static {
    /// Its kind in the table.
    const KIND: Kind;
    /// The value of its magic field while alive.
    const MAGIC: u64;
    /// The C type name, for messages.
    const NAME: &'static str;
    /// The magic field.
    fn magic(&self) -> u64;
    /// Overwrite the magic field (done just before the memory is released).
    fn set_magic(&mut self, value: u64);
}

/// Box `value`, register it as live and return the pointer C will hold.
pub(crate) fn publish<T: Handle>(value: T) -> *mut T {
    let p = Box::into_raw(Box::new(value));
    live().insert(p as usize, T::KIND);
    p
}

/// The handle behind `p`, after the NULL, liveness, kind and magic checks.
///
/// # Safety
/// `p` must not be freed by another thread while the returned reference is in use (the
/// header documents this rule for callers).
pub(crate) unsafe fn get<'a, T: Handle>(p: *const T) -> Result<&'a T> {
    if p.is_null() {
        return Err(Error::null(&format!("the {} handle", T::NAME)));
    }
    match live().get(&(p as usize)) {
        Some(&k) if k == T::KIND => {}
        Some(&k) => {
            return Err(Error::new(
                TESSERA_ERR_INVALID_HANDLE,
                format!("expected a {} handle, got a {k:?} handle", T::NAME),
            ));
        }
        None => {
            return Err(Error::new(
                TESSERA_ERR_INVALID_HANDLE,
                format!(
                    "{p:p} is not a live {} handle (already freed, or never created by Tessera)",
                    T::NAME
                ),
            ));
        }
    }
    // SAFETY: the table says `p` came from `publish::<T>` and has not been released.
    let r = unsafe { &*p };
    if r.magic() != T::MAGIC {
        return Err(Error::new(
            TESSERA_ERR_INVALID_HANDLE,
            format!("{} handle {p:p} is corrupt (bad magic number)", T::NAME),
        ));
    }
    Ok(r)
}

/// Unregister and drop the handle behind `p`; NULL is a no-op.
///
/// # Safety
/// No other thread may be using the handle.
pub(crate) unsafe fn release<T: Handle>(p: *mut T) -> Result<()> {
    if p.is_null() {
        return Ok(());
    }
    {
        let mut table = live();
        match table.get(&(p as usize)) {
            Some(&k) if k == T::KIND => {
                table.remove(&(p as usize));
            }
            _ => {
                return Err(Error::new(
                    TESSERA_ERR_INVALID_HANDLE,
                    format!(
                        "{p:p} is not a live {} handle (double free, or never created by Tessera)",
                        T::NAME
                    ),
                ));
            }
        }
    }
    // SAFETY: `p` came from `publish::<T>` (Box::into_raw) and was live until the removal
    // above, which only one caller can win.
    let mut boxed = unsafe { Box::from_raw(p) };
    boxed.set_magic(0);
    drop(boxed);
    Ok(())
}

/// Lock a handle's state without waiting: busy → `TESSERA_ERR_BUSY`; poisoned by an earlier
/// panic → `TESSERA_ERR_PANIC`.
pub(crate) fn lock<'a, S>(m: &'a Mutex<S>, name: &str) -> Result<MutexGuard<'a, S>> {
    match m.try_lock() {
        Ok(g) => Ok(g),
        Err(TryLockError::WouldBlock) => Err(Error::new(
            TESSERA_ERR_BUSY,
            format!("the {name} is in use by another thread (use one {name} per thread)"),
        )),
        Err(TryLockError::Poisoned(_)) => Err(Error::new(
            TESSERA_ERR_PANIC,
            format!("the {name} was left inconsistent by an earlier internal panic; free it"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TESSERA_ERR_NULL_POINTER;

    #[derive(Debug)]
    struct Thing {
        magic: u64,
    }

    impl Handle for Thing {
        const KIND: Kind = Kind::Sampler;
        const MAGIC: u64 = 0x1234;
        const NAME: &'static str = "thing";
        fn magic(&self) -> u64 {
            self.magic
        }
        fn set_magic(&mut self, value: u64) {
            self.magic = value;
        }
    }

    #[test]
    fn lifecycle_is_checked() {
        let p = publish(Thing {
            magic: Thing::MAGIC,
        });
        // SAFETY: `p` is live and only this thread uses it.
        assert!(unsafe { get(p) }.is_ok());
        assert_eq!(
            // SAFETY: NULL is refused before any read.
            unsafe { get::<Thing>(std::ptr::null()) }
                .unwrap_err()
                .status,
            TESSERA_ERR_NULL_POINTER
        );
        assert_eq!(
            // SAFETY: the dangling pointer is not in the live table, so `get` never reads it.
            unsafe { get::<Thing>(std::ptr::dangling::<Thing>()) }
                .unwrap_err()
                .status,
            TESSERA_ERR_INVALID_HANDLE
        );
        // SAFETY: `p` is live and no other thread uses it.
        unsafe { release(p) }.unwrap();
        assert_eq!(
            // SAFETY: `p` was released, so the table refuses it before any read.
            unsafe { get(p) }.unwrap_err().status,
            TESSERA_ERR_INVALID_HANDLE
        );
        assert_eq!(
            // SAFETY: `p` was released, so the table refuses it before anything is freed.
            unsafe { release(p) }.unwrap_err().status,
            TESSERA_ERR_INVALID_HANDLE
        );
        // SAFETY: NULL is a no-op.
        assert!(unsafe { release::<Thing>(std::ptr::null_mut()) }.is_ok());
    }

    #[test]
    fn busy_state_is_refused() {
        let m = Mutex::new(1);
        let _g = m.lock().unwrap();
        assert_eq!(lock(&m, "thing").unwrap_err().status, TESSERA_ERR_BUSY);
    }
}
