//! Phi-3, Phi-3.5 and Phi-4-mini (`phi3`): llama's block with Q, K and V fused in `attn_qkv`
//! and gate and up fused in `ffn_up` (both split into row views, no copies), NeoX RoPE over
//! `rope.dimension_count` dimensions (partial rotary where the file says so), and LongRoPE:
//! per-pair frequency factors `rope_factors_short` within the original context and
//! `rope_factors_long` when the context is longer, as llama.cpp chooses them.

use tessera_engine::graph::{Graph, GraphBuilder, OutputRows};
use tessera_engine::{GgufFile, Tensor};

use crate::arch::{ArchDefaults, ArchSpec, Architecture, default_attn_scale};
use crate::blocks::{Attention, AttentionParts, AttentionStep, Embeddings, FeedForward, Gate};
use crate::error::Result;
use crate::hparams::{HParams, RopeStyle};
use crate::weights::WeightLoader;

/// `general.architecture = phi3`.
pub static SPEC: ArchSpec = ArchSpec {
    name: "phi3",
    families: "Phi-3, Phi-3.5, Phi-4-mini (fused QKV and gate+up, LongRoPE)",
    defaults: ArchDefaults {
        rope_style: RopeStyle::Neox,
        ..ArchDefaults::LLAMA
    },
    load: |file, hp| Ok(Box::new(Phi3::load(file, hp)?)),
    latent_cache: None,
};

/// One transformer block's weights.
struct Block {
    attn: Attention,
    ffn: FeedForward,
}

/// A Phi-3 model: weights borrowed from the file's map.
pub struct Phi3 {
    hp: HParams,
    embd: Embeddings,
    /// LongRoPE factors for contexts within the original one.
    factors_short: Option<Tensor>,
    /// LongRoPE factors for longer contexts.
    factors_long: Option<Tensor>,
    blocks: Vec<Block>,
}

impl Phi3 {
    /// Find and check every weight. Sliding windows in Phi-3 files are ignored, as llama.cpp
    /// does (its converters wrote them wrongly).
    pub fn load(file: &GgufFile, mut hp: HParams) -> Result<Phi3> {
        hp.sliding_window = None;
        hp.layer_is_local = vec![false; hp.n_layer];
        let w = WeightLoader::new(file);
        let factors = |name: &str| {
            w.has(name)
                .then(|| w.norm(name, hp.rope_dims / 2))
                .transpose()
        };
        let (factors_short, factors_long) = (
            factors("rope_factors_short.weight")?,
            factors("rope_factors_long.weight")?,
        );
        let blocks = (0..hp.n_layer)
            .map(|il| {
                Ok(Block {
                    attn: Attention::load(&w, &hp, il, AttentionParts::default())?,
                    ffn: FeedForward::load(&w, &hp, il)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Phi3 {
            embd: Embeddings::load(&w, &hp)?,
            factors_short,
            factors_long,
            blocks,
            hp,
        })
    }

    /// The LongRoPE factors for a context of `n_ctx` tokens.
    fn factors(&self, n_ctx: usize) -> Option<&Tensor> {
        if n_ctx > self.hp.rope_scaling.orig_ctx as usize {
            self.factors_long.as_ref()
        } else {
            self.factors_short.as_ref()
        }
    }
}

impl Architecture for Phi3 {
    fn hparams(&self) -> &HParams {
        &self.hp
    }

    fn build_graph(&self, n_tokens: usize, out: OutputRows, n_ctx: usize) -> Graph {
        let hp = &self.hp;
        let eps = hp.rms_eps;
        let mut g = GraphBuilder::new(n_tokens);

        let mut x = self.embd.embed(&mut g);
        for (il, b) in self.blocks.iter().enumerate() {
            g.set_layer(Some(il));
            // Self-attention with LongRoPE factors.
            let h = g.rms_norm(x, Some(&b.attn.norm), eps);
            let step = AttentionStep {
                il,
                scale: default_attn_scale(hp),
                rope: true,
                rope_factors: self.factors(n_ctx),
                sinks: None,
            };
            let a = b.attn.build(&mut g, hp, h, step);
            x = g.add(x, a);
            // Feed-forward (fused gate and up).
            let h = g.rms_norm(x, Some(&b.ffn.norm), eps);
            let h = b.ffn.build(&mut g, h, Gate::Silu);
            x = g.add(x, h);
        }
        let logits = self.embd.logits(&mut g, hp, x, out);
        g.finish(logits)
    }
}
