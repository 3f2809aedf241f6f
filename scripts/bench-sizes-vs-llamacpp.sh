#!/usr/bin/env bash
# Speed at the sizes people run, Tessera vs llama.cpp side by side: synthetic models with the
# shapes of Llama-3.2-1B (Q4_0, Q4_K_M, Q8_0), Qwen3-1.7B (Q4_K_M) and, when LARGE=1,
# Llama-3.1-8B (Q4_K_M; pp64 and tg32 only, it is slow on two cores). The F16 sources come from
# tests/synthetic/gen.py (`bench-*-f16`, random weights: the speed does not depend on them),
# quantized by `tessera quantize` (byte for byte llama-quantize's); both are kept in WORK and
# made only when missing. Then scripts/bench-vs-llamacpp.sh times them (A B A B, the read
# bandwidth measured before every run) and its report replaces the `sizes` section of
# BENCHMARKS.md.
#
#   LLAMA_BENCH=/path/to/llama-bench scripts/bench-sizes-vs-llamacpp.sh
#
# Environment: as bench-vs-llamacpp.sh (LLAMA_BENCH required; THREADS, REPS, ROUNDS, BW, OUT,
# MAX_LOAD, WAIT_TRIES), plus WORK (default ~/.cache/tessera/bench; ~2.5 + 4 GB of F16 and
# ~3.5 GB quantized, 16 + 5 GB more with LARGE=1), LARGE (1: add the 8B shape) and
# TESSERA_LLAMA_CPP_SRC (llama.cpp's source tree, for gen.py's vocabularies: its models/ folder).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${LLAMA_BENCH:?set LLAMA_BENCH to a llama-bench binary (built outside this repo)}"
TESSERA=${TESSERA:-target/release/tessera}
WORK=${WORK:-$HOME/.cache/tessera/bench}
LARGE=${LARGE:-0}
if [ ! -x "$TESSERA" ]; then
    cargo build --release -p tessera-cli
fi
mkdir -p "$WORK"

# model VARIANT QUANT: the path of VARIANT's F16 source quantized to QUANT, made if missing.
model() {
    local f16="$WORK/bench-$1-f16.gguf"
    local out="$WORK/bench-$1-$(echo "$2" | tr 'A-Z' 'a-z').gguf"
    if [ ! -f "$out" ]; then
        if [ ! -f "$f16" ]; then
            python3 tests/synthetic/gen.py "bench-$1-f16" --out "$f16" >&2
        fi
        "$TESSERA" quantize "$f16" "$out" "$2" >&2
    fi
    echo "$out"
}

models="$(model llama3-1b Q4_0) $(model llama3-1b Q4_K_M) $(model llama3-1b Q8_0)"
models="$models $(model qwen3-1.7b Q4_K_M)"
if [ "$LARGE" = 1 ]; then
    models="$models $(model llama3-8b Q4_K_M):64:32"
fi
MODELS="$models" SECTION=sizes \
    TITLE="Speed at 1B-8B shapes: Tessera vs llama.cpp (scripts/bench-sizes-vs-llamacpp.sh)" \
    LLAMA_BENCH="$LLAMA_BENCH" TESSERA="$TESSERA" scripts/bench-vs-llamacpp.sh
