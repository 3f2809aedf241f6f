#!/usr/bin/env python3
"""Reference distributions from llama.cpp for the synthetic models of gen.py.

For each variant: generate the model, run llama.cpp's `llama-perplexity` over a text with flash
attention off and on, each writing a `--kl-divergence-base` file of full-vocabulary log-probs,
and reduce them to a compact fixture Tessera's tests compare against:

    VARIANT.bin   magic "TSKL0001", u32 n_ctx, n_vocab, n_chunk, k, bos (u32::MAX: none),
                  i32 tokens[n_ctx * n_chunk] (as llama.cpp read them, before the first token
                  of a chunk is replaced by BOS), then for every scored position (the second
                  half of each chunk, as llama-perplexity scores) k pairs (u32 id, f32 log-prob)
                  of llama.cpp's top-k with flash attention off
    VARIANT.json  the commands, the model's sha256, llama.cpp's own noise (flash attention on
                  vs off: mean KL over the full vocabulary, the same over the top-k, top-1
                  agreement) and its perplexity and mean entropy on the text

Usage: oracle.py --llama-bin DIR --vocab-dir DIR --gemma-vocab FILE --text FILE --out DIR
       [--work DIR] [VARIANT ...]
"""

import argparse
import hashlib
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import gen  # noqa: E402

N_CTX = 128
N_CHUNK = 3
TOP_K = 32


def read_base(path):
    """llama.cpp's `_logits_` file: (n_ctx, n_vocab, n_chunk, tokens, log-probs per chunk)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"_logits_", path
    n_ctx, n_vocab, n_chunk = struct.unpack_from("<Iii", data, 8)
    off = 20
    tokens = np.frombuffer(data, np.int32, n_ctx * n_chunk, off)
    off += 4 * n_ctx * n_chunk
    nv = 2 * ((n_vocab + 1) // 2) + 4
    n_pos = n_ctx - 1 - n_ctx // 2
    rows = np.frombuffer(data, np.uint16, n_chunk * n_pos * nv, off).reshape(-1, nv)
    head = rows[:, :4].copy().view(np.float32)  # scale, min_log_prob
    q = rows[:, 4:4 + n_vocab].astype(np.float64)
    logp = head[:, 0:1].astype(np.float64) * q + head[:, 1:2].astype(np.float64)
    return n_ctx, n_vocab, n_chunk, tokens, logp


def kl_rows(base, other, cut=-16.0):
    """llama.cpp's KL per row: sum over base log-probs > cut of p (log p - log q)."""
    m = base > cut
    p = np.where(m, np.exp(base), 0.0)
    return (p * (base - other)).sum(axis=1)


def topk_kl(base, other, k):
    idx = np.argsort(-base, axis=1)[:, :k]
    b = np.take_along_axis(base, idx, 1)
    o = np.take_along_axis(other, idx, 1)
    p = np.where(b > -16.0, np.exp(b), 0.0)
    return (p * (b - o)).sum(axis=1)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return r.stdout + r.stderr


def bos_of(llama_bin, model):
    """BOS id when llama.cpp adds one for this vocabulary, else None."""
    out = run([os.path.join(llama_bin, "llama-tokenize"), "-m", model, "-p", "x", "--ids",
               "--log-disable"])
    ids = json.loads(out.strip().splitlines()[-1])
    no_bos = run([os.path.join(llama_bin, "llama-tokenize"), "-m", model, "-p", "x", "--ids",
                  "--no-bos", "--log-disable"])
    ids2 = json.loads(no_bos.strip().splitlines()[-1])
    return ids[0] if len(ids) == len(ids2) + 1 else None


def oracle(variant, a):
    os.makedirs(a.work, exist_ok=True)
    model = os.path.join(a.work, f"{variant}.gguf")
    requant = gen.VARIANTS[variant].get("requant")
    extra = {}
    if requant:
        # gen.py writes the unquantized source; llama-quantize makes the model.
        source = os.path.join(a.work, f"{variant}.source.gguf")
        gen.generate(variant, source, a.vocab_dir, a.gemma_vocab)
        quantize = os.path.join(a.llama_bin, "llama-quantize")
        run([quantize, source, model, requant, "2"])
        extra = dict(
            source_sha256=hashlib.sha256(open(source, "rb").read()).hexdigest(),
            quantized_by=f"llama-quantize {variant}.source.gguf {variant}.gguf {requant} 2",
        )
    else:
        gen.generate(variant, model, a.vocab_dir, a.gemma_vocab)
    sha = hashlib.sha256(open(model, "rb").read()).hexdigest()
    ppl = os.path.join(a.llama_bin, "llama-perplexity")
    common = ["-m", model, "-f", a.text, "-c", str(N_CTX), "--chunks", str(N_CHUNK),
              "-t", "2", "-b", str(N_CTX)]
    if "ubatch" in gen.VARIANTS[variant]:
        # Tokens per micro-batch, for both runs (see the variant's comment in gen.py).
        common += ["-ub", str(gen.VARIANTS[variant]["ubatch"])]
    bases, logs = {}, {}
    for fa in ["off", "on"]:
        base = os.path.join(a.work, f"{variant}.fa-{fa}.logits")
        cmd = [ppl, *common, "-fa", fa, "--kl-divergence-base", base]
        logs[fa] = run(cmd)
        bases[fa] = (base, " ".join(os.path.basename(c) if c == ppl else c for c in cmd))
    n_ctx, n_vocab, n_chunk, tokens, off = read_base(bases["off"][0])
    _, _, _, tokens_on, on = read_base(bases["on"][0])
    assert (tokens == tokens_on).all()
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", logs["off"])
    p = np.exp(off)
    entropy = float(-(np.where(off > -16, p * off, 0.0)).sum(axis=1).mean())
    noise = dict(
        kl_full=float(kl_rows(off, on).mean()),
        kl_topk=float(topk_kl(off, on, TOP_K).mean()),
        top1=float((off.argmax(1) == on.argmax(1)).mean()),
    )
    bos = bos_of(a.llama_bin, model)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"{variant}.bin"), "wb") as f:
        f.write(b"TSKL0001")
        f.write(struct.pack("<IIIII", n_ctx, n_vocab, n_chunk, TOP_K,
                            0xFFFFFFFF if bos is None else bos))
        f.write(tokens.astype("<i4").tobytes())
        idx = np.argsort(-off, axis=1)[:, :TOP_K]
        vals = np.take_along_axis(off, idx, 1).astype(np.float32)
        pairs = np.empty((off.shape[0], TOP_K), dtype=[("id", "<u4"), ("lp", "<f4")])
        pairs["id"], pairs["lp"] = idx, vals
        f.write(pairs.tobytes())
    meta = dict(
        variant=variant, arch=gen.VARIANTS[variant]["arch"], model_sha256=sha,
        generator=f"tests/synthetic/gen.py {variant}",
        commands=[bases["off"][1], bases["on"][1]],
        llama_cpp="llama-cpp-python==0.3.36 sdist, vendor/llama.cpp, CPU build",
        n_ctx=n_ctx, n_chunk=n_chunk, top_k=TOP_K, bos=bos,
        llama_noise=noise, llama_ppl=float(m.group(1)) if m else None,
        mean_entropy_nats=entropy, **extra,
    )
    with open(os.path.join(a.out, f"{variant}.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(variant, json.dumps(noise), "ppl", meta["llama_ppl"], "entropy", round(entropy, 3))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("variants", nargs="*")
    ap.add_argument("--llama-bin", required=True)
    ap.add_argument("--vocab-dir", required=True)
    ap.add_argument("--gemma-vocab", required=True)
    ap.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/tessera-synthetic")
    a = ap.parse_args()
    for v in a.variants or gen.VARIANTS:
        oracle(v, a)


if __name__ == "__main__":
    main()
