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
//! ## KL divergence
//! `--kl-divergence-base FILE` alone saves the log-probabilities of every scored position to
//! FILE. With `--kl-divergence` as well, FILE is read instead and this run is compared with it
//! (the tokens come from FILE, so `-f` is optional): mean KL(base ‖ this) ± its standard error,
//! median/99th percentile/maximum, top-1 agreement and both perplexities — as llama.cpp's KL
//! mode reports them.
//!
//! The base file (all integers little-endian):
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `TSKLD001` |
//! | 4 × u32 | `n_vocab`, `n_ctx`, `n_chunks`, `first` (= `n_ctx/2`) |
//! | `n_chunks·n_ctx` × u32 | the tokens of the chunks, as in the text (before BOS replacement) |
//! | per chunk, per scored position (`n_ctx − 1 − first` of them): | |
//! | u32 | argmax of the logits |
//! | f32 | negative log-likelihood of the next token (from f64) |
//! | `n_vocab` × f16 | log-softmax of the logits |
//!
//! Log-probabilities rather than raw logits: f16 is most precise near 0, where the likely
//! tokens — the ones that matter to the divergence — are. A SmolLM2 run at `-c 512` takes
//! 25 MB per chunk, a Gemma 3 one 134 MB.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use half::f16;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tessera_engine::cpu::dot::detected_isa;

use crate::CliResult;
use crate::common::ModelArgs;
use crate::run::isa_name;

/// Magic bytes of a KL-divergence base file.
const KLD_MAGIC: &[u8; 8] = b"TSKLD001";

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
    let mut max = f32::NEG_INFINITY;
    let mut arg = 0u32;
    for (i, &l) in logits.iter().enumerate() {
        if l > max {
            max = l;
            arg = i as u32;
        }
    }
    let max64 = max as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max64).exp()).sum();
    let log_z = max64 + sum.ln();
    (log_z - logits[target as usize] as f64, arg, log_z)
}

/// Header of a KL-divergence base file.
#[derive(Clone, Copy, Debug, PartialEq)]
struct KldHeader {
    n_vocab: usize,
    n_ctx: usize,
    n_chunks: usize,
    first: usize,
}

fn write_u32(w: &mut impl Write, v: usize) -> std::io::Result<()> {
    w.write_all(&u32::try_from(v).expect("fits in u32").to_le_bytes())
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Read the header and tokens of a base file.
fn read_kld_header(r: &mut impl Read, path: &Path) -> CliResult<(KldHeader, Vec<u32>)> {
    let bad = |what: &str| format!("--kl-divergence-base {}: {what}", path.display());
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|_| bad("too short to be a base file"))?;
    if &magic != KLD_MAGIC {
        return Err(bad("not a tessera KL-divergence base file (bad magic)").into());
    }
    let mut h = [0usize; 4];
    for v in &mut h {
        *v = read_u32(r).map_err(|_| bad("truncated header"))? as usize;
    }
    let hdr = KldHeader {
        n_vocab: h[0],
        n_ctx: h[1],
        n_chunks: h[2],
        first: h[3],
    };
    if hdr.n_ctx < 2 || hdr.first != hdr.n_ctx / 2 || hdr.n_vocab == 0 {
        return Err(bad("inconsistent header").into());
    }
    let n = hdr
        .n_chunks
        .checked_mul(hdr.n_ctx)
        .ok_or_else(|| bad("inconsistent header"))?;
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        tokens.push(read_u32(r).map_err(|_| bad("truncated token list"))?);
    }
    Ok((hdr, tokens))
}

/// What is done with the scored logits besides the perplexity.
enum KlMode {
    /// Nothing.
    Off,
    /// Write them to a base file.
    Save(BufWriter<File>),
    /// Compare them with a base file.
    Compare {
        reader: BufReader<File>,
        stats: KlStats,
        row: Vec<u8>,
    },
}

/// Running statistics of a KL comparison.
#[derive(Default)]
struct KlStats {
    /// KL(base ‖ new) per scored token.
    kld: Vec<f64>,
    /// Scored tokens whose argmax is the same in both runs.
    same_top1: usize,
    /// Sum of the base run's negative log-likelihoods.
    base_nll: f64,
}

/// Save one scored row: argmax, nll, then the log-softmax in f16.
fn save_row(w: &mut impl Write, logits: &[f32], nll: f64, arg: u32, log_z: f64) -> CliResult {
    write_u32(w, arg as usize)?;
    w.write_all(&(nll as f32).to_le_bytes())?;
    let mut buf = Vec::with_capacity(logits.len() * 2);
    for &l in logits {
        buf.extend_from_slice(&f16::from_f64(l as f64 - log_z).to_le_bytes());
    }
    w.write_all(&buf)?;
    Ok(())
}

/// Compare one scored row with the next row of the base file.
fn compare_row(
    r: &mut impl Read,
    row: &mut Vec<u8>,
    stats: &mut KlStats,
    logits: &[f32],
    arg: u32,
    log_z: f64,
) -> CliResult {
    let n_vocab = logits.len();
    row.resize(8 + 2 * n_vocab, 0);
    r.read_exact(row)
        .map_err(|e| format!("--kl-divergence-base: file ends early ({e})"))?;
    let base_arg = u32::from_le_bytes(row[0..4].try_into().expect("4 bytes"));
    let base_nll = f32::from_le_bytes(row[4..8].try_into().expect("4 bytes")) as f64;
    let base_lp = |pair: &[u8]| f16::from_le_bytes([pair[0], pair[1]]).to_f64();
    // Renormalise the stored distribution (f16 rounding leaves its sum slightly off 1), so the
    // divergence is that of two true distributions: ≥ 0, and ≈ 0 for the same run.
    let log_z_base = row[8..]
        .chunks_exact(2)
        .map(|p| base_lp(p).exp())
        .sum::<f64>()
        .ln();
    let mut kl = 0.0f64;
    for (pair, &l) in row[8..].chunks_exact(2).zip(logits) {
        let lp_base = base_lp(pair) - log_z_base;
        let p_base = lp_base.exp();
        if p_base > 0.0 {
            kl += p_base * (lp_base - (l as f64 - log_z));
        }
    }
    stats.kld.push(kl);
    stats.same_top1 += usize::from(base_arg == arg);
    stats.base_nll += base_nll;
    Ok(())
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

/// Run `tessera perplexity`.
pub fn run(args: PerplexityArgs) -> CliResult {
    if args.chunks < -1 || args.chunks == 0 {
        return Err(format!("--chunks {} must be at least 1 (or -1 = all)", args.chunks).into());
    }
    let params = args.model.session_params()?;
    let n_ctx = params.context.n_ctx;
    let n_batch = params.context.n_batch;
    if n_ctx < 2 {
        return Err(format!("-c/--ctx-size {n_ctx} must be at least 2 for perplexity").into());
    }

    // KL base file: read its header first (it decides the tokens) or create it.
    let mut base_tokens = None;
    let mut kl = KlMode::Off;
    let mut base_hdr = None;
    if let Some(path) = &args.kl_divergence_base
        && args.kl_divergence
    {
        let f = File::open(path)
            .map_err(|e| format!("--kl-divergence-base {}: cannot open: {e}", path.display()))?;
        let mut reader = BufReader::with_capacity(1 << 20, f);
        let (hdr, toks) = read_kld_header(&mut reader, path)?;
        if hdr.n_ctx != n_ctx {
            return Err(format!(
                "--kl-divergence-base {} was made with -c {}, this run has -c {n_ctx}",
                path.display(),
                hdr.n_ctx
            )
            .into());
        }
        base_tokens = Some(toks);
        base_hdr = Some(hdr);
        kl = KlMode::Compare {
            reader,
            stats: KlStats::default(),
            row: Vec::new(),
        };
    }

    let t_load = Instant::now();
    let mut session = args.model.open_session(&params)?;
    let load_seconds = t_load.elapsed().as_secs_f64();
    let n_vocab = session.model().hparams().n_vocab;
    let tok = session.tokenizer();
    let bos = if tok.add_bos() { tok.bos() } else { None };

    let tokens = match (&args.file, base_tokens) {
        (None, Some(t)) => t,
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
            t
        }
        (None, None) => return Err("give the text to measure with -f/--file".into()),
    };
    if let Some(h) = base_hdr
        && h.n_vocab != n_vocab
    {
        return Err(format!(
            "--kl-divergence-base has a vocabulary of {} tokens, this model {n_vocab}",
            h.n_vocab
        )
        .into());
    }
    if tokens.len() < 2 * n_ctx {
        return Err(format!(
            "the text has {} tokens; perplexity with a context of {n_ctx} (-c) needs at least \
             {} (2 × n_ctx)",
            tokens.len(),
            2 * n_ctx
        )
        .into());
    }
    let n_chunk_max = tokens.len() / n_ctx;
    let mut n_chunk = if args.chunks < 0 {
        n_chunk_max
    } else {
        (args.chunks as usize).min(n_chunk_max)
    };
    if let Some(h) = base_hdr {
        n_chunk = n_chunk.min(h.n_chunks);
    }
    let first = n_ctx / 2;
    let scored_per_chunk = n_ctx - 1 - first;

    if let Some(path) = args
        .kl_divergence_base
        .as_ref()
        .filter(|_| !args.kl_divergence)
    {
        let f = File::create(path).map_err(|e| {
            format!(
                "--kl-divergence-base {}: cannot create: {e}",
                path.display()
            )
        })?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(KLD_MAGIC)?;
        for v in [n_vocab, n_ctx, n_chunk, first] {
            write_u32(&mut w, v)?;
        }
        for &t in &tokens[..n_chunk * n_ctx] {
            write_u32(&mut w, t as usize)?;
        }
        kl = KlMode::Save(w);
    }

    let threads = session.context().n_threads();
    let isa = isa_name(detected_isa());
    let backend = session.context().backend_name();
    if !args.json {
        eprintln!(
            "perplexity: {} tokens, {n_chunk} chunks of {n_ctx} (batch {n_batch}), {} scored per \
             chunk; backend {backend} (host: {isa}, {threads} threads)",
            tokens.len(),
            scored_per_chunk
        );
    }

    let show_bar = std::io::stderr().is_terminal();
    let pb = if show_bar {
        let pb = ProgressBar::new((n_chunk * n_ctx) as u64);
        pb.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} tokens, {per_sec}, ETA {eta} {msg}")
                .expect("valid template"),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    // With a bar on the terminal, the running values go into the bar and are printed at the end.
    let defer_line = show_bar && std::io::stdout().is_terminal();
    let mut line = String::new();
    let mut stdout = std::io::stdout().lock();

    let t0 = Instant::now();
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunk);
    let mut chunk_tokens = vec![0u32; n_ctx];
    for c in 0..n_chunk {
        chunk_tokens.copy_from_slice(&tokens[c * n_ctx..(c + 1) * n_ctx]);
        if let Some(b) = bos {
            chunk_tokens[0] = b;
        }
        session.reset();
        let mut b0 = 0;
        while b0 < n_ctx {
            let b1 = (b0 + n_batch).min(n_ctx);
            // Only the scored half's logits are computed (as llama.cpp asks for them): a
            // batch that straddles `first` is evaluated in two calls.
            let s = b0.max(first).min(b1);
            if s > b0 {
                session.eval(&chunk_tokens[b0..s])?;
            }
            if s < b1 {
                session.eval_all(&chunk_tokens[s..b1])?;
                for p in s..b1.min(n_ctx - 1) {
                    let logits = session.logits_row(p - s);
                    let (v, arg, log_z) = score_row(logits, chunk_tokens[p + 1]);
                    nll += v;
                    nll2 += v * v;
                    count += 1;
                    match &mut kl {
                        KlMode::Off => {}
                        KlMode::Save(w) => save_row(w, logits, v, arg, log_z)?,
                        KlMode::Compare { reader, stats, row } => {
                            compare_row(reader, row, stats, logits, arg, log_z)?
                        }
                    }
                }
            }
            pb.inc((b1 - b0) as u64);
            b0 = b1;
        }
        let ppl = (nll / count as f64).exp();
        running.push(ppl);
        let piece = format!("[{}]{ppl:.4},", c + 1);
        if defer_line {
            pb.set_message(piece.clone());
        } else if !args.json {
            write!(stdout, "{piece}")?;
            stdout.flush()?;
        }
        line.push_str(&piece);
    }
    pb.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();
    let tps = (n_chunk * n_ctx) as f64 / seconds.max(1e-9);
    let (ppl, err) = ppl_and_err(nll, nll2, count);

    let kl_json = match kl {
        KlMode::Save(mut w) => {
            w.flush()?;
            None
        }
        KlMode::Compare { stats, .. } => Some(kl_report(&stats)),
        KlMode::Off => None,
    };

    if args.json {
        let mut out = json!({
            "model": args.model.model,
            "ppl": ppl,
            "ppl_err": err,
            "chunks": n_chunk,
            "n_ctx": n_ctx,
            "n_batch": n_batch,
            "scored_tokens": count,
            "running_ppl": running,
            "seconds": seconds,
            "load_seconds": load_seconds,
            "tokens_per_second": tps,
            "backend": backend,
            "isa": isa,
            "threads": threads,
        });
        if let Some(k) = kl_json {
            out["kl_divergence"] = k;
        }
        writeln!(stdout, "{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(());
    }
    if defer_line {
        write!(stdout, "{line}")?;
    }
    writeln!(stdout)?;
    writeln!(stdout, "Final estimate: PPL = {ppl:.4} +/- {err:.5}")?;
    if let Some(k) = kl_json {
        writeln!(stdout)?;
        writeln!(
            stdout,
            "Mean PPL(base)        : {:10.4}",
            k["ppl_base"].as_f64().unwrap_or(f64::NAN)
        )?;
        writeln!(stdout, "Mean PPL(this run)    : {ppl:10.4}")?;
        writeln!(
            stdout,
            "Mean KLD              : {:10.6} ± {:.6}",
            k["mean"].as_f64().unwrap_or(f64::NAN),
            k["mean_err"].as_f64().unwrap_or(f64::NAN)
        )?;
        for (label, key) in [
            ("Median KLD            ", "median"),
            ("99.0% KLD             ", "p99"),
            ("Maximum KLD           ", "max"),
        ] {
            writeln!(
                stdout,
                "{label}: {:10.6}",
                k[key].as_f64().unwrap_or(f64::NAN)
            )?;
        }
        writeln!(
            stdout,
            "Same top-1            : {:9.3} ± {:.3} %",
            k["top1_agreement_percent"].as_f64().unwrap_or(f64::NAN),
            k["top1_agreement_err"].as_f64().unwrap_or(f64::NAN)
        )?;
    }
    eprintln!(
        "perplexity: {:.2} s for {} tokens ({tps:.2} tokens per second), load {:.2} s",
        seconds,
        n_chunk * n_ctx,
        load_seconds
    );
    Ok(())
}

/// Summary of a KL comparison as JSON (also the source of the text report).
fn kl_report(stats: &KlStats) -> serde_json::Value {
    let n = stats.kld.len();
    if n == 0 {
        return json!({ "tokens": 0 });
    }
    let nf = n as f64;
    let mean = stats.kld.iter().sum::<f64>() / nf;
    let var = stats.kld.iter().map(|k| (k - mean).powi(2)).sum::<f64>() / nf;
    let mean_err = if n > 1 {
        (var / (nf - 1.0)).sqrt()
    } else {
        0.0
    };
    let mut sorted = stats.kld.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |q: f64| sorted[((q * (nf - 1.0)).round() as usize).min(n - 1)];
    let p = stats.same_top1 as f64 / nf;
    let p_err = if n > 1 {
        (p * (1.0 - p) / (nf - 1.0)).sqrt()
    } else {
        0.0
    };
    json!({
        "tokens": n,
        "mean": mean,
        "mean_err": mean_err,
        "median": pct(0.5),
        "p99": pct(0.99),
        "max": sorted[n - 1],
        "top1_agreement_percent": 100.0 * p,
        "top1_agreement_err": 100.0 * p_err,
        "ppl_base": (stats.base_nll / nf).exp(),
    })
}
