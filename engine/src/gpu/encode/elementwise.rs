//! Element-wise ops (add, mul, the gated activations, scale, copy of the last row): one
//! `elementwise.wgsl` dispatch of 256 values a workgroup.

use super::{Bind, NodeCtx, Recorder, grid};
use crate::gpu::device::GpuError;
use crate::gpu::params::{ElementwiseOp, ElementwiseUniforms};
use crate::gpu::shaders::Kernel;
use crate::graph::NodeId;

/// Record `op` over the values `[src, src + n)` (and `b`'s, for two-operand ops).
fn push(rec: &mut Recorder, op: ElementwiseOp, src: u32, b_off: u32, s: f32, out: u32, n: u32) {
    let g = grid(n.div_ceil(256));
    let p = ElementwiseUniforms {
        a_off: src,
        b_off,
        out_off: out,
        n,
        op: op.code(),
        s,
        grid_x: g[0],
    };
    rec.push(Kernel::Elementwise, vec![Bind::Arena, Bind::Uniform], &p, g);
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
    push(rec, op, ctx.off(a), ctx.off(b), 0.0, ctx.out, n);
    Ok(())
}

/// Record `x · s`.
pub fn scale(ctx: &NodeCtx, rec: &mut Recorder, x: NodeId, s: f32) -> Result<(), GpuError> {
    let n = ctx.n_values() as u32;
    push(rec, ElementwiseOp::Scale, ctx.off(x), 0, s, ctx.out, n);
    Ok(())
}

/// Record the copy of `x`'s last row.
pub fn last_row(ctx: &NodeCtx, rec: &mut Recorder, x: NodeId) -> Result<(), GpuError> {
    let xn = ctx.graph.node(x);
    let src = ctx.off(x) + ((xn.rows - 1) * xn.cols) as u32;
    let n = ctx.node.cols as u32;
    push(rec, ElementwiseOp::Copy, src, 0, 0.0, ctx.out, n);
    Ok(())
}
