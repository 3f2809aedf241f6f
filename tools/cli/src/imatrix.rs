//! `tessera imatrix -m MODEL -f TEXT [-o imatrix.gguf] [-c 512] [--chunks N] [-t N]
//! [--process-output]`: the importance matrix of a model over a calibration text, in llama.cpp's
//! GGUF imatrix format (see `tessera_models::quantize::imatrix`), for `tessera quantize
//! --imatrix` or llama-quantize. Prints the perplexity of the text along the way, as
//! llama-imatrix does.

use std::io::IsTerminal;
use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tessera_models::Model;
use tessera_models::hparams::RopeOverrides;
use tessera_models::quantize::calibrate::{CalibrationParams, compute};

use crate::CliResult;

/// Arguments of `tessera imatrix`.
#[derive(Args, Debug)]
pub struct ImatrixArgs {
    /// Model: a GGUF path or a registry name, pulled on first use.
    #[arg(short = 'm', long = "model")]
    model: String,
    /// The calibration text.
    #[arg(short = 'f', long = "file")]
    file: String,
    /// Where to write the matrix.
    #[arg(short = 'o', long = "output", default_value = "imatrix.gguf")]
    output: String,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    n_ctx: usize,
    /// Evaluate at most this many chunks.
    #[arg(long = "chunks")]
    chunks: Option<usize>,
    /// CPU threads (default: all cores).
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    threads: usize,
    /// Also collect the output projection (output.weight).
    #[arg(long = "process-output")]
    process_output: bool,
    /// Turn control tokens written in the text into their ids.
    #[arg(long = "parse-special")]
    parse_special: bool,
}

/// Run `tessera imatrix`.
pub fn run(args: ImatrixArgs) -> CliResult {
    let path = tessera_registry::resolve_model(&args.model)?;
    let model = Arc::new(
        Model::load(&path, &RopeOverrides::default())
            .map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let text = std::fs::read_to_string(&args.file).map_err(|e| format!("{}: {e}", args.file))?;
    let tokens = model.tokenizer().encode(&text, true, args.parse_special);
    let params = CalibrationParams {
        n_ctx: args.n_ctx,
        max_chunks: args.chunks,
        n_threads: args.threads,
        process_output: args.process_output,
        dataset: args.file.clone(),
    };
    let pb = if std::io::stderr().is_terminal() {
        let pb = ProgressBar::new(0);
        pb.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} chunks, ETA {eta}")
                .expect("valid template"),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let t0 = std::time::Instant::now();
    let cal = compute(model, &tokens, &params, |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    })?;
    pb.finish_and_clear();
    cal.imatrix
        .write(args.output.as_ref())
        .map_err(|e| e.to_string())?;
    println!(
        "{}: {} matrices over {} chunks of {} tokens ({:.1} s); perplexity {:.4}",
        args.output,
        cal.imatrix.entries.len(),
        cal.n_chunks,
        args.n_ctx,
        t0.elapsed().as_secs_f64(),
        cal.perplexity
    );
    Ok(())
}
