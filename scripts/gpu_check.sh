#!/usr/bin/env bash
# On a machine with a CUDA GPU: run the CUDA tests, with 2 or more GPUs a 2-GPU data-parallel smoke test
# (scripts/dp_smoke.py: a tiny KD training on 2 processes, one per GPU, eager and --use_graph), then the
# benchmark on the GPU, and print its table.
#
#   bash scripts/gpu_check.sh [extra benchmark arguments, e.g. --json gpu.json --torch-python python3]
#
# Uses the project venv made by scripts/setup_env.sh (run it first). Without a CUDA device it stops with
# a message instead of reporting skipped tests as a GPU check.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$repo/.venv/bin/python"
export GLOG_minloglevel=3
cd "$repo"

if [ ! -x "$python" ]; then
    echo "gpu_check: $python not found; run 'bash scripts/setup_env.sh' first" >&2
    exit 2
fi
if ! "$python" -c 'import oneflow, sys; sys.exit(0 if oneflow.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: OneFlow sees no CUDA device here (oneflow.cuda.is_available() is False); nothing to check" >&2
    exit 3
fi

echo "== CUDA tests (every test marked for CUDA, plus the kernel tests on the default device) =="
"$python" -m pytest -q -rs tests/test_cuda.py tests/test_kernels.py

echo "== 2-GPU data-parallel smoke test (skipped with fewer than 2 GPUs) =="
"$python" scripts/dp_smoke.py --device cuda --nproc 2

echo "== benchmark on the GPU =="
"$python" scripts/benchmark.py --device cuda "$@"
