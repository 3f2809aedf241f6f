//! `tessera quantize IN.gguf OUT.gguf TYPE [THREADS] [--pure] [--leave-output-tensor]
//! [--output-tensor-type T] [--token-embedding-type T] [--allow-requantize] [--imatrix F]
//! [--dry-run]`:
//! convert a model to a smaller type or one of llama.cpp's mixes, writing the bytes
//! llama-quantize writes (see `tessera_models::quantize`). One line per tensor (type in →
//! type out, sizes), a progress bar on a terminal, and the sizes before and after.

use std::io::IsTerminal;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tessera_engine::{DType, GgufFile};
use tessera_models::quantize::imatrix::Imatrix;
use tessera_models::quantize::{self, Choices, FileType, QuantizeParams};

use crate::CliResult;
use crate::units::bytes_h;

/// Arguments of `tessera quantize`.
#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The model to quantize (F32, F16 or BF16 tensors; quantized ones need --allow-requantize).
    input: String,
    /// Where to write the result (written to a temporary file first, renamed at the end).
    output: String,
    /// The file type: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S,
    /// Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, F16, BF16, F32 (Q3_K, Q4_K, Q5_K mean the _M mixes).
    file_type: String,
    /// Threads (default: all cores); also accepted as a fourth argument, as llama-quantize.
    threads_pos: Option<usize>,
    /// Threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Give every quantizable tensor the file type's own type (no mix rules).
    #[arg(long = "pure")]
    pure: bool,
    /// Leave output.weight as it is.
    #[arg(long = "leave-output-tensor")]
    leave_output: bool,
    /// The type of output.weight (and of tied embeddings).
    #[arg(long = "output-tensor-type", value_parser = parse_dtype)]
    output_tensor_type: Option<DType>,
    /// The type of token_embd.weight.
    #[arg(long = "token-embedding-type", value_parser = parse_dtype)]
    token_embedding_type: Option<DType>,
    /// Quantize tensors that are already quantized (loses more quality than starting from F16).
    #[arg(long = "allow-requantize")]
    allow_requantize: bool,
    /// An importance matrix (llama.cpp's GGUF imatrix format, from `tessera imatrix` or
    /// llama-imatrix): the quantizers weigh each column's error by it.
    #[arg(long = "imatrix")]
    imatrix: Option<String>,
    /// Print the plan (each tensor's type and size) without writing anything.
    #[arg(long = "dry-run")]
    dry_run: bool,
}

fn parse_dtype(s: &str) -> Result<DType, String> {
    DType::from_name(s)
        .filter(|t| tessera_engine::quant::reference(*t).is_some())
        .ok_or_else(|| format!("unknown or unsupported tensor type {s:?}"))
}

/// Run `tessera quantize`.
pub fn run(args: QuantizeArgs) -> CliResult {
    let file_type = FileType::parse(&args.file_type).ok_or_else(|| {
        format!(
            "unknown file type {:?}; one of: {}",
            args.file_type,
            FileType::names().join(", ")
        )
    })?;
    let threads = args.threads.or(args.threads_pos).unwrap_or(0);
    let params = QuantizeParams {
        file_type,
        choices: Choices {
            pure: args.pure,
            leave_output: args.leave_output,
            output_type: args.output_tensor_type,
            embedding_type: args.token_embedding_type,
            has_imatrix: false,
        },
        threads,
        allow_requantize: args.allow_requantize,
        imatrix: match &args.imatrix {
            Some(f) => Some((Imatrix::read(f.as_ref())?, f.clone())),
            None => None,
        },
    };
    let file = GgufFile::open(&args.input).map_err(|e| format!("{}: {e}", args.input))?;
    let plan = quantize::plan(&file, &params)?;
    let n_requantize = plan
        .iter()
        .filter(|c| c.from != c.to && c.from.is_quantized())
        .count();
    if n_requantize > 0 {
        eprintln!(
            "warning: requantizing {n_requantize} tensors that are already quantized: the \
             result is worse than quantizing the original F16/F32 model"
        );
    }
    if args.dry_run {
        for c in &plan {
            println!(
                "{:<40} {:>6} -> {:<6}{}",
                c.name,
                c.from,
                c.to,
                fallback_note(c.fell_back)
            );
        }
        return Ok(());
    }
    drop(file);
    let pb = if std::io::stderr().is_terminal() {
        let pb = ProgressBar::new(plan.len() as u64);
        pb.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} tensors, ETA {eta} {msg}")
                .expect("valid template"),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let t0 = std::time::Instant::now();
    let summary = quantize::quantize(args.input.as_ref(), args.output.as_ref(), &params, |d| {
        let c = d.choice;
        let line = format!(
            "[{:>4}/{:>4}] {:<40} {:>6} -> {:<6} {:>10} -> {:>10}{}",
            d.index + 1,
            d.count,
            c.name,
            c.from,
            c.to,
            bytes_h(d.bytes_in),
            bytes_h(d.bytes_out),
            fallback_note(c.fell_back)
        );
        if pb.is_hidden() {
            println!("{line}");
        } else {
            pb.println(line);
        }
        pb.inc(1);
    })?;
    pb.finish_and_clear();
    let bpw = |b: u64| b as f64 * 8.0 / summary.n_elements.max(1) as f64;
    println!(
        "{}: {} ({:.2} BPW) -> {} ({:.2} BPW) as {file_type} in {:.1} s{}",
        args.output,
        bytes_h(summary.bytes_in),
        bpw(summary.bytes_in),
        bytes_h(summary.bytes_out),
        bpw(summary.bytes_out),
        t0.elapsed().as_secs_f64(),
        if summary.n_fallback > 0 {
            format!(
                "; {} of {} tensors fell back to a smaller-block type",
                summary.n_fallback, summary.n_tensors
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

fn fallback_note(fell_back: bool) -> &'static str {
    if fell_back {
        " (rows do not fit the blocks: fallback)"
    } else {
        ""
    }
}
