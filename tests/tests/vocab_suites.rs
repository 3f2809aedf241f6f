//! llama.cpp's tokenizer test suites (`test-tokenizer-0`), run against Tessera's tokenizers:
//! every `models/ggml-vocab-*.gguf` of llama.cpp's source tree that has `.inp`/`.out` files is
//! loaded (vocab-only GGUF files: metadata, no tensors), each input is tokenized as
//! `test-tokenizer-0` does it (`add_special = false`, `parse_special = false`), and the ids must
//! equal llama.cpp's, case for case.
//!
//! The source tree comes from the `llama-cpp-python` sdist (`.ci/run` fetches it): it is found at
//! `$TESSERA_LLAMA_CPP_SRC` (the `vendor/llama.cpp` directory), else
//! `~/.cache/tessera/llama-cpp-python-0.3.36/vendor/llama.cpp`. A missing tree fails the tests
//! unless `TESSERA_ALLOW_MISSING_MODELS=1` (then they are skipped), as for the models.

use std::path::{Path, PathBuf};
use tessera_engine::GgufFile;
use tessera_models::tokenizer::Tokenizer;

/// The variable naming llama.cpp's source tree (`…/vendor/llama.cpp`).
const SRC_VAR: &str = "TESSERA_LLAMA_CPP_SRC";
/// The sdist version `.ci/run` fetches.
const SDIST: &str = "llama-cpp-python-0.3.36";

/// Vocabularies whose tokenizer model Tessera does not implement, with the reason; loading them
/// must fail with an error naming the model.
const UNSUPPORTED: &[(&str, &str)] = &[("bert-bge", "bert")];

/// The marker line between two inputs of a `.inp` file.
const SEPARATOR: &str = "\n__ggml_vocab_test__\n";

/// llama.cpp's source tree, or `None` when it is missing and that is allowed.
fn llama_cpp_src() -> Option<PathBuf> {
    let dir = match std::env::var_os(SRC_VAR).filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home)
                .join(".cache/tessera")
                .join(SDIST)
                .join("vendor/llama.cpp")
        }
    };
    if dir.join("models").is_dir() {
        return Some(dir);
    }
    assert!(
        tessera_model_files::missing_models_allowed(),
        "llama.cpp's source tree is missing at {} (set {SRC_VAR}, or run .ci/run, which fetches \
         the {SDIST} sdist; TESSERA_ALLOW_MISSING_MODELS=1 skips these tests)",
        dir.display()
    );
    eprintln!("skipped: no llama.cpp source tree at {}", dir.display());
    None
}

/// One vocabulary's suite: its name (`llama-bpe`), GGUF path and (input, expected ids) cases.
struct Suite {
    name: String,
    gguf: PathBuf,
    cases: Vec<(String, Vec<u32>)>,
}

/// Reads every `ggml-vocab-NAME.gguf` that has `.inp` and `.out` files, sorted by name.
fn suites(src: &Path) -> Vec<Suite> {
    let models = src.join("models");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&models).expect("read models/") {
        let path = entry.expect("dir entry").path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(name) = file
            .strip_prefix("ggml-vocab-")
            .and_then(|f| f.strip_suffix(".gguf.inp"))
        else {
            continue;
        };
        let gguf = models.join(format!("ggml-vocab-{name}.gguf"));
        let inp = std::fs::read_to_string(&path).expect("read .inp");
        let out_text =
            std::fs::read_to_string(models.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
        out.push(Suite {
            name: name.to_owned(),
            gguf,
            cases: parse_cases(&inp, &out_text),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Pairs the inputs of a `.inp` file (split at [`SEPARATOR`], as `test-tokenizer-0` does) with
/// the lines of ids of its `.out` file.
fn parse_cases(inp: &str, out: &str) -> Vec<(String, Vec<u32>)> {
    let mut inputs = Vec::new();
    let mut rest = inp;
    while !rest.is_empty() {
        match rest.find(SEPARATOR) {
            Some(i) => {
                inputs.push(rest[..i].to_owned());
                rest = &rest[i + SEPARATOR.len()..];
            }
            None => {
                inputs.push(rest.to_owned());
                break;
            }
        }
    }
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("token id"))
                .collect()
        })
        .collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "inputs and outputs differ in count"
    );
    inputs.into_iter().zip(outputs).collect()
}

fn load(path: &Path) -> Result<Tokenizer, String> {
    let gguf = GgufFile::open(path).map_err(|e| e.to_string())?;
    Tokenizer::from_gguf(gguf.metadata()).map_err(|e| e.to_string())
}

/// Shows a text with its control characters escaped.
fn show(s: &str) -> String {
    format!("{s:?}")
}

#[test]
fn every_vocab_matches_llama_cpp() {
    let Some(src) = llama_cpp_src() else {
        return;
    };
    let suites = suites(&src);
    assert!(suites.len() >= 15, "only {} suites found", suites.len());
    let mut failures = Vec::new();
    for suite in &suites {
        if let Some((_, model)) = UNSUPPORTED.iter().find(|(n, _)| *n == suite.name) {
            let err = load(&suite.gguf).expect_err("unsupported vocabulary loaded");
            assert!(err.contains(model), "{}: {err}", suite.name);
            eprintln!("{:>16}: unsupported ({err})", suite.name);
            continue;
        }
        let tok = match load(&suite.gguf) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{}: does not load: {e}", suite.name));
                continue;
            }
        };
        let mut passed = 0;
        for (text, want) in &suite.cases {
            let got = tok.encode(text, false, false);
            if &got == want {
                passed += 1;
            } else if failures.len() < 40 {
                failures.push(format!(
                    "{}: {}\n    want {want:?}\n    got  {got:?}",
                    suite.name,
                    show(text)
                ));
            }
        }
        eprintln!(
            "{:>16}: {passed}/{} cases bit-exact",
            suite.name,
            suite.cases.len()
        );
        if passed != suite.cases.len() {
            failures.push(format!(
                "{}: {passed}/{} cases",
                suite.name,
                suite.cases.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Detokenization round-trips: `decode(encode(text)) == text` for every case of every supported
/// vocabulary, with one documented exception: a SentencePiece vocabulary with
/// `add_space_prefix` decodes with the space it added in front (llama.cpp's detokenizer drops
/// it only when asked to remove a leading space; `decode` gives the pieces as they are).
#[test]
fn detokenization_round_trips() {
    let Some(src) = llama_cpp_src() else {
        return;
    };
    let mut failures = Vec::new();
    for suite in suites(&src) {
        let Ok(tok) = load(&suite.gguf) else {
            continue; // unsupported: checked by every_vocab_matches_llama_cpp
        };
        let mut passed = 0;
        for (text, _) in &suite.cases {
            let decoded = tok.decode(&tok.encode(text, false, false));
            let decoded = match decoded.strip_prefix(' ') {
                Some(rest) if tok.add_space_prefix() && !text.is_empty() => rest.to_owned(),
                _ => decoded,
            };
            if &decoded == text {
                passed += 1;
            } else {
                failures.push(format!(
                    "{}: {} decodes to {}",
                    suite.name,
                    show(text),
                    show(&decoded)
                ));
            }
        }
        eprintln!(
            "{:>16}: {passed}/{} cases round-trip",
            suite.name,
            suite.cases.len()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
