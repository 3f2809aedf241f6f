//! ggml's per-sub-block scale searches run for several sub-blocks of a super-block at once, one
//! sub-block per lane of an AVX2 register. Each lane does exactly the float operations, in
//! exactly the order, that [`make_qkx2_quants`] and [`make_q3_quants`] do for its sub-block (its
//! trials one after the other, its sums over its elements in order; no FMA), so the bytes are
//! ggml's; only the sub-blocks advance together. Branches become per-lane selects: a lane whose
//! search is over keeps its result while the others go on. Without AVX2 the one-sub-block
//! functions run in turn.

use super::kutil::{Qkx2, make_q3_quants, make_qkx2_quants};

/// Sub-blocks searched side by side by [`make_qkx2_quants_x8`].
pub(crate) const QKX2_LANES: usize = 8;

/// Sub-blocks searched side by side by [`make_q3_quants_x16`].
pub(crate) const Q3_LANES: usize = 16;

/// [`make_qkx2_quants`] for the eight sub-blocks of `N` elements in `x` (sub-block `j` is
/// `x[N·j..N·j + N]`, its weights and values at the same place in `weights` and `l_out`):
/// sub-block `j`'s `(scale, min)` go to `scales[j]`, `mins[j]`.
pub(crate) fn make_qkx2_quants_x8<const N: usize>(
    p: &Qkx2,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    scales: &mut [f32; QKX2_LANES],
    mins: &mut [f32; QKX2_LANES],
) {
    assert!(
        x.len() == QKX2_LANES * N && weights.len() == x.len() && l_out.len() == x.len(),
        "eight sub-blocks of {N}"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { avx2::qkx2_x8::<N>(p, x, weights, l_out, scales, mins) };
        return;
    }
    for j in 0..QKX2_LANES {
        let r = N * j..N * j + N;
        (scales[j], mins[j]) =
            make_qkx2_quants(p, &x[r.clone()], &weights[r.clone()], &mut l_out[r]);
    }
}

/// [`make_q3_quants`] for the sixteen sub-blocks of 16 elements of a Q3_K block: sub-block
/// `j`'s values `l + nmax` go to `l_out[16·j..16·j + 16]`, its scale to `scales[j]`.
pub(crate) fn make_q3_quants_x16(
    nmax: i32,
    x: &[f32; 16 * Q3_LANES],
    l_out: &mut [i8; 16 * Q3_LANES],
    scales: &mut [f32; Q3_LANES],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { avx2::q3_x16(nmax, x, l_out, scales) };
        return;
    }
    for j in 0..Q3_LANES {
        let r = 16 * j..16 * j + 16;
        scales[j] = make_q3_quants(nmax, &x[r.clone()], &mut l_out[r]);
    }
}

/// The AVX2 kernels: eight sub-blocks in the eight lanes of a `__m256`.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Qkx2;

    /// ggml's `GROUP_MAX_EPS` (as in `kutil`): below this a group counts as all zeros.
    const GROUP_MAX_EPS: f32 = 1e-15;

    /// Eight floats as one register.
    #[inline(always)]
    fn v8(a: [f32; 8]) -> __m256 {
        // SAFETY: `[f32; 8]` and `__m256` are both 32 bytes of plain floats.
        unsafe { std::mem::transmute::<[f32; 8], __m256>(a) }
    }

    /// A register as its eight floats.
    #[inline(always)]
    fn f8(v: __m256) -> [f32; 8] {
        // SAFETY: `[f32; 8]` and `__m256` are both 32 bytes of plain floats.
        unsafe { std::mem::transmute::<__m256, [f32; 8]>(v) }
    }

    /// A register as its eight 32-bit integers.
    #[inline(always)]
    fn i8x(v: __m256i) -> [i32; 8] {
        // SAFETY: `[i32; 8]` and `__m256i` are both 32 bytes of plain integers.
        unsafe { std::mem::transmute::<__m256i, [i32; 8]>(v) }
    }

    /// Element `i` of the eight sub-blocks of `n` elements in `x`, for every `i < N`.
    #[inline(always)]
    fn transpose<const N: usize>(x: &[f32], n: usize) -> [__m256; N] {
        std::array::from_fn(|i| v8(std::array::from_fn(|j| x[n * j + i])))
    }

    /// ggml's `nearest_int` (round half to even through the `1.5·2²³` trick) of each lane,
    /// clamped to `lo..=hi` as integers.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn nearest_clamped(v: __m256, lo: __m256i, hi: __m256i) -> __m256i {
        let t = _mm256_add_ps(v, _mm256_set1_ps(12_582_912.0));
        let bits = _mm256_and_si256(_mm256_castps_si256(t), _mm256_set1_epi32(0x007f_ffff));
        let i = _mm256_sub_epi32(bits, _mm256_set1_epi32(0x0040_0000));
        _mm256_min_epi32(_mm256_max_epi32(i, lo), hi)
    }

    /// `if mask { b } else { a }` per lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn select(a: __m256, b: __m256, mask: __m256) -> __m256 {
        _mm256_blendv_ps(a, b, mask)
    }

    /// The kernel of [`make_qkx2_quants_x8`](super::make_qkx2_quants_x8): its operations are
    /// those of `kutil`'s `make_qkx2_quants_body`, lane by lane.
    #[target_feature(enable = "avx2")]
    pub(super) fn qkx2_x8<const N: usize>(
        p: &Qkx2,
        x: &[f32],
        weights: &[f32],
        l_out: &mut [u8],
        out_scale: &mut [f32; 8],
        out_min: &mut [f32; 8],
    ) {
        let xv = transpose::<N>(x, N);
        let wv = transpose::<N>(weights, N);
        let zero = _mm256_setzero_ps();
        let (lo, hi) = (_mm256_setzero_si256(), _mm256_set1_epi32(p.nmax));
        let nmax = p.nmax as f32;
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let err = |diff: __m256| {
            if p.use_mad {
                _mm256_and_ps(diff, abs_mask)
            } else {
                _mm256_mul_ps(diff, diff)
            }
        };
        let quant = |iscale: __m256, v: __m256, min: __m256| {
            nearest_clamped(_mm256_mul_ps(iscale, _mm256_sub_ps(v, min)), lo, hi)
        };

        let (mut min, mut max, mut sum_w) = (xv[0], xv[0], wv[0]);
        let mut sum_x = _mm256_mul_ps(sum_w, xv[0]);
        for i in 1..N {
            let v = xv[i];
            min = select(min, v, _mm256_cmp_ps::<_CMP_LT_OQ>(v, min));
            max = select(max, v, _mm256_cmp_ps::<_CMP_GT_OQ>(v, max));
            sum_w = _mm256_add_ps(sum_w, wv[i]);
            sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(wv[i], v));
        }
        min = select(min, zero, _mm256_cmp_ps::<_CMP_GT_OQ>(min, zero));
        let flat = _mm256_cmp_ps::<_CMP_EQ_OQ>(max, min);
        let flat_min = min;
        // The first guess, then each trial in ggml's order; a winning trial's `(iscale, min)`
        // is kept to round the values with at the end.
        let mut best_iscale = _mm256_div_ps(_mm256_set1_ps(nmax), _mm256_sub_ps(max, min));
        let mut best_min = min;
        let mut scale = _mm256_div_ps(_mm256_set1_ps(1.0), best_iscale);
        let mut best_error = zero;
        for i in 0..N {
            let l = _mm256_cvtepi32_ps(quant(best_iscale, xv[i], min));
            let diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, l), min), xv[i]);
            best_error = _mm256_add_ps(best_error, _mm256_mul_ps(wv[i], err(diff)));
        }
        if p.nstep >= 1 {
            let mut laux = [zero; N];
            for is in 0..=p.nstep {
                let num = _mm256_set1_ps(p.rmin + p.rdelta * is as f32 + nmax);
                let iscale = _mm256_div_ps(num, _mm256_sub_ps(max, min));
                let (mut sum_l, mut sum_l2, mut sum_xl) = (zero, zero, zero);
                for i in 0..N {
                    let lf = _mm256_cvtepi32_ps(quant(iscale, xv[i], min));
                    laux[i] = lf;
                    let wl = _mm256_mul_ps(wv[i], lf);
                    sum_l = _mm256_add_ps(sum_l, wl);
                    sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, lf));
                    sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, xv[i]));
                }
                let det = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
                let usable = _mm256_cmp_ps::<_CMP_GT_OQ>(det, zero);
                let s = _mm256_div_ps(
                    _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)),
                    det,
                );
                let m = _mm256_div_ps(
                    _mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)),
                    det,
                );
                let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(m, zero);
                let this_min = select(m, zero, positive);
                let this_scale = select(s, _mm256_div_ps(sum_xl, sum_l2), positive);
                let mut cur_error = zero;
                for i in 0..N {
                    let diff = _mm256_sub_ps(
                        _mm256_add_ps(_mm256_mul_ps(this_scale, laux[i]), this_min),
                        xv[i],
                    );
                    cur_error = _mm256_add_ps(cur_error, _mm256_mul_ps(wv[i], err(diff)));
                }
                let win = _mm256_and_ps(usable, _mm256_cmp_ps::<_CMP_LT_OQ>(cur_error, best_error));
                best_error = select(best_error, cur_error, win);
                scale = select(scale, this_scale, win);
                best_iscale = select(best_iscale, iscale, win);
                best_min = select(best_min, min, win);
                min = select(min, this_min, win);
            }
        }
        let flat = _mm256_movemask_ps(flat);
        let l: [[i32; 8]; N] = std::array::from_fn(|i| i8x(quant(best_iscale, xv[i], best_min)));
        let (scale, min, flat_min) = (f8(scale), f8(min), f8(flat_min));
        for j in 0..8 {
            let is_flat = flat >> j & 1 != 0;
            for i in 0..N {
                l_out[N * j + i] = if is_flat { 0 } else { l[i][j] as u8 };
            }
            out_scale[j] = if is_flat { 0.0 } else { scale[j] };
            out_min[j] = -(if is_flat { flat_min[j] } else { min[j] });
        }
    }

    /// The kernel of [`make_q3_quants_x16`](super::make_q3_quants_x16): its operations are
    /// those of `kutil`'s `make_q3_quants`, lane by lane, sub-blocks 0–7 in one register and
    /// 8–15 in another (two independent chains, for the CPU to overlap).
    #[target_feature(enable = "avx2")]
    pub(super) fn q3_x16(nmax: i32, x: &[f32; 256], l_out: &mut [i8; 256], scales: &mut [f32; 16]) {
        const N: usize = 16;
        const H: usize = 2;
        let xv: [[__m256; N]; H] = std::array::from_fn(|h| transpose::<N>(&x[128 * h..], N));
        let zero = _mm256_setzero_ps();
        let (lo, hi) = (_mm256_set1_epi32(-nmax), _mm256_set1_epi32(nmax - 1));
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let (mut max, mut amax) = ([zero; H], [zero; H]);
        for i in 0..N {
            for h in 0..H {
                let v = xv[h][i];
                let a = _mm256_and_ps(v, abs_mask);
                let bigger = _mm256_cmp_ps::<_CMP_GT_OQ>(a, amax[h]);
                amax[h] = select(amax[h], a, bigger);
                max[h] = select(max[h], v, bigger);
            }
        }
        let eps = _mm256_set1_ps(GROUP_MAX_EPS);
        let all_zero: [__m256; H] =
            std::array::from_fn(|h| _mm256_cmp_ps::<_CMP_LT_OQ>(amax[h], eps));
        let iscale: [__m256; H] =
            std::array::from_fn(|h| _mm256_div_ps(_mm256_set1_ps(-(nmax as f32)), max[h]));
        let mut l = [[_mm256_setzero_si256(); N]; H];
        let (mut sumlx, mut suml2) = ([zero; H], [zero; H]);
        for i in 0..N {
            for h in 0..H {
                let v = xv[h][i];
                l[h][i] = nearest_clamped(_mm256_mul_ps(iscale[h], v), lo, hi);
                let q = _mm256_cvtepi32_ps(l[h][i]);
                let w = _mm256_mul_ps(v, v);
                sumlx[h] = _mm256_add_ps(sumlx[h], _mm256_mul_ps(_mm256_mul_ps(w, v), q));
                suml2[h] = _mm256_add_ps(suml2[h], _mm256_mul_ps(_mm256_mul_ps(w, q), q));
            }
        }
        // A lane whose pass changed nothing would change nothing in the next pass either (its
        // state is the same), so running every lane until none changes is ggml's per-sub-block
        // early exit.
        for _ in 0..5 {
            let mut changed = zero;
            for i in 0..N {
                for h in 0..H {
                    let v = xv[h][i];
                    let w = _mm256_mul_ps(v, v);
                    let wv = _mm256_mul_ps(w, v);
                    let li = _mm256_cvtepi32_ps(l[h][i]);
                    let slx = _mm256_sub_ps(sumlx[h], _mm256_mul_ps(wv, li));
                    let sl2 = _mm256_sub_ps(suml2[h], _mm256_mul_ps(_mm256_mul_ps(w, li), li));
                    let new_l = nearest_clamped(_mm256_div_ps(_mm256_mul_ps(v, sl2), slx), lo, hi);
                    let nl = _mm256_cvtepi32_ps(new_l);
                    let new_slx = _mm256_add_ps(slx, _mm256_mul_ps(wv, nl));
                    let new_sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(w, nl), nl));
                    let same = _mm256_castsi256_ps(_mm256_cmpeq_epi32(new_l, l[h][i]));
                    let better = _mm256_cmp_ps::<_CMP_GT_OQ>(
                        _mm256_mul_ps(_mm256_mul_ps(new_slx, new_slx), suml2[h]),
                        _mm256_mul_ps(_mm256_mul_ps(sumlx[h], sumlx[h]), new_sl2),
                    );
                    let accept = _mm256_andnot_ps(
                        same,
                        _mm256_and_ps(
                            _mm256_and_ps(
                                _mm256_cmp_ps::<_CMP_GT_OQ>(slx, zero),
                                _mm256_cmp_ps::<_CMP_GT_OQ>(new_sl2, zero),
                            ),
                            better,
                        ),
                    );
                    l[h][i] = _mm256_castps_si256(select(
                        _mm256_castsi256_ps(l[h][i]),
                        _mm256_castsi256_ps(new_l),
                        accept,
                    ));
                    sumlx[h] = select(sumlx[h], new_slx, accept);
                    suml2[h] = select(suml2[h], new_sl2, accept);
                    changed = _mm256_or_ps(changed, accept);
                }
            }
            if _mm256_movemask_ps(changed) == 0 {
                break;
            }
        }
        for h in 0..H {
            let all_zero = _mm256_movemask_ps(all_zero[h]);
            let positive = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(suml2[h], zero));
            let (sumlx, suml2) = (f8(sumlx[h]), f8(suml2[h]));
            let l: [[i32; 8]; N] = std::array::from_fn(|i| i8x(l[h][i]));
            for j in 0..8 {
                let is_zero = all_zero >> j & 1 != 0;
                let sub = 8 * h + j;
                for i in 0..N {
                    l_out[N * sub + i] = if is_zero { 0 } else { (l[i][j] + nmax) as i8 };
                }
                scales[sub] = if is_zero || positive >> j & 1 == 0 {
                    0.0
                } else {
                    sumlx[j] / suml2[j]
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::kutil::{make_q3_quants, make_qkx2_quants, qkx3_params};
    use crate::quant::tests::Rng;

    /// Sub-blocks that exercise the corner cases: random normal values at several scales, all
    /// zeros, one constant, all positive, all negative, a single spike, tiny values.
    fn sub_blocks(rng: &mut Rng, n: usize, count: usize) -> Vec<f32> {
        let mut x = Vec::with_capacity(n * count);
        for k in 0..count {
            let scale = [1.0, 1e-3, 40.0, 1e-20][k % 4];
            for i in 0..n {
                let v = match (k / 4) % 8 {
                    0 => 0.0,
                    1 => 0.25,
                    2 => rng.normal().abs() * scale,
                    3 => -rng.normal().abs() * scale,
                    4 => {
                        if i == 3 {
                            scale
                        } else {
                            0.0
                        }
                    }
                    _ => rng.normal() * scale,
                };
                x.push(v);
            }
        }
        x
    }

    fn check_qkx2<const N: usize>(p: &Qkx2, weighted: bool) {
        let mut rng = Rng::new(7 + N as u64);
        let groups = 64;
        let x = sub_blocks(&mut rng, N, QKX2_LANES * groups);
        let w: Vec<f32> = x
            .iter()
            .map(|v| if weighted { rng.f32() } else { 0.5 + v.abs() })
            .collect();
        for g in 0..groups {
            let r = g * QKX2_LANES * N..(g + 1) * QKX2_LANES * N;
            let (mut l, mut scales, mut mins) = (vec![0u8; r.len()], [0f32; 8], [0f32; 8]);
            make_qkx2_quants_x8::<N>(
                p,
                &x[r.clone()],
                &w[r.clone()],
                &mut l,
                &mut scales,
                &mut mins,
            );
            for j in 0..QKX2_LANES {
                let s = r.start + N * j..r.start + N * j + N;
                let mut want = vec![0u8; N];
                let (ws, wm) = make_qkx2_quants(p, &x[s.clone()], &w[s], &mut want);
                assert_eq!(
                    (scales[j].to_bits(), mins[j].to_bits()),
                    (ws.to_bits(), wm.to_bits()),
                    "group {g} sub-block {j}"
                );
                assert_eq!(&l[N * j..N * j + N], &want[..], "group {g} sub-block {j}");
            }
        }
    }

    #[test]
    fn qkx2_side_by_side_is_the_one_by_one_search() {
        let q4k = Qkx2 {
            nmax: 15,
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        let q5k = Qkx2 {
            nmax: 31,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: false,
        };
        let q2k = Qkx2 {
            nmax: 3,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: true,
        };
        let no_steps = Qkx2 {
            nstep: 0,
            ..qkx3_params(15)
        };
        check_qkx2::<32>(&q4k, false);
        check_qkx2::<32>(&q5k, false);
        check_qkx2::<16>(&q2k, false);
        check_qkx2::<32>(&qkx3_params(15), true);
        check_qkx2::<16>(&qkx3_params(3), true);
        check_qkx2::<32>(&no_steps, true);
    }

    #[test]
    fn q3_side_by_side_is_the_one_by_one_search() {
        let mut rng = Rng::new(3);
        let groups = 64;
        let x = sub_blocks(&mut rng, 16, Q3_LANES * groups);
        for (g, xs) in x.as_chunks::<256>().0.iter().enumerate() {
            let (mut l, mut scales) = ([0i8; 256], [0f32; 16]);
            make_q3_quants_x16(4, xs, &mut l, &mut scales);
            for j in 0..Q3_LANES {
                let mut want = [0i8; 16];
                let s = make_q3_quants(4, &xs[16 * j..16 * j + 16], &mut want);
                assert_eq!(scales[j].to_bits(), s.to_bits(), "group {g} sub-block {j}");
                assert_eq!(
                    &l[16 * j..16 * j + 16],
                    &want[..],
                    "group {g} sub-block {j}"
                );
            }
        }
    }
}
