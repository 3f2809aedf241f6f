#!/usr/bin/env bash
# Side-by-side speed of Tessera and llama.cpp on this machine, written to BENCHMARKS.md.
#
# Runs llama.cpp's `llama-bench` and `tessera bench` alternately (A B A B …, ROUNDS rounds) on
# each model, pp512 and tg128 with THREADS threads, and reports per engine the median over
# rounds of each round's mean t/s, the ratio, and tg128 as a share of the bandwidth limit
# (bytes read per token × t/s / BW). Bytes read per token are the file's tensors a decode step
# reads: all of them except the token embeddings when the output matrix is separate (one row is
# read) and, in a mixture of experts, only the chosen share (expert_used_count / expert_count)
# of each stacked expert tensor. llama.cpp is NOT built or downloaded here: point LLAMA_BENCH at
# a `llama-bench` you built yourself.
#
#   LLAMA_BENCH=/path/to/llama-bench scripts/bench-vs-llamacpp.sh
#
# Environment: LLAMA_BENCH (required), TESSERA (default: target/release/tessera, built with
# cargo if missing), MODELS (space-separated GGUF paths; default: SmolLM2 Q4_1 and Gemma 3
# Q4_K_M in ~/.cache/tessera/models; an entry PATH:PP:TG sets that model's prompt and generation
# lengths, default 512 and 128), THREADS (2), REPS (repetitions per run, 5), ROUNDS (2),
# BW (read bandwidth in bytes/s for the limit; default: measured before every run with
# engine/examples/read_bandwidth and the median used), OUT (BENCHMARKS.md),
# MAX_LOAD (wait until the 1-minute load average is below this; 2.5), WAIT_TRIES (at most this
# many 10 s waits per run, then run anyway; 60), SECTION (if set, e.g. `moe`, the report goes
# between `<!-- bench:SECTION -->` and `<!-- /bench:SECTION -->` in OUT, replacing what was there
# or appended at the end, its title demoted to a second-level heading, and the rest of OUT kept),
# TITLE (that section's title), APPENDIX (a markdown file appended to the report),
# DEVICE (cpu, the default, or gpu: `tessera bench --device gpu` against `llama-bench -ngl 99`,
# a CUDA or Vulkan build; BW must then be the GPU's memory bandwidth, and the int8-peak column
# is left out).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${LLAMA_BENCH:?set LLAMA_BENCH to a llama-bench binary (built outside this repo)}"
TESSERA=${TESSERA:-target/release/tessera}
THREADS=${THREADS:-2}
REPS=${REPS:-5}
ROUNDS=${ROUNDS:-2}
BW=${BW:-}
OUT=${OUT:-BENCHMARKS.md}
MAX_LOAD=${MAX_LOAD:-2.5}
SECTION=${SECTION:-}
TITLE=${TITLE:-Tessera vs llama.cpp on this machine}
WAIT_TRIES=${WAIT_TRIES:-60}
MDIR=${TESSERA_MODELS:-$HOME/.cache/tessera/models}
MODELS=${MODELS:-"$MDIR/smollm2-135m-instruct-q4_1.gguf $MDIR/gemma-3-270m-q4_k_m.gguf"}
DEVICE=${DEVICE:-cpu}
case "$DEVICE" in
    cpu) llama_dev=() ;;
    gpu)
        llama_dev=(-ngl 99)
        : "${BW:?with DEVICE=gpu set BW to the memory bandwidth of the GPU in bytes/s}"
        ;;
    *) echo "DEVICE must be cpu or gpu" >&2; exit 2 ;;
esac

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

BWPROBE=${BWPROBE:-target/release/examples/read_bandwidth}
if [ -z "${BW:-}" ] && [ ! -x "$BWPROBE" ]; then
    cargo build --release -p tessera-engine --example read_bandwidth
fi
# The read bandwidth, measured before every run unless BW fixes it (bytes/s, one per line).
probe_bw() {
    if [ -z "${BW:-}" ]; then
        "$BWPROBE" "$THREADS" 1024 5 2>/dev/null | awk '{print $2}' >> "$work/bw.txt"
    fi
}

loads=()
paths=()
for spec in $MODELS; do
    # PATH or PATH:PP:TG (prompt and generation lengths for that model; default 512 and 128).
    IFS=: read -r m pp tg <<< "$spec"
    pp=${pp:-512}
    tg=${tg:-128}
    paths+=("$m")
    name=$(basename "$m" .gguf)
    for r in $(seq 1 "$ROUNDS"); do
        wait_quiet
        probe_bw
        loads+=("$(cut -d' ' -f1 /proc/loadavg)")
        "$LLAMA_BENCH" -m "$m" -t "$THREADS" -p "$pp" -n "$tg" -r "$REPS" "${llama_dev[@]}" -o json \
            > "$work/$name.llama.$r.json" 2> "$work/$name.llama.$r.err"
        wait_quiet
        probe_bw
        loads+=("$(cut -d' ' -f1 /proc/loadavg)")
        "$TESSERA" bench -m "$m" -t "$THREADS" -p "$pp" -n "$tg" -r "$REPS" --device "$DEVICE" --json \
            > "$work/$name.tessera.$r.json" 2> "$work/$name.tessera.$r.err"
    done
done

python3 - "$work" "$OUT" "${BW:-}" "$THREADS" "$REPS" "$ROUNDS" "$LLAMA_BENCH" "${loads[*]}" "$SECTION" "$TITLE" "${APPENDIX:-}" "$DEVICE" "${paths[@]}" <<'PY'
import glob, json, os, platform, re, statistics, subprocess, sys, datetime
work, out, bw, threads, reps, rounds, llama, loads, section, title, appendix, device = sys.argv[1:13]
models = sys.argv[13:]
if bw:
    bws, bw_note = [float(bw)], "given by BW"
else:
    bws = [float(x) for x in open(f"{work}/bw.txt").read().split()]
    bw_note = (f"measured before every run by `read_bandwidth` ({threads} threads, 1 GiB, best "
               f"of 5 passes): median of {len(bws)}, range {min(bws) / 1e9:.1f}–{max(bws) / 1e9:.1f} GB/s")
bw = statistics.median(bws)

def bytes_per_token(path):
    """Bytes of weights one decode step reads, and the whole file's tensor bytes."""
    from gguf import GGUFReader
    r = GGUFReader(path)
    def field(key):
        f = r.fields.get(key)
        return None if f is None else f.parts[f.data[0]]
    arch = bytes(field("general.architecture")).decode()
    n_exp, n_used = field(f"{arch}.expert_count"), field(f"{arch}.expert_used_count")
    share = float(n_used[0]) / float(n_exp[0]) if n_exp is not None and n_exp[0] > 0 else 1.0
    names = {t.name for t in r.tensors}
    read = total = macs = 0
    for t in r.tensors:
        total += int(t.n_bytes)
        if t.name == "token_embd.weight" and "output.weight" in names:
            continue
        read += int(t.n_bytes) * (share if "_exps." in t.name else 1.0)
        # Multiply-accumulates of a prompt token in the weight products: every matrix of a
        # layer (the chosen experts' share of stacked ones); the output projection is left
        # out (a prompt wants one row of logits), as are the embeddings (a lookup).
        if t.name.startswith("blk.") and len(t.shape) >= 2 and t.name.endswith(".weight"):
            macs += int(t.n_elements) * (share if "_exps." in t.name else 1.0)
    return read, total, macs

def clock_ghz():
    """The nominal clock /proc/cpuinfo reports (GHz)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) / 1000
    except OSError:
        pass
    return None

sys.path.insert(0, "scripts")
from bench_report import cpu, flags, write_section

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

def gpu():
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True)
        return r.stdout.strip() or "?"
    except OSError:
        return "?"

ghz = clock_ghz() or 0.0
# The int8 peak is the CPU's; on a GPU the pp column gives the MAC rate only.
peak = int(threads) * 2 * 32 * ghz * 1e9 if device == "cpu" else 0.0
ngl = " -ngl 99" if device == "gpu" else ""
lines = [
    f"# {title}",
    "",
    f"Produced by `scripts/bench-vs-llamacpp.sh` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
    "",
    f"- CPU: {cpu()}, {os.cpu_count()} logical cores ({flags()}); threads: {threads}",
    *([f"- GPU: {gpu()}; Tessera `--device gpu` (wgpu), llama.cpp `-ngl 99`"] if device == "gpu" else []),
    f"- llama.cpp: `{llama}`, build {build}",
    f"- Tessera: `git {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}`",
    f"- Runs: A B A B ({rounds} rounds of each engine, {reps} repetitions each after a warm-up); "
    "figures are the median over rounds of each round's mean t/s.",
    f"- 1-minute load average before each run: {loads}",
    f"- Bandwidth limit: bytes read per token × t/s ÷ {bw / 1e9:.1f} GB/s (read bandwidth with {threads} threads, {bw_note}); "
    "a decode step reads every weight but the token embeddings (when the output matrix is separate) "
    "and, of stacked expert tensors, only the chosen experts' share.",
    *([f"- int8 peak: {threads} cores × 2 `vpmaddubsw`/cycle × 32 byte pairs × {ghz:.2f} GHz (the nominal clock) = "
       f"{peak / 1e9:.0f} G MAC/s; a prompt token's MACs are the layers' weight elements "
       "(the output projection and attention left out)."] if peak else
      ["- pp columns: the MAC rate of the layers' weight products (no peak given for a GPU)."]),
    "",
    "Commands:",
    "",
    "```",
    f"llama-bench -m MODEL -t {threads} -p PP -n TG -r {reps}{ngl} -o json",
    f"tessera bench -m MODEL -t {threads} -p PP -n TG -r {reps} --device {device} --json",
    "```",
    "",
    "| model | test | llama.cpp t/s | Tessera t/s | Tessera / llama.cpp | llama.cpp: % of BW limit (tg) or of int8 peak (pp) | Tessera: % of BW limit (tg) or of int8 peak (pp) |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
]
sizes = {}
for m in models:
    name = os.path.basename(m)[:-5]
    lr, lall, lsize = results(name, "llama")
    tr, tall, tsize = results(name, "tessera")
    size, total, macs = bytes_per_token(m)
    sizes[name] = (size, total)
    tests = sorted(set(lr) & set(tr), key=lambda t: (not t.startswith("pp"), int(t[2:])))
    for test in tests:
        a, b = lr[test], tr[test]
        limit = bw / size
        def pct(x):
            if test.startswith("tg"):
                return f"{100 * x / limit:.0f}%"
            if not peak:
                return f"– ({x * macs / 1e9:.0f} G MAC/s)"
            return f"{100 * x * macs / peak:.0f}% ({x * macs / 1e9:.0f} G MAC/s)"
        lines.append(
            f"| {name} | {test} | {a:.1f} | {b:.1f} | {b / a:.2f}× | {pct(a)} | {pct(b)} |"
        )
lines += ["", "Weights read per decode step (MB) of the file's tensors (MB):", ""]
for name, (size, total) in sizes.items():
    lines.append(f"- {name}: {size / 1e6:.0f} of {total / 1e6:.0f}")
lines += ["", "Per-round means (t/s):", ""]
for m in models:
    name = os.path.basename(m)[:-5]
    for eng in ["llama", "tessera"]:
        _, per, _ = results(name, eng)
        lines.append(f"- {name} {eng}: " + ", ".join(f"{k} {[round(x, 1) for x in v]}" for k, v in per.items()))
if appendix:
    lines += ["", open(appendix).read().rstrip("\n")]
report = "\n".join(lines) + "\n"
if section:
    # Only this section of OUT is replaced (appended if it is not there yet).
    write_section(out, section, report)
else:
    open(out, "w").write(report)
print(report)
PY
