//! Batch invariance, checked: several sequences prefilled together in one [`Batch`] and then
//! decoded together (greedily, one token each per step) must get, bit for bit, the logits each
//! gets alone through [`Context::eval`]. Compiled for this crate's tests and with the
//! `testing` feature (the integration tests run it on real and synthetic models).

use std::sync::Arc;

use crate::batch::Batch;
use crate::context::{Context, ContextParams};
use crate::model::Model;

/// The logits one sequence saw: after its prompt, then after each greedy token.
#[derive(Clone, Debug, PartialEq)]
pub struct SeqRun {
    /// Logits after the prompt, then after each decoded token.
    pub logits: Vec<Vec<f32>>,
    /// The greedy tokens decoded.
    pub tokens: Vec<u32>,
}

/// The index of the largest value (the first of ties).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// `prompt` alone in a one-sequence context of `params`, then `n_steps` greedy tokens.
pub fn solo(model: &Arc<Model>, params: ContextParams, prompt: &[u32], n_steps: usize) -> SeqRun {
    let mut ctx = Context::new(model.clone(), ContextParams { n_seq: 1, ..params }).unwrap();
    ctx.eval(prompt, false).unwrap();
    let mut run = SeqRun {
        logits: vec![ctx.logits().to_vec()],
        tokens: Vec::new(),
    };
    for _ in 0..n_steps {
        let t = argmax(ctx.logits());
        run.tokens.push(t);
        ctx.eval(&[t], false).unwrap();
        run.logits.push(ctx.logits().to_vec());
    }
    run
}

/// Every prompt in its own sequence of one context of `params` (`n_seq` = the prompts):
/// prefilled in one batch, then `n_steps` greedy tokens each, decoded in one batch per step.
pub fn batched(
    model: &Arc<Model>,
    params: ContextParams,
    prompts: &[Vec<u32>],
    n_steps: usize,
) -> Vec<SeqRun> {
    let n_seq = prompts.len();
    let mut ctx = Context::new(model.clone(), ContextParams { n_seq, ..params }).unwrap();
    let mut batch = Batch::new();
    for (s, p) in prompts.iter().enumerate() {
        batch.push_seq(p, 0, s as u32, true);
    }
    ctx.decode(&batch).unwrap();
    let mut runs: Vec<SeqRun> = (0..n_seq)
        .map(|s| SeqRun {
            logits: vec![ctx.batch_logits(s).to_vec()],
            tokens: Vec::new(),
        })
        .collect();
    for _ in 0..n_steps {
        batch.clear();
        for (s, run) in runs.iter_mut().enumerate() {
            let t = argmax(run.logits.last().expect("the prompt's"));
            run.tokens.push(t);
            batch.push(t, ctx.seq_len(s as u32), s as u32, true);
        }
        ctx.decode(&batch).unwrap();
        for (s, run) in runs.iter_mut().enumerate() {
            run.logits.push(ctx.batch_logits(s).to_vec());
        }
    }
    runs
}

/// Panics unless `got` is bit for bit `want` (naming the first difference).
pub fn assert_bitwise(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = got
        .iter()
        .zip(want)
        .position(|(a, b)| a.to_bits() != b.to_bits())
    {
        panic!("{what}: logit {i} is {} batched, {} alone", got[i], want[i]);
    }
}

/// Panics unless [`batched`] gives every prompt exactly what [`solo`] does.
pub fn assert_batch_invariant(
    model: &Arc<Model>,
    params: ContextParams,
    prompts: &[Vec<u32>],
    n_steps: usize,
) {
    let together = batched(model, params, prompts, n_steps);
    for (s, (p, got)) in prompts.iter().zip(&together).enumerate() {
        let want = solo(model, params, p, n_steps);
        assert_eq!(got.tokens, want.tokens, "sequence {s}: greedy tokens");
        for (i, (g, w)) in got.logits.iter().zip(&want.logits).enumerate() {
            assert_bitwise(&format!("sequence {s}, step {i}"), g, w);
        }
    }
}
