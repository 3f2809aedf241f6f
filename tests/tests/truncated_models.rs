//! A real model cut short is refused when it is opened — the reader checks every tensor's data
//! against the file size — so nothing maps past the end and faults (SIGBUS) later.

use std::fs::File;
use std::io::Read;

use tessera_engine::{GgufError, GgufFile};
use tessera_models::hparams::RopeOverrides;
use tessera_models::{Model, ModelError};

fn check(file: &str, cuts: &[fn(u64, u64) -> u64]) {
    let Some(path) = tessera_tests::model(file) else {
        return;
    };
    let size = std::fs::metadata(&path).unwrap().len();
    let header = GgufFile::open(&path).unwrap().header().clone();
    let last = header
        .tensors
        .iter()
        .max_by_key(|t| t.offset + t.n_bytes)
        .unwrap()
        .name
        .clone();
    let dir = std::env::temp_dir().join(format!("tessera-truncated-{}-{file}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for cut in cuts {
        let cut = cut(size, header.data_offset);
        let p = dir.join("cut.gguf");
        let mut out = File::create(&p).unwrap();
        std::io::copy(&mut File::open(&path).unwrap().take(cut), &mut out).unwrap();
        drop(out);
        match Model::load(&p, &RopeOverrides::default()) {
            Err(ModelError::Gguf(GgufError::TensorOutOfBounds { tensor, .. })) => {
                if cut == size - 1 {
                    assert_eq!(tensor, last, "the last tensor is the one cut");
                }
            }
            Err(ModelError::Gguf(
                GgufError::Truncated { .. } | GgufError::CountTooLarge { .. },
            )) => {
                assert!(cut < header.data_offset, "cut {cut}");
            }
            Err(e) => panic!("{file} cut at {cut}: {e}"),
            Ok(_) => panic!("{file} cut at {cut} loaded"),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncated_smollm2_is_refused_at_open() {
    check(
        tessera_tests::SMOLLM2,
        &[|s, _| s - 1, |s, d| d + (s - d) / 2, |_, d| d, |_, d| d / 2],
    );
}

#[test]
fn truncated_gemma3_is_refused_at_open() {
    check(tessera_tests::GEMMA3, &[|s, _| s - 1, |_, d| d - 1]);
}
