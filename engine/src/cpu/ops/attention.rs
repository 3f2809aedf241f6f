//! Attention of one query head over a set of keys and values with their positions: causal,
//! optionally windowed, with an online softmax (running max and sum) so memory stays O(head).

use crate::graph::AttnParams;

/// Keys and values gathered for one step, in f32, row `j` holding all KV heads of source `j`.
pub struct KvView<'a> {
    /// `n_src × (n_head_kv·head_dim)` keys.
    pub keys: &'a [f32],
    /// `n_src × (n_head_kv·head_dim_v)` values.
    pub values: &'a [f32],
    /// Position of each source row.
    pub positions: &'a [i32],
}

/// Whether a key at `pk` is visible from a query at `pq`.
#[inline]
pub fn visible(pq: i32, pk: i32, window: Option<u32>) -> bool {
    pk >= 0 && pk <= pq && window.is_none_or(|w| ((pq - pk) as i64) < w as i64)
}

/// `out = Σ softmax(scale·q·k_j) v_j` over the visible sources of KV head `kvh`.
/// A query with no visible key gets zeros.
pub fn attend_head(
    q: &[f32],
    pq: i32,
    kvh: usize,
    kv: &KvView<'_>,
    p: &AttnParams,
    out: &mut [f32],
) {
    let (dk, dv) = (p.head_dim, p.head_dim_v);
    let kw = p.n_head_kv * dk;
    let vw = p.n_head_kv * dv;
    out.fill(0.0);
    let mut max = f32::NEG_INFINITY;
    let mut sum = 0.0f32;
    for (j, &pk) in kv.positions.iter().enumerate() {
        if !visible(pq, pk, p.window) {
            continue;
        }
        let k = &kv.keys[j * kw + kvh * dk..j * kw + (kvh + 1) * dk];
        let mut s = dot(q, k) * p.scale;
        if let Some(c) = p.softcap {
            s = c * (s / c).tanh();
        }
        let v = &kv.values[j * vw + kvh * dv..j * vw + (kvh + 1) * dv];
        if s > max {
            // Rescale what has been accumulated to the new maximum.
            let r = (max - s).exp();
            sum *= r;
            for o in out.iter_mut() {
                *o *= r;
            }
            max = s;
        }
        let w = (s - max).exp();
        sum += w;
        for (o, &x) in out.iter_mut().zip(v) {
            *o += w * x;
        }
    }
    if sum > 0.0 {
        let inv = 1.0 / sum;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

/// Plain dot product (the compiler vectorises it).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

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
        let keys: Vec<f32> = (0..n_src * 16).map(f).collect();
        let values: Vec<f32> = (0..n_src * 16).map(|i| f(i + 77)).collect();
        let positions: Vec<i32> = (0..n_src as i32).collect();
        let kv = KvView {
            keys: &keys,
            values: &values,
            positions: &positions,
        };
        let q: Vec<f32> = (0..8).map(|i| f(i + 5)).collect();
        for h in 0..4 {
            let kvh = h / 2;
            let pq = 7;
            let mut out = vec![0.0; 8];
            attend_head(&q, pq, kvh, &kv, &p, &mut out);
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
        }
    }
}
