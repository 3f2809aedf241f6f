//! Log-probabilities from a row of logits, computed one way for every tool that scores text
//! (perplexity, KL divergence, importance-matrix calibration, logprobs): in f64, shifted by
//! the row's maximum so no exponential overflows.

/// `ln Σ exp(l)` over `row` (the log-partition: `l - log_partition(row)` is a
/// log-probability). `-inf` for an empty row.
pub fn log_partition(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + row
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

/// Index of the largest logit (the first of equals; 0 for an empty row).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &l) in row.iter().enumerate() {
        if l > best.1 {
            best = (i, l);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_sum_to_one_without_overflow() {
        let row = [1000.0f32, 999.0, 998.0, -1e30];
        let z = log_partition(&row);
        let total: f64 = row.iter().map(|&l| (l as f64 - z).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        assert!((z - (1000.0 + (1.0 + (-1.0f64).exp() + (-2.0f64).exp()).ln())).abs() < 1e-9);
        assert_eq!(argmax(&row), 0);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(log_partition(&[]), f64::NEG_INFINITY);
    }
}
