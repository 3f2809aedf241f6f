//! One-token Q6_K products on 512-bit vectors (AVX-512 BW and VNNI): the 4-row decode tile
//! of `gemm_k.rs` in about half the instructions, for CPUs that have them (as
//! `decode_q4k_zmm` for Q4_K).
//!
//! A Q6_K super-block stores each half (128 values) as 64 bytes of low nibbles (`ql`) and 32
//! bytes of 2-bit high parts (`qh`), every value +32, with a signed 8-bit scale per 16 values.
//! One 512-bit load of a half's `ql` holds two 32-byte runs whose low nibbles are values
//! `0..32` and `32..64` of the half and whose high nibbles are `64..96` and `96..128`; the
//! half's `qh`, broadcast to both 256-bit halves and shifted by a different count in each
//! (`vpsllvw`/`vpsrlvw`), supplies the matching high bits. So each vector holds 64 values in
//! order, against 64 contiguous activation bytes, and each of its 128-bit lanes is exactly one
//! 16-value sub-block: its scale, as i16 in every word of the lane, comes from one `vpshufb`
//! of the scales sign-extended to i32 with lane `l` holding sub-blocks `l, 4 + l, 8 + l,
//! 12 + l`. `vpmaddubsw` then `vpdpwssd` with the scales add 64 products into i32 per
//! instruction pair, where AVX2 needs `vpmaddubsw`, `vpmaddwd` and `vpaddd` for 32.
//! `decode_cached/Q6_K` (one thread, quiet machine): 15.2–17.1 → 24.5 GiB/s.
//!
//! **Sum order:** the 256-bit tile's: per row and super-block the exact integer
//! `Σ sc·Σ q·a − 32·Σ sc·Σ a`, then `acc = fma(f32(T), d·d_a, acc)` in the 4 lanes of one
//! vector. The integer totals are exact in any order, so the output is bit for bit the
//! 256-bit tile's.

use super::{prefetch_next, q8k_d};
use crate::quant::QK_K;
use crate::quant::k6::Q6_K_BYTES;
use crate::quant::k8::Q8_K_BYTES;
use std::arch::x86_64::*;

/// Offset of the quants in a Q8_K block (after its f32 scale).
const Y_QS: usize = 4;
/// Offset of the sixteen i16 block sums in a Q8_K block.
const Y_BSUMS: usize = 4 + QK_K;
/// Offset of the high bits in a Q6_K block (after 128 bytes of low nibbles).
const QH: usize = 128;
/// Offset of the sixteen i8 scales in a Q6_K block.
const SCALES: usize = 192;
/// Offset of the f16 `d` in a Q6_K block.
const D: usize = 208;
/// Rows per tile.
const R: usize = 4;

/// `vpshufb` controls for the four vectors of a super-block (`m = 2·half + {0: low nibbles,
/// 1: high nibbles}`): the low 16 bits of i32 `m` of each lane (that lane's sub-block scale
/// for vector `m`) in every word of the lane.
const SCALE_PICK: [__m512i; 4] = {
    const fn pick(m: usize) -> __m512i {
        let mut b = [0u8; 64];
        let mut i = 0;
        while i < 64 {
            b[i] = (4 * m + i % 2) as u8;
            i += 1;
        }
        // SAFETY: 64 bytes and a 512-bit vector have the same size, and every bit pattern is
        // a valid `__m512i`.
        unsafe { std::mem::transmute::<[u8; 64], __m512i>(b) }
    }
    [pick(0), pick(1), pick(2), pick(3)]
};

/// The 4 rows' totals: lane `r` of the result is the sum of the 16 lanes of `v[r]` less 32
/// times the 8 lanes of `corr[r]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
fn totals4(v: [__m512i; R], corr: [__m256i; R]) -> __m128i {
    let s: [__m256i; R] = std::array::from_fn(|r| {
        let x = v[r];
        let s = _mm256_add_epi32(_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64::<1>(x));
        _mm256_sub_epi32(s, _mm256_slli_epi32::<5>(corr[r]))
    });
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// Q6_K one-token tile: `out[r] = w_r · a` for 4 rows (`wrb` bytes apart) over `nb`
/// super-blocks. The signature is `gemm_k.rs`'s tile type; one token, so `arb` and `ldo` go
/// unused.
///
/// # Safety
/// AVX-512 F/BW/VNNI and AVX2/FMA/F16C present; `nb` blocks readable in each of 4 rows and in
/// the token; `out[0..4]` writable.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn tile_q6_k_zmm(
    nb: usize,
    w: *const u8,
    wrb: usize,
    a: *const u8,
    _arb: usize,
    out: *mut f32,
    _ldo: usize,
) {
    let mut acc = _mm_setzero_ps();
    let low4 = _mm512_set1_epi8(0x0f);
    let bits45 = _mm512_set1_epi8(0x30);
    // The 2-bit high parts to bits 4..6 of each byte, from `qh` broadcast to both 256-bit
    // halves: the low nibbles' vector takes bits 0..2 (low half) and 2..4 (high half) of each
    // `qh` byte, the high nibbles' vector bits 4..6 and 6..8. Shifting 16-bit words moves
    // bits across the byte boundary only outside bits 4..6, which the mask keeps.
    let shl_lo = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(2));
    let shr_hi = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2));
    // `vpshufb` control gathering the 16 scale bytes as `[s0, s4, s8, s12, s1, s5, …]`, so
    // that sign-extended to i32, 128-bit lane `l` holds the scales of sub-blocks `l, 4 + l,
    // 8 + l, 12 + l`.
    let by_lane = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for i in 0..nb {
        prefetch_next::<R>(w, wrb, i, Q6_K_BYTES);
        // SAFETY: block `i < nb` of the token (precondition).
        let y = unsafe { a.add(i * Q8_K_BYTES) };
        // SAFETY: a Q8_K block opens with its f32 scale.
        let yd = _mm_set1_ps(unsafe { q8k_d(y) });
        // SAFETY: bytes `4 + 64m..68 + 64m` (`m < 4`) of the 292-byte Q8_K block: its quants.
        let ys: [__m512i; 4] = std::array::from_fn(|m| unsafe {
            _mm512_loadu_si512(y.add(Y_QS + 64 * m) as *const __m512i)
        });
        // SAFETY: bytes `260..292` of the Q8_K block: its sixteen i16 sums.
        let bsums = unsafe { _mm256_loadu_si256(y.add(Y_BSUMS) as *const __m256i) };
        let mut sums = [_mm512_setzero_si512(); R];
        let mut corr = [_mm256_setzero_si256(); R];
        let mut xd = [0u16; R];
        for r in 0..R {
            // SAFETY: row `r < 4`, super-block `i < nb`: inside the rows (precondition).
            let x = unsafe { w.add(r * wrb + i * Q6_K_BYTES) };
            // SAFETY: bytes `192..208` of the 210-byte block: its sixteen i8 scales.
            let sc8 = unsafe { _mm_loadu_si128(x.add(SCALES) as *const __m128i) };
            // Σ_j sc_j · Σ a over sub-block j, in 8 i32 lanes (taken 32 times off the sum).
            corr[r] = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), bsums);
            let sc = _mm512_cvtepi8_epi32(_mm_shuffle_epi8(sc8, by_lane));
            // SAFETY: bytes `208..210` of the block: its f16 `d`.
            xd[r] = unsafe { (x.add(D) as *const u16).read_unaligned() };
            for h in 0..2 {
                // SAFETY: bytes `64h..64h + 64` (`ql` of half `h`) and `128 + 32h..160 + 32h`
                // (its `qh`) of the 210-byte block.
                let (ql, qh) = unsafe {
                    (
                        _mm512_loadu_si512(x.add(64 * h) as *const __m512i),
                        _mm512_broadcast_i64x4(_mm256_loadu_si256(
                            x.add(QH + 32 * h) as *const __m256i
                        )),
                    )
                };
                let v_lo = _mm512_or_si512(
                    _mm512_and_si512(ql, low4),
                    _mm512_and_si512(_mm512_sllv_epi16(qh, shl_lo), bits45),
                );
                let v_hi = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(ql), low4),
                    _mm512_and_si512(_mm512_srlv_epi16(qh, shr_hi), bits45),
                );
                for (m, v) in [(2 * h, v_lo), (2 * h + 1, v_hi)] {
                    let s = _mm512_shuffle_epi8(sc, SCALE_PICK[m]);
                    let p = _mm512_maddubs_epi16(v, ys[m]);
                    sums[r] = _mm512_dpwssd_epi32(sums[r], p, s);
                }
            }
        }
        let d = _mm_cvtph_ps(_mm_setr_epi16(
            xd[0] as i16,
            xd[1] as i16,
            xd[2] as i16,
            xd[3] as i16,
            0,
            0,
            0,
            0,
        ));
        let total = _mm_cvtepi32_ps(totals4(sums, corr));
        acc = _mm_fmadd_ps(total, _mm_mul_ps(d, yd), acc);
    }
    // SAFETY: `out[0..4]` is writable (precondition); the store is unaligned.
    unsafe { _mm_storeu_ps(out, acc) };
}
