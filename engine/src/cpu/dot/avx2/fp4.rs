//! AVX2 dot product of MXFP4 weights against Q8_0 activations.
//!
//! Per block: the 32 nibbles spread to bytes ([`super::legacy::nibbles`]), looked up in the
//! doubled FP4 table with one `pshufb` (16 entries: exactly one 128-bit lane), multiplied with
//! the activations as signed bytes (|value| ≤ 12, activations never −128, so exact), then
//! `acc = fma(Σ q·a, d_a · 2^(e − 128), acc)`: the scalar reference's per-block products,
//! with the block sums added by a fused multiply-add instead of a multiply and an add.
//!
//! The tile [`gemm_mxfp4`] decodes each weight block once for up to [`TT`] tokens and sums
//! every (row, token) pair in exactly `vec_dot_mxfp4`'s order, so either gives the same bits.

use super::legacy::nibbles;
use super::{checked_blocks, dot_i8_i8, f16_at, hsum_epi32, load, lut16};
use crate::cpu::dot::GemmArgs;
use crate::quant::mxfp4::{KVALUES, MXFP4_BYTES, QK, e8m0_to_f32_half};
use crate::quant::q8::Q8_0_BYTES;
use std::arch::x86_64::*;

pub(super) fn vec_dot_mxfp4(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK * MXFP4_BYTES && a.len() >= n / QK * Q8_0_BYTES);
    let nb = (n / QK)
        .min(w.len() / MXFP4_BYTES)
        .min(a.len() / Q8_0_BYTES);
    // SAFETY: the table holding this fn is handed out only with AVX2/FMA/F16C present, and
    // every read below is inside the first `nb` blocks of `w` and `a`.
    unsafe { mxfp4_impl(nb, w.as_ptr(), a.as_ptr()) }
}

/// The 32 values of the MXFP4 block at `x` as signed bytes (doubled FP4) and its half scale.
///
/// # Safety
/// `x..x + 17` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode(table: __m256i, x: *const u8) -> (__m256i, f32) {
    // SAFETY: byte 0 (the scale) and bytes `1..17` (the packed nibbles) of the block.
    unsafe {
        (
            _mm256_shuffle_epi8(table, nibbles(x.add(1))),
            e8m0_to_f32_half(*x),
        )
    }
}

/// `fma(Σ qx·a, d_a · e, acc)` for the Q8_0 block at `y`: one block's step of the dot product.
///
/// # Safety
/// `y..y + 34` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn step(qx: __m256i, e: f32, y: *const u8, acc: f32) -> f32 {
    // SAFETY: bytes `0..2` (f16 scale) and `2..34` (quants) of the 34-byte Q8_0 block.
    let (d, p) = unsafe { (f16_at(y) * e, dot_i8_i8(qx, load(y.add(2)))) };
    (hsum_epi32(p) as f32).mul_add(d, acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mxfp4_impl(nb: usize, w: *const u8, a: *const u8) -> f32 {
    let table = lut16(&KVALUES);
    let mut acc = 0.0f32;
    for i in 0..nb {
        // SAFETY: `i < nb`: block `i` is whole in both rows, which hold `nb` whole blocks.
        unsafe {
            let (qx, e) = decode(table, w.add(i * MXFP4_BYTES));
            acc = step(qx, e, a.add(i * Q8_0_BYTES), acc);
        }
    }
    acc
}

/// Tokens per pass of the tile (each decoded weight block serves them all).
const TT: usize = 8;

pub(super) fn gemm_mxfp4(g: &GemmArgs<'_>, out: &mut [f32]) {
    let Some(nb) = checked_blocks(g, out, QK, MXFP4_BYTES, Q8_0_BYTES, 0) else {
        return;
    };
    // SAFETY: AVX2/FMA/F16C present (see `vec_dot_mxfp4`); `checked_blocks` keeps the `nb`
    // blocks of every row and token, and every output, in bounds.
    unsafe { gemm_impl(nb, g, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_impl(nb: usize, g: &GemmArgs<'_>, out: &mut [f32]) {
    let table = lut16(&KVALUES);
    let (w, a) = (g.w.as_ptr(), g.a.as_ptr());
    for t0 in (0..g.tokens).step_by(TT) {
        let tt = TT.min(g.tokens - t0);
        for r in 0..g.rows {
            let mut acc = [0.0f32; TT];
            for i in 0..nb {
                // SAFETY: row `r` < rows and token `t0 + t` < tokens each hold `nb` whole
                // blocks (checked by `gemm_mxfp4`), and `i < nb`.
                unsafe {
                    let (qx, e) = decode(table, w.add(r * g.w_stride + i * MXFP4_BYTES));
                    for (t, acc) in acc.iter_mut().enumerate().take(tt) {
                        let y = a.add((t0 + t) * g.a_stride + i * Q8_0_BYTES);
                        *acc = step(qx, e, y, *acc);
                    }
                }
            }
            for (t, acc) in acc.iter().enumerate().take(tt) {
                out[(t0 + t) * g.rows + r] = *acc;
            }
        }
    }
}
