//! Qwen3-MoE (`qwen3moe`: Qwen3-30B-A3B, Qwen3-235B-A22B): Qwen3's attention (per-head Q/K
//! RMSNorm, NeoX RoPE, head width from `attention.key_length`) with every feed-forward routed
//! over experts: a softmax over the router's logits, the `expert_used_count` best experts,
//! their weights renormalised to sum to 1 (llama.cpp hard-codes it for this family).

use tessera_engine::graph::ExpertGating;

use crate::arch::{ArchDefaults, ArchSpec};
use crate::error::ModelError;
use crate::hparams::RopeStyle;
use crate::llama::{Llama, Variant};

/// `general.architecture = qwen3moe`.
pub static SPEC: ArchSpec = ArchSpec {
    name: "qwen3moe",
    families: "Qwen3-MoE (Qwen3 attention, softmax-routed experts)",
    defaults: ArchDefaults {
        rope_style: RopeStyle::Neox,
        expert_norm: true,
        expert_gating: ExpertGating::Softmax,
        ..ArchDefaults::LLAMA
    },
    load: |file, hp| {
        if hp.experts.is_none() {
            return Err(ModelError::InvalidHParam {
                key: "qwen3moe.expert_count".into(),
                why: "a qwen3moe file needs experts (expert_count and expert_used_count > 0)"
                    .into(),
            });
        }
        let variant = Variant {
            qk_norm: true,
            ..Variant::LLAMA
        };
        Ok(Box::new(Llama::load(file, hp, variant)?))
    },
    latent_cache: None,
};
