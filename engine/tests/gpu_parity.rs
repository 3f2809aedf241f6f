//! The GPU backend against the CPU backend, op by op, in the spirit of llama.cpp's
//! test-backend-ops: every op on random inputs (never zeros, odd sizes), the GPU's output
//! compared with the CPU's by normalised mean squared error — at most [`PRODUCT_NMSE`] for
//! weight products (mat_mul, mat_mul_id, mat_mul_heads: both backends round the activations to
//! the weight format's `vec_dot_type` first, the GPU in `act_round.wgsl`, so they differ by
//! summation order only; [`PRODUCT_NMSE_Q8_1`] for Q4_1/Q5_1), 5e-4 for attention, 1e-6 for
//! the rest; a router's chosen expert ids must be equal — NaN always failing,
//! and the GPU arena filled with a sentinel beforehand so a write outside any node's range
//! shows.
//!
//! Runs on whatever adapter wgpu finds (lavapipe in CI). Without one the tests pass with a
//! note, unless `TESSERA_REQUIRE_GPU=1`, which CI sets: then a missing adapter fails.

use std::sync::{Arc, OnceLock};

use tessera_engine::backend::Step;
use tessera_engine::cpu::exec::CpuExecutor;
use tessera_engine::cpu::kv::KvStore;
use tessera_engine::gpu::{GpuDevice, GpuError, GpuExecutor, GpuKvStore};
use tessera_engine::graph::{
    AttnParams, ExpertGating, ExpertGroups, Graph, GraphBuilder, KvId, NodeId, Plan, RopeMode,
    RopeParams, RouteParams,
};
use tessera_engine::{DType, Tensor, quant};

const SENTINEL: f32 = -7.25e11;

/// NMSE bound of a weight product against the CPU. Both backends multiply the same rounded
/// activations, so only f32 summation order differs: 1e-16 to 2e-13 measured on lavapipe
/// (before the GPU rounded its inputs: 8e-6 to 2.1e-5 for the block formats, 2.8e-6 for BF16,
/// 5e-8 for F16); the bound leaves room for GPUs whose f32 division rounds a rare activation
/// the other way.
const PRODUCT_NMSE: f64 = 1e-9;

/// [`PRODUCT_NMSE`] for the formats whose activations are Q8_1 (Q4_1, Q5_1): the CPU takes
/// their offset term `m · Σx` from Q8_1's `s = f16(d · Σq)`, the GPU from the rounded values
/// themselves (up to 8e-7 measured).
const PRODUCT_NMSE_Q8_1: f64 = 5e-6;

/// The NMSE bound of a product with weights of type `dt`.
fn product_nmse(dt: DType) -> f64 {
    match quant::format(dt).map(|f| f.vec_dot_type()) {
        Some(DType::Q8_1) => PRODUCT_NMSE_Q8_1,
        _ => PRODUCT_NMSE,
    }
}

fn device() -> Option<Arc<GpuDevice>> {
    static DEV: OnceLock<Option<Arc<GpuDevice>>> = OnceLock::new();
    DEV.get_or_init(|| match GpuDevice::open(0) {
        Ok(d) => {
            eprintln!("GPU parity on {}", d.describe());
            Some(d)
        }
        Err(e) => {
            if std::env::var("TESSERA_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("TESSERA_REQUIRE_GPU=1 but no GPU: {e}");
            }
            eprintln!("skipping GPU parity: {e}");
            None
        }
    })
    .clone()
}

/// Deterministic values in ±[0.05, 1.05) (never zero).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let u = (self.0 >> 40) as f32 / (1u64 << 24) as f32;
        let m = 0.05 + u;
        if self.0 & 1 == 0 { m } else { -m }
    }

    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// A weight of `rows × cols` random values encoded as `dtype`.
fn weight(name: &str, dtype: DType, rows: usize, cols: usize, rng: &mut Rng) -> Tensor {
    let values = rng.vec(rows * cols, 1.0);
    if dtype == DType::F32 {
        return Tensor::from_f32(name, vec![cols, rows], &values);
    }
    let ops = quant::reference(dtype).expect("a reference quantizer");
    let rb = dtype.row_bytes(cols as u64).unwrap() as usize;
    let mut bytes = vec![0u8; rb * rows];
    for r in 0..rows {
        (ops.quantize_row)(
            &values[r * cols..(r + 1) * cols],
            &mut bytes[r * rb..(r + 1) * rb],
        );
    }
    Tensor::from_bytes(name, dtype, vec![cols, rows], &bytes).unwrap()
}

/// Every weight format the GPU backend decodes: the format table's weight formats with a GPU
/// decoder, in table order.
fn gpu_weight_formats() -> Vec<DType> {
    quant::FORMATS
        .iter()
        .filter(|f| f.is_weight && f.gpu_decoder.is_some())
        .map(|f| f.dtype)
        .collect()
}

/// A random F32 embedding table whose rows feed the op under test (`get_rows` is exact on
/// both backends, so every op sees identical inputs).
fn input(b: &mut GraphBuilder, cols: usize, rng: &mut Rng, scale: f32) -> NodeId {
    let rows = b.n_tokens() + 3;
    let t = Tensor::from_f32("input", vec![cols, rows], &rng.vec(rows * cols, scale));
    b.get_rows(&t)
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 7 + 2) % (n as u32 + 3))
        .collect()
}

fn nmse(want: &[f32], got: &[f32]) -> f64 {
    assert_eq!(want.len(), got.len());
    let mut err = 0.0f64;
    let mut norm = 0.0f64;
    for (i, (&w, &g)) in want.iter().zip(got).enumerate() {
        assert!(g.is_finite(), "GPU value {i} is {g}");
        assert!(w.is_finite(), "CPU value {i} is {w}");
        err += (w as f64 - g as f64).powi(2);
        norm += (w as f64).powi(2);
    }
    err / norm.max(1e-30)
}

/// Run `graph` on both backends (no KV), check the sentinel, return the NMSE.
fn compare(graph: Graph) -> f64 {
    compare_with_tpr(graph, None)
}

/// [`compare`] with `tpr` invocations per mat-vec row instead of the adapter's default.
fn compare_with_tpr(graph: Graph, tpr: Option<u32>) -> f64 {
    let (want, got) = run_both(graph, tpr);
    nmse(&want, &got)
}

/// The output of `graph` on the CPU and on the GPU (with `tpr` invocations per mat-vec row
/// if given), the GPU's arena checked for writes outside every node.
fn run_both(graph: Graph, tpr: Option<u32>) -> (Vec<f32>, Vec<f32>) {
    run_both_with(graph, tpr, None)
}

/// [`run_both`], with mat_mul_id grouped by expert from `grouped_min_rows` rows if given.
fn run_both_with(
    graph: Graph,
    tpr: Option<u32>,
    grouped_min_rows: Option<usize>,
) -> (Vec<f32>, Vec<f32>) {
    let dev = device().expect("caller checked");
    let tok = tokens(graph.n_tokens);
    let pos: Vec<i32> = (0..graph.n_tokens as i32).collect();
    let mut cpu = CpuExecutor::new(1);
    let cg = cpu.prepare(graph.clone()).unwrap();
    let want = cpu.run(&cg, &tok, &pos, &mut []).unwrap().to_vec();
    let plan = Plan::new(&graph);
    let mut gpu = GpuExecutor::new(dev.clone());
    if let Some(n) = tpr {
        gpu.set_matvec_invocations_per_row(n).unwrap();
    }
    if let Some(n) = grouped_min_rows {
        gpu.set_moe_grouped_min_rows(n);
    }
    let mut gg = gpu.prepare(graph.clone()).unwrap();
    gg.fill_arena(&dev, SENTINEL);
    let got = gpu.run(&mut gg, &tok, &pos, &mut []).unwrap().to_vec();
    check_sentinel(&gg, &graph, &plan, &dev);
    (want, got)
}

/// Every arena element outside all node ranges must still hold the sentinel.
fn check_sentinel(
    gg: &tessera_engine::gpu::GpuPreparedGraph,
    graph: &Graph,
    plan: &Plan,
    dev: &GpuDevice,
) {
    let arena = gg.read_arena(dev).unwrap();
    let mut owned = vec![false; arena.len()];
    // The region where products round their inputs is written too.
    for j in gg.scratch_range() {
        owned[j] = true;
    }
    for (i, n) in graph.nodes.iter().enumerate() {
        for j in plan.range(NodeId(i as u32), n.rows * n.cols) {
            owned[j] = true;
        }
    }
    for (j, (&v, &o)) in arena.iter().zip(&owned).enumerate() {
        assert!(
            o || v == SENTINEL,
            "arena element {j} outside every node was written ({v})"
        );
    }
}

macro_rules! need_gpu {
    () => {
        if device().is_none() {
            return;
        }
    };
}

#[test]
fn mat_mul_every_weight_type_and_batch_size() {
    need_gpu!();
    let types = gpu_weight_formats();
    for (i, &dt) in types.iter().enumerate() {
        for n_tok in [1, 3, 4, 5, 70] {
            let mut rng = Rng(0x9e37 + i as u64 * 31 + n_tok as u64);
            let cols = if dt.block_elems() == 256 { 512 } else { 96 };
            let rows = 67;
            let w = weight("w", dt, rows, cols, &mut rng);
            let mut b = GraphBuilder::new(n_tok);
            let x = input(&mut b, cols, &mut rng, 1.0);
            let y = b.mat_mul(&w, x);
            let e = compare(b.finish(y));
            eprintln!("{dt} × {n_tok}: {e:.2e}");
            assert!(e <= product_nmse(dt), "{dt} × {n_tok} tokens: NMSE {e:.2e}");
        }
    }
}

/// Both mat-vec kernels whatever the adapter: one invocation per row (software rasterisers'
/// default) and 16 with a workgroup reduction (GPUs'), and one odd count between.
#[test]
fn mat_vec_both_kernels_every_weight_type() {
    need_gpu!();
    for (i, &dt) in DType::ALL.iter().enumerate() {
        if tessera_engine::gpu::shaders::decoder(dt).is_none() {
            continue;
        }
        for tpr in [1, 4, 16] {
            for n_tok in [1, 2, 8] {
                let mut rng = Rng(0x5eed + i as u64 * 7 + n_tok as u64 + tpr as u64 * 101);
                let cols = if dt.block_elems() == 256 { 768 } else { 160 };
                let w = weight("w", dt, 93, cols, &mut rng);
                let mut b = GraphBuilder::new(n_tok);
                let x = input(&mut b, cols, &mut rng, 1.0);
                let y = b.mat_mul(&w, x);
                let e = compare_with_tpr(b.finish(y), Some(tpr));
                assert!(
                    e <= product_nmse(dt),
                    "{dt} × {n_tok} tokens, {tpr} per row: NMSE {e:.2e}"
                );
            }
        }
    }
}

/// `rows × cols` (cols a multiple of the block) weight bytes in `dtype` whose row `r` is 1 at
/// column `r % cols`, 0 elsewhere, dequantizing exactly: a product with it copies the input's
/// values as each backend rounds them, with no other rounding (sums of exact zeros and one
/// exact product). Q8_0 and Q4_1 blocks are written by hand (scale 1, one quant of 1); F16
/// and BF16 hold 1.0; Q6_K comes from the reference quantizer, checked to decode exactly.
fn one_hot(dtype: DType, rows: usize, cols: usize) -> Tensor {
    let rb = dtype.row_bytes(cols as u64).unwrap() as usize;
    let mut bytes = vec![0u8; rb * rows];
    let one = half::f16::from_f32(1.0).to_le_bytes();
    for r in 0..rows {
        let row = &mut bytes[r * rb..(r + 1) * rb];
        let c = r % cols;
        match dtype {
            DType::F16 => row[2 * c..2 * c + 2].copy_from_slice(&one),
            DType::BF16 => row[2 * c..2 * c + 2].copy_from_slice(&[0x80, 0x3f]),
            DType::Q8_0 => {
                for b in row.chunks_mut(34) {
                    b[..2].copy_from_slice(&one);
                }
                row[(c / 32) * 34 + 2 + c % 32] = 1;
            }
            DType::Q4_1 => {
                // d = 1, m = 0, every nibble 0 but element `c`'s.
                for b in row.chunks_mut(20) {
                    b[..2].copy_from_slice(&one);
                }
                let j = c % 32;
                row[(c / 32) * 20 + 4 + j % 16] = 1 << (4 * (j / 16));
            }
            _ => {
                let mut v = vec![0.0f32; cols];
                v[c] = 1.0;
                (quant::reference(dtype).unwrap().quantize_row)(&v, row);
            }
        }
    }
    let t = Tensor::from_bytes("one_hot", dtype, vec![cols, rows], &bytes).unwrap();
    let mut back = vec![0.0f32; cols];
    for r in 0..rows {
        (quant::reference(dtype).unwrap().dequantize_row)(&bytes[r * rb..(r + 1) * rb], &mut back);
        for (i, &v) in back.iter().enumerate() {
            let want = if i == r % cols { 1.0 } else { 0.0 };
            assert_eq!(v, want, "{dtype} one-hot row {r} decodes {v} at {i}");
        }
    }
    t
}

/// Input rows that probe the roundings: random rows at scales from 1e-6 to 100, and rows
/// whose first block holds ties (127 sets the Q8 scales to exactly 1, so 2.5 and −3.5 are
/// half-way: C's `roundf` for Q8_0, ties to even for Q8_K's `nearest_int`), f16 and bf16
/// half-way values (normal and f16-subnormal), and values of every magnitude.
fn probe_rows(n_rows: usize, cols: usize, rng: &mut Rng) -> Vec<f32> {
    let mut v = Vec::with_capacity(n_rows * cols);
    for r in 0..n_rows {
        let scale = [1.0, 100.0, 1e-3, 1e-6, 7.0][r % 5];
        let mut row = rng.vec(cols, scale);
        if r % 2 == 0 {
            let ties = [
                127.0,
                2.5,
                -3.5,
                0.5,
                -0.5,
                1.5,
                -126.5,
                1.0 + 2f32.powi(-11),
                1.0 + 3.0 * 2f32.powi(-11),
                -(1.0 + 2f32.powi(-11)),
                2f32.powi(-25),
                3.0 * 2f32.powi(-25),
                1.0 + 2f32.powi(-8),
                1.0 + 3.0 * 2f32.powi(-8),
                65504.0 / 1024.0,
                1e-8,
            ];
            row[..ties.len()].copy_from_slice(&ties);
        }
        v.extend(row);
    }
    v
}

/// What the CPU's dot products see of input row `x` against weights of type `dt`: the row
/// quantized to `dt`'s `vec_dot_type` by the reference quantizer, then dequantized.
fn cpu_rounded(dt: DType, x: &[f32]) -> Vec<f32> {
    let act = quant::reference(quant::format(dt).unwrap().vec_dot_type()).unwrap();
    let mut bytes = vec![0u8; act.dtype.row_bytes(x.len() as u64).unwrap() as usize];
    (act.quantize_row)(x, &mut bytes);
    let mut back = vec![0.0f32; x.len()];
    (act.dequantize_row)(&bytes, &mut back);
    back
}

/// Values of `got` whose bits differ from `want`'s, and the first such pair (zeros of either
/// sign are equal: a product's sum of zeros is +0 whatever the rounded value's sign).
fn bit_differences(want: &[f32], got: &[f32]) -> (usize, Option<(f32, f32)>) {
    assert_eq!(want.len(), got.len());
    let mut diff = want
        .iter()
        .zip(got)
        .filter(|(a, b)| a.to_bits() != b.to_bits() && !(**a == 0.0 && **b == 0.0));
    let first = diff.next().map(|(a, b)| (*a, *b));
    (first.map_or(0, |_| 1 + diff.count()), first)
}

/// The GPU rounds a product's input exactly as the CPU quantizes it for the weight's type:
/// through weights that copy the input (`one_hot`), the GPU's output is the rounded input,
/// which must equal the reference quantizer's bytes dequantized ([`cpu_rounded`]), bit for
/// bit, for every activation format (Q8_0 via Q8_0 weights, Q8_1 via Q4_1, Q8_K via Q6_K,
/// f16, bf16), on the mat-vec kernels (1 and 16 invocations a row), the tiled prompt kernel
/// (12 tokens) and mat_mul_id. On a software rasteriser (CI's lavapipe, whose f32 division
/// is correctly rounded) every value must match; a GPU whose division is not (WGSL allows
/// 2.5 ULP) may round a rare value one step the other way.
/// Shown to fail: with the Q8_0 scale `amax / 128` in `act_round.wgsl`, the Q8_0 and Q4_1
/// cases differ in most values (and the product tests' NMSE rises far over their bounds).
#[test]
fn inputs_are_rounded_as_the_cpu_quantizes_them() {
    need_gpu!();
    let exact = device().unwrap().report.device_type == "Cpu";
    let allowed = |n: usize| if exact { 0 } else { n / 10_000 };
    let cols = 256;
    for (i, dt) in [
        DType::Q8_0,
        DType::Q4_1,
        DType::Q6_K,
        DType::F16,
        DType::BF16,
    ]
    .into_iter()
    .enumerate()
    {
        let w = one_hot(dt, cols, cols);
        // Experts that are all the copying matrix, for mat_mul_id.
        let n_expert = 3;
        let experts = Tensor::from_bytes(
            "experts",
            dt,
            vec![cols, cols, n_expert],
            &w.data().repeat(n_expert),
        )
        .unwrap();
        for n_tok in [1, 7, 12] {
            let mut rng = Rng(0xacc + i as u64 * 13 + n_tok as u64);
            let rows = probe_rows(n_tok + 3, cols, &mut rng);
            let table = Tensor::from_f32("probe", vec![cols, n_tok + 3], &rows);
            let want: Vec<f32> = tokens(n_tok)
                .iter()
                .flat_map(|&t| cpu_rounded(dt, &rows[t as usize * cols..][..cols]))
                .collect();
            for tpr in [1, 16] {
                let mut b = GraphBuilder::new(n_tok);
                let x = b.get_rows(&table);
                let y = b.mat_mul(&w, x);
                let (_, got) = run_both(b.finish(y), Some(tpr));
                let (differ, first) = bit_differences(&want, &got);
                eprintln!(
                    "{dt} × {n_tok}, tpr {tpr}: {differ} of {} differ",
                    want.len()
                );
                assert!(
                    differ <= allowed(want.len()),
                    "{dt} × {n_tok}, tpr {tpr}: {differ} of {} values rounded differently \
                     (first: {first:?})",
                    want.len(),
                );
            }
            if n_tok > 8 {
                continue;
            }
            let mut b = GraphBuilder::new(n_tok);
            let l = logits(&mut b, n_expert, &mut rng, 2.0);
            let r = b.moe_route(l, route_params(2, ExpertGating::Softmax, true, 1.0), None);
            let x = b.get_rows(&table);
            let y = b.mat_mul_id(&experts, x, r);
            let (_, got) = run_both(b.finish(y), None);
            // Both slots of a token copy its row.
            let want: Vec<f32> = want.chunks(cols).flat_map(|r| r.repeat(2)).collect();
            let (differ, first) = bit_differences(&want, &got);
            eprintln!(
                "mat_mul_id {dt} × {n_tok}: {differ} of {} differ",
                want.len()
            );
            assert!(
                differ <= allowed(want.len()),
                "mat_mul_id {dt} × {n_tok}: {differ} differ (first: {first:?})"
            );
        }
    }
}

/// Products of one input in one activation format share one rounding pass (Q and K in Q8_0,
/// as a layer's Q/K/V); another format rounds again, and a later product in the first format
/// rounds once more (the scratch holds the last rounding only); F32 weights read the input.
#[test]
fn one_rounding_per_input_and_format() {
    need_gpu!();
    let dev = device().unwrap();
    let mut rng = Rng(0x9a55);
    let (cols, rows) = (256, 64);
    let wq = weight("q", DType::Q8_0, rows, cols, &mut rng);
    let wk = weight("k", DType::Q4_0, rows, cols, &mut rng);
    let wv = weight("v", DType::Q4_K, rows, cols, &mut rng);
    let wo = weight("o", DType::Q5_0, rows, cols, &mut rng);
    let wf = weight("f", DType::F32, rows, cols, &mut rng);
    for n_tok in [1, 12] {
        let mut b = GraphBuilder::new(n_tok);
        let x = input(&mut b, cols, &mut rng, 1.0);
        let q = b.mat_mul(&wq, x);
        let k = b.mat_mul(&wk, x);
        let v = b.mat_mul(&wv, x);
        let o = b.mat_mul(&wo, x);
        let f = b.mat_mul(&wf, x);
        let s = b.add(q, k);
        let s = b.add(s, v);
        let s = b.add(s, o);
        let y = b.add(s, f);
        let graph = b.finish(y);
        let mut gpu = GpuExecutor::new(dev.clone());
        let gg = gpu.prepare(graph.clone()).unwrap();
        assert_eq!(
            gg.n_dispatches(),
            1 + 5 + 4 + 3,
            "get_rows, 5 mat_muls, 4 adds, roundings to Q8_0 (q, k), Q8_K (v), Q8_0 (o)"
        );
        assert_eq!(gg.scratch_range().len(), n_tok * cols);
        let e = compare(graph);
        eprintln!("shared roundings × {n_tok}: {e:.2e}");
        assert!(
            e <= PRODUCT_NMSE,
            "shared roundings × {n_tok}: NMSE {e:.2e}"
        );
    }
}

/// Two executors on one device (two contexts on one model) hold one copy of the weights, and
/// the copy goes when the last of them does.
#[test]
fn executors_on_one_device_share_weights() {
    need_gpu!();
    // A device of its own, so that no other test's uploads count.
    let dev = GpuDevice::open(0).unwrap();
    let mut rng = Rng(0x5ba7);
    let w = weight("w", DType::Q4_0, 96, 256, &mut rng);
    let mut b = GraphBuilder::new(2);
    let x = input(&mut b, 256, &mut rng, 1.0);
    let y = b.mat_mul(&w, x);
    let graph = b.finish(y);
    let mut first = GpuExecutor::new(dev.clone());
    let g1 = first.prepare(graph.clone()).unwrap();
    let once = dev.weight_bytes();
    assert!(once > 0 && once == first.weight_bytes());
    let mut second = GpuExecutor::new(dev.clone());
    let g2 = second.prepare(graph).unwrap();
    assert_eq!(
        dev.weight_bytes(),
        once,
        "the second executor uploaded again"
    );
    drop((g1, first));
    assert_eq!(
        dev.weight_bytes(),
        once,
        "still held by the second executor"
    );
    drop((g2, second));
    assert_eq!(dev.weight_bytes(), 0, "uploads outlived their executors");
}

#[test]
fn get_rows_every_table_type() {
    need_gpu!();
    for (i, dt) in gpu_weight_formats().into_iter().enumerate() {
        let mut rng = Rng(77 + i as u64);
        let n_tok = 5;
        let cols = 256;
        let table = weight("table", dt, n_tok + 3, cols, &mut rng);
        let mut b = GraphBuilder::new(n_tok);
        let x = b.get_rows(&table);
        let e = compare(b.finish(x));
        assert!(e <= 1e-6, "{dt}: NMSE {e:.2e}");
    }
}

#[test]
fn norms_and_elementwise_ops() {
    need_gpu!();
    let mut rng = Rng(5);
    for n_tok in [1, 7] {
        let cols = 576;
        // rms_norm with a gain, and per head without one.
        let gain = Tensor::from_f32("gain", vec![cols], &rng.vec(cols, 1.0));
        let mut b = GraphBuilder::new(n_tok);
        let x = input(&mut b, cols, &mut rng, 3.0);
        let y = b.rms_norm(x, Some(&gain), 1e-5);
        let e = compare(b.finish(y));
        assert!(e <= 1e-6, "rms_norm: {e:.2e}");
        let mut b = GraphBuilder::new(n_tok);
        let x = input(&mut b, cols, &mut rng, 3.0);
        let y = b.rms_norm_grouped(x, None, 64, 1e-6);
        let e = compare(b.finish(y));
        assert!(e <= 1e-6, "grouped rms_norm: {e:.2e}");
        type Build = fn(&mut GraphBuilder, NodeId, NodeId) -> NodeId;
        let ops: [(&str, Build); 7] = [
            ("add", |b, x, y| b.add(x, y)),
            ("mul", |b, x, y| b.mul(x, y)),
            ("scale", |b, x, _| b.scale(x, 0.37)),
            ("swiglu", |b, x, y| b.swiglu(x, y)),
            ("geglu", |b, x, y| b.geglu(x, y)),
            ("relu_sqr", |b, x, _| b.relu_sqr(x)),
            ("last_row", |b, x, _| b.last_row(x)),
        ];
        for (name, op) in ops {
            let mut b = GraphBuilder::new(n_tok);
            let x = input(&mut b, cols, &mut rng, 4.0);
            let y = input(&mut b, cols, &mut rng, 2.0);
            let z = op(&mut b, x, y);
            let e = compare(b.finish(z));
            assert!(e <= 1e-6, "{name}: NMSE {e:.2e}");
        }
        // A bias broadcast over rows, and soft-capping (values past the cap included).
        let bias = Tensor::from_f32("bias", vec![cols], &rng.vec(cols, 2.0));
        let mut b = GraphBuilder::new(n_tok);
        let x = input(&mut b, cols, &mut rng, 4.0);
        let y = b.add_bias(x, &bias);
        let e = compare(b.finish(y));
        assert!(e <= 1e-6, "add_bias: NMSE {e:.2e}");
        let mut b = GraphBuilder::new(n_tok);
        let x = input(&mut b, cols, &mut rng, 60.0);
        let y = b.softcap(x, 30.0);
        let e = compare(b.finish(y));
        assert!(e <= 1e-6, "softcap: NMSE {e:.2e}");
    }
}

fn rope_params(mode: RopeMode, n_dims: usize, yarn: bool) -> RopeParams {
    RopeParams {
        mode,
        n_dims,
        base: 10000.0,
        freq_scale: if yarn { 0.25 } else { 1.0 },
        ext_factor: if yarn { 1.0 } else { 0.0 },
        attn_factor: 1.0,
        beta_fast: 32.0,
        beta_slow: 1.0,
        orig_ctx: 256,
    }
}

#[test]
fn rope_normal_neox_and_yarn() {
    need_gpu!();
    let mut rng = Rng(11);
    for (mode, n_dims, yarn) in [
        (RopeMode::Normal, 64, false),
        (RopeMode::Neox, 64, false),
        (RopeMode::Neox, 48, true),
        (RopeMode::Normal, 256, true),
    ] {
        let head = n_dims.max(64);
        let mut b = GraphBuilder::new(9);
        let x = input(&mut b, head * 3, &mut rng, 1.0);
        let y = b.rope(x, head, rope_params(mode, n_dims, yarn));
        let e = compare(b.finish(y));
        assert!(e <= 1e-6, "{mode:?} {n_dims} yarn {yarn}: NMSE {e:.2e}");
        // With per-pair frequency factors (Llama 3's rope_freqs, LongRoPE).
        let f: Vec<f32> = (0..n_dims / 2).map(|i| 1.0 + i as f32 * 0.37).collect();
        let factors = Tensor::from_f32("rope_freqs", vec![n_dims / 2], &f);
        let mut b = GraphBuilder::new(9);
        let x = input(&mut b, head * 3, &mut rng, 1.0);
        let p = rope_params(mode, n_dims, yarn);
        let y = b.rope_with_factors(x, head, p, Some(&factors));
        let e = compare(b.finish(y));
        assert!(e <= 1e-6, "{mode:?} {n_dims} factors: NMSE {e:.2e}");
    }
}

/// One attention layer run for a sequence of steps on both backends, the KV caches growing
/// (and wrapping, for rings) as they go; every step's output compared.
fn attention_steps(
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    window: Option<u32>,
    n_cells: usize,
    steps: &[usize],
    seed: u64,
) {
    attention_steps_with_sinks(
        n_head, n_head_kv, head_dim, window, n_cells, steps, seed, None,
    );
}

/// [`attention_steps`] with attention sinks (one logit per query head) when given.
#[allow(clippy::too_many_arguments)]
fn attention_steps_with_sinks(
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    window: Option<u32>,
    n_cells: usize,
    steps: &[usize],
    seed: u64,
    sinks: Option<&Tensor>,
) {
    let dev = device().expect("caller checked");
    let p = AttnParams {
        n_head,
        n_head_kv,
        head_dim,
        head_dim_v: head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
        window,
        softcap: None,
    };
    let mut rng = Rng(seed);
    let mut cpu = CpuExecutor::new(1);
    let mut gpu = GpuExecutor::new(dev.clone());
    let (kw, vw) = (n_head_kv * head_dim, n_head_kv * head_dim);
    let mut ckv = vec![KvStore::new(n_cells, kw, vw)];
    let mut gkv = vec![GpuKvStore::new(&dev, n_cells, kw, vw).unwrap()];
    let mut pos0 = 0i32;
    for (si, &n) in steps.iter().enumerate() {
        let mut b = GraphBuilder::new(n);
        let q = input(&mut b, n_head * head_dim, &mut rng, 1.5);
        let k = input(&mut b, kw, &mut rng, 1.5);
        let v = input(&mut b, vw, &mut rng, 1.0);
        let o = match sinks {
            Some(t) => b.attention_with_sinks(q, k, v, KvId(0), p, t),
            None => b.attention(q, k, v, KvId(0), p),
        };
        let graph = b.finish(o);
        let tok = tokens(n);
        let pos: Vec<i32> = (pos0..pos0 + n as i32).collect();
        let cg = cpu.prepare(graph.clone()).unwrap();
        let want = cpu.run(&cg, &tok, &pos, &mut ckv).unwrap().to_vec();
        let plan = Plan::new(&graph);
        let mut gg = gpu.prepare(graph.clone()).unwrap();
        gg.fill_arena(&dev, SENTINEL);
        let got = gpu.run(&mut gg, &tok, &pos, &mut gkv).unwrap().to_vec();
        check_sentinel(&gg, &graph, &plan, &dev);
        let e = nmse(&want, &got);
        if sinks.is_some() {
            eprintln!(
                "attention with sinks {n_head}/{n_head_kv}×{head_dim} window {window:?}: step \
                 {si} ({n} tokens at {pos0}): NMSE {e:.2e}"
            );
        }
        assert!(
            e <= 5e-4,
            "attention {n_head}/{n_head_kv}×{head_dim} window {window:?} cells {n_cells}: step {si} \
             ({n} tokens at {pos0}): NMSE {e:.2e}"
        );
        assert_eq!(ckv[0].cell_positions(), gkv[0].cell_positions());
        pos0 += n as i32;
    }
}

/// One multi-head latent attention layer (DeepSeek-V2's absorbed path) run for a sequence of
/// steps on both backends: `n_head` query heads on one KV head whose keys are `dk` wide and
/// whose values are their first `dv` elements, over stores without values (the latent cache);
/// the batch's values are those columns of its keys, as the model passes them. With
/// `separate_values` the stores hold values of their own and the batch's are an input.
fn mla_attention_steps(
    n_head: usize,
    dk: usize,
    dv: usize,
    separate_values: bool,
    steps: &[usize],
    seed: u64,
) {
    let dev = device().expect("caller checked");
    let p = AttnParams {
        n_head,
        n_head_kv: 1,
        head_dim: dk,
        head_dim_v: dv,
        scale: 1.0 / (dk as f32).sqrt(),
        window: None,
        softcap: None,
    };
    let n_cells = 512;
    let mut rng = Rng(seed);
    let mut cpu = CpuExecutor::new(1);
    let mut gpu = GpuExecutor::new(dev.clone());
    let vw = if separate_values { dv } else { 0 };
    let mut ckv = vec![KvStore::new(n_cells, dk, vw)];
    let mut gkv = vec![GpuKvStore::new(&dev, n_cells, dk, vw).unwrap()];
    let mut pos0 = 0i32;
    for (si, &n) in steps.iter().enumerate() {
        let mut b = GraphBuilder::new(n);
        let q = input(&mut b, n_head * dk, &mut rng, 1.5);
        // (Inputs come in rows of multiples of 32: keys of 48 are columns of wider rows.)
        let kr = dk.next_multiple_of(32);
        let k = input(&mut b, kr, &mut rng, 1.5);
        let k = b.columns(k, kr, 0..dk);
        let v = if separate_values {
            input(&mut b, dv, &mut rng, 1.0)
        } else {
            b.columns(k, dk, 0..dv)
        };
        let o = b.attention(q, k, v, KvId(0), p);
        let graph = b.finish(o);
        let tok = tokens(n);
        let pos: Vec<i32> = (pos0..pos0 + n as i32).collect();
        let cg = cpu.prepare(graph.clone()).unwrap();
        let want = cpu.run(&cg, &tok, &pos, &mut ckv).unwrap().to_vec();
        let plan = Plan::new(&graph);
        let mut gg = gpu.prepare(graph.clone()).unwrap();
        gg.fill_arena(&dev, SENTINEL);
        let got = gpu.run(&mut gg, &tok, &pos, &mut gkv).unwrap().to_vec();
        check_sentinel(&gg, &graph, &plan, &dev);
        let e = nmse(&want, &got);
        eprintln!(
            "MLA attention {n_head}×{dk}/{dv}: step {si} ({n} tokens at {pos0}): NMSE {e:.2e}"
        );
        assert!(
            e <= 5e-4,
            "MLA attention {n_head}×{dk}/{dv}: step {si} ({n} tokens at {pos0}): NMSE {e:.2e}"
        );
        assert_eq!(ckv[0].cell_positions(), gkv[0].cell_positions());
        pos0 += n as i32;
    }
}

#[test]
fn attention_mla_values_in_keys_48_32() {
    need_gpu!();
    // The synthetic deepseek2's shape: keys of kv_lora_rank 32 + rope 16, values the first
    // 32. A prompt of 300 makes the next decode steps use two split-K workgroups.
    mla_attention_steps(4, 48, 32, false, &[13, 1, 1, 5, 1, 300, 1, 2, 1], 0x31a);
}

#[test]
fn attention_mla_values_in_keys_576_512() {
    need_gpu!();
    // DeepSeek-V2's shape: keys of 512 + 64 (three 256-value chunks in the prompt kernel),
    // values the first 512 (two output groups per invocation in the split-K kernel).
    mla_attention_steps(8, 576, 512, false, &[11, 1, 1, 9, 1, 2, 1], 0x576);
    // The same widths over stores with values of their own.
    mla_attention_steps(8, 576, 512, true, &[11, 1, 1, 9, 1], 0x577);
}

#[test]
fn attention_mla_values_in_keys_widest() {
    need_gpu!();
    // The widest heads: keys of 1024, values of 1016 (four value chunks in the prompt kernel,
    // the last partial; output groups past 64 in the split-K kernel).
    mla_attention_steps(2, 1024, 1016, false, &[9, 1, 2, 1], 0x1024);
}

#[test]
fn mat_mul_heads_every_weight_type_and_odd_float_rows() {
    need_gpu!();
    let mut worst = 0f64;
    let mut formats = gpu_weight_formats();
    formats.push(DType::F32);
    for (i, dt) in formats.into_iter().enumerate() {
        let mut rng = Rng(0x4ead + i as u64);
        let n_parts = 4;
        // Float rows of 24 (the synthetic model's qk_nope) take the value-by-value path.
        let n_ins: &[usize] = match dt.block_elems() {
            256 => &[256],
            1 => &[24, 64],
            _ => &[64],
        };
        for &n_in in n_ins {
            let w = stacked("heads", dt, vec![n_in, 40, n_parts], &mut rng);
            for n_tok in [1, 6] {
                for tpr in [1, 16] {
                    let mut b = GraphBuilder::new(n_tok);
                    let x = input(&mut b, n_parts * n_in, &mut rng, 1.0);
                    let y = b.mat_mul_heads(&w, x);
                    let e = compare_with_tpr(b.finish(y), Some(tpr));
                    assert!(
                        e <= product_nmse(dt),
                        "mat_mul_heads {dt} rows of {n_in} × {n_tok}, tpr {tpr}: NMSE {e:.2e}"
                    );
                    worst = worst.max(e);
                }
            }
        }
    }
    eprintln!("mat_mul_heads: worst NMSE {worst:.2e}");
    // A mat_mul of float rows of 48 (the synthetic deepseek2's low-rank query width) goes
    // through the same value-by-value path, for a token and a prompt.
    for dt in [DType::F32, DType::F16] {
        for n_tok in [1, 11] {
            let mut rng = Rng(0x48 + n_tok as u64);
            let w = stacked("q_b", dt, vec![48, 72], &mut rng);
            let mut b = GraphBuilder::new(n_tok);
            let x = input(&mut b, 64, &mut rng, 1.0);
            let x = b.columns(x, 64, 0..48);
            let y = b.mat_mul(&w, x);
            let e = compare(b.finish(y));
            assert!(
                e <= product_nmse(dt),
                "mat_mul {dt} rows of 48 × {n_tok}: NMSE {e:.2e}"
            );
        }
    }
}

#[test]
fn columns_and_concat() {
    need_gpu!();
    let mut rng = Rng(0xc01);
    for n_tok in [1, 5] {
        // Four groups of 24 (odd offsets and lengths): columns 5..21, then the per-group
        // concatenation of columns 0..10 and 10..24 (which rebuilds the input), and of two
        // inputs with one group (the latent and the rotated key).
        let mut b = GraphBuilder::new(n_tok);
        let x = input(&mut b, 96, &mut rng, 1.0);
        let y = b.columns(x, 24, 5..21);
        let e = compare(b.finish(y));
        assert!(e <= 1e-6, "columns × {n_tok}: NMSE {e:.2e}");
        let mut b = GraphBuilder::new(n_tok);
        let x = input(&mut b, 96, &mut rng, 1.0);
        let l = b.columns(x, 24, 0..10);
        let r = b.columns(x, 24, 10..24);
        let y = b.concat(l, r, 4);
        let (want, got) = run_both(b.finish(y), None);
        assert_eq!(want, got, "concat of columns × {n_tok}");
        let mut b = GraphBuilder::new(n_tok);
        let c = input(&mut b, 32, &mut rng, 1.0);
        let k = input(&mut b, 64, &mut rng, 1.0);
        let k = b.columns(k, 64, 48..64);
        let y = b.concat(c, k, 1);
        let e = compare(b.finish(y));
        assert!(e <= 1e-6, "concat × {n_tok}: NMSE {e:.2e}");
    }
}

#[test]
fn attention_gqa_prefill_then_decode() {
    need_gpu!();
    // SmolLM2's shape: 9 query heads on 3 KV heads of 64.
    attention_steps(9, 3, 64, None, 64, &[13, 1, 1, 5, 1, 2, 1], 1);
}

#[test]
fn attention_mqa_head_256_ring_wraps() {
    need_gpu!();
    // Gemma 3's shape: 4 query heads on one KV head of 256, a sliding window of 16 in a ring
    // of 16 cells, wrapped several times by prefill chunks and decode steps.
    attention_steps(4, 1, 256, Some(16), 16, &[11, 1, 9, 1, 1, 16, 1, 3, 1], 2);
}

#[test]
fn attention_steps_longer_than_the_ring() {
    need_gpu!();
    // A step of more tokens than the ring has cells writes some cells twice: the later
    // position must win, as on the CPU, or the next step reads the wrong keys. (Tokens of one
    // step are written in parallel; before the fix the winner varied from run to run.)
    for seed in 0..4 {
        attention_steps(
            4,
            1,
            256,
            Some(16),
            16,
            &[40, 1, 1, 37, 1, 50, 1],
            20 + seed,
        );
        attention_steps(2, 2, 64, Some(5), 8, &[29, 1, 2, 19, 1], 30 + seed);
    }
}

#[test]
fn attention_window_in_a_full_cache() {
    need_gpu!();
    attention_steps(4, 2, 64, Some(7), 64, &[20, 1, 1, 6, 1], 3);
}

#[test]
fn attention_long_cache_4096() {
    need_gpu!();
    // n_kv grows to 4096 through prompt chunks, then decode steps read all of it.
    let mut steps = vec![512; 7];
    steps.extend([511, 1, 1, 1]);
    attention_steps(4, 1, 64, None, 4096, &steps, 4);
}

/// Attention sinks (gpt-oss): one logit per query head joins every softmax's denominator,
/// once, after the keys. GQA (8 query heads on 2 KV heads of 64), prompts of 7 (the prompt
/// kernel) and decode steps of 1 and 2 (split-K) over caches of 700+ positions (three splits,
/// the sink entering in the reduction); sinks from far below the scores to far above them,
/// through the range where a sink weighs as much as all 700 keys together (e^6.6), with and
/// without a sliding window.
/// Shown to fail: with the sink added by each split-K workgroup to its partial sum instead of
/// once in the reduction, the decode steps over three splits gave NMSE ≈ 1e-2 (see the commit
/// message).
#[test]
fn attention_sinks_prefill_and_split_k_decode() {
    need_gpu!();
    let (n_head, n_head_kv, head_dim) = (8, 2, 64);
    let sinks: Vec<f32> = vec![-20.0, -1.0, 0.5, 2.0, 4.0, 6.0, 7.5, 12.0];
    let t = Tensor::from_f32("attn_sinks", vec![n_head], &sinks);
    // Prompts of 7, decode steps, then a prompt that takes the cache past 512 (three splits
    // of 256 sources for the decode steps after it).
    let steps = [7, 1, 1, 7, 350, 350, 1, 2, 1, 7, 1];
    attention_steps_with_sinks(
        n_head,
        n_head_kv,
        head_dim,
        None,
        1024,
        &steps,
        0x51,
        Some(&t),
    );
    // A sliding window of 600 in a full cache (the decode steps still use three splits), and
    // one of 5 in a ring of 8 cells (one split, most keys out of the window).
    attention_steps_with_sinks(
        n_head,
        n_head_kv,
        head_dim,
        Some(600),
        1024,
        &steps,
        0x52,
        Some(&t),
    );
    attention_steps_with_sinks(
        n_head,
        n_head_kv,
        head_dim,
        Some(5),
        8,
        &[7, 1, 1, 7, 1],
        0x53,
        Some(&t),
    );
}

/// gpt-oss's clamped SwiGLU with gates and ups well beyond its clamp of 7 (both signs), for
/// a token and a prompt.
#[test]
fn swiglu_oai_beyond_the_clamps() {
    need_gpu!();
    let mut rng = Rng(0x0a1);
    for n_tok in [1, 7] {
        let cols = 320;
        let mut b = GraphBuilder::new(n_tok);
        let g = input(&mut b, cols, &mut rng, 12.0);
        let u = input(&mut b, cols, &mut rng, 12.0);
        let y = b.swiglu_oai(g, u, 1.702, 7.0);
        let e = compare(b.finish(y));
        eprintln!("swiglu_oai × {n_tok}: NMSE {e:.2e}");
        assert!(e <= 1e-6, "swiglu_oai × {n_tok}: NMSE {e:.2e}");
    }
}

/// Per-expert biases on a mat_mul_id output, the expert of each (token, slot) read from the
/// route on the device: an odd expert count and width, a token and a prompt.
#[test]
fn add_bias_id_per_token_and_slot() {
    need_gpu!();
    let mut rng = Rng(0xb1a5);
    let (n_expert, n_used, n) = (9, 3, 70);
    let bias = stacked("exp_bias", DType::F32, vec![n, n_expert], &mut rng);
    for n_tok in [1, 7] {
        let mut b = GraphBuilder::new(n_tok);
        let l = logits(&mut b, n_expert, &mut rng, 2.0);
        let r = b.moe_route(
            l,
            route_params(n_used, ExpertGating::SoftmaxWeight, false, 1.0),
            None,
        );
        // Parts of 70 values (not a multiple of 32): columns of a wider input.
        let x = input(&mut b, 224, &mut rng, 1.0);
        let x = b.columns(x, 224, 0..n_used * n);
        let y = b.add_bias_id(x, &bias, r);
        let e = compare(b.finish(y));
        eprintln!("add_bias_id × {n_tok}: NMSE {e:.2e}");
        assert!(e <= 1e-6, "add_bias_id × {n_tok}: NMSE {e:.2e}");
    }
}

#[test]
fn weights_over_the_binding_limit_are_split() {
    need_gpu!();
    let dev = device().unwrap();
    // Enough Q8_0 rows to exceed the adapter's binding limit would take hundreds of MiB; use
    // the real limit only where it is small, otherwise check the chunking logic on a limit of
    // the device's own, which for lavapipe (128 MiB) is exercised by the Gemma 3 model tests.
    let max = dev.max_binding();
    eprintln!("max storage binding: {} MiB", max >> 20);
    let mut rng = Rng(9);
    let w = weight("w", DType::Q8_0, 33, 64, &mut rng);
    let mut b = GraphBuilder::new(2);
    let x = input(&mut b, 64, &mut rng, 1.0);
    let y = b.mat_mul(&w, x);
    assert!(compare(b.finish(y)) <= PRODUCT_NMSE);
}

#[test]
fn bad_steps_are_errors() {
    need_gpu!();
    let dev = device().unwrap();
    let mut rng = Rng(10);
    let mut b = GraphBuilder::new(2);
    let x = input(&mut b, 32, &mut rng, 1.0);
    let graph = b.finish(x);
    let mut gpu = GpuExecutor::new(dev);
    let mut g = gpu.prepare(graph).unwrap();
    let e = gpu.run(&mut g, &[0, 99], &[0, 1], &mut []).unwrap_err();
    assert!(
        matches!(e, GpuError::Unsupported(ref m) if m.contains("out of range")),
        "{e}"
    );
    let e = gpu.run(&mut g, &[0], &[0], &mut []).unwrap_err();
    assert!(e.to_string().contains("takes 2 tokens"), "{e}");
    let e = gpu.run(&mut g, &[0, 1], &[1, 1], &mut []).unwrap_err();
    assert!(e.to_string().contains("increasing"), "{e}");
}

/// Values encoded as `dtype` with ggml shape `shape` (rows of `shape[0]`): a 3-D shape is a
/// stack of experts' matrices.
fn stacked(name: &str, dtype: DType, shape: Vec<usize>, rng: &mut Rng) -> Tensor {
    let values = rng.vec(shape.iter().product(), 0.5);
    if dtype == DType::F32 {
        return Tensor::from_f32(name, shape, &values);
    }
    let ops = quant::reference(dtype).expect("a reference quantizer");
    let cols = shape[0];
    let rb = dtype.row_bytes(cols as u64).unwrap() as usize;
    let rows = values.len() / cols;
    let mut bytes = vec![0u8; rb * rows];
    for r in 0..rows {
        (ops.quantize_row)(
            &values[r * cols..(r + 1) * cols],
            &mut bytes[r * rb..(r + 1) * rb],
        );
    }
    Tensor::from_bytes(name, dtype, shape, &bytes).unwrap()
}

/// Router logits `n_tok × n_expert`: rows of the random table where `n_expert` is a multiple
/// of 32 (what `get_rows` takes), else the product of such rows with a random F32 router.
fn logits(b: &mut GraphBuilder, n_expert: usize, rng: &mut Rng, scale: f32) -> NodeId {
    if n_expert.is_multiple_of(32) {
        return input(b, n_expert, rng, scale);
    }
    let x = input(b, 64, rng, scale);
    let router = stacked("router", DType::F32, vec![64, n_expert], rng);
    b.mat_mul(&router, x)
}

fn route_params(n_used: usize, gating: ExpertGating, norm: bool, scale: f32) -> RouteParams {
    RouteParams {
        n_used,
        gating,
        norm,
        scale,
        groups: None,
    }
}

/// Runs a routing graph on both backends: the chosen ids must be equal, the weights within
/// 1e-6 NMSE; returns the weights' NMSE.
fn compare_route(graph: Graph, n_used: usize, what: &str) -> f64 {
    let (want, got) = run_both(graph, None);
    let rc = 2 * n_used;
    for (t, (w, g)) in want.chunks(rc).zip(got.chunks(rc)).enumerate() {
        assert_eq!(w[..n_used], g[..n_used], "{what}: ids of row {t}");
    }
    let weights =
        |v: &[f32]| -> Vec<f32> { v.chunks(rc).flat_map(|r| r[n_used..].to_vec()).collect() };
    let e = nmse(&weights(&want), &weights(&got));
    assert!(e <= 1e-6, "{what}: weights NMSE {e:.2e}");
    e
}

/// The router with every gating, with and without renormalisation and a choice bias, for a
/// token and a prompt, over an odd number of experts (more than a workgroup has invocations),
/// and over 256 experts choosing 8 with a scale.
#[test]
fn moe_route_every_gating() {
    need_gpu!();
    let mut rng = Rng(0x40e);
    let mut worst = 0f64;
    for gating in [
        ExpertGating::Softmax,
        ExpertGating::Sigmoid,
        ExpertGating::SoftmaxWeight,
    ] {
        for norm in [false, true] {
            for with_bias in [false, true] {
                for n_tok in [1, 7] {
                    let (n_expert, n_used) = (67, 6);
                    let bias = Tensor::from_f32("bias", vec![n_expert], &rng.vec(n_expert, 0.1));
                    let mut b = GraphBuilder::new(n_tok);
                    let l = logits(&mut b, n_expert, &mut rng, 3.0);
                    let p = route_params(n_used, gating, norm, 1.0);
                    let r = b.moe_route(l, p, with_bias.then_some(&bias));
                    let what = format!("{gating:?} norm {norm} bias {with_bias} × {n_tok}");
                    worst = worst.max(compare_route(b.finish(r), n_used, &what));
                }
            }
        }
        let mut b = GraphBuilder::new(5);
        let l = input(&mut b, 256, &mut rng, 2.0);
        let r = b.moe_route(l, route_params(8, gating, true, 2.5), None);
        let what = format!("{gating:?} 256 experts");
        worst = worst.max(compare_route(b.finish(r), 8, &what));
    }
    eprintln!("moe_route: worst weights NMSE {worst:.2e}");
}

/// Ties go to the lower id and a NaN is never chosen over a number, on the GPU as on the CPU:
/// logits in steps of 0.25 (many equal), some NaN; and the most experts choosing the most.
#[test]
fn moe_route_ties_nans_and_the_largest_router() {
    need_gpu!();
    let mut rng = Rng(0x71e);
    let (n_expert, n_used, n_tok) = (64, 12, 6);
    let rows = n_tok + 3;
    let mut v: Vec<f32> = rng
        .vec(rows * n_expert, 2.0)
        .iter()
        .map(|x| (x * 4.0).round() / 4.0)
        .collect();
    for i in (3..v.len()).step_by(7) {
        v[i] = f32::NAN;
    }
    let table = Tensor::from_f32("logits", vec![n_expert, rows], &v);
    for gating in [ExpertGating::Sigmoid, ExpertGating::SoftmaxWeight] {
        let mut b = GraphBuilder::new(n_tok);
        let l = b.get_rows(&table);
        let r = b.moe_route(l, route_params(n_used, gating, true, 1.0), None);
        compare_route(b.finish(r), n_used, &format!("{gating:?} ties and NaNs"));
    }
    let (n_expert, n_used) = (
        tessera_engine::graph::MAX_EXPERTS,
        tessera_engine::graph::MAX_EXPERTS_USED,
    );
    let mut b = GraphBuilder::new(2);
    let l = input(&mut b, n_expert, &mut rng, 4.0);
    let r = b.moe_route(
        l,
        route_params(n_used, ExpertGating::Softmax, true, 1.0),
        None,
    );
    compare_route(b.finish(r), n_used, "1024 experts, 64 used");
}

/// Group-limited routing (DeepSeek-V3): the same experts chosen on both backends, with and
/// without a choice bias, for a token and a prompt: 16 experts in 4 groups (2 used), V3's
/// 256 experts in 8 groups (4 used, 8 chosen), 128 groups of 2 (more groups than a
/// workgroup has invocations), and logits in steps of 0.25 with NaNs (tied groups).
#[test]
fn moe_route_expert_groups() {
    need_gpu!();
    let mut rng = Rng(0x96);
    let grouped = |n_used, gating, n_group, n_group_used| RouteParams {
        groups: Some(ExpertGroups {
            n_group,
            n_used: n_group_used,
        }),
        ..route_params(n_used, gating, true, 2.5)
    };
    let mut worst = 0f64;
    for (n_expert, n_used, n_group, n_group_used) in
        [(16, 4, 4, 2), (256, 8, 8, 4), (256, 6, 128, 3)]
    {
        for gating in [ExpertGating::Softmax, ExpertGating::Sigmoid] {
            for with_bias in [false, true] {
                for n_tok in [1, 7] {
                    let bias = Tensor::from_f32("bias", vec![n_expert], &rng.vec(n_expert, 0.5));
                    let mut b = GraphBuilder::new(n_tok);
                    let l = logits(&mut b, n_expert, &mut rng, 3.0);
                    let p = grouped(n_used, gating, n_group, n_group_used);
                    let r = b.moe_route(l, p, with_bias.then_some(&bias));
                    let what = format!(
                        "{n_expert} experts in {n_group} groups, {gating:?} bias {with_bias} \
                         × {n_tok}"
                    );
                    worst = worst.max(compare_route(b.finish(r), n_used, &what));
                }
            }
        }
    }
    let (n_expert, n_tok) = (64, 6);
    let rows = n_tok + 3;
    let mut v: Vec<f32> = rng
        .vec(rows * n_expert, 1.0)
        .iter()
        .map(|x| (x * 4.0).round() / 4.0)
        .collect();
    for i in (5..v.len()).step_by(11) {
        v[i] = f32::NAN;
    }
    let table = Tensor::from_f32("logits", vec![n_expert, rows], &v);
    let mut b = GraphBuilder::new(n_tok);
    let l = b.get_rows(&table);
    let r = b.moe_route(l, grouped(4, ExpertGating::SoftmaxWeight, 16, 5), None);
    compare_route(b.finish(r), 4, "groups with ties and NaNs");
    eprintln!("moe_route with groups: worst weights NMSE {worst:.2e}");
}

/// mat_mul_id in a few formats, with one input row shared by the chosen experts and with one
/// part per slot, for a token and a prompt of 7, with one and 16 invocations per row.
#[test]
fn mat_mul_id_shared_and_per_slot_inputs() {
    need_gpu!();
    let mut worst = 0f64;
    for (i, dt) in [
        DType::F32,
        DType::Q8_0,
        DType::Q4_K,
        DType::Q4_0,
        DType::Q6_K,
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = Rng(0x1d + i as u64);
        let (n_expert, n_used, n_out) = (9, 3, 70);
        let n_in = if dt.block_elems() == 256 { 256 } else { 96 };
        let w = stacked("experts", dt, vec![n_in, n_out, n_expert], &mut rng);
        for per_slot in [false, true] {
            for n_tok in [1, 7] {
                for tpr in [1, 16] {
                    let mut b = GraphBuilder::new(n_tok);
                    let l = logits(&mut b, n_expert, &mut rng, 2.0);
                    let p = route_params(n_used, ExpertGating::Softmax, true, 1.0);
                    let r = b.moe_route(l, p, None);
                    let cols = if per_slot { n_used * n_in } else { n_in };
                    let x = input(&mut b, cols, &mut rng, 1.0);
                    let y = b.mat_mul_id(&w, x, r);
                    let e = compare_with_tpr(b.finish(y), Some(tpr));
                    eprintln!("mat_mul_id {dt} per-slot {per_slot} × {n_tok}, tpr {tpr}: {e:.2e}");
                    assert!(
                        e <= product_nmse(dt),
                        "{dt} per-slot {per_slot} × {n_tok}, {tpr} per row: NMSE {e:.2e}"
                    );
                    worst = worst.max(e);
                }
            }
        }
    }
    eprintln!("mat_mul_id: worst NMSE {worst:.2e}");
}

/// Stacked experts over several chunks (each a whole number of experts, as on an adapter
/// whose binding limit a real expert tensor exceeds): each chunk's dispatch computes the
/// pairs whose expert it holds, for a token and a prompt; and one expert larger than a chunk
/// is a clear error.
#[test]
fn mat_mul_id_over_expert_chunks() {
    need_gpu!();
    // A device of its own: its chunk limit must not touch the other tests' uploads.
    let dev = GpuDevice::open(0).unwrap();
    let mut rng = Rng(0xc4);
    let (n_expert, n_used, n_out, n_in) = (10, 4, 40, 64);
    let dt = DType::Q8_0;
    let w = stacked("experts", dt, vec![n_in, n_out, n_expert], &mut rng);
    let expert_bytes = (n_out * dt.row_bytes(n_in as u64).unwrap() as usize) as u64;
    // Three experts a chunk: four chunks, the last of one expert.
    dev.limit_weight_chunks(3 * expert_bytes + 100);
    // 1 and 7 rows one mat-vec per pair, 33 grouped by expert.
    for n_tok in [1, 7, 33] {
        let mut b = GraphBuilder::new(n_tok);
        let l = logits(&mut b, n_expert, &mut rng, 2.0);
        let r = b.moe_route(
            l,
            route_params(n_used, ExpertGating::Softmax, false, 1.0),
            None,
        );
        let x = input(&mut b, n_in, &mut rng, 1.0);
        let y = b.mat_mul_id(&w, x, r);
        let graph = b.finish(y);
        let tok = tokens(n_tok);
        let pos: Vec<i32> = (0..n_tok as i32).collect();
        let mut cpu = CpuExecutor::new(1);
        let cg = cpu.prepare(graph.clone()).unwrap();
        let want = cpu.run(&cg, &tok, &pos, &mut []).unwrap().to_vec();
        let mut gpu = GpuExecutor::new(dev.clone());
        let mut gg = gpu.prepare(graph.clone()).unwrap();
        // The two input tables (n_tok + 3 rows of 64 F32) are chunked too: in two at 33.
        let table_chunks = if (n_tok + 3) * 64 * 4 > 3 * expert_bytes as usize + 100 {
            2
        } else {
            1
        };
        assert_eq!(
            gg.n_dispatches(),
            2 * table_chunks + 1 + 1 + 1 + 4,
            "2 get_rows, mat_mul (F32), route, the input rounded to Q8_0, 4 chunks"
        );
        gg.fill_arena(&dev, SENTINEL);
        let got = gpu.run(&mut gg, &tok, &pos, &mut []).unwrap().to_vec();
        check_sentinel(&gg, &graph, &Plan::new(&graph), &dev);
        let e = nmse(&want, &got);
        eprintln!("mat_mul_id over 4 chunks × {n_tok}: {e:.2e}");
        assert!(
            e <= PRODUCT_NMSE,
            "chunked mat_mul_id × {n_tok}: NMSE {e:.2e}"
        );
    }
    // A fresh tensor (the upload above is cached): one expert no longer fits a chunk.
    let big = stacked("big", dt, vec![n_in, n_out, n_expert], &mut rng);
    dev.limit_weight_chunks(expert_bytes / 2);
    let mut b = GraphBuilder::new(1);
    let l = logits(&mut b, n_expert, &mut rng, 2.0);
    let r = b.moe_route(
        l,
        route_params(n_used, ExpertGating::Softmax, false, 1.0),
        None,
    );
    let x = input(&mut b, n_in, &mut rng, 1.0);
    let y = b.mat_mul_id(&big, x, r);
    let e = GpuExecutor::new(dev.clone())
        .prepare(b.finish(y))
        .err()
        .expect("an expert over the chunk limit");
    assert!(e.to_string().contains("one expert's matrix"), "{e}");
}

#[test]
fn moe_sum_in_slot_order() {
    need_gpu!();
    let mut rng = Rng(0x5a3);
    for n_tok in [1, 7] {
        let (n_expert, n_used, n) = (8, 4, 96);
        let mut b = GraphBuilder::new(n_tok);
        let l = logits(&mut b, n_expert, &mut rng, 2.0);
        let r = b.moe_route(
            l,
            route_params(n_used, ExpertGating::Sigmoid, false, 1.5),
            None,
        );
        let x = input(&mut b, n_used * n, &mut rng, 3.0);
        let y = b.moe_sum(x, r);
        let e = compare(b.finish(y));
        eprintln!("moe_sum × {n_tok}: {e:.2e}");
        assert!(e <= 1e-6, "moe_sum × {n_tok}: NMSE {e:.2e}");
    }
}

/// A Qwen3-MoE style feed-forward: router mat_mul, softmax top-k routing with renormalised
/// weights, gate and up experts (Q4_K), SwiGLU, down experts (Q8_0), weighted sum.
#[test]
fn a_routed_feed_forward() {
    need_gpu!();
    let mut rng = Rng(0xff);
    let (n_embd, n_ff, n_expert, n_used) = (256, 96, 16, 4);
    let router = stacked("router", DType::F32, vec![n_embd, n_expert], &mut rng);
    let gate = stacked("gate", DType::Q4_K, vec![n_embd, n_ff, n_expert], &mut rng);
    let up = stacked("up", DType::Q4_K, vec![n_embd, n_ff, n_expert], &mut rng);
    let down = stacked("down", DType::Q8_0, vec![n_ff, n_embd, n_expert], &mut rng);
    for n_tok in [1, 7] {
        let mut b = GraphBuilder::new(n_tok);
        let x = input(&mut b, n_embd, &mut rng, 1.0);
        let l = b.mat_mul(&router, x);
        let r = b.moe_route(
            l,
            route_params(n_used, ExpertGating::Softmax, true, 1.0),
            None,
        );
        let g = b.mat_mul_id(&gate, x, r);
        let u = b.mat_mul_id(&up, x, r);
        let a = b.swiglu(g, u);
        let d = b.mat_mul_id(&down, a, r);
        let y = b.moe_sum(d, r);
        let e = compare(b.finish(y));
        eprintln!("routed feed-forward × {n_tok}: {e:.2e}");
        assert!(
            e <= PRODUCT_NMSE,
            "routed feed-forward × {n_tok}: NMSE {e:.2e}"
        );
    }
}

/// Not a test: times mat_mul per weight type on the adapter (`cargo test --release -p
/// tessera-engine --test gpu_parity mat_mul_speed -- --ignored --nocapture`).
#[test]
#[ignore]
fn mat_mul_speed() {
    need_gpu!();
    let dev = device().unwrap();
    let mut rng = Rng(1);
    for dt in gpu_weight_formats() {
        for n_tok in [1, 64] {
            let (rows, cols) = (4096, 1024);
            let w = weight("w", dt, rows, cols, &mut rng);
            let mut b = GraphBuilder::new(n_tok);
            let x = input(&mut b, cols, &mut rng, 1.0);
            let y = b.mat_mul(&w, x);
            let mut gpu = GpuExecutor::new(dev.clone());
            let mut g = gpu.prepare(b.finish(y)).unwrap();
            let tok = tokens(n_tok);
            let pos: Vec<i32> = (0..n_tok as i32).collect();
            gpu.run(&mut g, &tok, &pos, &mut []).unwrap();
            let t = std::time::Instant::now();
            let reps = 5;
            for _ in 0..reps {
                gpu.run(&mut g, &tok, &pos, &mut []).unwrap();
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            eprintln!(
                "{dt} {n_tok} tokens: {:.2} ms, {:.0} M MAC/s",
                s * 1e3,
                (rows * cols * n_tok) as f64 / s / 1e6
            );
        }
    }
}

/// Not a test: times a decode step's mat_mul_id (8 of 32 Q8_0 experts of 768 × 1024, with
/// its router) against a plain mat_mul over the same bytes (8·768 rows) on the adapter, and
/// a prompt of 32 rows (`cargo test --release -p tessera-engine --test gpu_parity
/// mat_mul_id_speed -- --ignored --nocapture`).
#[test]
#[ignore]
fn mat_mul_id_speed() {
    need_gpu!();
    let dev = device().unwrap();
    let mut rng = Rng(2);
    let (n_expert, n_used, n_out, n_in) = (32, 8, 768, 1024);
    let dt = DType::Q8_0;
    let experts = stacked("experts", dt, vec![n_in, n_out, n_expert], &mut rng);
    let dense = stacked("dense", dt, vec![n_in, n_used * n_out], &mut rng);
    let time = |graph: Graph| {
        let n_tok = graph.n_tokens;
        let mut gpu = GpuExecutor::new(dev.clone());
        let mut g = gpu.prepare(graph).unwrap();
        let tok = tokens(n_tok);
        let pos: Vec<i32> = (0..n_tok as i32).collect();
        gpu.run(&mut g, &tok, &pos, &mut []).unwrap();
        let t = std::time::Instant::now();
        let reps = 5;
        for _ in 0..reps {
            gpu.run(&mut g, &tok, &pos, &mut []).unwrap();
        }
        t.elapsed().as_secs_f64() / reps as f64 * 1e3
    };
    for n_tok in [1, 32] {
        let mut b = GraphBuilder::new(n_tok);
        let l = input(&mut b, n_expert, &mut rng, 2.0);
        let r = b.moe_route(
            l,
            route_params(n_used, ExpertGating::Softmax, true, 1.0),
            None,
        );
        let x = input(&mut b, n_in, &mut rng, 1.0);
        let y = b.mat_mul_id(&experts, x, r);
        let id_ms = time(b.finish(y));
        let mut b = GraphBuilder::new(n_tok);
        let x = input(&mut b, n_in, &mut rng, 1.0);
        let y = b.mat_mul(&dense, x);
        let dense_ms = time(b.finish(y));
        eprintln!(
            "{n_tok} tokens: mat_mul_id {id_ms:.2} ms, mat_mul over the same bytes {dense_ms:.2} ms"
        );
    }
}

/// mat_mul_id prompts grouped by expert on the GPU (`matmul_id.wgsl`): 7 rows (grouped by
/// force; the default groups from 8), 33 and 100 (two entry tiles for a busy expert), over 8
/// and 32 experts choosing 2 to 4, with a shared input and one part per slot, in F32, Q8_0,
/// Q4_K and MXFP4, output rows not a multiple of the 64-row tile.
#[test]
fn mat_mul_id_grouped_prompts() {
    need_gpu!();
    let mut worst = 0f64;
    for (i, dt) in [DType::F32, DType::Q8_0, DType::Q4_K, DType::MXFP4]
        .into_iter()
        .enumerate()
    {
        let mut rng = Rng(0x96 + i as u64);
        let n_in = if dt.block_elems() == 256 { 256 } else { 64 };
        let n_out = 70;
        for (n_expert, n_used) in [(8, 2), (32, 4), (32, 3)] {
            let w = stacked("experts", dt, vec![n_in, n_out, n_expert], &mut rng);
            for per_slot in [false, true] {
                for n_tok in [7, 33, 100] {
                    let mut b = GraphBuilder::new(n_tok);
                    let l = logits(&mut b, n_expert, &mut rng, 2.0);
                    let p = route_params(n_used, ExpertGating::Softmax, true, 1.0);
                    let r = b.moe_route(l, p, None);
                    let cols = if per_slot { n_used * n_in } else { n_in };
                    let x = input(&mut b, cols, &mut rng, 1.0);
                    let y = b.mat_mul_id(&w, x, r);
                    let (want, got) = run_both_with(b.finish(y), None, Some(1));
                    let e = nmse(&want, &got);
                    let what = format!("{dt} {n_expert}/{n_used} per-slot {per_slot} × {n_tok}");
                    eprintln!("grouped mat_mul_id {what}: {e:.2e}");
                    assert!(e <= PRODUCT_NMSE, "grouped mat_mul_id {what}: NMSE {e:.2e}");
                    worst = worst.max(e);
                }
            }
        }
    }
    eprintln!("grouped mat_mul_id: worst NMSE {worst:.2e}");
}

/// A skewed route on the grouped path: every one of 100 tokens chooses expert 5 first (two
/// entry tiles, the second partial), the other slots only experts 0..4, so 26 of 32 experts
/// get no rows.
#[test]
fn mat_mul_id_grouped_skewed_route() {
    need_gpu!();
    let mut rng = Rng(0x5e);
    let (n_expert, n_used, n_out, n_in, n_tok) = (32, 3, 100, 96, 100);
    let rows = n_tok + 3;
    let mut v = vec![-20.0f32; rows * n_expert];
    for r in 0..rows {
        v[r * n_expert + 5] = 20.0;
        for e in 0..5 {
            v[r * n_expert + e] = rng.next() * 3.0;
        }
    }
    let table = Tensor::from_f32("logits", vec![n_expert, rows], &v);
    for dt in [DType::Q8_0, DType::F32] {
        let w = stacked("experts", dt, vec![n_in, n_out, n_expert], &mut rng);
        for per_slot in [false, true] {
            let mut b = GraphBuilder::new(n_tok);
            let l = b.get_rows(&table);
            let p = route_params(n_used, ExpertGating::Softmax, false, 1.0);
            let r = b.moe_route(l, p, None);
            let cols = if per_slot { n_used * n_in } else { n_in };
            let x = input(&mut b, cols, &mut rng, 1.0);
            let y = b.mat_mul_id(&w, x, r);
            let (want, got) = run_both_with(b.finish(y), None, None);
            let e = nmse(&want, &got);
            eprintln!("grouped mat_mul_id skewed {dt} per-slot {per_slot}: {e:.2e}");
            assert!(
                e <= PRODUCT_NMSE,
                "skewed {dt} per-slot {per_slot}: NMSE {e:.2e}"
            );
        }
    }
}

/// The time of a 128-row mat_mul_id (128 experts choosing 8, 768 × 2048 Q4_K experts, as
/// Qwen3-30B-A3B's gate projection) one mat-vec per pair and grouped by expert. Prints
/// timings only (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn mat_mul_id_prompt_timing() {
    need_gpu!();
    let dev = device().unwrap();
    let mut rng = Rng(0x7e);
    let (n_expert, n_used, n_out, n_in, n_tok) = (128, 8, 768, 2048, 128);
    let w = stacked(
        "experts",
        DType::Q4_K,
        vec![n_in, n_out, n_expert],
        &mut rng,
    );
    let mut b = GraphBuilder::new(n_tok);
    let l = input(&mut b, n_expert, &mut rng, 2.0);
    let r = b.moe_route(
        l,
        route_params(n_used, ExpertGating::Softmax, true, 1.0),
        None,
    );
    let x = input(&mut b, n_in, &mut rng, 1.0);
    let y = b.mat_mul_id(&w, x, r);
    let graph = b.finish(y);
    let tok = tokens(n_tok);
    let pos: Vec<i32> = (0..n_tok as i32).collect();
    let mut outs = Vec::new();
    for (what, min_rows) in [("per pair", usize::MAX), ("grouped", 1)] {
        let mut gpu = GpuExecutor::new(dev.clone());
        gpu.set_moe_grouped_min_rows(min_rows);
        let mut gg = gpu.prepare(graph.clone()).unwrap();
        let out = gpu.run(&mut gg, &tok, &pos, &mut []).unwrap().to_vec();
        let t0 = std::time::Instant::now();
        let runs = 3;
        for _ in 0..runs {
            gpu.run(&mut gg, &tok, &pos, &mut []).unwrap();
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3 / runs as f64;
        eprintln!("mat_mul_id 128 rows, 128 experts / 8, Q4_K 768 × 2048, {what}: {ms:.1} ms");
        outs.push(out);
    }
    eprintln!("grouped vs per pair NMSE {:.2e}", nmse(&outs[0], &outs[1]));
}

/// The attention graph of `n` tokens over KV store 0 whose queries, keys and values are rows
/// of the fixed `tables` picked by token id; with `select`, only that many rows returned.
fn table_attention(n: usize, tables: &[Tensor; 3], p: AttnParams, select: Option<usize>) -> Graph {
    let mut b = GraphBuilder::new(n);
    let [q, k, v] = [0, 1, 2].map(|i| b.get_rows(&tables[i]));
    let o = b.attention(q, k, v, KvId(0), p);
    let o = match select {
        Some(k) => b.select_rows(o, k),
        None => o,
    };
    b.finish(o)
}

#[test]
fn a_step_mixing_sequences_attends_each_over_its_own_cells() {
    need_gpu!();
    let dev = device().unwrap();
    let mut rng = Rng(77);
    // Rings of a window, rings of a whole context, and a pool the sequences share.
    for (window, pooled) in [(None, false), (Some(6), false), (None, true)] {
        let p = AttnParams {
            n_head: 4,
            n_head_kv: 2,
            head_dim: 32,
            head_dim_v: 32,
            scale: 0.3,
            window,
            softcap: None,
        };
        let (kw, n_rows) = (2 * 32, 40);
        let tables = [4 * 32, kw, kw]
            .map(|c| Tensor::from_f32("table", vec![c, n_rows], &rng.vec(n_rows * c, 1.5)));
        let id = |s: u32, pos: i32| (s * 13 + pos as u32 * 5) % n_rows as u32;
        let n_cells = if window.is_some() { 16 } else { 64 };
        // Three sequences stepped together in one store, and each alone in a store of its own.
        let mut mixed = GpuExecutor::new(dev.clone());
        mixed.set_max_sequences(3);
        let mut alone = GpuExecutor::new(dev.clone());
        let mut shared = vec![if pooled {
            GpuKvStore::pool(&dev, 3 * n_cells, 3, n_cells, kw, kw).unwrap()
        } else {
            GpuKvStore::rings(&dev, n_cells, 3, kw, kw).unwrap()
        }];
        let mut own: Vec<GpuKvStore> = (0..3)
            .map(|_| GpuKvStore::new(&dev, n_cells, kw, kw).unwrap())
            .collect();
        let mut len = [0i32; 3];
        // Sequence 0 holds 9 tokens, 1 holds 3, 2 none, each written alone.
        for (s, n) in [(0u32, 9usize), (1, 3)] {
            let tok: Vec<u32> = (0..n as i32).map(|q| id(s, q)).collect();
            let pos: Vec<i32> = (0..n as i32).collect();
            let seqs = vec![s; n];
            let step = Step {
                tokens: &tok,
                positions: &pos,
                seqs: &seqs,
                out_rows: &[],
            };
            let mut g = mixed.prepare(table_attention(n, &tables, p, None)).unwrap();
            mixed.run_step(&mut g, &step, &mut shared).unwrap();
            let mut g = alone.prepare(table_attention(n, &tables, p, None)).unwrap();
            alone
                .run(&mut g, &tok, &pos, &mut own[s as usize..s as usize + 1])
                .unwrap();
            len[s as usize] = n as i32;
        }
        // Steps mixing all three: 6 prompt tokens (the query-tile kernel) with 1 and 2 tokens
        // (split-K), some rows selected; then one token each.
        for (groups, rows) in [
            (vec![(2u32, 6usize), (0, 1), (1, 2)], vec![2u32, 5, 6, 8]),
            (vec![(1, 1), (2, 1), (0, 1)], vec![]),
        ] {
            let (mut tok, mut pos, mut seqs) = (vec![], vec![], vec![]);
            for &(s, n) in &groups {
                for q in len[s as usize]..len[s as usize] + n as i32 {
                    tok.push(id(s, q));
                    pos.push(q);
                    seqs.push(s);
                }
            }
            let n = tok.len();
            let select = (!rows.is_empty()).then_some(rows.len());
            let graph = table_attention(n, &tables, p, select);
            let plan = Plan::new(&graph);
            let mut g = mixed.prepare(graph.clone()).unwrap();
            g.fill_arena(&dev, SENTINEL);
            let step = Step {
                tokens: &tok,
                positions: &pos,
                seqs: &seqs,
                out_rows: &rows,
            };
            let got = mixed.run_step(&mut g, &step, &mut shared).unwrap().to_vec();
            check_sentinel(&g, &graph, &plan, &dev);
            // Each group alone over its own store.
            let width = 4 * 32;
            let mut want = Vec::new();
            let mut t0 = 0;
            for &(s, n) in &groups {
                let mut ga = alone.prepare(table_attention(n, &tables, p, None)).unwrap();
                let r = t0..t0 + n;
                let out = alone
                    .run(
                        &mut ga,
                        &tok[r.clone()],
                        &pos[r],
                        &mut own[s as usize..s as usize + 1],
                    )
                    .unwrap();
                want.extend_from_slice(out);
                len[s as usize] += n as i32;
                t0 += n;
            }
            if !rows.is_empty() {
                want = rows
                    .iter()
                    .flat_map(|&r| want[r as usize * width..(r as usize + 1) * width].to_vec())
                    .collect();
            }
            assert_eq!(got.len(), want.len());
            let diff = got
                .iter()
                .zip(&want)
                .position(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(
                diff, None,
                "window {window:?}, pooled {pooled}, groups {groups:?}: value {diff:?} differs"
            );
        }
        // A step mixing more sequences than the executor was prepared for is refused.
        let mut two = GpuExecutor::new(dev.clone());
        two.set_max_sequences(2);
        let mut g = two.prepare(table_attention(3, &tables, p, None)).unwrap();
        let step = Step {
            tokens: &[1, 2, 3],
            positions: &[30, 30, 30],
            seqs: &[0, 1, 2],
            out_rows: &[],
        };
        let e = two.run_step(&mut g, &step, &mut shared).unwrap_err();
        assert!(e.to_string().contains("mixes 3 sequences"), "{e}");
    }
}

#[test]
fn a_pool_too_full_for_a_step_refuses_it_unchanged() {
    need_gpu!();
    let dev = device().unwrap();
    let mut rng = Rng(78);
    let p = AttnParams {
        n_head: 2,
        n_head_kv: 1,
        head_dim: 32,
        head_dim_v: 32,
        scale: 0.3,
        window: None,
        softcap: None,
    };
    let tables =
        [64, 32, 32].map(|c| Tensor::from_f32("table", vec![c, 16], &rng.vec(16 * c, 1.0)));
    let mut gpu = GpuExecutor::new(dev.clone());
    gpu.set_max_sequences(2);
    let mut kv = vec![GpuKvStore::pool(&dev, 6, 2, 8, 32, 32).unwrap()];
    let mut g = gpu.prepare(table_attention(4, &tables, p, None)).unwrap();
    let step = |seq: u32| Step {
        tokens: &[1, 2, 3, 4],
        positions: &[0, 1, 2, 3],
        seqs: [&[0u32; 4][..], &[1u32; 4][..]][seq as usize],
        out_rows: &[],
    };
    gpu.run_step(&mut g, &step(0), &mut kv).unwrap();
    let e = gpu.run_step(&mut g, &step(1), &mut kv).unwrap_err();
    assert!(matches!(e, GpuError::KvFull(_)), "{e}");
    assert_eq!(kv[0].used_cells(), 4, "nothing taken");
    // Sequence 1 forks sequence 0's first two tokens without taking cells.
    kv[0].seq_copy(0, 1, 2);
    assert_eq!(kv[0].used_cells(), 4);
}
