// Matrix-vector product for decoding: `out[t][r] = W.row(r) · x[t]` for a few tokens, one
// workgroup per weight row, the row's elements dequantized in the kernel (`dq`, appended by the
// host for the weight type) and split across the workgroup, then summed by a tree in
// workgroup memory. Weights too large for one binding come in row chunks: `row0` is the chunk's
// first row in the whole matrix.

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

const WG: u32 = 64u;
const MAX_TOK: u32 = 4u;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = wg.x + wg.y * P.grid_x;
    if (r >= P.n_rows) {
        return;
    }
    let base = r * P.row_bytes;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var i = lid.x; i < P.n_in; i += WG) {
        let w = dq(base, i);
        for (var t = 0u; t < P.n_tok; t++) {
            acc[t] += w * A[P.x_off + t * P.n_in + i];
        }
    }
    for (var t = 0u; t < MAX_TOK; t++) {
        red[t * WG + lid.x] = acc[t];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid.x < s) {
            for (var t = 0u; t < MAX_TOK; t++) {
                red[t * WG + lid.x] += red[t * WG + lid.x + s];
            }
        }
        workgroupBarrier();
    }
    if (lid.x < P.n_tok) {
        A[P.out_off + lid.x * P.out_stride + P.row0 + r] = red[lid.x * WG];
    }
}
