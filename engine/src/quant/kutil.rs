//! Shared pieces of the quantizers: the scale searches of ggml's `make_qx_quants`,
//! `make_q3_quants`, `make_qkx2_quants` (which with weights is also `make_qkx3_quants`) and
//! `make_qp_quants`, and the importance weights of ggml's `quantize_row_*_impl`, written to do the
//! same float operations in the same order so the output bytes match ggml's
//! `quantize_row_*_ref` and, with an importance matrix, `quantize_*`.

use super::nearest_int;

/// ggml's `GROUP_MAX_EPS`: below this a group counts as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Symmetric quantization of `x` to `l ∈ 0..2·nmax` (stored offset by `nmax`) with the weighted
/// scale search of ggml's `make_qx_quants(.., rmse_type = 1, qw)`: weights `qw`, or `x²` when
/// `qw` is `None`. Returns the scale.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8], qw: Option<&[f32]>) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { make_qx_quants_avx2(nmax, x, l_out, qw) };
    }
    make_qx_quants_body(nmax, x, l_out, qw)
}

/// [`make_qx_quants`] compiled for AVX2: the same operations in the same order (no FMA: Rust
/// never contracts), only wider registers for the side-by-side trials.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn make_qx_quants_avx2(nmax: i32, x: &[f32], l_out: &mut [i8], qw: Option<&[f32]>) -> f32 {
    make_qx_quants_body(nmax, x, l_out, qw)
}

#[inline(always)]
fn make_qx_quants_body(nmax: i32, x: &[f32], l_out: &mut [i8], qw: Option<&[f32]>) -> f32 {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let weight = |i: usize| match qw {
        Some(qw) => qw[i],
        None => x[i] * x[i],
    };
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (i, (l, &v)) in l_out.iter_mut().zip(x).enumerate() {
        let q = quant(iscale, v);
        *l = (q + nmax) as i8;
        let w = weight(i);
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    // The 18 trial scales of ggml's search (`is` = -9..=9 but 0). Each trial's sums run over
    // the elements in order, exactly as ggml's loop does, but the trials advance side by side
    // (independent chains the compiler can vectorize); the choice among them is then made in
    // ggml's order.
    const TRIALS: usize = 18;
    let mut trial_iscale = [0f32; TRIALS];
    for (t, is) in (-9..=9).filter(|&is| is != 0).enumerate() {
        trial_iscale[t] = -(nmax as f32 + 0.1 * is as f32) / max;
    }
    let (mut slx, mut sl2) = ([0f32; TRIALS], [0f32; TRIALS]);
    for (i, &v) in x.iter().enumerate() {
        let w = weight(i);
        let wv = w * v;
        for t in 0..TRIALS {
            let q = quant(trial_iscale[t], v) as f32;
            slx[t] += wv * q;
            sl2[t] += w * q * q;
        }
    }
    for t in 0..TRIALS {
        if sl2[t] > 0.0 && slx[t] * slx[t] > best * sl2[t] {
            iscale = trial_iscale[t];
            for (l, &v) in l_out.iter_mut().zip(x) {
                *l = (quant(iscale, v) + nmax) as i8;
            }
            scale = slx[t] / sl2[t];
            best = scale * slx[t];
        }
    }
    scale
}

/// ggml's `make_q3_quants(.., do_rmse = true)`: symmetric quantization with iterative
/// per-element refinement. `l_out` receives `l + nmax`. Returns the scale.
pub(crate) fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (l, &v) in l_out.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *l = q as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (i, &v) in x.iter().enumerate() {
            let w = v * v;
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * v * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l_out[i] as i32 {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for l in l_out.iter_mut() {
        *l += nmax as i8;
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// Parameters of `make_qkx2_quants`'s scale search.
pub(crate) struct Qkx2 {
    /// Largest quantized value.
    pub nmax: i32,
    /// First offset tried, added to `nmax`.
    pub rmin: f32,
    /// Offset step.
    pub rdelta: f32,
    /// Number of steps.
    pub nstep: i32,
    /// Minimise the weighted absolute error instead of the squared one.
    pub use_mad: bool,
}

/// ggml's `make_qkx2_quants`: asymmetric quantization `x ≈ scale·l − min` with `l ∈ 0..=nmax`,
/// searching the scale. Returns `(scale, min)` where `min ≥ 0` is subtracted.
pub(crate) fn make_qkx2_quants(
    p: &Qkx2,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { make_qkx2_quants_avx2(p, x, weights, l_out) };
    }
    make_qkx2_quants_body(p, x, weights, l_out)
}

/// [`make_qkx2_quants`] compiled for AVX2: the same operations in the same order (no FMA:
/// Rust never contracts), only wider registers for the side-by-side trials.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn make_qkx2_quants_avx2(
    p: &Qkx2,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
) -> (f32, f32) {
    make_qkx2_quants_body(p, x, weights, l_out)
}

#[inline(always)]
fn make_qkx2_quants_body(p: &Qkx2, x: &[f32], weights: &[f32], l_out: &mut [u8]) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.iter_mut().for_each(|l| *l = 0);
        return (0.0, -min);
    }
    let nmax = p.nmax;
    let iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let err = |diff: f32| if p.use_mad { diff.abs() } else { diff * diff };
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    // ggml tries `nstep + 1` scales one after the other. Here up to `TRIALS` of them advance
    // side by side over the elements (independent chains the compiler can vectorize), every
    // trial's sums and error running over the elements in ggml's order with ggml's
    // operations; the best is then chosen in ggml's order. A trial that wins with a new `min`
    // changes what the later ones compute (ggml's loop reads `min` again), so they are
    // computed again from there.
    const TRIALS: usize = 24;
    let n_trials = (p.nstep + 1) as usize;
    let mut next = 0;
    while next < n_trials {
        let count = TRIALS.min(n_trials - next);
        let mut trial_iscale = [0f32; TRIALS];
        for (t, is) in trial_iscale.iter_mut().zip(next..).take(count) {
            *t = (p.rmin + p.rdelta * is as f32 + nmax as f32) / (max - min);
        }
        let (mut sum_l, mut sum_l2, mut sum_xl) = ([0f32; TRIALS], [0f32; TRIALS], [0f32; TRIALS]);
        for i in 0..n {
            let (w, xi) = (weights[i], x[i]);
            for t in 0..TRIALS {
                let lf = nearest_int(trial_iscale[t] * (xi - min)).clamp(0, nmax) as f32;
                sum_l[t] += w * lf;
                sum_l2[t] += w * lf * lf;
                sum_xl[t] += w * lf * xi;
            }
        }
        let (mut this_scale, mut this_min) = ([0f32; TRIALS], [0f32; TRIALS]);
        let mut usable = [false; TRIALS];
        for t in 0..count {
            let det = sum_w * sum_l2[t] - sum_l[t] * sum_l[t];
            if det > 0.0 {
                usable[t] = true;
                this_scale[t] = (sum_w * sum_xl[t] - sum_x * sum_l[t]) / det;
                this_min[t] = (sum_l2[t] * sum_x - sum_l[t] * sum_xl[t]) / det;
                if this_min[t] > 0.0 {
                    this_min[t] = 0.0;
                    this_scale[t] = sum_xl[t] / sum_l2[t];
                }
            }
        }
        let mut cur_error = [0f32; TRIALS];
        for i in 0..n {
            let (w, xi) = (weights[i], x[i]);
            for t in 0..TRIALS {
                let lf = nearest_int(trial_iscale[t] * (xi - min)).clamp(0, nmax) as f32;
                let diff = this_scale[t] * lf + this_min[t] - xi;
                cur_error[t] += w * err(diff);
            }
        }
        let mut advanced = count;
        for t in 0..count {
            if usable[t] && cur_error[t] < best_error {
                for i in 0..n {
                    l_out[i] = nearest_int(trial_iscale[t] * (x[i] - min)).clamp(0, nmax) as u8;
                }
                best_error = cur_error[t];
                scale = this_scale[t];
                let changed = this_min[t].to_bits() != min.to_bits();
                min = this_min[t];
                if changed {
                    advanced = t + 1;
                    break;
                }
            }
        }
        next += advanced;
    }
    (scale, -min)
}

/// ggml's `make_qp_quants`: quantization of non-negative `x` to `l ∈ 0..=nmax` (stored as ggml's
/// `uint8_t` stores them, wrapping) minimising the `qw`-weighted squared error, with a coarse
/// scale search and iterative per-element refinement. Returns the scale.
pub(crate) fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l_out.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for (l, &v) in l_out.iter_mut().zip(x) {
        *l = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..n {
        let diff = x[i] - scale * l_out[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        let w = qw[i];
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = qw[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l_out[i] as i32 {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// `Σ x²` in element order, as ggml's quantizers accumulate it.
#[inline]
pub(crate) fn sum_sq(x: &[f32]) -> f32 {
    x.iter().fold(0.0, |s, v| s + v * v)
}

/// The importance weights of ggml's `quantize_row_*_impl`: `qw[i] · √(sigma2 + x[i]²)` into
/// `out[i]` for every element of `x`.
#[inline]
pub(crate) fn importance_weights(qw: &[f32], x: &[f32], sigma2: f32, out: &mut [f32]) {
    for ((o, &q), &v) in out.iter_mut().zip(qw).zip(x) {
        *o = q * (sigma2 + v * v).sqrt();
    }
}

/// The parameters ggml's `quantize_row_*_impl` pass to `make_qkx3_quants` for `l ∈ 0..=nmax`:
/// 37 steps of 0.05 from `nmax − 0.9`, squared error. With weights given, `make_qkx3_quants`
/// does the operations of `make_qkx2_quants` ([`make_qkx2_quants`] then stands for both).
pub(crate) const fn qkx3_params(nmax: i32) -> Qkx2 {
    Qkx2 {
        nmax,
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    }
}

/// Unpack the eight 6-bit scales and eight 6-bit minimums of a Q4_K/Q5_K block from its 12
/// packed bytes (ggml's `get_scale_min_k4` for `j = 0..8`).
#[inline(always)]
pub fn unpack_scales_mins_k4(q: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
    }
    for j in 4..8 {
        sc[j] = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        m[j] = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
    (sc, m)
}

/// Pack eight 6-bit scales and minimums into 12 bytes (inverse of [`unpack_scales_mins_k4`]).
#[inline(always)]
pub(crate) fn pack_scales_mins_k4(sc: &[u8; 8], m: &[u8; 8], q: &mut [u8]) {
    q[..12].iter_mut().for_each(|b| *b = 0);
    for j in 0..8 {
        let (ls, lm) = (sc[j], m[j]);
        if j < 4 {
            q[j] = ls;
            q[j + 4] = lm;
        } else {
            q[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            q[j - 4] |= (ls >> 4) << 6;
            q[j] |= (lm >> 4) << 6;
        }
    }
}

/// Unpack the sixteen 6-bit Q3_K scales (still offset by 32) from their 12 packed bytes.
#[inline(always)]
pub fn unpack_scales_q3k(s: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let lo = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
        let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = lo | (hi << 4);
    }
    out
}
