//! The Session: the one object front ends (CLI, C ABI) talk to. It owns a model (shared), an
//! inference context and a sampler, and offers tokenize → evaluate → sample → generate.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::constraint::Constraint;
use crate::context::{Context, ContextParams};
use crate::error::{ModelError, Result};
use crate::hparams::RopeOverrides;
use crate::model::Model;
use crate::sampler::{Sampler, SamplerParams};
use crate::tokenizer::Tokenizer;

/// Everything a session is configured with.
#[derive(Clone, Debug, Default)]
pub struct SessionParams {
    /// Context, batch, threads, KV layout.
    pub context: ContextParams,
    /// RoPE overrides.
    pub rope: RopeOverrides,
    /// Sampling.
    pub sampler: SamplerParams,
}

/// Timings and counts of a [`Session::generate`] call.
#[derive(Clone, Copy, Debug, Default)]
pub struct GenerationStats {
    /// Prompt tokens evaluated.
    pub prompt_tokens: usize,
    /// Seconds spent on the prompt.
    pub prompt_seconds: f64,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Seconds spent generating.
    pub generation_seconds: f64,
    /// Whether generation ended at an end-of-generation token.
    pub hit_eog: bool,
}

impl GenerationStats {
    /// Prompt tokens per second.
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_seconds.max(1e-9)
    }

    /// Generated tokens per second.
    pub fn generation_tps(&self) -> f64 {
        self.generated_tokens as f64 / self.generation_seconds.max(1e-9)
    }
}

/// What the callback of [`Session::generate`] asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// Stop after this token.
    Stop,
}

/// A model with its running state.
pub struct Session {
    ctx: Context,
    sampler: Sampler,
    /// The grammar the next [`Self::generate`] output must match, if any.
    constraint: Option<Constraint>,
    /// Tokens in the KV cache, in order.
    tokens: Vec<u32>,
}

impl Session {
    /// Load the GGUF file at `path` and make a session. Only paths: a front end turns a
    /// registry name into a path first (the `tessera` command does, with `tessera-registry`).
    pub fn load(path: &Path, params: &SessionParams) -> Result<Session> {
        let model = Arc::new(Model::load(path, &params.rope)?);
        Self::new(model, params)
    }

    /// A session over an already loaded model (`params.rope` is ignored: the model has its
    /// RoPE settings).
    pub fn new(model: Arc<Model>, params: &SessionParams) -> Result<Session> {
        params
            .sampler
            .validate()
            .map_err(ModelError::InvalidInput)?;
        Ok(Session {
            ctx: Context::new(model, params.context)?,
            sampler: Sampler::new(params.sampler),
            constraint: None,
            tokens: Vec::new(),
        })
    }

    /// The model.
    pub fn model(&self) -> &Arc<Model> {
        self.ctx.model()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        self.ctx.model().tokenizer()
    }

    /// The inference context.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Tokenize as llama.cpp's tools do: BOS per the model's metadata when `add_special`,
    /// control tokens written in the text recognised when `parse_special`.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        self.tokenizer().encode(text, add_special, parse_special)
    }

    /// Tokens in the KV cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Number of tokens in the KV cache.
    pub fn n_past(&self) -> usize {
        self.ctx.n_past()
    }

    /// Context length.
    pub fn n_ctx(&self) -> usize {
        self.ctx.n_ctx()
    }

    /// KV cache bytes allocated.
    pub fn kv_bytes(&self) -> usize {
        self.ctx.kv_bytes()
    }

    /// KV cache bytes holding tokens.
    pub fn kv_used_bytes(&self) -> usize {
        self.ctx.kv_used_bytes()
    }

    /// Evaluate `tokens` after the cached ones; [`Self::logits`] then holds the last token's.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<()> {
        self.ctx.eval(tokens, false)?;
        self.tokens.extend_from_slice(tokens);
        Ok(())
    }

    /// Evaluate `tokens` keeping every token's logits ([`Self::logits_row`]).
    pub fn eval_all(&mut self, tokens: &[u32]) -> Result<()> {
        self.ctx.eval(tokens, true)?;
        self.tokens.extend_from_slice(tokens);
        Ok(())
    }

    /// Logits of the last evaluated token.
    pub fn logits(&self) -> &[f32] {
        self.ctx.logits()
    }

    /// Logits of row `i` of the last [`Self::eval_all`].
    pub fn logits_row(&self, i: usize) -> &[f32] {
        self.ctx.logits_row(i)
    }

    /// Sample the next token from the last logits (does not accept it, and ignores the
    /// constraint: see [`Self::sample_next`]).
    pub fn sample(&mut self) -> u32 {
        self.sampler.sample(self.ctx.logits())
    }

    /// Sample the next token from the last logits among those the constraint allows (if one
    /// is set), and accept it: the sampler's history and the constraint both take it.
    pub fn sample_next(&mut self) -> Result<u32> {
        let id = match self.constraint.as_mut() {
            Some(c) => {
                let id = self
                    .sampler
                    .sample_masked(self.ctx.logits(), Some(c.allowed()?));
                c.advance(id)?;
                id
            }
            None => self.sampler.sample(self.ctx.logits()),
        };
        self.sampler.accept(id);
        Ok(id)
    }

    /// Tell the sampler `token` was chosen (for penalties).
    pub fn accept(&mut self, token: u32) {
        self.sampler.accept(token);
    }

    /// Replace the sampling settings (tokens banned with [`Self::ban_tokens`] stay banned).
    pub fn set_sampler(&mut self, params: SamplerParams) -> Result<()> {
        params.validate().map_err(ModelError::InvalidInput)?;
        let banned = self.sampler.banned().to_vec();
        self.sampler = Sampler::new(params);
        self.sampler.ban(&banned);
        Ok(())
    }

    /// Never sample `ids` from now on (replaces an earlier list): with the tokenizer's
    /// end-of-generation ids, this is llama.cpp's `--ignore-eos`.
    pub fn ban_tokens(&mut self, ids: &[u32]) {
        self.sampler.ban(ids);
    }

    /// Constrain what [`Self::generate`] produces from now on to `constraint` (compiled with
    /// [`Model::compile_grammar`], at the start of its output), or lift the constraint. Each
    /// `generate` call continues the same constraint; set a fresh one (a clone of a compiled
    /// one) to start a new output, e.g. per chat turn.
    pub fn set_constraint(&mut self, constraint: Option<Constraint>) {
        self.constraint = constraint;
    }

    /// The constraint in force, if any.
    pub fn constraint(&self) -> Option<&Constraint> {
        self.constraint.as_ref()
    }

    /// The sampler.
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// Forget everything: KV cache, tokens and the sampler's history.
    pub fn reset(&mut self) {
        self.ctx.reset();
        self.tokens.clear();
        self.sampler.reset();
    }

    /// Keep only the first `n` cached tokens.
    pub fn truncate(&mut self, n: usize) {
        self.ctx.truncate(n);
        self.tokens.truncate(n.min(self.tokens.len()));
    }

    /// Evaluate `prompt` (after what is cached), then sample up to `n_predict` tokens, feeding
    /// each back, until an end-of-generation token or `on_token` says stop. `on_token` gets each
    /// token id and the text it completes (UTF-8 safe; may be empty).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        n_predict: usize,
        mut on_token: impl FnMut(u32, &str) -> Flow,
    ) -> Result<GenerationStats> {
        let mut stats = GenerationStats::default();
        if prompt.is_empty() && self.ctx.n_logit_rows() == 0 {
            return Err(ModelError::InvalidInput("the prompt is empty".into()));
        }
        if self.n_past() + prompt.len() > self.n_ctx() {
            return Err(ModelError::InvalidInput(format!(
                "the prompt has {} tokens but the context holds {} ({} used); use a larger -c",
                prompt.len(),
                self.n_ctx(),
                self.n_past()
            )));
        }
        let t0 = Instant::now();
        if !prompt.is_empty() {
            for &t in prompt {
                self.sampler.accept(t);
            }
            self.eval(prompt)?;
        }
        stats.prompt_tokens = prompt.len();
        stats.prompt_seconds = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let model = self.ctx.model().clone();
        let tok = model.tokenizer();
        let mut stream = tok.stream_decoder();
        for _ in 0..n_predict {
            let id = self.sample_next()?;
            stats.generated_tokens += 1;
            if tok.is_eog(id) {
                stats.hit_eog = true;
                break;
            }
            let text = stream.push(id);
            let flow = on_token(id, &text);
            if flow == Flow::Stop || self.n_past() >= self.n_ctx() {
                break;
            }
            self.eval(&[id])?;
        }
        let rest = stream.finish();
        if !rest.is_empty() {
            on_token(u32::MAX, &rest);
        }
        stats.generation_seconds = t1.elapsed().as_secs_f64();
        Ok(stats)
    }
}
