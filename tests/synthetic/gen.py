#!/usr/bin/env python3
"""Deterministic synthetic tiny models, one per architecture variant Tessera runs.

Each model has the family's real tokenizer (copied from llama.cpp's vocab-only GGUF files, or
the real Gemma 3 model for the Gemma families), a few small layers, and seeded numpy weights
scaled so next-token distributions are peaked rather than flat. llama.cpp run on the same files
is the oracle (see oracle.py); Tessera's tests regenerate the files and compare.

    gen.py --list
    gen.py VARIANT --out FILE [--vocab-dir DIR] [--gemma-vocab FILE] [--break FEATURE]

`--break` writes a model with one feature removed or altered (for showing a test can fail):
the model is the same except for that feature's metadata or tensor, as the test's docs say.

Variants with `requant` (named after their mix: `*-q4_k_m`, `*-q3_k_m`, `*-q2_k`, `*-iq4_xs`,
`*-iq4_nl`) are written unquantized here: they are the source
that llama.cpp's `llama-quantize` (oracle.py) and Tessera's `tessera quantize` (the tests; byte
for byte the same file) turn into that llama.cpp mix, since the `gguf` package has no K-quant
quantizers. Their rows are 256 wide so the K-quants apply (64-wide rows would fall back).
"""

import argparse
import hashlib
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, RopeScalingType
from gguf import quants

# Variant -> (architecture, vocab source, settings). Sizes are small; head widths and feature
# magnitudes are chosen so that each feature changes the distributions well above noise.
VARIANTS = {
    "llama3": dict(arch="llama", vocab="llama-bpe", n_layer=2, n_head=4, n_head_kv=4,
                   head_dim=16, rope_freqs=True, tied=False, rope_base=10000.0),
    "llama-gqa-bias": dict(arch="llama", vocab="llama-spm", n_layer=2, n_head=4, n_head_kv=2,
                           head_dim=16, qkv_bias=True, out_bias=True, tied=True),
    # Mistral Nemo's shape: llama with heads wider than n_embd / n_head (4 x 32 over 64, the
    # width from `attention.key_length`), GQA 4:2, RoPE base 1e6, untied output.
    "mistral-nemo": dict(arch="llama", vocab="llama-spm", n_layer=2, n_head=4, n_head_kv=2,
                         head_dim=32, tied=False, rope_base=1000000.0),
    "qwen2": dict(arch="qwen2", vocab="qwen2", n_layer=2, n_head=4, n_head_kv=2, head_dim=16,
                  qkv_bias=True, tied=True, rope_base=1000000.0),
    # YaRN context extension (Qwen2.5's long-context setting): factor 4 over an original
    # context of 32, so the oracle's 128-token chunks run at the full extension.
    "qwen2-yarn": dict(arch="qwen2", vocab="qwen2", n_layer=2, n_head=4, n_head_kv=2,
                       head_dim=16, qkv_bias=True, tied=True, rope_base=10000.0,
                       rope_scale_yarn=4.0, orig_ctx=32),
    "qwen3": dict(arch="qwen3", vocab="qwen2", n_layer=2, n_head=4, n_head_kv=2, head_dim=32,
                  qk_norm=True, tied=False, rope_base=1000000.0),
    "phi3": dict(arch="phi3", vocab="phi-3", n_layer=2, n_head=4, n_head_kv=4, head_dim=16,
                 rope_dims=12, fused=True, longrope=True, orig_ctx=64, tied=False),
    # LongRoPE within the original context (256 > the oracle's 128): the short factors apply,
    # here far from 1 (and the long ones near it), so a wrong choice shows.
    "phi3-short": dict(arch="phi3", vocab="phi-3", n_layer=2, n_head=4, n_head_kv=4,
                       head_dim=16, rope_dims=12, fused=True, longrope=True, orig_ctx=256,
                       short_far=True, tied=False),
    "smollm3": dict(arch="smollm3", vocab="llama-bpe", n_layer=4, n_head=4, n_head_kv=2,
                    head_dim=16, tied=True),
    # Mixture of experts: a router over 8 experts, 3 chosen per token, renormalised.
    "qwen3moe": dict(arch="qwen3moe", vocab="qwen2", n_layer=2, n_head=4, n_head_kv=2,
                     head_dim=32, qk_norm=True, tied=False, rope_base=1000000.0,
                     n_expert=8, n_expert_used=3, n_ff_exp=64),
    # Multi-head latent attention with experts (see generate_deepseek2): V2-Lite's shape
    # (queries projected directly, softmax routing) and V3's (low-rank queries, sigmoid
    # routing with a choice bias, renormalised and scaled weights).
    "deepseek2-lite": dict(arch="deepseek2", vocab="deepseek-llm", n_layer=3, n_head=4,
                           q_lora=0, kv_lora=32, qk_nope=24, qk_rope=16, v_head=24,
                           n_expert=8, n_expert_used=2, n_ff_exp=32, n_shared=1, n_dense=1,
                           gating=1, norm=False, scale=1.0),
    "deepseek2": dict(arch="deepseek2", vocab="deepseek-llm", n_layer=3, n_head=4,
                      q_lora=48, kv_lora=32, qk_nope=24, qk_rope=16, v_head=24,
                      n_expert=8, n_expert_used=3, n_ff_exp=32, n_shared=2, n_dense=1,
                      gating=2, norm=True, scale=2.5, probs_bias=True),
    # DeepSeek-V2-Lite's long-context setting: YaRN ×4 over an original context of 32 with
    # mscale_all_dim 0.707 (log multiplier 0.0707), which also scales the attention.
    "deepseek2-yarn": dict(arch="deepseek2", vocab="deepseek-llm", n_layer=3, n_head=4,
                           q_lora=0, kv_lora=32, qk_nope=24, qk_rope=16, v_head=24,
                           n_expert=8, n_expert_used=2, n_ff_exp=32, n_shared=1, n_dense=1,
                           gating=1, norm=False, scale=1.0, rope_scale_yarn=4.0, orig_ctx=32,
                           yarn_log_mul=0.0707),
    # DeepSeek-V3's group-limited routing: 16 experts in 4 groups of 4, only the experts of
    # the 2 best groups (a group scores its best two biased sigmoids) may be chosen.
    "deepseek2-groups": dict(arch="deepseek2", vocab="deepseek-llm", n_layer=3, n_head=4,
                             q_lora=48, kv_lora=32, qk_nope=24, qk_rope=16, v_head=24,
                             n_expert=16, n_expert_used=4, n_ff_exp=32, n_shared=1, n_dense=1,
                             gating=2, norm=True, scale=2.5, probs_bias=True, groups=(4, 2)),
    # MiniCPM3: MLA with the fused attn_kv_b llama.cpp decompresses (Tessera splits it and
    # runs the absorbed path with the latent-only cache), value width n_embd / n_head (no
    # value_length key, as the converter writes), NeoX RoPE with LongRoPE factors, and the
    # scalings llama.cpp fixes in code (embeddings x12, residual branches x1.4/sqrt(n_layer),
    # the final norm's output x256/n_embd).
    "minicpm3": dict(arch="minicpm3", vocab="llama-spm", n_layer=3, n_head=4, q_lora=48,
                     kv_lora=32, qk_nope=24, qk_rope=16),
    # PLM: MLA with direct queries and the fused attn_kv_b llama.cpp decompresses (Tessera
    # splits it and runs the absorbed path with the latent-only cache), llama-style RoPE on
    # the trailing rotated part of each head, a gate-less squared-ReLU FFN, tied output.
    # Key and value rows per head are as many (32) so the break can swap them. `ubatch`: the
    # oracle runs llama.cpp one token per micro-batch (-ub 1, flash attention off and on):
    # its plm graph hands the cache V as one 2-D row of n_head * v_head values per token,
    # which the flash-attention path's unpermuted V cache (llama_kv_cache::cpy_v) takes for
    # n_tokens heads and aborts on (ggml_set_rows: a->ne[0] == b->ne[0]) unless a micro-batch
    # has one token. Flash attention off is unaffected (-ub 128 vs -ub 1: KL 9.8e-7).
    "plm": dict(arch="plm", vocab="llama-spm", n_layer=3, n_head=4, n_embd=128, n_ff=256,
                kv_lora=32, qk_nope=32, qk_rope=16, v_head=32, ubatch=1),
    # gpt-oss: attention sinks, Q/K/V/O biases, a sliding window on even layers, a biased
    # router (top logits chosen, softmax over them), biased experts, the clamped SwiGLU.
    # (Real gpt-oss files use the o200k "gpt-4o" pre-tokenizer; the model here borrows
    # llama3's vocabulary.)
    "gpt-oss": dict(arch="gpt-oss", vocab="llama-bpe", n_layer=4, n_head=4, n_head_kv=2,
                    head_dim=16, qkv_bias=True, out_bias=True, tied=False, window=24,
                    rope_base=150000.0, n_expert=8, n_expert_used=3, n_ff_exp=64,
                    sinks=True, expert_bias=True, oai_norms=True),
    # gpt-oss as it ships: the experts in MXFP4 (everything else as in `gpt-oss`).
    "gpt-oss-mxfp4": dict(arch="gpt-oss", vocab="llama-bpe", n_layer=4, n_head=4, n_head_kv=2,
                          head_dim=16, qkv_bias=True, out_bias=True, tied=False, window=24,
                          rope_base=150000.0, n_expert=8, n_expert_used=3, n_ff_exp=64,
                          sinks=True, expert_bias=True, oai_norms=True, expert_quant="MXFP4"),
    # Quantized copies (matrices and embeddings in the block format; norms stay F32), written
    # with the gguf package's own quantizers so CI can regenerate them.
    "qwen3-q8_0": dict(arch="qwen3", vocab="qwen2", n_layer=2, n_head=4, n_head_kv=2,
                       head_dim=32, qk_norm=True, tied=False, rope_base=1000000.0,
                       quant="Q8_0"),
    "qwen3moe-q8_0": dict(arch="qwen3moe", vocab="qwen2", n_layer=2, n_head=4, n_head_kv=2,
                          head_dim=32, qk_norm=True, tied=False, rope_base=1000000.0,
                          n_expert=8, n_expert_used=3, n_ff_exp=64, quant="Q8_0"),
    "llama-gqa-bias-q4_0": dict(arch="llama", vocab="llama-spm", n_layer=2, n_head=4,
                                n_head_kv=2, head_dim=16, qkv_bias=True, out_bias=True,
                                tied=True, quant="Q4_0"),
    # Q8_0 copies of the dense families' features: Llama 3's frequency factors (MHA, untied),
    # Qwen2's biases, Phi-3's fused QKV and gate+up (the views fall inside quantized rows),
    # SmolLM3's NoPE layers and Gemma 2's soft-caps, post-norms and alternating window.
    "llama3-q8_0": dict(arch="llama", vocab="llama-bpe", n_layer=2, n_head=4, n_head_kv=4,
                        head_dim=16, rope_freqs=True, tied=False, rope_base=10000.0,
                        quant="Q8_0"),
    "qwen2-q8_0": dict(arch="qwen2", vocab="qwen2", n_layer=2, n_head=4, n_head_kv=2,
                       head_dim=16, qkv_bias=True, tied=True, rope_base=1000000.0,
                       quant="Q8_0"),
    "phi3-q8_0": dict(arch="phi3", vocab="phi-3", n_layer=2, n_head=4, n_head_kv=4,
                      head_dim=16, rope_dims=12, fused=True, longrope=True, orig_ctx=64,
                      tied=False, quant="Q8_0"),
    "smollm3-q8_0": dict(arch="smollm3", vocab="llama-bpe", n_layer=4, n_head=4, n_head_kv=2,
                         head_dim=16, tied=True, quant="Q8_0"),
    "gemma2-q8_0": dict(arch="gemma2", vocab="gemma", n_layer=4, n_head=4, n_head_kv=2,
                        head_dim=16, post_norms=True, window=24, attn_softcap=8.0,
                        final_softcap=20.0, tied=True, quant="Q8_0"),
    # K-quant copies: written unquantized, 256 wide (K-quant blocks are 256 values), then
    # quantized to llama.cpp's Q4_K_M mix (see the module doc): Q4_K and Q6_K matrices,
    # activations rounded to Q8_K on the way in. Embeddings at half the usual spread keep the
    # wider model's logits (and its entropy) where the 64-wide variants' are.
    "qwen3-q4_k_m": dict(arch="qwen3", vocab="qwen2", n_layer=2, n_head=8, n_head_kv=2,
                         head_dim=32, n_embd=256, n_ff=512, qk_norm=True, tied=False,
                         rope_base=1000000.0, emb_std=0.3, requant="Q4_K_M"),
    "qwen3moe-q4_k_m": dict(arch="qwen3moe", vocab="qwen2", n_layer=2, n_head=8, n_head_kv=2,
                            head_dim=32, n_embd=256, qk_norm=True, tied=False,
                            rope_base=1000000.0, n_expert=8, n_expert_used=3, n_ff_exp=256,
                            emb_std=0.3, requant="Q4_K_M"),
    # The 2- and 3-bit K-quant mixes (Q3_K_M: Q3_K matrices with Q4_K/Q5_K where the mix
    # gives more bits, Q6_K output; Q2_K: Q2_K and Q3_K matrices, Q4_K/Q6_K in places): the
    # same model as `qwen3-q4_k_m`.
    "qwen3-q3_k_m": dict(arch="qwen3", vocab="qwen2", n_layer=2, n_head=8, n_head_kv=2,
                         head_dim=32, n_embd=256, n_ff=512, qk_norm=True, tied=False,
                         rope_base=1000000.0, emb_std=0.3, requant="Q3_K_M"),
    "qwen3-q2_k": dict(arch="qwen3", vocab="qwen2", n_layer=2, n_head=8, n_head_kv=2,
                       head_dim=32, n_embd=256, n_ff=512, qk_norm=True, tied=False,
                       rope_base=1000000.0, emb_std=0.3, requant="Q2_K"),
    # The non-linear 4-bit mixes (IQ4_XS: IQ4_XS matrices and embeddings, Q5_K attn_v at
    # n_gqa 4, Q6_K output; IQ4_NL the same with IQ4_NL): the same model as `qwen3-q4_k_m`.
    "qwen3-iq4_xs": dict(arch="qwen3", vocab="qwen2", n_layer=2, n_head=8, n_head_kv=2,
                         head_dim=32, n_embd=256, n_ff=512, qk_norm=True, tied=False,
                         rope_base=1000000.0, emb_std=0.3, requant="IQ4_XS"),
    "qwen3-iq4_nl": dict(arch="qwen3", vocab="qwen2", n_layer=2, n_head=8, n_head_kv=2,
                         head_dim=32, n_embd=256, n_ff=512, qk_norm=True, tied=False,
                         rope_base=1000000.0, emb_std=0.3, requant="IQ4_NL"),
    # Phi-3's fused weights in llama.cpp's Q4_K_M mix: the QKV and gate+up splits fall inside
    # K-quant rows of 256.
    "phi3-q4_k_m": dict(arch="phi3", vocab="phi-3", n_layer=2, n_head=8, n_head_kv=8,
                        head_dim=32, n_embd=256, n_ff=512, rope_dims=24, fused=True,
                        longrope=True, orig_ctx=64, tied=False, emb_std=0.3, requant="Q4_K_M"),
    "gemma2": dict(arch="gemma2", vocab="gemma", n_layer=4, n_head=4, n_head_kv=2, head_dim=16,
                   post_norms=True, window=24, attn_softcap=8.0, final_softcap=20.0,
                   tied=True),
    # Sources for `tessera quantize` against llama-quantize (tests/tests/quantize_oracle.rs):
    # rows of 256 (K-quants apply), ffn_down rows of 320 (K-quants fall back to 32-blocks) or
    # 336 (not a multiple of 32: F16), eight layers for the mixes' layer rules, F16 or F32.
    "quant-llama-f16": dict(arch="llama", vocab="llama-spm", n_layer=8, n_head=4, n_head_kv=4,
                            head_dim=64, n_embd=256, n_ff=320, tied=False, dtype="F16"),
    "quant-gqa-f32": dict(arch="llama", vocab="llama-spm", n_layer=4, n_head=8, n_head_kv=2,
                          head_dim=32, n_embd=256, n_ff=336, qkv_bias=True, tied=True),
    # A 1B-shaped F16 model (TinyLlama-1.1B's sizes) for timing `tessera quantize` against
    # llama-quantize (scripts/bench-quantize-vs-llamacpp.sh); not used by tests.
    "bench-1b-f16": dict(arch="llama", vocab="llama-spm", n_layer=22, n_head=32, n_head_kv=4,
                         head_dim=64, n_embd=2048, n_ff=5632, tied=False, dtype="F16"),
    # Dense models with the shapes people run, F16, for timing decode and prompts against
    # llama.cpp (scripts/bench-sizes-vs-llamacpp.sh quantizes them); not tests. Llama-3.2-1B
    # (tied output, 128k vocabulary), Qwen3-1.7B (QK-norm, tied, 152k vocabulary) and
    # Llama-3.1-8B (separate output).
    "bench-llama3-1b-f16": dict(arch="llama", vocab="llama-bpe", n_layer=16, n_head=32,
                                n_head_kv=8, head_dim=64, n_embd=2048, n_ff=8192, tied=True,
                                rope_base=500000.0, dtype="F16"),
    "bench-qwen3-1.7b-f16": dict(arch="qwen3", vocab="qwen2", n_layer=28, n_head=16,
                                 n_head_kv=8, head_dim=128, n_embd=2048, n_ff=6144,
                                 qk_norm=True, tied=True, rope_base=1000000.0, dtype="F16"),
    "bench-llama3-8b-f16": dict(arch="llama", vocab="llama-bpe", n_layer=32, n_head=32,
                                n_head_kv=8, head_dim=128, n_embd=4096, n_ff=14336, tied=False,
                                rope_base=500000.0, dtype="F16"),
    # The two registry models' shapes with random weights (SmolLM2-135M: the StarCoder
    # vocabulary's 49152 tokens; Gemma 3 270M: Gemma's 262144), F16, for timing where the
    # real files cannot travel (scripts/device-check.sh on a lent GPU machine); not tests.
    "bench-smollm2-f16": dict(arch="llama", vocab="starcoder", n_layer=30, n_head=9,
                              n_head_kv=3, head_dim=64, n_embd=576, n_ff=1536, tied=True,
                              rope_base=100000.0, dtype="F16"),
    "bench-gemma3-270m-f16": dict(arch="gemma3", vocab="gemma", n_layer=18, n_head=4,
                                  n_head_kv=1, head_dim=256, n_embd=640, n_ff=2048,
                                  post_norms=True, qk_norm=True, window=512, tied=True,
                                  rope_base=1000000.0, dtype="F16"),
    # A MoE with Qwen3-30B-A3B's proportions at ~1.9B parameters (32 experts of 512, 4 chosen,
    # 2048 wide, 16 layers, GQA 16:4 with 128-wide heads), F16, for timing decode and prompts
    # against llama.cpp (scripts/bench-moe-vs-llamacpp.sh quantizes it to Q4_K_M); not a test.
    "bench-moe-f16": dict(arch="qwen3moe", vocab="llama-spm", n_layer=16, n_head=16,
                          n_head_kv=4, head_dim=128, n_embd=2048, qk_norm=True, tied=False,
                          rope_base=1000000.0, n_expert=32, n_expert_used=4, n_ff_exp=512,
                          dtype="F16"),
    "gemma3": dict(arch="gemma3", vocab="gemma", n_layer=6, n_head=4, n_head_kv=1,
                   head_dim=32, post_norms=True, qk_norm=True, window=24, tied=True,
                   rope_base=1000000.0, rope_scale_linear=8.0),
}

# What --break changes, per feature (the test of each variant names the one it shows):
#   bias        Q/K/V biases zeroed (the bias dropped)
#   qk_norm     written as `qwen2`, whose block has no Q/K norm (the norm skipped)
#   softcap     both soft-caps set to 1e6 (soft-capping off)
#   rope_freqs  every frequency factor 1 (the factors ignored; for LongRoPE, the set in use)
#   nope        written as `llama`, which rotates every layer (NoPE layers ignored)
#   window      no sliding_window key (every layer global; Gemma 2 then slides 4096 > n_ctx)
#   experts     expert_used_count 1 (one expert per token instead of the model's choice of 3)
#   mla_heads   attn_k_b and attn_v_b with their heads rotated by one (each head absorbs and
#               decompresses with another head's matrices)
#   choice_bias exp_probs_b zeroed (experts chosen without DeepSeek-V3's bias)
#   sinks       attention sinks at -1e4 (no sink in any softmax)
#   yarn        no rope scaling keys (plain RoPE instead of YaRN)
#   yarn_log_mul  DeepSeek's YaRN log multiplier 0 (mscale_all_dim's attention scaling dropped)
#   groups      no expert_group_count / expert_group_used_count keys (every expert eligible)
#   residual_scale  attn_output and ffn_down multiplied by sqrt(n_layer)/1.4 (MiniCPM3's
#               residual scale, fixed in code, undone: as if an engine dropped it)
#   kv_b_halves each head's key rows and value rows of the fused attn_kv_b swapped (as if an
#               engine split it value rows first)
#   rope_base   RoPE base 10000 written instead of the variant's (as if an engine ignored the
#               file's base)
BREAKS = ["bias", "qk_norm", "softcap", "rope_freqs", "nope", "window", "experts", "mla_heads",
          "choice_bias", "sinks", "yarn", "yarn_log_mul", "groups", "residual_scale",
          "kv_b_halves", "rope_base"]

N_EMBD = 64
N_FF = 128
CTX_TRAIN = 4096


def vocab_file(vocab_dir, gemma_vocab, name):
    if name == "gemma":
        return gemma_vocab
    return os.path.join(vocab_dir, f"ggml-vocab-{name}.gguf")


def copy_tokenizer(writer, path):
    """Every tokenizer.* key of `path`, as it is."""
    r = GGUFReader(path)
    n_vocab = None
    for f in r.fields.values():
        if not f.name.startswith("tokenizer."):
            continue
        t = f.types[0]
        if t == GGUFValueType.ARRAY:
            sub = f.types[1]
            if sub == GGUFValueType.STRING:
                vals = [bytes(f.parts[i]).decode("utf-8", errors="surrogateescape")
                        for i in f.data]
            else:
                vals = [f.parts[i][0].item() for i in f.data]
            if f.name == "tokenizer.ggml.tokens":
                n_vocab = len(vals)
            writer.add_key_value(f.name, vals, GGUFValueType.ARRAY, sub_type=sub)
        elif t == GGUFValueType.STRING:
            writer.add_key_value(f.name, bytes(f.parts[f.data[0]]).decode(), t)
        else:
            writer.add_key_value(f.name, f.parts[f.data[0]][0].item(), t)
    return n_vocab


def generate_deepseek2(variant, out, vocab_dir, broken, seed):
    """A `deepseek2` model with MLA (llama.cpp's split attn_k_b/attn_v_b layout), leading dense
    layers, routed experts and shared experts."""
    v = VARIANTS[variant]
    rng = np.random.default_rng(seed + sum(map(ord, variant)))
    w = GGUFWriter(out, "deepseek2")
    n_vocab = copy_tokenizer(w, vocab_file(vocab_dir, None, v["vocab"]))
    n_embd, n_head = N_EMBD, v["n_head"]
    kv_lora, nope, rope, vh = v["kv_lora"], v["qk_nope"], v["qk_rope"], v["v_head"]
    n_exp, f, n_sh = v["n_expert"], v["n_ff_exp"], v["n_shared"]
    w.add_name(f"tessera-synthetic-{variant}")
    w.add_context_length(CTX_TRAIN)
    w.add_embedding_length(n_embd)
    w.add_block_count(v["n_layer"])
    w.add_feed_forward_length(N_FF)
    w.add_head_count(n_head)
    w.add_head_count_kv(1)
    w.add_key_length(kv_lora + rope)
    w.add_value_length(kv_lora)
    w.add_key_length_mla(nope + rope)
    w.add_value_length_mla(vh)
    w.add_q_lora_rank(v["q_lora"])
    w.add_kv_lora_rank(kv_lora)
    w.add_rope_dimension_count(rope)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(n_vocab)
    w.add_file_type(0)
    w.add_leading_dense_block_count(v["n_dense"])
    w.add_expert_count(n_exp)
    w.add_expert_used_count(v["n_expert_used"])
    w.add_expert_shared_count(n_sh)
    w.add_expert_feed_forward_length(f)
    w.add_expert_weights_scale(v["scale"])
    w.add_expert_weights_norm(v["norm"])
    w.add_uint32("deepseek2.expert_gating_func", v["gating"])
    if "rope_scale_yarn" in v and broken != "yarn":
        # As DeepSeek-V2's converter writes YaRN: the factor, the original context, and
        # 0.1 × mscale_all_dim as the log multiplier.
        w.add_rope_scaling_type(RopeScalingType.YARN)
        w.add_rope_scaling_factor(v["rope_scale_yarn"])
        w.add_rope_scaling_orig_ctx_len(v["orig_ctx"])
        log_mul = 0.0 if broken == "yarn_log_mul" else v["yarn_log_mul"]
        w.add_float32("deepseek2.rope.scaling.yarn_log_multiplier", log_mul)
    if v.get("groups") and broken != "groups":
        w.add_expert_group_count(v["groups"][0])
        w.add_expert_group_used_count(v["groups"][1])

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def gain(n):
        return (1.0 + normal((n,), 0.2)).astype(np.float32)

    w.add_tensor("token_embd.weight", normal((n_vocab, n_embd), 0.6).astype(np.float16))
    w.add_tensor("output_norm.weight", gain(n_embd))
    w.add_tensor("output.weight", normal((n_vocab, n_embd), 0.6).astype(np.float16))
    qw = n_head * (nope + rope)
    for il in range(v["n_layer"]):
        p = f"blk.{il}."
        w.add_tensor(p + "attn_norm.weight", gain(n_embd))
        if v["q_lora"]:
            w.add_tensor(p + "attn_q_a.weight", normal((v["q_lora"], n_embd), 1.0 / np.sqrt(n_embd)))
            w.add_tensor(p + "attn_q_a_norm.weight", gain(v["q_lora"]))
            w.add_tensor(p + "attn_q_b.weight",
                         normal((qw, v["q_lora"]), 1.8 / np.sqrt(v["q_lora"])))
        else:
            w.add_tensor(p + "attn_q.weight", normal((qw, n_embd), 1.8 / np.sqrt(n_embd)))
        w.add_tensor(p + "attn_kv_a_mqa.weight",
                     normal((kv_lora + rope, n_embd), 1.8 / np.sqrt(n_embd)))
        w.add_tensor(p + "attn_kv_a_norm.weight", gain(kv_lora))
        k_b = normal((n_head, kv_lora, nope), 1.0 / np.sqrt(nope))
        v_b = normal((n_head, vh, kv_lora), 1.0 / np.sqrt(kv_lora))
        if broken == "mla_heads":
            k_b, v_b = np.roll(k_b, 1, axis=0), np.roll(v_b, 1, axis=0)
        w.add_tensor(p + "attn_k_b.weight", k_b)
        w.add_tensor(p + "attn_v_b.weight", v_b)
        w.add_tensor(p + "attn_output.weight", normal((n_embd, n_head * vh), 1.0 / np.sqrt(n_head * vh)))
        w.add_tensor(p + "ffn_norm.weight", gain(n_embd))
        if il < v["n_dense"]:
            w.add_tensor(p + "ffn_gate.weight", normal((N_FF, n_embd), 1.0 / np.sqrt(n_embd)))
            w.add_tensor(p + "ffn_up.weight", normal((N_FF, n_embd), 1.0 / np.sqrt(n_embd)))
            w.add_tensor(p + "ffn_down.weight", normal((n_embd, N_FF), 1.0 / np.sqrt(N_FF)))
            continue
        w.add_tensor(p + "ffn_gate_inp.weight", normal((n_exp, n_embd), 3.0 / np.sqrt(n_embd)))
        if v.get("probs_bias"):
            b = normal((n_exp,), 0.5)
            if broken == "choice_bias":
                b = np.zeros_like(b)
            w.add_tensor(p + "exp_probs_b.bias", b)
        w.add_tensor(p + "ffn_gate_exps.weight", normal((n_exp, f, n_embd), 1.0 / np.sqrt(n_embd)))
        w.add_tensor(p + "ffn_up_exps.weight", normal((n_exp, f, n_embd), 1.0 / np.sqrt(n_embd)))
        w.add_tensor(p + "ffn_down_exps.weight", normal((n_exp, n_embd, f), 1.0 / np.sqrt(f)))
        fs = f * n_sh
        w.add_tensor(p + "ffn_gate_shexp.weight", normal((fs, n_embd), 1.0 / np.sqrt(n_embd)))
        w.add_tensor(p + "ffn_up_shexp.weight", normal((fs, n_embd), 1.0 / np.sqrt(n_embd)))
        w.add_tensor(p + "ffn_down_shexp.weight", normal((n_embd, fs), 1.0 / np.sqrt(fs)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def generate_minicpm3(variant, out, vocab_dir, broken, seed):
    """A `minicpm3` model: MLA with low-rank queries and the fused attn_kv_b (per head:
    qk_nope key rows, then the value rows), a dense SwiGLU FFN, LongRoPE factors."""
    v = VARIANTS[variant]
    rng = np.random.default_rng(seed + sum(map(ord, variant)))
    w = GGUFWriter(out, "minicpm3")
    n_vocab = copy_tokenizer(w, vocab_file(vocab_dir, None, v["vocab"]))
    n_embd, n_head, n_layer = N_EMBD, v["n_head"], v["n_layer"]
    q_lora, kv_lora, nope, rope = v["q_lora"], v["kv_lora"], v["qk_nope"], v["qk_rope"]
    vh = n_embd // n_head
    w.add_name(f"tessera-synthetic-{variant}")
    w.add_context_length(CTX_TRAIN)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(n_vocab)
    w.add_q_lora_rank(q_lora)
    w.add_kv_lora_rank(kv_lora)
    w.add_key_length(nope + rope)
    w.add_rope_dimension_count(rope)
    w.add_file_type(0)

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def gain(n):
        return (1.0 + normal((n,), 0.2)).astype(np.float32)

    # Undoing the residual scale (the break) scales both residual branches' last products.
    res = np.sqrt(n_layer) / 1.4 if broken == "residual_scale" else 1.0
    # x12 at the input: the table is small so the blocks' outputs still matter.
    w.add_tensor("token_embd.weight", normal((n_vocab, n_embd), 0.08).astype(np.float16))
    w.add_tensor("output_norm.weight", gain(n_embd))
    # x4 (256 / n_embd) before the output projection.
    w.add_tensor("output.weight", normal((n_vocab, n_embd), 0.15).astype(np.float16))
    # LongRoPE: short factors (the context here is within the training one) and long ones.
    w.add_tensor("rope_factors_short.weight", np.linspace(1.0, 6.0, rope // 2).astype(np.float32))
    w.add_tensor("rope_factors_long.weight", np.linspace(2.0, 40.0, rope // 2).astype(np.float32))
    qw = n_head * (nope + rope)
    for il in range(n_layer):
        p = f"blk.{il}."
        w.add_tensor(p + "attn_norm.weight", gain(n_embd))
        w.add_tensor(p + "attn_q_a.weight", normal((q_lora, n_embd), 1.0 / np.sqrt(n_embd)))
        w.add_tensor(p + "attn_q_a_norm.weight", gain(q_lora))
        w.add_tensor(p + "attn_q_b.weight", normal((qw, q_lora), 1.8 / np.sqrt(q_lora)))
        w.add_tensor(p + "attn_kv_a_mqa.weight",
                     normal((kv_lora + rope, n_embd), 1.8 / np.sqrt(n_embd)))
        w.add_tensor(p + "attn_kv_a_norm.weight", gain(kv_lora))
        w.add_tensor(p + "attn_kv_b.weight",
                     normal((n_head * (nope + vh), kv_lora), 1.0 / np.sqrt(kv_lora)))
        w.add_tensor(p + "attn_output.weight",
                     normal((n_embd, n_head * vh), res * 1.5 / np.sqrt(n_head * vh)))
        w.add_tensor(p + "ffn_norm.weight", gain(n_embd))
        w.add_tensor(p + "ffn_gate.weight", normal((N_FF, n_embd), 1.0 / np.sqrt(n_embd)))
        w.add_tensor(p + "ffn_up.weight", normal((N_FF, n_embd), 1.0 / np.sqrt(n_embd)))
        w.add_tensor(p + "ffn_down.weight", normal((n_embd, N_FF), res * 1.5 / np.sqrt(N_FF)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def generate_plm(variant, out, vocab_dir, broken, seed):
    """A `plm` model: MLA with direct queries and the fused attn_kv_b (per head: qk_nope key
    rows, then the value rows), a gate-less squared-ReLU FFN, the output tied to the
    embedding."""
    v = VARIANTS[variant]
    rng = np.random.default_rng(seed + sum(map(ord, variant)))
    w = GGUFWriter(out, "plm")
    n_vocab = copy_tokenizer(w, vocab_file(vocab_dir, None, v["vocab"]))
    n_embd, n_ff, n_head, n_layer = v["n_embd"], v["n_ff"], v["n_head"], v["n_layer"]
    kv_lora, nope, rope, vh = v["kv_lora"], v["qk_nope"], v["qk_rope"], v["v_head"]
    w.add_name(f"tessera-synthetic-{variant}")
    w.add_context_length(CTX_TRAIN)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(n_vocab)
    w.add_kv_lora_rank(kv_lora)
    w.add_key_length(nope + rope)
    w.add_value_length(vh)
    w.add_rope_dimension_count(rope)
    w.add_file_type(0)

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def gain(n):
        return (1.0 + normal((n,), 0.2)).astype(np.float32)

    # Tied output: the table's spread sets how peaked the logits are.
    w.add_tensor("token_embd.weight", normal((n_vocab, n_embd), 0.45).astype(np.float16))
    w.add_tensor("output_norm.weight", gain(n_embd))
    qw = n_head * (nope + rope)
    for il in range(n_layer):
        p = f"blk.{il}."
        w.add_tensor(p + "attn_norm.weight", gain(n_embd))
        w.add_tensor(p + "attn_q.weight", normal((qw, n_embd), 1.8 / np.sqrt(n_embd)))
        w.add_tensor(p + "attn_kv_a_mqa.weight",
                     normal((kv_lora + rope, n_embd), 1.8 / np.sqrt(n_embd)))
        w.add_tensor(p + "attn_kv_a_norm.weight", gain(kv_lora))
        kv_b = normal((n_head, nope + vh, kv_lora), 1.0 / np.sqrt(kv_lora))
        if broken == "kv_b_halves":
            kv_b = np.concatenate([kv_b[:, nope:], kv_b[:, :nope]], axis=1)
        w.add_tensor(p + "attn_kv_b.weight", kv_b.reshape(n_head * (nope + vh), kv_lora))
        w.add_tensor(p + "attn_output.weight",
                     normal((n_embd, n_head * vh), 1.0 / np.sqrt(n_head * vh)))
        w.add_tensor(p + "ffn_norm.weight", gain(n_embd))
        w.add_tensor(p + "ffn_up.weight", normal((n_ff, n_embd), 1.0 / np.sqrt(n_embd)))
        w.add_tensor(p + "ffn_down.weight", normal((n_embd, n_ff), 0.5 / np.sqrt(n_ff)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def generate(variant, out, vocab_dir, gemma_vocab, broken=None, seed=1234):
    v = VARIANTS[variant]
    if v["arch"] == "deepseek2":
        return generate_deepseek2(variant, out, vocab_dir, broken, seed)
    if v["arch"] == "minicpm3":
        return generate_minicpm3(variant, out, vocab_dir, broken, seed)
    if v["arch"] == "plm":
        return generate_plm(variant, out, vocab_dir, broken, seed)
    arch = v["arch"]
    if broken == "qk_norm":
        arch = "qwen2"
    if broken == "nope":
        arch = "llama"
    rng = np.random.default_rng(seed + sum(map(ord, variant)))
    w = GGUFWriter(out, arch)
    n_vocab = copy_tokenizer(w, vocab_file(vocab_dir, gemma_vocab, v["vocab"]))
    n_head, n_kv, hd = v["n_head"], v["n_head_kv"], v["head_dim"]
    n_embd, n_ff = v.get("n_embd", N_EMBD), v.get("n_ff", N_FF)
    w.add_name(f"tessera-synthetic-{variant}")
    w.add_context_length(CTX_TRAIN)
    w.add_embedding_length(n_embd)
    w.add_block_count(v["n_layer"])
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(v.get("rope_dims", hd))
    if "orig_ctx" in v and broken != "yarn":
        w.add_rope_scaling_orig_ctx_len(v["orig_ctx"])
    w.add_layer_norm_rms_eps(1e-6)
    # Break `rope_base`: the default base written instead of the variant's.
    w.add_rope_freq_base(10000.0 if broken == "rope_base" else v.get("rope_base", 10000.0))
    w.add_vocab_size(n_vocab)
    # general.file_type: all F32 (0), mostly F16 (1), or mostly Q4_0 (2) / Q8_0 (7).
    w.add_file_type({"Q4_0": 2, "Q8_0": 7, "F16": 1}.get(v.get("quant", v.get("dtype")), 0))
    if "n_expert" in v:
        w.add_expert_count(v["n_expert"])
        w.add_expert_used_count(1 if broken == "experts" else v["n_expert_used"])
        w.add_expert_feed_forward_length(v["n_ff_exp"])
    if "window" in v and broken != "window":
        w.add_sliding_window(v["window"])
    if "rope_scale_yarn" in v and broken != "yarn":
        w.add_rope_scaling_type(RopeScalingType.YARN)
        w.add_rope_scaling_factor(v["rope_scale_yarn"])
    if "rope_scale_linear" in v:
        w.add_rope_scaling_type(RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(v["rope_scale_linear"])
    if "attn_softcap" in v:
        caps = (1e6, 1e6) if broken == "softcap" else (v["attn_softcap"], v["final_softcap"])
        w.add_attn_logit_softcapping(caps[0])
        w.add_final_logit_softcapping(caps[1])

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    qtype = getattr(GGMLQuantizationType, v["quant"]) if "quant" in v else None

    def add_experts(name, m):
        """A 3-D expert tensor: in the variant's expert format if it has one."""
        if "expert_quant" not in v:
            return add_matrix(name, m)
        et = getattr(GGMLQuantizationType, v["expert_quant"])
        q = quants.quantize(m.astype(np.float32), et)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=et)

    def add_matrix(name, m):
        """A 2-D weight: in the variant's block format if it has one, else as given."""
        if qtype is None or m.ndim < 2:
            w.add_tensor(name, m.astype(np.float16) if v.get("dtype") == "F16" else m)
            return
        q = quants.quantize(m.astype(np.float32), qtype)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)

    def gain(n):
        return (1.0 + normal((n,), 0.2)).astype(np.float32)

    # Embeddings: large enough that the output (tied or not) gives peaked distributions.
    emb_std = v.get("emb_std", 0.6)
    emb = normal((n_vocab, n_embd), emb_std)
    if qtype is None:
        w.add_tensor("token_embd.weight", emb.astype(np.float16))
    else:
        add_matrix("token_embd.weight", emb)
    w.add_tensor("output_norm.weight", gain(n_embd))
    if not v.get("tied", True):
        out_w = normal((n_vocab, n_embd), emb_std)
        if qtype is None:
            w.add_tensor("output.weight", out_w.astype(np.float16))
        else:
            add_matrix("output.weight", out_w)
    if v.get("rope_freqs"):
        # Per-pair divisors spanning 0.02..4 so they move every pair's angle visibly.
        f = np.geomspace(0.02, 4.0, hd // 2).astype(np.float32)
        if broken == "rope_freqs":
            f = np.ones_like(f)
        w.add_tensor("rope_freqs.weight", f)
    if v.get("longrope"):
        # Short factors near 1 (unused at the oracle's context), long ones far from it.
        nd = v["rope_dims"] // 2
        near = np.linspace(1.0, 1.5, nd).astype(np.float32)
        far = np.geomspace(0.05, 6.0, nd).astype(np.float32)
        if broken == "rope_freqs":
            far = np.ones_like(far)
        short_f, long_f = (far, near) if v.get("short_far") else (near, far)
        w.add_tensor("rope_factors_short.weight", short_f)
        w.add_tensor("rope_factors_long.weight", long_f)
    qw, kw = n_head * hd, n_kv * hd
    for il in range(v["n_layer"]):
        p = f"blk.{il}."
        w.add_tensor(p + "attn_norm.weight", gain(n_embd))
        wq = normal((qw, n_embd), 0.9 / np.sqrt(n_embd) * 2)
        wk = normal((kw, n_embd), 0.9 / np.sqrt(n_embd) * 2)
        wv = normal((kw, n_embd), 1.0 / np.sqrt(n_embd))
        if v.get("fused"):
            add_matrix(p + "attn_qkv.weight", np.concatenate([wq, wk, wv]))
        else:
            add_matrix(p + "attn_q.weight", wq)
            add_matrix(p + "attn_k.weight", wk)
            add_matrix(p + "attn_v.weight", wv)
        add_matrix(p + "attn_output.weight", normal((n_embd, qw), 1.0 / np.sqrt(qw)))
        if v.get("qkv_bias"):
            scale = 0.0 if broken == "bias" else 1.0
            w.add_tensor(p + "attn_q.bias", normal((qw,), 1.0) * scale)
            w.add_tensor(p + "attn_k.bias", normal((kw,), 1.0) * scale)
            w.add_tensor(p + "attn_v.bias", normal((kw,), 0.5) * scale)
        if v.get("out_bias"):
            w.add_tensor(p + "attn_output.bias", normal((n_embd,), 0.5))
        if v.get("sinks"):
            sinks = normal((n_head,), 1.0) + 1.0
            if broken == "sinks":
                sinks = np.full((n_head,), -1e4, dtype=np.float32)
            w.add_tensor(p + "attn_sinks.weight", sinks.astype(np.float32))
        if v.get("qk_norm"):
            qn, kn = gain(hd) * 2.0, gain(hd) * 2.0
            w.add_tensor(p + "attn_q_norm.weight", qn)
            w.add_tensor(p + "attn_k_norm.weight", kn)
        w.add_tensor(p + ("post_attention_norm.weight" if v.get("oai_norms") else "ffn_norm.weight"),
                     gain(n_embd))
        if "n_expert" in v:
            # Router logits spread well apart (near-ties between the last chosen expert and
            # the next would make the choice, and the distributions, jump on noise).
            n_exp, f = v["n_expert"], v["n_ff_exp"]
            add_matrix(p + "ffn_gate_inp.weight", normal((n_exp, n_embd), 5.0 / np.sqrt(n_embd)))
            add_experts(p + "ffn_gate_exps.weight", normal((n_exp, f, n_embd), 1.0 / np.sqrt(n_embd)))
            add_experts(p + "ffn_up_exps.weight", normal((n_exp, f, n_embd), 1.0 / np.sqrt(n_embd)))
            add_experts(p + "ffn_down_exps.weight", normal((n_exp, n_embd, f), 1.0 / np.sqrt(f)))
            if v.get("expert_bias"):
                w.add_tensor(p + "ffn_gate_inp.bias", normal((n_exp,), 1.0))
                w.add_tensor(p + "ffn_gate_exps.bias", normal((n_exp, f), 0.5))
                w.add_tensor(p + "ffn_up_exps.bias", normal((n_exp, f), 0.5))
                w.add_tensor(p + "ffn_down_exps.bias", normal((n_exp, n_embd), 0.3))
            continue
        gate = normal((n_ff, n_embd), 1.0 / np.sqrt(n_embd))
        up = normal((n_ff, n_embd), 1.0 / np.sqrt(n_embd))
        if v.get("fused"):
            add_matrix(p + "ffn_up.weight", np.concatenate([gate, up]))
        else:
            add_matrix(p + "ffn_gate.weight", gate)
            add_matrix(p + "ffn_up.weight", up)
        add_matrix(p + "ffn_down.weight", normal((n_embd, n_ff), 1.0 / np.sqrt(n_ff)))
        if v.get("post_norms"):
            w.add_tensor(p + "post_attention_norm.weight", gain(n_embd))
            w.add_tensor(p + "post_ffw_norm.weight", gain(n_embd))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("variant", nargs="?")
    ap.add_argument("--out")
    src = os.environ.get("TESSERA_LLAMA_CPP_SRC", "")
    ap.add_argument("--vocab-dir", default=os.path.join(src, "models") if src else "")
    ap.add_argument("--gemma-vocab", default="")
    ap.add_argument("--break", dest="broken", choices=BREAKS)
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    if a.list:
        for k, v in VARIANTS.items():
            print(k, v["arch"], v["vocab"])
        return
    if a.variant not in VARIANTS or not a.out:
        ap.error(f"give a variant ({', '.join(VARIANTS)}) and --out")
    generate(a.variant, a.out, a.vocab_dir, a.gemma_vocab, a.broken)
    h = hashlib.sha256(open(a.out, "rb").read()).hexdigest()
    print(f"{a.out} sha256 {h}")


if __name__ == "__main__":
    sys.exit(main())
