// Mixture-of-experts router, one workgroup per row of logits, as engine/src/cpu/ops/moe.rs
// computes it: scores from the logits (softmax over all experts, a sigmoid each, or the logits
// themselves for softmax-weight gating), then `n_used` rounds of choosing the best score not yet
// chosen (plus the optional choice bias; ties go to the lower id, a NaN is never chosen over a
// number), each round an arg-max over the workgroup; with expert groups (DeepSeek-V3), only
// among the experts of the `n_group_used` best groups (a group scores the sum of its two best
// choice scores; the others' choice scores are -inf); then the chosen scores as weights (softmax
// over the chosen ones for softmax-weight gating), divided by their sum (at least 2⁻¹⁴) when
// normalising, and scaled. Sums run in expert order in one invocation, as on the CPU. Output
// row: the ids as f32, then the weights.

// `MoeRouteUniforms` and the `GATING_*` codes: declared by the host from
// engine/src/gpu/params.rs, prepended.
@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<uniform> P: MoeRouteUniforms;

const WG: u32 = 64u;
// graph::MAX_EXPERTS and MAX_EXPERTS_USED.
const MAX_EXPERTS: u32 = 1024u;
const MAX_USED: u32 = 64u;
const MIN_WEIGHT_SUM: f32 = 6.1035156e-5;

var<workgroup> probs: array<f32, 1024>;
var<workgroup> taken: array<u32, 1024>;
var<workgroup> best_s: array<f32, 64>;
var<workgroup> best_e: array<u32, 64>;
var<workgroup> chosen: array<u32, 64>;
// Group-limited routing: each group's score, and 1 for the groups kept.
var<workgroup> group_score: array<f32, 512>;
var<workgroup> group_kept: array<u32, 512>;
var<workgroup> shared_max: f32;
var<workgroup> shared_sum: f32;

fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// Whether expert `a` with score `sa` beats `b` with `sb` (`b` = MAX_EXPERTS: none yet): the
// larger score, a number over a NaN, the lower id on ties (and among NaNs).
fn beats(sa: f32, a: u32, sb: f32, b: u32) -> bool {
    if (a >= MAX_EXPERTS) {
        return false;
    }
    if (b >= MAX_EXPERTS) {
        return true;
    }
    let na = is_nan(sa);
    let nb = is_nan(sb);
    if (na != nb) {
        return nb;
    }
    if (na || sa == sb) {
        return a < b;
    }
    return sa > sb;
}

// The choice score of expert `e` before the groups: its score plus the bias.
fn choice_score(e: u32) -> f32 {
    var s = probs[e];
    if (P.has_bias != 0u) {
        s += bitcast<f32>(W[e]);
    }
    return s;
}

// The choice score of expert `e`: -inf outside the kept groups.
fn score(e: u32) -> f32 {
    if (P.n_group > 1u && group_kept[e / (P.n_expert / P.n_group)] == 0u) {
        return bitcast<f32>(0xff800000u);
    }
    return choice_score(e);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.x + wg.y * P.grid_x;
    if (row >= P.n_rows) {
        return;
    }
    let n = min(P.n_expert, MAX_EXPERTS);
    let k = min(P.n_used, MAX_USED);
    let l0 = P.logits_off + row * P.n_expert;
    // Scores.
    if (P.gating == GATING_SOFTMAX && lid.x == 0u) {
        // The maximum ignoring NaNs (f32::max), then the sum in expert order.
        var m = bitcast<f32>(0xff800000u);
        for (var e = 0u; e < n; e++) {
            let v = A[l0 + e];
            if (!is_nan(v) && v > m) {
                m = v;
            }
        }
        var sum = 0.0;
        for (var e = 0u; e < n; e++) {
            sum += exp(A[l0 + e] - m);
        }
        shared_max = m;
        shared_sum = sum;
    }
    workgroupBarrier();
    let m = shared_max;
    let sum = shared_sum;
    for (var e = lid.x; e < n; e += WG) {
        let v = A[l0 + e];
        var p = v;
        if (P.gating == GATING_SOFTMAX) {
            p = exp(v - m) / sum;
        } else if (P.gating == GATING_SIGMOID) {
            p = 1.0 / (1.0 + exp(-v));
        }
        probs[e] = p;
        taken[e] = 0u;
    }
    workgroupBarrier();
    // Group-limited routing: each group's best two choice scores summed (best first), one
    // group per invocation; then the best `n_group_used` groups kept, by one invocation.
    if (P.n_group > 1u) {
        let size = n / P.n_group;
        for (var g = lid.x; g < P.n_group; g += WG) {
            var s1 = 0.0;
            var e1 = MAX_EXPERTS;
            for (var e = g * size; e < (g + 1u) * size; e++) {
                let s = choice_score(e);
                if (beats(s, e, s1, e1)) {
                    s1 = s;
                    e1 = e;
                }
            }
            var s2 = 0.0;
            var e2 = MAX_EXPERTS;
            for (var e = g * size; e < (g + 1u) * size; e++) {
                let s = choice_score(e);
                if (e != e1 && beats(s, e, s2, e2)) {
                    s2 = s;
                    e2 = e;
                }
            }
            group_score[g] = s1 + s2;
            group_kept[g] = 0u;
        }
        workgroupBarrier();
        if (lid.x == 0u) {
            for (var j = 0u; j < P.n_group_used; j++) {
                var bs = 0.0;
                var bg = MAX_EXPERTS;
                for (var g = 0u; g < P.n_group; g++) {
                    if (group_kept[g] == 0u && beats(group_score[g], g, bs, bg)) {
                        bs = group_score[g];
                        bg = g;
                    }
                }
                group_kept[bg] = 1u;
            }
        }
        workgroupBarrier();
    }
    // The choice: k rounds of an arg-max over the experts not yet taken.
    for (var j = 0u; j < k; j++) {
        var bs = 0.0;
        var be = MAX_EXPERTS;
        for (var e = lid.x; e < n; e += WG) {
            if (taken[e] == 0u) {
                let s = score(e);
                if (beats(s, e, bs, be)) {
                    bs = s;
                    be = e;
                }
            }
        }
        best_s[lid.x] = bs;
        best_e[lid.x] = be;
        workgroupBarrier();
        for (var w = WG / 2u; w > 0u; w >>= 1u) {
            if (lid.x < w) {
                let o = lid.x + w;
                if (beats(best_s[o], best_e[o], best_s[lid.x], best_e[lid.x])) {
                    best_s[lid.x] = best_s[o];
                    best_e[lid.x] = best_e[o];
                }
            }
            workgroupBarrier();
        }
        if (lid.x == 0u) {
            let e = best_e[0];
            chosen[j] = e;
            taken[e] = 1u;
        }
        workgroupBarrier();
    }
    if (lid.x != 0u) {
        return;
    }
    // Weights, by one invocation: k values.
    let o = P.out_off + row * 2u * P.n_used;
    var wts: array<f32, 64>;
    for (var j = 0u; j < k; j++) {
        wts[j] = probs[chosen[j]];
    }
    if (P.gating == GATING_SOFTMAX_WEIGHT) {
        var mw = bitcast<f32>(0xff800000u);
        for (var j = 0u; j < k; j++) {
            if (!is_nan(wts[j]) && wts[j] > mw) {
                mw = wts[j];
            }
        }
        var sw = 0.0;
        for (var j = 0u; j < k; j++) {
            wts[j] = exp(wts[j] - mw);
            sw += wts[j];
        }
        for (var j = 0u; j < k; j++) {
            wts[j] /= sw;
        }
    }
    if (P.norm != 0u) {
        var sw = 0.0;
        for (var j = 0u; j < k; j++) {
            sw += wts[j];
        }
        sw = max(sw, MIN_WEIGHT_SUM);
        for (var j = 0u; j < k; j++) {
            wts[j] /= sw;
        }
    }
    for (var j = 0u; j < k; j++) {
        A[o + j] = f32(chosen[j]);
        A[o + k + j] = wts[j] * P.scale;
    }
}
