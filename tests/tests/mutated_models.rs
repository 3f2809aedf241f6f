//! Mutated real models, end to end through the library: 100 seeded mutations of each real model
//! (header fields, a few tensor-data bytes — including f16 scales set to NaN or infinity —, both,
//! or a truncation) are loaded and, when they load, run a short prompt and generate at most 4
//! tokens through `Session`. Nothing may panic (a panic fails the test and names the seed) and
//! nothing may hang (a watchdog aborts the run, naming the seed, after two minutes per case).
//!
//! One working copy of each model is patched in place and restored after every case, so the test
//! copies each model once. `TESSERA_MUTATED_MODELS=N` changes the number of cases per model.
//!
//! Left for later: the same through the `tessera run` subprocess (exit codes, no signal deaths).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_engine::GgufFile;
use tessera_models::hparams::RopeOverrides;
use tessera_models::sampler::SamplerParams;
use tessera_models::{ContextParams, Flow, Model, Session, SessionParams};
use tessera_tests::mutate::{Patch, Rng, map_header, mutate_data, mutate_fields};

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
    let original = File::open(&path).unwrap();
    let size = original.metadata().unwrap().len();
    let data_offset = GgufFile::open(&path).unwrap().header().data_offset as usize;
    let mut header = vec![0u8; data_offset];
    original.read_exact_at(&mut header, 0).unwrap();
    let map = map_header(&header);
    let read = |offset: u64, len: usize| {
        let mut b = vec![0u8; len];
        original.read_exact_at(&mut b, offset).unwrap();
        b
    };

    let dir = std::env::temp_dir().join(format!(
        "tessera-mutated-models-{}-{file}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let work = dir.join(file);
    std::fs::copy(&path, &work).unwrap();
    let small = dir.join("truncated.gguf");
    let w = OpenOptions::new().write(true).open(&work).unwrap();

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
        let mut rng = Rng::new(seed);
        let mut patches: Vec<Patch> = Vec::new();
        let mut target = work.as_path();
        let mut tail_cut = None;
        match rng.below(10) {
            0..=3 => patches = mutate_fields(&mut rng, &header, &map),
            4..=7 => patches = mutate_data(&mut rng, data_offset, size as usize),
            8 => {
                patches = mutate_fields(&mut rng, &header, &map);
                patches.extend(mutate_data(&mut rng, data_offset, size as usize));
            }
            _ => {
                if rng.one_in(2) {
                    // Cut inside the header: a small separate file.
                    let cut = rng.below(data_offset as u64) as usize;
                    std::fs::write(&small, &header[..cut]).unwrap();
                    target = small.as_path();
                } else {
                    // Cut in the last 8 MiB of tensor data.
                    let cut = size - 1 - rng.below((size - data_offset as u64).min(8 << 20));
                    w.set_len(cut).unwrap();
                    tail_cut = Some(cut);
                }
            }
        }
        let saved: Vec<Vec<u8>> = patches
            .iter()
            .map(|p| read(p.offset as u64, p.bytes.len()))
            .collect();
        for p in &patches {
            w.write_all_at(&p.bytes, p.offset as u64).unwrap();
        }

        *current.lock().unwrap() = Some((seed, Instant::now()));
        let greedy = seed % 2 == 0;
        match catch_unwind(AssertUnwindSafe(|| exercise(target, greedy))) {
            Ok(o) => counts[o as usize] += 1,
            Err(e) => panics.push((seed, panic_text(&*e))),
        }
        *current.lock().unwrap() = None;

        // Restore the working copy.
        for (p, old) in patches.iter().zip(&saved).rev() {
            w.write_all_at(old, p.offset as u64).unwrap();
        }
        if let Some(cut) = tail_cut {
            let tail = read(cut, (size - cut) as usize);
            w.write_all_at(&tail, cut).unwrap();
        }
    }
    done.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
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
