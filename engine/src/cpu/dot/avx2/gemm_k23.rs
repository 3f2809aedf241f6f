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
//! Both run through `gemm_k`'s dispatch (`KQuant`): the tiles below 4 tokens, and for
//! **prompts** (4 tokens or more) the Q6_K prompt kernels, whose shape these formats
//! share (sixteen sub-blocks of 16 with a scale each: `gemm_q6k_packed::Sub16`, values stored
//! +32, scales as i8), in the same sum order; Q2_K's mins then come off in a pass of their
//! own, 8 rows in the lanes of a vector ([`subtract_mins_q2_k`]).
//!
//! **Sum order:** per row, token and super-block the exact integer totals — Q3_K
//! `T = Σ_s (sc_s − 32)·Σ q·a`; Q2_K `T = Σ_s sc_s·Σ q·a` and `M = Σ_s m_s·Σa` — then
//! `acc = fma(f32(T), d·d_a, acc)` (Q2_K: and `acc_m = fma(f32(M), dmin·d_a, acc_m)`, the
//! result `acc − acc_m`). The scalar reference sums the same integers and rounds its floats
//! in another order (within the dot tests' NMSE bound).

// Row and token indices address accumulators, weight rows and activation rows together.
#![allow(clippy::needless_range_loop)]

use super::gemm_k::{KQuant, Q6_SCALE_PICK, TILE_R, TILE_T, Tiles, path, run};
use super::gemm_q6k_packed::{Sub16, Sub16Packed8};
use super::gemm_q6k_zmm::Sub16Zmm16;
use super::packed::{PackedKernel, gemm_packed};
use super::{f16_at, hsum_epi32, load, prefetch_next, q8k_d};
use crate::cpu::dot::GemmArgs;
use crate::quant::QK_K;
use crate::quant::k2_3::{Q2_K_BYTES, Q3_K_BYTES};
use crate::quant::k8::Q8_K_BYTES;
use std::arch::x86_64::*;
use std::cell::RefCell;

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
    // SAFETY: bytes `96..108`: the 12 bytes of sixteen packed 6-bit scales.
    let sc = unsafe { scales_q3_k(x.add(96)) };
    let sc = _mm256_sub_epi16(_mm256_cvtepu8_epi16(sc), _mm256_set1_epi16(32));
    let (sc_lo, sc_hi) = halves(sc);
    Unpacked {
        // SAFETY: the 110 bytes are readable (precondition).
        q: unsafe { values_q3_k(x) },
        sc_lo,
        sc_hi,
        // Σ (q + 4)·a·sc − 4·Σ sc·Σa: the block sums meet −4·sc (|·| ≤ 128).
        per_bsum: _mm256_mullo_epi16(sc, _mm256_set1_epi16(-4)),
        // SAFETY: bytes `108..110`: the f16 `d`.
        d: unsafe { f16_at(x.add(108)) },
        dmin: 0.0,
    }
}

/// The 256 values of the Q3_K block at `x` plus 4 (0..=7), as [`low2`] lays them out.
///
/// # Safety
/// AVX2 present; the 110 bytes at `x` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn values_q3_k(x: *const u8) -> [__m256i; 8] {
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
    q
}

impl Sub16 for Q2K {
    const BYTES: usize = Q2_K_BYTES;

    #[inline(always)]
    unsafe fn unpack(x: *const u8) -> ([__m256i; 8], [i8; 16], f32) {
        // SAFETY: the trait's contract is `sub16_q2_k`'s.
        unsafe { sub16_q2_k(x) }
    }
}

/// [`Sub16::unpack`] of Q2_K: its values plus 32, the low nibbles of its scale bytes, `d`
/// (the mins are [`subtract_mins_q2_k`]'s).
///
/// # Safety
/// AVX2 present; the 84 bytes at `x` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sub16_q2_k(x: *const u8) -> ([__m256i; 8], [i8; 16], f32) {
    // SAFETY: bytes `16..80` of the 84-byte block: the 2-bit values.
    let q = unsafe { low2(x.add(16)) };
    let k32 = _mm256_set1_epi8(32);
    // SAFETY: bytes `0..16`: the scale bytes.
    let scales = std::array::from_fn(|s| (unsafe { *x.add(s) } & 0xf) as i8);
    // SAFETY: bytes `80..82`: the f16 `d`.
    (q.map(|v| _mm256_add_epi8(v, k32)), scales, unsafe {
        f16_at(x.add(80))
    })
}

impl Sub16 for Q3K {
    const BYTES: usize = Q3_K_BYTES;

    #[inline(always)]
    unsafe fn unpack(x: *const u8) -> ([__m256i; 8], [i8; 16], f32) {
        // SAFETY: the trait's contract is `sub16_q3_k`'s.
        unsafe { sub16_q3_k(x) }
    }
}

/// [`Sub16::unpack`] of Q3_K: its values plus 32 (28..=35), its scales less 32, `d`.
///
/// # Safety
/// AVX2 present; the 110 bytes at `x` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sub16_q3_k(x: *const u8) -> ([__m256i; 8], [i8; 16], f32) {
    // SAFETY: the 110 bytes are readable (precondition).
    let q = unsafe { values_q3_k(x) };
    let k28 = _mm256_set1_epi8(28);
    let mut scales = [0u8; 16];
    // SAFETY: bytes `96..108`: the packed scales; `scales` is 16 bytes.
    unsafe {
        _mm_storeu_si128(
            scales.as_mut_ptr() as *mut __m128i,
            _mm_sub_epi8(scales_q3_k(x.add(96)), _mm_set1_epi8(32)),
        )
    };
    (
        q.map(|v| _mm256_add_epi8(v, k28)),
        scales.map(|s| s as i8),
        // SAFETY: bytes `108..110`: the f16 `d`.
        unsafe { f16_at(x.add(108)) },
    )
}

/// One super-block of Q2_K's mins for 8 rows: `dmin` per row and, for each pair of
/// sub-blocks `2k, 2k + 1`, the rows' two mins as i16 pairs (against the activations' block
/// sums in one `madd`).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct MinsQ2 {
    dmin: [f32; 8],
    mp: [[i16; 16]; 8],
}

const MINS_ZERO: MinsQ2 = MinsQ2 {
    dmin: [0.0; 8],
    mp: [[0; 16]; 8],
};

thread_local! {
    /// Each thread's mins of a group of rows; grown, never shrunk.
    static MINS: RefCell<Vec<MinsQ2>> = const { RefCell::new(Vec::new()) };
}

/// Takes Q2_K's mins term off `out` (`tokens × rows`), where the Q6_K prompt kernels put its
/// scaled term: per row and token `out −= acc_m`, with per super-block
/// `acc_m = fma(f32(M), dmin·d_a, acc_m)`, `M = Σ_s m_s·Σa_s` (the tile's order, 8 rows in
/// the lanes of one vector).
///
/// # Safety
/// AVX2/FMA/F16C present; `nb` super-blocks readable in each of the `rows` rows at `w`
/// (`wrb` apart) and the `tokens` rows at `a` (`arb` apart); `out` holds `tokens × rows`.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn subtract_mins_q2_k(
    nb: usize,
    w: *const u8,
    wrb: usize,
    rows: usize,
    a: *const u8,
    arb: usize,
    tokens: usize,
    out: *mut f32,
) {
    let mins = MINS.with_borrow_mut(|m| {
        if m.len() < nb {
            m.resize(nb, MINS_ZERO);
        }
        m.as_mut_ptr()
    });
    for r0 in (0..rows).step_by(8) {
        let nr = (rows - r0).min(8);
        for b in 0..nb {
            // SAFETY: `b < nb`, which the scratch holds; nothing else refers to it.
            let m = unsafe { &mut *mins.add(b) };
            *m = MINS_ZERO;
            for r in 0..nr {
                // SAFETY: row `r0 + r < rows`, super-block `b < nb`: inside the rows.
                let x = unsafe { w.add((r0 + r) * wrb + b * Q2_K_BYTES) };
                // SAFETY: bytes `82..84` of the 84-byte block: its f16 `dmin`.
                m.dmin[r] = unsafe { f16_at(x.add(82)) };
                for s in 0..16 {
                    // SAFETY: bytes `0..16`: the scale bytes, mins in the high nibbles.
                    m.mp[s / 2][2 * r + s % 2] = (unsafe { *x.add(s) } >> 4) as i16;
                }
            }
        }
        for t in 0..tokens {
            let mut acc_m = _mm256_setzero_ps();
            for b in 0..nb {
                // SAFETY: `b < nb`: filled above.
                let m = unsafe { &*mins.add(b) };
                // SAFETY: token `t < tokens`, block `b < nb`: inside the activations.
                let y = unsafe { a.add(t * arb + b * Q8_K_BYTES) };
                let mut total = _mm256_setzero_si256();
                for k in 0..8 {
                    // SAFETY: bytes `260 + 4k..264 + 4k` of the Q8_K block: the i16 sums of
                    // sub-blocks 2k and 2k + 1; `m.mp[k]` is 32 aligned bytes.
                    let (pair, mp) = unsafe {
                        (
                            (y.add(Y_BSUMS + 4 * k) as *const i32).read_unaligned(),
                            _mm256_load_si256(m.mp[k].as_ptr() as *const __m256i),
                        )
                    };
                    total = _mm256_add_epi32(total, _mm256_madd_epi16(mp, _mm256_set1_epi32(pair)));
                }
                // SAFETY: a Q8_K block opens with its f32 scale; `dmin` is 32 aligned bytes.
                let (yd, dmin) = unsafe { (q8k_d(y), _mm256_load_ps(m.dmin.as_ptr())) };
                acc_m = _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(total),
                    _mm256_mul_ps(dmin, _mm256_set1_ps(yd)),
                    acc_m,
                );
            }
            let mut v = [0.0f32; 8];
            // SAFETY: `v` is 8 f32s.
            unsafe { _mm256_storeu_ps(v.as_mut_ptr(), acc_m) };
            for (r, &v) in v.iter().enumerate().take(nr) {
                // SAFETY: `t < tokens`, `r0 + r < rows`: inside `out`.
                unsafe { *out.add(t * rows + r0 + r) -= v };
            }
        }
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

/// Q2_K's tiles (the same with AVX-512 VNNI).
static Q2_K_TILES: Tiles = Tiles {
    bytes: Q2_K_BYTES,
    r4t4: tile::<Q2K, TILE_R, TILE_T>,
    r4t1: tile::<Q2K, TILE_R, 1>,
    r1t1: tile::<Q2K, 1, 1>,
};

/// Q3_K's tiles (the same with AVX-512 VNNI).
static Q3_K_TILES: Tiles = Tiles {
    bytes: Q3_K_BYTES,
    r4t4: tile::<Q3K, TILE_R, TILE_T>,
    r4t1: tile::<Q3K, TILE_R, 1>,
    r1t1: tile::<Q3K, 1, 1>,
};

/// How Q2_K's products run (`gemm_k::run`): the tiles, and for prompts the Q6_K prompt
/// kernels followed by the mins' pass.
pub(super) static Q2_K: KQuant = KQuant {
    tiles: &Q2_K_TILES,
    tiles_zmm: &Q2_K_TILES,
    zmm: packed_q2_k::<Sub16Zmm16<Q2K>>,
    ymm: Some(packed_q2_k::<Sub16Packed8<Q2K>>),
};

/// How Q3_K's products run (`gemm_k::run`): the tiles, and for prompts the Q6_K prompt
/// kernels.
pub(super) static Q3_K: KQuant = KQuant {
    tiles: &Q3_K_TILES,
    tiles_zmm: &Q3_K_TILES,
    zmm: gemm_packed::<Sub16Zmm16<Q3K>>,
    ymm: Some(gemm_packed::<Sub16Packed8<Q3K>>),
};

/// Q2_K's prompt product: the scaled term through the Q6_K prompt kernel `P`, then the mins
/// taken off ([`subtract_mins_q2_k`]).
///
/// # Safety
/// As [`gemm_packed`] for `P`, and AVX2/FMA/F16C present.
#[allow(clippy::too_many_arguments)]
unsafe fn packed_q2_k<P: PackedKernel>(
    nb: usize,
    w: *const u8,
    wrb: usize,
    rows: usize,
    a: *const u8,
    arb: usize,
    tokens: usize,
    out: *mut f32,
) {
    // SAFETY: the caller's contract is both functions'.
    unsafe {
        gemm_packed::<P>(nb, w, wrb, rows, a, arb, tokens, out);
        subtract_mins_q2_k(nb, w, wrb, rows, a, arb, tokens, out);
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
    run(&Q2_K, path(g.tokens), g, out)
}

pub(super) fn gemm_q3_k(g: &GemmArgs<'_>, out: &mut [f32]) {
    run(&Q3_K, path(g.tokens), g, out)
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
