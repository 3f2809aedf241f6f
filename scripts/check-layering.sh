#!/usr/bin/env bash
# Checks the house rules that a grep can prove (see README.md, "Architecture"):
#
# 1. `models/` never names the CPU or GPU executor: it holds the backend as a trait object and
#    leaves device selection to the engine. Fails on any `tessera_engine::cpu` or
#    `tessera_engine::gpu` under models/src, as a path (`tessera_engine::gpu::GpuDevice`) or
#    inside a one-line braced import (`use tessera_engine::{cpu::kv::KvStore, DType}`).
# 2. The GPU backend imports no CPU code: what both need (RoPE tables, KV cell bookkeeping)
#    lives in backend-neutral modules.
# 3. The libraries (engine, models, the C ABI) start no processes: fetching models is the CLI's
#    job (tools/registry). Test modules (`tests/` folders, `tests.rs`) may run python oracles.
#
#   scripts/check-layering.sh
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "error: $1 ($(printf '%s\n' "$2" | wc -l) lines):" >&2
    printf '%s\n' "$2" | head -n 20 >&2
    exit 1
}

hits=$(grep -rnE 'tessera_engine::(gpu|cpu)\b|tessera_engine::\{[^}]*\b(gpu|cpu)\b' models/src || true)
[ -z "$hits" ] || fail "models/ names the CPU or GPU executor" "$hits"
echo "ok: models/src names neither tessera_engine::cpu nor tessera_engine::gpu"

hits=$(grep -rnE 'crate::cpu\b' engine/src/gpu || true)
[ -z "$hits" ] || fail "the GPU backend imports CPU code" "$hits"
echo "ok: engine/src/gpu imports nothing from crate::cpu"

hits=$(grep -rnE 'process::(Command|Child)|Command::new' engine/src models/src tools/capi/src \
    | grep -vE '/tests/|/tests\.rs:' || true)
[ -z "$hits" ] || fail "a library starts a process" "$hits"
echo "ok: engine, models and the C ABI start no processes (outside their tests)"
