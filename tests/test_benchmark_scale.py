"""benchmarks/scale_cpu.py at a small size: every field of its JSON is there (not the timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # runs every stage once, in a subprocess

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "scale_cpu.py"


def _scale(tmp_path, out_json, *extra, timeout=None):
    """The benchmark at 700 cells and 1 epoch into ``out_json``."""
    cmd = [sys.executable, str(SCRIPT), "--sizes", "700", "--epochs", "1", *extra,
           "--out", str(tmp_path / "runs"), "--json", str(out_json)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_scale_benchmark_json_has_every_field(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from scale_cpu import SIZE_FIELDS

    out_json = tmp_path / "scale.json"
    res = _scale(tmp_path, out_json, "--threads", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out_json.read_text())
    assert report["failed"] == {}, report["failed"]
    assert report["scvi_epochs"] == 1 and report["reference_cells"] == 700
    (rec,) = report["sizes"]
    assert set(SIZE_FIELDS) <= set(rec)
    assert set(rec["load_average"]) == {"mean", "max"}  # what else shared the machine
    assert rec["date"] == report["date"] and rec["code"]  # which code measured it (git checkout)
    assert rec["cells"] == 700 and rec["samples"] == 2 and 0 < rec["cells_after_qc"] <= 700
    stages = {"ingest", "qc", "merge", "integrate", "cluster", "annotate", "score", "report"}
    assert stages <= set(rec["stage_s"]) and stages <= set(rec["stage_peak_rss_mib"])
    assert rec["checkpoints_mib"] > 0 and rec["h5ad_mib"] > 0
    assert rec["checkpoint_ratio"] == pytest.approx(
        rec["checkpoints_mib"] / rec["h5ad_mib"], rel=0.05
    )
    # per-cell cost relative to the reference size: 1.0 for the reference itself
    assert set(report["per_cell_time_vs_reference"]["700"].values()) == {1.0}
    assert not (tmp_path / "runs" / "700" / "input").exists()  # the generated input is removed


def test_merge_keeps_other_sizes_and_refuses_other_epochs(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from scale_cpu import merge_records

    old = [{"cells": 2000, "wall_s": 1}, {"cells": 200000, "wall_s": 2}]
    new = [{"cells": 200000, "wall_s": 3}, {"cells": 20000, "wall_s": 4}]
    merged = merge_records(old, new)
    assert [(r["cells"], r["wall_s"]) for r in merged] == [(2000, 1), (20000, 4), (200000, 3)]
    # a record measured at other epochs is not merged: refused before any size runs
    prior = tmp_path / "scale.json"
    prior.write_text(json.dumps({"scvi_epochs": 10, "sizes": old, "failed": {}}))
    res = _scale(tmp_path, prior, "--merge", timeout=60)
    assert res.returncode != 0 and "10 epochs" in res.stderr and "--epochs" in res.stderr
    assert json.loads(prior.read_text())["sizes"] == old  # left as it was
    assert not (tmp_path / "runs").exists()
