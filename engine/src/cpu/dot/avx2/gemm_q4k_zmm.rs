//! AVX-512 VNNI prompt products of Q4_K (and Q5_K) weights against Q8_K activations with 16
//! weight rows per register: [`super::gemm_q4k_packed`]'s kernel on 512-bit vectors, for CPUs that have
//! them (`avx512f`, `avx512bw`, `avx512vnni`).
//!
//! Each call repacks its rows in groups of 16, a super-block at a time: the 16 rows' nibbles
//! interleaved 4 bytes a row per 32-element sub-block (two of the 8-row transposes side by
//! side), beside the rows' scales as i32, their mins as i16 pairs and their f32 `d`, `dmin`.
//! One `vpdpbusd` of 4 bytes of 16 rows with the token's 4 activation bytes broadcast adds 16
//! rows × 4 products into i32 lanes: one broadcast serves 64 products (32 on 256-bit
//! vectors, the bound of the 8-row kernels). Two chains per token (even and odd chunks) keep
//! the instruction's latency hidden; each sub-block's sum is multiplied by its scale in i32.
//!
//! **Sum order:** `gemm_q4k_packed`'s, lane by lane: per super-block the exact integers
//! `T = Σ_j sc_j·Σ q·a` and `M = Σ_j m_j·Σ a`; `acc = fma(f32(T), d·d_a, acc)`,
//! `acc_m += (dmin·d_a)·f32(M)`; the result `acc − acc_m`. So it is bit for bit the 8-row
//! kernel, the decode tiles and `vec_dot_q4_k`.

// Row, sub-block and token indices address several arrays together.
#![allow(clippy::needless_range_loop)]

use super::kquant::{k45_bytes, k45_values};
use super::packed::{PackedKernel, TT};
use super::{f16_at, load, prefetch_next, transpose8x4};
use crate::quant::QK_K;
use crate::quant::k4_5::unpack_scales_mins_k4;
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
pub(super) struct PackedK4x16 {
    /// f32 `d` of each row.
    d: [f32; ROWS],
    /// f32 `dmin` of each row.
    dmin: [f32; ROWS],
    /// `sc[j]`: each row's scale of sub-block `j`.
    sc: [[i32; ROWS]; 8],
    /// `mn[k]`: each row's mins of sub-blocks `2k` and `2k + 1` (an i16 pair).
    mn: [[i16; 2 * ROWS]; 4],
    /// `q[j][c]`: elements `4c..4c+4` of sub-block `j` of rows 0..16, as bytes, row after row.
    q: [[[u8; 4 * ROWS]; 8]; 8],
}

const PACKED_ZERO: PackedK4x16 = PackedK4x16 {
    d: [0.0; ROWS],
    dmin: [0.0; ROWS],
    sc: [[0; ROWS]; 8],
    mn: [[0; 2 * ROWS]; 4],
    q: [[[0; 4 * ROWS]; 8]; 8],
};

thread_local! {
    /// Each thread's repacked weights; grown, never shrunk.
    static SCRATCH: RefCell<Vec<PackedK4x16>> = const { RefCell::new(Vec::new()) };
}

/// Whether this CPU runs this kernel (checked once); `TESSERA_NO_VNNI` turns it off too.
pub(super) fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
            && std::env::var_os("TESSERA_NO_VNNI").is_none()
    })
}

/// Repacks rows `0..nr` (`nr ≤ 16`; the rest zero) at `w` (`wrb` apart) into `dst[0..nb]`.
///
/// # Safety
/// AVX2/FMA/F16C present; `nb` super-blocks readable in each of the `nr` rows; `dst` holds
/// `nb`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn repack16<const Q5: bool>(
    nb: usize,
    w: *const u8,
    wrb: usize,
    nr: usize,
    dst: *mut PackedK4x16,
) {
    let bytes = k45_bytes::<Q5>();
    for b in 0..nb {
        prefetch_next::<ROWS>(w, wrb, b, bytes);
        // SAFETY: `b < nb`, and `dst` holds `nb` super-blocks (precondition); nothing else refers
        // to them.
        let p = unsafe { &mut *dst.add(b) };
        *p = PACKED_ZERO;
        // sub[j][r]: sub-block j of row r, as 32 bytes.
        let mut sub = [[_mm256_setzero_si256(); ROWS]; 8];
        for r in 0..nr {
            // SAFETY: row `r < nr`, super-block `b < nb`: inside the rows (precondition).
            let x = unsafe { w.add(r * wrb + b * bytes) };
            // SAFETY: a Q4_K block opens with its f16 `d` and `dmin`.
            (p.d[r], p.dmin[r]) = unsafe { (f16_at(x), f16_at(x.add(2))) };
            // SAFETY: bytes `4..16` of the 144-byte block: its 12 packed scales and mins.
            let (sc, m) =
                unpack_scales_mins_k4(unsafe { std::slice::from_raw_parts(x.add(4), 12) });
            for j in 0..8 {
                p.sc[j][r] = sc[j] as i32;
            }
            for k in 0..4 {
                p.mn[k][2 * r] = m[2 * k] as i16;
                p.mn[k][2 * r + 1] = m[2 * k + 1] as i16;
            }
            for c in 0..4 {
                // SAFETY: `x` starts a whole readable block; AVX2 is present.
                (sub[2 * c][r], sub[2 * c + 1][r]) = unsafe { k45_values::<Q5>(x, c) };
            }
        }
        for (j, rows) in sub.iter().enumerate() {
            for half in 0..2 {
                let eight: [__m256i; 8] = std::array::from_fn(|r| rows[8 * half + r]);
                for (c, chunk) in transpose8x4(eight).into_iter().enumerate() {
                    let dst = p.q[j][c][32 * half..].as_mut_ptr();
                    // SAFETY: `p.q[j][c][32·half..]` is 32 bytes at a 32-aligned offset of the
                    // 64-aligned `PackedK4x16`.
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
    pk: *const PackedK4x16,
    a: *const u8,
    arb: usize,
    out: *mut f32,
    ldo: usize,
    nr: usize,
) {
    let mut acc = [_mm512_setzero_ps(); N];
    let mut acc_m = [_mm512_setzero_ps(); N];
    for b in 0..nb {
        // SAFETY: `b < nb`, and `pk` holds `nb` super-blocks (precondition).
        let p = unsafe { &*pk.add(b) };
        // SAFETY: token `t < N`, block `b < nb`: inside the activations (precondition).
        let y: [*const u8; N] = std::array::from_fn(|t| unsafe { a.add(t * arb + b * Q8_K_BYTES) });
        let mut isum = [_mm512_setzero_si512(); N];
        for j in 0..8 {
            let mut even = [_mm512_setzero_si512(); N];
            let mut odd = [_mm512_setzero_si512(); N];
            for c in 0..8 {
                // SAFETY: `p.q[j][c]` is 64 bytes at a 64-aligned offset of the 64-aligned struct.
                let wq = unsafe { _mm512_load_si512(p.q[j][c].as_ptr() as *const __m512i) };
                for t in 0..N {
                    let off = Y_QS + 32 * j + 4 * c;
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
            // SAFETY: `p.sc[j]` is 64 bytes at a 64-aligned offset of the 64-aligned struct.
            let sc = unsafe { _mm512_load_si512(p.sc[j].as_ptr() as *const __m512i) };
            for t in 0..N {
                let s = _mm512_add_epi32(even[t], odd[t]);
                isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(s, sc));
            }
        }
        // SAFETY: `p.d` and `p.dmin` are 64 bytes each at offsets 0 and 64 of the struct.
        let (d, dmin) = unsafe {
            (
                _mm512_load_ps(p.d.as_ptr()),
                _mm512_load_ps(p.dmin.as_ptr()),
            )
        };
        for t in 0..N {
            // Σ a over each 32-element sub-block (two 16-element block sums, ≤ 32·127).
            // SAFETY: bytes `260..292` of the 292-byte Q8_K block: its sixteen i16 sums.
            let bs = unsafe { load(y[t].add(Y_BSUMS)) };
            let sums = _mm256_madd_epi16(bs, _mm256_set1_epi16(1));
            let mut s = [0i32; 8];
            // SAFETY: `s` is 8 i32s, one 256-bit store.
            unsafe { _mm256_storeu_si256(s.as_mut_ptr() as *mut __m256i, sums) };
            let mut msum = _mm512_setzero_si512();
            for k in 0..4 {
                let pair = (s[2 * k] & 0xffff) | (s[2 * k + 1] << 16);
                // SAFETY: `p.mn[k]` is 64 bytes at a 64-aligned offset of the 64-aligned struct.
                let mn = unsafe { _mm512_load_si512(p.mn[k].as_ptr() as *const __m512i) };
                msum = _mm512_add_epi32(msum, _mm512_madd_epi16(mn, _mm512_set1_epi32(pair)));
            }
            // SAFETY: a Q8_K block opens with its f32 scale.
            let yd = _mm512_set1_ps(unsafe { (y[t] as *const f32).read_unaligned() });
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(d, yd), acc[t]);
            acc_m[t] = _mm512_add_ps(
                acc_m[t],
                _mm512_mul_ps(_mm512_mul_ps(dmin, yd), _mm512_cvtepi32_ps(msum)),
            );
        }
    }
    for t in 0..N {
        let mut v = [0.0f32; ROWS];
        // SAFETY: `v` is 16 f32s, one 512-bit store.
        unsafe { _mm512_storeu_ps(v.as_mut_ptr(), _mm512_sub_ps(acc[t], acc_m[t])) };
        for (r, &x) in v.iter().enumerate().take(nr) {
            // SAFETY: `t < N`, `r < nr`: an output the precondition makes writable.
            unsafe { *out.add(t * ldo + r) = x };
        }
    }
}

/// This file's kernel (16 rows per register) for [`super::packed::gemm_packed`], on Q4_K
/// (`Q5 = false`) or Q5_K rows: the repacked values are bytes either way (0..=31 fit
/// `vpdpbusd`'s unsigned side and its i32 sums alike).
pub(super) struct K45Zmm16<const Q5: bool>;

/// [`K45Zmm16`] on Q4_K rows.
pub(super) type Q4kZmm16 = K45Zmm16<false>;
/// [`K45Zmm16`] on Q5_K rows.
pub(super) type Q5kZmm16 = K45Zmm16<true>;

impl<const Q5: bool> PackedKernel for K45Zmm16<Q5> {
    type Block = PackedK4x16;
    const ROWS: usize = ROWS;

    fn scratch(len: usize) -> *mut PackedK4x16 {
        SCRATCH.with_borrow_mut(|pk| {
            if pk.len() < len {
                pk.resize(len, PACKED_ZERO);
            }
            pk.as_mut_ptr()
        })
    }

    unsafe fn repack(nb: usize, w: *const u8, wrb: usize, nr: usize, dst: *mut PackedK4x16) {
        // SAFETY: the trait's contract is `repack16`'s (AVX-512 F/BW/VNNI (and AVX2) present).
        unsafe { repack16::<Q5>(nb, w, wrb, nr, dst) }
    }

    unsafe fn tile(
        n: usize,
        nb: usize,
        pk: *const PackedK4x16,
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
