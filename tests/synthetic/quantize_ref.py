#!/usr/bin/env python3
"""References for `tessera quantize`: llama-quantize run on a synthetic model for every mix
Tessera makes, each output described by its whole-file sha256 and every tensor's type and
sha256 (tests/tests/quantize_oracle.rs compares Tessera's output with them).

    quantize_ref.py MODEL.gguf VARIANT --llama-quantize PATH --out tests/fixtures/quantize/VARIANT.json
        [--llama-imatrix PATH --text FILE]

With --llama-imatrix, it also computes llama.cpp's importance matrix of the model over TEXT
(`-c 128 --chunks 8 -b 128`), saves it beside the JSON as VARIANT.imatrix.gguf, and records every
mix (and Q2_K_S, which needs one) quantized with it (`llama-quantize --imatrix`).

    quantize_ref.py MODEL.gguf VARIANT --llama-quantize PATH --out FIXTURE.json --add MIX[,MIX]

adds mixes to an existing fixture (the same model): each quantized plainly and, where the
fixture has an importance matrix, with the VARIANT.imatrix.gguf beside it.

MODEL.gguf is gen.py's VARIANT (its sha256 is recorded). llama-quantize is llama.cpp's, built
from the llama-cpp-python 0.3.36 source distribution (vendor/llama.cpp, CPU, CMake).
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

from gguf import GGUFReader

IMATRIX_ARGS = ["-c", "128", "--chunks", "8", "-b", "128", "-t", "2"]
MIXES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L",
         "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "F16", "BF16", "F32", "IQ4_NL", "IQ4_XS"]


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def describe(path):
    r = GGUFReader(path)
    tensors = []
    for t in r.tensors:
        # [name, type, first 16 hex digits of the data's sha256]: enough to say where a file differs.
        tensors.append([t.name, t.tensor_type.name, hashlib.sha256(t.data.tobytes()).hexdigest()[:16]])
    return {"sha256": sha(path), "tensors": tensors}


def quantize(llama_quantize, model, dst, mix, imatrix=None):
    """llama-quantize MODEL DST MIX 2 (with --imatrix NAME, run beside the imatrix file)."""
    if imatrix is None:
        subprocess.run([llama_quantize, model, dst, mix, "2"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return
    # The file name is recorded in the output (quantize.imatrix.file): use the bare name from
    # the fixture folder, as the test does.
    subprocess.run([os.path.abspath(llama_quantize), "--imatrix", os.path.basename(imatrix),
                    os.path.abspath(model), dst, mix, "2"],
                   check=True, cwd=os.path.dirname(os.path.abspath(imatrix)),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def add(a):
    out = json.load(open(a.out))
    if out["model_sha256"] != sha(a.model):
        raise SystemExit(f"{a.model} is not the fixture's model")
    with tempfile.TemporaryDirectory() as d:
        for mix in a.add.split(","):
            dst = os.path.join(d, f"{mix}.gguf")
            quantize(a.llama_quantize, a.model, dst, mix)
            out["mixes"][mix] = describe(dst)
            print(mix, out["mixes"][mix]["sha256"])
            if "imatrix" in out:
                imatrix = os.path.join(os.path.dirname(a.out), out["imatrix"]["file"])
                quantize(a.llama_quantize, a.model, dst, mix, imatrix)
                out["imatrix"]["mixes"][mix] = describe(dst)
                print("imatrix", mix, out["imatrix"]["mixes"][mix]["sha256"])
    with open(a.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("variant")
    ap.add_argument("--llama-quantize", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--llama-imatrix")
    ap.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    ap.add_argument("--add", help="comma-separated mixes to add to the existing fixture --out")
    a = ap.parse_args()
    if a.add:
        return add(a)
    out = {"variant": a.variant, "generator": f"tests/synthetic/gen.py {a.variant}",
           "model_sha256": sha(a.model),
           "llama_cpp": "llama-cpp-python==0.3.36 sdist, vendor/llama.cpp, CPU build",
           "command": "llama-quantize MODEL OUT MIX 2", "mixes": {}}
    with tempfile.TemporaryDirectory() as d:
        for mix in MIXES:
            dst = os.path.join(d, f"{mix}.gguf")
            subprocess.run([a.llama_quantize, a.model, dst, mix, "2"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out["mixes"][mix] = describe(dst)
            print(mix, out["mixes"][mix]["sha256"])
    if a.llama_imatrix:
        imatrix = os.path.join(os.path.dirname(a.out), f"{a.variant}.imatrix.gguf")
        subprocess.run([a.llama_imatrix, "-m", a.model, "-f", a.text, "-o", imatrix] + IMATRIX_ARGS,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out["imatrix"] = {"file": os.path.basename(imatrix), "text": a.text,
                          "command": " ".join(["llama-imatrix -m MODEL -f", a.text, "-o",
                                               os.path.basename(imatrix)] + IMATRIX_ARGS),
                          "quantize_command": "llama-quantize --imatrix IMATRIX MODEL OUT MIX 2",
                          "mixes": {}}
        with tempfile.TemporaryDirectory() as d:
            for mix in MIXES + ["Q2_K_S"]:
                dst = os.path.join(d, f"{mix}.gguf")
                # The file name is recorded in the output (quantize.imatrix.file): use the bare
                # name from the fixture folder, as the test does.
                subprocess.run([os.path.abspath(a.llama_quantize), "--imatrix",
                                os.path.basename(imatrix), os.path.abspath(a.model), dst, mix, "2"],
                               check=True, cwd=os.path.dirname(os.path.abspath(imatrix)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                out["imatrix"]["mixes"][mix] = describe(dst)
                print("imatrix", mix, out["imatrix"]["mixes"][mix]["sha256"])
    with open(a.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
