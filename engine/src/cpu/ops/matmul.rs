//! Weight products `out[t][r] = W.row(r) · x[t]` for one or several weights that read the
//! same activations (Q/K/V, gate/up): the activations are quantized once to the dot kernels'
//! format, then the weights' rows are split across the pool's tasks together, in blocks of
//! rows (in L1 while every token of a chunk passes over them) within chunks of tokens (in L2).

use super::PARALLEL_MIN_ELEMS;
use super::SharedMut;
use crate::cpu::dot::{self, DotKernel};
use crate::cpu::pool::{ThreadPool, split_range};

/// Weight rows per block of a mat_mul (16 f32 outputs: one cache line per token).
const ROW_BLOCK: usize = 16;
/// Weight rows per block of a prompt's mat_mul, where there are enough of them to go round
/// the threads: kernels that repack their rows or prepare the activations per call do it
/// once for more rows.
const PROMPT_ROW_BLOCK: usize = 64;
/// Blocks per pool task a mat_mul needs before it uses [`PROMPT_ROW_BLOCK`].
const PROMPT_BLOCKS_PER_TASK: usize = 1;
/// Tokens per chunk of a mat_mul: a block of weight rows is prepared (a Q4_K block repacked)
/// once per chunk, and 256 tokens' Q8_K activations (~300 KiB at 1024 wide) stay in L2.
const TOKEN_BLOCK: usize = 256;

thread_local! {
    /// Each thread's buffer for a prompt block's outputs (grown to `rows × tokens` of the
    /// largest block it ran; the kernels write every value they are given, so never cleared).
    static PROMPT_OUT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Most weights one [`mat_mul`] takes.
pub const MAX_GROUP: usize = 4;

/// One weight of a mat_mul group and where its output goes.
#[derive(Clone, Copy)]
pub struct MatMulSeg<'a> {
    /// The weight.
    pub w: &'a crate::Tensor,
    /// Its dot kernel.
    pub kernel: &'static DotKernel,
    /// `n_tokens × w.n_rows()` outputs.
    pub out: SharedMut<f32>,
    /// Where each token's output row starts in `out`, if not at `t · w.n_rows()` (a prompt's
    /// rows of one expert go straight to their (token, slot) places).
    pub out_rows: Option<&'a [usize]>,
}

/// `out_s[t][r] = W_s.row(r) · x[t]` for every segment `s` (all with the same activation
/// format), `x` being `n_tok × n_in`, with the activations quantized once into `act`
/// (`act_ready`: they already are, by the previous mat_mul of the same input).
pub fn mat_mul(
    pool: &ThreadPool,
    act: &mut [u8],
    segs: &[Option<MatMulSeg<'_>>],
    x: &[f32],
    (n_tok, n_in): (usize, usize),
    act_ready: bool,
) {
    let first = segs[0].as_ref().expect("a non-empty group");
    let quantize_row = first.kernel.quantize_row;
    let arb = first
        .kernel
        .vec_dot_type
        .row_bytes(n_in as u64)
        .expect("whole blocks") as usize;
    let act = &mut act[..arb * n_tok];
    if act_ready {
        // Quantized by the previous mat_mul of the same input.
    } else if n_tok * n_in >= PARALLEL_MIN_ELEMS && n_tok > 1 {
        let a = SharedMut(act.as_mut_ptr());
        pool.run(&|ti, nt| {
            for t in split_range(n_tok, ti, nt, 1) {
                // SAFETY: each thread quantizes its own rows.
                let dst = unsafe { a.slice(t * arb..(t + 1) * arb) };
                quantize_row(&x[t * n_in..(t + 1) * n_in], dst);
            }
        });
    } else {
        for t in 0..n_tok {
            quantize_row(
                &x[t * n_in..(t + 1) * n_in],
                &mut act[t * arb..(t + 1) * arb],
            );
        }
    }
    let act = &act[..];
    // Work units: blocks of `rb` weight rows, segment after segment.
    let rows_of = |rb: usize| {
        segs.iter()
            .map(|s| s.as_ref().expect("filled").w.n_rows().div_ceil(rb))
            .sum::<usize>()
    };
    let tasks = pool.n_tasks();
    let rb = if n_tok >= 4 && rows_of(PROMPT_ROW_BLOCK) >= PROMPT_BLOCKS_PER_TASK * tasks {
        PROMPT_ROW_BLOCK
    } else {
        ROW_BLOCK
    };
    let mut unit_end = [0usize; MAX_GROUP];
    let mut total = 0;
    for (end, seg) in unit_end.iter_mut().zip(segs) {
        total += seg.as_ref().expect("filled").w.n_rows().div_ceil(rb);
        *end = total;
    }
    // Unit `u`'s segment and its rows `r0..r1`.
    let unit = |u: usize| {
        let s = unit_end.iter().position(|&e| u < e).expect("unit in range");
        let seg = segs[s].as_ref().expect("filled");
        let first_unit = if s == 0 { 0 } else { unit_end[s - 1] };
        let r0 = (u - first_unit) * rb;
        (seg, r0, (r0 + rb).min(seg.w.n_rows()))
    };
    pool.run(&|ti, nt| {
        let units = split_range(total, ti, nt, 1);
        if n_tok == 1 {
            for u in units {
                let (seg, r0, r1) = unit(u);
                let (data, wrb) = (seg.w.data(), seg.w.row_bytes());
                let args = dot::GemmArgs {
                    n: n_in,
                    w: &data[r0 * wrb..r1 * wrb],
                    w_stride: wrb,
                    rows: r1 - r0,
                    a: act,
                    a_stride: arb,
                    tokens: 1,
                };
                let o = seg.out_rows.map_or(0, |rows| rows[0]);
                // SAFETY: this unit's rows of the single token's output are written by this
                // task only.
                seg.kernel
                    .gemm(&args, unsafe { seg.out.slice(o + r0..o + r1) });
            }
            return;
        }
        // Prompt outputs pass through this thread's buffer, then go to their rows.
        PROMPT_OUT.with_borrow_mut(|buf| {
            let need = rb * TOKEN_BLOCK.min(n_tok);
            if buf.len() < need {
                buf.resize(need, 0.0);
            }
            // Token chunks (their activations stay in L2) over blocks of weight rows (in L1
            // while every token of the chunk passes over them).
            for t0 in (0..n_tok).step_by(TOKEN_BLOCK) {
                let t1 = (t0 + TOKEN_BLOCK).min(n_tok);
                for u in units.clone() {
                    let (seg, r0, r1) = unit(u);
                    let n_out = seg.w.n_rows();
                    let nr = r1 - r0;
                    let (data, wrb) = (seg.w.data(), seg.w.row_bytes());
                    let args = dot::GemmArgs {
                        n: n_in,
                        w: &data[r0 * wrb..r1 * wrb],
                        w_stride: wrb,
                        rows: nr,
                        a: &act[t0 * arb..t1 * arb],
                        a_stride: arb,
                        tokens: t1 - t0,
                    };
                    seg.kernel.gemm(&args, &mut buf[..nr * (t1 - t0)]);
                    for t in t0..t1 {
                        let o = seg.out_rows.map_or(t * n_out, |rows| rows[t]);
                        // SAFETY: this unit's rows of every token are written by this task only
                        // (tokens' output rows do not overlap).
                        let orow = unsafe { seg.out.slice(o + r0..o + r1) };
                        orow.copy_from_slice(&buf[(t - t0) * nr..(t - t0 + 1) * nr]);
                    }
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Tensor, quant};

    /// Deterministic values in ±[0.05, 1.05).
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let m = 0.05 + (s >> 40) as f32 / (1u64 << 24) as f32;
                if s & 1 == 0 { m } else { -m }
            })
            .collect()
    }

    /// A `rows × cols` weight of random values encoded as `dtype`.
    fn weight(dtype: DType, rows: usize, cols: usize, seed: u64) -> Tensor {
        let v = values(seed, rows * cols);
        if dtype == DType::F32 {
            return Tensor::from_f32("w", vec![cols, rows], &v);
        }
        let ops = quant::reference(dtype).expect("a reference quantizer");
        let rb = dtype.row_bytes(cols as u64).unwrap() as usize;
        let mut bytes = vec![0u8; rb * rows];
        for r in 0..rows {
            (ops.quantize_row)(
                &v[r * cols..(r + 1) * cols],
                &mut bytes[r * rb..(r + 1) * rb],
            );
        }
        Tensor::from_bytes("w", dtype, vec![cols, rows], &bytes).unwrap()
    }

    /// `x · Wᵀ` of `n_tok` rows through [`mat_mul`].
    fn product(pool: &ThreadPool, w: &Tensor, x: &[f32], n_tok: usize) -> Vec<f32> {
        let kernel = dot::kernel(w.dtype()).unwrap();
        let n_in = w.row_len();
        let arb = kernel.vec_dot_type.row_bytes(n_in as u64).unwrap() as usize;
        let mut act = vec![0u8; arb * n_tok];
        let mut out = vec![f32::NAN; n_tok * w.n_rows()];
        let seg = MatMulSeg {
            w,
            kernel,
            out: SharedMut(out.as_mut_ptr()),
            out_rows: None,
        };
        mat_mul(pool, &mut act, &[Some(seg)], x, (n_tok, n_in), false);
        out
    }

    /// Batched decoding relies on it: each row of a product over many tokens is bit for bit
    /// the product of that row alone, for every weight format the real models use, whatever
    /// the tiling (decode path, prompt row blocks, token chunks of 256).
    #[test]
    fn rows_of_a_batch_are_bit_identical_to_single_rows() {
        let pool = ThreadPool::new(2);
        let formats = [
            DType::Q4_1,
            DType::Q5_1,
            DType::Q2_K,
            DType::Q3_K,
            DType::Q4_K,
            DType::Q6_K,
            DType::Q8_0,
            DType::F16,
            DType::F32,
            DType::MXFP4,
        ];
        for (fi, &dtype) in formats.iter().enumerate() {
            let (rows, cols) = (200, 512);
            let w = weight(dtype, rows, cols, 11 + fi as u64);
            for n_tok in [2, 5, 70, 300] {
                let x = values(100 + n_tok as u64, n_tok * cols);
                let all = product(&pool, &w, &x, n_tok);
                for t in 0..n_tok {
                    let one = product(&pool, &w, &x[t * cols..(t + 1) * cols], 1);
                    let row = &all[t * rows..(t + 1) * rows];
                    for (r, (a, b)) in row.iter().zip(&one).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{dtype}: token {t} of {n_tok}, output {r}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
