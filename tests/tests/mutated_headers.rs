//! Deterministic mutation test of the GGUF reader and the model-level validation: thousands of
//! seeded mutations of both real models' headers (counts, string lengths, type ids, dimensions,
//! offsets, metadata values, raw bytes, truncations) are opened and, when they parse, loaded with
//! `Model::from_file` (hyper-parameters, tokenizer, chat template, every weight's presence,
//! shape and type). Each must end in `Ok` or an error — never a panic.
//!
//! The mutated header is written over a sparse copy of the file (the tensor data reads as
//! zeros), so each case costs one header parse, not a copy of the model.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use tessera_engine::GgufFile;
use tessera_models::Model;
use tessera_models::hparams::RopeOverrides;
use tessera_tests::mutate::{Patch, Rng, map_header, mutate_fields};

/// Outcomes of the cases, for the summary line.
#[derive(Default, Debug)]
struct Tally {
    parse_errors: usize,
    model_errors: usize,
    loaded: usize,
    panics: Vec<(u64, String)>,
}

fn run(file: &str, cases: u64) {
    let Some(path) = tessera_tests::model(file) else {
        return;
    };
    let t0 = Instant::now();
    let size = std::fs::metadata(&path).unwrap().len();
    let data_offset = GgufFile::open(&path).unwrap().header().data_offset as usize;
    let mut header = vec![0u8; data_offset];
    File::open(&path).unwrap().read_exact(&mut header).unwrap();
    let map = map_header(&header);

    let dir = std::env::temp_dir().join(format!(
        "tessera-mutated-headers-{}-{file}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let work = dir.join(file);
    std::fs::write(&work, &header).unwrap();
    let f = OpenOptions::new().write(true).open(&work).unwrap();
    f.set_len(size).unwrap(); // sparse: the data section reads as zeros

    let mut tally = Tally::default();
    for seed in 0..cases {
        let mut rng = Rng::new(seed);
        let patches: Vec<Patch> = mutate_fields(&mut rng, &header, &map);
        let cut = match rng.below(10) {
            0 => Some(rng.below(data_offset as u64)),
            1 => Some(rng.below(size)),
            _ => None,
        };
        for p in &patches {
            f.write_all_at(&p.bytes, p.offset as u64).unwrap();
        }
        if let Some(c) = cut {
            f.set_len(c).unwrap();
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| match GgufFile::open(&work) {
            Err(_) => 0,
            Ok(g) => match Model::from_file(g, &RopeOverrides::default()) {
                Err(_) => 1,
                Ok(_) => 2,
            },
        }));
        match outcome {
            Ok(0) => tally.parse_errors += 1,
            Ok(1) => tally.model_errors += 1,
            Ok(_) => tally.loaded += 1,
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                tally.panics.push((seed, msg));
            }
        }
        // Restore the pristine header.
        if let Some(c) = cut {
            f.set_len(size).unwrap();
            if (c as usize) < data_offset {
                f.write_all_at(&header[c as usize..], c).unwrap();
            }
        }
        for p in &patches {
            let end = p.offset + p.bytes.len();
            f.write_all_at(&header[p.offset..end], p.offset as u64)
                .unwrap();
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!(
        "{file}: {cases} mutated headers in {:.1} s: {} refused by the reader, {} by the model \
         validation, {} loaded",
        t0.elapsed().as_secs_f64(),
        tally.parse_errors,
        tally.model_errors,
        tally.loaded
    );
    assert!(
        tally.panics.is_empty(),
        "{file}: panics (seed, message): {:?}",
        tally.panics
    );
    assert!(tally.model_errors > 0 && tally.loaded > 0, "{tally:?}");
}

/// Cases per model: `TESSERA_MUTATIONS` or the default.
fn cases(default: u64) -> u64 {
    std::env::var("TESSERA_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn mutated_smollm2_headers_never_panic() {
    run(tessera_tests::SMOLLM2, cases(1200));
}

#[test]
fn mutated_gemma3_headers_never_panic() {
    run(tessera_tests::GEMMA3, cases(500));
}
