// Rounds a mat-mul's f32 activations as the CPU quantizes them before its dot products (the
// weight format's `vec_dot_type`): each invocation takes one block of BLOCK values at `src_off`
// and writes, at `dst_off`, the values that quantizing the block and dequantizing it again would
// give: Q8_0 (and Q8_1, the same values) with `d = amax / 127` stored as f16 and `q` rounded
// half away from zero; Q8_K with `iscale = −127 / max` (the signed value of largest magnitude),
// `q = min(127, round-half-even(iscale · x))`, `d = 1 / iscale` in f32; f16 and bf16 rounded to
// nearest even. The mat-mul kernels then read the rounded copy, so their products differ from
// the CPU's integer dot products by f32 summation order only. No barriers (software
// rasterisers), no workgroup memory. The host appends `fn round_block(src: u32, dst: u32)`
// calling the format's `act_*` function and sets BLOCK to its block length.

// `ActRoundUniforms`: declared by the host from engine/src/gpu/params.rs, prepended.

// The arena, as plain values (blocks of 1 for f16/bf16 need no vec4 alignment).
@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<uniform> P: ActRoundUniforms;

const BLOCK: u32 = 32u;

// C's `roundf`: to nearest, ties away from zero (WGSL's `round` ties to even). `v − trunc(v)`
// is exact.
fn round_away(v: f32) -> f32 {
    let t = trunc(v);
    return t + select(0.0, sign(v), abs(v - t) >= 0.5);
}

// `v` rounded to the nearest f16 (ties to even, as `half::f16::from_f32` and ggml), as f32.
// Subnormal f16s are multiples of 2⁻²⁴, found by WGSL's ties-to-even `round` on the exactly
// scaled value; larger magnitudes by rounding the f32 mantissa to 10 bits; past the largest
// f16 (65504), infinity. Non-finite inputs are returned unchanged.
fn f16_round(v: f32) -> f32 {
    let u = bitcast<u32>(v);
    if ((u & 0x7f800000u) == 0x7f800000u) {
        return v;
    }
    let a = abs(v);
    if (a < 6.103515625e-5) {
        return round(v * 16777216.0) * 5.9604644775390625e-8;
    }
    let r = bitcast<f32>((u + 0xfffu + ((u >> 13u) & 1u)) & 0xffffe000u);
    if (abs(r) > 65504.0) {
        return bitcast<f32>((u & 0x80000000u) | 0x7f800000u);
    }
    return r;
}

// Q8_0 (and Q8_1): `d = amax / 127`, `q = roundf(x · (1 / d))`, values `q · f16(d)`.
fn act_q8_0(src: u32, dst: u32) {
    var amax = 0.0;
    for (var i = 0u; i < BLOCK; i++) {
        amax = max(amax, abs(A[src + i]));
    }
    let d = amax / 127.0;
    let id = select(0.0, 1.0 / d, d != 0.0);
    let dh = f16_round(d);
    for (var i = 0u; i < BLOCK; i++) {
        A[dst + i] = round_away(A[src + i] * id) * dh;
    }
}

// Q8_K: `iscale = −127 / max`, `q = min(127, nearest_int(iscale · x))`, values `(1 / iscale) · q`;
// an all-zero block stays zero.
fn act_q8_k(src: u32, dst: u32) {
    var amax = 0.0;
    var mx = 0.0;
    for (var i = 0u; i < BLOCK; i++) {
        let v = A[src + i];
        if (abs(v) > amax) {
            amax = abs(v);
            mx = v;
        }
    }
    if (amax == 0.0) {
        for (var i = 0u; i < BLOCK; i++) {
            A[dst + i] = 0.0;
        }
        return;
    }
    let iscale = -127.0 / mx;
    let d = 1.0 / iscale;
    for (var i = 0u; i < BLOCK; i++) {
        A[dst + i] = d * min(round(iscale * A[src + i]), 127.0);
    }
}

// F16: each value rounded to the nearest f16.
fn act_f16(src: u32, dst: u32) {
    for (var i = 0u; i < BLOCK; i++) {
        A[dst + i] = f16_round(A[src + i]);
    }
}

// BF16: each value rounded to the nearest bf16 (ties to even; NaNs made quiet), as ggml's
// `ggml_compute_fp32_to_bf16`.
fn act_bf16(src: u32, dst: u32) {
    for (var i = 0u; i < BLOCK; i++) {
        let u = bitcast<u32>(A[src + i]);
        var h = (u + 0x7fffu + ((u >> 16u) & 1u)) & 0xffff0000u;
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            h = (u | 0x00400000u) & 0xffff0000u;
        }
        A[dst + i] = bitcast<f32>(h);
    }
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = (wg.x + wg.y * P.grid_x) * 64u + lid.x;
    if (b >= P.n_blocks) {
        return;
    }
    round_block(P.src_off + b * BLOCK, P.dst_off + b * BLOCK);
}
