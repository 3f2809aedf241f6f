// Element-wise ops over `n` elements: add, mul, scale, SiLU- and GELU-gated products, and a
// plain copy (the last row of a matrix).

struct Params {
    a_off: u32,
    b_off: u32,
    out_off: u32,
    n: u32,
    op: u32,
    s: f32,
    grid_x: u32,
}

@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<uniform> P: Params;

const OP_ADD: u32 = 0u;
const OP_MUL: u32 = 1u;
const OP_SCALE: u32 = 2u;
const OP_SWIGLU: u32 = 3u;
const OP_GEGLU: u32 = 4u;
const OP_COPY: u32 = 5u;

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

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.grid_x * 256u;
    if (i >= P.n) {
        return;
    }
    let a = A[P.a_off + i];
    var y = 0.0;
    switch P.op {
        case 0u: { y = a + A[P.b_off + i]; }
        case 1u: { y = a * A[P.b_off + i]; }
        case 2u: { y = a * P.s; }
        case 3u: { y = a / (1.0 + exp(-a)) * A[P.b_off + i]; }
        case 4u: { y = gelu(a) * A[P.b_off + i]; }
        default: { y = a; }
    }
    A[P.out_off + i] = y;
}
