//! C programs built against the static library `libtessera.a` that this `cargo test` run
//! produced: the `simple` example on SmolLM2 (checked against llama.cpp's greedy fixture),
//! the hostile caller `tests/c/hostile.c`, and `simple` under valgrind.
//!
//! Needs `gcc` (or `$CC`) and the SmolLM2 model (`tessera pull smollm2-135m`; missing → fail
//! unless `TESSERA_ALLOW_MISSING_MODELS=1`). The valgrind test fails when valgrind is absent
//! and cannot be installed, unless `TESSERA_SKIP_VALGRIND=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TempDir, build_c, crate_dir, run_ok, smollm2};

/// Build `examples/simple.c` into `dir`.
fn build_simple(dir: &Path) -> PathBuf {
    let exe = dir.join("simple");
    build_c(&[crate_dir().join("examples/simple.c")], &exe, &[]);
    exe
}

#[test]
fn simple_continues_the_capital_prompt_like_llama_cpp() {
    let Some(model) = smollm2() else { return };
    let (prompt, expected) = common::capital_fixture(8);
    assert!(expected.starts_with(" Paris."), "fixture: {expected:?}");
    let tmp = TempDir::new("simple");
    let exe = build_simple(tmp.path());
    let out = run_ok(
        Command::new(&exe).arg(&model).arg(&prompt).arg("8"),
        "running simple",
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    assert!(
        text.starts_with(" Paris."),
        "simple printed {text:?}, expected it to start with \" Paris.\""
    );
    assert_eq!(text.trim_end_matches('\n'), expected.trim_end_matches('\n'));
}

#[test]
fn simple_reports_errors_with_the_last_error_message() {
    let tmp = TempDir::new("simple-err");
    let exe = build_simple(tmp.path());
    let out = Command::new(&exe)
        .args(["/nonexistent/model.gguf", "hello", "4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tessera_model_load failed") && err.contains("/nonexistent/model.gguf"),
        "{err}"
    );
}

#[test]
fn hostile_caller_gets_error_codes_not_crashes() {
    let Some(model) = smollm2() else { return };
    let tmp = TempDir::new("hostile");
    let exe = tmp.path().join("hostile");
    build_c(&[crate_dir().join("tests/c/hostile.c")], &exe, &[]);

    // A file of garbage, and the real model cut short (valid header, missing tensor data).
    let corrupt = tmp.path().join("corrupt.gguf");
    std::fs::write(
        &corrupt,
        b"GGUF\x03\x00\x00\x00 this is not a model \xff\xff\xff\xff",
    )
    .unwrap();
    let truncated = tmp.path().join("truncated.gguf");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len().min(4 << 20)]).unwrap();

    let out = Command::new(&exe)
        .arg(&model)
        .arg(&corrupt)
        .arg(&truncated)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hostile.c ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().last().unwrap_or("");
    assert!(summary.ends_with(" passed, 0 failed"), "{stdout}");
    eprintln!("hostile.c summary ({summary})");
}

/// valgrind, installing it with apt-get when missing; `None` when that is impossible.
fn valgrind() -> Option<&'static str> {
    let present = || {
        Command::new("valgrind")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present() {
        return Some("valgrind");
    }
    eprintln!("valgrind is missing: trying `apt-get install -y valgrind`");
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-q", "valgrind"])
        .status();
    present().then_some("valgrind")
}

#[test]
fn simple_is_clean_under_valgrind() {
    let Some(model) = smollm2() else { return };
    let Some(vg) = valgrind() else {
        if std::env::var("TESSERA_SKIP_VALGRIND").as_deref() == Ok("1") {
            eprintln!("skipped: valgrind is not available (TESSERA_SKIP_VALGRIND=1)");
            return;
        }
        panic!(
            "valgrind is not available and could not be installed (set TESSERA_SKIP_VALGRIND=1 to skip)"
        );
    };
    let tmp = TempDir::new("valgrind");
    let exe = build_simple(tmp.path());
    let log = tmp.path().join("valgrind.log");
    let out = Command::new(vg)
        .arg("--leak-check=full")
        .arg("--errors-for-leak-kinds=definite")
        .arg("--error-exitcode=1")
        .arg(format!("--log-file={}", log.display()))
        .arg(&exe)
        .arg(&model)
        .arg("The capital of France is")
        .arg("4")
        .output()
        .unwrap();
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "valgrind reported errors ({}):\n{report}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(" Paris."),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        report.contains("ERROR SUMMARY: 0 errors"),
        "valgrind:\n{report}"
    );
    // "definitely lost" is absent from the summary when nothing was lost at all.
    if let Some(line) = report.lines().find(|l| l.contains("definitely lost:")) {
        assert!(
            line.contains("definitely lost: 0 bytes"),
            "valgrind:\n{report}"
        );
    }
}
