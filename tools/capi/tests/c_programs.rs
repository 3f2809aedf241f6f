//! C programs built against the static library `libtessera.a` that this `cargo test` run
//! produced: the `simple` example on SmolLM2 (checked against llama.cpp's greedy fixture),
//! the hostile caller `tests/c/hostile.c`, several sequences in one context (`tests/c/batch.c`:
//! batched logits bit-identical to each sequence alone), structured output (`tests/c/grammar.c`:
//! JSON schema, GBNF choice and regex outputs checked in C, invalid grammars as error codes),
//! and `simple` under valgrind.
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

/// Names of the functions the header declares.
fn header_functions() -> Vec<String> {
    let h = std::fs::read_to_string(crate_dir().join("include/tessera.h")).unwrap();
    let mut names: Vec<String> = h
        .lines()
        .filter(|l| !l.trim_start().starts_with('*') && !l.trim_start().starts_with("/*"))
        .filter_map(|l| {
            let open = l.find('(')?;
            let name = l[..open].rsplit([' ', '*']).next()?;
            name.starts_with("tessera_").then(|| name.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn both_libraries_export_every_header_function() {
    let names = header_functions();
    assert!(names.len() >= 39, "{names:?}");
    for lib in [common::static_lib(), common::shared_lib()] {
        let mut cmd = Command::new("nm");
        cmd.arg("--defined-only").arg("-g");
        if lib.extension().is_some_and(|e| e == "so") {
            cmd.arg("-D");
        }
        let out = run_ok(cmd.arg(&lib), "nm");
        let symbols: std::collections::HashSet<&str> = std::str::from_utf8(&out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .collect();
        for n in &names {
            assert!(
                symbols.contains(n.as_str()),
                "{} does not export {n}",
                lib.display()
            );
        }
    }
}

#[test]
fn simple_runs_against_the_shared_library() {
    let tmp = TempDir::new("shared");
    let so = common::shared_lib();
    let exe = tmp.path().join("simple_shared");
    run_ok(
        Command::new(common::cc())
            .args(["-std=c99", "-Wall", "-Wextra", "-Werror"])
            .arg("-I")
            .arg(crate_dir().join("include"))
            .arg(crate_dir().join("examples/simple.c"))
            .arg(format!("-L{}", so.parent().unwrap().display()))
            .args(["-ltessera", "-o"])
            .arg(&exe),
        "compiling simple.c against libtessera.so",
    );
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(&exe)
            .args(args)
            .env("LD_LIBRARY_PATH", so.parent().unwrap())
            .output()
            .unwrap()
    };
    let out = run(&["/nonexistent.gguf".as_ref(), "x".as_ref(), "1".as_ref()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
    let Some(model) = smollm2() else { return };
    let out = run(&[
        model.as_os_str(),
        "The capital of France is".as_ref(),
        "2".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), " Paris.\n");
}

#[test]
fn batched_sequences_match_each_sequence_alone() {
    let Some(model) = smollm2() else { return };
    let tmp = TempDir::new("batch");
    let exe = tmp.path().join("batch");
    build_c(&[crate_dir().join("tests/c/batch.c")], &exe, &[]);
    let out = run_ok(Command::new(&exe).arg(&model), "running batch");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

#[test]
fn grammars_constrain_sampling_through_the_c_api() {
    let Some(model) = smollm2() else { return };
    let tmp = TempDir::new("grammar");
    let exe = tmp.path().join("grammar");
    build_c(&[crate_dir().join("tests/c/grammar.c")], &exe, &[]);
    let out = run_ok(Command::new(&exe).arg(&model), "running grammar");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert_eq!(stdout.lines().last(), Some("ok"), "{stdout}");
}
