//! IQ4_NL and IQ4_XS (ggml types 20 and 23): 4-bit indices into one non-linear table of 16
//! values ([`KVALUES`], denser near zero, where trained weights crowd), times a scale.
//!
//! - IQ4_NL: a block of 32 values is an f16 scale `d` and 16 bytes of indices:
//!   `x = d · KVALUES[q]`. Dot partner: Q8_0.
//! - IQ4_XS: a super-block of 256 values is an f16 scale `d`, 8 six-bit sub-block scales
//!   `ls` (low nibbles in `scales_l[4]`, high bit pairs in `scales_h: u16`) and 128 bytes of
//!   indices: `x = d · (ls − 32) · KVALUES[q]` in sub-block `ib = i / 32`. Dot partner: Q8_K.
//!
//! Nibble order as Q4_0, per 32 values: byte `j` holds value `j` in its low nibble and
//! `j + 16` in its high nibble. The quantizers are ggml's `quantize_row_iq4_nl_impl` (the
//! search over 15 scales per block that `quantize_iq4_nl`/`quantize_iq4_xs`, and so
//! llama-quantize, run), with or without an importance matrix, operation for operation.
//!
//! **Sum order of the dot products:** each 32-value block's exact integer `Σ KVALUES[q]·a`;
//! IQ4_NL adds it per block with one fused multiply-add, `sum = fma(Σ, d·d_a, sum)` (the
//! order of the SIMD tiles it shares with Q8_0), IQ4_XS sums `(ls − 32)·Σ` over a super-block
//! in integers and adds `(d·d_a)·total` once per super-block. The SIMD kernels keep this
//! order, so they give these bits.

use super::q8::Q8_0_BYTES;
use super::{BlockFormat, QK_K, f16_at, nearest_int, put_f16};
use crate::DType;

/// Elements per IQ4_NL block.
pub const QK4_NL: usize = DType::IQ4_NL.block_elems();

/// Bytes of an IQ4_NL block: the f16 scale and 16 bytes of indices.
pub const IQ4_NL_BYTES: usize = DType::IQ4_NL.block_bytes();

/// Bytes of an IQ4_XS super-block: `d`, `scales_h`, `scales_l[4]`, `qs[128]`.
pub const IQ4_XS_BYTES: usize = DType::IQ4_XS.block_bytes();

/// Bytes of a Q8_K block (f32 scale, 256 quants, 16 i16 sums).
const Q8_K_BYTES: usize = DType::Q8_K.block_bytes();

/// The 16 values an index stands for (ggml's `kvalues_iq4nl`), rising.
pub const KVALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// `amax` below which a block is all zero to the quantizer (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// Scale candidates each side of the first guess (ggml's `ntry` in `quantize_iq4_*`).
const NTRY: i32 = 7;

/// IQ4_NL: `{ d: f16, qs: [u8; 16] }`, 18 bytes. Dot partner: Q8_0.
pub struct IQ4_NL;

/// IQ4_XS: `{ d: f16, scales_h: u16, scales_l: [u8; 4], qs: [u8; 128] }`, 136 bytes. Dot
/// partner: Q8_K.
pub struct IQ4_XS;

/// ggml's `best_index_int8` over [`KVALUES`]: the index of the value nearest `x` (binary
/// search; on a tie the upper one).
#[inline]
fn best_index(x: f32) -> u8 {
    let val = |i: usize| KVALUES[i] as f32;
    if x <= val(0) {
        return 0;
    }
    if x >= val(15) {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val(mav) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - val(mu - 1) < val(mu) - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// Sub-block `ib`'s six-bit scale `ls` (0..=63) of an IQ4_XS super-block `b`.
#[inline(always)]
pub fn xs_scale(b: &[u8], ib: usize) -> i32 {
    let h = u16::from_le_bytes([b[2], b[3]]);
    let lo = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf;
    let hi = (h >> (2 * ib)) & 3;
    (lo as i32) | ((hi as i32) << 4)
}

/// The best scale of one 32-value block `xb` with weights `w` (ggml's first loop of
/// `quantize_row_iq4_nl_impl`): its indices go to `lb`; 0 for an all-zero block.
fn block_scale(xb: &[f32], w: &[f32], lb: &mut [u8]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &x in xb {
        if x.abs() > amax {
            amax = x.abs();
            max = x;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let v0 = KVALUES[0] as f32;
    let mut d = -max / v0;
    let mut id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for ((&x, &wj), l) in xb.iter().zip(w).zip(lb.iter_mut()) {
        *l = best_index(id * x);
        let q = KVALUES[*l as usize] as f32;
        sumqx += wj * q * x;
        sumq2 += wj * q * q;
    }
    d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        id = (itry as f32 + v0) / max;
        sumqx = 0.0;
        sumq2 = 0.0;
        for (&x, &wj) in xb.iter().zip(w) {
            let q = KVALUES[best_index(id * x) as usize] as f32;
            sumqx += wj * q * x;
            sumq2 += wj * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// The weights of block `xb`: `qw · √(sigma2 + x²)` with an importance matrix, else `x²`.
fn block_weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32, w: &mut [f32]) {
    match qw {
        Some(qw) => super::kutil::importance_weights(qw, xb, sigma2, w),
        None => {
            for (o, &x) in w.iter_mut().zip(xb) {
                *o = x * x;
            }
        }
    }
}

/// `2/n · Σ x²` (ggml's `sigma2`).
fn sigma2(x: &[f32]) -> f32 {
    super::kutil::sum_sq(x) * (2.0 / x.len() as f32)
}

/// The 32 indices `l` of a block packed two per byte (Q4_0's nibble order) into `q`.
fn pack_block(l: &[u8], q: &mut [u8]) {
    for j in 0..16 {
        q[j] = l[j] | (l[16 + j] << 4);
    }
}

/// One IQ4_NL block of `x` (32 values) into `b`, with importance weights `qw` if given.
fn quantize_nl_block(x: &[f32], qw: Option<&[f32]>, b: &mut [u8]) {
    let mut w = [0.0f32; QK4_NL];
    let mut l = [0u8; QK4_NL];
    block_weights(x, qw, sigma2(x), &mut w);
    let d = block_scale(x, &w, &mut l);
    put_f16(b, 0, d);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (lj, &xj) in l.iter_mut().zip(x) {
        *lj = best_index(id * xj);
    }
    pack_block(&l, &mut b[2..18]);
}

/// One IQ4_XS super-block of `x` (256 values) into `b`, with importance weights `qw` if given.
fn quantize_xs_block(x: &[f32], qw: Option<&[f32]>, b: &mut [u8]) {
    let s2 = sigma2(x);
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; QK_K / 32];
    let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
    for ib in 0..QK_K / 32 {
        let xb = &x[32 * ib..32 * ib + 32];
        let mut w = [0.0f32; 32];
        block_weights(xb, qw.map(|q| &q[32 * ib..32 * ib + 32]), s2, &mut w);
        let d = block_scale(xb, &w, &mut l[32 * ib..32 * ib + 32]);
        scales[ib] = d;
        if d.abs() > amax_scale {
            amax_scale = d.abs();
            max_scale = d;
        }
    }
    let d = -max_scale / 32.0;
    put_f16(b, 0, d);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut scales_h = 0u16;
    let mut scales_l = [0u8; 4];
    for ib in 0..QK_K / 32 {
        let ls = nearest_int(id * scales[ib]).clamp(-32, 31);
        let dl = d * ls as f32;
        let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
        for (lj, &xj) in l[32 * ib..32 * ib + 32]
            .iter_mut()
            .zip(&x[32 * ib..32 * ib + 32])
        {
            *lj = best_index(idl * xj);
        }
        let u = (ls + 32) as u8;
        scales_l[ib / 2] |= (u & 0xf) << (4 * (ib % 2));
        scales_h |= ((u >> 4) as u16) << (2 * ib);
    }
    b[2..4].copy_from_slice(&scales_h.to_le_bytes());
    b[4..8].copy_from_slice(&scales_l);
    for ib in 0..QK_K / 32 {
        pack_block(&l[32 * ib..32 * ib + 32], &mut b[8 + 16 * ib..24 + 16 * ib]);
    }
}

/// `Σ KVALUES[q]·a` over a 32-value block: indices `qs` (16 bytes), activations `a` (32).
#[inline]
pub fn block_dot(qs: &[u8], a: &[u8]) -> i32 {
    let mut s = 0i32;
    for j in 0..16 {
        s += KVALUES[(qs[j] & 0xf) as usize] as i32 * a[j] as i8 as i32;
        s += KVALUES[(qs[j] >> 4) as usize] as i32 * a[j + 16] as i8 as i32;
    }
    s
}

impl BlockFormat for IQ4_NL {
    const DTYPE: DType = DType::IQ4_NL;
    const VEC_DOT_TYPE: DType = DType::Q8_0;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() / QK4_NL * IQ4_NL_BYTES);
        let blocks = src.as_chunks::<IQ4_NL_BYTES>().0;
        for (b, y) in blocks.iter().zip(dst.as_chunks_mut::<QK4_NL>().0) {
            let d = f16_at(b, 0);
            for j in 0..16 {
                y[j] = d * KVALUES[(b[2 + j] & 0xf) as usize] as f32;
                y[j + 16] = d * KVALUES[(b[2 + j] >> 4) as usize] as f32;
            }
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() / QK4_NL * IQ4_NL_BYTES);
        let blocks = dst.as_chunks_mut::<IQ4_NL_BYTES>().0;
        for (b, x) in blocks.iter_mut().zip(src.as_chunks::<QK4_NL>().0) {
            quantize_nl_block(x, None, b);
        }
    }

    fn quantize_row_weighted(src: &[f32], dst: &mut [u8], weights: &[f32]) {
        debug_assert_eq!(weights.len(), src.len());
        let blocks = dst.as_chunks_mut::<IQ4_NL_BYTES>().0;
        for ((b, x), qw) in blocks
            .iter_mut()
            .zip(src.as_chunks::<QK4_NL>().0)
            .zip(weights.as_chunks::<QK4_NL>().0)
        {
            quantize_nl_block(x, Some(qw), b);
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        debug_assert!(w.len() >= n / QK4_NL * IQ4_NL_BYTES && a.len() >= n / QK4_NL * Q8_0_BYTES);
        let wb = w.as_chunks::<IQ4_NL_BYTES>().0;
        let ab = a.as_chunks::<Q8_0_BYTES>().0;
        let mut sum = 0.0f32;
        for (x, y) in wb.iter().zip(ab).take(n / QK4_NL) {
            let isum = block_dot(&x[2..18], &y[2..34]);
            sum = (isum as f32).mul_add(f16_at(x, 0) * f16_at(y, 0), sum);
        }
        sum
    }
}

impl BlockFormat for IQ4_XS {
    const DTYPE: DType = DType::IQ4_XS;
    const VEC_DOT_TYPE: DType = DType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() / QK_K * IQ4_XS_BYTES);
        let blocks = src.as_chunks::<IQ4_XS_BYTES>().0;
        for (b, y) in blocks.iter().zip(dst.as_chunks_mut::<QK_K>().0) {
            let d = f16_at(b, 0);
            for ib in 0..QK_K / 32 {
                let dl = d * (xs_scale(b, ib) - 32) as f32;
                let qs = &b[8 + 16 * ib..24 + 16 * ib];
                let yb = &mut y[32 * ib..32 * ib + 32];
                for j in 0..16 {
                    yb[j] = dl * KVALUES[(qs[j] & 0xf) as usize] as f32;
                    yb[j + 16] = dl * KVALUES[(qs[j] >> 4) as usize] as f32;
                }
            }
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() / QK_K * IQ4_XS_BYTES);
        let blocks = dst.as_chunks_mut::<IQ4_XS_BYTES>().0;
        for (b, x) in blocks.iter_mut().zip(src.as_chunks::<QK_K>().0) {
            b.fill(0);
            quantize_xs_block(x, None, b);
        }
    }

    fn quantize_row_weighted(src: &[f32], dst: &mut [u8], weights: &[f32]) {
        debug_assert_eq!(weights.len(), src.len());
        let blocks = dst.as_chunks_mut::<IQ4_XS_BYTES>().0;
        for ((b, x), qw) in blocks
            .iter_mut()
            .zip(src.as_chunks::<QK_K>().0)
            .zip(weights.as_chunks::<QK_K>().0)
        {
            b.fill(0);
            quantize_xs_block(x, Some(qw), b);
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        debug_assert!(w.len() >= n / QK_K * IQ4_XS_BYTES && a.len() >= n / QK_K * Q8_K_BYTES);
        let wb = w.as_chunks::<IQ4_XS_BYTES>().0;
        let ab = a.as_chunks::<Q8_K_BYTES>().0;
        let mut sum = 0.0f32;
        for (x, y) in wb.iter().zip(ab).take(n / QK_K) {
            let mut isum = 0i32;
            for ib in 0..QK_K / 32 {
                let s = block_dot(&x[8 + 16 * ib..24 + 16 * ib], &y[4 + 32 * ib..36 + 32 * ib]);
                isum += (xs_scale(x, ib) - 32) * s;
            }
            let yd = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
            sum += (f16_at(x, 0) * yd) * isum as f32;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_index_is_the_nearest_value_upper_on_ties() {
        for i in -1500..=1500 {
            let x = i as f32 / 10.0;
            let got = best_index(x) as usize;
            let err = |k: usize| (KVALUES[k] as f32 - x).abs();
            let best = (0..16).map(err).fold(f32::MAX, f32::min);
            assert_eq!(err(got), best, "x = {x}: index {got}");
        }
        // Between 1 and 13 the midpoint 7 goes up (ggml's `<`).
        assert_eq!(best_index(7.0), 9);
        assert_eq!(best_index(-1000.0), 0);
        assert_eq!(best_index(1000.0), 15);
    }

    #[test]
    fn xs_scales_round_trip_through_the_packing() {
        let x: Vec<f32> = (0..QK_K)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * (1.0 + (i / 32) as f32))
            .collect();
        let mut b = vec![0u8; IQ4_XS_BYTES];
        IQ4_XS::quantize_row(&x, &mut b);
        let d = f16_at(&b, 0);
        // The largest sub-block scale maps to −32 (ggml: d = −max_scale/32).
        assert!((0..8).any(|ib| xs_scale(&b, ib) == 0), "{:?}", &b[..8]);
        let mut y = vec![0.0f32; QK_K];
        IQ4_XS::dequantize_row(&b, &mut y);
        for (ib, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let step = (d * (xs_scale(&b, ib) - 32) as f32).abs() * 24.0;
            for (a, c) in xb.iter().zip(yb) {
                assert!(
                    (a - c).abs() <= step,
                    "block {ib}: {a} -> {c} (step {step})"
                );
            }
        }
    }

    #[test]
    fn zero_blocks_quantize_to_zero() {
        let mut b = vec![0xffu8; IQ4_NL_BYTES];
        IQ4_NL::quantize_row(&[0.0; 32], &mut b);
        let mut y = [1.0f32; 32];
        IQ4_NL::dequantize_row(&b, &mut y);
        assert!(y.iter().all(|v| *v == 0.0));
        let mut b = vec![0xffu8; IQ4_XS_BYTES];
        IQ4_XS::quantize_row(&[0.0; QK_K], &mut b);
        let mut y = [1.0f32; QK_K];
        IQ4_XS::dequantize_row(&b, &mut y);
        assert!(y.iter().all(|v| *v == 0.0));
    }
}
