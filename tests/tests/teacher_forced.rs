//! Teacher-forced comparison with llama.cpp's greedy fixtures: feed the prompt and llama.cpp's
//! generated ids, and at every step check our argmax where llama.cpp's top-1 leads clearly,
//! and our logits of its top-5 tokens.

use std::sync::Arc;

use tessera_models::hparams::RopeOverrides;
use tessera_models::{Context, ContextParams, Model};
use tessera_tests::{GEMMA3, SMOLLM2, greedy, model};

/// Largest allowed difference of a top-5 logit.
const LOGIT_TOL: f32 = 0.05;
/// llama.cpp's top-1 must lead top-2 by this much for the argmax to be compared.
const CLEAR_MARGIN: f32 = 0.1;

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
        if top5[0].1 - top5[1].1 >= CLEAR_MARGIN {
            assert_eq!(
                ours, top5[0].0,
                "{name} step {i}: argmax {ours} (logit {}) vs llama.cpp {} ({})",
                logits[ours as usize], top5[0].0, top5[0].1
            );
            compared += 1;
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
        "{name}: {} steps, {compared} argmax compared, top-5 logit diff mean {mean:.4}, worst {worst:.4} at step {worst_at}",
        fx.top5.len()
    );
    assert!(
        worst <= LOGIT_TOL,
        "{name}: worst logit difference {worst} at step {worst_at}"
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
