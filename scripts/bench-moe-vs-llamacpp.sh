#!/usr/bin/env bash
# Mixture-of-experts speed, Tessera vs llama.cpp side by side: a synthetic MoE with
# Qwen3-30B-A3B's proportions at ~1.9B parameters (tests/synthetic/gen.py `bench-moe-f16`:
# 16 layers 2048 wide, 32 experts of 512 with 4 chosen per token, GQA 16:4, a 32000-token
# vocabulary), quantized to Q4_K_M by `tessera quantize` (byte for byte llama-quantize's), then
# timed by scripts/bench-vs-llamacpp.sh (pp512 and tg128, A B A B), whose report replaces the
# `moe` section of BENCHMARKS.md. Its bandwidth column counts only the chosen experts' bytes.
#
#   LLAMA_BENCH=/path/to/llama-bench scripts/bench-moe-vs-llamacpp.sh
#
# Environment: as bench-vs-llamacpp.sh (LLAMA_BENCH required; THREADS, REPS, ROUNDS, BW, OUT,
# MAX_LOAD, WAIT_TRIES), plus WORK (where the ~3.8 GB F16 and ~1.1 GB Q4_K_M models are kept
# between runs; default ~/.cache/tessera/bench) and TESSERA_LLAMA_CPP_SRC (llama.cpp's source
# tree, for gen.py's vocabulary: its models/ folder).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${LLAMA_BENCH:?set LLAMA_BENCH to a llama-bench binary (built outside this repo)}"
TESSERA=${TESSERA:-target/release/tessera}
WORK=${WORK:-$HOME/.cache/tessera/bench}
if [ ! -x "$TESSERA" ]; then
    cargo build --release -p tessera-cli
fi
mkdir -p "$WORK"
f16="$WORK/bench-moe-f16.gguf"
model="$WORK/bench-moe-q4_k_m.gguf"
if [ ! -f "$model" ]; then
    if [ ! -f "$f16" ]; then
        python3 tests/synthetic/gen.py bench-moe-f16 --out "$f16" >&2
    fi
    "$TESSERA" quantize "$f16" "$model" Q4_K_M >&2
fi
MODELS="$model" SECTION=moe \
    TITLE="Mixture of experts: Tessera vs llama.cpp (scripts/bench-moe-vs-llamacpp.sh)" \
    LLAMA_BENCH="$LLAMA_BENCH" TESSERA="$TESSERA" scripts/bench-vs-llamacpp.sh
