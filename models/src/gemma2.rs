//! The Gemma 2 architecture: scaled embeddings, NeoX RoPE, post-attention and post-feed-forward
//! norms, a GELU-gated feed-forward, layers alternating sliding-window (even) and global (odd),
//! attention logits soft-capped inside attention (`attn_logit_softcapping`, 50 by default) and
//! the final logits soft-capped (`final_logit_softcapping`, 30 by default).

use tessera_engine::graph::{Graph, GraphBuilder, OutputRows};
use tessera_engine::{GgufFile, Tensor};

use crate::arch::{ArchDefaults, ArchSpec, Architecture};
use crate::blocks::{
    Attention, AttentionParts, AttentionStep, Embeddings, FeedForward, Gate, layer_tensor,
};
use crate::error::Result;
use crate::gemma3::gemma_query_scale;
use crate::hparams::{HParams, RopeStyle};
use crate::weights::WeightLoader;

/// `general.architecture = gemma2`.
pub static SPEC: ArchSpec = ArchSpec {
    name: "gemma2",
    families: "Gemma 2 (soft-capping, alternating sliding window)",
    defaults: ArchDefaults {
        rope_style: RopeStyle::Neox,
        window: Some(4096),
        swa_period: Some(2),
        rope_base_swa: None,
        swa_rope_scaled: true,
        ..ArchDefaults::LLAMA
    },
    load: |file, hp| Ok(Box::new(Gemma2::load(file, hp)?)),
    latent_cache: None,
};

/// One transformer block's weights.
struct Block {
    attn: Attention,
    post_attn_norm: Tensor,
    ffn: FeedForward,
    post_ffn_norm: Tensor,
}

/// A Gemma 2 model: weights borrowed from the file's map.
pub struct Gemma2 {
    hp: HParams,
    embd: Embeddings,
    blocks: Vec<Block>,
}

impl Gemma2 {
    /// Read the soft-capping values, then find and check every weight.
    pub fn load(file: &GgufFile, mut hp: HParams) -> Result<Gemma2> {
        let meta = file.metadata();
        hp.attn_softcap = HParams::read_softcap(meta, SPEC.name, "attn_logit_softcapping", 50.0)?;
        hp.final_softcap = HParams::read_softcap(meta, SPEC.name, "final_logit_softcapping", 30.0)?;
        let w = WeightLoader::new(file);
        let e = hp.n_embd;
        let blocks = (0..hp.n_layer)
            .map(|il| {
                Ok(Block {
                    attn: Attention::load(&w, &hp, il, AttentionParts::default())?,
                    post_attn_norm: w.norm(&layer_tensor(il, "post_attention_norm"), e)?,
                    ffn: FeedForward::load(&w, &hp, il)?,
                    post_ffn_norm: w.norm(&layer_tensor(il, "post_ffw_norm"), e)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Gemma2 {
            embd: Embeddings::load(&w, &hp)?,
            blocks,
            hp,
        })
    }
}

impl Architecture for Gemma2 {
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
            // Self-attention (soft-capped scores), local or global by layer parity.
            let h = g.rms_norm(x, Some(&b.attn.norm), eps);
            let step = AttentionStep {
                il,
                scale: gemma_query_scale(hp, 46),
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
        let logits = self.embd.logits(&mut g, hp, x, out);
        let logits = match hp.final_softcap {
            Some(cap) => g.softcap(logits, cap),
            None => logits,
        };
        g.finish(logits)
    }
}
