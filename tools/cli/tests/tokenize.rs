//! `tessera tokenize` driven through the built binary: on llama.cpp's vocab-only GGUF files
//! (no tensors), whose ids must equal llama.cpp's `.out` files, on a real model, and on a
//! vocabulary with an unknown pre-tokenizer (an error naming it).
//!
//! llama.cpp's source tree is found as in `tests/tests/vocab_suites.rs` (`$TESSERA_LLAMA_CPP_SRC`,
//! else `~/.cache/tessera/llama-cpp-python-0.3.36/vendor/llama.cpp`); it and the models are
//! required unless `TESSERA_ALLOW_MISSING_MODELS=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tessera_engine::gguf::{GgufWriter, MetaArray, MetaValue};
use tessera_tests::{SMOLLM2, model};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("the tessera binary runs")
}

fn stdout_of(args: &[&str]) -> String {
    let out = tessera(args);
    assert!(
        out.status.success(),
        "tessera {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// llama.cpp's `models/` directory, or `None` when missing and that is allowed.
fn vocab_dir() -> Option<PathBuf> {
    let src = match std::env::var_os("TESSERA_LLAMA_CPP_SRC").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => Path::new(&std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/tessera/llama-cpp-python-0.3.36/vendor/llama.cpp"),
    };
    let dir = src.join("models");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("TESSERA_ALLOW_MISSING_MODELS").as_deref() == Ok("1"),
        "llama.cpp's source tree is missing at {} (set TESSERA_LLAMA_CPP_SRC, or run .ci/run)",
        src.display()
    );
    eprintln!("skipped: no llama.cpp source tree at {}", src.display());
    None
}

/// The ids of a `--ids` output line.
fn parse_ids(s: &str) -> Vec<u32> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    s.split(", ")
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect()
}

#[test]
fn vocab_only_files_give_llama_cpps_ids() {
    let Some(dir) = vocab_dir() else { return };
    // (vocabulary, input, llama.cpp's ids from its .out file)
    let cases: &[(&str, &str, &[u32])] = &[
        ("llama-bpe", "Hello world", &[9906, 1917]),
        ("llama-spm", "Hello world", &[15043, 3186]),
        ("qwen2", " Hello", &[21927]),
        ("falcon", "3333", &[22287, 30]),
        (
            "deepseek-llm",
            "ied 4 ½ months",
            &[1052, 207, 19, 207, 19109, 4223],
        ),
    ];
    for &(vocab, text, want) in cases {
        let path = dir.join(format!("ggml-vocab-{vocab}.gguf"));
        let out = stdout_of(&[
            "tokenize",
            "-m",
            path.to_str().unwrap(),
            "-p",
            text,
            "--ids",
            "--no-bos",
        ]);
        assert_eq!(parse_ids(&out), want, "{vocab}: {text:?}");
    }
    // Default output: BOS added as the vocabulary asks, one `id -> 'piece'` line per token.
    let path = dir.join("ggml-vocab-llama-bpe.gguf");
    let out = stdout_of(&[
        "tokenize",
        "-m",
        path.to_str().unwrap(),
        "-p",
        "Hello world",
    ]);
    assert_eq!(
        out,
        "128000 -> '<|begin_of_text|>'\n  9906 -> 'Hello'\n  1917 -> ' world'\n"
    );
}

#[test]
fn file_input_json_and_parse_special() {
    let Some(dir) = vocab_dir() else { return };
    let path = dir.join("ggml-vocab-qwen2.gguf");
    let text = std::env::temp_dir().join(format!("tessera-tokenize-{}.txt", std::process::id()));
    std::fs::write(&text, "<|im_start|>hi").unwrap();
    let out = stdout_of(&[
        "tokenize",
        "-m",
        path.to_str().unwrap(),
        "-f",
        text.to_str().unwrap(),
        "--json",
        "--parse-special",
    ]);
    let _ = std::fs::remove_file(&text);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["piece"], "<|im_start|>");
    assert_eq!(v[1]["piece"], "hi");
    assert_eq!(v.as_array().unwrap().len(), 2);
}

#[test]
fn real_model_matches_the_library() {
    let Some(path) = model(SMOLLM2) else { return };
    let text = "The capital of France is Paris.";
    let out = stdout_of(&[
        "tokenize",
        "-m",
        path.to_str().unwrap(),
        "-p",
        text,
        "--ids",
    ]);
    let file = tessera_engine::GgufFile::open(&path).unwrap();
    let tok = tessera_models::tokenizer::Tokenizer::from_gguf(file.metadata()).unwrap();
    assert_eq!(parse_ids(&out), tok.encode(text, true, false));
    assert_eq!(tok.decode(&parse_ids(&out)), text);
}

#[test]
fn unknown_pre_tokenizer_is_an_error_naming_it() {
    let dir = std::env::temp_dir().join(format!("tessera-tokenize-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vocab.gguf");
    let strs =
        |v: &[&str]| MetaValue::Array(MetaArray::String(v.iter().map(|s| s.to_string()).collect()));
    let bytes = GgufWriter::new()
        .kv("tokenizer.ggml.model", MetaValue::String("gpt2".into()))
        .kv(
            "tokenizer.ggml.pre",
            MetaValue::String("mystery-bpe".into()),
        )
        .kv("tokenizer.ggml.tokens", strs(&["a", "b", "ab"]))
        .kv("tokenizer.ggml.merges", strs(&["a b"]))
        .to_bytes();
    std::fs::write(&path, bytes).unwrap();
    let out = tessera(&["tokenize", "-m", path.to_str().unwrap(), "-p", "ab"]);
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("\"mystery-bpe\"") && err.contains("tokenizer.ggml.pre"),
        "{err}"
    );
}
