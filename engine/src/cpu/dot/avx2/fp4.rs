//! AVX2 dot product of MXFP4 weights against Q8_0 activations.
//!
//! Per block: the 32 nibbles spread to bytes ([`super::legacy::nibbles`]), looked up in the
//! doubled FP4 table with one `pshufb` (16 entries: exactly one 128-bit lane), multiplied with
//! the activations as signed bytes (|value| ≤ 12, activations never −128, so exact), then
//! `acc = fma(Σ q·a, d_a · 2^(e − 128), acc)`: the scalar reference's per-block products,
//! with the block sums added by a fused multiply-add instead of a multiply and an add.

use super::legacy::nibbles;
use super::{dot_i8_i8, f16_at, hsum_epi32, load};
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

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mxfp4_impl(nb: usize, w: *const u8, a: *const u8) -> f32 {
    // SAFETY: `KVALUES` is 16 bytes; the load is unaligned.
    let table = unsafe { _mm_loadu_si128(KVALUES.as_ptr() as *const __m128i) };
    let table = _mm256_broadcastsi128_si256(table);
    let mut acc = 0.0f32;
    for i in 0..nb {
        // SAFETY: `i < nb`: block `i` starts inside both rows, which hold `nb` whole blocks.
        let (x, y) = unsafe { (w.add(i * MXFP4_BYTES), a.add(i * Q8_0_BYTES)) };
        // SAFETY: byte 0 of the 17-byte MXFP4 block (its scale) and bytes `0..2` of the Q8_0
        // block (its f16 scale).
        let d = unsafe { f16_at(y) * e8m0_to_f32_half(*x) };
        // SAFETY: bytes `1..17` of the MXFP4 block: its packed nibbles.
        let qx = _mm256_shuffle_epi8(table, unsafe { nibbles(x.add(1)) });
        // SAFETY: bytes `2..34` of a 34-byte Q8_0 block: its 32 quants.
        let p = unsafe { dot_i8_i8(qx, load(y.add(2))) };
        acc = (hsum_epi32(p) as f32).mul_add(d, acc);
    }
    acc
}
