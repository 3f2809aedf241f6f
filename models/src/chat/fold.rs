//! Constant folding, bounded: minijinja evaluates operators on constants while it compiles a
//! template (`'x' * 99999999`, `([1] * 10**15) ~ ''`), out of reach of the rendering's
//! budget, so templates whose constant expressions would build more than [`FOLD_LIMIT`]
//! bytes are refused before they are compiled.
//!
//! [`check`] walks the parsed template and evaluates every constant expression abstractly:
//! integers exactly, everything else as its size only (printed bytes and list items).

use minijinja::machinery::ast::{self, BinOpKind, Expr, Stmt, UnaryOpKind};

use super::budget::ITEM_BYTES;

/// Most bytes one constant expression of a template may fold to (1 MiB, far more than the
/// longest literal of a real template).
pub(crate) const FOLD_LIMIT: usize = 1 << 20;

/// What is known of a constant: its integer value when it is one, its printed size in bytes
/// and (for lists) its items.
#[derive(Clone, Copy)]
struct Abstract {
    int: Option<i128>,
    bytes: usize,
    items: usize,
}

impl Abstract {
    fn sized(bytes: usize, items: usize) -> Abstract {
        Abstract {
            int: None,
            bytes,
            items,
        }
    }
}

/// A constant expression folds to more than [`FOLD_LIMIT`] bytes.
pub(crate) struct TooLarge;

/// Check every expression of the template `stmt`.
pub(crate) fn check(stmt: &Stmt<'_>) -> Result<(), TooLarge> {
    match stmt {
        Stmt::Template(t) => stmts(&t.children),
        Stmt::EmitExpr(e) => expr(&e.expr),
        Stmt::EmitRaw(_) | Stmt::Continue(_) | Stmt::Break(_) => Ok(()),
        Stmt::ForLoop(f) => {
            expr(&f.target)?;
            expr(&f.iter)?;
            opt(&f.filter_expr)?;
            stmts(&f.body)?;
            stmts(&f.else_body)
        }
        Stmt::IfCond(i) => {
            expr(&i.expr)?;
            stmts(&i.true_body)?;
            stmts(&i.false_body)
        }
        Stmt::WithBlock(w) => {
            for (a, b) in &w.assignments {
                expr(a)?;
                expr(b)?;
            }
            stmts(&w.body)
        }
        Stmt::Set(s) => {
            expr(&s.target)?;
            expr(&s.expr)
        }
        Stmt::SetBlock(s) => {
            expr(&s.target)?;
            opt(&s.filter)?;
            stmts(&s.body)
        }
        Stmt::AutoEscape(a) => {
            expr(&a.enabled)?;
            stmts(&a.body)
        }
        Stmt::FilterBlock(f) => {
            expr(&f.filter)?;
            stmts(&f.body)
        }
        Stmt::Block(b) => stmts(&b.body),
        Stmt::Import(i) => {
            expr(&i.expr)?;
            expr(&i.name)
        }
        Stmt::FromImport(i) => {
            expr(&i.expr)?;
            for (a, b) in &i.names {
                expr(a)?;
                opt(b)?;
            }
            Ok(())
        }
        Stmt::Extends(e) => expr(&e.name),
        Stmt::Include(i) => expr(&i.name),
        Stmt::Macro(m) => macro_decl(m),
        Stmt::CallBlock(c) => {
            call(&c.call)?;
            macro_decl(&c.macro_decl)
        }
        Stmt::Do(d) => call(&d.call),
    }
}

fn stmts(list: &[Stmt<'_>]) -> Result<(), TooLarge> {
    list.iter().try_for_each(check)
}

fn macro_decl(m: &ast::Macro<'_>) -> Result<(), TooLarge> {
    m.args.iter().try_for_each(expr)?;
    m.defaults.iter().try_for_each(expr)?;
    stmts(&m.body)
}

fn call(c: &ast::Call<'_>) -> Result<(), TooLarge> {
    expr(&c.expr)?;
    call_args(&c.args)
}

fn call_args(args: &[ast::CallArg<'_>]) -> Result<(), TooLarge> {
    args.iter().try_for_each(|a| match a {
        ast::CallArg::Pos(e)
        | ast::CallArg::Kwarg(_, e)
        | ast::CallArg::PosSplat(e)
        | ast::CallArg::KwargSplat(e) => expr(e),
    })
}

fn opt(e: &Option<Expr<'_>>) -> Result<(), TooLarge> {
    e.as_ref().map_or(Ok(()), expr)
}

/// Check `e` and everything below it.
fn expr(e: &Expr<'_>) -> Result<(), TooLarge> {
    constant(e).map(|_| ())
}

/// The abstract value of `e` when it is a constant expression (which minijinja folds),
/// `None` when it is not; refused when it or a part of it is too large.
fn constant(e: &Expr<'_>) -> Result<Option<Abstract>, TooLarge> {
    let folded = match e {
        Expr::Const(c) => {
            let v = &c.value;
            let int = if v.is_integer() {
                i128::try_from(v.clone()).ok()
            } else {
                None
            };
            let bytes = v.as_str().map_or_else(|| v.to_string().len(), str::len);
            Some(Abstract {
                int,
                bytes,
                items: v.len().unwrap_or(0),
            })
        }
        Expr::List(l) => {
            let mut all = Some(Abstract::sized(2, l.items.len()));
            for item in &l.items {
                all = match (all, constant(item)?) {
                    (Some(a), Some(i)) => Some(Abstract::sized(
                        a.bytes.saturating_add(i.bytes).saturating_add(2),
                        a.items,
                    )),
                    _ => None,
                };
            }
            all
        }
        Expr::Map(m) => {
            let mut all = Some(Abstract::sized(2, m.keys.len()));
            for item in m.keys.iter().chain(&m.values) {
                all = match (all, constant(item)?) {
                    (Some(a), Some(i)) => Some(Abstract::sized(
                        a.bytes.saturating_add(i.bytes).saturating_add(2),
                        a.items,
                    )),
                    _ => None,
                };
            }
            all
        }
        Expr::UnaryOp(u) => constant(&u.expr)?.map(|a| match u.op {
            UnaryOpKind::Neg => Abstract {
                int: a.int.and_then(i128::checked_neg),
                bytes: a.bytes.saturating_add(1),
                items: 0,
            },
            UnaryOpKind::Not => Abstract::sized(5, 0),
        }),
        Expr::BinOp(b) => {
            let (l, r) = (constant(&b.left)?, constant(&b.right)?);
            match (l, r) {
                (Some(l), Some(r)) => Some(binop(b.op, l, r)),
                _ => None,
            }
        }
        Expr::Compare(c) => {
            let mut all = constant(&c.expr)?.is_some();
            for op in &c.ops {
                all &= constant(&op.expr)?.is_some();
            }
            all.then(|| Abstract::sized(5, 0))
        }
        Expr::Var(_) => None,
        Expr::Slice(s) => {
            expr(&s.expr)?;
            opt(&s.start)?;
            opt(&s.stop)?;
            opt(&s.step)?;
            None
        }
        Expr::IfExpr(i) => {
            expr(&i.test_expr)?;
            expr(&i.true_expr)?;
            opt(&i.false_expr)?;
            None
        }
        Expr::Filter(f) => {
            opt(&f.expr)?;
            call_args(&f.args)?;
            None
        }
        Expr::Test(t) => {
            expr(&t.expr)?;
            call_args(&t.args)?;
            None
        }
        Expr::GetAttr(g) => {
            expr(&g.expr)?;
            None
        }
        Expr::GetItem(g) => {
            expr(&g.expr)?;
            expr(&g.subscript_expr)?;
            None
        }
        Expr::Call(c) => {
            call(c)?;
            None
        }
    };
    match folded {
        Some(a) if a.bytes > FOLD_LIMIT || a.items > FOLD_LIMIT / ITEM_BYTES => Err(TooLarge),
        other => Ok(other),
    }
}

/// The abstract result of `l op r`.
fn binop(op: BinOpKind, l: Abstract, r: Abstract) -> Abstract {
    let int = |v: Option<i128>| Abstract {
        int: v,
        bytes: 40,
        items: 0,
    };
    match op {
        BinOpKind::Add => match (l.int, r.int) {
            (Some(a), Some(b)) => int(a.checked_add(b)),
            _ => Abstract::sized(
                l.bytes.saturating_add(r.bytes),
                l.items.saturating_add(r.items),
            ),
        },
        BinOpKind::Sub => int(l.int.zip(r.int).and_then(|(a, b)| a.checked_sub(b))),
        BinOpKind::Mul => match (l.int, r.int) {
            (Some(a), Some(b)) => int(a.checked_mul(b)),
            (Some(n), None) | (None, Some(n)) => {
                let x = if l.int.is_some() { r } else { l };
                let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
                Abstract::sized(x.bytes.saturating_mul(n), x.items.saturating_mul(n))
            }
            (None, None) => int(None),
        },
        BinOpKind::FloorDiv => int(l.int.zip(r.int).and_then(|(a, b)| a.checked_div_euclid(b))),
        BinOpKind::Rem => int(l.int.zip(r.int).and_then(|(a, b)| a.checked_rem_euclid(b))),
        BinOpKind::Pow => int(l
            .int
            .zip(r.int)
            .and_then(|(a, b)| a.checked_pow(u32::try_from(b).ok()?))),
        BinOpKind::Concat => Abstract::sized(l.bytes.saturating_add(r.bytes), 0),
        BinOpKind::Div => int(None),
        BinOpKind::Eq
        | BinOpKind::Ne
        | BinOpKind::Lt
        | BinOpKind::Lte
        | BinOpKind::Gt
        | BinOpKind::Gte
        | BinOpKind::ScAnd
        | BinOpKind::ScOr
        | BinOpKind::In => Abstract::sized(l.bytes.max(r.bytes).max(5), 0),
    }
}
