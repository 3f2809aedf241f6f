//! Multi-head latent attention keeps only the latent in its KV cache: the synthetic
//! DeepSeek-V2-Lite, MiniCPM3 and PLM models' stores hold `kv_lora_rank + rope` F16 values per
//! token per layer (values are read from them; there is no V cache; llama.cpp caches
//! MiniCPM3's and PLM's decompressed keys and values instead), and batches of sequences over
//! those stores — and over routed experts — give each sequence exactly what it gets alone.

use std::sync::Arc;

use tessera_engine::GgufFile;
use tessera_models::batch_invariance::assert_batch_invariant;
use tessera_models::hparams::RopeOverrides;
use tessera_models::{Context, ContextParams, HParams, Model};
use tessera_tests::synthetic::generate;

/// `tessera info`'s hyper-parameters (`HParams::as_run`, read without loading) describe the
/// cache the loaded model makes: for MiniCPM3 and PLM, whose files describe decompressed heads,
/// that is the latent the loader switches to, not the file's heads.
fn info_sees_the_loaded_cache(path: &std::path::Path, loaded: &HParams) {
    let file = GgufFile::open(path).unwrap();
    let h = HParams::as_run(file.metadata()).unwrap();
    let cache = |h: &HParams| {
        (
            h.n_head_kv,
            h.head_dim,
            h.head_dim_v,
            h.values_in_keys,
            h.mla_head_dims,
        )
    };
    assert_eq!(cache(&h), cache(loaded), "{}", path.display());
    assert_eq!(
        h.kv_cell_bytes(h.n_head_kv, 2),
        loaded.kv_cell_bytes(loaded.n_head_kv, 2)
    );
}

#[test]
fn the_cache_holds_the_latent_only() {
    let Some(path) = generate("deepseek2-lite", None) else {
        return;
    };
    let m = Arc::new(Model::load(&path, &RopeOverrides::default()).unwrap());
    let hp = m.hparams().clone();
    info_sees_the_loaded_cache(&path, &hp);
    // kv_lora_rank 32 + 16 rotated values, one KV head.
    assert_eq!((hp.n_head_kv, hp.head_dim, hp.head_dim_v), (1, 48, 32));
    assert!(hp.values_in_keys);
    let n_ctx = 96;
    let mut ctx = Context::new(
        m.clone(),
        ContextParams {
            n_ctx,
            n_threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    // layers × (kv_lora_rank + rope) × n_ctx × 2 bytes, plus each cell's position (4 bytes).
    let latent = hp.n_layer * (32 + 16) * n_ctx * 2;
    assert_eq!(ctx.kv_bytes(), latent + hp.n_layer * n_ctx * 4);
    // The decompressed multi-head cache it stands in for: 4 heads of 40 + 24 values.
    assert_eq!(hp.kv_cell_bytes_equivalent(hp.n_head, 2), 4 * (40 + 24) * 2);
    let tokens: Vec<u32> = (0..40).map(|i| (i * 131 + 7) % 1000).collect();
    ctx.eval(&tokens, false).unwrap();
    assert!(ctx.logits_row(0).iter().all(|x| x.is_finite()));
}

/// MiniCPM3 (fused `attn_kv_b`, split at load) on the same latent cache: 32 + 16 values per
/// token and layer where llama.cpp caches 4 heads of 40 key and 16 value values.
#[test]
fn minicpm3_caches_the_latent_where_llama_cpp_caches_full_heads() {
    let Some(path) = generate("minicpm3", None) else {
        return;
    };
    let m = Arc::new(Model::load(&path, &RopeOverrides::default()).unwrap());
    let hp = m.hparams().clone();
    info_sees_the_loaded_cache(&path, &hp);
    assert_eq!((hp.n_head_kv, hp.head_dim, hp.head_dim_v), (1, 48, 32));
    assert!(hp.values_in_keys);
    assert_eq!(hp.mla_head_dims, Some((40, 16)));
    let n_ctx = 96;
    let mut ctx = Context::new(
        m.clone(),
        ContextParams {
            n_ctx,
            n_threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let latent = hp.n_layer * (32 + 16) * n_ctx * 2;
    assert_eq!(ctx.kv_bytes(), latent + hp.n_layer * n_ctx * 4);
    // llama.cpp's cache for this file: 4 heads × (40 + 16) F16 values per token and layer,
    // 4.7× the latent.
    assert_eq!(hp.kv_cell_bytes_equivalent(hp.n_head, 2), 4 * (40 + 16) * 2);
    let tokens: Vec<u32> = (0..40).map(|i| (i * 131 + 7) % 1000).collect();
    ctx.eval(&tokens, false).unwrap();
    assert!(ctx.logits_row(0).iter().all(|x| x.is_finite()));
    let prompts: Vec<Vec<u32>> = [19u32, 33, 26]
        .iter()
        .enumerate()
        .map(|(s, &n)| {
            (0..n)
                .map(|i| (i * 37 + s as u32 * 101 + 5) % 1000)
                .collect()
        })
        .collect();
    let params = ContextParams {
        n_ctx: 96,
        n_batch: 16,
        n_threads: 2,
        ..Default::default()
    };
    assert_batch_invariant(&m, params, &prompts, 6);
}

/// PLM (fused `attn_kv_b`, direct queries) on the same latent cache: 32 + 16 values per token
/// and layer where llama.cpp caches 4 heads of 48 key and 32 value values.
#[test]
fn plm_caches_the_latent_where_llama_cpp_caches_full_heads() {
    let Some(path) = generate("plm", None) else {
        return;
    };
    let m = Arc::new(Model::load(&path, &RopeOverrides::default()).unwrap());
    let hp = m.hparams().clone();
    info_sees_the_loaded_cache(&path, &hp);
    assert_eq!((hp.n_head_kv, hp.head_dim, hp.head_dim_v), (1, 48, 32));
    assert!(hp.values_in_keys);
    assert_eq!(hp.mla_head_dims, Some((48, 32)));
    let n_ctx = 96;
    let mut ctx = Context::new(
        m.clone(),
        ContextParams {
            n_ctx,
            n_threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    // layers × (kv_lora_rank + rope) × n_ctx × 2 bytes, plus each cell's position (4 bytes).
    let latent = hp.n_layer * (32 + 16) * n_ctx * 2;
    assert_eq!(ctx.kv_bytes(), latent + hp.n_layer * n_ctx * 4);
    // llama.cpp's cache for this file: 4 heads × (48 + 32) F16 values per token and layer,
    // 6.7× the latent.
    assert_eq!(hp.kv_cell_bytes_equivalent(hp.n_head, 2), 4 * (48 + 32) * 2);
    let n_vocab = hp.n_vocab as u32;
    let tokens: Vec<u32> = (0..40).map(|i| (i * 131 + 7) % n_vocab).collect();
    ctx.eval(&tokens, false).unwrap();
    assert!(ctx.logits_row(0).iter().all(|x| x.is_finite()));
    let prompts: Vec<Vec<u32>> = [19u32, 33, 26]
        .iter()
        .enumerate()
        .map(|(s, &n)| {
            (0..n)
                .map(|i| (i * 37 + s as u32 * 101 + 5) % n_vocab)
                .collect()
        })
        .collect();
    let params = ContextParams {
        n_ctx: 96,
        n_batch: 16,
        n_threads: 2,
        ..Default::default()
    };
    assert_batch_invariant(&m, params, &prompts, 6);
}

#[test]
fn deepseek2_and_qwen3moe_sequences_in_one_batch_equal_each_alone() {
    for variant in ["deepseek2", "qwen3moe"] {
        let Some(path) = generate(variant, None) else {
            return;
        };
        let m = Arc::new(Model::load(&path, &RopeOverrides::default()).unwrap());
        let n_vocab = m.hparams().n_vocab as u32;
        let prompts: Vec<Vec<u32>> = [19usize, 33, 26]
            .iter()
            .enumerate()
            .map(|(s, &n)| {
                (0..n as u32)
                    .map(|i| (i * 37 + s as u32 * 101 + 5) % n_vocab)
                    .collect()
            })
            .collect();
        let params = ContextParams {
            n_ctx: 96,
            n_batch: 16,
            n_threads: 2,
            ..Default::default()
        };
        assert_batch_invariant(&m, params, &prompts, 6);
    }
}
