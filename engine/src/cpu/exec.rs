//! The CPU executor: runs a planned [`Graph`] for one step (a batch of tokens at given
//! positions) over an arena sized once, so steady-state decoding allocates nothing. It
//! schedules the ops (which node runs when, on which threads, which mat_muls share one pass);
//! their math lives in [`super::ops`].

use super::dot::{self, DotKernel};
use super::kv::KvStore;
use super::ops::kv_attention::{self, KvAttnScratch};
use super::ops::matmul::{self, MAX_GROUP, MatMulSeg};
use super::ops::{PARALLEL_MIN_ELEMS, SharedMut, elementwise, moe, norm, rope};
use super::pool::{ThreadPool, split_range};
use crate::backend::Step;
use crate::graph::{Graph, Node, NodeId, Op, Plan};
use crate::kv_cells::PoolFull;
use crate::memory::{OutOfMemory, try_grow};
use crate::{DType, quant};

/// A step's inputs do not fit the graph.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Token and position counts differ from the graph's batch size.
    #[error(
        "the graph takes {expected} tokens, the step has {tokens} tokens and {positions} positions"
    )]
    BatchSize {
        /// Tokens per step of the graph.
        expected: usize,
        /// Tokens given.
        tokens: usize,
        /// Positions given.
        positions: usize,
    },
    /// A token id outside the embedding table.
    #[error("token id {id} is out of range (vocabulary of {n_vocab})")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// Rows of the embedding table.
        n_vocab: usize,
    },
    /// A weight type without kernels.
    #[error("tensor {name:?} has type {dtype}, which the CPU backend cannot compute with")]
    UnsupportedDType {
        /// The tensor.
        name: String,
        /// Its type.
        dtype: DType,
    },
    /// An attention op names a KV store that was not passed.
    #[error("the graph uses KV store {0}, but only {1} were passed")]
    MissingKv(usize, usize),
    /// An attention op whose key heads are wider than the CPU kernels take.
    #[error(
        "attention with key heads {head_dim} wide: the CPU backend takes heads up to {max} wide"
    )]
    HeadTooWide {
        /// The graph's key head width.
        head_dim: usize,
        /// The widest the kernels take.
        max: usize,
    },
    /// Negative position.
    #[error("position {0} is negative")]
    NegativePosition(i32),
    /// A graph selecting output rows run with another number of them.
    #[error("the graph returns {expected} selected rows, the step names {got}")]
    OutputRows {
        /// Rows the graph selects.
        expected: usize,
        /// Rows the step names.
        got: usize,
    },
    /// The system refused memory for the step's scratch buffers.
    #[error(transparent)]
    OutOfMemory(#[from] OutOfMemory),
    /// The KV cells the sequences share are all taken (nothing was computed).
    #[error(transparent)]
    KvFull(#[from] PoolFull),
}

/// Dequantizes one row of a weight into f32.
type DequantRow = fn(&[u8], &mut [f32]);

/// A graph with its plan and resolved kernels, ready to run repeatedly.
pub struct PreparedGraph {
    graph: Graph,
    plan: Plan,
    /// The dot kernel of each mat_mul node (`None` for other ops).
    kernels: Vec<Option<&'static DotKernel>>,
    /// Dequantizer of each get_rows node.
    dequant: Vec<Option<DequantRow>>,
    /// Each mat_mul_id node's experts, as views of its stacked weight (empty for other ops).
    experts: Vec<Vec<crate::Tensor>>,
}

impl PreparedGraph {
    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Arena elements the plan needs.
    pub fn arena_len(&self) -> usize {
        self.plan.arena_len
    }
}

/// Runs graphs on the CPU with a fixed thread pool and reusable scratch memory.
pub struct CpuExecutor {
    pool: ThreadPool,
    arena: Vec<f32>,
    /// Activations quantized for mat_mul.
    act: Vec<u8>,
    /// RoPE (cos, sin) per token.
    rope: Vec<f32>,
    /// The parameters `rope` holds the table of for this step's positions (`None`: stale).
    rope_for: Option<(crate::graph::RopeParams, Option<usize>)>,
    /// Attention's gathered sources and staged K/V.
    attn: KvAttnScratch,
    /// A prompt's mat_mul_id input, every row (every slot's part of a row, for per-slot
    /// inputs) quantized once to the experts' activation format; each expert gathers its
    /// rows' bytes from here into `act`.
    moe_act: Vec<u8>,
    /// Which node `moe_act` holds, in which format and parts of how many values (gate and up
    /// read one input: quantized once).
    moe_act_holds: Option<(NodeId, DType, usize)>,
    /// Where each of one expert's output rows goes in the mat_mul_id output.
    moe_out_rows: Vec<usize>,
    /// One expert's (token, slot) pairs.
    moe_rows: Vec<(usize, usize)>,
    /// Which node's rows `act` holds, and in which format (consecutive mat_muls of one input,
    /// like Q/K/V or gate/up, quantize it once).
    act_holds: Option<(NodeId, DType)>,
    /// Print every node's sum to stderr (`TESSERA_TRACE=1`), for comparing with llama.cpp.
    trace: bool,
    /// Shown the inputs of weight products (see [`crate::backend::MatMulTap`]).
    pub(crate) tap: Option<std::sync::Arc<dyn crate::backend::MatMulTap>>,
}

impl CpuExecutor {
    /// An executor with `n_threads` threads (0 = all cores).
    pub fn new(n_threads: usize) -> CpuExecutor {
        Self::with_pool(ThreadPool::new(n_threads))
    }

    /// An executor with `n_threads` threads (0 = all cores), or the system's reason for
    /// refusing a thread (nothing is left running then).
    pub fn try_new(n_threads: usize) -> std::io::Result<CpuExecutor> {
        ThreadPool::try_new(n_threads).map(Self::with_pool)
    }

    fn with_pool(pool: ThreadPool) -> CpuExecutor {
        CpuExecutor {
            pool,
            arena: Vec::new(),
            act: Vec::new(),
            rope: Vec::new(),
            rope_for: None,
            attn: KvAttnScratch::default(),
            moe_act: Vec::new(),
            moe_act_holds: None,
            moe_out_rows: Vec::new(),
            moe_rows: Vec::new(),
            act_holds: None,
            trace: std::env::var_os("TESSERA_TRACE").is_some(),
            tap: None,
        }
    }

    /// Threads in use.
    pub fn n_threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// Plan `graph` and resolve its kernels.
    pub fn prepare(&self, graph: Graph) -> Result<PreparedGraph, ExecError> {
        let plan = Plan::new(&graph);
        let mut kernels = vec![None; graph.nodes.len()];
        let mut dequant = vec![None; graph.nodes.len()];
        let mut experts = vec![Vec::new(); graph.nodes.len()];
        for (i, node) in graph.nodes.iter().enumerate() {
            let unsupported = |w: WeightRef| ExecError::UnsupportedDType {
                name: w.0.into(),
                dtype: w.1,
            };
            match node.op {
                Op::MatMul { w, .. } => {
                    let t = graph.weight(w);
                    kernels[i] = Some(
                        dot::kernel(t.dtype()).ok_or_else(|| unsupported((t.name(), t.dtype())))?,
                    );
                }
                Op::MatMulId { w, .. } | Op::MatMulHeads { w, .. } => {
                    let t = graph.weight(w);
                    kernels[i] = Some(
                        dot::kernel(t.dtype()).ok_or_else(|| unsupported((t.name(), t.dtype())))?,
                    );
                    experts[i] = (0..t.shape()[2])
                        .map(|e| t.matrix(e).expect("a 3-D weight (checked by the builder)"))
                        .collect();
                }
                Op::GetRows { table } => {
                    let t = graph.weight(table);
                    dequant[i] = Some(
                        quant::reference(t.dtype())
                            .ok_or_else(|| unsupported((t.name(), t.dtype())))?
                            .dequantize_row,
                    );
                }
                Op::Attention { params, .. } if params.head_dim > kv_attention::MAX_HEAD_DIM => {
                    return Err(ExecError::HeadTooWide {
                        head_dim: params.head_dim,
                        max: kv_attention::MAX_HEAD_DIM,
                    });
                }
                _ => {}
            }
        }
        Ok(PreparedGraph {
            graph,
            plan,
            kernels,
            dequant,
            experts,
        })
    }

    /// Grow scratch buffers to what `g` needs with stores `kv` (a no-op once they are big
    /// enough, so repeated steps allocate nothing), or [`OutOfMemory`] when the system refuses.
    fn reserve(&mut self, g: &PreparedGraph, kv: &[KvStore]) -> Result<(), OutOfMemory> {
        let n_tokens = g.graph.n_tokens;
        try_grow(&mut self.arena, g.plan.arena_len, "the compute arena")?;
        for node in &g.graph.nodes {
            match node.op {
                Op::MatMul { w, x } => {
                    let k = g.graph.weight(w);
                    let vdt = dot::kernel(k.dtype())
                        .map(|k| k.vec_dot_type)
                        .unwrap_or(DType::F32);
                    let cols = g.graph.node(x).cols;
                    let bytes = vdt.row_bytes(cols as u64).unwrap_or(0) as usize;
                    let n = bytes.saturating_mul(g.graph.node(x).rows);
                    try_grow(&mut self.act, n, "quantized activations")?;
                }
                Op::MatMulId { w, x, .. } | Op::MatMulHeads { w, x } => {
                    // One expert's rows at a time: at most every token's, gathered.
                    let k = g.graph.weight(w);
                    let vdt = dot::kernel(k.dtype())
                        .map(|k| k.vec_dot_type)
                        .unwrap_or(DType::F32);
                    let n_in = k.shape()[0];
                    let rows = g.graph.node(x).rows;
                    let bytes = vdt.row_bytes(n_in as u64).unwrap_or(0) as usize;
                    try_grow(
                        &mut self.act,
                        bytes.saturating_mul(rows),
                        "quantized activations",
                    )?;
                    let slots = (g.graph.node(x).cols / n_in.max(1)).max(1);
                    try_grow(
                        &mut self.moe_act,
                        bytes.saturating_mul(rows).saturating_mul(slots),
                        "expert inputs",
                    )?;
                    try_grow(&mut self.moe_out_rows, rows, "expert output rows")?;
                }
                Op::Rope { params, .. } => {
                    let n = n_tokens.saturating_mul(params.n_dims);
                    try_grow(&mut self.rope, n, "the RoPE table")?;
                }
                Op::Attention { kv: id, .. } => {
                    if let Some(s) = kv.get(id.0 as usize) {
                        self.attn.reserve(n_tokens, s)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Run one step: `tokens` at `positions`, reading and extending the KV stores (one per
    /// layer, all of sequence 0). Returns the output node's values (`rows × cols` of the
    /// output node).
    pub fn run(
        &mut self,
        g: &PreparedGraph,
        tokens: &[u32],
        positions: &[i32],
        kv: &mut [KvStore],
    ) -> Result<&[f32], ExecError> {
        self.run_step(g, &Step::single(tokens, positions), kv)
    }

    /// Run one step of tokens of one or several sequences: `kv` holds one store per layer,
    /// each serving every sequence, and each group of the step's tokens attends over its own
    /// sequence's cells (every other op is row by row). A step that does not fit a pool of
    /// cells is [`ExecError::KvFull`], before anything is computed. The step's rules
    /// ([`Step::validate`]) are the caller's to check. Returns the output node's values.
    pub fn run_step(
        &mut self,
        g: &PreparedGraph,
        step: &Step<'_>,
        kv: &mut [KvStore],
    ) -> Result<&[f32], ExecError> {
        let graph = &g.graph;
        let (tokens, positions) = (step.tokens, step.positions);
        if tokens.len() != graph.n_tokens || positions.len() != graph.n_tokens {
            return Err(ExecError::BatchSize {
                expected: graph.n_tokens,
                tokens: tokens.len(),
                positions: positions.len(),
            });
        }
        if let Some(&p) = positions.iter().find(|&&p| p < 0) {
            return Err(ExecError::NegativePosition(p));
        }
        for node in &graph.nodes {
            match node.op {
                Op::GetRows { table } => {
                    let n_vocab = graph.weight(table).n_rows();
                    if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
                        return Err(ExecError::TokenOutOfRange { id, n_vocab });
                    }
                }
                Op::Attention { kv: id, .. } => {
                    let n_seq = step
                        .groups()
                        .map(|(s, _)| s as usize + 1)
                        .max()
                        .unwrap_or(1);
                    match kv.get(id.0 as usize) {
                        Some(store) if n_seq <= store.n_seq() => {}
                        _ => return Err(ExecError::MissingKv(id.0 as usize, kv.len())),
                    }
                }
                Op::SelectRows { .. } if step.out_rows.len() != node.rows => {
                    return Err(ExecError::OutputRows {
                        expected: node.rows,
                        got: step.out_rows.len(),
                    });
                }
                _ => {}
            }
        }
        // A step that does not fit a pool is refused before anything is computed.
        for store in kv.iter() {
            let groups = step.groups().map(|(seq, r)| {
                (
                    seq,
                    positions[r.clone()].iter().copied().min().unwrap_or(0),
                    r.len(),
                )
            });
            store.check_step(groups)?;
        }
        self.reserve(g, kv)?;
        self.act_holds = None;
        self.moe_act_holds = None;
        self.rope_for = None;
        let mut next = 0;
        while next < graph.nodes.len() {
            let (start, end) = (next, mat_mul_group_end(g, next));
            if end > start + 1 {
                self.run_mat_mul_group(g, start..end);
            } else {
                self.run_node(g, start, step, kv);
            }
            next = end;
            if !self.trace {
                continue;
            }
            for i in start..end {
                let node = &graph.nodes[i];
                let v = &self.arena[g.plan.range(NodeId(i as u32), node.rows * node.cols)];
                eprintln!("{}", node.trace_line(v));
            }
        }
        let out = graph.node(graph.output);
        Ok(&self.arena[g.plan.range(graph.output, out.rows * out.cols)])
    }

    fn run_node(&mut self, g: &PreparedGraph, i: usize, step: &Step<'_>, kv: &mut [KvStore]) {
        let (tokens, positions) = (step.tokens, step.positions);
        let graph = &g.graph;
        let node = &graph.nodes[i];
        let arena = SharedMut(self.arena.as_mut_ptr());
        let range = |id: NodeId| {
            let n = graph.node(id);
            g.plan.range(id, n.rows * n.cols)
        };
        // SAFETY: the planner gives this node's output a range disjoint from every live
        // node's, in particular from this node's inputs; inputs are only read.
        let out = unsafe { arena.slice(range(NodeId(i as u32))) };
        // SAFETY: as above: inputs are live nodes' ranges, disjoint from `out`, only read.
        let input = |id: NodeId| -> &[f32] { unsafe { arena.slice(range(id)) } };
        let cols = node.cols;
        match node.op {
            Op::GetRows { table } => {
                let t = graph.weight(table);
                let dq = g.dequant[i].expect("resolved in prepare");
                for (row, &tok) in out.chunks_exact_mut(cols).zip(tokens) {
                    dq(t.row(tok as usize), row);
                }
            }
            Op::RmsNorm {
                x,
                weight,
                group,
                eps,
            } => {
                let w = weight.map(|w| graph.weight(w).as_f32().expect("F32 norm weight"));
                let xs = input(x);
                self.rows_parallel(node, out, &|r, o| {
                    norm::rms_norm(&xs[r.clone()], w, group, eps, o)
                });
            }
            Op::Mul { a, b } => {
                let (a, b) = (input(a), input(b));
                self.rows_parallel(node, out, &|r, o| elementwise::mul(&a[r.clone()], &b[r], o));
            }
            Op::Add { a, b } => {
                let (a, b) = (input(a), input(b));
                self.rows_parallel(node, out, &|r, o| elementwise::add(&a[r.clone()], &b[r], o));
            }
            Op::Scale { x, s } => {
                let x = input(x);
                self.rows_parallel(node, out, &|r, o| elementwise::scale(&x[r], s, o));
            }
            Op::SwiGlu { gate, up } => {
                let (a, b) = (input(gate), input(up));
                self.rows_parallel(node, out, &|r, o| {
                    elementwise::swiglu(&a[r.clone()], &b[r], o)
                });
            }
            Op::GeGlu { gate, up } => {
                let (a, b) = (input(gate), input(up));
                self.rows_parallel(node, out, &|r, o| {
                    elementwise::geglu(&a[r.clone()], &b[r], o)
                });
            }
            Op::LastRow { x } => {
                let xs = input(x);
                out.copy_from_slice(&xs[xs.len() - cols..]);
            }
            Op::SelectRows { x } => {
                let xs = input(x);
                for (row, &r) in out.chunks_exact_mut(cols).zip(step.out_rows) {
                    let r = r as usize;
                    row.copy_from_slice(&xs[r * cols..(r + 1) * cols]);
                }
            }
            Op::Rope {
                x,
                head_dim,
                params,
                factors,
            } => {
                let nd = params.n_dims;
                let factors = factors.map(|w| graph.weight(w).as_f32().expect("F32 rope factors"));
                // Q and K of a layer, and layers alike, share the table: computed once per step
                // and parameter set (factors told apart by their address).
                let key = (params, factors.map(|f| f.as_ptr() as usize));
                if self.rope_for != Some(key) {
                    for (t, &pos) in positions.iter().enumerate() {
                        let table = &mut self.rope[t * nd..(t + 1) * nd];
                        crate::rope::rope_table(pos, &params, factors, table);
                    }
                    self.rope_for = Some(key);
                }
                out.copy_from_slice(input(x));
                let table = &self.rope[..];
                for (t, row) in out.chunks_exact_mut(cols).enumerate() {
                    rope::rope_apply(row, head_dim, params.mode, nd, &table[t * nd..(t + 1) * nd]);
                }
            }
            Op::AddBias { x, bias } => {
                let b = graph.weight(bias).as_f32().expect("F32 bias");
                let x = input(x);
                self.rows_parallel(node, out, &|r, o| {
                    elementwise::add_bias(&x[r.clone()], b, o)
                });
            }
            Op::Softcap { x, cap } => {
                let x = input(x);
                self.rows_parallel(node, out, &|r, o| elementwise::softcap(&x[r], cap, o));
            }
            Op::ReluSqr { x } => {
                let x = input(x);
                self.rows_parallel(node, out, &|r, o| elementwise::relu_sqr(&x[r], o));
            }
            Op::MatMul { .. } => self.run_mat_mul_group(g, i..i + 1),
            Op::MoeRoute {
                logits,
                params,
                choice_bias,
            } => {
                let l = input(logits);
                let n_expert = graph.node(logits).cols;
                let bias = choice_bias.map(|b| graph.weight(b).as_f32().expect("F32 bias"));
                for (t, row) in out.chunks_exact_mut(cols).enumerate() {
                    moe::route_row(&l[t * n_expert..(t + 1) * n_expert], bias, &params, row);
                }
            }
            Op::MatMulId { x, route, .. } => {
                let (xn, rn) = (graph.node(x), graph.node(route));
                let shape = (xn.rows, xn.cols);
                let route = Some((input(route), rn.cols));
                self.mat_mul_id(g, i, (x, input(x)), shape, route, out);
            }
            Op::MatMulHeads { x, .. } => {
                let xn = graph.node(x);
                let shape = (xn.rows, xn.cols);
                self.mat_mul_id(g, i, (x, input(x)), shape, None, out);
            }
            Op::Columns { x, group, start } => {
                let xs = input(x);
                let len = cols / (graph.node(x).cols / group);
                for (o, src) in out.chunks_exact_mut(len).zip(xs.chunks_exact(group)) {
                    o.copy_from_slice(&src[start..start + len]);
                }
            }
            Op::Concat { a, b, groups } => {
                let (an, bn) = (graph.node(a), graph.node(b));
                let (ga, gb) = (an.cols / groups, bn.cols / groups);
                let (xa, xb) = (input(a), input(b));
                for ((o, pa), pb) in out
                    .chunks_exact_mut(ga + gb)
                    .zip(xa.chunks_exact(ga))
                    .zip(xb.chunks_exact(gb))
                {
                    o[..ga].copy_from_slice(pa);
                    o[ga..].copy_from_slice(pb);
                }
            }
            Op::MoeSum { x, route } => {
                let (xs, rs) = (input(x), input(route));
                let (xc, rc) = (graph.node(x).cols, graph.node(route).cols);
                for (t, row) in out.chunks_exact_mut(cols).enumerate() {
                    moe::weighted_sum_row(
                        &xs[t * xc..(t + 1) * xc],
                        &rs[t * rc..(t + 1) * rc],
                        row,
                    );
                }
            }
            Op::SwiGluOai {
                gate,
                up,
                alpha,
                limit,
            } => {
                let (a, b) = (input(gate), input(up));
                self.rows_parallel(node, out, &|r, o| {
                    elementwise::swiglu_oai(&a[r.clone()], &b[r], alpha, limit, o)
                });
            }
            Op::AddBiasId { x, bias, route } => {
                let b = graph.weight(bias);
                let n = b.row_len();
                let bs = b.as_f32().expect("F32 biases");
                let (xs, rs) = (input(x), input(route));
                let rc = graph.node(route).cols;
                for (t, row) in out.chunks_exact_mut(cols).enumerate() {
                    let ids = moe::route_ids(&rs[t * rc..(t + 1) * rc]);
                    for (j, e) in ids.enumerate() {
                        elementwise::add_bias(
                            &xs[t * cols + j * n..t * cols + (j + 1) * n],
                            &bs[e * n..(e + 1) * n],
                            &mut row[j * n..(j + 1) * n],
                        );
                    }
                }
            }
            Op::Attention {
                q: q_id,
                k: k_id,
                v: v_id,
                kv: id,
                params,
                sinks,
            } => {
                let (q, k, v) = (input(q_id), input(k_id), input(v_id));
                let sinks = sinks.map(|w| graph.weight(w).as_f32().expect("F32 sinks"));
                let cols_of = |id: NodeId| graph.node(id).cols;
                let (qc, kc, vc) = (cols_of(q_id), cols_of(k_id), cols_of(v_id));
                // Each sequence's tokens attend over its own stores, by the same code as a
                // step of that sequence alone (what makes batches bit-identical to solo runs).
                for (seq, r) in step.groups() {
                    let store = &mut kv[id.0 as usize];
                    kv_attention::attend_step(
                        &self.pool,
                        &mut self.attn,
                        &q[r.start * qc..r.end * qc],
                        &k[r.start * kc..r.end * kc],
                        &v[r.start * vc..r.end * vc],
                        seq,
                        &positions[r.clone()],
                        store,
                        &params,
                        sinks,
                        &mut out[r.start * cols..r.end * cols],
                    );
                }
            }
        }
    }

    /// Node `i`, a mat_mul_id (with `route`: its values and columns) or a mat_mul_heads
    /// (without: part `j` of every row uses matrix `j`): for each chosen expert, its product
    /// with the rows that chose it. A single token's experts write straight into its output row (those reading one
    /// input share its quantized activations, up to [`MAX_GROUP`] weights a pass); a prompt's
    /// rows are gathered per expert, multiplied, and scattered back, so each expert's weight
    /// is read once per step. Rows of a product do not depend on which other rows are in it
    /// (see `matmul`), so neither does a token's result.
    #[allow(clippy::too_many_arguments)]
    fn mat_mul_id(
        &mut self,
        g: &PreparedGraph,
        i: usize,
        (x_id, x): (NodeId, &[f32]),
        (rows, cols): (usize, usize),
        route: Option<(&[f32], usize)>,
        out: &mut [f32],
    ) {
        let experts = &g.experts[i];
        let kernel = g.kernels[i].expect("resolved in prepare");
        let (n_in, n_out) = (experts[0].row_len(), experts[0].n_rows());
        let n_used = match route {
            Some((_, route_cols)) => route_cols / 2,
            None => experts.len(),
        };
        // Part `j` of row `t` uses this matrix.
        let expert_of = |t: usize, j: usize| match route {
            Some((r, rc)) => r[t * rc + j] as usize,
            None => j,
        };
        let per_slot = cols != n_in || route.is_none();
        self.act_holds = None;
        if rows == 1 {
            let step = if per_slot { 1 } else { MAX_GROUP };
            let mut quantized = false;
            for j0 in (0..n_used).step_by(step) {
                let j1 = (j0 + step).min(n_used);
                let mut segs = [None; MAX_GROUP];
                for (seg, j) in segs.iter_mut().zip(j0..j1) {
                    *seg = Some(MatMulSeg {
                        w: &experts[expert_of(0, j)],
                        kernel,
                        out: SharedMut(out[j * n_out..].as_mut_ptr()),
                        out_rows: None,
                    });
                }
                let xj = if per_slot {
                    &x[j0 * n_in..(j0 + 1) * n_in]
                } else {
                    &x[..n_in]
                };
                matmul::mat_mul(
                    &self.pool,
                    &mut self.act,
                    &segs[..j1 - j0],
                    xj,
                    (1, n_in),
                    quantized && !per_slot,
                );
                quantized = true;
            }
            return;
        }
        // Every row (or slot part) quantized once, in parallel; each expert then gathers the
        // bytes of its rows. The same bytes as quantizing the gathered rows: the same outputs.
        let vdt = kernel.vec_dot_type;
        let arb = vdt.row_bytes(n_in as u64).expect("whole blocks") as usize;
        let slots = cols / n_in;
        if self.moe_act_holds != Some((x_id, vdt, n_in)) {
            let quantize_row = kernel.quantize_row;
            let n_parts = rows * slots;
            let qa = SharedMut(self.moe_act.as_mut_ptr());
            let quantize = |parts: std::ops::Range<usize>| {
                for p in parts {
                    // SAFETY: part `p` of `rows × slots` owns bytes `p·arb..(p+1)·arb` of
                    // `moe_act` (reserved for every part); each task quantizes its own parts.
                    let dst = unsafe { qa.slice(p * arb..(p + 1) * arb) };
                    quantize_row(&x[p * n_in..(p + 1) * n_in], dst);
                }
            };
            if n_parts * n_in >= PARALLEL_MIN_ELEMS {
                self.pool
                    .run(&|ti, nt| quantize(split_range(n_parts, ti, nt, 1)));
            } else {
                quantize(0..n_parts);
            }
            self.moe_act_holds = Some((x_id, vdt, n_in));
        }
        for (e, w) in experts.iter().enumerate() {
            self.moe_rows.clear();
            for t in 0..rows {
                if let Some(j) = (0..n_used).find(|&j| expert_of(t, j) == e) {
                    self.moe_rows.push((t, j));
                }
            }
            let n = self.moe_rows.len();
            if n == 0 {
                continue;
            }
            for (k, &(t, j)) in self.moe_rows.iter().enumerate() {
                let p = if per_slot { t * slots + j } else { t };
                self.act[k * arb..(k + 1) * arb]
                    .copy_from_slice(&self.moe_act[p * arb..(p + 1) * arb]);
            }
            let oc = n_used * n_out;
            self.moe_out_rows.clear();
            self.moe_out_rows
                .extend(self.moe_rows.iter().map(|&(t, j)| t * oc + j * n_out));
            let seg = MatMulSeg {
                w,
                kernel,
                out: SharedMut(out.as_mut_ptr()),
                out_rows: Some(&self.moe_out_rows),
            };
            // `act` holds the gathered rows already: the input slice goes unread. Each row's
            // outputs go straight to its (token, slot) place.
            matmul::mat_mul(
                &self.pool,
                &mut self.act,
                &[Some(seg)],
                &[],
                (n, n_in),
                true,
            );
        }
    }

    /// Apply `f(element_range, output_rows)` over the rows of `node`, split across threads when
    /// the node is large.
    fn rows_parallel(
        &self,
        node: &Node,
        out: &mut [f32],
        f: &(dyn Fn(std::ops::Range<usize>, &mut [f32]) + Sync),
    ) {
        let (rows, cols) = (node.rows, node.cols);
        if rows == 1 || rows * cols < PARALLEL_MIN_ELEMS {
            f(0..rows * cols, out);
            return;
        }
        let o = SharedMut(out.as_mut_ptr());
        self.pool.run(&|ti, nt| {
            let r = split_range(rows, ti, nt, 1);
            let e = r.start * cols..r.end * cols;
            // SAFETY: threads own disjoint row ranges.
            f(e.clone(), unsafe { o.slice(e) });
        });
    }

    /// Mat_mul nodes `nodes` (all reading the same input in the same activation format, see
    /// [`mat_mul_group_end`]) in one pass of the pool: the input is quantized once, and the
    /// weight rows of all of them are split across the tasks together, so a decode step pays
    /// one dispatch for Q, K and V (and one for gate and up) instead of one per weight.
    fn run_mat_mul_group(&mut self, g: &PreparedGraph, nodes: std::ops::Range<usize>) {
        let graph = &g.graph;
        let arena = SharedMut(self.arena.as_mut_ptr());
        let mut segs = [None; MAX_GROUP];
        let mut x_id = None;
        for (seg, i) in segs.iter_mut().zip(nodes.clone()) {
            let Op::MatMul { w, x } = graph.nodes[i].op else {
                unreachable!("a mat_mul group holds mat_muls only")
            };
            let n = graph.node(NodeId(i as u32));
            let range = g.plan.range(NodeId(i as u32), n.rows * n.cols);
            // SAFETY: the planner gives each node's output a range disjoint from every live
            // node's (the group's outputs and their common input are live together).
            let out = SharedMut(unsafe { arena.slice(range) }.as_mut_ptr());
            let kernel = g.kernels[i].expect("resolved in prepare");
            *seg = Some(MatMulSeg {
                w: graph.weight(w),
                kernel,
                out,
                out_rows: None,
            });
            x_id = Some(x);
        }
        let x_id = x_id.expect("a non-empty group");
        let xn = graph.node(x_id);
        let range = g.plan.range(x_id, xn.rows * xn.cols);
        // SAFETY: the input is only read, and no output overlaps it (see above).
        let x = unsafe { arena.slice(range) };
        let vdt = segs[0]
            .as_ref()
            .expect("a non-empty group")
            .kernel
            .vec_dot_type;
        if let Some(tap) = &self.tap {
            for seg in segs[..nodes.len()].iter().flatten() {
                let name = seg.w.name();
                if tap.wants(name) {
                    tap.observe(name, x, xn.rows, xn.cols);
                }
            }
        }
        let reuse = self.act_holds == Some((x_id, vdt));
        let shape = (xn.rows, xn.cols);
        matmul::mat_mul(
            &self.pool,
            &mut self.act,
            &segs[..nodes.len()],
            x,
            shape,
            reuse,
        );
        self.act_holds = Some((x_id, vdt));
    }
}

/// The end of the run of mat_mul nodes starting at `i` that read the same input in the same
/// activation format (at most [`MAX_GROUP`]); `i + 1` when node `i` starts no such run.
fn mat_mul_group_end(g: &PreparedGraph, i: usize) -> usize {
    let nodes = &g.graph.nodes;
    let Op::MatMul { x, .. } = nodes[i].op else {
        return i + 1;
    };
    let vdt = |j: usize| g.kernels[j].map(|k| k.vec_dot_type);
    let mut end = i + 1;
    while end < nodes.len()
        && end - i < MAX_GROUP
        && matches!(nodes[end].op, Op::MatMul { x: x2, .. } if x2 == x)
        && vdt(end) == vdt(i)
    {
        end += 1;
    }
    end
}

type WeightRef<'a> = (&'a str, DType);
