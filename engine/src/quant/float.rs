//! Plain float formats: F32, F16 (IEEE half) and BF16, each paired with itself in `vec_dot`.
//!
//! Dot products multiply in f32 (exact for F16 and BF16 operands) and accumulate in f64, as
//! ggml's scalar `ggml_vec_dot_f32/f16/bf16` do.

use super::BlockFormat;
use crate::DType;

/// 32-bit IEEE float, 4 little-endian bytes per element.
pub struct F32;

/// 16-bit IEEE float, 2 little-endian bytes per element.
pub struct F16;

/// bfloat16 (the top 16 bits of an f32), 2 little-endian bytes per element.
pub struct BF16;

impl BlockFormat for F32 {
    const DTYPE: DType = DType::F32;
    const VEC_DOT_TYPE: DType = DType::F32;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() * 4);
        for (d, s) in dst.iter_mut().zip(src.as_chunks::<4>().0) {
            *d = f32::from_le_bytes(*s);
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() * 4);
        for (d, s) in dst.as_chunks_mut::<4>().0.iter_mut().zip(src) {
            *d = s.to_le_bytes();
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        debug_assert!(w.len() >= n * 4 && a.len() >= n * 4);
        let w = w.as_chunks::<4>().0.iter().map(|b| f32::from_le_bytes(*b));
        let a = a.as_chunks::<4>().0.iter().map(|b| f32::from_le_bytes(*b));
        w.zip(a).take(n).map(|(x, y)| (x * y) as f64).sum::<f64>() as f32
    }
}

/// Decode one f16 from its two little-endian bytes.
#[inline(always)]
pub fn f16_to_f32(b: [u8; 2]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

/// [`F16`]'s `dequantize_row` eight values at a time with F16C's `vcvtph2ps` (exact, as the
/// one-value conversion is; `half` uses the same instruction per value), the rest one by one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
fn f16_row_f16c(src: &[u8], dst: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm256_cvtph_ps, _mm256_storeu_ps};
    let s8 = src.as_chunks::<16>().0;
    let d8 = dst.as_chunks_mut::<8>().0;
    let done = 8 * s8.len().min(d8.len());
    for (s, d) in s8.iter().zip(d8) {
        // SAFETY: `s` is 16 readable bytes; the unaligned load reads exactly those.
        let h = unsafe { _mm_loadu_si128(s.as_ptr().cast::<__m128i>()) };
        // SAFETY: `d` is 8 writable floats; the unaligned store writes exactly those.
        unsafe { _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(h)) };
    }
    for (d, s) in dst[done..]
        .iter_mut()
        .zip(src[2 * done..].as_chunks::<2>().0)
    {
        *d = f16_to_f32(*s);
    }
}

impl BlockFormat for F16 {
    const DTYPE: DType = DType::F16;
    const VEC_DOT_TYPE: DType = DType::F16;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() * 2);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
        {
            // SAFETY: the CPU supports F16C and AVX, checked just above.
            unsafe { f16_row_f16c(src, dst) };
            return;
        }
        for (d, s) in dst.iter_mut().zip(src.as_chunks::<2>().0) {
            *d = f16_to_f32(*s);
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() * 2);
        for (d, s) in dst.as_chunks_mut::<2>().0.iter_mut().zip(src) {
            *d = half::f16::from_f32(*s).to_bits().to_le_bytes();
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        debug_assert!(w.len() >= n * 2 && a.len() >= n * 2);
        let w = w.as_chunks::<2>().0.iter().map(|b| f16_to_f32(*b));
        let a = a.as_chunks::<2>().0.iter().map(|b| f16_to_f32(*b));
        w.zip(a).take(n).map(|(x, y)| (x * y) as f64).sum::<f64>() as f32
    }
}

/// Decode one bf16 from its two little-endian bytes.
#[inline(always)]
pub fn bf16_to_f32(b: [u8; 2]) -> f32 {
    f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
}

/// Encode `v` as bf16 exactly as ggml's `ggml_compute_fp32_to_bf16`: NaNs become quiet NaNs,
/// everything else rounds to nearest even.
#[inline(always)]
pub fn f32_to_bf16(v: f32) -> u16 {
    let u = v.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u as u64 + 0x7fff + ((u as u64 >> 16) & 1)) >> 16) as u16
}

impl BlockFormat for BF16 {
    const DTYPE: DType = DType::BF16;
    const VEC_DOT_TYPE: DType = DType::BF16;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() * 2);
        for (d, s) in dst.iter_mut().zip(src.as_chunks::<2>().0) {
            *d = bf16_to_f32(*s);
        }
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() * 2);
        for (d, s) in dst.as_chunks_mut::<2>().0.iter_mut().zip(src) {
            *d = f32_to_bf16(*s).to_le_bytes();
        }
    }

    fn vec_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        debug_assert!(w.len() >= n * 2 && a.len() >= n * 2);
        let w = w.as_chunks::<2>().0.iter().map(|b| bf16_to_f32(*b));
        let a = a.as_chunks::<2>().0.iter().map(|b| bf16_to_f32(*b));
        w.zip(a).take(n).map(|(x, y)| (x * y) as f64).sum::<f64>() as f32
    }
}
