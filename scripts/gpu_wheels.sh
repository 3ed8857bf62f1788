#!/usr/bin/env bash
# Fill .whl/ with the wheels benchmarks/gpu_session.sh installs on a GPU machine that has
# no internet: Python 3.12, x86_64, with torch, lightning, numpy, pandas, scipy, h5py and
# numba preinstalled. It takes every distribution the GPU session imports (found by
# importing the same modules in .venv) at the version .venv has, minus what that machine
# has already, as a cp312 manylinux or pure-Python wheel; a package published only as an
# sdist (docrep) is built into a wheel here. The carried tree may hold 64 MiB in all, so the
# wheels must stay under WHEEL_LIMIT_MIB (default 60); the script fails when they do not.
#
# jax/jaxlib and scib-metrics are not carried: jaxlib's wheel alone is about 82 MiB. On the
# GPU machine benchmarks/integrate_gpu.py then scores with the sklearn fallback and saves
# the metric subsample (--save-embeddings); --rescore scores it with scib-metrics here.
#
# Usage: scripts/gpu_wheels.sh            (PYTHON=.venv/bin/python, DEST=.whl)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DEST=${DEST:-.whl}
WHEEL_LIMIT_MIB=${WHEEL_LIMIT_MIB:-60}
# distributions the GPU machine has (and what they pull in); space-separated, lower case
PRESENT=${PRESENT:-"torch triton lightning pytorch-lightning lightning-utilities torchmetrics
  numpy pandas scipy h5py numba llvmlite python-dateutil pytz tzdata six packaging pyyaml
  fsspec typing-extensions filelock jinja2 markupsafe sympy mpmath networkx tqdm setuptools
  aiohttp aiosignal aiohappyeyeballs attrs frozenlist multidict propcache yarl idna pip
  cuda-bindings cuda-pathfinder"}
# imported when installed but optional for the GPU session, and too large to carry:
# the jax stack (scib-metrics; scvi-tools only probes for jax), pyarrow (pandas probes for
# it), igraph/leidenalg (scanpy guards the import; no clustering in the GPU session)
NOT_CARRIED=${NOT_CARRIED:-"jax jaxlib ml-dtypes opt-einsum chex scib-metrics plottable
  pyarrow igraph leidenalg texttable"}

[ -x "$PYTHON" ] || { echo "gpu_wheels: $PYTHON not found: run make install first" >&2; exit 1; }

list=$(mktemp)
trap 'rm -f "$list"' EXIT
PRESENT="$PRESENT $NOT_CARRIED" "$PYTHON" - >"$list" <<'EOF'
"""Print 'name==version' of each distribution the GPU session imports and the device lacks."""

import importlib
import importlib.metadata as md
import os
import re
import sys
import warnings

warnings.simplefilter("ignore")
sys.path.insert(0, "pipeline")
# what gpu_session.sh runs: the two GPU test files and benchmarks/integrate_gpu.py
for mod in (
    "pytest", "pytest_timeout", "anndata", "scanpy", "scvi", "scvi.model", "scvi.dataloaders",
    "sklearn.cluster", "sklearn.metrics", "sklearn.neighbors", "sklearn.decomposition",
    "bonemet", "bonemet.tl", "bonemet.pl", "bonemet.tl._scvi_fast", "harmonypy",
    "skmisc.loess",  # scanpy's seurat_v3 highly variable genes
):  # fmt: skip
    importlib.import_module(mod)
present = {re.sub(r"[-_.]+", "-", n).lower() for n in os.environ["PRESENT"].split()}
top = {m.split(".")[0] for m in sys.modules}
dists = md.packages_distributions()
names = set()
for t in top:
    for d in dists.get(t, []):
        names.add(d)
for name in sorted(names, key=str.lower):
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in present or key.startswith("nvidia-") or key == "bonemet":
        continue
    print(f"{name}=={md.version(name)}")
EOF

mkdir -p "$DEST"
echo "gpu_wheels: $(wc -l <"$list") distributions into $DEST/"
while read -r req; do
  if ! "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --abi cp312 --abi abi3 --abi none \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform any \
      -d "$DEST" "$req" 2>/dev/null; then
    # no wheel published (docrep): build one from the sdist; pure Python only
    "$PYTHON" -m pip wheel -q --no-deps -w "$DEST" "$req"
    built=$(ls -t "$DEST"/*.whl | head -1)
    case "$built" in
      *-none-any.whl) ;;
      *) echo "gpu_wheels: $req has no cp312 wheel and is not pure Python" >&2; exit 1 ;;
    esac
  fi
done <"$list"

total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
mib=$((total / 1048576))
echo "gpu_wheels: $(ls "$DEST"/*.whl | wc -l) wheels, ${mib} MiB in $DEST/"
du -b "$DEST"/*.whl | sort -rn | head -8 | awk '{printf "  %6.1f MiB  %s\n", $1/1048576, $2}'
if [ "$mib" -ge "$WHEEL_LIMIT_MIB" ]; then
  echo "gpu_wheels: ${mib} MiB is over the ${WHEEL_LIMIT_MIB} MiB limit: add what the GPU" \
    "machine already has to PRESENT" >&2
  exit 1
fi
