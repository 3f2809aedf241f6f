//! Rotary embedding: one `rope.wgsl` dispatch reading the `(cos, sin)` table the host writes
//! into the step buffer ([`crate::rope::rope_table`], shared with the CPU backend).

use super::{Bind, NodeCtx, Recorder, grid};
use crate::gpu::device::GpuError;
use crate::gpu::params::RopeUniforms;
use crate::gpu::shaders::Kernel;
use crate::graph::{NodeId, RopeMode, RopeParams, WeightId};

/// Record the rotation of every `head_dim`-wide head of `x` at the step's positions.
pub fn encode(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    x: NodeId,
    head_dim: usize,
    params: RopeParams,
    factors: Option<WeightId>,
) -> Result<(), GpuError> {
    let factors = match factors {
        Some(w) => Some(
            ctx.graph
                .weight(w)
                .as_f32()
                .map(<[f32]>::to_vec)
                .ok_or_else(|| {
                    GpuError::Unsupported("RoPE frequency factors must be F32".into())
                })?,
        ),
        None => None,
    };
    let table = rec.layout.rope_table(params, factors, ctx.n_tok());
    let n = ctx.n_values() as u32;
    let g = grid(n.div_ceil(256));
    let p = RopeUniforms {
        x_off: ctx.off(x),
        out_off: ctx.out,
        n_tok: ctx.node.rows as u32,
        cols: ctx.node.cols as u32,
        head_dim: head_dim as u32,
        n_dims: params.n_dims as u32,
        neox: (params.mode == RopeMode::Neox) as u32,
        table_off: table as u32,
        grid_x: g[0],
    };
    rec.push(
        Kernel::Rope,
        vec![Bind::Arena, Bind::Step, Bind::Uniform],
        &p,
        g,
    );
    Ok(())
}
