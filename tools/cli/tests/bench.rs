//! `tessera bench`, `tessera completions` and the help texts through the built binary.
//!
//! The model is looked up in `$TESSERA_MODELS` or `~/.cache/tessera/models`. A missing model
//! fails the test unless `TESSERA_ALLOW_MISSING_MODELS=1`.

use std::process::{Command, Output};

use serde_json::Value;
use tessera_tests::{SMOLLM2, model};

fn tessera(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("the tessera binary runs");
    assert!(
        out.status.success(),
        "tessera {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn bench_json_has_the_fields() {
    let Some(path) = model(SMOLLM2) else { return };
    let path = path.to_str().unwrap();
    let out = tessera(&[
        "bench", "-m", path, "--json", "-p", "32", "-n", "8", "-r", "2",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("bench --json prints JSON");
    let rows = v.as_array().expect("a JSON array");
    assert_eq!(rows.len(), 2, "{v:#}");
    for (row, (test, n_prompt, n_gen)) in rows.iter().zip([("pp32", 32, 0), ("tg8", 0, 8)]) {
        for key in [
            "model",
            "size",
            "params",
            "backend",
            "threads",
            "test",
            "n_prompt",
            "n_gen",
            "depth",
            "t_s_mean",
            "t_s_std",
            "samples_ts",
        ] {
            assert!(row.get(key).is_some(), "{key} missing in {row:#}");
        }
        assert_eq!(row["test"], test);
        assert_eq!(row["n_prompt"], n_prompt);
        assert_eq!(row["n_gen"], n_gen);
        assert_eq!(row["depth"], 0);
        assert_eq!(row["backend"], "CPU");
        assert!(row["model"].as_str().unwrap().starts_with("llama "));
        assert!(row["size"].as_u64().unwrap() > 50 << 20);
        assert!(row["params"].as_u64().unwrap() > 100_000_000);
        assert!(row["threads"].as_u64().unwrap() >= 1);
        let samples = row["samples_ts"].as_array().unwrap();
        assert_eq!(samples.len(), 2);
        let mean = row["t_s_mean"].as_f64().unwrap();
        assert!(mean > 0.0 && mean.is_finite());
        let avg = samples.iter().map(|s| s.as_f64().unwrap()).sum::<f64>() / 2.0;
        assert!((avg - mean).abs() <= 1e-6 * mean, "{avg} vs {mean}");
        assert!(row["t_s_std"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn bench_markdown_has_llama_bench_columns() {
    let Some(path) = model(SMOLLM2) else { return };
    let path = path.to_str().unwrap();
    let out = tessera(&[
        "bench", "-m", path, "-p", "16", "-n", "4", "-r", "1", "-d", "0,8", "-t", "1",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    assert_eq!(
        cells(lines[0]),
        [
            "model", "size", "params", "backend", "threads", "test", "t/s"
        ],
        "{text}"
    );
    assert!(cells(lines[1]).iter().all(|c| c.contains("---")), "{text}");
    let rows: Vec<Vec<String>> = lines[2..].iter().map(|l| cells(l)).collect();
    let tests: Vec<&str> = rows.iter().map(|r| r[5].as_str()).collect();
    assert_eq!(tests, ["pp16", "tg4", "pp16 @ d8", "tg4 @ d8"], "{text}");
    for r in &rows {
        assert_eq!(r.len(), 7);
        assert!(r[1].ends_with(" MiB"), "{r:?}");
        assert!(r[2].ends_with(" M"), "{r:?}");
        assert_eq!(r[3], "CPU");
        assert_eq!(r[4], "1");
        let (mean, std) = r[6].split_once(" ± ").expect("t/s as mean ± std");
        assert!(mean.parse::<f64>().unwrap() > 0.0);
        assert!(std.parse::<f64>().unwrap() >= 0.0);
    }
}

/// `--parallel S`: S sequences generating together, named `tgN xS`, counted as N·S tokens;
/// with a depth every sequence starts from the same cached tokens.
#[test]
fn bench_parallel_sequences() {
    let Some(path) = model(SMOLLM2) else { return };
    let path = path.to_str().unwrap();
    let out = tessera(&[
        "bench",
        "-m",
        path,
        "--json",
        "-p",
        "0",
        "-n",
        "4",
        "-d",
        "8",
        "--parallel",
        "1,3",
        "-r",
        "1",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("bench --json prints JSON");
    let rows = v.as_array().expect("a JSON array");
    assert_eq!(rows.len(), 2, "{v:#}");
    for (row, (test, seqs)) in rows.iter().zip([("tg4 @ d8", 1), ("tg4 x3 @ d8", 3)]) {
        assert_eq!(row["test"], test);
        assert_eq!(row["n_parallel"], seqs);
        assert_eq!(row["n_gen"], 4);
        let ts = row["samples_ts"][0].as_f64().unwrap();
        let ns = row["samples_ns"][0].as_f64().unwrap();
        assert!(ts > 0.0 && ts.is_finite(), "{row:#}");
        // The rate counts every sequence's tokens.
        assert!(
            (ts - (4 * seqs) as f64 * 1e9 / ns).abs() <= 1e-6 * ts,
            "{row:#}"
        );
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["bench", "-m", path, "-p", "0", "-n", "4", "--parallel", "0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--parallel 0"));
}

#[test]
fn bench_refuses_other_devices() {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["bench", "-m", "x.gguf", "--device", "vulkan"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn completions_for_every_shell() {
    for (shell, marker) in [
        ("bash", "complete"),
        ("zsh", "#compdef tessera"),
        ("fish", "complete -c tessera"),
    ] {
        let out = tessera(&["completions", shell]);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(marker), "{shell}: {text}");
        for word in ["chat", "bench", "context-full", "n-prompt"] {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
    }
}

#[test]
fn help_explains_every_flag() {
    for cmd in ["chat", "bench", "completions"] {
        let out = tessera(&[cmd, "--help"]);
        let text = String::from_utf8(out.stdout).unwrap();
        // Every option line is followed by (or carries) a description.
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let indent = l.len() - t.len();
            let option = t.starts_with("--") || t.starts_with('-') && !t.starts_with("- ");
            if option && (2..=6).contains(&indent) {
                let described = t.contains("  ")
                    || lines
                        .get(i + 1)
                        .is_some_and(|n| n.starts_with("          ") && !n.trim().is_empty());
                assert!(described, "tessera {cmd} --help: {l:?} has no description");
            }
        }
    }
    let out = tessera(&["chat", "--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--system",
        "--temp",
        "--context-full",
        "--threads",
        "/reset",
    ] {
        assert!(text.contains(flag), "chat --help lacks {flag}");
    }
}
