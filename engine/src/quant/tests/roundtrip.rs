//! quantize → dequantize error bounds, per format.
//!
//! Bounds asserted (per 32-element block unless noted, `ε = 2⁻¹¹` the f16 rounding of stored
//! scales, `amax` the block's largest |x|):
//! - F32 exact; F16 ≤ 2⁻¹¹·|x| (normal range); BF16 ≤ 2⁻⁸·|x|.
//! - Q8_0, Q8_1: `d = amax/127`, |err| ≤ d·(0.5 + 127ε).
//! - Q4_0: `|d| = amax/8`, |err| ≤ |d|·(1 + 8ε) (the extreme opposite to `max` clamps to −8·d);
//!   Q5_0: `|d| = amax/16`, the same with 16.
//! - Q4_1/Q5_1: `d = (max−min)/(2ᵇ−1)`, |err| ≤ d·(0.5 + (2ᵇ−1)ε) + |min|·ε.
//! - MXFP4: step `s = 2^(⌊log₂ amax⌋ − 2)`, values up to 6s, amax < 8s: |err| ≤ 2s (each value's
//!   nearest FP4 value is checked exactly in `quant::mxfp4`'s own tests).
//! - Q8_K (f32 scale): |err| ≤ 0.5·|d|·(1 + 1e-6).
//! - Q2_K..Q6_K (scale searches, no closed form): on Gaussian rows, RMS error / RMS(x) below
//!   a per-format bound (measured values with ~25 % margin, see `K_BOUNDS`), and every element
//!   within `K_MAX_ERR · amax` of its super-block.

use super::{Rng, dequant, random_floats, row_bytes};
use crate::DType;
use crate::quant::{FORMATS, QK_K, reference, weight_formats};

fn round_trip(t: DType, x: &[f32]) -> Vec<f32> {
    let mut b = vec![0u8; row_bytes(t, x.len())];
    (reference(t).unwrap().quantize_row)(x, &mut b);
    dequant(t, &b, x.len())
}

const EPS16: f32 = 1.0 / 2048.0;

#[test]
fn float_formats_round_trip() {
    let mut rng = Rng::new(5);
    let x = random_floats(&mut rng, 4096);
    assert_eq!(round_trip(DType::F32, &x), x);
    for (t, rel) in [(DType::F16, EPS16), (DType::BF16, 1.0 / 256.0)] {
        for (a, b) in x.iter().zip(round_trip(t, &x)) {
            assert!((a - b).abs() <= rel * a.abs() + 1e-7, "{t}: {a} -> {b}");
        }
    }
}

#[test]
fn legacy_formats_round_trip_within_bound() {
    let mut rng = Rng::new(6);
    // Every 32-element format; a new one needs its bound below.
    for t in FORMATS
        .iter()
        .map(|f| f.dtype)
        .filter(|t| t.block_elems() == 32)
    {
        let mut x = random_floats(&mut rng, 4096);
        x[..32].iter_mut().for_each(|v| *v = 0.0);
        x[32..64].iter_mut().for_each(|v| *v = -0.75);
        let y = round_trip(t, &x);
        for (bi, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let min = xb.iter().fold(f32::MAX, |m, v| m.min(*v));
            let max = xb.iter().fold(-f32::MAX, |m, v| m.max(*v));
            let bound = match t {
                DType::Q8_0 | DType::Q8_1 => amax / 127.0 * (0.5 + 127.0 * EPS16),
                DType::Q4_0 => amax / 8.0 * (1.0 + 8.0 * EPS16),
                DType::Q5_0 => amax / 16.0 * (1.0 + 16.0 * EPS16),
                DType::Q4_1 => (max - min) / 15.0 * (0.5 + 15.0 * EPS16) + min.abs() * EPS16,
                DType::Q5_1 => (max - min) / 31.0 * (0.5 + 31.0 * EPS16) + min.abs() * EPS16,
                // FP4 step s = 2^(floor(log2 amax) − 2): amax < 8s and the largest value is 6s.
                DType::MXFP4 if amax > 0.0 => 2.0 * 2f32.powi(amax.log2().floor() as i32 - 2),
                DType::MXFP4 => 0.0,
                // The widest gap of the table is 24 steps of d ≈ amax/127 (the scale search
                // may move d by a few percent): half a gap, with room.
                DType::IQ4_NL => amax * 0.11,
                other => panic!("{other}: no round-trip bound"),
            };
            for (a, b) in xb.iter().zip(yb) {
                assert!(
                    (a - b).abs() <= bound * 1.0001 + 1e-9,
                    "{t} block {bi}: {a} -> {b}, bound {bound}"
                );
            }
        }
    }
}

#[test]
fn q8_k_round_trip_and_sums() {
    let mut rng = Rng::new(8);
    let mut x = random_floats(&mut rng, 1024);
    x[256..512].iter_mut().for_each(|v| *v = 0.0);
    let mut b = vec![0u8; row_bytes(DType::Q8_K, x.len())];
    (reference(DType::Q8_K).unwrap().quantize_row)(&x, &mut b);
    let y = dequant(DType::Q8_K, &b, x.len());
    for (blk, (xb, yb)) in b.chunks(292).zip(x.chunks(256).zip(y.chunks(256))) {
        let d = f32::from_le_bytes(blk[..4].try_into().unwrap());
        for (a, c) in xb.iter().zip(yb) {
            assert!(
                (a - c).abs() <= 0.5 * d.abs() * (1.0 + 1e-6),
                "{a} -> {c}, d {d}"
            );
        }
        for j in 0..16 {
            let s: i32 = blk[4 + 16 * j..20 + 16 * j]
                .iter()
                .map(|q| *q as i8 as i32)
                .sum();
            assert_eq!(
                i16::from_le_bytes([blk[260 + 2 * j], blk[261 + 2 * j]]) as i32,
                s
            );
            assert!(
                blk[4 + 16 * j..20 + 16 * j].iter().all(|q| *q != 0x80),
                "-128 produced"
            );
        }
    }
}

/// (format, bound on RMS error / RMS(x), bound on max |err| / amax per super-block).
const K_BOUNDS: [(DType, f32, f32); 6] = [
    (DType::Q2_K, 0.37, 0.41),   // measured 0.298, 0.327
    (DType::Q3_K, 0.19, 0.21),   // measured 0.152, 0.164
    (DType::Q4_K, 0.09, 0.09),   // measured 0.072, 0.071
    (DType::Q5_K, 0.046, 0.05),  // measured 0.036, 0.040
    (DType::Q6_K, 0.022, 0.02),  // measured 0.018, 0.016
    (DType::IQ4_XS, 0.09, 0.09), // measured 0.077, 0.080
];

#[test]
fn k_quants_round_trip_within_bound() {
    let mut rng = Rng::new(9);
    // Every K-quant weight format; a new one needs its bounds in `K_BOUNDS`.
    for t in weight_formats().filter(|t| t.block_elems() == QK_K) {
        let (_, rms_bound, max_bound) = *K_BOUNDS
            .iter()
            .find(|b| b.0 == t)
            .unwrap_or_else(|| panic!("{t}: no round-trip bounds in K_BOUNDS"));
        let mut x: Vec<f32> = (0..64 * 256).map(|_| rng.normal()).collect();
        x[..256].iter_mut().for_each(|v| *v = 0.0);
        let y = round_trip(t, &x);
        let (mut se, mut sx, mut worst) = (0.0f64, 0.0f64, 0.0f32);
        for (xb, yb) in x.chunks(256).zip(y.chunks(256)) {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (a, b) in xb.iter().zip(yb) {
                se += ((a - b) as f64).powi(2);
                sx += (*a as f64).powi(2);
                if amax > 0.0 {
                    worst = worst.max((a - b).abs() / amax);
                } else {
                    assert_eq!(*b, 0.0, "{t}: zero block");
                }
            }
        }
        let rel = (se / sx).sqrt() as f32;
        eprintln!("{t}: rms rel err {rel:.5}, max err / amax {worst:.5}");
        assert!(rel <= rms_bound, "{t}: rms rel err {rel} > {rms_bound}");
        assert!(
            worst <= max_bound,
            "{t}: max err / amax {worst} > {max_bound}"
        );
    }
}
