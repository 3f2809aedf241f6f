//! Mixture-of-experts ops: the router (`moe_route.wgsl`, one workgroup per row, limited to
//! the best expert groups when the route has groups) and the chosen experts' products
//! (`matvec_id.wgsl`, one workgroup per (token, slot) pair and block of output rows, the
//! expert read from the route on the GPU). A prompt of at least [`MOE_GROUPED_MIN_ROWS`] rows
//! instead groups the pairs by expert, as the CPU does: `matmul_id.wgsl` sorts them by expert
//! from the route on the GPU and runs one tiled product over each expert's pairs. The
//! weighted sum is element-wise
//! ([`super::elementwise::moe_sum`]). Multi-head latent attention's per-head products
//! (mat_mul_heads) run the same kernel with slot `j` fixed to matrix `j`, and so do mat_muls of
//! float rows whose length is not a multiple of 32 (one slot, one matrix). Inputs are first
//! rounded as the CPU quantizes them for the weight's type ([`super::act_round`]).

use super::{Bind, NodeCtx, Recorder, grid};
use crate::DType;
use crate::gpu::device::GpuError;
use crate::gpu::params::{GatingCode, MatrixIdUniforms, MoeRouteUniforms};
use crate::gpu::shaders::Kernel;
use crate::graph::{NodeId, RouteParams, WeightId};

/// Record the router over `logits`.
pub fn route(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    logits: NodeId,
    params: RouteParams,
    bias: Option<WeightId>,
) -> Result<(), GpuError> {
    let ln = ctx.graph.node(logits);
    let w = match bias {
        Some(b) => {
            let t = ctx.graph.weight(b);
            if t.dtype() != DType::F32 || t.n_elements() != ln.cols {
                return Err(GpuError::Unsupported(format!(
                    "choice bias {:?} must be {} F32 values",
                    t.name(),
                    ln.cols
                )));
            }
            Bind::Weight(b.0, 0)
        }
        None => Bind::NoWeight,
    };
    let g = grid(ln.rows as u32);
    let p = MoeRouteUniforms {
        logits_off: ctx.off(logits),
        out_off: ctx.out,
        n_expert: ln.cols as u32,
        n_used: params.n_used as u32,
        n_rows: ln.rows as u32,
        gating: GatingCode::of(params.gating).code(),
        norm: params.norm as u32,
        scale: params.scale,
        has_bias: bias.is_some() as u32,
        grid_x: g[0],
        n_group: params.groups.map_or(0, |gr| gr.n_group as u32),
        n_group_used: params.groups.map_or(0, |gr| gr.n_used as u32),
    };
    rec.push(Kernel::MoeRoute, vec![Bind::Arena, w, Bind::Uniform], &p, g);
    Ok(())
}

/// mat_mul_id of at least this many rows runs grouped by expert (`matmul_id.wgsl`), fewer
/// one mat-vec per (token, slot) pair (`matvec_id.wgsl`), unless the executor was told
/// otherwise. On lavapipe the grouped path is as fast at 8 rows and faster above.
pub const MOE_GROUPED_MIN_ROWS: usize = 8;

/// Record `x · W_eᵀ` for the experts `e` that `route` chose: one dispatch per expert chunk of
/// the stacked weight `wid`, grouped by expert for prompts.
pub fn mat_mul_id(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    wid: WeightId,
    x: NodeId,
    route: NodeId,
) -> Result<(), GpuError> {
    let n_used = ctx.graph.node(route).cols / 2;
    let shape = ctx.graph.weight(wid).shape();
    if ctx.graph.node(x).rows >= ctx.matvec.grouped_min_rows
        && shape.len() == 3
        && shape[0].is_multiple_of(32)
    {
        return grouped_products(ctx, rec, wid, x, route, n_used);
    }
    stacked_products(ctx, rec, wid, x, Some(route), n_used)
}

/// The prompt path of [`mat_mul_id`]: per weight chunk one `matmul_id.wgsl` dispatch over
/// (chunk's experts × entry tiles an expert can have × output tiles), each workgroup gathering
/// its expert's (token, slot) pairs from the route on the GPU.
fn grouped_products(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    wid: WeightId,
    x: NodeId,
    route: NodeId,
    n_used: usize,
) -> Result<(), GpuError> {
    ctx.check_decoder(wid)?;
    let t = ctx.graph.weight(wid);
    let w = &ctx.weights[wid.0 as usize];
    let (n_in, n_out) = (t.shape()[0], t.shape()[1]);
    let xn = ctx.graph.node(x);
    // An expert appears at most once in a token's route: at most one entry per token.
    let entry_tiles = xn.rows.div_ceil(16) as u64;
    let out_tiles = n_out.div_ceil(64) as u32;
    let x_off = super::act_round::input(ctx, rec, wid, x)?;
    for (c, chunk) in w.chunks.iter().enumerate() {
        let n_chunk = chunk.n_rows / n_out;
        let total = n_chunk as u64 * entry_tiles * out_tiles as u64;
        if total > u32::MAX as u64 / 2 {
            return Err(GpuError::Unsupported(format!(
                "mat_mul_id of {} rows over {n_chunk} experts × {n_out} rows is too many workgroups",
                xn.rows
            )));
        }
        let g = grid(total as u32);
        let p = MatrixIdUniforms {
            x_off,
            out_off: ctx.out,
            n_in: n_in as u32,
            n_out: n_out as u32,
            row_bytes: w.row_bytes as u32,
            x_row: xn.cols as u32,
            x_slot: if xn.cols == n_in { 0 } else { n_in as u32 },
            route_off: ctx.off(route),
            n_used: n_used as u32,
            e0: (chunk.row0 / n_out) as u32,
            n_chunk: n_chunk as u32,
            n_pairs: (xn.rows * n_used) as u32,
            row_groups: out_tiles,
            grid_x: g[0],
            fixed: 0,
        };
        rec.push(
            Kernel::MatMulId(w.dtype),
            vec![Bind::Arena, Bind::Weight(wid.0, c as u32), Bind::Uniform],
            &p,
            g,
        );
    }
    Ok(())
}

/// Record mat_mul_heads: part `j` of each row of `x` times matrix `j` of the stacked weight
/// `wid`, as mat_mul_id with slot `j` fixed to expert `j` (no route).
pub fn mat_mul_heads(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    wid: WeightId,
    x: NodeId,
) -> Result<(), GpuError> {
    let n_parts = ctx.graph.weight(wid).shape().get(2).copied().unwrap_or(0);
    stacked_products(ctx, rec, wid, x, None, n_parts)
}

/// A mat_mul whose float rows are not a multiple of 32 values long (the block kernels' unit;
/// e.g. a 48-wide low-rank query projection): the one-slot product of [`mat_mul_heads`].
pub fn mat_mul_float_rows(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    wid: WeightId,
    x: NodeId,
) -> Result<(), GpuError> {
    stacked_products(ctx, rec, wid, x, None, 1)
}

/// The products of `n_used` slots per row of `x` with matrices of the stacked weight `wid`
/// (a 2-D weight is one matrix): the experts `route` chose, or matrix `j` for slot `j`
/// without a route.
fn stacked_products(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    wid: WeightId,
    x: NodeId,
    route: Option<NodeId>,
    n_used: usize,
) -> Result<(), GpuError> {
    ctx.check_decoder(wid)?;
    let t = ctx.graph.weight(wid);
    let name = ctx.node.op.name();
    let w = &ctx.weights[wid.0 as usize];
    let (n_in, n_out) = match *t.shape() {
        [n_in, n_out, _] => (n_in, n_out),
        // One matrix: its chunks must hold it whole, as they hold whole experts.
        [n_in, n_out] if w.chunks.len() == 1 => (n_in, n_out),
        _ => {
            return Err(GpuError::Unsupported(format!(
                "{name} weight {:?} of shape {:?} (3-D, or one 2-D chunk of float rows)",
                t.name(),
                t.shape()
            )));
        }
    };
    // Rows of whole 32-value blocks go through the block decoders; float rows of other
    // lengths (MLA's 24-wide synthetic heads) are decoded value by value.
    if n_in % 32 != 0 && t.dtype().block_elems() != 1 {
        return Err(GpuError::Unsupported(format!(
            "{name} with rows of {n_in} {:?} values (block formats take multiples of 32)",
            t.dtype()
        )));
    }
    let xn = ctx.graph.node(x);
    let n_pairs = xn.rows * n_used;
    let tpr = ctx.matvec.tpr;
    let row_groups = (n_out as u32).div_ceil(64 / tpr);
    let total = (n_pairs as u64) * row_groups as u64;
    if total > u32::MAX as u64 / 2 {
        return Err(GpuError::Unsupported(format!(
            "{name} of {n_pairs} (token, slot) pairs × {n_out} rows is too many workgroups"
        )));
    }
    let x_off = super::act_round::input(ctx, rec, wid, x)?;
    let g = grid(total as u32);
    for (c, chunk) in w.chunks.iter().enumerate() {
        // Chunks hold whole experts (see `weights::rows_per_chunk`).
        let p = MatrixIdUniforms {
            x_off,
            out_off: ctx.out,
            n_in: n_in as u32,
            n_out: n_out as u32,
            row_bytes: w.row_bytes as u32,
            x_row: xn.cols as u32,
            x_slot: if xn.cols == n_in { 0 } else { n_in as u32 },
            route_off: route.map_or(0, |r| ctx.off(r)),
            n_used: n_used as u32,
            e0: (chunk.row0 / n_out) as u32,
            n_chunk: (chunk.n_rows / n_out) as u32,
            n_pairs: n_pairs as u32,
            row_groups,
            grid_x: g[0],
            fixed: route.is_none() as u32,
        };
        rec.push(
            Kernel::MatVecId(w.dtype, tpr, ctx.matvec.subgroups),
            vec![Bind::Arena, Bind::Weight(wid.0, c as u32), Bind::Uniform],
            &p,
            g,
        );
    }
    Ok(())
}
