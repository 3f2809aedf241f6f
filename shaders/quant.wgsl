// Dequantization of single elements of raw GGUF blocks, read from `W` (the weight tensor's
// bytes as u32 words, bound by the kernel that includes this file). `base` is the byte offset
// of the row, `i` the element's index in the row. The host appends
// `fn dq(base: u32, i: u32) -> f32` choosing one of these for the tensor's type.

fn ld_u8(b: u32) -> u32 {
    return (W[b >> 2u] >> ((b & 3u) * 8u)) & 0xffu;
}

fn ld_u16(b: u32) -> u32 {
    if ((b & 3u) != 3u) {
        return (W[b >> 2u] >> ((b & 3u) * 8u)) & 0xffffu;
    }
    return ld_u8(b) | (ld_u8(b + 1u) << 8u);
}

fn ld_u32(b: u32) -> u32 {
    if ((b & 3u) == 0u) {
        return W[b >> 2u];
    }
    return ld_u16(b) | (ld_u16(b + 2u) << 16u);
}

fn ld_f16(b: u32) -> f32 {
    return unpack2x16float(ld_u16(b)).x;
}

fn ld_i8(b: u32) -> i32 {
    return (i32(ld_u8(b)) << 24u) >> 24u;
}

fn dq_f32(base: u32, i: u32) -> f32 {
    return bitcast<f32>(ld_u32(base + 4u * i));
}

fn dq_f16(base: u32, i: u32) -> f32 {
    return ld_f16(base + 2u * i);
}

fn dq_bf16(base: u32, i: u32) -> f32 {
    return bitcast<f32>(ld_u16(base + 2u * i) << 16u);
}

// Q4_0: 18 bytes per 32 values: f16 d, 16 bytes of nibbles (low nibbles first half).
fn dq_q4_0(base: u32, i: u32) -> f32 {
    let b = base + (i / 32u) * 18u;
    let j = i % 32u;
    let q = (ld_u8(b + 2u + (j % 16u)) >> ((j / 16u) * 4u)) & 0xfu;
    return ld_f16(b) * (f32(q) - 8.0);
}

// Q4_1: 20 bytes: f16 d, f16 m, 16 bytes of nibbles.
fn dq_q4_1(base: u32, i: u32) -> f32 {
    let b = base + (i / 32u) * 20u;
    let j = i % 32u;
    let q = (ld_u8(b + 4u + (j % 16u)) >> ((j / 16u) * 4u)) & 0xfu;
    return ld_f16(b) * f32(q) + ld_f16(b + 2u);
}

// Q5_0: 22 bytes: f16 d, u32 of fifth bits, 16 bytes of nibbles.
fn dq_q5_0(base: u32, i: u32) -> f32 {
    let b = base + (i / 32u) * 22u;
    let j = i % 32u;
    let lo = (ld_u8(b + 6u + (j % 16u)) >> ((j / 16u) * 4u)) & 0xfu;
    let hi = (ld_u32(b + 2u) >> j) & 1u;
    return ld_f16(b) * (f32(lo | (hi << 4u)) - 16.0);
}

// Q5_1: 24 bytes: f16 d, f16 m, u32 of fifth bits, 16 bytes of nibbles.
fn dq_q5_1(base: u32, i: u32) -> f32 {
    let b = base + (i / 32u) * 24u;
    let j = i % 32u;
    let lo = (ld_u8(b + 8u + (j % 16u)) >> ((j / 16u) * 4u)) & 0xfu;
    let hi = (ld_u32(b + 4u) >> j) & 1u;
    return ld_f16(b) * f32(lo | (hi << 4u)) + ld_f16(b + 2u);
}

// Q8_0: 34 bytes: f16 d, 32 signed bytes.
fn dq_q8_0(base: u32, i: u32) -> f32 {
    let b = base + (i / 32u) * 34u;
    return ld_f16(b) * f32(ld_i8(b + 2u + (i % 32u)));
}

// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block whose 12 scale bytes
// start at `s`.
fn k4_scale_min(s: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(ld_u8(s + j) & 63u), f32(ld_u8(s + j + 4u) & 63u));
    }
    let sc = (ld_u8(s + j + 4u) & 0xfu) | ((ld_u8(s + j - 4u) >> 6u) << 4u);
    let m = (ld_u8(s + j + 4u) >> 4u) | ((ld_u8(s + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

// Q4_K: 144 bytes per 256 values: f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles in
// groups of 64 values (32 low nibbles, then the same bytes' high nibbles).
fn dq_q4_k(base: u32, i: u32) -> f32 {
    let b = base + (i / 256u) * 144u;
    let j = i % 256u;
    let g = j / 64u;
    let l = j % 64u;
    let q = (ld_u8(b + 16u + g * 32u + (l % 32u)) >> ((l / 32u) * 4u)) & 0xfu;
    let sm = k4_scale_min(b + 4u, j / 32u);
    return ld_f16(b) * sm.x * f32(q) - ld_f16(b + 2u) * sm.y;
}

// Q5_K: 176 bytes: f16 d, f16 dmin, 12 scale bytes, 32 bytes of fifth bits, 128 of nibbles.
fn dq_q5_k(base: u32, i: u32) -> f32 {
    let b = base + (i / 256u) * 176u;
    let j = i % 256u;
    let g = j / 64u;
    let l = j % 64u;
    let lo = (ld_u8(b + 48u + g * 32u + (l % 32u)) >> ((l / 32u) * 4u)) & 0xfu;
    let hi = (ld_u8(b + 16u + (l % 32u)) >> (2u * g + l / 32u)) & 1u;
    let sm = k4_scale_min(b + 4u, j / 32u);
    return ld_f16(b) * sm.x * f32(lo | (hi << 4u)) - ld_f16(b + 2u) * sm.y;
}

// Q6_K: 210 bytes per 256 values: 128 bytes of low nibbles, 64 of high bit pairs, 16 signed
// scales, f16 d; two halves of 128 values, each in four quarters of 32.
fn dq_q6_k(base: u32, i: u32) -> f32 {
    let b = base + (i / 256u) * 210u;
    let j = i % 256u;
    let n = j / 128u;
    let r = j % 128u;
    let quarter = r / 32u;
    let l = r % 32u;
    let lo = (ld_u8(b + n * 64u + l + (quarter & 1u) * 32u) >> ((quarter >> 1u) * 4u)) & 0xfu;
    let hi = (ld_u8(b + 128u + n * 32u + l) >> (quarter * 2u)) & 3u;
    let q = i32(lo | (hi << 4u)) - 32;
    let sc = ld_i8(b + 192u + n * 8u + l / 16u + quarter * 2u);
    return ld_f16(b + 208u) * f32(sc) * f32(q);
}
