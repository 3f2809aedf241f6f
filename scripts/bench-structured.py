#!/usr/bin/env python3
"""Decode speed with a JSON-schema constraint against the same run without it (issue #19).

For each model, runs `tessera run -n 128` (greedy, `--ignore-eos`, one prompt) alternately
with and without `-j SCHEMA`, ROUNDS times each, and reports the median generation tokens/s
of both and their ratio. The schema (scripts/structured/people_array.json: an array of at
least 40 objects with a bounded string, an integer range, an enum and another string) cannot
be finished within 128 tokens, so every token is generated under the constraint. Alternating
the two runs keeps a shared, noisy machine fair to both; the ratio is the result.

Also prints the mask's own cost per token from the `mask_cost` example (single thread).

    python3 scripts/bench-structured.py [--rounds 5] [--out BENCHMARKS.md] MODEL.gguf ...
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESSERA = ROOT / "target/release/tessera"
SCHEMA = ROOT / "scripts/structured/people_array.json"
PROMPT = "A list of people as JSON:"


def run(model: str, constrained: bool) -> dict:
    cmd = [str(TESSERA), "run", "-m", model, "-p", PROMPT, "-n", "128", "--temp", "0",
           "--ignore-eos", "--json"]
    if constrained:
        cmd += ["-j", str(SCHEMA)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", help="append the table to this markdown file")
    args = ap.parse_args()
    rows = []
    for model in args.models:
        free, cons = [], []
        text = ""
        for _ in range(args.rounds):
            free.append(run(model, False)["generation_tokens_per_second"])
            r = run(model, True)
            cons.append(r["generation_tokens_per_second"])
            text = r["text"]
        mask = subprocess.run(
            ["cargo", "run", "--release", "-q", "-p", "tessera-models", "--example",
             "mask_cost", "--", model, str(SCHEMA), text],
            check=True, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        f, c = statistics.median(free), statistics.median(cons)
        rows.append((Path(model).name, f, c, c / f, mask))
        print(f"{Path(model).name}: free {f:.1f} t/s, constrained {c:.1f} t/s, "
              f"ratio {c / f:.3f}; {mask}", flush=True)
    table = ["", "| model | tg128 unconstrained t/s | tg128 JSON schema t/s | ratio | mask cost per token |",
             "|---|---|---|---|---|"]
    for name, f, c, ratio, mask in rows:
        table.append(f"| {name} | {f:.1f} | {c:.1f} | {ratio:.3f} | {mask} |")
    text = "\n".join(table) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
