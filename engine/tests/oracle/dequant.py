#!/usr/bin/env python3
"""Oracle for Tessera's block-format tests, using the `gguf` package's numpy (de)quantizers.

Usage: dequant.py JOBS
Each non-empty line of JOBS is `deq TYPE IN OUT` (IN: raw blocks of ggml type TYPE, OUT: f32
little-endian values) or `quant TYPE IN OUT` (IN: f32 values, OUT: raw blocks).
Called by engine/src/quant/tests/oracle.rs; needs `pip install gguf numpy`.
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize


def main() -> None:
    with open(sys.argv[1]) as jobs:
        for line in jobs:
            parts = line.split()
            if not parts:
                continue
            op, name, src, dst = parts
            qtype = GGMLQuantizationType[name]
            if op == "deq":
                data = np.fromfile(src, dtype=np.uint8)
                out = np.asarray(dequantize(data, qtype), dtype=np.float32)
            elif op == "quant":
                data = np.fromfile(src, dtype=np.float32)
                out = np.ascontiguousarray(quantize(data, qtype))
            else:
                raise SystemExit(f"unknown op {op!r}")
            out.tofile(dst)


if __name__ == "__main__":
    main()
