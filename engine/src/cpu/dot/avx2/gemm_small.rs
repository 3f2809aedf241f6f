//! AVX2 matrix products of the 4- and 5-bit 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1) against
//! Q8_0/Q8_1 activations, with weight rows in vector lanes.
//!
//! **One sum order for every path.** For row `r` and token `t`, block by block:
//! `acc = fma(Σ q·a, d_r·d_t, acc)` (then, for Q4_1, `acc = fma(m_r, s_t, acc)`), where `Σ q·a` is
//! the block's exact integer dot product. [`super::legacy`]'s `vec_dot`s, the decode tiles and
//! the packed prompt tiles below all follow it, so a logit does not move whichever of them
//! computes it (the tests check bit identity).
//!
//! **Prompt path (4 tokens or more): 8 rows per register.** Each call repacks its weight rows
//! into groups of 8, a block at a time: the 8 rows' stored quants (unsigned, 0..=31),
//! interleaved 4 bytes a row (`q[j]` holds elements `4j..4j+4` of rows 0..8), beside their f32
//! scales. Then one `maddubs` of `q[j]` with the token's 4 bytes `4j..4j+4` broadcast gives
//! 8 rows × 4 products, and the block's 8 dot products arrive in the 8 lanes:
//! `Σ stored·a − OFFSET·Σa = Σ q·a`, the token's `OFFSET·Σa` worked out once per call. The
//! scales of 8 rows are one vector, so a block costs one conversion and one `fma` for 8
//! outputs (instead of per row and token). Stored quants ≤ 31 against |a| ≤ 127 keep four
//! `maddubs` sums inside i16 (≤ 31 496). Q8_0's quants are signed: its rows are repacked as
//! signed bytes beside `128·Σq`, and meet the activations offset to unsigned (`a + 128`):
//! `Σ (a+128)·q − 128·Σq = Σ a·q`.
//! The repacking is done once per call and used by all its tokens (64 per call). With
//! AVX-VNNI, `vpdpbusd` replaces `maddubs` (i32 sums, so Q8_0 fits too); with AVX-512 VNNI,
//! `gemm_small_zmm` multiplies two repacked groups at once, 16 rows per 512-bit register
//! ([`Packing`]).
//!
//! **Decode path (fewer tokens):** 8 rows × 1 token straight from the file's blocks: the stored
//! (unsigned) quants meet the activations in one `maddubs` each, the rows' 8-lane partial sums
//! are reduced to exact totals with horizontal adds, `OFFSET·Σa` comes off once per block, and
//! one conversion and one `fma` serve the 8 rows. With 2 or 3 tokens (a batch of sequences),
//! each tile of rows runs every token before the next tile, so the weights stream from memory
//! once per call, not once per token.

use super::blocks::{Block, IQ4_NL, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, u32_at};
use super::legacy::{bits_to_bytes, nibbles};
use super::{
    checked_blocks, dot_i8_i8, dot_u8_i8, f16_at, has_avxvnni, hsum_epi32, load, prefetch_next,
    transpose8x4,
};
use crate::cpu::dot::GemmArgs;
use crate::quant::q8::QK;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// The formats here as the decode tiles read them: the quants as stored, unsigned.
pub(super) trait SmallBlock: Block {
    /// Stored quant − `OFFSET` = the signed quant `q` (0 for Q4_1, whose quants are unsigned).
    const OFFSET: i32;
    /// The block's 32 stored quants (0..=31) in element order.
    ///
    /// # Safety
    /// `p..p + BYTES` readable; AVX2 present.
    unsafe fn stored(p: *const u8) -> __m256i;
    /// Quants up to ±127 (Q8_0): `maddubs` of them with offset activations would saturate
    /// i16, so the packed prompt tile needs AVX-VNNI's i32 sums (without it, prompts take
    /// the decode tiles token by token).
    const WIDE: bool = false;
    /// The 8 i32 lanes of `Σ stored·a` over the block at `p` against the activation quants
    /// `y` (each lane the sum of four adjacent products).
    ///
    /// # Safety
    /// `p..p + BYTES` readable; AVX2 present.
    #[inline(always)]
    unsafe fn dot(p: *const u8, y: __m256i) -> __m256i {
        // SAFETY: the caller's contract is `stored`'s, and AVX2 is present (the same contract).
        unsafe { dot_u8_i8(Self::stored(p), y) }
    }
}

impl SmallBlock for Q4_0 {
    const OFFSET: i32 = 8;
    #[inline(always)]
    unsafe fn stored(p: *const u8) -> __m256i {
        // SAFETY: AVX2 is present and `p..p + BYTES` readable (the trait's precondition); the
        // nibbles are bytes `2..18` of the 18-byte block.
        unsafe { nibbles(p.add(2)) }
    }
}

impl SmallBlock for Q4_1 {
    const OFFSET: i32 = 0;
    #[inline(always)]
    unsafe fn stored(p: *const u8) -> __m256i {
        // SAFETY: as for Q4_0; the nibbles are bytes `4..20` of the 20-byte block.
        unsafe { nibbles(p.add(4)) }
    }
}

impl SmallBlock for Q5_0 {
    const OFFSET: i32 = 16;
    #[inline(always)]
    unsafe fn stored(p: *const u8) -> __m256i {
        // SAFETY: as for Q4_0; the nibbles are bytes `6..22` and the high bits `2..6` of the
        // 22-byte block.
        unsafe {
            _mm256_or_si256(
                nibbles(p.add(6)),
                _mm256_and_si256(bits_to_bytes(p.add(2)), _mm256_set1_epi8(0x10)),
            )
        }
    }
}

impl SmallBlock for Q5_1 {
    const OFFSET: i32 = 0;
    #[inline(always)]
    unsafe fn stored(p: *const u8) -> __m256i {
        // SAFETY: the trait's precondition is `quants`'s (the stored quants are unsigned).
        unsafe { Self::quants(p) }
    }
}

impl SmallBlock for Q8_0 {
    const OFFSET: i32 = 0;
    const WIDE: bool = true;
    #[inline(always)]
    unsafe fn stored(p: *const u8) -> __m256i {
        // SAFETY: AVX2 is present and `p..p + BYTES` readable (the trait's precondition); the
        // signed quants are bytes `2..34` of the 34-byte block.
        unsafe { load(p.add(2)) }
    }
    #[inline(always)]
    unsafe fn dot(p: *const u8, y: __m256i) -> __m256i {
        // SAFETY: as `stored`; signed quants meet the activations through the sign trick.
        unsafe { dot_i8_i8(Self::stored(p), y) }
    }
}

/// IQ4_NL: its table's values (−127..=113, signed) are what the tiles multiply, as Q8_0's
/// quants (so `WIDE`: offset activations in the packed tiles).
impl SmallBlock for IQ4_NL {
    const OFFSET: i32 = 0;
    const WIDE: bool = true;
    #[inline(always)]
    unsafe fn stored(p: *const u8) -> __m256i {
        // SAFETY: the trait's precondition is `quants`'s.
        unsafe { Self::quants(p) }
    }
    #[inline(always)]
    unsafe fn dot(p: *const u8, y: __m256i) -> __m256i {
        // SAFETY: as `stored`; signed values meet the activations through the sign trick.
        unsafe { dot_i8_i8(Self::stored(p), y) }
    }
}

/// Fewest tokens for which a call repacks its rows (below: decode tiles).
const MIN_PACKED_TOKENS: usize = 4;

/// The prompt tile a call's repacked rows go through (the same exact integers on each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::cpu::dot) enum Packing {
    /// 8 rows per 256-bit register, `maddubs` (i16 sums; not for a `WIDE` format).
    Maddubs8,
    /// 8 rows per 256-bit register, AVX-VNNI's `vpdpbusd`.
    Vnni8,
    /// 16 rows per 512-bit register, AVX-512 VNNI's `vpdpbusd` (`gemm_small_zmm`).
    Vnni16,
}

impl Packing {
    /// Whether this CPU runs the tile.
    fn available(self) -> bool {
        match self {
            Packing::Maddubs8 => true,
            Packing::Vnni8 => has_avxvnni(),
            Packing::Vnni16 => super::gemm_q4k_zmm::available(),
        }
    }
}
/// Tokens per pass of the packed kernel (they share each loaded weight vector).
const PACKED_TT: usize = 4;

/// One block of 8 weight rows, repacked. 32-byte aligned so every field loads aligned.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(super) struct Packed8 {
    /// f32 scale of each row.
    pub(super) d: [f32; 8],
    /// `128 · Σ q` of each row (removes the activations' +128 offset; `WIDE` formats only).
    pub(super) corr: [i32; 8],
    /// f32 min of each row (Q4_1; zero otherwise).
    pub(super) m: [f32; 8],
    /// `q[j]`: elements `4j..4j+4` of rows 0..8, row after row: the stored quants (`WIDE`
    /// formats: the signed quants).
    pub(super) q: [[u8; 32]; 8],
}

const PACKED8_ZERO: Packed8 = Packed8 {
    d: [0.0; 8],
    corr: [0; 8],
    m: [0.0; 8],
    q: [[0; 32]; 8],
};

/// One activation block, prepared for the packed kernel.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(super) struct ActBlock {
    /// The quants as signed bytes (`WIDE` formats: plus 128, as unsigned bytes).
    pub(super) u: [u8; 32],
    /// f32 scale.
    pub(super) d: f32,
    /// f32 `d · Σ a` (Q8_1 activations; zero otherwise).
    pub(super) s: f32,
    /// `OFFSET · Σ a`, which comes off the stored quants' products (zero where `OFFSET` is).
    pub(super) c: i32,
}

const ACT_ZERO: ActBlock = ActBlock {
    u: [0; 32],
    d: 0.0,
    s: 0.0,
    c: 0,
};

thread_local! {
    /// Each thread's repacked weights and prepared activations; grown, never shrunk, so a
    /// steady stream of calls allocates nothing.
    static SCRATCH: RefCell<(Vec<Packed8>, Vec<ActBlock>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The exact totals of the 8 i32 lanes of each of `p[0..8]`, in lanes 0..8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn totals8(p: [__m256i; 8]) -> __m256i {
    let lo = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    let hi = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
    // lo = rows 0..4 over lanes 0..4 | rows 0..4 over lanes 4..8; hi the same for rows 4..8.
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(lo, hi),
        _mm256_permute2x128_si256::<0x31>(lo, hi),
    )
}

/// Rows per decode tile.
const DECODE_ROWS: usize = 8;

/// `out[r] = w_r · a` for `R ≤ 8` rows at `w` (`wrb` apart) and one token whose block scales
/// are `ad[b]` (Q8_1 sums `as_[b]`, `OFFSET · Σ a` per block `corr[b]`), quants at `a`, over
/// `nb` blocks; with `prefetch`, the `R` rows after these are prefetched (decode streams them
/// next). The stored (unsigned) quants meet the activations in one `maddubs`, and
/// `Σ stored·a − OFFSET·Σ a = Σ q·a` once per block for all the rows.
///
/// # Safety
/// AVX2/FMA/F16C present; `nb` blocks readable in each row and in `a`, `nb` values in `ad`,
/// `as_` and `corr`; `out..out + R` writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_tile<B: SmallBlock, const R: usize>(
    nb: usize,
    w: *const u8,
    wrb: usize,
    a: *const u8,
    ad: *const f32,
    as_: *const f32,
    corr: *const i32,
    out: *mut f32,
    prefetch: bool,
) {
    let mut acc = _mm256_setzero_ps();
    for b in 0..nb {
        if prefetch {
            prefetch_next::<R>(w, wrb, b, B::BYTES);
        }
        // SAFETY: block `b < nb` of the token is readable (precondition); its quants end the block.
        let y = unsafe { load(a.add(b * B::ACT_BYTES + B::ACT_QS)) };
        let mut p = [_mm256_setzero_si256(); 8];
        // (d, m) of the rows as f16 pairs d0 m0 d1 m1 …
        let mut g = [0i32; 8];
        for r in 0..R {
            // SAFETY: row `r < R`, block `b < nb`: inside the rows (precondition).
            let wb = unsafe { w.add(r * wrb + b * B::BYTES) };
            // SAFETY: `wb` starts a whole readable block, and AVX2 is present (precondition).
            p[r] = unsafe { B::dot(wb, y) };
            // SAFETY: a block's first 4 bytes (its scales) are readable.
            g[r] = unsafe { u32_at(wb) };
        }
        let g = _mm256_setr_epi32(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]);
        // The low halves (d) of the 8 words, then the high halves (m), as f32.
        let split = _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12, 13, 2, 3,
            6, 7, 10, 11, 14, 15,
        );
        let g = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_shuffle_epi8(g, split));
        let dw = _mm256_cvtph_ps(_mm256_castsi256_si128(g));
        // SAFETY: `b < nb`, and `ad` holds `nb` values (precondition).
        let d = _mm256_mul_ps(dw, _mm256_set1_ps(unsafe { *ad.add(b) }));
        let mut i = totals8(p);
        if B::OFFSET != 0 {
            // SAFETY: `b < nb`, and `corr` holds `nb` values (precondition).
            i = _mm256_sub_epi32(i, _mm256_set1_epi32(unsafe { *corr.add(b) }));
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), d, acc);
        if B::HAS_MIN {
            let m = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(g));
            // SAFETY: `b < nb`, and `as_` holds `nb` values (precondition).
            acc = _mm256_fmadd_ps(m, _mm256_set1_ps(unsafe { *as_.add(b) }), acc);
        }
    }
    let mut o = [0.0f32; 8];
    // SAFETY: `o` is 8 f32s, one 256-bit store.
    unsafe { _mm256_storeu_ps(o.as_mut_ptr(), acc) };
    for (r, &v) in o.iter().enumerate().take(R) {
        // SAFETY: `r < R`, and `out..out + R` is writable (precondition).
        unsafe { *out.add(r) = v };
    }
}

/// Repacks rows `0..nr` (`nr ≤ 8`; the rest zero) at `w` (`wrb` apart) into `dst[0..nb]`.
///
/// # Safety
/// AVX2/FMA/F16C present; `nb` blocks readable in each of the `nr` rows; `dst` holds `nb`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn repack8<B: SmallBlock>(
    nb: usize,
    w: *const u8,
    wrb: usize,
    nr: usize,
    dst: *mut Packed8,
) {
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    for b in 0..nb {
        prefetch_next::<8>(w, wrb, b, B::BYTES);
        let mut v = [_mm256_setzero_si256(); 8];
        let mut dh = [0u16; 8];
        let mut mh = [0u16; 8];
        for r in 0..nr {
            // SAFETY: row `r < nr`, block `b < nb`: inside the rows (precondition).
            let wb = unsafe { w.add(r * wrb + b * B::BYTES) };
            // SAFETY: `wb` starts a whole readable block, and AVX2 is present (precondition).
            v[r] = unsafe {
                if B::WIDE {
                    B::quants(wb)
                } else {
                    B::stored(wb)
                }
            };
            // SAFETY: every block starts with its f16 scale.
            dh[r] = unsafe { (wb as *const u16).read_unaligned() };
            if B::HAS_MIN {
                // SAFETY: with `HAS_MIN` (Q4_1) the block's f16 min follows its scale.
                mh[r] = unsafe { (wb.add(2) as *const u16).read_unaligned() };
            }
        }
        // Chunk j = group j (elements 4j..4j+4) of every row.
        let chunks = transpose8x4(v);
        let mut sum16 = _mm256_setzero_si256();
        // SAFETY: `b < nb`, and `dst` holds `nb` blocks (precondition); nothing else refers to them.
        let p = unsafe { &mut *dst.add(b) };
        for (j, c) in chunks.iter().enumerate() {
            if B::WIDE {
                sum16 = _mm256_add_epi16(sum16, _mm256_maddubs_epi16(ones8, *c));
            }
            // SAFETY: `p.q[j]` is 32 bytes at a 32-aligned offset of the 32-aligned `Packed8`.
            unsafe { _mm256_store_si256(p.q[j].as_mut_ptr() as *mut __m256i, *c) };
        }
        if B::WIDE {
            let corr = _mm256_slli_epi32::<7>(_mm256_madd_epi16(sum16, ones16));
            // SAFETY: `corr` is 32 bytes at a 32-aligned offset of the 32-aligned `Packed8`.
            unsafe { _mm256_store_si256(p.corr.as_mut_ptr() as *mut __m256i, corr) };
        }
        // SAFETY: `d` and `m` are 32 bytes at 32-aligned offsets of the 32-aligned `Packed8`;
        // `dh` and `mh` are 16 bytes each (unaligned loads).
        unsafe {
            let d = _mm256_cvtph_ps(_mm_loadu_si128(dh.as_ptr() as *const __m128i));
            _mm256_store_ps(p.d.as_mut_ptr(), d);
            if B::HAS_MIN {
                let m = _mm256_cvtph_ps(_mm_loadu_si128(mh.as_ptr() as *const __m128i));
                _mm256_store_ps(p.m.as_mut_ptr(), m);
            }
        }
    }
}

/// Prepares `nb` blocks of each of `tokens` activation rows at `a` (`arb` apart) into `dst`
/// (token after token).
///
/// # Safety
/// AVX2/FMA/F16C present; the blocks readable; `dst` holds `tokens · nb`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prepare_acts<B: SmallBlock>(
    nb: usize,
    a: *const u8,
    arb: usize,
    tokens: usize,
    dst: *mut ActBlock,
) {
    let offset = _mm256_set1_epi8(0x80u8 as i8);
    let ones = _mm256_set1_epi8(1);
    for t in 0..tokens {
        for b in 0..nb {
            // SAFETY: token `t < tokens`, block `b < nb`: inside the activations (precondition).
            let ab = unsafe { a.add(t * arb + b * B::ACT_BYTES) };
            // SAFETY: `t·nb + b < tokens·nb`, which `dst` holds (precondition); nothing else refers to it.
            let o = unsafe { &mut *dst.add(t * nb + b) };
            // SAFETY: the block is readable and its quants end it (`ACT_QS + 32 == ACT_BYTES`).
            let y = unsafe { load(ab.add(B::ACT_QS)) };
            let u = if B::WIDE {
                _mm256_xor_si256(y, offset)
            } else {
                y
            };
            // SAFETY: `o.u` is 32 bytes.
            unsafe { _mm256_storeu_si256(o.u.as_mut_ptr() as *mut __m256i, u) };
            o.c = if B::OFFSET != 0 {
                B::OFFSET * hsum_epi32(dot_u8_i8(ones, y))
            } else {
                0
            };
            // SAFETY: every activation block starts with its f16 scale.
            o.d = unsafe { f16_at(ab) };
            o.s = if B::HAS_MIN {
                // SAFETY: with `HAS_MIN` the activations are Q8_1, whose f16 sum follows the scale.
                unsafe { f16_at(ab.add(2)) }
            } else {
                0.0
            };
        }
    }
}

/// A packed block's exact integer products `Σ q·a` of 8 rows from the sums `i` of its
/// packed bytes: less `128·Σq` of each row for a `WIDE` format (whose activations were
/// offset), less the token's `OFFSET·Σa` for the others (nothing for Q4_1).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn exact<B: SmallBlock>(i: __m256i, p: &Packed8, ab: &ActBlock) -> __m256i {
    if B::WIDE {
        // SAFETY: `corr` is 32 bytes at a 32-aligned offset of the 32-aligned `Packed8`.
        _mm256_sub_epi32(i, unsafe {
            _mm256_load_si256(p.corr.as_ptr() as *const __m256i)
        })
    } else if B::OFFSET != 0 {
        _mm256_sub_epi32(i, _mm256_set1_epi32(ab.c))
    } else {
        i
    }
}

/// `out[t·ldo + r] = w_r · a_t` for the 8 rows of `pk` (first `nr` stored) and `TT` tokens of
/// `act` (`nb` blocks apart).
///
/// # Safety
/// AVX2/FMA/F16C present; `pk` holds `nb` blocks, `act` `TT · nb`; `out` writable at every
/// `t·ldo + r` for `r < nr`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn packed_tile<B: SmallBlock, const TT: usize>(
    nb: usize,
    pk: *const Packed8,
    act: *const ActBlock,
    out: *mut f32,
    ldo: usize,
    nr: usize,
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); TT];
    for b in 0..nb {
        // SAFETY: `b < nb`, and `pk` holds `nb` blocks (precondition).
        let p = unsafe { &*pk.add(b) };
        // SAFETY: `t·nb + b < TT·nb`, which `act` holds (precondition).
        let ab: [&ActBlock; TT] = std::array::from_fn(|t| unsafe { &*act.add(t * nb + b) });
        let mut lo = [_mm256_setzero_si256(); TT];
        let mut hi = [_mm256_setzero_si256(); TT];
        for j in 0..8 {
            // SAFETY: `p.q[j]` (`j < 8`) is 32 bytes at a 32-aligned offset of the 32-aligned `Packed8`.
            let wj = unsafe { _mm256_load_si256(p.q[j].as_ptr() as *const __m256i) };
            for t in 0..TT {
                // SAFETY: bytes `4j..4j + 4` (`j < 8`) of the 32-byte `u`.
                let u = _mm256_set1_epi32(unsafe { u32_at(ab[t].u.as_ptr().add(4 * j)) });
                // The unsigned operand: the stored quants (≤ 31, against |a| ≤ 127: four
                // sums of two products stay inside i16). `WIDE` formats, whose offset
                // activations would saturate them, never take this tile.
                let m = if B::WIDE {
                    _mm256_maddubs_epi16(u, wj)
                } else {
                    _mm256_maddubs_epi16(wj, u)
                };
                if j < 4 {
                    lo[t] = _mm256_add_epi16(lo[t], m);
                } else {
                    hi[t] = _mm256_add_epi16(hi[t], m);
                }
            }
        }
        // SAFETY: `d` is 32 bytes at offset 0 of the 32-aligned `Packed8`.
        let d = unsafe { _mm256_load_ps(p.d.as_ptr()) };
        for t in 0..TT {
            let i = exact::<B>(
                _mm256_add_epi32(
                    _mm256_madd_epi16(lo[t], ones),
                    _mm256_madd_epi16(hi[t], ones),
                ),
                p,
                ab[t],
            );
            let s = _mm256_mul_ps(d, _mm256_set1_ps(ab[t].d));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), s, acc[t]);
            if B::HAS_MIN {
                // SAFETY: `m` is 32 bytes at a 32-aligned offset of the 32-aligned `Packed8`.
                let m = unsafe { _mm256_load_ps(p.m.as_ptr()) };
                acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(ab[t].s), acc[t]);
            }
        }
    }
    // SAFETY: the outputs are the precondition's.
    unsafe { store_tile(&acc, out, ldo, nr) };
}

/// [`packed_tile`] with AVX-VNNI: `vpdpbusd` sums each block's products in i32 (two chains
/// per token, even and odd groups, since one chain is bound by the instruction's latency), so
/// quants up to ±127 ([`SmallBlock::WIDE`]) cannot saturate; the same exact integers, then the
/// same float steps.
///
/// # Safety
/// As [`packed_tile`], and AVX-VNNI present.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn packed_tile_vnni<B: SmallBlock, const TT: usize>(
    nb: usize,
    pk: *const Packed8,
    act: *const ActBlock,
    out: *mut f32,
    ldo: usize,
    nr: usize,
) {
    let mut acc = [_mm256_setzero_ps(); TT];
    for b in 0..nb {
        // SAFETY: `b < nb`, and `pk` holds `nb` blocks (precondition).
        let p = unsafe { &*pk.add(b) };
        // SAFETY: `t·nb + b < TT·nb`, which `act` holds (precondition).
        let ab: [&ActBlock; TT] = std::array::from_fn(|t| unsafe { &*act.add(t * nb + b) });
        let mut even = [_mm256_setzero_si256(); TT];
        let mut odd = [_mm256_setzero_si256(); TT];
        for j in 0..8 {
            // SAFETY: `p.q[j]` (`j < 8`) is 32 bytes at a 32-aligned offset of the 32-aligned `Packed8`.
            let wj = unsafe { _mm256_load_si256(p.q[j].as_ptr() as *const __m256i) };
            for t in 0..TT {
                // SAFETY: bytes `4j..4j + 4` (`j < 8`) of the 32-byte `u`.
                let u = _mm256_set1_epi32(unsafe { u32_at(ab[t].u.as_ptr().add(4 * j)) });
                // The unsigned operand: the stored quants, or a `WIDE` format's offset
                // activations.
                let (x, y) = if B::WIDE { (u, wj) } else { (wj, u) };
                if j % 2 == 0 {
                    even[t] = _mm256_dpbusd_avx_epi32(even[t], x, y);
                } else {
                    odd[t] = _mm256_dpbusd_avx_epi32(odd[t], x, y);
                }
            }
        }
        // SAFETY: `d` is 32 bytes at offset 0 of the 32-aligned `Packed8`.
        let d = unsafe { _mm256_load_ps(p.d.as_ptr()) };
        for t in 0..TT {
            let i = exact::<B>(_mm256_add_epi32(even[t], odd[t]), p, ab[t]);
            let s = _mm256_mul_ps(d, _mm256_set1_ps(ab[t].d));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), s, acc[t]);
            if B::HAS_MIN {
                // SAFETY: `m` is 32 bytes at a 32-aligned offset of the 32-aligned `Packed8`.
                let m = unsafe { _mm256_load_ps(p.m.as_ptr()) };
                acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(ab[t].s), acc[t]);
            }
        }
    }
    // SAFETY: the outputs are the precondition's.
    unsafe { store_tile(&acc, out, ldo, nr) };
}

/// Stores `acc[t]` (8 rows, the first `nr` kept) at `out + t·ldo`.
///
/// # Safety
/// `out` writable at every `t·ldo + r` for `t < TT`, `r < nr`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn store_tile<const TT: usize>(
    acc: &[__m256; TT],
    out: *mut f32,
    ldo: usize,
    nr: usize,
) {
    for (t, acc) in acc.iter().enumerate() {
        // SAFETY: `t < TT`: `t·ldo` is an output the precondition makes writable.
        let o = unsafe { out.add(t * ldo) };
        if nr == 8 {
            // SAFETY: all 8 rows are stored, so `o..o + 8` is writable (precondition).
            unsafe { _mm256_storeu_ps(o, *acc) };
        } else {
            let mut v = [0.0f32; 8];
            // SAFETY: `v` is 8 f32s, one 256-bit store.
            unsafe { _mm256_storeu_ps(v.as_mut_ptr(), *acc) };
            for (r, &x) in v.iter().enumerate().take(nr) {
                // SAFETY: `r < nr`, so `o + r` is writable (precondition).
                unsafe { *o.add(r) = x };
            }
        }
    }
}

/// The whole product through packed groups of 8 rows, with AVX-VNNI's tile or `maddubs`'
/// (the same exact integers).
///
/// # Safety
/// As in [`gemm_impl`], with `tokens ≥ 1`; with `vnni`, AVX-VNNI present; without it, not a
/// `WIDE` format.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_packed<B: SmallBlock>(
    packing: Packing,
    nb: usize,
    w: *const u8,
    wrb: usize,
    rows: usize,
    a: *const u8,
    arb: usize,
    tokens: usize,
    out: *mut f32,
) {
    // Groups of 8 rows, in pairs for the 16-row tile (the second of a pair may be empty).
    let step = if packing == Packing::Vnni16 { 2 } else { 1 };
    let groups = rows.div_ceil(8).next_multiple_of(step);
    // This thread's scratch, grown to fit. The pointers stay valid below: nothing else touches
    // the scratch until this call returns (no call inside reenters it).
    let (pk, act) = SCRATCH.with_borrow_mut(|(pk, act)| {
        if pk.len() < groups * nb {
            pk.resize(groups * nb, PACKED8_ZERO);
        }
        if act.len() < tokens * nb {
            act.resize(tokens * nb, ACT_ZERO);
        }
        (pk.as_mut_ptr(), act.as_mut_ptr())
    });
    // SAFETY: the features and the activation blocks come with this fn's precondition;
    // `act` was grown above to `tokens·nb` blocks.
    unsafe { prepare_acts::<B>(nb, a, arb, tokens, act) };
    for g in (0..groups).step_by(step) {
        let r0 = 8 * g;
        let nr = (rows - r0).min(8 * step);
        for h in 0..step {
            // SAFETY: `g + h < groups`, and `pk` was grown above to `groups·nb` blocks; rows
            // `r0 + 8h..` (none when `8h >= nr`: then nothing is read, and the address is only
            // formed, wrapping) hold `nb` readable blocks each (precondition).
            unsafe {
                repack8::<B>(
                    nb,
                    w.wrapping_add((r0 + 8 * h) * wrb),
                    wrb,
                    nr.saturating_sub(8 * h).min(8),
                    pk.add((g + h) * nb),
                )
            };
        }
        // SAFETY: `g < groups`, and `pk` holds `groups·nb` blocks.
        let gp = unsafe { pk.add(g * nb) };
        // The pair's second group (the 16-row tile only).
        let gq = gp.wrapping_add(nb);
        let mut t = 0;
        while t < tokens {
            let four = t + PACKED_TT <= tokens;
            // SAFETY: `t < tokens`: `act` holds `tokens·nb` blocks, `out` `tokens × rows` floats.
            let (at, ot) = unsafe { (act.add(t * nb), out.add(t * rows + r0)) };
            // SAFETY: tokens `t..t + n <= tokens` (`n` 4 or 1): `at` holds `n·nb` prepared
            // blocks, and outputs `(t + i)·rows + r0 + j` (`j < nr`) lie inside `out`; each
            // tile runs only where its `Packing` is available (the caller's contract), the
            // 16-row one with both groups of the pair repacked.
            unsafe {
                match (packing, four) {
                    (Packing::Vnni16, true) => {
                        super::gemm_small_zmm::packed_tile16::<B, PACKED_TT>(
                            nb, gp, gq, at, ot, rows, nr,
                        )
                    }
                    (Packing::Vnni16, false) => {
                        super::gemm_small_zmm::packed_tile16::<B, 1>(nb, gp, gq, at, ot, rows, nr)
                    }
                    (Packing::Vnni8, true) => {
                        packed_tile_vnni::<B, PACKED_TT>(nb, gp, at, ot, rows, nr)
                    }
                    (Packing::Vnni8, false) => packed_tile_vnni::<B, 1>(nb, gp, at, ot, rows, nr),
                    (Packing::Maddubs8, true) => {
                        packed_tile::<B, PACKED_TT>(nb, gp, at, ot, rows, nr)
                    }
                    (Packing::Maddubs8, false) => packed_tile::<B, 1>(nb, gp, at, ot, rows, nr),
                }
            };
            t += if four { PACKED_TT } else { 1 };
        }
    }
}

/// The whole product: packed groups for prompts (`packed`: `Some(vnni)`, whether with
/// AVX-VNNI's tile), 8-row decode tiles token by token otherwise.
///
/// # Safety
/// With `packed == Some(true)`, AVX-VNNI present; `Some(false)` never for a `WIDE` format.
/// AVX2/FMA/F16C present; `nb` blocks readable in each of the `rows` rows at `w` (`wrb`
/// apart) and the `tokens` rows at `a` (`arb` apart); `out` holds `tokens × rows`.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_impl<B: SmallBlock>(
    packed: Option<Packing>,
    nb: usize,
    w: *const u8,
    wrb: usize,
    rows: usize,
    a: *const u8,
    arb: usize,
    tokens: usize,
    out: *mut f32,
) {
    if let Some(packing) = packed.filter(|_| tokens >= MIN_PACKED_TOKENS) {
        // SAFETY: `tokens >= 4 >= 1`, and the rest of `gemm_packed`'s contract is this fn's.
        return unsafe { gemm_packed::<B>(packing, nb, w, wrb, rows, a, arb, tokens, out) };
    }
    // Each token's block scales (and Q8_1 sums, and `OFFSET·Σa`) as f32/i32, once for all
    // its rows: `3·nb` values a token.
    let per_token = 3 * nb;
    let scales = SCRATCH.with_borrow_mut(|(_, act)| {
        let want = (per_token * tokens).div_ceil(size_of::<ActBlock>() / 4);
        if act.len() < want {
            act.resize(want, ACT_ZERO);
        }
        act.as_mut_ptr()
    }) as *mut f32;
    let ones = _mm256_set1_epi8(1);
    for t in 0..tokens {
        // SAFETY: `t < tokens`: row `t` of the activations; token `t`'s `3·nb` values lie in
        // the scratch, which holds `3·nb·tokens` 4-byte values (an `ActBlock` is ten).
        let (at, st) = unsafe { (a.add(t * arb), scales.add(t * per_token)) };
        for b in 0..nb {
            // SAFETY: `b < nb`: block `b` of the token is readable (precondition).
            let ab = unsafe { at.add(b * B::ACT_BYTES) };
            // SAFETY: `b < nb` indexes the token's `nb` values of each array; the block's scale
            // (and, for Q8_1, its sum) open it, its quants end it.
            unsafe {
                *st.add(b) = f16_at(ab);
                *st.add(nb + b) = if B::HAS_MIN { f16_at(ab.add(2)) } else { 0.0 };
                if B::OFFSET != 0 {
                    let y = load(ab.add(B::ACT_QS));
                    *(st.add(2 * nb + b) as *mut i32) = B::OFFSET * hsum_epi32(dot_u8_i8(ones, y));
                }
            }
        }
    }
    // Token `t`'s activations, outputs and `(ad, as_, corr)`.
    let token = |t: usize| {
        let st = scales.wrapping_add(t * per_token);
        (
            a.wrapping_add(t * arb),
            out.wrapping_add(t * rows),
            st,
            st.wrapping_add(nb),
            st.wrapping_add(2 * nb) as *const i32,
        )
    };
    // Row tiles outside, tokens inside: a tile's rows stay in cache for every token.
    let mut r = 0;
    while r + DECODE_ROWS <= rows {
        // SAFETY: `r + 8 <= rows`: row `r` lies in the weights.
        let wr = unsafe { w.add(r * wrb) };
        for t in 0..tokens {
            let (at, ot, ad, as_, corr) = token(t);
            // The first token streams the rows from memory: it prefetches the next tile's.
            let prefetch = t == 0;
            // SAFETY: rows `r..r + 8 <= rows` are readable, token `t < tokens` too, `ad`/`as_`/
            // `corr` hold its `nb` values each and its outputs `r..r + 8` are writable.
            unsafe {
                rows_tile::<B, DECODE_ROWS>(nb, wr, wrb, at, ad, as_, corr, ot.add(r), prefetch)
            };
        }
        r += DECODE_ROWS;
    }
    // Wrapping: when `r == rows` these point past the last row (with a stride wider than
    // a row, possibly past the weights) and are never dereferenced (the match does nothing).
    let wr = w.wrapping_add(r * wrb);
    for t in 0..tokens {
        let (at, ot, ad, as_, corr) = token(t);
        let or = ot.wrapping_add(r);
        // SAFETY: the remaining `rows - r < 8` rows, under the same conditions as the full tiles.
        unsafe {
            match rows - r {
                1 => rows_tile::<B, 1>(nb, wr, wrb, at, ad, as_, corr, or, false),
                2 => rows_tile::<B, 2>(nb, wr, wrb, at, ad, as_, corr, or, false),
                3 => rows_tile::<B, 3>(nb, wr, wrb, at, ad, as_, corr, or, false),
                4 => rows_tile::<B, 4>(nb, wr, wrb, at, ad, as_, corr, or, false),
                5 => rows_tile::<B, 5>(nb, wr, wrb, at, ad, as_, corr, or, false),
                6 => rows_tile::<B, 6>(nb, wr, wrb, at, ad, as_, corr, or, false),
                7 => rows_tile::<B, 7>(nb, wr, wrb, at, ad, as_, corr, or, false),
                _ => {}
            }
        }
    }
}

/// How this CPU runs prompts of `B`: 16 rows per register with AVX-512 VNNI, 8 with
/// AVX-VNNI, 8 with `maddubs` otherwise, except a `WIDE` format (which would saturate
/// `maddubs`' i16 sums), whose prompts then take the decode tiles.
fn packed_path<B: SmallBlock>() -> Option<Packing> {
    [Packing::Vnni16, Packing::Vnni8, Packing::Maddubs8]
        .into_iter()
        .find(|p| p.available() && !(B::WIDE && *p == Packing::Maddubs8))
}

/// Checks `g` and `out` against the block sizes of `B` and runs the product.
fn gemm<B: SmallBlock>(g: &GemmArgs<'_>, out: &mut [f32]) {
    gemm_on::<B>(packed_path::<B>(), g, out)
}

/// [`gemm`] on a chosen path (see [`gemm_impl`]); a `Packing` this CPU lacks, or
/// `Maddubs8` for a `WIDE` format, is refused (no output written).
fn gemm_on<B: SmallBlock>(packed: Option<Packing>, g: &GemmArgs<'_>, out: &mut [f32]) {
    if let Some(p) = packed
        && (!p.available() || (B::WIDE && p == Packing::Maddubs8))
    {
        return;
    }
    let Some(nb) = checked_blocks(g, out, QK, B::BYTES, B::ACT_BYTES, 4) else {
        return;
    };
    // SAFETY: the table holding these fns is handed out only with AVX2/FMA/F16C present, and
    // a `Packing` only where this CPU has it (above); the checks keep every block (and its 4
    // scale bytes, inside the block) in bounds.
    unsafe {
        gemm_impl::<B>(
            packed,
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

pub(super) fn gemm_q4_0(g: &GemmArgs<'_>, out: &mut [f32]) {
    gemm::<Q4_0>(g, out)
}

pub(super) fn gemm_q4_1(g: &GemmArgs<'_>, out: &mut [f32]) {
    gemm::<Q4_1>(g, out)
}

pub(super) fn gemm_q5_0(g: &GemmArgs<'_>, out: &mut [f32]) {
    gemm::<Q5_0>(g, out)
}

pub(super) fn gemm_q5_1(g: &GemmArgs<'_>, out: &mut [f32]) {
    gemm::<Q5_1>(g, out)
}

pub(super) fn gemm_q8_0(g: &GemmArgs<'_>, out: &mut [f32]) {
    gemm::<Q8_0>(g, out)
}

pub(super) fn gemm_iq4_nl(g: &GemmArgs<'_>, out: &mut [f32]) {
    gemm::<IQ4_NL>(g, out)
}

/// The product of a format on one of its paths, for the tests that hold them bit-identical:
/// `None` the decode tiles; for the 32-element formats `Some(0)` packed with `maddubs`,
/// `Some(1)` with AVX-VNNI, `Some(2)` 16 rows with AVX-512 VNNI; for the K-quants (see
/// `gemm_k::gemm_path_k`) `Some(0)` 8 rows, `Some(1)` 16 rows. `false` where the CPU cannot
/// take that path or the format has none here.
#[cfg(test)]
pub(in crate::cpu::dot) fn gemm_path(
    dtype: crate::DType,
    path: Option<usize>,
    g: &GemmArgs<'_>,
    out: &mut [f32],
) -> bool {
    use crate::DType;
    if matches!(
        dtype,
        DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K
    ) {
        let packed = match path {
            None => None,
            Some(0) => Some(false),
            Some(1) => Some(true),
            Some(_) => return false,
        };
        return super::gemm_k::gemm_path_k(dtype, packed, g, out);
    }
    let packed = match path {
        None => None,
        Some(i) => match [Packing::Maddubs8, Packing::Vnni8, Packing::Vnni16].get(i) {
            Some(&p) => Some(p),
            None => return false,
        },
    };
    let wide = matches!(dtype, DType::Q8_0 | DType::IQ4_NL);
    if packed.is_some_and(|p| !p.available() || (wide && p == Packing::Maddubs8)) {
        return false;
    }
    match dtype {
        DType::Q4_0 => gemm_on::<Q4_0>(packed, g, out),
        DType::Q4_1 => gemm_on::<Q4_1>(packed, g, out),
        DType::Q5_0 => gemm_on::<Q5_0>(packed, g, out),
        DType::Q5_1 => gemm_on::<Q5_1>(packed, g, out),
        DType::Q8_0 => gemm_on::<Q8_0>(packed, g, out),
        DType::IQ4_NL => gemm_on::<IQ4_NL>(packed, g, out),
        _ => return false,
    }
    true
}
