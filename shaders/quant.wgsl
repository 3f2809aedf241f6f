// Dequantization of single elements of raw GGUF blocks, read from `W` (the weight tensor's
// bytes as u32 words, bound by the kernel that includes this file). `base` is the byte offset
// of the row, `i` the element's index in the row. The host appends
// `fn dq(base: u32, i: u32) -> f32` choosing one of these for the tensor's type.

fn ld_u8(b: u32) -> u32 {
    return (W[b >> 2u] >> ((b & 3u) * 8u)) & 0xffu;
}

// Every 16- and 32-bit field of these formats starts at an even byte (blocks have even sizes;
// MXFP4's 17-byte blocks hold only bytes, read by `ld_u8` or shifted out of whole words),
// so these take even `b` and never branch: software rasterisers run both sides of a branch
// that differs between lanes, and load memory one lane at a time.
fn ld_u16(b: u32) -> u32 {
    return (W[b >> 2u] >> ((b & 2u) * 8u)) & 0xffffu;
}

// The word at even byte `b`: one load when `b` is a multiple of 4, else the halves of two.
fn ld_u32(b: u32) -> u32 {
    let w = b >> 2u;
    let odd = (b & 2u) != 0u;
    return join16(W[w], W[w + select(0u, 1u, odd)], odd);
}

// The word at byte 4·w + 2 of `cur` = W[w], `nxt` = W[w + 1] if `odd`, else `cur`.
fn join16(cur: u32, nxt: u32, odd: bool) -> u32 {
    return select(cur, (cur >> 16u) | (nxt << 16u), odd);
}

// The word at byte `b`, a multiple of 4 (formats whose blocks are multiples of 4 bytes).
fn ld_w(b: u32) -> u32 {
    return W[b >> 2u];
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

// MXFP4's E8M0 scale byte `e` halved, 2^(e − 128), bit for bit as ggml's
// `ggml_e8m0_to_fp32_half` (subnormal for e < 2).
fn e8m0_half(e: u32) -> f32 {
    return bitcast<f32>(select((e - 1u) << 23u, 0x00200000u << (e & 1u), e < 2u));
}

// The doubled FP4 (E2M1) values of nibbles `n` (ggml's `kvalues_mxfp4`): magnitude bits
// m = n & 7 give m for m < 2, else (2 + (m & 1)) · 2^((m >> 1) − 1); bit 3 is the sign.
fn fp4x2(n: vec4<u32>) -> vec4<f32> {
    let m = n & vec4<u32>(7u);
    let big = (vec4<u32>(2u) + (m & vec4<u32>(1u))) << (max(m >> vec4<u32>(1u), vec4<u32>(1u)) - vec4<u32>(1u));
    let mag = vec4<f32>(select(m, big, m >= vec4<u32>(2u)));
    return select(mag, -mag, n >= vec4<u32>(8u));
}

// MXFP4: 17 bytes per 32 values: E8M0 scale byte, 16 bytes of nibbles (low nibbles first
// half). Blocks and rows may start at any byte.
fn dq_mxfp4(base: u32, i: u32) -> f32 {
    let b = base + (i / 32u) * 17u;
    let j = i % 32u;
    let q = (ld_u8(b + 1u + (j % 16u)) >> ((j / 16u) * 4u)) & 0xfu;
    return fp4x2(vec4<u32>(q)).x * e8m0_half(ld_u8(b));
}

// IQ4_NL's and IQ4_XS's values of nibbles `n` (ggml's `kvalues_iq4nl`: -127 -104 -83 -65
// -49 -35 -22 -10 1 13 25 38 53 69 89 113), as signed bytes packed four to a word: the word
// picked by selects (no array, no branch), the byte shifted out and sign-extended.
fn iq4nl(n: vec4<u32>) -> vec4<f32> {
    let lo = select(vec4<u32>(0xbfad9881u), vec4<u32>(0xf6eaddcfu), n >= vec4<u32>(4u));
    let hi = select(vec4<u32>(0x26190d01u), vec4<u32>(0x71594535u), n >= vec4<u32>(12u));
    let w = select(lo, hi, n >= vec4<u32>(8u));
    let b = (w >> ((n & vec4<u32>(3u)) * 8u)) << vec4<u32>(24u);
    return vec4<f32>(bitcast<vec4<i32>>(b) >> vec4<u32>(24u));
}

// IQ4_NL: 18 bytes per 32 values: f16 d, 16 bytes of nibbles (low nibbles first half).
fn dq_iq4_nl(base: u32, i: u32) -> f32 {
    let b = base + (i / 32u) * 18u;
    let j = i % 32u;
    let q = (ld_u8(b + 2u + (j % 16u)) >> ((j / 16u) * 4u)) & 0xfu;
    return ld_f16(b) * iq4nl(vec4<u32>(q)).x;
}

// The six-bit scale less 32 of sub-block `ib` (0..8) of the IQ4_XS block at `b`: low nibble
// from byte 4 + ib / 2 (its high nibble for odd ib), high 2 bits from bits 2·ib of the u16 at 2.
fn xs_scale(b: u32, ib: u32) -> f32 {
    let lo = (ld_u8(b + 4u + ib / 2u) >> (4u * (ib % 2u))) & 0xfu;
    let hi = (ld_u16(b + 2u) >> (2u * ib)) & 3u;
    return f32(lo | (hi << 4u)) - 32.0;
}

// IQ4_XS: 136 bytes per 256 values: f16 d, u16 scales_h, 4 bytes scales_l, 128 bytes of
// nibbles, each sub-block of 32 as an IQ4_NL block's.
fn dq_iq4_xs(base: u32, i: u32) -> f32 {
    let b = base + (i / 256u) * 136u;
    let j = i % 256u;
    let ib = j / 32u;
    let l = j % 32u;
    let q = (ld_u8(b + 8u + 16u * ib + (l % 16u)) >> ((l / 16u) * 4u)) & 0xfu;
    return ld_f16(b) * xs_scale(b, ib) * iq4nl(vec4<u32>(q)).x;
}

// Q2_K: 84 bytes per 256 values: 16 scale bytes (scale low nibble, min high nibble, one per
// sub-block of 16), 64 bytes of 2-bit values (element 128h + 32j + l: bits 2j.. of byte
// 32h + l), f16 d, f16 dmin.
fn dq_q2_k(base: u32, i: u32) -> f32 {
    let b = base + (i / 256u) * 84u;
    let e = i % 256u;
    let q = (ld_u8(b + 16u + (e / 128u) * 32u + e % 32u) >> (2u * ((e % 128u) / 32u))) & 3u;
    let sc = ld_u8(b + e / 16u);
    return ld_f16(b + 80u) * f32(sc & 0xfu) * f32(q) - ld_f16(b + 82u) * f32(sc >> 4u);
}

// The 6-bit scale (0..64, offset by 32) of sub-block `s` (0..16) of a Q3_K block whose 12
// scale bytes start at `p`: low 4 bits from byte s % 8 (its high nibble for s ≥ 8), high 2
// bits from bits 2·(s / 4) of byte 8 + s % 4.
fn k3_scale(p: u32, s: u32) -> f32 {
    let lo = (ld_u8(p + s % 8u) >> ((s / 8u) * 4u)) & 0xfu;
    let hi = (ld_u8(p + 8u + s % 4u) >> (2u * (s / 4u))) & 3u;
    return f32(lo | (hi << 4u)) - 32.0;
}

// Q3_K: 110 bytes per 256 values: 32 bytes of high bits (element 128h + 32j + l: bit 4h + j
// of byte l), 64 bytes of low 2 bits (as Q2_K's), 12 scale bytes, f16 d. A value is
// low2 − 4 + 4·hbit (−4..3).
fn dq_q3_k(base: u32, i: u32) -> f32 {
    let b = base + (i / 256u) * 110u;
    let e = i % 256u;
    let h = e / 128u;
    let j = (e % 128u) / 32u;
    let l = e % 32u;
    let low = (ld_u8(b + 32u + h * 32u + l) >> (2u * j)) & 3u;
    let hbit = (ld_u8(b + l) >> (4u * h + j)) & 1u;
    return ld_f16(b + 108u) * k3_scale(b + 96u, e / 16u) * (f32(low + 4u * hbit) - 4.0);
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
// blk·32 .. blk·32 + 32), handed four at a time to `put4(i, values)` (elements i .. i + 4),
// which the including kernel defines (the mat-vec kernel accumulates a dot product with one
// vec4 load of activations, the mat-mul kernel stores into workgroup memory; no private arrays,
// which software rasterisers handle slowly). The scales are read once per call and the quants
// a word at a time. The host appends `fn dq_block(base: u32, blk: u32)` choosing one of these.

// The low (shift 0) or high (shift 4) nibbles of the four bytes of `u`.
fn nibbles(u: u32, shift: u32) -> vec4<f32> {
    let n = (u >> shift) & 0x0f0f0f0fu;
    return vec4<f32>(f32(n & 0xffu), f32((n >> 8u) & 0xffu), f32((n >> 16u) & 0xffu), f32(n >> 24u));
}

// Bit `j`, `j + 1`, `j + 2`, `j + 3` of `qh`, each as 16.0 or 0.0 (Q5's fifth bits).
fn fifth_bits(qh: u32, j: u32) -> vec4<f32> {
    let b = qh >> j;
    return vec4<f32>(f32(b & 1u), f32((b >> 1u) & 1u), f32((b >> 2u) & 1u), f32((b >> 3u) & 1u)) * 16.0;
}

// The four signed bytes of `u`.
fn sbytes(u: u32) -> vec4<f32> {
    let w = bitcast<i32>(u);
    return vec4<f32>(f32((w << 24u) >> 24u), f32((w << 16u) >> 24u), f32((w << 8u) >> 24u), f32(w >> 24u));
}

fn blk_f32(base: u32, blk: u32) {
    let b = base + blk * 128u;
    for (var i = 0u; i < 8u; i++) {
        let o = b + 16u * i;
        put4(4u * i, bitcast<vec4<f32>>(vec4<u32>(ld_w(o), ld_w(o + 4u), ld_w(o + 8u), ld_w(o + 12u))));
    }
}

fn blk_f16(base: u32, blk: u32) {
    let b = base + blk * 64u;
    for (var i = 0u; i < 8u; i++) {
        let o = b + 8u * i;
        put4(4u * i, vec4<f32>(unpack2x16float(ld_w(o)), unpack2x16float(ld_w(o + 4u))));
    }
}

fn blk_bf16(base: u32, blk: u32) {
    let b = base + blk * 64u;
    for (var i = 0u; i < 8u; i++) {
        let u0 = ld_w(b + 8u * i);
        let u1 = ld_w(b + 8u * i + 4u);
        put4(4u * i, bitcast<vec4<f32>>(vec4<u32>(u0 << 16u, u0 & 0xffff0000u, u1 << 16u, u1 & 0xffff0000u)));
    }
}

fn blk_q4_0(base: u32, blk: u32) {
    let b = base + blk * 18u;
    let d = ld_f16(b);
    // The quants' words, at b + 2: one new load per word.
    let odd = ((b + 2u) & 2u) != 0u;
    let w0 = (b + 2u) >> 2u;
    var cur = W[w0];
    for (var w = 0u; w < 4u; w++) {
        let nxt = W[w0 + w + 1u];
        let u = join16(cur, nxt, odd);
        cur = nxt;
        put4(4u * w, (nibbles(u, 0u) - 8.0) * d);
        put4(4u * w + 16u, (nibbles(u, 4u) - 8.0) * d);
    }
}

fn blk_q4_1(base: u32, blk: u32) {
    let b = base + blk * 20u;
    let d = ld_f16(b);
    let m = ld_f16(b + 2u);
    for (var w = 0u; w < 4u; w++) {
        let u = ld_w(b + 4u + 4u * w);
        put4(4u * w, nibbles(u, 0u) * d + m);
        put4(4u * w + 16u, nibbles(u, 4u) * d + m);
    }
}

fn blk_q5_0(base: u32, blk: u32) {
    let b = base + blk * 22u;
    let d = ld_f16(b);
    // The fifth bits' word at b + 2, then the quants' words: one new load per word.
    let odd = ((b + 2u) & 2u) != 0u;
    let w0 = (b + 2u) >> 2u;
    var cur = W[w0];
    var nxt = W[w0 + 1u];
    let qh = join16(cur, nxt, odd);
    cur = nxt;
    for (var w = 0u; w < 4u; w++) {
        nxt = W[w0 + w + 2u];
        let u = join16(cur, nxt, odd);
        cur = nxt;
        put4(4u * w, (nibbles(u, 0u) + fifth_bits(qh, 4u * w) - 16.0) * d);
        put4(4u * w + 16u, (nibbles(u, 4u) + fifth_bits(qh, 4u * w + 16u) - 16.0) * d);
    }
}

fn blk_q5_1(base: u32, blk: u32) {
    let b = base + blk * 24u;
    let d = ld_f16(b);
    let m = ld_f16(b + 2u);
    let qh = ld_w(b + 4u);
    for (var w = 0u; w < 4u; w++) {
        let u = ld_w(b + 8u + 4u * w);
        put4(4u * w, (nibbles(u, 0u) + fifth_bits(qh, 4u * w)) * d + m);
        put4(4u * w + 16u, (nibbles(u, 4u) + fifth_bits(qh, 4u * w + 16u)) * d + m);
    }
}

fn blk_q8_0(base: u32, blk: u32) {
    let b = base + blk * 34u;
    let d = ld_f16(b);
    // The quants' words, at b + 2: one new load per word.
    let odd = ((b + 2u) & 2u) != 0u;
    let w0 = (b + 2u) >> 2u;
    var cur = W[w0];
    for (var w = 0u; w < 8u; w++) {
        let nxt = W[w0 + w + 1u];
        put4(4u * w, sbytes(join16(cur, nxt, odd)) * d);
        cur = nxt;
    }
}

fn blk_q2_k(base: u32, blk: u32) {
    let b = base + (blk / 8u) * 84u;
    let j = blk % 8u;
    let d = ld_f16(b + 80u);
    let dmin = ld_f16(b + 82u);
    let sc0 = ld_u8(b + 2u * j);
    let sc1 = ld_u8(b + 2u * j + 1u);
    let d0 = d * f32(sc0 & 0xfu);
    let d1 = d * f32(sc1 & 0xfu);
    let m0 = dmin * f32(sc0 >> 4u);
    let m1 = dmin * f32(sc1 >> 4u);
    let q = b + 16u + (j / 4u) * 32u;
    let shift = 2u * (j % 4u);
    for (var w = 0u; w < 8u; w++) {
        let u = (ld_w(q + 4u * w) >> shift) & 0x03030303u;
        let v = vec4<f32>(f32(u & 0xffu), f32((u >> 8u) & 0xffu), f32((u >> 16u) & 0xffu), f32(u >> 24u));
        put4(4u * w, select(d1, d0, w < 4u) * v - select(m1, m0, w < 4u));
    }
}

fn blk_q3_k(base: u32, blk: u32) {
    let b = base + (blk / 8u) * 110u;
    let j = blk % 8u;
    let h = j / 4u;
    let d = ld_f16(b + 108u);
    let s0 = d * k3_scale(b + 96u, 2u * j);
    let s1 = d * k3_scale(b + 96u, 2u * j + 1u);
    let lshift = 2u * (j % 4u);
    let hshift = 4u * h + j % 4u;
    // The low bits at b + 32 + 32h and the high bits at b share the block's parity: one new
    // load per word of each.
    let odd = (b & 2u) != 0u;
    let l0 = (b + 32u + 32u * h) >> 2u;
    let h0 = b >> 2u;
    var lcur = W[l0];
    var hcur = W[h0];
    for (var w = 0u; w < 8u; w++) {
        let lnxt = W[l0 + w + 1u];
        let hnxt = W[h0 + w + 1u];
        let lo = (join16(lcur, lnxt, odd) >> lshift) & 0x03030303u;
        let hi = (join16(hcur, hnxt, odd) >> hshift) & 0x01010101u;
        lcur = lnxt;
        hcur = hnxt;
        let q = lo + (hi << 2u);
        let v = vec4<f32>(f32(q & 0xffu), f32((q >> 8u) & 0xffu), f32((q >> 16u) & 0xffu), f32(q >> 24u));
        put4(4u * w, select(s1, s0, w < 4u) * (v - 4.0));
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
        put4(4u * w, d * nibbles(ld_w(q + 4u * w), shift) - m);
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
        // Bit j of each of the four bytes of h, as 16.0 or 0.0.
        let h = (ld_w(b + 16u + 4u * w) >> j) & 0x01010101u;
        let hi = vec4<f32>(f32(h & 1u), f32((h >> 8u) & 1u), f32((h >> 16u) & 1u), f32(h >> 24u)) * 16.0;
        put4(4u * w, d * (nibbles(ld_w(q + 4u * w), shift) + hi) - m);
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
    // ql and qh share the block's parity: one new load per word of each.
    let odd = (b & 2u) != 0u;
    let l0 = ql >> 2u;
    let h0 = qh >> 2u;
    var lcur = W[l0];
    var hcur = W[h0];
    for (var w = 0u; w < 8u; w++) {
        let lnxt = W[l0 + w + 1u];
        let hnxt = W[h0 + w + 1u];
        let lo = (join16(lcur, lnxt, odd) >> lshift) & 0x0f0f0f0fu;
        let hi = (join16(hcur, hnxt, odd) >> hshift) & 0x03030303u;
        lcur = lnxt;
        hcur = hnxt;
        let q = lo | (hi << 4u);
        let v = vec4<f32>(f32(q & 0xffu), f32((q >> 8u) & 0xffu), f32((q >> 16u) & 0xffu), f32(q >> 24u));
        put4(4u * w, select(s1, s0, w < 4u) * (v - 32.0));
    }
}

fn blk_mxfp4(base: u32, blk: u32) {
    let b = base + blk * 17u;
    let d = e8m0_half(ld_u8(b));
    // The 16 bytes of nibbles at b + 1, at any byte alignment: word w is the bytes of W[w0 + w]
    // from shift `s` on, then those of the next word. One new load per word, none past the
    // block's last byte (the last load repeats the previous word when `s` is 0).
    let q = b + 1u;
    let w0 = q >> 2u;
    let last = (q + 15u) >> 2u;
    let s = (q & 3u) * 8u;
    var cur = W[w0];
    for (var w = 0u; w < 4u; w++) {
        let nxt = W[min(w0 + w + 1u, last)];
        let u = (cur >> s) | ((nxt << (24u - s)) << 8u);
        cur = nxt;
        let bytes = vec4<u32>(u, u >> 8u, u >> 16u, u >> 24u);
        put4(4u * w, fp4x2(bytes & vec4<u32>(0xfu)) * d);
        put4(4u * w + 16u, fp4x2((bytes >> vec4<u32>(4u)) & vec4<u32>(0xfu)) * d);
    }
}

fn blk_iq4_nl(base: u32, blk: u32) {
    let b = base + blk * 18u;
    let d = ld_f16(b);
    // The quants' words, at b + 2: one new load per word (as Q4_0's).
    let odd = ((b + 2u) & 2u) != 0u;
    let w0 = (b + 2u) >> 2u;
    var cur = W[w0];
    for (var w = 0u; w < 4u; w++) {
        let nxt = W[w0 + w + 1u];
        let u = join16(cur, nxt, odd);
        cur = nxt;
        let bytes = vec4<u32>(u, u >> 8u, u >> 16u, u >> 24u);
        put4(4u * w, iq4nl(bytes & vec4<u32>(0xfu)) * d);
        put4(4u * w + 16u, iq4nl((bytes >> vec4<u32>(4u)) & vec4<u32>(0xfu)) * d);
    }
}

fn blk_iq4_xs(base: u32, blk: u32) {
    let b = base + (blk / 8u) * 136u;
    let ib = blk % 8u;
    let d = ld_f16(b) * xs_scale(b, ib);
    let q = b + 8u + 16u * ib;
    for (var w = 0u; w < 4u; w++) {
        let u = ld_w(q + 4u * w);
        let bytes = vec4<u32>(u, u >> 8u, u >> 16u, u >> 24u);
        put4(4u * w, iq4nl(bytes & vec4<u32>(0xfu)) * d);
        put4(4u * w + 16u, iq4nl((bytes >> vec4<u32>(4u)) & vec4<u32>(0xfu)) * d);
    }
}
