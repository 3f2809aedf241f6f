// Combines the split-K partials of attention_decode.wgsl for one sequence group of the step
// (the output rows from `tok0`, the sixth word of the scan info): per (token, head), the global
// max over the splits, each split's sum and output rescaled to it, then the normalised output.
// An attention sink (one logit per query head, `has_sinks`) enters here, once: it takes part
// in the max and adds `exp(sink - max)` to the sum, with no value (as the CPU folds it in
// after the keys).

// `AttnReduceUniforms`: declared by the host from engine/src/gpu/params.rs, prepended.
@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<storage, read> PT: array<f32>;
@group(0) @binding(2) var<storage, read> S: array<u32>;
@group(0) @binding(3) var<uniform> P: AttnReduceUniforms;
// The sinks' f32 bits, one per query head (a placeholder without sinks).
@group(0) @binding(4) var<storage, read> SK: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = wg.x;
    let t = wg.y;
    let stride = P.dv + 2u;
    // Splits this step: the fourth word of the layer's scan info. The partials are laid out
    // for the largest count, 16.
    let n_split = S[P.info_off + 3u];
    let base = (t * P.n_head + h) * 16u * stride;
    var m = -1.0e30;
    for (var s = 0u; s < n_split; s++) {
        m = max(m, PT[base + s * stride]);
    }
    var sink = -1.0e30;
    if (P.has_sinks != 0u) {
        sink = bitcast<f32>(SK[h]);
        m = max(m, sink);
    }
    var l = 0.0;
    for (var s = 0u; s < n_split; s++) {
        l += PT[base + s * stride + 1u] * exp(PT[base + s * stride] - m);
    }
    if (P.has_sinks != 0u) {
        l += exp(sink - m);
    }
    var inv = 0.0;
    if (l > 0.0) {
        inv = 1.0 / l;
    }
    for (var d = lid.x; d < P.dv; d += 64u) {
        var y = 0.0;
        for (var s = 0u; s < n_split; s++) {
            y += PT[base + s * stride + 2u + d] * exp(PT[base + s * stride] - m);
        }
        A[P.out_off + ((S[P.info_off + 5u] + t) * P.n_head + h) * P.dv + d] = y * inv;
    }
}
