//! `tessera perplexity -m MODEL -f FILE [-c CTX] [--chunks K] …`: perplexity measured exactly
//! as llama.cpp's `llama-perplexity` measures it, so the figures can be compared:
//!
//! 1. the whole text is tokenized with special tokens added (BOS per the model's metadata) and
//!    not parsed (`add_special = true`, `parse_special = false`);
//! 2. it is cut into `n_chunk = n_tokens / n_ctx` chunks of `n_ctx` tokens (`--chunks` caps it;
//!    at least `2·n_ctx` tokens are required);
//! 3. per chunk: the KV cache is cleared, the first token is replaced by BOS when the model adds
//!    BOS, the chunk is evaluated in batches of `-b` tokens, and the logits at positions
//!    `first = n_ctx/2 … n_ctx−2` score the tokens `first+1 … n_ctx−1` with a log-softmax in f64;
//! 4. the running perplexity is printed after each chunk (`[1]18.1234,[2]…`) and at the end
//!    `PPL = exp(mean nll) +/- ppl·sqrt((mean(nll²) − mean(nll)²)/(count − 1))`.
//!
//! Batches that hold no scored position are evaluated without logits (same numbers, less work).
//!
//! `--kl-divergence-base` and `--kl-divergence` save the scored log-probabilities and compare a
//! later run with them ([`kl`]).

mod kl;
mod report;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tessera_models::{Session, log_softmax};

use crate::CliResult;
use crate::common::ModelArgs;
use kl::{KlBase, KlMode, KldHeader, create_base};

use report::Summary;

/// Arguments of `tessera perplexity`.
#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text file to measure (invalid UTF-8 is replaced, with a warning). Optional with
    /// --kl-divergence: the tokens then come from the base file.
    #[arg(short = 'f', long = "file", required_unless_present = "kl_divergence")]
    file: Option<PathBuf>,
    /// Evaluate at most this many chunks (-1 = all).
    #[arg(long = "chunks", default_value_t = -1, allow_negative_numbers = true)]
    chunks: i64,
    /// Print one JSON object at the end instead of text.
    #[arg(long = "json")]
    json: bool,
    /// Base file of log-probabilities: written by a run without --kl-divergence, read by a run
    /// with it.
    #[arg(long = "kl-divergence-base")]
    kl_divergence_base: Option<PathBuf>,
    /// Compare this run with the log-probabilities in --kl-divergence-base (KL divergence,
    /// top-1 agreement, both perplexities).
    #[arg(long = "kl-divergence", requires = "kl_divergence_base")]
    kl_divergence: bool,
}

/// Negative log-likelihood of `target`, argmax and log-partition of one row of logits
/// (log-softmax in f64).
fn score_row(logits: &[f32], target: u32) -> (f64, u32, f64) {
    let log_z = log_softmax::log_partition(logits);
    let arg = log_softmax::argmax(logits) as u32;
    (log_z - logits[target as usize] as f64, arg, log_z)
}

/// Read the text to measure, lossily.
fn read_text(path: &Path) -> CliResult<String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("-f/--file {}: cannot read: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    if let std::borrow::Cow::Owned(_) = text {
        eprintln!(
            "warning: -f/--file {} is not valid UTF-8; invalid bytes were replaced by U+FFFD",
            path.display()
        );
    }
    Ok(text.into_owned())
}

/// Perplexity and its standard error from the sums of nll and nll² over `count` tokens.
fn ppl_and_err(nll: f64, nll2: f64, count: usize) -> (f64, f64) {
    let n = count as f64;
    let mean = nll / n;
    let ppl = mean.exp();
    let var = nll2 / n - mean * mean;
    let err = if count > 1 && var > 0.0 {
        ppl * (var / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (ppl, err)
}

/// How the tokens are cut into chunks and which positions of a chunk are scored.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ChunkPlan {
    /// Tokens per chunk (`-c`).
    n_ctx: usize,
    /// Tokens evaluated at once (`-b`).
    n_batch: usize,
    /// Chunks to evaluate.
    n_chunk: usize,
    /// First scored position of a chunk (`n_ctx / 2`).
    first: usize,
}

impl ChunkPlan {
    /// The plan for `n_tokens` tokens: all the whole chunks there are, capped by `--chunks`
    /// (`chunks`, -1 = all) and by the chunks a KL base holds. At least `2·n_ctx` tokens of
    /// text are required, as llama.cpp asks; a KL base's tokens need only make one chunk (a
    /// base llama.cpp wrote with `--chunks 1` holds exactly `n_ctx`).
    fn new(
        n_tokens: usize,
        n_ctx: usize,
        n_batch: usize,
        chunks: i64,
        base: Option<KldHeader>,
    ) -> CliResult<ChunkPlan> {
        let need = if base.is_some() { n_ctx } else { 2 * n_ctx };
        if n_tokens < need {
            if base.is_some() {
                return Err(format!(
                    "the KL base holds {n_tokens} tokens, less than one chunk of {n_ctx} (-c)"
                )
                .into());
            }
            return Err(format!(
                "the text has {n_tokens} tokens; perplexity with a context of {n_ctx} (-c) needs \
                 at least {} (2 × n_ctx)",
                2 * n_ctx
            )
            .into());
        }
        let n_chunk_max = n_tokens / n_ctx;
        let mut n_chunk = if chunks < 0 {
            n_chunk_max
        } else {
            (chunks as usize).min(n_chunk_max)
        };
        if let Some(h) = base {
            n_chunk = n_chunk.min(h.n_chunks);
        }
        Ok(ChunkPlan {
            n_ctx,
            n_batch,
            n_chunk,
            first: n_ctx / 2,
        })
    }

    /// Positions scored per chunk.
    fn scored_per_chunk(&self) -> usize {
        self.n_ctx - 1 - self.first
    }

    /// Tokens evaluated, all chunks together.
    fn n_tokens(&self) -> usize {
        self.n_chunk * self.n_ctx
    }
}

/// Sums of the negative log-likelihoods of the scored tokens.
#[derive(Clone, Copy, Debug, Default)]
struct NllSums {
    /// Σ nll.
    nll: f64,
    /// Σ nll².
    nll2: f64,
    /// Tokens scored.
    count: usize,
}

impl NllSums {
    /// Add one token's nll.
    fn add(&mut self, v: f64) {
        self.nll += v;
        self.nll2 += v * v;
        self.count += 1;
    }

    /// The perplexity so far.
    fn ppl(&self) -> f64 {
        (self.nll / self.count as f64).exp()
    }
}

/// What scoring every chunk gave.
struct Scores {
    /// The sums over all chunks.
    sums: NllSums,
    /// The perplexity after each chunk.
    running: Vec<f64>,
    /// The running values (`[1]18.1234,…`) when they went into the progress bar and are still
    /// to be printed.
    deferred_line: Option<String>,
    /// Seconds spent evaluating.
    seconds: f64,
}

/// Check the flags that need no model: `--chunks`, and a context of at least 2.
fn checked_params(args: &PerplexityArgs) -> CliResult<tessera_models::SessionParams> {
    if args.chunks < -1 || args.chunks == 0 {
        return Err(format!("--chunks {} must be at least 1 (or -1 = all)", args.chunks).into());
    }
    let params = args.model.session_params()?;
    let n_ctx = params.context.n_ctx;
    // A chunk scores the tokens after its first half (`n_ctx - 1 - n_ctx/2` of them): none
    // below 3.
    if n_ctx < 3 {
        return Err(format!(
            "-c/--ctx-size {n_ctx} must be at least 3 for perplexity (a chunk scores the \
             tokens of its second half but the first: none below 3)"
        )
        .into());
    }
    Ok(params)
}

/// The tokens to measure: `-f`'s text tokenized (BOS added, control tokens not parsed), which
/// must begin with a KL base's tokens when there is one; else the base's tokens.
fn tokens_to_measure(
    session: &Session,
    file: Option<&Path>,
    base_tokens: Option<Vec<u32>>,
) -> CliResult<Vec<u32>> {
    match (file, base_tokens) {
        (None, Some(t)) => Ok(t),
        (Some(path), base) => {
            let text = read_text(path)?;
            let t = session.tokenize(&text, true, false);
            if let Some(b) = base
                && !t.starts_with(&b)
            {
                return Err(format!(
                    "-f/--file {} does not tokenize to the tokens stored in \
                     --kl-divergence-base (leave -f out to use the stored ones)",
                    path.display()
                )
                .into());
            }
            Ok(t)
        }
        (None, None) => Err("give the text to measure with -f/--file".into()),
    }
}

/// A progress bar over `len` tokens on a terminal's stderr, else a hidden one.
fn progress_bar(visible: bool, len: usize) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tokens, {per_sec}, ETA {eta} {msg}")
            .expect("valid template"),
    );
    pb
}

/// Evaluate one chunk in batches of `-b` and score its second half (the logits at
/// `first … n_ctx−2` predict the next tokens), adding to `sums` and `kl`.
fn score_chunk(
    session: &mut Session,
    chunk: &[u32],
    plan: &ChunkPlan,
    sums: &mut NllSums,
    kl: &mut KlMode,
    pb: &ProgressBar,
) -> CliResult {
    let (n_ctx, first) = (plan.n_ctx, plan.first);
    session.reset();
    let mut b0 = 0;
    while b0 < n_ctx {
        let b1 = (b0 + plan.n_batch).min(n_ctx);
        // Only the scored half's logits are computed (as llama.cpp asks for them): a
        // batch that straddles `first` is evaluated in two calls.
        let s = b0.max(first).min(b1);
        if s > b0 {
            session.eval(&chunk[b0..s])?;
        }
        if s < b1 {
            session.eval_all(&chunk[s..b1])?;
            for p in s..b1.min(n_ctx - 1) {
                let logits = session.logits_row(p - s);
                let (v, arg, log_z) = score_row(logits, chunk[p + 1]);
                sums.add(v);
                kl.record(logits, v, arg, log_z, chunk[p + 1])?;
            }
        }
        pb.inc((b1 - b0) as u64);
        b0 = b1;
    }
    Ok(())
}

/// Score every chunk (BOS replacing its first token when the model adds BOS), printing the
/// running perplexity after each one (`[1]18.1234,`: on stdout, or in the progress bar when
/// both streams are terminals; not with `--json`).
fn score_chunks(
    session: &mut Session,
    tokens: &[u32],
    plan: &ChunkPlan,
    kl: &mut KlMode,
    json: bool,
) -> CliResult<Scores> {
    let tok = session.tokenizer();
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let show_bar = std::io::stderr().is_terminal();
    let pb = progress_bar(show_bar, plan.n_tokens());
    // With a bar on the terminal, the running values go into the bar and are printed at the end.
    let defer_line = show_bar && std::io::stdout().is_terminal();
    let mut line = String::new();
    let mut stdout = std::io::stdout().lock();

    let t0 = Instant::now();
    let mut sums = NllSums::default();
    let mut running = Vec::with_capacity(plan.n_chunk);
    let mut chunk_tokens = vec![0u32; plan.n_ctx];
    for chunk in tokens.chunks_exact(plan.n_ctx).take(plan.n_chunk) {
        chunk_tokens.copy_from_slice(chunk);
        if let Some(b) = bos {
            chunk_tokens[0] = b;
        }
        score_chunk(session, &chunk_tokens, plan, &mut sums, kl, &pb)?;
        let ppl = sums.ppl();
        running.push(ppl);
        let piece = format!("[{}]{ppl:.4},", running.len());
        if defer_line {
            pb.set_message(piece.clone());
        } else if !json {
            write!(stdout, "{piece}")?;
            stdout.flush()?;
        }
        line.push_str(&piece);
    }
    pb.finish_and_clear();
    Ok(Scores {
        sums,
        running,
        deferred_line: defer_line.then_some(line),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Run `tessera perplexity`: check the flags, open the KL base when comparing (it decides the
/// tokens), load the model, get the tokens, plan the chunks, create the KL base when saving,
/// score every chunk, report.
pub fn run(args: PerplexityArgs) -> CliResult {
    let params = checked_params(&args)?;
    let (n_ctx, n_batch) = (params.context.n_ctx, params.context.n_batch);
    let base = match &args.kl_divergence_base {
        Some(path) if args.kl_divergence => Some(KlBase::open(path, n_ctx)?),
        _ => None,
    };

    let t_load = Instant::now();
    let mut session = args
        .model
        .open_session_with_rows(&params, params.context.n_batch)?;
    let load_seconds = t_load.elapsed().as_secs_f64();
    let n_vocab = session.model().hparams().n_vocab;

    let base_header = base.as_ref().map(|b| b.header);
    let (base_tokens, mut kl) = match base {
        Some(b) => {
            let (tokens, mode) = b.into_comparison();
            (Some(tokens), mode)
        }
        None => (None, KlMode::Off),
    };
    let tokens = tokens_to_measure(&session, args.file.as_deref(), base_tokens)?;
    if let Some(h) = base_header
        && h.n_vocab != n_vocab
    {
        return Err(format!(
            "--kl-divergence-base has a vocabulary of {} tokens, this model {n_vocab}",
            h.n_vocab
        )
        .into());
    }
    let plan = ChunkPlan::new(tokens.len(), n_ctx, n_batch, args.chunks, base_header)?;
    if let Some(path) = args
        .kl_divergence_base
        .as_ref()
        .filter(|_| !args.kl_divergence)
    {
        let header = KldHeader {
            n_vocab,
            n_ctx,
            n_chunks: plan.n_chunk,
            first: plan.first,
            format: kl::BaseFormat::Tessera,
        };
        kl = KlMode::Save(create_base(path, header, &tokens)?);
    }

    let summary = Summary::new(&args.model.model, &session, &plan, load_seconds);
    if !args.json {
        summary.print_start(tokens.len());
    }
    let scores = score_chunks(&mut session, &tokens, &plan, &mut kl, args.json)?;
    let kl_json = kl.finish()?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        summary.print_json(&scores, kl_json, &mut stdout)
    } else {
        summary.print_text(&scores, kl_json, &mut stdout)
    }
}
