//! Sliding-window layers keep a ring of `window` cells. These tests check that the ring gives
//! exactly the tokens full caches with a sliding mask give, and that its memory does not grow
//! with the context.

use std::sync::Arc;

use tessera_models::hparams::RopeOverrides;
use tessera_models::kv_cache::KvPolicy;
use tessera_models::{Context, ContextParams, Model};
use tessera_tests::{GEMMA3, greedy, model};

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy continuation of `prompt` for `n` tokens.
fn generate(m: &Arc<Model>, prompt: &[u32], n: usize, kv_ring: bool, n_ctx: usize) -> Vec<u32> {
    let mut ctx = Context::new(
        m.clone(),
        ContextParams {
            n_ctx,
            kv_ring,
            ..Default::default()
        },
    )
    .unwrap();
    ctx.eval(prompt, false).unwrap();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = argmax(ctx.logits());
        out.push(t);
        ctx.eval(&[t], false).unwrap();
    }
    out
}

#[test]
fn ring_equals_full_cache_for_1500_tokens() {
    let Some(path) = model(GEMMA3) else { return };
    let m = Arc::new(Model::load(&path, &RopeOverrides::default()).unwrap());
    // The 873-token prompt is already longer than the 512-token window.
    let prompt = greedy("gemma-3-270m-q4_k_m", "long").prompt_ids;
    let n = 1500;
    let n_ctx = prompt.len() + n + 1;
    let ring = generate(&m, &prompt, n, true, n_ctx);
    let full = generate(&m, &prompt, n, false, n_ctx);
    let first_diff = ring.iter().zip(&full).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "ring and full caches diverge");
}

#[test]
fn ring_layers_do_not_grow_with_the_context() {
    let Some(path) = model(GEMMA3) else { return };
    let m = Arc::new(Model::load(&path, &RopeOverrides::default()).unwrap());
    let ctx = |n_ctx| {
        Context::new(
            m.clone(),
            ContextParams {
                n_ctx,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let (small, big) = (ctx(4096), ctx(32768));
    let a = small.kv_cache();
    let (a_bytes, b_bytes) = (small.kv_bytes_per_layer(), big.kv_bytes_per_layer());
    for (il, p) in a.policies().iter().enumerate() {
        match p {
            KvPolicy::Ring { window, cells } => {
                // The window and the batch (room to roll back by 512 tokens).
                assert_eq!((*window, *cells), (512, 1024));
                assert_eq!(a_bytes[il], b_bytes[il], "layer {il}");
            }
            KvPolicy::Full(n) => assert_eq!(*n, 4096),
        }
    }
    let globals = a
        .policies()
        .iter()
        .filter(|p| matches!(p, KvPolicy::Full(_)))
        .count();
    assert_eq!(globals, 3);
    let ratio = big.kv_bytes() as f64 / small.kv_bytes() as f64;
    // (3 × 32768 + 15 × 1024) / (3 × 4096 + 15 × 1024) cells.
    assert!((ratio - 4.11).abs() < 0.1, "KV bytes 32768/4096 = {ratio}");
}
