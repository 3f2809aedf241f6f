//! 6-bit K-quant Q6_K (256-element super-blocks of 16 sub-blocks of 16), dot partner Q8_K.
//!
//! Element `e = 128·h + 32·k + l` (`h < 2`, `k < 4`, `l < 32`): low 4 bits from
//! `ql[64·h + 32·(k & 1) + l] >> 4·(k >> 1)`, high 2 bits from `qh[32·h + l] >> 2·k`; the value
//! is that 6-bit number minus 32. Signed 8-bit scale per 16 elements: `x = d · sc[e/16] · q`.

use super::k8::{Q8_K_BYTES, q8k_d};
use super::kutil::make_qx_quants;
use super::{BlockFormat, QK_K, f16_at, nearest_int, put_f16};
use crate::DType;

/// `{ ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16 }`, 210 bytes.
pub struct Q6_K;

/// Bytes of a Q6_K block.
pub const Q6_K_BYTES: usize = DType::Q6_K.block_bytes();

/// The 256 unsigned 6-bit values (0..=63, i.e. before subtracting 32) of a block.
#[inline(always)]
pub fn unpack6(b: &[u8]) -> [u8; QK_K] {
    let mut out = [0u8; QK_K];
    for (e, o) in out.iter_mut().enumerate() {
        let (h, k, l) = (e / 128, (e % 128) / 32, e % 32);
        let low = (b[64 * h + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 0x0f;
        let high = (b[128 + 32 * h + l] >> (2 * k)) & 3;
        *o = low | (high << 4);
    }
    out
}

/// Both Q6_K quantizers: `quantize_row_q6_K_ref` (`qw = None`: sub-block scales weighted by
/// `x²`) and `quantize_row_q6_K_impl` with an importance matrix (`qw`, used as is).
fn quantize_q6k(src: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    debug_assert_eq!(dst.len(), src.len() / QK_K * Q6_K_BYTES);
    let blocks = dst.as_chunks_mut::<Q6_K_BYTES>().0;
    for (ib, (b, x)) in blocks.iter_mut().zip(src.as_chunks::<QK_K>().0).enumerate() {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut max_abs) = (0.0f32, 0.0f32);
        for j in 0..16 {
            let r = 16 * j..16 * j + 16;
            let w = qw.map(|q| &q[QK_K * ib..][r.clone()]);
            scales[j] = make_qx_quants(32, &x[r.clone()], &mut l[r], w);
            if scales[j].abs() > max_abs {
                max_abs = scales[j].abs();
                max_scale = scales[j];
            }
        }
        if max_abs < 1e-15 {
            b.iter_mut().for_each(|v| *v = 0);
            continue;
        }
        let iscale = -128.0 / max_scale;
        put_f16(b, 208, 1.0 / iscale);
        for j in 0..16 {
            b[192 + j] = nearest_int(iscale * scales[j]).min(127) as i8 as u8;
        }
        let dd = f16_at(b, 208);
        for j in 0..16 {
            let d = dd * b[192 + j] as i8 as f32;
            if d == 0.0 {
                continue;
            }
            for i in 16 * j..16 * j + 16 {
                l[i] = (nearest_int(x[i] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        let l = l.map(|v| v as u8);
        for h in 0..2 {
            for i in 0..32 {
                let e = 128 * h + i;
                let (q1, q2, q3, q4) = (l[e], l[e + 32], l[e + 64], l[e + 96]);
                b[64 * h + i] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
                b[64 * h + i + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
                b[128 + 32 * h + i] =
                    (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
    }
}

impl BlockFormat for Q6_K {
    const DTYPE: DType = DType::Q6_K;
    const VEC_DOT_TYPE: DType = DType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() / QK_K * Q6_K_BYTES);
        let blocks = src.as_chunks::<Q6_K_BYTES>().0;
        for (b, y) in blocks.iter().zip(dst.as_chunks_mut::<QK_K>().0) {
            let d = f16_at(b, 208);
            let q = unpack6(b);
            for (s, (ys, qs)) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
                let dl = d * b[192 + s] as i8 as f32;
                for (o, v) in ys.iter_mut().zip(qs) {
                    *o = dl * (*v as i32 - 32) as f32;
                }
            }
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        quantize_q6k(src, dst, None);
    }

    fn quantize_row_weighted(src: &[f32], dst: &mut [u8], weights: &[f32]) {
        debug_assert_eq!(weights.len(), src.len());
        quantize_q6k(src, dst, Some(weights));
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        debug_assert!(w.len() >= n / QK_K * Q6_K_BYTES && a.len() >= n / QK_K * Q8_K_BYTES);
        let wb = w.as_chunks::<Q6_K_BYTES>().0;
        let ab = a.as_chunks::<Q8_K_BYTES>().0;
        let mut sum = 0.0f32;
        for (x, y) in wb.iter().zip(ab).take(n / QK_K) {
            let q = unpack6(x);
            let mut isum = 0i32;
            for s in 0..16 {
                let mut si = 0i32;
                for i in 16 * s..16 * s + 16 {
                    si += (q[i] as i32 - 32) * y[4 + i] as i8 as i32;
                }
                isum += x[192 + s] as i8 as i32 * si;
            }
            sum += (f16_at(x, 208) * q8k_d(y)) * isum as f32;
        }
        sum
    }
}
