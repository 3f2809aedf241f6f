// Tiled matrix product for prompts: `out[t][r] = W.row(r) · x[t]` over tiles of 64 weight rows
// × 64 tokens. Each step stages one 32-value sub-block column of both operands in workgroup
// memory — 64 invocations decode one row's sub-block each (`dq_block`, appended by the host for
// the weight type), all 256 load the tokens' values — and each invocation accumulates a 4 × 4
// block of outputs. Row chunks as in matvec.wgsl.

struct Params {
    x_off: u32,
    out_off: u32,
    n_in: u32,
    n_rows: u32,
    row_bytes: u32,
    out_stride: u32,
    row0: u32,
    n_tok: u32,
    grid_x: u32,
}

@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<uniform> P: Params;

const TILE: u32 = 64u;
const K: u32 = 32u;

var<workgroup> ws: array<f32, 2048>;
var<workgroup> xs: array<f32, 2048>;
var<private> put_base: u32;

fn put(i: u32, v: f32) {
    ws[put_base + i] = v;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r0 = wg.x * TILE;
    let t0 = wg.y * TILE;
    let tx = lid.x % 16u;
    let ty = lid.x / 16u;
    // Outputs (rows ty·4 .. +4) × (tokens tx·4 + j), one vector per token.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let n_blocks = P.n_in / K;
    for (var blk = 0u; blk < n_blocks; blk++) {
        if (lid.x < TILE) {
            let r = r0 + lid.x;
            if (r < P.n_rows) {
                put_base = lid.x * K;
                dq_block(r * P.row_bytes, blk);
            } else {
                for (var i = 0u; i < K; i++) {
                    ws[lid.x * K + i] = 0.0;
                }
            }
        }
        for (var j = 0u; j < 8u; j++) {
            let idx = lid.x * 8u + j;
            let t = t0 + idx / K;
            var x = 0.0;
            if (t < P.n_tok) {
                x = A[P.x_off + t * P.n_in + blk * K + idx % K];
            }
            xs[idx] = x;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < K; kk++) {
            let wr = ty * 4u * K + kk;
            let wv = vec4<f32>(ws[wr], ws[wr + K], ws[wr + 2u * K], ws[wr + 3u * K]);
            let xr = tx * 4u * K + kk;
            acc0 += wv * xs[xr];
            acc1 += wv * xs[xr + K];
            acc2 += wv * xs[xr + 2u * K];
            acc3 += wv * xs[xr + 3u * K];
        }
        workgroupBarrier();
    }
    store(t0 + tx * 4u, r0 + ty * 4u, acc0);
    store(t0 + tx * 4u + 1u, r0 + ty * 4u, acc1);
    store(t0 + tx * 4u + 2u, r0 + ty * 4u, acc2);
    store(t0 + tx * 4u + 3u, r0 + ty * 4u, acc3);
}

// Token `t`'s outputs for rows `r .. r + 4`, those inside the matrix.
fn store(t: u32, r: u32, v: vec4<f32>) {
    if (t >= P.n_tok) {
        return;
    }
    let o = P.out_off + t * P.out_stride + P.row0;
    if (r < P.n_rows) {
        A[o + r] = v.x;
    }
    if (r + 1u < P.n_rows) {
        A[o + r + 1u] = v.y;
    }
    if (r + 2u < P.n_rows) {
        A[o + r + 2u] = v.z;
    }
    if (r + 3u < P.n_rows) {
        A[o + r + 3u] = v.w;
    }
}
