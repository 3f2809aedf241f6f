//! RMS normalisation: one `rms_norm.wgsl` dispatch, a workgroup per group of values.

use super::{Bind, NodeCtx, Recorder, grid};
use crate::DType;
use crate::gpu::device::GpuError;
use crate::gpu::params::RmsNormUniforms;
use crate::gpu::shaders::Kernel;
use crate::graph::{NodeId, WeightId};

/// Record the RMS normalisation of `x` over groups of `group` values, times the F32 gain
/// `weight` when given.
pub fn encode(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    x: NodeId,
    weight: Option<WeightId>,
    group: usize,
    eps: f32,
) -> Result<(), GpuError> {
    let n_groups = (ctx.n_values() / group) as u32;
    let g = grid(n_groups);
    let wb = match weight {
        Some(w) => {
            let t = ctx.graph.weight(w);
            if t.dtype() != DType::F32 || t.n_elements() != group {
                return Err(GpuError::Unsupported(format!(
                    "norm weight {:?} must be {group} F32 values",
                    t.name()
                )));
            }
            Bind::Weight(w.0, 0)
        }
        None => Bind::NoWeight,
    };
    let p = RmsNormUniforms {
        x_off: ctx.off(x),
        out_off: ctx.out,
        group: group as u32,
        n_groups,
        eps,
        has_weight: weight.is_some() as u32,
        grid_x: g[0],
    };
    rec.push(Kernel::RmsNorm, vec![Bind::Arena, wb, Bind::Uniform], &p, g);
    Ok(())
}
