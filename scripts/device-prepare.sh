#!/usr/bin/env bash
# Packs what scripts/device-check.sh needs on a lent GPU machine (no network there, at most
# 64 MiB travelling with the working tree) into the folders `.device/` and `.gl/` (ignored by .gitignore):
#
#   .device/tessera.gz        this checkout's `tessera` (release, default features: wgpu),
#                             debug info stripped
#   .device/llama.cpp.tar.gz  llama.cpp's sources (the llama-cpp-python 0.3.36 sdist's
#                             vendor/llama.cpp without its vocabularies, the web UI's sources
#                             and the other GPU backends), built with CUDA over there
#   .device/vocab/            the StarCoder vocabulary (SmolLM2's 49152 tokens) and Gemma 3's
#                             tokenizer alone (from the registry model), for tests/synthetic/gen.py
#   .device/whl/              the `gguf` package and what it needs beyond numpy, as wheels
#   .gl/                      the Vulkan and EGL loaders as Debian packages (the device tool's
#                             README: the image may lack libvulkan)
#
# Then, with a device lent (its `run` tool, one call of at most 10 minutes):
#   carry [".device", ".gl"], command "bash scripts/device-check.sh", timeout_s 590
#
# Environment: TESSERA_LLAMA_CPP_SRC (llama.cpp's tree; default the sdist in ~/.cache/tessera),
# TESSERA_MODELS (the registry models, for Gemma's tokenizer; `tessera pull --all` fetches them).
set -euo pipefail
cd "$(dirname "$0")/.."

src=${TESSERA_LLAMA_CPP_SRC:-$HOME/.cache/tessera/llama-cpp-python-0.3.36/vendor/llama.cpp}
models=${TESSERA_MODELS:-$HOME/.cache/tessera/models}
[ -d "$src/ggml" ] || { echo "no llama.cpp tree at $src (set TESSERA_LLAMA_CPP_SRC)" >&2; exit 1; }
[ -f "$models/gemma-3-270m-q4_k_m.gguf" ] || { echo "run tessera pull --all first" >&2; exit 1; }
rm -rf .device && mkdir -p .device/vocab .device/whl .gl

cargo build --release -q -p tessera-cli
strip --strip-debug -o .device/tessera target/release/tessera
gzip -9 .device/tessera

tar -czf .device/llama.cpp.tar.gz -C "$src" \
    --exclude='./models' --exclude='./tools/ui/src' --exclude='./tools/ui/tests' --exclude='./.git' \
    --exclude='./ggml/src/ggml-sycl' --exclude='./ggml/src/ggml-metal' \
    --exclude='./ggml/src/ggml-cann' --exclude='./ggml/src/ggml-opencl' \
    --exclude='./ggml/src/ggml-webgpu' --exclude='./ggml/src/ggml-hexagon' \
    --exclude='./ggml/src/ggml-musa' --exclude='./ggml/src/ggml-zdnn' --exclude='./docs' \
    --exclude='./examples' --exclude='./gguf-py' --exclude='./tests' .

cp "$src/models/ggml-vocab-starcoder.gguf" .device/vocab/
python3 - "$models/gemma-3-270m-q4_k_m.gguf" .device/vocab/gemma3-tokenizer.gguf <<'PY'
import sys
sys.path.insert(0, "tests/synthetic")
from gen import copy_tokenizer
from gguf import GGUFWriter
w = GGUFWriter(sys.argv[2], "gemma3")
copy_tokenizer(w, sys.argv[1])
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
PY

# The device's Python is 3.12 (see the device tool's KINDS.md); numpy is there.
for pkg in gguf pyyaml tqdm; do
    python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d .device/whl "$pkg"
done

(
    cd .gl
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    mkdir -p /tmp/amd64/partial
    # shellcheck disable=SC2086
    apt-get $o update -qq && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2
)
du -sh .device .gl
du -ch .device .gl | tail -1
