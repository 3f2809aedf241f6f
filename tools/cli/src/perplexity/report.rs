//! What `tessera perplexity` prints: the opening line on stderr, then llama.cpp's
//! `Final estimate: PPL = …` (and the KL summary) on stdout, or one `--json` object.

use std::io::Write;

use serde_json::{Value, json};
use tessera_engine::cpu::dot::detected_isa;
use tessera_models::Session;

use super::{ChunkPlan, Scores, ppl_and_err};
use crate::CliResult;
use crate::run::isa_name;

/// The run's settings, as the reports show them.
pub struct Summary<'a> {
    /// The `-m` argument.
    model: &'a str,
    /// How the tokens are cut.
    plan: ChunkPlan,
    /// Seconds to load the model.
    load_seconds: f64,
    /// The backend's name.
    backend: String,
    /// The host's instruction set.
    isa: &'static str,
    /// Threads of the CPU backend.
    threads: usize,
}

impl<'a> Summary<'a> {
    /// The settings of a run of `model` on `session`.
    pub fn new(model: &'a str, session: &Session, plan: &ChunkPlan, load_seconds: f64) -> Self {
        Summary {
            model,
            plan: *plan,
            load_seconds,
            backend: session.context().backend_name().to_string(),
            isa: isa_name(detected_isa()),
            threads: session.context().n_threads(),
        }
    }

    /// The line on stderr before the first chunk.
    pub fn print_start(&self, n_tokens: usize) {
        let p = &self.plan;
        eprintln!(
            "perplexity: {n_tokens} tokens, {} chunks of {} (batch {}), {} scored per \
             chunk; backend {} (host: {}, {} threads)",
            p.n_chunk,
            p.n_ctx,
            p.n_batch,
            p.scored_per_chunk(),
            self.backend,
            self.isa,
            self.threads
        );
    }

    /// Evaluated tokens per second.
    fn tokens_per_second(&self, scores: &Scores) -> f64 {
        self.plan.n_tokens() as f64 / scores.seconds.max(1e-9)
    }

    /// Write the `--json` object (with the KL summary when comparing) to `out`.
    pub fn print_json(
        &self,
        scores: &Scores,
        kl: Option<Value>,
        out: &mut impl Write,
    ) -> CliResult {
        let s = &scores.sums;
        let (ppl, err) = ppl_and_err(s.nll, s.nll2, s.count);
        let mut value = json!({
            "model": self.model,
            "ppl": ppl,
            "ppl_err": err,
            "chunks": self.plan.n_chunk,
            "n_ctx": self.plan.n_ctx,
            "n_batch": self.plan.n_batch,
            "scored_tokens": s.count,
            "running_ppl": scores.running,
            "seconds": scores.seconds,
            "load_seconds": self.load_seconds,
            "tokens_per_second": self.tokens_per_second(scores),
            "backend": self.backend,
            "isa": self.isa,
            "threads": self.threads,
        });
        if let Some(k) = kl {
            value["kl_divergence"] = k;
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        Ok(())
    }

    /// Write the running values still to print, the final estimate and the KL summary (when
    /// comparing) to `out`, and the speed to stderr.
    pub fn print_text(
        &self,
        scores: &Scores,
        kl: Option<Value>,
        out: &mut impl Write,
    ) -> CliResult {
        let s = &scores.sums;
        let (ppl, err) = ppl_and_err(s.nll, s.nll2, s.count);
        if let Some(line) = &scores.deferred_line {
            write!(out, "{line}")?;
        }
        writeln!(out)?;
        writeln!(out, "Final estimate: PPL = {ppl:.4} +/- {err:.5}")?;
        if let Some(k) = kl {
            print_kl(&k, ppl, out)?;
        }
        eprintln!(
            "perplexity: {:.2} s for {} tokens ({:.2} tokens per second), load {:.2} s",
            scores.seconds,
            self.plan.n_tokens(),
            self.tokens_per_second(scores),
            self.load_seconds
        );
        Ok(())
    }
}

/// The KL summary as llama.cpp's KL mode prints it; `ppl` is this run's perplexity.
fn print_kl(k: &Value, ppl: f64, out: &mut impl Write) -> CliResult {
    writeln!(out)?;
    writeln!(
        out,
        "Mean PPL(base)        : {:10.4}",
        k["ppl_base"].as_f64().unwrap_or(f64::NAN)
    )?;
    writeln!(out, "Mean PPL(this run)    : {ppl:10.4}")?;
    writeln!(
        out,
        "Mean KLD              : {:10.6} ± {:.6}",
        k["mean"].as_f64().unwrap_or(f64::NAN),
        k["mean_err"].as_f64().unwrap_or(f64::NAN)
    )?;
    for (label, key) in [
        ("Median KLD            ", "median"),
        ("99.0% KLD             ", "p99"),
        ("Maximum KLD           ", "max"),
    ] {
        writeln!(out, "{label}: {:10.6}", k[key].as_f64().unwrap_or(f64::NAN))?;
    }
    writeln!(
        out,
        "Same top-1            : {:9.3} ± {:.3} %",
        k["top1_agreement_percent"].as_f64().unwrap_or(f64::NAN),
        k["top1_agreement_err"].as_f64().unwrap_or(f64::NAN)
    )?;
    Ok(())
}
