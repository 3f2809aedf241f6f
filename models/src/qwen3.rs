//! Qwen3 (`qwen3`): llama's block with a per-head RMSNorm of Q and K before RoPE, NeoX-paired
//! RoPE, and a head width from `attention.key_length` (128 even where `n_embd / n_head` is 64).

use crate::arch::{ArchDefaults, ArchSpec};
use crate::hparams::RopeStyle;
use crate::llama::{Llama, Variant};

/// `general.architecture = qwen3`.
pub static SPEC: ArchSpec = ArchSpec {
    name: "qwen3",
    families: "Qwen3 (per-head Q/K RMSNorm)",
    defaults: ArchDefaults {
        rope_style: RopeStyle::Neox,
        ..ArchDefaults::LLAMA
    },
    load: |file, hp| {
        let variant = Variant {
            qk_norm: true,
            ..Variant::LLAMA
        };
        Ok(Box::new(Llama::load(file, hp, variant)?))
    },
    latent_cache: None,
};
