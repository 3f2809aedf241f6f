//! `tessera run` as a subprocess on 100 seeded mutations of each real model (header fields,
//! tensor-data bytes — f16 scales set to NaN or infinity included —, both, or a truncation:
//! the mutations of `tests/tests/mutated_models.rs`, through the same [`WorkingCopy`]).
//!
//! Each case runs `tessera run -n 2 -c 64 -t 1` on a short prompt. The process must never
//! panic (exit code 101 or "panicked" on stderr), never die from a signal, and never run past
//! a minute (it is killed and the test fails naming the seed). A clean refusal — a nonzero exit
//! with an `error:` message — and a normal run both pass; the summary counts refusals at load,
//! runs, and errors after loading. The two models' tests run side by side, each on one working
//! copy patched in place and restored between cases. `TESSERA_MUTATED_RUNS=N` changes the
//! number of cases per model.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tessera_tests::working_copy::WorkingCopy;
use tessera_tests::{GEMMA3, SMOLLM2, model};

/// Longest a case may run before it is killed and counted as a hang.
const CASE_LIMIT: Duration = Duration::from_secs(60);

/// How a case ended, when it ended well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Refused at load (`error: cannot load …`).
    Refused,
    /// Ran and exited 0.
    Ran,
    /// Loaded, then stopped with an error message.
    RunError,
}

/// The last `n` characters of `s`, for failure messages.
fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..=s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    &s[start..]
}

/// Run `tessera run` on `path`; `Err` says what went wrong (panic, signal, hang, silence).
fn run_case(path: &Path, seed: u64, stderr_path: &Path) -> Result<Outcome, String> {
    let sampling: &[&str] = if seed.is_multiple_of(2) {
        &["--temp", "0"]
    } else {
        &["-s", "7", "--repeat-penalty", "1.1"]
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["run", "-m"])
        .arg(path)
        .args(["-p", "Hello, world!", "-n", "2", "-c", "64", "-t", "1"])
        .args(sampling)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(stderr_path).unwrap())
        .spawn()
        .expect("the tessera binary starts");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > CASE_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {CASE_LIMIT:?}: killed (hang)"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = String::from_utf8_lossy(&std::fs::read(stderr_path).unwrap()).into_owned();
    if let Some(signal) = status.signal() {
        return Err(format!("killed by signal {signal}: {}", tail(&stderr, 400)));
    }
    if status.code() == Some(101) || stderr.contains("panicked") {
        return Err(format!("panicked ({status}): {}", tail(&stderr, 400)));
    }
    if status.success() {
        return Ok(Outcome::Ran);
    }
    if stderr.contains("error: cannot load") {
        Ok(Outcome::Refused)
    } else if stderr.contains("error: ") {
        Ok(Outcome::RunError)
    } else {
        Err(format!(
            "{status} without an error message: {}",
            tail(&stderr, 400)
        ))
    }
}

fn run(file: &str, default_cases: u64) {
    let Some(path) = model(file) else { return };
    let cases = std::env::var("TESSERA_MUTATED_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_cases);
    let t0 = Instant::now();
    let mut copy = WorkingCopy::new(&path, "tessera-mutated-run");
    let stderr_path = std::env::temp_dir().join(format!(
        "tessera-mutated-run-{}-{file}.stderr",
        std::process::id()
    ));
    let mut failures = Vec::new();
    let mut counts = [0usize; 3];
    for seed in 0..cases {
        let (target, damage) = copy.apply(seed);
        match run_case(&target, seed, &stderr_path) {
            Ok(o) => counts[o as usize] += 1,
            Err(why) => failures.push(format!("seed {seed} ({damage:?}): {why}")),
        }
    }
    copy.restore();
    let _ = std::fs::remove_file(&stderr_path);
    eprintln!(
        "{file}: tessera run on {cases} mutated models in {:.1} s: {} refused at load, {} ran, \
         {} stopped with an error after loading, {} failed",
        t0.elapsed().as_secs_f64(),
        counts[Outcome::Refused as usize],
        counts[Outcome::Ran as usize],
        counts[Outcome::RunError as usize],
        failures.len(),
    );
    assert!(
        failures.is_empty(),
        "{file}: {} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        cases < 10 || counts[Outcome::Ran as usize] > 0,
        "no mutated model ran"
    );
    assert!(
        cases < 10 || counts[Outcome::Refused as usize] > 0,
        "no mutated model was refused"
    );
}

#[test]
fn tessera_run_on_mutated_smollm2_never_panics_nor_hangs() {
    run(SMOLLM2, 100);
}

#[test]
fn tessera_run_on_mutated_gemma3_never_panics_nor_hangs() {
    run(GEMMA3, 100);
}
