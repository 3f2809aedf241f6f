//! Dequantize the first rows of one tensor of every dtype in the real models and check the values
//! are finite and plausible. The models are found in `$TESSERA_MODELS` or
//! `~/.cache/tessera/models`; a missing one fails the test unless
//! `TESSERA_ALLOW_MISSING_MODELS=1` (then it is skipped with a note).

use crate::DType;
use crate::GgufFile;
use crate::quant::reference;
use std::collections::BTreeMap;
use tessera_model_files::{GEMMA3, SMOLLM2, model_file};

fn check_model(name: &str, expect: &[DType]) {
    let Some(path) = model_file(name) else { return };
    let file = GgufFile::open(&path).expect("open model");
    let mut first: BTreeMap<DType, String> = BTreeMap::new();
    for info in file.tensor_infos() {
        first.entry(info.dtype).or_insert_with(|| info.name.clone());
    }
    for t in expect {
        assert!(first.contains_key(t), "{name}: expected a {t} tensor");
    }
    for (dtype, tname) in first {
        let tensor = file.tensor(&tname).unwrap();
        let ops = reference(dtype).unwrap_or_else(|| panic!("{name}: no kernels for {dtype}"));
        let n = tensor.row_len();
        let rows = tensor.n_rows().min(4);
        let mut out = vec![0.0f32; n];
        let (mut sum2, mut count, mut amax) = (0.0f64, 0usize, 0.0f32);
        for r in 0..rows {
            (ops.dequantize_row)(tensor.row(r), &mut out);
            for v in &out {
                assert!(v.is_finite(), "{name} {tname} ({dtype}) row {r}: {v}");
                sum2 += (*v as f64).powi(2);
                amax = amax.max(v.abs());
            }
            count += n;
        }
        let rms = (sum2 / count as f64).sqrt();
        eprintln!("{name} {tname} ({dtype}): {rows}x{n}, rms {rms:.4}, max |x| {amax:.4}");
        assert!(
            rms > 1e-4 && rms < 100.0,
            "{name} {tname} ({dtype}): implausible rms {rms}"
        );
        assert!(
            amax < 1e4,
            "{name} {tname} ({dtype}): implausible max {amax}"
        );
    }
}

#[test]
fn smollm2_q4_1_tensors_dequantize() {
    check_model(SMOLLM2, &[DType::Q4_1, DType::Q8_0, DType::F32]);
}

#[test]
fn gemma3_q4_k_m_tensors_dequantize() {
    check_model(
        GEMMA3,
        &[
            DType::F32,
            DType::Q5_0,
            DType::Q8_0,
            DType::Q4_K,
            DType::Q6_K,
        ],
    );
}
