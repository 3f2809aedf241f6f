//! Teacher-forced comparison with llama.cpp's greedy fixtures: feed the prompt and llama.cpp's
//! generated ids, and at every step check our argmax where llama.cpp's top-1 leads clearly,
//! and our logits of its top-5 tokens.

use std::sync::Arc;

use tessera_models::hparams::RopeOverrides;
use tessera_models::{Context, ContextParams, Model};
use tessera_tests::{GEMMA3, SMOLLM2, greedy, model};

// Why the bounds are not "a few hundredths": every mat_mul re-quantizes its input to int8, and
// a float difference of 1e-7 anywhere (summation order, F16 rounding in attention) sometimes
// moves a value across a rounding boundary; those one-step jumps compound over the layers.
// llama.cpp disagrees with itself as much: the same build (0c1e570) on this machine with flash
// attention off instead of on (the fixtures were made with it on) gives, on these fixtures,
// mean |Δ| of the top-5 logits 0.13–0.32, worst 0.48–1.75, and 7 argmax flips at steps where
// its top-1 led by 0.02–0.54 (e.g. SmolLM2 code step 35, Gemma code step 23, where we flip
// too). Our scalar and AVX2 paths differ from each other by the same amounts. The bounds below
// say "as close to llama.cpp as llama.cpp is to itself".

/// Mean |Δ| over every step's top-5 logits.
const MEAN_TOL: f64 = 0.35;
/// Worst |Δ| of any top-5 logit.
const WORST_TOL: f32 = 2.0;
/// Where llama.cpp's top-1 leads by this much, our argmax must be the same (llama.cpp's own
/// flips stop below 0.54).
const SURE_MARGIN: f32 = 0.6;
/// At steps with a lead between 0.1 and `SURE_MARGIN`, at most this many flips per fixture
/// (llama.cpp flips against itself up to 2 times per fixture).
const MAX_UNSURE_FLIPS: usize = 2;

fn check(file: &str, fixture_model: &str, name: &str, kv_ring: bool) {
    let Some(path) = model(file) else { return };
    let fx = greedy(fixture_model, name);
    let m = Arc::new(Model::load(&path, &RopeOverrides::default()).unwrap());
    let mut ctx = Context::new(
        m,
        ContextParams {
            n_ctx: 2048,
            kv_ring,
            ..Default::default()
        },
    )
    .unwrap();
    // The prompt, then each generated token in turn; logits before step i come from the
    // evaluation of the previous token.
    let mut worst = 0.0f32;
    let mut worst_at = 0;
    let mut compared = 0;
    let mut unsure_flips = 0;
    let mut sum_abs = 0.0f64;
    let mut n_abs = 0usize;
    for (i, top5) in fx.top5.iter().enumerate() {
        if i == 0 {
            ctx.eval(&fx.prompt_ids, false).unwrap();
        } else {
            ctx.eval(&[fx.generated_ids[i - 1]], false).unwrap();
        }
        let logits = ctx.logits();
        let ours = argmax(logits);
        let margin = top5[0].1 - top5[1].1;
        if margin >= SURE_MARGIN {
            assert_eq!(
                ours, top5[0].0,
                "{name} step {i}: argmax {ours} (logit {}) vs llama.cpp {} ({}, lead {margin})",
                logits[ours as usize], top5[0].0, top5[0].1
            );
            compared += 1;
        } else if margin >= 0.1 && ours != top5[0].0 {
            unsure_flips += 1;
            eprintln!(
                "{name} step {i}: argmax {ours} vs llama.cpp {} (lead {margin:.3})",
                top5[0].0
            );
        }
        if std::env::var("TESSERA_DEBUG_STEPS").is_ok() {
            let diffs: Vec<String> = top5
                .iter()
                .map(|&(id, want)| format!("{id}:{:+.3}", logits[id as usize] - want))
                .collect();
            eprintln!("step {i}: {}", diffs.join(" "));
        }
        for &(id, want) in top5 {
            let d = (logits[id as usize] - want).abs();
            sum_abs += d as f64;
            n_abs += 1;
            if d > worst {
                worst = d;
                worst_at = i;
            }
        }
    }
    let mean = sum_abs / n_abs as f64;
    eprintln!(
        "{name}: {} steps, {compared} sure argmax equal, {unsure_flips} flips at close steps, \
         top-5 logit |Δ| mean {mean:.4}, worst {worst:.4} at step {worst_at}",
        fx.top5.len()
    );
    assert!(mean <= MEAN_TOL, "{name}: mean logit difference {mean}");
    assert!(
        worst <= WORST_TOL,
        "{name}: worst logit difference {worst} at step {worst_at}"
    );
    assert!(
        unsure_flips <= MAX_UNSURE_FLIPS,
        "{name}: {unsure_flips} argmax flips at close steps"
    );
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

const SMOL: &str = "smollm2-135m-instruct-q4_1";
const GEMMA: &str = "gemma-3-270m-q4_k_m";

#[test]
fn smollm2_capital() {
    check(SMOLLM2, SMOL, "capital", true);
}

#[test]
fn smollm2_chat() {
    check(SMOLLM2, SMOL, "chat", true);
}

#[test]
fn smollm2_code() {
    check(SMOLLM2, SMOL, "code", true);
}

#[test]
fn smollm2_long() {
    check(SMOLLM2, SMOL, "long", true);
}

#[test]
fn gemma3_capital() {
    check(GEMMA3, GEMMA, "capital", true);
}

#[test]
fn gemma3_chat() {
    check(GEMMA3, GEMMA, "chat", true);
}

#[test]
fn gemma3_code() {
    check(GEMMA3, GEMMA, "code", true);
}

#[test]
fn gemma3_long() {
    check(GEMMA3, GEMMA, "long", true);
}

#[test]
fn gemma3_long_with_full_caches() {
    check(GEMMA3, GEMMA, "long", false);
}
