//! Hyper-parameters read from GGUF `{arch}.*` keys: sizes, norms, RoPE and its scaling, and
//! which layers attend through a sliding window. Also the KV-cache size they imply.

use tessera_engine::gguf::{MetaArray, MetaValue, Metadata};

use crate::arch::{self, ArchSpec};
use crate::error::{ModelError, Result};
use crate::moe::Experts;

/// How RoPE pairs up dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (2i, 2i+1): ggml's "normal" mode, used by llama GGUFs.
    Normal,
    /// Halves (i, i + n_dims/2): ggml's NeoX mode, used by Gemma.
    Neox,
}

/// RoPE frequency scaling method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeScalingType {
    /// No scaling.
    None,
    /// Positions divided by the factor.
    Linear,
    /// YaRN: interpolation blended with extrapolation per dimension, plus attention scaling.
    Yarn,
}

impl RopeScalingType {
    /// Parse `none`, `linear` or `yarn`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "linear" => Some(Self::Linear),
            "yarn" => Some(Self::Yarn),
            _ => None,
        }
    }
}

/// RoPE scaling parameters, as ggml's rope op takes them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeScaling {
    /// Method.
    pub kind: RopeScalingType,
    /// Context extension factor (freq_scale = 1/factor); 1 for none.
    pub factor: f32,
    /// Context length the model was trained with before extension.
    pub orig_ctx: u32,
    /// YaRN extrapolation mix (1 for yarn, 0 otherwise by default).
    pub ext_factor: f32,
    /// Attention magnitude factor.
    pub attn_factor: f32,
    /// YaRN high-frequency boundary, in rotations.
    pub beta_fast: f32,
    /// YaRN low-frequency boundary, in rotations.
    pub beta_slow: f32,
}

impl RopeScaling {
    /// No scaling.
    pub fn none(orig_ctx: u32) -> Self {
        RopeScaling {
            kind: RopeScalingType::None,
            factor: 1.0,
            orig_ctx,
            ext_factor: 0.0,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
        }
    }

    /// ggml's `freq_scale` (1/factor).
    pub fn freq_scale(&self) -> f32 {
        if self.kind == RopeScalingType::None {
            1.0
        } else {
            1.0 / self.factor
        }
    }

    /// Whether every parameter is usable: finite, in range, YaRN's boundaries in order. On
    /// failure, the offending field (`factor`, `ext_factor`, `attn_factor`, `beta_fast`,
    /// `beta_slow`) and why; callers name it as their input does (a metadata key, a flag).
    /// Values that fail here gave NaN logits reported as a normal end of generation.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        let f = self.factor;
        if !(f.is_normal() && f > 0.0 && (1.0 / f).is_normal()) {
            return Err(("factor", format!("{f} must be > 0 with a finite inverse")));
        }
        if !(self.ext_factor.is_finite() && self.ext_factor >= 0.0) {
            return Err((
                "ext_factor",
                format!("{} must be finite and >= 0", self.ext_factor),
            ));
        }
        if !(self.attn_factor.is_finite() && self.attn_factor > 0.0) {
            return Err((
                "attn_factor",
                format!("{} must be finite and > 0", self.attn_factor),
            ));
        }
        for (name, b) in [("beta_fast", self.beta_fast), ("beta_slow", self.beta_slow)] {
            if !(b.is_finite() && b > 0.0) {
                return Err((name, format!("{b} must be finite and > 0")));
            }
        }
        if self.beta_fast < self.beta_slow {
            return Err((
                "beta_fast",
                format!(
                    "{} is below beta_slow {}: YaRN's high-frequency boundary must be at least \
                     its low-frequency one",
                    self.beta_fast, self.beta_slow
                ),
            ));
        }
        Ok(())
    }
}

/// User overrides of RoPE settings (CLI flags, Session and C ABI parameters), `None` = from file.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RopeOverrides {
    /// `--rope-scaling`.
    pub kind: Option<RopeScalingType>,
    /// `--rope-scale`.
    pub factor: Option<f32>,
    /// `--rope-freq-base`.
    pub freq_base: Option<f32>,
    /// `--yarn-orig-ctx`.
    pub orig_ctx: Option<u32>,
    /// `--yarn-ext-factor` (negative = default).
    pub ext_factor: Option<f32>,
    /// `--yarn-attn-factor`.
    pub attn_factor: Option<f32>,
    /// `--yarn-beta-fast`.
    pub beta_fast: Option<f32>,
    /// `--yarn-beta-slow`.
    pub beta_slow: Option<f32>,
}

/// What one layer's attention looks like.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerAttention {
    /// Sliding window in tokens, `None` for global attention.
    pub window: Option<u32>,
    /// RoPE frequency base of this layer.
    pub rope_base: f32,
    /// RoPE frequency scale (1/factor) of this layer.
    pub rope_freq_scale: f32,
}

/// All hyper-parameters of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct HParams {
    /// Architecture.
    pub arch: &'static ArchSpec,
    /// Vocabulary size (rows of the embedding).
    pub n_vocab: usize,
    /// Context length used in training.
    pub n_ctx_train: u32,
    /// Embedding width.
    pub n_embd: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (GQA/MQA when fewer than query heads).
    pub n_head_kv: usize,
    /// Width of one key (and query) head.
    pub head_dim: usize,
    /// Width of one value head.
    pub head_dim_v: usize,
    /// Feed-forward hidden width.
    pub n_ff: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base of global layers.
    pub rope_base: f32,
    /// RoPE base of sliding-window layers.
    pub rope_base_swa: f32,
    /// Rotated dimensions per head.
    pub rope_dims: usize,
    /// Pairing of rotated dimensions.
    pub rope_style: RopeStyle,
    /// Frequency scaling.
    pub rope_scaling: RopeScaling,
    /// Sliding window of local layers, if any.
    pub sliding_window: Option<u32>,
    /// `true` for layers that attend through the sliding window.
    pub layer_is_local: Vec<bool>,
    /// Attention logit soft-capping (`softcap·tanh(s/softcap)` on q·k), set by architectures
    /// that use it (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// Final logit soft-capping, set by architectures that use it (Gemma 2, Gemma 3 when the
    /// file says so).
    pub final_softcap: Option<f32>,
    /// Mixture-of-experts settings, when the file has experts.
    pub experts: Option<Experts>,
    /// The KV cache stores keys only, and each value is the first `head_dim_v` elements of
    /// its key head (MLA's latent cache, set by `deepseek2`).
    pub values_in_keys: bool,
    /// MLA: the per-head key and value widths the latent decompresses to — the multi-head
    /// attention the cache stands in for (set by `deepseek2`).
    pub mla_head_dims: Option<(usize, usize)>,
}

/// Largest sizes we accept, far above any real model, so absurd files are refused early.
const MAX_LAYERS: u32 = 1024;
const MAX_WIDTH: u32 = 1 << 20;
const MAX_HEADS: u32 = 4096;

fn invalid(key: &str, why: impl Into<String>) -> ModelError {
    ModelError::InvalidHParam {
        key: key.into(),
        why: why.into(),
    }
}

fn bounded(meta: &Metadata, key: &str, min: u32, max: u32) -> Result<u32> {
    let v = meta.u32(key)?;
    if v < min || v > max {
        return Err(invalid(key, format!("{v} is outside [{min}, {max}]")));
    }
    Ok(v)
}

impl HParams {
    /// The hyper-parameters as the architecture's loader runs them, without loading: those of
    /// the file ([`HParams::from_gguf`]), pointed at the latent-only cache where the
    /// architecture runs multi-head latent attention on files that describe decompressed heads
    /// ([`crate::arch::ArchSpec::latent_cache`]: MiniCPM3, PLM). `tessera info` shows these.
    pub fn as_run(meta: &Metadata) -> Result<HParams> {
        let mut hp = HParams::from_gguf(meta)?;
        if let Some(dims) = hp.arch.latent_cache {
            dims(meta, &hp)?.use_latent_cache(&mut hp);
            hp.experts = None;
        }
        Ok(hp)
    }

    /// Read the hyper-parameters of the architecture named in `general.architecture`.
    pub fn from_gguf(meta: &Metadata) -> Result<HParams> {
        let arch_name = meta.str("general.architecture")?;
        let arch =
            arch::find(arch_name).ok_or_else(|| ModelError::UnsupportedArch(arch_name.into()))?;
        let defaults = arch.defaults;
        let k = |s: &str| format!("{arch_name}.{s}");
        let n_layer = bounded(meta, &k("block_count"), 1, MAX_LAYERS)? as usize;
        let n_embd = bounded(meta, &k("embedding_length"), 1, MAX_WIDTH)? as usize;
        let n_ff = bounded(meta, &k("feed_forward_length"), 1, MAX_WIDTH)? as usize;
        let n_head = bounded(meta, &k("attention.head_count"), 1, MAX_HEADS)? as usize;
        let n_head_kv = match meta.opt_u32(&k("attention.head_count_kv"))? {
            Some(_) => bounded(meta, &k("attention.head_count_kv"), 1, MAX_HEADS)? as usize,
            None => n_head,
        };
        if !n_head.is_multiple_of(n_head_kv) {
            return Err(invalid(
                &k("attention.head_count_kv"),
                format!("{n_head_kv} does not divide head_count {n_head}"),
            ));
        }
        let head_dim = match meta.opt_u32(&k("attention.key_length"))? {
            Some(_) => bounded(meta, &k("attention.key_length"), 1, MAX_WIDTH)? as usize,
            None => {
                if !n_embd.is_multiple_of(n_head) {
                    return Err(invalid(
                        &k("attention.head_count"),
                        format!("{n_head} does not divide embedding_length {n_embd}"),
                    ));
                }
                n_embd / n_head
            }
        };
        let head_dim_v = match meta.opt_u32(&k("attention.value_length"))? {
            Some(_) => bounded(meta, &k("attention.value_length"), 1, MAX_WIDTH)? as usize,
            None => head_dim,
        };
        let n_ctx_train = bounded(meta, &k("context_length"), 1, 1 << 24)?;
        let rms_eps = meta.f32(&k("attention.layer_norm_rms_epsilon"))?;
        if !(rms_eps > 0.0 && rms_eps < 1.0) {
            return Err(invalid(
                &k("attention.layer_norm_rms_epsilon"),
                format!("{rms_eps}"),
            ));
        }
        let default_base = 10_000.0;
        let rope_base = meta.opt_f32(&k("rope.freq_base"))?.unwrap_or(default_base);
        let rope_base_swa = meta
            .opt_f32(&k("rope.freq_base_swa"))?
            .unwrap_or(defaults.rope_base_swa.unwrap_or(rope_base));
        for (key, v) in [
            ("rope.freq_base", rope_base),
            ("rope.freq_base_swa", rope_base_swa),
        ] {
            if !(v.is_finite() && v > 1.0) {
                return Err(invalid(&k(key), format!("{v} is not a usable RoPE base")));
            }
        }
        let rope_dims = match meta.opt_u32(&k("rope.dimension_count"))? {
            Some(d) => d as usize,
            None => head_dim,
        };
        if rope_dims == 0 || rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(invalid(
                &k("rope.dimension_count"),
                format!("{rope_dims} must be even and at most the head width {head_dim}"),
            ));
        }
        let rope_style = defaults.rope_style;
        let rope_scaling = read_rope_scaling(meta, arch_name, n_ctx_train)?;

        let sliding_window = meta
            .opt_u32(&k("attention.sliding_window"))?
            .or(defaults.window);
        if sliding_window == Some(0) {
            return Err(invalid(&k("attention.sliding_window"), "0"));
        }
        let layer_is_local = match sliding_window {
            None => vec![false; n_layer],
            Some(_) => layer_pattern(
                meta,
                &k("attention.sliding_window_pattern"),
                defaults.swa_period,
                n_layer,
            )?,
        };
        // Multi-head latent attention: keys and values decompress to these per-head widths,
        // and the cache holds the latent only (values are read from the keys).
        let mla_head_dims = match (
            meta.opt_u32(&k("attention.key_length_mla"))?,
            meta.opt_u32(&k("attention.value_length_mla"))?,
        ) {
            (Some(kl), Some(vl)) if kl > 0 && vl > 0 => {
                if head_dim_v > head_dim {
                    return Err(invalid(
                        &k("attention.value_length"),
                        format!(
                            "{head_dim_v}: an MLA latent's values are part of its {head_dim} keys"
                        ),
                    ));
                }
                Some((kl as usize, vl as usize))
            }
            _ => None,
        };
        let n_vocab = match meta.opt_u32(&k("vocab_size"))? {
            Some(v) => v as usize,
            None => meta
                .str_array("tokenizer.ggml.tokens")
                .map(|t| t.len())
                .unwrap_or(0),
        };
        Ok(HParams {
            arch,
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_ff,
            rms_eps,
            rope_base,
            rope_base_swa,
            rope_dims,
            rope_style,
            rope_scaling,
            sliding_window,
            layer_is_local,
            attn_softcap: None,
            final_softcap: None,
            experts: Experts::read(
                meta,
                arch_name,
                n_ff,
                defaults.expert_norm,
                defaults.expert_gating,
            )?,
            values_in_keys: mla_head_dims.is_some(),
            mla_head_dims,
        })
    }

    /// Apply user overrides of the RoPE settings.
    pub fn apply_rope_overrides(&mut self, o: &RopeOverrides) -> Result<()> {
        let s = &mut self.rope_scaling;
        if let Some(kind) = o.kind {
            s.kind = kind;
            s.ext_factor = if kind == RopeScalingType::Yarn {
                1.0
            } else {
                0.0
            };
        }
        if let Some(f) = o.factor {
            if !(f.is_finite() && f > 0.0) {
                return Err(ModelError::InvalidInput(format!(
                    "--rope-scale {f} must be > 0"
                )));
            }
            s.factor = f;
            if o.kind.is_none() && s.kind == RopeScalingType::None && f != 1.0 {
                s.kind = RopeScalingType::Linear;
            }
        }
        if let Some(b) = o.freq_base {
            if !(b.is_finite() && b > 1.0) {
                return Err(ModelError::InvalidInput(format!(
                    "--rope-freq-base {b} must be > 1"
                )));
            }
            self.rope_base = b;
            if self.arch.defaults.rope_base_swa.is_none() {
                self.rope_base_swa = b;
            }
        }
        if let Some(n) = o.orig_ctx {
            if n == 0 {
                return Err(ModelError::InvalidInput(
                    "--yarn-orig-ctx must be > 0".into(),
                ));
            }
            s.orig_ctx = n;
        }
        if let Some(e) = o.ext_factor.filter(|e| *e >= 0.0) {
            s.ext_factor = e;
        }
        if let Some(a) = o.attn_factor {
            s.attn_factor = a;
        }
        if let Some(b) = o.beta_fast {
            s.beta_fast = b;
        }
        if let Some(b) = o.beta_slow {
            s.beta_slow = b;
        }
        s.check().map_err(|(field, why)| {
            let flag = match field {
                "factor" => "--rope-scale",
                "ext_factor" => "--yarn-ext-factor",
                "attn_factor" => "--yarn-attn-factor",
                "beta_fast" => "--yarn-beta-fast",
                _ => "--yarn-beta-slow",
            };
            ModelError::InvalidInput(format!("{flag}: {why}"))
        })
    }

    /// Attention shape of layer `il`: its window and RoPE base and scale.
    pub fn layer_attention(&self, il: usize) -> LayerAttention {
        let scaled = self.rope_scaling.freq_scale();
        if self.layer_is_local[il] {
            LayerAttention {
                window: self.sliding_window,
                rope_base: self.rope_base_swa,
                rope_freq_scale: if self.arch.defaults.swa_rope_scaled {
                    scaled
                } else {
                    1.0
                },
            }
        } else {
            LayerAttention {
                window: None,
                rope_base: self.rope_base,
                rope_freq_scale: scaled,
            }
        }
    }

    /// Read an optional soft-capping value `key` (`{arch}.` prefixed), `default` when absent;
    /// 0 means none, as in llama.cpp.
    pub fn read_softcap(
        meta: &Metadata,
        arch: &str,
        key: &str,
        default: f32,
    ) -> Result<Option<f32>> {
        let key = format!("{arch}.{key}");
        let v = meta.opt_f32(&key)?.unwrap_or(default);
        if v == 0.0 {
            return Ok(None);
        }
        if !(v.is_finite() && v > 0.0) {
            return Err(invalid(
                &key,
                format!("{v} must be finite and > 0 (or 0 for none)"),
            ));
        }
        Ok(Some(v))
    }

    /// KV cells layer `il` keeps for a context of `n_ctx` tokens: `n_ctx`, or for a local
    /// layer a ring of its window plus `rollback` cells (room to cut a sequence back that far,
    /// as llama.cpp's SWA cache keeps `n_swa + n_ubatch`; contexts use `n_batch`) where that
    /// is fewer.
    pub fn kv_cells(&self, il: usize, n_ctx: usize, rollback: usize) -> usize {
        match self.layer_attention(il).window {
            Some(w) => n_ctx.min((w as usize).saturating_add(rollback)),
            None => n_ctx,
        }
    }

    /// Bytes of K and V one cell of layer `il` holds with `elem_bytes` per element (2 for F16),
    /// with `n_kv_heads` heads (pass `n_head` for the multi-head equivalent).
    pub fn kv_cell_bytes(&self, n_kv_heads: usize, elem_bytes: usize) -> usize {
        n_kv_heads * (self.head_dim + self.kv_value_width()) * elem_bytes
    }

    /// Bytes one cell of a layer would take with `n_kv_heads` heads of the model's per-head
    /// key and value widths (the decompressed ones under MLA), `elem_bytes` per element: the
    /// multi-head (`n_head`) or grouped-query equivalents of the cache.
    pub fn kv_cell_bytes_equivalent(&self, n_kv_heads: usize, elem_bytes: usize) -> usize {
        let (k, v) = self
            .mla_head_dims
            .unwrap_or((self.head_dim, self.head_dim_v));
        n_kv_heads * (k + v) * elem_bytes
    }

    /// Value elements a KV head stores per cell: `head_dim_v`, or none when values are read
    /// from the keys.
    pub fn kv_value_width(&self) -> usize {
        if self.values_in_keys {
            0
        } else {
            self.head_dim_v
        }
    }

    /// Bytes of the whole KV cache for `n_ctx` tokens (F16), per layer, rings with `rollback`
    /// cells beyond their window ([`Self::kv_cells`]).
    pub fn kv_bytes_per_layer(&self, n_ctx: usize, rollback: usize) -> Vec<usize> {
        (0..self.n_layer)
            .map(|il| self.kv_cells(il, n_ctx, rollback) * self.kv_cell_bytes(self.n_head_kv, 2))
            .collect()
    }
}

fn read_rope_scaling(meta: &Metadata, arch: &str, n_ctx_train: u32) -> Result<RopeScaling> {
    let k = |s: &str| format!("{arch}.rope.scaling.{s}");
    let mut s = RopeScaling::none(n_ctx_train);
    if let Some(t) = meta.opt_str(&k("type"))? {
        s.kind = RopeScalingType::parse(t)
            .ok_or_else(|| invalid(&k("type"), format!("{t:?} is not none, linear or yarn")))?;
    }
    if let Some(f) = meta.opt_f32(&k("factor"))? {
        if !(f.is_finite() && f > 0.0) {
            return Err(invalid(&k("factor"), format!("{f}")));
        }
        s.factor = f;
    } else if let Some(f) = meta.opt_f32(&format!("{arch}.rope.scale_linear"))? {
        s.kind = RopeScalingType::Linear;
        s.factor = f;
    }
    if s.kind == RopeScalingType::None {
        s.factor = 1.0;
    }
    if let Some(n) = meta.opt_u32(&k("original_context_length"))? {
        s.orig_ctx = n.max(1);
    }
    s.ext_factor = if s.kind == RopeScalingType::Yarn {
        1.0
    } else {
        0.0
    };
    if let Some(e) = meta.opt_f32(&k("yarn_ext_factor"))? {
        s.ext_factor = e;
    }
    if let Some(a) = meta.opt_f32(&k("attn_factor"))? {
        s.attn_factor = a;
    }
    if let Some(b) = meta.opt_f32(&k("yarn_beta_fast"))? {
        s.beta_fast = b;
    }
    if let Some(b) = meta.opt_f32(&k("yarn_beta_slow"))? {
        s.beta_slow = b;
    }
    if let Some(m) = meta.opt_f32(&k("yarn_log_multiplier"))?
        && m != 0.0
        && s.kind == RopeScalingType::Yarn
    {
        // DeepSeek-style files store 0.1·multiplier·ln(factor)+1 as the magnitude scale.
        s.attn_factor *= 1.0 + 0.1 * m * s.factor.ln();
    }
    s.check().map_err(|(field, why)| {
        let key = match field {
            "factor" if meta.get(&k("factor")).is_none() => format!("{arch}.rope.scale_linear"),
            "factor" => k("factor"),
            "ext_factor" => k("yarn_ext_factor"),
            "attn_factor" if meta.get(&k("attn_factor")).is_none() => k("yarn_log_multiplier"),
            "attn_factor" => k("attn_factor"),
            "beta_fast" => k("yarn_beta_fast"),
            _ => k("yarn_beta_slow"),
        };
        invalid(&key, why)
    })?;
    Ok(s)
}

/// Which layers are local. A pattern key may hold a period `p` (layer il is global when
/// `il % p == p - 1`) or one bool per layer; without it the architecture's default period
/// applies (Gemma 3: 6, Gemma 2: 2), or, without one, every layer slides.
fn layer_pattern(
    meta: &Metadata,
    key: &str,
    default_period: Option<usize>,
    n_layer: usize,
) -> Result<Vec<bool>> {
    let period = |p: usize| (0..n_layer).map(|il| il % p < p - 1).collect::<Vec<bool>>();
    match meta.get(key) {
        None => Ok(match default_period {
            Some(p) => period(p),
            None => vec![true; n_layer],
        }),
        Some(MetaValue::Array(MetaArray::Bool(v))) if v.len() == n_layer => Ok(v.clone()),
        Some(v) => match v.as_int() {
            Some(p) if p >= 1 && p <= n_layer as i128 => Ok(period(p as usize)),
            _ => Err(invalid(
                key,
                format!("{v} is neither a period nor {n_layer} bools"),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_engine::GgufFile;
    use tessera_model_files::{GEMMA3, SMOLLM2, model_file};

    /// The real model `file`, opened; `None` (skip) only when it is missing and
    /// `TESSERA_ALLOW_MISSING_MODELS=1`, else a missing or unreadable file fails the test.
    fn model(file: &str) -> Option<GgufFile> {
        let path = model_file(file)?;
        Some(GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    #[test]
    fn smollm2() {
        let Some(f) = model(SMOLLM2) else {
            return;
        };
        let h = HParams::from_gguf(f.metadata()).unwrap();
        assert_eq!(
            (h.n_layer, h.n_head, h.n_head_kv, h.head_dim),
            (30, 9, 3, 64)
        );
        assert_eq!(h.rope_style, RopeStyle::Normal);
        assert!(h.layer_is_local.iter().all(|l| !l));
        assert_eq!(h.kv_cells(0, 4096, 512), 4096);
    }

    #[test]
    fn gemma3_pattern_and_kv_growth() {
        let Some(f) = model(GEMMA3) else {
            return;
        };
        let h = HParams::from_gguf(f.metadata()).unwrap();
        assert_eq!(
            (h.n_layer, h.n_head, h.n_head_kv, h.head_dim),
            (18, 4, 1, 256)
        );
        let globals: Vec<usize> = (0..18).filter(|&i| !h.layer_is_local[i]).collect();
        assert_eq!(globals, [5, 11, 17]);
        assert_eq!(h.layer_attention(0).rope_base, 10_000.0);
        assert_eq!(h.layer_attention(5).rope_base, 1_000_000.0);
        // Rings of the window alone, then with a batch of 512 to roll back.
        let ratio = |rollback| {
            let small: usize = h.kv_bytes_per_layer(4096, rollback).iter().sum();
            let big: usize = h.kv_bytes_per_layer(32768, rollback).iter().sum();
            big as f64 / small as f64
        };
        assert!((ratio(0) - 5.3).abs() < 0.1, "{}", ratio(0));
        assert!((ratio(512) - 4.1).abs() < 0.1, "{}", ratio(512));
        assert_eq!(h.kv_cells(0, 4096, 512), 1024);
        assert_eq!(h.kv_cells(0, 800, 512), 800);
        assert_eq!(h.kv_cells(5, 4096, 512), 4096);
    }

    #[test]
    fn overrides() {
        let Some(f) = model(SMOLLM2) else {
            return;
        };
        let mut h = HParams::from_gguf(f.metadata()).unwrap();
        h.apply_rope_overrides(&RopeOverrides {
            kind: Some(RopeScalingType::Yarn),
            factor: Some(4.0),
            orig_ctx: Some(256),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(h.rope_scaling.kind, RopeScalingType::Yarn);
        assert_eq!(h.rope_scaling.ext_factor, 1.0);
        assert_eq!(h.rope_scaling.freq_scale(), 0.25);
        assert!(
            h.apply_rope_overrides(&RopeOverrides {
                factor: Some(-1.0),
                ..Default::default()
            })
            .is_err()
        );
    }
}
