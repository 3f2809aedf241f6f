//! AVX2 + FMA + F16C kernels (x86_64) and their table.
//!
//! Each kernel is a safe `fn` that clamps the block count to what both slices hold and calls an
//! `unsafe` `#[target_feature]` body reading through unaligned loads. The safe functions are only
//! reachable through [`KERNELS`], which `kernel_for` hands out only after run-time detection of
//! AVX2, FMA and F16C.

mod attn_tile;
mod blocks;
mod decode_q4k_zmm;
mod decode_q6k_zmm;
mod float;
mod fp4;
mod gemm_k;
mod gemm_k23;
mod gemm_q4k_packed;
mod gemm_q4k_zmm;
mod gemm_q6k_packed;
mod gemm_q6k_zmm;
mod gemm_small;
mod gemm_small_zmm;
mod iq4;
#[cfg(test)]
pub(super) use gemm_small::gemm_path;
mod kquant;
mod legacy;
mod packed;

use super::{DotKernel, F16Ops, GemmArgs, GemmFn, Isa};
use crate::DType;
use crate::quant::{BlockFormat, F32};
pub(super) use attn_tile::{TILE_ZMM, available as attn_tile_available};
use std::arch::x86_64::*;

/// Kernels with an AVX2 `vec_dot`; other types fall back to the scalar table.
pub(super) static KERNELS: [DotKernel; 15] = [
    k(
        DType::F32,
        DType::F32,
        F32::quantize_row,
        float::vec_dot_f32,
        None,
    ),
    k(
        DType::F16,
        DType::F16,
        float::quantize_row_f16,
        float::vec_dot_f16,
        None,
    ),
    k(
        DType::Q4_0,
        DType::Q8_0,
        legacy::quantize_row_q8_0,
        legacy::vec_dot_q4_0,
        Some(gemm_small::gemm_q4_0),
    ),
    k(
        DType::Q4_1,
        DType::Q8_1,
        legacy::quantize_row_q8_1,
        legacy::vec_dot_q4_1,
        Some(gemm_small::gemm_q4_1),
    ),
    k(
        DType::Q5_0,
        DType::Q8_0,
        legacy::quantize_row_q8_0,
        legacy::vec_dot_q5_0,
        Some(gemm_small::gemm_q5_0),
    ),
    k(
        DType::Q5_1,
        DType::Q8_1,
        legacy::quantize_row_q8_1,
        legacy::vec_dot_q5_1,
        Some(gemm_small::gemm_q5_1),
    ),
    k(
        DType::Q8_0,
        DType::Q8_0,
        legacy::quantize_row_q8_0,
        legacy::vec_dot_q8_0,
        Some(gemm_small::gemm_q8_0),
    ),
    k(
        DType::Q2_K,
        DType::Q8_K,
        kquant::quantize_row_q8_k,
        gemm_k23::vec_dot_q2_k,
        Some(gemm_k23::gemm_q2_k),
    ),
    k(
        DType::Q3_K,
        DType::Q8_K,
        kquant::quantize_row_q8_k,
        gemm_k23::vec_dot_q3_k,
        Some(gemm_k23::gemm_q3_k),
    ),
    k(
        DType::Q4_K,
        DType::Q8_K,
        kquant::quantize_row_q8_k,
        kquant::vec_dot_q4_k,
        Some(gemm_k::gemm_q4_k),
    ),
    k(
        DType::Q5_K,
        DType::Q8_K,
        kquant::quantize_row_q8_k,
        kquant::vec_dot_q5_k,
        Some(gemm_k::gemm_q5_k),
    ),
    k(
        DType::Q6_K,
        DType::Q8_K,
        kquant::quantize_row_q8_k,
        kquant::vec_dot_q6_k,
        Some(gemm_k::gemm_q6_k),
    ),
    k(
        DType::MXFP4,
        DType::Q8_0,
        legacy::quantize_row_q8_0,
        fp4::vec_dot_mxfp4,
        Some(fp4::gemm_mxfp4),
    ),
    k(
        DType::IQ4_NL,
        DType::Q8_0,
        legacy::quantize_row_q8_0,
        iq4::vec_dot_iq4_nl,
        Some(gemm_small::gemm_iq4_nl),
    ),
    k(
        DType::IQ4_XS,
        DType::Q8_K,
        kquant::quantize_row_q8_k,
        iq4::vec_dot_iq4_xs,
        Some(iq4::gemm_iq4_xs),
    ),
];

/// F16 attention kernels (F16C conversion + FMA).
pub(super) static F16_OPS: F16Ops = F16Ops {
    isa: Isa::Avx2,
    dot: float::dot_f32_f16,
    axpy: float::axpy_f16,
    exp_sum: float::exp_sum,
    wsum: float::wsum_f16,
    dots: float::dots_f32_f16,
    wsums: float::wsums_f16,
};

const fn k(
    dtype: DType,
    vec_dot_type: DType,
    quantize_row: fn(&[f32], &mut [u8]),
    vec_dot: fn(usize, &[u8], &[u8]) -> f32,
    tile: Option<GemmFn>,
) -> DotKernel {
    DotKernel {
        dtype,
        vec_dot_type,
        isa: Isa::Avx2,
        quantize_row,
        vec_dot,
        tile,
    }
}

/// Whether this CPU has AVX-VNNI (`vpdpbusd` on 256-bit vectors), checked once. The packed
/// prompt kernels use it where present; their results are the same exact integers either way.
/// `TESSERA_NO_VNNI` in the environment turns it off (to compare the two).
fn has_avxvnni() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        is_x86_feature_detected!("avxvnni") && std::env::var_os("TESSERA_NO_VNNI").is_none()
    })
}

/// Prefetches the share of block `b` of the rows that follow an `R`-row group of
/// `bytes`-byte blocks starting at `w` (`wrb` apart; the rows are contiguous, so block `b`'s
/// share is `R · bytes` bytes from `b · R · bytes`). A kernel that streams its rows once
/// (one-token tiles, the prompt kernels' repacking) fetches the next group with it, a
/// block's share at a time, while it works on this one: each row of a group is its own
/// short stream, which the hardware prefetchers do not follow (for the repacking:
/// 8-token steps 10-15% faster). It also brings the same share of the group [`AHEAD`]
/// groups on into L2: one group ahead is too near to cover the memory's latency on its own
/// (on a 2-core EPYC, 1B shape: Q8_0 decode 19 -> 23-29 tok/s, 8-sequence steps of every
/// format 10-25% faster; prompts, whose rows are read once per 64-256 tokens, unchanged).
#[inline(always)]
fn prefetch_next<const R: usize>(w: *const u8, wrb: usize, b: usize, bytes: usize) {
    let p = w.wrapping_add(R * wrb + b * R * bytes);
    // The same share of the group `AHEAD` groups on, into L2 only.
    let q = p.wrapping_add((AHEAD - 1) * R * wrb);
    for k in 0..=R * bytes / 64 {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * k) as *const i8);
            _mm_prefetch::<_MM_HINT_T1>(q.wrapping_add(64 * k) as *const i8);
        }
    }
}

/// Groups ahead that [`prefetch_next`] also brings into L2 (2 to 5 measured alike).
const AHEAD: usize = 3;

/// Sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

/// Sum of the eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<1>(s));
    _mm_cvtsi128_si32(s)
}

/// Largest lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax_ps(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

/// Σ of products of unsigned bytes `u` (≤ 127 in pairs, so no i16 saturation) and signed
/// bytes `s`, as eight i32 lanes (each the sum of four adjacent products).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// Σ of products of signed bytes `x` and `y` (`y` never −128), as eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_i8_i8(x: __m256i, y: __m256i) -> __m256i {
    dot_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// A 16-entry byte table (a 4-bit format's values) in both 128-bit lanes, for `pshufb` lookups
/// of nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lut16(table: &[i8; 16]) -> __m256i {
    // SAFETY: `table` is 16 readable bytes; the load is unaligned.
    let t = unsafe { _mm_loadu_si128(table.as_ptr() as *const __m128i) };
    _mm256_broadcastsi128_si256(t)
}

/// Load 32 bytes from `p`.
///
/// # Safety
/// `p..p + 32` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(p: *const u8) -> __m256i {
    // SAFETY: `p..p + 32` is readable (precondition); the load is unaligned.
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

/// The little-endian f16 at `p` as f32.
///
/// # Safety
/// `p..p + 2` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: `p..p + 2` is readable (precondition); the read is unaligned.
    let bits = unsafe { (p as *const u16).read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// The f32 scale of the Q8_K block at `y`.
///
/// # Safety
/// `y..y + 4` readable.
#[inline(always)]
unsafe fn q8k_d(y: *const u8) -> f32 {
    // SAFETY: the caller guarantees 4 readable bytes; `read_unaligned` needs no alignment.
    unsafe { (y as *const f32).read_unaligned() }
}

/// The 6-bit values of half `h` (0 or 1: elements `128h..128h + 128`) of the Q6_K block at
/// `x`, as four vectors of 32 bytes in 0..=63 (stored +32): vector `k` holds elements
/// `128h + 32k..128h + 32k + 32`, the low 4 bits from `ql`, the high 2 from `qh`.
///
/// # Safety
/// `x..x + 192` readable (the block's `ql` and `qh`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_q6_k_half(x: *const u8, h: usize) -> [__m256i; 4] {
    let (m4, m2) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(3));
    // SAFETY: `h` ≤ 1, so the three 32-byte loads end at most at byte 192, which the caller
    // guarantees readable.
    let (ql0, ql1, qh) = unsafe {
        (
            load(x.add(64 * h)),
            load(x.add(64 * h + 32)),
            load(x.add(128 + 32 * h)),
        )
    };
    [
        _mm256_or_si256(
            _mm256_and_si256(ql0, m4),
            _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m2)),
        ),
        _mm256_or_si256(
            _mm256_and_si256(ql1, m4),
            _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(qh), m2)),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
            _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<4>(qh), m2)),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
            _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<6>(qh), m2)),
        ),
    ]
}

/// `v` rounded to f16 (nearest even), as little-endian bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_bytes(v: f32) -> [u8; 2] {
    let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(v));
    (_mm_cvtsi128_si32(h) as u16).to_le_bytes()
}

/// Checks a tiled product's arguments before its `unsafe` body: `g.n` a whole number of
/// `elems`-element blocks, those blocks (`w_bytes` each) in every weight row and (`a_bytes`
/// each) in every token, at least `min_bytes` at the start of each (scales read ahead), and
/// `out` holding `rows × tokens`. Returns the blocks per row, or `None` for an empty product.
fn checked_blocks(
    g: &GemmArgs<'_>,
    out: &[f32],
    elems: usize,
    w_bytes: usize,
    a_bytes: usize,
    min_bytes: usize,
) -> Option<usize> {
    let nb = g.n / elems;
    if g.rows == 0 || g.tokens == 0 {
        return None;
    }
    let need = |stride: usize, count: usize, bytes: usize| (count - 1) * stride + nb * bytes;
    assert!(g.n.is_multiple_of(elems), "whole blocks only");
    assert!(g.w.len() >= need(g.w_stride, g.rows, w_bytes).max(min_bytes));
    assert!(g.a.len() >= need(g.a_stride, g.tokens, a_bytes).max(min_bytes));
    assert!(out.len() >= g.rows * g.tokens);
    Some(nb)
}

/// 8 × 8 transpose of 4-byte groups: `out[j]` holds group `j` (bytes `4j..4j+4`) of `v[0]`,
/// then of `v[1]`, … `v[7]` (8 rows' bytes interleaved 4 at a time, for the packed tiles).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn transpose8x4(v: [__m256i; 8]) -> [__m256i; 8] {
    // t[2i], t[2i+1]: groups (0,1 | 4,5) and (2,3 | 6,7) of rows 2i, 2i+1, interleaved.
    let t: [__m256i; 8] = std::array::from_fn(|k| {
        let (x, y) = (v[k & !1], v[k | 1]);
        if k & 1 == 0 {
            _mm256_unpacklo_epi32(x, y)
        } else {
            _mm256_unpackhi_epi32(x, y)
        }
    });
    // s[4h + c]: rows 4h..4h+4, groups c | c + 4.
    let s: [__m256i; 8] = std::array::from_fn(|k| {
        let (half, c) = (k / 4, k % 4);
        let (x, y) = (t[4 * half + (c / 2)], t[4 * half + 2 + (c / 2)]);
        if c % 2 == 0 {
            _mm256_unpacklo_epi64(x, y)
        } else {
            _mm256_unpackhi_epi64(x, y)
        }
    });
    std::array::from_fn(|j| {
        let (x, y) = (s[j % 4], s[4 + j % 4]);
        if j < 4 {
            _mm256_permute2x128_si256::<0x20>(x, y)
        } else {
            _mm256_permute2x128_si256::<0x31>(x, y)
        }
    })
}
