//! Guards against hostile chat templates: what a rendering writes and builds is charged to
//! its byte budget ([`super::budget`]).
//!
//! minijinja has no hook on its operators, so the compiled instructions are rewritten before
//! each rendering ([`guard_instructions`]): `+`, `~`, `*` and slicing become calls of
//! functions that charge the size of their result before building it (measuring a printed
//! size by counting, without allocating it) and then apply minijinja's own operator; raw
//! template text becomes a constant emitted like `{{ … }}`, so that every byte written, to the
//! output or to a capture, passes through the formatter ([`emit`]), which charges it. Every
//! filter and every Python-style method is wrapped: those whose result can be much larger
//! than their input (`join`, `replace`, `indent`, `tojson`, `format`, `batch` …) are charged
//! a bound computed from their arguments before they run, the others what they built.
//! Loops and recursion are bounded by minijinja's fuel and recursion limit.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use minijinja::machinery::{Instruction, Instructions};
use minijinja::value::Rest;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, Value, context};

use super::budget::{
    ITEM_BYTES, charge, charge_built, charge_display, charge_items, debug_len, display_len, is_seq,
    item_count, json_len, remaining,
};

/// The function `a + b` becomes (a name templates cannot write, so cannot replace).
const ADD: &str = "tessera:add";
/// The function `a ~ b` becomes.
const CONCAT: &str = "tessera:concat";
/// The function `a * b` becomes.
const MUL: &str = "tessera:mul";
/// The function `a[b:c:d]` becomes.
const SLICE: &str = "tessera:slice";

/// `src` with its operators, slices and raw text going through the charging functions that
/// [`install`] registers; jump targets are moved to match.
pub(crate) fn guard_instructions<'s>(src: &Instructions<'s>) -> Instructions<'s> {
    let n = src.len() as u32;
    // Raw text becomes two instructions: where each old instruction lands.
    let mut new_index = Vec::with_capacity(src.len() + 1);
    let mut next = 0u32;
    for i in 0..n {
        new_index.push(next);
        next += if matches!(src.get(i), Some(Instruction::EmitRaw(_))) {
            2
        } else {
            1
        };
    }
    new_index.push(next);
    let at = |target: u32| new_index.get(target as usize).copied().unwrap_or(target);
    let mut out = Instructions::new(src.name(), src.source());
    for i in 0..n {
        let Some(instr) = src.get(i) else { break };
        let span = src.get_span(i);
        let line = src.get_line(i);
        let mut push = |instr: Instruction<'s>| match (span, line) {
            (Some(span), _) => out.add_with_span(instr, span),
            (None, Some(line)) => out.add_with_line(instr, line as u16),
            (None, None) => out.add(instr),
        };
        match instr {
            Instruction::EmitRaw(text) => {
                push(Instruction::LoadConst(Value::from_safe_string(
                    (*text).to_string(),
                )));
                push(Instruction::Emit);
            }
            Instruction::Add => _ = push(Instruction::CallFunction(ADD, Some(2))),
            Instruction::StringConcat => _ = push(Instruction::CallFunction(CONCAT, Some(2))),
            Instruction::Mul => _ = push(Instruction::CallFunction(MUL, Some(2))),
            Instruction::Slice => _ = push(Instruction::CallFunction(SLICE, Some(4))),
            Instruction::Jump(t) => _ = push(Instruction::Jump(at(*t))),
            Instruction::JumpIfFalse(t) => _ = push(Instruction::JumpIfFalse(at(*t))),
            Instruction::JumpIfFalseOrPop(t) => _ = push(Instruction::JumpIfFalseOrPop(at(*t))),
            Instruction::JumpIfTrueOrPop(t) => _ = push(Instruction::JumpIfTrueOrPop(at(*t))),
            Instruction::Iterate(t) => _ = push(Instruction::Iterate(at(*t))),
            Instruction::BuildMacro(name, t, flags) => {
                _ = push(Instruction::BuildMacro(name, at(*t), *flags))
            }
            other => _ = push(other.clone()),
        }
    }
    out
}

/// [`guard_instructions`] on every block of a template.
pub(crate) fn guard_blocks<'s>(
    blocks: &BTreeMap<&'s str, Instructions<'s>>,
) -> BTreeMap<&'s str, Instructions<'s>> {
    blocks
        .iter()
        .map(|(name, instrs)| (*name, guard_instructions(instrs)))
        .collect()
}

/// Register the charging operators, formatter, filters and methods in `env` (after its
/// filters and functions are in place).
pub(crate) fn install(env: &mut Environment<'static>) {
    env.add_function(ADD, |a: Value, b: Value| checked_add(a, b));
    env.add_function(CONCAT, |a: Value, b: Value| checked_concat(a, b));
    env.add_function(MUL, |a: Value, b: Value| checked_mul(a, b));
    env.add_function(SLICE, |a: Value, b: Value, c: Value, d: Value| {
        checked_slice(a, b, c, d)
    });
    env.add_function("debug", |_: Rest<Value>| -> Result<Value, Error> {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            "debug() is not available in chat templates",
        ))
    });
    env.set_formatter(emit);
    env.set_unknown_method_callback(guarded_method);
    macro_rules! guard_filters {
        ($($name:literal => $f:path),* $(,)?) => {$(
            env.add_filter(concat!("tessera:", $name), $f);
            env.add_filter($name, |state: &State, args: Rest<Value>| {
                guarded_filter(state, $name, concat!("tessera:", $name), &args)
            });
        )*};
    }
    use minijinja::filters as f;
    use minijinja_contrib::filters as cf;
    guard_filters! {
        "safe" => f::safe, "escape" => f::escape, "e" => f::escape, "lower" => f::lower,
        "upper" => f::upper, "title" => f::title, "capitalize" => f::capitalize,
        "replace" => f::replace, "length" => f::length, "count" => f::length,
        "dictsort" => f::dictsort, "items" => f::items, "reverse" => f::reverse,
        "trim" => f::trim, "join" => f::join, "split" => f::split, "lines" => f::lines,
        "default" => f::default, "d" => f::default, "round" => f::round, "abs" => f::abs,
        "int" => f::int, "float" => f::float, "attr" => f::attr, "first" => f::first,
        "last" => f::last, "min" => f::min, "max" => f::max, "sort" => f::sort,
        "list" => f::list, "string" => f::string, "bool" => f::bool, "batch" => f::batch,
        "slice" => f::slice, "sum" => f::sum, "indent" => f::indent, "select" => f::select,
        "reject" => f::reject, "selectattr" => f::selectattr, "rejectattr" => f::rejectattr,
        "map" => f::map, "groupby" => f::groupby, "unique" => f::unique, "chain" => f::chain,
        "zip" => f::zip, "pprint" => f::pprint, "format" => f::format, "tojson" => f::tojson,
        "pluralize" => cf::pluralize, "filesizeformat" => cf::filesizeformat,
        "truncate" => cf::truncate, "striptags" => cf::striptags,
    }
}

/// Applies minijinja's own operators to values already charged.
fn apply(expr: &str, a: Value, b: Value, c: Value, d: Value) -> Result<Value, Error> {
    static PLAIN: OnceLock<Environment<'static>> = OnceLock::new();
    let env = PLAIN.get_or_init(Environment::new);
    env.compile_expression(expr)?.eval(context! { a, b, c, d })
}

/// `a + b`: two strings are charged their bytes, two lists their items.
fn checked_add(a: Value, b: Value) -> Result<Value, Error> {
    if is_seq(&a) && is_seq(&b) {
        charge(
            item_count(&a)
                .saturating_add(item_count(&b))
                .saturating_mul(ITEM_BYTES),
        )?;
    } else if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        charge(x.len().saturating_add(y.len()))?;
    }
    apply("a + b", a, b, Value::UNDEFINED, Value::UNDEFINED)
}

/// `a ~ b`: charged the printed sizes of both sides.
fn checked_concat(a: Value, b: Value) -> Result<Value, Error> {
    charge_display(&a)?;
    charge_display(&b)?;
    apply("a ~ b", a, b, Value::UNDEFINED, Value::UNDEFINED)
}

/// A repeat count: a non-negative integer.
fn repeat_count(v: &Value) -> Option<usize> {
    if v.is_integer() {
        usize::try_from(v.clone()).ok()
    } else {
        None
    }
}

/// `a * b`: a string or a list repeated is charged the whole repetition.
fn checked_mul(a: Value, b: Value) -> Result<Value, Error> {
    for (x, n) in [(&a, &b), (&b, &a)] {
        let Some(n) = repeat_count(n) else { continue };
        if let Some(s) = x.as_str() {
            charge(s.len().saturating_mul(n))?;
        } else if is_seq(x) {
            charge(item_count(x).saturating_mul(n).saturating_mul(ITEM_BYTES))?;
        }
    }
    apply("a * b", a, b, Value::UNDEFINED, Value::UNDEFINED)
}

/// `a[b:c:d]`: charged the size of `a`, which bounds the slice.
fn checked_slice(a: Value, b: Value, c: Value, d: Value) -> Result<Value, Error> {
    if let Some(s) = a.as_str() {
        charge(s.len())?;
    } else {
        charge_items(&a)?;
    }
    apply("a[b:c:d]", a, b, c, d)
}

/// The formatter: every `{{ … }}` and raw text, to the output or to a capture, is charged
/// its printed size (six times when HTML escaping may expand it).
fn emit(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    let len = display_len(value).unwrap_or(usize::MAX);
    let escaping = !matches!(state.auto_escape(), AutoEscape::None) && !value.is_safe();
    charge(if escaping { len.saturating_mul(6) } else { len })?;
    minijinja::escape_formatter(out, state, value)
}

/// Argument `pos` of a call (after the value filtered), or its keyword `name`.
fn arg(args: &[Value], pos: usize, name: &str) -> Option<Value> {
    let (kwargs, positional) = match args.last() {
        Some(last) if last.is_kwargs() => (Some(last), &args[..args.len() - 1]),
        _ => (None, args),
    };
    if let Some(v) = positional.get(pos) {
        return Some(v.clone());
    }
    kwargs
        .and_then(|k| k.get_attr(name).ok())
        .filter(|v| !v.is_undefined())
}

/// Bytes of an argument that will be copied into the result (a string, or printed).
fn arg_len(v: Option<Value>) -> usize {
    v.map_or(0, |v| display_len(&v).unwrap_or(usize::MAX))
}

/// Bound on `s` with each `from` replaced by `to`.
fn replace_bound(s: &str, from: &str, to_len: usize) -> usize {
    let places = if from.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(from).count()
    };
    s.len().saturating_add(places.saturating_mul(to_len))
}

/// Bound on `items` joined by `sep_len` bytes: the printed items, the separators, and one
/// byte per item so that the count of empty items is bounded too.
fn join_bound(items: &Value, sep_len: usize) -> usize {
    if let Some(s) = items.as_str() {
        return s
            .len()
            .saturating_add(s.chars().count().saturating_mul(sep_len.saturating_add(1)));
    }
    let Ok(iter) = items.try_iter() else { return 0 };
    let cap = remaining();
    let mut total = 0usize;
    for item in iter {
        total = total
            .saturating_add(display_len(&item).unwrap_or(usize::MAX))
            .saturating_add(sep_len)
            .saturating_add(1);
        if total > cap {
            break;
        }
    }
    total
}

/// Bound on a printf- or `str.format`-style rendering: the format, the printed arguments,
/// and every number in the format taken as a width.
fn format_bound(fmt: &str, args: &[Value]) -> usize {
    let mut total = fmt.len();
    for a in args {
        total = total.saturating_add(display_len(a).unwrap_or(usize::MAX));
    }
    for number in fmt.split(|c: char| !c.is_ascii_digit()) {
        if !number.is_empty() {
            total = total.saturating_add(number.parse::<usize>().unwrap_or(usize::MAX));
        }
    }
    total
}

/// Bound on the pieces of `s` split at whitespace or a separator: each piece is an item.
fn split_bound(s: &str) -> usize {
    s.len()
        .saturating_add(1)
        .saturating_mul(ITEM_BYTES)
        .saturating_add(s.len())
}

/// Charges a filter whose result may be much larger than its input before it runs;
/// `Ok(true)` when it did, `Ok(false)` when the result is to be charged instead.
fn precharge_filter(name: &str, args: &[Value]) -> Result<bool, Error> {
    let Some(v) = args.first() else {
        return Ok(false);
    };
    let bound = match name {
        "join" => join_bound(v, arg_len(arg(args, 1, "d"))),
        "replace" => match (v.as_str(), arg(args, 1, "old")) {
            (Some(s), Some(from)) => {
                let from = from.to_string();
                replace_bound(s, &from, arg_len(arg(args, 2, "new")))
            }
            _ => return Ok(false),
        },
        "indent" => {
            let Some(s) = v.as_str() else {
                return Ok(false);
            };
            let width = match arg(args, 1, "width") {
                Some(w) => repeat_count(&w).unwrap_or_else(|| arg_len(Some(w))),
                None => 4,
            };
            let lines = s.lines().count() + 1;
            s.len().saturating_add(lines.saturating_mul(width))
        }
        "tojson" => {
            let indent = match arg(args, 1, "indent") {
                None => None,
                Some(i) if i.is_true() && i.kind() == minijinja::value::ValueKind::Bool => Some(2),
                Some(i) => repeat_count(&i),
            };
            json_len(v, indent).unwrap_or(usize::MAX)
        }
        "format" => match v.as_str() {
            Some(fmt) => format_bound(fmt, &args[1..]),
            None => return Ok(false),
        },
        "string" => display_len(v).unwrap_or(usize::MAX),
        "pprint" => debug_len(v).unwrap_or(usize::MAX),
        "escape" | "e" => display_len(v).unwrap_or(usize::MAX).saturating_mul(6),
        "batch" | "slice" => {
            let n = arg(args, 1, "count")
                .and_then(|n| repeat_count(&n))
                .unwrap_or(0);
            item_count(v).saturating_add(n).saturating_mul(ITEM_BYTES)
        }
        "chain" => args.iter().fold(0usize, |t, a| {
            t.saturating_add(item_count(a).saturating_mul(ITEM_BYTES))
        }),
        "sum" => match v.try_iter() {
            Ok(items) => items.fold(0usize, |t, item| {
                let n = match item.as_str() {
                    Some(s) => s.len(),
                    None if is_seq(&item) => item_count(&item).saturating_mul(ITEM_BYTES),
                    None => 0,
                };
                t.saturating_add(n)
            }),
            Err(_) => return Ok(false),
        },
        "split" | "lines" => match v.as_str() {
            Some(s) => split_bound(s),
            None => return Ok(false),
        },
        "list" | "sort" | "unique" | "reverse" | "dictsort" | "items" | "groupby" => {
            match v.as_str() {
                Some(s) => split_bound(s),
                None => item_count(v).saturating_mul(ITEM_BYTES),
            }
        }
        _ => return Ok(false),
    };
    charge(bound)?;
    Ok(true)
}

/// A filter: charged, then minijinja's own (registered under `original`).
fn guarded_filter(
    state: &State,
    name: &str,
    original: &str,
    args: &[Value],
) -> Result<Value, Error> {
    let prepaid = precharge_filter(name, args)?;
    let rv = state.apply_filter(original, args)?;
    if !prepaid {
        charge_built(&rv)?;
    }
    Ok(rv)
}

/// Python-style methods (`s.replace()`, `s.format()`, `sep.join()` …, from
/// minijinja-contrib's pycompat), charged like filters.
fn guarded_method(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    let bound = match (method, value.as_str()) {
        ("replace", Some(s)) => {
            let from = arg(args, 0, "old")
                .map(|v| v.to_string())
                .unwrap_or_default();
            Some(replace_bound(s, &from, arg_len(arg(args, 1, "new"))))
        }
        ("format", Some(fmt)) => Some(format_bound(fmt, args)),
        ("join", Some(sep)) => args.first().map(|items| join_bound(items, sep.len())),
        ("split" | "rsplit" | "splitlines", Some(s)) => Some(split_bound(s)),
        _ => None,
    };
    if let Some(bound) = bound {
        charge(bound)?;
    }
    let rv = minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)?;
    if bound.is_none() {
        charge_built(&rv)?;
    }
    Ok(rv)
}
