// Tiled matrix product for prompts: `out[t][r] = W.row(r) · x[t]` over tiles of 64 weight rows
// × 64 tokens. Each step stages 16 columns of both operands in workgroup memory (the weights
// dequantized on the way in, `dq` appended by the host for the weight type); each of the 256
// invocations accumulates a 4 × 4 block of outputs. Row chunks as in matvec.wgsl.

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
const KSTEP: u32 = 16u;

var<workgroup> ws: array<f32, 1024>;
var<workgroup> xs: array<f32, 1024>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r0 = wg.x * TILE;
    let t0 = wg.y * TILE;
    let tx = lid.x % 16u;
    let ty = lid.x / 16u;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < P.n_in; k0 += KSTEP) {
        for (var j = 0u; j < 4u; j++) {
            let idx = lid.x * 4u + j;
            let row = idx / KSTEP;
            let kk = idx % KSTEP;
            let k = k0 + kk;
            var w = 0.0;
            if (r0 + row < P.n_rows && k < P.n_in) {
                w = dq((r0 + row) * P.row_bytes, k);
            }
            ws[idx] = w;
            var x = 0.0;
            if (t0 + row < P.n_tok && k < P.n_in) {
                x = A[P.x_off + (t0 + row) * P.n_in + k];
            }
            xs[idx] = x;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KSTEP; kk++) {
            var wv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                wv[i] = ws[(ty * 4u + i) * KSTEP + kk];
            }
            for (var j = 0u; j < 4u; j++) {
                let xv = xs[(tx * 4u + j) * KSTEP + kk];
                for (var i = 0u; i < 4u; i++) {
                    acc[j * 4u + i] += wv[i] * xv;
                }
            }
        }
        workgroupBarrier();
    }
    for (var j = 0u; j < 4u; j++) {
        let t = t0 + tx * 4u + j;
        for (var i = 0u; i < 4u; i++) {
            let r = r0 + ty * 4u + i;
            if (t < P.n_tok && r < P.n_rows) {
                A[P.out_off + t * P.out_stride + P.row0 + r] = acc[j * 4u + i];
            }
        }
    }
}
