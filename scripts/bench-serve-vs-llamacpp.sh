#!/usr/bin/env bash
# `tessera serve` against llama.cpp's `llama-server`, side by side on this machine, with one
# client (scripts/bench_serve.py) for both: per model, each server is started on a loopback
# port with PARALLEL slots and a context of CTX tokens (llama-server splits it, CTX / PARALLEL
# per slot; tessera's slots share it), then measured (single stream of TOKENS
# tokens; PARALLEL concurrent streams of TOKENS tokens: aggregate tokens/s, time to first
# token p50/p95; a ~1000-token
# prefix cold then cached), then stopped. Servers alternate A B A B over ROUNDS rounds; the
# table prints the median of each figure and the ratios the serve issue asks for. llama.cpp is
# not built here: point LLAMA_SERVER at a `llama-server` you built (from the llama-cpp-python
# 0.3.36 sdist, vendor/llama.cpp, with -DLLAMA_BUILD_SERVER=ON).
#
#   LLAMA_SERVER=/path/to/llama-server scripts/bench-serve-vs-llamacpp.sh [MODEL.gguf ...]
#
# Environment: LLAMA_SERVER (required), TESSERA (target/release/tessera), THREADS (all cores),
# PARALLEL (8), CTX (16384), TOKENS (128), ROUNDS (1), PORT (18200), OUT (append the table to
# this file, e.g. BENCHMARKS.md; default: print only), TESSERA_ARGS and LLAMA_ARGS (more
# arguments for each server, split on spaces: on a GPU, TESSERA_ARGS="--device gpu" and
# LLAMA_ARGS="-ngl 99"). Models default to the two registry
# models in ~/.cache/tessera/models. The machine should be quiet: these are throughput figures.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${LLAMA_SERVER:?set LLAMA_SERVER to a llama-server binary (built outside this repo)}"
TESSERA=${TESSERA:-target/release/tessera}
THREADS=${THREADS:-$(nproc)}
PARALLEL=${PARALLEL:-8}
CTX=${CTX:-16384}
TOKENS=${TOKENS:-128}
ROUNDS=${ROUNDS:-1}
PORT=${PORT:-18200}
models_dir=${TESSERA_MODELS:-$HOME/.cache/tessera/models}
if [ $# -eq 0 ]; then
    set -- "$models_dir/smollm2-135m-instruct-q4_1.gguf" "$models_dir/gemma-3-270m-q4_k_m.gguf"
fi
if [ ! -x "$TESSERA" ]; then
    cargo build --release -p tessera-cli
fi
results=$(mktemp)
trap 'rm -f "$results"; kill "${server_pid:-0}" 2>/dev/null || true' EXIT

wait_healthy() { # until GET /health answers 200, or fail after 120 s
    for _ in $(seq 1 240); do
        if curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$server_pid" 2>/dev/null; then echo "server exited" >&2; return 1; fi
        sleep 0.5
    done
    echo "server not healthy after 120 s" >&2
    return 1
}

measure() { # label, then the server command
    local label=$1
    shift
    "$@" >"$results.log" 2>&1 &
    server_pid=$!
    wait_healthy || { tail -20 "$results.log" >&2; exit 1; }
    python3 scripts/bench_serve.py "http://127.0.0.1:$PORT" --tokens "$TOKENS" \
        --concurrency "$PARALLEL" --label "$label" >>"$results"
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
}

for model in "$@"; do
    name=$(basename "$model" .gguf)
    for _ in $(seq 1 "$ROUNDS"); do
        measure "$name llama-server" "$LLAMA_SERVER" -m "$model" --host 127.0.0.1 --port "$PORT" \
            -np "$PARALLEL" -c "$CTX" -t "$THREADS" ${LLAMA_ARGS:-}
        measure "$name tessera" "$TESSERA" serve -m "$model" --host 127.0.0.1 --port "$PORT" \
            --parallel "$PARALLEL" -c "$CTX" -t "$THREADS" ${TESSERA_ARGS:-}
    done
done

table=$(python3 - "$results" "$PARALLEL" "$TOKENS" "$CTX" "$THREADS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
par, toks, ctx, threads = sys.argv[2:6]
by = {}
for r in rows:
    by.setdefault(r["label"], []).append(r)
def med(label, f):
    return statistics.median(f(r) for r in by[label])
print(f"| model | server | single tok/s | {par}×{toks} aggregate tok/s | aggregate / own single | TTFT p50 / p95 (s) | 1k-prefix cold / cached TTFT (s) | prefix speedup |")
print("|---|---|---|---|---|---|---|---|")
models = sorted({l.rsplit(" ", 1)[0] for l in by})
for m in models:
    for srv in ("llama-server", "tessera"):
        l = f"{m} {srv}"
        if l not in by:
            continue
        single = med(l, lambda r: r["single"]["tps"])
        agg = med(l, lambda r: r["concurrent"]["aggregate_tps"])
        p50 = med(l, lambda r: r["concurrent"]["ttft_p50_s"])
        p95 = med(l, lambda r: r["concurrent"]["ttft_p95_s"])
        cold = med(l, lambda r: r["prefix"]["cold_ttft_s"])
        warm = med(l, lambda r: r["prefix"]["warm_ttft_s"])
        failed = sum(r["concurrent"]["failed"] for r in by[l])
        note = f" ({failed} failed)" if failed else ""
        print(f"| {m} | {srv} | {single:.1f} | {agg:.1f}{note} | {agg / single:.2f}× | {p50:.2f} / {p95:.2f} | {cold:.2f} / {warm:.3f} | {cold / warm:.1f}× |")
    a, b = f"{m} tessera", f"{m} llama-server"
    if a in by and b in by:
        ratio = med(a, lambda r: r["concurrent"]["aggregate_tps"]) / med(b, lambda r: r["concurrent"]["aggregate_tps"])
        print(f"| {m} | **tessera / llama-server aggregate** | | **{ratio:.2f}×** | | | | |")
print()
print(f"-c {ctx}: llama-server splits it over its {par} slots; tessera's {par} slots share it "
      f"(one KV pool). {threads} threads, greedy, ignore_eos where supported.")
EOF
)
echo "$table"
if [ -n "${OUT:-}" ]; then
    {
        echo
        echo "### tessera serve vs llama-server ($(date -u +%Y-%m-%d), $(nproc) cores)"
        echo
        echo "Command: \`LLAMA_SERVER=... scripts/bench-serve-vs-llamacpp.sh\` (ROUNDS=$ROUNDS${TESSERA_ARGS:+, TESSERA_ARGS=$TESSERA_ARGS}${LLAMA_ARGS:+, LLAMA_ARGS=$LLAMA_ARGS})."
        echo
        echo "$table"
    } >>"$OUT"
fi
