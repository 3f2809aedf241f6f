//! An inference context: a model's KV cache layout, a backend (the engine's executor on the
//! chosen device, holding the KV stores and scratch memory), and the graphs already prepared for
//! each batch size. Evaluating tokens appends them to the cache and yields logits.
//!
//! A context holds `n_seq` sequences, each in its own KV slot of `n_ctx` tokens:
//! [`Context::decode`] evaluates a [`Batch`] of tokens of several of them in shared steps (the
//! weights read once per step), each sequence's logits bit-identical to what it gets alone.
//! [`Context::eval`], [`Context::reset`], [`Context::truncate`] and [`Context::n_past`] are
//! sequence 0's.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use tessera_engine::backend::{self, Backend, BackendError, BackendParams, GraphId, Step};
use tessera_engine::graph::{NodeId, Op, OutputRows};
use tessera_engine::rope::KeyRotation;

use crate::Device;
use crate::batch::Batch;
use crate::error::{ModelError, Result};
use crate::footprint::Footprint;
use crate::kv_cache::KvCache;
use crate::model::Model;

/// Settings of a context.
#[derive(Clone, Copy, Debug)]
pub struct ContextParams {
    /// Context length in tokens (of each sequence).
    pub n_ctx: usize,
    /// Largest batch evaluated at once (longer inputs are split).
    pub n_batch: usize,
    /// Threads (0 = all cores).
    pub n_threads: usize,
    /// Ring buffers for sliding-window layers (false: full caches with a sliding mask).
    pub kv_ring: bool,
    /// Where to compute.
    pub device: Device,
    /// Sequences held at once (at least 1), each up to `n_ctx` tokens.
    pub n_seq: usize,
    /// KV cells the sequences share in each global-attention layer (0: `n_ctx × n_seq`, room
    /// for every sequence at full length). Smaller pools hold more sequences in less memory;
    /// a step finding the pool full fails with [`tessera_engine::backend::BackendError::KvFull`]
    /// and changes nothing. Sliding-window layers keep a ring per sequence, and the GPU a
    /// store of `n_ctx` per sequence, whatever this says.
    pub kv_pool: usize,
}

impl Default for ContextParams {
    fn default() -> Self {
        ContextParams {
            n_ctx: 4096,
            n_batch: 512,
            n_threads: 0,
            kv_ring: true,
            device: Device::Cpu,
            n_seq: 1,
            kv_pool: 0,
        }
    }
}

/// A model's running state.
pub struct Context {
    model: Arc<Model>,
    params: ContextParams,
    kv: KvCache,
    backend: Box<dyn Backend>,
    /// The backend's prepared graphs, by (tokens, output rows).
    graphs: HashMap<(usize, OutputRows), GraphId>,
    /// Tokens cached per sequence.
    n_past: Vec<usize>,
    /// Logits of the last evaluation (`n_rows × n_vocab`).
    logits: Vec<f32>,
    n_logit_rows: usize,
    /// Positions of the batch being evaluated (kept to avoid allocating per step).
    positions: Vec<i32>,
    /// The step being built by [`Self::decode`]: its tokens, sequences and output rows.
    step_tokens: Vec<u32>,
    step_seqs: Vec<u32>,
    step_rows: Vec<u32>,
}

impl Context {
    /// A context for `model`. Its whole footprint ([`Footprint`], one row of logits) is
    /// checked against the memory left under the tightest limit first, and refused with the
    /// numbers ([`ModelError::OutOfMemory`]) when it does not fit; a batch larger than the
    /// context is cut to the context (no step can hold more).
    pub fn new(model: Arc<Model>, mut params: ContextParams) -> Result<Context> {
        if params.n_ctx == 0 {
            return Err(ModelError::InvalidInput(
                "context size must be at least 1".into(),
            ));
        }
        if params.n_batch == 0 {
            return Err(ModelError::InvalidInput(
                "batch size must be at least 1".into(),
            ));
        }
        if params.n_seq == 0 || params.n_seq > u32::MAX as usize {
            return Err(ModelError::InvalidInput(format!(
                "{} sequences: a context holds at least 1",
                params.n_seq
            )));
        }
        params.n_batch = params.n_batch.min(params.n_ctx);
        Footprint::new(&model, &params, 1)
            .check_now()
            .map_err(ModelError::OutOfMemory)?;
        let kv = KvCache::new(
            model.hparams(),
            params.n_ctx,
            params.kv_ring,
            params.n_batch,
        );
        let backend = backend::open(
            params.device,
            &BackendParams {
                n_threads: params.n_threads,
                kv_layers: kv.shapes().to_vec(),
                n_seq: params.n_seq,
                kv_pool_cells: params.kv_pool,
            },
        )?;
        Ok(Context {
            kv,
            backend,
            graphs: HashMap::new(),
            model,
            params,
            n_past: vec![0; params.n_seq],
            logits: Vec::new(),
            n_logit_rows: 0,
            positions: Vec::with_capacity(params.n_batch),
            step_tokens: Vec::new(),
            step_seqs: Vec::new(),
            step_rows: Vec::new(),
        })
    }

    /// The model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The settings.
    pub fn params(&self) -> &ContextParams {
        &self.params
    }

    /// Tokens in the cache of sequence 0.
    pub fn n_past(&self) -> usize {
        self.n_past[0]
    }

    /// Sequences the context holds ([`ContextParams::n_seq`]).
    pub fn n_seq(&self) -> usize {
        self.n_past.len()
    }

    /// Tokens in the cache of sequence `seq` (0 for a sequence the context does not have).
    pub fn seq_len(&self, seq: u32) -> usize {
        self.n_past.get(seq as usize).copied().unwrap_or(0)
    }

    /// Context length.
    pub fn n_ctx(&self) -> usize {
        self.params.n_ctx
    }

    /// CPU threads in use (0 on a GPU).
    pub fn n_threads(&self) -> usize {
        self.backend.n_threads()
    }

    /// What computes: `cpu`, or the GPU adapter's name, backend and type.
    pub fn backend_name(&self) -> String {
        self.backend.describe()
    }

    /// The KV cache's layout.
    pub fn kv_cache(&self) -> &KvCache {
        &self.kv
    }

    /// Bytes the KV stores hold, per layer (for every sequence), in the memory of the device
    /// that computes.
    pub fn kv_bytes_per_layer(&self) -> Vec<usize> {
        (0..self.backend.n_kv_layers())
            .map(|l| self.backend.kv_layer_bytes(l))
            .collect()
    }

    /// Bytes the KV stores hold in total.
    pub fn kv_bytes(&self) -> usize {
        self.kv_bytes_per_layer().iter().sum()
    }

    /// Bytes of the KV stores holding tokens now.
    pub fn kv_used_bytes(&self) -> usize {
        self.backend.kv_used_bytes()
    }

    /// Tokens that still fit in the KV pool the sequences share (the CPU's global-attention
    /// layers); `None` where there is none (the GPU's stores per sequence, a model of
    /// sliding-window layers only).
    pub fn kv_free_cells(&self) -> Option<usize> {
        self.backend.kv_free_cells()
    }

    /// KV cells holding a token in sequence `seq`'s stores (all layers together).
    pub fn kv_seq_used_cells(&self, seq: u32) -> usize {
        if (seq as usize) < self.n_seq() {
            self.backend.kv_seq_used_cells(seq)
        } else {
            0
        }
    }

    /// KV cells holding a token in every sequence's stores together.
    pub fn kv_used_cells(&self) -> usize {
        self.backend.kv_used_cells()
    }

    /// Show `tap` the inputs of every weight product of the steps from now on (`None`: stop);
    /// what `tessera imatrix` collects. CPU contexts only.
    pub fn set_mat_mul_tap(
        &mut self,
        tap: Option<std::sync::Arc<dyn tessera_engine::backend::MatMulTap>>,
    ) -> Result<()> {
        Ok(self.backend.set_mat_mul_tap(tap)?)
    }

    /// Forget every token of sequence 0.
    pub fn reset(&mut self) {
        self.seq_clear(0).expect("sequence 0 exists");
        self.n_logit_rows = 0;
    }

    /// Forget tokens of sequence 0 from position `n` on (keeps the first `n`). Ring layers
    /// may have overwritten what evaluating at `n` attends to
    /// ([`crate::context_shift::rollback_point`] says how far back is safe).
    pub fn truncate(&mut self, n: usize) {
        // Sequence 0 only: the others keep what they hold.
        if n < self.n_past[0] && self.backend.kv_seq_truncate(0, n as i32).is_ok() {
            self.n_past[0] = n;
        }
    }

    /// Fails when sequence `seq`'s ring layers no longer hold the window that evaluating at
    /// position `n` attends to (they have moved past it).
    fn check_rollback(&self, seq: u32, n: usize) -> Result<()> {
        let len = self.n_past[seq as usize];
        if n < len && crate::context_shift::rollback_point(len, n, self.kv.policies()) < n {
            return Err(ModelError::InvalidInput(format!(
                "sequence {seq} holds {len} tokens: its sliding-window rings no longer hold \
                 the tokens before position {n} (evaluate them again instead)"
            )));
        }
        Ok(())
    }

    /// Fails with [`BackendError::KvFull`]
    /// when `n` more tokens do not fit the KV pool the sequences share (each takes a cell),
    /// so a batch is refused before any of its steps runs.
    fn check_pool(&self, n: usize) -> Result<()> {
        match self.backend.kv_free_cells() {
            Some(free) if n > free => Err(ModelError::Backend(BackendError::KvFull(
                tessera_engine::kv_cells::PoolFull { need: n, free },
            ))),
            _ => Ok(()),
        }
    }

    /// Fails unless the context has sequence `seq`.
    fn check_seq(&self, seq: u32) -> Result<()> {
        if (seq as usize) < self.n_seq() {
            Ok(())
        } else {
            Err(ModelError::InvalidInput(format!(
                "sequence {seq} is out of range (the context holds {} sequences)",
                self.n_seq()
            )))
        }
    }

    /// Forget every token of sequence `seq`.
    pub fn seq_clear(&mut self, seq: u32) -> Result<()> {
        self.check_seq(seq)?;
        self.backend.kv_seq_clear(seq)?;
        self.n_past[seq as usize] = 0;
        Ok(())
    }

    /// Forget the tokens of sequence `seq` from position `n` on (keeps the first `n`);
    /// refused where ring layers have overwritten what evaluating at `n` attends to.
    pub fn seq_truncate(&mut self, seq: u32, n: usize) -> Result<()> {
        self.check_seq(seq)?;
        self.check_rollback(seq, n)?;
        if n < self.n_past[seq as usize] {
            self.backend.kv_seq_truncate(seq, n as i32)?;
            self.n_past[seq as usize] = n;
        }
        Ok(())
    }

    /// Drop sequence `seq`'s tokens at positions `p0..p1` (`p0 < p1 <= seq_len`) and move its
    /// later tokens back by `p1 - p0` positions, their cached keys rotated to their new
    /// positions (llama.cpp's `seq_rm` then `seq_add`): a context shift without evaluating
    /// the kept tokens again. The moved keys equal keys roped at their new positions up to
    /// rounding (rotated twice, stored in F16); past the first layer the kept tokens' keys
    /// and values still carry the dropped tokens, as in llama.cpp, so the result is not that
    /// of evaluating the kept tokens afresh. Every cache can (pools, sliding-window rings,
    /// the GPU's stores, whose moved cells go through the host); refused, changing nothing,
    /// where keys' RoPE is not the last op before attention (MLA) or the pool lacks cells for
    /// later tokens other sequences share. A device failing while the cells move leaves the
    /// sequence empty.
    pub fn seq_discard(&mut self, seq: u32, p0: usize, p1: usize) -> Result<()> {
        self.check_seq(seq)?;
        let len = self.n_past[seq as usize];
        if p0 >= p1 || p1 > len {
            return Err(ModelError::InvalidInput(format!(
                "cannot discard positions {p0}..{p1} of sequence {seq}, which holds {len} tokens"
            )));
        }
        let delta = -((p1 - p0) as i32);
        let rotations = self.key_rotations(delta)?;
        match self
            .backend
            .kv_seq_discard(seq, p0 as i32, p1 as i32, &rotations)
        {
            Ok(()) => self.n_past[seq as usize] = len - (p1 - p0),
            Err(e @ BackendError::Device(_)) => {
                // The backend emptied the sequence.
                self.n_past[seq as usize] = 0;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        }
        self.n_logit_rows = 0;
        Ok(())
    }

    /// For each KV layer, the rotation that moves its cached keys `delta` positions: read off
    /// the model's graph (the RoPE op whose output is the layer's keys; `None` for a layer
    /// without RoPE). Fails where RoPE reaches the keys some other way.
    fn key_rotations(&self, delta: i32) -> Result<Vec<Option<KeyRotation>>> {
        let graph = self
            .model
            .arch()
            .build_graph(1, OutputRows::Last, self.params.n_ctx);
        let mut rotations = vec![None; self.backend.n_kv_layers()];
        for node in &graph.nodes {
            let Op::Attention { k, kv, .. } = node.op else {
                continue;
            };
            let Some(slot) = rotations.get_mut(kv.0 as usize) else {
                continue;
            };
            *slot = match graph.node(k).op {
                Op::Rope {
                    head_dim,
                    params,
                    factors,
                    ..
                } => {
                    let f = factors.and_then(|w| graph.weight(w).as_f32());
                    Some(KeyRotation::new(&params, f, head_dim, delta))
                }
                _ if reaches_rope(&graph, k) => {
                    return Err(ModelError::Backend(BackendError::Unsupported(format!(
                        "layer {}'s keys are not the output of one RoPE op: its cache cannot \
                         be moved to other positions",
                        kv.0
                    ))));
                }
                _ => None,
            };
        }
        Ok(rotations)
    }

    /// Make sequence `dst` hold the first `n` tokens of sequence `src` (at most what `src`
    /// holds) and nothing else: a shared prefix forked without evaluating it again. Refused
    /// where `src`'s ring layers have overwritten what evaluating at `n` attends to.
    pub fn seq_copy(&mut self, src: u32, dst: u32, n: usize) -> Result<()> {
        self.check_seq(src)?;
        self.check_seq(dst)?;
        self.check_rollback(src, n)?;
        let n = n.min(self.n_past[src as usize]);
        self.backend.kv_seq_copy(src, dst, n as i32)?;
        self.n_past[dst as usize] = n;
        Ok(())
    }

    /// Evaluate `tokens` after what is cached; afterwards [`Self::logits`] holds the last
    /// token's logits (or every token's, with `all_logits`).
    pub fn eval(&mut self, tokens: &[u32], all_logits: bool) -> Result<()> {
        if tokens.is_empty() {
            return Err(ModelError::InvalidInput("no tokens to evaluate".into()));
        }
        if self.n_past[0] + tokens.len() > self.params.n_ctx {
            return Err(ModelError::InvalidInput(format!(
                "{} tokens do not fit: {} of the context size {} are used (use a larger -c)",
                tokens.len(),
                self.n_past[0],
                self.params.n_ctx
            )));
        }
        let n_vocab = self.model.hparams().n_vocab;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::InvalidInput(format!(
                "token id {bad} is out of range (vocabulary of {n_vocab})"
            )));
        }
        self.check_pool(tokens.len())?;
        let rows_wanted = if all_logits { tokens.len() } else { 1 };
        let n_logits = rows_wanted.saturating_mul(n_vocab);
        tessera_engine::memory::try_grow(&mut self.logits, n_logits, "the logits")?;
        let mut row = 0;
        for chunk in tokens.chunks(self.batch_limit(all_logits)) {
            let n = chunk.len();
            let last_chunk = row + n == tokens.len();
            self.positions.clear();
            let n_past = self.n_past[0];
            self.positions
                .extend((n_past..n_past + n).map(|p| p as i32));
            let out_rows = if all_logits {
                OutputRows::All
            } else {
                OutputRows::Last
            };
            let out = Self::run_step(
                self.backend.as_mut(),
                &mut self.graphs,
                &self.model,
                &Step::single(chunk, &self.positions),
                out_rows,
                self.params.n_ctx,
            )?;
            if let Some(bad) = out.iter().position(|x| !x.is_finite()) {
                self.n_logit_rows = 0;
                let row_in_chunk = if all_logits { bad / n_vocab } else { n - 1 };
                return Err(ModelError::NonFiniteLogits {
                    position: n_past + row_in_chunk,
                });
            }
            if all_logits {
                self.logits[row * n_vocab..(row + n) * n_vocab].copy_from_slice(out);
            } else if last_chunk {
                self.logits[..n_vocab].copy_from_slice(out);
            }
            self.n_past[0] += n;
            row += n;
        }
        self.n_logit_rows = rows_wanted;
        Ok(())
    }

    /// Evaluate `batch`: every token at its position of its sequence, each sequence's tokens
    /// continuing where it stands ([`Self::seq_len`]). The tokens are grouped by sequence (in
    /// batch order within each) and evaluated in steps of up to `n_batch` that may mix
    /// sequences (one step per sequence where the backend cannot mix them); each step returns
    /// only the rows whose logits are wanted. Afterwards [`Self::batch_logits`]`(i)` holds the
    /// logits of the batch's `i`-th wanted token, bit-identical to what that sequence gets
    /// evaluated alone. Nothing is evaluated when the batch breaks a rule (a sequence the
    /// context lacks, a position that does not continue its sequence, a sequence over the
    /// context, a token outside the vocabulary) or does not fit the KV pool the sequences
    /// share ([`tessera_engine::backend::BackendError::KvFull`]).
    pub fn decode(&mut self, batch: &Batch) -> Result<()> {
        self.n_logit_rows = 0;
        let n = batch.len();
        if n == 0 {
            return Err(ModelError::InvalidInput("no tokens to evaluate".into()));
        }
        let (tokens, positions, seqs, wanted) = (
            batch.tokens(),
            batch.positions(),
            batch.seqs(),
            batch.logits_wanted(),
        );
        let n_vocab = self.model.hparams().n_vocab;
        let n_ctx = self.params.n_ctx;
        let mut next = self.n_past.clone();
        for i in 0..n {
            let s = seqs[i];
            self.check_seq(s)?;
            if tokens[i] as usize >= n_vocab {
                return Err(ModelError::InvalidInput(format!(
                    "token id {} is out of range (vocabulary of {n_vocab})",
                    tokens[i]
                )));
            }
            let at = &mut next[s as usize];
            if positions[i] < 0 || positions[i] as usize != *at {
                return Err(ModelError::InvalidInput(format!(
                    "token {i} of the batch is at position {} of sequence {s}, which continues \
                     at {at}",
                    positions[i]
                )));
            }
            *at += 1;
            if *at > n_ctx {
                return Err(ModelError::InvalidInput(format!(
                    "sequence {s} would hold {at} tokens, over the context size {n_ctx} \
                     (use a larger -c)"
                )));
            }
        }
        self.check_pool(n)?;
        // The tokens grouped by sequence, in batch order within each.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| seqs[i]);
        // Where each wanted token's logits go: its rank among the batch's wanted tokens.
        let mut out_index = vec![usize::MAX; n];
        let mut n_wanted = 0;
        for (i, _) in wanted.iter().enumerate().filter(|(_, w)| **w) {
            out_index[i] = n_wanted;
            n_wanted += 1;
        }
        let n_logits = n_wanted.saturating_mul(n_vocab);
        tessera_engine::memory::try_grow(&mut self.logits, n_logits, "the logits")?;
        let mixes = self.backend.batches_sequences();
        let mut start = 0;
        while start < n {
            // What one run of steps covers: the whole batch, or one sequence's tokens.
            let end = if mixes {
                n
            } else {
                let s = seqs[order[start]];
                start + order[start..].iter().take_while(|&&i| seqs[i] == s).count()
            };
            let unit = &order[start..end];
            // More than the last row of a step wanted: the device may bound the step.
            let limit = if mixes {
                self.batch_limit(unit.iter().filter(|&&i| wanted[i]).count() > 1)
            } else {
                self.batch_limit(unit[..unit.len() - 1].iter().any(|&i| wanted[i]))
            };
            for chunk in unit.chunks(limit) {
                self.decode_step(batch, chunk, &out_index, mixes)?;
            }
            start = end;
        }
        self.n_logit_rows = n_wanted;
        Ok(())
    }

    /// One step of [`Self::decode`]: the batch's tokens `chunk` (indices, grouped by
    /// sequence), their wanted rows of logits stored at `out_index`; `select`: the backend
    /// returns chosen rows ([`OutputRows::Rows`]), else all or the last.
    fn decode_step(
        &mut self,
        batch: &Batch,
        chunk: &[usize],
        out_index: &[usize],
        select: bool,
    ) -> Result<()> {
        let n_vocab = self.model.hparams().n_vocab;
        let (tokens, positions, seqs, wanted) = (
            batch.tokens(),
            batch.positions(),
            batch.seqs(),
            batch.logits_wanted(),
        );
        self.step_tokens.clear();
        self.positions.clear();
        self.step_seqs.clear();
        self.step_rows.clear();
        for (r, &i) in chunk.iter().enumerate() {
            self.step_tokens.push(tokens[i]);
            self.positions.push(positions[i]);
            self.step_seqs.push(seqs[i]);
            if wanted[i] {
                self.step_rows.push(r as u32);
            }
        }
        let (m, k) = (chunk.len(), self.step_rows.len());
        let out_rows = if k == 0 || (k == 1 && self.step_rows[0] as usize == m - 1) {
            OutputRows::Last
        } else if k == m || !select {
            OutputRows::All
        } else {
            OutputRows::Rows(k)
        };
        let step = Step {
            tokens: &self.step_tokens,
            positions: &self.positions,
            seqs: &self.step_seqs,
            out_rows: match out_rows {
                OutputRows::Rows(_) => &self.step_rows,
                _ => &[],
            },
        };
        let out = Self::run_step(
            self.backend.as_mut(),
            &mut self.graphs,
            &self.model,
            &step,
            out_rows,
            self.params.n_ctx,
        )?;
        for (j, &r) in self.step_rows.iter().enumerate() {
            let out_row = match out_rows {
                OutputRows::Last => 0,
                OutputRows::All => r as usize,
                OutputRows::Rows(_) => j,
            };
            let row = &out[out_row * n_vocab..(out_row + 1) * n_vocab];
            let i = chunk[r as usize];
            if row.iter().any(|x| !x.is_finite()) {
                return Err(ModelError::NonFiniteLogits {
                    position: positions[i] as usize,
                });
            }
            let o = out_index[i];
            self.logits[o * n_vocab..(o + 1) * n_vocab].copy_from_slice(row);
        }
        for &i in chunk {
            self.n_past[seqs[i] as usize] = positions[i] as usize + 1;
        }
        Ok(())
    }

    /// Logits of the `i`-th wanted token of the last [`Self::decode`] (in batch order).
    pub fn batch_logits(&self, i: usize) -> &[f32] {
        assert!(
            i < self.n_logit_rows,
            "wanted token {i} of {}",
            self.n_logit_rows
        );
        self.logits_row(i)
    }

    /// Tokens per step: `n_batch`, less where the device bounds how many rows of logits one
    /// step may produce.
    fn batch_limit(&self, all_logits: bool) -> usize {
        let n_vocab = self.model.hparams().n_vocab;
        match self.backend.max_output_rows(n_vocab) {
            Some(rows) if all_logits => rows.clamp(1, self.params.n_batch),
            _ => self.params.n_batch,
        }
    }

    /// Run one step on the backend with the graph of its size and `out_rows`, preparing it
    /// on first use; returns the output rows.
    fn run_step<'a>(
        backend: &'a mut dyn Backend,
        graphs: &mut HashMap<(usize, OutputRows), GraphId>,
        model: &Model,
        step: &Step<'_>,
        out_rows: OutputRows,
        n_ctx: usize,
    ) -> Result<&'a [f32]> {
        let n = step.n_tokens();
        let id = match graphs.entry((n, out_rows)) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let graph = model.arch().build_graph(n, out_rows, n_ctx);
                *e.insert(backend.prepare(graph)?)
            }
        };
        Ok(backend.run(id, step)?)
    }

    /// Logits of the last evaluation: row `i` of [`Self::n_logit_rows`].
    pub fn logits_row(&self, i: usize) -> &[f32] {
        let n_vocab = self.model.hparams().n_vocab;
        &self.logits[i * n_vocab..(i + 1) * n_vocab]
    }

    /// Logits of the last evaluated token.
    pub fn logits(&self) -> &[f32] {
        self.logits_row(self.n_logit_rows.saturating_sub(1))
    }

    /// Rows of logits the last evaluation produced.
    pub fn n_logit_rows(&self) -> usize {
        self.n_logit_rows
    }
}

/// Whether a RoPE op feeds `node`, directly or through other ops.
fn reaches_rope(graph: &tessera_engine::graph::Graph, node: NodeId) -> bool {
    let mut stack = vec![node];
    let mut seen = std::collections::HashSet::new();
    while let Some(n) = stack.pop() {
        if !seen.insert(n) {
            continue;
        }
        let op = &graph.node(n).op;
        if matches!(op, Op::Rope { .. }) {
            return true;
        }
        stack.extend(op.inputs());
    }
    false
}
