//! MiniCPM3 (`minicpm3`): multi-head latent attention with low-rank queries and a dense
//! SwiGLU feed-forward, run on DeepSeek-V2's absorbed MLA path ([`crate::deepseek2`]) with the
//! latent-only KV cache, where llama.cpp decompresses and caches full keys and values.
//!
//! - Its files carry the fused `attn_kv_b` (`[kv_lora_rank, n_head·(qk_nope + v_head)]`: per
//!   head, `qk_nope` key rows then `v_head` value rows). At load it is split into per-head
//!   `k_b` (each head's key rows transposed, `[qk_nope, kv_lora_rank, n_head]`, as
//!   convert_hf_to_gguf.py's DeepSeek-V2 split writes `attn_k_b`) and `v_b` (`[kv_lora_rank,
//!   v_head, n_head]`), dequantized to F32.
//! - Key width `attention.key_length` = `qk_nope + qk_rope`; the value width is
//!   `attention.value_length` or, as the converter leaves it out, `n_embd / n_head`
//!   (llama.cpp's default). Queries and keys use NeoX RoPE over the `qk_rope` part, with
//!   LongRoPE factors (`rope_factors_short` within the original context, `rope_factors_long`
//!   beyond it) when the file has them; q·k is scaled by `1/√(qk_nope + qk_rope)`.
//! - The scalings llama.cpp fixes in code (its `minicpm3.cpp`, not read from the file):
//!   embeddings ×12, each residual branch (attention and FFN output) ×1.4/√n_layer, and the
//!   final norm's output ×256/n_embd before the output projection.

use tessera_engine::gguf::Metadata;
use tessera_engine::graph::{Graph, GraphBuilder, OutputRows};
use tessera_engine::{GgufFile, Tensor, quant};

use crate::arch::{ArchDefaults, ArchSpec, Architecture, rope_params};
use crate::blocks::{Embeddings, FeedForward, Gate, layer_tensor};
use crate::deepseek2::{MlaAttention, MlaDims, MlaStep};
use crate::error::{ModelError, Result};
use crate::hparams::{HParams, RopeStyle};
use crate::weights::WeightLoader;

/// `general.architecture = minicpm3`.
pub static SPEC: ArchSpec = ArchSpec {
    name: "minicpm3",
    families: "MiniCPM3 (multi-head latent attention on the absorbed path, latent-only KV cache, LongRoPE)",
    defaults: ArchDefaults {
        rope_style: RopeStyle::Neox,
        ..ArchDefaults::LLAMA
    },
    load: |file, hp| Ok(Box::new(MiniCpm3::load(file, hp)?)),
    latent_cache: Some(mla_dims),
};

/// llama.cpp's `scale_embd`: the multiplier of the token embeddings.
const SCALE_EMBD: f32 = 12.0;
/// llama.cpp's `scale_depth`: each residual branch is multiplied by this / √n_layer.
const SCALE_DEPTH: f32 = 1.4;
/// llama.cpp's `n_embd_base`: the final norm's output is multiplied by this / n_embd.
const N_EMBD_BASE: f32 = 256.0;

/// One transformer block's weights.
struct Block {
    attn: MlaAttention,
    ffn: FeedForward,
}

/// A MiniCPM3 model.
pub struct MiniCpm3 {
    hp: HParams,
    embd: Embeddings,
    blocks: Vec<Block>,
    /// LongRoPE factors for contexts within the original one.
    factors_short: Option<Tensor>,
    /// LongRoPE factors for longer contexts.
    factors_long: Option<Tensor>,
    /// Multiplier of q·k: `1/√(qk_nope + qk_rope)`.
    kq_scale: f32,
}

/// The MLA dimensions of a file ([`MlaDims::read_fused_kv_b`]): the loader's first step, and
/// [`ArchSpec::latent_cache`] for `info`.
pub fn mla_dims(meta: &Metadata, hp: &HParams) -> Result<MlaDims> {
    MlaDims::read_fused_kv_b(meta, hp, "MiniCPM3", true)
}

impl MiniCpm3 {
    /// Read the MLA keys, point the hyper-parameters at the latent cache, split every layer's
    /// `attn_kv_b` and find the other weights.
    pub fn load(file: &GgufFile, mut hp: HParams) -> Result<MiniCpm3> {
        let mla = mla_dims(file.metadata(), &hp)?;
        let qk_rope = mla.qk_rope;
        let qk = mla.qk_nope + mla.qk_rope;
        mla.use_latent_cache(&mut hp);
        hp.experts = None;

        let w = WeightLoader::new(file);
        let factors = |name: &str| w.has(name).then(|| w.norm(name, qk_rope / 2)).transpose();
        let (factors_short, factors_long) = (
            factors("rope_factors_short.weight")?,
            factors("rope_factors_long.weight")?,
        );
        let blocks = (0..hp.n_layer)
            .map(|il| {
                let (k_b, v_b) = split_kv_b(&w, il, &mla, hp.n_head)?;
                Ok(Block {
                    attn: MlaAttention::load_with_kv_b(&w, &hp, il, &mla, k_b, v_b)?,
                    ffn: FeedForward::load(&w, &hp, il)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MiniCpm3 {
            embd: Embeddings::load(&w, &hp)?,
            blocks,
            factors_short,
            factors_long,
            kq_scale: 1.0 / (qk as f32).sqrt(),
            hp,
        })
    }

    /// The LongRoPE factors for a context of `n_ctx` tokens (as llama.cpp chooses them).
    fn factors(&self, n_ctx: usize) -> Option<&Tensor> {
        if n_ctx > self.hp.rope_scaling.orig_ctx as usize {
            self.factors_long.as_ref()
        } else {
            self.factors_short.as_ref()
        }
    }
}

/// Split layer `il`'s `attn_kv_b` (`[kv_lora_rank, n_head·(qk_nope + v_head)]`, any
/// dequantizable type) into F32 `k_b` (`[qk_nope, kv_lora_rank, n_head]`: head `h`'s key rows
/// transposed) and `v_b` (`[kv_lora_rank, v_head, n_head]`: head `h`'s value rows). PLM's
/// files carry the same fused layout (`crate::plm`).
pub(crate) fn split_kv_b(
    w: &WeightLoader,
    il: usize,
    d: &MlaDims,
    n_head: usize,
) -> Result<(Tensor, Tensor)> {
    let name = layer_tensor(il, "attn_kv_b");
    let (r, per_head) = (d.kv_lora_rank, d.qk_nope + d.v_head);
    let t = w.get(&name, &[r, n_head * per_head])?;
    let unsupported = || ModelError::UnsupportedDType {
        name: name.clone(),
        dtype: t.dtype(),
    };
    let ops = quant::reference(t.dtype()).ok_or_else(unsupported)?;
    let row_bytes = t.dtype().row_bytes(r as u64).ok_or_else(unsupported)? as usize;
    let mut kv = vec![0f32; t.n_elements()];
    for (row, out) in kv.chunks_exact_mut(r).enumerate() {
        (ops.dequantize_row)(&t.data()[row * row_bytes..(row + 1) * row_bytes], out);
    }
    let (k_b, v_b) = split_rows(&kv, d, n_head);
    Ok((
        Tensor::from_f32(
            &layer_tensor(il, "attn_k_b"),
            vec![d.qk_nope, r, n_head],
            &k_b,
        ),
        Tensor::from_f32(
            &layer_tensor(il, "attn_v_b"),
            vec![r, d.v_head, n_head],
            &v_b,
        ),
    ))
}

/// The arithmetic of [`split_kv_b`] on the F32 rows of `kv_b`: `(k_b, v_b)`.
fn split_rows(kv: &[f32], d: &MlaDims, n_head: usize) -> (Vec<f32>, Vec<f32>) {
    let (r, per_head) = (d.kv_lora_rank, d.qk_nope + d.v_head);
    let mut k_b = vec![0f32; n_head * d.qk_nope * r];
    let mut v_b = vec![0f32; n_head * d.v_head * r];
    for h in 0..n_head {
        let head = &kv[h * per_head * r..(h + 1) * per_head * r];
        for j in 0..d.qk_nope {
            for (c, &x) in head[j * r..(j + 1) * r].iter().enumerate() {
                k_b[(h * r + c) * d.qk_nope + j] = x;
            }
        }
        v_b[h * d.v_head * r..(h + 1) * d.v_head * r].copy_from_slice(&head[d.qk_nope * r..]);
    }
    (k_b, v_b)
}

impl Architecture for MiniCpm3 {
    fn hparams(&self) -> &HParams {
        &self.hp
    }

    fn build_graph(&self, n_tokens: usize, out: OutputRows, n_ctx: usize) -> Graph {
        let hp = &self.hp;
        let eps = hp.rms_eps;
        let scale_res = SCALE_DEPTH / (hp.n_layer as f32).sqrt();
        let mut g = GraphBuilder::new(n_tokens);
        let x = self.embd.embed(&mut g);
        let mut x = g.scale(x, SCALE_EMBD);
        for (il, b) in self.blocks.iter().enumerate() {
            g.set_layer(Some(il));
            let h = g.rms_norm(x, Some(b.attn.norm()), eps);
            let step = MlaStep {
                il,
                rope: rope_params(hp, il),
                rope_factors: self.factors(n_ctx),
                kq_scale: self.kq_scale,
            };
            let a = b.attn.build(&mut g, hp, h, step);
            let a = g.scale(a, scale_res);
            x = g.add(x, a);
            let h = g.rms_norm(x, Some(&b.ffn.norm), eps);
            let f = b.ffn.build(&mut g, h, Gate::Silu);
            let f = g.scale(f, scale_res);
            x = g.add(x, f);
        }
        let logits = self
            .embd
            .logits_scaled(&mut g, hp, x, out, N_EMBD_BASE / hp.n_embd as f32);
        g.finish(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split against the layout by hand: 2 heads, latent 3, 2 key rows and 1 value row
    /// per head (values `100·head + 10·row + column`). End to end, writing `k_b` without the
    /// transposition makes synthetic_kl's `minicpm3` test fail (CPU KL 8.12, top-1 0.027).
    #[test]
    fn kv_b_splits_into_transposed_keys_and_value_rows() {
        let d = MlaDims {
            q_lora_rank: 0,
            kv_lora_rank: 3,
            qk_nope: 2,
            qk_rope: 2,
            v_head: 1,
        };
        let (n_head, per, r) = (2, 3, 3);
        let kv: Vec<f32> = (0..n_head * per * r)
            .map(|i| (100 * (i / (per * r)) + 10 * (i / r % per) + i % r) as f32)
            .collect();
        let (k_b, v_b) = split_rows(&kv, &d, n_head);
        // k_b[h][c][j] = kv_b[h][j][c].
        assert_eq!(
            k_b,
            [
                0., 10., 1., 11., 2., 12., 100., 110., 101., 111., 102., 112.
            ]
        );
        // v_b[h][i][c] = kv_b[h][qk_nope + i][c].
        assert_eq!(v_b, [20., 21., 22., 120., 121., 122.]);
    }
}
