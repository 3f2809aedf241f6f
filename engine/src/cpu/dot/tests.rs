//! Every SIMD kernel against its scalar reference on random (never all-zero) data.
//!
//! `vec_dot`: for each format and several sizes, 48 random weight/activation pairs; the vector
//! of SIMD results `a` and of reference results `b` must satisfy NMSE = Σ(a−b)²/Σa² ≤ 1e-6.
//! Activation quantizers: byte-identical to the reference quantizer, on random rows and on
//! blocks full of rounding ties, zeros and constants.

use super::{GemmArgs, Isa, SCALAR, detected_isa, gemm_by_dots, isa_available, kernel, kernel_for};
use crate::DType;
use crate::quant::reference;
use crate::quant::tests::{Rng, random_activations, random_floats, random_row, row_bytes, sizes};

fn simd_isas() -> Vec<Isa> {
    [Isa::Avx2, Isa::Neon]
        .into_iter()
        .filter(|i| isa_available(*i))
        .collect()
}

fn nmse(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = a.iter().map(|x| x * x).sum();
    num / den
}

#[test]
fn simd_vec_dot_matches_scalar() {
    let isas = simd_isas();
    if isas.is_empty() {
        eprintln!("SKIPPED: no SIMD instruction set available on this CPU");
    }
    let mut rng = Rng::new(1234);
    for isa in isas {
        for s in &SCALAR {
            let k = kernel_for(isa, s.dtype).unwrap();
            assert_eq!((k.dtype, k.vec_dot_type), (s.dtype, s.vec_dot_type));
            if k.isa == Isa::Scalar {
                continue;
            }
            let mut lens = sizes(s.dtype);
            if s.dtype.block_elems() == 1 {
                lens.extend([31, 63, 65, 4095]);
            }
            for n in lens {
                let (mut got, mut want) = (Vec::new(), Vec::new());
                for _ in 0..48 {
                    let w = random_row(&mut rng, s.dtype, n);
                    let a = random_activations(&mut rng, s.vec_dot_type, n);
                    got.push((k.vec_dot)(n, &w, &a) as f64);
                    want.push((s.vec_dot)(n, &w, &a) as f64);
                }
                let e = nmse(&got, &want);
                eprintln!("{isa:?} {} n={n}: NMSE {e:e}", s.dtype);
                assert!(e <= 1e-6, "{isa:?} {} n={n}: NMSE {e:e}", s.dtype);
            }
        }
    }
}

/// Rows that stress the quantizers: random, then blocks of exact rounding ties, zeros, a
/// constant, a lone value, and a negative maximum.
fn quantizer_inputs(rng: &mut Rng, n: usize) -> Vec<Vec<f32>> {
    let mut rows = vec![random_floats(rng, n), random_floats(rng, n)];
    let mut ties = vec![0.0f32; n];
    for (i, v) in ties.iter_mut().enumerate() {
        // With amax = 127 the Q8_0 scale is 1 and these are exact .5 ties; Q8_K's is −1 or 1.
        *v = if i % 32 == 0 {
            127.0
        } else {
            ((i % 64) as f32 - 32.0) + 0.5
        };
    }
    rows.push(ties.iter().map(|v| -v).collect());
    rows.push(ties);
    let mut odd = random_floats(rng, n);
    odd[..32].fill(0.0);
    if n >= 256 {
        odd[..256].fill(0.0);
    }
    let last = n - 32;
    odd[last..].fill(-0.3);
    odd[n / 2] = -50.0;
    odd[n / 2 + 1] = 50.0;
    rows.push(odd);
    rows
}

#[test]
fn simd_activation_quantizers_match_reference_bytes() {
    let mut rng = Rng::new(99);
    for isa in simd_isas() {
        for s in &SCALAR {
            let k = kernel_for(isa, s.dtype).unwrap();
            let reference_q = reference(k.vec_dot_type).unwrap().quantize_row;
            for n in [256usize, 512, 4096] {
                for x in quantizer_inputs(&mut rng, n) {
                    let mut got = vec![0xa5u8; row_bytes(k.vec_dot_type, n)];
                    let mut want = vec![0x5au8; got.len()];
                    (k.quantize_row)(&x, &mut got);
                    reference_q(&x, &mut want);
                    assert!(
                        got == want,
                        "{isa:?} {} -> {}: n={n} bytes differ",
                        s.dtype,
                        k.vec_dot_type
                    );
                }
            }
        }
    }
}

#[test]
fn scalar_table_is_the_reference() {
    let mut rng = Rng::new(5);
    for s in &SCALAR {
        let k = kernel_for(Isa::Scalar, s.dtype).unwrap();
        assert_eq!(k.isa, Isa::Scalar);
        let r = reference(s.dtype).unwrap();
        assert_eq!(k.vec_dot_type, r.vec_dot_type);
        let n = sizes(s.dtype)[1].max(s.dtype.block_elems());
        let w = random_row(&mut rng, s.dtype, n);
        let a = random_activations(&mut rng, k.vec_dot_type, n);
        assert_eq!(
            (k.vec_dot)(n, &w, &a).to_bits(),
            (r.vec_dot)(n, &w, &a).to_bits()
        );
        let x = random_floats(&mut rng, n.max(32));
        let x = &x[..n];
        let mut q1 = vec![0u8; row_bytes(k.vec_dot_type, n)];
        let mut q2 = q1.clone();
        (k.quantize_row)(x, &mut q1);
        (reference(k.vec_dot_type).unwrap().quantize_row)(x, &mut q2);
        assert_eq!(q1, q2);
    }
}

#[test]
fn dispatch() {
    assert!(kernel(DType::IQ2_XXS).is_none());
    assert!(kernel_for(Isa::Scalar, DType::I32).is_none());
    for t in DType::ALL {
        assert_eq!(kernel(t).is_some(), t.is_supported(), "{t}");
    }
    let isa = detected_isa();
    assert!(isa_available(isa));
    eprintln!("detected ISA: {isa:?}");
    #[cfg(target_arch = "x86_64")]
    {
        assert!(kernel_for(Isa::Neon, DType::Q4_0).is_none());
        if isa == Isa::Avx2 {
            // The AVX2 table's formats get its kernels, every other format the scalar one.
            for s in &SCALAR {
                let simd = super::avx2::KERNELS.iter().any(|k| k.dtype == s.dtype);
                let want = if simd { Isa::Avx2 } else { Isa::Scalar };
                assert_eq!(kernel(s.dtype).unwrap().isa, want, "{}", s.dtype);
            }
            assert_eq!(kernel(DType::BF16).unwrap().isa, Isa::Scalar);
        }
    }
}

#[test]
fn simd_gemm_matches_scalar_dots() {
    let mut rng = Rng::new(77);
    for isa in simd_isas() {
        for s in &SCALAR {
            let k = kernel_for(isa, s.dtype).unwrap();
            if k.tile.is_none() {
                continue;
            }
            let n = sizes(s.dtype)[1].max(s.dtype.block_elems());
            // Edge tiles included: rows and tokens that are not multiples of the tile.
            for (rows, tokens) in [(1, 1), (4, 1), (7, 3), (16, 5), (9, 64)] {
                let w: Vec<u8> = (0..rows)
                    .flat_map(|_| random_row(&mut rng, s.dtype, n))
                    .collect();
                let a: Vec<u8> = (0..tokens)
                    .flat_map(|_| random_activations(&mut rng, s.vec_dot_type, n))
                    .collect();
                let g = GemmArgs {
                    n,
                    w: &w,
                    w_stride: row_bytes(s.dtype, n),
                    rows,
                    a: &a,
                    a_stride: row_bytes(s.vec_dot_type, n),
                    tokens,
                };
                let mut got = vec![f32::NAN; rows * tokens];
                let mut want = vec![f32::NAN; rows * tokens];
                k.gemm(&g, &mut got);
                gemm_by_dots(s.vec_dot, &g, &mut want);
                let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
                let e = nmse(&f(&got), &f(&want));
                eprintln!("{isa:?} {} gemm {rows}x{tokens} n={n}: NMSE {e:e}", s.dtype);
                assert!(
                    e <= 1e-6,
                    "{isa:?} {} gemm {rows}x{tokens}: NMSE {e:e}",
                    s.dtype
                );
            }
        }
    }
}

/// The tiled kernels sum in the same lanes and order as their own ISA's `vec_dot`, so switching
/// between them never moves a logit (the teacher-forced bounds rely on it).
#[test]
fn simd_gemm_is_bit_identical_to_simd_dots() {
    let mut rng = Rng::new(78);
    for isa in simd_isas() {
        for s in &SCALAR {
            let k = kernel_for(isa, s.dtype).unwrap();
            if k.tile.is_none() {
                continue;
            }
            let n = sizes(s.dtype)[1].max(s.dtype.block_elems());
            for (rows, tokens) in [(5, 1), (8, 9), (13, 6), (3, 7), (24, 4), (6, 2)] {
                let w: Vec<u8> = (0..rows)
                    .flat_map(|_| random_row(&mut rng, s.dtype, n))
                    .collect();
                let a: Vec<u8> = (0..tokens)
                    .flat_map(|_| random_activations(&mut rng, s.vec_dot_type, n))
                    .collect();
                let g = GemmArgs {
                    n,
                    w: &w,
                    w_stride: row_bytes(s.dtype, n),
                    rows,
                    a: &a,
                    a_stride: row_bytes(s.vec_dot_type, n),
                    tokens,
                };
                let mut got = vec![f32::NAN; rows * tokens];
                let mut want = vec![f32::NAN; rows * tokens];
                k.gemm(&g, &mut got);
                gemm_by_dots(k.vec_dot, &g, &mut want);
                for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        x.to_bits(),
                        y.to_bits(),
                        "{isa:?} {} gemm {rows}x{tokens} output {i}: {x} vs {y}",
                        s.dtype
                    );
                }
            }
        }
    }
}

#[test]
fn simd_f16_attention_ops_match_scalar() {
    use super::{F16_SCALAR, f16_ops};
    use half::f16;
    let ops = f16_ops();
    if ops.isa == Isa::Scalar {
        eprintln!("SKIPPED: no SIMD F16 kernels on this CPU");
        return;
    }
    let mut rng = Rng::new(4242);
    for n in [7usize, 16, 64, 100, 256] {
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for _ in 0..32 {
            let q = random_floats(&mut rng, n);
            let k: Vec<f16> = random_floats(&mut rng, n)
                .into_iter()
                .map(f16::from_f32)
                .collect();
            got.push((ops.dot)(&q, &k) as f64);
            want.push((F16_SCALAR.dot)(&q, &k) as f64);
            let w = q[0];
            let (mut a, mut b) = (q.clone(), q.clone());
            (ops.axpy)(&mut a, w, &k);
            (F16_SCALAR.axpy)(&mut b, w, &k);
            got.extend(a.iter().map(|&x| x as f64));
            want.extend(b.iter().map(|&x| x as f64));
        }
        let e = nmse(&got, &want);
        assert!(e <= 1e-6, "F16 ops n={n}: NMSE {e:e}");
        // wsum: bit-identical to one SIMD axpy per row, close to the scalar one.
        let rows = random_f16_rows(&mut rng, 9, n);
        let refs: Vec<&[f16]> = rows.iter().map(|r| r.as_slice()).collect();
        let w = random_floats(&mut rng, 9);
        let start = random_floats(&mut rng, n);
        let (mut a, mut b, mut c) = (start.clone(), start.clone(), start.clone());
        (ops.wsum)(&mut a, &w, &refs);
        for (&wj, r) in w.iter().zip(&refs) {
            (ops.axpy)(&mut b, wj, r);
        }
        (F16_SCALAR.wsum)(&mut c, &w, &refs);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(
                x.to_bits(),
                y.to_bits(),
                "wsum n={n} element {i}: {x} vs {y}"
            );
        }
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let e = nmse(&f(&a), &f(&c));
        assert!(e <= 1e-6, "wsum n={n}: NMSE {e:e}");
        // exp_sum: scores from far below to at the maximum, element by element and summed.
        let s: Vec<f32> = random_floats(&mut rng, n)
            .iter()
            .map(|x| 60.0 * x)
            .collect();
        let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let (mut a, mut b) = (s.clone(), s.clone());
        let (sa, sb) = (
            (ops.exp_sum)(&mut a, max),
            (F16_SCALAR.exp_sum)(&mut b, max),
        );
        assert!((sa - sb).abs() <= 1e-6 * sb, "exp_sum n={n}: {sa} vs {sb}");
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 4e-7 * y.max(1e-30),
                "exp n={n}: {x} vs {y}"
            );
        }
    }
}

/// `dots` and `wsums` (several queries at once) are bit for bit `dot` and `wsum` per query,
/// for every group size the attention uses and head widths with tails, SIMD and scalar.
#[test]
fn grouped_f16_attention_ops_are_per_query_ops() {
    use super::{F16_SCALAR, f16_ops};
    use half::f16;
    let mut rng = Rng::new(4343);
    for ops in [f16_ops(), &F16_SCALAR] {
        for n in [8usize, 24, 64, 100, 256] {
            for g in 1..=6 {
                let (j, ld) = (11, 13);
                let q = random_floats(&mut rng, g * n);
                let rows = random_f16_rows(&mut rng, j, n);
                let refs: Vec<&[f16]> = rows.iter().map(|r| r.as_slice()).collect();
                let mut s = vec![f32::NAN; g * ld];
                (ops.dots)(&q, n, &refs, &mut s, ld);
                let w = random_floats(&mut rng, g * ld);
                let start = random_floats(&mut rng, g * n);
                let mut out = start.clone();
                (ops.wsums)(&mut out, n, &w, ld, &refs);
                for h in 0..g {
                    let qh = &q[h * n..(h + 1) * n];
                    for (jj, r) in refs.iter().enumerate() {
                        let (x, y) = (s[h * ld + jj], (ops.dot)(qh, r));
                        assert_eq!(x.to_bits(), y.to_bits(), "{:?} dots n={n} g={g}", ops.isa);
                    }
                    let mut alone = start[h * n..(h + 1) * n].to_vec();
                    (ops.wsum)(&mut alone, &w[h * ld..h * ld + j], &refs);
                    for (x, y) in out[h * n..(h + 1) * n].iter().zip(&alone) {
                        assert_eq!(x.to_bits(), y.to_bits(), "{:?} wsums n={n} g={g}", ops.isa);
                    }
                }
            }
        }
    }
}

/// `count` rows of `n` random values in F16.
fn random_f16_rows(rng: &mut Rng, count: usize, n: usize) -> Vec<Vec<half::f16>> {
    (0..count)
        .map(|_| {
            random_floats(rng, n)
                .into_iter()
                .map(half::f16::from_f32)
                .collect()
        })
        .collect()
}

/// The 32-element formats' prompt tiles (16 rows with AVX-512 VNNI, 8 with AVX-VNNI or
/// `maddubs`) and their decode tiles give the same bits, as do Q4_K's and Q6_K's (16-row
/// AVX-512, 8-row, tiles) and Q5_K's (16-row, tiles): which one a CPU takes never moves a logit.
#[cfg(target_arch = "x86_64")]
#[test]
fn every_product_path_is_bit_identical() {
    if !isa_available(Isa::Avx2) {
        return;
    }
    let mut rng = Rng::new(79);
    for dtype in [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::IQ4_NL,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ] {
        let s = SCALAR.iter().find(|k| k.dtype == dtype).unwrap();
        let n = 512;
        for (rows, tokens) in [(8, 9), (13, 6), (24, 4), (3, 7)] {
            let w: Vec<u8> = (0..rows)
                .flat_map(|_| random_row(&mut rng, dtype, n))
                .collect();
            let a: Vec<u8> = (0..tokens)
                .flat_map(|_| random_activations(&mut rng, s.vec_dot_type, n))
                .collect();
            let g = GemmArgs {
                n,
                w: &w,
                w_stride: row_bytes(dtype, n),
                rows,
                a: &a,
                a_stride: row_bytes(s.vec_dot_type, n),
                tokens,
            };
            let mut want = vec![f32::NAN; rows * tokens];
            assert!(super::avx2::gemm_path(dtype, None, &g, &mut want));
            for packed in [Some(0), Some(1), Some(2)] {
                let mut got = vec![f32::NAN; rows * tokens];
                if !super::avx2::gemm_path(dtype, packed, &g, &mut got) {
                    continue;
                }
                for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        x.to_bits(),
                        y.to_bits(),
                        "{dtype} {packed:?} {rows}x{tokens} output {i}: {x} vs {y}"
                    );
                }
            }
        }
    }
}
