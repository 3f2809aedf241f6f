//! Every architecture on a synthetic tiny model against llama.cpp (see `tests/synthetic.rs`):
//! Tessera's mean KL divergence to llama.cpp's next-token distributions must stay within 1.5×
//! llama.cpp's own flash-attention-on-vs-off divergence on the same file (2× on the GPU), and
//! its top-1 agreement no more than one point below llama.cpp's own (a position where
//! llama.cpp's two best tokens are within 0.01 nats counts as agreeing with either: llama.cpp
//! flips those between its own attention kernels). Each variant's
//! distinguishing feature is then removed (gen.py `--break`) to show the test can fail: the
//! divergence must rise at least 20× above the bound.
//!
//! Models are generated at test time with Python (`gguf`, `numpy`) from llama.cpp's vocabulary
//! files; see the fixture JSONs for the commands that made the references.

use tessera_models::Device;
use tessera_tests::synthetic::{SyntheticFixture, generate, sha256_hex};

/// llama.cpp's noise floor: below it, KL differences are float rounding on both sides.
/// Bounds use `max(noise, FLOOR)` so a bit-exact llama.cpp pair (noise 0) leaves room for
/// a different summation order.
const FLOOR: f64 = 1e-5;

/// What a variant is allowed beyond the rule (bound 1.5× llama.cpp's noise with a
/// floor of [`FLOOR`] on the CPU, 2× on the GPU; top-1 at most one point below llama.cpp's
/// own), each entry with the figures that justify it. A larger `factor` scales the GPU's
/// bound alike (`factor / 1.5 × 2`); `top1_points` applies on both backends. Every variant
/// also runs on the GPU.
struct Allowance {
    /// The variant (a key of gen.py's `VARIANTS`).
    variant: &'static str,
    /// The noise floor its bounds use instead of [`FLOOR`].
    floor: Option<f64>,
    /// Its CPU bound as a multiple of llama.cpp's noise instead of 1.5.
    factor: Option<f64>,
    /// How far its top-1 agreement may fall below llama.cpp's own instead of 0.01.
    top1_points: Option<f64>,
}

/// No allowance: the rule.
const RULE: Allowance = Allowance {
    variant: "",
    floor: None,
    factor: None,
    top1_points: None,
};

/// The variants with an [`Allowance`].
const ALLOWANCES: &[Allowance] = &[
    // Floors: the variants whose llama.cpp pair agrees on the top 32 far below FLOOR while the full
    // vocabulary does not. gpt-oss: llama.cpp's own noise is −1.7e-7 on the top 32 but 8.4e-6 over
    // the full vocabulary; Tessera's top-32 figure is 1.56e-5 while its full-vocabulary KL on
    // llama.cpp's own base file (`tessera perplexity --kl-divergence-base`, the measure) is
    // 4e-6.
    Allowance {
        variant: "gpt-oss",
        floor: Some(2e-5),
        ..RULE
    },
    // minicpm3: llama.cpp caches MiniCPM3's decompressed keys and values in F16, Tessera the F16
    // latent they come from, so the two round at different points; llama.cpp's fa on/off pair
    // shares its rounding (top-32 noise 1.36e-5, full vocabulary 1.2e-6). llama.cpp against itself
    // with an F32 KV cache (`-ctk f32 -ctv f32`) instead of F16 is 3.2e-5 on the top 32 (3.9e-6
    // full vocabulary, top-1 1.000); Tessera is 2.16e-5 on the top 32 and 6e-6 over the full
    // vocabulary (`tessera perplexity --kl-divergence` on llama.cpp's base file), top-1 1.000.
    Allowance {
        variant: "minicpm3",
        floor: Some(2e-5),
        ..RULE
    },
    // plm: as gpt-oss, llama.cpp's pair agrees on the top 32 (4.5e-6) far closer than over the full
    // vocabulary (2.8e-5; both runs take one token per micro-batch, see gen.py); with an F32
    // instead of an F16 KV cache llama.cpp is 2.7e-6 full, 1.1e-6 top-32 from itself. Tessera's
    // top-32 figure is 1.49e-5 while its full-vocabulary KL to llama.cpp's base file is 5e-6
    // (3.2e-5 to the fa-on run), top-1 99.5% as llama.cpp's own pair. Feature errors land far
    // above: NeoX instead of llama's RoPE pairs KL 6.67, squaring without the ReLU 6.47.
    Allowance {
        variant: "plm",
        floor: Some(2e-5),
        ..RULE
    },
    // gpt-oss-mxfp4: its MXFP4 experts make the tiny model chaotic (llama.cpp's flash attention on
    // vs off differ by 1.56e-3 over the full vocabulary); Tessera is equally far from both of
    // llama.cpp's runs (full-vocabulary KL 2.44e-3 to fa-off, 2.40e-3 to fa-on), i.e. any other
    // summation order lands about this far; the MXFP4 kernels themselves are exact against the
    // scalar reference and the `gguf` package's bytes (engine tests).
    Allowance {
        variant: "gpt-oss-mxfp4",
        factor: Some(2.0),
        ..RULE
    },
    // Top-1 allowances. qwen3moe-q4_k_m: the Q4_K_M copy is chaotic (llama.cpp's flash attention on
    // vs off: full-vocabulary KL 1.15e-2, top-1 90.5% over its 189 positions, where one position is
    // 0.53 points); Tessera's full-vocabulary KL to llama.cpp's fa-off run (`tessera perplexity
    // --kl-divergence-base`) is 1.19e-2 with top-1 88.9% ± 2.3, and to its fa-on run 1.46e-2 and
    // 86.8%: a third run of the same noise, two positions short of one point. phi3-q8_0 and
    // phi3-q4_k_m likewise (CPU, full vocabulary, `tessera perplexity --kl-divergence-base` on
    // llama.cpp's fa-off / fa-on base files): Q8_0 KL 2.14e-3 / 2.54e-3 with top-1 97.4% / 97.9% ±
    // 1.1, where llama.cpp's fa on vs off is 2.61e-3 and 98.4%; Q4_K_M KL 9.37e-3 / 8.26e-3 with
    // top-1 92.6% / 91.0% ± 2, where llama.cpp's own is 9.07e-3 and 93.1%. Closer than llama.cpp's
    // two runs in KL, one or two positions (0.53 points each) short of one point in top-1
    // (phi3-q8_0 on the CPU, phi3-q4_k_m on the GPU: 0.9153).
    Allowance {
        variant: "qwen3moe-q4_k_m",
        top1_points: Some(0.02),
        ..RULE
    },
    Allowance {
        variant: "phi3-q8_0",
        top1_points: Some(0.02),
        ..RULE
    },
    Allowance {
        variant: "phi3-q4_k_m",
        top1_points: Some(0.02),
        ..RULE
    },
];

/// `variant`'s allowance, or the rule.
fn allowance(variant: &str) -> &'static Allowance {
    ALLOWANCES
        .iter()
        .find(|a| a.variant == variant)
        .unwrap_or(&RULE)
}

/// The CPU (and, when present, GPU) check of one variant, then its deliberate break.
/// `TESSERA_SKIP_SYNTHETIC=1` skips it (`.ci/run`'s CPU-only pass: the default pass already ran
/// the same CPU checks).
fn check(variant: &str, broken: &str) {
    if std::env::var("TESSERA_SKIP_SYNTHETIC").is_ok_and(|v| v == "1") {
        eprintln!("skipped: TESSERA_SKIP_SYNTHETIC=1");
        return;
    }
    let fx = SyntheticFixture::load(variant);
    let Some(path) = generate(variant, None) else {
        return;
    };
    assert_eq!(
        sha256_hex(&path),
        fx.meta["model_sha256"].as_str().unwrap(),
        "{variant}: gen.py wrote a different model than the fixture's (numpy or gguf changed?)"
    );
    let (noise_kl, noise_top1) = fx.llama_noise();
    let allow = allowance(variant);
    let floor = allow.floor.unwrap_or(FLOOR);
    let factor = allow.factor.unwrap_or(1.5);
    let bound = factor * noise_kl.max(floor);
    let cpu = fx.measure(&path, Device::Cpu);
    eprintln!(
        "{variant}: CPU KL {:.3e} (bound {bound:.3e}, llama.cpp fa on/off {noise_kl:.3e}), \
         top-1 {:.4} ({:.4} with near-ties; llama.cpp {noise_top1:.4})",
        cpu.kl, cpu.top1, cpu.top1_ties
    );
    assert!(
        cpu.kl <= bound,
        "{variant}: CPU KL {:.3e} > {bound:.3e}",
        cpu.kl
    );
    let top1_points = allow.top1_points.unwrap_or(0.01);
    assert!(
        cpu.top1_ties >= noise_top1 - top1_points,
        "{variant}: CPU top-1 {}",
        cpu.top1
    );

    #[cfg(feature = "gpu")]
    if tessera_engine::backend::describe(Device::Gpu(0)).is_ok() {
        let gpu = fx.measure(&path, Device::Gpu(0));
        // The GPU rounds mat-mul inputs as the CPU quantizes them (act_round.wgsl), so quantized
        // variants are held to the same 2× and one point as float ones (GPU KL qwen3-q8_0
        // 2.66e-3, qwen3moe-q8_0 3.14e-3, llama-gqa-bias-q4_0 1.26e-3; with f32 inputs they
        // were 9.35e-3, 1.71e-2 and 3.14e-3 with top-1 0.958 against 0.968, all failing).
        // A CPU factor override scales the GPU's 2× alike (factor / 1.5).
        let gpu_bound = factor / 1.5 * 2.0 * noise_kl.max(floor);
        eprintln!(
            "{variant}: GPU KL {:.3e} (bound {gpu_bound:.3e}), top-1 {:.4} ({:.4} with \
             near-ties)",
            gpu.kl, gpu.top1, gpu.top1_ties
        );
        assert!(gpu.kl <= gpu_bound, "{variant}: GPU KL {:.3e}", gpu.kl);
        assert!(
            gpu.top1_ties >= noise_top1 - top1_points,
            "{variant}: GPU top-1 {}",
            gpu.top1
        );
    }

    let Some(bad) = generate(variant, Some(broken)) else {
        return;
    };
    let b = fx.measure(&bad, Device::Cpu);
    eprintln!(
        "{variant}: with {broken} broken, KL {:.3e} = {:.0}× the bound, top-1 {:.4}",
        b.kl,
        b.kl / bound,
        b.top1
    );
    assert!(
        b.kl >= 20.0 * bound,
        "{variant}: breaking {broken} moved KL only to {:.3e} (bound {bound:.3e})",
        b.kl
    );
}

#[test]
fn llama3_rope_freqs_mha_untied() {
    check("llama3", "rope_freqs");
}

#[test]
fn mistral_nemo_wide_heads() {
    check("mistral-nemo", "rope_base");
}

#[test]
fn llama_gqa_biases() {
    check("llama-gqa-bias", "bias");
}

#[test]
fn qwen2_qkv_biases() {
    check("qwen2", "bias");
}

#[test]
fn qwen2_yarn_context_extension() {
    check("qwen2-yarn", "yarn");
}

#[test]
fn qwen3_qk_norm_wide_heads() {
    check("qwen3", "qk_norm");
}

#[test]
fn phi3_fused_weights_longrope() {
    check("phi3", "rope_freqs");
}

#[test]
fn phi3_longrope_short_factors() {
    check("phi3-short", "rope_freqs");
}

#[test]
fn qwen3_quantized_q8_0() {
    check("qwen3-q8_0", "qk_norm");
}

#[test]
fn llama_gqa_biases_quantized_q4_0() {
    check("llama-gqa-bias-q4_0", "bias");
}

#[test]
fn smollm3_nope_layers() {
    check("smollm3", "nope");
}

#[test]
fn gemma2_softcaps() {
    check("gemma2", "softcap");
}

#[test]
fn gemma2_alternating_window() {
    check("gemma2", "window");
}

#[test]
fn gemma3_scaled_rope_and_window() {
    check("gemma3", "window");
}

#[test]
fn qwen3moe_routed_experts() {
    check("qwen3moe", "experts");
}

#[test]
fn deepseek2_lite_latent_attention_shared_experts() {
    check("deepseek2-lite", "mla_heads");
}

#[test]
fn deepseek2_yarn_attention_scale() {
    check("deepseek2-yarn", "yarn_log_mul");
}

#[test]
fn deepseek2_low_rank_queries_sigmoid_routing_choice_bias() {
    check("deepseek2", "choice_bias");
}

#[test]
fn deepseek2_group_limited_routing() {
    check("deepseek2-groups", "groups");
}

#[test]
fn minicpm3_absorbed_latent_attention_scalings() {
    check("minicpm3", "residual_scale");
}

#[test]
fn plm_absorbed_latent_attention_relu_sqr() {
    check("plm", "kv_b_halves");
}

#[test]
fn qwen3moe_quantized_q8_0_experts() {
    check("qwen3moe-q8_0", "experts");
}

#[test]
fn qwen3_quantized_q4_k_m() {
    check("qwen3-q4_k_m", "qk_norm");
}

#[test]
fn qwen3_quantized_q3_k_m() {
    check("qwen3-q3_k_m", "qk_norm");
}

#[test]
fn qwen3_quantized_q2_k() {
    check("qwen3-q2_k", "qk_norm");
}

#[test]
fn qwen3_quantized_iq4_xs() {
    check("qwen3-iq4_xs", "qk_norm");
}

#[test]
fn qwen3_quantized_iq4_nl() {
    check("qwen3-iq4_nl", "qk_norm");
}

#[test]
fn qwen3moe_quantized_q4_k_m_experts() {
    check("qwen3moe-q4_k_m", "experts");
}

#[test]
fn llama3_quantized_q8_0() {
    check("llama3-q8_0", "rope_freqs");
}

#[test]
fn qwen2_quantized_q8_0() {
    check("qwen2-q8_0", "bias");
}

#[test]
fn phi3_quantized_q8_0() {
    check("phi3-q8_0", "rope_freqs");
}

#[test]
fn phi3_quantized_q4_k_m() {
    check("phi3-q4_k_m", "rope_freqs");
}

#[test]
fn smollm3_quantized_q8_0() {
    check("smollm3-q8_0", "nope");
}

#[test]
fn gemma2_quantized_q8_0() {
    check("gemma2-q8_0", "softcap");
}

#[test]
fn gpt_oss_sinks_window_biased_experts() {
    check("gpt-oss", "sinks");
}

#[test]
fn gpt_oss_mxfp4_experts() {
    check("gpt-oss-mxfp4", "sinks");
}
