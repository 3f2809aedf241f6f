#!/usr/bin/env python3
"""How often a model's JSON answers are valid, with and without grammar constraints.

Runs N prompts x 5 JSON schemas (nested objects, arrays with min/max items, enums, numbers
with ranges, required and optional fields; every string bounded by maxLength so answers end)
against `tessera serve` on /v1/chat/completions, at temperature 0.8 with a different seed per
prompt, many requests at once. Each prompt is sent twice with the same text (which shows the
schema and asks for JSON only): once with `response_format: json_schema` (constrained) and
once without (unconstrained). An answer is valid when it parses as JSON (after stripping
whitespace and a Markdown code fence) and validates under the schema (Python `jsonschema`).

Prints a Markdown table (model, schema, prompts, valid constrained %, valid unconstrained %)
and writes it to --out. Starts the server itself from target/release/tessera (--binary) for
each --model, or uses a running one (--server-url, with one --model as the table's label).

    python3 scripts/structured_eval.py --model PATH --n-prompts 50 --out BENCHMARKS-fragment.md

Exit status 1 when a constrained answer is invalid and --require-constrained is given.
"""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import jsonschema

SCHEMAS = {
    "nested": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 24},
                    "country": {"type": "string", "maxLength": 24},
                    "geo": {
                        "type": "object",
                        "properties": {
                            "lat": {"type": "integer", "minimum": -90, "maximum": 90},
                            "lon": {"type": "integer", "minimum": -180, "maximum": 180},
                        },
                        "required": ["lat", "lon"],
                        "additionalProperties": False,
                    },
                },
                "required": ["city", "country", "geo"],
                "additionalProperties": False,
            },
        },
        "required": ["name", "address"],
        "additionalProperties": False,
    },
    "array": {
        "type": "object",
        "properties": {
            "topic": {"type": "string", "maxLength": 24},
            "facts": {
                "type": "array",
                "items": {"type": "string", "maxLength": 40},
                "minItems": 2,
                "maxItems": 4,
            },
        },
        "required": ["topic", "facts"],
        "additionalProperties": False,
    },
    "enum": {
        "type": "object",
        "properties": {
            "sentiment": {"enum": ["positive", "neutral", "negative"]},
            "category": {"enum": ["science", "sports", "politics", "art", "food", "other"]},
            "confident": {"type": "boolean"},
        },
        "required": ["sentiment", "category", "confident"],
        "additionalProperties": False,
    },
    "numbers": {
        "type": "object",
        "properties": {
            "temperature_c": {"type": "number", "minimum": -60, "maximum": 60},
            "humidity_pct": {"type": "integer", "minimum": 0, "maximum": 100},
            "wind_kmh": {"type": "number", "minimum": 0, "maximum": 300},
        },
        "required": ["temperature_c", "humidity_pct", "wind_kmh"],
        "additionalProperties": False,
    },
    "optional": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 40},
            "year": {"type": "integer", "minimum": 1000, "maximum": 2100},
            "author": {"type": "string", "maxLength": 32},
            "pages": {"type": "integer", "minimum": 1, "maximum": 5000},
        },
        "required": ["title"],
        "additionalProperties": False,
    },
}

TASKS = {
    "nested": "Describe a person who lives in or near {topic}: their name and address.",
    "array": "Give a few short facts about {topic}.",
    "enum": "Classify a news headline about {topic}.",
    "numbers": "Report today's weather in a place known for {topic}.",
    "optional": "Name a book about {topic}.",
}

TOPICS = [
    "Paris", "the ocean", "volcanoes", "football", "chess", "the Moon", "coffee", "tigers",
    "the Roman Empire", "jazz", "rainforests", "bicycles", "Tokyo", "honey bees", "glaciers",
    "electric cars", "chocolate", "the Sahara", "painting", "mountains", "tennis", "robots",
    "the Nile", "bread", "whales", "astronomy", "pirates", "Mars", "rice", "castles",
    "photography", "sharks", "the Alps", "cheese", "trains", "dinosaurs", "islands", "opera",
    "penguins", "deserts", "tea", "lighthouses", "the Amazon", "origami", "owls", "bridges",
    "pyramids", "skiing", "the Arctic", "gardens",
]


def prompt_text(schema_name, topic):
    schema = json.dumps(SCHEMAS[schema_name])
    return (
        TASKS[schema_name].format(topic=topic)
        + "\nAnswer with only a JSON object (no other text) that follows this JSON schema:\n"
        + schema
    )


def post(url, body, args):
    headers = {"Content-Type": "application/json"}
    if args.api_key:
        headers["Authorization"] = "Bearer " + args.api_key
    req = urllib.request.Request(
        url + "/v1/chat/completions", data=json.dumps(body).encode(), headers=headers
    )
    with urllib.request.urlopen(req, timeout=args.timeout) as r:
        return json.loads(r.read())


def extract(text):
    """The answer's JSON text: whitespace and a Markdown code fence removed."""
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        if t.rstrip().endswith("```"):
            t = t.rstrip()[:-3]
    return t.strip()


def valid(text, schema):
    try:
        jsonschema.validate(json.loads(extract(text)), schema)
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


def one(url, schema_name, i, constrained, args):
    body = {
        "messages": [{"role": "user", "content": prompt_text(schema_name, TOPICS[i % len(TOPICS)])}],
        "temperature": args.temperature,
        "seed": 1000 * i + 17,
        "max_tokens": args.max_tokens,
    }
    if constrained:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": schema_name, "schema": SCHEMAS[schema_name], "strict": True},
        }
    r = post(url, body, args)
    text = r["choices"][0]["message"]["content"] or ""
    return valid(text, SCHEMAS[schema_name]), r["choices"][0]["finish_reason"], text


def evaluate(url, label, args):
    jobs = [
        (s, i, c) for s in SCHEMAS for i in range(args.n_prompts) for c in (True, False)
    ]
    results = {}
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        futures = {pool.submit(one, url, s, i, c, args): (s, i, c) for (s, i, c) in jobs}
        for f in concurrent.futures.as_completed(futures):
            results[futures[f]] = f.result()
    seconds = time.time() - t0
    rows = []
    for s in SCHEMAS:
        ok_c = sum(results[(s, i, True)][0] for i in range(args.n_prompts))
        ok_u = sum(results[(s, i, False)][0] for i in range(args.n_prompts))
        rows.append((label, s, args.n_prompts, 100.0 * ok_c / args.n_prompts,
                     100.0 * ok_u / args.n_prompts))
        if args.verbose:
            for i in range(args.n_prompts):
                for c in (True, False):
                    ok, reason, text = results[(s, i, c)]
                    if not ok:
                        kind = "constrained" if c else "unconstrained"
                        print(f"invalid {kind} {s}#{i} ({reason}): {text!r}", file=sys.stderr)
    return rows, seconds


def start_server(args, model):
    cmd = [args.binary, "serve", "-m", model, "--port", "0", "-c", str(args.ctx),
           "--parallel", str(args.parallel)]
    if args.threads:
        cmd += ["-t", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        sys.exit(f"unexpected first line from tessera serve: {line!r}")
    url = line[len("listening on "):]
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        if time.time() > deadline:
            proc.kill()
            sys.exit("the server never became healthy")
        time.sleep(0.2)
    return proc, url


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="GGUF path (repeatable)")
    ap.add_argument("--n-prompts", type=int, default=50)
    ap.add_argument("--out", help="write the Markdown table here")
    ap.add_argument("--server-url", help="use a running server instead of starting one")
    ap.add_argument("--api-key", help="the running server's API key")
    ap.add_argument("--binary", default=os.path.join("target", "release", "tessera"))
    ap.add_argument("--parallel", type=int, default=8, help="server slots")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    ap.add_argument("--ctx", type=int, default=8192, help="server context (all slots)")
    ap.add_argument("--threads", type=int, default=0, help="server threads (0: its default)")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--require-constrained", action="store_true",
                    help="exit 1 unless every constrained answer is valid")
    ap.add_argument("--verbose", action="store_true", help="print the invalid answers")
    args = ap.parse_args()
    if args.n_prompts > len(TOPICS):
        sys.exit(f"at most {len(TOPICS)} prompts")
    if args.server_url and len(args.model) != 1:
        sys.exit("--server-url takes one --model (its label)")

    rows, notes = [], []
    for model in args.model:
        label = os.path.basename(model)
        if args.server_url:
            rows_m, secs = evaluate(args.server_url.rstrip("/"), label, args)
        else:
            proc, url = start_server(args, model)
            try:
                rows_m, secs = evaluate(url, label, args)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        rows += rows_m
        notes.append(f"{label}: {2 * len(SCHEMAS) * args.n_prompts} requests in {secs:.0f} s")

    lines = [
        "| model | schema | prompts | valid constrained % | valid unconstrained % |",
        "|---|---|---:|---:|---:|",
    ]
    for label, s, n, c, u in rows:
        lines.append(f"| {label} | {s} | {n} | {c:.0f} | {u:.0f} |")
    table = "\n".join(lines)
    head = (
        f"Structured output (scripts/structured_eval.py): {args.n_prompts} prompts x "
        f"{len(SCHEMAS)} schemas, temperature {args.temperature}, seed per prompt, "
        f"max_tokens {args.max_tokens}; valid = parses and validates under the schema "
        f"(jsonschema). " + "; ".join(notes) + "."
    )
    print(head + "\n\n" + table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(head + "\n\n" + table + "\n")
    if args.require_constrained and any(c < 100.0 for (_, _, _, c, _) in rows):
        print("a constrained answer was invalid", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
