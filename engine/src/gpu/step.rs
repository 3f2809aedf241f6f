//! The step buffer: the per-step values the kernels read (token ids, positions, RoPE tables,
//! each sequence group's attention scan range, the output rows a step selects), laid out once
//! when a graph is prepared and written by the host before every step.
//!
//! A step may mix sequences, each over its own KV stores: its tokens come in groups, one per
//! sequence (contiguous, [`crate::backend::Step::groups`]). Attention is the only op that
//! tells sequences apart, so each attention node has one scan info per group it may meet
//! ([`ScanInfo`]), and its kernels are dispatched once per group present.

use super::encode::MAX_HEAD_DIM;
use super::kv::GpuKvStore;
use crate::graph::RopeParams;
use crate::rope::rope_table;

/// Most workgroups per head of the split-K attention kernel (the partials are sized for it).
pub const ATTN_SPLITS: u32 = 16;
/// Sources per split-K workgroup before another split is used.
const ATTN_SPLIT_SOURCES: u32 = 256;

/// One sequence group's scan info for one attention node, as the kernels read it (7 words):
/// the cached positions `[lo, lo + n_scan)` to scan, the store's cell count, the split-K
/// workgroups per head, 1 for a store without values (whose values are the first
/// `head_dim_v` elements of each key head), and the group's tokens: `n_tok` from step token
/// `tok0` (0 tokens: the group is absent this step and its dispatches are skipped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanInfo {
    /// First cached position scanned.
    pub lo: u32,
    /// Cached positions scanned.
    pub n_scan: u32,
    /// Cells of the store.
    pub n_cells: u32,
    /// Split-K workgroups per head.
    pub n_split: u32,
    /// 1 when the store keeps no values.
    pub values_in_keys: u32,
    /// The group's first token in the step.
    pub tok0: u32,
    /// The group's tokens.
    pub n_tok: u32,
}

impl ScanInfo {
    /// Words of one scan info in the step buffer.
    pub const WORDS: usize = 7;

    /// The scan info at `host[o..]`.
    pub fn read(host: &[u32], o: usize) -> ScanInfo {
        let w = &host[o..o + Self::WORDS];
        ScanInfo {
            lo: w[0],
            n_scan: w[1],
            n_cells: w[2],
            n_split: w[3],
            values_in_keys: w[4],
            tok0: w[5],
            n_tok: w[6],
        }
    }

    fn write(&self, host: &mut [u32], o: usize) {
        host[o..o + Self::WORDS].copy_from_slice(&[
            self.lo,
            self.n_scan,
            self.n_cells,
            self.n_split,
            self.values_in_keys,
            self.tok0,
            self.n_tok,
        ]);
    }
}

/// A sequence group of a step: the KV slot it reads and writes, and its tokens.
pub type StepGroup = (u32, std::ops::Range<usize>);

/// Where a step's per-step values go in the step buffer (in u32 words).
#[derive(Default)]
pub struct StepLayout {
    /// Offset of the token ids.
    pub tokens: usize,
    /// Offset of the positions.
    pub positions: usize,
    /// RoPE tables, one per distinct parameter set (and frequency factors),
    /// `n_tokens × n_dims` each.
    pub ropes: Vec<(RopeParams, Option<Vec<f32>>, usize)>,
    /// Per attention node: KV store (its layer's number within a slot), window and the
    /// offset of its [`ScanInfo`]s, one per sequence group.
    pub attention: Vec<(u32, Option<u32>, usize)>,
    /// Sequence groups a step may hold (each attention node has a scan info for each).
    pub n_groups: usize,
    /// Offset and count of the output rows the step selects (`Op::SelectRows`), if any.
    pub out_rows: Option<(usize, usize)>,
    /// KV stores the step writes.
    pub writes: Vec<u32>,
    /// Words in all.
    pub len: usize,
}

impl StepLayout {
    /// The token ids and positions of `n_tok` tokens in up to `n_groups` sequence groups,
    /// nothing else yet.
    pub fn new(n_tok: usize, n_groups: usize) -> StepLayout {
        StepLayout {
            tokens: 0,
            positions: n_tok,
            len: 2 * n_tok,
            n_groups: n_groups.max(1),
            ..Default::default()
        }
    }

    /// The offset of the RoPE table of `params` (with per-pair frequency `factors`) for
    /// `n_tok` tokens, reserved on first use (layers and Q/K with the same parameters share one).
    pub fn rope_table(
        &mut self,
        params: RopeParams,
        factors: Option<Vec<f32>>,
        n_tok: usize,
    ) -> usize {
        match self
            .ropes
            .iter()
            .find(|(p, f, _)| *p == params && *f == factors)
        {
            Some(&(_, _, o)) => o,
            None => {
                let o = self.len;
                self.ropes.push((params, factors, o));
                self.len += n_tok * params.n_dims;
                o
            }
        }
    }

    /// Reserve the scan infos (one per sequence group) of an attention node over KV store
    /// `kv` (which the step also writes) and return the first's offset; group `j`'s is
    /// [`ScanInfo::WORDS`]` · j` further.
    pub fn attention_info(&mut self, kv: u32, window: Option<u32>) -> usize {
        let info = self.len;
        self.len += ScanInfo::WORDS * self.n_groups;
        self.attention.push((kv, window, info));
        self.writes.push(kv);
        info
    }

    /// Reserve the `k` output rows a step selects and return their offset.
    pub fn select_rows(&mut self, k: usize) -> usize {
        if let Some((o, n)) = self.out_rows {
            assert_eq!(n, k, "one selection of output rows per graph");
            return o;
        }
        let o = self.len;
        self.len += k;
        self.out_rows = Some((o, k));
        o
    }

    /// Write the step's values into `host` (`len` words): `tokens` at `positions` in the
    /// sequence `groups` (at most [`Self::n_groups`]), attending over the stores `kv`
    /// (`n_layers` per slot, slot after slot), keeping `out_rows`.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &self,
        host: &mut [u32],
        tokens: &[u32],
        positions: &[i32],
        groups: &[StepGroup],
        out_rows: &[u32],
        kv: &[GpuKvStore],
        n_layers: usize,
    ) {
        let n_tok = tokens.len();
        host[self.tokens..self.tokens + n_tok].copy_from_slice(tokens);
        for (t, &p) in positions.iter().enumerate() {
            host[self.positions + t] = p as u32;
        }
        for (params, factors, o) in &self.ropes {
            let nd = params.n_dims;
            let mut table = [0f32; 2 * MAX_HEAD_DIM];
            for (t, &pos) in positions.iter().enumerate() {
                rope_table(pos, params, factors.as_deref(), &mut table[..nd]);
                for (d, v) in table[..nd].iter().enumerate() {
                    host[o + t * nd + d] = v.to_bits();
                }
            }
        }
        for &(s, window, o) in &self.attention {
            for j in 0..self.n_groups {
                let info = match groups.get(j) {
                    Some((slot, r)) => {
                        let store = &kv[*slot as usize * n_layers + s as usize];
                        let (lo, n_scan) = store.scan_range(positions[r.start], window);
                        ScanInfo {
                            lo,
                            n_scan,
                            n_cells: store.n_cells() as u32,
                            n_split: (n_scan + r.len() as u32)
                                .div_ceil(ATTN_SPLIT_SOURCES)
                                .clamp(1, ATTN_SPLITS),
                            values_in_keys: (store.v_width() == 0) as u32,
                            tok0: r.start as u32,
                            n_tok: r.len() as u32,
                        }
                    }
                    None => ScanInfo {
                        n_cells: 1,
                        n_split: 1,
                        ..ScanInfo::default()
                    },
                };
                info.write(host, o + ScanInfo::WORDS * j);
            }
        }
        if let Some((o, k)) = self.out_rows {
            host[o..o + k].copy_from_slice(&out_rows[..k]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::RopeMode;

    #[test]
    fn tables_and_scan_infos_follow_the_tokens() {
        let mut l = StepLayout::new(3, 1);
        let p = RopeParams {
            mode: RopeMode::Neox,
            n_dims: 8,
            base: 10000.0,
            freq_scale: 1.0,
            ext_factor: 0.0,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            orig_ctx: 256,
        };
        assert_eq!(l.rope_table(p, None, 3), 6);
        assert_eq!(l.attention_info(2, None), 30);
        assert_eq!(l.rope_table(p, None, 3), 6, "one table per parameter set");
        let q = RopeParams { base: 1e6, ..p };
        assert_eq!(l.rope_table(q, None, 3), 37);
        assert_eq!(l.len, 61);
        assert_eq!(l.writes, [2]);
        assert_eq!(l.select_rows(2), 61);
        assert_eq!(l.len, 63);
    }
}
