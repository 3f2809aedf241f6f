// Matrix-vector product for decoding on CPU adapters (software rasterisers): one invocation a
// row, each decoding its row's 32-value sub-blocks (`dq_block`, appended by the host for the
// weight type) straight into a dot product with the token's activations (`put4` below), for
// up to 8 tokens. No workgroup memory and no barriers: a software rasteriser runs a kernel with
// barriers as coroutines, which costs it several times the arithmetic. Row chunks and
// parameters as in matvec.wgsl.

// Bindings: matrix_common.wgsl, composed before this file; parameters: `MatrixUniforms`.

var<private> dot_x: u32;
var<private> dot_acc: f32;

fn put4(i: u32, v: vec4<f32>) {
    dot_acc += dot(v, A[(dot_x + i) / 4u]);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = (wg.x + wg.y * P.grid_x) * 64u + lid.x;
    if (r >= P.n_rows) {
        return;
    }
    let base = r * P.row_bytes;
    let n_blocks = P.n_in / 32u;
    for (var t = 0u; t < P.n_tok; t++) {
        dot_acc = 0.0;
        for (var blk = 0u; blk < n_blocks; blk++) {
            dot_x = P.x_off + t * P.n_in + blk * 32u;
            dq_block(base, blk);
        }
        let o = P.out_off + t * P.out_stride + P.row0 + r;
        A[o / 4u][o % 4u] = dot_acc;
    }
}
