#!/usr/bin/env bash
# Checks that `models/` never names the CPU or GPU executor: it holds the backend as a trait
# object and leaves device selection to the engine (see DESIGN.md, "Backends behind a trait").
#
#   scripts/check-models-backend-free.sh
#
# Fails, listing the offending lines (at most 20), when any file under models/src mentions
# `tessera_engine::cpu` or `tessera_engine::gpu`, as a path (`tessera_engine::gpu::GpuDevice`)
# or inside a one-line braced import (`use tessera_engine::{cpu::kv::KvStore, DType}`).
set -euo pipefail
cd "$(dirname "$0")/.."

hits=$(grep -rnE 'tessera_engine::(gpu|cpu)\b|tessera_engine::\{[^}]*\b(gpu|cpu)\b' models/src || true)
if [ -n "$hits" ]; then
    echo "error: models/ names the CPU or GPU executor ($(printf '%s\n' "$hits" | wc -l) lines):" >&2
    printf '%s\n' "$hits" | head -n 20 >&2
    exit 1
fi
echo "ok: models/src names neither tessera_engine::cpu nor tessera_engine::gpu"
