//! 4-bit legacy formats with 32-element blocks: Q4_0 (scale, values offset by 8) and Q4_1
//! (scale and minimum).
//!
//! Nibble order, as ggml: byte `j` of `qs` holds element `j` in its low nibble and element
//! `j + 16` in its high nibble.

use super::kutil::{importance_weights, make_qkx2_quants, make_qx_quants, qkx3_params, sum_sq};
use super::{BlockFormat, f16_at, put_f16};
use crate::DType;

/// Elements per block.
pub const QK: usize = DType::Q4_0.block_elems();

/// `{ d: f16, qs: [u8; 16] }`, 18 bytes: `x = d · (q − 8)`. Dot partner: Q8_0.
pub struct Q4_0;

/// `{ d: f16, m: f16, qs: [u8; 16] }`, 20 bytes: `x = d · q + m`. Dot partner: Q8_1.
pub struct Q4_1;

/// Bytes of a Q4_0 block.
pub const Q4_0_BYTES: usize = DType::Q4_0.block_bytes();
/// Bytes of a Q4_1 block.
pub const Q4_1_BYTES: usize = DType::Q4_1.block_bytes();

/// The signed index and value of the element with the largest magnitude (first one on ties),
/// as ggml's legacy quantizers pick it.
#[inline]
pub(crate) fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// ggml's `sigma2` of the legacy formats' importance-weighted quantizers: the mean square of
/// the whole row.
#[inline]
pub(crate) fn row_sigma2(x: &[f32]) -> f32 {
    sum_sq(x) / x.len() as f32
}

/// Minimum and maximum of a block, as ggml's Q4_1/Q5_1 quantizers compute them.
#[inline]
pub(crate) fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

impl BlockFormat for Q4_0 {
    const DTYPE: DType = DType::Q4_0;
    const VEC_DOT_TYPE: DType = DType::Q8_0;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() / QK * Q4_0_BYTES);
        let blocks = src.as_chunks::<Q4_0_BYTES>().0;
        for (b, y) in blocks.iter().zip(dst.as_chunks_mut::<QK>().0) {
            let d = f16_at(b, 0);
            for j in 0..QK / 2 {
                let q = b[2 + j];
                y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
                y[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
            }
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() / QK * Q4_0_BYTES);
        let blocks = dst.as_chunks_mut::<Q4_0_BYTES>().0;
        for (b, x) in blocks.iter_mut().zip(src.as_chunks::<QK>().0) {
            let d = signed_absmax(x) / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            put_f16(b, 0, d);
            for j in 0..QK / 2 {
                let q0 = ((x[j] * id + 8.5) as i8).clamp(0, 15) as u8;
                let q1 = ((x[j + QK / 2] * id + 8.5) as i8).clamp(0, 15) as u8;
                b[2 + j] = q0 | (q1 << 4);
            }
        }
    }

    fn quantize_row_weighted(src: &[f32], dst: &mut [u8], weights: &[f32]) {
        debug_assert_eq!(dst.len(), src.len() / QK * Q4_0_BYTES);
        debug_assert_eq!(weights.len(), src.len());
        let sigma2 = row_sigma2(src);
        let blocks = dst.as_chunks_mut::<Q4_0_BYTES>().0;
        let xs = src.as_chunks::<QK>().0;
        let qws = weights.as_chunks::<QK>().0;
        for ((b, x), qw) in blocks.iter_mut().zip(xs).zip(qws) {
            let mut w = [0.0f32; QK];
            importance_weights(qw, x, sigma2, &mut w);
            let mut l = [0i8; QK];
            let d = make_qx_quants(8, x, &mut l, Some(&w));
            put_f16(b, 0, d);
            for j in 0..QK / 2 {
                b[2 + j] = l[j] as u8 | ((l[j + QK / 2] as u8) << 4);
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        use super::q8::Q8_0_BYTES;
        debug_assert!(w.len() >= n / QK * Q4_0_BYTES && a.len() >= n / QK * Q8_0_BYTES);
        let wb = w.as_chunks::<Q4_0_BYTES>().0;
        let ab = a.as_chunks::<Q8_0_BYTES>().0;
        let mut sum = 0.0f32;
        for (x, y) in wb.iter().zip(ab).take(n / QK) {
            let mut sumi = 0i32;
            for j in 0..QK / 2 {
                let q = x[2 + j];
                sumi += ((q & 0x0f) as i32 - 8) * y[2 + j] as i8 as i32;
                sumi += ((q >> 4) as i32 - 8) * y[2 + j + QK / 2] as i8 as i32;
            }
            sum += (f16_at(x, 0) * f16_at(y, 0)) * sumi as f32;
        }
        sum
    }
}

impl BlockFormat for Q4_1 {
    const DTYPE: DType = DType::Q4_1;
    const VEC_DOT_TYPE: DType = DType::Q8_1;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() / QK * Q4_1_BYTES);
        let blocks = src.as_chunks::<Q4_1_BYTES>().0;
        for (b, y) in blocks.iter().zip(dst.as_chunks_mut::<QK>().0) {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            for j in 0..QK / 2 {
                let q = b[4 + j];
                y[j] = (q & 0x0f) as f32 * d + m;
                y[j + QK / 2] = (q >> 4) as f32 * d + m;
            }
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() / QK * Q4_1_BYTES);
        let blocks = dst.as_chunks_mut::<Q4_1_BYTES>().0;
        for (b, x) in blocks.iter_mut().zip(src.as_chunks::<QK>().0) {
            let (min, max) = min_max(x);
            let d = (max - min) / 15.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            put_f16(b, 0, d);
            put_f16(b, 2, min);
            for j in 0..QK / 2 {
                let q0 = (((x[j] - min) * id + 0.5) as i8).clamp(0, 15) as u8;
                let q1 = (((x[j + QK / 2] - min) * id + 0.5) as i8).clamp(0, 15) as u8;
                b[4 + j] = q0 | (q1 << 4);
            }
        }
    }

    fn quantize_row_weighted(src: &[f32], dst: &mut [u8], weights: &[f32]) {
        debug_assert_eq!(dst.len(), src.len() / QK * Q4_1_BYTES);
        debug_assert_eq!(weights.len(), src.len());
        let sigma2 = row_sigma2(src);
        let p = qkx3_params(15);
        let blocks = dst.as_chunks_mut::<Q4_1_BYTES>().0;
        let xs = src.as_chunks::<QK>().0;
        let qws = weights.as_chunks::<QK>().0;
        for ((b, x), qw) in blocks.iter_mut().zip(xs).zip(qws) {
            let mut w = [0.0f32; QK];
            importance_weights(qw, x, sigma2, &mut w);
            let mut l = [0u8; QK];
            let (d, the_min) = make_qkx2_quants(&p, x, &w, &mut l);
            put_f16(b, 0, d);
            put_f16(b, 2, -the_min);
            for j in 0..QK / 2 {
                b[4 + j] = l[j] | (l[j + QK / 2] << 4);
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        use super::q8::Q8_1_BYTES;
        debug_assert!(w.len() >= n / QK * Q4_1_BYTES && a.len() >= n / QK * Q8_1_BYTES);
        let wb = w.as_chunks::<Q4_1_BYTES>().0;
        let ab = a.as_chunks::<Q8_1_BYTES>().0;
        let mut sum = 0.0f32;
        for (x, y) in wb.iter().zip(ab).take(n / QK) {
            let mut sumi = 0i32;
            for j in 0..QK / 2 {
                let q = x[4 + j];
                sumi += (q & 0x0f) as i32 * y[4 + j] as i8 as i32;
                sumi += (q >> 4) as i32 * y[4 + j + QK / 2] as i8 as i32;
            }
            // y.s holds d_y · Σ y_q, so the minimum contributes m_x · s_y.
            sum += (f16_at(x, 0) * f16_at(y, 0)) * sumi as f32 + f16_at(x, 2) * f16_at(y, 2);
        }
        sum
    }
}
