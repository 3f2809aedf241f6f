// Tiled matrix product for prompts: `out[t][r] = W.row(r) · x[t]` over tiles of 64 weight rows
// × 64 tokens, 64 invocations a tile, each accumulating an 8 × 8 block of outputs in registers.
// Each step stages one 32-value sub-block column of both operands in workgroup memory, k-major
// so that 4 consecutive rows (or tokens) are one vec4: each invocation decodes its own row's
// sub-block (`dq_block`, appended by the host for the weight type) and loads a 32nd of the
// tokens' values. Per k the inner loop reads 4 vec4s for 64 multiply-adds: on GPUs that keeps
// workgroup-memory traffic low, and on software rasterisers (which load memory one lane at a
// time) it is what sets the speed. Row chunks as in matvec.wgsl.

// Bindings: matrix_common.wgsl, composed before this file; parameters: `MatrixUniforms`.

const TILE: u32 = 64u;
const K: u32 = 32u;
// vec4s per k in the staged tiles.
const Q: u32 = TILE / 4u;

// ws[k·Q + r/4][r%4] = W[r0 + r][blk·K + k]; xs likewise for tokens.
var<workgroup> ws: array<vec4<f32>, 512>;
var<workgroup> xs: array<vec4<f32>, 512>;
var<private> put_row: u32;

fn put4(i: u32, v: vec4<f32>) {
    let r4 = put_row / 4u;
    let c = put_row % 4u;
    ws[i * Q + r4][c] = v.x;
    ws[(i + 1u) * Q + r4][c] = v.y;
    ws[(i + 2u) * Q + r4][c] = v.z;
    ws[(i + 3u) * Q + r4][c] = v.w;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r0 = wg.x * TILE;
    let t0 = wg.y * TILE;
    // Rows ty·8 .. +8 (two vec4s) × tokens tx·8 + j.
    let tx = lid.x % 8u;
    let ty = lid.x / 8u;
    var a0 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var b1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var b2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var b3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var b4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var b5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var b6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    var b7 = vec4<f32>(0.0);
    let n_blocks = P.n_in / K;
    put_row = lid.x;
    let r = r0 + lid.x;
    for (var blk = 0u; blk < n_blocks; blk++) {
        if (r < P.n_rows) {
            dq_block(r * P.row_bytes, blk);
        } else {
            for (var i = 0u; i < K; i += 4u) {
                put4(i, vec4<f32>(0.0));
            }
        }
        // Consecutive invocations read consecutive vec4s of one token's row.
        for (var j = 0u; j < K / 4u; j++) {
            let idx = j * TILE + lid.x;
            let t = idx / (K / 4u);
            let k = 4u * (idx % (K / 4u));
            var x = vec4<f32>(0.0);
            if (t0 + t < P.n_tok) {
                x = A[(P.x_off + (t0 + t) * P.n_in + blk * K + k) / 4u];
            }
            xs[k * Q + t / 4u][t % 4u] = x.x;
            xs[(k + 1u) * Q + t / 4u][t % 4u] = x.y;
            xs[(k + 2u) * Q + t / 4u][t % 4u] = x.z;
            xs[(k + 3u) * Q + t / 4u][t % 4u] = x.w;
        }
        workgroupBarrier();
        for (var k = 0u; k < K; k++) {
            let w0 = ws[k * Q + ty * 2u];
            let w1 = ws[k * Q + ty * 2u + 1u];
            let x0 = xs[k * Q + tx * 2u];
            let x1 = xs[k * Q + tx * 2u + 1u];
            a0 += w0 * x0.x;
            b0 += w1 * x0.x;
            a1 += w0 * x0.y;
            b1 += w1 * x0.y;
            a2 += w0 * x0.z;
            b2 += w1 * x0.z;
            a3 += w0 * x0.w;
            b3 += w1 * x0.w;
            a4 += w0 * x1.x;
            b4 += w1 * x1.x;
            a5 += w0 * x1.y;
            b5 += w1 * x1.y;
            a6 += w0 * x1.z;
            b6 += w1 * x1.z;
            a7 += w0 * x1.w;
            b7 += w1 * x1.w;
        }
        workgroupBarrier();
    }
    let t = t0 + tx * 8u;
    let rr = r0 + ty * 8u;
    store(t, rr, a0, b0);
    store(t + 1u, rr, a1, b1);
    store(t + 2u, rr, a2, b2);
    store(t + 3u, rr, a3, b3);
    store(t + 4u, rr, a4, b4);
    store(t + 5u, rr, a5, b5);
    store(t + 6u, rr, a6, b6);
    store(t + 7u, rr, a7, b7);
}

// Token `t`'s outputs for rows `r .. r + 8` (`lo`, then `hi`), those inside the matrix.
fn store(t: u32, r: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (t >= P.n_tok) {
        return;
    }
    let o = P.out_off + t * P.out_stride + P.row0 + r;
    for (var i = 0u; i < 4u; i++) {
        if (r + i < P.n_rows) {
            A[(o + i) / 4u][(o + i) % 4u] = lo[i];
        }
        if (r + 4u + i < P.n_rows) {
            A[(o + 4u + i) / 4u][(o + 4u + i) % 4u] = hi[i];
        }
    }
}
