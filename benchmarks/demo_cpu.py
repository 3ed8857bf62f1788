"""The demo at 20,000 cells on this machine: wall time and peak memory per stage (JSON).

Usage::

    .venv/bin/python benchmarks/demo_cpu.py [--cells 20000] [--out results/bench_demo]
        [--json benchmarks/results/demo_cpu.json]

Target: <= 5 minutes end to end on a 2-core machine, scVI the dominant cost.
Peak memory is the process's resident set size sampled every 50 ms during each stage.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any


def git_rev(*, dirty: bool = False) -> str | None:
    """The short commit of this checkout (``+dirty`` after it with ``dirty`` and uncommitted
    changes to tracked files); None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=here, check=True).stdout.strip()  # fmt: skip
        changed = dirty and subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, cwd=here,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if changed else "")


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_with_peaks(runner: Any) -> tuple[Any, float, dict[str, float]]:
    """Run a :class:`bonemet.runner.Runner`; returns (result, seconds, peak RSS MiB per stage).

    The process's resident set size is sampled every 50 ms while each stage runs.
    """
    peaks: dict[str, float] = {}
    current: dict[str, str | None] = {"stage": None}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            st = current["stage"]
            if st:
                peaks[st] = max(peaks.get(st, 0.0), _rss_mib())
            time.sleep(0.05)

    def on_stage(stage: str, event: str) -> None:
        if event == "start":
            current["stage"] = stage
            peaks[stage] = _rss_mib()
        else:
            peaks[stage] = max(peaks.get(stage, 0.0), _rss_mib())
            current["stage"] = None

    runner.on_stage = on_stage
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t1 = time.perf_counter()
    try:
        result = runner.run()
    finally:
        stop.set()
        th.join()
    return result, time.perf_counter() - t1, peaks


def _accuracy(path: Path) -> dict:
    """Population macro-F1 of the demo's annotation against the simulated truth."""
    import anndata as ad
    from sklearn.metrics import f1_score

    obs = ad.read_h5ad(path, backed="r").obs
    keep = ~obs["true_doublet"].astype(bool).to_numpy()
    truth = obs.loc[keep, "true_population"].astype(str)
    pred = obs.loc[keep, "population"].astype(str)
    labels = sorted(set(truth))
    f1 = f1_score(truth, pred, labels=labels, average=None, zero_division=0)
    return {
        "population_macro_f1": round(float(f1.mean()), 4),
        "population_f1_below_0.9": {k: round(float(v), 3) for k, v in zip(labels, f1) if v < 0.9},
    }


def _planted(tables: Path, sim: dict) -> dict:
    """What the demo's compare tables find of the simulator's planted truth.

    Abundance: the expected log2 ratio of each population's share (bone_met / control);
    shifts of at least 2-fold (|log2| >= 1) should be found (BH-adjusted p < 0.05), the
    populations within 7 % (|log2| < 0.1) should not. DE: the planted genes of the planted
    population, found among its BH-adjusted p < 0.05 genes.
    """
    import io

    import numpy as np
    import pandas as pd

    exp = pd.read_json(io.StringIO(sim["expected_composition"]), orient="split")
    truth = np.log2(exp.loc["bone_met"] / exp.loc["control"])
    da = pd.read_csv(tables / "differential_abundance.csv")
    da = da[da["kind"] == "population"].set_index("test")
    big = [p for p in truth.index[truth.abs() >= 1.0] if p in da.index]
    null = [p for p in truth.index[truth.abs() < 0.1] if p in da.index]
    found = [
        p
        for p in big
        if da.loc[p, "padj"] < 0.05 and np.sign(da.loc[p, "log2fc"]) == np.sign(truth[p])
    ]
    false = [p for p in null if da.loc[p, "padj"] < 0.05]
    out: dict = {
        "da_planted_shifts": {p: round(float(truth[p]), 2) for p in big},
        "da_planted_found": found,
        "da_nulls": null,
        "da_nulls_called": false,
    }
    pl = sim.get("planted_de")
    de_path = tables / "pseudobulk_de.csv"
    if pl is not None and de_path.is_file():
        de = pd.read_csv(de_path)
        d = de[de["population"] == pl["population"]]
        hits = set(d.loc[d["padj"] < 0.05, "gene"])
        genes = set(pl["genes"])
        out["de_population"] = pl["population"]
        out["de_planted_found"] = f"{len(hits & genes)}/{len(genes)}"
        out["de_other_calls"] = len(hits - genes)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cells", type=int, default=20000)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--species", default="mouse")
    ap.add_argument("--out", default="results/bench_demo")
    ap.add_argument("--json", default="benchmarks/results/demo_cpu.json")
    args = ap.parse_args()

    import bonemet as bm
    from bonemet._utils import write_h5ad
    from bonemet.cli import demo_config, demo_design
    from bonemet.runner import Runner

    bm.set_quiet(True)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    design = demo_design(args.samples)
    adata = bm.datasets.simulate_bone_metastasis(
        n_cells=args.cells, n_samples=args.samples, species=args.species, seed=0, **design
    )
    sim = adata.uns["bonemet_simulation"]
    src = write_h5ad(adata, out / "input" / "simulated.h5ad")
    simulate_s = time.perf_counter() - t0
    cfg = demo_config(
        src,
        out,
        species=args.species,
        integrate={"accelerator": "cpu"},
        batched="n_batches" in design,
    )
    result, pipeline_s, peaks = run_with_peaks(Runner(cfg, resume=False))
    prov = json.loads((out / "provenance.json").read_text())
    report = {
        "benchmark": "demo_cpu",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "cells_simulated": args.cells,
        "cells_after_qc": int(result.n_obs),
        "simulate_s": round(simulate_s, 2),
        "pipeline_s": round(pipeline_s, 2),
        "end_to_end_s": round(simulate_s + pipeline_s, 2),
        "stage_s": prov["timings"],
        "stage_peak_rss_mib": {k: round(v, 1) for k, v in peaks.items()},
        "scvi_epochs": result.uns["bonemet"].get("integrate", {}).get("epochs"),
        "target_end_to_end_s": 300,
    }
    report["dominant_stage"] = max(report["stage_s"], key=report["stage_s"].get)
    report.update(_accuracy(out / "bonemet.h5ad"))
    report["design"] = {"samples": args.samples, **design}
    report["planted_truth"] = _planted(out / "tables", sim)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
