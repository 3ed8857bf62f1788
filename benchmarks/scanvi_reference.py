"""What a scANVI reference adds to ``bm.tl.annotate`` on real labelled PBMC.

Two mappings, each with a reference built by ``bm.tl.build_scanvi_reference`` (scvi-tools'
default epochs, then 20 scANVI epochs) and the query mapped by ``bm.tl.annotate(...,
scanvi_reference=...)`` (100 query epochs):

* ``kang_ctrl_to_stim``: Kang et al. 2018, control cells as the reference, IFN-beta
  stimulated cells as the query (a shifted state, the classic scArches case);
* ``kang_to_pbmc4k``: all Kang cells as the reference, 10x PBMC 4k as the query (another
  lab, chemistry and ambient profile; the reference has no NK label).

For each: accuracy of the transferred labels themselves (lineage, via bonemet's label
mapping), and bonemet's lineage and CD8-vs-CD4 accuracy without and with the reference.
The query is prepared as ``benchmarks/annotation_accuracy.py`` does (pipeline stages, or
plain scanpy with ``--fast``). Writes ``benchmarks/results/scanvi_reference.json``.

Usage::

    python benchmarks/scanvi_reference.py [--fast] [--query-epochs 100]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
from annotation_accuracy import DATA, prepare

import bonemet as bm
from bonemet.tl._annotate import _lineage_of
from bonemet.tl._annotate_eval import _reference_lineages

OUT = Path(__file__).resolve().parent / "results" / "scanvi_reference.json"


def _load(name: str) -> ad.AnnData:
    adata = ad.read_h5ad(DATA / f"{name}.h5ad")
    adata.obs["reference_label"] = adata.obs.pop("cell_type").astype(str)
    return adata


def _transfer_accuracy(adata: ad.AnnData) -> float:
    """Share of evaluable cells whose transferred label maps to an accepted lineage."""
    ok = []
    for ref, pred in zip(adata.obs["reference_label"], adata.obs["scanvi_label"].astype(str)):
        accepted = _reference_lineages(ref)
        if accepted:
            ok.append(_lineage_of(pred) in accepted)
    return float(np.mean(ok))


def one(name: str, ref: ad.AnnData, query: ad.AnnData, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = bm.tl.build_scanvi_reference(
            ref, Path(tmp) / "ref", label_key="reference_label", accelerator="auto"
        )
        build_s = time.perf_counter() - t0
        query, how = prepare(query, fast=args.fast, max_epochs=None, seed=0)
        plain = bm.tl.annotate(query, copy=True)
        t0 = time.perf_counter()
        mapped = bm.tl.annotate(
            query, copy=True, scanvi_reference=path, scanvi_max_epochs=args.query_epochs
        )
        map_s = time.perf_counter() - t0
    info = mapped.uns["bonemet"]["annotate"]["scanvi"]
    res = {
        "reference_cells": int(ref.n_obs),
        "query_cells": int(query.n_obs),
        "preprocessing": how,
        "reference_genes": info["n_reference_genes"],
        "reference_genes_in_query": info["n_genes_found"],
        "scanvi_label_lineage_accuracy": _transfer_accuracy(mapped),
        "lineage_accuracy_markers": bm.tl.lineage_accuracy(plain)["accuracy"],
        "lineage_accuracy_with_reference": bm.tl.lineage_accuracy(mapped)["accuracy"],
        "cd8_vs_cd4_markers": bm.tl.cd8_cd4_accuracy(plain)["accuracy"],
        "cd8_vs_cd4_with_reference": bm.tl.cd8_cd4_accuracy(mapped)["accuracy"],
        "unassigned_markers": float((plain.obs["cell_type"] == "Unassigned").mean()),
        "unassigned_with_reference": float((mapped.obs["cell_type"] == "Unassigned").mean()),
        "n_changed": info["n_changed"],
        "n_confirmed": info["n_confirmed"],
        "lineage_agreement": info["lineage_agreement"],
        "build_seconds": round(build_s, 1),
        "annotate_with_reference_seconds": round(map_s, 1),
        "query_epochs": args.query_epochs,
    }
    print(
        f"{name}: transferred labels {res['scanvi_label_lineage_accuracy']:.4f}; lineage "
        f"{res['lineage_accuracy_markers']:.4f} -> {res['lineage_accuracy_with_reference']:.4f}; "
        f"CD8-vs-CD4 {res['cd8_vs_cd4_markers']:.4f} -> {res['cd8_vs_cd4_with_reference']:.4f}; "
        f"changed {res['n_changed']}, confirmed {res['n_confirmed']}"
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="plain scanpy PCA path for the query")
    ap.add_argument("--query-epochs", type=int, default=100)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    bm.set_quiet(True)
    kang = _load("kang2018_pbmc_ifnb")
    stim = (kang.obs["condition"].astype(str) == "stim").to_numpy()
    res = {
        "kang_ctrl_to_stim": one("kang_ctrl_to_stim", kang[~stim].copy(), kang[stim].copy(), args),
        "kang_to_pbmc4k": one("kang_to_pbmc4k", kang.copy(), _load("pbmc4k_soupx"), args),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
