//! Quick llama-bench-style speed check: `speed MODEL [pp] [tg] [reps] [threads]` prints
//! prompt-processing (pp) and token-generation (tg) tokens per second, as medians over `reps`
//! repetitions after a warm-up. Used for profiling (`valgrind --tool=callgrind`) and for
//! wall-clock figures until `tessera bench` exists.

use std::sync::Arc;
use std::time::Instant;

use tessera_models::hparams::RopeOverrides;
use tessera_models::{Context, ContextParams, Model};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: speed MODEL [pp] [tg] [reps] [threads]");
    let arg = |i: usize, d: usize| args.get(i).map(|s| s.parse().unwrap()).unwrap_or(d);
    let (pp, tg, reps, threads) = (arg(2, 512), arg(3, 128), arg(4, 3), arg(5, 2));
    let t0 = Instant::now();
    let m = Arc::new(Model::load(path, &RopeOverrides::default()).unwrap());
    eprintln!("load {:.3} s", t0.elapsed().as_secs_f64());
    let n_vocab = m.hparams().n_vocab as u32;
    let mut ctx = Context::new(
        m,
        ContextParams {
            n_ctx: pp.max(1) + tg + 8,
            n_batch: pp.max(1),
            n_threads: threads,
            ..Default::default()
        },
    )
    .unwrap();
    let prompt: Vec<u32> = (0..pp as u32).map(|i| (i * 7919 + 13) % n_vocab).collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    if pp > 0 {
        let mut rates = Vec::new();
        for r in 0..=reps {
            ctx.reset();
            let t = Instant::now();
            ctx.eval(&prompt, false).unwrap();
            if r > 0 {
                rates.push(pp as f64 / t.elapsed().as_secs_f64());
            }
        }
        if !rates.is_empty() {
            println!("pp{pp}: {:.2} t/s (median of {reps})", median(rates));
        }
    }
    if tg > 0 {
        let mut rates = Vec::new();
        for r in 0..=reps {
            ctx.reset();
            let mut tok = 1u32;
            let t = Instant::now();
            for _ in 0..tg {
                ctx.eval(&[tok], false).unwrap();
                tok = (tok * 31 + 7) % n_vocab;
            }
            if r > 0 {
                rates.push(tg as f64 / t.elapsed().as_secs_f64());
            }
        }
        if !rates.is_empty() {
            println!("tg{tg}: {:.2} t/s (median of {reps})", median(rates));
        }
    }
}
