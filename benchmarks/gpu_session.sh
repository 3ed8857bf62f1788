#!/usr/bin/env bash
# The one call on a GPU machine: install the carried wheels, run the GPU tests, measure.
#
# The machine: Python 3.12 with torch, lightning, numpy, pandas, scipy, h5py and numba
# preinstalled, no internet. Fill .whl/ first on a machine that has internet
# (scripts/gpu_wheels.sh) and carry it with the working tree. In one call, on one card:
#
#   1. the wheels of .whl/ installed (no deps) into a folder put before the system
#      packages on PYTHONPATH (no venv: python3-venv may be missing there);
#   2. pytest -m gpu tests/test_scvi_fast.py tests/test_integrate.py -q
#   3. benchmarks/integrate_gpu.py --sizes 200000
#   4. benchmarks/integrate_gpu.py --sizes 1000000 --no-kang, if BUDGET_S leaves time
#
# Everything lands in $OUT (default benchmarks/results/gpu-session): session.log,
# nvidia-smi.txt, pytest_gpu.txt, <date>-<gpu>.json (the benchmark record) and the metric
# subsamples (*.npz). Without scib-metrics there (jaxlib is too large to carry) the record's
# quality_method is sklearn-fallback; score it with scib-metrics afterwards, where the
# metrics extra is installed, with
#   .venv/bin/python benchmarks/integrate_gpu.py --rescore OUT/<date>-<gpu>.json
#
# Usage: bash benchmarks/gpu_session.sh        (BUDGET_S=560 seconds for the whole call)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu-session}
BUDGET_S=${BUDGET_S:-560}
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/bonemet-gpu-site}
WHEELS=${WHEELS:-.whl}
mkdir -p "$OUT"
T0=$SECONDS
left() { echo $((BUDGET_S - (SECONDS - T0))); }
log() { echo "[gpu_session $(date -u +%H:%M:%S) +$((SECONDS - T0)) s] $*" | tee -a "$OUT/session.log"; }

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || log "nvidia-smi failed (see nvidia-smi.txt)"
ls "$WHEELS"/*.whl >/dev/null 2>&1 || { log "no wheels in $WHEELS/: run scripts/gpu_wheels.sh first"; exit 2; }
PY="$PYTHON"
if ! "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl \
    >>"$OUT/session.log" 2>&1; then
  log "installing the carried wheels failed (see session.log)"
  exit 2
fi
export PYTHONPATH="$PWD/pipeline:$SITE${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'EOF' 2>&1 | tee -a "$OUT/session.log"
import platform
from importlib.metadata import version

import scanpy  # noqa: F401 - the imports the session needs
import scvi  # noqa: F401
import torch

import bonemet

names = ("torch", "scvi-tools", "anndata", "scanpy", "lightning", "numpy")
print(f"python {platform.python_version()}, "
      + ", ".join(f"{n} {version(n)}" for n in names)
      + f", bonemet {bonemet.__version__}, CUDA {torch.cuda.is_available()}")
EOF
gpu=$("$PY" -c "import re, torch; print(re.sub('[^A-Za-z0-9]+', '-', torch.cuda.get_device_name(0)).strip('-').lower())" 2>/dev/null || echo unknown-gpu)
RES="$OUT/$(date -u +%F)-$gpu.json"
log "device $gpu; record $RES; $(left) s left"

status=0
log "pytest -m gpu"
timeout $(($(left) - 60)) "$PY" -m pytest -m gpu tests/test_scvi_fast.py tests/test_integrate.py \
  -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest_gpu.txt" | tail -15
rc=${PIPESTATUS[0]}
log "pytest rc=$rc"
[ "$rc" = 0 ] || status=1

if [ "$(left)" -gt 120 ]; then
  log "integrate_gpu.py --sizes 200000"
  timeout $(($(left) - 10)) "$PY" benchmarks/integrate_gpu.py --sizes 200000 --out "$RES" \
    --save-embeddings "$OUT" 2>&1 | tee -a "$OUT/session.log" | grep -v "Warning\|warn(" | tail -20
  rc=${PIPESTATUS[0]}
  log "200k rc=$rc"
  [ "$rc" = 0 ] || status=1
else
  log "no time left for the 200k benchmark"
  status=1
fi

# the 1M run has never been timed: start it only with MIN_1M_S seconds left
if [ "$(left)" -gt "${MIN_1M_S:-300}" ]; then
  log "integrate_gpu.py --sizes 1000000 --no-kang"
  timeout $(($(left) - 10)) "$PY" benchmarks/integrate_gpu.py --sizes 1000000 --no-kang \
    --out "$RES" --save-embeddings "$OUT" 2>&1 | tee -a "$OUT/session.log" | grep -v "Warning\|warn(" | tail -20
  log "1M rc=${PIPESTATUS[0]}"
else
  log "skipped the 1M benchmark: $(left) s left"
fi
log "done, status $status"
exit $status
