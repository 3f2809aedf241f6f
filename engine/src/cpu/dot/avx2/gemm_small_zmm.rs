//! AVX-512 VNNI prompt tile of the 32-element formats (Q4_0, Q4_1, Q5_0, Q8_0): 16 weight
//! rows per 512-bit register, for CPUs that have them.
//!
//! `gemm_small.rs` repacks its rows in groups of 8 (`Packed8`: four bytes of each row
//! interleaved, so one broadcast of four activation bytes meets 8 rows). This tile takes two
//! such groups at once: one 512-bit vector holds group A's four bytes of 8 rows beside group
//! B's, so one `vpdpbusd` adds 16 rows × 4 products into i32 lanes against one broadcast,
//! where the 256-bit tile adds 8. The repacking is unchanged.
//!
//! **Sum order:** the 8-row tiles', lane by lane: per block the exact integer
//! `Σ stored·a − OFFSET·Σa` (Q8_0: `Σ (a + 128)·q − 128·Σ q`), then `acc = fma(f32(·), d_r·d_t, acc)` (and, for Q4_1,
//! `acc = fma(m_r, s_t, acc)`). So it is bit for bit the 256-bit tiles and the decode tiles.

use super::blocks::u32_at;
use super::gemm_small::{ActBlock, Packed8, SmallBlock};
use std::arch::x86_64::*;

/// Rows per tile.
pub(super) const ROWS: usize = 16;

/// Group A's 32 bytes at `a` beside group B's at `b`, as one vector.
///
/// # Safety
/// `a` and `b` 32-byte aligned and readable for 32 bytes; AVX-512 F present.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn pair<T>(a: *const T, b: *const T) -> __m512i {
    // SAFETY: both are 32 readable, 32-aligned bytes (precondition).
    unsafe {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_load_si256(a as *const __m256i)),
            _mm256_load_si256(b as *const __m256i),
        )
    }
}

/// `out[t·ldo + r] = w_r · a_t` for the 16 rows of groups `pa` (rows 0..8) and `pb` (rows
/// 8..16), the first `nr` stored, and `TT` tokens of `act` (`nb` blocks apart).
///
/// # Safety
/// AVX-512 F/BW/VNNI present; `pa` and `pb` hold `nb` blocks each, `act` `TT · nb`; `out`
/// writable at every `t·ldo + r` for `t < TT`, `r < nr ≤ 16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn packed_tile16<B: SmallBlock, const TT: usize>(
    nb: usize,
    pa: *const Packed8,
    pb: *const Packed8,
    act: *const ActBlock,
    out: *mut f32,
    ldo: usize,
    nr: usize,
) {
    let mut acc = [_mm512_setzero_ps(); TT];
    for b in 0..nb {
        // SAFETY: `b < nb`, and `pa`, `pb` hold `nb` blocks (precondition).
        let (p, q) = unsafe { (&*pa.add(b), &*pb.add(b)) };
        // SAFETY: `t·nb + b < TT·nb`, which `act` holds (precondition).
        let ab: [&ActBlock; TT] = std::array::from_fn(|t| unsafe { &*act.add(t * nb + b) });
        let mut even = [_mm512_setzero_si512(); TT];
        let mut odd = [_mm512_setzero_si512(); TT];
        for j in 0..8 {
            // SAFETY: `q[j]` (`j < 8`) is 32 bytes at a 32-aligned offset of a 32-aligned `Packed8`.
            let wj = unsafe { pair(p.q[j].as_ptr(), q.q[j].as_ptr()) };
            for t in 0..TT {
                // SAFETY: bytes `4j..4j + 4` (`j < 8`) of the 32-byte `u`.
                let u = _mm512_set1_epi32(unsafe { u32_at(ab[t].u.as_ptr().add(4 * j)) });
                // The unsigned operand: the stored quants, or a `WIDE` format's offset
                // activations.
                let (x, y) = if B::WIDE { (u, wj) } else { (wj, u) };
                // Two chains per token: one is bound by the instruction's latency.
                if j % 2 == 0 {
                    even[t] = _mm512_dpbusd_epi32(even[t], x, y);
                } else {
                    odd[t] = _mm512_dpbusd_epi32(odd[t], x, y);
                }
            }
        }
        // SAFETY: `corr`, `d` and `m` are 32 bytes at 32-aligned offsets of 32-aligned `Packed8`s.
        let (corr, d) = unsafe {
            (
                pair(p.corr.as_ptr(), q.corr.as_ptr()),
                _mm512_castsi512_ps(pair(p.d.as_ptr(), q.d.as_ptr())),
            )
        };
        for t in 0..TT {
            let sum = _mm512_add_epi32(even[t], odd[t]);
            // Less what the packing added: each row's `128·Σq` (`WIDE`), or the token's
            // `OFFSET·Σa` (nothing for Q4_1).
            let i = if B::WIDE {
                _mm512_sub_epi32(sum, corr)
            } else if B::OFFSET != 0 {
                _mm512_sub_epi32(sum, _mm512_set1_epi32(ab[t].c))
            } else {
                sum
            };
            let s = _mm512_mul_ps(d, _mm512_set1_ps(ab[t].d));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), s, acc[t]);
            if B::HAS_MIN {
                // SAFETY: as `d`.
                let m = _mm512_castsi512_ps(unsafe { pair(p.m.as_ptr(), q.m.as_ptr()) });
                acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(ab[t].s), acc[t]);
            }
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        // SAFETY: `t < TT`: `t·ldo` is an output the precondition makes writable.
        let o = unsafe { out.add(t * ldo) };
        if nr == ROWS {
            // SAFETY: all 16 rows are stored, so `o..o + 16` is writable (precondition).
            unsafe { _mm512_storeu_ps(o, *acc) };
        } else {
            let mut v = [0.0f32; ROWS];
            // SAFETY: `v` is 16 f32s, one 512-bit store.
            unsafe { _mm512_storeu_ps(v.as_mut_ptr(), *acc) };
            for (r, &x) in v.iter().enumerate().take(nr) {
                // SAFETY: `r < nr`, so `o + r` is writable (precondition).
                unsafe { *o.add(r) = x };
            }
        }
    }
}
