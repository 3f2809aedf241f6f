//! `mat_mul` over an MXFP4 weight (gpt-oss's expert format) on the CPU backend, against the
//! f64 product of the dequantized weight with the f32 activations.
//!
//! The CPU quantizes each activation row to Q8_0 (per 32 values: `d = amax/127` stored as
//! f16, `q = round(x/d)`), so an output may differ from the f32 product by at most
//! `Σ_i |w_i|·e_i` with `e_i = d·(0.5 + 127·2⁻¹¹)` of `x_i`'s block (half a step, plus the f16
//! rounding of `d` times the largest |q|), plus f32 summation slack (`1e-5·Σ|w_i·x_i|`).
//! Outputs are also checked against the f64 product with the activations' own Q8_0 values,
//! which they must match to float rounding: together these show the error is the activations'
//! quantization and nothing else. Shapes: gpt-oss's 2880-wide rows, one token and a prompt.

use tessera_engine::cpu::exec::CpuExecutor;
use tessera_engine::graph::GraphBuilder;
use tessera_engine::{DType, Tensor, quant};

/// Deterministic Gaussian-ish values with a per-32 scale, like weights and activations.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let s = 0.2 + 2.0 * self.unit();
            for _ in 0..32 {
                let g: f32 = (0..4).map(|_| self.unit()).sum::<f32>() - 2.0;
                out.push(g * s);
            }
        }
        out.truncate(n);
        out
    }
}

fn dequantize_rows(dtype: DType, bytes: &[u8], n: usize) -> Vec<f32> {
    let ops = quant::reference(dtype).unwrap();
    let rb = dtype.row_bytes(n as u64).unwrap() as usize;
    let mut out = vec![0.0f32; bytes.len() / rb * n];
    for (src, dst) in bytes.chunks_exact(rb).zip(out.chunks_exact_mut(n)) {
        (ops.dequantize_row)(src, dst);
    }
    out
}

fn quantize_rows(dtype: DType, x: &[f32], n: usize) -> Vec<u8> {
    let ops = quant::reference(dtype).unwrap();
    let rb = dtype.row_bytes(n as u64).unwrap() as usize;
    let mut out = vec![0u8; x.len() / n * rb];
    for (src, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(rb)) {
        (ops.quantize_row)(src, dst);
    }
    out
}

/// `mat_mul(w, x)` on the CPU for the activation rows `x` (one per token).
fn cpu_mat_mul(w: &Tensor, x: &[f32], n_in: usize) -> Vec<f32> {
    let n_tok = x.len() / n_in;
    let table = Tensor::from_f32("x", vec![n_in, n_tok], x);
    let mut b = GraphBuilder::new(n_tok);
    let xs = b.get_rows(&table);
    let y = b.mat_mul(w, xs);
    let mut exec = CpuExecutor::new(2);
    let g = exec.prepare(b.finish(y)).unwrap();
    let tokens: Vec<u32> = (0..n_tok as u32).collect();
    let positions: Vec<i32> = (0..n_tok as i32).collect();
    exec.run(&g, &tokens, &positions, &mut []).unwrap().to_vec()
}

#[test]
fn mat_mul_matches_the_f32_product_within_q8_0_activation_noise() {
    let (n_in, rows) = (2880, 48);
    let mut rng = Rng(0x6f55);
    let wq = quantize_rows(DType::MXFP4, &rng.vec(rows * n_in), n_in);
    let w = Tensor::from_bytes("w", DType::MXFP4, vec![n_in, rows], &wq).unwrap();
    let wf = dequantize_rows(DType::MXFP4, &wq, n_in);
    for n_tok in [1, 7] {
        let x = rng.vec(n_tok * n_in);
        let xq = dequantize_rows(DType::Q8_0, &quantize_rows(DType::Q8_0, &x, n_in), n_in);
        // Each activation's quantization error bound, from its block's amax.
        let step: Vec<f64> = x
            .chunks(32)
            .flat_map(|blk| {
                let amax = blk.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
                let e = amax / 127.0 * (0.5 + 127.0 / 2048.0);
                std::iter::repeat_n(e, 32)
            })
            .collect();
        let got = cpu_mat_mul(&w, &x, n_in);
        let (mut worst_noise, mut worst_q8) = (0.0f64, 0.0f64);
        for t in 0..n_tok {
            for r in 0..rows {
                let wr = &wf[r * n_in..(r + 1) * n_in];
                let xt = &x[t * n_in..(t + 1) * n_in];
                let (mut exact, mut with_q8, mut abs, mut bound) = (0.0, 0.0, 0.0, 0.0);
                for i in 0..n_in {
                    let wi = wr[i] as f64;
                    exact += wi * xt[i] as f64;
                    with_q8 += wi * xq[t * n_in + i] as f64;
                    abs += (wi * xt[i] as f64).abs();
                    bound += wi.abs() * step[t * n_in + i];
                }
                let y = got[t * rows + r] as f64;
                let slack = 1e-5 * abs;
                assert!(
                    (y - exact).abs() <= bound + slack,
                    "token {t} row {r}: {y} vs f32 product {exact}, bound {bound}"
                );
                assert!(
                    (y - with_q8).abs() <= slack,
                    "token {t} row {r}: {y} vs product with Q8_0 activations {with_q8}"
                );
                worst_noise = worst_noise.max((y - exact).abs() / bound);
                worst_q8 = worst_q8.max((y - with_q8).abs() / abs);
            }
        }
        eprintln!(
            "{n_tok} token(s): |err| / noise bound ≤ {worst_noise:.3}, \
             vs Q8_0-activation product ≤ {worst_q8:.1e} of Σ|w·x|"
        );
    }
}
