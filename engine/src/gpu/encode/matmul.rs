//! Weight products: per row chunk of the weight, one `matvec.wgsl` (or `matvec_row.wgsl`)
//! dispatch for a few tokens, one tiled `matmul.wgsl` dispatch for prompts; float rows whose
//! length is not a multiple of 32 go through `matvec_id.wgsl`'s value-by-value path. The input
//! is first rounded as the CPU quantizes it for the weight's type ([`super::act_round`]).

use super::{Bind, NodeCtx, Recorder, grid};
use crate::gpu::device::GpuError;
use crate::gpu::params::MatrixUniforms;
use crate::gpu::shaders::Kernel;
use crate::graph::{NodeId, WeightId};

/// Token counts up to this use the mat-vec kernel.
const MATVEC_MAX_TOKENS: usize = 8;

/// Record `x · wᵀ`.
pub fn encode(ctx: &NodeCtx, rec: &mut Recorder, wid: WeightId, x: NodeId) -> Result<(), GpuError> {
    ctx.check_decoder(wid)?;
    let w = &ctx.weights[wid.0 as usize];
    let xn = ctx.graph.node(x);
    let (rows, n_in) = (xn.rows, xn.cols);
    if n_in % 32 != 0 && ctx.graph.weight(wid).dtype().block_elems() == 1 {
        // Float rows of other lengths: value by value, in the mat-vec-per-slot kernel.
        return super::moe::mat_mul_float_rows(ctx, rec, wid, x);
    }
    if n_in % 32 != 0 {
        return Err(GpuError::Unsupported(format!(
            "mat_mul with rows of {n_in} values (the kernels take multiples of 32)"
        )));
    }
    let x_off = super::act_round::input(ctx, rec, wid, x)?;
    let tpr = ctx.matvec.tpr;
    for (c, chunk) in w.chunks.iter().enumerate() {
        let decode = rows <= MATVEC_MAX_TOKENS;
        let g = if decode {
            grid((chunk.n_rows as u32).div_ceil(64 / tpr))
        } else {
            [
                (chunk.n_rows as u32).div_ceil(64),
                (rows as u32).div_ceil(64),
                1,
            ]
        };
        let p = MatrixUniforms {
            x_off,
            out_off: ctx.out,
            n_in: n_in as u32,
            n_rows: chunk.n_rows as u32,
            row_bytes: w.row_bytes as u32,
            out_stride: ctx.node.cols as u32,
            row0: chunk.row0 as u32,
            n_tok: rows as u32,
            grid_x: g[0],
        };
        let k = if decode {
            Kernel::MatVec(w.dtype, tpr, ctx.matvec.subgroups)
        } else {
            Kernel::MatMul(w.dtype)
        };
        rec.push(
            k,
            vec![Bind::Arena, Bind::Weight(wid.0, c as u32), Bind::Uniform],
            &p,
            g,
        );
    }
    Ok(())
}
