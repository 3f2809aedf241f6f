//! Flash attention over a layer's KV store: for a few tokens the split-K kernel
//! (`attention_decode.wgsl`, its workgroup count per head set each step from the scan info)
//! and the reduction of its partials (`attention_reduce.wgsl`), for prompts the query-tile
//! kernel (`attention_prefill.wgsl`); then `kv_write.wgsl` stores the batch's K/V. Heads go
//! up to [`MAX_HEAD_DIM`] wide (DeepSeek-V2's 576-wide MLA keys); a store without values
//! (MLA's latent cache, flagged in the step's scan info) gives each value as the first
//! `head_dim_v` elements of the key head. Attention sinks (gpt-oss: one logit per query head
//! that joins the softmax's denominator with no value) enter once per query, after the keys as
//! the CPU folds them in: at the end of the prompt kernel, and in the reduction of the split-K
//! partials (never per split).
//!
//! A step may mix sequences, each over its own cells of the store: all of this is recorded
//! once per sequence group the step may hold, each reading its group's scan info, and a step runs the
//! dispatches of the groups it has (the split-K pair for groups of up to
//! [`DECODE_MAX_TOKENS`] tokens, the query-tile kernel for longer ones; see
//! [`super::GroupDispatch::workgroups`]).

use super::{Bind, GroupDispatch, GroupKernel, MAX_HEAD_DIM, NodeCtx, Recorder};
use crate::DType;
use crate::gpu::device::GpuError;
use crate::gpu::params::{AttentionUniforms, AttnReduceUniforms, KvWriteUniforms};
use crate::gpu::shaders::Kernel;
use crate::gpu::step::{ATTN_SPLITS, ScanInfo};
use crate::graph::{AttnParams, KvId, NodeId, WeightId};

/// Sequence groups of up to this many tokens use the split-K attention kernel.
pub const DECODE_MAX_TOKENS: usize = 4;

/// Record the attention of queries `q` over KV store `kv` and the batch's keys and values
/// (`[q, k, v]`), with the attention `sinks` (F32, one per query head) if any, then the write
/// of the batch's K/V into the store.
pub fn encode(
    ctx: &NodeCtx,
    rec: &mut Recorder,
    [q, k, v]: [NodeId; 3],
    kv: KvId,
    a: &AttnParams,
    sinks: Option<WeightId>,
) -> Result<(), GpuError> {
    let (dk, dv) = (a.head_dim, a.head_dim_v);
    if dk > MAX_HEAD_DIM
        || dv > MAX_HEAD_DIM
        || dk % 8 != 0
        || dv % 8 != 0
        || a.n_head_kv == 0
        || !a.n_head.is_multiple_of(a.n_head_kv)
    {
        return Err(GpuError::Unsupported(format!(
            "attention with head widths {dk}/{dv} and {}/{} heads (widths up to \
             {MAX_HEAD_DIM}, multiples of 8)",
            a.n_head, a.n_head_kv
        )));
    }
    let sinks_bind = match sinks {
        Some(w) => {
            let t = ctx.graph.weight(w);
            if t.dtype() != DType::F32 || t.n_elements() != a.n_head {
                return Err(GpuError::Unsupported(format!(
                    "attention sinks {:?} must be {} F32 values",
                    t.name(),
                    a.n_head
                )));
            }
            Bind::Weight(w.0, 0)
        }
        None => Bind::NoWeight,
    };
    let n_tok = ctx.n_tok();
    let info0 = rec.layout.attention_info(kv.0, a.window);
    let pos_off = rec.layout.positions as u32;
    let kvb = [
        Bind::Arena,
        Bind::KvK(kv.0),
        Bind::KvV(kv.0),
        Bind::KvPos(kv.0),
        Bind::Step,
        Bind::Uniform,
    ];
    // A step of n tokens holds at most n groups.
    let n_groups = rec.layout.n_groups.min(n_tok);
    let decode_tokens = n_tok.min(DECODE_MAX_TOKENS);
    for group in 0..n_groups as u32 {
        let info = info0 + ScanInfo::WORDS * group as usize;
        let per_group = |kind| Some(GroupDispatch { info, kind });
        let p = AttentionUniforms {
            q_off: ctx.off(q),
            k_off: ctx.off(k),
            v_off: ctx.off(v),
            out_off: ctx.out,
            n_head: a.n_head as u32,
            n_head_kv: a.n_head_kv as u32,
            dk: dk as u32,
            dv: dv as u32,
            scale: a.scale,
            window: a.window.unwrap_or(0),
            softcap: a.softcap.unwrap_or(0.0),
            has_sinks: sinks.is_some() as u32,
            pos_off,
            info_off: info as u32,
            max_splits: ATTN_SPLITS,
        };
        let mut b = kvb.to_vec();
        b.push(Bind::Partials);
        let d = rec.push(
            Kernel::AttnDecode,
            b,
            &p,
            [ATTN_SPLITS, a.n_head as u32, decode_tokens as u32],
        );
        rec.dispatches[d].seq_group = per_group(GroupKernel::Decode);
        rec.partial_len = rec
            .partial_len
            .max(decode_tokens * a.n_head * ATTN_SPLITS as usize * (dv + 2));
        let pr = AttnReduceUniforms {
            out_off: ctx.out,
            n_head: a.n_head as u32,
            dv: dv as u32,
            info_off: info as u32,
            has_sinks: sinks.is_some() as u32,
        };
        let d = rec.push(
            Kernel::AttnReduce,
            vec![
                Bind::Arena,
                Bind::Partials,
                Bind::Step,
                Bind::Uniform,
                sinks_bind,
            ],
            &pr,
            [a.n_head as u32, decode_tokens as u32, 1],
        );
        rec.dispatches[d].seq_group = per_group(GroupKernel::Reduce);
        if n_tok > DECODE_MAX_TOKENS {
            let mut b = kvb.to_vec();
            b.push(sinks_bind);
            let d = rec.push(
                Kernel::AttnPrefill(dv.div_ceil(256).max(1) as u32),
                b,
                &p,
                [(n_tok as u32).div_ceil(8), a.n_head as u32, 1],
            );
            rec.dispatches[d].seq_group = per_group(GroupKernel::Prefill);
        }
    }
    // Every group's K/V written after every group's attention (a group writes only cells of
    // its own, so the order between groups does not matter).
    let (kw, vw) = (a.n_head_kv * dk, a.n_head_kv * dv);
    for group in 0..n_groups as u32 {
        let info = info0 + ScanInfo::WORDS * group as usize;
        let pw = KvWriteUniforms {
            k_off: ctx.off(k),
            v_off: ctx.off(v),
            kw: kw as u32,
            vw: vw as u32,
            info_off: info as u32,
            pos_off,
        };
        let d = rec.push(
            Kernel::KvWrite,
            kvb.to_vec(),
            &pw,
            [(kw.max(vw) as u32 / 2).div_ceil(64), n_tok as u32, 1],
        );
        rec.dispatches[d].seq_group = Some(GroupDispatch {
            info,
            kind: GroupKernel::KvWrite,
        });
    }
    Ok(())
}
