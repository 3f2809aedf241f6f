//! What every architecture provides to the Session: its hyper-parameters and a graph for a
//! step of `n_tokens` tokens. Also the translation of hyper-parameters into graph settings.

use tessera_engine::GgufFile;
use tessera_engine::graph::{AttnParams, Graph, OutputRows, RopeMode, RopeParams};

use crate::error::Result;
use crate::hparams::{Arch, HParams, RopeStyle};

/// A loaded model architecture.
pub trait Architecture: Send + Sync {
    /// Its hyper-parameters.
    fn hparams(&self) -> &HParams;
    /// The forward pass for `n_tokens` tokens, returning logits of the rows `out` selects.
    fn build_graph(&self, n_tokens: usize, out: OutputRows) -> Graph;
}

/// Load the weights of the architecture `hp` names from `file`.
pub fn load(file: &GgufFile, hp: HParams) -> Result<Box<dyn Architecture>> {
    Ok(match hp.arch {
        Arch::Llama => Box::new(crate::llama::Llama::load(file, hp)?),
        Arch::Gemma3 => Box::new(crate::gemma3::Gemma3::load(file, hp)?),
    })
}

/// The rope settings of layer `il`.
pub fn rope_params(hp: &HParams, il: usize) -> RopeParams {
    let s = &hp.rope_scaling;
    RopeParams {
        mode: match hp.rope_style {
            RopeStyle::Normal => RopeMode::Normal,
            RopeStyle::Neox => RopeMode::Neox,
        },
        n_dims: hp.rope_dims,
        base: hp.layer_attention(il).rope_base,
        freq_scale: s.freq_scale(),
        ext_factor: s.ext_factor,
        attn_factor: s.attn_factor,
        beta_fast: s.beta_fast,
        beta_slow: s.beta_slow,
        orig_ctx: s.orig_ctx,
    }
}

/// The attention settings of layer `il` with query scale `scale`.
pub fn attn_params(hp: &HParams, il: usize, scale: f32) -> AttnParams {
    AttnParams {
        n_head: hp.n_head,
        n_head_kv: hp.n_head_kv,
        head_dim: hp.head_dim,
        head_dim_v: hp.head_dim_v,
        scale,
        window: hp.layer_attention(il).window,
        softcap: None,
    }
}
