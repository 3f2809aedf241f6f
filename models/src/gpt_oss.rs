//! gpt-oss (`gpt-oss`: gpt-oss-20b, gpt-oss-120b): pre-norm blocks of grouped-query attention
//! with Q/K/V/O biases, NeoX RoPE and **attention sinks** (a learned logit per head that joins
//! every softmax's denominator), alternating sliding-window (even layers) and global layers,
//! and a routed feed-forward on every layer: a biased router whose top logits choose the
//! experts and a softmax over those gives their weights, experts with biases, and OpenAI's
//! clamped SwiGLU (`min(g, 7)·σ(1.702·g)·(clamp(u, ±7) + 1)`). The FFN's norm is
//! `post_attention_norm`.

use tessera_engine::graph::{ExpertGating, Graph, GraphBuilder, OutputRows};
use tessera_engine::{GgufFile, Tensor};

use crate::arch::{ArchDefaults, ArchSpec, Architecture, default_attn_scale};
use crate::blocks::{Attention, AttentionParts, AttentionStep, Embeddings, Gate, layer_tensor};
use crate::error::{ModelError, Result};
use crate::hparams::{HParams, RopeStyle};
use crate::moe::MoeFeedForward;
use crate::weights::WeightLoader;

/// `general.architecture = gpt-oss`.
pub static SPEC: ArchSpec = ArchSpec {
    name: "gpt-oss",
    families: "gpt-oss (attention sinks, alternating sliding window, biased experts)",
    defaults: ArchDefaults {
        rope_style: RopeStyle::Neox,
        swa_period: Some(2),
        expert_norm: false,
        expert_gating: ExpertGating::SoftmaxWeight,
        ..ArchDefaults::LLAMA
    },
    load: |file, hp| Ok(Box::new(GptOss::load(file, hp)?)),
    latent_cache: None,
};

struct Block {
    attn: Attention,
    sinks: Tensor,
    ffn: MoeFeedForward,
}

/// A gpt-oss model.
pub struct GptOss {
    hp: HParams,
    embd: Embeddings,
    blocks: Vec<Block>,
}

impl GptOss {
    /// Find and check every weight.
    pub fn load(file: &GgufFile, hp: HParams) -> Result<GptOss> {
        let Some(x) = hp.experts.clone() else {
            return Err(ModelError::InvalidHParam {
                key: "gpt-oss.expert_count".into(),
                why: "a gpt-oss file needs experts (expert_count and expert_used_count > 0)".into(),
            });
        };
        let w = WeightLoader::new(file);
        let blocks = (0..hp.n_layer)
            .map(|il| {
                let mut ffn =
                    MoeFeedForward::load_with_norm(&w, &hp, il, &x, "post_attention_norm")?;
                // llama.cpp fixes both for this family, whatever the file says.
                ffn.route.gating = ExpertGating::SoftmaxWeight;
                ffn.route.norm = false;
                Ok(Block {
                    attn: Attention::load(&w, &hp, il, AttentionParts::default())?,
                    sinks: w.norm(&layer_tensor(il, "attn_sinks"), hp.n_head)?,
                    ffn,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GptOss {
            embd: Embeddings::load(&w, &hp)?,
            blocks,
            hp,
        })
    }
}

impl Architecture for GptOss {
    fn hparams(&self) -> &HParams {
        &self.hp
    }

    fn build_graph(&self, n_tokens: usize, out: OutputRows, _n_ctx: usize) -> Graph {
        let hp = &self.hp;
        let eps = hp.rms_eps;
        let mut g = GraphBuilder::new(n_tokens);
        let mut x = self.embd.embed(&mut g);
        for (il, b) in self.blocks.iter().enumerate() {
            g.set_layer(Some(il));
            // Self-attention with sinks (sliding on even layers).
            let h = g.rms_norm(x, Some(&b.attn.norm), eps);
            let step = AttentionStep {
                il,
                scale: default_attn_scale(hp),
                rope: true,
                rope_factors: None,
                sinks: Some(&b.sinks),
            };
            let a = b.attn.build(&mut g, hp, h, step);
            x = g.add(x, a);
            // Routed feed-forward.
            let h = g.rms_norm(x, Some(&b.ffn.norm), eps);
            let h = b.ffn.build(&mut g, h, Gate::SiluOai);
            x = g.add(x, h);
        }
        let logits = self.embd.logits(&mut g, hp, x, out);
        g.finish(logits)
    }
}
