//! Element-wise ops: add, mul, scale and the gated activations.

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

/// `y = gelu_tanh(gate) ⊙ up`.
pub fn geglu(gate: &[f32], up: &[f32], y: &mut [f32]) {
    for ((o, &g), &u) in y.iter_mut().zip(gate).zip(up) {
        *o = gelu_tanh(g) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
