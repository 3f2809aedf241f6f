//! The 32-element block formats as the AVX2 tiles read them ([`Block`]: Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0 and IQ4_NL); their products live in `gemm_small.rs`.

use super::legacy::{bits_to_bytes, nibbles};
use super::{load, lut16};
use crate::quant::iq4::{IQ4_NL_BYTES, KVALUES as IQ4_VALUES};
use crate::quant::q4::{Q4_0_BYTES, Q4_1_BYTES};
use crate::quant::q5::{Q5_0_BYTES, Q5_1_BYTES};
use crate::quant::q8::{Q8_0_BYTES, Q8_1_BYTES};
use std::arch::x86_64::*;

/// A 32-element weight format as the tile kernel reads it. Every block starts with its f16
/// scale `d` (then, with `HAS_MIN`, its f16 min `m`); activation blocks start with f16 `d`
/// (then, for Q8_1, f16 `s = d·Σq`).
pub(super) trait Block {
    /// Bytes per weight block.
    const BYTES: usize;
    /// Bytes per activation block (Q8_0 or Q8_1).
    const ACT_BYTES: usize;
    /// Offset of the quants in an activation block.
    const ACT_QS: usize;
    /// Value = d·q + m (Q4_1); otherwise d·q.
    const HAS_MIN: bool;
    /// The block's 32 quants in element order.
    ///
    /// # Safety
    /// `p..p + BYTES` readable; AVX2 present.
    unsafe fn quants(p: *const u8) -> __m256i;
}

pub(super) struct Q4_0;
pub(super) struct Q4_1;
pub(super) struct Q5_0;
pub(super) struct Q5_1;
pub(super) struct Q8_0;
#[allow(non_camel_case_types)]
pub(super) struct IQ4_NL;

impl Block for Q4_0 {
    const BYTES: usize = Q4_0_BYTES;
    const ACT_BYTES: usize = Q8_0_BYTES;
    const ACT_QS: usize = 2;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        // SAFETY: AVX2 is present and `p..p + BYTES` readable (the trait's precondition); the
        // nibbles are bytes `2..18` of the 18-byte block.
        unsafe { _mm256_sub_epi8(nibbles(p.add(2)), _mm256_set1_epi8(8)) }
    }
}

impl Block for Q4_1 {
    const BYTES: usize = Q4_1_BYTES;
    const ACT_BYTES: usize = Q8_1_BYTES;
    const ACT_QS: usize = 4;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        // SAFETY: as for Q4_0; the nibbles are bytes `4..20` of the 20-byte block.
        unsafe { nibbles(p.add(4)) }
    }
}

impl Block for Q5_0 {
    const BYTES: usize = Q5_0_BYTES;
    const ACT_BYTES: usize = Q8_0_BYTES;
    const ACT_QS: usize = 2;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        // q − 16 = nibble when bit 4 is set, nibble | 0xF0 (as i8) when not.
        // SAFETY: as for Q4_0; the nibbles are bytes `6..22` and the high bits `2..6` of the
        // 22-byte block.
        unsafe {
            _mm256_or_si256(
                nibbles(p.add(6)),
                _mm256_andnot_si256(bits_to_bytes(p.add(2)), _mm256_set1_epi8(0xf0u8 as i8)),
            )
        }
    }
}

impl Block for Q5_1 {
    const BYTES: usize = Q5_1_BYTES;
    const ACT_BYTES: usize = Q8_1_BYTES;
    const ACT_QS: usize = 4;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        // Unsigned 0..=31: the nibble, plus 16 where bit 4 is set.
        // SAFETY: as for Q4_0; the nibbles are bytes `8..24` and the high bits `4..8` of the
        // 24-byte block.
        unsafe {
            _mm256_or_si256(
                nibbles(p.add(8)),
                _mm256_and_si256(bits_to_bytes(p.add(4)), _mm256_set1_epi8(0x10)),
            )
        }
    }
}

impl Block for Q8_0 {
    const BYTES: usize = Q8_0_BYTES;
    const ACT_BYTES: usize = Q8_0_BYTES;
    const ACT_QS: usize = 2;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        // SAFETY: as for Q4_0; the quants are bytes `2..34` of the 34-byte block.
        unsafe { load(p.add(2)) }
    }
}

impl Block for IQ4_NL {
    const BYTES: usize = IQ4_NL_BYTES;
    const ACT_BYTES: usize = Q8_0_BYTES;
    const ACT_QS: usize = 2;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        // The indices looked up in the table of values (16 bytes: one `pshufb` lane).
        // SAFETY: as for Q4_0 (the nibbles are bytes `2..18` of the 18-byte block); the table
        // is 16 bytes.
        unsafe { _mm256_shuffle_epi8(lut16(&IQ4_VALUES), nibbles(p.add(2))) }
    }
}

/// The u32 at `p` (unaligned).
///
/// # Safety
/// `p..p + 4` readable.
#[inline(always)]
pub(super) unsafe fn u32_at(p: *const u8) -> i32 {
    // SAFETY: `p..p + 4` is readable (precondition).
    unsafe { (p as *const i32).read_unaligned() }
}
