//! Rotary position embedding on the CPU: every head rotated in place with the `(cos, sin)`
//! table that [`crate::rope::rope_table`] computes (the table math is shared with the GPU).

use crate::graph::RopeMode;

/// Rotate every `head_dim`-wide head of `x` in place with the pairs of `table`.
pub fn rope_apply(x: &mut [f32], head_dim: usize, mode: RopeMode, n_dims: usize, table: &[f32]) {
    let half = n_dims / 2;
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let (c, s) = (table[2 * i], table[2 * i + 1]);
            let (a, b) = match mode {
                RopeMode::Normal => (2 * i, 2 * i + 1),
                RopeMode::Neox => (i, i + half),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * c - x1 * s;
            head[b] = x0 * s + x1 * c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::RopeParams;
    use crate::rope::{rope_table, yarn_corr_dims};

    /// The formula of DESIGN.md evaluated in f64 from scratch.
    fn reference(x: &[f64], pos: f64, head_dim: usize, p: &RopeParams) -> Vec<f64> {
        let nd = p.n_dims as f64;
        let cd = |r: f64| {
            nd * (p.orig_ctx as f64 / (2.0 * std::f64::consts::PI * r)).ln()
                / (2.0 * (p.base as f64).ln())
        };
        let low = cd(p.beta_fast as f64).floor().max(0.0);
        let high = cd(p.beta_slow as f64).ceil().min(nd - 1.0);
        let fs = p.freq_scale as f64;
        let ext = p.ext_factor as f64;
        let mut out = x.to_vec();
        for h in 0..x.len() / head_dim {
            for i in 0..p.n_dims / 2 {
                let te = pos * (p.base as f64).powf(-2.0 * i as f64 / nd);
                let ti = fs * te;
                let ramp = 1.0 - ((i as f64 - low) / (high - low).max(0.001)).clamp(0.0, 1.0);
                let (theta, m) = if ext != 0.0 {
                    (
                        ti * (1.0 - ramp * ext) + te * ramp * ext,
                        p.attn_factor as f64 * (1.0 + 0.1 * (1.0 / fs).ln()),
                    )
                } else {
                    (ti, p.attn_factor as f64)
                };
                let (a, b) = match p.mode {
                    RopeMode::Normal => (2 * i, 2 * i + 1),
                    RopeMode::Neox => (i, i + p.n_dims / 2),
                };
                let (x0, x1) = (x[h * head_dim + a], x[h * head_dim + b]);
                out[h * head_dim + a] = m * (x0 * theta.cos() - x1 * theta.sin());
                out[h * head_dim + b] = m * (x0 * theta.sin() + x1 * theta.cos());
            }
        }
        out
    }

    #[test]
    fn matches_f64_formula_in_every_mode() {
        let head_dim = 64;
        let x: Vec<f32> = (0..head_dim * 3)
            .map(|i| ((i * 7919 % 113) as f32 / 56.0) - 1.0)
            .collect();
        let base_params = RopeParams {
            mode: RopeMode::Normal,
            n_dims: 64,
            base: 10000.0,
            freq_scale: 1.0,
            ext_factor: 0.0,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            orig_ctx: 256,
        };
        let mut cases = Vec::new();
        for mode in [RopeMode::Normal, RopeMode::Neox] {
            for n_dims in [64, 32] {
                // none, linear, yarn
                for (fs, ext) in [(1.0, 0.0), (0.25, 0.0), (0.25, 1.0), (0.125, 0.5)] {
                    cases.push(RopeParams {
                        mode,
                        n_dims,
                        freq_scale: fs,
                        ext_factor: ext,
                        ..base_params
                    });
                }
            }
        }
        let mut worst = 0.0f64;
        let mut table = vec![0.0; 64];
        for p in &cases {
            let (low, high) = yarn_corr_dims(p);
            assert!(low < high, "the ramp region is inside the rotated dims");
            for pos in [0, 1, 17, 255, 1000, 32767, 131_071, 1_000_000] {
                let mut y = x.clone();
                rope_table(pos, p, None, &mut table[..p.n_dims]);
                rope_apply(&mut y, head_dim, p.mode, p.n_dims, &table[..p.n_dims]);
                let xr: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                let want = reference(&xr, pos as f64, head_dim, p);
                for (a, b) in y.iter().zip(&want) {
                    worst = worst.max((*a as f64 - b).abs());
                }
            }
        }
        assert!(worst <= 1e-5, "max abs error {worst}");
    }
}
