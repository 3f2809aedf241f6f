//! The KV cache's layout as per-layer policies: `Full(n_ctx)` for global layers and
//! `Ring(window)` for sliding-window layers, whose memory stays O(window) however long the
//! context. The stores themselves live in the context's backend, in the memory of the device
//! that computes.

use tessera_engine::backend::KvShape;

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

/// What every layer of a model keeps, at one context length.
pub struct KvCache {
    policies: Vec<KvPolicy>,
    shapes: Vec<KvShape>,
    n_ctx: usize,
}

impl KvCache {
    /// The layout for every layer of `hp` at context `n_ctx`. With `ring` false,
    /// sliding-window layers get full caches too (the mask still applies) — the reference the
    /// ring is tested against.
    pub fn new(hp: &HParams, n_ctx: usize, ring: bool) -> KvCache {
        let policies: Vec<KvPolicy> = (0..hp.n_layer)
            .map(|il| match hp.layer_attention(il).window {
                Some(w) if ring && (w as usize) < n_ctx => KvPolicy::Ring(w as usize),
                _ => KvPolicy::Full(n_ctx),
            })
            .collect();
        let shapes = policies
            .iter()
            .map(|p| KvShape {
                n_cells: p.cells(),
                pooled: matches!(p, KvPolicy::Full(_)),
                k_width: hp.n_head_kv * hp.head_dim,
                v_width: hp.n_head_kv * hp.kv_value_width(),
            })
            .collect();
        KvCache {
            policies,
            shapes,
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

    /// Each layer's store, as the backend allocates it.
    pub fn shapes(&self) -> &[KvShape] {
        &self.shapes
    }
}
