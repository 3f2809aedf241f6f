//! Mixture-of-experts kernels: the router (scores, top-k choice, weights) of one row, and the
//! weighted sum of one row's expert outputs. The expert products themselves are mat-muls
//! the executor runs per expert (see `CpuExecutor`'s `mat_mul_id`).

use crate::graph::{ExpertGating, MAX_EXPERTS, RouteParams};

/// Smallest sum of weights a normalisation divides by (llama.cpp clamps it to F16's smallest
/// normal number).
const MIN_WEIGHT_SUM: f32 = 6.103_515_6e-5;

/// Route one row: `logits` (one per expert), an optional choice bias, and `out` of
/// `2·n_used` values: the chosen experts' ids (as f32, best first; ties go to the lower id)
/// then their weights.
pub fn route_row(logits: &[f32], bias: Option<&[f32]>, p: &RouteParams, out: &mut [f32]) {
    let n = logits.len();
    let k = p.n_used;
    debug_assert!(n <= MAX_EXPERTS && k <= n && out.len() == 2 * k);
    let mut probs = [0f32; MAX_EXPERTS];
    let probs = &mut probs[..n];
    match p.gating {
        ExpertGating::Softmax => softmax(logits, probs),
        ExpertGating::Sigmoid => {
            for (p, &l) in probs.iter_mut().zip(logits) {
                *p = 1.0 / (1.0 + (-l).exp());
            }
        }
        ExpertGating::SoftmaxWeight => probs.copy_from_slice(logits),
    }
    // The choice: the k best scores (with the bias, when there is one).
    let score = |e: usize| probs[e] + bias.map_or(0.0, |b| b[e]);
    let (ids, weights) = out.split_at_mut(k);
    let mut chosen = [0usize; crate::graph::MAX_EXPERTS_USED];
    for j in 0..k {
        let mut best: Option<usize> = None;
        for e in 0..n {
            if chosen[..j].contains(&e) {
                continue;
            }
            // A NaN score is never chosen over a number.
            if best.is_none_or(|b| score(e) > score(b) || score(b).is_nan() && !score(e).is_nan()) {
                best = Some(e);
            }
        }
        let e = best.expect("k ≤ n experts");
        chosen[j] = e;
        ids[j] = e as f32;
        weights[j] = probs[e];
    }
    if p.gating == ExpertGating::SoftmaxWeight {
        let mut w = [0f32; crate::graph::MAX_EXPERTS_USED];
        softmax(weights, &mut w[..k]);
        weights.copy_from_slice(&w[..k]);
    }
    if p.norm {
        let sum: f32 = weights.iter().sum::<f32>().max(MIN_WEIGHT_SUM);
        for w in weights.iter_mut() {
            *w /= sum;
        }
    }
    if p.scale != 1.0 {
        for w in weights.iter_mut() {
            *w *= p.scale;
        }
    }
}

/// `out = softmax(x)`, with the maximum subtracted first.
fn softmax(x: &[f32], out: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - max).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// The experts a routed row chose (`route` holds ids then weights).
pub fn route_ids(route: &[f32]) -> impl Iterator<Item = usize> + '_ {
    route[..route.len() / 2].iter().map(|&e| e as usize)
}

/// `out = Σ_j w_j · x_j` over the `n_used` parts of `x` (each `out.len()` wide), in order:
/// the first product, then each next one added (llama.cpp's order).
pub fn weighted_sum_row(x: &[f32], route: &[f32], out: &mut [f32]) {
    let k = route.len() / 2;
    let n = out.len();
    let weights = &route[k..];
    for (o, &v) in out.iter_mut().zip(&x[..n]) {
        *o = v * weights[0];
    }
    for (j, &w) in weights.iter().enumerate().skip(1) {
        for (o, &v) in out.iter_mut().zip(&x[j * n..(j + 1) * n]) {
            *o += v * w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(n_used: usize, gating: ExpertGating, norm: bool) -> RouteParams {
        RouteParams {
            n_used,
            gating,
            norm,
            scale: 1.0,
        }
    }

    #[test]
    fn softmax_routing_picks_the_largest_logits_and_renormalises() {
        let logits = [0.1, 2.0, -1.0, 1.5, 0.0];
        let mut out = [0f32; 4];
        route_row(
            &logits,
            None,
            &params(2, ExpertGating::Softmax, false),
            &mut out,
        );
        assert_eq!(&out[..2], &[1.0, 3.0]);
        let z: f32 = logits.iter().map(|l: &f32| l.exp()).sum();
        assert!((out[2] - 2f32.exp() / z).abs() < 1e-6);
        assert!((out[3] - 1.5f32.exp() / z).abs() < 1e-6);
        route_row(
            &logits,
            None,
            &params(2, ExpertGating::Softmax, true),
            &mut out,
        );
        let s = 2f32.exp() + 1.5f32.exp();
        assert!((out[2] - 2f32.exp() / s).abs() < 1e-6);
        assert!((out[2] + out[3] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_choice_bias_moves_the_choice_not_the_weights() {
        let logits = [0.0, 1.0, 0.5];
        let bias = [0.0, -2.0, 0.0];
        let mut out = [0f32; 2];
        route_row(
            &logits,
            Some(&bias),
            &params(1, ExpertGating::Sigmoid, false),
            &mut out,
        );
        assert_eq!(out[0], 2.0);
        assert!((out[1] - 1.0 / (1.0 + (-0.5f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn softmax_weight_gating_weighs_only_the_chosen() {
        let logits = [3.0, 1.0, 2.0];
        let mut out = [0f32; 4];
        route_row(
            &logits,
            None,
            &params(2, ExpertGating::SoftmaxWeight, false),
            &mut out,
        );
        assert_eq!(&out[..2], &[0.0, 2.0]);
        let s = 3f32.exp() + 2f32.exp();
        assert!((out[2] - 3f32.exp() / s).abs() < 1e-6);
        assert!((out[3] - 2f32.exp() / s).abs() < 1e-6);
    }

    #[test]
    fn nan_logits_are_not_chosen_over_numbers() {
        let logits = [f32::NAN, 0.5, 0.25];
        let mut out = [0f32; 2];
        route_row(
            &logits,
            None,
            &params(1, ExpertGating::SoftmaxWeight, false),
            &mut out,
        );
        assert_eq!(out[0], 1.0);
    }

    #[test]
    fn the_weighted_sum_adds_parts_in_route_order() {
        let x = [1.0, 2.0, 10.0, 20.0, 100.0, 200.0];
        let route = [4.0, 1.0, 0.0, 0.5, 0.25, 0.125];
        let mut out = [0f32; 2];
        weighted_sum_row(&x, &route, &mut out);
        assert_eq!(out, [0.5 + 2.5 + 12.5, 1.0 + 5.0 + 25.0]);
        assert_eq!(route_ids(&route).collect::<Vec<_>>(), [4, 1, 0]);
    }
}
