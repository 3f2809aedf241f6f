//! Flag groups shared by the commands that run a model (`run`, `perplexity`, `chat`, `bench`),
//! spelled as llama.cpp spells them, their translation into a [`SessionParams`], and the
//! session they open (the model argument resolved through the registry first).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use tessera_engine::cpu::pool::MAX_THREADS;
use tessera_models::constraint::Grammar;
use tessera_models::hparams::{RopeOverrides, RopeScalingType};
use tessera_models::sampler::SamplerParams;
use tessera_models::{ContextParams, Device, Footprint, Model, Session, SessionParams};

use crate::CliResult;

/// Which model, how much context, how many threads.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a GGUF path or a registry name (`smollm2-135m`, `gemma3-270m`), pulled on first use.
    #[arg(short = 'm', long = "model")]
    pub model: String,
    /// Context size in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: i64,
    /// Largest batch of prompt tokens evaluated at once.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: i64,
    /// Threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<i64>,
    /// Full KV caches for sliding-window layers instead of ring buffers (for comparisons).
    #[arg(long = "no-kv-ring")]
    pub no_kv_ring: bool,
    /// Compute device: cpu or gpu (default: $TESSERA_DEVICE, else cpu).
    #[arg(long = "device", value_parser = ["cpu", "gpu"])]
    pub device: Option<String>,
    /// Which GPU with --device gpu (`tessera info --devices` lists them; 0 = the best).
    #[arg(long = "gpu-index", alias = "main-gpu")]
    pub gpu_index: Option<usize>,
    #[command(flatten)]
    /// How the model file is loaded.
    pub load: LoadArgs,
    #[command(flatten)]
    /// RoPE overrides.
    pub rope: RopeArgs,
}

/// How the model file is loaded.
#[derive(Args, Debug, Clone, Default)]
pub struct LoadArgs {
    /// Read the model file into memory instead of mapping it. A mapped file (the default) is
    /// shared with the page cache and loads at once, but if the file is truncated or
    /// rewritten while it is in use the process dies with SIGBUS (as llama.cpp does);
    /// --no-mmap costs the file's size in memory and the time to read it, and is immune.
    #[arg(long = "no-mmap")]
    pub no_mmap: bool,
}

impl LoadArgs {
    /// Load the model at `path` (mapped unless `--no-mmap`), applying `rope`.
    pub fn load(&self, path: &std::path::Path, rope: &RopeOverrides) -> CliResult<Model> {
        Ok(Model::load_with(path, rope, !self.no_mmap)?)
    }
}

/// RoPE frequency scaling overrides (defaults come from the GGUF file).
#[derive(Args, Debug, Clone, Default)]
pub struct RopeArgs {
    /// RoPE frequency scaling method: none, linear or yarn.
    #[arg(long = "rope-scaling", value_parser = ["none", "linear", "yarn"])]
    pub rope_scaling: Option<String>,
    /// RoPE context scaling factor (extends the context by this factor).
    #[arg(long = "rope-scale")]
    pub rope_scale: Option<f32>,
    /// RoPE base frequency.
    #[arg(long = "rope-freq-base")]
    pub rope_freq_base: Option<f32>,
    /// YaRN: the model's original context size.
    #[arg(long = "yarn-orig-ctx")]
    pub yarn_orig_ctx: Option<u32>,
    /// YaRN: extrapolation mix factor (negative = default: 1 for yarn).
    #[arg(long = "yarn-ext-factor", allow_negative_numbers = true)]
    pub yarn_ext_factor: Option<f32>,
    /// YaRN: attention magnitude factor.
    #[arg(long = "yarn-attn-factor")]
    pub yarn_attn_factor: Option<f32>,
    /// YaRN: high correction dimension (in rotations).
    #[arg(long = "yarn-beta-fast")]
    pub yarn_beta_fast: Option<f32>,
    /// YaRN: low correction dimension (in rotations).
    #[arg(long = "yarn-beta-slow")]
    pub yarn_beta_slow: Option<f32>,
}

/// Sampling flags.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature (0 = greedy).
    #[arg(long = "temp", default_value_t = 0.8, allow_negative_numbers = true)]
    pub temp: f32,
    /// Top-k (0 = off).
    #[arg(long = "top-k", default_value_t = 40, allow_negative_numbers = true)]
    pub top_k: i32,
    /// Top-p nucleus (1 = off).
    #[arg(long = "top-p", default_value_t = 0.95, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Min-p (0 = off).
    #[arg(long = "min-p", default_value_t = 0.05, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(
        long = "repeat-penalty",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub repeat_penalty: f32,
    /// Tokens considered by the penalties (-1 = all).
    #[arg(
        long = "repeat-last-n",
        default_value_t = 64,
        allow_negative_numbers = true
    )]
    pub repeat_last_n: i32,
    /// Presence penalty (0 = off).
    #[arg(
        long = "presence-penalty",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub presence_penalty: f32,
    /// Frequency penalty (0 = off).
    #[arg(
        long = "frequency-penalty",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub frequency_penalty: f32,
    /// RNG seed (-1 = random).
    #[arg(short = 's', long = "seed", default_value_t = -1, allow_negative_numbers = true)]
    pub seed: i64,
}

/// Structured output: the text generated must match a grammar (see
/// `tessera_models::constraint`). At most one of the flags.
#[derive(Args, Debug, Clone, Default)]
#[group(multiple = false)]
pub struct GrammarArgs {
    /// A grammar: llama.cpp's GBNF (`root ::= ...`) or a Lark grammar (`start: ...`).
    #[arg(long = "grammar")]
    pub grammar: Option<String>,
    /// Read the grammar (GBNF or Lark) from this file.
    #[arg(long = "grammar-file")]
    pub grammar_file: Option<PathBuf>,
    /// A JSON Schema the output must be valid under: the schema itself (text starting with
    /// `{`), or a file holding it.
    #[arg(short = 'j', long = "json-schema")]
    pub json_schema: Option<String>,
    /// A regular expression the whole output must match.
    #[arg(long = "regex")]
    pub regex: Option<String>,
}

impl GrammarArgs {
    /// The grammar the flags ask for, if any (files read, JSON parsed).
    pub fn grammar(&self) -> Result<Option<Grammar>, String> {
        if let Some(g) = &self.grammar {
            return Ok(Some(Grammar::from_grammar_text(g)));
        }
        if let Some(path) = &self.grammar_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--grammar-file {}: {e}", path.display()))?;
            return Ok(Some(Grammar::from_grammar_text(&text)));
        }
        if let Some(s) = &self.json_schema {
            let text = if s.trim_start().starts_with('{') {
                s.clone()
            } else {
                std::fs::read_to_string(s).map_err(|e| format!("--json-schema {s}: {e}"))?
            };
            return Grammar::json_schema_from_str(&text)
                .map(Some)
                .map_err(|e| format!("--json-schema: {e}"));
        }
        Ok(self.regex.clone().map(Grammar::Regex))
    }
}

impl ModelArgs {
    /// Validate the numbers and build session parameters (sampling left at its defaults).
    pub fn session_params(&self) -> Result<SessionParams, String> {
        if self.ctx_size <= 0 {
            return Err(format!(
                "-c/--ctx-size {} must be at least 1",
                self.ctx_size
            ));
        }
        if self.batch_size <= 0 {
            return Err(format!(
                "-b/--batch-size {} must be at least 1",
                self.batch_size
            ));
        }
        let n_threads = match self.threads {
            None => 0,
            Some(t) if (1..=MAX_THREADS as i64).contains(&t) => t as usize,
            Some(t) => {
                return Err(format!(
                    "-t/--threads {t} must be between 1 and {MAX_THREADS}"
                ));
            }
        };
        Ok(SessionParams {
            context: ContextParams {
                n_ctx: self.ctx_size as usize,
                n_batch: self.batch_size as usize,
                n_threads,
                kv_ring: !self.no_kv_ring,
                device: self.device()?,
                n_seq: 1,
                kv_pool: 0,
            },
            rope: self.rope.overrides(),
            sampler: SamplerParams::default(),
        })
    }
}

impl ModelArgs {
    /// Open a session on `-m`: a GGUF path, or a registry name resolved to its file (pulled
    /// on first use, as `tessera pull` does) before the library loads it.
    pub fn open_session(&self, params: &SessionParams) -> CliResult<Session> {
        self.open_session_with_rows(params, 1)
    }

    /// [`Self::open_session`] for a caller that keeps up to `output_rows` rows of logits at
    /// once (perplexity: a batch's): the context's whole footprint with that many rows is
    /// checked against the memory limits before the context is created.
    pub fn open_session_with_rows(
        &self,
        params: &SessionParams,
        output_rows: usize,
    ) -> CliResult<Session> {
        let path = tessera_registry::resolve_model(&self.model)?;
        let model = Arc::new(self.load.load(&path, &params.rope)?);
        Footprint::new(&model, &params.context, output_rows)
            .check_now()
            .map_err(|e| e.to_string())?;
        let session = Session::new(model, params)?;
        let hp = session.model().hparams();
        let n_ctx = params.context.n_ctx;
        if n_ctx > hp.n_ctx_train as usize && hp.rope_scaling.kind == RopeScalingType::None {
            eprintln!(
                "warning: -c {n_ctx} is more than the {} tokens the model was trained on, \
                 without RoPE scaling: expect worse output past {} tokens \
                 (--rope-scaling yarn extends the context)",
                hp.n_ctx_train, hp.n_ctx_train
            );
        }
        Ok(session)
    }

    /// The device `--device`/`--gpu-index` ask for, else `TESSERA_DEVICE`, else the CPU.
    pub fn device(&self) -> Result<Device, String> {
        let from_env = Device::from_env().map_err(|e| format!("TESSERA_DEVICE: {e}"))?;
        let device = match self.device.as_deref() {
            Some("cpu") => Device::Cpu,
            Some(_) => Device::Gpu(self.gpu_index.unwrap_or(0)),
            None => match (from_env, self.gpu_index) {
                (Some(Device::Gpu(_)), Some(i)) => Device::Gpu(i),
                (Some(d), _) => d,
                (None, Some(i)) => Device::Gpu(i),
                (None, None) => Device::Cpu,
            },
        };
        if device == Device::Cpu && self.gpu_index.is_some() {
            return Err("--gpu-index needs --device gpu".into());
        }
        Ok(device)
    }
}

impl RopeArgs {
    /// The overrides these flags ask for.
    pub fn overrides(&self) -> RopeOverrides {
        RopeOverrides {
            kind: self
                .rope_scaling
                .as_deref()
                .and_then(RopeScalingType::parse),
            factor: self.rope_scale,
            freq_base: self.rope_freq_base,
            orig_ctx: self.yarn_orig_ctx,
            ext_factor: self.yarn_ext_factor,
            attn_factor: self.yarn_attn_factor,
            beta_fast: self.yarn_beta_fast,
            beta_slow: self.yarn_beta_slow,
        }
    }
}

impl SamplingArgs {
    /// The sampler settings (validated by the session).
    pub fn params(&self) -> SamplerParams {
        SamplerParams {
            temp: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            penalty_last_n: self.repeat_last_n,
            seed: if self.seed < 0 {
                u64::MAX
            } else {
                self.seed as u64
            },
        }
    }
}
