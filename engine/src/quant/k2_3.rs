//! 2- and 3-bit K-quants (256-element super-blocks of 16 sub-blocks of 16), dot partner Q8_K.
//!
//! Both store 2-bit values the same way: for element `e = 128·h + 32·j + l` (`h < 2`, `j < 4`,
//! `l < 32`) the bits are `(qs[32·h + l] >> 2·j) & 3`. Sub-block of element `e` is `e / 16`.

use super::k8::{Q8_K_BYTES, q8k_d};
/// Q3_K's sixteen 6-bit scales (offset by 32) from their 12 packed bytes.
pub use super::kutil::unpack_scales_q3k;
use super::kutil::{
    Qkx2, importance_weights, make_qkx2_quants, make_qp_quants, make_qx_quants, qkx3_params, sum_sq,
};
use super::lanes::make_q3_quants_x16;
use super::{BlockFormat, QK_K, f16_at, nearest_int, put_f16};
use crate::DType;

/// `{ scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16 }`, 84 bytes. Sub-block `s` has scale
/// `d · (scales[s] & 15)` and minimum `dmin · (scales[s] >> 4)`: `x = d·sc·q − dmin·m`.
pub struct Q2_K;

/// `{ hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16 }`, 110 bytes. Values are
/// `q = low2 − 4·(1 − hbit)` ∈ −4..=3 where `hbit = (hmask[l] >> (4h + j)) & 1`; sixteen 6-bit
/// scales offset by 32: `x = d · (sc − 32) · q`.
pub struct Q3_K;

/// Bytes of a Q2_K block.
pub const Q2_K_BYTES: usize = DType::Q2_K.block_bytes();
/// Bytes of a Q3_K block.
pub const Q3_K_BYTES: usize = DType::Q3_K.block_bytes();

/// The 256 2-bit values stored at `qs` (64 bytes), in element order.
#[inline(always)]
pub fn unpack2(qs: &[u8]) -> [u8; QK_K] {
    let mut out = [0u8; QK_K];
    for (e, o) in out.iter_mut().enumerate() {
        let (h, j, l) = (e / 128, (e % 128) / 32, e % 32);
        *o = (qs[32 * h + l] >> (2 * j)) & 3;
    }
    out
}

/// Pack 256 2-bit values (element order) into 64 bytes.
#[inline(always)]
fn pack2(l: &[u8; QK_K], qs: &mut [u8]) {
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            qs[32 * h + i] = l[b] | (l[b + 32] << 2) | (l[b + 64] << 4) | (l[b + 96] << 6);
        }
    }
}

/// The 256 signed Q3_K values (−4..=3) of a block, in element order.
#[inline(always)]
pub fn unpack3(b: &[u8]) -> [i8; QK_K] {
    let low = unpack2(&b[32..96]);
    let mut out = [0i8; QK_K];
    for (e, o) in out.iter_mut().enumerate() {
        let (h, j, l) = (e / 128, (e % 128) / 32, e % 32);
        let hbit = (b[l] >> (4 * h + j)) & 1;
        *o = low[e] as i8 - if hbit != 0 { 0 } else { 4 };
    }
    out
}

/// The end of both Q2_K quantizers: with `d`, `dmin` and the scales of block `b` written, round
/// the values again with the stored (f16) scales, except in sub-blocks whose scale is zero, and
/// pack `l` into `qs`.
fn requantize_q2k(x: &[f32; QK_K], l: &mut [u8; QK_K], b: &mut [u8]) {
    let (dd, dm) = (f16_at(b, 80), f16_at(b, 82));
    for j in 0..16 {
        let d = dd * (b[j] & 0x0f) as f32;
        if d == 0.0 {
            continue;
        }
        let m = dm * (b[j] >> 4) as f32;
        for i in 16 * j..16 * j + 16 {
            l[i] = nearest_int((x[i] + m) / d).clamp(0, 3) as u8;
        }
    }
    pack2(l, &mut b[16..80]);
}

/// The end of both Q3_K quantizers: with `d` and the scales of block `b` written, round the values
/// (`l + 4`) again with the stored scales, except in sub-blocks whose scale is zero, and pack `l`
/// into `hmask` and `qs`.
#[inline(always)]
fn requantize_q3k(x: &[f32; QK_K], l: &mut [i8; QK_K], b: &mut [u8]) {
    let sc = unpack_scales_q3k(&b[96..108]);
    let dd = f16_at(b, 108);
    for j in 0..16 {
        let d = dd * (sc[j] as i32 - 32) as f32;
        if d == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l[i] = (nearest_int(x[i] / d).clamp(-4, 3) + 4) as i8;
        }
    }
    // `l` is in 0..=7: bit 2 goes to `hmask` (bit `e / 32` of byte `e % 32`), bits 0–1 to `qs`.
    for (m, h) in b[..32].iter_mut().enumerate() {
        *h = (0..8).fold(0u8, |h, j| h | (((l[32 * j + m] as u8) >> 2) & 1) << j);
    }
    let low: [u8; QK_K] = std::array::from_fn(|e| l[e] as u8 & 3);
    pack2(&low, &mut b[32..96]);
}

/// Pack sixteen 6-bit Q3_K scales (already offset by 32) into their 12 bytes.
fn pack_scales_q3k(v: &[u8; 16], s: &mut [u8]) {
    s[..12].iter_mut().for_each(|b| *b = 0);
    for j in 0..16 {
        if j < 8 {
            s[j] = v[j] & 0x0f;
        } else {
            s[j - 8] |= (v[j] & 0x0f) << 4;
        }
        s[j % 4 + 8] |= (v[j] >> 4) << (2 * (j / 4));
    }
}

/// ggml's `quantize_row_q3_K_ref`: the sub-blocks' scales searched side by side, the block
/// scale from the largest, the values rounded again with the stored scales.
#[inline(always)]
fn quantize_q3k(src: &[f32], dst: &mut [u8]) {
    let blocks = dst.as_chunks_mut::<Q3_K_BYTES>().0;
    for (b, x) in blocks.iter_mut().zip(src.as_chunks::<QK_K>().0) {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        make_q3_quants_x16(4, x, &mut l, &mut scales);
        let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
        for j in 0..16 {
            if scales[j].abs() > amax {
                amax = scales[j].abs();
                max_scale = scales[j];
            }
        }
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            let v: [u8; 16] = std::array::from_fn(|j| {
                ((nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32) as u8
            });
            pack_scales_q3k(&v, &mut b[96..108]);
            put_f16(b, 108, 1.0 / iscale);
        } else {
            b[96..108].iter_mut().for_each(|v| *v = 0);
            put_f16(b, 108, 0.0);
        }
        requantize_q3k(x, &mut l, b);
    }
}

/// [`quantize_q3k`] compiled for AVX2: the same operations in the same order (no FMA: Rust
/// never contracts), with the per-element loops in vector registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_q3k_avx2(src: &[f32], dst: &mut [u8]) {
    quantize_q3k(src, dst);
}

impl BlockFormat for Q2_K {
    const DTYPE: DType = DType::Q2_K;
    const VEC_DOT_TYPE: DType = DType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() / QK_K * Q2_K_BYTES);
        let blocks = src.as_chunks::<Q2_K_BYTES>().0;
        for (b, y) in blocks.iter().zip(dst.as_chunks_mut::<QK_K>().0) {
            let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
            let q = unpack2(&b[16..80]);
            for (s, (ys, qs)) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
                let sc = b[s];
                let dl = d * (sc & 0x0f) as f32;
                let ml = dmin * (sc >> 4) as f32;
                for (o, v) in ys.iter_mut().zip(qs) {
                    *o = dl * *v as f32 - ml;
                }
            }
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() / QK_K * Q2_K_BYTES);
        let p = Qkx2 {
            nmax: 3,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: true,
        };
        let blocks = dst.as_chunks_mut::<Q2_K_BYTES>().0;
        for (b, x) in blocks.iter_mut().zip(src.as_chunks::<QK_K>().0) {
            let mut l = [0u8; QK_K];
            let mut scales = [0.0f32; 16];
            let mut mins = [0.0f32; 16];
            let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
            for j in 0..16 {
                let xs = &x[16 * j..16 * j + 16];
                let w: [f32; 16] = std::array::from_fn(|i| xs[i].abs());
                let (s, m) = make_qkx2_quants(&p, xs, &w, &mut l[16 * j..16 * j + 16]);
                scales[j] = s;
                mins[j] = m;
                max_scale = if s > max_scale { s } else { max_scale };
                max_min = if m > max_min { m } else { max_min };
            }
            if max_scale > 0.0 {
                let iscale = 15.0 / max_scale;
                for j in 0..16 {
                    b[j] = nearest_int(iscale * scales[j]) as u8;
                }
                put_f16(b, 80, max_scale / 15.0);
            } else {
                b[..16].iter_mut().for_each(|s| *s = 0);
                put_f16(b, 80, 0.0);
            }
            if max_min > 0.0 {
                let iscale = 15.0 / max_min;
                for j in 0..16 {
                    b[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
                }
                put_f16(b, 82, max_min / 15.0);
            } else {
                put_f16(b, 82, 0.0);
            }
            requantize_q2k(x, &mut l, b);
        }
    }

    fn quantize_row_weighted(src: &[f32], dst: &mut [u8], weights: &[f32]) {
        debug_assert_eq!(dst.len(), src.len() / QK_K * Q2_K_BYTES);
        debug_assert_eq!(weights.len(), src.len());
        let p = qkx3_params(3);
        let blocks = dst.as_chunks_mut::<Q2_K_BYTES>().0;
        let xs = src.as_chunks::<QK_K>().0;
        let qws = weights.as_chunks::<QK_K>().0;
        for ((b, x), qw) in blocks.iter_mut().zip(xs).zip(qws) {
            let sigma2 = sum_sq(x) / QK_K as f32;
            let mut l = [0u8; QK_K];
            let mut scales = [0.0f32; 16];
            let mut mins = [0.0f32; 16];
            let mut sw = [0.0f32; 16];
            for j in 0..16 {
                let r = 16 * j..16 * j + 16;
                let mut w = [0.0f32; 16];
                importance_weights(&qw[r.clone()], &x[r.clone()], sigma2, &mut w);
                sw[j] = w.iter().fold(0.0, |s, v| s + v);
                (scales[j], mins[j]) = make_qkx2_quants(&p, &x[r.clone()], &w, &mut l[r]);
            }
            let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
            let dm = make_qp_quants(15, &scales, &mut ls, &sw);
            let mm = make_qp_quants(15, &mins, &mut lm, &sw);
            put_f16(b, 80, dm);
            put_f16(b, 82, mm);
            for j in 0..16 {
                b[j] = ls[j] | (lm[j] << 4);
            }
            requantize_q2k(x, &mut l, b);
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        debug_assert!(w.len() >= n / QK_K * Q2_K_BYTES && a.len() >= n / QK_K * Q8_K_BYTES);
        let wb = w.as_chunks::<Q2_K_BYTES>().0;
        let ab = a.as_chunks::<Q8_K_BYTES>().0;
        let mut sum = 0.0f32;
        for (x, y) in wb.iter().zip(ab).take(n / QK_K) {
            let q = unpack2(&x[16..80]);
            let (mut isum, mut summs) = (0i32, 0i32);
            for s in 0..16 {
                let sc = x[s];
                let bsum = i16::from_le_bytes([y[260 + 2 * s], y[261 + 2 * s]]) as i32;
                summs += bsum * (sc >> 4) as i32;
                let mut si = 0i32;
                for i in 16 * s..16 * s + 16 {
                    si += q[i] as i32 * y[4 + i] as i8 as i32;
                }
                isum += (sc & 0x0f) as i32 * si;
            }
            let yd = q8k_d(y);
            sum += yd * f16_at(x, 80) * isum as f32 - yd * f16_at(x, 82) * summs as f32;
        }
        sum
    }
}

impl BlockFormat for Q3_K {
    const DTYPE: DType = DType::Q3_K;
    const VEC_DOT_TYPE: DType = DType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() / QK_K * Q3_K_BYTES);
        let blocks = src.as_chunks::<Q3_K_BYTES>().0;
        for (b, y) in blocks.iter().zip(dst.as_chunks_mut::<QK_K>().0) {
            let d = f16_at(b, 108);
            let sc = unpack_scales_q3k(&b[96..108]);
            let q = unpack3(b);
            for (s, (ys, qs)) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
                let dl = d * (sc[s] as i32 - 32) as f32;
                for (o, v) in ys.iter_mut().zip(qs) {
                    *o = dl * *v as f32;
                }
            }
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() / QK_K * Q3_K_BYTES);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { quantize_q3k_avx2(src, dst) };
            return;
        }
        quantize_q3k(src, dst);
    }

    fn quantize_row_weighted(src: &[f32], dst: &mut [u8], weights: &[f32]) {
        debug_assert_eq!(dst.len(), src.len() / QK_K * Q3_K_BYTES);
        debug_assert_eq!(weights.len(), src.len());
        let blocks = dst.as_chunks_mut::<Q3_K_BYTES>().0;
        let xs = src.as_chunks::<QK_K>().0;
        let qws = weights.as_chunks::<QK_K>().0;
        for ((b, x), qw) in blocks.iter_mut().zip(xs).zip(qws) {
            let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
            let mut l = [0i8; QK_K];
            let mut scales = [0.0f32; 16];
            let mut sw = [0.0f32; 16];
            for j in 0..16 {
                let r = 16 * j..16 * j + 16;
                let mut w = [0.0f32; 16];
                importance_weights(&qw[r.clone()], &x[r.clone()], sigma2, &mut w);
                sw[j] = w.iter().fold(0.0, |s, v| s + v);
                scales[j] = make_qx_quants(4, &x[r.clone()], &mut l[r], Some(&w));
            }
            let mut ls = [0i8; 16];
            let d_block = make_qx_quants(32, &scales, &mut ls, Some(&sw));
            pack_scales_q3k(&ls.map(|v| v as u8), &mut b[96..108]);
            put_f16(b, 108, d_block);
            requantize_q3k(x, &mut l, b);
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        debug_assert!(w.len() >= n / QK_K * Q3_K_BYTES && a.len() >= n / QK_K * Q8_K_BYTES);
        let wb = w.as_chunks::<Q3_K_BYTES>().0;
        let ab = a.as_chunks::<Q8_K_BYTES>().0;
        let mut sum = 0.0f32;
        for (x, y) in wb.iter().zip(ab).take(n / QK_K) {
            let q = unpack3(x);
            let sc = unpack_scales_q3k(&x[96..108]);
            let mut isum = 0i32;
            for s in 0..16 {
                let mut si = 0i32;
                for i in 16 * s..16 * s + 16 {
                    si += q[i] as i32 * y[4 + i] as i8 as i32;
                }
                isum += (sc[s] as i32 - 32) * si;
            }
            sum += (f16_at(x, 108) * q8k_d(y)) * isum as f32;
        }
        sum
    }
}
