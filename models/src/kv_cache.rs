//! The KV cache's layout as per-layer policies: `Full(n_ctx)` for global layers and
//! `Ring { window, cells }` for sliding-window layers (`cells` = the window plus `n_batch`, room
//! to roll a sequence back), whose memory stays O(window) however long the context. The
//! stores themselves live in the context's backend, in the memory of the device that
//! computes.

use tessera_engine::backend::KvShape;

use crate::hparams::HParams;

/// How one layer keeps its keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvPolicy {
    /// One cell per position of the context.
    Full(usize),
    /// A ring of `cells` cells written at `pos % cells` for a sliding window of `window`
    /// positions: the window, plus room to roll a sequence back by `cells - window` tokens
    /// (a cached prefix reused after the answer that followed it).
    Ring {
        /// Positions a query sees (itself included).
        window: usize,
        /// Cells of the ring.
        cells: usize,
    },
}

impl KvPolicy {
    /// Cells the policy allocates (per sequence).
    pub fn cells(self) -> usize {
        match self {
            KvPolicy::Full(n) | KvPolicy::Ring { cells: n, .. } => n,
        }
    }

    /// Whether a sequence holding `n_past` tokens can be cut back to `keep` and evaluated
    /// from there: always for a full cache; for a ring, when it still holds the window that
    /// evaluating at `keep` attends to (positions `keep - window + 1 .. keep` of the
    /// `n_past - cells .. n_past` it holds).
    pub fn can_roll_back(self, n_past: usize, keep: usize) -> bool {
        match self {
            KvPolicy::Full(_) => true,
            KvPolicy::Ring { window, cells } => {
                n_past <= cells || keep + 1 + cells >= n_past + window
            }
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
    /// The layout for every layer of `hp` at context `n_ctx`: sliding-window layers get rings
    /// of their window plus `rollback` cells (room to cut a sequence back by that many
    /// tokens, as llama.cpp's SWA cache keeps `n_swa + n_ubatch`). With `ring` false, they
    /// get full caches too (the mask still applies) — the reference the ring is tested
    /// against.
    pub fn new(hp: &HParams, n_ctx: usize, ring: bool, rollback: usize) -> KvCache {
        let policies: Vec<KvPolicy> = (0..hp.n_layer)
            .map(|il| {
                let cells = hp.kv_cells(il, n_ctx, rollback);
                match hp.layer_attention(il).window {
                    Some(w) if ring && cells < n_ctx => KvPolicy::Ring {
                        window: w as usize,
                        cells,
                    },
                    _ => KvPolicy::Full(n_ctx),
                }
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
