//! Attention of one query head over a set of keys and values with their positions: causal,
//! optionally windowed, with an online softmax (running max and sum) so memory stays O(head).

use half::f16;

use crate::cpu::dot::{F16Ops, f16_ops};
use crate::graph::AttnParams;

/// The keys and values one step attends to, read in place as F16 (nothing is converted or
/// copied per step): source `j` is row `rows[j]` of the cache when `rows[j] < n_cells`, else
/// row `rows[j] - n_cells` of the batch's own K/V; each row holds all KV heads.
pub struct KvView<'a> {
    /// The store's keys, `n_cells × k_width`.
    pub cache_k: &'a [f16],
    /// The store's values, `n_cells × v_width`.
    pub cache_v: &'a [f16],
    /// The batch's keys, `n_tokens × k_width`.
    pub batch_k: &'a [f16],
    /// The batch's values, `n_tokens × v_width`.
    pub batch_v: &'a [f16],
    /// Cells in the store (rows at or past it are batch rows).
    pub n_cells: usize,
    /// Row of each source.
    pub rows: &'a [u32],
    /// Position of each source.
    pub positions: &'a [i32],
    /// Values are the first `head_dim_v` elements of each key head (a store without values:
    /// MLA's latent cache), not rows of their own.
    pub values_in_keys: bool,
}

impl KvView<'_> {
    /// Key row of source `j` (all KV heads, `width` elements).
    #[inline]
    pub(crate) fn key(&self, j: usize, width: usize) -> &[f16] {
        row(
            self.cache_k,
            self.batch_k,
            self.rows[j] as usize,
            self.n_cells,
            width,
        )
    }

    /// Value row of source `j` (all KV heads, `width` elements).
    #[inline]
    pub(crate) fn value(&self, j: usize, width: usize) -> &[f16] {
        row(
            self.cache_v,
            self.batch_v,
            self.rows[j] as usize,
            self.n_cells,
            width,
        )
    }
}

impl KvView<'_> {
    /// Key head `kvh` of source `j` (`head_dim` wide, of `n_head_kv` per row).
    #[inline]
    pub(crate) fn key_head(&self, j: usize, kvh: usize, p: &AttnParams) -> &[f16] {
        let dk = p.head_dim;
        &self.key(j, p.n_head_kv * dk)[kvh * dk..(kvh + 1) * dk]
    }

    /// Value head `kvh` of source `j` (`head_dim_v` wide): its own row's, or the first
    /// `head_dim_v` elements of the key head where values live in the keys.
    #[inline]
    pub(crate) fn value_head(&self, j: usize, kvh: usize, p: &AttnParams) -> &[f16] {
        let (dk, dv) = (p.head_dim, p.head_dim_v);
        if self.values_in_keys {
            &self.key(j, p.n_head_kv * dk)[kvh * dk..kvh * dk + dv]
        } else {
            &self.value(j, p.n_head_kv * dv)[kvh * dv..(kvh + 1) * dv]
        }
    }
}

#[inline]
fn row<'a>(cache: &'a [f16], batch: &'a [f16], r: usize, n_cells: usize, w: usize) -> &'a [f16] {
    if r < n_cells {
        &cache[r * w..(r + 1) * w]
    } else {
        let r = r - n_cells;
        &batch[r * w..(r + 1) * w]
    }
}

pub use crate::cpu::dot::visible;

/// Most query heads [`attend_group`] takes at once.
pub const MAX_GROUP_HEADS: usize = 4;

/// `out_h = Σ softmax(scale·q_h·k_j) v_j` over the visible sources of KV head `kvh`, for
/// `g = q.len() / head_dim ≤ MAX_GROUP_HEADS` query heads of one token that share it (`q`:
/// `g × head_dim`, `out`: `g × head_dim_v`; `g = 1` for a single head), with the run-time
/// dispatched F16 kernels ([`f16_ops`]). Each key and value is loaded and converted once for
/// all the heads, and every head's output is bit for bit what it gets alone. A query with no
/// visible key gets zeros.
pub fn attend_group(
    q: &[f32],
    pq: i32,
    kvh: usize,
    kv: &KvView<'_>,
    p: &AttnParams,
    sinks: Option<&[f32]>,
    out: &mut [f32],
) {
    attend_group_with(f16_ops(), q, pq, kvh, kv, p, sinks, out)
}

/// [`attend_group`] with the given F16 kernels (the tests compare SIMD with scalar).
#[allow(clippy::too_many_arguments)]
pub fn attend_group_with(
    ops: &F16Ops,
    q: &[f32],
    pq: i32,
    kvh: usize,
    kv: &KvView<'_>,
    p: &AttnParams,
    sinks: Option<&[f32]>,
    out: &mut [f32],
) {
    let (dk, dv) = (p.head_dim, p.head_dim_v);
    let g = q.len() / dk;
    assert!(
        (1..=MAX_GROUP_HEADS).contains(&g) && q.len() == g * dk && out.len() == g * dv,
        "1 to {MAX_GROUP_HEADS} whole query heads and their outputs"
    );
    out.fill(0.0);
    let mut max = [f32::NEG_INFINITY; MAX_GROUP_HEADS];
    let mut sum = [0.0f32; MAX_GROUP_HEADS];
    // The visible sources in chunks: their scores, then one exp pass (vectorised) and one
    // rescale of the output per chunk whose maximum is new, instead of one per key.
    let mut scores = [0.0f32; MAX_GROUP_HEADS * CHUNK];
    let mut keys: [&[f16]; CHUNK] = [&[]; CHUNK];
    let mut src = [0u32; CHUNK];
    let mut n = 0;
    let mut flush = |keys: &[&[f16]], src: &[u32], out: &mut [f32]| {
        let n = keys.len();
        (ops.dots)(q, dk, keys, &mut scores, CHUNK);
        for h in 0..g {
            let s = &mut scores[h * CHUNK..h * CHUNK + n];
            for x in s.iter_mut() {
                *x *= p.scale;
                if let Some(c) = p.softcap {
                    *x = c * (*x / c).tanh();
                }
            }
            let cmax = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            if cmax > max[h] {
                if max[h] > f32::NEG_INFINITY {
                    // Rescale what has been accumulated to the new maximum.
                    let r = (max[h] - cmax).exp();
                    sum[h] *= r;
                    for o in out[h * dv..(h + 1) * dv].iter_mut() {
                        *o *= r;
                    }
                }
                max[h] = cmax;
            }
            sum[h] += (ops.exp_sum)(s, max[h]);
        }
        let mut values: [&[f16]; CHUNK] = [&[]; CHUNK];
        for (v, &j) in values.iter_mut().zip(src) {
            *v = kv.value_head(j as usize, kvh, p);
        }
        (ops.wsums)(out, dv, &scores, CHUNK, &values[..n]);
    };
    for (j, &pk) in kv.positions.iter().enumerate() {
        if !visible(pq, pk, p.window) {
            continue;
        }
        keys[n] = kv.key_head(j, kvh, p);
        src[n] = j as u32;
        n += 1;
        if n == CHUNK {
            flush(&keys, &src, out);
            n = 0;
        }
    }
    if n > 0 {
        flush(&keys[..n], &src[..n], out);
    }
    for (h, out) in out.chunks_exact_mut(dv).enumerate() {
        finish_head(out, max[h], sum[h], sinks.map(|s| s[h]));
    }
}

/// Normalise one head's output `out` (`Σ exp(s − max)·v` over its keys, whose weights sum
/// to `sum`): the attention sink's logit, if any, joins the denominator with no value,
/// folded in after the keys as ggml's flash attention does; then `out /= sum`. A head that
/// saw no key (`sum` 0) keeps its zeros.
pub(crate) fn finish_head(out: &mut [f32], max: f32, mut sum: f32, sink: Option<f32>) {
    if let Some(s) = sink {
        if s > max {
            let ms = (max - s).exp();
            for o in out.iter_mut() {
                *o *= ms;
            }
            sum = sum * ms + 1.0;
        } else {
            sum += (s - max).exp();
        }
    }
    if sum > 0.0 {
        let inv = 1.0 / sum;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

/// Sources per softmax chunk (scores on the stack).
const CHUNK: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_softmax_with_gqa_and_window() {
        let p = AttnParams {
            n_head: 4,
            n_head_kv: 2,
            head_dim: 8,
            head_dim_v: 8,
            scale: 0.35,
            window: Some(5),
            softcap: None,
        };
        let n_src = 9;
        let f = |i: usize| ((i * 2654435761) % 1000) as f32 / 500.0 - 1.0;
        // Values exact in F16, so the naive f64 reference sees the same numbers.
        let h = |x: f32| f16::from_f32(x).to_f32();
        let keys: Vec<f32> = (0..n_src * 16).map(|i| h(f(i))).collect();
        let values: Vec<f32> = (0..n_src * 16).map(|i| h(f(i + 77))).collect();
        let (k16, v16): (Vec<f16>, Vec<f16>) = (
            keys.iter().map(|&x| f16::from_f32(x)).collect(),
            values.iter().map(|&x| f16::from_f32(x)).collect(),
        );
        let positions: Vec<i32> = (0..n_src as i32).collect();
        // The first 5 sources from the "cache" (in reverse cell order), the rest from the batch.
        let cache_k: Vec<f16> = (0..5)
            .rev()
            .flat_map(|j| k16[j * 16..(j + 1) * 16].to_vec())
            .collect();
        let cache_v: Vec<f16> = (0..5)
            .rev()
            .flat_map(|j| v16[j * 16..(j + 1) * 16].to_vec())
            .collect();
        let rows: Vec<u32> = (0..n_src as u32)
            .map(|j| if j < 5 { 4 - j } else { j })
            .collect();
        let kv = KvView {
            cache_k: &cache_k,
            cache_v: &cache_v,
            batch_k: &k16[5 * 16..],
            batch_v: &v16[5 * 16..],
            n_cells: 5,
            rows: &rows,
            positions: &positions,
            values_in_keys: false,
        };
        let q: Vec<f32> = (0..8).map(|i| f(i + 5)).collect();
        for h in 0..4 {
            let kvh = h / 2;
            let pq = 7;
            let mut out = vec![0.0; 8];
            attend_group(&q, pq, kvh, &kv, &p, None, &mut out);
            let mut scalar = vec![0.0; 8];
            attend_group_with(
                &crate::cpu::dot::F16_SCALAR,
                &q,
                pq,
                kvh,
                &kv,
                &p,
                None,
                &mut scalar,
            );
            let num: f64 = out
                .iter()
                .zip(&scalar)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            let den: f64 = scalar.iter().map(|&b| (b as f64).powi(2)).sum();
            assert!(num / den <= 1e-6, "SIMD vs scalar NMSE {}", num / den);
            // naive
            let js: Vec<usize> = (0..n_src)
                .filter(|&j| j as i32 <= pq && pq - (j as i32) < 5)
                .collect();
            let s: Vec<f64> = js
                .iter()
                .map(|&j| {
                    (0..8)
                        .map(|d| q[d] as f64 * keys[j * 16 + kvh * 8 + d] as f64)
                        .sum::<f64>()
                        * 0.35
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            for d in 0..8 {
                let want: f64 = js
                    .iter()
                    .zip(&s)
                    .map(|(&j, x)| (x - m).exp() / z * values[j * 16 + kvh * 8 + d] as f64)
                    .sum();
                assert!((out[d] as f64 - want).abs() < 1e-5);
            }
            // An attention sink joins the denominator with no value (both of ggml's
            // branches: a sink above the scores' maximum and one below).
            for sink in [0.7f32, 40.0, -30.0] {
                let mut sunk = vec![0.0; 8];
                attend_group(&q, pq, kvh, &kv, &p, Some(&[sink]), &mut sunk);
                let m2 = m.max(sink as f64);
                let z2: f64 =
                    s.iter().map(|x| (x - m2).exp()).sum::<f64>() + (sink as f64 - m2).exp();
                for d in 0..8 {
                    let want: f64 = js
                        .iter()
                        .zip(&s)
                        .map(|(&j, x)| (x - m2).exp() / z2 * values[j * 16 + kvh * 8 + d] as f64)
                        .sum();
                    assert!(
                        (sunk[d] as f64 - want).abs() < 1e-5,
                        "sink {sink}: {} vs {want}",
                        sunk[d]
                    );
                }
            }
        }
    }

    /// Heads that share a KV head, attended together, get bit for bit what each gets alone
    /// (SIMD and scalar kernels; groups of 1 to 4; several softmax chunks; a window).
    #[test]
    fn grouped_heads_match_single_heads_bitwise() {
        let f = |i: usize| ((i * 2654435761) % 1000) as f32 / 500.0 - 1.0;
        for (dk, g) in [(64, 3), (256, 4), (24, 2), (40, 1)] {
            let p = AttnParams {
                n_head: 2 * g,
                n_head_kv: 2,
                head_dim: dk,
                head_dim_v: dk,
                scale: 0.2,
                window: Some(300),
                softcap: None,
            };
            let n_src = CHUNK + 77;
            let kw = 2 * dk;
            let keys: Vec<f16> = (0..n_src * kw)
                .map(|i| f16::from_f32(f(i) + (i / kw) as f32 / 300.0))
                .collect();
            let values: Vec<f16> = (0..n_src * kw).map(|i| f16::from_f32(f(i + 5))).collect();
            let positions: Vec<i32> = (0..n_src as i32).collect();
            let rows: Vec<u32> = (0..n_src as u32).collect();
            let kv = KvView {
                cache_k: &keys,
                cache_v: &values,
                batch_k: &[],
                batch_v: &[],
                n_cells: n_src,
                rows: &rows,
                positions: &positions,
                values_in_keys: false,
            };
            let q: Vec<f32> = (0..g * dk).map(|i| f(i + 11)).collect();
            for ops in [crate::cpu::dot::f16_ops(), &crate::cpu::dot::F16_SCALAR] {
                let mut grouped = vec![f32::NAN; g * dk];
                attend_group_with(ops, &q, n_src as i32 - 3, 1, &kv, &p, None, &mut grouped);
                for h in 0..g {
                    let mut alone = vec![f32::NAN; dk];
                    let qh = &q[h * dk..(h + 1) * dk];
                    attend_group_with(ops, qh, n_src as i32 - 3, 1, &kv, &p, None, &mut alone);
                    for (d, (a, b)) in grouped[h * dk..].iter().zip(&alone).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{:?} d{dk} g{g} head {h} dim {d}",
                            ops.isa
                        );
                    }
                }
            }
        }
    }

    /// Many sources (several softmax chunks, with later chunks holding larger scores so the
    /// output is rescaled), SIMD and scalar kernels against an f64 softmax.
    #[test]
    fn chunked_softmax_matches_naive_over_many_sources() {
        let p = AttnParams {
            n_head: 1,
            n_head_kv: 1,
            head_dim: 16,
            head_dim_v: 16,
            scale: 0.25,
            window: None,
            softcap: Some(30.0),
        };
        let n_src = 3 * CHUNK + 37;
        let f = |i: usize| ((i * 2654435761) % 1000) as f32 / 500.0 - 1.0;
        // Keys grow along the sources, so the maximum score keeps moving to later chunks.
        let keys: Vec<f16> = (0..n_src * 16)
            .map(|i| f16::from_f32(f(i) + (i / 16) as f32 / 200.0))
            .collect();
        let values: Vec<f16> = (0..n_src * 16).map(|i| f16::from_f32(f(i + 9))).collect();
        let positions: Vec<i32> = (0..n_src as i32).collect();
        let rows: Vec<u32> = (0..n_src as u32).collect();
        let kv = KvView {
            cache_k: &keys,
            cache_v: &values,
            batch_k: &[],
            batch_v: &[],
            n_cells: n_src,
            rows: &rows,
            positions: &positions,
            values_in_keys: false,
        };
        let q: Vec<f32> = (0..16).map(|i| 1.0 + f(i + 3) / 4.0).collect();
        let pq = n_src as i32;
        let s: Vec<f64> = (0..n_src)
            .map(|j| {
                let d: f64 = (0..16)
                    .map(|d| q[d] as f64 * keys[j * 16 + d].to_f64())
                    .sum();
                30.0 * (d * 0.25 / 30.0).tanh()
            })
            .collect();
        let m = s.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
        for ops in [crate::cpu::dot::f16_ops(), &crate::cpu::dot::F16_SCALAR] {
            let mut out = vec![0.0; 16];
            attend_group_with(ops, &q, pq, 0, &kv, &p, None, &mut out);
            for d in 0..16 {
                let want: f64 = (0..n_src)
                    .map(|j| (s[j] - m).exp() / z * values[j * 16 + d].to_f64())
                    .sum();
                assert!(
                    (out[d] as f64 - want).abs() < 1e-5,
                    "{:?} dim {d}: {} vs {want}",
                    ops.isa,
                    out[d]
                );
            }
        }
    }
}
