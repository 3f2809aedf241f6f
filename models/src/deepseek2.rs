//! DeepSeek-V2 (`deepseek2`: DeepSeek-V2/V2.5, V2-Lite, and files of later models converted to
//! this architecture): multi-head latent attention (MLA) with a latent-only KV cache, and a
//! mixture of experts with shared experts after leading dense layers.
//!
//! MLA, on the absorbed path (as llama.cpp runs MLA files):
//! - queries: `attn_q` (V2-Lite) or the low-rank `attn_q_a` → RMSNorm `attn_q_a_norm` →
//!   `attn_q_b`; each head is `qk_nope` values then `qk_rope` values;
//! - keys and values come from one compressed latent: `attn_kv_a_mqa` gives `kv_lora_rank`
//!   values `c` (RMSNorm `attn_kv_a_norm`) and `qk_rope` values `k_pe` (rotated; one for all
//!   heads);
//! - each head's `q_nope` is multiplied by its `attn_k_b` (absorbing the key decompression),
//!   so every head attends against `[c, k_pe]` — one shared KV head of `kv_lora_rank +
//!   qk_rope` values per token, which is all the cache stores: the values are its first
//!   `kv_lora_rank` elements (no separate V cache);
//! - each head's output (`kv_lora_rank` wide) is decompressed by its `attn_v_b`, then
//!   `attn_output`.
//!
//! The attention scale is `mscale² / √(qk_nope + qk_rope)`, with DeepSeek's YaRN magnitude
//! factor `mscale` (llama.cpp's derivation, including its `yarn_log_multiplier` convention).
//!
//! The MLA pieces ([`MlaDims`], [`MlaAttention`]) also serve MiniCPM3 (`crate::minicpm3`) and
//! PLM (`crate::plm`), whose files carry the fused `attn_kv_b` they split at load.

use tessera_engine::gguf::Metadata;
use tessera_engine::graph::{
    ExpertGating, Graph, GraphBuilder, KvId, NodeId, OutputRows, RopeParams,
};
use tessera_engine::{GgufFile, Tensor};

use crate::arch::{ArchDefaults, ArchSpec, Architecture, attn_params, rope_params};
use crate::blocks::{Embeddings, FeedForward, Gate, Linear, layer_bias, layer_tensor};
use crate::error::{ModelError, Result};
use crate::hparams::{HParams, RopeScalingType};
use crate::moe::MoeFeedForward;
use crate::weights::WeightLoader;

/// `general.architecture = deepseek2`.
pub static SPEC: ArchSpec = ArchSpec {
    name: "deepseek2",
    families: "DeepSeek-V2/V2-Lite (multi-head latent attention, latent-only KV cache, shared experts)",
    defaults: ArchDefaults {
        expert_norm: false,
        expert_gating: ExpertGating::Softmax,
        ..ArchDefaults::LLAMA
    },
    load: |file, hp| Ok(Box::new(DeepSeek2::load(file, hp)?)),
    latent_cache: None,
};

/// MLA's sizes.
#[derive(Clone, Copy, Debug)]
pub struct MlaDims {
    /// Rank of the query compression (0: queries projected directly, V2-Lite).
    pub q_lora_rank: usize,
    /// Width of the cached latent `c`.
    pub kv_lora_rank: usize,
    /// Per-head query/key width without rotation.
    pub qk_nope: usize,
    /// Rotated width (per query head; one shared key part).
    pub qk_rope: usize,
    /// Per-head value width after decompression.
    pub v_head: usize,
}

impl MlaDims {
    /// The dimensions of a file whose `attn_kv_b` holds each query head's decompressed key
    /// and value (MiniCPM3, PLM; named `family` in errors): the latent rank (and the query
    /// rank if `low_rank_queries`), the heads' rotated and un-rotated key widths from
    /// `key_length` and the rope dimension count, and the value width (`value_length`, else
    /// `n_embd / n_head` as llama.cpp defaults), checked.
    pub fn read_fused_kv_b(
        meta: &Metadata,
        hp: &HParams,
        family: &str,
        low_rank_queries: bool,
    ) -> Result<MlaDims> {
        let arch = hp.arch.name();
        let k = |s: &str| format!("{arch}.{s}");
        let invalid = |key: &str, why: String| ModelError::InvalidHParam { key: k(key), why };
        let rank = |key: &str| -> Result<usize> {
            match meta.opt_u32(&k(key))? {
                Some(r) if r > 0 && r <= 1 << 16 => Ok(r as usize),
                Some(r) => Err(invalid(key, format!("{r} is not a usable rank"))),
                None => Err(invalid(key, "missing".into())),
            }
        };
        let q_lora_rank = if low_rank_queries {
            rank("attention.q_lora_rank")?
        } else {
            0
        };
        let kv_lora_rank = rank("attention.kv_lora_rank")?;
        let (qk, qk_rope) = (hp.head_dim, hp.rope_dims);
        if qk <= qk_rope {
            return Err(invalid(
                "attention.key_length",
                format!("{qk} leaves no un-rotated part beside {qk_rope} rotated values"),
            ));
        }
        let v_head = match meta.opt_u32(&k("attention.value_length"))? {
            Some(v) => v as usize,
            None => hp.n_embd / hp.n_head,
        };
        if v_head == 0 || hp.n_head_kv != hp.n_head {
            return Err(invalid(
                "attention.head_count_kv",
                format!(
                    "{family} decompresses a key and a value per query head (value width \
                     {v_head}); this file has {} KV heads for {} query heads",
                    hp.n_head_kv, hp.n_head
                ),
            ));
        }
        Ok(MlaDims {
            q_lora_rank,
            kv_lora_rank,
            qk_nope: qk - qk_rope,
            qk_rope,
            v_head,
        })
    }

    /// Point `hp` at the latent cache: one KV head of `kv_lora_rank + qk_rope` keys whose
    /// first `kv_lora_rank` elements are the values, standing in for `n_head` heads of
    /// `qk_nope + qk_rope` keys and `v_head` values.
    pub fn use_latent_cache(&self, hp: &mut HParams) {
        hp.n_head_kv = 1;
        hp.head_dim = self.kv_lora_rank + self.qk_rope;
        hp.head_dim_v = self.kv_lora_rank;
        hp.values_in_keys = true;
        hp.mla_head_dims = Some((self.qk_nope + self.qk_rope, self.v_head));
    }
}

/// What one layer's MLA step needs beyond its weights.
pub struct MlaStep<'a> {
    /// Layer index (its KV store).
    pub il: usize,
    /// RoPE of the rotated query and key parts.
    pub rope: RopeParams,
    /// Per-pair RoPE frequency factors (MiniCPM3's LongRoPE), if any.
    pub rope_factors: Option<&'a Tensor>,
    /// Multiplier of q·k.
    pub kq_scale: f32,
}

/// One layer's MLA weights.
pub struct MlaAttention {
    dims: MlaDims,
    norm: Tensor,
    /// `attn_q`, or `attn_q_a`, its norm and `attn_q_b`.
    q: QueryProjection,
    kv_a: Tensor,
    kv_a_norm: Tensor,
    /// `[qk_nope, kv_lora_rank, n_head]`.
    k_b: Tensor,
    /// `[kv_lora_rank, v_head, n_head]`.
    v_b: Tensor,
    out: Linear,
}

enum QueryProjection {
    Direct(Tensor),
    LowRank { a: Tensor, norm: Tensor, b: Tensor },
}

/// A block's feed-forward: dense (leading layers) or routed with shared experts.
enum Ffn {
    Dense(FeedForward),
    Experts {
        routed: Box<MoeFeedForward>,
        /// Bias on the scores for the choice only (`exp_probs_b`).
        choice_bias: Option<Tensor>,
        shared: FeedForward,
    },
}

struct Block {
    attn: MlaAttention,
    ffn: Ffn,
}

/// A DeepSeek-V2 model.
pub struct DeepSeek2 {
    hp: HParams,
    embd: Embeddings,
    blocks: Vec<Block>,
    /// Multiplier of q·k.
    kq_scale: f32,
    /// RoPE magnitude factor (llama.cpp's adjusted `yarn_attn_factor`).
    rope_attn_factor: f32,
}

impl DeepSeek2 {
    /// Read MLA's keys, check the shapes they imply, and find every weight.
    pub fn load(file: &GgufFile, hp: HParams) -> Result<DeepSeek2> {
        let meta = file.metadata();
        let arch = hp.arch.name;
        let k = |s: &str| format!("{arch}.{s}");
        let invalid = |key: &str, why: String| ModelError::InvalidHParam { key: k(key), why };
        let Some((k_mla, v_mla)) = hp.mla_head_dims else {
            return Err(invalid(
                "attention.key_length_mla",
                "missing: this file predates llama.cpp's MLA layout (attn_kv_b, no attn_k_b/attn_v_b); \
                 reconvert it with a current convert_hf_to_gguf.py"
                    .into(),
            ));
        };
        let kv_lora_rank = meta
            .opt_u32(&k("attention.kv_lora_rank"))?
            .ok_or_else(|| invalid("attention.kv_lora_rank", "missing".into()))?
            as usize;
        let q_lora_rank = meta.opt_u32(&k("attention.q_lora_rank"))?.unwrap_or(0) as usize;
        let qk_rope = hp.rope_dims;
        if k_mla <= qk_rope || v_mla == 0 || kv_lora_rank == 0 || kv_lora_rank > 1 << 16 {
            return Err(invalid(
                "attention.key_length_mla",
                format!(
                    "{k_mla} (with {qk_rope} rotated, value width {v_mla}, latent {kv_lora_rank}) \
                     is not an MLA shape"
                ),
            ));
        }
        if hp.n_head_kv != 1
            || hp.head_dim != kv_lora_rank + qk_rope
            || hp.head_dim_v != kv_lora_rank
        {
            return Err(invalid(
                "attention.key_length",
                format!(
                    "an MLA file attends with one KV head of kv_lora_rank + rope = {} keys and \
                     {kv_lora_rank} values; this one has {} heads of {} and {}",
                    kv_lora_rank + qk_rope,
                    hp.n_head_kv,
                    hp.head_dim,
                    hp.head_dim_v
                ),
            ));
        }
        let mla = MlaDims {
            q_lora_rank,
            kv_lora_rank,
            qk_nope: k_mla - qk_rope,
            qk_rope,
            v_head: v_mla,
        };
        let log_mul = meta
            .opt_f32(&k("rope.scaling.yarn_log_multiplier"))?
            .unwrap_or(0.0);
        let (kq_scale, rope_attn_factor) = attention_scale(&hp, k_mla, log_mul);

        let w = WeightLoader::new(file);
        let experts = hp.experts.clone();
        let blocks = (0..hp.n_layer)
            .map(|il| {
                let ffn = match &experts {
                    Some(x) if il >= x.n_leading_dense => {
                        let routed = Box::new(MoeFeedForward::load(&w, &hp, il, x)?);
                        let shared_ff = x.n_ff_exp * x.n_shared.max(1);
                        let bias = layer_bias(il, "exp_probs_b");
                        let choice_bias = w
                            .has(&bias)
                            .then(|| w.norm(&bias, x.n_expert))
                            .transpose()?;
                        Ffn::Experts {
                            routed,
                            choice_bias,
                            shared: FeedForward::load_named(&w, &hp, il, "_shexp", shared_ff)?,
                        }
                    }
                    _ => Ffn::Dense(FeedForward::load(&w, &hp, il)?),
                };
                Ok(Block {
                    attn: MlaAttention::load(&w, &hp, il, &mla)?,
                    ffn,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DeepSeek2 {
            embd: Embeddings::load(&w, &hp)?,
            blocks,
            kq_scale,
            rope_attn_factor,
            hp,
        })
    }
}

/// The q·k multiplier and the RoPE magnitude factor llama.cpp uses for DeepSeek-V2:
/// `A` = llama.cpp's `yarn_attn_factor` (under YaRN: 1/(1 + 0.1 ln f) times the file's
/// attention factor, and the YaRN magnitude `1 + 0.1 ln f` when the file has no
/// `yarn_log_multiplier`), and `mscale = A (1 + 0.1 ln f)(1 + 0.1 m ln f)` with `m` the
/// file's multiplier / 0.1, `f` = 1 / freq_scale; the scale is `mscale² / √k_mla`.
fn attention_scale(hp: &HParams, k_mla: usize, log_mul: f32) -> (f32, f32) {
    let s = &hp.rope_scaling;
    let freq_scale = s.freq_scale();
    let ln_f = (1.0 / freq_scale).ln();
    let file_attn_factor = if log_mul != 0.0 && s.kind == RopeScalingType::Yarn {
        // `read_rope_scaling` folded the multiplier into attn_factor; take it back out.
        s.attn_factor / (1.0 + 0.1 * log_mul * s.factor.ln())
    } else {
        s.attn_factor
    };
    let m = log_mul / 0.1;
    let a = if s.ext_factor != 0.0 {
        let get_mscale = |scale: f32, ms: f32| {
            if scale <= 1.0 {
                1.0
            } else {
                0.1 * ms * scale.ln() + 1.0
            }
        };
        let f = 1.0 / freq_scale;
        let base = if log_mul != 0.0 {
            1.0
        } else {
            get_mscale(f, 1.0)
        };
        base / (1.0 + 0.1 * f.ln()) * file_attn_factor
    } else {
        file_attn_factor
    };
    let mscale = a * (1.0 + 0.1 * ln_f) * (1.0 + 0.1 * m * ln_f);
    (mscale * mscale / (k_mla as f32).sqrt(), a)
}

impl MlaAttention {
    /// Load layer `il`'s MLA weights with the split `attn_k_b` and `attn_v_b`.
    fn load(w: &WeightLoader, hp: &HParams, il: usize, d: &MlaDims) -> Result<Self> {
        let n = |s: &str| layer_tensor(il, s);
        if !w.has(&n("attn_k_b")) && w.has(&n("attn_kv_b")) {
            return Err(ModelError::InvalidHParam {
                key: n("attn_kv_b"),
                why: "this file has the fused attn_kv_b of older conversions; reconvert it so \
                      it carries attn_k_b and attn_v_b"
                    .into(),
            });
        }
        let k_b = w.get(&n("attn_k_b"), &[d.qk_nope, d.kv_lora_rank, hp.n_head])?;
        let v_b = w.get(&n("attn_v_b"), &[d.kv_lora_rank, d.v_head, hp.n_head])?;
        Self::load_with_kv_b(w, hp, il, d, k_b, v_b)
    }

    /// Load layer `il`'s MLA weights but the per-head decompressions, given as `k_b`
    /// (`[qk_nope, kv_lora_rank, n_head]`) and `v_b` (`[kv_lora_rank, v_head, n_head]`).
    pub fn load_with_kv_b(
        w: &WeightLoader,
        hp: &HParams,
        il: usize,
        d: &MlaDims,
        k_b: Tensor,
        v_b: Tensor,
    ) -> Result<Self> {
        let e = hp.n_embd;
        let n = |s: &str| layer_tensor(il, s);
        let q_width = hp.n_head * (d.qk_nope + d.qk_rope);
        let q = if d.q_lora_rank == 0 {
            QueryProjection::Direct(w.get(&n("attn_q"), &[e, q_width])?)
        } else {
            QueryProjection::LowRank {
                a: w.get(&n("attn_q_a"), &[e, d.q_lora_rank])?,
                norm: w.norm(&n("attn_q_a_norm"), d.q_lora_rank)?,
                b: w.get(&n("attn_q_b"), &[d.q_lora_rank, q_width])?,
            }
        };
        Ok(MlaAttention {
            dims: *d,
            norm: w.norm(&n("attn_norm"), e)?,
            q,
            kv_a: w.get(&n("attn_kv_a_mqa"), &[e, d.kv_lora_rank + d.qk_rope])?,
            kv_a_norm: w.norm(&n("attn_kv_a_norm"), d.kv_lora_rank)?,
            k_b,
            v_b,
            out: Linear {
                w: w.get(&n("attn_output"), &[hp.n_head * d.v_head, e])?,
                b: None,
            },
        })
    }
}

impl Architecture for DeepSeek2 {
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
            let h = g.rms_norm(x, Some(&b.attn.norm), eps);
            let mut rope = rope_params(hp, il);
            rope.attn_factor = self.rope_attn_factor;
            let step = MlaStep {
                il,
                rope,
                rope_factors: None,
                kq_scale: self.kq_scale,
            };
            let a = b.attn.build(&mut g, hp, h, step);
            x = g.add(x, a);

            let f = match &b.ffn {
                Ffn::Dense(f) => {
                    let h = g.rms_norm(x, Some(&f.norm), eps);
                    f.build(&mut g, h, Gate::Silu)
                }
                Ffn::Experts {
                    routed,
                    choice_bias,
                    shared,
                } => {
                    let h = g.rms_norm(x, Some(&routed.norm), eps);
                    let moe = routed.build_with_bias(&mut g, h, Gate::Silu, choice_bias.as_ref());
                    let sh = shared.build(&mut g, h, Gate::Silu);
                    g.add(moe, sh)
                }
            };
            x = g.add(x, f);
        }
        let logits = self.embd.logits(&mut g, hp, x, out);
        g.finish(logits)
    }
}

impl MlaAttention {
    /// The layer's pre-attention norm weight.
    pub fn norm(&self) -> &Tensor {
        &self.norm
    }

    /// MLA on the absorbed path for the normalised input `h` (see the module docs); returns
    /// the output projection's result (before the residual).
    pub fn build(&self, g: &mut GraphBuilder, hp: &HParams, h: NodeId, step: MlaStep) -> NodeId {
        let d = &self.dims;
        let (eps, nh) = (hp.rms_eps, hp.n_head);
        let qk = d.qk_nope + d.qk_rope;
        let q = match &self.q {
            QueryProjection::Direct(wq) => g.mat_mul(wq, h),
            QueryProjection::LowRank { a, norm, b } => {
                let q = g.mat_mul(a, h);
                let q = g.rms_norm(q, Some(norm), eps);
                g.mat_mul(b, q)
            }
        };
        let (rope, factors) = (step.rope, step.rope_factors);
        // Per head: the un-rotated part, absorbed into the latent space by k_b ...
        let q_nope = g.columns(q, qk, 0..d.qk_nope);
        let q_nope = g.mat_mul_heads(&self.k_b, q_nope);
        // ... and the rotated part.
        let q_pe = g.columns(q, qk, d.qk_nope..qk);
        let q_pe = g.rope_with_factors(q_pe, d.qk_rope, rope, factors);
        let q = g.concat(q_nope, q_pe, nh);
        // The latent and the shared rotated key.
        let kv = g.mat_mul(&self.kv_a, h);
        let lat = d.kv_lora_rank + d.qk_rope;
        let c = g.columns(kv, lat, 0..d.kv_lora_rank);
        let c = g.rms_norm(c, Some(&self.kv_a_norm), eps);
        let k_pe = g.columns(kv, lat, d.kv_lora_rank..lat);
        let k_pe = g.rope_with_factors(k_pe, d.qk_rope, rope, factors);
        let k = g.concat(c, k_pe, 1);
        // One KV head: keys [c, k_pe], values c (read from the cached keys).
        let il = step.il;
        let att = g.attention(q, k, c, KvId(il as u32), attn_params(hp, il, step.kq_scale));
        // Each head's latent output decompressed by its v_b, then the output projection.
        let o = g.mat_mul_heads(&self.v_b, att);
        self.out.apply(g, o)
    }
}
