"""scVI epochs on small data: scvi-tools' heuristic (400 epochs below 20k cells) vs early stopping.

On real labelled sets (Kang 2018 PBMC, 10x PBMC 4k; ``../shared/data``) and on a 2,000-cell
generated set, each setting runs bonemet's own stages (``bm.pp.normalize`` →
``bm.tl.integrate`` (scVI) → ``bm.tl.cluster`` → ``bm.tl.annotate``) and records epochs
trained, training seconds, lineage accuracy and CD8-vs-CD4 accuracy against the labels,
and the integration metrics of ``bm.pl`` (sklearn fallback: silhouette, kNN batch entropy,
k-means ARI/NMI; batch = sample). The heuristic run validates every epoch (early stopping
with a patience longer than training), so its validation-ELBO curve tells where each
patience would have stopped.

Usage::

    python benchmarks/small_data_epochs.py [--patience 20] [--sets kang2018_pbmc_ifnb ...]
        [--json benchmarks/results/small_data_epochs.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import anndata as ad
import numpy as np

import bonemet as bm

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _load(name: str) -> ad.AnnData:
    if name == "generated_2k":
        a = bm.datasets.simulate_bone_metastasis(2000, 2, species="human", seed=0)
        a = a[~a.obs["true_doublet"] & ~a.obs["true_low_quality"]].copy()
        a.obs["reference_label"] = a.obs["true_population"].astype(str)
        return a
    a = ad.read_h5ad(DATA / f"{name}.h5ad")
    a.obs["reference_label"] = a.obs.pop("cell_type").astype(str)
    if "sample" not in a.obs:
        a.obs["sample"] = "s1"
    a.obs["sample"] = a.obs["sample"].astype(str).astype("category")
    return a


def _stop_epoch(val: np.ndarray, patience: int) -> int:
    """The epoch (1-based) at which patience-based early stopping on ``val`` would stop."""
    best, since = np.inf, 0
    for i, v in enumerate(val):
        if v < best:
            best, since = v, 0
        else:
            since += 1
            if since >= patience:
                return i + 1
    return len(val)


def _run(
    name: str, *, early: bool, patience: int, seed: int, max_epochs: int | None = None
) -> dict:
    from bonemet.pl._metrics import _fallback_row

    a = _load(name)
    bm.pp.normalize(a, n_top_genes=2000)
    t0 = time.perf_counter()
    bm.tl.integrate(
        a,
        method="scvi",
        accelerator="cpu",
        seed=seed,
        max_epochs=max_epochs,
        early_stopping=True,  # validation every epoch in every run
        early_stopping_patience=patience if early else 10**6,
    )
    train_s = time.perf_counter() - t0
    info = dict(a.uns["bonemet"]["integrate"])
    bm.tl.cluster(a, seed=seed)
    bm.tl.annotate(a)
    lin = bm.tl.lineage_accuracy(a, label_key="reference_label")
    t = bm.tl.cd8_cd4_accuracy(a, label_key="reference_label")
    metrics = _fallback_row(
        np.asarray(a.obsm["X_scVI"]),
        a.obs["reference_label"].astype(str).to_numpy(),
        a.obs["sample"].astype(str).to_numpy(),
        k=15,
        seed=seed,
    )
    out = {
        "epochs": int(info["epochs"]),
        "integrate_s": round(train_s, 1),
        "lineage_accuracy": round(float(lin["accuracy"]), 4),
        "cd8_vs_cd4_accuracy": None if t["accuracy"] is None else round(float(t["accuracy"]), 4),
        "integration_total": round(float(metrics["total"]), 4),
        "bio_conservation": round(float(metrics["bio_conservation"]), 4),
        "batch_correction": None
        if np.isnan(metrics["batch_correction"])
        else round(float(metrics["batch_correction"]), 4),
        "n_cells": int(a.n_obs),
    }
    hist = info.get("elbo_validation_per_epoch")
    if hist is not None and not early:
        out["elbo_validation"] = [round(float(v), 2) for v in hist]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument(
        "--sets", nargs="+", default=["kang2018_pbmc_ifnb", "pbmc4k_soupx", "generated_2k"]
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--fixed-epochs",
        type=int,
        nargs="*",
        default=[],
        help="also train for exactly these many epochs (an epoch rule to compare)",
    )
    ap.add_argument("--skip-early", action="store_true", help="leave out the early-stopping run")
    ap.add_argument("--json", default="benchmarks/results/small_data_epochs.json")
    args = ap.parse_args()
    bm.set_quiet(True)
    report: dict = {
        "benchmark": "small_data_epochs",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_start": os.getloadavg()[0],
        "patience": args.patience,
        "sets": {},
    }
    for name in args.sets:
        heur = _run(name, early=False, patience=args.patience, seed=args.seed)
        row: dict = {"heuristic": heur}
        if not args.skip_early:
            row["early_stopping"] = _run(name, early=True, patience=args.patience, seed=args.seed)
        for n in args.fixed_epochs:
            row[f"fixed_{n}"] = _run(
                name, early=False, patience=args.patience, seed=args.seed, max_epochs=n
            )
            row[f"fixed_{n}"].pop("elbo_validation", None)
        val = heur.pop("elbo_validation", None)
        if val:
            row["would_stop_at"] = {p: _stop_epoch(np.asarray(val), p) for p in (10, 20, 45)}
        keys = ("lineage_accuracy", "cd8_vs_cd4_accuracy", "integration_total")
        for setting in [k for k in row if k == "early_stopping" or k.startswith("fixed_")]:
            other = row[setting]
            row[f"delta_{setting}"] = {
                k: round(other[k] - heur[k], 4)
                for k in keys
                if other[k] is not None and heur[k] is not None
            }
            row[f"speedup_{setting}"] = round(
                heur["integrate_s"] / max(other["integrate_s"], 1e-9), 2
            )
        report["sets"][name] = row
        print(json.dumps({name: row}), flush=True)
    report["load_average_end"] = os.getloadavg()[0]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
