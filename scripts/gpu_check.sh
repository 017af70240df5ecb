#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and driver: install fusegrad with its CUDA extra in a fresh
# virtual environment, run the CUDA tests on the GPU (no simulator), then time the zoo's
# training steps on the GPU beside PyTorch on the GPU (fusegrad alone when no CUDA build of
# torch installs). Results go to $OUT (default: gpu-check/): the tests' JUnit XML and the
# benchmark's JSON.
#
#   scripts/gpu_check.sh            # full-size zoo
#   SMALL=1 scripts/gpu_check.sh    # test-sized shapes (a quick look)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
VENV=${VENV:-.venv-gpu}
mkdir -p "$OUT"

nvidia-smi || { echo "gpu_check: nvidia-smi failed: no NVIDIA GPU or driver here" >&2; exit 1; }
python3 -m venv "$VENV"
source "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[cuda,test]'
python - <<'PY'
import fusegrad
assert fusegrad.cuda.is_available(), fusegrad.cuda.unavailable_reason()
print("fusegrad sees", fusegrad.cuda.device_count(), "GPU:", fusegrad.cuda.get_device_name())
PY

# the CUDA tests, compiled for and run on the GPU
FUSEGRAD_CUDA_TESTS=gpu python -m pytest -p no:cacheprovider -n 0 -q tests/cuda \
    --junitxml "$OUT/cuda-tests.xml"

# PyTorch on the GPU beside it: the test extra's torch may be a CPU build
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    python -m pip install -q --force-reinstall "torch==2.13.0" \
        --index-url https://download.pytorch.org/whl/cu126 \
        || echo "gpu_check: no CUDA build of torch installed: timing fusegrad alone" >&2
fi
python scripts/gpu_bench.py ${SMALL:+--small} --json "$OUT/gpu_bench.json"
