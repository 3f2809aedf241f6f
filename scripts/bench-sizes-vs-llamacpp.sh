#!/usr/bin/env bash
# Speed at the sizes people run, Tessera vs llama.cpp side by side: synthetic models with the
# shapes of Llama-3.2-1B (Q4_0, Q4_K_M, Q5_K_M, Q8_0, Q3_K_M, Q2_K, Q5_1, IQ4_XS,
# IQ4_NL), Qwen3-1.7B (Q4_K_M)
# and, when LARGE=1, Llama-3.1-8B (Q4_K_M; pp64 and tg32 only, it is slow on two cores). The F16
# sources come from tests/synthetic/gen.py (`bench-*-f16`, random weights: the speed does not
# depend on them), quantized by `tessera quantize` (byte for byte llama-quantize's); both are
# kept in WORK and made only when missing. Then scripts/bench-vs-llamacpp.sh times them (A B A
# B, the read bandwidth measured before every run) and its report replaces the `sizes` section
# of BENCHMARKS.md.
#
#   LLAMA_BENCH=/path/to/llama-bench scripts/bench-sizes-vs-llamacpp.sh
#
# Environment: as bench-vs-llamacpp.sh (LLAMA_BENCH required; THREADS, REPS, ROUNDS, BW, OUT,
# MAX_LOAD, WAIT_TRIES), plus WORK (default ~/.cache/tessera/bench; ~2.5 + 4 GB of F16 and
# ~3.5 GB quantized, 16 + 5 GB more with LARGE=1), LARGE (1: add the 8B shape) and
# TESSERA_LLAMA_CPP_SRC (llama.cpp's source tree, for gen.py's vocabularies: its models/ folder).
# With DEVICE=gpu (and BW the GPU's bandwidth) both engines run on the GPU (`--device gpu`,
# `-ngl 99`) and the report goes to the `sizes-gpu` section instead.
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

models="$(model llama3-1b Q4_0) $(model llama3-1b Q4_K_M) $(model llama3-1b Q5_K_M)"
models="$models $(model llama3-1b Q8_0) $(model llama3-1b Q3_K_M) $(model llama3-1b Q2_K)"
models="$models $(model llama3-1b Q5_1) $(model llama3-1b IQ4_XS) $(model llama3-1b IQ4_NL)"
models="$models $(model qwen3-1.7b Q4_K_M)"
if [ "$LARGE" = 1 ]; then
    models="$models $(model llama3-8b Q4_K_M):64:32"
fi
# Cold start: each engine's `bench -p 1 -n 0 -r 1` (load, a warm-up token, one timed token)
# timed from the moment the model file's pages are dropped from the page cache
# (posix_fadvise DONTNEED), alternately, COLD_ROUNDS rounds; the medians go under the table.
COLD_ROUNDS=${COLD_ROUNDS:-2}
THREADS=${THREADS:-2}
DEVICE=${DEVICE:-cpu}
if [ "$DEVICE" = gpu ]; then
    llama_dev=(-ngl 99)
    section=sizes-gpu
else
    llama_dev=()
    section=sizes
fi
cold=$(mktemp)
trap 'rm -f "$cold"' EXIT
evict() {
    python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
os.close(fd)' "$1"
}
seconds() {
    python3 -c 'import subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
print(f"{time.monotonic() - t:.3f}")' "$@"
}
{
    echo "Cold start (model pages dropped from the page cache first; \`bench -p 1 -n 0 -r 1 -t $THREADS\`"
    echo "wall time: mmap, load, a warm-up token and one timed token; median of $COLD_ROUNDS):"
    echo
    echo "| model | file | llama.cpp s | Tessera s |"
    echo "| --- | ---: | ---: | ---: |"
} > "$cold"
for spec in $models; do
    m=${spec%%:*}
    l=()
    t=()
    for _ in $(seq 1 "$COLD_ROUNDS"); do
        evict "$m"
        l+=("$(seconds "$LLAMA_BENCH" -m "$m" -t "$THREADS" -p 1 -n 0 -r 1 "${llama_dev[@]}")")
        evict "$m"
        t+=("$(seconds "$TESSERA" bench -m "$m" -t "$THREADS" -p 1 -n 0 -r 1 --device "$DEVICE")")
    done
    python3 - "$m" "${l[*]}" "${t[*]}" >> "$cold" <<'PY'
import os, statistics, sys
m, l, t = sys.argv[1:4]
med = lambda s: statistics.median(float(x) for x in s.split())
print(f"| {os.path.basename(m)[:-5]} | {os.path.getsize(m) / 1e9:.2f} GB | {med(l):.2f} | {med(t):.2f} |")
PY
done

MODELS="$models" SECTION="$section" APPENDIX="$cold" DEVICE="$DEVICE" \
    TITLE="Speed at 1B-8B shapes: Tessera vs llama.cpp on the $DEVICE (scripts/bench-sizes-vs-llamacpp.sh)" \
    LLAMA_BENCH="$LLAMA_BENCH" TESSERA="$TESSERA" scripts/bench-vs-llamacpp.sh
