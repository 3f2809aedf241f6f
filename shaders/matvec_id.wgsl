// The chosen experts' mat-vecs of a mat_mul_id: `out[t][j][r] = W_e.row(r) · x[t][j]` with `e`
// the expert that token `t`'s route chose in slot `j`, read from the route node in the arena
// (ids as exact f32 integers), so the choice never leaves the GPU. A workgroup takes one
// (token, slot) pair and 64 / TPR rows of its expert's matrix, TPR invocations per row, each
// decoding whole 32-value sub-blocks (`dq_block`, appended by the host for the weight type)
// straight into a dot product with the pair's input (`put4`), as matvec.wgsl does; with TPR = 1
// (software rasterisers) there is no workgroup memory traffic and no barrier. The input is one
// row shared by every slot (`x_slot` = 0) or one part per slot. Stacked weights too large for
// one binding come in chunks of whole experts (`e0`, `n_chunk`): a pair whose expert another
// chunk holds does nothing in this chunk's dispatch. Expert `e`'s matrix starts at byte
// `(e - e0) · n_out · row_bytes` of the chunk. With `fixed` set (mat_mul_heads) slot `j` uses
// matrix `j` and no route is read. Float rows whose length is not a multiple of 32 are decoded
// value by value (`dq`).

// `MatrixIdUniforms`: declared by the host from engine/src/gpu/params.rs, prepended.

// The arena as vec4s (node offsets are multiples of 16 values, rows multiples of 32).
@group(0) @binding(0) var<storage, read_write> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<uniform> P: MatrixIdUniforms;

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
    let g = wg.x + wg.y * P.grid_x;
    let pair = g / P.row_groups;
    let r = (g % P.row_groups) * (WG / TPR) + lid.x / TPR;
    let lane = lid.x % TPR;
    let t = pair / max(P.n_used, 1u);
    let j = pair % max(P.n_used, 1u);
    var e = 0xffffffffu;
    if (pair < P.n_pairs && P.fixed != 0u) {
        e = j;
    } else if (pair < P.n_pairs) {
        let o = P.route_off + t * 2u * P.n_used + j;
        e = u32(A[o / 4u][o % 4u]);
    }
    // Pairs past the end, and experts of other chunks, compute nothing here.
    let live = e >= P.e0 && e - P.e0 < P.n_chunk && r < P.n_out;
    let base = ((e - P.e0) * P.n_out + r) * P.row_bytes;
    let n_blocks = P.n_in / 32u;
    dot_acc = 0.0;
    let x0 = P.x_off + t * P.x_row + j * P.x_slot;
    if (live && P.n_in % 32u == 0u) {
        for (var blk = lane; blk < n_blocks; blk += TPR) {
            dot_x = x0 + blk * 32u;
            dq_block(base, blk);
        }
    } else if (live) {
        // Float rows of other lengths, value by value (inputs need not be vec4-aligned).
        for (var i = lane; i < P.n_in; i += TPR) {
            let o = x0 + i;
            dot_acc += dq(base, i) * A[o / 4u][o % 4u];
        }
    }
    // reduce:begin
    var s = dot_acc;
    if (TPR > 1u) {
        red[lid.x] = dot_acc;
        workgroupBarrier();
        s = 0.0;
        for (var i = 0u; i < TPR; i++) {
            s += red[lid.x - lane + i];
        }
    }
    // reduce:end
    if (lane == 0u && live) {
        let o = P.out_off + pair * P.n_out + r;
        A[o / 4u][o % 4u] = s;
    }
}
