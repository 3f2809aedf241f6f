//! The step buffer: the per-step values the kernels read (token ids, positions, RoPE tables,
//! each sequence group's attention scan range, the output rows a step selects), laid out once
//! when a graph is prepared and written by the host before every step.
//!
//! A step may mix sequences: its tokens come in groups, one per sequence (contiguous,
//! [`crate::backend::Step::groups`]). Attention is the only op that tells sequences apart, so
//! each attention node has one scan info per group it may meet ([`ScanInfo`]: the group's
//! tokens and which cached cells it reads), and its kernels are dispatched once per group
//! present. Pool cell lists follow the fixed layout, written each step (identical lists of
//! consecutive layers, whose pools hold the same cells, written once).

use super::encode::MAX_HEAD_DIM;
use super::kv::{GpuKvStore, GroupScan};
use crate::graph::RopeParams;
use crate::rope::rope_table;

/// Most workgroups per head of the split-K attention kernel (the partials are sized for it).
pub const ATTN_SPLITS: u32 = 16;
/// Sources per split-K workgroup before another split is used.
const ATTN_SPLIT_SOURCES: u32 = 256;

/// One sequence group's scan info for one attention node, as the kernels read it
/// ([`Self::WORDS`] words): which cached tokens to read — the positions `[lo, lo + n_scan)`
/// of the ring of `n_cells` cells at cell `base`, or, where `list` is not [`Self::NO_LIST`],
/// the `n_scan` pool cells listed at `list` in the step buffer as `(cell, position)` pairs,
/// followed by the cells of the group's own tokens — the split-K workgroups per head, 1 for a
/// store without values (whose values are the first `head_dim_v` elements of each key head),
/// and the group's tokens: `n_tok` from step token `tok0` (0 tokens: the group is absent this
/// step and its dispatches are skipped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanInfo {
    /// First cached position scanned (rings).
    pub lo: u32,
    /// Cached tokens scanned.
    pub n_scan: u32,
    /// Cells of the ring (rings).
    pub n_cells: u32,
    /// Split-K workgroups per head.
    pub n_split: u32,
    /// 1 when the store keeps no values.
    pub values_in_keys: u32,
    /// The group's first token in the step.
    pub tok0: u32,
    /// The group's tokens.
    pub n_tok: u32,
    /// The ring's first cell (rings).
    pub base: u32,
    /// Step-buffer offset of the pool's cell list, or [`Self::NO_LIST`] for a ring.
    pub list: u32,
}

impl ScanInfo {
    /// Words of one scan info in the step buffer.
    pub const WORDS: usize = 9;
    /// `list` of a ring.
    pub const NO_LIST: u32 = u32::MAX;

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
            base: w[7],
            list: w[8],
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
            self.base,
            self.list,
        ]);
    }
}

/// A pool sequence's `(position, cell)`s.
type PoolCells<'a> = &'a [(i32, u32)];

/// A sequence group of a step: its sequence and its tokens.
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

    /// Write the step's values into `host` (`len` words, then the pool cell lists it appends):
    /// `tokens` at `positions` in the sequence `groups` (at most [`Self::n_groups`]),
    /// attending over the stores `kv` (pools given the step's cells already), keeping
    /// `out_rows`.
    pub fn write(
        &self,
        host: &mut Vec<u32>,
        tokens: &[u32],
        positions: &[i32],
        groups: &[StepGroup],
        out_rows: &[u32],
        kv: &[GpuKvStore],
    ) {
        host.resize(self.len, 0);
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
        // Each group's last pool list and its offset, to write a list identical to it once.
        let mut last: Vec<Option<(PoolCells, u32)>> = vec![None; self.n_groups];
        for &(s, window, o) in &self.attention {
            let store = &kv[s as usize];
            for (j, last) in last.iter_mut().enumerate() {
                let Some((seq, r)) = groups.get(j) else {
                    let absent = ScanInfo {
                        n_cells: 1,
                        n_split: 1,
                        list: ScanInfo::NO_LIST,
                        ..ScanInfo::default()
                    };
                    absent.write(host, o + ScanInfo::WORDS * j);
                    continue;
                };
                let (tok0, n) = (r.start as u32, r.len() as u32);
                let values_in_keys = (store.v_width() == 0) as u32;
                let splits = |n_scan: u32| {
                    (n_scan + n)
                        .div_ceil(ATTN_SPLIT_SOURCES)
                        .clamp(1, ATTN_SPLITS)
                };
                let info = match store.group_scan(*seq, positions[r.start], window) {
                    GroupScan::Ring {
                        lo,
                        n: n_scan,
                        base,
                        ring,
                    } => ScanInfo {
                        lo,
                        n_scan,
                        n_cells: ring,
                        n_split: splits(n_scan),
                        values_in_keys,
                        tok0,
                        n_tok: n,
                        base,
                        list: ScanInfo::NO_LIST,
                    },
                    GroupScan::Pool(cells) => {
                        let n_scan = (cells.len() - r.len()) as u32;
                        let list = match *last {
                            Some((prev, at)) if prev == cells => at,
                            _ => {
                                let at = host.len() as u32;
                                host.extend(cells.iter().flat_map(|&(p, c)| [c, p as u32]));
                                *last = Some((cells, at));
                                at
                            }
                        };
                        ScanInfo {
                            lo: 0,
                            n_scan,
                            n_cells: store.n_cells() as u32,
                            n_split: splits(n_scan),
                            values_in_keys,
                            tok0,
                            n_tok: n,
                            base: 0,
                            list,
                        }
                    }
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
        assert_eq!(l.rope_table(q, None, 3), 39);
        assert_eq!(l.len, 63);
        assert_eq!(l.writes, [2]);
        assert_eq!(l.select_rows(2), 63);
        assert_eq!(l.len, 65);
    }
}
