"""The cluster stage's before-integration UMAP: its cost, and that clusters do not depend on it.

``bm.tl.cluster`` builds the kNN graph on the integrated embedding, runs leiden on it and
draws the integrated UMAP; a second graph on ``X_pca`` of at most ``unintegrated_cells``
cells gives the before-integration UMAP of the report. This script re-clusters a finished
run's ``bonemet.h5ad`` (its UMAPs removed) three ways: the unintegrated UMAP on every cell
(the cluster stage before the subsample), on 10,000 cells (the default), and none; and
records per setting the seconds and the adjusted Rand index of the leiden clusters against
the first. One warm-up call on 2,000 cells comes first: the first UMAP in a process pays
numba's compilation (about 50 s on the 2-core machine), which would otherwise be charged to
whichever setting runs first.

Usage::

    python benchmarks/cluster_umap.py RUN/bonemet.h5ad [--json benchmarks/results/cluster_umap.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import anndata as ad
from sklearn.metrics import adjusted_rand_score

import bonemet as bm

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("h5ad", type=Path)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "cluster_umap.json"))
    args = ap.parse_args()
    bm.set_quiet(True)
    base = ad.read_h5ad(args.h5ad)
    for k in [k for k in base.obsm if k.startswith("X_umap")]:
        del base.obsm[k]
    t0 = time.perf_counter()
    bm.tl.cluster(base[: min(2000, base.n_obs)].copy(), seed=0, unintegrated_cells=2000)
    warm = time.perf_counter() - t0
    settings = {
        "unintegrated UMAP on every cell (before)": base.n_obs,
        "unintegrated UMAP on 10,000 cells (default)": 10000,
        "no unintegrated UMAP": 0,
    }
    res, labels = {}, {}
    for name, n in settings.items():
        a = base.copy()
        t0 = time.perf_counter()
        bm.tl.cluster(a, seed=0, unintegrated_cells=n)
        res[name] = {"unintegrated_cells": int(min(n, a.n_obs)),
                     "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        labels[name] = a.obs["leiden"].to_numpy()
    first = next(iter(settings))
    for name in res:
        res[name]["ari_leiden_vs_before"] = float(adjusted_rand_score(labels[first], labels[name]))
    report = {
        "benchmark": "cluster_umap",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_end": round(os.getloadavg()[0], 2),
        "input": str(args.h5ad),
        "cells": int(base.n_obs),
        "warm_up_seconds_2000_cells": round(warm, 1),
        "settings": res,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
