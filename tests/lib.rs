//! Shared helpers of Tessera's integration tests: where the real models and llama.cpp's
//! fixtures live, and how a test reacts when they are missing.

use std::path::{Path, PathBuf};

pub mod mutate;
pub mod synthetic;
pub mod teacher;
pub mod working_copy;

/// The real models' file names, and where they are (`$TESSERA_MODELS` or
/// `~/.cache/tessera/models`, as `tessera pull` uses it).
pub use tessera_model_files::{GEMMA3, SMOLLM2, models_dir};

/// `$TESSERA_FIXTURES` or the `shared/fixtures` folder beside the checkout.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("TESSERA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
}

/// The path of a real model; panics when it is missing unless
/// `TESSERA_ALLOW_MISSING_MODELS=1`, in which case it returns `None` (skip).
pub fn model(file: &str) -> Option<PathBuf> {
    tessera_model_files::model_file(file)
}

/// Parse a fixture JSON file (relative to the fixtures folder).
pub fn fixture(rel: &str) -> serde_json::Value {
    let p = fixtures_dir().join(rel);
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("fixture {} unreadable: {e}", p.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// One greedy fixture: prompt ids, generated ids and llama.cpp's top-5 per step.
pub struct Greedy {
    /// Prompt text.
    pub prompt: String,
    /// Prompt token ids.
    pub prompt_ids: Vec<u32>,
    /// Generated ids.
    pub generated_ids: Vec<u32>,
    /// `(id, logit)` top-5 before each generated token.
    pub top5: Vec<Vec<(u32, f32)>>,
    /// Decoded piece of each step.
    pub pieces: Vec<String>,
}

/// Load `greedy/<model>--<name>.json`.
pub fn greedy(model: &str, name: &str) -> Greedy {
    let v = fixture(&format!("greedy/{model}--{name}.json"));
    let ids = |k: &str| -> Vec<u32> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let steps = v["steps"].as_array().unwrap();
    Greedy {
        prompt: v["prompt"].as_str().unwrap().to_string(),
        prompt_ids: ids("prompt_ids"),
        generated_ids: ids("generated_ids"),
        top5: steps
            .iter()
            .map(|s| {
                s["top5"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_f64().unwrap() as f32))
                    .collect()
            })
            .collect(),
        pieces: steps
            .iter()
            .map(|s| s["piece"].as_str().unwrap().to_string())
            .collect(),
    }
}

/// Whether the `tessera` binary at `tessera` lists a GPU in `info --devices --json`. Without
/// one, GPU tests skip (this prints why) — unless `TESSERA_REQUIRE_GPU=1` (CI), which makes a
/// missing GPU a failure.
pub fn cli_has_gpu(tessera: &Path) -> bool {
    let out = std::process::Command::new(tessera)
        .args(["info", "--devices", "--json"])
        .output()
        .expect("the tessera binary runs");
    assert!(
        out.status.success(),
        "info --devices: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let any = v["gpus"].as_array().is_some_and(|g| !g.is_empty());
    if !any {
        assert!(
            std::env::var("TESSERA_REQUIRE_GPU").map_or(true, |v| v != "1"),
            "TESSERA_REQUIRE_GPU=1 but `tessera info --devices` lists no GPU"
        );
        eprintln!("skipped: no GPU");
    }
    any
}
