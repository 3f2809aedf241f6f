//! An inference context: a model's KV cache, an executor (CPU threads, or a GPU) with its
//! scratch memory, and the graphs already planned for each batch size. Evaluating tokens
//! appends them to the cache and yields logits.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use tessera_engine::cpu::exec::{CpuExecutor, PreparedGraph};
use tessera_engine::gpu::{GpuExecutor, GpuPreparedGraph};
use tessera_engine::graph::OutputRows;

use crate::device::Device;
use crate::error::{ModelError, Result};
use crate::kv_cache::{KvCache, KvStores};
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

/// The executor of a context and the graphs it has prepared, keyed by (tokens, all logits).
enum Backend {
    Cpu {
        exec: CpuExecutor,
        graphs: HashMap<(usize, bool), PreparedGraph>,
    },
    Gpu {
        exec: GpuExecutor,
        graphs: HashMap<(usize, bool), GpuPreparedGraph>,
    },
}

/// A model's running state.
pub struct Context {
    model: Arc<Model>,
    params: ContextParams,
    kv: KvCache,
    backend: Backend,
    n_past: usize,
    /// Logits of the last evaluation (`n_rows × n_vocab`).
    logits: Vec<f32>,
    n_logit_rows: usize,
    /// Positions of the batch being evaluated (kept to avoid allocating per step).
    positions: Vec<i32>,
}

impl Context {
    /// A context for `model`.
    pub fn new(model: Arc<Model>, params: ContextParams) -> Result<Context> {
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
        let (kv, backend) = match params.device {
            Device::Cpu => (
                KvCache::new(model.hparams(), params.n_ctx, params.kv_ring),
                Backend::Cpu {
                    exec: CpuExecutor::new(params.n_threads),
                    graphs: HashMap::new(),
                },
            ),
            Device::Gpu(index) => {
                let dev = Device::open_gpu(index)?;
                let kv = KvCache::new_gpu(model.hparams(), params.n_ctx, params.kv_ring, &dev)?;
                (
                    kv,
                    Backend::Gpu {
                        exec: GpuExecutor::new(dev),
                        graphs: HashMap::new(),
                    },
                )
            }
        };
        Ok(Context {
            kv,
            backend,
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
        match &self.backend {
            Backend::Cpu { exec, .. } => exec.n_threads(),
            Backend::Gpu { .. } => 0,
        }
    }

    /// What computes: `cpu`, or the GPU adapter's name, backend and type.
    pub fn backend_name(&self) -> String {
        match &self.backend {
            Backend::Cpu { .. } => "cpu".into(),
            Backend::Gpu { exec, .. } => exec.device().describe(),
        }
    }

    /// The KV cache.
    pub fn kv_cache(&self) -> &KvCache {
        &self.kv
    }

    /// Forget every token.
    pub fn reset(&mut self) {
        self.kv.clear();
        self.n_past = 0;
        self.n_logit_rows = 0;
    }

    /// Forget tokens from position `n` on (keeps the first `n`).
    pub fn truncate(&mut self, n: usize) {
        if n < self.n_past {
            self.kv.truncate(n);
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
        if self.logits.len() < rows_wanted * n_vocab {
            self.logits.resize(rows_wanted * n_vocab, 0.0);
        }
        let mut row = 0;
        for chunk in tokens.chunks(self.batch_limit(all_logits)) {
            let n = chunk.len();
            let last_chunk = row + n == tokens.len();
            self.positions.clear();
            self.positions
                .extend((self.n_past..self.n_past + n).map(|p| p as i32));
            let out = Self::run_chunk(
                &mut self.backend,
                &mut self.kv,
                &self.model,
                &self.positions,
                chunk,
                all_logits,
            )?;
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

    /// Tokens per step: `n_batch`, less on a GPU when every row's logits must fit in one
    /// storage binding beside the other activations.
    fn batch_limit(&self, all_logits: bool) -> usize {
        match &self.backend {
            Backend::Gpu { exec, .. } if all_logits => {
                let n_vocab = self.model.hparams().n_vocab.max(1) as u64;
                let rows = exec.device().max_binding() / 4 / (2 * n_vocab);
                (rows as usize).clamp(1, self.params.n_batch)
            }
            _ => self.params.n_batch,
        }
    }

    /// Run one chunk of tokens at `positions` on the backend, preparing its graph on first
    /// use; returns the output rows.
    fn run_chunk<'a>(
        backend: &'a mut Backend,
        kv: &'a mut KvCache,
        model: &Model,
        positions: &[i32],
        chunk: &[u32],
        all_logits: bool,
    ) -> Result<&'a [f32]> {
        let key = (chunk.len(), all_logits);
        let out_rows = if all_logits {
            OutputRows::All
        } else {
            OutputRows::Last
        };
        let arch = model.arch();
        match (backend, kv.stores_mut()) {
            (Backend::Cpu { exec, graphs }, KvStores::Cpu(stores)) => {
                let g = match graphs.entry(key) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(
                        exec.prepare(arch.build_graph(chunk.len(), out_rows))
                            .map_err(|e| ModelError::InvalidInput(e.to_string()))?,
                    ),
                };
                exec.run(g, chunk, positions, stores)
                    .map_err(|e| ModelError::InvalidInput(e.to_string()))
            }
            (Backend::Gpu { exec, graphs }, KvStores::Gpu(stores)) => {
                let g = match graphs.entry(key) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(
                        exec.prepare(arch.build_graph(chunk.len(), out_rows))
                            .map_err(|e| ModelError::Backend(e.to_string()))?,
                    ),
                };
                exec.run(g, chunk, positions, stores)
                    .map_err(|e| ModelError::Backend(e.to_string()))
            }
            _ => unreachable!("the KV cache lives on the context's backend"),
        }
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
