//! AVX2 kernels of the 32-element formats: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 dot products and the
//! Q8_0/Q8_1 activation quantizers (byte-identical to the reference, `roundf` included).
//!
//! The Q4_0, Q4_1, Q5_0 and Q5_1 dot products sum in the order of [`super::gemm_small`]: each block's
//! exact integer dot product, then `acc = fma(Σ q·a, d_w·d_a, acc)` (and `fma(m, s, acc)`),
//! so that they and its tiles give bit-identical results.

use super::blocks;
use super::gemm_small::SmallBlock;
use super::{dot_i8_i8, f16_at, f16_bytes, hmax_ps, hsum_epi32, load};
use crate::quant::q4::{Q4_0_BYTES, Q4_1_BYTES};
use crate::quant::q5::{Q5_0_BYTES, Q5_1_BYTES};
use crate::quant::q8::{Q8_0_BYTES, Q8_1_BYTES, QK};
use std::arch::x86_64::*;

/// Number of whole blocks both rows hold, at most `n / QK`.
#[inline(always)]
fn blocks(n: usize, w: &[u8], wb: usize, a: &[u8], ab: usize) -> usize {
    debug_assert!(w.len() >= n / QK * wb && a.len() >= n / QK * ab);
    (n / QK).min(w.len() / wb).min(a.len() / ab)
}

/// The 32 nibbles of 16 bytes at `p` as bytes: low nibbles (elements 0..16) in the low lane,
/// high nibbles (16..32) in the high lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles(p: *const u8) -> __m256i {
    // The 16 bytes in both lanes (one broadcast load), the high lane shifted down a nibble.
    // SAFETY: callers pass `p` at a block's 16 bytes of packed nibbles, all readable.
    let b = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(p as *const __m128i) });
    let both = _mm256_blend_epi32::<0xf0>(b, _mm256_srli_epi16::<4>(b));
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// 0xFF in byte `j` where bit `j` of the little-endian u32 at `p` is set, 0 elsewhere.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn bits_to_bytes(p: *const u8) -> __m256i {
    // SAFETY: callers pass `p` at a block's 4 bytes of high bits, all readable.
    let qh = unsafe { (p as *const u32).read_unaligned() };
    let v = _mm256_set1_epi32(qh as i32);
    // Byte j takes byte j / 8 of qh...
    let idx = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bytes = _mm256_shuffle_epi8(v, idx);
    // ...and tests bit j % 8 of it.
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit)
}

pub(super) fn vec_dot_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = blocks(n, w, Q8_0_BYTES, a, Q8_0_BYTES);
    // SAFETY: the table holding this fn is handed out only with AVX2/FMA/F16C present, and
    // every read below is inside the first `nb` blocks of `w` and `a`.
    unsafe { q8_0_impl(nb, w.as_ptr(), a.as_ptr()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_impl(nb: usize, w: *const u8, a: *const u8) -> f32 {
    // Sum order of `gemm_small`'s tiles: each block's exact integer total, then one fma.
    let mut acc = 0.0f32;
    for i in 0..nb {
        // SAFETY: `i < nb`: block `i` starts inside both rows, which hold `nb` whole blocks.
        let (x, y) = unsafe { (w.add(i * Q8_0_BYTES), a.add(i * Q8_0_BYTES)) };
        // SAFETY: `x` and `y` start whole Q8_0 blocks, each opening with its f16 scale.
        let d = unsafe { f16_at(x) * f16_at(y) };
        // SAFETY: bytes `2..34` of a 34-byte Q8_0 block: its 32 quants.
        let p = unsafe { dot_i8_i8(load(x.add(2)), load(y.add(2))) };
        acc = (hsum_epi32(p) as f32).mul_add(d, acc);
    }
    acc
}

pub(super) fn vec_dot_q4_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = blocks(n, w, Q4_0_BYTES, a, Q8_0_BYTES);
    // SAFETY: as in `vec_dot_q8_0`.
    unsafe { q4_0_impl(nb, w.as_ptr(), a.as_ptr()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_impl(nb: usize, w: *const u8, a: *const u8) -> f32 {
    let mut acc = 0.0f32;
    let eight = _mm256_set1_epi8(8);
    for i in 0..nb {
        // SAFETY: `i < nb`: block `i` starts inside both rows, which hold `nb` whole blocks.
        let (x, y) = unsafe { (w.add(i * Q4_0_BYTES), a.add(i * Q8_0_BYTES)) };
        // SAFETY: `x` and `y` start whole blocks, each opening with its f16 scale.
        let d = unsafe { f16_at(x) * f16_at(y) };
        // SAFETY: bytes `2..18` of an 18-byte Q4_0 block: its packed nibbles.
        let qx = unsafe { _mm256_sub_epi8(nibbles(x.add(2)), eight) };
        // SAFETY: bytes `2..34` of a 34-byte Q8_0 block: its 32 quants.
        let p = unsafe { dot_i8_i8(qx, load(y.add(2))) };
        acc = (hsum_epi32(p) as f32).mul_add(d, acc);
    }
    acc
}

pub(super) fn vec_dot_q4_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = blocks(n, w, Q4_1_BYTES, a, Q8_1_BYTES);
    // SAFETY: as in `vec_dot_q8_0`.
    unsafe { with_min_impl::<blocks::Q4_1>(nb, w.as_ptr(), a.as_ptr()) }
}

pub(super) fn vec_dot_q5_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = blocks(n, w, Q5_1_BYTES, a, Q8_1_BYTES);
    // SAFETY: as in `vec_dot_q8_0`.
    unsafe { with_min_impl::<blocks::Q5_1>(nb, w.as_ptr(), a.as_ptr()) }
}

/// The dot product of a format with a min (Q4_1, Q5_1; unsigned stored quants) against Q8_1.
///
/// # Safety
/// AVX2/FMA/F16C present; `nb` whole blocks readable in both rows.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn with_min_impl<B: SmallBlock>(nb: usize, w: *const u8, a: *const u8) -> f32 {
    let mut acc = 0.0f32;
    for i in 0..nb {
        // SAFETY: `i < nb`: block `i` starts inside both rows, which hold `nb` whole blocks.
        let (x, y) = unsafe { (w.add(i * B::BYTES), a.add(i * Q8_1_BYTES)) };
        // SAFETY: `x` and `y` start whole blocks, each opening with its f16 scale.
        let d = unsafe { f16_at(x) * f16_at(y) };
        // SAFETY: `x` is a whole block; bytes `4..36` of a 36-byte Q8_1 block are its quants.
        let p = unsafe { B::dot(x, load(y.add(4))) };
        acc = (hsum_epi32(p) as f32).mul_add(d, acc);
        // SAFETY: bytes `2..4` of both blocks: the minimum and the Q8_1 scaled sum.
        acc = unsafe { f16_at(x.add(2)).mul_add(f16_at(y.add(2)), acc) };
    }
    acc
}

pub(super) fn vec_dot_q5_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = blocks(n, w, Q5_0_BYTES, a, Q8_0_BYTES);
    // SAFETY: as in `vec_dot_q8_0`.
    unsafe { q5_0_impl(nb, w.as_ptr(), a.as_ptr()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_impl(nb: usize, w: *const u8, a: *const u8) -> f32 {
    let mut acc = 0.0f32;
    let high = _mm256_set1_epi8(0xf0u8 as i8);
    for i in 0..nb {
        // SAFETY: `i < nb`: block `i` starts inside both rows, which hold `nb` whole blocks.
        let (x, y) = unsafe { (w.add(i * Q5_0_BYTES), a.add(i * Q8_0_BYTES)) };
        // SAFETY: `x` and `y` start whole blocks, each opening with its f16 scale.
        let d = unsafe { f16_at(x) * f16_at(y) };
        // q − 16 = nibble when bit 4 is set, nibble − 16 (= nibble | 0xF0 as i8) when not.
        // SAFETY: bytes `6..22` (nibbles) and `2..6` (high bits) of a 22-byte Q5_0 block.
        let qx = unsafe {
            _mm256_or_si256(
                nibbles(x.add(6)),
                _mm256_andnot_si256(bits_to_bytes(x.add(2)), high),
            )
        };
        // SAFETY: bytes `2..34` of a 34-byte Q8_0 block: its 32 quants.
        let p = unsafe { dot_i8_i8(qx, load(y.add(2))) };
        acc = (hsum_epi32(p) as f32).mul_add(d, acc);
    }
    acc
}

/// `roundf` (ties away from zero) of each lane, exactly.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_away(v: __m256) -> __m256 {
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    let sign = _mm256_and_ps(v, _mm256_set1_ps(-0.0));
    let abs_frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(v, t));
    let up = _mm256_cmp_ps::<_CMP_GE_OQ>(abs_frac, _mm256_set1_ps(0.5));
    _mm256_add_ps(
        t,
        _mm256_and_ps(up, _mm256_or_ps(sign, _mm256_set1_ps(1.0))),
    )
}

/// Quantize 32 floats at `x` to i8 at `q` as ggml's Q8_0/Q8_1 reference; returns (d, Σq).
///
/// # Safety
/// `x..x + 32` f32 readable, `q..q + 32` writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_block(x: *const f32, q: *mut u8) -> (f32, i32) {
    // SAFETY: `8k + 8 <= 32` f32s from `x`, readable (precondition).
    let v: [__m256; 4] = std::array::from_fn(|k| unsafe { _mm256_loadu_ps(x.add(8 * k)) });
    let abs = |v: __m256| _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
    let m = _mm256_max_ps(
        _mm256_max_ps(abs(v[0]), abs(v[1])),
        _mm256_max_ps(abs(v[2]), abs(v[3])),
    );
    let d = hmax_ps(m) / 127.0;
    let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
    let i = v.map(|v| _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v, id))));
    let sum = hsum_epi32(_mm256_add_epi32(
        _mm256_add_epi32(i[0], i[1]),
        _mm256_add_epi32(i[2], i[3]),
    ));
    // Pack 4×8 i32 to 32 i8; the packs interleave 128-bit lanes, the permute restores order.
    let p16 = [
        _mm256_packs_epi32(i[0], i[1]),
        _mm256_packs_epi32(i[2], i[3]),
    ];
    let p8 = _mm256_packs_epi16(p16[0], p16[1]);
    let p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // SAFETY: `q..q + 32` is writable (precondition).
    unsafe { _mm256_storeu_si256(q as *mut __m256i, p8) };
    (d, sum)
}

pub(super) fn quantize_row_q8_0(src: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(dst.len(), src.len() / QK * Q8_0_BYTES);
    // SAFETY: AVX2/FMA/F16C present (see `vec_dot_q8_0`); `q8_block` gets whole blocks.
    unsafe { q8_rows(src, dst, Q8_0_BYTES) }
}

pub(super) fn quantize_row_q8_1(src: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(dst.len(), src.len() / QK * Q8_1_BYTES);
    // SAFETY: as in `quantize_row_q8_0`.
    unsafe { q8_rows(src, dst, Q8_1_BYTES) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_rows(src: &[f32], dst: &mut [u8], bb: usize) {
    let with_sum = bb == Q8_1_BYTES;
    let off = if with_sum { 4 } else { 2 };
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(bb)) {
        // SAFETY: `x` is a whole 32-float chunk, and `off + 32` bytes fit in the `bb`-byte block `b`
        // (34 for Q8_0, 36 for Q8_1); the CPU features are this fn's own precondition.
        let (d, sum) = unsafe { q8_block(x.as_ptr(), b.as_mut_ptr().add(off)) };
        b[..2].copy_from_slice(&f16_bytes(d));
        if with_sum {
            b[2..4].copy_from_slice(&f16_bytes(sum as f32 * d));
        }
    }
}
