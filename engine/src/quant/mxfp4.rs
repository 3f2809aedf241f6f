//! MXFP4 (ggml type 39, OCP microscaling FP4), gpt-oss's expert weight format.
//!
//! A block of 32 values is one E8M0 scale byte `e` (a bare power-of-two exponent, bias 127)
//! and 16 bytes of 4-bit indices into the FP4 (E2M1) values {0, .5, 1, 1.5, 2, 3, 4, 6} and
//! their negatives. As ggml, the table is stored doubled as small integers ([`KVALUES`]) and
//! multiplied by half the scale, [`e8m0_to_f32_half`]`(e)` = 2^(e − 128), so integer dot
//! products stay exact. Nibble order as Q4_0: byte `j` holds element `j` in its low nibble and
//! element `j + 16` in its high nibble. Dot partner: Q8_0.

use super::q8::Q8_0_BYTES;
use super::{BlockFormat, f16_at};
use crate::DType;

/// Elements per block.
pub const QK: usize = DType::MXFP4.block_elems();

/// Bytes of a block: the scale byte and 16 bytes of nibbles.
pub const MXFP4_BYTES: usize = DType::MXFP4.block_bytes();

/// The FP4 (E2M1) values doubled, indexed by nibble (ggml's `kvalues_mxfp4`); index 8 is −0.
pub const KVALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `{ e: u8 (E8M0), qs: [u8; 16] }`, 17 bytes: `x = KVALUES[q] · 2^(e − 128)`. Dot partner:
/// Q8_0. ggml's `quantize_mxfp4` ignores an importance matrix, and so does this (the default
/// [`BlockFormat::quantize_row_weighted`]).
pub struct MXFP4;

/// Half the value of the E8M0 scale `e`, 2^(e − 128), bit for bit as ggml's
/// `ggml_e8m0_to_fp32_half` (`e` 0 and 1 give the subnormals 2⁻¹²⁸ and 2⁻¹²⁷; 255, which
/// E8M0 reserves for NaN, gives 2¹²⁷ as in ggml).
#[inline(always)]
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        (e as u32 - 1) << 23
    };
    f32::from_bits(bits)
}

/// The E8M0 scale ggml's reference quantizer picks for a block whose largest magnitude is
/// `amax`: `floor(log2(amax)) − 2 + 127` (the largest FP4 value, 6 = 1.5·2², then covers
/// 1.5·2^floor(log2 amax)), or 0 for an all-zero block. The float-to-byte conversion wraps as
/// C's `(uint8_t)` of an out-of-range float does on x86-64 (through a 32-bit integer); only
/// |x| < 2⁻¹²⁵ or ≥ 2¹²⁹ reach it.
#[inline]
pub fn e8m0_for_amax(amax: f32) -> u8 {
    if amax > 0.0 {
        (amax.log2().floor() - 2.0 + 127.0) as i32 as u8
    } else {
        0
    }
}

/// ggml's `best_index_mxfp4`: the index of the entry of [`KVALUES`]·`d` nearest `x`, the first
/// one on ties (so +0, never −0).
#[inline]
fn best_index(x: f32, d: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = (KVALUES[0] as f32 * d - x).abs();
    for (i, &k) in KVALUES.iter().enumerate().skip(1) {
        let err = (k as f32 * d - x).abs();
        if err < best_err {
            best = i as u8;
            best_err = err;
        }
    }
    best
}

impl BlockFormat for MXFP4 {
    const DTYPE: DType = DType::MXFP4;
    const VEC_DOT_TYPE: DType = DType::Q8_0;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() / QK * MXFP4_BYTES);
        let blocks = src.as_chunks::<MXFP4_BYTES>().0;
        for (b, y) in blocks.iter().zip(dst.as_chunks_mut::<QK>().0) {
            let d = e8m0_to_f32_half(b[0]);
            for j in 0..QK / 2 {
                let q = b[1 + j];
                y[j] = KVALUES[(q & 0x0f) as usize] as f32 * d;
                y[j + QK / 2] = KVALUES[(q >> 4) as usize] as f32 * d;
            }
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() / QK * MXFP4_BYTES);
        let blocks = dst.as_chunks_mut::<MXFP4_BYTES>().0;
        for (b, x) in blocks.iter_mut().zip(src.as_chunks::<QK>().0) {
            let amax = x
                .iter()
                .fold(0.0f32, |m, v| if m < v.abs() { v.abs() } else { m });
            let e = e8m0_for_amax(amax);
            let d = e8m0_to_f32_half(e);
            b[0] = e;
            for j in 0..QK / 2 {
                b[1 + j] = best_index(x[j], d) | (best_index(x[j + QK / 2], d) << 4);
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        debug_assert!(w.len() >= n / QK * MXFP4_BYTES && a.len() >= n / QK * Q8_0_BYTES);
        let wb = w.as_chunks::<MXFP4_BYTES>().0;
        let ab = a.as_chunks::<Q8_0_BYTES>().0;
        let mut sum = 0.0f32;
        for (x, y) in wb.iter().zip(ab).take(n / QK) {
            let mut sumi = 0i32;
            for j in 0..QK / 2 {
                let q = x[1 + j];
                sumi += KVALUES[(q & 0x0f) as usize] as i32 * y[2 + j] as i8 as i32;
                sumi += KVALUES[(q >> 4) as usize] as i32 * y[2 + j + QK / 2] as i8 as i32;
            }
            sum += (f16_at(y, 0) * e8m0_to_f32_half(x[0])) * sumi as f32;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_half_is_two_to_the_e_minus_128() {
        for e in 0..=255u8 {
            assert_eq!(
                e8m0_to_f32_half(e) as f64,
                2f64.powi(e as i32 - 128),
                "e = {e}"
            );
        }
    }

    #[test]
    fn kvalues_are_twice_the_e2m1_values() {
        let e2m1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
        for (i, &k) in KVALUES.iter().enumerate() {
            let v = e2m1[i % 8] * if i < 8 { 1.0 } else { -1.0 };
            assert_eq!(k as f32, 2.0 * v, "index {i}");
        }
    }

    #[test]
    fn scale_puts_amax_between_four_and_eight_steps() {
        // With s = 2·e8m0_half(e) (the FP4 step of 1.0), amax lies in [4s, 8s).
        for amax in [1e-30f32, 0.001, 0.3, 1.0, 1.4999, 6.0, 7.99, 8.0, 3.0e5] {
            let s = 2.0 * e8m0_to_f32_half(e8m0_for_amax(amax));
            assert!(4.0 * s <= amax && amax < 8.0 * s, "amax {amax}: step {s}");
        }
        assert_eq!(e8m0_for_amax(0.0), 0);
    }

    #[test]
    fn quantize_picks_the_nearest_fp4_value() {
        // Every element decodes to the value of the block's grid nearest it (f64 brute force),
        // and ties go to the smaller magnitude (the first index, as ggml), never to −0.
        let mut x: Vec<f32> = (0..64 * QK)
            .map(|i| ((i as f32 * 0.618).sin() * 7.0) * (1.0 + (i / 32) as f32 * 0.37))
            .collect();
        // Exact ties with amax 6 (step 1): 0.25, 1.25, 2.5, 5 and their negatives.
        let ties = [
            6.0f32, 0.25, 1.25, 2.5, 5.0, -0.25, -1.25, -2.5, -5.0, 0.0, -0.0,
        ];
        x[..ties.len()].copy_from_slice(&ties);
        x[32..64].fill(0.0);
        let mut b = vec![0u8; x.len() / QK * MXFP4_BYTES];
        MXFP4::quantize_row(&x, &mut b);
        let mut y = vec![0.0f32; x.len()];
        MXFP4::dequantize_row(&b, &mut y);
        for (blk, (xb, yb)) in x.chunks(QK).zip(y.chunks(QK)).enumerate() {
            let d = e8m0_to_f32_half(b[blk * MXFP4_BYTES]) as f64;
            for (&v, &got) in xb.iter().zip(yb) {
                let best = KVALUES
                    .iter()
                    .map(|&k| k as f64 * d)
                    .min_by(|p, q| {
                        let (ep, eq) = ((p - v as f64).abs(), (q - v as f64).abs());
                        ep.partial_cmp(&eq)
                            .unwrap()
                            .then(p.abs().partial_cmp(&q.abs()).unwrap())
                    })
                    .unwrap();
                assert_eq!(
                    got as f64, best,
                    "block {blk}: {v} -> {got}, nearest {best}"
                );
            }
        }
        assert_eq!(b[0], 127 - 2 + 2, "amax 6: e = floor(log2 6) − 2 + 127");
        let nibble = |j: usize| b[1 + j] & 0x0f;
        assert_eq!(
            (1..9).map(nibble).collect::<Vec<_>>(),
            [0, 2, 4, 6, 0, 10, 12, 14],
            "ties round towards zero"
        );
        assert_eq!((nibble(9), nibble(10)), (0, 0), "±0 encode as +0");
        assert!(b[MXFP4_BYTES..2 * MXFP4_BYTES].iter().all(|&q| q == 0));
    }
}
