//! Sizes that reach the allocator are checked first: contexts, batches, repetitions and
//! token counts too large for the memory left (under `ulimit -v` too) are refused with the
//! numbers, never aborted ("memory allocation of … failed") or killed by a signal; oversized
//! chat turns and `run --truncate` prompts are bounded by their byte length before they are
//! tokenized; `--no-mmap` reads the model instead of mapping it and changes nothing else.
//!
//! The real SmolLM2 model is used (a missing model fails unless
//! `TESSERA_ALLOW_MISSING_MODELS=1`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_tests::{SMOLLM2, model};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

/// `tessera ARGS`, under `ulimit -v KIB` when given.
fn tessera(ulimit_kib: Option<u64>, args: &[&str]) -> Output {
    let mut cmd = match ulimit_kib {
        None => Command::new(BIN),
        Some(kib) => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("ulimit -v {kib} && exec \"$0\" \"$@\""), BIN]);
            c
        }
    };
    cmd.args(args).output().expect("tessera runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A clean refusal: exit status 1 (no signal), no allocator abort, `wanted` in the message.
fn refused(out: &Output, wanted: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "not a clean exit: {:?}\n{err}",
        out.status
    );
    assert!(!err.contains("memory allocation of"), "{err}");
    assert!(err.contains(wanted), "expected {wanted:?} in:\n{err}");
}

fn smollm2() -> Option<String> {
    model(SMOLLM2).map(|p| p.to_str().unwrap().to_string())
}

/// A file in the temporary directory, unique to this process and test.
fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tessera-mem-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).expect("temp file written");
    p
}

#[test]
fn a_context_larger_than_memory_is_refused_with_the_numbers() {
    let Some(m) = smollm2() else { return };
    let out = tessera(
        None,
        &["run", "-m", &m, "-p", "Hi", "-n", "1", "-c", "2147483647"],
    );
    refused(&out, "a context of 2147483647 tokens needs ");
    refused(&out, "(KV cache ");
    refused(&out, " available (");
}

#[test]
fn under_ulimit_v_a_large_context_is_refused_and_a_large_batch_runs() {
    let Some(m) = smollm2() else { return };
    let limit = Some(8_000_000);
    let out = tessera(
        limit,
        &["run", "-m", &m, "-p", "Hi", "-n", "1", "-c", "1000000"],
    );
    refused(&out, "a context of 1000000 tokens needs ");
    refused(&out, "RLIMIT_AS");
    // A batch larger than the context is cut to it (it reserved 8 GiB of positions before).
    let args = [
        "run",
        "-m",
        &m,
        "-p",
        "Hi",
        "-n",
        "1",
        "-c",
        "64",
        "-b",
        "2147483647",
    ];
    let out = tessera(limit, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let args = ["perplexity", "-m", &m, "-c", "1000000", "-f", "/dev/null"];
    refused(&tessera(limit, &args), "RLIMIT_AS");
}

#[test]
fn bench_counts_are_checked() {
    let Some(m) = smollm2() else { return };
    let out = tessera(None, &["bench", "-m", &m, "-r", "4294967295"]);
    refused(
        &out,
        "-r/--repetitions 4294967295 must be between 1 and 100000",
    );
    let out = tessera(None, &["bench", "-m", &m, "-p", "2147483647", "-n", "0"]);
    refused(&out, "pp2147483647: a context of 2147483647 tokens needs ");
    let out = tessera(None, &["bench", "-m", &m, "-p", "0", "-n", "2147483647"]);
    refused(&out, "tg2147483647: a context of 2147483647 tokens needs ");
    let out = tessera(None, &["bench", "-m", &m, "-d", "2147483647"]);
    refused(&out, "-d/--depth 2147483647 plus 512 tokens is more than");
    let out = tessera(None, &["bench", "-m", &m, "-p", "4294967296"]);
    refused(&out, "-p/--n-prompt 4294967296 must be at most 2147483647");
    // A huge batch is cut to the test's context.
    let args = [
        "bench",
        "-m",
        &m,
        "-p",
        "8",
        "-n",
        "0",
        "-r",
        "1",
        "-b",
        "2147483647",
    ];
    let out = tessera(Some(8_000_000), &args);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A chat turn far larger than the context is refused by its byte length, before tokenizing.
#[test]
fn an_oversized_chat_turn_is_refused_by_size() {
    let Some(m) = smollm2() else { return };
    let line = "the tiny model ".repeat(400_000) + "\n";
    for mode in ["stop", "drop-oldest"] {
        let t0 = Instant::now();
        let mut child = Command::new(BIN)
            .args([
                "chat",
                "-m",
                &m,
                "-t",
                "1",
                "-c",
                "64",
                "--context-full",
                mode,
            ])
            .env("TESSERA_CHAT_HISTORY", "")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        refused(&out, "context full: the conversation has ");
        refused(
            &out,
            "bytes, more than the context of 64 tokens can hold at ",
        );
        assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    }
}

/// `run --truncate` tokenizes only the tail of a huge prompt, and keeps the same tokens as
/// the whole prompt would give where the text is regular.
#[test]
fn truncate_tokenizes_only_the_tail_of_a_huge_prompt() {
    let Some(m) = smollm2() else { return };
    let f = temp_file("huge.txt", "the tiny model ".repeat(400_000).as_bytes());
    let args = [
        "run",
        "-m",
        &m,
        "-f",
        f.to_str().unwrap(),
        "-c",
        "64",
        "-n",
        "1",
    ];
    let out = tessera(
        None,
        &[&args[..], &["--truncate", "--json", "--temp", "0"]].concat(),
    );
    std::fs::remove_file(&f).ok();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("bytes were not tokenized"), "{err}");
    let small = "the tiny model ".repeat(200);
    let whole = tessera(
        None,
        &[
            "run",
            "-m",
            &m,
            "-p",
            &small,
            "-c",
            "64",
            "-n",
            "1",
            "--truncate",
            "--json",
        ],
    );
    assert!(whole.status.success(), "{}", stderr(&whole));
    let ids = |o: &Output| {
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["prompt_ids"].clone()
    };
    assert_eq!(ids(&out), ids(&whole), "the same last 63 tokens (and BOS)");
}

#[test]
fn no_mmap_gives_the_same_tokens() {
    let Some(m) = smollm2() else { return };
    let args = [
        "run",
        "-m",
        &m,
        "-p",
        "The capital of France is",
        "-n",
        "6",
        "--temp",
        "0",
        "-c",
        "64",
        "--json",
    ];
    let (a, b) = (
        tessera(None, &args),
        tessera(None, &[&args[..], &["--no-mmap"]].concat()),
    );
    assert!(a.status.success() && b.status.success(), "{}", stderr(&b));
    let ids = |o: &Output| {
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["generated_ids"].clone()
    };
    assert_eq!(ids(&a), ids(&b));
    let info = tessera(None, &["info", &m, "--no-mmap"]);
    assert!(info.status.success(), "{}", stderr(&info));
}
