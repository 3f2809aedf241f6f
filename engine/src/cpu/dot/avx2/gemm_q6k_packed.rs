//! AVX2 prompt products of Q6_K weights against Q8_K activations with 8 weight rows per
//! register, as [`super::gemm_q4k_packed`] does for Q4_K.
//!
//! Each call repacks its rows in groups of 8, a super-block at a time: the 8 rows' 6-bit values
//! (stored +32, so 0..=63) as bytes, interleaved 4 bytes a row per 16-element sub-block, beside
//! the rows' sub-block scales (as i16 pairs for `madd`, once per sub-block and once per pair of
//! sub-blocks for the +32 correction) and their f32 `d`. One `maddubs` of 4 bytes of 8 rows with
//! the token's 4 activation bytes broadcast gives 8 rows × 4 products. Two of them sum in i16
//! (≤ 2·2·63·127 < 2¹⁵), one `madd` applies the 8 rows' scales, and the 8 dot products of a
//! super-block arrive in 8 lanes, exact.
//!
//! **Sum order** (shared with `kquant.rs`'s `vec_dot_q6_k` and the decode tiles of
//! `gemm_k.rs`): per super-block, the exact integer `T = Σ_s sc_s·Σ q·a − 32·Σ_s sc_s·Σ a`;
//! `acc = fma(f32(T), d·d_a, acc)`.
//!
//! Q3_K and Q2_K have the same shape (sixteen sub-blocks of 16 with a scale each, `x =
//! d·sc·q` with small `q`), so these kernels take them too ([`Sub16`]: their values stored
//! +32, their scales as i8), in the sum order of their own tiles (`gemm_k23.rs`).

// Row, sub-block and token indices address several arrays together.
#![allow(clippy::needless_range_loop)]

use super::packed::{PackedKernel, TT};
use super::{f16_at, prefetch_next, transpose8x4, unpack_q6_k_half};
use crate::quant::QK_K;
use crate::quant::k6::Q6_K_BYTES;
use crate::quant::k8::Q8_K_BYTES;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Offset of the quants in a Q8_K block (after its f32 scale).
const Y_QS: usize = 4;
/// Offset of the sixteen i16 block sums in a Q8_K block.
const Y_BSUMS: usize = 4 + QK_K;

/// A K-quant of sixteen 16-value sub-blocks with one i8 scale each (`x = d·sc·q`, `q + 32`
/// within 0..=63), as the Q6_K prompt kernels (here and `gemm_q6k_zmm`) take it.
pub(super) trait Sub16 {
    /// Bytes per super-block.
    const BYTES: usize;

    /// The super-block at `x`: its 256 values plus 32 as eight vectors (vector `g` holds
    /// elements `32g..32g + 32`), its sixteen scales and its `d`.
    ///
    /// # Safety
    /// AVX2 present; `x..x + BYTES` readable.
    unsafe fn unpack(x: *const u8) -> ([__m256i; 8], [i8; 16], f32);
}

/// Q6_K itself: values stored +32, i8 scales at byte 192, f16 `d` at 208.
pub(super) struct Q6K;

impl Sub16 for Q6K {
    const BYTES: usize = Q6_K_BYTES;

    #[inline(always)]
    unsafe fn unpack(x: *const u8) -> ([__m256i; 8], [i8; 16], f32) {
        // SAFETY: the trait's contract is `unpack_q6_k`'s.
        unsafe { unpack_q6_k(x) }
    }
}

/// [`Sub16::unpack`] of Q6_K.
///
/// # Safety
/// AVX2 present; the 210 bytes at `x` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_q6_k(x: *const u8) -> ([__m256i; 8], [i8; 16], f32) {
    // SAFETY: the block is readable (precondition), and 210 ≥ 192 bytes.
    let (h0, h1) = unsafe { (unpack_q6_k_half(x, 0), unpack_q6_k_half(x, 1)) };
    let values = [h0[0], h0[1], h0[2], h0[3], h1[0], h1[1], h1[2], h1[3]];
    // SAFETY: bytes `192..208` of the 210-byte block: its sixteen i8 scales.
    let scales = std::array::from_fn(|s| unsafe { *x.add(192 + s) } as i8);
    // SAFETY: bytes `208..210`: its f16 `d`.
    (values, scales, unsafe { f16_at(x.add(208)) })
}

/// One super-block of 8 weight rows, repacked.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(super) struct PackedQ6 {
    /// f32 `d` of each row.
    d: [f32; 8],
    /// `sc[s]`: each row's scale of sub-block `s`, twice (an i16 pair for `madd`).
    sc: [[i16; 16]; 16],
    /// `sp[k]`: each row's scales of sub-blocks `2k` and `2k + 1` (an i16 pair, against the
    /// activations' block sums for the +32 correction).
    sp: [[i16; 16]; 8],
    /// `q[s][c]`: elements `16s + 4c..16s + 4c + 4` of rows 0..8, as bytes, row after row.
    q: [[[u8; 32]; 4]; 16],
}

const PACKED_ZERO: PackedQ6 = PackedQ6 {
    d: [0.0; 8],
    sc: [[0; 16]; 16],
    sp: [[0; 16]; 8],
    q: [[[0; 32]; 4]; 16],
};

thread_local! {
    /// Each thread's repacked weights; grown, never shrunk.
    static SCRATCH: RefCell<Vec<PackedQ6>> = const { RefCell::new(Vec::new()) };
}

/// Repacks rows `0..nr` (`nr ≤ 8`; the rest zero) at `w` (`wrb` apart) into `dst[0..nb]`.
///
/// # Safety
/// AVX2/FMA/F16C present; `nb` super-blocks readable in each of the `nr` rows; `dst` holds
/// `nb`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn repack8<K: Sub16>(nb: usize, w: *const u8, wrb: usize, nr: usize, dst: *mut PackedQ6) {
    for b in 0..nb {
        prefetch_next::<8>(w, wrb, b, K::BYTES);
        // SAFETY: `b < nb`, and `dst` holds `nb` super-blocks (precondition); nothing else refers
        // to them.
        let p = unsafe { &mut *dst.add(b) };
        *p = PACKED_ZERO;
        // groups[g][r]: elements 32g..32g + 32 of row r.
        let mut groups = [[_mm256_setzero_si256(); 8]; 8];
        for r in 0..nr {
            // SAFETY: row `r < nr`, super-block `b < nb`: inside the rows (precondition).
            let (values, scales, d) = unsafe { K::unpack(w.add(r * wrb + b * K::BYTES)) };
            p.d[r] = d;
            for (s, &sc) in scales.iter().enumerate() {
                let sc = sc as i16;
                p.sc[s][2 * r] = sc;
                p.sc[s][2 * r + 1] = sc;
                p.sp[s / 2][2 * r + s % 2] = sc;
            }
            for (g, v) in values.into_iter().enumerate() {
                groups[g][r] = v;
            }
        }
        for (g, rows) in groups.into_iter().enumerate() {
            // Chunk j of group g: elements 32g + 4j..32g + 4j + 4, i.e. sub-block 2g + j / 4,
            // chunk j % 4 of it.
            for (j, chunk) in transpose8x4(rows).into_iter().enumerate() {
                let dst = p.q[2 * g + j / 4][j % 4].as_mut_ptr();
                // SAFETY: `p.q[s][c]` is 32 bytes at a 32-aligned offset of the 32-aligned `PackedQ6`.
                unsafe { _mm256_store_si256(dst as *mut __m256i, chunk) };
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
    pk: *const PackedQ6,
    a: *const u8,
    arb: usize,
    out: *mut f32,
    ldo: usize,
    nr: usize,
) {
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        // SAFETY: `b < nb`, and `pk` holds `nb` super-blocks (precondition).
        let p = unsafe { &*pk.add(b) };
        // SAFETY: token `t < N`, block `b < nb`: inside the activations (precondition).
        let y: [*const u8; N] = std::array::from_fn(|t| unsafe { a.add(t * arb + b * Q8_K_BYTES) });
        let mut isum = [_mm256_setzero_si256(); N];
        for s in 0..16 {
            // SAFETY: `p.sc[s]` is 32 bytes at a 32-aligned offset of the 32-aligned `PackedQ6`.
            let sc = unsafe { _mm256_load_si256(p.sc[s].as_ptr() as *const __m256i) };
            for half in 0..2 {
                let mut s16 = [_mm256_setzero_si256(); N];
                for c in 2 * half..2 * half + 2 {
                    // SAFETY: `p.q[s][c]` is 32 bytes at a 32-aligned offset of the 32-aligned `PackedQ6`.
                    let wq = unsafe { _mm256_load_si256(p.q[s][c].as_ptr() as *const __m256i) };
                    for t in 0..N {
                        let off = Y_QS + 16 * s + 4 * c;
                        // SAFETY: `off + 4 <= Y_QS + 256`: 4 of the block's quants.
                        let u = _mm256_set1_epi32(unsafe {
                            (y[t].add(off) as *const i32).read_unaligned()
                        });
                        s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(wq, u));
                    }
                }
                for t in 0..N {
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16[t], sc));
                }
            }
        }
        // SAFETY: `p.d` is 32 bytes at offset 0 of the 32-aligned `PackedQ6`.
        let d = unsafe { _mm256_load_ps(p.d.as_ptr()) };
        for t in 0..N {
            // The +32 of the stored values: 32·Σ_s sc_s·Σ a over sub-block s, from the block
            // sums, two sub-blocks per `madd`.
            let mut corr = _mm256_setzero_si256();
            for k in 0..8 {
                // SAFETY: bytes `260 + 4k..264 + 4k` (`k < 8`) of the 292-byte Q8_K block: the
                // i16 sums of sub-blocks 2k and 2k + 1.
                let pair = unsafe { (y[t].add(Y_BSUMS + 4 * k) as *const i32).read_unaligned() };
                // SAFETY: `p.sp[k]` is 32 bytes at a 32-aligned offset of the 32-aligned `PackedQ6`.
                let sp = unsafe { _mm256_load_si256(p.sp[k].as_ptr() as *const __m256i) };
                corr = _mm256_add_epi32(corr, _mm256_madd_epi16(sp, _mm256_set1_epi32(pair)));
            }
            let total = _mm256_sub_epi32(isum[t], _mm256_slli_epi32::<5>(corr));
            // SAFETY: a Q8_K block opens with its f32 scale.
            let yd = _mm256_set1_ps(unsafe { (y[t] as *const f32).read_unaligned() });
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(d, yd), acc[t]);
        }
    }
    for t in 0..N {
        // SAFETY: `t < N`: `t·ldo` is an output the precondition makes writable.
        let o = unsafe { out.add(t * ldo) };
        if nr == 8 {
            // SAFETY: all 8 rows are stored, so `o..o + 8` is writable (precondition).
            unsafe { _mm256_storeu_ps(o, acc[t]) };
        } else {
            let mut x = [0.0f32; 8];
            // SAFETY: `x` is 8 f32s, one 256-bit store.
            unsafe { _mm256_storeu_ps(x.as_mut_ptr(), acc[t]) };
            for (r, &x) in x.iter().enumerate().take(nr) {
                // SAFETY: `r < nr`, so `o + r` is writable (precondition).
                unsafe { *o.add(r) = x };
            }
        }
    }
}

/// This file's kernel (8 rows per register) for [`super::packed::gemm_packed`], on the
/// super-blocks of `K`.
pub(super) struct Sub16Packed8<K>(std::marker::PhantomData<K>);

/// Q6_K's 8-row prompt kernel.
pub(super) type Q6kPacked8 = Sub16Packed8<Q6K>;

impl<K: Sub16> PackedKernel for Sub16Packed8<K> {
    type Block = PackedQ6;
    const ROWS: usize = 8;

    fn scratch(len: usize) -> *mut PackedQ6 {
        SCRATCH.with_borrow_mut(|pk| {
            if pk.len() < len {
                pk.resize(len, PACKED_ZERO);
            }
            pk.as_mut_ptr()
        })
    }

    unsafe fn repack(nb: usize, w: *const u8, wrb: usize, nr: usize, dst: *mut PackedQ6) {
        // SAFETY: the trait's contract is `repack8`'s (AVX2/FMA/F16C present).
        unsafe { repack8::<K>(nb, w, wrb, nr, dst) }
    }

    unsafe fn tile(
        n: usize,
        nb: usize,
        pk: *const PackedQ6,
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
