//! `tessera run` driven through the built binary: llama.cpp's greedy continuations on the two
//! real models (ids from `--json`, text from the stream), and the refusals of bad input.
//!
//! Models come from `$TESSERA_MODELS` or `~/.cache/tessera/models`, fixtures from
//! `$TESSERA_FIXTURES` or `shared/fixtures` beside the checkout (see the `tessera-tests` crate).
//! A missing model fails the test unless `TESSERA_ALLOW_MISSING_MODELS=1`.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use tessera_tests::{GEMMA3, SMOLLM2, greedy, model};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("the tessera binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A file in the temporary directory, unique to this process and test.
fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tessera-run-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).expect("temp file written");
    p
}

/// Greedy `-n 8` on the fixture's prompt: `--json` ids and the streamed text must be
/// llama.cpp's.
fn greedy_matches_llama_cpp(file: &str, fixture_model: &str) {
    let Some(path) = model(file) else { return };
    let path = path.to_str().unwrap();
    let fx = greedy(fixture_model, "capital");
    let n = 8;
    let args = [
        "run", "-m", path, "-p", &fx.prompt, "-n", "8", "--temp", "0", "-c", "256",
    ];

    let out = tessera(&[&args[..], &["--json"]].concat());
    assert!(out.status.success(), "run --json failed: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let ids = |k: &str| -> Vec<u32> {
        v[k].as_array()
            .unwrap_or_else(|| panic!("{k} missing"))
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    assert_eq!(ids("prompt_ids"), fx.prompt_ids, "prompt tokenization");
    assert_eq!(ids("generated_ids"), fx.generated_ids[..n], "greedy ids");
    let expected_text: String = fx.pieces[..n].concat();
    assert_eq!(v["text"].as_str().unwrap(), expected_text);
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["n_ctx"], 256);
    assert!(v["kv_cache_bytes"].as_u64().unwrap() > 0);
    assert!(v["threads"].as_u64().unwrap() >= 1);
    assert!(v["isa"].is_string());
    for k in ["prompt_tokens_per_second", "generation_tokens_per_second"] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}");
    }

    // Streamed: the text, then a newline; the timings go to stderr.
    let out = tessera(&args);
    assert!(out.status.success(), "run failed: {}", stderr(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text, format!("{expected_text}\n"));
    assert!(stderr(&out).contains("tokens per second"));
}

#[test]
fn smollm2_capital_greedy() {
    greedy_matches_llama_cpp(SMOLLM2, "smollm2-135m-instruct-q4_1");
    if let Some(path) = model(SMOLLM2) {
        let out = tessera(&[
            "run",
            "-m",
            path.to_str().unwrap(),
            "-p",
            "The capital of France is",
            "-n",
            "2",
            "--temp",
            "0",
            "-c",
            "64",
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), " Paris.\n");
    }
}

#[test]
fn gemma3_capital_greedy() {
    greedy_matches_llama_cpp(GEMMA3, "gemma-3-270m-q4_k_m");
}

/// Each bad value is refused (before the model loads) with a message naming its flag.
#[test]
fn bad_values_are_refused() {
    let Some(path) = model(SMOLLM2) else { return };
    let path = path.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--temp", "-1"], "--temp"),
        (&["--top-p", "7"], "--top-p"),
        (&["--top-k", "-3"], "--top-k"),
        (&["--min-p", "2"], "--min-p"),
        (&["--repeat-penalty", "0"], "--repeat-penalty"),
        (&["-c", "0"], "--ctx-size"),
        (&["--threads", "0"], "--threads"),
        (&["-n", "-2"], "--n-predict"),
        (&["--keep", "-2"], "--keep"),
        (&["--stats-interval", "-1"], "--stats-interval"),
    ];
    for (bad, flag) in cases {
        let args = [&["run", "-m", path, "-p", "Hello"][..], bad].concat();
        let out = tessera(&args);
        assert!(!out.status.success(), "{bad:?} was accepted");
        let err = stderr(&out);
        assert!(
            err.contains(flag),
            "{bad:?}: message {err:?} does not name {flag}"
        );
        assert!(!err.contains("panicked"), "{bad:?}: {err}");
    }
}

#[test]
fn invalid_utf8_prompt_file_warns_and_runs() {
    let Some(path) = model(SMOLLM2) else { return };
    let f = temp_file("bad-utf8.txt", b"The capital of \xff\xfe France is");
    let out = tessera(&[
        "run",
        "-m",
        path.to_str().unwrap(),
        "-f",
        f.to_str().unwrap(),
        "-n",
        "2",
        "--temp",
        "0",
        "-c",
        "64",
        "--json",
    ]);
    std::fs::remove_file(&f).ok();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("warning") && err.contains("UTF-8"), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["generated_ids"].as_array().unwrap().len(), 2);
}

/// A context past the training context without RoPE scaling runs, with a warning (there was
/// none); within it, or with scaling, no warning.
#[test]
fn context_past_training_warns() {
    let Some(path) = model(SMOLLM2) else { return };
    let m = path.to_str().unwrap();
    let run = |extra: &[&str]| {
        let out = tessera(
            &[
                &["run", "-m", m, "-p", "Hi", "-n", "1", "--temp", "0"][..],
                extra,
            ]
            .concat(),
        );
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        stderr(&out)
    };
    let err = run(&["-c", "8200"]);
    assert!(
        err.contains("warning: -c 8200 is more than the 8192 tokens the model was trained on"),
        "{err}"
    );
    assert!(!run(&["-c", "8192"]).contains("trained on"));
    assert!(
        !run(&["-c", "8200", "--rope-scaling", "yarn", "--rope-scale", "2"]).contains("trained on")
    );
}

/// A prompt with more bytes than the context could hold at the vocabulary's longest token is
/// refused by its byte count, before tokenizing (a 50–100 MB prompt took up to a minute).
#[test]
fn huge_prompt_is_refused_by_size() {
    let Some(path) = model(SMOLLM2) else { return };
    let f = temp_file(
        "huge-prompt.txt",
        "the tiny model ".repeat(200_000).as_bytes(),
    );
    let out = tessera(&[
        "run",
        "-m",
        path.to_str().unwrap(),
        "-f",
        f.to_str().unwrap(),
        "-c",
        "64",
        "-n",
        "1",
    ]);
    std::fs::remove_file(&f).ok();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("the prompt has 3000000 bytes, more than the context size 64"),
        "{err}"
    );
}

#[test]
fn prompt_longer_than_context_is_refused_or_truncated() {
    let Some(path) = model(SMOLLM2) else { return };
    let path = path.to_str().unwrap();
    let long = "one two three four five six seven eight nine ten eleven twelve";
    let out = tessera(&["run", "-m", path, "-p", long, "-c", "8", "-n", "1"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("context size is 8"), "{err}");

    let out = tessera(&[
        "run",
        "-m",
        path,
        "-p",
        long,
        "-c",
        "8",
        "-n",
        "1",
        "--truncate",
        "--json",
        "--temp",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["prompt_ids"].as_array().unwrap().len(), 8);
    assert_eq!(v["generated_ids"].as_array().unwrap().len(), 1);
}

#[test]
fn missing_prompt_is_refused() {
    let out = tessera(&["run", "-m", "nothing.gguf"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--prompt"), "{}", stderr(&out));
}

/// Whether a GPU is there (see `tessera_tests::cli_has_gpu`).
fn have_gpu() -> bool {
    tessera_tests::cli_has_gpu(std::path::Path::new(env!("CARGO_BIN_EXE_tessera")))
}

/// `--device gpu --json`: the backend names the adapter, and greedy decoding gives llama.cpp's
/// first `n` tokens of a fixture whose first steps are sure (llama.cpp's top-1 leads by more
/// than 0.6).
fn gpu_run_greedy(file: &str, fixture_model: &str, fixture: &str, n: usize) {
    let Some(path) = model(file) else { return };
    if !have_gpu() {
        return;
    }
    let fx = greedy(fixture_model, fixture);
    for (i, t) in fx.top5[..n].iter().enumerate() {
        assert!(
            t[0].1 - t[1].1 >= 0.6,
            "step {i} is not a sure step of the fixture"
        );
    }
    let ns = n.to_string();
    let out = tessera(&[
        "run",
        "-m",
        path.to_str().unwrap(),
        "-p",
        &fx.prompt,
        "-n",
        &ns,
        "--temp",
        "0",
        "-c",
        "128",
        "--device",
        "gpu",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "run --device gpu failed: {}",
        stderr(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let backend = v["backend"].as_str().unwrap();
    assert_ne!(backend, "cpu");
    eprintln!("backend: {backend}");
    let ids: Vec<u32> = v["generated_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(ids, fx.generated_ids[..n], "greedy ids on the GPU");
}

#[test]
fn smollm2_greedy_on_gpu() {
    gpu_run_greedy(SMOLLM2, "smollm2-135m-instruct-q4_1", "capital", 4);
}

#[test]
fn gemma3_greedy_on_gpu() {
    gpu_run_greedy(GEMMA3, "gemma-3-270m-q4_k_m", "chat", 4);
}

#[test]
fn unknown_device_values_are_refused() {
    let out = tessera(&["run", "-m", "x.gguf", "-p", "hi", "--device", "tpu"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--device"), "{}", stderr(&out));
    let out = tessera(&[
        "run",
        "-m",
        "x.gguf",
        "-p",
        "hi",
        "--device",
        "cpu",
        "--gpu-index",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--gpu-index"), "{}", stderr(&out));
}
