//! The ggml tensor element types as GGUF stores them: type ids, names, and block geometry.
//!
//! Every type GGUF files can contain is listed here, including the ones Tessera cannot compute
//! with, so the reader can validate byte sizes of any file and `tessera info` can describe it.
//! This is the one place block geometry is written down; which types Tessera computes with,
//! and with which kernels, is the table of block formats in [`crate::quant::FORMATS`].

use std::fmt;

/// A ggml tensor type, with the numeric id GGUF uses on disk.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum DType {
    /// 32-bit IEEE float.
    F32 = 0,
    /// 16-bit IEEE float.
    F16 = 1,
    /// 32 weights, one f16 scale, 4-bit values offset by 8.
    Q4_0 = 2,
    /// 32 weights, f16 scale and minimum, 4-bit values.
    Q4_1 = 3,
    /// 32 weights, f16 scale, 5-bit values offset by 16.
    Q5_0 = 6,
    /// 32 weights, f16 scale and minimum, 5-bit values.
    Q5_1 = 7,
    /// 32 weights, f16 scale, 8-bit values.
    Q8_0 = 8,
    /// 32 weights, f16 scale and f16 scaled sum, 8-bit values (activation format).
    Q8_1 = 9,
    /// 256-weight super-block, 2-bit values.
    Q2_K = 10,
    /// 256-weight super-block, 3-bit values.
    Q3_K = 11,
    /// 256-weight super-block, 4-bit values with 6-bit sub-block scales and minimums.
    Q4_K = 12,
    /// 256-weight super-block, 5-bit values.
    Q5_K = 13,
    /// 256-weight super-block, 6-bit values.
    Q6_K = 14,
    /// 256-weight super-block, f32 scale, 8-bit values and block sums (activation format).
    Q8_K = 15,
    /// Importance-matrix 2-bit format (storage only).
    IQ2_XXS = 16,
    /// Importance-matrix 2-bit format (storage only).
    IQ2_XS = 17,
    /// Importance-matrix 3-bit format (storage only).
    IQ3_XXS = 18,
    /// Importance-matrix 1-bit format (storage only).
    IQ1_S = 19,
    /// Non-linear 4-bit format (storage only).
    IQ4_NL = 20,
    /// Importance-matrix 3-bit format (storage only).
    IQ3_S = 21,
    /// Importance-matrix 2-bit format (storage only).
    IQ2_S = 22,
    /// Non-linear 4-bit super-block format (storage only).
    IQ4_XS = 23,
    /// 8-bit integer.
    I8 = 24,
    /// 16-bit integer.
    I16 = 25,
    /// 32-bit integer.
    I32 = 26,
    /// 64-bit integer.
    I64 = 27,
    /// 64-bit float.
    F64 = 28,
    /// Importance-matrix 1-bit format (storage only).
    IQ1_M = 29,
    /// bfloat16.
    BF16 = 30,
    /// Ternary format (storage only).
    TQ1_0 = 34,
    /// Ternary format (storage only).
    TQ2_0 = 35,
    /// Microscaling 4-bit float format: 32 E2M1 values and one E8M0 (power-of-two) scale.
    MXFP4 = 39,
}

impl DType {
    /// Every known type, in id order.
    pub const ALL: [DType; 32] = [
        DType::F32,
        DType::F16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q8_1,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::Q8_K,
        DType::IQ2_XXS,
        DType::IQ2_XS,
        DType::IQ3_XXS,
        DType::IQ1_S,
        DType::IQ4_NL,
        DType::IQ3_S,
        DType::IQ2_S,
        DType::IQ4_XS,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::F64,
        DType::IQ1_M,
        DType::BF16,
        DType::TQ1_0,
        DType::TQ2_0,
        DType::MXFP4,
    ];

    /// The type with GGUF id `id`, or `None` for an unknown id.
    pub fn from_id(id: u32) -> Option<DType> {
        DType::ALL.iter().copied().find(|t| *t as u32 == id)
    }

    /// The numeric id stored in GGUF files.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The name as ggml spells it (`Q4_1`, `F32`, `BF16`, ...).
    pub fn name(self) -> &'static str {
        use DType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
            Q8_K => "Q8_K",
            IQ2_XXS => "IQ2_XXS",
            IQ2_XS => "IQ2_XS",
            IQ3_XXS => "IQ3_XXS",
            IQ1_S => "IQ1_S",
            IQ4_NL => "IQ4_NL",
            IQ3_S => "IQ3_S",
            IQ2_S => "IQ2_S",
            IQ4_XS => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            IQ1_M => "IQ1_M",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            MXFP4 => "MXFP4",
        }
    }

    /// Number of elements in one block (1 for plain scalar types).
    pub const fn block_elems(self) -> usize {
        use DType::*;
        match self {
            F32 | F16 | BF16 | I8 | I16 | I32 | I64 | F64 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | IQ4_NL | MXFP4 => 32,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K | IQ2_XXS | IQ2_XS | IQ3_XXS | IQ1_S
            | IQ3_S | IQ2_S | IQ4_XS | IQ1_M | TQ1_0 | TQ2_0 => 256,
        }
    }

    /// Whether values are stored in quantized blocks (ggml's `is_quantized`), as opposed to
    /// plain floats and integers.
    pub const fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Number of bytes in one block.
    pub const fn block_bytes(self) -> usize {
        use DType::*;
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            I8 => 1,
            I16 => 2,
            I32 => 4,
            I64 | F64 => 8,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q8_1 => 36,
            Q2_K => 84,
            Q3_K => 110,
            Q4_K => 144,
            Q5_K => 176,
            Q6_K => 210,
            Q8_K => 292,
            IQ2_XXS => 66,
            IQ2_XS => 74,
            IQ3_XXS => 98,
            IQ1_S => 50,
            IQ4_NL => 18,
            IQ3_S => 110,
            IQ2_S => 82,
            IQ4_XS => 136,
            IQ1_M => 56,
            TQ1_0 => 54,
            TQ2_0 => 66,
            MXFP4 => 17,
        }
    }

    /// Bytes needed for a row of `n` elements, or `None` when `n` is not a whole number of
    /// blocks or the size overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let be = self.block_elems() as u64;
        if !n.is_multiple_of(be) {
            return None;
        }
        (n / be).checked_mul(self.block_bytes() as u64)
    }

    /// Whether Tessera has kernels (dequantize, dot products) for this type: whether it has an
    /// entry in the table of block formats, [`crate::quant::FORMATS`].
    pub fn is_supported(self) -> bool {
        crate::quant::format(self).is_some()
    }

    /// Parse a ggml type name (case-insensitive), e.g. `q4_k` or `F16`.
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for t in DType::ALL {
            assert_eq!(DType::from_id(t.id()), Some(t));
            assert_eq!(DType::from_name(t.name()), Some(t));
        }
        assert_eq!(DType::from_id(4), None);
        assert_eq!(DType::from_id(1000), None);
    }

    #[test]
    fn row_bytes_requires_whole_blocks() {
        assert_eq!(DType::Q4_K.row_bytes(512), Some(288));
        assert_eq!(DType::Q4_K.row_bytes(100), None);
        assert_eq!(DType::F32.row_bytes(3), Some(12));
        assert_eq!(DType::Q8_0.row_bytes(u64::MAX - 31), None);
    }
}
