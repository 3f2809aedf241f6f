//! One-token Q4_K and Q5_K products on 512-bit vectors (AVX-512 BW and VNNI): the decode
//! tile of `gemm_k.rs` in fewer than half the instructions, for CPUs that have them.
//!
//! A decode step streams every weight once, so its speed is the memory's unless the kernel
//! is slower than the memory. On two cores the 256-bit tile ran at about the read bandwidth
//! (11.6 GiB/s a thread against ~11 GiB/s of memory each), so the two co-limited. Here one
//! 512-bit load holds two 32-byte chunks of a super-block's nibbles; `vpmaddubsw` multiplies 64
//! of them by the token's bytes and `vpdpwssd` (VNNI) multiplies the pairs' sums by their
//! sub-block's scale and adds them in i32, where AVX2 needs `vpmaddwd` and `vpaddd` on half
//! the width. The token's 256 activation bytes are loaded once per super-block, laid out to
//! match (elements `0..32` beside `64..96`, and so on), for all the tile's rows.
//!
//! The per-block work around the products is done for the tile's 4 rows at once: their 12
//! packed scale bytes unpacked in one 512-bit vector (a row per 128-bit lane, `vpshufb`
//! then widens a scale straight from its byte), their mins' sums in one `vpmaddwd`, their
//! totals reduced together, and their float steps side by side in the lanes of one 128-bit
//! vector. Against the 256-bit tile, 1.5× in L2 (`decode_cached/Q4_K`, one thread, quiet
//! machine: 11.6 → 17.7 GiB/s).
//!
//! Q5_K adds each value's fifth bit from its 32 `qh` bytes, broadcast to both 256-bit halves
//! and shifted per half (`vpsllvw`/`vpsrlvw`) so the bit that vector's values need lands on
//! bit 4 (`decode_cached/Q5_K`: 11.6 → 19.8 GiB/s).
//!
//! **Sum order:** `gemm_k.rs`'s: per row and super-block the exact integer totals (the
//! products' and the mins'), then `acc = fma(f32(T), d·d_a, acc)` and
//! `acc_m += (dmin·d_a)·f32(M)`; the result `acc − acc_m`. The integer totals are exact in
//! any order, so the output is bit for bit the 256-bit tile's.

use super::kquant::k45_bytes;
use super::{prefetch_next, q8k_d};
use crate::quant::QK_K;
use crate::quant::k8::Q8_K_BYTES;
use std::arch::x86_64::*;

/// Offset of the quants in a Q8_K block (after its f32 scale).
const Y_QS: usize = 4;
/// Offset of the sixteen i16 block sums in a Q8_K block.
const Y_BSUMS: usize = 4 + QK_K;

/// `vpshufb` controls for the four 512-bit vectors of a super-block's nibbles: from a row's
/// 8 scale bytes (bytes `0..8` of each 128-bit lane, see [`scales_mins_x4`]), vector `v` needs
/// sub-block `SUB[v].0`'s scale as an i16 in every word of its low 256 bits and `SUB[v].1`'s in
/// its high 256 bits (the byte, then a zero: `0x80` picks zero).
const SCALE_PICK: [__m512i; 4] = {
    /// (sub-block of the low half, sub-block of the high half) of each vector: the low
    /// nibbles of chunks `c, c + 1` are sub-blocks `2c, 2c + 2`, their high nibbles `2c + 1,
    /// 2c + 3`.
    const SUB: [(usize, usize); 4] = [(0, 2), (1, 3), (4, 6), (5, 7)];
    const fn pick(v: usize) -> __m512i {
        let mut b = [0u8; 64];
        let mut i = 0;
        while i < 64 {
            let j = if i < 32 { SUB[v].0 } else { SUB[v].1 };
            b[i] = if i % 2 == 0 { j as u8 } else { 0x80 };
            i += 1;
        }
        // SAFETY: 64 bytes and a 512-bit vector have the same size, and every bit pattern is
        // a valid `__m512i`.
        unsafe { std::mem::transmute::<[u8; 64], __m512i>(b) }
    }
    [pick(0), pick(1), pick(2), pick(3)]
};

/// `vpshufb` control widening each 128-bit lane's bytes `8..16` (a row's 8 mins) to i16.
const MINS_WIDEN: __m512i = {
    let mut b = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        b[i] = if i % 2 == 0 {
            (8 + (i % 16) / 2) as u8
        } else {
            0x80
        };
        i += 1;
    }
    // SAFETY: 64 bytes and a 512-bit vector have the same size, and every bit pattern is a
    // valid `__m512i`.
    unsafe { std::mem::transmute::<[u8; 64], __m512i>(b) }
};

/// The first 16 bytes of four rows' blocks (`x[r]`: f16 `d`, f16 `dmin`, 12 bytes of packed
/// scales and mins) unpacked side by side: 128-bit lane `r` holds row `r`'s 8 scales in
/// bytes `0..8` and its 8 mins in bytes `8..16` (the values of
/// [`crate::quant::k4_5::unpack_scales_mins_k4`]); also the rows' `d`/`dmin` words as the four
/// i32 lanes of the second result.
///
/// # Safety
/// `x[r]..x[r] + 16` readable for each `r`; AVX-512 F/BW present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn scales_mins_x4(x: [*const u8; 4]) -> (__m512i, __m128i) {
    // SAFETY: `x[r]..x[r] + 16` is readable (precondition); the loads are unaligned.
    let [h0, h1, h2, h3] = x.map(|p| unsafe { _mm_loadu_si128(p as *const __m128i) });
    let v = _mm512_inserti32x4::<3>(
        _mm512_inserti32x4::<2>(_mm512_inserti32x4::<1>(_mm512_castsi128_si512(h0), h1), h2),
        h3,
    );
    // Per lane, the words are `[d|dmin, u0, u1, u2]`; the four words wanted are
    // `u0 & 0x3f…`, `(u2 & 0x0f…) | ((u0 >> 6) & 0x03…) << 4`, `u1 & 0x3f…` and
    // `((u2 >> 4) & 0x0f…) | ((u1 >> 6) & 0x03…) << 4` (bytewise masks).
    const LOW6: i32 = 0x3f3f_3f3f;
    const LOW4: i32 = 0x0f0f_0f0f;
    const LOW2: i32 = 0x0303_0303;
    let a = _mm512_shuffle_epi32::<0b11_10_11_01>(v); // [u0, u2, u1, u2]
    let a = _mm512_srlv_epi32(a, _mm512_set4_epi32(4, 0, 0, 0));
    let a = _mm512_and_si512(a, _mm512_set4_epi32(LOW4, LOW6, LOW4, LOW6));
    let b = _mm512_shuffle_epi32::<0b10_10_01_01>(v); // [u0, u0, u1, u1]
    let b = _mm512_and_si512(
        _mm512_srli_epi32::<6>(b),
        _mm512_set4_epi32(LOW2, 0, LOW2, 0),
    );
    let unpacked = _mm512_or_si512(a, _mm512_slli_epi32::<4>(b));
    let d_dmin = _mm512_castsi512_si128(_mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        v,
    ));
    (unpacked, d_dmin)
}

/// Whether this CPU runs this tile (AVX-512 F, BW and VNNI; not with `TESSERA_NO_VNNI`).
pub(super) fn available() -> bool {
    super::gemm_q4k_zmm::available()
}

/// The 32 bytes at `p` and the 32 at `q` as one 512-bit vector (`p`'s in the low half).
///
/// # Safety
/// `p..p + 32` and `q..q + 32` readable; AVX-512 F present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn load_pair(p: *const u8, q: *const u8) -> __m512i {
    // SAFETY: both ranges are readable (precondition); the loads are unaligned.
    unsafe {
        let lo = _mm256_loadu_si256(p as *const __m256i);
        let hi = _mm256_loadu_si256(q as *const __m256i);
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }
}

/// The four rows' totals: lane `r` of the result is the sum of the 16 lanes of `v[r]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
fn hsum4_epi32_512(v: [__m512i; 4]) -> __m128i {
    let s =
        v.map(|x| _mm256_add_epi32(_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64::<1>(x)));
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// Rows per tile.
const R: usize = 4;

/// `vpermd` indices repeating 128-bit lane `r` in all four.
const ROW_LANE: [__m512i; R] = {
    const fn lane(r: i32) -> __m512i {
        let w = [4 * r, 4 * r + 1, 4 * r + 2, 4 * r + 3];
        let v = [
            w[0], w[1], w[2], w[3], w[0], w[1], w[2], w[3], w[0], w[1], w[2], w[3], w[0], w[1],
            w[2], w[3],
        ];
        // SAFETY: 16 i32s and a 512-bit vector have the same size, and every bit pattern is a
        // valid `__m512i`.
        unsafe { std::mem::transmute::<[i32; 16], __m512i>(v) }
    }
    [lane(0), lane(1), lane(2), lane(3)]
};

/// Q4_K one-token tile (Q5_K with `Q5`): `out[r] = w_r · a` for 4 rows (`wrb` bytes apart)
/// over `nb` super-blocks. The signature is `gemm_k.rs`'s tile type; one token, so `arb` and `ldo` go
/// unused. The rows' float steps run side by side in the lanes of one 128-bit vector, each
/// lane the same operations in the same order as the 256-bit tile's scalars.
///
/// # Safety
/// AVX-512 F/BW/VNNI and AVX2/FMA/F16C present; `nb` blocks readable in each of 4 rows and in
/// the token; `out[0..4]` writable.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn tile_k45_zmm<const Q5: bool>(
    nb: usize,
    w: *const u8,
    wrb: usize,
    a: *const u8,
    _arb: usize,
    out: *mut f32,
    _ldo: usize,
) {
    let mut acc = _mm_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    let low = _mm512_set1_epi8(0x0f);
    let bit4 = _mm512_set1_epi8(0x10);
    let bytes = k45_bytes::<Q5>();
    // Q5_K: the shifts that bring the fifth bit of vector `2·half + part`'s values to bit 4
    // from the `qh` bytes (broadcast to both 256-bit halves): bit `4·half + part` in the low
    // half, `4·half + 2 + part` in the high half (left shifts for half 0, right for half 1).
    let counts = |low: i16, high: i16| {
        _mm512_inserti64x4::<1>(_mm512_set1_epi16(low), _mm256_set1_epi16(high))
    };
    let shifts = [counts(4, 2), counts(3, 1), counts(0, 2), counts(1, 3)];
    // Lanes 0, 2, 4, 6 (the rows' `d`) to the low half, 1, 3, 5, 7 (`dmin`) to the high.
    let split = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    for i in 0..nb {
        prefetch_next::<R>(w, wrb, i, bytes);
        // SAFETY: block `i < nb` of the token (precondition).
        let y = unsafe { a.add(i * Q8_K_BYTES) };
        // SAFETY: a Q8_K block opens with its f32 scale.
        let yd = _mm_set1_ps(unsafe { q8k_d(y) });
        // The token's quants beside the nibbles they meet: vector `v` of `ys` pairs elements
        // `128(v/2) + 32(v%2) ..+32` with the 32 that follow 64 later.
        let ys: [__m512i; 4] = std::array::from_fn(|v| {
            let at = Y_QS + 128 * (v / 2) + 32 * (v % 2);
            // SAFETY: bytes `at..at + 96` (`at ≤ 4 + 160`) of the 292-byte Q8_K block.
            unsafe { load_pair(y.add(at), y.add(at + 64)) }
        });
        // SAFETY: bytes `260..292` of the Q8_K block: its sixteen i16 sums.
        let bsums = unsafe { _mm256_loadu_si256(y.add(Y_BSUMS) as *const __m256i) };
        // Σ a over each 32-element sub-block (two 16-element sums, ≤ 32·127).
        let pairs = _mm_hadd_epi16(
            _mm256_castsi256_si128(bsums),
            _mm256_extracti128_si256::<1>(bsums),
        );
        let x: [*const u8; R] =
            // SAFETY: row `r < 4`, super-block `i < nb`: inside the rows (precondition).
            std::array::from_fn(|r| unsafe { w.add(r * wrb + i * bytes) });
        // SAFETY: the first 16 bytes of each row's block (Q4_K and Q5_K open alike).
        let (scales_mins, d_dmin) = unsafe { scales_mins_x4(x) };
        let mut sums = [_mm512_setzero_si512(); R];
        for r in 0..R {
            // Row `r`'s lane of scales and mins in all four lanes.
            let sc = _mm512_permutexvar_epi32(ROW_LANE[r], scales_mins);
            // SAFETY: Q5_K's bytes `16..48`: its fifth bits (only read for Q5_K).
            let qh = Q5.then(|| unsafe {
                _mm512_broadcast_i64x4(_mm256_loadu_si256(x[r].add(16) as *const __m256i))
            });
            for half in 0..2 {
                let qs = if Q5 { 48 } else { 16 };
                // SAFETY: bytes `qs + 64·half..qs + 64·half + 64` of the block: chunks
                // `2·half, 2·half + 1` of its nibbles.
                let q = unsafe { _mm512_loadu_si512(x[r].add(qs + 64 * half) as *const __m512i) };
                let mut lo = _mm512_and_si512(q, low);
                let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), low);
                if let Some(qh) = qh {
                    let fifth = |part: usize| {
                        let n = shifts[2 * half + part];
                        let moved = if half == 0 {
                            _mm512_sllv_epi16(qh, n)
                        } else {
                            _mm512_srlv_epi16(qh, n)
                        };
                        _mm512_and_si512(moved, bit4)
                    };
                    lo = _mm512_or_si512(lo, fifth(0));
                    hi = _mm512_or_si512(hi, fifth(1));
                }
                let s_lo = _mm512_shuffle_epi8(sc, SCALE_PICK[2 * half]);
                let s_hi = _mm512_shuffle_epi8(sc, SCALE_PICK[2 * half + 1]);
                let p_lo = _mm512_maddubs_epi16(lo, ys[2 * half]);
                let p_hi = _mm512_maddubs_epi16(hi, ys[2 * half + 1]);
                sums[r] = _mm512_dpwssd_epi32(sums[r], p_lo, s_lo);
                sums[r] = _mm512_dpwssd_epi32(sums[r], p_hi, s_hi);
            }
        }
        // Each row's Σ_j min_j · Σ a over sub-block j, in its lane.
        let m = _mm512_madd_epi16(
            _mm512_shuffle_epi8(scales_mins, MINS_WIDEN),
            _mm512_broadcast_i32x4(pairs),
        );
        let m = _mm512_add_epi32(m, _mm512_shuffle_epi32::<0b01_00_11_10>(m));
        let m = _mm512_add_epi32(m, _mm512_shuffle_epi32::<0b10_11_00_01>(m));
        let mins_total = _mm512_castsi512_si128(_mm512_permutexvar_epi32(
            _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
            m,
        ));
        // The rows' f16 `d` and `dmin` as f32: `[d0, d1, d2, d3]`, `[dmin0, …, dmin3]`.
        let dm = _mm256_permutevar8x32_ps(_mm256_cvtph_ps(d_dmin), split);
        let (d, dmin) = (_mm256_castps256_ps128(dm), _mm256_extractf128_ps::<1>(dm));
        let total = _mm_cvtepi32_ps(hsum4_epi32_512(sums));
        let mins_total = _mm_cvtepi32_ps(mins_total);
        acc_m = _mm_add_ps(acc_m, _mm_mul_ps(_mm_mul_ps(dmin, yd), mins_total));
        acc = _mm_fmadd_ps(total, _mm_mul_ps(d, yd), acc);
    }
    // SAFETY: `out[0..4]` is writable (precondition); the store is unaligned.
    unsafe { _mm_storeu_ps(out, _mm_sub_ps(acc, acc_m)) };
}
