#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and driver: install fusegrad with its CUDA extra in a fresh
# virtual environment, run the CUDA tests on the GPU (no simulator), then time the zoo's
# training steps on the GPU beside PyTorch on the GPU (fusegrad alone when no CUDA build of
# torch installs). Results go to $OUT (default: gpu-check/): the tests' JUnit XML and log, and
# the benchmark's JSON and log.
#
#   scripts/gpu_check.sh                   # full-size zoo
#   SMALL=1 scripts/gpu_check.sh           # test-sized shapes (a quick look)
#   SYSTEM_PYTHON=1 scripts/gpu_check.sh   # no installs: python3's own numba-cuda, numpy, torch
#                                          # (a machine without a package index), fusegrad from here
#   JOBS=8                                 # test processes, and workloads compiled side by side
#   STAGE_TIMEOUT=240 BENCH_ARGS='--steps 10 --rounds 3'   # bound each stage; fewer timed steps
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
JOBS=${JOBS:-4}
T=${STAGE_TIMEOUT:+timeout $STAGE_TIMEOUT}
mkdir -p "$OUT"

nvidia-smi || { echo "gpu_check: nvidia-smi failed: no NVIDIA GPU or driver here" >&2; exit 1; }
if [[ ${SYSTEM_PYTHON:-0} == 1 ]]; then
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    PY=python3
else
    VENV=${VENV:-.venv-gpu}
    python3 -m venv "$VENV" && source "$VENV/bin/activate" || exit 1
    PY=python
    $PY -m pip install -q --upgrade pip
    $PY -m pip install -q -e '.[cuda,test]' || exit 1
fi
$PY -m pip list 2>/dev/null | grep -i -E '^(numba|numba-cuda|llvmlite|numpy|cupy\S*|torch|cuda-\S+) ' \
    | tee "$OUT/versions.txt"
$PY - <<'PY' || exit 1
import fusegrad
from fusegrad.backends.numba_cuda.externs import matmul_path
assert fusegrad.cuda.is_available(), fusegrad.cuda.unavailable_reason()
print("fusegrad sees", fusegrad.cuda.device_count(), "GPU:", fusegrad.cuda.get_device_name(),
      "| float32 matmul:", matmul_path("float32"))
PY
status=0

# the CUDA tests, compiled for and run on the GPU
FUSEGRAD_CUDA_TESTS=gpu $T $PY -m pytest -p no:cacheprovider -n "$JOBS" -q -rfE tests/cuda \
    --junitxml "$OUT/cuda-tests.xml" 2>&1 | tee "$OUT/cuda-tests.log" || status=1

# PyTorch on the GPU beside it: the test extra's torch may be a CPU build
if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    if [[ ${SYSTEM_PYTHON:-0} != 1 ]]; then
        $PY -m pip install -q --force-reinstall "torch==2.13.0" \
            --index-url https://download.pytorch.org/whl/cu126 \
            || echo "gpu_check: no CUDA build of torch installed: timing fusegrad alone" >&2
    fi
fi
$T $PY scripts/gpu_bench.py ${SMALL:+--small} ${BENCH_ARGS:-} --jobs "$JOBS" --json "$OUT/gpu_bench.json" 2>&1 \
    | tee "$OUT/gpu_bench.log" || status=1
exit $status
