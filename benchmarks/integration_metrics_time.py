#!/usr/bin/env python
"""Run time of the report's integration metrics at several subsample sizes (JSON).

On the demo-sized data set (``bm.datasets.simulate_bone_metastasis(n_cells=20000,
n_samples=4, species="mouse", seed=0)``; log-normalised, 2,000 seurat_v3 HVGs, 50-PC
``X_pca``, harmony ``X_harmony``) it times :func:`bonemet.pl.integration_metrics_table`
per backend and subsample size, each in a fresh process, so every figure includes what a
pipeline run pays once: importing the backend (jax, numba) and compiling its kernels. Wall
and CPU time are both recorded, with the 1-minute load average: on a shared machine the
wall time grows with the load, the CPU time much less.
A second call in the same process (the report's figure) is timed too: it is served from
the table's cache. Scores are recorded alongside, to show what the subsample size changes.

Usage::

    nice .venv/bin/python benchmarks/integration_metrics_time.py \\
        [--runs scib-metrics:fast:5000 ...] [--json benchmarks/results/integration_metrics_time.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _prepare(path: Path) -> dict:
    import numpy as np
    import scanpy as sc

    import bonemet as bm
    from bonemet.tl._integrate import _harmony

    t0 = time.perf_counter()
    a = bm.datasets.simulate_bone_metastasis(n_cells=20000, n_samples=4, species="mouse", seed=0)
    a = a[~a.obs["true_doublet"].astype(bool).to_numpy()].copy()
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=2000, flavor="seurat_v3", layer="counts")
    a.obsm["X_pca"] = sc.pp.pca(
        a[:, a.var["highly_variable"]].X, n_comps=50, random_state=0
    ).astype(np.float32)
    a.obsm["X_harmony"] = _harmony(a.obsm["X_pca"], a.obs["sample"], 0).astype(np.float32)
    import anndata as ad

    out = ad.AnnData(obs=a.obs[["sample", "true_population"]].copy())
    out.obsm["X_pca"] = a.obsm["X_pca"]
    out.obsm["X_harmony"] = a.obsm["X_harmony"]
    out.write_h5ad(path)
    return {"cells": int(out.n_obs), "prepare_s": round(time.perf_counter() - t0, 1)}


def _child(path: str, backend: str, preset: str, size: int) -> None:
    t0 = time.perf_counter()
    import anndata as ad

    import bonemet as bm

    a = ad.read_h5ad(path)
    t1 = time.perf_counter()
    c1 = time.process_time()
    kw = {"backend": backend, "max_cells": size, "preset": preset}
    df = bm.pl.integration_metrics_table(a, **kw)
    t2 = time.perf_counter()
    c2 = time.process_time()
    bm.pl.integration_metrics_table(a, **kw)
    t3 = time.perf_counter()
    scores = {
        name: {k: round(float(v), 4) for k, v in row.items() if k != "metrics_backend"}
        for name, row in df.iterrows()
    }
    print(
        json.dumps(
            {
                "backend": str(df["metrics_backend"].iloc[0]),
                "preset": preset if backend != "sklearn-fallback" else None,
                "max_cells": size,
                "first_call_s": round(t2 - t1, 2),
                "first_call_cpu_s": round(c2 - c1, 2),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "cached_call_s": round(t3 - t2, 3),
                "process_s": round(t3 - t0, 2),
                "scores": scores,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--runs",
        nargs="+",
        default=[
            "scib-metrics:fast:2000",
            "scib-metrics:fast:5000",
            "scib-metrics:fast:10000",
            "scib-metrics:full:5000",
            "sklearn-fallback:fast:5000",
        ],
        help="BACKEND:PRESET:MAX_CELLS, each timed in a fresh process",
    )
    ap.add_argument("--json", default="benchmarks/results/integration_metrics_time.json")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.child[2], int(args.child[3]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "demo_embeddings.h5ad"
        data = _prepare(path)
        print(f"prepared {data['cells']:,} cells in {data['prepare_s']} s", flush=True)
        runs = []
        for spec in args.runs:
            backend, preset, size = spec.split(":")
            res = subprocess.run(
                [sys.executable, __file__, "--child", str(path), backend, preset, size],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            run = json.loads(res.stdout.strip().splitlines()[-1])
            runs.append(run)
            print(
                f"{backend} {preset} {int(size):>6}: first call {run['first_call_s']} s "
                f"({run['first_call_cpu_s']} s CPU, load {run['load_average_1min']}), "
                f"cached {run['cached_call_s']} s",
                flush=True,
            )
    record = {
        "data": "simulate_bone_metastasis(n_cells=20000, n_samples=4, species='mouse', "
        "seed=0), doublets removed; X_pca (50 PCs of 2,000 HVGs) and X_harmony",
        **data,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "runs": runs,
    }
    try:
        from importlib.metadata import version

        record["versions"] = {p: version(p) for p in ("scib-metrics", "jax", "scikit-learn")}
    except Exception:  # a backend not installed
        pass
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "pipeline"))
    main()
