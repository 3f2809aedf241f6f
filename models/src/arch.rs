//! What every architecture provides to the Session — its hyper-parameters and a graph for a
//! step of `n_tokens` tokens — and the table of architectures: each one file that declares
//! its GGUF name, its hyper-parameter defaults and its loader. Adding an architecture is its
//! file plus one line in [`ARCHITECTURES`]. Also the translation of hyper-parameters into
//! graph settings.

use tessera_engine::GgufFile;
use tessera_engine::graph::{AttnParams, ExpertGating, Graph, OutputRows, RopeMode, RopeParams};

use crate::error::Result;
use crate::hparams::{HParams, RopeStyle};

/// A loaded model architecture.
pub trait Architecture: Send + Sync {
    /// Its hyper-parameters.
    fn hparams(&self) -> &HParams;
    /// The forward pass for `n_tokens` tokens, returning logits of the rows `out` selects, in a
    /// context of `n_ctx` tokens (Phi-3 picks its LongRoPE factors by it).
    fn build_graph(&self, n_tokens: usize, out: OutputRows, n_ctx: usize) -> Graph;
}

/// Loads an architecture's weights from a file, given its hyper-parameters.
pub type LoadFn = fn(&GgufFile, HParams) -> Result<Box<dyn Architecture>>;

/// How an architecture's files are read where the GGUF keys are silent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArchDefaults {
    /// How RoPE pairs dimensions.
    pub rope_style: RopeStyle,
    /// Sliding window when the file names none (Gemma 2 always slides, 4096 by default).
    pub window: Option<u32>,
    /// Period of the local/global layer pattern when the file has a window but no
    /// `attention.sliding_window_pattern` (layer `il` is global when `il % p == p - 1`);
    /// `None`: every layer slides.
    pub swa_period: Option<usize>,
    /// RoPE base of sliding-window layers without `rope.freq_base_swa`; `None`: the global base.
    pub rope_base_swa: Option<f32>,
    /// Whether sliding-window layers rotate with the model's frequency scaling (Gemma 2) or
    /// unscaled (Gemma 3: llama.cpp's `rope_freq_scale_train_swa` of 1).
    pub swa_rope_scaled: bool,
    /// Whether chosen experts' weights are renormalised when the file does not say
    /// (`expert_weights_norm`).
    pub expert_norm: bool,
    /// Router gating when the file does not say (`expert_gating_func`).
    pub expert_gating: ExpertGating,
}

/// Reads an architecture's MLA dimensions from its metadata and file-level hyper-parameters
/// (see [`ArchSpec::latent_cache`]).
pub type LatentDimsFn =
    fn(&tessera_engine::gguf::Metadata, &HParams) -> Result<crate::deepseek2::MlaDims>;

impl ArchDefaults {
    /// Llama's conventions: adjacent-pair RoPE, no window unless the file sets one (then on
    /// every layer, with the global RoPE settings).
    pub const LLAMA: ArchDefaults = ArchDefaults {
        rope_style: RopeStyle::Normal,
        window: None,
        swa_period: None,
        rope_base_swa: None,
        swa_rope_scaled: true,
        expert_norm: false,
        expert_gating: ExpertGating::Softmax,
    };
}

/// One architecture: its `general.architecture` name, defaults and loader.
pub struct ArchSpec {
    /// The `general.architecture` string.
    pub name: &'static str,
    /// The model families it runs, for `tessera info --architectures`.
    pub families: &'static str,
    /// What its files leave unsaid.
    pub defaults: ArchDefaults,
    /// Its loader.
    pub load: LoadFn,
    /// For architectures whose files describe decompressed heads but which Tessera runs on the
    /// latent-only cache (MiniCPM3, PLM): the MLA dimensions read from the file, so that
    /// [`HParams::as_run`] shows the cache the loader will make without loading.
    pub latent_cache: Option<LatentDimsFn>,
}

impl ArchSpec {
    /// The `general.architecture` string.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl std::fmt::Debug for ArchSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArchSpec({})", self.name)
    }
}

impl PartialEq for ArchSpec {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// Every architecture Tessera runs.
pub static ARCHITECTURES: &[&ArchSpec] = &[
    &crate::llama::SPEC,
    &crate::qwen2::SPEC,
    &crate::qwen3::SPEC,
    &crate::qwen3moe::SPEC,
    &crate::smollm3::SPEC,
    &crate::phi3::SPEC,
    &crate::gemma2::SPEC,
    &crate::gemma3::SPEC,
    &crate::deepseek2::SPEC,
    &crate::gpt_oss::SPEC,
    &crate::minicpm3::SPEC,
    &crate::plm::SPEC,
];

/// The architecture named `name`.
pub fn find(name: &str) -> Option<&'static ArchSpec> {
    ARCHITECTURES.iter().copied().find(|a| a.name == name)
}

/// The supported `general.architecture` names, comma-separated.
pub fn names() -> String {
    ARCHITECTURES
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Load the weights of the architecture `hp` names from `file`.
pub fn load(file: &GgufFile, hp: HParams) -> Result<Box<dyn Architecture>> {
    (hp.arch.load)(file, hp)
}

/// The rope settings of layer `il`.
pub fn rope_params(hp: &HParams, il: usize) -> RopeParams {
    let s = &hp.rope_scaling;
    let layer = hp.layer_attention(il);
    RopeParams {
        mode: match hp.rope_style {
            RopeStyle::Normal => RopeMode::Normal,
            RopeStyle::Neox => RopeMode::Neox,
        },
        n_dims: hp.rope_dims,
        base: layer.rope_base,
        freq_scale: layer.rope_freq_scale,
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
        softcap: hp.attn_softcap,
    }
}

/// The usual query scale, `1/√head_dim`.
pub fn default_attn_scale(hp: &HParams) -> f32 {
    1.0 / (hp.head_dim as f32).sqrt()
}
