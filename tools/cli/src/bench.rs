//! `tessera bench`: prompt-processing and generation speed, measured as llama-bench measures it.
//!
//! Each test gets a warm-up run, then `-r` timed repetitions on a fresh KV cache:
//! - `ppP`: one batch of `P` random valid token ids (BOS first when the model adds one),
//!   evaluated at once; the time of that evaluation.
//! - `tgN`: `N` single-token evaluations, each of a random token; the time of all of them.
//! - with `--depth D`, `D` random tokens are evaluated first (not timed), and the test is named
//!   `pp512 @ d4096`.
//! - `tgN xS` (`--parallel S`, S > 1): `S` sequences of one context generate together, as a
//!   server's streams do: `N` steps, each one batch of `S` random tokens (one per sequence,
//!   every one's logits wanted); the time of all of them, `N·S` tokens. Like llama.cpp's
//!   `llama-batched-bench` S_TG, the aggregate rate. With `--depth D` every sequence starts
//!   from the same `D` cached tokens (evaluated once, then copied).
//!
//! Speed is tokens / seconds per repetition, reported as mean ± sample standard deviation, in
//! llama-bench's markdown table or (`--json`) as a JSON array with one object per test.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde_json::{Value, json};
use tessera_engine::GgufFile;
use tessera_models::hparams::RopeOverrides;
use tessera_models::{Batch, Context, ContextParams, Device, Footprint};

use crate::CliResult;
use crate::common::LoadArgs;

/// Arguments of `tessera bench`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
Lists (-p, -n, -t, -d) take comma-separated values; every combination is run.
examples:
  tessera bench -m smollm2-135m                 # pp512 and tg128, 5 repetitions
  tessera bench -m gemma3-270m -p 512 -n 128 -d 0,2048 -t 1,2
  tessera bench -m smollm2-135m -p 32 -n 8 -r 2 --json
  tessera bench -m smollm2-135m -p 0 -n 128 --parallel 1,8   # one stream vs 8 together")]
pub struct BenchArgs {
    /// Model: a GGUF path or a registry name (`smollm2-135m`, `gemma3-270m`), pulled on first use.
    #[arg(short = 'm', long = "model")]
    model: String,
    /// Prompt sizes for the pp tests, comma-separated (0 = no pp test).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    n_prompt: Vec<usize>,
    /// Generated tokens for the tg tests, comma-separated (0 = no tg test).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    n_gen: Vec<usize>,
    /// Timed repetitions of each test (after one warm-up run).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    repetitions: usize,
    /// Thread counts, comma-separated (default: all cores).
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Tokens already in the KV cache when a test starts (filled before timing), comma-separated.
    #[arg(
        short = 'd',
        long = "depth",
        visible_alias = "n-depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    depth: Vec<usize>,
    /// Sequences generating together in the tg tests, comma-separated: `tgN xS` runs `S`
    /// sequences of `N` tokens in steps of `S` tokens and reports their aggregate rate (the pp
    /// tests run once, as one sequence).
    #[arg(long = "parallel", value_delimiter = ',', default_value = "1")]
    parallel: Vec<usize>,
    /// Largest batch evaluated at once: a prompt up to this size is one batch (a batch larger
    /// than a test's context is cut to it).
    #[arg(short = 'b', long = "batch-size", default_value_t = 2048)]
    batch_size: usize,
    #[command(flatten)]
    load: LoadArgs,
    /// Backend to run on: cpu or gpu.
    #[arg(long = "device", default_value = "cpu", value_parser = ["cpu", "gpu"])]
    device: String,
    /// Which GPU with --device gpu (`tessera info --devices` lists them).
    #[arg(long = "gpu-index", default_value_t = 0)]
    gpu_index: usize,
    /// Print a JSON array (one object per test) instead of the markdown table.
    #[arg(long)]
    json: bool,
    /// Skip the warm-up run.
    #[arg(long = "no-warmup")]
    no_warmup: bool,
    /// Say on stderr which test is running.
    #[arg(long)]
    progress: bool,
}

/// One test of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Test {
    n_prompt: usize,
    n_gen: usize,
    depth: usize,
    threads: usize,
    /// Sequences generating together (1: llama-bench's tg).
    seqs: usize,
}

impl Test {
    /// llama-bench's name: `pp512`, `tg128`, `tg128 @ d4096`; `tg128 x8` for 8 sequences.
    fn name(&self) -> String {
        let base = if self.n_prompt > 0 {
            format!("pp{}", self.n_prompt)
        } else if self.seqs > 1 {
            format!("tg{} x{}", self.n_gen, self.seqs)
        } else {
            format!("tg{}", self.n_gen)
        };
        if self.depth > 0 {
            format!("{base} @ d{}", self.depth)
        } else {
            base
        }
    }

    /// Tokens one repetition times.
    fn n_tokens(&self) -> usize {
        self.n_prompt + self.n_gen * self.seqs
    }

    /// Tokens each sequence's context must hold.
    fn n_ctx(&self) -> usize {
        self.depth + self.n_prompt + self.n_gen
    }
}

/// What the table says about the model.
struct ModelInfo {
    filename: String,
    kind: String,
    size: u64,
    params: u64,
}

impl ModelInfo {
    fn new(path: &std::path::Path, file: &GgufFile, arch: &str) -> Self {
        let size = file.tensor_infos().iter().map(|t| t.n_bytes).sum();
        let params = file.tensor_infos().iter().map(|t| t.n_elements()).sum();
        let ftype = file
            .metadata()
            .u32("general.file_type")
            .ok()
            .map(ftype_name)
            .unwrap_or_else(|| "?".into());
        ModelInfo {
            filename: path.display().to_string(),
            kind: format!("{arch} {} {ftype}", size_class(params)),
            size,
            params,
        }
    }
}

/// Timings of a test's repetitions.
struct Samples {
    ns: Vec<u64>,
    n_tokens: usize,
}

impl Samples {
    fn ts(&self) -> Vec<f64> {
        self.ns
            .iter()
            .map(|&ns| self.n_tokens as f64 * 1e9 / ns.max(1) as f64)
            .collect()
    }
}

/// Mean and sample standard deviation (0 for fewer than two values).
fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// llama.cpp's name for a `general.file_type` value.
fn ftype_name(ft: u32) -> String {
    let s = match ft {
        0 => "all F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K - Medium",
        11 => "Q3_K - Small",
        12 => "Q3_K - Medium",
        13 => "Q3_K - Large",
        14 => "Q4_K - Small",
        15 => "Q4_K - Medium",
        16 => "Q5_K - Small",
        17 => "Q5_K - Medium",
        18 => "Q6_K",
        21 => "Q2_K - Small",
        25 => "IQ4_NL - 4.5 bpw",
        30 => "IQ4_XS - 4.25 bpw",
        32 => "BF16",
        _ => return format!("file type {ft}"),
    };
    s.to_string()
}

/// `135M`, `1.2B`: the model's size class from its parameter count.
fn size_class(params: u64) -> String {
    let p = params as f64;
    if p >= 1e9 {
        format!("{:.1}B", p / 1e9)
    } else {
        format!("{:.0}M", p / 1e6)
    }
}

/// `69.56 MiB` or `1.20 GiB`, as llama-bench writes sizes.
fn size_h(bytes: u64) -> String {
    let b = bytes as f64;
    if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

/// `134.52 M` or `1.24 B`, as llama-bench writes parameter counts.
fn params_h(params: u64) -> String {
    let p = params as f64;
    if p < 1e9 {
        format!("{:.2} M", p / 1e6)
    } else {
        format!("{:.2} B", p / 1e9)
    }
}

/// The markdown table's header: llama-bench's columns.
pub const TABLE_HEADER: &str = "| model                          |       size |     params | backend    | threads |            test |                  t/s |\n\
| ------------------------------ | ---------: | ---------: | ---------- | ------: | --------------: | -------------------: |";

fn table_row(m: &ModelInfo, backend: &str, t: &Test, mean: f64, std: f64) -> String {
    format!(
        "| {:<30} | {:>10} | {:>10} | {:<10} | {:>7} | {:>15} | {:>20} |",
        m.kind,
        size_h(m.size),
        params_h(m.params),
        backend,
        t.threads,
        t.name(),
        format!("{mean:.2} ± {std:.2}")
    )
}

fn json_row(m: &ModelInfo, backend: &str, t: &Test, s: &Samples, n_batch: usize) -> Value {
    let ts = s.ts();
    let (mean, std) = mean_std(&ts);
    let ns: Vec<f64> = s.ns.iter().map(|&x| x as f64).collect();
    let (ns_mean, ns_std) = mean_std(&ns);
    json!({
        "model": m.kind,
        "model_filename": m.filename,
        "model_type": m.kind,
        "size": m.size,
        "model_size": m.size,
        "params": m.params,
        "model_n_params": m.params,
        "backend": backend,
        "threads": t.threads,
        "n_threads": t.threads,
        "n_batch": n_batch,
        "test": t.name(),
        "n_prompt": t.n_prompt,
        "n_gen": t.n_gen,
        "depth": t.depth,
        "n_depth": t.depth,
        "n_parallel": t.seqs,
        "repetitions": s.ns.len(),
        "t_s_mean": mean,
        "t_s_std": std,
        "avg_ts": mean,
        "stddev_ts": std,
        "avg_ns": ns_mean.round() as u64,
        "stddev_ns": ns_std.round() as u64,
        "samples_ns": s.ns,
        "samples_ts": ts,
    })
}

/// A small xorshift generator for the random token ids.
struct TokenRng(u64);

impl TokenRng {
    fn next(&mut self, n_vocab: usize) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n_vocab as u64) as u32
    }
}

/// Runs tests on one context.
struct Runner {
    ctx: Context,
    rng: TokenRng,
    n_vocab: usize,
    bos: Option<u32>,
}

impl Runner {
    fn random_tokens(&mut self, n: usize, bos_first: bool) -> Vec<u32> {
        let mut v: Vec<u32> = (0..n).map(|_| self.rng.next(self.n_vocab)).collect();
        if bos_first && let (Some(b), Some(first)) = (self.bos, v.first_mut()) {
            *first = b;
        }
        v
    }

    /// One repetition: fresh cache, depth filled, then the timed part; nanoseconds.
    fn run_once(&mut self, t: &Test, n_prompt: usize, n_gen: usize) -> CliResult<u64> {
        for s in 0..t.seqs as u32 {
            self.ctx.seq_clear(s)?;
        }
        if t.depth > 0 {
            let fill = self.random_tokens(t.depth, true);
            self.ctx.eval(&fill, false)?;
            for s in 1..t.seqs as u32 {
                self.ctx.seq_copy(0, s, t.depth)?;
            }
        }
        let start_with_bos = t.depth == 0;
        if n_prompt > 0 {
            let tokens = self.random_tokens(n_prompt, start_with_bos);
            let t0 = Instant::now();
            self.ctx.eval(&tokens, false)?;
            return Ok(t0.elapsed().as_nanos() as u64);
        }
        let first = |r: &mut Runner| match r.bos {
            Some(b) if start_with_bos => b,
            _ => r.rng.next(r.n_vocab),
        };
        if t.seqs <= 1 {
            let mut token = first(self);
            let t0 = Instant::now();
            for _ in 0..n_gen {
                self.ctx.eval(&[token], false)?;
                token = self.rng.next(self.n_vocab);
            }
            return Ok(t0.elapsed().as_nanos() as u64);
        }
        let mut tokens: Vec<u32> = (0..t.seqs).map(|_| first(self)).collect();
        let mut batch = Batch::new();
        let t0 = Instant::now();
        for step in 0..n_gen {
            batch.clear();
            for (s, &tok) in tokens.iter().enumerate() {
                batch.push(tok, t.depth + step, s as u32, true);
            }
            self.ctx.decode(&batch)?;
            for tok in tokens.iter_mut() {
                *tok = self.rng.next(self.n_vocab);
            }
        }
        Ok(t0.elapsed().as_nanos() as u64)
    }
}

/// Most timed repetitions: every one keeps its time, and more than this measure nothing new.
pub const MAX_REPETITIONS: usize = 100_000;

/// Most sequences one tg test may run together.
pub const MAX_PARALLEL: usize = 4096;

/// Most tokens one test may hold (`-d` + `-p` + `-n`): positions are 32-bit. Whether a
/// context of that size fits in memory is checked once the model is loaded.
pub const MAX_TEST_TOKENS: usize = i32::MAX as usize;

/// Refuse out-of-range counts before the model is loaded; the message names the flag.
fn check_counts(args: &BenchArgs) -> CliResult {
    if args.repetitions == 0 || args.repetitions > MAX_REPETITIONS {
        return Err(format!(
            "-r/--repetitions {} must be between 1 and {MAX_REPETITIONS}",
            args.repetitions
        )
        .into());
    }
    let most = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
    let (p, n, d) = (most(&args.n_prompt), most(&args.n_gen), most(&args.depth));
    for (flag, v) in [("-p/--n-prompt", p), ("-n/--n-gen", n), ("-d/--depth", d)] {
        if v > MAX_TEST_TOKENS {
            return Err(format!("{flag} {v} must be at most {MAX_TEST_TOKENS}").into());
        }
    }
    if d + p.max(n) > MAX_TEST_TOKENS {
        return Err(format!(
            "-d/--depth {d} plus {} tokens is more than the {MAX_TEST_TOKENS} positions a \
             context has",
            p.max(n)
        )
        .into());
    }
    Ok(())
}

/// Run `tessera bench`.
pub fn run(args: BenchArgs) -> CliResult {
    check_counts(&args)?;
    if args.batch_size == 0 {
        return Err("-b/--batch-size must be at least 1".into());
    }
    if let Some(&t) = args.threads.iter().find(|&&t| t == 0 || t > 1024) {
        return Err(format!("-t/--threads {t} must be between 1 and 1024").into());
    }
    if let Some(&s) = args.parallel.iter().find(|&&s| s == 0 || s > MAX_PARALLEL) {
        return Err(format!("--parallel {s} must be between 1 and {MAX_PARALLEL}").into());
    }
    let mut tests = Vec::new();
    let threads = if args.threads.is_empty() {
        vec![0]
    } else {
        args.threads.clone()
    };
    for &th in &threads {
        for &d in &args.depth {
            for &p in args.n_prompt.iter().filter(|&&p| p > 0) {
                tests.push(Test {
                    n_prompt: p,
                    n_gen: 0,
                    depth: d,
                    threads: th,
                    seqs: 1,
                });
            }
            for &n in args.n_gen.iter().filter(|&&n| n > 0) {
                for &seqs in &args.parallel {
                    tests.push(Test {
                        n_prompt: 0,
                        n_gen: n,
                        depth: d,
                        threads: th,
                        seqs,
                    });
                }
            }
        }
    }
    if tests.is_empty() {
        return Err("nothing to run: -p and -n are all 0".into());
    }

    let path = tessera_registry::resolve_model(&args.model)?;
    let model = Arc::new(args.load.load(&path, &RopeOverrides::default())?);
    let info = ModelInfo::new(&path, model.file(), model.hparams().arch.name());
    let device = if args.device == "gpu" {
        Device::Gpu(args.gpu_index)
    } else {
        Device::Cpu
    };
    let backend = if device == Device::Cpu { "CPU" } else { "GPU" };
    let n_vocab = model.hparams().n_vocab;
    let bos = if model.tokenizer().add_bos() {
        model.tokenizer().bos()
    } else {
        None
    };

    let context = |t: &Test| ContextParams {
        n_ctx: t.n_ctx().max(1),
        n_batch: args.batch_size,
        n_threads: t.threads,
        kv_ring: true,
        device,
        n_seq: t.seqs,
        kv_pool: 0,
    };
    // Every test's context must fit before the first one runs.
    for t in &tests {
        Footprint::new(&model, &context(t), t.seqs)
            .check_now()
            .map_err(|e| format!("{}: {e}", t.name()))?;
    }

    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(out, "{TABLE_HEADER}")?;
        out.flush()?;
    }
    let mut rows = Vec::new();
    for mut t in tests {
        let ctx = Context::new(model.clone(), context(&t))?;
        if device != Device::Cpu && args.progress {
            eprintln!("bench: on {}", ctx.backend_name());
        }
        t.threads = ctx.n_threads();
        if args.progress {
            eprintln!(
                "bench: {} with {} threads: {} repetitions",
                t.name(),
                t.threads,
                args.repetitions
            );
        }
        let mut runner = Runner {
            ctx,
            rng: TokenRng(0x9e37_79b9_7f4a_7c15),
            n_vocab,
            bos,
        };
        if !args.no_warmup {
            // As llama-bench: the whole prompt for pp, one token for tg.
            runner.run_once(&t, t.n_prompt, t.n_gen.min(1))?;
        }
        let mut samples = Samples {
            ns: Vec::with_capacity(args.repetitions),
            n_tokens: t.n_tokens(),
        };
        for _ in 0..args.repetitions {
            samples.ns.push(runner.run_once(&t, t.n_prompt, t.n_gen)?);
        }
        if args.json {
            rows.push(json_row(&info, backend, &t, &samples, args.batch_size));
        } else {
            let (mean, std) = mean_std(&samples.ts());
            writeln!(out, "{}", table_row(&info, backend, &t, mean, std))?;
            out.flush()?;
        }
    }
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_like_llama_bench() {
        let t = Test {
            n_prompt: 512,
            n_gen: 0,
            depth: 0,
            threads: 4,
            seqs: 1,
        };
        assert_eq!(t.name(), "pp512");
        let t = Test {
            n_prompt: 0,
            n_gen: 128,
            depth: 4096,
            threads: 4,
            seqs: 1,
        };
        assert_eq!(t.name(), "tg128 @ d4096");
        let t = Test { seqs: 8, ..t };
        assert_eq!(t.name(), "tg128 x8 @ d4096");
        assert_eq!(t.n_tokens(), 1024);
        assert_eq!(t.n_ctx(), 4096 + 128);
    }

    #[test]
    fn formats() {
        assert_eq!(size_h(72_936_448), "69.56 MiB");
        assert_eq!(size_h(3 << 30), "3.00 GiB");
        assert_eq!(params_h(134_515_008), "134.52 M");
        assert_eq!(params_h(1_240_000_000), "1.24 B");
        assert_eq!(size_class(134_515_008), "135M");
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert_eq!((m, s), (2.0, 1.0));
        assert_eq!(mean_std(&[5.0]), (5.0, 0.0));
    }

    #[test]
    fn table_columns() {
        let m = ModelInfo {
            filename: "x.gguf".into(),
            kind: "llama 135M Q4_1".into(),
            size: 72_936_448,
            params: 134_515_008,
        };
        let t = Test {
            n_prompt: 512,
            n_gen: 0,
            depth: 0,
            threads: 2,
            seqs: 1,
        };
        let row = table_row(&m, "CPU", &t, 214.344, 1.2);
        assert!(row.ends_with(" 214.34 ± 1.20 |"), "{row}");
        let header = TABLE_HEADER.lines().next().unwrap();
        assert_eq!(row.matches('|').count(), header.matches('|').count());
    }
}
