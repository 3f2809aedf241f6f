//! PLM (`plm`): multi-head latent attention with directly projected queries and a squared-ReLU
//! feed-forward, run on DeepSeek-V2's absorbed MLA path ([`crate::deepseek2`]) with the
//! latent-only KV cache, where llama.cpp decompresses and caches full keys and values.
//!
//! - Queries: `attn_q` (no low-rank compression); each head is `qk_nope` values then
//!   `qk_rope` values, `qk_nope + qk_rope` = `attention.key_length` and `qk_rope` =
//!   `rope.dimension_count`.
//! - Keys and values: `attn_kv_a_mqa` gives the latent (`kv_lora_rank` values, RMSNorm
//!   `attn_kv_a_norm`) and one shared rotated key part; the fused `attn_kv_b` (per head,
//!   `qk_nope` key rows then `v_head` value rows) is split at load into per-head `k_b` and
//!   `v_b` as MiniCPM3's is (`minicpm3::split_kv_b`). The value width is
//!   `attention.value_length` or, without it, `n_embd / n_head` (llama.cpp's default).
//! - RoPE as llama (adjacent pairs) on the trailing `qk_rope` values of every query head and
//!   on the shared key part; q·k is scaled by `1/√(qk_nope + qk_rope)`.
//! - Feed-forward without a gate: `ffn_down(relu(ffn_up(x))²)`.
//! - The output projection is the token embedding (no `output.weight`).

use tessera_engine::gguf::Metadata;
use tessera_engine::graph::{Graph, GraphBuilder, NodeId, OutputRows};
use tessera_engine::{GgufFile, Tensor};

use crate::arch::{ArchDefaults, ArchSpec, Architecture, rope_params};
use crate::blocks::{Embeddings, layer_tensor};
use crate::deepseek2::{MlaAttention, MlaDims, MlaStep};
use crate::error::Result;
use crate::hparams::HParams;
use crate::minicpm3::split_kv_b;
use crate::weights::WeightLoader;

/// `general.architecture = plm`.
pub static SPEC: ArchSpec = ArchSpec {
    name: "plm",
    families: "PLM (multi-head latent attention on the absorbed path, latent-only KV cache, squared-ReLU FFN)",
    defaults: ArchDefaults::LLAMA,
    load: |file, hp| Ok(Box::new(Plm::load(file, hp)?)),
    latent_cache: Some(mla_dims),
};

/// One layer's feed-forward: `down(relu(up(h))²)`, no gate.
struct ReluSqrFfn {
    norm: Tensor,
    up: Tensor,
    down: Tensor,
}

impl ReluSqrFfn {
    /// Load layer `il`'s `ffn_norm`, `ffn_up` and `ffn_down`.
    fn load(w: &WeightLoader, hp: &HParams, il: usize) -> Result<Self> {
        let (e, f) = (hp.n_embd, hp.n_ff);
        let n = |s: &str| layer_tensor(il, s);
        Ok(ReluSqrFfn {
            norm: w.norm(&n("ffn_norm"), e)?,
            up: w.get(&n("ffn_up"), &[e, f])?,
            down: w.get(&n("ffn_down"), &[f, e])?,
        })
    }

    /// Record the feed-forward of the normalised input `h`.
    fn build(&self, g: &mut GraphBuilder, h: NodeId) -> NodeId {
        let up = g.mat_mul(&self.up, h);
        let act = g.relu_sqr(up);
        g.mat_mul(&self.down, act)
    }
}

/// One transformer block's weights.
struct Block {
    attn: MlaAttention,
    ffn: ReluSqrFfn,
}

/// A PLM model.
pub struct Plm {
    hp: HParams,
    embd: Embeddings,
    blocks: Vec<Block>,
    /// Multiplier of q·k: `1/√(qk_nope + qk_rope)`.
    kq_scale: f32,
}

/// The MLA dimensions of a file ([`MlaDims::read_fused_kv_b`]): the loader's first step, and
/// [`ArchSpec::latent_cache`] for `info`.
pub fn mla_dims(meta: &Metadata, hp: &HParams) -> Result<MlaDims> {
    MlaDims::read_fused_kv_b(meta, hp, "PLM", false)
}

impl Plm {
    /// Read the MLA keys, point the hyper-parameters at the latent cache, split every layer's
    /// `attn_kv_b` and find the other weights.
    pub fn load(file: &GgufFile, mut hp: HParams) -> Result<Plm> {
        let mla = mla_dims(file.metadata(), &hp)?;
        let qk = mla.qk_nope + mla.qk_rope;
        mla.use_latent_cache(&mut hp);
        hp.experts = None;

        let w = WeightLoader::new(file);
        let blocks = (0..hp.n_layer)
            .map(|il| {
                let (k_b, v_b) = split_kv_b(&w, il, &mla, hp.n_head)?;
                Ok(Block {
                    attn: MlaAttention::load_with_kv_b(&w, &hp, il, &mla, k_b, v_b)?,
                    ffn: ReluSqrFfn::load(&w, &hp, il)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Plm {
            embd: Embeddings::load(&w, &hp)?,
            blocks,
            kq_scale: 1.0 / (qk as f32).sqrt(),
            hp,
        })
    }
}

impl Architecture for Plm {
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
            let h = g.rms_norm(x, Some(b.attn.norm()), eps);
            let step = MlaStep {
                il,
                rope: rope_params(hp, il),
                rope_factors: None,
                kq_scale: self.kq_scale,
            };
            let a = b.attn.build(&mut g, hp, h, step);
            x = g.add(x, a);
            let h = g.rms_norm(x, Some(&b.ffn.norm), eps);
            let f = b.ffn.build(&mut g, h);
            x = g.add(x, f);
        }
        let logits = self.embd.logits(&mut g, hp, x, out);
        g.finish(logits)
    }
}
