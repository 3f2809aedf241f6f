//! Weight products' inputs rounded as the CPU quantizes them: before a quantized dot product
//! the CPU (as llama.cpp's) quantizes each activation row to the weight format's `vec_dot_type`
//! (Q8_0, Q8_1, Q8_K, f16, bf16). The GPU does the same with one `act_round.wgsl` pass that
//! writes the rounded values (quantized, then dequantized) into the arena's scratch region,
//! which the product then reads instead of the node. The scratch keeps the last rounding: the
//! products of one input in one format (Q/K/V, gate/up) round it once.

use super::{Bind, NodeCtx, Recorder, grid};
use crate::gpu::device::GpuError;
use crate::gpu::params::ActRoundUniforms;
use crate::gpu::shaders::{Kernel, activation_rounding};
use crate::graph::{NodeId, WeightId};

/// The arena offset a product with weight `wid` reads its input `x` from: `x`'s own where the
/// CPU keeps f32 activations for the weight's type, else the scratch region holding `x`
/// rounded to the weight's `vec_dot_type` (recording the rounding pass unless the scratch
/// already holds exactly that).
pub fn input(ctx: &NodeCtx, rec: &mut Recorder, wid: WeightId, x: NodeId) -> Result<u32, GpuError> {
    let Some((act, _)) = activation_rounding(ctx.graph.weight(wid).dtype()) else {
        return Ok(ctx.off(x));
    };
    if rec.scratch.holds == Some((x, act)) {
        return Ok(rec.scratch.off);
    }
    let xn = ctx.graph.node(x);
    let block = act.block_elems();
    if !xn.cols.is_multiple_of(block) {
        return Err(GpuError::Unsupported(format!(
            "{} input rows of {} values (quantized to {act} in blocks of {block})",
            ctx.node.op.name(),
            xn.cols
        )));
    }
    let n = xn.rows * xn.cols;
    let n_blocks = (n / block) as u32;
    let g = grid(n_blocks.div_ceil(64));
    let p = ActRoundUniforms {
        src_off: ctx.off(x),
        dst_off: rec.scratch.off,
        n_blocks,
        grid_x: g[0],
    };
    rec.push(
        Kernel::ActRound(act),
        vec![Bind::Arena, Bind::Uniform],
        &p,
        g,
    );
    rec.scratch.holds = Some((x, act));
    rec.scratch.len = rec.scratch.len.max(n);
    Ok(rec.scratch.off)
}
