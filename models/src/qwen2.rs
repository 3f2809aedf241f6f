//! Qwen2 and Qwen2.5 (`qwen2`): llama's block with biases on the Q, K and V projections
//! (loaded by the shared attention block when present) and NeoX-paired RoPE.

use crate::arch::{ArchDefaults, ArchSpec};
use crate::hparams::RopeStyle;
use crate::llama::{Llama, Variant};

/// `general.architecture = qwen2`.
pub static SPEC: ArchSpec = ArchSpec {
    name: "qwen2",
    families: "Qwen2, Qwen2.5 (Q/K/V biases)",
    defaults: ArchDefaults {
        rope_style: RopeStyle::Neox,
        ..ArchDefaults::LLAMA
    },
    load: |file, hp| Ok(Box::new(Llama::load(file, hp, Variant::LLAMA)?)),
    latent_cache: None,
};
