//! AVX2 tiled matrix products of the K-quants (Q4_K and Q6_K weights against Q8_K
//! activations): a tile of up to 4 weight rows × 4 tokens unpacks each weight super-block (its
//! 6-bit scales and its quants) once for all the tile's tokens, and computes the min / offset
//! corrections from the activations' block sums with one `madd` each.
//!
//! Every output is bit-identical to the untiled AVX2 dot product (`kquant.rs`): the integer
//! sums land in the same lanes and the float operations run in the same order. For Q4_K that
//! order is `gemm_q4k_packed`'s (each super-block's exact integer total, then one fma), and
//! prompts of 4 tokens or more go to its packed kernel; the same for Q6_K and
//! `gemm_q6k_packed`.

// Row and token indices address accumulators, weight rows and activation rows together.
#![allow(clippy::needless_range_loop)]

use super::decode_q4k_zmm::tile_k45_zmm;
use super::decode_q6k_zmm::tile_q6_k_zmm;
use super::kquant::{k45_bytes, k45_values};
use super::packed::gemm_packed;
use super::{checked_blocks, f16_at, hsum_epi32, load, prefetch_next, q8k_d, unpack_q6_k_half};
use crate::cpu::dot::GemmArgs;
use crate::quant::QK_K;
use crate::quant::k4_5::{Q4_K_BYTES, Q5_K_BYTES};
use crate::quant::k6::Q6_K_BYTES;
use crate::quant::k8::Q8_K_BYTES;
use std::arch::x86_64::*;

/// Offset of the quants in a Q8_K block (after its f32 scale).
const Y_QS: usize = 4;
/// Offset of the sixteen i16 block sums in a Q8_K block.
const Y_BSUMS: usize = 4 + QK_K;

/// Q4_K tile (Q5_K with `Q5`): `out[t * ldo + r] = w_r · a_t` for `R` rows (`wrb` bytes
/// apart) and `T` tokens (`arb` bytes apart) over `nb` super-blocks.
///
/// # Safety
/// AVX2/FMA/F16C present; `nb` blocks readable in each row and token; `out` writable at every
/// `t * ldo + r`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_k45<const Q5: bool, const R: usize, const T: usize>(
    nb: usize,
    w: *const u8,
    wrb: usize,
    a: *const u8,
    arb: usize,
    out: *mut f32,
    ldo: usize,
) {
    // Sum order of `gemm_q4k_packed`: each super-block's exact integer total, then one fma.
    let mut acc = [[0.0f32; T]; R];
    let mut acc_m = [[0.0f32; T]; R];
    for i in 0..nb {
        if T == 1 {
            prefetch_next::<R>(w, wrb, i, k45_bytes::<Q5>());
        }
        for r in 0..R {
            // SAFETY: row `r < R`, super-block `i < nb`: inside the rows (precondition).
            let x = unsafe { w.add(r * wrb + i * k45_bytes::<Q5>()) };
            // SAFETY: bytes `4..16` of the Q4_K or Q5_K block: its 12 packed scales and mins.
            let (sc, mins) = unsafe { scales_mins_k4(x.add(4)) };
            // The eight scales in both 128-bit lanes, for `vpshufb` to pick from.
            let sc = _mm256_broadcastsi128_si256(sc);
            // SAFETY: bytes `0..4` of the block: its f16 `d` and `dmin`.
            let (xd, xdmin) = unsafe { (f16_at(x), f16_at(x.add(2))) };
            let mut sumi = [_mm256_setzero_si256(); T];
            for c in 0..4 {
                // SAFETY: `x` starts a whole readable block; AVX2 is present.
                let (lo, hi) = unsafe { k45_values::<Q5>(x, c) };
                let s0 = _mm256_shuffle_epi8(sc, K4_SCALE_PICK[2 * c]);
                let s1 = _mm256_shuffle_epi8(sc, K4_SCALE_PICK[2 * c + 1]);
                for (t, sumi) in sumi.iter_mut().enumerate() {
                    // SAFETY: token `t < T`, block `i < nb`: inside the activations (precondition).
                    let y = unsafe { a.add(t * arb + i * Q8_K_BYTES) };
                    let (y0, y1) =
                        // SAFETY: bytes `4 + 64c..68 + 64c` (`c < 4`) of the 292-byte Q8_K block: its quants.
                        unsafe { (load(y.add(Y_QS + 64 * c)), load(y.add(Y_QS + 32 + 64 * c))) };
                    let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), s0);
                    let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), s1);
                    *sumi = _mm256_add_epi32(*sumi, _mm256_add_epi32(p0, p1));
                }
            }
            for t in 0..T {
                // SAFETY: token `t < T`, block `i < nb`: inside the activations (precondition).
                let y = unsafe { a.add(t * arb + i * Q8_K_BYTES) };
                // SAFETY: a Q8_K block opens with its f32 scale.
                let yd = unsafe { q8k_d(y) };
                // SAFETY: bytes `260..292` of the 292-byte Q8_K block: its sixteen i16 sums.
                let bsums = unsafe { load(y.add(Y_BSUMS)) };
                // Σ a over each 32-element sub-block (two 16-element sums, ≤ 32·127).
                let pairs = _mm_hadd_epi16(
                    _mm256_castsi256_si128(bsums),
                    _mm256_extracti128_si256::<1>(bsums),
                );
                let summs = hsum_epi32_128(_mm_madd_epi16(mins, pairs));
                acc_m[r][t] += xdmin * yd * summs as f32;
                let d = xd * yd;
                acc[r][t] = (hsum_epi32(sumi[t]) as f32).mul_add(d, acc[r][t]);
            }
        }
    }
    for t in 0..T {
        for r in 0..R {
            // SAFETY: `out` is writable at every `t·ldo + r` with `t < T`, `r < R` (precondition).
            unsafe { *out.add(t * ldo + r) = acc[r][t] - acc_m[r][t] };
        }
    }
}

/// `vpshufb` controls picking word `j` of the 8 i16 words of each 128-bit lane into every
/// word of the lane.
const K4_SCALE_PICK: [__m256i; 8] = {
    const fn pick(j: usize) -> __m256i {
        let mut b = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            b[i] = (2 * j + i % 2) as u8;
            i += 1;
        }
        // SAFETY: 32 bytes and a 256-bit vector have the same size, and every bit pattern
        // is a valid `__m256i`.
        unsafe { std::mem::transmute::<[u8; 32], __m256i>(b) }
    }
    [
        pick(0),
        pick(1),
        pick(2),
        pick(3),
        pick(4),
        pick(5),
        pick(6),
        pick(7),
    ]
};

/// The eight 6-bit scales and eight 6-bit mins packed in the 12 bytes at `q` (a Q4_K block's
/// bytes `4..16`), as i16 words: `(scales, mins)`; the same values as
/// [`crate::quant::k4_5::unpack_scales_mins_k4`], unpacked four bytes at a time.
///
/// # Safety
/// `q..q + 12` readable; AVX2 present.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scales_mins_k4(q: *const u8) -> (__m128i, __m128i) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    // SAFETY: `q..q + 12` is readable (precondition); the reads are unaligned.
    let [u0, u1, u2] =
        std::array::from_fn(|i| unsafe { (q.add(4 * i) as *const u32).read_unaligned() });
    let sc_lo = u0 & LOW6;
    let sc_hi = (u2 & LOW4) | (((u0 >> 6) & LOW2) << 4);
    let m_lo = u1 & LOW6;
    let m_hi = ((u2 >> 4) & LOW4) | (((u1 >> 6) & LOW2) << 4);
    let bytes = _mm_setr_epi32(sc_lo as i32, sc_hi as i32, m_lo as i32, m_hi as i32);
    (
        _mm_cvtepu8_epi16(bytes),
        _mm_cvtepu8_epi16(_mm_unpackhi_epi64(bytes, bytes)),
    )
}

/// Sum of the four i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32_128(v: __m128i) -> i32 {
    let s = _mm_add_epi32(v, _mm_unpackhi_epi64(v, v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<1>(s));
    _mm_cvtsi128_si32(s)
}

/// `vpshufb` controls picking, from 8 i16 scales in each 128-bit lane, scale `2k` for every
/// word of the low lane and scale `2k + 1` for every word of the high lane.
#[allow(clippy::identity_op)]
pub(super) const Q6_SCALE_PICK: [__m256i; 4] = {
    const fn pick(k: usize) -> __m256i {
        let mut b = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            let word = 2 * k + i / 16;
            b[i] = (2 * word + i % 2) as u8;
            i += 1;
        }
        // SAFETY: 32 bytes and a 256-bit vector have the same size, and every bit pattern
        // is a valid `__m256i`.
        unsafe { std::mem::transmute::<[u8; 32], __m256i>(b) }
    }
    [pick(0), pick(1), pick(2), pick(3)]
};

/// Q6_K tile; as [`tile_k45`].
///
/// # Safety
/// As [`tile_k45`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_q6_k<const R: usize, const T: usize>(
    nb: usize,
    w: *const u8,
    wrb: usize,
    a: *const u8,
    arb: usize,
    out: *mut f32,
    ldo: usize,
) {
    // Sum order of `gemm_q6k_packed`: each super-block's exact integer total, then one fma.
    let mut acc = [[0.0f32; T]; R];
    // With 4 rows, the 4 totals of a token come out of one `hadd` tree and meet their scales
    // in the 4 lanes of one fma (the same per-row operations as the scalar fma below).
    let mut acc4 = [_mm_setzero_ps(); T];
    for i in 0..nb {
        if T == 1 {
            prefetch_next::<R>(w, wrb, i, Q6_K_BYTES);
        }
        let mut sums = [[_mm256_setzero_si256(); T]; R];
        let mut xd = [0.0f32; R];
        for r in 0..R {
            // SAFETY: row `r < R`, super-block `i < nb`: inside the rows (precondition).
            let x = unsafe { w.add(r * wrb + i * Q6_K_BYTES) };
            // The sixteen i8 scales as i16.
            let sc16 =
                // SAFETY: bytes `192..208` of the 210-byte Q6_K block: its sixteen i8 scales.
                _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(x.add(192) as *const __m128i) });
            let sumi = &mut sums[r];
            // The values are stored +32: start each sum at −32·(sc·bsum), lane by lane.
            for (t, sumi) in sumi.iter_mut().enumerate() {
                // SAFETY: token `t < T`, block `i < nb`: inside the activations (precondition).
                let y = unsafe { a.add(t * arb + i * Q8_K_BYTES) };
                // SAFETY: bytes `260..292` of the 292-byte Q8_K block: its sixteen i16 sums.
                let corr = _mm256_madd_epi16(unsafe { load(y.add(Y_BSUMS)) }, sc16);
                *sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(corr));
            }
            for h in 0..2 {
                // SAFETY: block `i` of row `r` is readable (the caller's contract), and a
                // Q6_K block is 210 bytes ≥ 192.
                let q = unsafe { unpack_q6_k_half(x, h) };
                // Scales 8h..8h + 8 in both 128-bit lanes.
                let half = if h == 0 {
                    _mm256_permute2x128_si256::<0x00>(sc16, sc16)
                } else {
                    _mm256_permute2x128_si256::<0x11>(sc16, sc16)
                };
                for (k, qk) in q.into_iter().enumerate() {
                    // Scale 8h + 2k in the low lane, 8h + 2k + 1 in the high one.
                    let scales = _mm256_shuffle_epi8(half, Q6_SCALE_PICK[k]);
                    for (t, sumi) in sumi.iter_mut().enumerate() {
                        // SAFETY: token `t < T`, block `i < nb`: inside the activations (precondition).
                        let y = unsafe { a.add(t * arb + i * Q8_K_BYTES) };
                        // SAFETY: bytes `4 + 128h + 32k..36 + 128h + 32k` (`h < 2`, `k < 4`) of the 292-byte Q8_K block:
                        // its quants.
                        let yk = unsafe { load(y.add(Y_QS + 128 * h + 32 * k)) };
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qk, yk), scales);
                        *sumi = _mm256_add_epi32(*sumi, p);
                    }
                }
            }
            // SAFETY: bytes `208..210` of the 210-byte Q6_K block: its f16 `d`.
            xd[r] = unsafe { f16_at(x.add(208)) };
        }
        for t in 0..T {
            // SAFETY: token `t < T`, block `i < nb`: a Q8_K block opens with its f32 scale.
            let yd = unsafe { q8k_d(a.add(t * arb + i * Q8_K_BYTES)) };
            if R == 4 {
                let h = _mm256_hadd_epi32(
                    _mm256_hadd_epi32(sums[0][t], sums[1][t]),
                    _mm256_hadd_epi32(sums[2][t], sums[3][t]),
                );
                let totals =
                    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
                let d = _mm_mul_ps(_mm_setr_ps(xd[0], xd[1], xd[2], xd[3]), _mm_set1_ps(yd));
                acc4[t] = _mm_fmadd_ps(_mm_cvtepi32_ps(totals), d, acc4[t]);
            } else {
                for r in 0..R {
                    acc[r][t] = (hsum_epi32(sums[r][t]) as f32).mul_add(xd[r] * yd, acc[r][t]);
                }
            }
        }
    }
    if R == 4 {
        for t in 0..T {
            let mut v = [0.0f32; 4];
            // SAFETY: `v` is 4 f32s, one 128-bit store.
            unsafe { _mm_storeu_ps(v.as_mut_ptr(), acc4[t]) };
            for r in 0..R {
                acc[r][t] = v[r];
            }
        }
    }
    for t in 0..T {
        for r in 0..R {
            // SAFETY: `out` is writable at every `t·ldo + r` with `t < T`, `r < R` (precondition).
            unsafe { *out.add(t * ldo + r) = acc[r][t] };
        }
    }
}

/// Rows per tile.
pub(super) const TILE_R: usize = 4;
/// Tokens per tile when there are several.
pub(super) const TILE_T: usize = 4;

/// A tile function: `(nb, w, wrb, a, arb, out, ldo)`.
pub(super) type TileFn = unsafe fn(usize, *const u8, usize, *const u8, usize, *mut f32, usize);

/// The tile functions of one format, for 4×4, 4×1 and 1×1 tiles.
pub(super) struct Tiles {
    /// Bytes per weight super-block.
    pub(super) bytes: usize,
    pub(super) r4t4: TileFn,
    pub(super) r4t1: TileFn,
    pub(super) r1t1: TileFn,
}

static Q4_K_TILES: Tiles = Tiles {
    bytes: Q4_K_BYTES,
    r4t4: tile_k45::<false, TILE_R, TILE_T>,
    r4t1: tile_k45::<false, TILE_R, 1>,
    r1t1: tile_k45::<false, 1, 1>,
};

static Q5_K_TILES: Tiles = Tiles {
    bytes: Q5_K_BYTES,
    r4t4: tile_k45::<true, TILE_R, TILE_T>,
    r4t1: tile_k45::<true, TILE_R, 1>,
    r1t1: tile_k45::<true, 1, 1>,
};

/// [`Q5_K_TILES`] with the 4-row one-token tile on 512-bit vectors (`decode_q4k_zmm`).
static Q5_K_TILES_ZMM: Tiles = Tiles {
    bytes: Q5_K_BYTES,
    r4t4: tile_k45::<true, TILE_R, TILE_T>,
    r4t1: tile_k45_zmm::<true>,
    r1t1: tile_k45::<true, 1, 1>,
};

/// [`Q4_K_TILES`] with the 4-row one-token tile on 512-bit vectors (`decode_q4k_zmm`).
static Q4_K_TILES_ZMM: Tiles = Tiles {
    bytes: Q4_K_BYTES,
    r4t4: tile_k45::<false, TILE_R, TILE_T>,
    r4t1: tile_k45_zmm::<false>,
    r1t1: tile_k45::<false, 1, 1>,
};

static Q6_K_TILES: Tiles = Tiles {
    bytes: Q6_K_BYTES,
    r4t4: tile_q6_k::<TILE_R, TILE_T>,
    r4t1: tile_q6_k::<TILE_R, 1>,
    r1t1: tile_q6_k::<1, 1>,
};

/// [`Q6_K_TILES`] with the 4-row one-token tile on 512-bit vectors (`decode_q6k_zmm`).
static Q6_K_TILES_ZMM: Tiles = Tiles {
    bytes: Q6_K_BYTES,
    r4t4: tile_q6_k::<TILE_R, TILE_T>,
    r4t1: tile_q6_k_zmm,
    r1t1: tile_q6_k::<1, 1>,
};

/// Checks `g` and `out` against the block sizes and runs the tiles over the whole product.
fn gemm(tiles: &Tiles, g: &GemmArgs<'_>, out: &mut [f32]) {
    let Some(nb) = checked_blocks(g, out, QK_K, tiles.bytes, Q8_K_BYTES, 0) else {
        return;
    };
    let (w, a, o) = (g.w.as_ptr(), g.a.as_ptr(), out.as_mut_ptr());
    let (wrb, arb, rows) = (g.w_stride, g.a_stride, g.rows);
    // SAFETY: the table holding the callers is handed out only with AVX2/FMA/F16C present,
    // and `run` hands out the 512-bit tiles only with AVX-512 F/BW/VNNI present;
    // the asserts above keep every block of every row and token in bounds, and each tile
    // writes only its own outputs inside `rows × tokens`.
    unsafe {
        let mut r = 0;
        while r + TILE_R <= rows {
            let mut t = 0;
            while t + TILE_T <= g.tokens {
                let at = (w.add(r * wrb), a.add(t * arb), o.add(t * rows + r));
                (tiles.r4t4)(nb, at.0, wrb, at.1, arb, at.2, rows);
                t += TILE_T;
            }
            while t < g.tokens {
                let at = (w.add(r * wrb), a.add(t * arb), o.add(t * rows + r));
                (tiles.r4t1)(nb, at.0, wrb, at.1, arb, at.2, rows);
                t += 1;
            }
            r += TILE_R;
        }
        while r < rows {
            for t in 0..g.tokens {
                let at = (w.add(r * wrb), a.add(t * arb), o.add(t * rows + r));
                (tiles.r1t1)(nb, at.0, wrb, at.1, arb, at.2, rows);
            }
            r += 1;
        }
    }
}

/// A packed kernel's whole product (`packed::gemm_packed::<K>`).
pub(super) type PackedFn =
    unsafe fn(usize, *const u8, usize, usize, *const u8, usize, usize, *mut f32);

/// How a K-quant's products run: its tiles (decode), and its packed prompt kernels on 16 rows
/// (AVX-512 VNNI) and on 8 (none for Q5_K, whose 5-bit values would overflow the 8-row
/// kernel's i16 sums: without AVX-512 VNNI its prompts take the tiles).
pub(super) struct KQuant {
    pub(super) tiles: &'static Tiles,
    /// The tiles where AVX-512 VNNI is present (`decode_q4k_zmm::available`).
    pub(super) tiles_zmm: &'static Tiles,
    pub(super) zmm: PackedFn,
    pub(super) ymm: Option<PackedFn>,
}

static Q4_K: KQuant = KQuant {
    tiles: &Q4_K_TILES,
    tiles_zmm: &Q4_K_TILES_ZMM,
    zmm: gemm_packed::<super::gemm_q4k_zmm::Q4kZmm16>,
    ymm: Some(gemm_packed::<super::gemm_q4k_packed::Q4kPacked8>),
};

static Q5_K: KQuant = KQuant {
    tiles: &Q5_K_TILES,
    tiles_zmm: &Q5_K_TILES_ZMM,
    zmm: gemm_packed::<super::gemm_q4k_zmm::Q5kZmm16>,
    ymm: None,
};

static Q6_K: KQuant = KQuant {
    tiles: &Q6_K_TILES,
    tiles_zmm: &Q6_K_TILES_ZMM,
    zmm: gemm_packed::<super::gemm_q6k_zmm::Q6kZmm16>,
    ymm: Some(gemm_packed::<super::gemm_q6k_packed::Q6kPacked8>),
};

/// `k`'s product on a chosen path: `None` the tiles, `Some(true)` the 16-row kernel (only with
/// AVX-512 VNNI present, see `gemm_q4k_zmm::available`), `Some(false)` the 8-row one; where
/// the CPU or the format lacks the packed kernel asked for, the tiles.
pub(super) fn run(k: &KQuant, packed: Option<bool>, g: &GemmArgs<'_>, out: &mut [f32]) {
    let kernel = match packed {
        Some(true) if super::gemm_q4k_zmm::available() => Some(k.zmm),
        Some(_) => k.ymm,
        None => None,
    };
    let Some(f) = kernel else {
        let tiles = if super::decode_q4k_zmm::available() {
            k.tiles_zmm
        } else {
            k.tiles
        };
        return gemm(tiles, g, out);
    };
    let Some(nb) = checked_blocks(g, out, QK_K, k.tiles.bytes, Q8_K_BYTES, 0) else {
        return;
    };
    let (w, a, o) = (g.w.as_ptr(), g.a.as_ptr(), out.as_mut_ptr());
    // SAFETY: AVX-512 F/BW/VNNI checked above for the 16-row kernel, AVX2/FMA/F16C by the
    // table holding the callers; the checks keep every super-block of every row and token,
    // and every output, in bounds.
    unsafe { f(nb, w, g.w_stride, g.rows, a, g.a_stride, g.tokens, o) }
}

/// The path this CPU takes for `tokens` tokens: tiles below [`MIN_PACKED_TOKENS`], else the
/// 16-row kernel where AVX-512 VNNI is present, else the 8-row one.
pub(super) fn path(tokens: usize) -> Option<bool> {
    (tokens >= MIN_PACKED_TOKENS).then(super::gemm_q4k_zmm::available)
}

pub(super) fn gemm_q4_k(g: &GemmArgs<'_>, out: &mut [f32]) {
    run(&Q4_K, path(g.tokens), g, out)
}

pub(super) fn gemm_q5_k(g: &GemmArgs<'_>, out: &mut [f32]) {
    run(&Q5_K, path(g.tokens), g, out)
}

pub(super) fn gemm_q6_k(g: &GemmArgs<'_>, out: &mut [f32]) {
    run(&Q6_K, path(g.tokens), g, out)
}

/// A K-quant's product (Q2_K … Q6_K) on each of its paths (`None`: the tiles;
/// `Some(true)`: the 16-row AVX-512 kernel; `Some(false)`: the 8-row one), for the test that
/// holds them bit-identical; `false` where the CPU or the format lacks that path.
#[cfg(test)]
pub(super) fn gemm_path_k(
    dtype: crate::DType,
    packed: Option<bool>,
    g: &GemmArgs<'_>,
    out: &mut [f32],
) -> bool {
    use crate::DType;
    let k = match dtype {
        DType::Q4_K => &Q4_K,
        DType::Q5_K => &Q5_K,
        DType::Q6_K => &Q6_K,
        DType::Q2_K => &super::gemm_k23::Q2_K,
        DType::Q3_K => &super::gemm_k23::Q3_K,
        _ => return false,
    };
    match packed {
        Some(true) if !super::gemm_q4k_zmm::available() => return false,
        Some(false) if k.ymm.is_none() => return false,
        _ => {}
    }
    run(k, packed, g, out);
    true
}

/// Fewest tokens for which a K-quant call repacks its rows (`gemm_q4k_packed`,
/// `gemm_q6k_packed`, or their 16-row forms).
const MIN_PACKED_TOKENS: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::k4_5::unpack_scales_mins_k4;

    /// The 512-bit one-token tiles (`decode_q4k_zmm` for Q4_K and Q5_K, `decode_q6k_zmm`) give the 256-bit
    /// tiles' bits, over one to nine super-blocks of random weights and activations.
    #[test]
    fn zmm_decode_tiles_are_the_ymm_tiles_bit_for_bit() {
        use crate::DType;
        use crate::quant::tests::{Rng, random_activations, random_row, row_bytes};
        if !super::super::decode_q4k_zmm::available() {
            return;
        }
        let mut rng = Rng::new(83);
        for (dtype, y, z) in [
            (DType::Q4_K, &Q4_K_TILES, &Q4_K_TILES_ZMM),
            (DType::Q5_K, &Q5_K_TILES, &Q5_K_TILES_ZMM),
            (DType::Q6_K, &Q6_K_TILES, &Q6_K_TILES_ZMM),
        ] {
            for nb in 1..10 {
                let n = nb * QK_K;
                let w: Vec<u8> = (0..TILE_R)
                    .flat_map(|_| random_row(&mut rng, dtype, n))
                    .collect();
                let a = random_activations(&mut rng, DType::Q8_K, n);
                let wrb = row_bytes(dtype, n);
                let run = |f: TileFn| {
                    let mut out = [f32::NAN; TILE_R];
                    // SAFETY: AVX-512 F/BW/VNNI (checked above) implies AVX2/FMA/F16C here;
                    // `w` holds `TILE_R` rows of `nb` blocks, `a` one token of `nb`, `out`
                    // `TILE_R` outputs.
                    unsafe { f(nb, w.as_ptr(), wrb, a.as_ptr(), 0, out.as_mut_ptr(), 1) };
                    out.map(f32::to_bits)
                };
                assert_eq!(run(z.r4t1), run(y.r4t1), "{dtype}, {nb} blocks");
            }
        }
    }

    /// The SIMD unpacking of Q4_K's 12 scale bytes gives the reference's values for every
    /// bit of every byte (each byte swept through all 256 values, the others random).
    #[test]
    fn scales_mins_k4_is_the_reference_unpacking() {
        if !crate::cpu::dot::isa_available(crate::cpu::dot::Isa::Avx2) {
            return;
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for pos in 0..12 {
            for v in 0..=255u8 {
                let mut q = [0u8; 12];
                for b in &mut q {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    *b = seed as u8;
                }
                q[pos] = v;
                let (sc, m) = unpack_scales_mins_k4(&q);
                // SAFETY: AVX2 is present (checked above) and `q` holds 12 bytes.
                let (a, b) = unsafe { scales_mins_k4(q.as_ptr()) };
                // SAFETY: a 128-bit vector and 8 i16s have the same size.
                let (a, b): ([i16; 8], [i16; 8]) = unsafe {
                    (
                        std::mem::transmute::<__m128i, [i16; 8]>(a),
                        std::mem::transmute::<__m128i, [i16; 8]>(b),
                    )
                };
                assert_eq!(a, sc.map(i16::from), "scales of {q:?}");
                assert_eq!(b, m.map(i16::from), "mins of {q:?}");
            }
        }
    }
}
