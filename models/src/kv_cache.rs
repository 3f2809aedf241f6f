//! The KV cache as per-layer policies: `Full(n_ctx)` for global layers and `Ring(window)` for
//! sliding-window layers, whose memory stays O(window) however long the context.

use tessera_engine::cpu::kv::KvStore;

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

/// The KV cache of a whole model.
pub struct KvCache {
    policies: Vec<KvPolicy>,
    stores: Vec<KvStore>,
    n_ctx: usize,
}

impl KvCache {
    /// Caches for every layer of `hp` at context `n_ctx`. With `ring` false, sliding-window
    /// layers get full caches too (the mask still applies) — the reference the ring is tested
    /// against.
    pub fn new(hp: &HParams, n_ctx: usize, ring: bool) -> KvCache {
        let policies: Vec<KvPolicy> = (0..hp.n_layer)
            .map(|il| match hp.layer_attention(il).window {
                Some(w) if ring && (w as usize) < n_ctx => KvPolicy::Ring(w as usize),
                _ => KvPolicy::Full(n_ctx),
            })
            .collect();
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
            stores,
            n_ctx,
        }
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
    pub fn stores_mut(&mut self) -> &mut [KvStore] {
        &mut self.stores
    }

    /// Bytes allocated by every layer.
    pub fn bytes_per_layer(&self) -> Vec<usize> {
        self.stores.iter().map(|s| s.bytes()).collect()
    }

    /// Bytes allocated in total.
    pub fn bytes(&self) -> usize {
        self.stores.iter().map(|s| s.bytes()).sum()
    }

    /// Bytes holding tokens now.
    pub fn used_bytes(&self) -> usize {
        self.stores
            .iter()
            .map(|s| s.used_cells() * s.bytes() / s.n_cells().max(1))
            .sum()
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.stores.iter_mut().for_each(|s| s.clear());
    }

    /// Forget positions `>= pos` (ring layers may then lack older positions they overwrote;
    /// callers re-evaluate from a position the ring still covers or clear).
    pub fn truncate(&mut self, pos: usize) {
        self.stores.iter_mut().for_each(|s| s.truncate(pos as i32));
    }
}
