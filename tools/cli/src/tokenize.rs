//! `tessera tokenize -m MODEL (-p TEXT | -f FILE) [--ids | --json] [--no-bos] [--parse-special]`:
//! the token ids of a text, one `id -> 'piece'` line per token as llama.cpp's `llama-tokenize`
//! prints them, a `[1, 2, 3]` list with `--ids`, or a JSON array of `{"id", "piece"}` objects
//! with `--json`. Only the tokenizer is built, from the GGUF metadata: vocab-only files (no
//! tensors) work, and no weights are read.

use std::io::Write;

use clap::Args;
use serde_json::json;
use tessera_engine::GgufFile;
use tessera_models::tokenizer::Tokenizer;

use crate::CliResult;

/// Arguments of `tessera tokenize`.
#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Model: a GGUF path (vocab-only files work) or a registry name, pulled on first use.
    #[arg(short = 'm', long = "model")]
    model: String,
    /// The text to tokenize.
    #[arg(
        short = 'p',
        long = "prompt",
        conflicts_with = "file",
        required_unless_present = "file"
    )]
    prompt: Option<String>,
    /// A file whose whole content is tokenized.
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// Print only the ids, as a list: `[1, 2, 3]`.
    #[arg(long = "ids", conflicts_with = "json")]
    ids: bool,
    /// Print a JSON array of `{"id": N, "piece": "…"}` objects.
    #[arg(long = "json")]
    json: bool,
    /// Do not add BOS/EOS even where the vocabulary asks for them.
    #[arg(long = "no-bos")]
    no_bos: bool,
    /// Turn control tokens written in the text (e.g. `<|im_start|>`) into their ids.
    #[arg(long = "parse-special")]
    parse_special: bool,
}

/// Run `tessera tokenize`.
pub fn run(args: TokenizeArgs) -> CliResult {
    let path = tessera_registry::resolve_model(&args.model)?;
    let file = GgufFile::open(&path)?;
    let tok =
        Tokenizer::from_gguf(file.metadata()).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?,
        (None, None) => return Err("give a text with -p or a file with -f".into()),
    };
    let ids = tok.encode(&text, !args.no_bos, args.parse_special);
    let out = render(&tok, &ids, args.ids, args.json);
    // A closed pipe (`tessera tokenize … | head`) is not an error worth a message.
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// The output text: `[ids]`, JSON, or one `id -> 'piece'` line per token.
fn render(tok: &Tokenizer, ids: &[u32], only_ids: bool, as_json: bool) -> String {
    let piece = |id: u32| String::from_utf8_lossy(&tok.token_to_piece(id)).into_owned();
    if only_ids {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        format!("[{}]\n", list.join(", "))
    } else if as_json {
        let list: Vec<_> = ids
            .iter()
            .map(|&id| json!({ "id": id, "piece": piece(id) }))
            .collect();
        serde_json::Value::Array(list).to_string() + "\n"
    } else {
        ids.iter()
            .map(|&id| format!("{id:6} -> '{}'\n", piece(id)))
            .collect()
    }
}
