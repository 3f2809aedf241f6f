//! Fuzz target: a whole model load from arbitrary bytes — `GgufFile::from_bytes`, then
//! `HParams::from_gguf`, `Tokenizer::from_gguf` and `Model::from_file` — must end in `Ok` or a
//! clean error. A model that loads and is small (the tiny seed models) also evaluates one token
//! and samples from the logits.
//!
//! Float-parameter dimension: an input starting with `F` is not a file but overrides of the
//! tiny fixture model's float hyper-parameters (RoPE base and scales, YaRN factors, RMS-norm
//! epsilon, soft-caps), as pairs of a key byte and four bytes of an arbitrary `f32` bit
//! pattern (NaN, infinities, subnormals, negatives), after a byte choosing the RoPE scaling
//! type. The load must refuse the file with an error, or the evaluation must give finite
//! logits or `ModelError::NonFiniteLogits`; never panic.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tessera_engine::GgufFile;
use tessera_models::hparams::RopeOverrides;
use tessera_models::sampler::{Sampler, SamplerParams};
use tessera_models::tokenizer::Tokenizer;
use tessera_engine::gguf::MetaValue;
use tessera_models::testing::{TinyLlama, set_kv};
use tessera_models::{Context, ContextParams, HParams, Model, ModelError};

/// The float keys the `F` inputs may set on the tiny llama model.
const FLOAT_KEYS: [&str; 12] = [
    "llama.rope.freq_base",
    "llama.rope.freq_base_swa",
    "llama.rope.scale_linear",
    "llama.rope.scaling.factor",
    "llama.rope.scaling.attn_factor",
    "llama.rope.scaling.yarn_ext_factor",
    "llama.rope.scaling.yarn_beta_fast",
    "llama.rope.scaling.yarn_beta_slow",
    "llama.rope.scaling.yarn_log_multiplier",
    "llama.attention.layer_norm_rms_epsilon",
    "llama.final_logit_softcapping",
    "llama.attn_logit_softcapping",
];

/// The tiny model with the float parameters `data` sets (after the `F`).
fn with_float_parameters(data: &[u8]) -> Vec<u8> {
    let mut w = TinyLlama::default().writer();
    let Some((&kind, pairs)) = data.split_first() else {
        return w.to_bytes();
    };
    let kind = ["none", "linear", "yarn"][kind as usize % 3];
    set_kv(
        &mut w,
        "llama.rope.scaling.type",
        MetaValue::String(kind.into()),
    );
    for pair in pairs.chunks_exact(5) {
        let key = FLOAT_KEYS[pair[0] as usize % FLOAT_KEYS.len()];
        let bits = u32::from_le_bytes([pair[1], pair[2], pair[3], pair[4]]);
        set_kv(&mut w, key, MetaValue::F32(f32::from_bits(bits)));
    }
    w.to_bytes()
}

fuzz_target!(|data: &[u8]| {
    let built;
    let (data, float_mode) = match data.split_first() {
        Some((b'F', rest)) => {
            built = with_float_parameters(rest);
            (&built[..], true)
        }
        _ => (data, false),
    };
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
    match ctx.eval(&[0, 1], false) {
        Ok(()) => {
            assert!(ctx.logits().iter().all(|x| x.is_finite()));
            let mut s = Sampler::new(SamplerParams::default());
            let id = s.sample(ctx.logits());
            assert!((id as usize) < ctx.model().hparams().n_vocab);
        }
        Err(e) => assert!(
            !float_mode || matches!(e, ModelError::NonFiniteLogits { .. }),
            "the tiny model with fuzzed float parameters failed to evaluate: {e}"
        ),
    }
});
