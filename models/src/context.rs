//! An inference context: a model's KV cache layout, a backend (the engine's executor on the
//! chosen device, holding the KV stores and scratch memory), and the graphs already prepared for
//! each batch size. Evaluating tokens appends them to the cache and yields logits.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use tessera_engine::backend::{self, Backend, BackendParams, GraphId};
use tessera_engine::graph::OutputRows;

use crate::Device;
use crate::error::{ModelError, Result};
use crate::footprint::Footprint;
use crate::kv_cache::KvCache;
use crate::model::Model;

/// Settings of a context.
#[derive(Clone, Copy, Debug)]
pub struct ContextParams {
    /// Context length in tokens.
    pub n_ctx: usize,
    /// Largest batch evaluated at once (longer inputs are split).
    pub n_batch: usize,
    /// Threads (0 = all cores).
    pub n_threads: usize,
    /// Ring buffers for sliding-window layers (false: full caches with a sliding mask).
    pub kv_ring: bool,
    /// Where to compute.
    pub device: Device,
}

impl Default for ContextParams {
    fn default() -> Self {
        ContextParams {
            n_ctx: 4096,
            n_batch: 512,
            n_threads: 0,
            kv_ring: true,
            device: Device::Cpu,
        }
    }
}

/// A model's running state.
pub struct Context {
    model: Arc<Model>,
    params: ContextParams,
    kv: KvCache,
    backend: Box<dyn Backend>,
    /// The backend's prepared graphs, by (tokens, all logits).
    graphs: HashMap<(usize, bool), GraphId>,
    n_past: usize,
    /// Logits of the last evaluation (`n_rows × n_vocab`).
    logits: Vec<f32>,
    n_logit_rows: usize,
    /// Positions of the batch being evaluated (kept to avoid allocating per step).
    positions: Vec<i32>,
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
        params.n_batch = params.n_batch.min(params.n_ctx);
        Footprint::new(&model, &params, 1)
            .check_now()
            .map_err(ModelError::OutOfMemory)?;
        let kv = KvCache::new(model.hparams(), params.n_ctx, params.kv_ring);
        let backend = backend::open(
            params.device,
            &BackendParams {
                n_threads: params.n_threads,
                kv_layers: kv.shapes().to_vec(),
            },
        )?;
        Ok(Context {
            kv,
            backend,
            graphs: HashMap::new(),
            model,
            params,
            n_past: 0,
            logits: Vec::new(),
            n_logit_rows: 0,
            positions: Vec::with_capacity(params.n_batch),
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

    /// Tokens in the cache.
    pub fn n_past(&self) -> usize {
        self.n_past
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

    /// Bytes the KV stores hold, per layer, in the memory of the device that computes.
    pub fn kv_bytes_per_layer(&self) -> Vec<usize> {
        (0..self.backend.n_kv_layers())
            .map(|l| self.backend.kv_layer(l).bytes())
            .collect()
    }

    /// Bytes the KV stores hold in total.
    pub fn kv_bytes(&self) -> usize {
        self.kv_bytes_per_layer().iter().sum()
    }

    /// Bytes of the KV stores holding tokens now.
    pub fn kv_used_bytes(&self) -> usize {
        (0..self.backend.n_kv_layers())
            .map(|l| {
                let s = self.backend.kv_layer(l);
                s.used_cells() * s.bytes() / s.n_cells().max(1)
            })
            .sum()
    }

    /// Show `tap` the inputs of every weight product of the steps from now on (`None`: stop);
    /// what `tessera imatrix` collects. CPU contexts only.
    pub fn set_mat_mul_tap(
        &mut self,
        tap: Option<std::sync::Arc<dyn tessera_engine::backend::MatMulTap>>,
    ) -> Result<()> {
        Ok(self.backend.set_mat_mul_tap(tap)?)
    }

    /// Forget every token.
    pub fn reset(&mut self) {
        self.backend.kv_clear();
        self.n_past = 0;
        self.n_logit_rows = 0;
    }

    /// Forget tokens from position `n` on (keeps the first `n`).
    pub fn truncate(&mut self, n: usize) {
        if n < self.n_past {
            self.backend.kv_truncate(n as i32);
            self.n_past = n;
        }
    }

    /// Evaluate `tokens` after what is cached; afterwards [`Self::logits`] holds the last
    /// token's logits (or every token's, with `all_logits`).
    pub fn eval(&mut self, tokens: &[u32], all_logits: bool) -> Result<()> {
        if tokens.is_empty() {
            return Err(ModelError::InvalidInput("no tokens to evaluate".into()));
        }
        if self.n_past + tokens.len() > self.params.n_ctx {
            return Err(ModelError::InvalidInput(format!(
                "{} tokens do not fit: {} of the context size {} are used (use a larger -c)",
                tokens.len(),
                self.n_past,
                self.params.n_ctx
            )));
        }
        let n_vocab = self.model.hparams().n_vocab;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::InvalidInput(format!(
                "token id {bad} is out of range (vocabulary of {n_vocab})"
            )));
        }
        let rows_wanted = if all_logits { tokens.len() } else { 1 };
        let n_logits = rows_wanted.saturating_mul(n_vocab);
        tessera_engine::memory::try_grow(&mut self.logits, n_logits, "the logits")?;
        let mut row = 0;
        for chunk in tokens.chunks(self.batch_limit(all_logits)) {
            let n = chunk.len();
            let last_chunk = row + n == tokens.len();
            self.positions.clear();
            self.positions
                .extend((self.n_past..self.n_past + n).map(|p| p as i32));
            let out = Self::run_chunk(
                self.backend.as_mut(),
                &mut self.graphs,
                &self.model,
                &self.positions,
                chunk,
                all_logits,
                self.params.n_ctx,
            )?;
            if let Some(bad) = out.iter().position(|x| !x.is_finite()) {
                self.n_logit_rows = 0;
                let row_in_chunk = if all_logits { bad / n_vocab } else { n - 1 };
                return Err(ModelError::NonFiniteLogits {
                    position: self.n_past + row_in_chunk,
                });
            }
            if all_logits {
                self.logits[row * n_vocab..(row + n) * n_vocab].copy_from_slice(out);
            } else if last_chunk {
                self.logits[..n_vocab].copy_from_slice(out);
            }
            self.n_past += n;
            row += n;
        }
        self.n_logit_rows = rows_wanted;
        Ok(())
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

    /// Run one chunk of tokens at `positions` on the backend, preparing its graph on first
    /// use; returns the output rows.
    fn run_chunk<'a>(
        backend: &'a mut dyn Backend,
        graphs: &mut HashMap<(usize, bool), GraphId>,
        model: &Model,
        positions: &[i32],
        chunk: &[u32],
        all_logits: bool,
        n_ctx: usize,
    ) -> Result<&'a [f32]> {
        let id = match graphs.entry((chunk.len(), all_logits)) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let out_rows = if all_logits {
                    OutputRows::All
                } else {
                    OutputRows::Last
                };
                let graph = model.arch().build_graph(chunk.len(), out_rows, n_ctx);
                *e.insert(backend.prepare(graph)?)
            }
        };
        Ok(backend.run(id, chunk, positions)?)
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
