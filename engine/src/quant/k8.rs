//! Q8_K: the 8-bit activation format of the K-quants (256 elements, f32 scale, 16-element sums).
//!
//! Activation-only in ggml; here its `vec_dot` pairs it with itself (`d_w · d_a · Σ q_w·q_a`).
//! Quantized values lie in −127..=127.

use super::{BlockFormat, QK_K, nearest_int};
use crate::DType;

/// `{ d: f32, qs: [i8; 256], bsums: [i16; 16] }`, 292 bytes: `x = d · q`, and `bsums[j]` is the
/// sum of `qs[16·j .. 16·j + 16]`.
pub struct Q8_K;

/// Bytes of a Q8_K block.
pub const Q8_K_BYTES: usize = DType::Q8_K.block_bytes();

/// The scale `d` of a Q8_K block.
#[inline(always)]
pub fn q8k_d(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// `bsums[j]` of a Q8_K block.
#[inline(always)]
pub fn q8k_bsum(b: &[u8], j: usize) -> i32 {
    i16::from_le_bytes([b[260 + 2 * j], b[261 + 2 * j]]) as i32
}

impl BlockFormat for Q8_K {
    const DTYPE: DType = DType::Q8_K;
    const VEC_DOT_TYPE: DType = DType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() / QK_K * Q8_K_BYTES);
        let blocks = src.as_chunks::<Q8_K_BYTES>().0;
        for (b, y) in blocks.iter().zip(dst.as_chunks_mut::<QK_K>().0) {
            let d = q8k_d(b);
            for (o, q) in y.iter_mut().zip(&b[4..260]) {
                *o = d * *q as i8 as f32;
            }
        }
    }

    /// As ggml's `quantize_row_q8_K_ref`: `iscale = −127 / max` where `max` is the signed value
    /// of largest magnitude, `q = min(127, nearest_int(iscale·x))`, `d = 1 / iscale`. An all-zero
    /// block gets `d = 0` and zero sums.
    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() / QK_K * Q8_K_BYTES);
        let blocks = dst.as_chunks_mut::<Q8_K_BYTES>().0;
        for (b, x) in blocks.iter_mut().zip(src.as_chunks::<QK_K>().0) {
            let (mut max, mut amax) = (0.0f32, 0.0f32);
            for &v in x {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                b.iter_mut().for_each(|v| *v = 0);
                continue;
            }
            let iscale = -127.0 / max;
            for (q, v) in b[4..260].iter_mut().zip(x) {
                *q = nearest_int(iscale * v).min(127) as i8 as u8;
            }
            for j in 0..16 {
                let s: i32 = b[4 + 16 * j..20 + 16 * j]
                    .iter()
                    .map(|q| *q as i8 as i32)
                    .sum();
                b[260 + 2 * j..262 + 2 * j].copy_from_slice(&(s as i16).to_le_bytes());
            }
            b[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        debug_assert!(w.len() >= n / QK_K * Q8_K_BYTES && a.len() >= n / QK_K * Q8_K_BYTES);
        let wb = w.as_chunks::<Q8_K_BYTES>().0;
        let ab = a.as_chunks::<Q8_K_BYTES>().0;
        let mut sum = 0.0f32;
        for (x, y) in wb.iter().zip(ab).take(n / QK_K) {
            let isum = super::q8::dot_i8(&x[4..260], &y[4..260]);
            sum += (q8k_d(x) * q8k_d(y)) * isum as f32;
        }
        sum
    }
}
