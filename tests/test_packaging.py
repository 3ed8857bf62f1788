"""The wheel carries signatures/, configs/ and the simulator's data; `bonemet demo` works."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import anndata as ad
import pytest

pytestmark = pytest.mark.e2e  # builds the wheel and runs `bonemet demo` end to end

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_signatures_configs_and_data(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = tmp_path.glob("bonemet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped_sets = {n for n in names if n.startswith("bonemet/signatures/") and n.endswith(".yaml")}
    assert len(shipped_sets) == len(list((ROOT / "signatures").glob("*.yaml"))) > 40
    for cfg in ("default", "demo", "test", "gpu", "geo/GSE143791"):
        assert f"bonemet/configs/{cfg}.yaml" in names, cfg
    assert "bonemet/data/gene_universe_human.tsv.gz" in names
    assert "bonemet/cli.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "bonemet = bonemet.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_demo_command(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "bonemet.cli",
            "demo",
            "--out",
            str(out),
            "--cells",
            "1500",
            "--samples",
            "2",
            "--species",
            "human",
            "--max-epochs",
            "1",
            "--accelerator",
            "cpu",
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    adata = ad.read_h5ad(out / "bonemet.h5ad")
    assert adata.uns["bonemet"]["species"] == "human"
    assert adata.obs["sample"].nunique() == 2
    assert "reference_label" in adata.obs  # the generated truth, compared in label_agreement.csv
    assert (out / "tables" / "label_agreement.csv").is_file()
    assert (out / "report.html").is_file()
    pngs = list((out / "figures").glob("*.png"))
    assert len(pngs) >= 10 and len(list((out / "figures").glob("*.pdf"))) == len(pngs)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config"]["integrate"]["max_epochs"] == 1
