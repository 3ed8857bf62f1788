"""Does QC bias composition between conditions? Before → after on generated and real data.

With per-sample MAD thresholds, populations with more mitochondrial reads (tumour
cells, osteoclasts) are removed unevenly between conditions, and fixed floors remove most
cells of gene-panel data. This script measures, on

* the 20k-cell demo data (``simulate_bone_metastasis(20000, 4, seed=0)``, mouse): the
  removal rate of every true population (healthy singlets: not ``true_doublet``, not
  ``true_low_quality``) per sample and per condition, the largest between-condition
  difference, and how many planted damaged cells and doublets QC still removes;
* ``../shared/data/paul2015_mouse_bm_progenitors.h5ad`` (real, 240-gene panel): cells kept,
  per label, and the warnings;

for ``before`` (per-sample MADs, fixed floors, no mito floor: the QC of bonemet before issue
14) and ``after`` (the defaults: ``mad_scope="cluster"``, floors scaled with the genes
measured, mito threshold within [5, 20] %). Ambient correction does not change which cells
are kept, so both run with ``ambient="none"``.

Run: ``.venv/bin/python benchmarks/qc_composition.py`` (writes
``benchmarks/results/qc_composition.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import anndata as ad
import pandas as pd

import bonemet as bm

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "before": {"mad_scope": "sample", "mito_floor": 0.0, "floor_reference_genes": 0},
    "after": {},
}


def _run(a: ad.AnnData, kw: dict, seed: int) -> tuple[ad.AnnData, float]:
    t0 = time.perf_counter()
    out = bm.pp.qc(a, ambient="none", seed=seed, copy=True, **kw)
    return out, time.perf_counter() - t0


def simulated(cells: int, samples: int, seed: int) -> dict:
    a = bm.datasets.simulate_bone_metastasis(cells, samples, seed=seed)
    a.uns["bonemet"] = {"species": "mouse", "is_counts": True, "warnings": []}
    obs = a.obs
    healthy = ~obs["true_doublet"].astype(bool) & ~obs["true_low_quality"].astype(bool)
    res: dict = {"data": f"simulate_bone_metastasis({cells}, {samples}, seed={seed}), mouse"}
    for name, kw in VARIANTS.items():
        out, dt = _run(a, kw, seed)
        removed = ~obs.index.isin(out.obs_names)
        df = pd.DataFrame(
            {
                "sample": obs["sample"].astype(str),
                "condition": obs["condition"].astype(str),
                "population": obs["true_population"].astype(str),
                "removed": removed,
            }
        )[healthy.to_numpy()]
        per_sample = (
            df.groupby(["population", "sample"], observed=True)["removed"]
            .agg(["size", "mean"])
            .rename(columns={"size": "n", "mean": "removed_rate"})
        )
        per_cond = (
            df.groupby(["population", "condition"], observed=True)["removed"]
            .agg(["size", "mean"])
            .rename(columns={"size": "n", "mean": "removed_rate"})
        )
        wide = per_cond["removed_rate"].unstack("condition")
        n_wide = per_cond["n"].unstack("condition")
        diff = (wide["bone_met"] - wide["control"]).abs()
        ok = n_wide.min(axis=1) >= 30
        qc = out.uns["bonemet"]["qc"]
        res[name] = {
            "parameters": kw or "defaults",
            "seconds": dt,
            "n_kept": int(out.n_obs),
            "n_total": int(a.n_obs),
            "removed_healthy_fraction": float(df["removed"].mean()),
            "removed_true_low_quality": float(removed[obs["true_low_quality"].to_numpy()].mean()),
            "removed_true_doublet": float(removed[obs["true_doublet"].to_numpy()].mean()),
            "max_pct_mito_threshold": {
                s: float(r["threshold_max_pct_mito"]) for s, r in qc.items()
            },
            "max_condition_difference_pp": float(100 * diff[ok].max()),
            "population_with_max_difference": str(diff[ok].idxmax()),
            "populations_over_5pp": sorted(diff[ok & (diff > 0.05)].index.tolist()),
            "removed_rate_by_condition": {
                p: {c: round(float(v), 4) for c, v in row.dropna().items()}
                for p, row in wide.iterrows()
            },
            "n_by_condition": {
                p: {c: int(v) for c, v in row.dropna().items()} for p, row in n_wide.iterrows()
            },
            "removed_rate_by_sample": {
                p: {s: round(float(v), 4) for s, v in grp.droplevel(0).items()}
                for p, grp in per_sample["removed_rate"].groupby(level=0)
            },
        }
        print(name, json.dumps({k: v for k, v in res[name].items() if "by_" not in k}), flush=True)
    return res


def paul(seed: int) -> dict:
    shared = os.environ.get("BONEMET_SHARED_DATA") or ROOT.parent / "shared" / "data"
    path = Path(shared) / "paul2015_mouse_bm_progenitors.h5ad"
    a = next(iter(bm.io.ingest(path, label_key="cell_type").values()))
    labels = a.obs["reference_label"].astype(str)
    res: dict = {"data": str(path.name), "n_cells": int(a.n_obs), "n_genes": int(a.n_vars)}
    for name, kw in VARIANTS.items():
        a.uns["bonemet"]["warnings"] = []
        out, dt = _run(a, kw, seed)
        rec = next(iter(out.uns["bonemet"]["qc"].values()))
        kept = labels.index.isin(out.obs_names)
        res[name] = {
            "parameters": kw or "defaults",
            "seconds": dt,
            "n_kept": int(out.n_obs),
            "removed": {k: int(v) for k, v in rec.items() if k.startswith("removed_")},
            "thresholds": {k: float(v) for k, v in rec.items() if k.startswith("threshold_")},
            "kept_by_label": {
                lab: f"{int(kept[(labels == lab).to_numpy()].sum())}/{int((labels == lab).sum())}"
                for lab in sorted(labels.unique())
            },
            "warnings": [str(w) for w in bm._meta.warnings_of(out) if "QC removed" in str(w)],
        }
        print("paul", name, json.dumps(res[name]), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=20000)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "qc_composition.json"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    res = {
        "paul2015": paul(args.seed),
        "simulated": simulated(args.cells, args.samples, args.seed),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
