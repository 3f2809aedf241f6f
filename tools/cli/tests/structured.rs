//! `tessera run` with structured output on SmolLM2: `-j/--json-schema` outputs parse and fit
//! the schema, `--regex` outputs match (checked with the `regex` crate), `--grammar-file`
//! outputs belong to the grammar's language, and an invalid grammar exits with 1 and a
//! message giving the line and column. Sampled at temperature 0.8 with fixed seeds.
//!
//! A missing model fails the test unless `TESSERA_ALLOW_MISSING_MODELS=1`.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use tessera_tests::{SMOLLM2, model};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("the tessera binary runs")
}

/// A file in the temporary directory, unique to this process and test.
fn temp_file(name: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tessera-structured-{}-{name}", std::process::id()));
    std::fs::write(&p, text).expect("temp file written");
    p
}

/// `tessera run --json` on SmolLM2 with `extra` flags and seed `seed`: the generated text.
fn run_text(path: &str, prompt: &str, seed: u32, extra: &[&str]) -> String {
    let seed = seed.to_string();
    let args = [
        "run", "-m", path, "-p", prompt, "-n", "48", "--temp", "0.8", "--seed", &seed, "-c", "256",
        "--json",
    ];
    let out = tessera(&[&args[..], extra].concat());
    assert!(
        out.status.success(),
        "tessera run {extra:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    v["text"].as_str().expect("text").to_owned()
}

#[test]
fn json_schema_regex_and_grammar_file_outputs_conform() {
    let Some(path) = model(SMOLLM2) else { return };
    let path = path.to_str().unwrap();
    let schema = r#"{"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20},
        "population": {"type": "integer", "minimum": 0}},
        "required": ["city", "population"], "additionalProperties": false}"#;
    let schema_file = temp_file("schema.json", schema);
    let grammar_file = temp_file("choice.gbnf", "root ::= \"yes\" | \"no\"\n");
    let rx = regex::Regex::new(r"^[0-9]{2}:[0-9]{2}$").unwrap();
    for seed in [1, 2] {
        // -j with inline JSON, --json-schema with a file.
        for flag in [
            &["-j", schema][..],
            &["--json-schema", schema_file.to_str().unwrap()],
        ] {
            let text = run_text(path, "A city as JSON:\n", seed, flag);
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{flag:?} seed {seed}: {text:?} is not JSON: {e}"));
            assert!(v["city"].is_string() && v["population"].is_u64(), "{text}");
            assert_eq!(v.as_object().unwrap().len(), 2, "{text}");
        }
        let text = run_text(path, "The time is", seed, &["--regex", "[0-9]{2}:[0-9]{2}"]);
        assert!(rx.is_match(&text), "--regex seed {seed}: {text:?}");
        let text = run_text(
            path,
            "Is water wet? Answer:",
            seed,
            &["--grammar-file", grammar_file.to_str().unwrap()],
        );
        assert!(
            text == "yes" || text == "no",
            "--grammar-file seed {seed}: {text:?}"
        );
    }
    let _ = std::fs::remove_file(schema_file);
    let _ = std::fs::remove_file(grammar_file);
}

#[test]
fn an_invalid_grammar_exits_1_with_line_and_column() {
    let Some(path) = model(SMOLLM2) else { return };
    let path = path.to_str().unwrap();
    let bad = temp_file("bad.gbnf", "root ::= item\nitem ::= \"a\" other\n");
    let out = tessera(&[
        "run",
        "-m",
        path,
        "-p",
        "x",
        "-n",
        "4",
        "--grammar-file",
        bad.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(bad);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2, column 14") && err.contains("undefined rule `other`"),
        "{err}"
    );
    // A schema that is not JSON fails before the model loads.
    let out = tessera(&["run", "-m", path, "-p", "x", "-j", "{\"type\": "]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not JSON"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
