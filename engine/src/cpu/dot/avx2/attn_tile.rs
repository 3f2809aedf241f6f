//! Tiled prompt attention ([`TileKernel`]) on 512-bit vectors (AVX-512 F): the 16 query rows
//! of a tile are the 16 lanes of a `zmm`, so a block's scores are 16 accumulators (one per
//! key) fed by one query load and 16 broadcast key elements per dimension, the softmax runs
//! down the lanes, and the value product is 16 accumulators (one per output dimension) fed by
//! one load of weights and 16 broadcast value elements per key. Bit for bit [`TILE_SCALAR`]
//! (the same fused multiply-adds in the same order, the same `exp`).
//!
//! [`TILE_SCALAR`]: super::super::TILE_SCALAR

use super::super::attn_tile::{EXP_MIN, EXP_TAYLOR, LN2_HI, LN2_LO};
use super::super::{Isa, TILE_KEYS, TILE_ROWS, TileKernel, TileState};
use half::f16;
use std::arch::x86_64::*;

const R: usize = TILE_ROWS;

/// The AVX-512 tiled-attention kernels (handed out only where [`available`]).
pub(in crate::cpu::dot) static TILE_ZMM: TileKernel = TileKernel {
    isa: Isa::Avx2,
    widen,
    scores,
    softmax_pv,
};

/// Whether this CPU runs these kernels (AVX-512 F and F16C; checked once).
pub(in crate::cpu::dot) fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("f16c"))
}

fn widen(rows: &[&[f16]], width: usize, dst: &mut [f32]) {
    assert!(width.is_multiple_of(16), "rows of whole vectors");
    assert!(rows.iter().all(|r| r.len() >= width) && dst.len() >= rows.len() * width);
    // SAFETY: `available()` was checked before this table was handed out; the asserts keep
    // every read inside a row and every write inside `dst`.
    unsafe { widen_impl(rows, width, dst.as_mut_ptr()) }
}

/// # Safety
/// AVX-512 F present; every row holds `width` (a multiple of 16), `dst` `rows.len() · width`.
#[target_feature(enable = "avx512f")]
unsafe fn widen_impl(rows: &[&[f16]], width: usize, dst: *mut f32) {
    for (j, row) in rows.iter().enumerate() {
        let src = row.as_ptr() as *const __m256i;
        for i in 0..width / 16 {
            // SAFETY: the 16 halves `16i..16i + 16 ≤ width` of row `j` and the same 16
            // floats of row `j` of `dst` (precondition).
            unsafe {
                let x = _mm512_cvtph_ps(_mm256_loadu_si256(src.add(i)));
                _mm512_storeu_ps(dst.add(j * width + 16 * i), x);
            }
        }
    }
}

fn scores(qt: &[f32], dk: usize, k: &[f32], n: usize, scale: f32, s: &mut [f32]) {
    assert!(n <= TILE_KEYS, "at most a block of keys");
    assert!(qt.len() >= dk * R && k.len() >= n.next_multiple_of(16) * dk);
    assert!(s.len() >= TILE_KEYS * R);
    // SAFETY: `available()` holds (see `widen`); the asserts bound every access below.
    unsafe { scores_impl(qt.as_ptr(), dk, k.as_ptr(), n, scale, s.as_mut_ptr()) }
}

/// # Safety
/// AVX-512 F present; `qt` holds `dk · R`, `k` `n` rounded up to 16 rows of `dk`, `s` `n`
/// rounded up to 16 rows of `R`.
#[target_feature(enable = "avx512f")]
unsafe fn scores_impl(qt: *const f32, dk: usize, k: *const f32, n: usize, scale: f32, s: *mut f32) {
    let sc = _mm512_set1_ps(scale);
    for j0 in (0..n).step_by(16) {
        // SAFETY: keys `j0..j0 + 16` and their score rows lie inside `k` and `s`, and the
        // queries' `d < dk` rows inside `qt` (precondition).
        unsafe {
            let kp = k.add(j0 * dk);
            let mut acc = [_mm512_setzero_ps(); 16];
            for d in 0..dk {
                let q = _mm512_loadu_ps(qt.add(d * R));
                for (jj, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(q, _mm512_set1_ps(*kp.add(jj * dk + d)), *acc);
                }
            }
            for (jj, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(s.add((j0 + jj) * R), _mm512_mul_ps(*acc, sc));
            }
        }
    }
}

fn softmax_pv(
    s: &mut [f32],
    pk: &[i32],
    window: Option<u32>,
    v: &[f32],
    dv: usize,
    st: &mut TileState,
) {
    let n = pk.len();
    assert!(n <= TILE_KEYS && s.len() >= n * R, "a block's scores");
    assert!(dv.is_multiple_of(16) && v.len() >= n * dv && st.ot.len() >= dv * R);
    // SAFETY: `available()` holds (see `widen`); the asserts bound every access below.
    unsafe { softmax_pv_impl(s.as_mut_ptr(), pk, window, v.as_ptr(), dv, st) }
}

/// # Safety
/// AVX-512 F present; `s` holds `pk.len() ≤ TILE_KEYS` rows of `R`, `v` as many rows of `dv`
/// (a multiple of 16), `st.ot` `dv · R`.
#[target_feature(enable = "avx512f")]
unsafe fn softmax_pv_impl(
    s: *mut f32,
    pk: &[i32],
    window: Option<u32>,
    v: *const f32,
    dv: usize,
    st: &mut TileState,
) {
    let n = pk.len();
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let one = _mm512_set1_ps(1.0);
    // SAFETY: `pq` is `R` i32s.
    let pq = unsafe { _mm512_loadu_si512(st.pq.as_ptr() as *const __m512i) };
    // A window past i32::MAX hides nothing a position can reach.
    let w = window
        .filter(|&w| w <= i32::MAX as u32)
        .map(|w| _mm512_set1_epi32(w as i32));
    // Which rows see each key, and the block's maximum over what they see.
    let mut vis = [0 as __mmask16; TILE_KEYS];
    let mut bm = ninf;
    for (j, &pkj) in pk.iter().enumerate() {
        let kv = _mm512_set1_epi32(pkj);
        let mut mk = if pkj < 0 {
            0
        } else {
            _mm512_cmple_epi32_mask(kv, pq)
        };
        if let Some(w) = w {
            mk &= _mm512_cmplt_epi32_mask(_mm512_sub_epi32(pq, kv), w);
        }
        vis[j] = mk;
        // SAFETY: score row `j < n` (precondition).
        let sj = unsafe { _mm512_loadu_ps(s.add(j * R)) };
        bm = _mm512_max_ps(bm, _mm512_mask_blend_ps(mk, ninf, sj));
    }
    // SAFETY: `m` and `l` are `R` floats.
    let (m_old, l_old) = unsafe {
        (
            _mm512_loadu_ps(st.m.as_ptr()),
            _mm512_loadu_ps(st.l.as_ptr()),
        )
    };
    let m = _mm512_max_ps(m_old, bm);
    // Rows that have seen no key yet keep everything as it is.
    let dead = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(m, ninf);
    let c = _mm512_mask_blend_ps(dead, exp512(_mm512_sub_ps(m_old, m)), one);
    let mut sum = _mm512_setzero_ps();
    for (j, &mk) in vis.iter().enumerate().take(n) {
        // SAFETY: score row `j < n` (precondition).
        unsafe {
            let p =
                _mm512_maskz_mov_ps(mk, exp512(_mm512_sub_ps(_mm512_loadu_ps(s.add(j * R)), m)));
            _mm512_storeu_ps(s.add(j * R), p);
            sum = _mm512_add_ps(sum, p);
        }
    }
    let l = _mm512_add_ps(_mm512_mul_ps(l_old, c), sum);
    // SAFETY: as above.
    unsafe {
        _mm512_storeu_ps(st.l.as_mut_ptr(), l);
        _mm512_storeu_ps(st.m.as_mut_ptr(), m);
    }
    let ot = st.ot.as_mut_ptr();
    if _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(c, one) != 0 {
        for d in 0..dv {
            // SAFETY: row `d < dv` of the `dv · R` outputs (precondition).
            unsafe {
                _mm512_storeu_ps(
                    ot.add(d * R),
                    _mm512_mul_ps(_mm512_loadu_ps(ot.add(d * R)), c),
                )
            };
        }
    }
    for d0 in (0..dv).step_by(16) {
        // SAFETY: output rows `d0..d0 + 16 ≤ dv`, weight rows `j < n` and value elements
        // `j·dv + d0 + dd` with `dd < 16` (precondition).
        unsafe {
            let mut acc: [__m512; 16] =
                std::array::from_fn(|dd| _mm512_loadu_ps(ot.add((d0 + dd) * R)));
            for j in 0..n {
                let p = _mm512_loadu_ps(s.add(j * R));
                let vj = v.add(j * dv + d0);
                for (dd, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(p, _mm512_set1_ps(*vj.add(dd)), *acc);
                }
            }
            for (dd, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(ot.add((d0 + dd) * R), *acc);
            }
        }
    }
}

/// [`exp_poly`](super::super::attn_tile::exp_poly) of 16 lanes, bit for bit.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp512(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(EXP_MIN));
    let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(
        k,
        _mm512_set1_ps(LN2_LO),
        _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_HI), x),
    );
    let mut e = _mm512_set1_ps(EXP_TAYLOR[0]);
    for &c in &EXP_TAYLOR[1..] {
        e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(c));
    }
    let two_k = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(k),
        _mm512_set1_epi32(127),
    )));
    _mm512_mul_ps(e, two_k)
}
