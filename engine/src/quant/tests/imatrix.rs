//! Oracle for the importance-weighted quantizers: bytes written by ggml's `ggml_quantize_chunk`
//! with an importance matrix, stored in `imatrix_ref.txt` (how it was made: `README.md` here).
//!
//! Each fixture line names a format and the parameters of its inputs, which
//! [`imatrix_inputs`] regenerates exactly as the C harness does:
//!
//! - SplitMix64 ([`Rng`]) seeded with `seed`; `unit(z) = (z >> 40) / 2²⁴`.
//! - Values, row by row and 32 at a time: `amp = 0.05 + 3·unit(next)`, then per element
//!   `z = next`, `v = (2·unit(z) − 1)·amp`, times 16 when `z & 31 == 0` (outliers).
//! - Then `n_per_row` weights (one per column, shared by all rows): `wide` gives
//!   `(0.5 + unit(z))·2^((z >> 8) % 24 − 12)` for `z = next`; `ones` gives 1.0; `none` also, but
//!   no importance matrix is passed (ggml's reference quantizers, `BlockFormat::quantize_row`:
//!   they guard the unweighted paths, which share helpers with the weighted ones).
//! - Then, by `flags`, in this order: 8, the first row made positive (`|v|`); 16, made negative
//!   (`−|v|`); 32, elements 64..96 of the first row set to 1.5 when `n_per_row ≥ 96` (a constant
//!   block); 1, elements 32..64 of the first row zeroed (a zero block); 2, the first 256 elements
//!   of the last row zeroed when `n_per_row ≥ 512` (a zero super-block); 4, the whole last row
//!   zeroed.

use super::{Rng, row_bytes};
use crate::DType;
use crate::quant::reference;

/// The fixture: ggml's output per case and format.
const FIXTURE: &str = include_str!("imatrix_ref.txt");

/// The formats with an importance-weighted quantizer of their own in ggml.
const WEIGHTED: [DType; 9] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];

/// The importance matrix of a case.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Weights {
    /// Positive, spanning 2⁻¹³..2¹².
    Wide,
    /// All 1.
    Ones,
    /// None: the reference quantizers.
    None,
}

/// One fixture line.
struct Case {
    dtype: DType,
    seed: u64,
    nrow: usize,
    n: usize,
    weights: Weights,
    flags: u32,
    want: Vec<u8>,
}

fn parse_hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// The committed fixture's cases.
fn cases() -> Vec<Case> {
    parse_cases(FIXTURE)
}

/// The cases of a file in the fixture's format.
fn parse_cases(text: &str) -> Vec<Case> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 7, "fixture line: {line:.80}");
            Case {
                dtype: DType::from_name(f[0]).expect("type name"),
                seed: f[1].parse().unwrap(),
                nrow: f[2].parse().unwrap(),
                n: f[3].parse().unwrap(),
                weights: match f[4] {
                    "wide" => Weights::Wide,
                    "ones" => Weights::Ones,
                    "none" => Weights::None,
                    w => panic!("weights kind {w}"),
                },
                flags: f[5].parse().unwrap(),
                want: parse_hex(f[6]),
            }
        })
        .collect()
}

fn unit(z: u64) -> f32 {
    (z >> 40) as f32 / 16_777_216.0
}

/// The inputs of a case (`nrow · n` values, `n` weights), as the C harness makes them.
fn imatrix_inputs(c: &Case) -> (Vec<f32>, Vec<f32>) {
    let (nrow, n) = (c.nrow, c.n);
    let mut rng = Rng::new(c.seed);
    let mut x = vec![0.0f32; nrow * n];
    for blk in x.chunks_exact_mut(32) {
        let amp = 0.05 + 3.0 * unit(rng.next_u64());
        for v in blk {
            let z = rng.next_u64();
            *v = (2.0 * unit(z) - 1.0) * amp;
            if z & 31 == 0 {
                *v *= 16.0;
            }
        }
    }
    let w: Vec<f32> = (0..n)
        .map(|_| {
            let z = rng.next_u64();
            if c.weights == Weights::Wide {
                let k = ((z >> 8) % 24) as i32 - 12;
                (0.5 + unit(z)) * f32::from_bits(((127 + k) as u32) << 23)
            } else {
                1.0
            }
        })
        .collect();
    if c.flags & 8 != 0 {
        x[..n].iter_mut().for_each(|v| *v = v.abs());
    }
    if c.flags & 16 != 0 {
        x[..n].iter_mut().for_each(|v| *v = -v.abs());
    }
    if c.flags & 32 != 0 && n >= 96 {
        x[64..96].iter_mut().for_each(|v| *v = 1.5);
    }
    if c.flags & 1 != 0 {
        x[32..64].iter_mut().for_each(|v| *v = 0.0);
    }
    let last = (nrow - 1) * n;
    if c.flags & 2 != 0 && n >= 512 {
        x[last..last + 256].iter_mut().for_each(|v| *v = 0.0);
    }
    if c.flags & 4 != 0 {
        x[last..].iter_mut().for_each(|v| *v = 0.0);
    }
    (x, w)
}

/// Quantize every row of `x` with `quantize(row, dst_row, weights)`.
fn quantize_rows(
    dtype: DType,
    n: usize,
    x: &[f32],
    w: &[f32],
    quantize: fn(&[f32], &mut [u8], &[f32]),
) -> Vec<u8> {
    let rb = row_bytes(dtype, n);
    let mut out = vec![0u8; x.len() / n * rb];
    for (xr, yr) in x.chunks_exact(n).zip(out.chunks_exact_mut(rb)) {
        quantize(xr, yr, w);
    }
    out
}

/// Quantize every row of `x` with the unweighted reference quantizer.
fn plain_rows(dtype: DType, n: usize, x: &[f32]) -> Vec<u8> {
    let rb = row_bytes(dtype, n);
    let mut out = vec![0u8; x.len() / n * rb];
    for (xr, yr) in x.chunks_exact(n).zip(out.chunks_exact_mut(rb)) {
        (reference(dtype).unwrap().quantize_row)(xr, yr);
    }
    out
}

/// The indices of the blocks where `got` and `want` differ.
fn differing_blocks(dtype: DType, got: &[u8], want: &[u8]) -> Vec<usize> {
    assert_eq!(got.len(), want.len(), "{dtype}: length");
    let bb = dtype.block_bytes();
    got.chunks(bb)
        .zip(want.chunks(bb))
        .enumerate()
        .filter(|(_, (g, w))| g != w)
        .map(|(i, _)| i)
        .collect()
}

/// Panics listing every case of `cases` whose quantization (weighted; the reference quantizer for
/// [`Weights::None`]) differs from ggml's.
fn assert_matches(cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        let (x, w) = imatrix_inputs(c);
        let ops = reference(c.dtype).unwrap();
        let got = if c.weights == Weights::None {
            plain_rows(c.dtype, c.n, &x)
        } else {
            quantize_rows(c.dtype, c.n, &x, &w, ops.quantize_row_weighted)
        };
        let bad = differing_blocks(c.dtype, &got, &c.want);
        if !bad.is_empty() {
            failures.push(format!(
                "{} seed {} ({}×{}): blocks {bad:?}",
                c.dtype, c.seed, c.nrow, c.n
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "differ from ggml:\n{}",
        failures.join("\n")
    );
}

#[test]
fn weighted_quantizers_match_ggml() {
    let cases = cases();
    for t in WEIGHTED.iter().chain([&DType::Q8_0]) {
        assert!(
            cases.iter().filter(|c| c.dtype == *t).count() >= 4,
            "{t}: too few fixture cases"
        );
    }
    assert_matches(&cases);
}

#[test]
fn weighted_quantizers_match_a_larger_ggml_run_when_given() {
    // `imq stress > FILE` (see README.md) writes 4875 more cases (7.8 MB, not committed); set
    // TESSERA_IMATRIX_STRESS=FILE to compare them too.
    let Ok(path) = std::env::var("TESSERA_IMATRIX_STRESS") else {
        return;
    };
    let text = std::fs::read_to_string(&path).expect("TESSERA_IMATRIX_STRESS file");
    let cases = parse_cases(&text);
    assert!(!cases.is_empty(), "{path}: no cases");
    assert_matches(&cases);
    eprintln!("{path}: {} cases match", cases.len());
}

#[test]
fn ignoring_the_weights_fails_the_comparison() {
    // The fixture has teeth: quantizing without the importance matrix (weights all 1, or the
    // unweighted reference quantizer) does not reproduce ggml's weighted output.
    for c in cases()
        .iter()
        .filter(|c| c.weights == Weights::Wide && WEIGHTED.contains(&c.dtype))
    {
        let (x, w) = imatrix_inputs(c);
        let ops = reference(c.dtype).unwrap();
        let ones = vec![1.0f32; w.len()];
        let got = quantize_rows(c.dtype, c.n, &x, &ones, ops.quantize_row_weighted);
        assert!(
            !differing_blocks(c.dtype, &got, &c.want).is_empty(),
            "{} seed {}: weights all 1 gave ggml's weighted bytes",
            c.dtype,
            c.seed
        );
        let plain = plain_rows(c.dtype, c.n, &x);
        assert!(
            !differing_blocks(c.dtype, &plain, &c.want).is_empty(),
            "{} seed {}: the unweighted quantizer gave ggml's weighted bytes",
            c.dtype,
            c.seed
        );
    }
}

#[test]
fn unit_weights_are_not_the_unweighted_quantizer() {
    // ggml with an importance matrix of ones still runs `quantize_row_*_impl`: the weights it
    // searches scales with are `1·√(σ² + x²)` (Q6_K: exactly 1), not the reference's (`x²`,
    // `|x|`, `av_x + |x|`, or none at all for the legacy formats' absmax rounding), and the
    // searches differ too (`make_qx_quants` instead of absmax for Q4_0/Q5_0, `make_qkx3_quants`
    // and `make_qp_quants` instead of min/max or `make_qkx2_quants`). So the bytes differ.
    let case = cases()
        .into_iter()
        .find(|c| c.weights == Weights::Ones)
        .expect("a case with unit weights");
    let (x, _) = imatrix_inputs(&case);
    for t in WEIGHTED {
        let n = case.n;
        let ops = reference(t).unwrap();
        let ones = vec![1.0f32; n];
        let weighted = quantize_rows(t, n, &x, &ones, ops.quantize_row_weighted);
        let plain = plain_rows(t, n, &x);
        assert_ne!(
            weighted, plain,
            "{t}: unit weights gave the reference bytes"
        );
    }
}

#[test]
fn formats_without_a_weighted_quantizer_ignore_the_weights() {
    let case = cases()
        .into_iter()
        .find(|c| c.weights == Weights::Wide)
        .unwrap();
    let (x, w) = imatrix_inputs(&case);
    let n = case.n;
    for t in [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q8_1,
        DType::Q8_K,
    ] {
        let ops = reference(t).unwrap();
        let weighted = quantize_rows(t, n, &x, &w, ops.quantize_row_weighted);
        assert_eq!(weighted, plain_rows(t, n, &x), "{t}");
    }
}
