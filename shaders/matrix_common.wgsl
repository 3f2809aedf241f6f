// Shared by the weight-matrix kernels (matvec.wgsl, matvec_row.wgsl, matmul.wgsl): their
// bindings. `out[t][r] = W.row(r) · x[t]` for the rows of one chunk of W
// (`row0` is its first row in the whole matrix), x read at `x_off` with rows of `n_in` values,
// the output at `out_off` with rows `out_stride` apart.

// `MatrixUniforms`: declared by the host from engine/src/gpu/params.rs, prepended.

// The arena as vec4s (node offsets are multiples of 16 values, rows multiples of 32).
@group(0) @binding(0) var<storage, read_write> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<uniform> P: MatrixUniforms;
