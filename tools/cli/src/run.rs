//! `tessera run -m MODEL (-p PROMPT | -f FILE) [-n N] …`: one-shot completion, as llama.cpp's
//! `llama-cli -no-cnv` / `llama-simple` do it. The prompt is tokenized with special tokens added
//! (BOS per the model's metadata) and parsed (control tokens written in the text are
//! recognised); the continuation streams to stdout, one flush per token, and a llama.cpp-like
//! timing summary goes to stderr. `--json` prints a single object at the end instead.
//!
//! When the context fills up, generation stops (with a notice), or with `--context-shift` the
//! first `--keep` tokens stay, the oldest half of the rest is dropped and generation goes on
//! ([`Session::shift_context`]: the surviving tokens are evaluated again, exactly, rather than
//! their cached keys rotated). `--ignore-eos` never samples end-of-generation tokens, and `--stats-interval N`
//! reports speed and resident memory every N tokens ([`stats`]), so long runs can be watched.
//! `--grammar`/`--grammar-file` (GBNF or Lark), `--json-schema` and `--regex` constrain the
//! continuation to a grammar (see `tessera_models::constraint`); it then ends only where the
//! grammar can end.
//!
//! Every numeric flag is checked before the model is loaded, and a refusal names the flag.

mod generate;
mod report;
pub mod stats;

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use tessera_engine::cpu::dot::Isa;
use tessera_models::Session;

use crate::CliResult;
use crate::common::{GrammarArgs, ModelArgs, SamplingArgs};
use generate::{Limits, TextSink, generate};
use report::Report;

/// Arguments of `tessera run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    grammar: GrammarArgs,
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

/// Refuse out-of-range numbers before the (slow) model load; the message names the flag.
fn check_numbers(args: &RunArgs) -> CliResult {
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
    Ok(())
}

/// The last `max_bytes` bytes of `text` (fewer when that would split a character).
fn tail_bytes(text: &str, max_bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(max_bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The prompt's tokens (BOS per the model, control tokens parsed). One longer than the context
/// is refused, or with `--truncate` cut to its last tokens (BOS kept).
///
/// A text longer than the context can hold at the vocabulary's longest token is refused
/// before it is tokenized (a 100 MB prompt took a minute to be refused); with `--truncate`
/// only its last `n_ctx × max_token_bytes` bytes are tokenized, which hold at least `n_ctx`
/// tokens and so every token kept. The cut may tokenize the few bytes right after it
/// differently than the whole text would (a word cut in two), which only matters when the
/// text's tokens are nearly all as long as the longest one.
fn prompt_tokens(session: &Session, text: &str, truncate: bool) -> CliResult<Vec<u32>> {
    let n_ctx = session.n_ctx();
    let mut text = text;
    let mut bytes_cut = 0;
    if text.len() > n_ctx {
        let per_token = session.tokenizer().max_token_bytes();
        let most = n_ctx.saturating_mul(per_token);
        if text.len() > most {
            if !truncate {
                return Err(format!(
                    "the prompt has {} bytes, more than the context size {n_ctx} (-c {n_ctx}) \
                     can hold at {per_token} bytes per token at most; use a larger \
                     -c/--ctx-size or --truncate",
                    text.len()
                )
                .into());
            }
            let tail = tail_bytes(text, most);
            bytes_cut = text.len() - tail.len();
            text = tail;
        }
    }
    let mut prompt = session.tokenize(text, true, true);
    if prompt.is_empty() {
        return Err("the prompt is empty (no tokens)".into());
    }
    if prompt.len() > n_ctx {
        if !truncate {
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
        if bytes_cut > 0 {
            eprintln!(
                "warning: the prompt was truncated to its last {keep} tokens to fit the \
                 context size {n_ctx} (its first {bytes_cut} bytes were not tokenized, then \
                 {dropped} tokens were dropped)"
            );
        } else {
            eprintln!(
                "warning: the prompt was truncated to its last {keep} tokens ({dropped} \
                 dropped) to fit the context size {n_ctx}"
            );
        }
    }
    Ok(prompt)
}

/// Accept the prompt's tokens (for the penalties) and evaluate them; returns the seconds spent.
fn eval_prompt(session: &mut Session, prompt: &[u32]) -> CliResult<f64> {
    let t_prompt = Instant::now();
    for &t in prompt {
        session.accept(t);
    }
    session.eval(prompt)?;
    Ok(t_prompt.elapsed().as_secs_f64())
}

/// Run `tessera run`: check the flags, load the model, tokenize and evaluate the prompt,
/// generate, report.
pub fn run(args: RunArgs) -> CliResult {
    check_numbers(&args)?;
    let mut params = args.model.session_params()?;
    params.sampler = args.sampling.params();
    params.sampler.validate()?;
    let prompt_text = read_prompt(&args)?;
    // Read and parse the grammar before the model loads, so a bad one fails at once.
    let grammar = args.grammar.grammar()?;

    let t_load = Instant::now();
    let mut session = args
        .model
        .open_session(&params)
        .map_err(|e| format!("cannot load {}: {e}", args.model.model))?;
    let load_seconds = t_load.elapsed().as_secs_f64();
    if let Some(g) = &grammar {
        let constraint = session.model().compile_grammar(g)?;
        session.set_constraint(Some(constraint));
    }

    let prompt = prompt_tokens(&session, &prompt_text, args.truncate)?;
    let starts_with_bos = session.tokenizer().bos() == Some(prompt[0]);
    let n_keep = n_keep(args.keep, prompt.len(), starts_with_bos);
    if args.ignore_eos {
        let eog = session.tokenizer().eog_ids().to_vec();
        session.ban_tokens(&eog);
    }
    let prompt_seconds = eval_prompt(&mut session, &prompt)?;

    let limits = Limits {
        n_predict: usize::try_from(args.n_predict).unwrap_or(usize::MAX),
        context_shift: args.context_shift,
        n_keep,
        keep_ids: args.json,
        stats_interval: args.stats_interval as usize,
    };
    let mut out = TextSink::new(args.json);
    let generation = generate(&mut session, &limits, &mut out)?;
    let report = Report {
        model: &args.model.model,
        prompt: &prompt,
        n_keep,
        load_seconds,
        prompt_seconds,
        generation: &generation,
        text: &out.text,
    };
    if args.json {
        report.print_json(&session, &mut out.stdout)
    } else {
        report.print_summary(&session, &mut out.stdout);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_end_at_char_boundaries() {
        assert_eq!(tail_bytes("abcdef", 3), "def");
        assert_eq!(tail_bytes("abc", 10), "abc");
        // "é" is two bytes: a cut inside it starts after it.
        assert_eq!(tail_bytes("aéb", 2), "b");
        assert_eq!(tail_bytes("aéb", 3), "éb");
    }

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
