// RMS normalisation of groups of `group` elements (a row, or one head of a row), times an
// optional f32 gain broadcast over the groups: one workgroup per group, the sum of squares by a
// tree in workgroup memory.

// `RmsNormUniforms`: declared by the host from engine/src/gpu/params.rs, prepended.
@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<uniform> P: RmsNormUniforms;

const WG: u32 = 256u;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = wg.x + wg.y * P.grid_x;
    if (g >= P.n_groups) {
        return;
    }
    let x0 = P.x_off + g * P.group;
    var ss = 0.0;
    for (var i = lid.x; i < P.group; i += WG) {
        let v = A[x0 + i];
        ss += v * v;
    }
    red[lid.x] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid.x < s) {
            red[lid.x] += red[lid.x + s];
        }
        workgroupBarrier();
    }
    let scale = 1.0 / sqrt(red[0] / f32(P.group) + P.eps);
    let o0 = P.out_off + g * P.group;
    for (var i = lid.x; i < P.group; i += WG) {
        var y = A[x0 + i] * scale;
        if (P.has_weight != 0u) {
            y *= bitcast<f32>(W[i]);
        }
        A[o0 + i] = y;
    }
}
