//! The 32-element block formats as the AVX2 tiles read them ([`Block`]: Q4_0, Q4_1, Q5_0 and
//! Q8_0; the first three's products live in `gemm_small.rs`), and the Q8_0 × Q8_0 tiled
//! product: a tile of up to 4 weight rows × 4 tokens walks the blocks once, so
//! each weight block is unpacked once for all the tile's tokens, each activation block loaded
//! once for all its rows, and the f16 scales of 4 rows are converted with one instruction.
//! No call per dot product.

use super::legacy::{bits_to_bytes, nibbles};
use super::{checked_blocks, hsum_ps, load};
use crate::cpu::dot::GemmArgs;
use crate::quant::q4::{Q4_0_BYTES, Q4_1_BYTES};
use crate::quant::q5::Q5_0_BYTES;
use crate::quant::q8::{Q8_0_BYTES, Q8_1_BYTES, QK};
use std::arch::x86_64::*;

/// A 32-element weight format as the tile kernel reads it. Every block starts with its f16
/// scale `d` (then, with `HAS_MIN`, its f16 min `m`); activation blocks start with f16 `d`
/// (then, for Q8_1, f16 `s = d·Σq`).
pub(super) trait Block {
    /// Bytes per weight block.
    const BYTES: usize;
    /// Bytes per activation block (Q8_0 or Q8_1).
    const ACT_BYTES: usize;
    /// Offset of the quants in an activation block.
    const ACT_QS: usize;
    /// Value = d·q + m (Q4_1); otherwise d·q.
    const HAS_MIN: bool;
    /// `quants` are signed (multiplied with the sign trick); otherwise unsigned ≤ 15.
    const SIGNED: bool;
    /// The block's 32 quants in element order.
    ///
    /// # Safety
    /// `p..p + BYTES` readable; AVX2 present.
    unsafe fn quants(p: *const u8) -> __m256i;
}

pub(super) struct Q4_0;
pub(super) struct Q4_1;
pub(super) struct Q5_0;
pub(super) struct Q8_0;

impl Block for Q4_0 {
    const BYTES: usize = Q4_0_BYTES;
    const ACT_BYTES: usize = Q8_0_BYTES;
    const ACT_QS: usize = 2;
    const HAS_MIN: bool = false;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        // SAFETY: AVX2 is present and `p..p + BYTES` readable (the trait's precondition); the
        // nibbles are bytes `2..18` of the 18-byte block.
        unsafe { _mm256_sub_epi8(nibbles(p.add(2)), _mm256_set1_epi8(8)) }
    }
}

impl Block for Q4_1 {
    const BYTES: usize = Q4_1_BYTES;
    const ACT_BYTES: usize = Q8_1_BYTES;
    const ACT_QS: usize = 4;
    const HAS_MIN: bool = true;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        // SAFETY: as for Q4_0; the nibbles are bytes `4..20` of the 20-byte block.
        unsafe { nibbles(p.add(4)) }
    }
}

impl Block for Q5_0 {
    const BYTES: usize = Q5_0_BYTES;
    const ACT_BYTES: usize = Q8_0_BYTES;
    const ACT_QS: usize = 2;
    const HAS_MIN: bool = false;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        // q − 16 = nibble when bit 4 is set, nibble | 0xF0 (as i8) when not.
        // SAFETY: as for Q4_0; the nibbles are bytes `6..22` and the high bits `2..6` of the
        // 22-byte block.
        unsafe {
            _mm256_or_si256(
                nibbles(p.add(6)),
                _mm256_andnot_si256(bits_to_bytes(p.add(2)), _mm256_set1_epi8(0xf0u8 as i8)),
            )
        }
    }
}

impl Block for Q8_0 {
    const BYTES: usize = Q8_0_BYTES;
    const ACT_BYTES: usize = Q8_0_BYTES;
    const ACT_QS: usize = 2;
    const HAS_MIN: bool = false;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        // SAFETY: as for Q4_0; the quants are bytes `2..34` of the 34-byte block.
        unsafe { load(p.add(2)) }
    }
}

/// The u32 at `p` (unaligned).
///
/// # Safety
/// `p..p + 4` readable.
#[inline(always)]
pub(super) unsafe fn u32_at(p: *const u8) -> i32 {
    // SAFETY: `p..p + 4` is readable (precondition).
    unsafe { (p as *const i32).read_unaligned() }
}

/// `out[t * ldo + r] = w_r · a_t` for `R` rows at `w` (`wrb` apart) and `T` tokens at `a`
/// (`arb` apart), over `nb` blocks.
///
/// # Safety
/// AVX2/FMA/F16C present; `nb` blocks readable in each of the rows and tokens, plus 4 bytes
/// (scales) at every block start; `out` writable at every `t * ldo + r`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<B: Block, const R: usize, const T: usize>(
    nb: usize,
    w: *const u8,
    wrb: usize,
    a: *const u8,
    arb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut mins = [_mm256_setzero_ps(); T];
    let ones = _mm256_set1_epi16(1);
    // With one token the tile streams its rows from memory once. The rows of the next tile
    // follow these in memory (the executor's row blocks are contiguous), so each block step
    // prefetches its share of them: the hardware prefetcher does not run ahead on 4 short
    // interleaved row streams (the loads stalled on memory without this).
    let next = w.wrapping_add(R * wrb);
    for b in 0..nb {
        if T == 1 {
            let p = next.wrapping_add(b * R * B::BYTES);
            for k in 0..=R * B::BYTES / 64 {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * k) as *const i8);
            }
        }
        // (d, m) of the R rows as eight f16 lanes d0 m0 d1 m1 … → f32 in one conversion.
        let mut g = [0i32; 4];
        for (r, g) in g.iter_mut().enumerate().take(R) {
            // SAFETY: row `r < R`, block `b < nb`: its first 4 bytes are readable (precondition).
            *g = unsafe { u32_at(w.add(r * wrb + b * B::BYTES)) };
        }
        let wdm = _mm256_cvtph_ps(_mm_setr_epi32(g[0], g[1], g[2], g[3]));
        let q: [__m256i; R] =
            // SAFETY: row `r < R`, block `b < nb`: the whole block is readable (precondition).
            std::array::from_fn(|r| unsafe { B::quants(w.add(r * wrb + b * B::BYTES)) });
        let qa: [__m256i; R] = if B::SIGNED {
            q.map(|q| _mm256_sign_epi8(q, q))
        } else {
            q
        };
        for t in 0..T {
            // SAFETY: token `t < T`, block `b < nb`: inside the activations (precondition).
            let ab = unsafe { a.add(t * arb + b * B::ACT_BYTES) };
            // Lanes 2r: d_r·d_a; lanes 2r+1: m_r·s_a (garbage without HAS_MIN, never read).
            // SAFETY: an activation block's first 4 bytes (its scales) are readable (precondition).
            let s = _mm256_mul_ps(wdm, _mm256_cvtph_ps(_mm_set1_epi32(unsafe { u32_at(ab) })));
            if B::HAS_MIN {
                mins[t] = _mm256_add_ps(mins[t], s);
            }
            // SAFETY: the quants end with the activation block (`ACT_QS + 32 == ACT_BYTES`).
            let y = unsafe { load(ab.add(B::ACT_QS)) };
            for r in 0..R {
                let yy = if B::SIGNED {
                    _mm256_sign_epi8(y, q[r])
                } else {
                    y
                };
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qa[r], yy), ones);
                let d = _mm256_permutevar8x32_ps(s, _mm256_set1_epi32(2 * r as i32));
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), d, acc[r][t]);
            }
        }
    }
    for t in 0..T {
        let mut m = [0.0f32; 8];
        if B::HAS_MIN {
            // SAFETY: `m` is 8 f32s, one 256-bit store.
            unsafe { _mm256_storeu_ps(m.as_mut_ptr(), mins[t]) };
        }
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: `out` is writable at every `t·ldo + r` with `t < T`, `r < R` (precondition).
            unsafe { *out.add(t * ldo + r) = hsum_ps(acc[t]) + m[2 * r + 1] };
        }
    }
}

/// Tokens per tile when there are several.
const TILE_T: usize = 4;
/// Rows per tile.
const TILE_R: usize = 4;

/// The whole product in tiles of `TILE_R × TILE_T`, smaller ones at the edges.
///
/// # Safety
/// As in [`tile`] for every row `< rows` and token `< tokens`, `out` holding `tokens × rows`.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_impl<B: Block>(
    nb: usize,
    w: *const u8,
    wrb: usize,
    rows: usize,
    a: *const u8,
    arb: usize,
    tokens: usize,
    out: *mut f32,
) {
    let mut r = 0;
    while r + TILE_R <= rows {
        // SAFETY: `r < rows`, so row `r` starts inside the weights.
        let wr = unsafe { w.add(r * wrb) };
        let mut t = 0;
        while t + TILE_T <= tokens {
            // SAFETY: rows `r..r + 4 <= rows` and tokens `t..t + 4 <= tokens` meet `tile`'s contract
            // (this fn's precondition); their outputs sit at `(t + i)·rows + r + j`.
            unsafe {
                tile::<B, TILE_R, TILE_T>(
                    nb,
                    wr,
                    wrb,
                    a.add(t * arb),
                    arb,
                    out.add(t * rows + r),
                    rows,
                )
            };
            t += TILE_T;
        }
        while t < tokens {
            // SAFETY: rows `r..r + 4 <= rows` and token `t < tokens`, as above.
            unsafe {
                tile::<B, TILE_R, 1>(
                    nb,
                    wr,
                    wrb,
                    a.add(t * arb),
                    arb,
                    out.add(t * rows + r),
                    rows,
                )
            };
            t += 1;
        }
        r += TILE_R;
    }
    while r < rows {
        for t in 0..tokens {
            // SAFETY: row `r < rows` and token `t < tokens`, as above.
            unsafe {
                tile::<B, 1, 1>(
                    nb,
                    w.add(r * wrb),
                    wrb,
                    a.add(t * arb),
                    arb,
                    out.add(t * rows + r),
                    rows,
                )
            };
        }
        r += 1;
    }
}

/// Checks `g` and `out` against the block sizes of `B` and runs the tiles.
fn gemm<B: Block>(g: &GemmArgs<'_>, out: &mut [f32]) {
    let Some(nb) = checked_blocks(g, out, QK, B::BYTES, B::ACT_BYTES, 4) else {
        return;
    };
    // SAFETY: the table holding these fns is handed out only with AVX2/FMA/F16C present; the
    // checks keep every block (and its 4 scale bytes, inside the block) in bounds.
    unsafe {
        gemm_impl::<B>(
            nb,
            g.w.as_ptr(),
            g.w_stride,
            g.rows,
            g.a.as_ptr(),
            g.a_stride,
            g.tokens,
            out.as_mut_ptr(),
        )
    }
}

pub(super) fn gemm_q8_0(g: &GemmArgs<'_>, out: &mut [f32]) {
    gemm::<Q8_0>(g, out)
}
