//! NEON kernels (aarch64): Q4_0, Q8_0, Q4_K, Q6_K, MXFP4 and F32 dot products.
//!
//! Plain Advanced SIMD (`vmull_s8` + pairwise adds), no `dotprod` extension, so every aarch64 CPU
//! runs them. Integer sums per block are exact, and each block's float multiply-add is done in the
//! same order as the scalar reference. Activation quantizers are the scalar reference ones.
//! Compile-checked on x86_64 hosts with `--target aarch64-unknown-linux-gnu`; the tests in
//! `tests.rs` compare them with the scalar kernels when run on aarch64.

use super::{DotKernel, Isa};
use crate::DType;
use crate::quant::k4_5::{Q4_K_BYTES, unpack_scales_mins_k4};
use crate::quant::k6::Q6_K_BYTES;
use crate::quant::k8::{Q8_K_BYTES, q8k_bsum, q8k_d};
use crate::quant::mxfp4::{KVALUES, MXFP4_BYTES, e8m0_to_f32_half};
use crate::quant::q4::Q4_0_BYTES;
use crate::quant::q8::{Q8_0_BYTES, QK};
use crate::quant::{BlockFormat, F32, Q8_0, Q8_K, QK_K, f16_at};
use std::arch::aarch64::*;

/// Kernels with a NEON `vec_dot`; other types fall back to the scalar table.
pub(super) static KERNELS: [DotKernel; 6] = [
    k(DType::F32, DType::F32, F32::quantize_row, vec_dot_f32),
    k(DType::Q4_0, DType::Q8_0, Q8_0::quantize_row, vec_dot_q4_0),
    k(DType::Q8_0, DType::Q8_0, Q8_0::quantize_row, vec_dot_q8_0),
    k(DType::Q4_K, DType::Q8_K, Q8_K::quantize_row, vec_dot_q4_k),
    k(DType::Q6_K, DType::Q8_K, Q8_K::quantize_row, vec_dot_q6_k),
    k(DType::MXFP4, DType::Q8_0, Q8_0::quantize_row, vec_dot_mxfp4),
];

const fn k(
    dtype: DType,
    vec_dot_type: DType,
    quantize_row: fn(&[f32], &mut [u8]),
    vec_dot: fn(usize, &[u8], &[u8]) -> f32,
) -> DotKernel {
    DotKernel {
        dtype,
        vec_dot_type,
        isa: Isa::Neon,
        quantize_row,
        vec_dot,
        tile: None,
    }
}

/// Σ a·b over 16 signed bytes, exact, as four i32 lanes.
#[inline]
#[target_feature(enable = "neon")]
fn dot16(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    vaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi))
}

/// Σ a·b over 32 signed bytes at `a` and `b`.
///
/// # Safety
/// 32 bytes readable at each pointer.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot32(a: *const u8, b: *const u8) -> i32 {
    // SAFETY: 32 bytes are readable at each pointer (precondition), 16 per load.
    unsafe {
        let (a, b) = (a as *const i8, b as *const i8);
        let s = vaddq_s32(
            dot16(vld1q_s8(a), vld1q_s8(b)),
            dot16(vld1q_s8(a.add(16)), vld1q_s8(b.add(16))),
        );
        vaddvq_s32(s)
    }
}

fn vec_dot_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = (n / QK).min(w.len() / Q8_0_BYTES).min(a.len() / Q8_0_BYTES);
    let mut sum = 0.0f32;
    for i in 0..nb {
        let (x, y) = (&w[i * Q8_0_BYTES..], &a[i * Q8_0_BYTES..]);
        // SAFETY: NEON is present (table handed out after detection); 34-byte blocks in bounds.
        let sumi = unsafe { dot32(x.as_ptr().add(2), y.as_ptr().add(2)) };
        sum += (f16_at(x, 0) * f16_at(y, 0)) * sumi as f32;
    }
    sum
}

fn vec_dot_q4_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = (n / QK).min(w.len() / Q4_0_BYTES).min(a.len() / Q8_0_BYTES);
    let mut sum = 0.0f32;
    for i in 0..nb {
        let (x, y) = (&w[i * Q4_0_BYTES..], &a[i * Q8_0_BYTES..]);
        // SAFETY: as in `vec_dot_q8_0`.
        let sumi = unsafe { q4_0_block(x.as_ptr().add(2), y.as_ptr().add(2)) };
        sum += (f16_at(x, 0) * f16_at(y, 0)) * sumi as f32;
    }
    sum
}

/// Σ (q − 8)·y of one Q4_0 block's 16 packed bytes at `q` and 32 i8 at `y`.
///
/// # Safety
/// 16 bytes readable at `q`, 32 at `y`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q4_0_block(q: *const u8, y: *const u8) -> i32 {
    // SAFETY: 16 bytes are readable at `q` and 32 at `y` (precondition), 16 per load.
    unsafe {
        let b = vld1q_u8(q);
        let eight = vdupq_n_s8(8);
        let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(0x0f))), eight);
        let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(b)), eight);
        let y = y as *const i8;
        vaddvq_s32(vaddq_s32(
            dot16(lo, vld1q_s8(y)),
            dot16(hi, vld1q_s8(y.add(16))),
        ))
    }
}

fn vec_dot_mxfp4(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = (n / QK)
        .min(w.len() / MXFP4_BYTES)
        .min(a.len() / Q8_0_BYTES);
    let mut sum = 0.0f32;
    for i in 0..nb {
        let (x, y) = (&w[i * MXFP4_BYTES..], &a[i * Q8_0_BYTES..]);
        // SAFETY: as in `vec_dot_q8_0`; a 17-byte MXFP4 block's nibbles are bytes `1..17`.
        let sumi = unsafe { mxfp4_block(x.as_ptr().add(1), y.as_ptr().add(2)) };
        sum += (f16_at(y, 0) * e8m0_to_f32_half(x[0])) * sumi as f32;
    }
    sum
}

/// Σ KVALUES[q]·y of one MXFP4 block's 16 packed bytes at `q` and 32 i8 at `y`: the nibbles
/// looked up in the doubled FP4 table with one `tbl` each half.
///
/// # Safety
/// 16 bytes readable at `q`, 32 at `y`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mxfp4_block(q: *const u8, y: *const u8) -> i32 {
    // SAFETY: 16 bytes are readable at `q` and 32 at `y` (precondition), 16 per load; the table
    // is 16 bytes.
    unsafe {
        let table = vld1q_s8(KVALUES.as_ptr());
        let b = vld1q_u8(q);
        let lo = vqtbl1q_s8(table, vandq_u8(b, vdupq_n_u8(0x0f)));
        let hi = vqtbl1q_s8(table, vshrq_n_u8::<4>(b));
        let y = y as *const i8;
        vaddvq_s32(vaddq_s32(
            dot16(lo, vld1q_s8(y)),
            dot16(hi, vld1q_s8(y.add(16))),
        ))
    }
}

fn vec_dot_q4_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = (n / QK_K)
        .min(w.len() / Q4_K_BYTES)
        .min(a.len() / Q8_K_BYTES);
    let mut sum = 0.0f32;
    for i in 0..nb {
        let x = &w[i * Q4_K_BYTES..(i + 1) * Q4_K_BYTES];
        let y = &a[i * Q8_K_BYTES..(i + 1) * Q8_K_BYTES];
        let (sc, m) = unpack_scales_mins_k4(&x[4..16]);
        let mut summs = 0i32;
        for (s, ms) in m.iter().enumerate() {
            summs += *ms as i32 * (q8k_bsum(y, 2 * s) + q8k_bsum(y, 2 * s + 1));
        }
        // SAFETY: as in `vec_dot_q8_0`; the blocks are whole.
        let isum = unsafe { q4_k_block(x.as_ptr().add(16), y.as_ptr().add(4), &sc) };
        let yd = q8k_d(y);
        sum += f16_at(x, 0) * yd * isum as f32 - f16_at(x, 2) * yd * summs as f32;
    }
    sum
}

/// Σ_s sc[s]·Σ q·y over one Q4_K block (`q`: 128 packed bytes, `y`: 256 i8).
///
/// # Safety
/// 128 bytes readable at `q`, 256 at `y`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q4_k_block(q: *const u8, y: *const u8, sc: &[u8; 8]) -> i32 {
    // SAFETY: the loads stay within the 128 bytes at `q` (`32c + 32 <= 128`) and the 256 at `y`
    // (`64c + 64 <= 256`) that the precondition makes readable.
    unsafe {
        let mask = vdupq_n_u8(0x0f);
        let y = y as *const i8;
        let mut isum = 0i32;
        for c in 0..4 {
            let (b0, b1) = (vld1q_u8(q.add(32 * c)), vld1q_u8(q.add(32 * c + 16)));
            let yl = y.add(64 * c);
            let lo = vaddq_s32(
                dot16(vreinterpretq_s8_u8(vandq_u8(b0, mask)), vld1q_s8(yl)),
                dot16(
                    vreinterpretq_s8_u8(vandq_u8(b1, mask)),
                    vld1q_s8(yl.add(16)),
                ),
            );
            let hi = vaddq_s32(
                dot16(
                    vreinterpretq_s8_u8(vshrq_n_u8::<4>(b0)),
                    vld1q_s8(yl.add(32)),
                ),
                dot16(
                    vreinterpretq_s8_u8(vshrq_n_u8::<4>(b1)),
                    vld1q_s8(yl.add(48)),
                ),
            );
            isum += sc[2 * c] as i32 * vaddvq_s32(lo) + sc[2 * c + 1] as i32 * vaddvq_s32(hi);
        }
        isum
    }
}

fn vec_dot_q6_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = (n / QK_K)
        .min(w.len() / Q6_K_BYTES)
        .min(a.len() / Q8_K_BYTES);
    let mut sum = 0.0f32;
    for i in 0..nb {
        let x = &w[i * Q6_K_BYTES..(i + 1) * Q6_K_BYTES];
        let y = &a[i * Q8_K_BYTES..(i + 1) * Q8_K_BYTES];
        // SAFETY: as in `vec_dot_q8_0`; the blocks are whole.
        let isum = unsafe { q6_k_block(x.as_ptr(), y.as_ptr().add(4)) };
        sum += (f16_at(x, 208) * q8k_d(y)) * isum as f32;
    }
    sum
}

/// Σ_s sc[s]·Σ (q − 32)·y over one Q6_K block at `x` and 256 i8 at `y`.
///
/// # Safety
/// 210 bytes readable at `x`, 256 at `y`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q6_k_block(x: *const u8, y: *const u8) -> i32 {
    // SAFETY: the loads stay within the 210 bytes at `x` (quants `..192`, scales `192..208`)
    // and the 256 at `y` (`e + 16 <= 256`) that the precondition makes readable.
    unsafe {
        let (m4, m2, off) = (vdupq_n_u8(0x0f), vdupq_n_u8(3), vdupq_n_s8(32));
        let y = y as *const i8;
        let mut isum = 0i32;
        for h in 0..2 {
            for j in 0..2 {
                // Lanes l = 16·j .. 16·j + 16 of the 32-wide columns.
                let ql0 = vld1q_u8(x.add(64 * h + 16 * j));
                let ql1 = vld1q_u8(x.add(64 * h + 32 + 16 * j));
                let qh = vld1q_u8(x.add(128 + 32 * h + 16 * j));
                let q = [
                    vorrq_u8(vandq_u8(ql0, m4), vshlq_n_u8::<4>(vandq_u8(qh, m2))),
                    vorrq_u8(
                        vandq_u8(ql1, m4),
                        vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<2>(qh), m2)),
                    ),
                    vorrq_u8(
                        vshrq_n_u8::<4>(ql0),
                        vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<4>(qh), m2)),
                    ),
                    vorrq_u8(vshrq_n_u8::<4>(ql1), vshlq_n_u8::<4>(vshrq_n_u8::<6>(qh))),
                ];
                for (k, qk) in q.into_iter().enumerate() {
                    let v = vsubq_s8(vreinterpretq_s8_u8(qk), off);
                    let e = 128 * h + 32 * k + 16 * j;
                    let s = *x.add(192 + e / 16) as i8 as i32;
                    isum += s * vaddvq_s32(dot16(v, vld1q_s8(y.add(e))));
                }
            }
        }
        isum
    }
}

fn vec_dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let n = n.min(w.len() / 4).min(a.len() / 4);
    // SAFETY: NEON present; reads inside the first `n` elements.
    let mut sum = unsafe { f32_impl(n / 16, w.as_ptr(), a.as_ptr()) };
    for i in n / 16 * 16..n {
        let x = f32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]]);
        let y = f32::from_le_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]);
        sum += x * y;
    }
    sum
}

#[target_feature(enable = "neon")]
unsafe fn f32_impl(n16: usize, w: *const u8, a: *const u8) -> f32 {
    // SAFETY: elements `off..off + 4` lie below `16·n16`, which `vec_dot_f32` keeps inside both
    // rows.
    unsafe {
        let (w, a) = (w as *const f32, a as *const f32);
        let mut acc = [vdupq_n_f32(0.0); 4];
        for i in 0..n16 {
            for (k, acc) in acc.iter_mut().enumerate() {
                let off = 16 * i + 4 * k;
                *acc = vfmaq_f32(*acc, vld1q_f32(w.add(off)), vld1q_f32(a.add(off)));
            }
        }
        vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ))
    }
}
