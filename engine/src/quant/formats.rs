//! The table of block formats: one entry per format Tessera computes with, and the lookups
//! derived from it.
//!
//! An entry names the format's type (its [`BlockFormat`], whose `DTYPE` carries the block
//! geometry of [`DType::block_elems`] and [`DType::block_bytes`]), the activation format its
//! `vec_dot` pairs it with, whether models may store weights in it, its GPU decoder and, for the
//! activation formats, the GPU function that rounds f32 activations as its quantizer does.
//! Everything else that asks "which formats exist" reads this table: [`DType::is_supported`], the
//! scalar kernels of [`super::reference`], the CPU's scalar dispatch table in `cpu::dot`, the
//! GPU's `decoder()` and `activation_rounding()`, and the format lists of the tests and
//! benchmarks ([`weight_formats`], [`activation_formats`]). Adding a format is one entry here plus
//! its kernels.

use super::{
    BF16, BlockFormat, F16, F32, IQ4_NL, IQ4_XS, MXFP4, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1,
    Q5_K, Q6_K, Q8_0, Q8_1, Q8_K, QuantOps,
};
use crate::DType;

/// Everything Tessera knows about one block format it computes with.
#[derive(Clone, Copy, Debug)]
pub struct FormatInfo {
    /// The format.
    pub dtype: DType,
    /// Its scalar reference kernels (`ops.vec_dot_type` is the activation format).
    pub ops: QuantOps,
    /// The reference quantizer of the activation format (`f32 → ops.vec_dot_type`).
    pub quantize_activation: fn(&[f32], &mut [u8]),
    /// Whether models may store weights in it; `false` for the activation-only formats (Q8_1,
    /// Q8_K), which only `vec_dot`'s second operand uses.
    pub is_weight: bool,
    /// The WGSL function decoding one element in the GPU's `quant.wgsl` (its block decoder is
    /// the same name with `blk_` for `dq_`), or `None` where the GPU backend cannot read it.
    pub gpu_decoder: Option<&'static str>,
    /// For an activation format: the WGSL function of the GPU's `act_round.wgsl` that rounds one
    /// block of f32 activations exactly as this format's quantizer followed by its dequantizer
    /// would (the values the CPU's dot products see), or `None` where the GPU keeps f32 (F32,
    /// and formats that are no `vec_dot_type`).
    pub gpu_rounding: Option<&'static str>,
}

impl FormatInfo {
    /// The entry of format `W`, whose `vec_dot` takes activations in format `A` (checked at
    /// compile time against `W::VEC_DOT_TYPE`).
    const fn of<W: BlockFormat, A: BlockFormat>(
        is_weight: bool,
        gpu_decoder: Option<&'static str>,
    ) -> FormatInfo {
        assert!(
            W::VEC_DOT_TYPE as u32 == A::DTYPE as u32,
            "the activation format must be the one `vec_dot` expects"
        );
        FormatInfo {
            dtype: W::DTYPE,
            ops: QuantOps::of::<W>(),
            quantize_activation: A::quantize_row,
            is_weight,
            gpu_decoder,
            gpu_rounding: None,
        }
    }

    /// The entry with `act_round.wgsl`'s function `name` as its GPU rounding.
    const fn gpu_rounded_by(self, name: &'static str) -> FormatInfo {
        FormatInfo {
            gpu_rounding: Some(name),
            ..self
        }
    }

    /// The activation format `vec_dot` expects.
    pub fn vec_dot_type(&self) -> DType {
        self.ops.vec_dot_type
    }
}

/// A format models may store weights in.
const WEIGHT: bool = true;
/// A format only activations are quantized to.
const ACTIVATION_ONLY: bool = false;

/// Every format Tessera computes with, in the order tests and tables list them.
pub const FORMATS: &[FormatInfo] = &[
    FormatInfo::of::<F32, F32>(WEIGHT, Some("dq_f32")),
    FormatInfo::of::<F16, F16>(WEIGHT, Some("dq_f16")).gpu_rounded_by("act_f16"),
    FormatInfo::of::<BF16, BF16>(WEIGHT, Some("dq_bf16")).gpu_rounded_by("act_bf16"),
    FormatInfo::of::<Q4_0, Q8_0>(WEIGHT, Some("dq_q4_0")),
    FormatInfo::of::<Q4_1, Q8_1>(WEIGHT, Some("dq_q4_1")),
    FormatInfo::of::<Q5_0, Q8_0>(WEIGHT, Some("dq_q5_0")),
    FormatInfo::of::<Q5_1, Q8_1>(WEIGHT, Some("dq_q5_1")),
    FormatInfo::of::<Q8_0, Q8_0>(WEIGHT, Some("dq_q8_0")).gpu_rounded_by("act_q8_0"),
    // Q8_1's values are Q8_0's (its extra `s` only serves the `_1` formats' offset term).
    FormatInfo::of::<Q8_1, Q8_1>(ACTIVATION_ONLY, None).gpu_rounded_by("act_q8_0"),
    FormatInfo::of::<Q2_K, Q8_K>(WEIGHT, Some("dq_q2_k")),
    FormatInfo::of::<Q3_K, Q8_K>(WEIGHT, Some("dq_q3_k")),
    FormatInfo::of::<Q4_K, Q8_K>(WEIGHT, Some("dq_q4_k")),
    FormatInfo::of::<Q5_K, Q8_K>(WEIGHT, Some("dq_q5_k")),
    FormatInfo::of::<Q6_K, Q8_K>(WEIGHT, Some("dq_q6_k")),
    FormatInfo::of::<Q8_K, Q8_K>(ACTIVATION_ONLY, None).gpu_rounded_by("act_q8_k"),
    FormatInfo::of::<MXFP4, Q8_0>(WEIGHT, Some("dq_mxfp4")),
    FormatInfo::of::<IQ4_NL, Q8_0>(WEIGHT, Some("dq_iq4_nl")),
    FormatInfo::of::<IQ4_XS, Q8_K>(WEIGHT, Some("dq_iq4_xs")),
];

/// The table entry of `dtype`, or `None` for types Tessera cannot compute with.
pub fn format(dtype: DType) -> Option<&'static FormatInfo> {
    FORMATS.iter().find(|f| f.dtype == dtype)
}

/// Every format models may store weights in (everything but the activation-only formats), in
/// table order.
pub fn weight_formats() -> impl Iterator<Item = DType> {
    FORMATS.iter().filter(|f| f.is_weight).map(|f| f.dtype)
}

/// Every activation format (the `vec_dot_type` of some format), once each, in table order.
pub fn activation_formats() -> impl Iterator<Item = DType> {
    FORMATS
        .iter()
        .map(|f| f.dtype)
        .filter(|t| FORMATS.iter().any(|f| f.vec_dot_type() == *t))
}

#[cfg(test)]
mod tests {
    use super::super::QK_K;
    use super::*;

    #[test]
    fn one_entry_per_format_and_activation_formats_pair_with_themselves() {
        for (i, f) in FORMATS.iter().enumerate() {
            assert!(
                FORMATS[..i].iter().all(|g| g.dtype != f.dtype),
                "{} twice",
                f.dtype
            );
            assert_eq!(f.ops.dtype, f.dtype);
            let a = format(f.vec_dot_type()).expect("the activation format has an entry");
            assert_eq!(a.vec_dot_type(), a.dtype, "{}", a.dtype);
            let x: Vec<f32> = (0..QK_K).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let bytes = f.vec_dot_type().row_bytes(QK_K as u64).unwrap() as usize;
            let (mut got, mut want) = (vec![0u8; bytes], vec![1u8; bytes]);
            (f.quantize_activation)(&x, &mut got);
            (a.ops.quantize_row)(&x, &mut want);
            assert_eq!(got, want, "{}: activation quantizer", f.dtype);
        }
        for t in activation_formats() {
            assert_eq!(format(t).unwrap().vec_dot_type(), t);
        }
        assert!(weight_formats().all(|t| format(t).unwrap().is_weight));
    }

    /// Every activation format of a weight the GPU decodes has a GPU rounding, except F32
    /// (nothing to round); formats that are no activation format have none.
    #[test]
    fn gpu_roundings_cover_the_activation_formats_of_gpu_weights() {
        for f in FORMATS {
            if f.gpu_decoder.is_some() {
                let a = format(f.vec_dot_type()).unwrap();
                assert_eq!(
                    a.gpu_rounding.is_some(),
                    a.dtype != DType::F32,
                    "{}: activations in {}",
                    f.dtype,
                    a.dtype
                );
            }
            if f.gpu_rounding.is_some() {
                assert!(activation_formats().any(|t| t == f.dtype), "{}", f.dtype);
            }
        }
    }

    #[test]
    fn gpu_decoders_are_named_after_their_format() {
        for f in FORMATS {
            if let Some(name) = f.gpu_decoder {
                assert_eq!(name, format!("dq_{}", f.dtype.name().to_lowercase()));
                assert!(
                    f.is_weight,
                    "{}: a GPU decoder for activations only",
                    f.dtype
                );
            }
        }
    }
}
