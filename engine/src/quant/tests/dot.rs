//! `vec_dot` against the f64 dot product of the dequantized operands.
//!
//! Bound asserted: |vec_dot − exact| ≤ 1e-5 · max(|exact|, Σ|wᵢ·aᵢ| / √n). The floor
//! Σ|wᵢaᵢ|/√n is the typical size of a dot of random-sign terms; it only matters when a random
//! dot happens to cancel to near zero, where a relative bound on |exact| would measure f32
//! rounding of the per-block terms rather than the kernel.

use super::{Rng, dequant, random_activations, random_row, sizes};
use crate::DType;
use crate::quant::{activation_formats, reference, weight_formats};

/// The exact dot of the dequantized rows and the tolerance scale.
pub(crate) fn exact_dot(wt: DType, w: &[u8], at: DType, a: &[u8], n: usize) -> (f64, f64) {
    let (x, y) = (dequant(wt, w, n), dequant(at, a, n));
    let exact: f64 = x.iter().zip(&y).map(|(p, q)| *p as f64 * *q as f64).sum();
    let abs: f64 = x
        .iter()
        .zip(&y)
        .map(|(p, q)| (*p as f64 * *q as f64).abs())
        .sum();
    (exact, exact.abs().max(abs / (n as f64).sqrt()))
}

#[test]
fn vec_dot_matches_f64_dot_of_dequantized() {
    let mut rng = Rng::new(42);
    for wt in weight_formats() {
        let ops = reference(wt).unwrap();
        for n in sizes(wt) {
            for _ in 0..4 {
                let w = random_row(&mut rng, wt, n);
                let a = random_activations(&mut rng, ops.vec_dot_type, n);
                let got = (ops.vec_dot)(n, &w, &a) as f64;
                let (exact, scale) = exact_dot(wt, &w, ops.vec_dot_type, &a, n);
                assert!(scale > 0.0, "{wt} n={n}: degenerate data");
                let err = (got - exact).abs() / scale;
                assert!(
                    err <= 1e-5,
                    "{wt} n={n}: got {got}, exact {exact}, rel err {err:e}"
                );
            }
        }
    }
}

#[test]
fn activation_only_formats_through_vec_dot() {
    // The quantized activation formats (Q8_0, Q8_1, Q8_K) pair with themselves.
    let mut rng = Rng::new(43);
    for t in activation_formats().filter(|t| t.block_elems() > 1) {
        let ops = reference(t).unwrap();
        assert_eq!(ops.vec_dot_type, t);
        for n in sizes(t) {
            let w = random_activations(&mut rng, t, n);
            let a = random_activations(&mut rng, t, n);
            let got = (ops.vec_dot)(n, &w, &a) as f64;
            let (exact, scale) = exact_dot(t, &w, t, &a, n);
            let err = (got - exact).abs() / scale;
            assert!(
                err <= 1e-5,
                "{t} n={n}: got {got}, exact {exact}, rel err {err:e}"
            );
        }
    }
}

#[test]
fn q8_1_from_floats_rounds_only_its_sum_field() {
    // With activations quantized from floats, `s = f16(d·Σq)` is rounded, so Q4_1/Q5_1 dots
    // differ from the exact dot by at most Σ_blocks |m|·|s − d·Σq| ≤ Σ |m|·2⁻¹⁰·|s| (f16 rounding of s and of d, plus f32
    // rounding).
    let mut rng = Rng::new(44);
    let with_q8_1 = weight_formats().filter(|t| reference(*t).unwrap().vec_dot_type == DType::Q8_1);
    for wt in with_q8_1 {
        let ops = reference(wt).unwrap();
        for n in sizes(wt) {
            let w = random_row(&mut rng, wt, n);
            let x = super::random_floats(&mut rng, n);
            let mut a = vec![0u8; super::row_bytes(DType::Q8_1, n)];
            (reference(DType::Q8_1).unwrap().quantize_row)(&x, &mut a);
            let got = (ops.vec_dot)(n, &w, &a) as f64;
            let (exact, scale) = exact_dot(wt, &w, DType::Q8_1, &a, n);
            let bound: f64 = w
                .chunks(wt.block_bytes())
                .zip(a.chunks(36))
                .map(|(wb, ab)| {
                    let m = crate::quant::f16_at(wb, 2) as f64;
                    let s = crate::quant::f16_at(ab, 2) as f64;
                    m.abs() * s.abs() * 2f64.powi(-10)
                })
                .sum();
            let err = (got - exact).abs();
            assert!(
                err <= bound + 1e-5 * scale,
                "{wt} n={n}: err {err:e} > {bound:e}"
            );
        }
    }
}
