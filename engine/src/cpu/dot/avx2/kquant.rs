//! AVX2 kernels of the K-quants: Q4_K, Q5_K and Q6_K dot products against Q8_K, and the
//! Q8_K activation quantizer (byte-identical to the reference).
//!
//! Q5_K is Q4_K with a fifth bit per value: the same 6-bit scales and mins, the same nibbles
//! (at byte 48 instead of 16), and 32 bytes `qh` whose bit `e / 32` of byte `e % 32` is
//! value `e`'s bit 4. Its kernels are Q4_K's with [`k45_values`] adding that bit.

use super::{f16_at, hmax_ps, hsum_epi32, load, q8k_d, unpack_q6_k_half};
use crate::quant::QK_K;
use crate::quant::k4_5::{Q4_K_BYTES, Q5_K_BYTES, unpack_scales_mins_k4};
use crate::quant::k6::Q6_K_BYTES;
use crate::quant::k8::{Q8_K_BYTES, q8k_bsum};
use std::arch::x86_64::*;

/// Number of whole super-blocks both rows hold, at most `n / QK_K`.
#[inline(always)]
fn blocks(n: usize, w: &[u8], wb: usize, a: &[u8]) -> usize {
    debug_assert!(w.len() >= n / QK_K * wb && a.len() >= n / QK_K * Q8_K_BYTES);
    (n / QK_K).min(w.len() / wb).min(a.len() / Q8_K_BYTES)
}

/// Bytes of a Q4_K (`Q5 = false`) or Q5_K block.
pub(super) const fn k45_bytes<const Q5: bool>() -> usize {
    if Q5 { Q5_K_BYTES } else { Q4_K_BYTES }
}

/// Bit `k` (`k < 8`) of each byte of `qh` moved to bit 4, the other bits cleared (16-bit
/// shifts move bits across the byte boundary only below bit 4 or above it, which the mask
/// drops).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bit_to_4(qh: __m256i, k: usize) -> __m256i {
    let moved = if k <= 4 {
        _mm256_sll_epi16(qh, _mm_cvtsi32_si128(4 - k as i32))
    } else {
        _mm256_srl_epi16(qh, _mm_cvtsi32_si128(k as i32 - 4))
    };
    _mm256_and_si256(moved, _mm256_set1_epi8(0x10))
}

/// Values `64c..64c + 32` and `64c + 32..64c + 64` (`c < 4`) of the Q4_K (`Q5 = false`) or
/// Q5_K block at `x`, one byte each (0..=15, or 0..=31 with Q5_K's fifth bit).
///
/// # Safety
/// The block at `x` readable; AVX2 present.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn k45_values<const Q5: bool>(x: *const u8, c: usize) -> (__m256i, __m256i) {
    let low = _mm256_set1_epi8(0x0f);
    let qs = if Q5 { 48 } else { 16 };
    // SAFETY: bytes `qs + 32c..qs + 32c + 32` (`c < 4`) of the block: its nibbles.
    let q = unsafe { load(x.add(qs + 32 * c)) };
    let lo = _mm256_and_si256(q, low);
    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low);
    if !Q5 {
        return (lo, hi);
    }
    // SAFETY: bytes `16..48` of the 176-byte Q5_K block: its fifth bits.
    let qh = unsafe { load(x.add(16)) };
    (
        _mm256_or_si256(lo, bit_to_4(qh, 2 * c)),
        _mm256_or_si256(hi, bit_to_4(qh, 2 * c + 1)),
    )
}

pub(super) fn vec_dot_q4_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = blocks(n, w, Q4_K_BYTES, a);
    // SAFETY: the table holding this fn is handed out only with AVX2/FMA/F16C present; reads
    // stay inside the first `nb` blocks of `w` and `a`.
    unsafe { k45_impl::<false>(nb, w, a) }
}

pub(super) fn vec_dot_q5_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = blocks(n, w, Q5_K_BYTES, a);
    // SAFETY: as in `vec_dot_q4_k`.
    unsafe { k45_impl::<true>(nb, w, a) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k45_impl<const Q5: bool>(nb: usize, w: &[u8], a: &[u8]) -> f32 {
    // Sum order of `gemm_q4k_packed`: each super-block's exact integer total, then one fma.
    let bytes = k45_bytes::<Q5>();
    let mut acc = 0.0f32;
    let mut acc_m = 0.0f32;
    for i in 0..nb {
        let xb = &w[i * bytes..(i + 1) * bytes];
        let yb = &a[i * Q8_K_BYTES..(i + 1) * Q8_K_BYTES];
        let (x, y) = (xb.as_ptr(), yb.as_ptr());
        // SAFETY: `y` starts the whole 292-byte Q8_K block `yb`, which opens with its f32 scale.
        let yd = unsafe { q8k_d(y) };
        let (sc, m) = unpack_scales_mins_k4(&xb[4..16]);
        let mut summs = 0i32;
        for (s, ms) in m.iter().enumerate() {
            summs += *ms as i32 * (q8k_bsum(yb, 2 * s) + q8k_bsum(yb, 2 * s + 1));
        }
        // SAFETY: bytes `2..4` of the whole block `xb`: its f16 `dmin`.
        acc_m += unsafe { f16_at(x.add(2)) } * yd * summs as f32;
        let mut sumi = _mm256_setzero_si256();
        for c in 0..4 {
            // SAFETY: `xb` is a whole block; AVX2 is present.
            let (lo, hi) = unsafe { k45_values::<Q5>(x, c) };
            // SAFETY: bytes `4 + 64c..68 + 64c` (`c < 4`) of the 292-byte block `yb`: its quants.
            let (y0, y1) = unsafe { (load(y.add(4 + 64 * c)), load(y.add(36 + 64 * c))) };
            let p0 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, y0),
                _mm256_set1_epi16(sc[2 * c] as i16),
            );
            let p1 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, y1),
                _mm256_set1_epi16(sc[2 * c + 1] as i16),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
        }
        // SAFETY: bytes `0..2` of the block `xb`: its f16 `d`.
        let d = unsafe { f16_at(x) } * yd;
        acc = (hsum_epi32(sumi) as f32).mul_add(d, acc);
    }
    acc - acc_m
}

pub(super) fn vec_dot_q6_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = blocks(n, w, Q6_K_BYTES, a);
    // SAFETY: as in `vec_dot_q4_k`.
    unsafe { q6_k_impl(nb, w, a) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_impl(nb: usize, w: &[u8], a: &[u8]) -> f32 {
    // Sum order of `gemm_q6k_packed`: each super-block's exact integer total, then one fma.
    let mut acc = 0.0f32;
    for i in 0..nb {
        let xb = &w[i * Q6_K_BYTES..(i + 1) * Q6_K_BYTES];
        let yb = &a[i * Q8_K_BYTES..(i + 1) * Q8_K_BYTES];
        let (x, y) = (xb.as_ptr(), yb.as_ptr());
        let sc = |s: usize| xb[192 + s] as i8 as i16;
        // The values are stored +32: subtract 32·Σ sc·bsum once per block.
        let mut corr = 0i32;
        for s in 0..16 {
            corr += sc(s) as i32 * q8k_bsum(yb, s);
        }
        let mut sumi = _mm256_setr_epi32(-32 * corr, 0, 0, 0, 0, 0, 0, 0);
        for h in 0..2 {
            // SAFETY: `xb` is a whole Q6_K block (210 bytes ≥ 192).
            let q = unsafe { unpack_q6_k_half(x, h) };
            for (k, qk) in q.into_iter().enumerate() {
                // SAFETY: bytes `4 + 128h + 32k..36 + 128h + 32k` (`h < 2`, `k < 4`) of the 292-byte block
                // `yb`: its quants.
                let yk = unsafe { load(y.add(4 + 128 * h + 32 * k)) };
                let s = 8 * h + 2 * k;
                let scales = _mm256_set_m128i(_mm_set1_epi16(sc(s + 1)), _mm_set1_epi16(sc(s)));
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qk, yk), scales);
                sumi = _mm256_add_epi32(sumi, p);
            }
        }
        // SAFETY: bytes `208..210` of `xb` (its f16 `d`) and `0..4` of `yb` (its f32 scale).
        let d = unsafe { f16_at(x.add(208)) } * unsafe { q8k_d(y) };
        acc = (hsum_epi32(sumi) as f32).mul_add(d, acc);
    }
    acc
}

pub(super) fn quantize_row_q8_k(src: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(dst.len(), src.len() / QK_K * Q8_K_BYTES);
    // SAFETY: AVX2/FMA/F16C present (see `vec_dot_q4_k`); whole blocks only.
    unsafe { q8_k_rows(src, dst) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_k_rows(src: &[f32], dst: &mut [u8]) {
    let sign = _mm256_set1_ps(-0.0);
    for (x, b) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q8_K_BYTES)) {
        let xp = x.as_ptr();
        let mut m = _mm256_setzero_ps();
        for k in 0..QK_K / 8 {
            m = _mm256_max_ps(
                m,
                // SAFETY: `8k + 8 <= QK_K`: inside the whole chunk `x`.
                _mm256_andnot_ps(sign, unsafe { _mm256_loadu_ps(xp.add(8 * k)) }),
            );
        }
        let amax = hmax_ps(m);
        if amax == 0.0 {
            b.fill(0);
            continue;
        }
        // The signed value of the first element of largest magnitude, as the reference picks it.
        let am = _mm256_set1_ps(amax);
        let mut max = 0.0f32;
        for k in 0..QK_K / 8 {
            // SAFETY: `8k + 8 <= QK_K`: inside the whole chunk `x`.
            let v = _mm256_andnot_ps(sign, unsafe { _mm256_loadu_ps(xp.add(8 * k)) });
            let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(v, am));
            if hit != 0 {
                max = x[8 * k + hit.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        let vs = _mm256_set1_ps(iscale);
        let cap = _mm256_set1_epi32(127);
        let (head, sums) = b.split_at_mut(4 + QK_K);
        let q = &mut head[4..];
        for g in 0..QK_K / 32 {
            // nearest_int is round-to-nearest-even: the default MXCSR mode of cvtps.
            let i: [__m256i; 4] = [0, 1, 2, 3].map(|k| {
                // SAFETY: `32g + 8k + 8 <= QK_K`: inside the whole chunk `x`.
                let v = unsafe { _mm256_loadu_ps(xp.add(32 * g + 8 * k)) };
                _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v, vs)), cap)
            });
            let s0 = hsum_epi32(_mm256_add_epi32(i[0], i[1]));
            let s1 = hsum_epi32(_mm256_add_epi32(i[2], i[3]));
            sums[4 * g..4 * g + 2].copy_from_slice(&(s0 as i16).to_le_bytes());
            sums[4 * g + 2..4 * g + 4].copy_from_slice(&(s1 as i16).to_le_bytes());
            let p16 = [
                _mm256_packs_epi32(i[0], i[1]),
                _mm256_packs_epi32(i[2], i[3]),
            ];
            let p8 = _mm256_packs_epi16(p16[0], p16[1]);
            let p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            // SAFETY: `32g + 32 <= QK_K`: inside the 256 quant bytes `q`.
            unsafe { _mm256_storeu_si256(q.as_mut_ptr().add(32 * g) as *mut __m256i, p8) };
        }
        b[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}
