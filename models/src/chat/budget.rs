//! The byte budget of one chat-template rendering.
//!
//! Every piece of text a rendering writes (its output and everything captured by `{% set %}`
//! blocks, macros and `{% filter %}` blocks) and every string or list an operator, filter or
//! method builds is charged to one per-rendering budget, [`RENDER_BYTE_BUDGET`] bytes, before
//! it is built where its size can be known in advance, and right after otherwise. Charges are
//! never refunded, so the budget bounds what a rendering allocates in total, whatever it keeps.
//!
//! The budget lives in a thread-local: minijinja calls the charging functions on the thread
//! that renders, without a handle to the rendering, and one thread renders one template at a
//! time. Outside a rendering nothing is charged.

use std::cell::Cell;
use std::fmt;
use std::io;

use minijinja::value::ValueKind;
use minijinja::{Error, ErrorKind, Value};

/// Bytes one rendering may write and build in total (64 MiB). A conversation filling a
/// 128k-token context is about 0.5 MiB of text, so real templates stay far below it, even
/// those that build the prompt by repeated concatenation. It bounds the time as well as the
/// memory: the worst growth pattern (a string doubled by `replace` in a loop) builds about
/// twice the budget before it is refused. At 256 MiB that took over 30 s under the fuzzer's
/// AddressSanitizer build; at 64 MiB it stays well under the fuzzer's timeout.
pub const RENDER_BYTE_BUDGET: usize = 64 << 20;

/// What one item of a built list is charged (a minijinja value is 24 bytes, plus the list).
pub(crate) const ITEM_BYTES: usize = 32;

thread_local! {
    static REMAINING: Cell<Option<usize>> = const { Cell::new(None) };
    static EXCEEDED: Cell<bool> = const { Cell::new(false) };
}

/// The budget of the rendering running on this thread, from [`Rendering::start`] until it is
/// dropped.
pub(crate) struct Rendering {
    previous: Option<usize>,
}

impl Rendering {
    /// Start charging a rendering on this thread with `bytes` to spend.
    pub(crate) fn start(bytes: usize) -> Rendering {
        EXCEEDED.with(|e| e.set(false));
        Rendering {
            previous: REMAINING.with(|r| r.replace(Some(bytes))),
        }
    }

    /// Whether a charge of this rendering was refused.
    pub(crate) fn exceeded(&self) -> bool {
        EXCEEDED.with(Cell::get)
    }
}

impl Drop for Rendering {
    fn drop(&mut self) {
        REMAINING.with(|r| r.set(self.previous));
    }
}

/// Bytes left to the rendering on this thread (unlimited outside one).
pub(crate) fn remaining() -> usize {
    REMAINING.with(|r| r.get().unwrap_or(usize::MAX))
}

/// Take `bytes` from the budget, or fail with [`too_large`] (and spend it all) when fewer are
/// left.
pub(crate) fn charge(bytes: usize) -> Result<(), Error> {
    REMAINING.with(|r| match r.get() {
        None => Ok(()),
        Some(left) if bytes <= left => {
            r.set(Some(left - bytes));
            Ok(())
        }
        Some(_) => {
            r.set(Some(0));
            EXCEEDED.with(|e| e.set(true));
            Err(too_large())
        }
    })
}

/// The error of a refused charge.
pub(crate) fn too_large() -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("chat template built more than {RENDER_BYTE_BUDGET} bytes"),
    )
}

/// A writer that only counts, and fails once more than `cap` bytes went through it.
struct Counter {
    bytes: usize,
    cap: usize,
}

impl Counter {
    fn add(&mut self, n: usize) -> bool {
        self.bytes = self.bytes.saturating_add(n);
        self.bytes <= self.cap
    }
}

impl fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.add(s.len()) {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.add(buf.len()) {
            Ok(buf.len())
        } else {
            Err(io::Error::other("too large"))
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Bytes `v` prints as (`{v}`), or `None` when more than the budget left; nothing is
/// allocated and the work stops at the budget.
pub(crate) fn display_len(v: &Value) -> Option<usize> {
    let cap = remaining();
    if let Some(s) = v.as_str() {
        return (s.len() <= cap).then_some(s.len());
    }
    let mut c = Counter { bytes: 0, cap };
    fmt::write(&mut c, format_args!("{v}"))
        .ok()
        .map(|_| c.bytes)
}

/// Bytes of `v`'s pretty debug form (`{v:#?}`, what `pprint` writes), or `None` when more
/// than the budget left.
pub(crate) fn debug_len(v: &Value) -> Option<usize> {
    let mut c = Counter {
        bytes: 0,
        cap: remaining(),
    };
    fmt::write(&mut c, format_args!("{v:#?}"))
        .ok()
        .map(|_| c.bytes)
}

/// Bytes of `v` as JSON indented by `indent` spaces (compact when `None`), or `None` when
/// more than the budget left (or `v` is not JSON).
pub(crate) fn json_len(v: &Value, indent: Option<usize>) -> Option<usize> {
    let cap = remaining();
    let mut c = Counter { bytes: 0, cap };
    let ok = match indent {
        None => serde_json::to_writer(&mut c, v).is_ok(),
        Some(n) if n <= cap => {
            let spaces = vec![b' '; n];
            let pretty = serde_json::ser::PrettyFormatter::with_indent(&spaces);
            let mut ser = serde_json::Serializer::with_formatter(&mut c, pretty);
            serde::Serialize::serialize(v, &mut ser).is_ok()
        }
        Some(_) => false,
    };
    ok.then_some(c.bytes)
}

/// Charge the printed size of `v`.
pub(crate) fn charge_display(v: &Value) -> Result<(), Error> {
    charge(display_len(v).unwrap_or(usize::MAX))
}

/// Whether `v` is a list or another sequence of items.
pub(crate) fn is_seq(v: &Value) -> bool {
    matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable)
}

/// Items in `v` (a list, an iterable or a map; characters of a string), counted up to what
/// the budget could pay for: past that, the count is an over-estimate that no charge can pay.
pub(crate) fn item_count(v: &Value) -> usize {
    if let Some(n) = v.len() {
        return n;
    }
    let cap = remaining() / ITEM_BYTES + 1;
    match v.try_iter() {
        Ok(it) => it.take(cap).count(),
        Err(_) => 0,
    }
}

/// Charge the items of `v` (see [`item_count`]).
pub(crate) fn charge_items(v: &Value) -> Result<(), Error> {
    charge(item_count(v).saturating_mul(ITEM_BYTES))
}

/// Charge a value just built: a string's bytes, a list's or a map's items.
pub(crate) fn charge_built(v: &Value) -> Result<(), Error> {
    if let Some(s) = v.as_str() {
        charge(s.len())
    } else if matches!(v.kind(), ValueKind::Seq | ValueKind::Map) {
        charge(v.len().unwrap_or(0).saturating_mul(ITEM_BYTES))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stop_at_the_budget_and_only_inside_a_rendering() {
        assert!(charge(usize::MAX).is_ok());
        let r = Rendering::start(10);
        assert!(charge(4).is_ok());
        assert_eq!(remaining(), 6);
        assert!(!r.exceeded());
        let e = charge(7).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");
        assert!(r.exceeded());
        assert_eq!(remaining(), 0);
        drop(r);
        assert_eq!(remaining(), usize::MAX);
    }

    #[test]
    fn sizes_are_measured_without_building_them() {
        let _r = Rendering::start(100);
        let list = Value::from(vec!["ab", "c"]);
        assert_eq!(display_len(&list), Some(format!("{list}").len()));
        assert_eq!(json_len(&list, None), Some(10));
        assert_eq!(
            json_len(&list, Some(2)),
            Some(serde_json::to_string_pretty(&list).unwrap().len())
        );
        assert_eq!(debug_len(&list), Some(format!("{list:#?}").len()));
        assert_eq!(item_count(&list), 2);
        // Past the budget, the measure gives up.
        let big = Value::from(vec!["x".repeat(60), "y".repeat(60)]);
        assert_eq!(display_len(&big), None);
        assert_eq!(json_len(&big, Some(1000)), None);
    }
}
