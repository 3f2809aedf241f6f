//! Tests of the block formats, and random-data generators shared with the SIMD kernel tests.
//!
//! Random blocks are built from random quant bytes with controlled, finite f16 scales (random
//! bytes alone would give NaN/inf scales). Activation rows are quantized from random floats with
//! the reference quantizer, except Q8_1 (see [`random_activations`]).

mod dot;
mod imatrix;
mod oracle;
mod real_models;
mod roundtrip;

use super::{QK_K, put_f16, reference, weight_formats};
use crate::DType;

/// A small deterministic generator (SplitMix64), so the tests need no extra crates.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub(crate) fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }

    /// Standard normal (Box–Muller).
    pub(crate) fn normal(&mut self) -> f32 {
        let u1 = self.f32().max(1e-7);
        let u2 = self.f32();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    /// Random ±1.
    pub(crate) fn sign(&mut self) -> f32 {
        if self.next_u64() & 1 == 0 { 1.0 } else { -1.0 }
    }

    /// Fill `b` with random bytes.
    pub(crate) fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    /// Random i8 in −127..=127.
    pub(crate) fn q8(&mut self) -> u8 {
        ((self.next_u64() % 255) as i32 - 127) as i8 as u8
    }
}

/// `n` Gaussian values with a little per-32 variation of scale, like real weights/activations.
pub(crate) fn random_floats(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.div_ceil(32) {
        let s = rng.range(0.2, 2.0);
        for _ in 0..32 {
            out.push(rng.normal() * s);
        }
    }
    out.truncate(n);
    out
}

/// Number of bytes of a row of `n` elements.
pub(crate) fn row_bytes(dtype: DType, n: usize) -> usize {
    dtype.row_bytes(n as u64).expect("whole blocks") as usize
}

/// A random row of `n` elements of `dtype` (a weight format, Q8_0, Q8_1 or Q8_K): random quant
/// bytes with finite scales of random magnitude and sign (positive where ggml's are).
pub(crate) fn random_row(rng: &mut Rng, dtype: DType, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; row_bytes(dtype, n)];
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => {
            let x: Vec<f32> = (0..n).map(|_| rng.range(-4.0, 4.0)).collect();
            (reference(dtype).unwrap().quantize_row)(&x, &mut b);
            return b;
        }
        DType::Q8_1 => return random_q8_1(rng, n),
        DType::Q8_K => {
            let x = random_floats(rng, n);
            (reference(dtype).unwrap().quantize_row)(&x, &mut b);
            return b;
        }
        _ => rng.fill(&mut b),
    }
    let bb = dtype.block_bytes();
    for blk in b.chunks_exact_mut(bb) {
        let mut scale = |blk: &mut [u8], off: usize, signed: bool| {
            let s = if signed { rng.sign() } else { 1.0 };
            put_f16(blk, off, s * rng.range(0.002, 0.05));
        };
        match dtype {
            DType::Q4_0 | DType::Q5_0 => scale(blk, 0, true),
            DType::Q8_0 => {
                scale(blk, 0, true);
                // Weights may hold −128; keep a few to exercise that corner.
            }
            DType::Q4_1 | DType::Q5_1 => {
                scale(blk, 0, false);
                put_f16(blk, 2, rng.range(-0.5, 0.5));
            }
            DType::Q2_K => {
                scale(blk, 80, false);
                scale(blk, 82, false);
            }
            DType::Q3_K => scale(blk, 108, true),
            DType::Q4_K | DType::Q5_K => {
                scale(blk, 0, false);
                scale(blk, 2, false);
            }
            DType::Q6_K => scale(blk, 208, true),
            // E8M0 scales 2^(−8)..2^2 for the doubled FP4 values; the nibbles stay random.
            DType::MXFP4 => blk[0] = 120 + (rng.next_u64() % 11) as u8,
            // The indices (and IQ4_XS's six-bit sub-block scales) stay random.
            DType::IQ4_NL | DType::IQ4_XS => scale(blk, 0, true),
            other => panic!("no random generator for {other}"),
        }
    }
    b
}

/// Q8_1 blocks built so that `s = d·Σq` is exact in f16: `d` a power of two and |Σq| ≤ 2047.
/// With these, `vec_dot` against Q4_1/Q5_1 equals the dot of the dequantized rows up to float
/// rounding; a quantized row's `s` is rounded to f16 and differs by up to 2⁻¹¹·|s| per block.
pub(crate) fn random_q8_1(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; row_bytes(DType::Q8_1, n)];
    for blk in b.chunks_exact_mut(36) {
        let d = (2.0f32).powi(-((rng.next_u64() % 6) as i32) - 5);
        let sum = loop {
            for q in &mut blk[4..] {
                *q = rng.q8();
            }
            let s: i32 = blk[4..].iter().map(|q| *q as i8 as i32).sum();
            if s.abs() <= 2047 {
                break s;
            }
        };
        put_f16(blk, 0, d);
        put_f16(blk, 2, d * sum as f32);
    }
    b
}

/// A random activation row of `n` elements in `dtype` (an activation format): quantized from
/// random floats with the reference quantizer, except Q8_1 ([`random_q8_1`]).
pub(crate) fn random_activations(rng: &mut Rng, dtype: DType, n: usize) -> Vec<u8> {
    if dtype == DType::Q8_1 {
        return random_q8_1(rng, n);
    }
    let x = random_floats(rng, n);
    let mut b = vec![0u8; row_bytes(dtype, n)];
    (reference(dtype).unwrap().quantize_row)(&x, &mut b);
    b
}

/// Dequantize a row with the reference kernels.
pub(crate) fn dequant(dtype: DType, b: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    (reference(dtype).unwrap().dequantize_row)(b, &mut out);
    out
}

/// Row lengths to test for `dtype`: several sizes, all whole blocks.
pub(crate) fn sizes(dtype: DType) -> Vec<usize> {
    match dtype.block_elems() {
        1 => vec![1, 7, 32, 33, 100, 256, 1000, 4096],
        32 => vec![32, 64, 96, 256, 1024, 4096],
        _ => vec![QK_K, 2 * QK_K, 3 * QK_K, 16 * QK_K],
    }
}

#[test]
fn reference_table_covers_supported_types() {
    for t in DType::ALL {
        assert_eq!(reference(t).is_some(), t.is_supported(), "{t}");
        if let Some(ops) = reference(t) {
            assert_eq!(ops.dtype, t);
        }
    }
    let pairs = [
        (DType::Q4_0, DType::Q8_0),
        (DType::Q5_0, DType::Q8_0),
        (DType::Q8_0, DType::Q8_0),
        (DType::MXFP4, DType::Q8_0),
        (DType::IQ4_NL, DType::Q8_0),
        (DType::IQ4_XS, DType::Q8_K),
        (DType::Q4_1, DType::Q8_1),
        (DType::Q5_1, DType::Q8_1),
        (DType::Q2_K, DType::Q8_K),
        (DType::Q3_K, DType::Q8_K),
        (DType::Q4_K, DType::Q8_K),
        (DType::Q5_K, DType::Q8_K),
        (DType::Q6_K, DType::Q8_K),
        (DType::F32, DType::F32),
        (DType::F16, DType::F16),
        (DType::BF16, DType::BF16),
    ];
    for (w, a) in pairs {
        assert_eq!(reference(w).unwrap().vec_dot_type, a, "{w}");
    }
}

#[test]
fn unaligned_input_is_fine() {
    // Every kernel reads through byte slices at odd offsets without panicking and gives the
    // same answer as from an aligned copy.
    let mut rng = Rng::new(7);
    for t in weight_formats() {
        let ops = reference(t).unwrap();
        let n = sizes(t)[1].max(t.block_elems());
        let w = random_row(&mut rng, t, n);
        let a = random_activations(&mut rng, ops.vec_dot_type, n);
        let mut wu = vec![0u8; w.len() + 1];
        wu[1..].copy_from_slice(&w);
        let mut au = vec![0u8; a.len() + 3];
        au[3..].copy_from_slice(&a);
        let expect = (ops.vec_dot)(n, &w, &a);
        assert_eq!(
            (ops.vec_dot)(n, &wu[1..], &au[3..]).to_bits(),
            expect.to_bits(),
            "{t}"
        );
        assert_eq!(dequant(t, &wu[1..], n), dequant(t, &w, n), "{t}");
    }
}
