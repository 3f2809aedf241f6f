//! The CPU executor: runs a planned [`Graph`] for one step (a batch of tokens at given
//! positions) over an arena sized once, so steady-state decoding allocates nothing.

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::dot::{self, DotKernel};
use super::kv::KvStore;
use super::ops::{attention, elementwise, norm, rope};
use super::pool::{ThreadPool, split_range};
use crate::graph::{Graph, Node, NodeId, Op, Plan};
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
    /// Negative position.
    #[error("position {0} is negative")]
    NegativePosition(i32),
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

/// A raw pointer that may cross threads; every use writes a disjoint range.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// # Safety
    /// `range` must be inside the allocation and not touched by any other thread meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, range: std::ops::Range<usize>) -> &mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.len()) }
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
    rope_for: Option<crate::graph::RopeParams>,
    /// Rows (cache cells, then batch tokens) and positions of the sources attention reads.
    src_rows: Vec<u32>,
    positions: Vec<i32>,
    /// The batch's K/V in F16, written to the store after attention.
    staged_k: Vec<f16>,
    staged_v: Vec<f16>,
    /// Which node's rows `act` holds, and in which format (consecutive mat_muls of one input,
    /// like Q/K/V or gate/up, quantize it once).
    act_holds: Option<(NodeId, DType)>,
    /// Print every node's sum to stderr (`TESSERA_TRACE=1`), for comparing with llama.cpp.
    trace: bool,
}

/// Weight rows per block of a mat_mul (16 f32 outputs: one cache line per token).
const ROW_BLOCK: usize = 16;
/// Weight rows per block of a prompt's mat_mul, where there are enough of them to go round
/// the threads: kernels that repack their rows or prepare the activations per call do it
/// once for more rows.
const PROMPT_ROW_BLOCK: usize = 64;
/// Blocks per pool task a mat_mul needs before it uses [`PROMPT_ROW_BLOCK`].
const PROMPT_BLOCKS_PER_TASK: usize = 1;
/// Tokens per chunk of a mat_mul.
const TOKEN_BLOCK: usize = 64;

/// Query floats an attention task converts at once (`MAX_GROUP_HEADS` heads of 512; wider
/// heads go one at a time, up to 2048 wide).
const QBUF: usize = 2048;

/// Ops on fewer elements than this run on the calling thread only.
const PARALLEL_MIN_ELEMS: usize = 1 << 14;

impl CpuExecutor {
    /// An executor with `n_threads` threads (0 = all cores).
    pub fn new(n_threads: usize) -> CpuExecutor {
        CpuExecutor {
            pool: ThreadPool::new(n_threads),
            arena: Vec::new(),
            act: Vec::new(),
            rope: Vec::new(),
            rope_for: None,
            src_rows: Vec::new(),
            positions: Vec::new(),
            staged_k: Vec::new(),
            staged_v: Vec::new(),
            act_holds: None,
            trace: std::env::var_os("TESSERA_TRACE").is_some(),
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
                Op::GetRows { table } => {
                    let t = graph.weight(table);
                    dequant[i] = Some(
                        quant::reference(t.dtype())
                            .ok_or_else(|| unsupported((t.name(), t.dtype())))?
                            .dequantize_row,
                    );
                }
                _ => {}
            }
        }
        Ok(PreparedGraph {
            graph,
            plan,
            kernels,
            dequant,
        })
    }

    /// Grow scratch buffers to what `g` needs with stores `kv` (a no-op once they are big
    /// enough, so repeated steps allocate nothing).
    fn reserve(&mut self, g: &PreparedGraph, kv: &[KvStore]) {
        let n_tokens = g.graph.n_tokens;
        grow(&mut self.arena, g.plan.arena_len);
        for node in &g.graph.nodes {
            match node.op {
                Op::MatMul { w, x } => {
                    let k = g.graph.weight(w);
                    let vdt = dot::kernel(k.dtype())
                        .map(|k| k.vec_dot_type)
                        .unwrap_or(DType::F32);
                    let cols = g.graph.node(x).cols;
                    let bytes = vdt.row_bytes(cols as u64).unwrap_or(0) as usize;
                    grow(&mut self.act, bytes * g.graph.node(x).rows);
                }
                Op::Rope { params, .. } => grow(&mut self.rope, n_tokens * params.n_dims),
                Op::Attention { kv: id, .. } => {
                    if let Some(s) = kv.get(id.0 as usize) {
                        let n_src = s.n_cells() + n_tokens;
                        grow(&mut self.src_rows, n_src);
                        grow(&mut self.positions, n_src);
                        grow(&mut self.staged_k, n_tokens * s.k_width());
                        grow(&mut self.staged_v, n_tokens * s.v_width());
                    }
                }
                _ => {}
            }
        }
    }

    /// Run one step: `tokens` at `positions`, reading and extending the KV stores. Returns the
    /// output node's values (`rows × cols` of the output node).
    pub fn run(
        &mut self,
        g: &PreparedGraph,
        tokens: &[u32],
        positions: &[i32],
        kv: &mut [KvStore],
    ) -> Result<&[f32], ExecError> {
        let graph = &g.graph;
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
                Op::Attention { kv: id, .. } if id.0 as usize >= kv.len() => {
                    return Err(ExecError::MissingKv(id.0 as usize, kv.len()));
                }
                _ => {}
            }
        }
        self.reserve(g, kv);
        self.act_holds = None;
        self.rope_for = None;
        let mut next = 0;
        while next < graph.nodes.len() {
            let (start, end) = (next, mat_mul_group_end(g, next));
            if end > start + 1 {
                self.run_mat_mul_group(g, start..end);
            } else {
                self.run_node(g, start, tokens, positions, kv);
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

    fn run_node(
        &mut self,
        g: &PreparedGraph,
        i: usize,
        tokens: &[u32],
        positions: &[i32],
        kv: &mut [KvStore],
    ) {
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
            Op::Rope {
                x,
                head_dim,
                params,
            } => {
                let nd = params.n_dims;
                // Q and K of a layer, and layers alike, share the table: computed once per step
                // and parameter set.
                if self.rope_for != Some(params) {
                    for (t, &pos) in positions.iter().enumerate() {
                        crate::rope::rope_table(pos, &params, &mut self.rope[t * nd..(t + 1) * nd]);
                    }
                    self.rope_for = Some(params);
                }
                out.copy_from_slice(input(x));
                let table = &self.rope[..];
                for (t, row) in out.chunks_exact_mut(cols).enumerate() {
                    rope::rope_apply(row, head_dim, params.mode, nd, &table[t * nd..(t + 1) * nd]);
                }
            }
            Op::MatMul { .. } => self.run_mat_mul_group(g, i..i + 1),
            Op::Attention {
                q,
                k,
                v,
                kv: id,
                params,
            } => {
                let store = &mut kv[id.0 as usize];
                self.attention(input(q), input(k), input(v), positions, store, &params, out);
            }
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
        let reuse = self.act_holds == Some((x_id, vdt));
        self.mat_mul(&segs[..nodes.len()], x, xn, reuse);
        self.act_holds = Some((x_id, vdt));
    }

    /// `out_s[t][r] = W_s.row(r) · x[t]` for every segment `s`, with the activations quantized
    /// once to the kernels' common format (`act_ready`: they already are).
    fn mat_mul(&mut self, segs: &[Option<MatMulSeg<'_>>], x: &[f32], xn: &Node, act_ready: bool) {
        let (n_tok, n_in) = (xn.rows, xn.cols);
        let first = segs[0].as_ref().expect("a non-empty group");
        let quantize_row = first.kernel.quantize_row;
        let arb = first
            .kernel
            .vec_dot_type
            .row_bytes(n_in as u64)
            .expect("whole blocks") as usize;
        let act = &mut self.act[..arb * n_tok];
        if act_ready {
            // Quantized by the previous mat_mul of the same input.
        } else if n_tok * n_in >= PARALLEL_MIN_ELEMS && n_tok > 1 {
            let a = SharedMut(act.as_mut_ptr());
            self.pool.run(&|ti, nt| {
                for t in split_range(n_tok, ti, nt, 1) {
                    // SAFETY: each thread quantizes its own rows.
                    let dst = unsafe { a.slice(t * arb..(t + 1) * arb) };
                    quantize_row(&x[t * n_in..(t + 1) * n_in], dst);
                }
            });
        } else {
            for t in 0..n_tok {
                quantize_row(
                    &x[t * n_in..(t + 1) * n_in],
                    &mut act[t * arb..(t + 1) * arb],
                );
            }
        }
        let act = &self.act[..arb * n_tok];
        // Work units: blocks of `rb` weight rows, segment after segment.
        let rows_of = |rb: usize| {
            segs.iter()
                .map(|s| s.as_ref().expect("filled").w.n_rows().div_ceil(rb))
                .sum::<usize>()
        };
        let tasks = self.pool.n_tasks();
        let rb = if n_tok >= 4 && rows_of(PROMPT_ROW_BLOCK) >= PROMPT_BLOCKS_PER_TASK * tasks {
            PROMPT_ROW_BLOCK
        } else {
            ROW_BLOCK
        };
        let mut unit_end = [0usize; MAX_GROUP];
        let mut total = 0;
        for (end, seg) in unit_end.iter_mut().zip(segs) {
            total += seg.as_ref().expect("filled").w.n_rows().div_ceil(rb);
            *end = total;
        }
        self.pool.run(&|ti, nt| {
            let units = split_range(total, ti, nt, 1);
            // Prompt outputs pass through a per-task buffer (16 KiB; not zeroed for decode,
            // which writes in place and runs this closure hundreds of times per token).
            let mut buf_store = if n_tok > 1 {
                Some([0.0f32; PROMPT_ROW_BLOCK * TOKEN_BLOCK])
            } else {
                None
            };
            // Token chunks (their activations stay in L2) over blocks of weight rows (in L1
            // while every token of the chunk passes over them).
            for t0 in (0..n_tok).step_by(TOKEN_BLOCK) {
                let t1 = (t0 + TOKEN_BLOCK).min(n_tok);
                for u in units.clone() {
                    let s = unit_end.iter().position(|&e| u < e).expect("unit in range");
                    let seg = segs[s].as_ref().expect("filled");
                    let first_unit = if s == 0 { 0 } else { unit_end[s - 1] };
                    let n_out = seg.w.n_rows();
                    let r0 = (u - first_unit) * rb;
                    let r1 = (r0 + rb).min(n_out);
                    let nr = r1 - r0;
                    let (data, wrb) = (seg.w.data(), seg.w.row_bytes());
                    let args = dot::GemmArgs {
                        n: n_in,
                        w: &data[r0 * wrb..r1 * wrb],
                        w_stride: wrb,
                        rows: nr,
                        a: &act[t0 * arb..t1 * arb],
                        a_stride: arb,
                        tokens: t1 - t0,
                    };
                    if n_tok == 1 {
                        // SAFETY: this unit's rows of the single token's output are written
                        // by this task only.
                        seg.kernel.gemm(&args, unsafe { seg.out.slice(r0..r1) });
                        continue;
                    }
                    let buf = buf_store.as_mut().expect("a prompt's buffer");
                    seg.kernel.gemm(&args, &mut buf[..nr * (t1 - t0)]);
                    for t in t0..t1 {
                        // SAFETY: this unit's rows of every token are written by this task only.
                        let orow = unsafe { seg.out.slice(t * n_out + r0..t * n_out + r1) };
                        orow.copy_from_slice(&buf[(t - t0) * nr..(t - t0 + 1) * nr]);
                    }
                }
            }
        });
    }

    /// Attention over the store's cached cells and the batch's own K/V, then the batch's K/V
    /// are written into the store.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        positions: &[i32],
        store: &mut KvStore,
        p: &crate::graph::AttnParams,
        out: &mut [f32],
    ) {
        let n_tok = positions.len();
        let (kw, vw) = (store.k_width(), store.v_width());
        // The batch's K/V as the cache will hold them (F16).
        let sk = &mut self.staged_k[..n_tok * kw];
        let sv = &mut self.staged_v[..n_tok * vw];
        sk.convert_from_f32_slice(&k[..n_tok * kw]);
        sv.convert_from_f32_slice(&v[..n_tok * vw]);
        // Gather the cached cells some query of the batch can see (cells at or after the
        // batch's first position are stale: the batch replaces them), then the batch itself.
        let pmin = *positions.iter().min().expect("non-empty batch");
        let mut n_src = 0;
        // Walk the cells in position order (oldest first) whatever the layout: a ring's oldest
        // cell is the one the batch's first token will overwrite. The same order for ring and
        // full caches makes their results bit-identical.
        let n_cells = store.n_cells();
        let start = store.cell_of(pmin);
        for j in 0..n_cells {
            let c = (start + j) % n_cells;
            let pk = store.cell_positions()[c];
            let in_window = p
                .window
                .is_none_or(|w| (pmin as i64 - pk as i64) < w as i64);
            if pk >= 0 && pk < pmin && in_window {
                self.src_rows[n_src] = c as u32;
                self.positions[n_src] = pk;
                n_src += 1;
            }
        }
        for (t, &pos) in positions.iter().enumerate() {
            self.src_rows[n_src] = (n_cells + t) as u32;
            self.positions[n_src] = pos;
            n_src += 1;
        }
        // Keys and values are read in place, as F16 (no per-step conversion of the cache).
        let view = attention::KvView {
            cache_k: store.k_all(),
            cache_v: store.v_all(),
            batch_k: sk,
            batch_v: sv,
            n_cells,
            rows: &self.src_rows[..n_src],
            positions: &self.positions[..n_src],
        };
        let o = SharedMut(out.as_mut_ptr());
        let (nh, dk, dv) = (p.n_head, p.head_dim, p.head_dim_v);
        let group = p.n_head / p.n_head_kv;
        let qw = nh * dk;
        let ow = nh * dv;
        // A task: `hg` query heads of one token that share a KV head (each key and value is
        // converted once for all of them), or single heads where that leaves too few tasks.
        let chunk = (1..=attention::MAX_GROUP_HEADS)
            .rev()
            .find(|&c| group.is_multiple_of(c))
            .expect("1 divides");
        let hg = if chunk * dk <= QBUF && n_tok * nh / chunk >= self.pool.n_tasks() {
            chunk
        } else {
            1
        };
        assert!(hg * dk <= QBUF, "head width {dk} over {QBUF} / {hg}");
        let work = |ti: usize, nt: usize| {
            let mut qbuf = [0.0f32; QBUF];
            for task in split_range(n_tok * nh / hg, ti, nt, 1) {
                let (t, h) = (task / (nh / hg), task % (nh / hg) * hg);
                // Queries pass through F16, as ggml's flash attention converts them.
                let qh = &mut qbuf[..hg * dk];
                for (d, &x) in qh
                    .iter_mut()
                    .zip(&q[t * qw + h * dk..t * qw + (h + hg) * dk])
                {
                    *d = f16::from_f32(x).to_f32();
                }
                // SAFETY: each (token, head) output slice is written by one thread.
                let dst = unsafe { o.slice(t * ow + h * dv..t * ow + (h + hg) * dv) };
                attention::attend_group(qh, positions[t], h / group, &view, p, dst);
            }
        };
        if n_tok * nh * n_src * dk >= PARALLEL_MIN_ELEMS {
            self.pool.run(&work);
        } else {
            work(0, 1);
        }
        for t in 0..n_tok {
            store.write_f16(
                positions[t],
                &sk[t * kw..(t + 1) * kw],
                &sv[t * vw..(t + 1) * vw],
            );
        }
    }
}

/// Most mat_muls run in one pass ([`CpuExecutor::run_mat_mul_group`]).
const MAX_GROUP: usize = 4;

/// One weight of a mat_mul group and where its output goes.
#[derive(Clone, Copy)]
struct MatMulSeg<'a> {
    w: &'a crate::Tensor,
    kernel: &'static DotKernel,
    /// `n_tokens × w.n_rows()` outputs.
    out: SharedMut<f32>,
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

fn grow<T: Default + Clone>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}
