"""`bonemet run` from a GEO accession, end to end, against a real server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys

import anndata as ad
import pytest
import yaml
from geo_server import GeoServer  # tests/geo_server.py
from geo_tree import ACC, V3, build_tree  # tests/geo_tree.py

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not V3.is_dir(), reason="needs ../shared/data/10x/v3_chr21"),
]


def test_run_from_geo_accession(tmp_path):
    tree = build_tree(tmp_path / "geo")
    out = tmp_path / "out"
    with GeoServer(tree["root"]) as srv:
        cfg = {
            "input": {
                "geo": ACC,
                "geo_base_url": srv.url,
                "cache_dir": str(tmp_path / "cache"),
                "samples": ["GSM1001", "GSM1002"],  # the two 10x samples (chr21 genes only)
                "species": "human",
                "allow_non_counts": False,
            },
            "output": {"dir": str(out)},
            # chr21-only fixtures: a few hundred genes per cell, so QC floors are lowered
            "qc": {"min_counts": 10, "min_genes": 5, "doublets": False},
            "normalize": {"n_top_genes": 200},
            "integrate": {
                "max_epochs": 1,
                "n_latent": 5,
                "n_hidden": 32,
                "n_layers": 1,
                "accelerator": "cpu",
            },
            "cluster": {"resolutions": [1.0]},
            "report": {"figures": False},
        }
        path = tmp_path / "geo.yaml"
        path.write_text(yaml.safe_dump(cfg))
        res = subprocess.run(
            [sys.executable, "-m", "bonemet.cli", "run", str(path), "-q"],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 0, res.stderr[-3000:]
    adata = ad.read_h5ad(out / "bonemet.h5ad")
    assert sorted(adata.obs["sample"].unique()) == ["GSM1001", "GSM1002"]
    # SOFT characteristics became obs columns
    assert set(adata.obs["tissue_type"].unique()) == {"Tumor", "Benign"}
    assert adata.obs_names.is_unique
    assert "X_scVI" in adata.obsm and "cell_type" in adata.obs
    # chr21 carries none of the marker genes: cells stay Unassigned, with a warning
    assert set(adata.obs["cell_type"].unique()) == {"Unassigned"}
    assert any("none of the human marker genes" in str(w) for w in adata.uns["bonemet"]["warnings"])
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config"]["input"]["geo"] == ACC
    # a second run with the server gone is served from the resume checkpoints
    res = subprocess.run(
        [sys.executable, "-m", "bonemet.cli", "run", str(path), "-q"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
