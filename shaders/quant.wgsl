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

// Whole sub-blocks of 32 values at a time: block `blk` of the row at byte `base` (elements
// blk·32 .. blk·32 + 32), each value handed to `put(i, value)`, which the including kernel
// defines (the mat-vec kernel accumulates a dot product, the mat-mul kernel stores into
// workgroup memory; no private arrays, which software rasterisers handle slowly). The scales
// are read once per call and the quants a word at a time. The host appends
// `fn dq_block(base: u32, blk: u32)` choosing one of these.

fn blk_f32(base: u32, blk: u32) {
    for (var i = 0u; i < 32u; i++) {
        put(i, bitcast<f32>(ld_u32(base + blk * 128u + 4u * i)));
    }
}

fn blk_f16(base: u32, blk: u32) {
    for (var i = 0u; i < 16u; i++) {
        let v = unpack2x16float(ld_u32(base + blk * 64u + 4u * i));
        put(2u * i, v.x);
        put(2u * i + 1u, v.y);
    }
}

fn blk_bf16(base: u32, blk: u32) {
    for (var i = 0u; i < 16u; i++) {
        let u = ld_u32(base + blk * 64u + 4u * i);
        put(2u * i, bitcast<f32>(u << 16u));
        put(2u * i + 1u, bitcast<f32>(u & 0xffff0000u));
    }
}

fn blk_q4_0(base: u32, blk: u32) {
    let b = base + blk * 18u;
    let d = ld_f16(b);
    for (var w = 0u; w < 4u; w++) {
        let u = ld_u32(b + 2u + 4u * w);
        for (var k = 0u; k < 4u; k++) {
            let byte = (u >> (8u * k)) & 0xffu;
            put(4u * w + k, (f32(byte & 0xfu) - 8.0) * d);
            put(4u * w + k + 16u, (f32(byte >> 4u) - 8.0) * d);
        }
    }
}

fn blk_q4_1(base: u32, blk: u32) {
    let b = base + blk * 20u;
    let d = ld_f16(b);
    let m = ld_f16(b + 2u);
    for (var w = 0u; w < 4u; w++) {
        let u = ld_u32(b + 4u + 4u * w);
        for (var k = 0u; k < 4u; k++) {
            let byte = (u >> (8u * k)) & 0xffu;
            put(4u * w + k, f32(byte & 0xfu) * d + m);
            put(4u * w + k + 16u, f32(byte >> 4u) * d + m);
        }
    }
}

fn blk_q5_0(base: u32, blk: u32) {
    let b = base + blk * 22u;
    let d = ld_f16(b);
    let qh = ld_u32(b + 2u);
    for (var w = 0u; w < 4u; w++) {
        let u = ld_u32(b + 6u + 4u * w);
        for (var k = 0u; k < 4u; k++) {
            let j = 4u * w + k;
            let byte = (u >> (8u * k)) & 0xffu;
            let lo = (byte & 0xfu) | (((qh >> j) & 1u) << 4u);
            let hi = (byte >> 4u) | (((qh >> (j + 16u)) & 1u) << 4u);
            put(j, (f32(lo) - 16.0) * d);
            put(j + 16u, (f32(hi) - 16.0) * d);
        }
    }
}

fn blk_q5_1(base: u32, blk: u32) {
    let b = base + blk * 24u;
    let d = ld_f16(b);
    let m = ld_f16(b + 2u);
    let qh = ld_u32(b + 4u);
    for (var w = 0u; w < 4u; w++) {
        let u = ld_u32(b + 8u + 4u * w);
        for (var k = 0u; k < 4u; k++) {
            let j = 4u * w + k;
            let byte = (u >> (8u * k)) & 0xffu;
            let lo = (byte & 0xfu) | (((qh >> j) & 1u) << 4u);
            let hi = (byte >> 4u) | (((qh >> (j + 16u)) & 1u) << 4u);
            put(j, f32(lo) * d + m);
            put(j + 16u, f32(hi) * d + m);
        }
    }
}

fn blk_q8_0(base: u32, blk: u32) {
    let b = base + blk * 34u;
    let d = ld_f16(b);
    for (var w = 0u; w < 8u; w++) {
        let u = ld_u32(b + 2u + 4u * w);
        for (var k = 0u; k < 4u; k++) {
            put(4u * w + k, f32((i32(u << (24u - 8u * k))) >> 24u) * d);
        }
    }
}

fn blk_q4_k(base: u32, blk: u32) {
    let b = base + (blk / 8u) * 144u;
    let j = blk % 8u;
    let sm = k4_scale_min(b + 4u, j);
    let d = ld_f16(b) * sm.x;
    let m = ld_f16(b + 2u) * sm.y;
    let shift = (j % 2u) * 4u;
    let q = b + 16u + (j / 2u) * 32u;
    for (var w = 0u; w < 8u; w++) {
        let u = ld_u32(q + 4u * w);
        for (var k = 0u; k < 4u; k++) {
            put(4u * w + k, d * f32((u >> (8u * k + shift)) & 0xfu) - m);
        }
    }
}

fn blk_q5_k(base: u32, blk: u32) {
    let b = base + (blk / 8u) * 176u;
    let j = blk % 8u;
    let sm = k4_scale_min(b + 4u, j);
    let d = ld_f16(b) * sm.x;
    let m = ld_f16(b + 2u) * sm.y;
    let shift = (j % 2u) * 4u;
    let q = b + 48u + (j / 2u) * 32u;
    for (var w = 0u; w < 8u; w++) {
        let u = ld_u32(q + 4u * w);
        let h = ld_u32(b + 16u + 4u * w);
        for (var k = 0u; k < 4u; k++) {
            let lo = (u >> (8u * k + shift)) & 0xfu;
            let hi = (h >> (8u * k + j)) & 1u;
            put(4u * w + k, d * f32(lo | (hi << 4u)) - m);
        }
    }
}

fn blk_q6_k(base: u32, blk: u32) {
    let b = base + (blk / 8u) * 210u;
    let j = blk % 8u;
    let n = j / 4u;
    let quarter = j % 4u;
    let d = ld_f16(b + 208u);
    let ql = b + n * 64u + (quarter & 1u) * 32u;
    let qh = b + 128u + n * 32u;
    let lshift = (quarter >> 1u) * 4u;
    let hshift = quarter * 2u;
    let s0 = d * f32(ld_i8(b + 192u + n * 8u + quarter * 2u));
    let s1 = d * f32(ld_i8(b + 192u + n * 8u + quarter * 2u + 1u));
    for (var w = 0u; w < 8u; w++) {
        let u = ld_u32(ql + 4u * w);
        let h = ld_u32(qh + 4u * w);
        let s = select(s1, s0, w < 4u);
        for (var k = 0u; k < 4u; k++) {
            let lo = (u >> (8u * k + lshift)) & 0xfu;
            let hi = (h >> (8u * k + hshift)) & 3u;
            put(4u * w + k, s * f32(i32(lo | (hi << 4u)) - 32));
        }
    }
}
