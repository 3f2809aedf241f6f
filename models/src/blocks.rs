//! The building blocks architectures are made of: the weights of an attention block (separate
//! or fused QKV, optional biases, optional per-head Q/K norms), of a gated feed-forward
//! (separate or fused gate+up, optional biases), of the embedding and output head (tied or
//! not), and the graph each block records. An architecture file composes them in the order
//! its paper gives.

use tessera_engine::Tensor;
use tessera_engine::graph::{GraphBuilder, KvId, NodeId};

use crate::arch::{attn_params, rope_params};
use crate::error::{ModelError, Result};
use crate::hparams::HParams;
use crate::weights::WeightLoader;

/// The name of tensor `s` of layer `il` (`blk.{il}.{s}.weight`).
pub fn layer_tensor(il: usize, s: &str) -> String {
    format!("blk.{il}.{s}.weight")
}

/// The name of the bias of tensor `s` of layer `il` (`blk.{il}.{s}.bias`).
pub fn layer_bias(il: usize, s: &str) -> String {
    format!("blk.{il}.{s}.bias")
}

/// An optional bias of `n` values (converted to F32 like a norm).
fn opt_bias(w: &WeightLoader, il: usize, s: &str, n: usize) -> Result<Option<Tensor>> {
    let name = layer_bias(il, s);
    if w.has(&name) {
        Ok(Some(w.norm(&name, n)?))
    } else {
        Ok(None)
    }
}

/// A linear layer: weights and an optional bias.
pub struct Linear {
    /// Weights `[n_in, n_out]`.
    pub w: Tensor,
    /// Bias of `n_out` values.
    pub b: Option<Tensor>,
}

impl Linear {
    /// `x · Wᵀ (+ b)`.
    pub fn apply(&self, g: &mut GraphBuilder, x: NodeId) -> NodeId {
        let y = g.mat_mul(&self.w, x);
        self.bias(g, y)
    }

    /// The bias added to `y`, if there is one.
    fn bias(&self, g: &mut GraphBuilder, y: NodeId) -> NodeId {
        match &self.b {
            Some(b) => g.add_bias(y, b),
            None => y,
        }
    }
}

/// Which optional parts an attention block has beyond Q, K, V and output projections.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionParts {
    /// Per-head RMSNorm of Q and K before RoPE (`attn_q_norm`, `attn_k_norm`: Gemma 3, Qwen3).
    pub qk_norm: bool,
}

/// One layer's attention weights.
pub struct Attention {
    /// Pre-attention norm.
    pub norm: Tensor,
    /// Query projection.
    pub q: Linear,
    /// Key projection.
    pub k: Linear,
    /// Value projection.
    pub v: Linear,
    /// Per-head query norm.
    pub q_norm: Option<Tensor>,
    /// Per-head key norm.
    pub k_norm: Option<Tensor>,
    /// Output projection.
    pub out: Linear,
}

/// How one layer's attention graph is recorded.
#[derive(Clone, Copy)]
pub struct AttentionStep<'a> {
    /// Layer index (its KV store and attention shape).
    pub il: usize,
    /// Multiplier of q·k.
    pub scale: f32,
    /// Whether Q and K are rotated (SmolLM3 skips RoPE on some layers).
    pub rope: bool,
    /// RoPE per-pair frequency factors (Llama 3's `rope_freqs`, Phi-3's LongRoPE).
    pub rope_factors: Option<&'a Tensor>,
    /// Attention sinks, one logit per query head (gpt-oss).
    pub sinks: Option<&'a Tensor>,
}

impl Attention {
    /// Load layer `il`'s attention: `attn_q`/`attn_k`/`attn_v` or a fused `attn_qkv` (split into
    /// row views, no copy), each with an optional bias; `attn_output` with an optional bias;
    /// and the norms `parts` asks for.
    pub fn load(w: &WeightLoader, hp: &HParams, il: usize, parts: AttentionParts) -> Result<Self> {
        let e = hp.n_embd;
        let (qw, kw, vw) = (
            hp.n_head * hp.head_dim,
            hp.n_head_kv * hp.head_dim,
            hp.n_head_kv * hp.head_dim_v,
        );
        let n = |s: &str| layer_tensor(il, s);
        let norm_w = w.norm(&n("attn_norm"), e)?;
        let (q, k, v) = if w.has(&n("attn_qkv")) {
            let qkv = w.get(&n("attn_qkv"), &[e, qw + kw + vw])?;
            let view = |s: &str, r: std::ops::Range<usize>| {
                qkv.row_view(&n(s), r)
                    .ok_or_else(|| ModelError::MissingTensor(n(s)))
            };
            let fused_bias = opt_bias(w, il, "attn_qkv", qw + kw + vw)?;
            if fused_bias.is_some() {
                return Err(ModelError::InvalidHParam {
                    key: layer_bias(il, "attn_qkv"),
                    why: "a fused QKV bias is not supported; reconvert with separate biases".into(),
                });
            }
            (
                view("attn_q", 0..qw)?,
                view("attn_k", qw..qw + kw)?,
                view("attn_v", qw + kw..qw + kw + vw)?,
            )
        } else {
            (
                w.get(&n("attn_q"), &[e, qw])?,
                w.get(&n("attn_k"), &[e, kw])?,
                w.get(&n("attn_v"), &[e, vw])?,
            )
        };
        let norm = |s: &str| -> Result<Option<Tensor>> {
            parts
                .qk_norm
                .then(|| w.norm(&n(s), hp.head_dim))
                .transpose()
        };
        Ok(Attention {
            norm: norm_w,
            q: Linear {
                w: q,
                b: opt_bias(w, il, "attn_q", qw)?,
            },
            k: Linear {
                w: k,
                b: opt_bias(w, il, "attn_k", kw)?,
            },
            v: Linear {
                w: v,
                b: opt_bias(w, il, "attn_v", vw)?,
            },
            q_norm: norm("attn_q_norm")?,
            k_norm: norm("attn_k_norm")?,
            out: Linear {
                w: w.get(&n("attn_output"), &[hp.n_head * hp.head_dim_v, e])?,
                b: opt_bias(w, il, "attn_output", e)?,
            },
        })
    }

    /// Record self-attention of the normalised input `h`: projections (biases after all three
    /// products, so the products stay one group), per-head norms, RoPE, attention over the
    /// layer's KV store, output projection. Returns the block's output (before the residual).
    pub fn build(
        &self,
        g: &mut GraphBuilder,
        hp: &HParams,
        h: NodeId,
        step: AttentionStep,
    ) -> NodeId {
        let (eps, hd, il) = (hp.rms_eps, hp.head_dim, step.il);
        let q = g.mat_mul(&self.q.w, h);
        let k = g.mat_mul(&self.k.w, h);
        let v = g.mat_mul(&self.v.w, h);
        let q = self.q.bias(g, q);
        let k = self.k.bias(g, k);
        let v = self.v.bias(g, v);
        let q = match &self.q_norm {
            Some(n) => g.rms_norm_grouped(q, Some(n), hd, eps),
            None => q,
        };
        let k = match &self.k_norm {
            Some(n) => g.rms_norm_grouped(k, Some(n), hd, eps),
            None => k,
        };
        let (q, k) = if step.rope {
            let p = rope_params(hp, il);
            (
                g.rope_with_factors(q, hd, p, step.rope_factors),
                g.rope_with_factors(k, hd, p, step.rope_factors),
            )
        } else {
            (q, k)
        };
        let params = attn_params(hp, il, step.scale);
        let a = match step.sinks {
            Some(s) => g.attention_with_sinks(q, k, v, KvId(il as u32), params, s),
            None => g.attention(q, k, v, KvId(il as u32), params),
        };
        self.out.apply(g, a)
    }
}

/// The activation of a gated feed-forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// `silu(gate) ⊙ up` (Llama, Qwen, Phi-3, SmolLM).
    Silu,
    /// `gelu_tanh(gate) ⊙ up` (Gemma).
    Gelu,
    /// gpt-oss's clamped SwiGLU, `min(g, 7)·σ(1.702·min(g, 7))·(clamp(u, ±7) + 1)`.
    SiluOai,
}

impl Gate {
    /// Record the activation of `gate` and `up`.
    pub fn apply(self, g: &mut GraphBuilder, gate: NodeId, up: NodeId) -> NodeId {
        match self {
            Gate::Silu => g.swiglu(gate, up),
            Gate::Gelu => g.geglu(gate, up),
            Gate::SiluOai => g.swiglu_oai(gate, up, 1.702, 7.0),
        }
    }
}

/// One layer's gated feed-forward weights.
pub struct FeedForward {
    /// Pre-FFN norm.
    pub norm: Tensor,
    /// Gate projection.
    pub gate: Linear,
    /// Up projection.
    pub up: Linear,
    /// Down projection.
    pub down: Linear,
}

impl FeedForward {
    /// Load layer `il`'s feed-forward: `ffn_gate` and `ffn_up`, or an `ffn_up` of twice the
    /// width holding gate then up (Phi-3; split into row views), each with an optional bias.
    pub fn load(w: &WeightLoader, hp: &HParams, il: usize) -> Result<Self> {
        let (e, f) = (hp.n_embd, hp.n_ff);
        let n = |s: &str| layer_tensor(il, s);
        let fused = !w.has(&n("ffn_gate"))
            && w.has(&n("ffn_up"))
            && w.get(&n("ffn_up"), &[e, 2 * f]).is_ok();
        let (gate, up) = if !fused {
            (
                Linear {
                    w: w.get(&n("ffn_gate"), &[e, f])?,
                    b: opt_bias(w, il, "ffn_gate", f)?,
                },
                Linear {
                    w: w.get(&n("ffn_up"), &[e, f])?,
                    b: opt_bias(w, il, "ffn_up", f)?,
                },
            )
        } else {
            let fused = w.get(&n("ffn_up"), &[e, 2 * f])?;
            let view = |s: &str, r| {
                fused
                    .row_view(&n(s), r)
                    .ok_or_else(|| ModelError::MissingTensor(n(s)))
            };
            (
                Linear {
                    w: view("ffn_gate", 0..f)?,
                    b: None,
                },
                Linear {
                    w: view("ffn_up", f..2 * f)?,
                    b: None,
                },
            )
        };
        Ok(FeedForward {
            norm: w.norm(&n("ffn_norm"), e)?,
            gate,
            up,
            down: Linear {
                w: w.get(&n("ffn_down"), &[f, e])?,
                b: opt_bias(w, il, "ffn_down", e)?,
            },
        })
    }

    /// Load layer `il`'s `ffn_gate{suffix}`, `ffn_up{suffix}` and `ffn_down{suffix}` of
    /// hidden width `n_ff`, without biases (a MoE's shared experts: `_shexp`), with the
    /// layer's `ffn_norm`.
    pub fn load_named(
        w: &WeightLoader,
        hp: &HParams,
        il: usize,
        suffix: &str,
        n_ff: usize,
    ) -> Result<Self> {
        let e = hp.n_embd;
        let n = |s: &str| layer_tensor(il, &format!("{s}{suffix}"));
        let linear = |name: String, shape: &[usize]| -> Result<Linear> {
            Ok(Linear {
                w: w.get(&name, shape)?,
                b: None,
            })
        };
        Ok(FeedForward {
            norm: w.norm(&layer_tensor(il, "ffn_norm"), e)?,
            gate: linear(n("ffn_gate"), &[e, n_ff])?,
            up: linear(n("ffn_up"), &[e, n_ff])?,
            down: linear(n("ffn_down"), &[n_ff, e])?,
        })
    }

    /// Record `down(act(gate(h)) ⊙ up(h))` of the normalised input `h`.
    pub fn build(&self, g: &mut GraphBuilder, h: NodeId, act: Gate) -> NodeId {
        let gate = g.mat_mul(&self.gate.w, h);
        let up = g.mat_mul(&self.up.w, h);
        let gate = self.gate.bias(g, gate);
        let up = self.up.bias(g, up);
        let h = act.apply(g, gate, up);
        self.down.apply(g, h)
    }
}

/// The token embedding and the output head.
pub struct Embeddings {
    /// Token embedding table `[n_embd, n_vocab]`.
    pub tok_embd: Tensor,
    /// Final norm.
    pub output_norm: Tensor,
    /// Output projection (the embedding table when the file ties them).
    pub output: Tensor,
    /// Output bias (`output.bias`, in some Qwen2 and Phi-3 files).
    pub output_bias: Option<Tensor>,
}

impl Embeddings {
    /// Load `token_embd`, `output_norm` and `output` (tied to the embedding when absent), with
    /// its optional bias.
    pub fn load(w: &WeightLoader, hp: &HParams) -> Result<Self> {
        let (e, v) = (hp.n_embd, hp.n_vocab);
        let tok_embd = w.get("token_embd.weight", &[e, v])?;
        let output = if w.has("output.weight") {
            w.get("output.weight", &[e, v])?
        } else {
            tok_embd.clone()
        };
        let output_bias = w
            .has("output.bias")
            .then(|| w.norm("output.bias", v))
            .transpose()?;
        Ok(Embeddings {
            tok_embd,
            output_norm: w.norm("output_norm.weight", e)?,
            output,
            output_bias,
        })
    }

    /// The step's token embeddings.
    pub fn embed(&self, g: &mut GraphBuilder) -> NodeId {
        g.get_rows(&self.tok_embd)
    }

    /// Logits of the rows `out` selects: final norm and output projection.
    pub fn logits(
        &self,
        g: &mut GraphBuilder,
        hp: &HParams,
        x: NodeId,
        out: tessera_engine::graph::OutputRows,
    ) -> NodeId {
        self.logits_scaled(g, hp, x, out, 1.0)
    }

    /// [`Self::logits`] with the final norm's output multiplied by `scale` first (MiniCPM3's
    /// `n_embd_base / n_embd`); 1 records no scale.
    pub fn logits_scaled(
        &self,
        g: &mut GraphBuilder,
        hp: &HParams,
        x: NodeId,
        out: tessera_engine::graph::OutputRows,
        scale: f32,
    ) -> NodeId {
        g.set_layer(None);
        let x = g.output_rows(x, out);
        let mut x = g.rms_norm(x, Some(&self.output_norm), hp.rms_eps);
        if scale != 1.0 {
            x = g.scale(x, scale);
        }
        let logits = g.mat_mul(&self.output, x);
        match &self.output_bias {
            Some(b) => g.add_bias(logits, b),
            None => logits,
        }
    }
}
