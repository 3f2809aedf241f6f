//! Teacher-forced comparison with llama.cpp's greedy fixtures: feed the prompt and llama.cpp's
//! generated ids, and at every step check our argmax where llama.cpp's top-1 leads clearly,
//! and our logits of its top-5 tokens.

use std::sync::Arc;

use tessera_models::hparams::RopeOverrides;
use tessera_models::{Context, ContextParams, Model};
use tessera_tests::{GEMMA3, SMOLLM2, greedy, model, teacher};

// The bounds, and the measurements behind them: tessera_tests::teacher.

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
    let own = teacher::self_spread(fixture_model, name);
    teacher::compare(name, &fx, own, |i| {
        if i == 0 {
            ctx.eval(&fx.prompt_ids, false).unwrap();
        } else {
            ctx.eval(&[fx.generated_ids[i - 1]], false).unwrap();
        }
        ctx.logits().to_vec()
    });
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
