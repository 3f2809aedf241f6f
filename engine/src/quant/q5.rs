//! 5-bit legacy formats with 32-element blocks: Q5_0 (scale, values offset by 16) and Q5_1
//! (scale and minimum).
//!
//! Byte `j` of `qs` holds the low 4 bits of element `j` (low nibble) and `j + 16` (high nibble);
//! bit `i` of the little-endian u32 `qh` is bit 4 of element `i`.

use super::kutil::{importance_weights, make_qkx2_quants, make_qx_quants, qkx3_params};
use super::q4::{min_max, row_sigma2, signed_absmax};
use super::{BlockFormat, f16_at, put_f16};
use crate::DType;

/// Elements per block.
pub const QK: usize = DType::Q5_0.block_elems();

/// `{ d: f16, qh: [u8; 4], qs: [u8; 16] }`, 22 bytes: `x = d · (q − 16)`. Dot partner: Q8_0.
pub struct Q5_0;

/// `{ d: f16, m: f16, qh: [u8; 4], qs: [u8; 16] }`, 24 bytes: `x = d · q + m`. Dot partner: Q8_1.
pub struct Q5_1;

/// Bytes of a Q5_0 block.
pub const Q5_0_BYTES: usize = DType::Q5_0.block_bytes();
/// Bytes of a Q5_1 block.
pub const Q5_1_BYTES: usize = DType::Q5_1.block_bytes();

/// The 32 unsigned 5-bit values of a block whose `qh` starts at byte `off` (followed by `qs`).
#[inline(always)]
pub fn unpack5(b: &[u8], off: usize) -> [u8; QK] {
    let qh = u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]);
    let mut q = [0u8; QK];
    for j in 0..QK / 2 {
        let byte = b[off + 4 + j];
        q[j] = (byte & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
        q[j + QK / 2] = (byte >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

/// Pack 32 unsigned 5-bit values into `qh` (at `off`) and `qs` (at `off + 4`).
#[inline(always)]
fn pack5(b: &mut [u8], off: usize, q: &[u8; QK]) {
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        let (q0, q1) = (q[j], q[j + QK / 2]);
        b[off + 4 + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
        qh |= (((q0 & 0x10) >> 4) as u32) << j;
        qh |= (((q1 & 0x10) >> 4) as u32) << (j + QK / 2);
    }
    b[off..off + 4].copy_from_slice(&qh.to_le_bytes());
}

impl BlockFormat for Q5_0 {
    const DTYPE: DType = DType::Q5_0;
    const VEC_DOT_TYPE: DType = DType::Q8_0;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() / QK * Q5_0_BYTES);
        let blocks = src.as_chunks::<Q5_0_BYTES>().0;
        for (b, y) in blocks.iter().zip(dst.as_chunks_mut::<QK>().0) {
            let d = f16_at(b, 0);
            let q = unpack5(b, 2);
            for j in 0..QK {
                y[j] = (q[j] as i32 - 16) as f32 * d;
            }
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() / QK * Q5_0_BYTES);
        let blocks = dst.as_chunks_mut::<Q5_0_BYTES>().0;
        for (b, x) in blocks.iter_mut().zip(src.as_chunks::<QK>().0) {
            let d = signed_absmax(x) / -16.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            put_f16(b, 0, d);
            let q = x.map(|v| ((v * id + 16.5) as i8).clamp(0, 31) as u8);
            pack5(b, 2, &q);
        }
    }

    fn quantize_row_weighted(src: &[f32], dst: &mut [u8], weights: &[f32]) {
        debug_assert_eq!(dst.len(), src.len() / QK * Q5_0_BYTES);
        debug_assert_eq!(weights.len(), src.len());
        let sigma2 = row_sigma2(src);
        let blocks = dst.as_chunks_mut::<Q5_0_BYTES>().0;
        let xs = src.as_chunks::<QK>().0;
        let qws = weights.as_chunks::<QK>().0;
        for ((b, x), qw) in blocks.iter_mut().zip(xs).zip(qws) {
            let mut w = [0.0f32; QK];
            importance_weights(qw, x, sigma2, &mut w);
            let mut l = [0i8; QK];
            let d = make_qx_quants(16, x, &mut l, Some(&w));
            put_f16(b, 0, d);
            pack5(b, 2, &l.map(|v| v as u8));
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        use super::q8::Q8_0_BYTES;
        debug_assert!(w.len() >= n / QK * Q5_0_BYTES && a.len() >= n / QK * Q8_0_BYTES);
        let wb = w.as_chunks::<Q5_0_BYTES>().0;
        let ab = a.as_chunks::<Q8_0_BYTES>().0;
        let mut sum = 0.0f32;
        for (x, y) in wb.iter().zip(ab).take(n / QK) {
            let q = unpack5(x, 2);
            let mut sumi = 0i32;
            for j in 0..QK {
                sumi += (q[j] as i32 - 16) * y[2 + j] as i8 as i32;
            }
            sum += (f16_at(x, 0) * f16_at(y, 0)) * sumi as f32;
        }
        sum
    }
}

impl BlockFormat for Q5_1 {
    const DTYPE: DType = DType::Q5_1;
    const VEC_DOT_TYPE: DType = DType::Q8_1;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() / QK * Q5_1_BYTES);
        let blocks = src.as_chunks::<Q5_1_BYTES>().0;
        for (b, y) in blocks.iter().zip(dst.as_chunks_mut::<QK>().0) {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let q = unpack5(b, 4);
            for j in 0..QK {
                y[j] = q[j] as f32 * d + m;
            }
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() / QK * Q5_1_BYTES);
        let blocks = dst.as_chunks_mut::<Q5_1_BYTES>().0;
        for (b, x) in blocks.iter_mut().zip(src.as_chunks::<QK>().0) {
            let (min, max) = min_max(x);
            let d = (max - min) / 31.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            put_f16(b, 0, d);
            put_f16(b, 2, min);
            let q = x.map(|v| (((v - min) * id + 0.5) as u8).min(31));
            pack5(b, 4, &q);
        }
    }

    fn quantize_row_weighted(src: &[f32], dst: &mut [u8], weights: &[f32]) {
        debug_assert_eq!(dst.len(), src.len() / QK * Q5_1_BYTES);
        debug_assert_eq!(weights.len(), src.len());
        let sigma2 = row_sigma2(src);
        let p = qkx3_params(31);
        let blocks = dst.as_chunks_mut::<Q5_1_BYTES>().0;
        let xs = src.as_chunks::<QK>().0;
        let qws = weights.as_chunks::<QK>().0;
        for ((b, x), qw) in blocks.iter_mut().zip(xs).zip(qws) {
            let mut w = [0.0f32; QK];
            importance_weights(qw, x, sigma2, &mut w);
            let mut l = [0u8; QK];
            let (d, the_min) = make_qkx2_quants(&p, x, &w, &mut l);
            put_f16(b, 0, d);
            put_f16(b, 2, -the_min);
            pack5(b, 4, &l);
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        use super::q8::Q8_1_BYTES;
        debug_assert!(w.len() >= n / QK * Q5_1_BYTES && a.len() >= n / QK * Q8_1_BYTES);
        let wb = w.as_chunks::<Q5_1_BYTES>().0;
        let ab = a.as_chunks::<Q8_1_BYTES>().0;
        let mut sum = 0.0f32;
        for (x, y) in wb.iter().zip(ab).take(n / QK) {
            let q = unpack5(x, 4);
            let mut sumi = 0i32;
            for j in 0..QK {
                sumi += q[j] as i32 * y[4 + j] as i8 as i32;
            }
            sum += (f16_at(x, 0) * f16_at(y, 0)) * sumi as f32 + f16_at(x, 2) * f16_at(y, 2);
        }
        sum
    }
}
