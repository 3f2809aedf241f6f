//! A context's memory footprint, computed before anything is allocated, and the check of it
//! against the limits that apply ([`tessera_engine::memory`]).
//!
//! What is counted, for `n_ctx` tokens and batches of `n_batch` (at most `n_ctx`):
//! - the KV cache: every layer's keys and values (F16) and cell positions: a global layer's
//!   pool of cells the sequences share, a sliding-window layer's ring per sequence;
//! - compute scratch: the planned arena of the largest step's graph (all its live
//!   activations, the output rows included), the quantized activations of its widest mat-mul
//!   input, the RoPE table, and attention's gathered sources and staged K/V;
//! - the logits the context keeps: `output_rows × n_vocab` floats.
//!
//! The model's weights are not counted: they are mapped (or read) before a context is
//! created, so the usage the limits are read with already holds them. On a GPU the KV cache
//! and the arena live in device memory, which these limits do not describe (the GPU backend
//! checks its own binding limits); only the logits and their read-back count there.

use tessera_engine::backend::{BackendParams, KvShape};
use tessera_engine::graph::{OutputRows, Plan};
use tessera_engine::memory::{self, MemoryLimit, format_bytes};

use crate::Device;
use crate::context::ContextParams;
use crate::kv_cache::KvCache;
use crate::model::Model;

/// Bytes a context needs, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Context length in tokens.
    pub n_ctx: usize,
    /// Where the context computes.
    pub device: Device,
    /// KV cache bytes (all layers and sequences, keys, values and cell positions).
    pub kv: u64,
    /// Compute scratch bytes (arena, quantized activations, RoPE table, attention scratch).
    pub compute: u64,
    /// Logits kept by the context.
    pub logits: u64,
}

impl Footprint {
    /// The footprint of a context of `model` with `params`, keeping up to `output_rows` rows
    /// of logits at once (1 for generation; the evaluated length for perplexity).
    pub fn new(model: &Model, params: &ContextParams, output_rows: usize) -> Footprint {
        let hp = model.hparams();
        let n_ctx = params.n_ctx;
        let n_batch = params.n_batch.clamp(1, n_ctx.max(1));
        let output_rows = output_rows.clamp(1, n_ctx.max(1));
        let kv_cache = KvCache::new(hp, n_ctx, params.kv_ring, n_batch);
        // Cells of each layer's store, which serves every sequence (CPU and GPU alike): a pool
        // for global layers, a ring each for sliding-window layers.
        let n_seq = params.n_seq.max(1) as u64;
        // The pool's size as the backend reads it from these parameters.
        let backend = BackendParams {
            n_seq: params.n_seq,
            kv_pool_cells: params.kv_pool,
            ..BackendParams::default()
        };
        let store_cells = |s: &KvShape| -> u64 {
            if s.pooled {
                backend.pool_cells(s) as u64
            } else {
                (s.n_cells as u64).saturating_mul(n_seq)
            }
        };
        let kv = kv_cache
            .shapes()
            .iter()
            .map(|s| {
                let per_cell = (s.k_width as u64 + s.v_width as u64) * 2 + 4;
                store_cells(s).saturating_mul(per_cell)
            })
            .fold(0u64, u64::saturating_add);
        let out = if output_rows > 1 {
            OutputRows::All
        } else {
            OutputRows::Last
        };
        let graph = model.arch().build_graph(n_batch, out, n_ctx);
        let arena = Plan::new(&graph).arena_len as u64 * 4;
        let widest = hp
            .n_embd
            .max(hp.n_ff)
            .max(hp.n_head * hp.head_dim_v)
            .max(hp.n_head * hp.head_dim) as u64;
        let max_cells = kv_cache.shapes().iter().map(store_cells).max().unwrap_or(0);
        let kv_width = (hp.n_head_kv * (hp.head_dim + hp.kv_value_width())) as u64;
        let b = n_batch as u64;
        // Activations quantized for a mat-mul take at most 4 bytes per element (F32 weights).
        let act = b.saturating_mul(widest * 4);
        let rope = b.saturating_mul(hp.head_dim as u64 * 4);
        let attention = (max_cells + b)
            .saturating_mul(8)
            .saturating_add(b.saturating_mul(kv_width * 2));
        let positions = b * 4;
        let compute = [arena, act, rope, attention, positions]
            .into_iter()
            .fold(0u64, u64::saturating_add);
        let logits = (output_rows as u64).saturating_mul(hp.n_vocab as u64 * 4);
        Footprint {
            n_ctx,
            device: params.device,
            kv,
            compute,
            logits,
        }
    }

    /// Every byte, wherever it lives.
    pub fn total(&self) -> u64 {
        self.kv
            .saturating_add(self.compute)
            .saturating_add(self.logits)
    }

    /// The bytes that come from host memory: everything on the CPU; on a GPU the logits and
    /// their read-back.
    pub fn host_bytes(&self) -> u64 {
        match self.device {
            Device::Cpu => self.total(),
            Device::Gpu(_) => self.logits.saturating_mul(2),
        }
    }

    /// Refuse a footprint that does not fit `limit` (the room left under the tightest limit;
    /// `None`: unknown) or that no address space could hold.
    pub fn check(&self, limit: Option<MemoryLimit>) -> Result<(), Box<MemoryRefusal>> {
        let need = self.host_bytes();
        let limit = match limit {
            Some(l) if need > l.available => l,
            _ if need > isize::MAX as u64 => MemoryLimit {
                available: isize::MAX as u64,
                limit: isize::MAX as u64,
                source: memory::LimitSource::AddressSpace,
            },
            _ => return Ok(()),
        };
        Err(Box::new(MemoryRefusal {
            footprint: self.clone(),
            limit,
        }))
    }

    /// [`Self::check`] against the limits of this process now.
    pub fn check_now(&self) -> Result<(), Box<MemoryRefusal>> {
        self.check(memory::available())
    }
}

impl std::fmt::Display for Footprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a context of {} tokens needs {} (KV cache {} + compute {} + logits {})",
            self.n_ctx,
            format_bytes(self.total()),
            format_bytes(self.kv),
            format_bytes(self.compute),
            format_bytes(self.logits)
        )?;
        if let Device::Gpu(_) = self.device {
            write!(
                f,
                ", {} of it in host memory",
                format_bytes(self.host_bytes())
            )?;
        }
        Ok(())
    }
}

/// A context refused because its footprint exceeds the memory left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryRefusal {
    /// What the context needs.
    pub footprint: Footprint,
    /// The limit it exceeds.
    pub limit: MemoryLimit,
}

impl std::fmt::Display for MemoryRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, more than the {} available ({}, limit {}); use a smaller -c/--ctx-size or \
             -b/--batch-size",
            self.footprint,
            format_bytes(self.limit.available),
            self.limit.source,
            format_bytes(self.limit.limit)
        )
    }
}

impl std::error::Error for MemoryRefusal {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use tessera_engine::memory::LimitSource;

    fn tiny() -> Model {
        testing::load(&testing::TinyLlama::default().writer()).unwrap()
    }

    fn params(n_ctx: usize, n_batch: usize) -> ContextParams {
        ContextParams {
            n_ctx,
            n_batch,
            ..ContextParams::default()
        }
    }

    #[test]
    fn kv_bytes_match_the_stores_a_context_allocates() {
        let model = std::sync::Arc::new(tiny());
        for n_ctx in [1, 7, 64] {
            for n_seq in [1, 3] {
                let p = ContextParams {
                    n_seq,
                    ..params(n_ctx, 4)
                };
                let f = Footprint::new(&model, &p, 1);
                let ctx = crate::Context::new(model.clone(), p).unwrap();
                assert_eq!(f.kv, ctx.kv_bytes() as u64, "n_ctx {n_ctx}, n_seq {n_seq}");
            }
        }
    }

    #[test]
    fn kv_grows_with_the_context_and_logits_with_the_rows() {
        let model = tiny();
        let hp = model.hparams();
        let a = Footprint::new(&model, &params(100, 8), 1);
        let b = Footprint::new(&model, &params(200, 8), 1);
        let per_cell = (hp.n_head_kv * (hp.head_dim + hp.head_dim_v) * 2 + 4) as u64;
        assert_eq!(b.kv - a.kv, 100 * per_cell * hp.n_layer as u64);
        assert_eq!(a.logits, hp.n_vocab as u64 * 4);
        let all = Footprint::new(&model, &params(100, 8), 100);
        assert_eq!(all.logits, 100 * hp.n_vocab as u64 * 4);
        assert!(
            all.compute >= a.compute,
            "the all-rows graph keeps more output"
        );
        // A batch larger than the context costs what a batch of the context does.
        assert_eq!(
            Footprint::new(&model, &params(100, usize::MAX), 1),
            Footprint::new(&model, &params(100, 100), 1)
        );
    }

    #[test]
    fn an_absurd_context_is_refused_with_the_numbers() {
        let model = tiny();
        let f = Footprint::new(&model, &params(i32::MAX as usize, 512), 1);
        let limit = MemoryLimit {
            available: 23 << 30,
            limit: 32 << 30,
            source: LimitSource::CgroupV2("/sys/fs/cgroup/x".into()),
        };
        let e = f.check(Some(limit.clone())).unwrap_err().to_string();
        assert!(
            e.starts_with("a context of 2147483647 tokens needs "),
            "{e}"
        );
        assert!(e.contains("(KV cache "), "{e}");
        assert!(
            e.contains("more than the 23.0 GiB available (cgroup /sys/fs/cgroup/x/memory.max"),
            "{e}"
        );
        assert!(
            Footprint::new(&model, &params(64, 8), 1)
                .check(Some(limit))
                .is_ok()
        );
        // No limit known: only what no address space holds is refused.
        assert!(f.check(None).is_ok() || f.total() > isize::MAX as u64);
    }
}
