#!/usr/bin/env python3
"""Load an OpenAI-compatible server the way `tessera serve` is judged, and print one JSON line.

Measures, against a server already listening at BASE (e.g. http://127.0.0.1:8080):
  * single: one streamed completion of N tokens: generated tokens/s (first token to last);
  * concurrent: C streams of N tokens at once, different prompts: aggregate generated tokens/s
    (all tokens over the wall time), time to first token p50/p95;
  * prefix: a prompt with a ~1000-token prefix sent cold, then the same prefix with another
    ending: time to first token of each and their ratio (what prefix reuse buys).

Only the standard library: it speaks HTTP and SSE itself, so it measures llama-server and
tessera serve with the same client. Loopback only (this is a load generator).

usage: bench_serve.py BASE [--tokens 128] [--concurrency 8] [--label NAME]
"""

import argparse
import json
import statistics
import threading
import time
import urllib.error
import urllib.request

PROMPTS = [
    "Once upon a time, in a small village by the sea,",
    "The history of the printing press begins",
    "Here is a recipe for a simple vegetable soup:",
    "In computer science, a hash table is",
    "The old lighthouse keeper looked out at the storm and",
    "Dear diary, today was the strangest day because",
    "The three most important rules of chess are",
    "Scientists exploring the deep ocean discovered",
]


def stream_completion(base, prompt, max_tokens, timeout=600):
    """Stream one /v1/completions request; return (ttft_s, total_s, completion_tokens)."""
    body = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        # llama-server extension; servers that do not know it ignore it.
        "ignore_eos": True,
    }
    req = urllib.request.Request(
        base + "/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    t0 = time.perf_counter()
    ttft = None
    n_chunks = 0
    usage_tokens = None
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"HTTP {e.code}: {e.read()[:300]!r}") from None
    with resp:
        for raw in resp:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage_tokens = chunk["usage"].get("completion_tokens")
            for choice in chunk.get("choices") or []:
                if choice.get("text"):
                    n_chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
    total = time.perf_counter() - t0
    tokens = usage_tokens if usage_tokens is not None else n_chunks
    return (ttft if ttft is not None else total), total, tokens


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def single(base, n):
    ttft, total, tokens = stream_completion(base, PROMPTS[0], n)
    gen_time = max(total - ttft, 1e-9)
    return {"tokens": tokens, "ttft_s": ttft, "tps": (tokens - 1) / gen_time}


def concurrent(base, n, c):
    results = [None] * c
    errors = []

    def worker(i):
        try:
            results[i] = stream_completion(base, PROMPTS[i % len(PROMPTS)], n)
        except Exception as e:  # report, do not hide
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(c)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r is not None]
    ttfts = [r[0] for r in ok]
    tokens = sum(r[2] for r in ok)
    return {
        "streams": c,
        "failed": len(errors),
        "errors": errors[:3],
        "tokens": tokens,
        "wall_s": wall,
        "aggregate_tps": tokens / wall,
        "ttft_p50_s": percentile(ttfts, 0.5),
        "ttft_p95_s": percentile(ttfts, 0.95),
    }


def prefix(base):
    # About 1000 tokens of plain prose for BPE and SentencePiece vocabularies alike.
    sentence = "The river runs past the mill, the bridge and the old stone church. "
    pre = sentence * 70
    cold_ttft, _, _ = stream_completion(base, pre + "Question one: where does the river go?", 1)
    warm_ttft, _, _ = stream_completion(base, pre + "Question two: what is by the bridge?", 1)
    return {"cold_ttft_s": cold_ttft, "warm_ttft_s": warm_ttft, "speedup": cold_ttft / warm_ttft}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    base = a.base.rstrip("/")
    # Warm-up: first requests pay for graph preparation and page faults on both servers.
    stream_completion(base, "Hello", 4)
    out = {
        "label": a.label,
        "single": single(base, a.tokens),
        "concurrent": concurrent(base, a.tokens, a.concurrency),
        "prefix": prefix(base),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
