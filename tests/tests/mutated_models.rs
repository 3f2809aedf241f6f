//! Mutated real models, end to end through the library: 100 seeded mutations of each real model
//! (header fields, a few tensor-data bytes — including f16 scales set to NaN or infinity —, both,
//! or a truncation) are loaded and, when they load, run a short prompt and generate at most 4
//! tokens through `Session`. Nothing may panic (a panic fails the test and names the seed) and
//! nothing may hang (a watchdog aborts the run, naming the seed, after two minutes per case).
//!
//! One working copy of each model ([`WorkingCopy`]) is patched in place and restored after every
//! case, so the test copies each model once. `TESSERA_MUTATED_MODELS=N` changes the number of
//! cases per model. The same mutations go through the `tessera run` subprocess in
//! `tools/cli/tests/mutated_run.rs` (exit codes, no signal deaths).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_models::hparams::RopeOverrides;
use tessera_models::sampler::SamplerParams;
use tessera_models::{ContextParams, Flow, Model, Session, SessionParams};
use tessera_tests::working_copy::WorkingCopy;

/// Longest a single case may run before the watchdog aborts the process.
const CASE_LIMIT: Duration = Duration::from_secs(120);

/// What a case did, for the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Refused,
    Ran,
    RunError,
}

/// Load `path` and, when it loads, generate up to 4 tokens after a short prompt.
fn exercise(path: &Path, greedy: bool) -> Outcome {
    let Ok(model) = Model::load(path, &RopeOverrides::default()) else {
        return Outcome::Refused;
    };
    let params = SessionParams {
        context: ContextParams {
            n_ctx: 32,
            n_batch: 32,
            n_threads: 1,
            kv_ring: true,
            device: Default::default(),
            n_seq: 1,
            kv_pool: 0,
        },
        sampler: if greedy {
            SamplerParams::greedy()
        } else {
            SamplerParams {
                seed: 7,
                repeat_penalty: 1.1,
                ..SamplerParams::default()
            }
        },
        ..Default::default()
    };
    let Ok(mut session) = Session::new(Arc::new(model), &params) else {
        return Outcome::RunError;
    };
    let mut prompt = session.tokenize("Hello, world!", true, true);
    prompt.truncate(8);
    if prompt.is_empty() {
        prompt.push(0);
    }
    match session.generate(&prompt, 4, |_, _| Flow::Continue) {
        Ok(stats) => {
            assert!(stats.generated_tokens <= 4);
            Outcome::Ran
        }
        Err(_) => Outcome::RunError,
    }
}

/// The panic message of a caught panic.
fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn run(file: &str, default_cases: u64) {
    let Some(path) = tessera_tests::model(file) else {
        return;
    };
    let cases = std::env::var("TESSERA_MUTATED_MODELS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_cases);
    let t0 = Instant::now();
    let mut copy = WorkingCopy::new(&path, "tessera-mutated-models");

    // The watchdog: the case in progress and when it started.
    let current: Arc<Mutex<Option<(u64, Instant)>>> = Arc::new(Mutex::new(None));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (current, done, file) = (current.clone(), done.clone(), file.to_string());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some((seed, start)) = *current.lock().unwrap()
                    && start.elapsed() > CASE_LIMIT
                {
                    eprintln!("{file}: seed {seed} ran for over {CASE_LIMIT:?}: hang");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let mut panics = Vec::new();
    let mut counts = [0usize; 3];
    for seed in 0..cases {
        let (target, _) = copy.apply(seed);
        *current.lock().unwrap() = Some((seed, Instant::now()));
        let greedy = seed % 2 == 0;
        match catch_unwind(AssertUnwindSafe(|| exercise(&target, greedy))) {
            Ok(o) => counts[o as usize] += 1,
            Err(e) => panics.push((seed, panic_text(&*e))),
        }
        *current.lock().unwrap() = None;
    }
    copy.restore();
    done.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    eprintln!(
        "{file}: {cases} mutated models in {:.1} s: {} refused at load, {} ran, {} refused at run",
        t0.elapsed().as_secs_f64(),
        counts[Outcome::Refused as usize],
        counts[Outcome::Ran as usize],
        counts[Outcome::RunError as usize],
    );
    assert!(
        panics.is_empty(),
        "{file}: panics (seed, message): {panics:?}"
    );
    assert!(counts[Outcome::Ran as usize] > 0, "no mutated model ran");
}

#[test]
fn mutated_smollm2_never_panics_nor_hangs() {
    run(tessera_tests::SMOLLM2, 100);
}

#[test]
fn mutated_gemma3_never_panics_nor_hangs() {
    run(tessera_tests::GEMMA3, 100);
}
