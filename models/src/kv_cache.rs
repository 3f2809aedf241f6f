//! The KV cache as per-layer policies: `Full(n_ctx)` for global layers and `Ring(window)` for
//! sliding-window layers, whose memory stays O(window) however long the context. The stores
//! live where the context computes: host memory for the CPU, GPU memory for a GPU.

use std::sync::Arc;

use tessera_engine::cpu::kv::KvStore;
use tessera_engine::gpu::{GpuDevice, GpuKvStore};

use crate::error::{ModelError, Result};
use crate::hparams::HParams;

/// How one layer keeps its keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvPolicy {
    /// One cell per position of the context.
    Full(usize),
    /// A ring of `window` cells written at `pos % window`.
    Ring(usize),
}

impl KvPolicy {
    /// Cells the policy allocates.
    pub fn cells(self) -> usize {
        match self {
            KvPolicy::Full(n) | KvPolicy::Ring(n) => n,
        }
    }
}

/// Per-layer stores on one backend.
pub enum KvStores {
    /// Host memory.
    Cpu(Vec<KvStore>),
    /// GPU memory.
    Gpu(Vec<GpuKvStore>),
}

/// The KV cache of a whole model.
pub struct KvCache {
    policies: Vec<KvPolicy>,
    stores: KvStores,
    n_ctx: usize,
}

/// Apply the same expression to every store, whichever backend holds them.
macro_rules! each_store {
    ($stores:expr, |$s:ident| $body:expr) => {
        match $stores {
            KvStores::Cpu(v) => v.iter().map(|$s| $body).collect::<Vec<_>>(),
            KvStores::Gpu(v) => v.iter().map(|$s| $body).collect::<Vec<_>>(),
        }
    };
}

impl KvCache {
    /// Caches for every layer of `hp` at context `n_ctx`. With `ring` false, sliding-window
    /// layers get full caches too (the mask still applies) — the reference the ring is tested
    /// against.
    pub fn new(hp: &HParams, n_ctx: usize, ring: bool) -> KvCache {
        let policies = Self::policies_for(hp, n_ctx, ring);
        let stores = policies
            .iter()
            .map(|p| {
                KvStore::new(
                    p.cells(),
                    hp.n_head_kv * hp.head_dim,
                    hp.n_head_kv * hp.head_dim_v,
                )
            })
            .collect();
        KvCache {
            policies,
            stores: KvStores::Cpu(stores),
            n_ctx,
        }
    }

    /// The same cache in the memory of GPU `dev`.
    pub fn new_gpu(
        hp: &HParams,
        n_ctx: usize,
        ring: bool,
        dev: &Arc<GpuDevice>,
    ) -> Result<KvCache> {
        let policies = Self::policies_for(hp, n_ctx, ring);
        let stores = policies
            .iter()
            .map(|p| {
                GpuKvStore::new(
                    dev,
                    p.cells(),
                    hp.n_head_kv * hp.head_dim,
                    hp.n_head_kv * hp.head_dim_v,
                )
                .map_err(|e| ModelError::Backend(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            policies,
            stores: KvStores::Gpu(stores),
            n_ctx,
        })
    }

    fn policies_for(hp: &HParams, n_ctx: usize, ring: bool) -> Vec<KvPolicy> {
        (0..hp.n_layer)
            .map(|il| match hp.layer_attention(il).window {
                Some(w) if ring && (w as usize) < n_ctx => KvPolicy::Ring(w as usize),
                _ => KvPolicy::Full(n_ctx),
            })
            .collect()
    }

    /// Context length in tokens.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Each layer's policy.
    pub fn policies(&self) -> &[KvPolicy] {
        &self.policies
    }

    /// The stores, one per layer, for the executor.
    pub fn stores_mut(&mut self) -> &mut KvStores {
        &mut self.stores
    }

    /// Bytes allocated by every layer.
    pub fn bytes_per_layer(&self) -> Vec<usize> {
        each_store!(&self.stores, |s| s.bytes())
    }

    /// Bytes allocated in total.
    pub fn bytes(&self) -> usize {
        self.bytes_per_layer().iter().sum()
    }

    /// Bytes holding tokens now.
    pub fn used_bytes(&self) -> usize {
        each_store!(&self.stores, |s| s.used_cells() * s.bytes()
            / s.n_cells().max(1))
        .iter()
        .sum()
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        match &mut self.stores {
            KvStores::Cpu(v) => v.iter_mut().for_each(|s| s.clear()),
            KvStores::Gpu(v) => v.iter_mut().for_each(|s| s.clear()),
        }
    }

    /// Forget positions `>= pos` (ring layers may then lack older positions they overwrote;
    /// callers re-evaluate from a position the ring still covers or clear).
    pub fn truncate(&mut self, pos: usize) {
        match &mut self.stores {
            KvStores::Cpu(v) => v.iter_mut().for_each(|s| s.truncate(pos as i32)),
            KvStores::Gpu(v) => v.iter_mut().for_each(|s| s.truncate(pos as i32)),
        }
    }
}
