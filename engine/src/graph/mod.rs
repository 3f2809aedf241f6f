//! The compute graph: an op enum, nodes that refer to earlier nodes, a builder that records a
//! model's ops one layer at a time, and (in [`plan`]) the planner that gives every
//! intermediate a slice of one arena by liveness.
//!
//! Every node produces an f32 matrix of `rows × cols` (rows are tokens, or heads of tokens).
//! Per-step values — token ids and positions — are not baked in: they are the step's inputs,
//! so one graph (and its plan) serves every decode step of the same batch size.

pub mod plan;

use crate::{DType, Tensor};

pub use plan::Plan;

/// Index of a node in its graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(pub u32);

/// Index of a weight tensor in its graph's weight table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WeightId(pub u32);

/// Index of a KV store among those passed to the executor (one per attention layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvId(pub u32);

/// How RoPE pairs dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// Adjacent pairs `(2i, 2i+1)` (ggml "normal").
    Normal,
    /// Halves `(i, i + n_dims/2)` (ggml NeoX).
    Neox,
}

/// Everything the rope op needs besides positions, in ggml's terms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    /// Pairing of dimensions.
    pub mode: RopeMode,
    /// Rotated dimensions per head (the rest pass through).
    pub n_dims: usize,
    /// Frequency base.
    pub base: f32,
    /// 1/scaling factor (1 without scaling).
    pub freq_scale: f32,
    /// YaRN extrapolation mix (0 disables YaRN).
    pub ext_factor: f32,
    /// Attention magnitude factor.
    pub attn_factor: f32,
    /// YaRN fast boundary.
    pub beta_fast: f32,
    /// YaRN slow boundary.
    pub beta_slow: f32,
    /// Original training context for YaRN.
    pub orig_ctx: u32,
}

/// Attention settings of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnParams {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads; query head `h` reads KV head `h / (n_head / n_head_kv)`.
    pub n_head_kv: usize,
    /// Width of a key (and query) head.
    pub head_dim: usize,
    /// Width of a value head.
    pub head_dim_v: usize,
    /// Multiplier of q·k.
    pub scale: f32,
    /// Sliding window: key at `pk` is visible from `pq` when `pq - pk < window`.
    pub window: Option<u32>,
    /// `softcap·tanh(x/softcap)` on the scores when set.
    pub softcap: Option<f32>,
}

/// How a mixture-of-experts router turns one token's logits into expert scores (llama.cpp's
/// `llama_expert_gating_func_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpertGating {
    /// Softmax over all experts; the chosen experts' probabilities are their weights (Qwen,
    /// Mixtral, DeepSeek-V2).
    Softmax,
    /// A sigmoid of each logit (DeepSeek-V3).
    Sigmoid,
    /// The top logits are chosen, and a softmax over the chosen ones gives their weights
    /// (gpt-oss).
    SoftmaxWeight,
}

/// How a router chooses experts and weighs them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouteParams {
    /// Experts per token.
    pub n_used: usize,
    /// Scores from logits.
    pub gating: ExpertGating,
    /// Divide the chosen weights by their sum (at least 2⁻¹⁴, as llama.cpp clamps it).
    pub norm: bool,
    /// Multiply the weights by this (1 for none).
    pub scale: f32,
    /// Group-limited choice (DeepSeek-V3), or `None` for a choice among all experts.
    pub groups: Option<ExpertGroups>,
}

/// Group-limited routing (DeepSeek-V3, Kimi K2; llama.cpp's `n_expert_groups` and
/// `n_group_used`): the experts are split into `n_group` groups of consecutive ids, each
/// group scores the sum of its two best choice scores (the scores with the choice bias), and
/// only the experts of the `n_used` best groups may be chosen (the others' choice scores
/// become −∞; their weights are untouched).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertGroups {
    /// Groups the experts are split into (`{arch}.expert_group_count`).
    pub n_group: usize,
    /// Groups whose experts may be chosen (`{arch}.expert_group_used_count`).
    pub n_used: usize,
}

impl ExpertGroups {
    /// Check the groups against a router of `n_expert` experts choosing `n_expert_used`:
    /// more than one group, groups that divide the experts into groups of at least two (a
    /// group scores its best two), `0 < n_used < n_group`, and enough experts in the used
    /// groups for the choice. The error says which condition failed.
    pub fn check(&self, n_expert: usize, n_expert_used: usize) -> Result<(), String> {
        let (g, u) = (self.n_group, self.n_used);
        if g < 2 || !n_expert.is_multiple_of(g) || n_expert / g < 2 {
            return Err(format!(
                "{g} expert groups must divide the {n_expert} experts into at least two groups \
                 of at least two experts"
            ));
        }
        if u == 0 || u >= g {
            return Err(format!(
                "{u} groups used must be more than 0 and fewer than the {g} groups"
            ));
        }
        if u * (n_expert / g) < n_expert_used {
            return Err(format!(
                "{u} groups used of {} experts each hold fewer than the {n_expert_used} \
                 experts chosen per token",
                n_expert / g
            ));
        }
        Ok(())
    }

    /// Experts per group.
    pub fn group_size(&self, n_expert: usize) -> usize {
        n_expert / self.n_group
    }
}

/// Most experts a router may choose from (Qwen3-MoE has 128, DeepSeek-V3 256).
pub const MAX_EXPERTS: usize = 1024;
/// Most experts a router may choose per token.
pub const MAX_EXPERTS_USED: usize = 64;

/// Which rows of the final node the caller wants back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputRows {
    /// Every token's row (perplexity, embeddings).
    All,
    /// Only the last token's row (generation).
    Last,
    /// `k` rows chosen per step (the step's `out_rows`): the rows of several sequences'
    /// tokens whose logits are wanted (batched decoding).
    Rows(usize),
}

impl OutputRows {
    /// Rows of output a step of `n_tokens` tokens produces.
    pub fn count(self, n_tokens: usize) -> usize {
        match self {
            OutputRows::All => n_tokens,
            OutputRows::Last => 1,
            OutputRows::Rows(k) => k,
        }
    }
}

/// An operation. Inputs are earlier nodes or weights; the output is a new f32 matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// Rows of `table` selected by the step's token ids (dequantized to f32).
    GetRows {
        /// The embedding table (`[n_embd, n_vocab]`).
        table: WeightId,
    },
    /// RMS normalisation over groups of `group` elements, then (optionally) times `weight`
    /// (a vector of `group` elements, broadcast).
    RmsNorm {
        /// Input.
        x: NodeId,
        /// Optional gain.
        weight: Option<WeightId>,
        /// Group width (the row width, or the head width for per-head norms).
        group: usize,
        /// Epsilon inside the square root.
        eps: f32,
    },
    /// Element-wise product of two nodes of the same shape.
    Mul {
        /// Left.
        a: NodeId,
        /// Right.
        b: NodeId,
    },
    /// Element-wise sum of two nodes of the same shape.
    Add {
        /// Left.
        a: NodeId,
        /// Right.
        b: NodeId,
    },
    /// `x + bias` with the F32 vector `bias` (one value per column) added to every row.
    AddBias {
        /// Input.
        x: NodeId,
        /// The bias, `cols` F32 values.
        bias: WeightId,
    },
    /// `cap · tanh(x / cap)` element-wise (Gemma 2's final logit soft-capping).
    Softcap {
        /// Input.
        x: NodeId,
        /// The cap (> 0).
        cap: f32,
    },
    /// `max(x, 0)²` element-wise (the squared-ReLU activation of PLM's feed-forward, ggml's
    /// `relu` then `sqr`).
    ReluSqr {
        /// Input.
        x: NodeId,
    },
    /// Multiplication by a constant.
    Scale {
        /// Input.
        x: NodeId,
        /// Factor.
        s: f32,
    },
    /// `x · Wᵀ`: every row of `x` against every row of `w` (weights in any supported type).
    MatMul {
        /// Weights `[n_in, n_out]`.
        w: WeightId,
        /// Activations `rows × n_in`.
        x: NodeId,
    },
    /// Rotary position embedding of every head of every row, at the step's positions.
    Rope {
        /// Input `rows × (n_heads·head_dim)`.
        x: NodeId,
        /// Head width.
        head_dim: usize,
        /// Rotation settings.
        params: RopeParams,
        /// Per-pair frequency divisors (`n_dims / 2` F32 values: Llama 3's `rope_freqs`,
        /// Phi-3's LongRoPE factors); `None` for 1.
        factors: Option<WeightId>,
    },
    /// Causal (optionally windowed) attention of `q` over the KV store's cached cells and the
    /// batch's own `k`/`v`; afterwards the batch's K/V are written into the store.
    Attention {
        /// Queries `rows × (n_head·head_dim)`.
        q: NodeId,
        /// Keys of the batch `rows × (n_head_kv·head_dim)`.
        k: NodeId,
        /// Values of the batch `rows × (n_head_kv·head_dim_v)`.
        v: NodeId,
        /// The layer's KV store.
        kv: KvId,
        /// Heads, scale, window.
        params: AttnParams,
        /// Attention sinks (gpt-oss): one logit per query head (F32) that joins every
        /// softmax's denominator with no value.
        sinks: Option<WeightId>,
    },
    /// `silu(gate) ⊙ up`.
    SwiGlu {
        /// Gate projection.
        gate: NodeId,
        /// Up projection.
        up: NodeId,
    },
    /// gpt-oss's clamped SwiGLU: `g · σ(α·g) · (u + 1)` with `g = min(gate, limit)` and
    /// `u = clamp(up, −limit, limit)`.
    SwiGluOai {
        /// Gate projection.
        gate: NodeId,
        /// Up projection.
        up: NodeId,
        /// α (1.702 in gpt-oss).
        alpha: f32,
        /// The clamp (7 in gpt-oss).
        limit: f32,
    },
    /// `x + b_e` for each part of a [`Op::MatMulId`] output: `bias` is F32 `[n, n_expert]`
    /// (one row per expert) and part `j` of row `t` gets the row of the expert the route chose
    /// there (gpt-oss's expert biases).
    AddBiasId {
        /// Experts' outputs `rows × (n_used·n)`.
        x: NodeId,
        /// Per-expert biases.
        bias: WeightId,
        /// A [`Op::MoeRoute`] node.
        route: NodeId,
    },
    /// `gelu_tanh(gate) ⊙ up`.
    GeGlu {
        /// Gate projection.
        gate: NodeId,
        /// Up projection.
        up: NodeId,
    },
    /// A mixture-of-experts router: per row of router `logits` (one per expert), the chosen
    /// experts and their weights. The output has `2·n_used` columns: the chosen experts' ids
    /// (as exact f32 integers, best first) then their weights.
    MoeRoute {
        /// Router logits `rows × n_expert`.
        logits: NodeId,
        /// Choice and weighting.
        params: RouteParams,
        /// A bias added to the scores for the choice only (DeepSeek-V3's
        /// `exp_probs_b`): `n_expert` F32 values.
        choice_bias: Option<WeightId>,
    },
    /// `x · W_eᵀ` for every expert `e` a row's route chose: `w` is 3-D `[n_in, n_out,
    /// n_expert]`; output row `t` holds `n_used` products of `n_out` values, one per chosen
    /// expert in the route's order. Only chosen experts' weights are read.
    MatMulId {
        /// Stacked expert weights.
        w: WeightId,
        /// Inputs `rows × n_in` (every chosen expert reads the row) or `rows × (n_used·n_in)`
        /// (expert `j` of the route reads part `j`).
        x: NodeId,
        /// A [`Op::MoeRoute`] node.
        route: NodeId,
    },
    /// `Σ_j weight_j · x_j` over the `n_used` parts of each row of `x`, with the route's
    /// weights, summed in the route's order.
    MoeSum {
        /// Experts' outputs `rows × (n_used·n)`.
        x: NodeId,
        /// A [`Op::MoeRoute`] node.
        route: NodeId,
    },
    /// `x · W_jᵀ` for each part `j` of every row: `w` is 3-D `[n_in, n_out, n_parts]` and `x`
    /// is `rows × (n_parts·n_in)`; output row `t` holds the `n_parts` products of `n_out`
    /// values (per-head projections: MLA's `k_b` absorption and `v_b` decompression).
    MatMulHeads {
        /// Stacked per-part weights.
        w: WeightId,
        /// Inputs, one part per matrix.
        x: NodeId,
    },
    /// Columns `start..start + len` of every group of `group` columns of each row (e.g. the
    /// rotated part of every head): `rows × (groups·len)`.
    Columns {
        /// Input `rows × (groups·group)`.
        x: NodeId,
        /// Group width.
        group: usize,
        /// First column taken from each group.
        start: usize,
    },
    /// Group by group, `a`'s group then `b`'s: rows of `groups` groups of `a.cols / groups`
    /// then `b.cols / groups` values (per-head concatenation).
    Concat {
        /// Left parts.
        a: NodeId,
        /// Right parts.
        b: NodeId,
        /// Groups per row.
        groups: usize,
    },
    /// The last row only.
    LastRow {
        /// Input.
        x: NodeId,
    },
    /// The rows the step names in its `out_rows`, in that order (as many as the node has).
    SelectRows {
        /// Input.
        x: NodeId,
    },
}

impl Op {
    /// The nodes this op reads.
    pub fn inputs(&self) -> impl Iterator<Item = NodeId> {
        let (a, b, c) = match *self {
            Op::GetRows { .. } => (None, None, None),
            Op::RmsNorm { x, .. }
            | Op::Scale { x, .. }
            | Op::MatMul { x, .. }
            | Op::AddBias { x, .. }
            | Op::Softcap { x, .. }
            | Op::ReluSqr { x } => (Some(x), None, None),
            Op::Rope { x, .. } | Op::LastRow { x } | Op::SelectRows { x } => (Some(x), None, None),
            Op::Mul { a, b } | Op::Add { a, b } => (Some(a), Some(b), None),
            Op::MoeRoute { logits, .. } => (Some(logits), None, None),
            Op::MatMulHeads { x, .. } | Op::Columns { x, .. } => (Some(x), None, None),
            Op::Concat { a, b, .. } => (Some(a), Some(b), None),
            Op::MatMulId { x, route, .. } | Op::MoeSum { x, route } => (Some(x), Some(route), None),
            Op::SwiGlu { gate, up } | Op::GeGlu { gate, up } => (Some(gate), Some(up), None),
            Op::Attention { q, k, v, .. } => (Some(q), Some(k), Some(v)),
            Op::SwiGluOai { gate, up, .. } => (Some(gate), Some(up), None),
            Op::AddBiasId { x, route, .. } => (Some(x), Some(route), None),
        };
        [a, b, c].into_iter().flatten()
    }

    /// A short name for profiles.
    pub fn name(&self) -> &'static str {
        match self {
            Op::GetRows { .. } => "get_rows",
            Op::RmsNorm { .. } => "rms_norm",
            Op::Mul { .. } => "mul",
            Op::Add { .. } => "add",
            Op::Scale { .. } => "scale",
            Op::AddBias { .. } => "add_bias",
            Op::Softcap { .. } => "softcap",
            Op::ReluSqr { .. } => "relu_sqr",
            Op::MatMul { .. } => "mat_mul",
            Op::Rope { .. } => "rope",
            Op::Attention { .. } => "attention",
            Op::SwiGluOai { .. } => "swiglu_oai",
            Op::AddBiasId { .. } => "add_bias_id",
            Op::SwiGlu { .. } => "swiglu",
            Op::GeGlu { .. } => "geglu",
            Op::MoeRoute { .. } => "moe_route",
            Op::MatMulId { .. } => "mat_mul_id",
            Op::MoeSum { .. } => "moe_sum",
            Op::MatMulHeads { .. } => "mat_mul_heads",
            Op::Columns { .. } => "columns",
            Op::Concat { .. } => "concat",
            Op::LastRow { .. } => "last_row",
            Op::SelectRows { .. } => "select_rows",
        }
    }
}

/// A node: an op, the shape of its output, and the layer that recorded it (for profiles).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// Output rows.
    pub rows: usize,
    /// Output columns.
    pub cols: usize,
    /// Layer index, `None` for the embedding and output parts.
    pub layer: Option<u16>,
}

impl Node {
    /// One line describing this node's output `values` for `TESSERA_TRACE=1`: layer, op,
    /// shape, sum and first values — the same on every backend, so traces can be diffed
    /// (and compared with llama.cpp's `llama-eval-callback`).
    pub fn trace_line(&self, values: &[f32]) -> String {
        let sum: f64 = values.iter().map(|&x| x as f64).sum();
        let first: Vec<String> = values.iter().take(3).map(|x| format!("{x:.5}")).collect();
        format!(
            "trace layer {:>3} {:<10} {}x{} sum {:.6} first [{}]",
            self.layer.map(|l| l as i64).unwrap_or(-1),
            self.op.name(),
            self.rows,
            self.cols,
            sum,
            first.join(", ")
        )
    }
}

/// A finished graph for a batch of `n_tokens` tokens.
#[derive(Clone, Debug)]
pub struct Graph {
    /// Nodes in execution order.
    pub nodes: Vec<Node>,
    /// Weights the nodes refer to.
    pub weights: Vec<Tensor>,
    /// The node whose value is returned.
    pub output: NodeId,
    /// Tokens per step.
    pub n_tokens: usize,
}

impl Graph {
    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    /// The weight `id`.
    pub fn weight(&self, id: WeightId) -> &Tensor {
        &self.weights[id.0 as usize]
    }
}

/// Records ops into a [`Graph`], checking shapes as it goes (a mismatch is a bug in the
/// model code, so it panics with the op's name).
pub struct GraphBuilder {
    nodes: Vec<Node>,
    weights: Vec<Tensor>,
    n_tokens: usize,
    layer: Option<u16>,
}

impl GraphBuilder {
    /// A builder for steps of `n_tokens` tokens.
    pub fn new(n_tokens: usize) -> GraphBuilder {
        assert!(n_tokens > 0, "a step has at least one token");
        GraphBuilder {
            nodes: Vec::new(),
            weights: Vec::new(),
            n_tokens,
            layer: None,
        }
    }

    /// Tokens per step.
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// Tag the following ops with layer `il` (`None` for embedding/output).
    pub fn set_layer(&mut self, il: Option<usize>) {
        self.layer = il.map(|l| l as u16);
    }

    /// Rows and columns of node `id`.
    pub fn shape(&self, id: NodeId) -> (usize, usize) {
        let n = &self.nodes[id.0 as usize];
        (n.rows, n.cols)
    }

    fn push(&mut self, op: Op, rows: usize, cols: usize) -> NodeId {
        self.nodes.push(Node {
            op,
            rows,
            cols,
            layer: self.layer,
        });
        NodeId(self.nodes.len() as u32 - 1)
    }

    fn weight(&mut self, t: &Tensor) -> WeightId {
        self.weights.push(t.clone());
        WeightId(self.weights.len() as u32 - 1)
    }

    /// Embedding lookup of the step's tokens.
    pub fn get_rows(&mut self, table: &Tensor) -> NodeId {
        let cols = table.row_len();
        let id = self.weight(table);
        self.push(Op::GetRows { table: id }, self.n_tokens, cols)
    }

    /// RMSNorm of every row of `x`, times `weight` when given.
    pub fn rms_norm(&mut self, x: NodeId, weight: Option<&Tensor>, eps: f32) -> NodeId {
        let (_, cols) = self.shape(x);
        self.rms_norm_grouped(x, weight, cols, eps)
    }

    /// RMSNorm over groups of `group` elements (e.g. per head), times `weight` when given.
    pub fn rms_norm_grouped(
        &mut self,
        x: NodeId,
        weight: Option<&Tensor>,
        group: usize,
        eps: f32,
    ) -> NodeId {
        let (rows, cols) = self.shape(x);
        assert!(
            cols % group == 0,
            "rms_norm: group {group} does not divide {cols}"
        );
        let weight = weight.map(|w| {
            assert!(
                w.dtype() == DType::F32 && w.n_elements() == group,
                "rms_norm: weight {} must be F32 of {group}",
                w.name()
            );
            self.weight(w)
        });
        self.push(
            Op::RmsNorm {
                x,
                weight,
                group,
                eps,
            },
            rows,
            cols,
        )
    }

    fn same_shape(&self, a: NodeId, b: NodeId, op: &str) -> (usize, usize) {
        let (sa, sb) = (self.shape(a), self.shape(b));
        assert_eq!(sa, sb, "{op}: shapes differ");
        sa
    }

    /// Element-wise `a ⊙ b`.
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> NodeId {
        let (r, c) = self.same_shape(a, b, "mul");
        self.push(Op::Mul { a, b }, r, c)
    }

    /// Element-wise `a + b`.
    pub fn add(&mut self, a: NodeId, b: NodeId) -> NodeId {
        let (r, c) = self.same_shape(a, b, "add");
        self.push(Op::Add { a, b }, r, c)
    }

    /// `x + bias` on every row, `bias` an F32 vector of `x`'s width.
    pub fn add_bias(&mut self, x: NodeId, bias: &Tensor) -> NodeId {
        let (r, c) = self.shape(x);
        assert!(
            bias.dtype() == DType::F32 && bias.n_elements() == c,
            "add_bias: bias {} must be F32 of {c}",
            bias.name()
        );
        let bias = self.weight(bias);
        self.push(Op::AddBias { x, bias }, r, c)
    }

    /// `cap · tanh(x / cap)`.
    pub fn softcap(&mut self, x: NodeId, cap: f32) -> NodeId {
        assert!(cap.is_finite() && cap > 0.0, "softcap: cap {cap}");
        let (r, c) = self.shape(x);
        self.push(Op::Softcap { x, cap }, r, c)
    }

    /// `max(x, 0)²`.
    pub fn relu_sqr(&mut self, x: NodeId) -> NodeId {
        let (r, c) = self.shape(x);
        self.push(Op::ReluSqr { x }, r, c)
    }

    /// `s · x`.
    pub fn scale(&mut self, x: NodeId, s: f32) -> NodeId {
        let (r, c) = self.shape(x);
        self.push(Op::Scale { x, s }, r, c)
    }

    /// `x · Wᵀ` for weights `w` of shape `[n_in, n_out]`.
    pub fn mat_mul(&mut self, w: &Tensor, x: NodeId) -> NodeId {
        let (rows, cols) = self.shape(x);
        assert_eq!(
            w.row_len(),
            cols,
            "mat_mul: {} has rows of {}, input has {cols} columns",
            w.name(),
            w.row_len()
        );
        let n_out = w.n_rows();
        let id = self.weight(w);
        self.push(Op::MatMul { w: id, x }, rows, n_out)
    }

    /// RoPE on every `head_dim`-wide head of `x`.
    pub fn rope(&mut self, x: NodeId, head_dim: usize, params: RopeParams) -> NodeId {
        self.rope_with_factors(x, head_dim, params, None)
    }

    /// RoPE with per-pair frequency divisors `factors` (`n_dims / 2` F32 values), as ggml's
    /// `rope_ext` takes them.
    pub fn rope_with_factors(
        &mut self,
        x: NodeId,
        head_dim: usize,
        params: RopeParams,
        factors: Option<&Tensor>,
    ) -> NodeId {
        let (r, c) = self.shape(x);
        assert!(c % head_dim == 0 && params.n_dims <= head_dim && params.n_dims.is_multiple_of(2));
        let factors = factors.map(|f| {
            assert!(
                f.dtype() == DType::F32 && f.n_elements() == params.n_dims / 2,
                "rope: factors {} must be F32 of {}",
                f.name(),
                params.n_dims / 2
            );
            self.weight(f)
        });
        self.push(
            Op::Rope {
                x,
                head_dim,
                params,
                factors,
            },
            r,
            c,
        )
    }

    /// Attention of `q` over KV store `kv` and the batch's `k`, `v`.
    pub fn attention(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        kv: KvId,
        params: AttnParams,
    ) -> NodeId {
        let (rq, cq) = self.shape(q);
        let (rk, ck) = self.shape(k);
        let (rv, cv) = self.shape(v);
        assert!(rq == rk && rk == rv, "attention: row counts differ");
        assert_eq!(cq, params.n_head * params.head_dim, "attention: q width");
        assert_eq!(ck, params.n_head_kv * params.head_dim, "attention: k width");
        assert_eq!(
            cv,
            params.n_head_kv * params.head_dim_v,
            "attention: v width"
        );
        assert!(
            params.n_head.is_multiple_of(params.n_head_kv),
            "attention: heads"
        );
        self.push(
            Op::Attention {
                q,
                k,
                v,
                kv,
                params,
                sinks: None,
            },
            rq,
            params.n_head * params.head_dim_v,
        )
    }

    /// [`Self::attention`] with attention sinks: `sinks` holds one F32 logit per query head.
    pub fn attention_with_sinks(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        kv: KvId,
        params: AttnParams,
        sinks: &Tensor,
    ) -> NodeId {
        assert!(
            sinks.dtype() == DType::F32 && sinks.n_elements() == params.n_head,
            "attention: sinks {} must be F32 of {}",
            sinks.name(),
            params.n_head
        );
        let id = self.attention(q, k, v, kv, params);
        let w = self.weight(sinks);
        if let Op::Attention { sinks, .. } = &mut self.nodes[id.0 as usize].op {
            *sinks = Some(w);
        }
        id
    }

    /// gpt-oss's clamped SwiGLU (see [`Op::SwiGluOai`]).
    pub fn swiglu_oai(&mut self, gate: NodeId, up: NodeId, alpha: f32, limit: f32) -> NodeId {
        let (r, c) = self.same_shape(gate, up, "swiglu_oai");
        self.push(
            Op::SwiGluOai {
                gate,
                up,
                alpha,
                limit,
            },
            r,
            c,
        )
    }

    /// Per-expert biases added to a [`Op::MatMulId`] output `x` (see [`Op::AddBiasId`]).
    pub fn add_bias_id(&mut self, x: NodeId, bias: &Tensor, route: NodeId) -> NodeId {
        let n_used = self.experts_used(route);
        let (r, c) = self.shape(x);
        let &[n, _] = bias.shape() else {
            panic!("add_bias_id: {} is not 2-D", bias.name());
        };
        assert!(
            bias.dtype() == DType::F32 && c == n_used * n,
            "add_bias_id: {} must be F32 rows of {}",
            bias.name(),
            c / n_used
        );
        let bias = self.weight(bias);
        self.push(Op::AddBiasId { x, bias, route }, r, c)
    }

    /// `silu(gate) ⊙ up`.
    pub fn swiglu(&mut self, gate: NodeId, up: NodeId) -> NodeId {
        let (r, c) = self.same_shape(gate, up, "swiglu");
        self.push(Op::SwiGlu { gate, up }, r, c)
    }

    /// `gelu_tanh(gate) ⊙ up`.
    pub fn geglu(&mut self, gate: NodeId, up: NodeId) -> NodeId {
        let (r, c) = self.same_shape(gate, up, "geglu");
        self.push(Op::GeGlu { gate, up }, r, c)
    }

    /// A mixture-of-experts router over `logits` (`rows × n_expert`): see [`Op::MoeRoute`].
    pub fn moe_route(
        &mut self,
        logits: NodeId,
        params: RouteParams,
        choice_bias: Option<&Tensor>,
    ) -> NodeId {
        let (r, n_expert) = self.shape(logits);
        assert!(
            (1..=n_expert.min(MAX_EXPERTS_USED)).contains(&params.n_used),
            "moe_route: {} of {n_expert} experts",
            params.n_used
        );
        assert!(n_expert <= MAX_EXPERTS, "moe_route: {n_expert} experts");
        if let Some(groups) = params.groups
            && let Err(why) = groups.check(n_expert, params.n_used)
        {
            panic!("moe_route: {why}");
        }
        let choice_bias = choice_bias.map(|b| {
            assert!(
                b.dtype() == DType::F32 && b.n_elements() == n_expert,
                "moe_route: bias {} must be F32 of {n_expert}",
                b.name()
            );
            self.weight(b)
        });
        self.push(
            Op::MoeRoute {
                logits,
                params,
                choice_bias,
            },
            r,
            2 * params.n_used,
        )
    }

    /// Experts used per token by the router node `route`.
    fn experts_used(&self, route: NodeId) -> usize {
        match self.nodes[route.0 as usize].op {
            Op::MoeRoute { params, .. } => params.n_used,
            op => panic!("{} is not a router", op.name()),
        }
    }

    /// The chosen experts' products `x · W_eᵀ` with stacked weights `w` (`[n_in, n_out,
    /// n_expert]`): see [`Op::MatMulId`].
    pub fn mat_mul_id(&mut self, w: &Tensor, x: NodeId, route: NodeId) -> NodeId {
        let n_used = self.experts_used(route);
        let (rows, cols) = self.shape(x);
        let &[n_in, n_out, n_expert] = w.shape() else {
            panic!("mat_mul_id: {} is not 3-D", w.name());
        };
        assert!(
            cols == n_in || cols == n_used * n_in,
            "mat_mul_id: {} has rows of {n_in}, input has {cols} columns",
            w.name()
        );
        assert_eq!(self.shape(route).0, rows, "mat_mul_id: route rows");
        let n_router = match self.nodes[route.0 as usize].op {
            Op::MoeRoute { logits, .. } => self.shape(logits).1,
            _ => unreachable!("checked by experts_used"),
        };
        assert_eq!(n_router, n_expert, "mat_mul_id: {} experts", w.name());
        let id = self.weight(w);
        self.push(Op::MatMulId { w: id, x, route }, rows, n_used * n_out)
    }

    /// The route's weighted sum of the experts' outputs `x`: see [`Op::MoeSum`].
    pub fn moe_sum(&mut self, x: NodeId, route: NodeId) -> NodeId {
        let n_used = self.experts_used(route);
        let (rows, cols) = self.shape(x);
        assert!(cols.is_multiple_of(n_used), "moe_sum: {cols} columns");
        assert_eq!(self.shape(route).0, rows, "moe_sum: route rows");
        self.push(Op::MoeSum { x, route }, rows, cols / n_used)
    }

    /// Per-part products `x_j · W_jᵀ` with stacked weights `w` (`[n_in, n_out, n_parts]`): see
    /// [`Op::MatMulHeads`].
    pub fn mat_mul_heads(&mut self, w: &Tensor, x: NodeId) -> NodeId {
        let (rows, cols) = self.shape(x);
        let &[n_in, n_out, n_parts] = w.shape() else {
            panic!("mat_mul_heads: {} is not 3-D", w.name());
        };
        assert_eq!(
            cols,
            n_parts * n_in,
            "mat_mul_heads: {} takes {n_parts} parts of {n_in}",
            w.name()
        );
        let id = self.weight(w);
        self.push(Op::MatMulHeads { w: id, x }, rows, n_parts * n_out)
    }

    /// Columns `range` of every `group`-wide group of `x`'s rows: see [`Op::Columns`].
    pub fn columns(&mut self, x: NodeId, group: usize, range: std::ops::Range<usize>) -> NodeId {
        let (rows, cols) = self.shape(x);
        assert!(
            group > 0
                && cols.is_multiple_of(group)
                && range.start < range.end
                && range.end <= group,
            "columns: {range:?} of groups of {group} in {cols}"
        );
        let start = range.start;
        self.push(
            Op::Columns { x, group, start },
            rows,
            cols / group * range.len(),
        )
    }

    /// Per-group concatenation of `a` and `b` (`groups` groups each): see [`Op::Concat`].
    pub fn concat(&mut self, a: NodeId, b: NodeId, groups: usize) -> NodeId {
        let ((ra, ca), (rb, cb)) = (self.shape(a), self.shape(b));
        assert!(
            ra == rb && groups > 0 && ca.is_multiple_of(groups) && cb.is_multiple_of(groups),
            "concat: {ra}×{ca} and {rb}×{cb} in {groups} groups"
        );
        self.push(Op::Concat { a, b, groups }, ra, ca + cb)
    }

    /// The last row of `x`.
    pub fn last_row(&mut self, x: NodeId) -> NodeId {
        let (_, c) = self.shape(x);
        self.push(Op::LastRow { x }, 1, c)
    }

    /// `k` rows of `x` that each step names (its `out_rows`).
    pub fn select_rows(&mut self, x: NodeId, k: usize) -> NodeId {
        let (r, c) = self.shape(x);
        assert!((1..=r).contains(&k), "select_rows: {k} of {r} rows");
        self.push(Op::SelectRows { x }, k, c)
    }

    /// The rows of `x` that `out` keeps: all, the last, or those each step names.
    pub fn output_rows(&mut self, x: NodeId, out: OutputRows) -> NodeId {
        match out {
            OutputRows::All => x,
            OutputRows::Last => self.last_row(x),
            OutputRows::Rows(k) => self.select_rows(x, k),
        }
    }

    /// Finish with `output` as the graph's result.
    pub fn finish(self, output: NodeId) -> Graph {
        Graph {
            nodes: self.nodes,
            weights: self.weights,
            output,
            n_tokens: self.n_tokens,
        }
    }
}
