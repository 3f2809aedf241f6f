//! The Gemma 3 architecture: scaled embeddings, RMSNorm on queries and keys before RoPE
//! (NeoX), post-attention and post-feed-forward norms, a GELU-gated feed-forward, and layers
//! that alternate five sliding-window (local) to one global. Local layers rotate with their
//! own base (10 000 by default) and without the model's frequency scaling, as llama.cpp does.

use tessera_engine::graph::{Graph, GraphBuilder, OutputRows};
use tessera_engine::{GgufFile, Tensor};

use crate::arch::{ArchDefaults, ArchSpec, Architecture};
use crate::blocks::{
    Attention, AttentionParts, AttentionStep, Embeddings, FeedForward, Gate, layer_tensor,
};
use crate::error::Result;
use crate::hparams::{HParams, RopeStyle};
use crate::weights::WeightLoader;

/// `general.architecture = gemma3`.
pub static SPEC: ArchSpec = ArchSpec {
    name: "gemma3",
    families: "Gemma 3 text (Q/K norm, 5:1 local/global layers)",
    defaults: ArchDefaults {
        rope_style: RopeStyle::Neox,
        window: None,
        swa_period: Some(6),
        rope_base_swa: Some(10_000.0),
        swa_rope_scaled: false,
        ..ArchDefaults::LLAMA
    },
    load: |file, hp| Ok(Box::new(Gemma3::load(file, hp)?)),
    latent_cache: None,
};

/// One transformer block's weights.
struct Block {
    attn: Attention,
    post_attn_norm: Tensor,
    ffn: FeedForward,
    post_ffn_norm: Tensor,
}

/// A Gemma 3 model: weights borrowed from the file's map.
pub struct Gemma3 {
    hp: HParams,
    embd: Embeddings,
    blocks: Vec<Block>,
}

/// Gemma's query scale: `1/√head_dim`, except the 27B-shaped models (62 layers for Gemma 3,
/// 46 for Gemma 2), whose `query_pre_attn_scalar` is `n_embd / n_head` — llama.cpp's rule.
pub fn gemma_query_scale(hp: &HParams, layers_of_27b: usize) -> f32 {
    if hp.n_layer == layers_of_27b {
        1.0 / ((hp.n_embd / hp.n_head) as f32).sqrt()
    } else {
        1.0 / (hp.head_dim as f32).sqrt()
    }
}

impl Gemma3 {
    /// Find and check every weight.
    pub fn load(file: &GgufFile, mut hp: HParams) -> Result<Gemma3> {
        hp.final_softcap =
            HParams::read_softcap(file.metadata(), SPEC.name, "final_logit_softcapping", 0.0)?;
        let w = WeightLoader::new(file);
        let e = hp.n_embd;
        let parts = AttentionParts { qk_norm: true };
        let blocks = (0..hp.n_layer)
            .map(|il| {
                Ok(Block {
                    attn: Attention::load(&w, &hp, il, parts)?,
                    post_attn_norm: w.norm(&layer_tensor(il, "post_attention_norm"), e)?,
                    ffn: FeedForward::load(&w, &hp, il)?,
                    post_ffn_norm: w.norm(&layer_tensor(il, "post_ffw_norm"), e)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Gemma3 {
            embd: Embeddings::load(&w, &hp)?,
            blocks,
            hp,
        })
    }
}

impl Architecture for Gemma3 {
    fn hparams(&self) -> &HParams {
        &self.hp
    }

    fn build_graph(&self, n_tokens: usize, out: OutputRows, _n_ctx: usize) -> Graph {
        let hp = &self.hp;
        let eps = hp.rms_eps;
        let mut g = GraphBuilder::new(n_tokens);

        let x = self.embd.embed(&mut g);
        let mut x = g.scale(x, (hp.n_embd as f32).sqrt());
        for (il, b) in self.blocks.iter().enumerate() {
            g.set_layer(Some(il));
            // Self-attention, local or global as the layer pattern says.
            let h = g.rms_norm(x, Some(&b.attn.norm), eps);
            let step = AttentionStep {
                il,
                scale: gemma_query_scale(hp, 62),
                rope: true,
                rope_factors: None,
                sinks: None,
            };
            let a = b.attn.build(&mut g, hp, h, step);
            let a = g.rms_norm(a, Some(&b.post_attn_norm), eps);
            x = g.add(x, a);
            // Feed-forward.
            let h = g.rms_norm(x, Some(&b.ffn.norm), eps);
            let h = b.ffn.build(&mut g, h, Gate::Gelu);
            let h = g.rms_norm(h, Some(&b.post_ffn_norm), eps);
            x = g.add(x, h);
        }
        let mut logits = self.embd.logits(&mut g, hp, x, out);
        if let Some(cap) = hp.final_softcap {
            logits = g.softcap(logits, cap);
        }
        g.finish(logits)
    }
}
