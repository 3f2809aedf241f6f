//! `tessera quantize` against llama-quantize: two synthetic models (gen.py `quant-llama-f16`,
//! eight MHA layers from F16, and `quant-gqa-f32`, four GQA layers with biases from F32, whose
//! `ffn_down` rows of 336 fit no 32-block) are quantized to every file type Tessera makes, and
//! each output must be byte-identical to llama-quantize's: the whole file's sha256, and on a
//! mismatch every tensor's name, type and bytes are compared to say where. The references
//! (`tests/fixtures/quantize/*.json`) were made by `tests/synthetic/quantize_ref.py`, which
//! runs llama-quantize (llama-cpp-python 0.3.36's llama.cpp) on the same generated files.
//! The importance matrix Tessera computes over the same text is compared with llama-imatrix's
//! (`VARIANT.imatrix.gguf` there): same entries, counts and metadata, sums within 5e-3 of
//! each entry's largest (measured: 1.7e-4 from F32 weights, 1.2e-3 from F16 ones, whose
//! products both engines compute on inputs rounded to F16, which turns small differences
//! upstream into larger ones).

use std::path::Path;

use tessera_engine::gguf::GgufFile;
use tessera_models::quantize::{Choices, FileType, QuantizeParams, quantize};
use tessera_tests::synthetic::{generate, sha256_hex};

fn reference(variant: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/quantize")
        .join(format!("{variant}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture")).expect("json")
}

/// sha256 of bytes, through the same `sha256sum` the fixture check uses.
fn sha_of(bytes: &[u8], dir: &Path) -> String {
    let p = dir.join("tensor.bin");
    std::fs::write(&p, bytes).unwrap();
    sha256_hex(&p)
}

/// Where Tessera's file differs from llama-quantize's, tensor by tensor.
fn differences(out: &Path, want: &serde_json::Value, dir: &Path) -> Vec<String> {
    let f = GgufFile::open(out).expect("output parses");
    let want = want["tensors"].as_array().unwrap();
    let mut diffs = Vec::new();
    if f.tensor_infos().len() != want.len() {
        diffs.push(format!(
            "{} tensors, llama-quantize wrote {}",
            f.tensor_infos().len(),
            want.len()
        ));
    }
    for (info, w) in f.tensor_infos().iter().zip(want) {
        // [name, type, the first 16 hex digits of the data's sha256]
        let (name, ty, sha) = (w[0].as_str().unwrap(), &w[1], w[2].as_str().unwrap());
        if info.name != name {
            diffs.push(format!(
                "tensor {} where llama-quantize has {name}",
                info.name
            ));
            continue;
        }
        if info.dtype.name() != ty.as_str().unwrap() {
            diffs.push(format!("{name}: {} vs {ty}", info.dtype));
            continue;
        }
        if !sha_of(f.view(info).data(), dir).starts_with(sha) {
            diffs.push(format!("{name}: {} bytes differ", info.dtype));
        }
    }
    if diffs.is_empty() {
        diffs.push("tensors equal: the metadata or layout differs".into());
    }
    diffs
}

fn check(variant: &str) {
    check_mixes(variant, false);
}

/// Every mix of the fixture (`with_imatrix`: the ones llama-quantize made with the fixture's
/// importance matrix, given to Tessera under the same file name).
fn check_mixes(variant: &str, with_imatrix: bool) {
    let fx = reference(variant);
    let (mixes, imatrix) = if with_imatrix {
        let name = fx["imatrix"]["file"].as_str().unwrap().to_string();
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/quantize")
            .join(&name);
        let m = tessera_models::quantize::imatrix::Imatrix::read(&path).unwrap();
        (&fx["imatrix"]["mixes"], Some((m, name)))
    } else {
        (&fx["mixes"], None)
    };
    let Some(src) = generate(variant, None) else {
        return;
    };
    assert_eq!(
        sha256_hex(&src),
        fx["model_sha256"].as_str().unwrap(),
        "{variant}: gen.py wrote a different model than the fixture's"
    );
    let dir = std::env::temp_dir().join(format!(
        "tessera-quantize-{}-{variant}-{with_imatrix}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for (mix, want) in mixes.as_object().unwrap() {
        let params = QuantizeParams {
            file_type: FileType::parse(mix).unwrap(),
            choices: Choices::default(),
            threads: 2,
            allow_requantize: false,
            imatrix: imatrix.clone(),
        };
        let out = dir.join(format!("{variant}.{mix}.gguf"));
        quantize(&src, &out, &params, |_| {}).unwrap_or_else(|e| panic!("{variant} {mix}: {e}"));
        let got = sha256_hex(&out);
        if got == want["sha256"].as_str().unwrap() {
            eprintln!("{variant} {mix} (imatrix: {with_imatrix}): identical to llama-quantize");
        } else {
            for d in differences(&out, want, &dir) {
                failures.push(format!("{variant} {mix}: {d}"));
            }
        }
        std::fs::remove_file(&out).ok();
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn mha_from_f16_every_file_type() {
    check("quant-llama-f16");
}

#[test]
fn gqa_with_biases_from_f32_every_file_type() {
    check("quant-gqa-f32");
}

#[test]
fn mha_from_f16_every_file_type_with_an_imatrix() {
    check_mixes("quant-llama-f16", true);
}

#[test]
fn gqa_with_biases_from_f32_every_file_type_with_an_imatrix() {
    check_mixes("quant-gqa-f32", true);
}

#[test]
fn a_wrong_type_choice_is_caught() {
    // The comparison can fail: Q4_K_M without its mix rules (`--pure`) differs from
    // llama-quantize's Q4_K_M exactly where the rules give more bits.
    let variant = "quant-gqa-f32";
    let fx = reference(variant);
    let Some(src) = generate(variant, None) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("tessera-quantize-{}-pure", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("pure.gguf");
    let params = QuantizeParams {
        file_type: FileType::Q4_K_M,
        choices: Choices {
            pure: true,
            ..Default::default()
        },
        threads: 2,
        allow_requantize: false,
        imatrix: None,
    };
    quantize(&src, &out, &params, |_| {}).unwrap();
    let want = &fx["mixes"]["Q4_K_M"];
    assert_ne!(sha256_hex(&out), want["sha256"].as_str().unwrap());
    let diffs = differences(&out, want, &dir);
    eprintln!("{}", diffs.join("\n"));
    assert!(
        diffs
            .iter()
            .any(|d| d.starts_with("blk.3.attn_v.weight: Q4_K vs \"Q6_K\""))
    );
    assert!(
        diffs
            .iter()
            .any(|d| d.starts_with("token_embd.weight: Q4_K vs \"Q6_K\""))
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Tessera's importance matrix of `variant` against llama-imatrix's on the same text.
fn check_imatrix(variant: &str) {
    use std::sync::Arc;
    use tessera_models::Model;
    use tessera_models::quantize::calibrate::{CalibrationParams, compute};
    use tessera_models::quantize::imatrix::Imatrix;
    let fx = reference(variant);
    let Some(src) = generate(variant, None) else {
        return;
    };
    let im = &fx["imatrix"];
    let text_path = im["text"].as_str().unwrap();
    let want = Imatrix::read(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/quantize")
            .join(im["file"].as_str().unwrap()),
    )
    .unwrap();
    let model = Arc::new(Model::load(&src, &Default::default()).unwrap());
    let text = std::fs::read_to_string(text_path).expect("the calibration text");
    let tokens = model.tokenizer().encode(&text, true, false);
    let params = CalibrationParams {
        n_ctx: 128,
        max_chunks: Some(8),
        n_threads: 2,
        process_output: false,
        dataset: text_path.into(),
    };
    let got = compute(model, &tokens, &params, |_, _| {}).unwrap().imatrix;
    assert_eq!(got.datasets, want.datasets);
    assert_eq!(
        (got.chunk_count, got.chunk_size),
        (want.chunk_count, want.chunk_size)
    );
    assert_eq!(
        got.entries.keys().collect::<Vec<_>>(),
        want.entries.keys().collect::<Vec<_>>()
    );
    let mut worst = (0f32, String::new());
    for (name, w) in &want.entries {
        let g = &got.entries[name];
        assert_eq!(g.counts, w.counts, "{name}");
        let max = w.sums.iter().fold(0f32, |m, &x| m.max(x.abs()));
        let err = g
            .sums
            .iter()
            .zip(&w.sums)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / max;
        if err > worst.0 {
            worst = (err, name.clone());
        }
    }
    eprintln!(
        "{variant}: imatrix within {:.2e} of llama-imatrix's (worst: {})",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= 5e-3,
        "{variant}: {} differs by {:.2e}",
        worst.1,
        worst.0
    );
}

#[test]
fn imatrix_matches_llama_imatrix() {
    check_imatrix("quant-gqa-f32");
    check_imatrix("quant-llama-f16");
}
