//! Encoding a planned graph as GPU dispatches, one op at a time: each graph op has an encoder
//! in a submodule that checks what the kernels support, fills the kernel's uniform parameter
//! block ([`super::params`]) and records its dispatch(es) with a [`Recorder`], reserving the
//! step-buffer words it needs in the [`StepLayout`]. [`encode_node`] dispatches a node to its
//! encoder. Weight products first round their input as the CPU does ([`act_round`]), into a
//! scratch region after the plan's nodes ([`Scratch`]).

mod act_round;
mod attention;
mod elementwise;
mod get_rows;
mod matmul;
mod moe;
pub use moe::MOE_GROUPED_MIN_ROWS;
mod norm;
mod rope;

use std::sync::Arc;

use super::device::GpuError;
use super::params::{ElementwiseOp, KernelParams, words};
use super::shaders::{Kernel, decoder};
use super::step::StepLayout;
use super::weights::GpuWeight;
use crate::DType;
use crate::graph::{Graph, Node, NodeId, Op, Plan, WeightId};

/// Largest head width the attention kernels take.
pub const MAX_HEAD_DIM: usize = 1024;
/// Largest workgroup count along one dispatch dimension.
const MAX_GROUPS: u32 = 65535;

/// What one binding of a dispatch refers to, resolved to a buffer when the bind groups are
/// made.
#[derive(Clone, Copy, Debug)]
pub enum Bind {
    /// The activation arena.
    Arena,
    /// Chunk `.1` of weight `.0`.
    Weight(u32, u32),
    /// A placeholder where an optional weight is absent.
    NoWeight,
    /// The step buffer (token ids, positions, RoPE tables, attention scan infos).
    Step,
    /// The dispatch's range of the uniform buffer.
    Uniform,
    /// The keys of a KV store.
    KvK(u32),
    /// The values of a KV store.
    KvV(u32),
    /// The cell positions of a KV store.
    KvPos(u32),
    /// The split-K attention partials.
    Partials,
}

/// One kernel launch.
pub struct Dispatch {
    /// The kernel.
    pub kernel: Kernel,
    /// Its bindings, in binding order.
    pub binds: Vec<Bind>,
    /// Byte offset and size of its parameters in the uniform buffer.
    pub uniform: (u64, u64),
    /// Workgroups along x, y, z.
    pub groups: [u32; 3],
    /// The graph node it computes (part of).
    pub node: usize,
    /// For the attention kernels: the sequence group the dispatch serves, whose scan info
    /// decides each step whether it runs and its workgroups.
    pub seq_group: Option<GroupDispatch>,
}

/// An attention kernel dispatched for one sequence group of the step.
#[derive(Clone, Copy, Debug)]
pub struct GroupDispatch {
    /// Step-buffer offset of the group's scan info.
    pub info: usize,
    /// Which attention kernel.
    pub kind: GroupKernel,
}

/// The kernels dispatched per sequence group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKernel {
    /// Split-K attention (groups of up to [`attention::DECODE_MAX_TOKENS`] tokens): x the
    /// step's split count, z the group's tokens.
    Decode,
    /// Reduction of the split-K partials: y the group's tokens.
    Reduce,
    /// Query-tile attention (longer groups): x a tile of 8 of the group's tokens.
    Prefill,
    /// The KV write: y the group's tokens.
    KvWrite,
}

impl GroupDispatch {
    /// The workgroups of this step, from the recorded `groups` and the group's scan info in
    /// `host`; `None` when the dispatch does not run (the group is absent, or its size takes
    /// the other attention kernel).
    pub fn workgroups(&self, groups: [u32; 3], host: &[u32]) -> Option<[u32; 3]> {
        let info = super::step::ScanInfo::read(host, self.info);
        let n = info.n_tok;
        let decode = n as usize <= attention::DECODE_MAX_TOKENS;
        match self.kind {
            _ if n == 0 => None,
            GroupKernel::Decode => decode.then_some([info.n_split, groups[1], n]),
            GroupKernel::Reduce => decode.then_some([groups[0], n, 1]),
            GroupKernel::Prefill => (!decode).then_some([n.div_ceil(8), groups[1], 1]),
            GroupKernel::KvWrite => Some([groups[0], n, 1]),
        }
    }
}

/// The arena region after the plan's nodes where weight products' inputs are rounded
/// ([`act_round`]).
#[derive(Clone, Copy, Debug)]
pub struct Scratch {
    /// Its arena offset (a multiple of 16 values).
    pub off: u32,
    /// The values it must hold: the largest input rounded into it.
    pub len: usize,
    /// The node and format it holds when the dispatches recorded so far have run.
    holds: Option<(NodeId, DType)>,
}

/// Collects the dispatches of a graph with their uniform parameters, and the step-buffer
/// layout they read.
pub struct Recorder {
    /// The adapter's uniform-buffer offset alignment, in bytes.
    align: usize,
    /// The uniform buffer's contents.
    pub uniform_words: Vec<u32>,
    /// The dispatches in order.
    pub dispatches: Vec<Dispatch>,
    /// Where the step's values go in the step buffer.
    pub layout: StepLayout,
    /// f32 values the attention partials buffer needs.
    pub partial_len: usize,
    /// The rounded-input region of the arena.
    pub scratch: Scratch,
    /// The node being encoded.
    node: usize,
}

impl Recorder {
    /// An empty recording for steps of `n_tok` tokens in up to `n_groups` sequence groups,
    /// with uniform offsets aligned to `align` bytes, over an arena whose nodes take its first
    /// `arena_len` values.
    pub fn new(n_tok: usize, n_groups: usize, align: usize, arena_len: usize) -> Recorder {
        Recorder {
            align,
            uniform_words: Vec::new(),
            dispatches: Vec::new(),
            layout: StepLayout::new(n_tok, n_groups),
            partial_len: 4,
            scratch: Scratch {
                off: arena_len.div_ceil(16) as u32 * 16,
                len: 0,
                holds: None,
            },
            node: 0,
        }
    }

    /// Record a launch of `kernel` with `params` (in 16-byte units of the uniform buffer, at
    /// an aligned offset) for the node being encoded; returns its index.
    pub fn push<P: KernelParams>(
        &mut self,
        kernel: Kernel,
        binds: Vec<Bind>,
        params: &P,
        groups: [u32; 3],
    ) -> usize {
        let params = words(params);
        let start = self.uniform_words.len() * 4;
        let size = params.len().div_ceil(4) * 16;
        self.uniform_words.extend_from_slice(params);
        let end = (start + size).div_ceil(self.align) * self.align;
        self.uniform_words.resize(end / 4, 0);
        self.dispatches.push(Dispatch {
            kernel,
            binds,
            uniform: (start as u64, size as u64),
            groups,
            seq_group: None,
            node: self.node,
        });
        self.dispatches.len() - 1
    }
}

/// How the mat-vec kernel is specialised for the adapter.
#[derive(Clone, Copy, Debug)]
pub struct MatVecChoice {
    /// Invocations per row.
    pub tpr: u32,
    /// Row sums by subgroup shuffles.
    pub subgroups: bool,
    /// mat_mul_id of at least this many rows runs grouped by expert (`matmul_id.wgsl`).
    pub grouped_min_rows: usize,
}

/// What an op encoder reads: the graph, its plan and weights, and the node being encoded.
pub struct NodeCtx<'a> {
    /// The graph.
    pub graph: &'a Graph,
    /// Its plan.
    pub plan: &'a Plan,
    /// Its weights, uploaded.
    pub weights: &'a [Arc<GpuWeight>],
    /// The node.
    pub node: &'a Node,
    /// Arena offset of the node's output.
    pub out: u32,
    /// The mat-vec kernel to use.
    pub matvec: MatVecChoice,
}

impl NodeCtx<'_> {
    /// Arena offset of node `id`'s output.
    pub fn off(&self, id: NodeId) -> u32 {
        self.plan.offsets[id.0 as usize] as u32
    }

    /// Tokens per step.
    pub fn n_tok(&self) -> usize {
        self.graph.n_tokens
    }

    /// Values of the node's output.
    pub fn n_values(&self) -> usize {
        self.node.rows * self.node.cols
    }

    /// Fails unless the kernels can decode weight `w`'s type.
    pub fn check_decoder(&self, w: WeightId) -> Result<(), GpuError> {
        let t = self.graph.weight(w);
        if decoder(t.dtype()).is_none() {
            return Err(GpuError::UnsupportedDType {
                name: t.name().into(),
                dtype: t.dtype(),
            });
        }
        Ok(())
    }
}

/// Record the dispatches of node `index` of `ctx.graph`.
pub fn encode_node(ctx: &NodeCtx, index: usize, rec: &mut Recorder) -> Result<(), GpuError> {
    rec.node = index;
    match ctx.node.op {
        Op::GetRows { table } => get_rows::encode(ctx, rec, table),
        Op::RmsNorm {
            x,
            weight,
            group,
            eps,
        } => norm::encode(ctx, rec, x, weight, group, eps),
        Op::Add { a, b } => elementwise::binary(ctx, rec, ElementwiseOp::Add, a, b),
        Op::Mul { a, b } => elementwise::binary(ctx, rec, ElementwiseOp::Mul, a, b),
        Op::SwiGlu { gate, up } => elementwise::binary(ctx, rec, ElementwiseOp::SwiGlu, gate, up),
        Op::GeGlu { gate, up } => elementwise::binary(ctx, rec, ElementwiseOp::GeGlu, gate, up),
        Op::Scale { x, s } => elementwise::scale(ctx, rec, x, s),
        Op::AddBias { x, bias } => elementwise::add_bias(ctx, rec, x, bias),
        Op::Softcap { x, cap } => elementwise::softcap(ctx, rec, x, cap),
        Op::ReluSqr { x } => elementwise::relu_sqr(ctx, rec, x),
        Op::LastRow { x } => elementwise::last_row(ctx, rec, x),
        Op::MoeRoute {
            logits,
            params,
            choice_bias,
        } => moe::route(ctx, rec, logits, params, choice_bias),
        Op::MatMulId { w, x, route } => moe::mat_mul_id(ctx, rec, w, x, route),
        Op::MoeSum { x, route } => elementwise::moe_sum(ctx, rec, x, route),
        Op::MatMulHeads { w, x } => moe::mat_mul_heads(ctx, rec, w, x),
        Op::Columns { x, group, start } => elementwise::columns(ctx, rec, x, group, start),
        Op::Concat { a, b, groups } => elementwise::concat(ctx, rec, a, b, groups),
        Op::SelectRows { x } => elementwise::select_rows(ctx, rec, x),
        Op::MatMul { w, x } => matmul::encode(ctx, rec, w, x),
        Op::Rope {
            x,
            head_dim,
            params,
            factors,
        } => rope::encode(ctx, rec, x, head_dim, params, factors),
        Op::SwiGluOai {
            gate,
            up,
            alpha,
            limit,
        } => elementwise::swiglu_oai(ctx, rec, [gate, up], alpha, limit),
        Op::AddBiasId { x, bias, route } => elementwise::add_bias_id(ctx, rec, x, bias, route),
        Op::Attention {
            q,
            k,
            v,
            kv,
            params,
            sinks,
        } => attention::encode(ctx, rec, [q, k, v], kv, &params, sinks),
    }
}

/// Split `n` workgroups over x and y within the per-dimension limit; returns `[x, y, 1]`.
fn grid(n: u32) -> [u32; 3] {
    let x = n.clamp(1, MAX_GROUPS);
    [x, n.div_ceil(x).max(1), 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::params::ElementwiseUniforms;

    #[test]
    fn grid_stays_within_the_dimension_limit() {
        assert_eq!(grid(0), [1, 1, 1]);
        assert_eq!(grid(7), [7, 1, 1]);
        assert_eq!(grid(MAX_GROUPS + 1), [MAX_GROUPS, 2, 1]);
    }

    #[test]
    fn uniforms_are_padded_to_16_bytes_at_aligned_offsets() {
        let mut rec = Recorder::new(1, 1, 256, 0);
        let p = ElementwiseUniforms::default();
        rec.push(Kernel::Elementwise, vec![Bind::Arena], &p, [1, 1, 1]);
        rec.node = 3;
        rec.push(Kernel::Elementwise, vec![Bind::Arena], &p, [1, 1, 1]);
        assert_eq!(rec.dispatches[0].uniform, (0, 48));
        assert_eq!(rec.dispatches[1].uniform, (256, 48));
        assert_eq!(rec.dispatches[1].node, 3);
        assert_eq!(rec.uniform_words.len(), 128);
    }
}
