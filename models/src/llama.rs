//! The llama architecture (Llama 2/3, SmolLM2, Mistral): pre-norm blocks of grouped-query
//! attention (multi-head when `head_count_kv == head_count`) with RoPE and a SwiGLU
//! feed-forward. Llama 3.x files carry `rope_freqs.weight`, per-pair frequency divisors
//! (llama3 rope scaling); some files carry biases; the output head may be tied. Files with
//! experts (Qwen3-MoE) route each block's feed-forward over them.

use tessera_engine::graph::{Graph, GraphBuilder, NodeId, OutputRows};
use tessera_engine::{GgufFile, Tensor};

use crate::arch::{ArchDefaults, ArchSpec, Architecture, default_attn_scale};
use crate::blocks::{Attention, AttentionParts, AttentionStep, Embeddings, FeedForward, Gate};
use crate::error::Result;
use crate::hparams::HParams;
use crate::moe::MoeFeedForward;
use crate::weights::WeightLoader;

/// `general.architecture = llama`.
pub static SPEC: ArchSpec = ArchSpec {
    name: "llama",
    families: "Llama 2/3.x, Mistral, SmolLM2 (GQA/MHA, rope_freqs, optional biases)",
    defaults: ArchDefaults::LLAMA,
    load: |file, hp| Ok(Box::new(Llama::load(file, hp, Variant::LLAMA)?)),
    latent_cache: None,
};

/// What the llama-shaped families change in llama's block (each declared in its own file).
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    /// Per-head RMSNorm of Q and K before RoPE (Qwen3).
    pub qk_norm: bool,
    /// Layers `il` with `(il + 1) % step == 0` use no RoPE (SmolLM3's NoPE layers).
    pub no_rope_step: Option<usize>,
}

impl Variant {
    /// Plain llama.
    pub const LLAMA: Variant = Variant {
        qk_norm: false,
        no_rope_step: None,
    };
}

/// A block's feed-forward: dense, or routed over experts (Qwen3-MoE).
enum Ffn {
    Dense(FeedForward),
    Experts(MoeFeedForward),
}

impl Ffn {
    /// Load layer `il`'s feed-forward: routed when the model has experts and the layer is
    /// past the leading dense ones.
    fn load(w: &WeightLoader, hp: &HParams, il: usize) -> Result<Ffn> {
        Ok(match &hp.experts {
            Some(x) if il >= x.n_leading_dense => Ffn::Experts(MoeFeedForward::load(w, hp, il, x)?),
            _ => Ffn::Dense(FeedForward::load(w, hp, il)?),
        })
    }

    /// The pre-FFN norm.
    fn norm(&self) -> &Tensor {
        match self {
            Ffn::Dense(f) => &f.norm,
            Ffn::Experts(f) => &f.norm,
        }
    }

    /// Record the feed-forward of the normalised input `h`.
    fn build(&self, g: &mut GraphBuilder, h: NodeId) -> NodeId {
        match self {
            Ffn::Dense(f) => f.build(g, h, Gate::Silu),
            Ffn::Experts(f) => f.build(g, h, Gate::Silu),
        }
    }
}

/// One transformer block's weights.
struct Block {
    attn: Attention,
    ffn: Ffn,
}

/// A llama model: weights borrowed from the file's map.
pub struct Llama {
    hp: HParams,
    variant: Variant,
    embd: Embeddings,
    /// Llama 3's per-pair RoPE frequency divisors.
    rope_freqs: Option<Tensor>,
    blocks: Vec<Block>,
}

impl Llama {
    /// Find and check every weight of a llama-shaped model of `variant`.
    pub fn load(file: &GgufFile, hp: HParams, variant: Variant) -> Result<Llama> {
        let w = WeightLoader::new(file);
        let rope_freqs = w
            .has("rope_freqs.weight")
            .then(|| w.norm("rope_freqs.weight", hp.rope_dims / 2))
            .transpose()?;
        let parts = AttentionParts {
            qk_norm: variant.qk_norm,
        };
        let blocks = (0..hp.n_layer)
            .map(|il| {
                Ok(Block {
                    attn: Attention::load(&w, &hp, il, parts)?,
                    ffn: Ffn::load(&w, &hp, il)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Llama {
            embd: Embeddings::load(&w, &hp)?,
            rope_freqs,
            blocks,
            variant,
            hp,
        })
    }
}

impl Architecture for Llama {
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
            // Self-attention.
            let h = g.rms_norm(x, Some(&b.attn.norm), eps);
            let step = AttentionStep {
                il,
                scale: default_attn_scale(hp),
                rope: self
                    .variant
                    .no_rope_step
                    .is_none_or(|step| (il + 1) % step != 0),
                rope_factors: self.rope_freqs.as_ref(),
                sinks: None,
            };
            let a = b.attn.build(&mut g, hp, h, step);
            x = g.add(x, a);
            // Feed-forward.
            let h = g.rms_norm(x, Some(b.ffn.norm()), eps);
            let h = b.ffn.build(&mut g, h);
            x = g.add(x, h);
        }
        let logits = self.embd.logits(&mut g, hp, x, out);
        g.finish(logits)
    }
}
