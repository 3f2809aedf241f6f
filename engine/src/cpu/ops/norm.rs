//! RMS normalisation.

/// `y = x / sqrt(mean(x²) + eps) · w` over each group of `group` elements of `x` (`w` is
/// broadcast to every group; `None` means 1).
pub fn rms_norm(x: &[f32], w: Option<&[f32]>, group: usize, eps: f32, y: &mut [f32]) {
    for (xg, yg) in x.chunks_exact(group).zip(y.chunks_exact_mut(group)) {
        // As ggml: f32 squares summed in f64, then the mean and scale in f32.
        let ss: f64 = xg.iter().map(|&v| (v * v) as f64).sum();
        let mean = (ss / group as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        match w {
            Some(w) => {
                for ((o, &v), &g) in yg.iter_mut().zip(xg).zip(w) {
                    *o = v * scale * g;
                }
            }
            None => {
                for (o, &v) in yg.iter_mut().zip(xg) {
                    *o = v * scale;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_rms_after_norm() {
        let x: Vec<f32> = (0..8).map(|i| i as f32 - 3.3).collect();
        let mut y = vec![0.0; 8];
        rms_norm(&x, None, 4, 0.0, &mut y);
        for g in y.chunks(4) {
            let ms: f32 = g.iter().map(|v| v * v).sum::<f32>() / 4.0;
            assert!((ms - 1.0).abs() < 1e-5);
        }
        let w = [2.0; 4];
        let mut y2 = vec![0.0; 8];
        rms_norm(&x, Some(&w), 4, 0.0, &mut y2);
        assert!((y2[1] - 2.0 * y[1]).abs() < 1e-6);
    }
}
