//! Hostile model files: the tiny llama fixture with one thing broken per test, each refused at
//! load with the error that names the key or tensor — before any compute. The untouched fixture
//! loads, evaluates and generates.

use std::sync::Arc;

use tessera_engine::gguf::{GgufError, MetaValue};
use tessera_engine::{DType, GgufFile};
use tessera_models::hparams::{RopeOverrides, RopeScalingType};
use tessera_models::testing::{
    TinyLlama, load, load_bytes, remove_kv, remove_tensor, set_kv, tensor_mut,
};
use tessera_models::{Context, ContextParams, Flow, Model, ModelError, Session, SessionParams};

fn tiny() -> tessera_engine::gguf::GgufWriter {
    TinyLlama::default().writer()
}

/// Load `w` and return the error it must fail with.
fn refused(w: &tessera_engine::gguf::GgufWriter) -> ModelError {
    match load(w) {
        Ok(_) => panic!("the model loaded"),
        Err(e) => e,
    }
}

/// Assert `e` is an `InvalidHParam` about `key`, and return its message.
fn invalid_key(e: ModelError, key: &str) -> String {
    match &e {
        ModelError::InvalidHParam { key: k, .. } if k == key => e.to_string(),
        _ => panic!("expected InvalidHParam for {key}, got {e:?}"),
    }
}

fn small_ctx() -> ContextParams {
    ContextParams {
        n_ctx: 32,
        n_batch: 8,
        n_threads: 1,
        kv_ring: true,
        device: Default::default(),
        n_seq: 1,
        kv_pool: 0,
    }
}

#[test]
fn the_tiny_model_loads_evaluates_and_generates() {
    let model = Arc::new(load(&tiny()).unwrap());
    let hp = model.hparams();
    assert_eq!(
        (hp.n_layer, hp.n_embd, hp.n_head, hp.n_head_kv),
        (2, 64, 4, 2)
    );
    assert_eq!(hp.n_vocab, TinyLlama::default().n_vocab());
    let tok = model.tokenizer();
    let ids = tok.encode("hello the world", false, false);
    assert_eq!(tok.decode(&ids), "hello the world");
    assert!(ids.len() < "hello the world".len(), "merges apply: {ids:?}");

    let mut ctx = Context::new(model.clone(), small_ctx()).unwrap();
    ctx.eval(&ids, true).unwrap();
    assert_eq!(ctx.n_past(), ids.len());
    for i in 0..ids.len() {
        assert!(ctx.logits_row(i).iter().all(|l| l.is_finite()));
    }
    // Batch-split evaluation and decoding one token at a time.
    ctx.eval(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], false).unwrap();
    ctx.eval(&[11], false).unwrap();
    assert!(ctx.logits().iter().all(|l| l.is_finite()));

    let mut s = Session::new(
        model,
        &SessionParams {
            context: small_ctx(),
            ..Default::default()
        },
    )
    .unwrap();
    let prompt = s.tokenize("the tiny model", false, false);
    let mut n = 0;
    let stats = s
        .generate(&prompt, 4, |_, _| {
            n += 1;
            Flow::Continue
        })
        .unwrap();
    assert!(stats.generated_tokens >= 1 && stats.generated_tokens <= 4);
}

#[test]
fn f16_and_bf16_norms_are_converted() {
    for dtype in [DType::F16, DType::BF16] {
        let mut w = tiny();
        let t = tensor_mut(&mut w, "blk.0.attn_norm.weight");
        let values: Vec<f32> = t
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let ops = tessera_engine::quant::reference(dtype).unwrap();
        let mut data = vec![0u8; values.len() * 2];
        (ops.quantize_row)(&values, &mut data);
        t.dtype = dtype;
        t.data = data;
        let model = Arc::new(load(&w).unwrap());
        let mut ctx = Context::new(model, small_ctx()).unwrap();
        ctx.eval(&[1, 2, 3], false).unwrap();
        assert!(ctx.logits().iter().all(|l| l.is_finite()));
    }
}

#[test]
fn quantized_norm_is_refused() {
    let mut w = tiny();
    let t = tensor_mut(&mut w, "output_norm.weight");
    t.dtype = DType::Q8_0;
    t.data = vec![0; 2 * 34];
    match refused(&w) {
        ModelError::UnsupportedDType { name, dtype } => {
            assert_eq!((name.as_str(), dtype), ("output_norm.weight", DType::Q8_0));
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn n_head_must_divide_the_width() {
    let mut w = tiny();
    set_kv(&mut w, "llama.attention.head_count", MetaValue::U32(3));
    set_kv(&mut w, "llama.attention.head_count_kv", MetaValue::U32(3));
    let msg = invalid_key(refused(&w), "llama.attention.head_count");
    assert!(msg.contains("does not divide embedding_length 64"), "{msg}");
}

#[test]
fn n_head_kv_must_divide_n_head() {
    let mut w = tiny();
    set_kv(&mut w, "llama.attention.head_count_kv", MetaValue::U32(3));
    let msg = invalid_key(refused(&w), "llama.attention.head_count_kv");
    assert!(msg.contains("does not divide head_count 4"), "{msg}");
    // More KV heads than query heads cannot divide either.
    set_kv(&mut w, "llama.attention.head_count_kv", MetaValue::U32(8));
    invalid_key(refused(&w), "llama.attention.head_count_kv");
}

#[test]
fn a_given_head_dim_must_match_the_tensors() {
    // key_length given (so n_head need not divide n_embd) but the tensors are 16 wide per head.
    let mut w = tiny();
    set_kv(&mut w, "llama.attention.key_length", MetaValue::U32(32));
    set_kv(&mut w, "llama.rope.dimension_count", MetaValue::U32(32));
    match refused(&w) {
        ModelError::BadShape {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "blk.0.attn_q.weight");
            assert_eq!((expected, found), (vec![64, 128], vec![64, 64]));
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn every_required_tensor_must_be_present() {
    for name in [
        "token_embd.weight",
        "output_norm.weight",
        "blk.0.attn_norm.weight",
        "blk.0.attn_q.weight",
        "blk.1.attn_k.weight",
        "blk.1.attn_v.weight",
        "blk.1.attn_output.weight",
        "blk.0.ffn_norm.weight",
        "blk.1.ffn_gate.weight",
        "blk.0.ffn_up.weight",
        "blk.1.ffn_down.weight",
    ] {
        let mut w = tiny();
        remove_tensor(&mut w, name);
        match refused(&w) {
            ModelError::MissingTensor(n) => assert_eq!(n, name),
            e => panic!("{name}: {e:?}"),
        }
    }
}

#[test]
fn tensor_shapes_must_match_the_hyper_parameters() {
    // (tensor, new shape) pairs, each with the same number of bytes as before.
    for (name, shape) in [
        ("blk.0.attn_q.weight", vec![64u64, 32, 2]),
        ("blk.1.attn_k.weight", vec![32, 64]),
        ("blk.0.ffn_down.weight", vec![64, 128]),
        (
            "token_embd.weight",
            vec![32, 2 * TinyLlama::default().n_vocab() as u64],
        ),
    ] {
        let mut w = tiny();
        tensor_mut(&mut w, name).shape = shape.clone();
        match refused(&w) {
            ModelError::BadShape { name: n, found, .. } => {
                assert_eq!(n, name);
                assert_eq!(found, shape.iter().map(|&d| d as usize).collect::<Vec<_>>());
            }
            e => panic!("{name}: {e:?}"),
        }
    }
}

#[test]
fn a_separate_output_must_have_the_embedding_shape() {
    let cfg = TinyLlama {
        separate_output: true,
        ..Default::default()
    };
    load(&cfg.writer()).unwrap();
    let mut w = cfg.writer();
    let v = cfg.n_vocab() as u64;
    // One row short: the type and byte size stay consistent for the parser.
    let t = tensor_mut(&mut w, "output.weight");
    t.shape = vec![64, v - 1];
    t.data.truncate(t.data.len() - 68);
    match refused(&w) {
        ModelError::BadShape { name, .. } => assert_eq!(name, "output.weight"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn weight_types_without_kernels_are_refused() {
    for dtype in [DType::Q8_1, DType::I32] {
        let mut w = tiny();
        let t = tensor_mut(&mut w, "blk.1.attn_v.weight");
        let n = t.shape.iter().product::<u64>();
        t.dtype = dtype;
        t.data = vec![0; dtype.row_bytes(n).unwrap() as usize];
        match refused(&w) {
            ModelError::UnsupportedDType { name, dtype: d } => {
                assert_eq!((name.as_str(), d), ("blk.1.attn_v.weight", dtype));
            }
            e => panic!("{dtype}: {e:?}"),
        }
    }
}

#[test]
fn vocabulary_size_must_match_the_embedding() {
    // vocab_size disagrees with the token list.
    let mut w = tiny();
    let n = TinyLlama::default().n_vocab();
    set_kv(&mut w, "llama.vocab_size", MetaValue::U32(n as u32 + 1));
    let msg = invalid_key(refused(&w), "tokenizer.ggml.tokens");
    assert!(msg.contains(&format!("{n} tokens")), "{msg}");
    // Without vocab_size, the embedding's rows must equal the token count.
    let mut w = tiny();
    remove_kv(&mut w, "llama.vocab_size");
    let t = tensor_mut(&mut w, "token_embd.weight");
    t.shape[1] -= 1;
    t.data.truncate(t.data.len() - 68);
    match refused(&w) {
        ModelError::BadShape { name, .. } => assert_eq!(name, "token_embd.weight"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn special_token_ids_must_be_in_the_vocabulary() {
    let n = TinyLlama::default().n_vocab() as u32;
    for key in [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
        "tokenizer.ggml.seperator_token_id",
    ] {
        for bad in [
            MetaValue::U32(n),
            MetaValue::U32(u32::MAX),
            MetaValue::I32(-1),
        ] {
            let mut w = tiny();
            set_kv(&mut w, key, bad.clone());
            let msg = invalid_key(refused(&w), key);
            assert!(msg.contains(&format!("vocabulary of {n} tokens")), "{msg}");
        }
        let mut w = tiny();
        set_kv(&mut w, key, MetaValue::String("2".into()));
        invalid_key(refused(&w), key);
    }
    // The last id is fine.
    let mut w = tiny();
    set_kv(&mut w, "tokenizer.ggml.eot_token_id", MetaValue::U32(n - 1));
    load(&w).unwrap();
}

#[test]
fn layer_count_and_context_are_bounded() {
    for (key, bad) in [
        ("llama.block_count", 0u32),
        ("llama.block_count", 100_000),
        ("llama.context_length", 0),
        ("llama.context_length", u32::MAX),
        ("llama.embedding_length", 0),
        ("llama.feed_forward_length", 1 << 30),
        ("llama.attention.head_count", 0),
        ("llama.attention.head_count_kv", 0),
    ] {
        let mut w = tiny();
        set_kv(&mut w, key, MetaValue::U32(bad));
        let msg = invalid_key(refused(&w), key);
        assert!(msg.contains("is outside"), "{msg}");
    }
    // More layers than the file has blocks: the first missing block is named.
    let mut w = tiny();
    set_kv(&mut w, "llama.block_count", MetaValue::U32(3));
    match refused(&w) {
        ModelError::MissingTensor(n) => assert_eq!(n, "blk.2.attn_norm.weight"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn rope_dimensions_must_fit_the_head() {
    for bad in [0u32, 17, 18, 1000] {
        let mut w = tiny();
        set_kv(&mut w, "llama.rope.dimension_count", MetaValue::U32(bad));
        let msg = invalid_key(refused(&w), "llama.rope.dimension_count");
        assert!(msg.contains("at most the head width 16"), "{msg}");
    }
}

#[test]
fn unusable_floats_are_refused() {
    for (key, bad) in [
        ("llama.attention.layer_norm_rms_epsilon", f32::NAN),
        ("llama.attention.layer_norm_rms_epsilon", -1.0),
        ("llama.rope.freq_base", 0.5),
        ("llama.rope.freq_base", f32::INFINITY),
        ("llama.rope.scaling.factor", 0.0),
        // These gave NaN logits reported as a normal end of generation.
        ("llama.rope.scale_linear", 0.0),
        ("llama.rope.scale_linear", f32::NAN),
        ("llama.rope.scale_linear", -2.0),
        ("llama.rope.scale_linear", f32::INFINITY),
        ("llama.rope.scale_linear", 1e-45),
        ("llama.rope.scaling.attn_factor", f32::NAN),
        ("llama.rope.scaling.yarn_ext_factor", f32::NAN),
        ("llama.rope.scaling.yarn_beta_fast", f32::INFINITY),
    ] {
        let mut w = tiny();
        set_kv(&mut w, key, MetaValue::F32(bad));
        invalid_key(refused(&w), key);
    }
    // A YaRN file: its log multiplier scales the attention factor; its betas must be in order.
    let yarn = |extra: &[(&str, f32)]| {
        let mut w = tiny();
        set_kv(
            &mut w,
            "llama.rope.scaling.type",
            MetaValue::String("yarn".into()),
        );
        set_kv(&mut w, "llama.rope.scaling.factor", MetaValue::F32(4.0));
        for &(k, v) in extra {
            set_kv(&mut w, k, MetaValue::F32(v));
        }
        w
    };
    let key = "llama.rope.scaling.yarn_log_multiplier";
    invalid_key(refused(&yarn(&[(key, f32::INFINITY)])), key);
    let key = "llama.rope.scaling.yarn_beta_fast";
    let msg = invalid_key(refused(&yarn(&[(key, 0.5)])), key);
    assert!(msg.contains("below beta_slow 1"), "{msg}");
    assert!(load(&yarn(&[])).is_ok());
}

#[test]
fn unusable_rope_overrides_are_refused_by_flag() {
    let bytes = tiny().to_bytes();
    let load_with = |o: RopeOverrides| {
        Model::from_file(GgufFile::from_bytes(&bytes).unwrap(), &o)
            .err()
            .map(|e| e.to_string())
    };
    for (o, flag) in [
        (
            RopeOverrides {
                attn_factor: Some(f32::NAN),
                ..Default::default()
            },
            "--yarn-attn-factor",
        ),
        (
            RopeOverrides {
                attn_factor: Some(f32::INFINITY),
                ..Default::default()
            },
            "--yarn-attn-factor",
        ),
        (
            RopeOverrides {
                factor: Some(1.0 / 1e-45),
                ..Default::default()
            },
            "--rope-scale",
        ),
        (
            RopeOverrides {
                factor: Some(1e-45),
                ..Default::default()
            },
            "--rope-scale",
        ),
        (
            RopeOverrides {
                kind: Some(RopeScalingType::Yarn),
                beta_fast: Some(0.5),
                ..Default::default()
            },
            "--yarn-beta-fast",
        ),
        (
            RopeOverrides {
                ext_factor: Some(f32::INFINITY),
                ..Default::default()
            },
            "--yarn-ext-factor",
        ),
    ] {
        let err = load_with(o).unwrap_or_else(|| panic!("{o:?} was accepted"));
        assert!(err.contains(flag), "{o:?}: {err}");
    }
    assert_eq!(load_with(RopeOverrides::default()), None);
}

#[test]
fn missing_and_mistyped_keys_are_named() {
    let mut w = tiny();
    remove_kv(&mut w, "llama.embedding_length");
    match refused(&w) {
        ModelError::Gguf(GgufError::MissingKey { key }) => {
            assert_eq!(key, "llama.embedding_length")
        }
        e => panic!("{e:?}"),
    }
    let mut w = tiny();
    set_kv(&mut w, "llama.block_count", MetaValue::String("2".into()));
    match refused(&w) {
        ModelError::Gguf(GgufError::WrongType { key, .. }) => assert_eq!(key, "llama.block_count"),
        e => panic!("{e:?}"),
    }
    let mut w = tiny();
    set_kv(
        &mut w,
        "general.architecture",
        MetaValue::String("mamba".into()),
    );
    assert!(matches!(refused(&w), ModelError::UnsupportedArch(a) if a == "mamba"));
    let mut w = tiny();
    remove_kv(&mut w, "tokenizer.ggml.merges");
    let msg = refused(&w).to_string();
    assert!(msg.contains("tokenizer.ggml.merges"), "{msg}");
}

#[test]
fn tensor_data_past_the_end_is_refused_at_open() {
    let bytes = TinyLlama::default().bytes();
    for cut in [bytes.len() - 1, bytes.len() - 4096, bytes.len() / 2] {
        match load_bytes(&bytes[..cut]) {
            Err(ModelError::Gguf(GgufError::TensorOutOfBounds { .. })) => {}
            Err(e) => panic!("cut {cut}: {e:?}"),
            Ok(_) => panic!("cut {cut}: loaded"),
        }
    }
    // The same through a file on disk (mapped): refused when opened, not when first read.
    let dir = std::env::temp_dir().join(format!("tessera-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("truncated.gguf");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = GgufFile::open(&path).unwrap_err();
    assert!(matches!(err, GgufError::TensorOutOfBounds { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn other_tiny_shapes_load_and_run() {
    // The smallest one is also a seed of the GGUF fuzz targets.
    for cfg in [
        TinyLlama {
            n_layer: 1,
            n_embd: 32,
            n_head: 2,
            n_head_kv: 1,
            n_ff: 32,
            ..Default::default()
        },
        TinyLlama {
            matrix_dtype: DType::F32,
            separate_output: true,
            n_head_kv: 4,
            ..Default::default()
        },
        TinyLlama {
            matrix_dtype: DType::F16,
            n_head_kv: 1,
            ..Default::default()
        },
    ] {
        let model = Arc::new(load(&cfg.writer()).unwrap());
        let mut ctx = Context::new(model, small_ctx()).unwrap();
        ctx.eval(&[1, 2, 3], false).unwrap();
        assert!(ctx.logits().iter().all(|l| l.is_finite()), "{cfg:?}");
    }
}

#[test]
fn heads_wider_than_the_cpu_kernels_are_an_error_not_a_panic() {
    // One head of 2560: the model is valid, but the CPU's attention takes heads up to 2048
    // wide (it used to assert on the first evaluation).
    let cfg = TinyLlama {
        n_layer: 1,
        n_embd: 2560,
        n_head: 1,
        n_head_kv: 1,
        n_ff: 32,
        ..Default::default()
    };
    let model = Arc::new(load(&cfg.writer()).unwrap());
    let mut ctx = Context::new(model, small_ctx()).unwrap();
    let err = ctx.eval(&[1, 2, 3], false).unwrap_err().to_string();
    assert!(
        err.contains("key heads 2560 wide") && err.contains("up to 2048"),
        "{err}"
    );
}

#[test]
fn non_finite_logits_are_an_error_not_a_result() {
    // An infinite output-norm weight: the model loads, but its logits are not finite. Decoding
    // used to return them as usual (the sampler then picked token 0, perplexity printed NaN).
    let mut w = tiny();
    let t = tensor_mut(&mut w, "output_norm.weight");
    t.data[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let model = Arc::new(load(&w).unwrap());
    let mut ctx = Context::new(model, small_ctx()).unwrap();
    for all_logits in [false, true] {
        ctx.reset();
        match ctx.eval(&[1, 2, 3], all_logits) {
            Err(ModelError::NonFiniteLogits { position }) => {
                assert_eq!(position, if all_logits { 0 } else { 2 })
            }
            r => panic!("all_logits {all_logits}: {r:?}"),
        }
        assert_eq!(ctx.n_logit_rows(), 0);
    }
}
