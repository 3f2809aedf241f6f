//! Batched sequences on the synthetic Gemma 3 (sliding windows of 24 tokens kept as a ring per
//! sequence, prompts longer than the window): four sequences prefilled and decoded together
//! get, bit for bit, the logits each gets alone.

use std::sync::Arc;

use tessera_models::batch_invariance::assert_batch_invariant;
use tessera_models::hparams::RopeOverrides;
use tessera_models::{ContextParams, Model};
use tessera_tests::synthetic::generate;

#[test]
fn gemma3_synthetic_four_sequences_on_rings_equal_each_alone() {
    let Some(path) = generate("gemma3", None) else {
        return;
    };
    let m = Arc::new(Model::load(&path, &RopeOverrides::default()).unwrap());
    let n_vocab = m.hparams().n_vocab as u32;
    let window = (0..m.hparams().n_layer)
        .filter_map(|il| m.hparams().layer_attention(il).window)
        .min()
        .expect("sliding-window layers");
    let prompts: Vec<Vec<u32>> = [30usize, 41, 55, 27]
        .iter()
        .enumerate()
        .map(|(s, &n)| {
            assert!(n > window as usize);
            (0..n as u32)
                .map(|i| (i * 37 + s as u32 * 101 + 5) % n_vocab)
                .collect()
        })
        .collect();
    let params = ContextParams {
        n_ctx: 128,
        n_batch: 16,
        n_threads: 2,
        ..Default::default()
    };
    assert_batch_invariant(&m, params, &prompts, 8);
}
