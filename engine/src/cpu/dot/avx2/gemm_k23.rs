//! AVX2 products of the 2- and 3-bit K-quants (Q2_K, Q3_K) against Q8_K activations: one tile
//! of up to 4 weight rows × 4 tokens serves decode (1 token), batches and prompts, and the
//! dot product is its 1 × 1 case, so every path gives the same bits.
//!
//! A tile unpacks each weight super-block once for all its tokens: the 256 2-bit values as
//! eight 32-byte vectors (vector `k` holds elements `32k..32k+32`, sub-blocks `2k` and
//! `2k + 1`), the sixteen sub-block scales as i16 words. Per token, one `maddubs` of a vector
//! with the token's 32 bytes gives pair sums, and one `madd` with the two sub-blocks' scales
//! (picked into each 128-bit lane by `vpshufb`) adds them up in i32.
//!
//! - **Q3_K** values are `q = low2 − 4 + 4·hbit` (−4..=3): the tile multiplies `q + 4` (0..=7,
//!   unsigned for `maddubs`) and takes `4·Σ_s (sc_s − 32)·Σa` off with one `madd` of the
//!   activations' sixteen block sums.
//! - **Q2_K** values are 0..=3 with a scale and a min per sub-block: the mins meet the block
//!   sums in one `madd`.
//!
//! **Sum order:** per row, token and super-block the exact integer totals — Q3_K
//! `T = Σ_s (sc_s − 32)·Σ q·a`; Q2_K `T = Σ_s sc_s·Σ q·a` and `M = Σ_s m_s·Σa` — then
//! `acc = fma(f32(T), d·d_a, acc)` (Q2_K: and `acc_m = fma(f32(M), dmin·d_a, acc_m)`, the
//! result `acc − acc_m`). The scalar reference sums the same integers and rounds its floats
//! in another order (within the dot tests' NMSE bound).

// Row and token indices address accumulators, weight rows and activation rows together.
#![allow(clippy::needless_range_loop)]

use super::gemm_k::Q6_SCALE_PICK;
use super::{checked_blocks, f16_at, hsum_epi32, load, prefetch_next, q8k_d};
use crate::cpu::dot::GemmArgs;
use crate::quant::QK_K;
use crate::quant::k2_3::{Q2_K_BYTES, Q3_K_BYTES};
use crate::quant::k8::Q8_K_BYTES;
use std::arch::x86_64::*;

/// Offset of the quants in a Q8_K block (after its f32 scale).
const Y_QS: usize = 4;
/// Offset of the sixteen i16 block sums in a Q8_K block.
const Y_BSUMS: usize = 4 + QK_K;

/// A 2- or 3-bit K-quant as the tile reads it.
trait K23 {
    /// Bytes per super-block.
    const BYTES: usize;
    /// Whether the format has mins (Q2_K).
    const HAS_MIN: bool;

    /// The super-block at `x` unpacked: the eight value vectors (unsigned, ≤ 7), the sixteen
    /// scales as i16 words (the multipliers of `T`), the sixteen words that meet the block
    /// sums (Q3_K: `−4·(sc − 32)`, added to `T`; Q2_K: the mins, for `M`), `d` and `dmin`.
    ///
    /// # Safety
    /// AVX2 present; `x..x + BYTES` readable.
    unsafe fn unpack(x: *const u8) -> Unpacked;
}

/// One super-block of one row, unpacked for the tile's tokens.
struct Unpacked {
    /// Elements `32k..32k + 32`, unsigned.
    q: [__m256i; 8],
    /// Sub-block scales `0..8` in both 128-bit lanes (i16 words), for [`Q6_SCALE_PICK`].
    sc_lo: __m256i,
    /// Sub-block scales `8..16` in both 128-bit lanes.
    sc_hi: __m256i,
    /// Sixteen i16 words against the activations' sixteen block sums.
    per_bsum: __m256i,
    d: f32,
    dmin: f32,
}

/// The 256 2-bit values of the 64 bytes at `qs`: vector `4h + j` holds bits `2j..2j+2` of
/// bytes `32h..32h + 32` (elements `128h + 32j..+32`).
///
/// # Safety
/// AVX2 present; `qs..qs + 64` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn low2(qs: *const u8) -> [__m256i; 8] {
    let m3 = _mm256_set1_epi8(3);
    // SAFETY: two 32-byte loads inside the 64 readable bytes (precondition).
    let (q0, q1) = unsafe { (load(qs), load(qs.add(32))) };
    [
        _mm256_and_si256(q0, m3),
        _mm256_and_si256(_mm256_srli_epi16::<2>(q0), m3),
        _mm256_and_si256(_mm256_srli_epi16::<4>(q0), m3),
        _mm256_and_si256(_mm256_srli_epi16::<6>(q0), m3),
        _mm256_and_si256(q1, m3),
        _mm256_and_si256(_mm256_srli_epi16::<2>(q1), m3),
        _mm256_and_si256(_mm256_srli_epi16::<4>(q1), m3),
        _mm256_and_si256(_mm256_srli_epi16::<6>(q1), m3),
    ]
}

/// Sixteen i16 words as scales `0..8` and `8..16`, each in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn halves(w: __m256i) -> (__m256i, __m256i) {
    (
        _mm256_permute2x128_si256::<0x00>(w, w),
        _mm256_permute2x128_si256::<0x11>(w, w),
    )
}

/// Q2_K: `{ scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16 }`.
struct Q2K;

impl K23 for Q2K {
    const BYTES: usize = Q2_K_BYTES;
    const HAS_MIN: bool = true;

    #[inline(always)]
    unsafe fn unpack(x: *const u8) -> Unpacked {
        // SAFETY: the trait's contract is `unpack_q2_k`'s.
        unsafe { unpack_q2_k(x) }
    }
}

/// [`K23::unpack`] of Q2_K.
///
/// # Safety
/// AVX2 present; the 84 bytes at `x` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_q2_k(x: *const u8) -> Unpacked {
    // SAFETY: bytes `0..16` of the 84-byte block: its packed scales and mins.
    let packed = unsafe { _mm_loadu_si128(x as *const __m128i) };
    let m4 = _mm_set1_epi8(0x0f);
    let sc = _mm256_cvtepu8_epi16(_mm_and_si128(packed, m4));
    let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), m4));
    let (sc_lo, sc_hi) = halves(sc);
    Unpacked {
        // SAFETY: bytes `16..80`: the 2-bit values.
        q: unsafe { low2(x.add(16)) },
        sc_lo,
        sc_hi,
        per_bsum: mins,
        // SAFETY: bytes `80..84`: the f16 `d` and `dmin`.
        d: unsafe { f16_at(x.add(80)) },
        // SAFETY: as above.
        dmin: unsafe { f16_at(x.add(82)) },
    }
}

/// Q3_K: `{ hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16 }`.
struct Q3K;

impl K23 for Q3K {
    const BYTES: usize = Q3_K_BYTES;
    const HAS_MIN: bool = false;

    #[inline(always)]
    unsafe fn unpack(x: *const u8) -> Unpacked {
        // SAFETY: the trait's contract is `unpack_q3_k`'s.
        unsafe { unpack_q3_k(x) }
    }
}

/// [`K23::unpack`] of Q3_K.
///
/// # Safety
/// AVX2 present; the 110 bytes at `x` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_q3_k(x: *const u8) -> Unpacked {
    // SAFETY: bytes `32..96` of the 110-byte block: the low 2 bits of its values.
    let mut q = unsafe { low2(x.add(32)) };
    // SAFETY: bytes `0..32`: the high bits (bit `4h + j` of byte `l` for element
    // `128h + 32j + l`).
    let hm = unsafe { load(x) };
    let one = _mm256_set1_epi8(1);
    for (k, q) in q.iter_mut().enumerate() {
        // Shift counts 0..=7 within 16-bit words: bit `k` of each byte lands on bit 0, and
        // the mask drops what came down from the byte above.
        let bit = _mm256_and_si256(_mm256_srl_epi16(hm, _mm_cvtsi32_si128(k as i32)), one);
        // q + 4 = low2 + 4·hbit.
        *q = _mm256_or_si256(*q, _mm256_slli_epi16::<2>(bit));
    }
    // SAFETY: bytes `96..108`: the 12 bytes of sixteen packed 6-bit scales.
    let sc = unsafe { scales_q3_k(x.add(96)) };
    let sc = _mm256_sub_epi16(_mm256_cvtepu8_epi16(sc), _mm256_set1_epi16(32));
    let (sc_lo, sc_hi) = halves(sc);
    Unpacked {
        q,
        sc_lo,
        sc_hi,
        // Σ (q + 4)·a·sc − 4·Σ sc·Σa: the block sums meet −4·sc (|·| ≤ 128).
        per_bsum: _mm256_mullo_epi16(sc, _mm256_set1_epi16(-4)),
        // SAFETY: bytes `108..110`: the f16 `d`.
        d: unsafe { f16_at(x.add(108)) },
        dmin: 0.0,
    }
}

/// Q3_K's sixteen 6-bit scales (0..=63, offset by 32) from the 12 bytes at `s`, as bytes:
/// `quant::k2_3::unpack_scales_q3k` on vectors. Scale `j`'s low 4 bits are the low (`j < 8`) or high
/// nibble of byte `j % 8`; its high 2 bits are bits `2·(j / 4)..` of byte `8 + j % 4`.
///
/// # Safety
/// AVX2 present; `s..s + 12` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales_q3_k(s: *const u8) -> __m128i {
    let m4 = _mm_set1_epi8(0x0f);
    // SAFETY: bytes `0..8` and `8..12` of the 12 (precondition).
    let (lo8, hi4) = unsafe {
        (
            _mm_loadl_epi64(s as *const __m128i),
            (s.add(8) as *const i32).read_unaligned(),
        )
    };
    let low = _mm_unpacklo_epi64(
        _mm_and_si128(lo8, m4),
        _mm_and_si128(_mm_srli_epi16::<4>(lo8), m4),
    );
    // Byte `j` of the four copies of bytes 8..12, shifted by 2·(j / 4) within its 32-bit lane.
    let high = _mm_and_si128(
        _mm_srlv_epi32(_mm_set1_epi32(hi4), _mm_setr_epi32(0, 2, 4, 6)),
        _mm_set1_epi8(3),
    );
    _mm_or_si128(low, _mm_slli_epi16::<4>(high))
}

/// `out[t·ldo + r] = w_r · a_t` for `R` rows (`wrb` bytes apart) and `T` tokens (`arb` apart)
/// over `nb` super-blocks, in the module's sum order.
///
/// # Safety
/// AVX2/FMA/F16C present; `nb` blocks readable in each row and token; `out` writable at every
/// `t·ldo + r`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<K: K23, const R: usize, const T: usize>(
    nb: usize,
    w: *const u8,
    wrb: usize,
    a: *const u8,
    arb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[0.0f32; T]; R];
    let mut acc_m = [[0.0f32; T]; R];
    for i in 0..nb {
        // The next tile's rows: each row is its own short stream (with several tokens only
        // the first pass over these rows reads memory; the prefetches of later ones hit).
        prefetch_next::<R>(w, wrb, i, K::BYTES);
        for r in 0..R {
            // SAFETY: row `r < R`, super-block `i < nb`: inside the rows (precondition).
            let u = unsafe { K::unpack(w.add(r * wrb + i * K::BYTES)) };
            let scales: [__m256i; 8] = std::array::from_fn(|k| {
                let src = if k < 4 { u.sc_lo } else { u.sc_hi };
                _mm256_shuffle_epi8(src, Q6_SCALE_PICK[k % 4])
            });
            for t in 0..T {
                // SAFETY: token `t < T`, block `i < nb`: inside the activations (precondition).
                let y = unsafe { a.add(t * arb + i * Q8_K_BYTES) };
                // SAFETY: bytes `260..292` of the 292-byte Q8_K block: its sixteen i16 sums.
                let bsums = unsafe { load(y.add(Y_BSUMS)) };
                let per_bsum = _mm256_madd_epi16(bsums, u.per_bsum);
                let mut sum = if K::HAS_MIN {
                    _mm256_setzero_si256()
                } else {
                    per_bsum
                };
                for k in 0..8 {
                    // SAFETY: bytes `4 + 32k..36 + 32k` (`k < 8`) of the block: its quants.
                    let yk = unsafe { load(y.add(Y_QS + 32 * k)) };
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(u.q[k], yk), scales[k]);
                    sum = _mm256_add_epi32(sum, p);
                }
                // SAFETY: a Q8_K block opens with its f32 scale.
                let yd = unsafe { q8k_d(y) };
                acc[r][t] = (hsum_epi32(sum) as f32).mul_add(u.d * yd, acc[r][t]);
                if K::HAS_MIN {
                    acc_m[r][t] = (hsum_epi32(per_bsum) as f32).mul_add(u.dmin * yd, acc_m[r][t]);
                }
            }
        }
    }
    for t in 0..T {
        for r in 0..R {
            let v = if K::HAS_MIN {
                acc[r][t] - acc_m[r][t]
            } else {
                acc[r][t]
            };
            // SAFETY: `out` is writable at every `t·ldo + r` with `t < T`, `r < R` (precondition).
            unsafe { *out.add(t * ldo + r) = v };
        }
    }
}

/// Rows per tile.
const TILE_R: usize = 4;
/// Tokens per tile when there are several.
const TILE_T: usize = 4;

/// Checks `g` and `out` and runs the tiles over the whole product: 4 × 4 tiles, then the
/// rest of the tokens 4 rows × 1, then the last rows 1 × 1.
fn gemm<K: K23>(g: &GemmArgs<'_>, out: &mut [f32]) {
    let Some(nb) = checked_blocks(g, out, QK_K, K::BYTES, Q8_K_BYTES, 0) else {
        return;
    };
    let (w, a, o) = (g.w.as_ptr(), g.a.as_ptr(), out.as_mut_ptr());
    let (wrb, arb, rows) = (g.w_stride, g.a_stride, g.rows);
    // SAFETY: the table holding the callers is handed out only with AVX2/FMA/F16C present;
    // the checks above keep every block of every row and token in bounds, and each tile
    // writes only its own outputs inside `rows × tokens`.
    unsafe {
        let mut r = 0;
        while r + TILE_R <= rows {
            let mut t = 0;
            while t + TILE_T <= g.tokens {
                let at = (w.add(r * wrb), a.add(t * arb), o.add(t * rows + r));
                tile::<K, TILE_R, TILE_T>(nb, at.0, wrb, at.1, arb, at.2, rows);
                t += TILE_T;
            }
            while t < g.tokens {
                let at = (w.add(r * wrb), a.add(t * arb), o.add(t * rows + r));
                tile::<K, TILE_R, 1>(nb, at.0, wrb, at.1, arb, at.2, rows);
                t += 1;
            }
            r += TILE_R;
        }
        while r < rows {
            for t in 0..g.tokens {
                let at = (w.add(r * wrb), a.add(t * arb), o.add(t * rows + r));
                tile::<K, 1, 1>(nb, at.0, wrb, at.1, arb, at.2, rows);
            }
            r += 1;
        }
    }
}

/// The dot product: the 1 × 1 tile over the whole blocks both rows hold.
fn vec_dot<K: K23>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = (n / QK_K).min(w.len() / K::BYTES).min(a.len() / Q8_K_BYTES);
    let mut out = 0.0f32;
    // SAFETY: the table holding the callers is handed out only with AVX2/FMA/F16C present;
    // `nb` whole blocks lie in both rows, and `out` is the single output.
    unsafe { tile::<K, 1, 1>(nb, w.as_ptr(), 0, a.as_ptr(), 0, &mut out, 0) };
    out
}

pub(super) fn vec_dot_q2_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    vec_dot::<Q2K>(n, w, a)
}

pub(super) fn vec_dot_q3_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    vec_dot::<Q3K>(n, w, a)
}

pub(super) fn gemm_q2_k(g: &GemmArgs<'_>, out: &mut [f32]) {
    gemm::<Q2K>(g, out)
}

pub(super) fn gemm_q3_k(g: &GemmArgs<'_>, out: &mut [f32]) {
    gemm::<Q3K>(g, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::k2_3::unpack_scales_q3k;

    /// The vector unpacking of Q3_K's scales gives the reference's bytes.
    #[test]
    fn q3_k_scales_unpack_as_the_reference() {
        if !crate::cpu::dot::isa_available(crate::cpu::dot::Isa::Avx2) {
            return;
        }
        let mut seed = 7u32;
        for _ in 0..200 {
            let packed: [u8; 12] = std::array::from_fn(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 24) as u8
            });
            let mut got = [0u8; 16];
            // SAFETY: AVX2 is present (checked above); 12 readable bytes, 16 written.
            unsafe {
                _mm_storeu_si128(
                    got.as_mut_ptr() as *mut __m128i,
                    scales_q3_k(packed.as_ptr()),
                )
            };
            assert_eq!(got, unpack_scales_q3k(&packed), "{packed:?}");
        }
    }
}
