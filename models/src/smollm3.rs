//! SmolLM3 (`smollm3`): llama's block where every fourth layer (`(il + 1) % 4 == 0`) attends
//! without rotary position embedding ("NoPE"), as llama.cpp's fixed `n_no_rope_layer_step`.

use crate::arch::{ArchDefaults, ArchSpec};
use crate::llama::{Llama, Variant};

/// Every this many layers, one uses no RoPE.
pub const NO_ROPE_LAYER_STEP: usize = 4;

/// `general.architecture = smollm3`.
pub static SPEC: ArchSpec = ArchSpec {
    name: "smollm3",
    families: "SmolLM3 (NoPE every 4th layer)",
    defaults: ArchDefaults::LLAMA,
    load: |file, hp| {
        let variant = Variant {
            no_rope_step: Some(NO_ROPE_LAYER_STEP),
            ..Variant::LLAMA
        };
        Ok(Box::new(Llama::load(file, hp, variant)?))
    },
    latent_cache: None,
};
