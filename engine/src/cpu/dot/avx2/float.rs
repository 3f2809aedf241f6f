//! AVX2 float kernels: F32·F32 and F16·F16 dot products (four 8-lane FMA accumulators) and the
//! F16 activation conversion (F16C, round to nearest even like the reference).

use super::super::attn_tile::{EXP_MIN, EXP_TAYLOR, LN2_HI, LN2_LO};
use super::hsum_ps;
use crate::quant::float::f16_to_f32;
use std::arch::x86_64::*;

pub(super) fn vec_dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= 4 * n && a.len() >= 4 * n);
    let n = n.min(w.len() / 4).min(a.len() / 4);
    // SAFETY: the table holding this fn is handed out only with AVX2/FMA/F16C present; reads
    // stay inside the first `n` elements.
    let mut sum = unsafe { f32_impl(n / 32, w.as_ptr(), a.as_ptr()) };
    for i in n / 32 * 32..n {
        let x = f32::from_le_bytes(w[4 * i..4 * i + 4].try_into().unwrap());
        let y = f32::from_le_bytes(a[4 * i..4 * i + 4].try_into().unwrap());
        sum += x * y;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f32_impl(n32: usize, w: *const u8, a: *const u8) -> f32 {
    let (w, a) = (w as *const f32, a as *const f32);
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in 0..n32 {
        for (k, acc) in acc.iter_mut().enumerate() {
            let off = 32 * i + 8 * k;
            // SAFETY: `off + 8 <= 32·n32`, and `vec_dot_f32` passes `32·n32` readable f32s in each row.
            let (x, y) = unsafe { (_mm256_loadu_ps(w.add(off)), _mm256_loadu_ps(a.add(off))) };
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
    }
    hsum_ps(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ))
}

pub(super) fn vec_dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= 2 * n && a.len() >= 2 * n);
    let n = n.min(w.len() / 2).min(a.len() / 2);
    // SAFETY: as in `vec_dot_f32`.
    let mut sum = unsafe { f16_impl(n / 32, w.as_ptr(), a.as_ptr()) };
    for i in n / 32 * 32..n {
        sum += f16_to_f32([w[2 * i], w[2 * i + 1]]) * f16_to_f32([a[2 * i], a[2 * i + 1]]);
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_impl(n32: usize, w: *const u8, a: *const u8) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in 0..n32 {
        for (k, acc) in acc.iter_mut().enumerate() {
            let off = 2 * (32 * i + 8 * k);
            // SAFETY: the 8 f16s at element `off` lie below `32·n32`, which `vec_dot_f16` keeps
            // inside both rows.
            let (x, y) = unsafe {
                (
                    _mm256_cvtph_ps(_mm_loadu_si128(w.add(off) as *const __m128i)),
                    _mm256_cvtph_ps(_mm_loadu_si128(a.add(off) as *const __m128i)),
                )
            };
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
    }
    hsum_ps(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ))
}

pub(super) fn quantize_row_f16(src: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(dst.len(), 2 * src.len());
    let n = src.len().min(dst.len() / 2);
    // SAFETY: as in `vec_dot_f32`; writes stay inside the first `n` elements of `dst`.
    unsafe { f16_rows(n / 8, src.as_ptr(), dst.as_mut_ptr()) };
    for i in n / 8 * 8..n {
        dst[2 * i..2 * i + 2].copy_from_slice(&half::f16::from_f32(src[i]).to_bits().to_le_bytes());
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_rows(n8: usize, src: *const f32, dst: *mut u8) {
    for i in 0..n8 {
        // SAFETY: elements `8i..8i + 8` with `i < n8`: inside the `8·n8` f32s of `src` and f16s
        // of `dst` that `quantize_row_f16` guarantees.
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src.add(8 * i)));
            _mm_storeu_si128(dst.add(16 * i) as *mut __m128i, h);
        }
    }
}

pub(super) fn dot_f32_f16(q: &[f32], k: &[half::f16]) -> f32 {
    let n = q.len().min(k.len());
    // SAFETY: F16_OPS is handed out only with AVX2/FMA/F16C present; reads stay in `..n`.
    let mut s = unsafe { dot_f32_f16_impl(n / 16, q.as_ptr(), k.as_ptr() as *const u8) };
    for i in n / 16 * 16..n {
        s += q[i] * k[i].to_f32();
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32_f16_impl(n16: usize, q: *const f32, k: *const u8) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 2];
    for i in 0..n16 {
        for (h, acc) in acc.iter_mut().enumerate() {
            let off = 16 * i + 8 * h;
            // SAFETY: the 8 elements at `off` lie below `16·n16`, which `dot_f32_f16` keeps inside `q`
            // and `k`.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(q.add(off)),
                    _mm256_cvtph_ps(_mm_loadu_si128(k.add(2 * off) as *const __m128i)),
                )
            };
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
    }
    hsum_ps(_mm256_add_ps(acc[0], acc[1]))
}

pub(super) fn axpy_f16(out: &mut [f32], w: f32, v: &[half::f16]) {
    let n = out.len().min(v.len());
    // SAFETY: as in `dot_f32_f16`; reads and writes stay in `..n`.
    unsafe { axpy_f16_impl(n / 8, out.as_mut_ptr(), w, v.as_ptr() as *const u8) };
    for i in n / 8 * 8..n {
        out[i] += w * v[i].to_f32();
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy_f16_impl(n8: usize, out: *mut f32, w: f32, v: *const u8) {
    let wv = _mm256_set1_ps(w);
    for i in 0..n8 {
        // SAFETY: elements `8i..8i + 8` with `i < n8`: inside the `8·n8` that `axpy_f16`
        // guarantees in `out` and `v`.
        unsafe {
            let x = _mm256_cvtph_ps(_mm_loadu_si128(v.add(16 * i) as *const __m128i));
            let o = out.add(8 * i);
            _mm256_storeu_ps(o, _mm256_fmadd_ps(wv, x, _mm256_loadu_ps(o)));
        }
    }
}

pub(super) fn exp_sum(s: &mut [f32], max: f32) -> f32 {
    let n = s.len();
    // SAFETY: F16_OPS is handed out only with AVX2/FMA/F16C present; reads and writes stay in
    // `..n`.
    let mut sum = unsafe { exp_sum_impl(n / 8, s.as_mut_ptr(), max) };
    for x in &mut s[n / 8 * 8..] {
        *x = (*x - max).exp();
        sum += *x;
    }
    sum
}

/// `s[i] = exp(s[i] − max)` for `8·n8` elements, returning their sum. `exp` by range reduction
/// to `2^k · e^r` with |r| ≤ ln2/2 and a degree-6 Taylor polynomial of `e^r` (relative error
/// about 1e-7, below f32 rounding); arguments under −87 give about 1e-38 (never infinities).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp_sum_impl(n8: usize, s: *mut f32, max: f32) -> f32 {
    // The constants of the scalar `exp_poly` (and the attention tiles' `exp`): one polynomial.
    let m = _mm256_set1_ps(max);
    let lo = _mm256_set1_ps(EXP_MIN);
    let log2e = _mm256_set1_ps(std::f32::consts::LOG2_E);
    let ln2_hi = _mm256_set1_ps(LN2_HI);
    let ln2_lo = _mm256_set1_ps(LN2_LO);
    let c = EXP_TAYLOR.map(|x: f32| _mm256_set1_ps(x));
    let mut acc = _mm256_setzero_ps();
    for i in 0..n8 {
        // SAFETY: `8i + 8 <= 8·n8`, so `p` stays inside the `8·n8` elements `exp_sum` passes.
        let p = unsafe { s.add(8 * i) };
        // SAFETY: `p` points at 8 of the `8·n8` elements `exp_sum` passes.
        let x = _mm256_max_ps(_mm256_sub_ps(unsafe { _mm256_loadu_ps(p) }, m), lo);
        let k = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, log2e),
        );
        let r = _mm256_fnmadd_ps(k, ln2_lo, _mm256_fnmadd_ps(k, ln2_hi, x));
        let mut e = c[0];
        for &ci in &c[1..] {
            e = _mm256_fmadd_ps(e, r, ci);
        }
        let two_k = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(k),
            _mm256_set1_epi32(127),
        )));
        let y = _mm256_mul_ps(e, two_k);
        // SAFETY: the 8 elements just read at `p`.
        unsafe { _mm256_storeu_ps(p, y) };
        acc = _mm256_add_ps(acc, y);
    }
    hsum_ps(acc)
}

pub(super) fn wsum_f16(out: &mut [f32], w: &[f32], v: &[&[half::f16]]) {
    let n = v.iter().fold(out.len(), |n, r| n.min(r.len()));
    let keys = w.len().min(v.len());
    // SAFETY: as in `dot_f32_f16`; every row holds at least `n` elements, and reads and
    // writes stay in `..n`.
    unsafe { wsum_impl::<8>(0, n / 64, out.as_mut_ptr(), &w[..keys], &v[..keys]) };
    // SAFETY: as above; this pass covers the 8-element blocks from `n / 64 * 64` up to
    // `n / 8 * 8`.
    unsafe {
        wsum_impl::<1>(
            n / 64 * 64,
            n % 64 / 8,
            out.as_mut_ptr(),
            &w[..keys],
            &v[..keys],
        )
    };
    for i in n / 8 * 8..n {
        for (&wj, vj) in w.iter().zip(v) {
            out[i] += wj * vj[i].to_f32();
        }
    }
}

/// `out[d] += Σ_j w[j]·v[j][d]` for `blocks` blocks of `8·A` elements from `d0`, the block's
/// `A` accumulators in registers while every row passes (the same FMA sequence per element as
/// one `axpy_f16` per row).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn wsum_impl<const A: usize>(
    d0: usize,
    blocks: usize,
    out: *mut f32,
    w: &[f32],
    v: &[&[half::f16]],
) {
    for b in 0..blocks {
        let d = d0 + 8 * A * b;
        let mut acc: [__m256; A] =
            // SAFETY: the caller's blocks end at or before `n / 8 * 8`, and `out` holds `n`.
            std::array::from_fn(|k| unsafe { _mm256_loadu_ps(out.add(d + 8 * k)) });
        for (&wj, vj) in w.iter().zip(v) {
            let wv = _mm256_set1_ps(wj);
            // SAFETY: `d < n`, and every value row holds at least `n` elements (see `wsum_f16`).
            let p = unsafe { vj.as_ptr().add(d) } as *const u8;
            for (k, acc) in acc.iter_mut().enumerate() {
                let x =
                    // SAFETY: the `8·A` f16s from `d` lie inside the row (`d + 8·A <= n`).
                    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.add(16 * k) as *const __m128i) });
                *acc = _mm256_fmadd_ps(wv, x, *acc);
            }
        }
        for (k, acc) in acc.iter().enumerate() {
            // SAFETY: the same block of `out` that was loaded above.
            unsafe { _mm256_storeu_ps(out.add(d + 8 * k), *acc) };
        }
    }
}

/// Queries per pass of [`dots_f32_f16`] and [`wsums_f16`] (their accumulators fill the
/// registers).
const QUERIES: usize = 4;

pub(super) fn dots_f32_f16(q: &[f32], d: usize, k: &[&[half::f16]], s: &mut [f32], ld: usize) {
    let g = q.len() / d;
    assert!(
        k.iter().all(|kj| kj.len() >= d),
        "key rows of the head width"
    );
    assert!(g == 0 || s.len() >= (g - 1) * ld + k.len());
    for g0 in (0..g).step_by(QUERIES) {
        let (qs, ss) = (&q[g0 * d..], &mut s[g0 * ld..]);
        // SAFETY: F16_OPS is handed out only with AVX2/FMA/F16C present; the asserts keep
        // `QUERIES` (or fewer) query rows, every key row and every score in bounds.
        unsafe {
            match (g - g0).min(QUERIES) {
                1 => dots_impl::<1>(qs, d, k, ss, ld),
                2 => dots_impl::<2>(qs, d, k, ss, ld),
                3 => dots_impl::<3>(qs, d, k, ss, ld),
                _ => dots_impl::<4>(qs, d, k, ss, ld),
            }
        }
    }
}

/// [`dot_f32_f16`] of `G` queries with every key, each key converted once.
///
/// # Safety
/// AVX2/FMA/F16C present; `q` holds `G·d`, every key `d`, `s` every `g·ld + j`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots_impl<const G: usize>(
    q: &[f32],
    d: usize,
    k: &[&[half::f16]],
    s: &mut [f32],
    ld: usize,
) {
    let qp = q.as_ptr();
    for (j, kj) in k.iter().enumerate() {
        let kp = kj.as_ptr() as *const u8;
        let mut acc = [[_mm256_setzero_ps(); 2]; G];
        for i in 0..d / 16 {
            for h in 0..2 {
                let off = 16 * i + 8 * h;
                let y =
                    // SAFETY: f16s `off..off + 8` lie below `d`, which key row `j` holds (precondition).
                    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(kp.add(2 * off) as *const __m128i) });
                for (g, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: `g·d + off + 8 <= G·d`, which `q` holds (precondition).
                    let x = unsafe { _mm256_loadu_ps(qp.add(g * d + off)) };
                    acc[h] = _mm256_fmadd_ps(x, y, acc[h]);
                }
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            let mut v = hsum_ps(_mm256_add_ps(acc[0], acc[1]));
            for i in d / 16 * 16..d {
                v += q[g * d + i] * kj[i].to_f32();
            }
            s[g * ld + j] = v;
        }
    }
}

pub(super) fn wsums_f16(out: &mut [f32], n: usize, w: &[f32], ld: usize, v: &[&[half::f16]]) {
    let g = out.len() / n;
    let keys = v.len();
    assert!(
        v.iter().all(|vj| vj.len() >= n),
        "value rows of the head width"
    );
    assert!(g == 0 || w.len() >= (g - 1) * ld + keys);
    for g0 in (0..g).step_by(QUERIES) {
        let gs = (g - g0).min(QUERIES);
        let (o, ws) = (&mut out[g0 * n..(g0 + gs) * n], &w[g0 * ld..]);
        // SAFETY: as in `dots_f32_f16`: `gs` outputs of `n`, their weights, `n` per value row.
        unsafe {
            match gs {
                1 => wsums_impl::<1>(o, n, ws, ld, v),
                2 => wsums_impl::<2>(o, n, ws, ld, v),
                3 => wsums_impl::<3>(o, n, ws, ld, v),
                _ => wsums_impl::<4>(o, n, ws, ld, v),
            }
        }
    }
}

/// [`wsum_f16`] of `G` outputs over the same value rows, each row converted once: blocks of
/// 16 elements (then 8) of all `G` outputs in registers while every row passes.
///
/// # Safety
/// AVX2/FMA/F16C present; `out` holds `G·n`, `w` every `g·ld + j`, every row `n`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn wsums_impl<const G: usize>(
    out: &mut [f32],
    n: usize,
    w: &[f32],
    ld: usize,
    v: &[&[half::f16]],
) {
    let op = out.as_mut_ptr();
    // SAFETY: the two calls cover the 8-element blocks below `n / 8 * 8` of each output,
    // within this fn's own precondition (features present, `out`, `w` and rows in bounds).
    unsafe {
        wsums_blocks::<G, 2>(0, n / 16, op, n, w, ld, v);
        wsums_blocks::<G, 1>(n / 16 * 16, n % 16 / 8, op, n, w, ld, v);
    }
    for g in 0..G {
        for i in n / 8 * 8..n {
            for (j, vj) in v.iter().enumerate() {
                out[g * n + i] += w[g * ld + j] * vj[i].to_f32();
            }
        }
    }
}

/// `blocks` blocks of `8·A` elements from `d0` of [`wsums_impl`].
///
/// # Safety
/// As in [`wsums_impl`], the blocks inside `n`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn wsums_blocks<const G: usize, const A: usize>(
    d0: usize,
    blocks: usize,
    out: *mut f32,
    n: usize,
    w: &[f32],
    ld: usize,
    v: &[&[half::f16]],
) {
    for b in 0..blocks {
        let d = d0 + 8 * A * b;
        let mut acc: [[__m256; A]; G] = std::array::from_fn(|g| {
            // SAFETY: `g·n + d + 8·A <= G·n` (the blocks stay inside `n`), which `out` holds.
            std::array::from_fn(|k| unsafe { _mm256_loadu_ps(out.add(g * n + d + 8 * k)) })
        });
        for (j, vj) in v.iter().enumerate() {
            // SAFETY: `d < n`, and every value row holds at least `n` elements (precondition).
            let p = unsafe { vj.as_ptr().add(d) } as *const u8;
            let x: [__m256; A] = std::array::from_fn(|k| {
                // SAFETY: the `8·A` f16s from `d` lie inside the row (`d + 8·A <= n`).
                _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.add(16 * k) as *const __m128i) })
            });
            for (g, acc) in acc.iter_mut().enumerate() {
                // SAFETY: `g < G` and `j < v.len()`, and `w` holds every `g·ld + j` (precondition).
                let wv = _mm256_set1_ps(unsafe { *w.get_unchecked(g * ld + j) });
                for (acc, x) in acc.iter_mut().zip(&x) {
                    *acc = _mm256_fmadd_ps(wv, *x, *acc);
                }
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            for (k, acc) in acc.iter().enumerate() {
                // SAFETY: the same block of `out` that was loaded above.
                unsafe { _mm256_storeu_ps(out.add(g * n + d + 8 * k), *acc) };
            }
        }
    }
}
