//! Embedding lookup: one `get_rows.wgsl` dispatch per row chunk of the table.

use super::{Bind, NodeCtx, Recorder};
use crate::gpu::device::GpuError;
use crate::gpu::params::GetRowsUniforms;
use crate::gpu::shaders::Kernel;
use crate::graph::WeightId;

/// Record the rows of `table` selected by the step's token ids.
pub fn encode(ctx: &NodeCtx, rec: &mut Recorder, table: WeightId) -> Result<(), GpuError> {
    let w = &ctx.weights[table.0 as usize];
    ctx.check_decoder(table)?;
    let cols = ctx.node.cols;
    if !cols.is_multiple_of(32) {
        return Err(GpuError::Unsupported(format!(
            "get_rows with rows of {cols} values (the kernel takes multiples of 32)"
        )));
    }
    let n_tok = ctx.n_tok() as u32;
    for (c, chunk) in w.chunks.iter().enumerate() {
        let p = GetRowsUniforms {
            out_off: ctx.out,
            n_cols: cols as u32,
            row_bytes: w.row_bytes as u32,
            row0: chunk.row0 as u32,
            n_rows: chunk.n_rows as u32,
            tok_off: rec.layout.tokens as u32,
            n_tok,
        };
        rec.push(
            Kernel::GetRows(w.dtype),
            vec![
                Bind::Arena,
                Bind::Weight(table.0, c as u32),
                Bind::Step,
                Bind::Uniform,
            ],
            &p,
            [(cols as u32 / 32).div_ceil(64), n_tok, 1],
        );
    }
    Ok(())
}
