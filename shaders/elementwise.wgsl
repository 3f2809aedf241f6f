// Element-wise ops over `n` elements: add, mul, scale, a bias broadcast over rows, per-expert
// biases (add_bias_id: the expert of each (token, slot) read from the route at `b_off`),
// soft-capping, squared ReLU, SiLU- and GELU-gated products and gpt-oss's clamped SwiGLU
// (swiglu_oai), a plain copy (the last row of a matrix), the rows a step selects
// (select_rows: their numbers in the step buffer, bound as `W`, at `b_off`), and the weighted sum of a row's
// expert outputs (moe_sum: `parts` parts of `cols` values, weighted by the route's weights at
// `b_off`, added in slot order as on the CPU), and the gathers of multi-head latent attention:
// some columns of every group (columns) and the per-group concatenation (concat).

// `ElementwiseUniforms` and the `OP_*` codes: declared by the host from
// engine/src/gpu/params.rs, prepended.
@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<uniform> P: ElementwiseUniforms;

fn to_f16(x: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(x, 0.0))).x;
}

// GELU (tanh form) as ggml's CPU backend evaluates it: input and result rounded to f16,
// exact outside ±10.
fn gelu(x: f32) -> f32 {
    if (x <= -10.0) {
        return 0.0;
    }
    if (x >= 10.0) {
        return x;
    }
    let h = to_f16(x);
    let g = 0.5 * h * (1.0 + tanh(0.7978846 * h * (1.0 + 0.044715 * h * h)));
    return to_f16(g);
}

// Output value `i` of moe_sum: `Σ_j x[t][j][c] · w[t][j]`, the first product then each next
// one added.
fn moe_sum(i: u32) -> f32 {
    let t = i / P.cols;
    let c = i % P.cols;
    let x = P.a_off + t * P.parts * P.cols + c;
    let w = P.b_off + t * 2u * P.parts + P.parts;
    var y = A[x] * A[w];
    for (var j = 1u; j < P.parts; j++) {
        y += A[x + j * P.cols] * A[w + j];
    }
    return y;
}

// gpt-oss's clamped SwiGLU in ggml's order: `g = min(gate, limit)`,
// `u = clamp(up, −limit, limit)`, `g / (1 + e^(−α·g)) · (u + 1)` (α in `s`).
fn swiglu_oai(gate: f32, up: f32) -> f32 {
    let g = min(gate, P.limit);
    let u = clamp(up, -P.limit, P.limit);
    return g / (1.0 + exp(P.s * -g)) * (u + 1.0);
}

// Output value `i` of add_bias_id: part `j` of row `t` (`parts` parts of `cols` values) plus
// row `e` of the biases, `e` the expert id in slot `j` of the route's row `t`.
fn add_bias_id(i: u32, a: f32) -> f32 {
    let c = i % P.cols;
    let tj = i / P.cols;
    let t = tj / P.parts;
    let j = tj % P.parts;
    let e = u32(A[P.b_off + t * 2u * P.parts + j]);
    return a + bitcast<f32>(W[e * P.cols + c]);
}

// Output value `i` of concat: groups of `cols` values of `a`, then `parts` values of `b`.
fn concat(i: u32) -> f32 {
    let w = P.cols + P.parts;
    let g = i / w;
    let c = i % w;
    if (c < P.cols) {
        return A[P.a_off + g * P.cols + c];
    }
    return A[P.b_off + g * P.parts + c - P.cols];
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.grid_x * 256u;
    if (i >= P.n) {
        return;
    }
    var y = 0.0;
    // Gathers (columns, concat, select_rows) index `a` themselves.
    var a = 0.0;
    if (P.op != OP_COLUMNS && P.op != OP_CONCAT && P.op != OP_SELECT_ROWS) {
        a = A[P.a_off + i];
    }
    switch P.op {
        case OP_ADD: { y = a + A[P.b_off + i]; }
        case OP_MUL: { y = a * A[P.b_off + i]; }
        case OP_SCALE: { y = a * P.s; }
        case OP_SWIGLU: { y = a / (1.0 + exp(-a)) * A[P.b_off + i]; }
        case OP_GEGLU: { y = gelu(a) * A[P.b_off + i]; }
        case OP_ADD_BIAS: { y = a + bitcast<f32>(W[i % P.cols]); }
        case OP_SOFTCAP: { y = tanh(a * (1.0 / P.s)) * P.s; }
        case OP_RELU_SQR: { let r = max(a, 0.0); y = r * r; }
        case OP_SWIGLU_OAI: { y = swiglu_oai(a, A[P.b_off + i]); }
        case OP_ADD_BIAS_ID: { y = add_bias_id(i, a); }
        case OP_MOE_SUM: { y = moe_sum(i); }
        case OP_COLUMNS: { y = A[P.a_off + (i / P.cols) * P.parts + i % P.cols]; }
        case OP_CONCAT: { y = concat(i); }
        case OP_SELECT_ROWS: { y = A[P.a_off + W[P.b_off + i / P.cols] * P.cols + i % P.cols]; }
        case OP_COPY, default: { y = a; }
    }
    A[P.out_off + i] = y;
}
