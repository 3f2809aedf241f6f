// Matrix-vector product for decoding: `out[t][r] = W.row(r) · x[t]` for up to 8 tokens. A
// workgroup of 64 invocations takes 64 / TPR rows, TPR invocations per row, each decoding whole
// 32-value sub-blocks of its row (`dq_block`, appended by the host for the weight type) straight
// into a dot product with the token's activations (`put4` below, one vec4 load of activations
// per four weights: node offsets are multiples of 16 values); one barrier per token, then
// the first invocation of each row sums its row's partials. TPR is set by the host per adapter.
// Where the adapter has subgroups at least TPR wide, the host swaps the block between the
// `reduce` markers for a butterfly of subgroup shuffles (no workgroup memory, no barriers);
// the rows' TPR invocations are then consecutive lanes of one subgroup.
// Weights too large for one binding come in row chunks: `row0` is the chunk's first row in the
// whole matrix.

// Bindings: matrix_common.wgsl, composed before this file; parameters: `MatrixUniforms`.

const WG: u32 = 64u;
const TPR: u32 = 16u;

var<workgroup> red: array<f32, 64>;
var<private> dot_x: u32;
var<private> dot_acc: f32;

fn put4(i: u32, v: vec4<f32>) {
    dot_acc += dot(v, A[(dot_x + i) / 4u]);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = (wg.x + wg.y * P.grid_x) * (WG / TPR) + lid.x / TPR;
    let lane = lid.x % TPR;
    let base = r * P.row_bytes;
    let n_blocks = P.n_in / 32u;
    for (var t = 0u; t < P.n_tok; t++) {
        dot_acc = 0.0;
        if (r < P.n_rows) {
            for (var blk = lane; blk < n_blocks; blk += TPR) {
                dot_x = P.x_off + t * P.n_in + blk * 32u;
                dq_block(base, blk);
            }
        }
        // reduce:begin
        red[lid.x] = dot_acc;
        workgroupBarrier();
        var s = 0.0;
        for (var i = 0u; i < TPR; i++) {
            s += red[lid.x - lane + i];
        }
        workgroupBarrier();
        // reduce:end
        if (lane == 0u && r < P.n_rows) {
            let o = P.out_off + t * P.out_stride + P.row0 + r;
            A[o / 4u][o % 4u] = s;
        }
    }
}
