//! Element-wise ops (add, mul, the gated activations with gpt-oss's clamped SwiGLU, scale,
//! bias and per-expert bias, soft-capping, squared ReLU, copy of the last row or of the rows a
//! step selects, the weighted sum of experts' outputs, the column and per-group concatenation
//! gathers of multi-head latent attention):
//! one `elementwise.wgsl` dispatch of 256 values a workgroup.

use super::{Bind, NodeCtx, Recorder, grid};
use crate::DType;
use crate::gpu::device::GpuError;
use crate::gpu::params::{ElementwiseOp, ElementwiseUniforms};
use crate::gpu::shaders::Kernel;
use crate::graph::{NodeId, WeightId};

/// One dispatch's operands besides the op: input offsets, the factor, output and count.
struct Operands {
    src: u32,
    b_off: u32,
    s: f32,
    out: u32,
    n: u32,
}

/// Record `op` over the values `[src, src + n)` (and `b`'s, for two-operand ops).
fn push(rec: &mut Recorder, op: ElementwiseOp, o: Operands) {
    push_with(rec, op, o, Bind::NoWeight, 1);
}

/// [`push`] with a weight binding of `cols` values per row (add_bias).
fn push_with(rec: &mut Recorder, op: ElementwiseOp, o: Operands, w: Bind, cols: u32) {
    let g = grid(o.n.div_ceil(256));
    let p = ElementwiseUniforms {
        a_off: o.src,
        b_off: o.b_off,
        out_off: o.out,
        n: o.n,
        op: op.code(),
        s: o.s,
        grid_x: g[0],
        cols,
        parts: 0,
        limit: 0.0,
    };
    rec.push(
        Kernel::Elementwise,
        vec![Bind::Arena, w, Bind::Uniform],
        &p,
        g,
    );
}

/// Record a two-operand op (add, mul, SwiGLU, GeGLU) of `a` and `b`.
pub fn binary(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    op: ElementwiseOp,
    a: NodeId,
    b: NodeId,
) -> Result<(), GpuError> {
    let n = ctx.n_values() as u32;
    let (src, b_off, out) = (ctx.off(a), ctx.off(b), ctx.out);
    push(
        rec,
        op,
        Operands {
            src,
            b_off,
            s: 0.0,
            out,
            n,
        },
    );
    Ok(())
}

/// Record `x · s`.
pub fn scale(ctx: &NodeCtx, rec: &mut Recorder, x: NodeId, s: f32) -> Result<(), GpuError> {
    let n = ctx.n_values() as u32;
    let (src, out) = (ctx.off(x), ctx.out);
    push(
        rec,
        ElementwiseOp::Scale,
        Operands {
            src,
            b_off: 0,
            s,
            out,
            n,
        },
    );
    Ok(())
}

/// Record `cap · tanh(x / cap)`.
pub fn softcap(ctx: &NodeCtx, rec: &mut Recorder, x: NodeId, cap: f32) -> Result<(), GpuError> {
    let n = ctx.n_values() as u32;
    let (src, out) = (ctx.off(x), ctx.out);
    let o = Operands {
        src,
        b_off: 0,
        s: cap,
        out,
        n,
    };
    push(rec, ElementwiseOp::Softcap, o);
    Ok(())
}

/// Record `max(x, 0)²`.
pub fn relu_sqr(ctx: &NodeCtx, rec: &mut Recorder, x: NodeId) -> Result<(), GpuError> {
    let n = ctx.n_values() as u32;
    let (src, out) = (ctx.off(x), ctx.out);
    let o = Operands {
        src,
        b_off: 0,
        s: 0.0,
        out,
        n,
    };
    push(rec, ElementwiseOp::ReluSqr, o);
    Ok(())
}

/// Record `x + bias` on every row (`bias`: F32, one value per column).
pub fn add_bias(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    x: NodeId,
    bias: WeightId,
) -> Result<(), GpuError> {
    let t = ctx.graph.weight(bias);
    let cols = ctx.node.cols;
    if t.dtype() != DType::F32 || t.n_elements() != cols {
        return Err(GpuError::Unsupported(format!(
            "bias {:?} must be {cols} F32 values",
            t.name()
        )));
    }
    let n = ctx.n_values() as u32;
    let (src, out) = (ctx.off(x), ctx.out);
    let o = Operands {
        src,
        b_off: 0,
        s: 0.0,
        out,
        n,
    };
    push_with(
        rec,
        ElementwiseOp::AddBias,
        o,
        Bind::Weight(bias.0, 0),
        cols as u32,
    );
    Ok(())
}

/// Record gpt-oss's clamped SwiGLU of `gate` and `up` (see [`ElementwiseOp::SwiGluOai`]).
pub fn swiglu_oai(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    [gate, up]: [NodeId; 2],
    alpha: f32,
    limit: f32,
) -> Result<(), GpuError> {
    let n = ctx.n_values() as u32;
    let g = grid(n.div_ceil(256));
    let p = ElementwiseUniforms {
        a_off: ctx.off(gate),
        b_off: ctx.off(up),
        out_off: ctx.out,
        n,
        op: ElementwiseOp::SwiGluOai.code(),
        s: alpha,
        grid_x: g[0],
        cols: 1,
        parts: 0,
        limit,
    };
    rec.push(
        Kernel::Elementwise,
        vec![Bind::Arena, Bind::NoWeight, Bind::Uniform],
        &p,
        g,
    );
    Ok(())
}

/// Record per-expert biases added to the mat_mul_id output `x`: part `j` of each row gets the
/// row of `bias` (F32 `[n, n_expert]`, one chunk) of the expert `route` chose in slot `j`,
/// the id read from the route on the device.
pub fn add_bias_id(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    x: NodeId,
    bias: WeightId,
    route: NodeId,
) -> Result<(), GpuError> {
    let t = ctx.graph.weight(bias);
    let parts = ctx.graph.node(route).cols / 2;
    let n = ctx.node.cols / parts.max(1);
    if t.dtype() != DType::F32 || t.row_len() != n || ctx.weights[bias.0 as usize].chunks.len() != 1
    {
        return Err(GpuError::Unsupported(format!(
            "expert biases {:?} must be F32 rows of {n} in one binding",
            t.name()
        )));
    }
    let total = ctx.n_values() as u32;
    let g = grid(total.div_ceil(256));
    let p = ElementwiseUniforms {
        a_off: ctx.off(x),
        b_off: ctx.off(route),
        out_off: ctx.out,
        n: total,
        op: ElementwiseOp::AddBiasId.code(),
        s: 0.0,
        grid_x: g[0],
        cols: n as u32,
        parts: parts as u32,
        limit: 0.0,
    };
    rec.push(
        Kernel::Elementwise,
        vec![Bind::Arena, Bind::Weight(bias.0, 0), Bind::Uniform],
        &p,
        g,
    );
    Ok(())
}

/// Record the copy of `x`'s last row.
pub fn last_row(ctx: &NodeCtx, rec: &mut Recorder, x: NodeId) -> Result<(), GpuError> {
    let xn = ctx.graph.node(x);
    let src = ctx.off(x) + ((xn.rows - 1) * xn.cols) as u32;
    let n = ctx.node.cols as u32;
    let out = ctx.out;
    push(
        rec,
        ElementwiseOp::Copy,
        Operands {
            src,
            b_off: 0,
            s: 0.0,
            out,
            n,
        },
    );
    Ok(())
}

/// Record select_rows: the rows of `x` the step names, their numbers read from the step
/// buffer (bound where the weight goes).
pub fn select_rows(ctx: &NodeCtx, rec: &mut Recorder, x: NodeId) -> Result<(), GpuError> {
    let rows = rec.layout.select_rows(ctx.node.rows);
    let o = Operands {
        src: ctx.off(x),
        b_off: rows as u32,
        s: 0.0,
        out: ctx.out,
        n: ctx.n_values() as u32,
    };
    push_with(
        rec,
        ElementwiseOp::SelectRows,
        o,
        Bind::Step,
        ctx.node.cols as u32,
    );
    Ok(())
}

/// Record moe_sum: each row of `x` (`n_used` parts) summed with the weights of `route`.
pub fn moe_sum(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    x: NodeId,
    route: NodeId,
) -> Result<(), GpuError> {
    let parts = ctx.graph.node(route).cols / 2;
    let cols = ctx.node.cols as u32;
    let n = ctx.n_values() as u32;
    let g = grid(n.div_ceil(256));
    let p = ElementwiseUniforms {
        a_off: ctx.off(x),
        b_off: ctx.off(route),
        out_off: ctx.out,
        n,
        op: ElementwiseOp::MoeSum.code(),
        s: 0.0,
        grid_x: g[0],
        cols,
        parts: parts as u32,
        limit: 0.0,
    };
    rec.push(
        Kernel::Elementwise,
        vec![Bind::Arena, Bind::NoWeight, Bind::Uniform],
        &p,
        g,
    );
    Ok(())
}

/// Record one gather (columns, concat) of `n` output values: `a`'s groups at `a_off` with
/// `cols`/`parts` as the op takes them (see [`ElementwiseOp::Columns`], [`ElementwiseOp::Concat`]).
#[allow(clippy::too_many_arguments)]
fn gather(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    op: ElementwiseOp,
    a_off: u32,
    b_off: u32,
    cols: u32,
    parts: u32,
) {
    let n = ctx.n_values() as u32;
    let g = grid(n.div_ceil(256));
    let p = ElementwiseUniforms {
        a_off,
        b_off,
        out_off: ctx.out,
        n,
        op: op.code(),
        s: 0.0,
        grid_x: g[0],
        cols,
        parts,
        limit: 0.0,
    };
    rec.push(
        Kernel::Elementwise,
        vec![Bind::Arena, Bind::NoWeight, Bind::Uniform],
        &p,
        g,
    );
}

/// Record columns `start..start + len` of every `group`-wide group of `x`.
pub fn columns(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    x: NodeId,
    group: usize,
    start: usize,
) -> Result<(), GpuError> {
    let groups = ctx.graph.node(x).cols / group;
    let len = ctx.node.cols / groups;
    let a_off = ctx.off(x) + start as u32;
    gather(
        ctx,
        rec,
        ElementwiseOp::Columns,
        a_off,
        0,
        len as u32,
        group as u32,
    );
    Ok(())
}

/// Record the per-group concatenation of `a` and `b` (`groups` groups each).
pub fn concat(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    a: NodeId,
    b: NodeId,
    groups: usize,
) -> Result<(), GpuError> {
    let ga = ctx.graph.node(a).cols / groups;
    let gb = ctx.graph.node(b).cols / groups;
    let (a_off, b_off) = (ctx.off(a), ctx.off(b));
    gather(
        ctx,
        rec,
        ElementwiseOp::Concat,
        a_off,
        b_off,
        ga as u32,
        gb as u32,
    );
    Ok(())
}
