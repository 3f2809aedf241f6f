//! Criterion benchmarks of whole model steps on the real models (skipped when a model is not in
//! `~/.cache/tessera/models` or `$TESSERA_MODELS`): one decode step after a 64-token prompt,
//! and one 512-token prefill, with 2 threads (`TESSERA_BENCH_THREADS` overrides).
//!
//! `cargo bench -p tessera-models --bench step`

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tessera_models::hparams::RopeOverrides;
use tessera_models::{Context, ContextParams, Model};

/// The model file, if present.
fn model(file: &str) -> Option<PathBuf> {
    let p = tessera_model_files::models_dir().join(file);
    p.exists().then_some(p)
}

fn bench_model(c: &mut Criterion, name: &str, file: &str) {
    let Some(path) = model(file) else {
        eprintln!("SKIPPED {name}: {file} not found");
        return;
    };
    let threads = std::env::var("TESSERA_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let m = Arc::new(Model::load(&path, &RopeOverrides::default()).unwrap());
    let n_vocab = m.hparams().n_vocab as u32;
    let prompt: Vec<u32> = (0..512u32).map(|i| (i * 7919 + 13) % n_vocab).collect();
    let mut ctx = Context::new(
        m,
        ContextParams {
            n_ctx: 1024,
            n_batch: 512,
            n_threads: threads,
            ..Default::default()
        },
    )
    .unwrap();
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    ctx.eval(&prompt[..64], false).unwrap();
    let mut tok = 1u32;
    g.bench_function("decode step (64 cached)", |b| {
        b.iter(|| {
            ctx.truncate(64);
            ctx.eval(&[tok], false).unwrap();
            tok = (tok * 31 + 7) % n_vocab;
        })
    });
    g.throughput(Throughput::Elements(512));
    g.bench_function("prefill 512", |b| {
        b.iter(|| {
            ctx.reset();
            ctx.eval(&prompt, false).unwrap();
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_model(c, "smollm2-135m-q4_1", "smollm2-135m-instruct-q4_1.gguf");
    bench_model(c, "gemma3-270m-q4_k_m", "gemma-3-270m-q4_k_m.gguf");
}

criterion_group!(step, benches);
criterion_main!(step);
