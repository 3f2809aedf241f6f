#!/usr/bin/env bash
# `tessera quantize` against llama.cpp's `llama-quantize`, side by side on this machine: a
# 1B-shaped F16 synthetic model (gen.py bench-1b-f16: 22 layers, 2048 wide, FFN 5632, GQA 32:4,
# 32000-token vocabulary; 2.2 GB) quantized to each TYPE by both tools alternately (A B A B,
# ROUNDS rounds), THREADS threads each. Prints per type the median wall time of each tool, the
# speed ratio (llama-quantize time / Tessera time: above 1 means Tessera is faster) and whether
# the two outputs are byte-identical. llama.cpp is not built here: point LLAMA_QUANTIZE at a
# `llama-quantize` you built (from the llama-cpp-python 0.3.36 sdist, vendor/llama.cpp).
#
#   LLAMA_QUANTIZE=/path/to/llama-quantize scripts/bench-quantize-vs-llamacpp.sh
#
# Environment: LLAMA_QUANTIZE (required), TESSERA (target/release/tessera), TYPES
# ("Q4_0 Q8_0 Q4_K_M Q5_K_M Q6_K Q3_K_M"), THREADS (2), ROUNDS (2), WORK (a scratch folder with
# ~8 GB free; default a new temp folder), TESSERA_LLAMA_CPP_SRC (for gen.py's vocabulary).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${LLAMA_QUANTIZE:?set LLAMA_QUANTIZE to a llama-quantize binary (built outside this repo)}"
TESSERA=${TESSERA:-target/release/tessera}
TYPES=${TYPES:-"Q4_0 Q8_0 Q4_K_M Q5_K_M Q6_K Q3_K_M"}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
if [ ! -x "$TESSERA" ]; then
    cargo build --release -p tessera-cli
fi
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
gemma=${GEMMA:-$HOME/.cache/tessera/models/gemma-3-270m-q4_k_m.gguf}
src="$work/bench-1b-f16.gguf"
if [ ! -f "$src" ]; then
    python3 tests/synthetic/gen.py bench-1b-f16 --out "$src" --gemma-vocab "$gemma" >&2
fi

secs() { # run a command, print its wall time in seconds
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "| type | llama-quantize s | tessera s | speed ratio | identical |"
echo "|---|---|---|---|---|"
for t in $TYPES; do
    : >"$work/l.$t"; : >"$work/t.$t"
    for _ in $(seq "$ROUNDS"); do
        secs "$LLAMA_QUANTIZE" "$src" "$work/l.gguf" "$t" "$THREADS" >>"$work/l.$t"
        secs "$TESSERA" quantize "$src" "$work/t.gguf" "$t" "$THREADS" >>"$work/t.$t"
    done
    l=$(median <"$work/l.$t"); m=$(median <"$work/t.$t")
    same=no
    if cmp -s "$work/l.gguf" "$work/t.gguf"; then same=yes; fi
    printf "| %s | %.1f | %.1f | %.2f× | %s |\n" "$t" "$l" "$m" "$(echo "$l / $m" | bc -l)" "$same"
    rm -f "$work/l.gguf" "$work/t.gguf"
done
