#!/usr/bin/env bash
# Side-by-side speed of Tessera and llama.cpp on this machine, written to BENCHMARKS.md.
#
# Runs llama.cpp's `llama-bench` and `tessera bench` alternately (A B A B …, ROUNDS rounds) on
# each model, pp512 and tg128 with THREADS threads, and reports per engine the median over
# rounds of each round's mean t/s, the ratio, and tg128 as a share of the bandwidth limit
# (model bytes × t/s / BW). llama.cpp is NOT built or downloaded here: point LLAMA_BENCH at a
# `llama-bench` you built yourself.
#
#   LLAMA_BENCH=/path/to/llama-bench scripts/bench-vs-llamacpp.sh
#
# Environment: LLAMA_BENCH (required), TESSERA (default: target/release/tessera, built with
# cargo if missing), MODELS (space-separated GGUF paths; default: SmolLM2 Q4_1 and Gemma 3
# Q4_K_M in ~/.cache/tessera/models), THREADS (2), REPS (repetitions per run, 5), ROUNDS (2),
# BW (read bandwidth in bytes/s for the limit, 19.6e9), OUT (BENCHMARKS.md),
# MAX_LOAD (wait until the 1-minute load average is below this; 2.5), WAIT_TRIES (at most this
# many 10 s waits per run, then run anyway; 60).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${LLAMA_BENCH:?set LLAMA_BENCH to a llama-bench binary (built outside this repo)}"
TESSERA=${TESSERA:-target/release/tessera}
THREADS=${THREADS:-2}
REPS=${REPS:-5}
ROUNDS=${ROUNDS:-2}
BW=${BW:-19.6e9}
OUT=${OUT:-BENCHMARKS.md}
MAX_LOAD=${MAX_LOAD:-2.5}
WAIT_TRIES=${WAIT_TRIES:-60}
MDIR=${TESSERA_MODELS:-$HOME/.cache/tessera/models}
MODELS=${MODELS:-"$MDIR/smollm2-135m-instruct-q4_1.gguf $MDIR/gemma-3-270m-q4_k_m.gguf"}

if [ ! -x "$TESSERA" ]; then
    cargo build --release -p tessera-cli
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

wait_quiet() {
    local tries=0
    while awk -v m="$MAX_LOAD" '{exit !($1 >= m)}' /proc/loadavg && [ $tries -lt "$WAIT_TRIES" ]; do
        sleep 10
        tries=$((tries + 1))
    done
}

loads=()
for m in $MODELS; do
    name=$(basename "$m" .gguf)
    for r in $(seq 1 "$ROUNDS"); do
        wait_quiet
        loads+=("$(cut -d' ' -f1 /proc/loadavg)")
        "$LLAMA_BENCH" -m "$m" -t "$THREADS" -p 512 -n 128 -r "$REPS" -o json \
            > "$work/$name.llama.$r.json" 2> "$work/$name.llama.$r.err"
        wait_quiet
        loads+=("$(cut -d' ' -f1 /proc/loadavg)")
        "$TESSERA" bench -m "$m" -t "$THREADS" -p 512 -n 128 -r "$REPS" --json \
            > "$work/$name.tessera.$r.json" 2> "$work/$name.tessera.$r.err"
    done
done

python3 - "$work" "$OUT" "$BW" "$THREADS" "$REPS" "$ROUNDS" "$LLAMA_BENCH" "${loads[*]}" $MODELS <<'PY'
import glob, json, os, platform, statistics, subprocess, sys, datetime
work, out, bw, threads, reps, rounds, llama, loads = sys.argv[1:9]
models = sys.argv[9:]
bw = float(bw)

def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()

def flags():
    try:
        f = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
        return " ".join(x for x in ["avx2", "fma", "f16c", "avx512f"] if x in f)
    except (OSError, StopIteration):
        return "?"

def results(name, engine):
    per = {}
    size = None
    for p in sorted(glob.glob(f"{work}/{name}.{engine}.*.json")):
        for row in json.load(open(p)):
            test = f"pp{row['n_prompt']}" if row["n_gen"] == 0 else f"tg{row['n_gen']}"
            per.setdefault(test, []).append(row["avg_ts"])
            size = row.get("model_size", size)
    return {k: statistics.median(v) for k, v in per.items()}, per, size

build = "?"
for p in glob.glob(f"{work}/*.llama.*.json"):
    for row in json.load(open(p)):
        build = f"{row.get('build_commit', '?')} ({row.get('build_number', '?')})"

lines = [
    "# Tessera vs llama.cpp on this machine",
    "",
    f"Produced by `scripts/bench-vs-llamacpp.sh` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
    "",
    f"- CPU: {cpu()}, {os.cpu_count()} logical cores ({flags()}); threads: {threads}",
    f"- llama.cpp: `{llama}`, build {build}",
    f"- Tessera: `git {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}`",
    f"- Runs: A B A B ({rounds} rounds of each engine, {reps} repetitions each after a warm-up); "
    "figures are the median over rounds of each round's mean t/s.",
    f"- 1-minute load average before each run: {loads}",
    f"- Bandwidth limit: model bytes × t/s ÷ {bw / 1e9:.1f} GB/s (read bandwidth with {threads} threads).",
    "",
    "Commands:",
    "",
    "```",
    f"llama-bench -m MODEL -t {threads} -p 512 -n 128 -r {reps} -o json",
    f"tessera bench -m MODEL -t {threads} -p 512 -n 128 -r {reps} --json",
    "```",
    "",
    "| model | test | llama.cpp t/s | Tessera t/s | Tessera / llama.cpp | llama.cpp % of BW limit | Tessera % of BW limit |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
]
for m in models:
    name = os.path.basename(m)[:-5]
    lr, lall, lsize = results(name, "llama")
    tr, tall, tsize = results(name, "tessera")
    size = os.path.getsize(m)
    for test in ["pp512", "tg128"]:
        if test not in lr or test not in tr:
            continue
        a, b = lr[test], tr[test]
        limit = bw / size
        pct = lambda x: f"{100 * x / limit:.0f}%" if test.startswith("tg") else "–"
        lines.append(
            f"| {name} | {test} | {a:.1f} | {b:.1f} | {b / a:.2f}× | {pct(a)} | {pct(b)} |"
        )
lines += ["", "Per-round means (t/s):", ""]
for m in models:
    name = os.path.basename(m)[:-5]
    for eng in ["llama", "tessera"]:
        _, per, _ = results(name, eng)
        lines.append(f"- {name} {eng}: " + ", ".join(f"{k} {[round(x, 1) for x in v]}" for k, v in per.items()))
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
