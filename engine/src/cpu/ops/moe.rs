//! Mixture-of-experts kernels: the router (scores, top-k choice, weights) of one row, and the
//! weighted sum of one row's expert outputs. The expert products themselves are mat-muls
//! the executor runs per expert (see `CpuExecutor`'s `mat_mul_id`).

use crate::graph::{ExpertGating, ExpertGroups, MAX_EXPERTS, RouteParams};

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
    // The choice: the k best scores (with the bias, when there is one), among the experts
    // of the best groups when the routing is group-limited.
    let mut scores = [0f32; MAX_EXPERTS];
    let scores = &mut scores[..n];
    for (e, s) in scores.iter_mut().enumerate() {
        *s = probs[e] + bias.map_or(0.0, |b| b[e]);
    }
    if let Some(groups) = p.groups {
        limit_to_groups(scores, groups);
    }
    let (ids, weights) = out.split_at_mut(k);
    let mut chosen = [0usize; crate::graph::MAX_EXPERTS_USED];
    for j in 0..k {
        let e = arg_best(scores, |e| chosen[..j].contains(&e)).expect("k ≤ n experts");
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

/// The index of the best of `scores` not `skipped`: the largest, a number over a NaN, the
/// lower index on ties (and among NaNs); `None` when every index is skipped.
fn arg_best(scores: &[f32], skipped: impl Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &s) in scores.iter().enumerate() {
        if skipped(i) {
            continue;
        }
        if best.is_none_or(|b| s > scores[b] || scores[b].is_nan() && !s.is_nan()) {
            best = Some(i);
        }
    }
    best
}

/// Group-limited routing (llama.cpp's `n_expert_groups`): each group of consecutive experts
/// scores the sum of its two best choice `scores` (best first); the experts of all but the
/// `groups.n_used` best groups get a choice score of −∞.
fn limit_to_groups(scores: &mut [f32], groups: ExpertGroups) {
    let size = groups.group_size(scores.len());
    let mut group_scores = [0f32; MAX_EXPERTS / 2];
    let group_scores = &mut group_scores[..groups.n_group];
    for (g, gs) in group_scores.iter_mut().enumerate() {
        let part = &scores[g * size..(g + 1) * size];
        let first = arg_best(part, |_| false).expect("groups of at least two");
        let second = arg_best(part, |i| i == first).expect("groups of at least two");
        *gs = part[first] + part[second];
    }
    let mut kept = [false; MAX_EXPERTS / 2];
    for _ in 0..groups.n_used {
        let g = arg_best(group_scores, |g| kept[g]).expect("fewer used than groups");
        kept[g] = true;
    }
    for (g, part) in scores.chunks_exact_mut(size).enumerate() {
        if !kept[g] {
            part.fill(f32::NEG_INFINITY);
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
            groups: None,
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

    fn grouped(n_used: usize, n_group: usize, n_group_used: usize) -> RouteParams {
        RouteParams {
            groups: Some(ExpertGroups {
                n_group,
                n_used: n_group_used,
            }),
            ..params(n_used, ExpertGating::SoftmaxWeight, false)
        }
    }

    // Hand-computed (softmax-weight gating: the scores are the logits). Groups of two:
    // scores 0, 6, 4, 2.5, so groups 1 and 2 are kept; expert 0, the best alone, is not
    // eligible; experts 2 and 3 tie and the lower id goes first. Without the groups the
    // choice would be experts 0 and 4 (checked: removing `limit_to_groups` fails this test).
    #[test]
    fn groups_keep_only_the_best_groups_experts() {
        let logits = [5.0, -5.0, 3.0, 3.0, 4.0, 0.0, 1.0, 1.5];
        let mut out = [0f32; 6];
        route_row(&logits, None, &grouped(3, 4, 2), &mut out);
        assert_eq!(&out[..3], &[4.0, 2.0, 3.0]);
        route_row(
            &logits,
            None,
            &params(3, ExpertGating::SoftmaxWeight, false),
            &mut out,
        );
        assert_eq!(&out[..3], &[0.0, 4.0, 2.0]);
    }

    // Groups of four: a group scores its best two (3 + 3 = 6 against 4 + 1 = 5), not its best
    // one (3 against 4) nor all of them (−14 against 6).
    #[test]
    fn a_group_scores_the_sum_of_its_best_two() {
        let logits = [3.0, -10.0, 3.0, -10.0, 0.5, 4.0, 1.0, 0.5];
        let mut out = [0f32; 4];
        route_row(&logits, None, &grouped(2, 2, 1), &mut out);
        assert_eq!(&out[..2], &[0.0, 2.0]);
    }

    // The groups are scored with the choice bias; the weights stay the unbiased sigmoids.
    // Without the bias group 0 (sigmoids 0.5 + 0.62 against 0.38 + 0.56) would win.
    #[test]
    fn groups_are_scored_with_the_choice_bias() {
        let logits = [0.0, 0.5, -0.5, 0.25];
        let bias = [0.0, 0.0, 1.0, 0.0];
        let mut out = [0f32; 2];
        let p = RouteParams {
            gating: ExpertGating::Sigmoid,
            ..grouped(1, 2, 1)
        };
        route_row(&logits, Some(&bias), &p, &mut out);
        assert_eq!(out[0], 2.0);
        assert!((out[1] - 1.0 / (1.0 + 0.5f32.exp())).abs() < 1e-6);
        route_row(&logits, None, &p, &mut out);
        assert_eq!(out[0], 1.0);
    }

    // Equal group scores: the lower group is kept; a NaN score never makes a group best.
    #[test]
    fn group_ties_go_to_the_lower_group_and_nans_lose() {
        let mut out = [0f32; 2];
        route_row(&[1.0, 1.0, 2.0, 0.0], None, &grouped(1, 2, 1), &mut out);
        assert_eq!(out[0], 0.0);
        route_row(
            &[f32::NAN, 1.0, -2.0, 0.0],
            None,
            &grouped(1, 2, 1),
            &mut out,
        );
        assert_eq!(out[0], 3.0);
    }

    #[test]
    fn group_settings_are_checked() {
        let g = |n_group, n_used| ExpertGroups { n_group, n_used };
        assert!(g(8, 4).check(256, 8).is_ok());
        assert!(g(4, 2).check(16, 4).is_ok());
        for (bad, n_expert, n_used, says) in [
            (g(1, 1), 16, 2, "divide"),
            (g(3, 1), 16, 2, "divide"),
            (g(16, 1), 16, 1, "at least two experts"),
            (g(4, 0), 16, 2, "more than 0"),
            (g(4, 4), 16, 2, "fewer than the 4 groups"),
            (g(4, 1), 16, 5, "fewer than the 5 experts"),
        ] {
            let e = bad.check(n_expert, n_used).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
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
