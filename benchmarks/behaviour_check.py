"""Behaviour preservation: the same demo input through two versions of bonemet (JSON).

A refactor must not change results. This script writes one generated demo input (with the
simulator of ``--before``, so both versions read the same file), runs ``bonemet run`` on
it with the code of ``--before`` (a git worktree) and with the working tree, and compares
the cells, clusters, labels, scores and the tables both versions write.

Usage::

    .venv/bin/python benchmarks/behaviour_check.py --before 31b3b99 [--cells 3000]
        [--json benchmarks/results/behaviour_check.json]

Both runs use the demo config with ``--epochs`` scVI epochs on the CPU and the same seed.
Exit status 0 when everything compared is identical (floats within 1e-6 relative), 1
otherwise. Tables that exist in only one version are listed, not compared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _run(code_root: Path, args: list[str], *, cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(code_root / "pipeline")}
    t0 = time.perf_counter()
    subprocess.run([PY, *args], cwd=cwd, env=env, check=True)
    return time.perf_counter() - t0


def _config(src: Path, out: Path, epochs: int, code_root: Path) -> Path:
    import yaml

    cfg = yaml.safe_load((code_root / "configs" / "demo.yaml").read_text())
    cfg["input"] = {
        "path": str(src),
        "sample_key": "sample",
        "label_key": "true_population",
        "condition_key": "condition",
        "species": "mouse",
    }
    cfg["output"] = {"dir": str(out)}
    cfg.setdefault("integrate", {}).update({"max_epochs": epochs, "accelerator": "cpu"})
    cfg["seed"] = 0
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _same_frame(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    if list(a.columns) != list(b.columns):
        return f"columns differ: {sorted(set(a.columns) ^ set(b.columns))}"
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    for c in a.columns:
        x, y = a[c], b[c]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            if not np.allclose(
                x.to_numpy(float), y.to_numpy(float), rtol=1e-6, atol=1e-9, equal_nan=True
            ):
                return f"column {c!r} differs (max |diff| {np.nanmax(np.abs(x - y)):.3g})"
        elif not (x.astype(str).to_numpy() == y.astype(str).to_numpy()).all():
            return f"column {c!r} differs"
    return None


def compare(before: Path, after: Path) -> dict:
    import anndata as ad

    a = ad.read_h5ad(before / "bonemet.h5ad")
    b = ad.read_h5ad(after / "bonemet.h5ad")
    res: dict = {"n_cells": [int(a.n_obs), int(b.n_obs)]}
    res["same_cells"] = bool(a.obs_names.equals(b.obs_names))
    checks = {}
    if res["same_cells"]:
        for key in ("leiden", "cell_type", "population", "annotation_confidence"):
            if key in a.obs and key in b.obs:
                checks[key] = _same_frame(a.obs[[key]], b.obs[[key]]) is None
        scores = sorted(c for c in a.obs if c.startswith(("score_", "aucell_")))
        checks["scores"] = scores == sorted(c for c in b.obs if c.startswith(("score_", "aucell_")))
        if checks["scores"]:
            checks["scores"] = _same_frame(a.obs[scores], b.obs[scores]) is None
        checks["X_scVI"] = bool(
            np.allclose(a.obsm["X_scVI"], b.obsm["X_scVI"], rtol=1e-5, atol=1e-6)
        )
    res["obs"] = checks
    ta = {p.stem: p for p in (before / "tables").glob("*.csv")}
    tb = {p.stem: p for p in (after / "tables").glob("*.csv")}
    tables = {}
    for name in sorted(set(ta) & set(tb)):
        da, db = pd.read_csv(ta[name]), pd.read_csv(tb[name])
        # a table whose row-number index the old code wrote as a column, the new one not
        for d in (da, db):
            if "Unnamed: 0" in d.columns:
                d.drop(columns="Unnamed: 0", inplace=True)
        why = _same_frame(da, db)
        if why is None:
            tables[name] = "identical"
            continue
        shared = [c for c in da.columns if c in db.columns]
        added = sorted(set(db.columns) - set(da.columns))
        removed = sorted(set(da.columns) - set(db.columns))
        if shared and len(da) == len(db) and _same_frame(da[shared], db[shared]) is None:
            tables[name] = (
                f"identical on the {len(shared)} shared columns; added {added}, removed {removed}"
            )
        else:
            tables[name] = why
    res["tables"] = tables
    res["tables_only_before"] = sorted(set(ta) - set(tb))
    res["tables_only_after"] = sorted(set(tb) - set(ta))
    res["identical"] = bool(
        res["same_cells"]
        and all(checks.values())
        and all(v == "identical" for v in tables.values())
    )
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--before", required=True, help="git revision of the version to compare with")
    ap.add_argument("--cells", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "behaviour_check.json"))
    args = ap.parse_args()

    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.before],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bonemet-behaviour-") as tmp:
        tmp = Path(tmp)
        old = tmp / "before-code"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), rev], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        try:
            src = tmp / "input.h5ad"
            make = (
                "import bonemet as bm, sys; "
                f"bm.datasets.simulate_bone_metastasis(n_cells={args.cells}, n_samples=4, "
                "species='mouse', seed=0).write_h5ad(sys.argv[1])"
            )
            _run(old, ["-c", make, str(src)], cwd=tmp)
            seconds = {}
            for name, code in (("before", old), ("after", ROOT)):
                cfg = _config(src, tmp / name, args.epochs, code)
                seconds[name] = round(
                    _run(code, ["-m", "bonemet.cli", "run", str(cfg), "-q"], cwd=tmp), 1
                )
            res = compare(tmp / "before", tmp / "after")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                           capture_output=True)  # fmt: skip
    report = {
        "benchmark": "behaviour_check",
        "date": time.strftime("%Y-%m-%d"),
        "before": rev,
        "after": f"{head} + working tree",
        "cells_simulated": args.cells,
        "scvi_epochs": args.epochs,
        "run_seconds": seconds,
        **res,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if res["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
