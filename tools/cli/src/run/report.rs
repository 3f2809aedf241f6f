//! The end of `tessera run`: one `--json` object on stdout, or a llama.cpp-like timing summary
//! on stderr.

use std::io::Write;

use serde_json::json;
use tessera_engine::cpu::dot::detected_isa;
use tessera_models::Session;

use super::Stop;
use super::generate::Generation;
use super::isa_name;
use crate::CliResult;

/// Everything a run's report shows.
pub struct Report<'a> {
    /// The `-m` argument.
    pub model: &'a str,
    /// The prompt's tokens.
    pub prompt: &'a [u32],
    /// Tokens a context shift keeps.
    pub n_keep: usize,
    /// Seconds to load the model.
    pub load_seconds: f64,
    /// Seconds to evaluate the prompt.
    pub prompt_seconds: f64,
    /// What the generation did.
    pub generation: &'a Generation,
    /// The generated text (`--json`).
    pub text: &'a str,
}

impl Report<'_> {
    /// Prompt tokens per second.
    fn prompt_tps(&self) -> f64 {
        self.prompt.len() as f64 / self.prompt_seconds.max(1e-9)
    }

    /// Generated tokens per second.
    fn generation_tps(&self) -> f64 {
        self.generation.n_generated as f64 / self.generation.seconds.max(1e-9)
    }

    /// Write the `--json` object, pretty-printed, to `out`.
    pub fn print_json(&self, session: &Session, out: &mut impl Write) -> CliResult {
        let g = self.generation;
        let value = json!({
            "model": self.model,
            "prompt_ids": self.prompt,
            "generated_ids": g.ids,
            "text": self.text,
            "backend": session.context().backend_name(),
            "isa": isa_name(detected_isa()),
            "threads": session.context().n_threads(),
            "n_ctx": session.n_ctx(),
            "kv_cache_bytes": session.kv_bytes(),
            "prompt_tokens": self.prompt.len(),
            "generated_tokens": g.n_generated,
            "load_seconds": self.load_seconds,
            "prompt_seconds": self.prompt_seconds,
            "generation_seconds": g.seconds,
            "prompt_tokens_per_second": self.prompt_tps(),
            "generation_tokens_per_second": self.generation_tps(),
            "stop": g.stop.name(),
            "n_keep": self.n_keep,
            "context_shifts": g.shifts.count,
            "reevaluated_tokens": g.shifts.reevaluated,
            "shift_seconds": g.shifts.seconds,
            "stats": g.progress.samples(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        Ok(())
    }

    /// End the streamed text with a newline on `out` (unless stdout was closed) and print the
    /// timing summary on stderr.
    pub fn print_summary(&self, session: &Session, out: &mut impl Write) {
        let g = self.generation;
        if g.stop != Stop::BrokenPipe {
            let _ = writeln!(out);
        }
        let n_ctx = session.n_ctx();
        let threads = session.context().n_threads();
        let backend = session.context().backend_name();
        let ms = |s: f64| s * 1e3;
        let per_tok = |s: f64, n: usize| if n == 0 { 0.0 } else { ms(s) / n as f64 };
        eprintln!();
        let detail = if backend == "cpu" {
            format!("cpu ({}, {threads} threads)", isa_name(detected_isa()))
        } else {
            format!("gpu {backend}")
        };
        eprintln!(
            "tessera: backend {detail}, n_ctx {n_ctx}, KV cache {:.2} MiB",
            session.kv_bytes() as f64 / (1024.0 * 1024.0)
        );
        eprintln!(
            "tessera:        load time = {:10.2} ms",
            ms(self.load_seconds)
        );
        eprintln!(
            "tessera: prompt eval time = {:10.2} ms / {:5} tokens ({:8.2} ms per token, {:8.2} tokens per second)",
            ms(self.prompt_seconds),
            self.prompt.len(),
            per_tok(self.prompt_seconds, self.prompt.len()),
            self.prompt_tps()
        );
        eprintln!(
            "tessera:        eval time = {:10.2} ms / {:5} runs   ({:8.2} ms per token, {:8.2} tokens per second)",
            ms(g.seconds),
            g.n_generated,
            per_tok(g.seconds, g.n_generated),
            self.generation_tps()
        );
        if g.shifts.count > 0 {
            eprintln!(
                "tessera:   context shifts = {:10.2} ms / {:5} shifts ({} tokens \
                 evaluated again, {} kept each time)",
                ms(g.shifts.seconds),
                g.shifts.count,
                g.shifts.reevaluated,
                self.n_keep
            );
        }
        eprintln!(
            "tessera:       total time = {:10.2} ms / {:5} tokens ({} decode steps)",
            ms(self.load_seconds + self.prompt_seconds + g.seconds),
            self.prompt.len() + g.n_generated,
            g.n_decodes
        );
    }
}
