#!/usr/bin/env bash
# Many sequences decoding together, engine against engine: `tessera bench --parallel 1,S` and
# llama.cpp's `llama-batched-bench -npl 1,S`, alternately on each model (A B A B …, ROUNDS
# rounds), written to a section of BENCHMARKS.md.
#
# What it answers: how much a step of S tokens (one per sequence) gains over S single-token
# steps, for each engine on this machine: the aggregate generated tokens/s of S streams over
# the engine's own single stream, and Tessera's aggregate over llama.cpp's. Neither HTTP nor
# scheduling is in it (scripts/bench-serve-vs-llamacpp.sh measures the servers); it is the
# ceiling a server's 8-stream figure can reach on this machine. llama.cpp is NOT built or
# downloaded here: point LLAMA_BATCHED_BENCH at a `llama-batched-bench` you built yourself.
#
#   LLAMA_BATCHED_BENCH=/path/to/llama-batched-bench scripts/bench-parallel-vs-llamacpp.sh
#
# Environment: LLAMA_BATCHED_BENCH (required), TESSERA (default target/release/tessera),
# MODELS (space-separated GGUF paths; default SmolLM2 Q4_1 and Gemma 3 Q4_K_M in
# ~/.cache/tessera/models), S (parallel sequences, 8), TG (tokens each sequence generates, 64),
# THREADS (2), REPS (Tessera's repetitions per run, 3), ROUNDS (3), OUT (BENCHMARKS.md),
# SECTION (parallel), DEVICE (cpu, or gpu: `--device gpu` against `-ngl 99`).
#
# llama-batched-bench first evaluates a 16-token prompt per sequence (untimed for its TG rate,
# -npp 16); Tessera's sequences start from their first token (`-p 0`): 16 cached positions
# more or less cost these models well under 1%.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${LLAMA_BATCHED_BENCH:?set LLAMA_BATCHED_BENCH to a llama-batched-bench binary (built outside this repo)}"
TESSERA=${TESSERA:-target/release/tessera}
S=${S:-8}
TG=${TG:-64}
THREADS=${THREADS:-2}
REPS=${REPS:-3}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-BENCHMARKS.md}
SECTION=${SECTION:-parallel}
DEVICE=${DEVICE:-cpu}
MDIR=${TESSERA_MODELS:-$HOME/.cache/tessera/models}
MODELS=${MODELS:-"$MDIR/smollm2-135m-instruct-q4_1.gguf $MDIR/gemma-3-270m-q4_k_m.gguf"}
case "$DEVICE" in
    cpu) llama_dev=() ;;
    gpu) llama_dev=(-ngl 99) ;;
    *) echo "DEVICE must be cpu or gpu" >&2; exit 2 ;;
esac

if [ ! -x "$TESSERA" ]; then
    cargo build --release -p tessera-cli
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for m in $MODELS; do
    name=$(basename "$m" .gguf)
    for r in $(seq 1 "$ROUNDS"); do
        "$LLAMA_BATCHED_BENCH" -m "$m" -t "$THREADS" -c $(((16 + TG) * S + 64)) -b 512 -ub 512 \
            -npp 16 -ntg "$TG" -npl "1,$S" "${llama_dev[@]}" --output-format jsonl \
            > "$work/$name.llama.$r.jsonl" 2> "$work/$name.llama.$r.err"
        "$TESSERA" bench -m "$m" -t "$THREADS" -p 0 -n "$TG" --parallel "1,$S" -r "$REPS" \
            --device "$DEVICE" --json > "$work/$name.tessera.$r.json" 2> "$work/$name.tessera.$r.err"
    done
done

python3 - "$work" "$OUT" "$SECTION" "$S" "$TG" "$THREADS" "$REPS" "$ROUNDS" "$LLAMA_BATCHED_BENCH" "$DEVICE" $MODELS <<'PY'
import datetime, glob, json, os, statistics, subprocess, sys
sys.path.insert(0, "scripts")
from bench_report import cpu, flags, write_section
work, out, section, s, tg, threads, reps, rounds, llama, device = sys.argv[1:11]
models = sys.argv[11:]
s = int(s)

def llama_rates(name):
    """Per round: {1: single-stream t/s, S: aggregate t/s} from llama-batched-bench."""
    rounds_ = []
    for f in sorted(glob.glob(f"{work}/{name}.llama.*.jsonl")):
        rates = {}
        for line in open(f):
            line = line.strip()
            if line.startswith("{") and '"speed_tg"' in line:
                j = json.loads(line)
                rates[j["pl"]] = j["speed_tg"]
        rounds_.append(rates)
    return rounds_

def tessera_rates(name):
    """Per round: {1: t/s, S: aggregate t/s} from `tessera bench --parallel 1,S --json`."""
    rounds_ = []
    for f in sorted(glob.glob(f"{work}/{name}.tessera.*.json")):
        rates = {}
        for j in json.load(open(f)):
            rates[j.get("n_parallel", 1)] = j["avg_ts"]
        rounds_.append(rates)
    return rounds_

def med(rounds_, k):
    return statistics.median(r[k] for r in rounds_)

try:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    rev = "?"
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
lines = [
    f"# {s} sequences decoding together: Tessera vs llama.cpp, engine against engine ({device})",
    "",
    f"Produced by `scripts/bench-parallel-vs-llamacpp.sh` on {now}.",
    "",
    f"- CPU: {cpu()}, {os.cpu_count()} logical cores ({flags()}); threads: {threads}",
    f"- llama.cpp: `{llama}`; Tessera: `git {rev}`",
    f"- Runs: llama.cpp and Tessera alternately, {rounds} rounds each; figures are the median over rounds.",
    "",
    "```",
    f"llama-batched-bench -m MODEL -t {threads} -npp 16 -ntg {tg} -npl 1,{s} --output-format jsonl",
    f"tessera bench -m MODEL -t {threads} -p 0 -n {tg} --parallel 1,{s} -r {reps} --json",
    "```",
    "",
    f"| model | engine | 1 stream t/s | {s} streams, aggregate t/s | aggregate / own single stream |",
    "| --- | --- | ---: | ---: | ---: |",
]
per_round = []
for m in models:
    name = os.path.basename(m)[:-5] if m.endswith(".gguf") else os.path.basename(m)
    ll, te = llama_rates(name), tessera_rates(name)
    agg = {}
    for eng, r in (("llama.cpp", ll), ("Tessera", te)):
        one, many = med(r, 1), med(r, s)
        agg[eng] = many
        lines.append(f"| {name} | {eng} | {one:.1f} | {many:.1f} | {many / one:.2f}× |")
        per_round.append(f"- {name} {eng}: 1 stream {[round(x[1], 1) for x in r]}, "
                         f"{s} streams {[round(x[s], 1) for x in r]}")
    lines.append(f"| {name} | **Tessera / llama.cpp, {s} streams** | | **{agg['Tessera'] / agg['llama.cpp']:.2f}×** | |")
lines += ["", "Per-round t/s:", ""] + per_round + [""]
report = "\n".join(lines)
write_section(out, section, report)
print(report)
PY
