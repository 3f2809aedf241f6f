// Rotary position embedding: every head of every row rotated by the (cos, sin) pairs of the
// row's position. The host fills the table per step in f64 (YaRN ramp and magnitude included),
// since f32 trigonometry loses the angle at large positions; this kernel applies it, in ggml's
// normal (adjacent pairs) or NeoX (halves) pairing. Dimensions past `n_dims` pass through.

// `RopeUniforms`: declared by the host from engine/src/gpu/params.rs, prepended.
@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<storage, read> S: array<u32>;
@group(0) @binding(2) var<uniform> P: RopeUniforms;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.x + gid.y * P.grid_x * 256u;
    if (e >= P.n_tok * P.cols) {
        return;
    }
    let t = e / P.cols;
    let c = e % P.cols;
    let d = c % P.head_dim;
    let x = P.x_off + e;
    if (d >= P.n_dims) {
        A[P.out_off + e] = A[x];
        return;
    }
    let tab = P.table_off + t * P.n_dims;
    if (P.neox == 0u) {
        let i = d / 2u;
        let cs = bitcast<f32>(S[tab + 2u * i]);
        let sn = bitcast<f32>(S[tab + 2u * i + 1u]);
        if ((d & 1u) == 0u) {
            A[P.out_off + e] = A[x] * cs - A[x + 1u] * sn;
        } else {
            A[P.out_off + e] = A[x - 1u] * sn + A[x] * cs;
        }
    } else {
        let half = P.n_dims / 2u;
        if (d < half) {
            let cs = bitcast<f32>(S[tab + 2u * d]);
            let sn = bitcast<f32>(S[tab + 2u * d + 1u]);
            A[P.out_off + e] = A[x] * cs - A[x + half] * sn;
        } else {
            let i = d - half;
            let cs = bitcast<f32>(S[tab + 2u * i]);
            let sn = bitcast<f32>(S[tab + 2u * i + 1u]);
            A[P.out_off + e] = A[x - half] * sn + A[x] * cs;
        }
    }
}
