#!/usr/bin/env bash
# The GPU checks of issue #18 in one call on a lent device machine (no network; made ready by
# scripts/device-prepare.sh, whose `.device/` and `.gl/` travel as `carry`): Tessera's wgpu
# backend on the machine's GPU (Vulkan) against llama.cpp built there with CUDA,
#
#   1. engine against engine: `tessera bench --device gpu --parallel 1,8` vs
#      `llama-batched-bench -ngl 99 -npl 1,8` (scripts/bench-parallel-vs-llamacpp.sh), and
#      pp512 / tg128 (`tessera bench` vs `llama-bench`, scripts/bench-vs-llamacpp.sh);
#   2. the servers: `tessera serve --device gpu` vs `llama-server -ngl 99`, 8 streams × 128
#      tokens, time to first token, a cached 1000-token prefix (scripts/bench-serve-vs-llamacpp.sh);
#
# on models of SmolLM2-135M's and Gemma 3 270M's exact shapes and formats (Q4_1, Q4_K_M) with
# random weights (tests/synthetic/gen.py `bench-smollm2-f16`, `bench-gemma3-270m-f16`,
# quantized by `tessera quantize`): the registry files are too large to travel, and speed does
# not depend on the weights' values. Everything it writes goes to $OUT (BENCHMARKS.md with
# the new sections, serve.md, logs), which the device tool brings back.
#
# Locally (a dry run on a software Vulkan device and a CPU llama.cpp): LLAMA_BIN=DIR (llama.cpp's
# binaries already built: no build) OUT=/tmp/out TESSERA=target/release/tessera QUICK=1.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?OUT: where the results go}
QUICK=${QUICK:-0}
# Generated tokens per stream (and rounds of the side-by-side runs); QUICK=1: a dry run.
if [ "$QUICK" = 1 ]; then n=16 par_tg=16 rounds=1; else n=128 par_tg=64 rounds=2; fi
log() { printf '[%4ds] %s\n' "$SECONDS" "$*" | tee -a "$OUT/device-check.log"; }
work=/tmp/device-check
mkdir -p "$work/models"

# The loaders, where the image has none (the device tool's README).
if ! ldconfig -p | grep -q libvulkan.so.1 && ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && [ -z "${VK_DRIVER_FILES:-}" ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
nvidia-smi -L 2>&1 | tee -a "$OUT/device-check.log" || true

# llama.cpp with CUDA, in the background while the models are made.
if [ -n "${LLAMA_BIN:-}" ]; then
    llama_bin=$LLAMA_BIN
else
    llama_bin=$work/llama/build/bin
    mkdir -p "$work/llama"
    tar -xzf .device/llama.cpp.tar.gz -C "$work/llama"
    (
        cd "$work/llama" &&
            cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
                -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DLLAMA_CURL=OFF \
                -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF ${LLAMA_CMAKE_ARGS:-} \
                -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >"$OUT/llama-build.log" 2>&1 &&
            cmake --build build -j"$(nproc)" --target llama-bench llama-batched-bench llama-server \
                >>"$OUT/llama-build.log" 2>&1
    ) &
    build_pid=$!
    log "llama.cpp CUDA build started"
fi

# Tessera and the models.
if [ -z "${TESSERA:-}" ]; then
    gunzip -c .device/tessera.gz >"$work/tessera" && chmod +x "$work/tessera"
    TESSERA=$work/tessera
fi
export TESSERA
if ls .device/whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$work/site" .device/whl/*.whl && export PYTHONPATH=$work/site
fi
"$TESSERA" info --devices 2>&1 | tee -a "$OUT/device-check.log"
vocab=${VOCAB_DIR:-.device/vocab}
python3 tests/synthetic/gen.py bench-smollm2-f16 --vocab-dir "$vocab" \
    --out "$work/models/smollm2-f16.gguf" >>"$OUT/device-check.log" 2>&1
python3 tests/synthetic/gen.py bench-gemma3-270m-f16 --gemma-vocab "$vocab/gemma3-tokenizer.gguf" \
    --out "$work/models/gemma3-f16.gguf" >>"$OUT/device-check.log" 2>&1
"$TESSERA" quantize "$work/models/smollm2-f16.gguf" "$work/models/smollm2-135m-shape-q4_1.gguf" Q4_1 \
    >>"$OUT/device-check.log" 2>&1
"$TESSERA" quantize "$work/models/gemma3-f16.gguf" "$work/models/gemma-3-270m-shape-q4_k_m.gguf" Q4_K_M \
    >>"$OUT/device-check.log" 2>&1
models="$work/models/smollm2-135m-shape-q4_1.gguf $work/models/gemma-3-270m-shape-q4_k_m.gguf"
log "models made"

# Tessera alone first (useful even if llama.cpp does not build in time).
for m in $models; do
    "$TESSERA" bench -m "$m" --device gpu -p 512 -n "$n" --parallel 1,8 -r 3 2>&1 |
        tee -a "$OUT/tessera-gpu.md"
done
log "tessera GPU bench done"

if [ -n "${build_pid:-}" ]; then
    wait "$build_pid" || { log "llama.cpp build failed (llama-build.log)"; tail -30 "$OUT/llama-build.log"; }
    log "llama.cpp build finished"
fi
cp BENCHMARKS.md "$OUT/BENCHMARKS.md"
if [ -x "$llama_bin/llama-batched-bench" ]; then
    LLAMA_BATCHED_BENCH=$llama_bin/llama-batched-bench DEVICE=gpu MODELS="$models" THREADS=$(nproc) \
        ROUNDS=$rounds TG=$par_tg \
        OUT=$OUT/BENCHMARKS.md SECTION=parallel-gpu \
        bash scripts/bench-parallel-vs-llamacpp.sh 2>&1 | tee -a "$OUT/device-check.log"
    log "parallel bench done"
fi
if [ -x "$llama_bin/llama-server" ]; then
    # shellcheck disable=SC2086
    LLAMA_SERVER=$llama_bin/llama-server TESSERA_ARGS="--device gpu" LLAMA_ARGS="-ngl 99" \
        TOKENS=$n OUT=$OUT/serve.md \
        bash scripts/bench-serve-vs-llamacpp.sh $models 2>&1 | tee -a "$OUT/device-check.log"
    log "serve bench done"
fi
if [ -x "$llama_bin/llama-bench" ] && [ "$QUICK" != 1 ]; then
    LLAMA_BENCH=$llama_bin/llama-bench DEVICE=gpu BW=${GPU_BW:-3.35e12} MODELS="$models" THREADS=$(nproc) \
        REPS=3 ROUNDS=1 MAX_LOAD=100 OUT=$OUT/BENCHMARKS.md SECTION=gpu-device \
        TITLE="Tessera (wgpu, Vulkan) vs llama.cpp (CUDA) on the lent GPU" \
        bash scripts/bench-vs-llamacpp.sh 2>&1 | tee -a "$OUT/device-check.log"
    log "pp/tg bench done"
fi
log "all done"
