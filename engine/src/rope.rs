//! The backend-neutral part of rotary position embedding: the per-position `(cos, sin)` table
//! with linear and YaRN frequency scaling, as ggml defines it. Both backends rotate with this
//! table (the CPU in `cpu::ops::rope`, the GPU in `shaders/rope.wgsl`). Angles are computed
//! in f64 so large positions stay exact to f32 precision.

use crate::graph::RopeParams;

/// YaRN's correction dimension: the pair index whose wavelength makes `n_rot` rotations over
/// the original context.
fn corr_dim(n_dims: usize, orig_ctx: u32, n_rot: f64, base: f64) -> f64 {
    n_dims as f64 * (orig_ctx as f64 / (n_rot * 2.0 * std::f64::consts::PI)).ln()
        / (2.0 * base.ln())
}

/// The `[low, high]` pair range over which YaRN ramps from extrapolation to interpolation.
pub fn yarn_corr_dims(p: &RopeParams) -> (f64, f64) {
    let base = p.base as f64;
    let low = corr_dim(p.n_dims, p.orig_ctx, p.beta_fast as f64, base).floor();
    let high = corr_dim(p.n_dims, p.orig_ctx, p.beta_slow as f64, base).ceil();
    (low.max(0.0), high.min(p.n_dims as f64 - 1.0))
}

/// Fill `table` with `(cos, sin)` of every rotated pair at position `pos`
/// (`table.len() == n_dims`), magnitude-scaled as YaRN asks. `factors` (one per pair) divide
/// each pair's angle before scaling, as ggml's `rope_ext` freq factors do.
pub fn rope_table(pos: i32, p: &RopeParams, factors: Option<&[f32]>, table: &mut [f32]) {
    let half = p.n_dims / 2;
    debug_assert_eq!(table.len(), p.n_dims);
    let (low, high) = yarn_corr_dims(p);
    let freq_scale = p.freq_scale as f64;
    let ext = p.ext_factor as f64;
    let mut mscale = p.attn_factor as f64;
    if ext != 0.0 {
        mscale *= 1.0 + 0.1 * (1.0 / freq_scale).ln();
    }
    let base = p.base as f64;
    for i in 0..half {
        let mut theta_extrap = pos as f64 * base.powf(-2.0 * i as f64 / p.n_dims as f64);
        if let Some(f) = factors {
            theta_extrap /= f[i] as f64;
        }
        let theta_interp = freq_scale * theta_extrap;
        let theta = if ext != 0.0 {
            let y = (i as f64 - low) / (high - low).max(0.001);
            let ramp = 1.0 - y.clamp(0.0, 1.0);
            let mix = ramp * ext;
            theta_interp * (1.0 - mix) + theta_extrap * mix
        } else {
            theta_interp
        };
        table[2 * i] = (theta.cos() * mscale) as f32;
        table[2 * i + 1] = (theta.sin() * mscale) as f32;
    }
}

/// The rotation that moves a cached key `delta` positions (a sequence's later tokens moving
/// back after some of its tokens are discarded): RoPE's angles are linear in the position, so
/// rotating a key roped at `p` by the angles of `delta`, without YaRN's magnitude factor
/// (already applied once), gives the key roped at `p + delta`, up to rounding.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyRotation {
    /// How pairs are formed.
    pub mode: crate::graph::RopeMode,
    /// Rotated elements of each head.
    pub n_dims: usize,
    /// Width of a key head.
    pub head_dim: usize,
    /// `(cos, sin)` of each pair's angle at `delta`, unscaled.
    pub table: Vec<f32>,
}

impl KeyRotation {
    /// The rotation by `delta` positions of keys roped with `p` (and per-pair `factors`),
    /// heads `head_dim` wide.
    pub fn new(p: &RopeParams, factors: Option<&[f32]>, head_dim: usize, delta: i32) -> Self {
        let mut unscaled = *p;
        let yarn = if p.ext_factor != 0.0 {
            1.0 + 0.1 * (1.0 / p.freq_scale as f64).ln()
        } else {
            1.0
        };
        unscaled.attn_factor = (1.0 / yarn) as f32;
        let mut table = vec![0.0; p.n_dims];
        rope_table(delta, &unscaled, factors, &mut table);
        KeyRotation {
            mode: p.mode,
            n_dims: p.n_dims,
            head_dim,
            table,
        }
    }

    /// Rotate the f16 key `row` (every head) in place, through `scratch` (as long as `row`).
    pub fn apply_f16(&self, row: &mut [half::f16], scratch: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        row.convert_to_f32_slice(scratch);
        crate::cpu::ops::rope::rope_apply(
            scratch,
            self.head_dim,
            self.mode,
            self.n_dims,
            &self.table,
        );
        row.convert_from_f32_slice(scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::RopeMode;

    fn params(freq_scale: f32, ext_factor: f32) -> RopeParams {
        RopeParams {
            mode: RopeMode::Neox,
            n_dims: 64,
            base: 10000.0,
            freq_scale,
            ext_factor,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            orig_ctx: 256,
        }
    }

    #[test]
    fn position_zero_is_the_identity_scaled_by_mscale() {
        let mut table = [0.0f32; 64];
        rope_table(0, &params(1.0, 0.0), None, &mut table);
        for pair in table.chunks_exact(2) {
            assert_eq!(pair, [1.0, 0.0]);
        }
        // YaRN with factor 4: cos and sin grow by 1 + 0.1·ln 4.
        rope_table(0, &params(0.25, 1.0), None, &mut table);
        let m = (1.0 + 0.1 * 4f64.ln()) as f32;
        for pair in table.chunks_exact(2) {
            assert_eq!(pair, [m, 0.0]);
        }
    }

    #[test]
    fn factors_divide_the_angles() {
        // Without scaling, dividing every angle by 2 is the table of half the position.
        let (mut halved, mut at_half) = ([0.0f32; 64], [0.0f32; 64]);
        rope_table(6, &params(1.0, 0.0), Some(&[2.0; 32]), &mut halved);
        rope_table(3, &params(1.0, 0.0), None, &mut at_half);
        assert_eq!(halved, at_half);
        let mut ones = [0.0f32; 64];
        rope_table(5, &params(0.25, 1.0), Some(&[1.0; 32]), &mut ones);
        let mut none = [0.0f32; 64];
        rope_table(5, &params(0.25, 1.0), None, &mut none);
        assert_eq!(ones, none);
    }

    #[test]
    fn corr_dims_lie_inside_the_rotated_pairs() {
        let (low, high) = yarn_corr_dims(&params(0.25, 1.0));
        assert!(0.0 <= low && low < high && high <= 63.0, "{low} {high}");
    }
}
