//! Dot-product kernels of every weight format against its activation format, chosen at run
//! time. (Scalar stand-in until the SIMD kernels land.)

use crate::{DType, quant};

/// Instruction sets the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable scalar code.
    Scalar,
    /// x86-64 AVX2 + FMA.
    Avx2,
    /// AArch64 NEON.
    Neon,
}

/// The kernels for one weight format.
#[derive(Debug)]
pub struct DotKernel {
    /// Weight format.
    pub dtype: DType,
    /// Activation format.
    pub vec_dot_type: DType,
    /// Instruction set.
    pub isa: Isa,
    /// Activation quantizer.
    pub quantize_row: fn(&[f32], &mut [u8]),
    /// Dot product of `n` elements.
    pub vec_dot: fn(usize, &[u8], &[u8]) -> f32,
}

/// The best kernel for `dtype` on this CPU.
pub fn kernel(dtype: DType) -> Option<&'static DotKernel> {
    use std::sync::OnceLock;
    static TABLE: OnceLock<Vec<DotKernel>> = OnceLock::new();
    let t = TABLE.get_or_init(|| {
        DType::ALL
            .iter()
            .filter_map(|&d| {
                let r = quant::reference(d)?;
                let a = quant::reference(r.vec_dot_type)?;
                Some(DotKernel {
                    dtype: d,
                    vec_dot_type: r.vec_dot_type,
                    isa: Isa::Scalar,
                    quantize_row: a.quantize_row,
                    vec_dot: r.vec_dot,
                })
            })
            .collect()
    });
    t.iter().find(|k| k.dtype == dtype)
}
