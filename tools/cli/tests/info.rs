//! `tessera info` driven through the built binary on the two real models and on a synthetic
//! file of an unsupported architecture.
//!
//! The models are looked up in `$TESSERA_MODELS` or `~/.cache/tessera/models` (`tessera pull`
//! puts them there). A missing model fails the test unless `TESSERA_ALLOW_MISSING_MODELS=1`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use tessera_engine::DType;
use tessera_engine::gguf::{GgufWriter, MetaArray, MetaValue};
use tessera_tests::{GEMMA3, SMOLLM2, model};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("the tessera binary runs")
}

fn info_json(path: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["info", path.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = tessera(&args);
    assert!(
        out.status.success(),
        "tessera info failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("info --json prints one JSON object")
}

/// dtype name → number of tensors, from the `tensors` list.
fn dtype_counts(v: &Value) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for t in v["tensors"].as_array().unwrap() {
        *m.entry(t["dtype"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

#[test]
fn smollm2_json() {
    let Some(path) = model(SMOLLM2) else { return };
    let v = info_json(&path, &[]);
    let h = &v["hparams"];
    assert_eq!(h["arch"], "llama");
    assert_eq!(h["n_layer"], 30);
    assert_eq!(h["n_head"], 9);
    assert_eq!(h["n_head_kv"], 3);
    assert_eq!(h["sliding_window"], Value::Null);
    let counts = dtype_counts(&v);
    let expected: BTreeMap<String, usize> = [("F32", 61), ("Q4_1", 210), ("Q8_0", 1)]
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    assert_eq!(counts, expected);
    // The per-type totals agree with the list.
    for (k, n) in &expected {
        assert_eq!(v["dtype_totals"][k]["count"], *n);
    }
    let t0 = &v["tensors"][0];
    assert_eq!(t0["name"], "token_embd.weight");
    assert_eq!(t0["shape"], serde_json::json!([576, 49152]));
    // Metadata: scalars as values, long arrays summarised.
    let m = &v["metadata"];
    assert_eq!(m["general.architecture"], "llama");
    assert_eq!(m["llama.block_count"], 30);
    assert_eq!(
        m["tokenizer.ggml.tokens"],
        serde_json::json!({"type": "array<string>", "len": 49152})
    );
    assert_eq!(v["tokenizer"]["vocab_size"], 49152);
    assert_eq!(v["tokenizer"]["has_chat_template"], true);
    assert_eq!(v["file_size"], 98362432);
    // 30 layers × 3 KV heads × (64 + 64) values × 2 bytes, and the 9-head equivalent.
    let kv = &v["kv_cache"];
    assert_eq!(kv["n_ctx"], 4096);
    assert_eq!(kv["bytes_per_token"], 30 * 3 * 128 * 2);
    assert_eq!(kv["bytes_per_token_mha"], 30 * 9 * 128 * 2);
    assert_eq!(kv["bytes_at_n_ctx"], 4096 * 30 * 3 * 128 * 2);
    assert_eq!(kv["layers"].as_array().unwrap().len(), 30);
}

#[test]
fn gemma3_json() {
    let Some(path) = model(GEMMA3) else { return };
    let v = info_json(&path, &["-c", "2048"]);
    let h = &v["hparams"];
    assert_eq!(h["arch"], "gemma3");
    assert_eq!(h["n_layer"], 18);
    assert_eq!(h["n_head"], 4);
    assert_eq!(h["n_head_kv"], 1);
    assert_eq!(h["sliding_window"], 512);
    let counts = dtype_counts(&v);
    let kinds: Vec<&str> = counts.keys().map(String::as_str).collect();
    assert_eq!(kinds, ["F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"]);
    assert_eq!(counts.values().sum::<usize>(), 236);
    assert_eq!(v["tokenizer"]["has_chat_template"], false);

    // Every 6th layer is global with the 1e6 RoPE base; local layers keep their window of
    // 512 plus a batch (-b, 512 by default) of cells, as a context allocates them.
    let kv = &v["kv_cache"];
    assert_eq!(kv["n_ctx"], 2048);
    let cell = 256 * 2 * 2; // one KV head, K and V of 256, F16
    let mut total = 0;
    for (il, l) in kv["layers"].as_array().unwrap().iter().enumerate() {
        let global = il % 6 == 5;
        assert_eq!(l["attention"], if global { "global" } else { "local" });
        assert_eq!(l["window"], if global { Value::Null } else { 512.into() });
        assert_eq!(l["rope_base"], if global { 1e6 } else { 1e4 });
        let cells = if global { 2048 } else { 1024 };
        assert_eq!(l["cells"], cells);
        assert_eq!(l["bytes"], cells * cell);
        assert_eq!(l["bytes_mha"], cells * cell * 4);
        total += cells * cell;
    }
    assert_eq!(kv["bytes_at_n_ctx"], total);
    assert_eq!(kv["bytes_at_n_ctx_full_attention"], 18 * 2048 * cell);
    assert_eq!(kv["bytes_per_token_beyond_window"], 3 * cell);
    let v = info_json(&path, &["-c", "2048", "-b", "64"]);
    assert_eq!(v["kv_cache"]["layers"][0]["cells"], 576);
}

#[test]
fn text_output_has_every_section() {
    let Some(path) = model(GEMMA3) else { return };
    let out = tessera(&["info", path.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "== metadata ==",
        "== hyper-parameters ==",
        "== tokenizer ==",
        "== tensors ==",
        "== totals per type ==",
        "== KV cache (F16) ==",
        "MQA",
        "blk.0.attn_q.weight",
        "without sliding window",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn registry_names_are_accepted() {
    let Some(path) = model(SMOLLM2) else { return };
    let dir = path.parent().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["info", "smollm2-135m", "--json"])
        .env("TESSERA_MODELS", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hparams"]["arch"], "llama");
}

#[test]
fn unsupported_architecture_still_lists_metadata_and_tensors() {
    let dir = std::env::temp_dir().join(format!("tessera-info-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("other.gguf");
    let bytes = GgufWriter::new()
        .kv("general.architecture", MetaValue::String("mamba".into()))
        .kv(
            "tokenizer.ggml.tokens",
            MetaValue::Array(MetaArray::String(vec!["a".into(), "b".into()])),
        )
        .kv("mamba.f", MetaValue::F32(0.1))
        .tensor("w", DType::F32, &[4, 2], vec![0; 32])
        .to_bytes();
    std::fs::write(&path, bytes).unwrap();

    let v = info_json(&path, &[]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(v["metadata"]["general.architecture"], "mamba");
    assert_eq!(
        v["metadata"]["tokenizer.ggml.tokens"],
        serde_json::json!(["a", "b"])
    );
    assert_eq!(v["metadata"]["mamba.f"], 0.1);
    assert_eq!(
        v["tensors"],
        serde_json::json!([{"name": "w", "dtype": "F32", "shape": [4, 2], "bytes": 32}])
    );
    let why = v["hparams"]["error"].as_str().unwrap();
    assert!(why.contains("unsupported architecture"), "{why}");
    assert!(v["kv_cache"]["error"].is_string());
}

#[test]
fn bad_arguments_fail_clearly() {
    let out = tessera(&["info", "no-such-model-or-file"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("smollm2-135m") && err.contains("gemma3-270m"),
        "{err}"
    );

    let out = tessera(&["info", "x.gguf", "-c", "0"]);
    assert!(!out.status.success());

    let out = tessera(&["pull", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("known"));
}

/// A FIFO, a directory or a device as the model is refused at once, by kind, from `info` and
/// `run` (opening a FIFO used to wait for a writer forever).
#[cfg(unix)]
#[test]
fn non_regular_model_paths_are_refused_not_waited_on() {
    use std::time::{Duration, Instant};
    let dir = std::env::temp_dir().join(format!("tessera-cli-kinds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("model.gguf");
    let made = Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo {fifo:?}");
    let fifo = fifo.to_str().unwrap();
    let dir_s = dir.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["info", fifo], "it is a FIFO"),
        (&["run", "-m", fifo, "-p", "x", "-n", "1"], "it is a FIFO"),
        (&["info", dir_s], "it is a directory"),
        (&["info", "/dev/zero"], "it is a character device"),
    ];
    for (args, want) in cases {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                child.kill().ok();
                panic!("{args:?} still running after 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
