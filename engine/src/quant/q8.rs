//! 8-bit formats with 32-element blocks: Q8_0 (weights and the activation format of
//! Q4_0/Q5_0/Q8_0) and Q8_1 (activation format of Q4_1/Q5_1, carrying `d · Σq`).
//!
//! Quantizers produce values in −127..=127 only (never −128), which the SIMD kernels rely on.

use super::{BlockFormat, f16_at, put_f16};
use crate::DType;

/// Elements per block.
pub const QK: usize = DType::Q8_0.block_elems();

/// `{ d: f16, qs: [i8; 32] }`, 34 bytes: `x = d · q`. Dot partner: itself.
pub struct Q8_0;

/// `{ d: f16, s: f16, qs: [i8; 32] }`, 36 bytes: `x = d · q`, `s = f16(d · Σq)` (computed with
/// the unrounded `d`, as ggml). Activation-only in ggml; here its `vec_dot` pairs it with itself
/// (`d_w · d_a · Σ q_w·q_a`, `s` unused).
pub struct Q8_1;

/// Bytes of a Q8_0 block.
pub const Q8_0_BYTES: usize = DType::Q8_0.block_bytes();
/// Bytes of a Q8_1 block.
pub const Q8_1_BYTES: usize = DType::Q8_1.block_bytes();

/// The Q8_0/Q8_1 scale of a block: `amax / 127`.
#[inline(always)]
pub fn q8_scale(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0
}

/// Quantize one 32-element block to `qs` with scale `d`, as ggml (`roundf`, ties away from zero);
/// returns Σq.
#[inline(always)]
pub fn q8_block(x: &[f32; QK], d: f32, qs: &mut [u8]) -> i32 {
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(x) {
        let r = (v * id).round() as i8;
        sum += r as i32;
        *q = r as u8;
    }
    sum
}

/// Integer dot product of two 32-byte runs of i8.
#[inline(always)]
pub fn dot_i8(x: &[u8], y: &[u8]) -> i32 {
    x.iter()
        .zip(y)
        .map(|(a, b)| *a as i8 as i32 * *b as i8 as i32)
        .sum()
}

impl BlockFormat for Q8_0 {
    const DTYPE: DType = DType::Q8_0;
    const VEC_DOT_TYPE: DType = DType::Q8_0;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() / QK * Q8_0_BYTES);
        let blocks = src.as_chunks::<Q8_0_BYTES>().0;
        for (b, y) in blocks.iter().zip(dst.as_chunks_mut::<QK>().0) {
            let d = f16_at(b, 0);
            for (o, q) in y.iter_mut().zip(&b[2..]) {
                *o = *q as i8 as f32 * d;
            }
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() / QK * Q8_0_BYTES);
        let blocks = dst.as_chunks_mut::<Q8_0_BYTES>().0;
        for (b, x) in blocks.iter_mut().zip(src.as_chunks::<QK>().0) {
            let d = q8_scale(x);
            put_f16(b, 0, d);
            q8_block(x, d, &mut b[2..]);
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        debug_assert!(w.len() >= n / QK * Q8_0_BYTES && a.len() >= n / QK * Q8_0_BYTES);
        let wb = w.as_chunks::<Q8_0_BYTES>().0;
        let ab = a.as_chunks::<Q8_0_BYTES>().0;
        let mut sum = 0.0f32;
        for (x, y) in wb.iter().zip(ab).take(n / QK) {
            let sumi = dot_i8(&x[2..], &y[2..]);
            sum += (f16_at(x, 0) * f16_at(y, 0)) * sumi as f32;
        }
        sum
    }
}

impl BlockFormat for Q8_1 {
    const DTYPE: DType = DType::Q8_1;
    const VEC_DOT_TYPE: DType = DType::Q8_1;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() / QK * Q8_1_BYTES);
        let blocks = src.as_chunks::<Q8_1_BYTES>().0;
        for (b, y) in blocks.iter().zip(dst.as_chunks_mut::<QK>().0) {
            let d = f16_at(b, 0);
            for (o, q) in y.iter_mut().zip(&b[4..]) {
                *o = *q as i8 as f32 * d;
            }
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() / QK * Q8_1_BYTES);
        let blocks = dst.as_chunks_mut::<Q8_1_BYTES>().0;
        for (b, x) in blocks.iter_mut().zip(src.as_chunks::<QK>().0) {
            let d = q8_scale(x);
            put_f16(b, 0, d);
            let sum = q8_block(x, d, &mut b[4..]);
            put_f16(b, 2, sum as f32 * d);
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        debug_assert!(w.len() >= n / QK * Q8_1_BYTES && a.len() >= n / QK * Q8_1_BYTES);
        let wb = w.as_chunks::<Q8_1_BYTES>().0;
        let ab = a.as_chunks::<Q8_1_BYTES>().0;
        let mut sum = 0.0f32;
        for (x, y) in wb.iter().zip(ab).take(n / QK) {
            let sumi = dot_i8(&x[4..], &y[4..]);
            sum += (f16_at(x, 0) * f16_at(y, 0)) * sumi as f32;
        }
        sum
    }
}
