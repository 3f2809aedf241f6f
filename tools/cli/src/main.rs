//! The `tessera` command line: a thin dispatcher over one module per subcommand.

mod bench;
mod chat;
mod common;
mod completions;
mod convert;
mod imatrix;
mod info;
mod perplexity;
mod pull;
mod quantize;
mod run;
mod serve;
mod tokenize;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tessera: run quantized LLMs from GGUF files.
#[derive(Parser, Debug)]
#[command(name = "tessera", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Download a model from the registry into the models directory (verifies its SHA-256).
    Pull(pull::PullArgs),
    /// Show a GGUF file's metadata, hyper-parameters, tokenizer, tensors and KV-cache size.
    Info(info::InfoArgs),
    /// Complete a prompt (-p or -f), streaming the continuation to stdout.
    Run(run::RunArgs),
    /// Perplexity of a text file, measured as llama.cpp's llama-perplexity does (and KL divergence).
    Perplexity(perplexity::PerplexityArgs),
    /// Chat with a model (default: smollm2-135m, pulled on first use); scriptable through stdin.
    Chat(chat::ChatArgs),
    /// Measure prompt (pp) and generation (tg) speed as llama-bench does; markdown or JSON.
    Bench(bench::BenchArgs),
    /// Convert a model: MHA → GQA/MQA by mean-pooling KV heads (--kv-heads G).
    Convert(convert::ConvertArgs),
    /// Compute an importance matrix over a calibration text (llama.cpp's imatrix format).
    Imatrix(imatrix::ImatrixArgs),
    /// Quantize a model to a type or llama.cpp mix (Q4_K_M, …), byte for byte as llama-quantize.
    Quantize(quantize::QuantizeArgs),
    /// Serve a model over HTTP with an OpenAI-compatible API (chat and text completions).
    Serve(serve::ServeArgs),
    /// Print the token ids (and pieces) of a text, as llama-tokenize; works on vocab-only files.
    Tokenize(tokenize::TokenizeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(completions::CompletionsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pull(args) => pull::run(args),
        Command::Info(args) => info::run(args),
        Command::Run(args) => run::run(args),
        Command::Perplexity(args) => perplexity::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Imatrix(args) => imatrix::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Completions(args) => completions::run::<Cli>(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Error type of the subcommands: anything printable.
pub type CliResult<T = ()> = Result<T, Box<dyn std::error::Error>>;
