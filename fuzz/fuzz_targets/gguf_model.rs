//! Fuzz target: a whole model load from arbitrary bytes — `GgufFile::from_bytes`, then
//! `HParams::from_gguf`, `Tokenizer::from_gguf` and `Model::from_file` — must end in `Ok` or a
//! clean error. A model that loads and is small (the tiny seed models) also evaluates one token
//! and samples from the logits.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tessera_engine::GgufFile;
use tessera_models::hparams::RopeOverrides;
use tessera_models::sampler::{Sampler, SamplerParams};
use tessera_models::tokenizer::Tokenizer;
use tessera_models::{Context, ContextParams, HParams, Model};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data) else {
        return;
    };
    let _ = HParams::from_gguf(file.metadata());
    if let Ok(tok) = Tokenizer::from_gguf(file.metadata()) {
        let ids = tok.encode("Hello <|im_start|> wörld 🦀", true, true);
        let _ = tok.decode(&ids);
    }
    let Ok(model) = Model::from_file(file, &RopeOverrides::default()) else {
        return;
    };
    let hp = model.hparams();
    // Bound the work: only models of the tiny fixture's size are evaluated.
    if hp.n_layer * hp.n_embd * hp.n_ff > 1 << 22 || hp.n_vocab > 1 << 12 {
        return;
    }
    let model = Arc::new(model);
    let params = ContextParams {
        n_ctx: 8,
        n_batch: 8,
        n_threads: 1,
        kv_ring: true,
        device: Default::default(),
    };
    let Ok(mut ctx) = Context::new(model, params) else {
        return;
    };
    if ctx.eval(&[0, 1], false).is_ok() {
        let mut s = Sampler::new(SamplerParams::default());
        let id = s.sample(ctx.logits());
        assert!((id as usize) < ctx.model().hparams().n_vocab);
    }
});
