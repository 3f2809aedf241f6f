//! AVX2 prompt products of Q4_K weights against Q8_K activations with 8 weight rows per
//! register, as [`super::gemm_small`] does for the 32-element formats.
//!
//! Each call repacks its rows in groups of 8, a super-block at a time: the 8 rows' nibbles as
//! bytes, interleaved 4 bytes a row per 32-element sub-block, beside the rows' sub-block scales
//! and mins (as i16 pairs for `madd`) and their f32 `d`, `dmin`. One `maddubs` of 4 bytes of 8
//! rows with the token's 4 activation bytes broadcast gives 8 rows × 4 products; a sub-block's
//! 8 of them sum in i16 (≤ 8·2·15·128), one `madd` applies the 8 rows' scales, and the 8 dot
//! products of a super-block arrive in 8 lanes, exact.
//!
//! **Sum order** (shared with `kquant.rs`'s `vec_dot_q4_k` and the decode tiles of
//! `gemm_k.rs`): per super-block, the exact integer `T = Σ_j sc_j·Σ q·a` and `M = Σ_j m_j·Σ a`;
//! `acc = fma(f32(T), d·d_a, acc)`, `acc_m += (dmin·d_a)·f32(M)`; the result is `acc − acc_m`.

// Row, sub-block and token indices address several arrays together.
#![allow(clippy::needless_range_loop)]

use super::packed::{PackedKernel, TT};
use super::{f16_at, load, prefetch_next, transpose8x4};
use crate::quant::QK_K;
use crate::quant::k4_5::{Q4_K_BYTES, unpack_scales_mins_k4};
use crate::quant::k8::Q8_K_BYTES;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Offset of the quants in a Q8_K block (after its f32 scale).
const Y_QS: usize = 4;
/// Offset of the sixteen i16 block sums in a Q8_K block.
const Y_BSUMS: usize = 4 + QK_K;

/// One super-block of 8 weight rows, repacked.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(super) struct PackedK4 {
    /// f32 `d` of each row.
    d: [f32; 8],
    /// f32 `dmin` of each row.
    dmin: [f32; 8],
    /// `sc[j]`: each row's scale of sub-block `j`, twice (an i16 pair for `madd`).
    sc: [[i16; 16]; 8],
    /// `mn[k]`: each row's mins of sub-blocks `2k` and `2k + 1` (an i16 pair).
    mn: [[i16; 16]; 4],
    /// `q[j][c]`: elements `4c..4c+4` of sub-block `j` of rows 0..8, as bytes, row after row.
    q: [[[u8; 32]; 8]; 8],
}

const PACKED_ZERO: PackedK4 = PackedK4 {
    d: [0.0; 8],
    dmin: [0.0; 8],
    sc: [[0; 16]; 8],
    mn: [[0; 16]; 4],
    q: [[[0; 32]; 8]; 8],
};

thread_local! {
    /// Each thread's repacked weights; grown, never shrunk.
    static SCRATCH: RefCell<Vec<PackedK4>> = const { RefCell::new(Vec::new()) };
}

/// Repacks rows `0..nr` (`nr ≤ 8`; the rest zero) at `w` (`wrb` apart) into `dst[0..nb]`.
///
/// # Safety
/// AVX2/FMA/F16C present; `nb` super-blocks readable in each of the `nr` rows; `dst` holds
/// `nb`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn repack8(nb: usize, w: *const u8, wrb: usize, nr: usize, dst: *mut PackedK4) {
    let low = _mm256_set1_epi8(0x0f);
    for b in 0..nb {
        prefetch_next::<8>(w, wrb, b, Q4_K_BYTES);
        // SAFETY: `b < nb`, and `dst` holds `nb` super-blocks (precondition); nothing else refers
        // to them.
        let p = unsafe { &mut *dst.add(b) };
        *p = PACKED_ZERO;
        let mut sub = [[_mm256_setzero_si256(); 8]; 8];
        for r in 0..nr {
            // SAFETY: row `r < nr`, super-block `b < nb`: inside the rows (precondition).
            let x = unsafe { w.add(r * wrb + b * Q4_K_BYTES) };
            // SAFETY: a Q4_K block opens with its f16 `d`.
            p.d[r] = unsafe { f16_at(x) };
            // SAFETY: bytes `2..4` of the 144-byte block: its f16 `dmin`.
            p.dmin[r] = unsafe { f16_at(x.add(2)) };
            // SAFETY: bytes `4..16` of the 144-byte block: its 12 packed scales and mins.
            let scales = unsafe { std::slice::from_raw_parts(x.add(4), 12) };
            let (sc, m) = unpack_scales_mins_k4(scales);
            for j in 0..8 {
                p.sc[j][2 * r] = sc[j] as i16;
                p.sc[j][2 * r + 1] = sc[j] as i16;
            }
            for k in 0..4 {
                p.mn[k][2 * r] = m[2 * k] as i16;
                p.mn[k][2 * r + 1] = m[2 * k + 1] as i16;
            }
            for c in 0..4 {
                // SAFETY: bytes `16 + 32c..48 + 32c` (`c < 4`) of the 144-byte block: its nibbles.
                let q = unsafe { load(x.add(16 + 32 * c)) };
                sub[2 * c][r] = _mm256_and_si256(q, low);
                sub[2 * c + 1][r] = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low);
            }
        }
        for (j, rows) in sub.into_iter().enumerate() {
            for (c, chunk) in transpose8x4(rows).into_iter().enumerate() {
                // SAFETY: `p.q[j][c]` is 32 bytes at a 32-aligned offset of the 32-aligned `PackedK4`.
                unsafe { _mm256_store_si256(p.q[j][c].as_mut_ptr() as *mut __m256i, chunk) };
            }
        }
    }
}

/// `out[t·ldo + r] = w_r · a_t` for the 8 rows of `pk` (first `nr` stored) and `N ≤ TT`
/// tokens at `a` (`arb` apart), over `nb` super-blocks.
///
/// # Safety
/// AVX2/FMA/F16C present; `pk` holds `nb`; `nb` Q8_K blocks readable in each token; `out`
/// writable at every `t·ldo + r` for `r < nr`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn packed_tile<const N: usize>(
    nb: usize,
    pk: *const PackedK4,
    a: *const u8,
    arb: usize,
    out: *mut f32,
    ldo: usize,
    nr: usize,
) {
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_m = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        // SAFETY: `b < nb`, and `pk` holds `nb` super-blocks (precondition).
        let p = unsafe { &*pk.add(b) };
        // SAFETY: token `t < N`, block `b < nb`: inside the activations (precondition).
        let y: [*const u8; N] = std::array::from_fn(|t| unsafe { a.add(t * arb + b * Q8_K_BYTES) });
        let mut isum = [_mm256_setzero_si256(); N];
        for j in 0..8 {
            let mut s16 = [_mm256_setzero_si256(); N];
            for c in 0..8 {
                // SAFETY: `p.q[j][c]` is 32 bytes at a 32-aligned offset of the 32-aligned `PackedK4`.
                let wq = unsafe { _mm256_load_si256(p.q[j][c].as_ptr() as *const __m256i) };
                for t in 0..N {
                    let off = Y_QS + 32 * j + 4 * c;
                    // SAFETY: `off + 4 <= Y_QS + 256`: 4 of the block's quants.
                    let u = _mm256_set1_epi32(unsafe {
                        (y[t].add(off) as *const i32).read_unaligned()
                    });
                    s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(wq, u));
                }
            }
            // SAFETY: `p.sc[j]` is 32 bytes at a 32-aligned offset of the 32-aligned `PackedK4`.
            let sc = unsafe { _mm256_load_si256(p.sc[j].as_ptr() as *const __m256i) };
            for t in 0..N {
                isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16[t], sc));
            }
        }
        // SAFETY: `p.d` is 32 bytes at offset 0 of the 32-aligned `PackedK4`.
        let d = unsafe { _mm256_load_ps(p.d.as_ptr()) };
        // SAFETY: `p.dmin` is 32 bytes at offset 32 of the 32-aligned `PackedK4`.
        let dmin = unsafe { _mm256_load_ps(p.dmin.as_ptr()) };
        for t in 0..N {
            // Σ a over sub-blocks 2k and 2k+1, as an i16 pair, from the block sums.
            // SAFETY: bytes `260..292` of the 292-byte Q8_K block: its sixteen i16 sums.
            let bs = unsafe { load(y[t].add(Y_BSUMS)) };
            let pairs = _mm256_madd_epi16(bs, _mm256_set1_epi16(1));
            let pairs = _mm256_packs_epi32(pairs, pairs);
            let mut msum = _mm256_setzero_si256();
            // SAFETY: `__m256i` and `[i32; 8]` have the same size, and every bit pattern is an i32.
            let pv: [i32; 8] = unsafe { std::mem::transmute(pairs) };
            // `packs` keeps 128-bit lanes: sub-block sums 0..4 then 4..8 sit in words 0..4 of
            // each lane; pairs of them are the i32s 0, 1 (lane 0) and 4, 5 (lane 1).
            for (k, &i) in [0usize, 1, 4, 5].iter().enumerate() {
                // SAFETY: `p.mn[k]` is 32 bytes at a 32-aligned offset of the 32-aligned `PackedK4`.
                let mn = unsafe { _mm256_load_si256(p.mn[k].as_ptr() as *const __m256i) };
                msum = _mm256_add_epi32(msum, _mm256_madd_epi16(mn, _mm256_set1_epi32(pv[i])));
            }
            // SAFETY: a Q8_K block opens with its f32 scale.
            let yd = _mm256_set1_ps(unsafe { (y[t] as *const f32).read_unaligned() });
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(d, yd), acc[t]);
            acc_m[t] = _mm256_add_ps(
                acc_m[t],
                _mm256_mul_ps(_mm256_mul_ps(dmin, yd), _mm256_cvtepi32_ps(msum)),
            );
        }
    }
    for t in 0..N {
        let v = _mm256_sub_ps(acc[t], acc_m[t]);
        // SAFETY: `t < N`: `t·ldo` is an output the precondition makes writable.
        let o = unsafe { out.add(t * ldo) };
        if nr == 8 {
            // SAFETY: all 8 rows are stored, so `o..o + 8` is writable (precondition).
            unsafe { _mm256_storeu_ps(o, v) };
        } else {
            let mut x = [0.0f32; 8];
            // SAFETY: `x` is 8 f32s, one 256-bit store.
            unsafe { _mm256_storeu_ps(x.as_mut_ptr(), v) };
            for (r, &x) in x.iter().enumerate().take(nr) {
                // SAFETY: `r < nr`, so `o + r` is writable (precondition).
                unsafe { *o.add(r) = x };
            }
        }
    }
}

/// This file's kernel (8 rows per register) for [`super::packed::gemm_packed`].
pub(super) struct Q4kPacked8;

impl PackedKernel for Q4kPacked8 {
    type Block = PackedK4;
    const ROWS: usize = 8;

    fn scratch(len: usize) -> *mut PackedK4 {
        SCRATCH.with_borrow_mut(|pk| {
            if pk.len() < len {
                pk.resize(len, PACKED_ZERO);
            }
            pk.as_mut_ptr()
        })
    }

    unsafe fn repack(nb: usize, w: *const u8, wrb: usize, nr: usize, dst: *mut PackedK4) {
        // SAFETY: the trait's contract is `repack8`'s (AVX2/FMA/F16C present).
        unsafe { repack8(nb, w, wrb, nr, dst) }
    }

    unsafe fn tile(
        n: usize,
        nb: usize,
        pk: *const PackedK4,
        a: *const u8,
        arb: usize,
        out: *mut f32,
        ldo: usize,
        nr: usize,
    ) {
        // SAFETY: the trait's contract is `packed_tile`'s for `n` tokens (AVX2/FMA/F16C present).
        unsafe {
            if n == TT {
                packed_tile::<TT>(nb, pk, a, arb, out, ldo, nr)
            } else {
                packed_tile::<1>(nb, pk, a, arb, out, ldo, nr)
            }
        }
    }
}
