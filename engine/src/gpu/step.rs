//! The step buffer: the per-step values the kernels read (token ids, positions, RoPE tables,
//! attention scan ranges), laid out once when a graph is prepared and written by the host
//! before every step.

use super::encode::MAX_HEAD_DIM;
use super::kv::GpuKvStore;
use crate::graph::RopeParams;
use crate::rope::rope_table;

/// Most workgroups per head of the split-K attention kernel (the partials are sized for it).
pub const ATTN_SPLITS: u32 = 16;
/// Sources per split-K workgroup before another split is used.
const ATTN_SPLIT_SOURCES: u32 = 256;

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
    /// Per attention node: KV store, window and the offset of
    /// `[lo, n_scan, n_cells, n_split, values_in_keys]` (the last 1 for a store without
    /// values, whose values are the first `head_dim_v` elements of each key head).
    pub attention: Vec<(u32, Option<u32>, usize)>,
    /// KV stores the step writes.
    pub writes: Vec<u32>,
    /// Words in all.
    pub len: usize,
}

impl StepLayout {
    /// The token ids and positions of `n_tok` tokens, nothing else yet.
    pub fn new(n_tok: usize) -> StepLayout {
        StepLayout {
            tokens: 0,
            positions: n_tok,
            len: 2 * n_tok,
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

    /// Reserve the scan info of an attention node over KV store `kv` (which the step also
    /// writes) and return its offset.
    pub fn attention_info(&mut self, kv: u32, window: Option<u32>) -> usize {
        let info = self.len;
        self.len += 5;
        self.attention.push((kv, window, info));
        self.writes.push(kv);
        info
    }

    /// Write the step's values into `host` (`len` words): `tokens` at `positions`, attending
    /// over the stores `kv`.
    pub fn write(&self, host: &mut [u32], tokens: &[u32], positions: &[i32], kv: &[GpuKvStore]) {
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
            let store = &kv[s as usize];
            let (lo, n) = store.scan_range(positions[0], window);
            host[o] = lo;
            host[o + 1] = n;
            host[o + 2] = store.n_cells() as u32;
            host[o + 3] = (n + n_tok as u32)
                .div_ceil(ATTN_SPLIT_SOURCES)
                .clamp(1, ATTN_SPLITS);
            host[o + 4] = (store.v_width() == 0) as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::RopeMode;

    #[test]
    fn tables_and_scan_infos_follow_the_tokens() {
        let mut l = StepLayout::new(3);
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
        assert_eq!(l.rope_table(q, None, 3), 35);
        assert_eq!(l.len, 59);
        assert_eq!(l.writes, [2]);
    }
}
