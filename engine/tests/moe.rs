//! The mixture-of-experts ops on the CPU: `mat_mul_id` row by row against plain `mat_mul`s
//! with the chosen experts' weights (the same kernels, so bit for bit), for a prompt and a
//! single token, with shared and per-expert inputs, in every format the models use; and a
//! whole routed feed-forward (router, gated experts, weighted sum) against an f64 reference.

use tessera_engine::cpu::exec::CpuExecutor;
use tessera_engine::graph::{ExpertGating, GraphBuilder, NodeId, RouteParams};
use tessera_engine::{DType, Tensor, quant};

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

/// Values encoded as `dtype` with ggml shape `shape` (rows of `shape[0]`).
fn encode(name: &str, dtype: DType, shape: Vec<usize>, values: &[f32]) -> Tensor {
    if dtype == DType::F32 {
        return Tensor::from_f32(name, shape, values);
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

fn dequantize(t: &Tensor) -> Vec<f32> {
    let ops = quant::reference(t.dtype()).unwrap();
    let n = t.row_len();
    let mut out = vec![0f32; t.n_elements()];
    for r in 0..t.n_rows() {
        (ops.dequantize_row)(t.row(r), &mut out[r * n..(r + 1) * n]);
    }
    out
}

const N_EXPERT: usize = 6;
const N_USED: usize = 3;

struct Moe {
    table: Tensor,
    router: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

fn moe(dtype: DType, n_in: usize, n_ff: usize, rng: &mut Rng) -> Moe {
    let n_vocab = 16;
    Moe {
        table: Tensor::from_f32("tok", vec![n_in, n_vocab], &rng.vec(n_in * n_vocab, 1.0)),
        router: Tensor::from_f32(
            "router",
            vec![n_in, N_EXPERT],
            &rng.vec(n_in * N_EXPERT, 0.3),
        ),
        gate: encode(
            "gate",
            dtype,
            vec![n_in, n_ff, N_EXPERT],
            &rng.vec(n_in * n_ff * N_EXPERT, 0.2),
        ),
        up: encode(
            "up",
            dtype,
            vec![n_in, n_ff, N_EXPERT],
            &rng.vec(n_in * n_ff * N_EXPERT, 0.2),
        ),
        down: encode(
            "down",
            dtype,
            vec![n_ff, n_in, N_EXPERT],
            &rng.vec(n_in * n_ff * N_EXPERT, 0.2),
        ),
    }
}

fn params() -> RouteParams {
    RouteParams {
        n_used: N_USED,
        gating: ExpertGating::Softmax,
        norm: true,
        scale: 1.0,
        groups: None,
    }
}

/// Run a graph built by `f` over `tokens` (no attention), returning its output.
fn run(tokens: &[u32], f: impl FnOnce(&mut GraphBuilder) -> NodeId) -> Vec<f32> {
    let mut b = GraphBuilder::new(tokens.len());
    let out = f(&mut b);
    let exec_graph = b.finish(out);
    let mut exec = CpuExecutor::new(2);
    let g = exec.prepare(exec_graph).unwrap();
    let positions: Vec<i32> = (0..tokens.len() as i32).collect();
    exec.run(&g, tokens, &positions, &mut []).unwrap().to_vec()
}

/// The route and the three expert products of a gated MoE feed-forward, and its output.
fn moe_outputs(m: &Moe, tokens: &[u32]) -> [Vec<f32>; 4] {
    let route = run(tokens, |b| {
        let x = b.get_rows(&m.table);
        let l = b.mat_mul(&m.router, x);
        b.moe_route(l, params(), None)
    });
    let gate = run(tokens, |b| {
        let x = b.get_rows(&m.table);
        let l = b.mat_mul(&m.router, x);
        let r = b.moe_route(l, params(), None);
        b.mat_mul_id(&m.gate, x, r)
    });
    let act = run(tokens, |b| {
        let x = b.get_rows(&m.table);
        let l = b.mat_mul(&m.router, x);
        let r = b.moe_route(l, params(), None);
        let g = b.mat_mul_id(&m.gate, x, r);
        let u = b.mat_mul_id(&m.up, x, r);
        let a = b.swiglu(g, u);
        b.mat_mul_id(&m.down, a, r)
    });
    let out = run(tokens, |b| {
        let x = b.get_rows(&m.table);
        let l = b.mat_mul(&m.router, x);
        let r = b.moe_route(l, params(), None);
        let g = b.mat_mul_id(&m.gate, x, r);
        let u = b.mat_mul_id(&m.up, x, r);
        let a = b.swiglu(g, u);
        let d = b.mat_mul_id(&m.down, a, r);
        b.moe_sum(d, r)
    });
    [route, gate, act, out]
}

/// Each row of `mat_mul_id` is, bit for bit, `mat_mul` with the chosen expert's matrix, and a
/// prompt's rows equal the same tokens run one at a time.
#[test]
fn mat_mul_id_rows_are_the_chosen_experts_products() {
    let mut rng = Rng(7);
    for dtype in [
        DType::F32,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_K,
        DType::Q6_K,
        DType::MXFP4,
    ] {
        let (n_in, n_ff) = (256, 256);
        let m = moe(dtype, n_in, n_ff, &mut rng);
        let tokens = [3u32, 9, 1, 14, 9, 0, 7];
        let [route, gate, act, out] = moe_outputs(&m, &tokens);
        let rc = 2 * N_USED;
        let mut used = [false; N_EXPERT];
        for (t, &tok) in tokens.iter().enumerate() {
            let r = &route[t * rc..(t + 1) * rc];
            for j in 0..N_USED {
                let e = r[j] as usize;
                used[e] = true;
                let want = run(&[tok], |b| {
                    let x = b.get_rows(&m.table);
                    b.mat_mul(&m.gate.matrix(e).unwrap(), x)
                });
                let got = &gate[t * N_USED * n_ff + j * n_ff..][..n_ff];
                assert_eq!(got, &want[..], "{dtype}: token {t}, expert {e}");
            }
            // The same token alone: every output bit for bit.
            let [r1, g1, a1, o1] = moe_outputs(&m, &[tok]);
            assert_eq!(&r1[..], r, "{dtype}: route of token {t}");
            assert_eq!(&g1[..], &gate[t * N_USED * n_ff..][..N_USED * n_ff]);
            assert_eq!(&a1[..], &act[t * N_USED * n_in..][..N_USED * n_in]);
            assert_eq!(&o1[..], &out[t * n_in..][..n_in], "{dtype}: token {t}");
        }
        assert!(used.iter().filter(|&&u| u).count() > N_USED, "{used:?}");
    }
}

/// The whole routed feed-forward against an f64 reference on dequantized weights: softmax
/// over the router's logits, the top three, weights renormalised, `down(silu(gate) ⊙ up)`
/// summed with those weights. A wrong choice or a missing renormalisation fails.
#[test]
fn a_routed_feed_forward_matches_a_reference() {
    let mut rng = Rng(11);
    let (n_in, n_ff) = (64, 32);
    let m = moe(DType::F32, n_in, n_ff, &mut rng);
    let tokens = [5u32, 2, 11];
    let [_, _, _, out] = moe_outputs(&m, &tokens);
    let (tab, router) = (dequantize(&m.table), dequantize(&m.router));
    let (gate, up, down) = (dequantize(&m.gate), dequantize(&m.up), dequantize(&m.down));
    let dot = |w: &[f32], x: &[f64]| -> f64 { w.iter().zip(x).map(|(&a, &b)| a as f64 * b).sum() };
    for (t, &tok) in tokens.iter().enumerate() {
        let x: Vec<f64> = tab[tok as usize * n_in..][..n_in]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let logits: Vec<f64> = (0..N_EXPERT)
            .map(|e| dot(&router[e * n_in..][..n_in], &x))
            .collect();
        let mut order: Vec<usize> = (0..N_EXPERT).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let chosen = &order[..N_USED];
        let z: f64 = chosen.iter().map(|&e| logits[e].exp()).sum();
        let mut want = vec![0f64; n_in];
        for &e in chosen {
            let w = logits[e].exp() / z;
            let h: Vec<f64> = (0..n_ff)
                .map(|r| {
                    let g = dot(&gate[(e * n_ff + r) * n_in..][..n_in], &x);
                    let u = dot(&up[(e * n_ff + r) * n_in..][..n_in], &x);
                    g / (1.0 + (-g).exp()) * u
                })
                .collect();
            for (c, o) in want.iter_mut().enumerate() {
                *o += w * dot(&down[(e * n_in + c) * n_ff..][..n_ff], &h);
            }
        }
        let got = &out[t * n_in..(t + 1) * n_in];
        let err = want
            .iter()
            .zip(got)
            .map(|(&w, &g)| (w - g as f64).abs())
            .fold(0.0, f64::max);
        let scale = want.iter().map(|w| w.abs()).fold(0.0, f64::max);
        assert!(
            err < 1e-4 * scale.max(1.0),
            "token {t}: error {err} of {scale}"
        );
    }
}

/// The ops multi-head latent attention is built from: per-head products (`mat_mul_heads`,
/// bit for bit `mat_mul` with each head's matrix), per-head column ranges and per-head
/// concatenation, for a prompt and for one token.
#[test]
fn per_head_products_columns_and_concat() {
    let mut rng = Rng(5);
    let (n_head, n_in, n_out, n_vocab) = (3, 32, 64, 10);
    let table = Tensor::from_f32(
        "tok",
        vec![n_head * n_in, n_vocab],
        &rng.vec(n_head * n_in * n_vocab, 1.0),
    );
    let w = encode(
        "k_b",
        DType::Q8_0,
        vec![n_in, n_out, n_head],
        &rng.vec(n_in * n_out * n_head, 0.3),
    );
    for tokens in [&[4u32, 1, 7, 7][..], &[9]] {
        let heads = run(tokens, |b| {
            let x = b.get_rows(&table);
            b.mat_mul_heads(&w, x)
        });
        let cols = run(tokens, |b| {
            let x = b.get_rows(&table);
            b.columns(x, n_in, 8..20)
        });
        let cat = run(tokens, |b| {
            let x = b.get_rows(&table);
            let a = b.columns(x, n_in, 0..8);
            let c = b.columns(x, n_in, 8..n_in);
            b.concat(a, c, n_head)
        });
        let x = run(tokens, |b| b.get_rows(&table));
        assert_eq!(cat, x, "split and joined again");
        let xw = n_head * n_in;
        for (t, &tok) in tokens.iter().enumerate() {
            for h in 0..n_head {
                let want = run(&[tok], |b| {
                    let x = b.get_rows(&table);
                    let xh = b.columns(x, n_in, 0..n_in);
                    let xh = b.columns(xh, n_head * n_in, h * n_in..(h + 1) * n_in);
                    b.mat_mul(&w.matrix(h).unwrap(), xh)
                });
                let got = &heads[(t * n_head + h) * n_out..][..n_out];
                assert_eq!(got, &want[..], "token {t} head {h}");
                assert_eq!(
                    &cols[(t * n_head + h) * 12..][..12],
                    &x[t * xw + h * n_in + 8..][..12]
                );
            }
        }
    }
}
