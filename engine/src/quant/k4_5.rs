//! 4- and 5-bit K-quants (256-element super-blocks of 8 sub-blocks of 32), dot partner Q8_K.
//!
//! Both carry `d`, `dmin` (f16) and twelve bytes packing eight 6-bit scales and eight 6-bit
//! minimums (see [`unpack_scales_mins_k4`]): `x = d·sc[s]·q − dmin·m[s]`, `s = e / 32`.
//! Low 4 bits of element `e = 64·c + r`: `qs[32·c + r % 32]`, low nibble when `r < 32`, high
//! nibble otherwise. Q5_K adds bit 4 from `(qh[e % 32] >> (e / 32)) & 1`.

pub use super::kutil::unpack_scales_mins_k4;

use super::k8::{Q8_K_BYTES, q8k_bsum, q8k_d};
use super::kutil::{
    Qkx2, importance_weights, make_qp_quants, pack_scales_mins_k4, qkx3_params, sum_sq,
};
use super::lanes::make_qkx2_quants_x8;
use super::{BlockFormat, QK_K, f16_at, nearest_int, put_f16};
use crate::DType;

/// `{ d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128] }`, 144 bytes.
pub struct Q4_K;

/// `{ d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128] }`, 176 bytes.
pub struct Q5_K;

/// Bytes of a Q4_K block.
pub const Q4_K_BYTES: usize = DType::Q4_K.block_bytes();
/// Bytes of a Q5_K block.
pub const Q5_K_BYTES: usize = DType::Q5_K.block_bytes();

/// The 256 4-bit values stored at `qs` (128 bytes), in element order.
#[inline(always)]
pub fn unpack4(qs: &[u8]) -> [u8; QK_K] {
    let mut out = [0u8; QK_K];
    for (e, o) in out.iter_mut().enumerate() {
        let (c, r) = (e / 64, e % 64);
        let b = qs[32 * c + r % 32];
        *o = if r < 32 { b & 0x0f } else { b >> 4 };
    }
    out
}

/// The 256 5-bit values of a Q5_K block, in element order.
#[inline(always)]
pub fn unpack5k(b: &[u8]) -> [u8; QK_K] {
    let mut out = unpack4(&b[48..176]);
    for (e, o) in out.iter_mut().enumerate() {
        *o |= ((b[16 + e % 32] >> (e / 32)) & 1) << 4;
    }
    out
}

/// Dequantize with per-sub-block scale and minimum.
#[inline(always)]
fn dequant_k(b: &[u8], q: &[u8; QK_K], y: &mut [f32; QK_K]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, m) = unpack_scales_mins_k4(&b[4..16]);
    for (s, (ys, qs)) in y.chunks_exact_mut(32).zip(q.chunks_exact(32)).enumerate() {
        let (d1, m1) = (d * sc[s] as f32, dmin * m[s] as f32);
        for (o, v) in ys.iter_mut().zip(qs) {
            *o = d1 * *v as f32 - m1;
        }
    }
}

/// The reference quantizer shared by Q4_K and Q5_K (`quantize_row_q{4,5}_K_ref`): writes
/// `d`, `dmin` and the packed scales into `b[..16]` and returns the values.
fn quantize_k(x: &[f32; QK_K], p: &Qkx2, b: &mut [u8]) -> [u8; QK_K] {
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut w = [0.0f32; QK_K];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().fold(0.0, |s, v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in w[32 * j..32 * j + 32].iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
    }
    make_qkx2_quants_x8::<32>(p, x, &w, &mut l, &mut scales, &mut mins);
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for (&s, &m) in scales.iter().zip(&mins) {
        max_scale = if s > max_scale { s } else { max_scale };
        max_min = if m > max_min { m } else { max_min };
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let ls: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
    let lm: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_min * mins[j]) as u8).min(63));
    pack_scales_mins_k4(&ls, &lm, &mut b[4..16]);
    put_f16(b, 0, max_scale / 63.0);
    put_f16(b, 2, max_min / 63.0);
    let (dd, dm) = (f16_at(b, 0), f16_at(b, 2));
    for j in 0..8 {
        let d = dd * ls[j] as f32;
        if d == 0.0 {
            continue;
        }
        let m = dm * lm[j] as f32;
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + m) / d).clamp(0, p.nmax) as u8;
        }
    }
    l
}

/// The importance-weighted quantizer shared by Q4_K and Q5_K (`quantize_row_q{4,5}_K_impl` with
/// `quant_weights`), values in `0..=nmax`: writes `d`, `dmin` and the packed scales into
/// `b[..16]` and returns the values. Q5_K clamps the 6-bit scales to 63 before packing
/// (`clamp_scales`), Q4_K does not.
fn quantize_k_weighted(
    x: &[f32; QK_K],
    qw: &[f32; QK_K],
    nmax: i32,
    clamp_scales: bool,
    b: &mut [u8],
) -> [u8; QK_K] {
    let p = qkx3_params(nmax);
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut sw = [0.0f32; 8];
    let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
    let mut w = [0.0f32; QK_K];
    for j in 0..8 {
        let r = 32 * j..32 * j + 32;
        importance_weights(&qw[r.clone()], &x[r.clone()], sigma2, &mut w[r.clone()]);
        sw[j] = w[r].iter().fold(0.0, |s, v| s + v);
    }
    make_qkx2_quants_x8::<32>(&p, x, &w, &mut l, &mut scales, &mut mins);
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    if clamp_scales {
        ls = ls.map(|v| v.min(63));
        lm = lm.map(|v| v.min(63));
    }
    pack_scales_mins_k4(&ls, &lm, &mut b[4..16]);
    put_f16(b, 0, d_block);
    put_f16(b, 2, m_block);
    let (sc, mn) = unpack_scales_mins_k4(&b[4..16]);
    let (dd, dm) = (f16_at(b, 0), f16_at(b, 2));
    for j in 0..8 {
        let d = dd * sc[j] as f32;
        if d == 0.0 {
            continue;
        }
        let m = dm * mn[j] as f32;
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + m) / d).clamp(0, nmax) as u8;
        }
    }
    l
}

/// Set Q5_K's fifth bits (`qh`, 32 bytes) from the values `l`.
fn pack_qh(l: &[u8; QK_K], qh: &mut [u8]) {
    qh.iter_mut().for_each(|v| *v = 0);
    for (e, v) in l.iter().enumerate() {
        if *v > 15 {
            qh[e % 32] |= 1 << (e / 32);
        }
    }
}

/// `Σ_s sc[s]·Σ q·y` and `Σ_s m[s]·bsum(s)` of one block against a Q8_K block.
#[inline(always)]
fn dot_k(q: &[u8; QK_K], scales: &[u8], y: &[u8]) -> (i32, i32) {
    let (sc, m) = unpack_scales_mins_k4(scales);
    let (mut isum, mut summs) = (0i32, 0i32);
    for s in 0..8 {
        let mut si = 0i32;
        for i in 32 * s..32 * s + 32 {
            si += q[i] as i32 * y[4 + i] as i8 as i32;
        }
        isum += sc[s] as i32 * si;
        summs += m[s] as i32 * (q8k_bsum(y, 2 * s) + q8k_bsum(y, 2 * s + 1));
    }
    (isum, summs)
}

/// Pack 4-bit values (element order) into 128 bytes of `qs`.
fn pack4(l: &[u8; QK_K], qs: &mut [u8]) {
    for c in 0..4 {
        for i in 0..32 {
            qs[32 * c + i] = (l[64 * c + i] & 0x0f) | ((l[64 * c + i + 32] & 0x0f) << 4);
        }
    }
}

impl BlockFormat for Q4_K {
    const DTYPE: DType = DType::Q4_K;
    const VEC_DOT_TYPE: DType = DType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() / QK_K * Q4_K_BYTES);
        let blocks = src.as_chunks::<Q4_K_BYTES>().0;
        for (b, y) in blocks.iter().zip(dst.as_chunks_mut::<QK_K>().0) {
            dequant_k(b, &unpack4(&b[16..144]), y);
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() / QK_K * Q4_K_BYTES);
        let p = Qkx2 {
            nmax: 15,
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        let blocks = dst.as_chunks_mut::<Q4_K_BYTES>().0;
        for (b, x) in blocks.iter_mut().zip(src.as_chunks::<QK_K>().0) {
            let l = quantize_k(x, &p, b);
            pack4(&l, &mut b[16..144]);
        }
    }

    fn quantize_row_weighted(src: &[f32], dst: &mut [u8], weights: &[f32]) {
        debug_assert_eq!(dst.len(), src.len() / QK_K * Q4_K_BYTES);
        debug_assert_eq!(weights.len(), src.len());
        let blocks = dst.as_chunks_mut::<Q4_K_BYTES>().0;
        let xs = src.as_chunks::<QK_K>().0;
        let qws = weights.as_chunks::<QK_K>().0;
        for ((b, x), qw) in blocks.iter_mut().zip(xs).zip(qws) {
            let l = quantize_k_weighted(x, qw, 15, false, b);
            pack4(&l, &mut b[16..144]);
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        debug_assert!(w.len() >= n / QK_K * Q4_K_BYTES && a.len() >= n / QK_K * Q8_K_BYTES);
        let wb = w.as_chunks::<Q4_K_BYTES>().0;
        let ab = a.as_chunks::<Q8_K_BYTES>().0;
        let mut sum = 0.0f32;
        for (x, y) in wb.iter().zip(ab).take(n / QK_K) {
            let (isum, summs) = dot_k(&unpack4(&x[16..144]), &x[4..16], y);
            let yd = q8k_d(y);
            sum += f16_at(x, 0) * yd * isum as f32 - f16_at(x, 2) * yd * summs as f32;
        }
        sum
    }
}

impl BlockFormat for Q5_K {
    const DTYPE: DType = DType::Q5_K;
    const VEC_DOT_TYPE: DType = DType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() / QK_K * Q5_K_BYTES);
        let blocks = src.as_chunks::<Q5_K_BYTES>().0;
        for (b, y) in blocks.iter().zip(dst.as_chunks_mut::<QK_K>().0) {
            dequant_k(b, &unpack5k(b), y);
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() / QK_K * Q5_K_BYTES);
        let p = Qkx2 {
            nmax: 31,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: false,
        };
        let blocks = dst.as_chunks_mut::<Q5_K_BYTES>().0;
        for (b, x) in blocks.iter_mut().zip(src.as_chunks::<QK_K>().0) {
            let l = quantize_k(x, &p, b);
            pack_qh(&l, &mut b[16..48]);
            pack4(&l, &mut b[48..176]);
        }
    }

    fn quantize_row_weighted(src: &[f32], dst: &mut [u8], weights: &[f32]) {
        debug_assert_eq!(dst.len(), src.len() / QK_K * Q5_K_BYTES);
        debug_assert_eq!(weights.len(), src.len());
        let blocks = dst.as_chunks_mut::<Q5_K_BYTES>().0;
        let xs = src.as_chunks::<QK_K>().0;
        let qws = weights.as_chunks::<QK_K>().0;
        for ((b, x), qw) in blocks.iter_mut().zip(xs).zip(qws) {
            let l = quantize_k_weighted(x, qw, 31, true, b);
            pack_qh(&l, &mut b[16..48]);
            pack4(&l, &mut b[48..176]);
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        debug_assert!(w.len() >= n / QK_K * Q5_K_BYTES && a.len() >= n / QK_K * Q8_K_BYTES);
        let wb = w.as_chunks::<Q5_K_BYTES>().0;
        let ab = a.as_chunks::<Q8_K_BYTES>().0;
        let mut sum = 0.0f32;
        for (x, y) in wb.iter().zip(ab).take(n / QK_K) {
            let (isum, summs) = dot_k(&unpack5k(x), &x[4..16], y);
            let yd = q8k_d(y);
            sum += f16_at(x, 0) * yd * isum as f32 - f16_at(x, 2) * yd * summs as f32;
        }
        sum
    }
}
