//! AVX-512 VNNI prompt products of Q6_K weights against Q8_K activations with 16 weight rows
//! per register: [`super::gemm_q6k_packed`]'s kernel on 512-bit vectors, as
//! [`super::gemm_q4k_zmm`] is Q4_K's.
//!
//! Each call repacks its rows in groups of 16, a super-block at a time: the 16 rows' 6-bit
//! values (stored +32, so 0..=63) interleaved 4 bytes a row per 16-element sub-block, beside
//! the rows' scales as i32 (for the sums) and as i16 pairs (for the +32 correction, two
//! sub-blocks per `madd`) and their f32 `d`. One `vpdpbusd` adds 16 rows × 4 products into
//! i32 lanes; each sub-block's sum is multiplied by its scale in i32.
//!
//! Like the 8-row kernel it takes Q3_K and Q2_K too (`gemm_q6k_packed::Sub16`).
//!
//! **Sum order:** `gemm_q6k_packed`'s, lane by lane: per super-block the exact integer
//! `T = Σ_s sc_s·Σ q·a − 32·Σ_s sc_s·Σ a`, then `acc = fma(f32(T), d·d_a, acc)`; bit for bit
//! the 8-row kernel, the decode tiles and `vec_dot_q6_k`.

// Row, sub-block and token indices address several arrays together.
#![allow(clippy::needless_range_loop)]

use super::gemm_q6k_packed::{Q6K, Sub16};
use super::packed::{PackedKernel, TT};
use super::{prefetch_next, transpose8x4};
use crate::quant::QK_K;
use crate::quant::k8::Q8_K_BYTES;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Offset of the quants in a Q8_K block (after its f32 scale).
const Y_QS: usize = 4;
/// Offset of the sixteen i16 block sums in a Q8_K block.
const Y_BSUMS: usize = 4 + QK_K;
/// Rows per group (lanes of a 512-bit vector of i32).
const ROWS: usize = 16;

/// One super-block of 16 weight rows, repacked. 64-byte aligned so every field loads aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct PackedQ6x16 {
    /// f32 `d` of each row.
    d: [f32; ROWS],
    /// `sc[s]`: each row's scale of sub-block `s`.
    sc: [[i32; ROWS]; 16],
    /// `sp[k]`: each row's scales of sub-blocks `2k` and `2k + 1` (an i16 pair).
    sp: [[i16; 2 * ROWS]; 8],
    /// `q[s][c]`: elements `16s + 4c..16s + 4c + 4` of rows 0..16, as bytes, row after row.
    q: [[[u8; 4 * ROWS]; 4]; 16],
}

const PACKED_ZERO: PackedQ6x16 = PackedQ6x16 {
    d: [0.0; ROWS],
    sc: [[0; ROWS]; 16],
    sp: [[0; 2 * ROWS]; 8],
    q: [[[0; 4 * ROWS]; 4]; 16],
};

thread_local! {
    /// Each thread's repacked weights; grown, never shrunk.
    static SCRATCH: RefCell<Vec<PackedQ6x16>> = const { RefCell::new(Vec::new()) };
}

/// Repacks rows `0..nr` (`nr ≤ 16`; the rest zero) at `w` (`wrb` apart) into `dst[0..nb]`.
///
/// # Safety
/// AVX2/FMA/F16C present; `nb` super-blocks readable in each of the `nr` rows; `dst` holds
/// `nb`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn repack16<K: Sub16>(
    nb: usize,
    w: *const u8,
    wrb: usize,
    nr: usize,
    dst: *mut PackedQ6x16,
) {
    for b in 0..nb {
        prefetch_next::<ROWS>(w, wrb, b, K::BYTES);
        // SAFETY: `b < nb`, and `dst` holds `nb` super-blocks (precondition); nothing else refers
        // to them.
        let p = unsafe { &mut *dst.add(b) };
        *p = PACKED_ZERO;
        // groups[g][r]: elements 32g..32g + 32 of row r.
        let mut groups = [[_mm256_setzero_si256(); ROWS]; 8];
        for r in 0..nr {
            // SAFETY: row `r < nr`, super-block `b < nb`: inside the rows (precondition).
            let (values, scales, d) = unsafe { K::unpack(w.add(r * wrb + b * K::BYTES)) };
            p.d[r] = d;
            for (s, &sc) in scales.iter().enumerate() {
                p.sc[s][r] = sc as i32;
                p.sp[s / 2][2 * r + s % 2] = sc as i16;
            }
            for (g, v) in values.into_iter().enumerate() {
                groups[g][r] = v;
            }
        }
        for (g, rows) in groups.iter().enumerate() {
            for half in 0..2 {
                let eight: [__m256i; 8] = std::array::from_fn(|r| rows[8 * half + r]);
                // Chunk j of group g: sub-block 2g + j / 4, chunk j % 4 of it.
                for (j, chunk) in transpose8x4(eight).into_iter().enumerate() {
                    let dst = p.q[2 * g + j / 4][j % 4][32 * half..].as_mut_ptr();
                    // SAFETY: 32 bytes at a 32-aligned offset of the 64-aligned `PackedQ6x16`.
                    unsafe { _mm256_store_si256(dst as *mut __m256i, chunk) };
                }
            }
        }
    }
}

/// `out[t·ldo + r] = w_r · a_t` for the 16 rows of `pk` (first `nr` stored) and `N ≤ TT`
/// tokens at `a` (`arb` apart), over `nb` super-blocks.
///
/// # Safety
/// AVX-512 F/BW/VNNI present; `pk` holds `nb`; `nb` Q8_K blocks readable in each token; `out`
/// writable at every `t·ldo + r` for `r < nr`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile16<const N: usize>(
    nb: usize,
    pk: *const PackedQ6x16,
    a: *const u8,
    arb: usize,
    out: *mut f32,
    ldo: usize,
    nr: usize,
) {
    let mut acc = [_mm512_setzero_ps(); N];
    for b in 0..nb {
        // SAFETY: `b < nb`, and `pk` holds `nb` super-blocks (precondition).
        let p = unsafe { &*pk.add(b) };
        // SAFETY: token `t < N`, block `b < nb`: inside the activations (precondition).
        let y: [*const u8; N] = std::array::from_fn(|t| unsafe { a.add(t * arb + b * Q8_K_BYTES) });
        let mut isum = [_mm512_setzero_si512(); N];
        for s in 0..16 {
            let mut even = [_mm512_setzero_si512(); N];
            let mut odd = [_mm512_setzero_si512(); N];
            for c in 0..4 {
                // SAFETY: `p.q[s][c]` is 64 bytes at a 64-aligned offset of the 64-aligned struct.
                let wq = unsafe { _mm512_load_si512(p.q[s][c].as_ptr() as *const __m512i) };
                for t in 0..N {
                    let off = Y_QS + 16 * s + 4 * c;
                    // SAFETY: `off + 4 <= Y_QS + 256`: 4 of the block's quants.
                    let u = _mm512_set1_epi32(unsafe {
                        (y[t].add(off) as *const i32).read_unaligned()
                    });
                    if c % 2 == 0 {
                        even[t] = _mm512_dpbusd_epi32(even[t], wq, u);
                    } else {
                        odd[t] = _mm512_dpbusd_epi32(odd[t], wq, u);
                    }
                }
            }
            // SAFETY: `p.sc[s]` is 64 bytes at a 64-aligned offset of the 64-aligned struct.
            let sc = unsafe { _mm512_load_si512(p.sc[s].as_ptr() as *const __m512i) };
            for t in 0..N {
                let v = _mm512_add_epi32(even[t], odd[t]);
                isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(v, sc));
            }
        }
        // SAFETY: `p.d` is 64 bytes at offset 0 of the 64-aligned struct.
        let d = unsafe { _mm512_load_ps(p.d.as_ptr()) };
        for t in 0..N {
            // The +32 of the stored values: 32·Σ_s sc_s·Σ a over sub-block s, from the block
            // sums, two sub-blocks per `madd`.
            let mut corr = _mm512_setzero_si512();
            for k in 0..8 {
                // SAFETY: bytes `260 + 4k..264 + 4k` (`k < 8`) of the 292-byte Q8_K block: the
                // i16 sums of sub-blocks 2k and 2k + 1.
                let pair = unsafe { (y[t].add(Y_BSUMS + 4 * k) as *const i32).read_unaligned() };
                // SAFETY: `p.sp[k]` is 64 bytes at a 64-aligned offset of the 64-aligned struct.
                let sp = unsafe { _mm512_load_si512(p.sp[k].as_ptr() as *const __m512i) };
                corr = _mm512_add_epi32(corr, _mm512_madd_epi16(sp, _mm512_set1_epi32(pair)));
            }
            let total = _mm512_sub_epi32(isum[t], _mm512_slli_epi32::<5>(corr));
            // SAFETY: a Q8_K block opens with its f32 scale.
            let yd = _mm512_set1_ps(unsafe { (y[t] as *const f32).read_unaligned() });
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), _mm512_mul_ps(d, yd), acc[t]);
        }
    }
    for t in 0..N {
        let mut v = [0.0f32; ROWS];
        // SAFETY: `v` is 16 f32s, one 512-bit store.
        unsafe { _mm512_storeu_ps(v.as_mut_ptr(), acc[t]) };
        for (r, &x) in v.iter().enumerate().take(nr) {
            // SAFETY: `t < N`, `r < nr`: an output the precondition makes writable.
            unsafe { *out.add(t * ldo + r) = x };
        }
    }
}

/// This file's kernel (16 rows per register) for [`super::packed::gemm_packed`], on the
/// super-blocks of `K`.
pub(super) struct Sub16Zmm16<K>(std::marker::PhantomData<K>);

/// Q6_K's 16-row prompt kernel.
pub(super) type Q6kZmm16 = Sub16Zmm16<Q6K>;

impl<K: Sub16> PackedKernel for Sub16Zmm16<K> {
    type Block = PackedQ6x16;
    const ROWS: usize = ROWS;

    fn scratch(len: usize) -> *mut PackedQ6x16 {
        SCRATCH.with_borrow_mut(|pk| {
            if pk.len() < len {
                pk.resize(len, PACKED_ZERO);
            }
            pk.as_mut_ptr()
        })
    }

    unsafe fn repack(nb: usize, w: *const u8, wrb: usize, nr: usize, dst: *mut PackedQ6x16) {
        // SAFETY: the trait's contract is `repack16`'s (AVX-512 F/BW/VNNI (and AVX2) present).
        unsafe { repack16::<K>(nb, w, wrb, nr, dst) }
    }

    unsafe fn tile(
        n: usize,
        nb: usize,
        pk: *const PackedQ6x16,
        a: *const u8,
        arb: usize,
        out: *mut f32,
        ldo: usize,
        nr: usize,
    ) {
        // SAFETY: the trait's contract is `tile16`'s for `n` tokens (AVX-512 F/BW/VNNI (and AVX2) present).
        unsafe {
            if n == TT {
                tile16::<TT>(nb, pk, a, arb, out, ldo, nr)
            } else {
                tile16::<1>(nb, pk, a, arb, out, ldo, nr)
            }
        }
    }
}
