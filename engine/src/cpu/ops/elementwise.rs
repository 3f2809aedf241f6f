//! Element-wise ops: add, mul, scale, bias, soft-capping, squared ReLU and the gated
//! activations.

use std::sync::OnceLock;

use half::f16;

/// `y = a + b`.
pub fn add(a: &[f32], b: &[f32], y: &mut [f32]) {
    for ((o, &x), &z) in y.iter_mut().zip(a).zip(b) {
        *o = x + z;
    }
}

/// `y = a ⊙ b`.
pub fn mul(a: &[f32], b: &[f32], y: &mut [f32]) {
    for ((o, &x), &z) in y.iter_mut().zip(a).zip(b) {
        *o = x * z;
    }
}

/// `y = s · x`.
pub fn scale(x: &[f32], s: f32, y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v * s;
    }
}

/// `y = x + bias` for whole rows of `x` (`bias.len()` values each).
pub fn add_bias(x: &[f32], bias: &[f32], y: &mut [f32]) {
    for (row_y, row_x) in y
        .chunks_exact_mut(bias.len())
        .zip(x.chunks_exact(bias.len()))
    {
        add(row_x, bias, row_y);
    }
}

/// `y = cap · tanh(x / cap)`, computed as ggml does (scale by `1/cap`, tanh, scale by `cap`).
pub fn softcap(x: &[f32], cap: f32, y: &mut [f32]) {
    let inv = 1.0 / cap;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = (v * inv).tanh() * cap;
    }
}

/// `y = max(x, 0)²`, as ggml's `relu` then `sqr` (PLM's feed-forward activation).
pub fn relu_sqr(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        let r = v.max(0.0);
        *o = r * r;
    }
}

/// SiLU: `x · sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU, tanh approximation (as ggml's `gelu`).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// `y = silu(gate) ⊙ up`.
pub fn swiglu(gate: &[f32], up: &[f32], y: &mut [f32]) {
    for ((o, &g), &u) in y.iter_mut().zip(gate).zip(up) {
        *o = silu(g) * u;
    }
}

/// gpt-oss's clamped SwiGLU, in ggml's order: `g = min(gate, limit)`,
/// `u = clamp(up, −limit, limit)`, `y = g / (1 + e^(−α·g)) · (u + 1)`.
pub fn swiglu_oai(gate: &[f32], up: &[f32], alpha: f32, limit: f32, y: &mut [f32]) {
    for ((o, &g), &u) in y.iter_mut().zip(gate).zip(up) {
        let g = g.min(limit);
        let u = u.clamp(-limit, limit);
        *o = g / (1.0 + (alpha * -g).exp()) * (u + 1.0);
    }
}

/// GELU as ggml's CPU backend evaluates it: the input rounded to F16 and looked up in a table
/// of F16-rounded results (exact outside ±10, where GELU is 0 or the identity to f32
/// precision). Matching this keeps our activations bit-compatible with llama.cpp's.
#[inline]
pub fn gelu_f16_table(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        let t = gelu_table();
        f16::from_bits(t[f16::from_f32(x).to_bits() as usize]).to_f32()
    }
}

/// `gelu_tanh` of every F16 value, rounded to F16 (built once, 128 KiB).
fn gelu_table() -> &'static [u16; 65536] {
    static TABLE: OnceLock<Box<[u16; 65536]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0u16; 65536]);
        for (i, v) in t.iter_mut().enumerate() {
            let x = f16::from_bits(i as u16).to_f32();
            *v = f16::from_f32(gelu_tanh(x)).to_bits();
        }
        t
    })
}

/// `y = gelu(gate) ⊙ up` with [`gelu_f16_table`].
pub fn geglu(gate: &[f32], up: &[f32], y: &mut [f32]) {
    for ((o, &g), &u) in y.iter_mut().zip(gate).zip(up) {
        *o = gelu_f16_table(g) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_is_added_to_every_row_and_softcap_bounds() {
        let mut y = [0.0; 6];
        add_bias(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[10.0, 20.0, 30.0], &mut y);
        assert_eq!(y, [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        let mut y = [0.0; 3];
        softcap(&[0.0, 1e6, -3.0], 30.0, &mut y);
        assert_eq!(y[0], 0.0);
        assert_eq!(y[1], 30.0);
        assert!((y[2] - 30.0 * (-0.1f32).tanh()).abs() < 1e-6);
    }

    #[test]
    fn relu_sqr_zeroes_negatives_and_squares_the_rest() {
        let x = [-3.0, -0.0, 0.0, 0.5, 2.0, -1e30, 1e20];
        let mut y = [1.0; 7];
        relu_sqr(&x, &mut y);
        assert_eq!(y, [0.0, 0.0, 0.0, 0.25, 4.0, 0.0, f32::INFINITY]);
        assert!(y.iter().all(|v| v.is_sign_positive()));
    }

    #[test]
    fn table_gelu_is_f16_close_and_exact_in_the_tails() {
        for i in -2000..2000 {
            let x = i as f32 * 0.0061;
            let want = gelu_tanh(x);
            let got = gelu_f16_table(x);
            assert!(
                (got - want).abs() <= 2e-3 * want.abs().max(0.05),
                "{x}: {got} vs {want}"
            );
        }
        assert_eq!(gelu_f16_table(-10.5), 0.0);
        assert_eq!(gelu_f16_table(12.25), 12.25);
    }

    #[test]
    fn activations_match_their_definitions() {
        for x in [-5.0f32, -1.0, -0.1, 0.0, 0.3, 2.0, 8.0] {
            let s = x as f64 / (1.0 + (-(x as f64)).exp());
            assert!((silu(x) as f64 - s).abs() < 1e-6);
            let g = 0.5
                * x as f64
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt()
                        * (x as f64 + 0.044715 * (x as f64).powi(3)))
                    .tanh());
            assert!((gelu_tanh(x) as f64 - g).abs() < 1e-5, "{x}");
        }
    }
}
