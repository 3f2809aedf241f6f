//! `tessera run -m MODEL (-p PROMPT | -f FILE) [-n N] …`: one-shot completion, as llama.cpp's
//! `llama-cli -no-cnv` / `llama-simple` do it. The prompt is tokenized with special tokens added
//! (BOS per the model's metadata) and parsed (control tokens written in the text are
//! recognised); the continuation streams to stdout, one flush per token, and a llama.cpp-like
//! timing summary goes to stderr. `--json` prints a single object at the end instead.
//!
//! When the context fills up, generation stops (with a notice), or with `--context-shift` the
//! first `--keep` tokens stay, the oldest half of the rest is dropped and generation goes on
//! ([`Session::shift_context`]: the surviving tokens are evaluated again, there is no rope
//! shift). `--ignore-eos` never samples end-of-generation tokens, and `--stats-interval N`
//! reports speed and resident memory every N tokens ([`stats`]), so long runs can be watched.
//!
//! Every numeric flag is checked before the model is loaded, and a refusal names the flag.

pub mod stats;

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::json;
use tessera_engine::cpu::dot::{Isa, detected_isa};

use crate::CliResult;
use crate::common::{ModelArgs, SamplingArgs};

/// Arguments of `tessera run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Prompt text (tokenized with BOS per the model and control tokens recognised).
    #[arg(
        short = 'p',
        long = "prompt",
        conflicts_with = "file",
        required_unless_present = "file"
    )]
    prompt: Option<String>,
    /// Read the prompt from this file (invalid UTF-8 is replaced, with a warning).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Tokens to generate (-1 = until end of generation or the context is full).
    #[arg(
        short = 'n',
        long = "n-predict",
        default_value_t = 128,
        allow_negative_numbers = true
    )]
    n_predict: i64,
    /// When the prompt does not fit in the context, keep its last tokens (and BOS) instead of
    /// refusing.
    #[arg(long = "truncate")]
    truncate: bool,
    /// Print one JSON object at the end (ids, text, speed) instead of streaming text.
    #[arg(long = "json")]
    json: bool,
    /// When the context is full, keep the first --keep tokens, drop the oldest half of the
    /// rest and go on (the tokens left are evaluated again: Tessera has no rope shift).
    #[arg(long = "context-shift", overrides_with = "no_context_shift")]
    context_shift: bool,
    /// Stop generating when the context is full (the default).
    #[arg(long = "no-context-shift", overrides_with = "context_shift")]
    no_context_shift: bool,
    /// Prompt tokens a context shift keeps, BOS not counted (-1 = the whole prompt).
    #[arg(long = "keep", default_value_t = 0, allow_negative_numbers = true)]
    keep: i64,
    /// Never sample end-of-generation tokens (generate exactly -n tokens).
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    /// Every N generated tokens, print tokens so far, t/s over the interval and resident
    /// memory to stderr (and list them in --json); 0 = never.
    #[arg(
        long = "stats-interval",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    stats_interval: i64,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// `-n` tokens were generated.
    Limit,
    /// An end-of-generation token was sampled.
    EndOfGeneration,
    /// The context is full and was not (or could not be) shifted.
    ContextFull,
    /// Standard output was closed.
    BrokenPipe,
}

impl Stop {
    /// Its name in `--json`.
    fn name(self) -> &'static str {
        match self {
            Stop::Limit => "limit",
            Stop::EndOfGeneration => "eog",
            Stop::ContextFull => "context_full",
            Stop::BrokenPipe => "broken_pipe",
        }
    }
}

/// Tokens a context shift keeps, as llama.cpp counts `--keep`: the first `keep` prompt tokens
/// plus BOS when the prompt starts with it; the whole prompt when `keep` is negative or longer
/// than the prompt.
fn n_keep(keep: i64, prompt_len: usize, starts_with_bos: bool) -> usize {
    if keep < 0 || keep as u64 >= prompt_len as u64 {
        return prompt_len;
    }
    (keep as usize + usize::from(starts_with_bos)).min(prompt_len)
}

/// Lower-case name of an instruction set, for reports.
pub fn isa_name(isa: Isa) -> &'static str {
    match isa {
        Isa::Scalar => "scalar",
        Isa::Avx2 => "avx2",
        Isa::Neon => "neon",
    }
}

/// Read the prompt: the `-p` text, or the `-f` file decoded lossily (with a warning on stderr
/// when it is not valid UTF-8).
fn read_prompt(args: &RunArgs) -> CliResult<String> {
    if let Some(p) = &args.prompt {
        return Ok(p.clone());
    }
    let path = args.file.as_ref().ok_or("give a prompt with -p or -f")?;
    let bytes = std::fs::read(path)
        .map_err(|e| format!("-f/--file {}: cannot read: {e}", path.display()))?;
    Ok(match String::from_utf8_lossy(&bytes) {
        Cow::Borrowed(s) => s.to_string(),
        Cow::Owned(s) => {
            eprintln!(
                "warning: -f/--file {} is not valid UTF-8; invalid bytes were replaced by U+FFFD",
                path.display()
            );
            s
        }
    })
}

/// Run `tessera run`.
pub fn run(args: RunArgs) -> CliResult {
    // Check every value before the (slow) model load.
    if args.n_predict < -1 {
        return Err(format!(
            "-n/--n-predict {} must be >= -1 (-1 = until end of generation)",
            args.n_predict
        )
        .into());
    }
    if args.keep < -1 {
        return Err(format!("--keep {} must be >= -1 (-1 = the whole prompt)", args.keep).into());
    }
    if args.stats_interval < 0 {
        return Err(format!(
            "--stats-interval {} must be >= 0 (0 = no stats)",
            args.stats_interval
        )
        .into());
    }
    let mut params = args.model.session_params()?;
    params.sampler = args.sampling.params();
    params.sampler.validate()?;
    let prompt_text = read_prompt(&args)?;

    let t_load = Instant::now();
    let mut session = args
        .model
        .open_session(&params)
        .map_err(|e| format!("cannot load {}: {e}", args.model.model))?;
    let load_seconds = t_load.elapsed().as_secs_f64();
    let n_ctx = session.n_ctx();

    let mut prompt = session.tokenize(&prompt_text, true, true);
    if prompt.is_empty() {
        return Err("the prompt is empty (no tokens)".into());
    }
    if prompt.len() > n_ctx {
        if !args.truncate {
            return Err(format!(
                "the prompt has {} tokens but the context size is {n_ctx} (-c {n_ctx}); \
                 use a larger -c/--ctx-size or --truncate",
                prompt.len()
            )
            .into());
        }
        let bos = session.tokenizer().bos().filter(|&b| prompt[0] == b);
        let keep = n_ctx - usize::from(bos.is_some());
        let tail = prompt.split_off(prompt.len() - keep);
        let dropped = prompt.len() - usize::from(bos.is_some());
        prompt = bos.into_iter().chain(tail).collect();
        eprintln!(
            "warning: the prompt was truncated to its last {keep} tokens ({dropped} dropped) \
             to fit the context size {n_ctx}"
        );
    }
    let starts_with_bos = session.tokenizer().bos() == Some(prompt[0]);
    let n_keep = n_keep(args.keep, prompt.len(), starts_with_bos);
    if args.ignore_eos {
        let eog = session.tokenizer().eog_ids().to_vec();
        session.ban_tokens(&eog);
    }
    let n_predict = if args.n_predict < 0 {
        usize::MAX
    } else {
        args.n_predict as usize
    };

    // Prompt.
    let t_prompt = Instant::now();
    for &t in &prompt {
        session.accept(t);
    }
    session.eval(&prompt)?;
    let prompt_seconds = t_prompt.elapsed().as_secs_f64();

    // Generation: sample, stream, feed back.
    let model = session.model().clone();
    let tok = model.tokenizer();
    let mut stream = tok.stream_decoder();
    // Ids are kept for --json only, so a long streamed run holds no growing buffer.
    let mut generated: Vec<u32> = Vec::new();
    let mut n_generated = 0usize;
    let mut text = String::new();
    let mut n_decodes = 0usize;
    let mut shifts = 0usize;
    let mut reevaluated = 0usize;
    let mut shift_seconds = 0.0f64;
    let mut progress = stats::Progress::new(args.stats_interval as usize);
    let mut stdout = std::io::stdout().lock();
    let json = args.json;
    let mut emit = |piece: &str, text: &mut String| -> std::io::Result<()> {
        if json {
            text.push_str(piece);
        } else if !piece.is_empty() {
            stdout.write_all(piece.as_bytes())?;
            stdout.flush()?;
        }
        Ok(())
    };
    let t_gen = Instant::now();
    let mut stop = Stop::Limit;
    while n_generated < n_predict {
        let id = session.sample();
        session.accept(id);
        n_generated += 1;
        if json {
            generated.push(id);
        }
        if tok.is_eog(id) {
            stop = Stop::EndOfGeneration;
            break;
        }
        let piece = stream.push(id);
        if let Err(e) = emit(&piece, &mut text) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                stop = Stop::BrokenPipe;
                break;
            }
            return Err(e.into());
        }
        if let Some(sample) = progress.tick(n_generated, session.n_past(), shifts, shift_seconds) {
            eprintln!("{}", sample.line());
        }
        if n_generated >= n_predict {
            break;
        }
        if session.n_past() >= n_ctx {
            if !args.context_shift {
                eprintln!(
                    "\nnote: the context is full ({n_ctx} tokens): generation stopped \
                     (use a larger -c/--ctx-size, or --context-shift)"
                );
                stop = Stop::ContextFull;
                break;
            }
            let t_shift = Instant::now();
            match session.shift_context(n_keep) {
                Ok(shift) => {
                    shifts += 1;
                    reevaluated += shift.reevaluated;
                    shift_seconds += t_shift.elapsed().as_secs_f64();
                }
                Err(e) => {
                    eprintln!("\nnote: the context is full ({n_ctx} tokens): {e}");
                    stop = Stop::ContextFull;
                    break;
                }
            }
        }
        session.eval(&[id])?;
        n_decodes += 1;
    }
    let rest = stream.finish();
    if stop != Stop::BrokenPipe {
        match emit(&rest, &mut text) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
            _ => {}
        }
    }
    let gen_seconds = t_gen.elapsed().as_secs_f64();
    let prompt_tps = prompt.len() as f64 / prompt_seconds.max(1e-9);
    let gen_tps = n_generated as f64 / gen_seconds.max(1e-9);
    let threads = session.context().n_threads();
    let isa = isa_name(detected_isa());
    let backend = session.context().backend_name();
    let on_cpu = backend == "cpu";

    if args.json {
        let out = json!({
            "model": args.model.model,
            "prompt_ids": prompt,
            "generated_ids": generated,
            "text": text,
            "backend": backend,
            "isa": isa,
            "threads": threads,
            "n_ctx": n_ctx,
            "kv_cache_bytes": session.kv_bytes(),
            "prompt_tokens": prompt.len(),
            "generated_tokens": n_generated,
            "load_seconds": load_seconds,
            "prompt_seconds": prompt_seconds,
            "generation_seconds": gen_seconds,
            "prompt_tokens_per_second": prompt_tps,
            "generation_tokens_per_second": gen_tps,
            "stop": stop.name(),
            "n_keep": n_keep,
            "context_shifts": shifts,
            "reevaluated_tokens": reevaluated,
            "shift_seconds": shift_seconds,
            "stats": progress.samples(),
        });
        writeln!(stdout, "{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(());
    }
    if stop != Stop::BrokenPipe {
        let _ = writeln!(stdout);
    }
    let ms = |s: f64| s * 1e3;
    let per_tok = |s: f64, n: usize| if n == 0 { 0.0 } else { ms(s) / n as f64 };
    eprintln!();
    let detail = if on_cpu {
        format!("cpu ({isa}, {threads} threads)")
    } else {
        format!("gpu {backend}")
    };
    eprintln!(
        "tessera: backend {detail}, n_ctx {n_ctx}, KV cache {:.2} MiB",
        session.kv_bytes() as f64 / (1024.0 * 1024.0)
    );
    eprintln!("tessera:        load time = {:10.2} ms", ms(load_seconds));
    eprintln!(
        "tessera: prompt eval time = {:10.2} ms / {:5} tokens ({:8.2} ms per token, {:8.2} tokens per second)",
        ms(prompt_seconds),
        prompt.len(),
        per_tok(prompt_seconds, prompt.len()),
        prompt_tps
    );
    eprintln!(
        "tessera:        eval time = {:10.2} ms / {:5} runs   ({:8.2} ms per token, {:8.2} tokens per second)",
        ms(gen_seconds),
        n_generated,
        per_tok(gen_seconds, n_generated),
        gen_tps
    );
    if shifts > 0 {
        eprintln!(
            "tessera:   context shifts = {:10.2} ms / {shifts:5} shifts ({reevaluated} tokens \
             evaluated again, {n_keep} kept each time)",
            ms(shift_seconds)
        );
    }
    eprintln!(
        "tessera:       total time = {:10.2} ms / {:5} tokens ({n_decodes} decode steps)",
        ms(load_seconds + prompt_seconds + gen_seconds),
        prompt.len() + n_generated
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_counts_bos_as_llama_cpp_does() {
        assert_eq!(n_keep(0, 10, true), 1);
        assert_eq!(n_keep(0, 10, false), 0);
        assert_eq!(n_keep(4, 10, true), 5);
        assert_eq!(n_keep(9, 10, true), 10);
        assert_eq!(n_keep(10, 10, true), 10);
        assert_eq!(n_keep(1000, 10, false), 10);
        assert_eq!(n_keep(-1, 10, true), 10);
    }
}
