//! The Gemma 3 architecture: scaled embeddings, RMSNorm on queries and keys before RoPE
//! (NeoX), post-attention and post-feed-forward norms, a GELU-gated feed-forward, and layers
//! that alternate five sliding-window (local) to one global.

use tessera_engine::graph::{Graph, GraphBuilder, KvId, OutputRows};
use tessera_engine::{GgufFile, Tensor};

use crate::arch::{Architecture, attn_params, rope_params};
use crate::error::Result;
use crate::hparams::HParams;
use crate::weights::WeightLoader;

/// One transformer block's weights.
struct Block {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    q_norm: Tensor,
    k_norm: Tensor,
    wo: Tensor,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    ffn_gate: Tensor,
    ffn_up: Tensor,
    ffn_down: Tensor,
    post_ffn_norm: Tensor,
}

/// A Gemma 3 model: weights borrowed from the file's map.
pub struct Gemma3 {
    hp: HParams,
    tok_embd: Tensor,
    blocks: Vec<Block>,
    output_norm: Tensor,
    output: Tensor,
}

impl Gemma3 {
    /// Find and check every weight.
    pub fn load(file: &GgufFile, hp: HParams) -> Result<Gemma3> {
        let w = WeightLoader::new(file);
        let (e, v, hd) = (hp.n_embd, hp.n_vocab, hp.head_dim);
        let tok_embd = w.get("token_embd.weight", &[e, v])?;
        let output = if w.has("output.weight") {
            w.get("output.weight", &[e, v])?
        } else {
            tok_embd.clone()
        };
        let blocks = (0..hp.n_layer)
            .map(|il| {
                let n = |s: &str| format!("blk.{il}.{s}.weight");
                Ok(Block {
                    attn_norm: w.norm(&n("attn_norm"), e)?,
                    wq: w.get(&n("attn_q"), &[e, hp.n_head * hd])?,
                    wk: w.get(&n("attn_k"), &[e, hp.n_head_kv * hd])?,
                    wv: w.get(&n("attn_v"), &[e, hp.n_head_kv * hp.head_dim_v])?,
                    q_norm: w.norm(&n("attn_q_norm"), hd)?,
                    k_norm: w.norm(&n("attn_k_norm"), hd)?,
                    wo: w.get(&n("attn_output"), &[hp.n_head * hp.head_dim_v, e])?,
                    post_attn_norm: w.norm(&n("post_attention_norm"), e)?,
                    ffn_norm: w.norm(&n("ffn_norm"), e)?,
                    ffn_gate: w.get(&n("ffn_gate"), &[e, hp.n_ff])?,
                    ffn_up: w.get(&n("ffn_up"), &[e, hp.n_ff])?,
                    ffn_down: w.get(&n("ffn_down"), &[hp.n_ff, e])?,
                    post_ffn_norm: w.norm(&n("post_ffw_norm"), e)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Gemma3 {
            tok_embd,
            output_norm: w.norm("output_norm.weight", e)?,
            output,
            blocks,
            hp,
        })
    }
}

impl Architecture for Gemma3 {
    fn hparams(&self) -> &HParams {
        &self.hp
    }

    fn build_graph(&self, n_tokens: usize, out: OutputRows) -> Graph {
        let hp = &self.hp;
        let eps = hp.rms_eps;
        let hd = hp.head_dim;
        let mut g = GraphBuilder::new(n_tokens);

        let x = g.get_rows(&self.tok_embd);
        let mut x = g.scale(x, (hp.n_embd as f32).sqrt());
        for (il, b) in self.blocks.iter().enumerate() {
            g.set_layer(Some(il));
            // Self-attention, local or global as the layer pattern says.
            let h = g.rms_norm(x, Some(&b.attn_norm), eps);
            let q = g.mat_mul(&b.wq, h);
            let k = g.mat_mul(&b.wk, h);
            let v = g.mat_mul(&b.wv, h);
            let q = g.rms_norm_grouped(q, Some(&b.q_norm), hd, eps);
            let k = g.rms_norm_grouped(k, Some(&b.k_norm), hd, eps);
            let q = g.rope(q, hd, rope_params(hp, il));
            let k = g.rope(k, hd, rope_params(hp, il));
            let scale = 1.0 / (hd as f32).sqrt();
            let a = g.attention(q, k, v, KvId(il as u32), attn_params(hp, il, scale));
            let a = g.mat_mul(&b.wo, a);
            let a = g.rms_norm(a, Some(&b.post_attn_norm), eps);
            x = g.add(x, a);
            // Feed-forward.
            let h = g.rms_norm(x, Some(&b.ffn_norm), eps);
            let gate = g.mat_mul(&b.ffn_gate, h);
            let up = g.mat_mul(&b.ffn_up, h);
            let h = g.geglu(gate, up);
            let h = g.mat_mul(&b.ffn_down, h);
            let h = g.rms_norm(h, Some(&b.post_ffn_norm), eps);
            x = g.add(x, h);
        }
        g.set_layer(None);
        if out == OutputRows::Last {
            x = g.last_row(x);
        }
        let x = g.rms_norm(x, Some(&self.output_norm), eps);
        let logits = g.mat_mul(&self.output, x);
        g.finish(logits)
    }
}
