//! The `gpt-4o` pre-tokenizer (o200k, gpt-oss's vocabulary) against llama.cpp.
//!
//! llama.cpp ships no gpt-4o vocabulary, so the split is tested on llama.cpp's
//! `ggml-vocab-llama-bpe.gguf` with `tokenizer.ggml.pre` rewritten to `"gpt-4o"`: here the
//! metadata is copied with that one value replaced; the fixture
//! `tests/fixtures/gpt4o/cases.json` holds llama.cpp's ids for a GGUF file rewritten the same way
//! (by `tests/synthetic/gpt4o_ref.py`, which documents the command), for every input of
//! `ggml-vocab-llama-bpe.gguf.inp` and hard cases of its own (upper-case contractions, CJK,
//! combining marks, digit runs, `\r\n`, trailing spaces, emoji, `/` after punctuation). Inputs are
//! tokenized as `test-tokenizer-0` does (`add_special = false`, `parse_special = false`).
//!
//! The test can fail: with numbers split in twos instead of threes (`\p{N}{1,2}`) 13 of the 101
//! cases differ. Two other deliberate breaks were *not* caught, because llama-bpe's merges never
//! cross the boundaries they move (so the ids stay the same): combining marks counted as letters,
//! and Unicode's own upper/lower case for non-ASCII letters (textbook meanings of the
//! expression, which llama.cpp's evaluation does not have). The word-level unit test
//! `gpt4o_words` in `models/src/tokenizer/pretokenize.rs` pins both.
//!
//! The vocabulary comes from llama.cpp's source tree, found as in `vocab_suites.rs`
//! (`$TESSERA_LLAMA_CPP_SRC`, else the `.ci/run` sdist under `~/.cache/tessera`); a missing tree
//! fails unless `TESSERA_ALLOW_MISSING_MODELS=1`.

use std::path::{Path, PathBuf};
use tessera_engine::GgufFile;
use tessera_engine::gguf::{MetaValue, Metadata};
use tessera_models::tokenizer::Tokenizer;

/// The variable naming llama.cpp's source tree (`…/vendor/llama.cpp`).
const SRC_VAR: &str = "TESSERA_LLAMA_CPP_SRC";
/// The sdist version `.ci/run` fetches.
const SDIST: &str = "llama-cpp-python-0.3.36";

/// llama.cpp's source tree, or `None` when it is missing and that is allowed.
fn llama_cpp_src() -> Option<PathBuf> {
    let dir = match std::env::var_os(SRC_VAR).filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => Path::new(&std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/tessera")
            .join(SDIST)
            .join("vendor/llama.cpp"),
    };
    if dir.join("models").is_dir() {
        return Some(dir);
    }
    assert!(
        tessera_model_files::missing_models_allowed(),
        "llama.cpp's source tree is missing at {} (set {SRC_VAR}, or run .ci/run; \
         TESSERA_ALLOW_MISSING_MODELS=1 skips this test)",
        dir.display()
    );
    eprintln!("skipped: no llama.cpp source tree at {}", dir.display());
    None
}

/// `meta` with `tokenizer.ggml.pre` set to `pre`.
fn with_pre(meta: &Metadata, pre: &str) -> Metadata {
    let mut out = Metadata::new();
    for (key, value) in meta.entries() {
        let value = if key == "tokenizer.ggml.pre" {
            MetaValue::String(pre.to_owned())
        } else {
            value.clone()
        };
        out.insert(key.clone(), value);
    }
    out
}

#[test]
fn gpt4o_split_matches_llama_cpp() {
    let Some(src) = llama_cpp_src() else {
        return;
    };
    let gguf = GgufFile::open(src.join("models/ggml-vocab-llama-bpe.gguf")).expect("open vocab");
    let tok = Tokenizer::from_gguf(&with_pre(gguf.metadata(), "gpt-4o")).expect("gpt-4o vocab");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/gpt4o/cases.json");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).expect("read fixture")).unwrap();
    let cases = cases.as_array().expect("array of cases");
    assert!(cases.len() > 90, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let want: Vec<u32> = case["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect();
        let got = tok.encode(text, false, false);
        if got != want {
            failures.push(format!("{text:?}: want {want:?}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
