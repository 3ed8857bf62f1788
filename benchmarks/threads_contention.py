"""scVI training throughput when two processes share the machine, with and without a thread cap.

Nextflow runs several tasks per node. Uncapped, each process's torch and BLAS start one
thread per core, so two processes on two cores run four busy threads. With bonemet's
``threads`` setting each task uses its share (Nextflow passes ``task.cpus``).

Scenarios, each a fresh process training stock scVI for ``--epochs`` on the same generated
data (``--cells`` cells x 2,000 HVGs):

- ``alone``: one process, threads = all cores;
- ``two_uncapped``: two processes at once, each with threads = all cores (the old default);
- ``two_capped``: two processes at once, each with threads = cores / 2.

Prints JSON (cells/s per process, medians of ``--repeats``) and writes
``benchmarks/results/threads_contention.json``. Run it on an otherwise idle machine.

Usage::

    .venv/bin/python benchmarks/threads_contention.py [--cells 20000] [--epochs 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
from bonemet._threads import set_threads
n_threads = set_threads(int(sys.argv[2]))
import anndata as ad, scvi, torch
adata = ad.read_h5ad(sys.argv[1])
scvi.settings.seed = 0
scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key="sample")
model = scvi.model.SCVI(adata, n_latent=20)
t0 = time.perf_counter()
model.train(max_epochs=int(sys.argv[3]), accelerator="cpu", batch_size=512,
            enable_progress_bar=False, logger=False)
dt = time.perf_counter() - t0
print(json.dumps({"threads": n_threads, "torch_threads": torch.get_num_threads(),
                  "seconds": dt, "cells_per_s": adata.n_obs * int(sys.argv[3]) / dt}))
"""


def _prepare(cells: int, path: Path) -> None:
    import bonemet as bm

    adata = bm.datasets.simulate_bone_metastasis(n_cells=cells, n_samples=4, seed=0)
    adata.layers["counts"] = adata.X.copy()
    bm.pp.normalize(adata, n_top_genes=2000)
    adata[:, adata.var["highly_variable"]].copy().write_h5ad(path)


def _launch(data: Path, threads: int, epochs: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env.pop("BONEMET_THREADS", None)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data), str(threads), str(epochs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def _run(data: Path, threads: list[int], epochs: int) -> list[dict]:
    procs = [_launch(data, t, epochs) for t in threads]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a training process failed (exit {p.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cells", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--json", default=str(ROOT / "benchmarks" / "results" / "threads_contention.json")
    )
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    scenarios = {
        "alone": [cores],
        "two_uncapped": [cores, cores],
        "two_capped": [max(1, cores // 2)] * 2,
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "hvg.h5ad"
        t0 = time.perf_counter()
        _prepare(args.cells, data)
        prep = time.perf_counter() - t0
        results: dict[str, dict] = {}
        for _ in range(args.repeats):
            for name, threads in scenarios.items():
                runs = _run(data, threads, args.epochs)
                r = results.setdefault(name, {"threads_per_process": threads, "cells_per_s": []})
                r["cells_per_s"].append([round(x["cells_per_s"], 1) for x in runs])
    summary = {}
    for name, r in results.items():
        per_proc = [
            statistics.median(v[i] for v in r["cells_per_s"])
            for i in range(len(r["threads_per_process"]))
        ]
        summary[name] = {
            "threads_per_process": r["threads_per_process"],
            "median_cells_per_s_per_process": [round(x, 1) for x in per_proc],
            "median_cells_per_s_total": round(sum(per_proc), 1),
            "runs": r["cells_per_s"],
        }
    report = {
        "benchmark": "threads_contention",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cores": cores, "platform": platform.platform()},
        "cells": args.cells,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "prepare_s": round(prep, 1),
        "scenarios": summary,
        "capped_vs_uncapped_total": round(
            summary["two_capped"]["median_cells_per_s_total"]
            / summary["two_uncapped"]["median_cells_per_s_total"],
            3,
        ),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
