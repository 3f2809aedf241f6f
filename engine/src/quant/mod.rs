//! Quantized block formats: ggml's exact byte layouts with a scalar reference for each.
//!
//! Every format is a zero-sized type implementing [`BlockFormat`]: dequantize a row, quantize a
//! row (rounding exactly as ggml's `quantize_row_*_ref`, or, given an importance matrix, as
//! ggml's `quantize_row_*_impl`), and the dot product of a row of weights
//! with a row of the activation format ggml pairs it with ([`BlockFormat::VEC_DOT_TYPE`]).
//! The dot products work as ggml's do: integer sums inside a block, one float multiply-add per
//! block, so SIMD kernels in `cpu::dot` can reproduce them.
//!
//! One file per family: [`float`] (F32, F16, BF16), [`q4`] (Q4_0, Q4_1), [`q5`] (Q5_0, Q5_1),
//! [`q8`] (Q8_0, Q8_1), [`k2_3`] (Q2_K, Q3_K), [`k4_5`] (Q4_K, Q5_K), [`k6`] (Q6_K), [`k8`] (Q8_K),
//! [`mxfp4`] (MXFP4), [`iq4`] (IQ4_NL, IQ4_XS).
//! Dependencies point one way: these files know nothing about `cpu::dot`'s SIMD kernels;
//! `cpu::dot` imports them. (The quantizers' scale searches, `kutil` and `lanes`, have AVX2
//! builds of their own that do the scalar operations in the same order.)
//!
//! Which formats exist is written once, in the table [`FORMATS`] (see [`formats`]): one entry per
//! format, from which [`reference()`], [`DType::is_supported`], the CPU's scalar dispatch table,
//! the GPU's decoder list and the tests' and benchmarks' format lists are derived.
//!
//! All functions take plain `&[u8]` that may sit at any alignment. They never panic on
//! correctly sized input; sizes are checked with `debug_assert!` only, and on wrong sizes in
//! release builds they process the whole blocks that fit and leave the rest untouched.
//!
//! Activation-only formats: Q8_1 and Q8_K are paired with themselves (`vec_dot` of two Q8_1 or
//! two Q8_K rows), which ggml does not define but which makes them testable through `vec_dot`.

// Format types are named as ggml names them (`Q4_K`, not `Q4K`).
#![allow(non_camel_case_types)]
// Kernels index several arrays with one block-relative index, as ggml's layouts are described.
#![allow(clippy::needless_range_loop)]

pub mod float;
pub mod formats;
pub mod iq4;
pub mod k2_3;
pub mod k4_5;
pub mod k6;
pub mod k8;
mod kutil;
mod lanes;
pub mod mxfp4;
pub mod q4;
pub mod q5;
pub mod q8;
#[cfg(test)]
pub(crate) mod tests;

use crate::DType;

pub use float::{BF16, F16, F32};
pub use formats::{FORMATS, FormatInfo, activation_formats, format, weight_formats};
pub use iq4::{IQ4_NL, IQ4_XS};
pub use k2_3::{Q2_K, Q3_K};
pub use k4_5::{Q4_K, Q5_K};
pub use k6::Q6_K;
pub use k8::Q8_K;
pub use mxfp4::MXFP4;
pub use q4::{Q4_0, Q4_1};
pub use q5::{Q5_0, Q5_1};
pub use q8::{Q8_0, Q8_1};

/// Elements in a K-quant super-block (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// A block format: layout plus scalar reference kernels.
///
/// Row lengths are in elements and must be a multiple of `DTYPE.block_elems()`.
pub trait BlockFormat {
    /// The ggml type this implements.
    const DTYPE: DType;
    /// The activation format ggml pairs it with in `vec_dot`.
    const VEC_DOT_TYPE: DType;
    /// Decode `dst.len()` elements from `src` (exactly `DTYPE.row_bytes(dst.len())` bytes).
    fn dequantize_row(src: &[u8], dst: &mut [f32]);
    /// Encode `src` into `dst` (exactly `DTYPE.row_bytes(src.len())` bytes), rounding as ggml's
    /// reference quantizer does.
    fn quantize_row(src: &[f32], dst: &mut [u8]);
    /// Encode one row `src` into `dst` (exactly `DTYPE.row_bytes(src.len())` bytes) with an
    /// importance matrix: `weights[i]` (non-negative, `weights.len() == src.len()`) is how much
    /// column `i`'s error counts. Rounds exactly as ggml's `quantize_<type>(.., quant_weights)`
    /// (`quantize_row_*_impl`), whose statistics may span the whole row, so a row must be passed
    /// whole. The default ignores the weights and calls [`BlockFormat::quantize_row`], as ggml
    /// does for the formats without an importance-weighted quantizer (F32, F16, BF16, Q8_0, Q8_1,
    /// Q8_K).
    fn quantize_row_weighted(src: &[f32], dst: &mut [u8], weights: &[f32]) {
        debug_assert_eq!(weights.len(), src.len());
        let _ = weights;
        Self::quantize_row(src, dst);
    }
    /// Dot product of `n` elements: `w` in `DTYPE`, `a` in `VEC_DOT_TYPE`.
    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32;
}

/// A format's kernels as plain function pointers, for run-time dispatch by `DType`.
#[derive(Clone, Copy, Debug)]
pub struct QuantOps {
    /// The format.
    pub dtype: DType,
    /// The activation format its `vec_dot` expects.
    pub vec_dot_type: DType,
    /// See [`BlockFormat::dequantize_row`].
    pub dequantize_row: fn(&[u8], &mut [f32]),
    /// See [`BlockFormat::quantize_row`].
    pub quantize_row: fn(&[f32], &mut [u8]),
    /// See [`BlockFormat::quantize_row_weighted`].
    pub quantize_row_weighted: fn(src: &[f32], dst: &mut [u8], weights: &[f32]),
    /// See [`BlockFormat::vec_dot`].
    pub vec_dot: fn(usize, &[u8], &[u8]) -> f32,
}

impl QuantOps {
    /// The table entry for format `T`.
    pub const fn of<T: BlockFormat>() -> QuantOps {
        QuantOps {
            dtype: T::DTYPE,
            vec_dot_type: T::VEC_DOT_TYPE,
            dequantize_row: T::dequantize_row,
            quantize_row: T::quantize_row,
            quantize_row_weighted: T::quantize_row_weighted,
            vec_dot: T::vec_dot,
        }
    }
}

/// The scalar reference kernels for `dtype`, or `None` for types Tessera cannot compute with.
pub fn reference(dtype: DType) -> Option<&'static QuantOps> {
    format(dtype).map(|f| &f.ops)
}

/// Read the little-endian f16 at `b[off..off + 2]` as f32.
#[inline(always)]
pub fn f16_at(b: &[u8], off: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Write `v` rounded to f16 (round to nearest even, as ggml's `GGML_FP32_TO_FP16`) at
/// `b[off..off + 2]`.
#[inline(always)]
pub fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
}

/// Round `v` through f16 and back, as a block header stores and reloads it.
#[inline(always)]
pub fn f16_round(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// ggml's `nearest_int`: round to nearest, ties to even, via the 1.5·2²³ trick. Exact for
/// |v| < 2²²; other inputs (never produced by the quantizers on finite data) give an unspecified
/// value but never panic.
#[inline(always)]
pub fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0f32).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}
