//! `tessera perplexity` driven through the built binary.
//!
//! The figures of llama.cpp's `llama-perplexity` on `/usr/share/common-licenses/GPL-3`
//! (shared/fixtures/README.md) are the targets, ±1%. Those runs evaluate ~7,000 tokens each and
//! take minutes on a small CPU, so they are `#[ignore]`d: run them in release, one at a time,
//!
//! ```text
//! cargo test --release -p tessera-cli --test perplexity -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Each prints its figure, seconds and tokens/s. The KL-divergence round trip and the refusals
//! are cheap and always run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;
use tessera_tests::{GEMMA3, SMOLLM2, model};

/// The text llama.cpp's figures were measured on.
const GPL3: &str = "/usr/share/common-licenses/GPL-3";

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("the tessera binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// GPL-3, or `None` (test skipped) where the system lacks it.
fn gpl3() -> Option<&'static str> {
    if Path::new(GPL3).is_file() {
        Some(GPL3)
    } else {
        eprintln!("skipped: {GPL3} is missing");
        None
    }
}

/// Run `perplexity --json` with `extra` flags and return the parsed object.
fn perplexity_json(model: &Path, extra: &[&str]) -> Value {
    let m = model.to_str().unwrap();
    let args = [&["perplexity", "-m", m, "--json"][..], extra].concat();
    let out = tessera(&args);
    assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// Measure the whole of GPL-3 and compare with llama.cpp's figure.
fn ppl_matches(file: &str, extra: &[&str], expected: f64, expected_chunks: Option<u64>) {
    let (Some(path), Some(text)) = (model(file), gpl3()) else {
        return;
    };
    let t0 = Instant::now();
    let v = perplexity_json(&path, &[&["-f", text][..], extra].concat());
    let ppl = v["ppl"].as_f64().unwrap();
    eprintln!(
        "{file} {extra:?}: PPL {ppl:.4} ± {:.4} (llama.cpp {expected}), {} chunks, {:.1} s, \
         {:.1} tokens/s",
        v["ppl_err"].as_f64().unwrap(),
        v["chunks"],
        t0.elapsed().as_secs_f64(),
        v["tokens_per_second"].as_f64().unwrap()
    );
    if let Some(c) = expected_chunks {
        assert_eq!(v["chunks"].as_u64(), Some(c), "chunk count");
    }
    let rel = (ppl - expected).abs() / expected;
    assert!(
        rel <= 0.01,
        "PPL {ppl:.4} is {:.2}% from llama.cpp's {expected}",
        rel * 100.0
    );
}

#[test]
#[ignore = "expensive: ~7k tokens; run in release with --ignored"]
fn smollm2_ctx512() {
    ppl_matches(SMOLLM2, &["-c", "512"], 18.3459, Some(14));
}

#[test]
#[ignore = "expensive: ~7k tokens; run in release with --ignored"]
fn gemma3_ctx512() {
    ppl_matches(GEMMA3, &["-c", "512"], 13.8844, None);
}

#[test]
#[ignore = "expensive: ~7k tokens; run in release with --ignored"]
fn gemma3_ctx2048_sliding_window() {
    ppl_matches(GEMMA3, &["-c", "2048"], 14.5067, None);
}

#[test]
#[ignore = "expensive: ~7k tokens; run in release with --ignored"]
fn smollm2_yarn_factor4_ctx1024() {
    ppl_matches(
        SMOLLM2,
        &[
            "--rope-scaling",
            "yarn",
            "--rope-scale",
            "4",
            "--yarn-orig-ctx",
            "256",
            "-c",
            "1024",
        ],
        21.8228,
        None,
    );
}

/// Save a base, compare the same run with it: no divergence, same argmax everywhere.
#[test]
fn kl_divergence_round_trip() {
    let (Some(path), Some(text)) = (model(SMOLLM2), gpl3()) else {
        return;
    };
    let base: PathBuf =
        std::env::temp_dir().join(format!("tessera-kld-{}.bin", std::process::id()));
    let b = base.to_str().unwrap();
    let common = ["-c", "128", "--chunks", "2"];
    let saved = perplexity_json(
        &path,
        &[&common[..], &["-f", text, "--kl-divergence-base", b]].concat(),
    );
    assert_eq!(saved["chunks"], 2);
    let cmp = perplexity_json(
        &path,
        &[&common[..], &["--kl-divergence-base", b, "--kl-divergence"]].concat(),
    );
    std::fs::remove_file(&base).ok();
    let k = &cmp["kl_divergence"];
    assert_eq!(k["tokens"], 2 * 63);
    assert!(k["mean"].as_f64().unwrap().abs() < 1e-4, "{k}");
    assert!(k["max"].as_f64().unwrap() < 1e-3, "{k}");
    assert_eq!(k["top1_agreement_percent"].as_f64(), Some(100.0));
    let (p0, p1, pb) = (
        saved["ppl"].as_f64().unwrap(),
        cmp["ppl"].as_f64().unwrap(),
        k["ppl_base"].as_f64().unwrap(),
    );
    assert!((p0 - p1).abs() < 1e-9 * p0, "{p0} vs {p1}");
    assert!((pb - p0).abs() < 1e-4 * p0, "{pb} vs {p0}");
}

/// A base file llama.cpp's `llama-perplexity` wrote (`_logits_` format; the command is in
/// `tools/cli/tests/fixtures/README.md`) is read: its tokens, its log-probs (the base
/// perplexity is llama.cpp's own figure) and a divergence of the size Tessera has from llama.cpp
/// on SmolLM2. Three positions at the start of a text (perplexity ~12 000: nearly flat
/// distributions) say nothing about top-1 agreement, so it is not checked here.
#[test]
fn kl_divergence_reads_llama_cpp_base_files() {
    let Some(path) = model(SMOLLM2) else {
        return;
    };
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2-c8.logits");
    let cmp = perplexity_json(
        &path,
        &[
            "-c",
            "8",
            "--kl-divergence-base",
            base.to_str().unwrap(),
            "--kl-divergence",
        ],
    );
    let k = &cmp["kl_divergence"];
    assert_eq!(k["tokens"], 3);
    let mean = k["mean"].as_f64().unwrap();
    assert!((0.0..0.05).contains(&mean), "{k}");
    let (p, pb) = (
        cmp["ppl"].as_f64().unwrap(),
        k["ppl_base"].as_f64().unwrap(),
    );
    // llama.cpp printed PPL = 11900.4336 for this chunk; the base file's quantized log-probs
    // give it back to 0.01%.
    assert!((pb - 11900.4336).abs() < 1e-4 * pb, "base {pb}");
    // Over three nearly flat positions the perplexity swings with rounding: llama.cpp against
    // its own base file with flash attention off gets PPL 9300.70 (ln ratio −0.246, KL 0.0144;
    // see tests/fixtures/README.md). Tessera must stay inside that spread.
    assert!((p / pb).ln().abs() < 0.25, "{p} vs llama.cpp {pb}");
}

/// Running values per chunk on stdout, then `PPL = x +/- err`, as llama.cpp prints them.
#[test]
fn text_output_is_llama_cpp_like() {
    let (Some(path), Some(text)) = (model(SMOLLM2), gpl3()) else {
        return;
    };
    let out = tessera(&[
        "perplexity",
        "-m",
        path.to_str().unwrap(),
        "-f",
        text,
        "-c",
        "64",
        "--chunks",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.starts_with("[1]"), "{s}");
    assert!(s.contains(",[2]"), "{s}");
    assert!(s.contains("Final estimate: PPL = "), "{s}");
    assert!(s.contains(" +/- "), "{s}");
}

#[test]
fn refusals_name_the_problem() {
    let Some(path) = model(SMOLLM2) else { return };
    let m = path.to_str().unwrap();
    let short = std::env::temp_dir().join(format!("tessera-ppl-short-{}.txt", std::process::id()));
    std::fs::write(&short, "Too short a text.").unwrap();
    let s = short.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["-f", s, "-c", "512"], "needs at least 1024"),
        (&["-f", s, "--chunks", "0"], "--chunks"),
        (&["-f", s, "-c", "0"], "--ctx-size"),
        // Two tokens a chunk score none (this printed PPL = NaN and exited 0).
        (&["-f", s, "-c", "2"], "must be at least 3"),
        (&["-f", s, "--threads", "0"], "--threads"),
        (&["--kl-divergence-base", s, "--kl-divergence"], "bad magic"),
    ];
    for (bad, what) in cases {
        let out = tessera(&[&["perplexity", "-m", m][..], bad].concat());
        assert!(!out.status.success(), "{bad:?} was accepted");
        let err = stderr(&out);
        assert!(err.contains(what), "{bad:?}: {err:?} lacks {what:?}");
    }
    std::fs::remove_file(&short).ok();
}

/// Whether a GPU is there (see `tessera_tests::cli_has_gpu`).
fn have_gpu() -> bool {
    tessera_tests::cli_has_gpu(std::path::Path::new(env!("CARGO_BIN_EXE_tessera")))
}

/// Perplexity on the GPU against the CPU over `extra`'s chunks, within `tolerance` (relative).
fn gpu_close_to_cpu(file: &str, extra: &[&str], tolerance: f64) {
    let (Some(path), Some(text)) = (model(file), gpl3()) else {
        return;
    };
    if !have_gpu() {
        return;
    }
    let args = [&["-f", text][..], extra].concat();
    let t0 = Instant::now();
    let cpu_json = perplexity_json(&path, &args);
    assert_eq!(cpu_json["backend"], "cpu");
    let cpu = cpu_json["ppl"].as_f64().unwrap();
    let t1 = Instant::now();
    let gpu_json = perplexity_json(&path, &[&args[..], &["--device", "gpu"]].concat());
    let gpu = gpu_json["ppl"].as_f64().unwrap();
    // The adapter's description, never "cpu".
    assert_ne!(gpu_json["backend"], "cpu", "{gpu_json}");
    let rel = (gpu - cpu).abs() / cpu;
    eprintln!(
        "{file} {extra:?}: PPL cpu {cpu:.4} ({:.1} s), gpu {gpu:.4} ({:.1} s), {:.2}% apart",
        (t1 - t0).as_secs_f64(),
        t1.elapsed().as_secs_f64(),
        rel * 100.0
    );
    assert!(
        gpu.is_finite() && rel <= tolerance,
        "GPU {gpu} vs CPU {cpu}"
    );
}

// Over 2 chunks of 128 tokens (128 scored), two correct paths differ by a few percent: our
// scalar and AVX2 CPU paths give SmolLM2 28.50 vs 29.05 and Gemma 3 13.50 vs 13.78, the GPU
// 30.07 and 13.49. So these cheap runs (software Vulkan in CI takes a minute or two for them)
// bound the GPU at 5%: they catch a broken kernel, not a small bias. The 0.5% check needs
// about a thousand scored tokens: the ignored tests below (4 chunks of 512, 1,020 scored),
// half an hour each on lavapipe, minutes on a real GPU.

#[test]
fn gpu_smollm2_close_to_cpu_short() {
    gpu_close_to_cpu(SMOLLM2, &["-c", "128", "--chunks", "2"], 0.05);
}

#[test]
fn gpu_gemma3_close_to_cpu_short() {
    gpu_close_to_cpu(GEMMA3, &["-c", "128", "--chunks", "2"], 0.05);
}

#[test]
#[ignore = "expensive: 2,048 tokens on the GPU, ~30 min on lavapipe"]
fn gpu_smollm2_ctx512_within_half_percent_of_cpu() {
    gpu_close_to_cpu(SMOLLM2, &["-c", "512", "--chunks", "4"], 0.005);
}

#[test]
#[ignore = "expensive: 2,048 tokens on the GPU, ~30 min on lavapipe"]
fn gpu_gemma3_ctx512_within_half_percent_of_cpu() {
    gpu_close_to_cpu(GEMMA3, &["-c", "512", "--chunks", "4"], 0.005);
}
