//! The llama architecture (Llama 2/3, SmolLM2, Mistral-style sliding windows): pre-norm
//! blocks of grouped-query attention with RoPE and a SwiGLU feed-forward.

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
    wo: Tensor,
    ffn_norm: Tensor,
    ffn_gate: Tensor,
    ffn_up: Tensor,
    ffn_down: Tensor,
}

/// A llama model: weights borrowed from the file's map.
pub struct Llama {
    hp: HParams,
    tok_embd: Tensor,
    blocks: Vec<Block>,
    output_norm: Tensor,
    /// The output projection (the embedding table when the file ties them).
    output: Tensor,
}

impl Llama {
    /// Find and check every weight.
    pub fn load(file: &GgufFile, hp: HParams) -> Result<Llama> {
        let w = WeightLoader::new(file);
        let (e, v) = (hp.n_embd, hp.n_vocab);
        let q_width = hp.n_head * hp.head_dim;
        let k_width = hp.n_head_kv * hp.head_dim;
        let v_width = hp.n_head_kv * hp.head_dim_v;
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
                    wq: w.get(&n("attn_q"), &[e, q_width])?,
                    wk: w.get(&n("attn_k"), &[e, k_width])?,
                    wv: w.get(&n("attn_v"), &[e, v_width])?,
                    wo: w.get(&n("attn_output"), &[hp.n_head * hp.head_dim_v, e])?,
                    ffn_norm: w.norm(&n("ffn_norm"), e)?,
                    ffn_gate: w.get(&n("ffn_gate"), &[e, hp.n_ff])?,
                    ffn_up: w.get(&n("ffn_up"), &[e, hp.n_ff])?,
                    ffn_down: w.get(&n("ffn_down"), &[hp.n_ff, e])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Llama {
            tok_embd,
            output_norm: w.norm("output_norm.weight", e)?,
            output,
            blocks,
            hp,
        })
    }
}

impl Architecture for Llama {
    fn hparams(&self) -> &HParams {
        &self.hp
    }

    fn build_graph(&self, n_tokens: usize, out: OutputRows) -> Graph {
        let hp = &self.hp;
        let eps = hp.rms_eps;
        let scale = 1.0 / (hp.head_dim as f32).sqrt();
        let mut g = GraphBuilder::new(n_tokens);

        let mut x = g.get_rows(&self.tok_embd);
        for (il, b) in self.blocks.iter().enumerate() {
            g.set_layer(Some(il));
            // Self-attention.
            let h = g.rms_norm(x, Some(&b.attn_norm), eps);
            let q = g.mat_mul(&b.wq, h);
            let k = g.mat_mul(&b.wk, h);
            let v = g.mat_mul(&b.wv, h);
            let q = g.rope(q, hp.head_dim, rope_params(hp, il));
            let k = g.rope(k, hp.head_dim, rope_params(hp, il));
            let a = g.attention(q, k, v, KvId(il as u32), attn_params(hp, il, scale));
            let a = g.mat_mul(&b.wo, a);
            x = g.add(x, a);
            // Feed-forward.
            let h = g.rms_norm(x, Some(&b.ffn_norm), eps);
            let gate = g.mat_mul(&b.ffn_gate, h);
            let up = g.mat_mul(&b.ffn_up, h);
            let h = g.swiglu(gate, up);
            let h = g.mat_mul(&b.ffn_down, h);
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
