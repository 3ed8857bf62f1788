"""Lean checkpoints: merged stages store what they change; resume rebuilds the exact object."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import bonemet as bm
from bonemet.runner import Runner

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("ck") / "sim.h5ad"
    bm.datasets.simulate_bone_metastasis(
        n_cells=1500, n_samples=2, species="mouse", seed=5
    ).write_h5ad(p)
    return p


def _cfg(src: Path, out: Path, **annotate) -> dict:
    return {
        "input": {"path": str(src), "sample_key": "sample", "condition_key": "condition"},
        "output": {"dir": str(out)},
        "integrate": {"method": "pca"},
        "normalize": {"n_top_genes": 500},
        "score": {"ssgsea": False},
        "report": {"figures": False},
        "compare": {"enabled": False},
        "annotate": annotate,
    }


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_resume_from_lean_checkpoints_equals_a_fresh_run(sim, tmp_path):
    lean_out = tmp_path / "lean"
    Runner(_cfg(sim, lean_out)).run()
    ck = lean_out / ".bonemet"
    assert ad.read_h5ad(ck / "merge.h5ad").X is not None  # the gather stage's whole object
    for stage in ("integrate", "cluster", "annotate", "score"):
        part = ad.read_h5ad(ck / f"{stage}.h5ad")
        assert part.X is None and not part.layers, stage  # only what the stage changes
    # a changed annotation setting resumes from the cluster checkpoint (merge + 2 lean ones)
    runner = Runner(_cfg(sim, lean_out, min_confidence=0.3))
    resumed = runner.run()
    assert runner.skipped == ["ingest", "qc", "merge", "integrate", "cluster"]
    full_out = tmp_path / "full"
    fresh = Runner(_cfg(sim, full_out, min_confidence=0.3), keep_checkpoints=True).run()
    assert resumed.obs_names.equals(fresh.obs_names)
    pd.testing.assert_frame_equal(resumed.obs, fresh.obs)
    pd.testing.assert_frame_equal(resumed.var, fresh.var)
    assert set(resumed.obsm) == set(fresh.obsm)
    for key in fresh.obsm:
        np.testing.assert_array_equal(np.asarray(resumed.obsm[key]), np.asarray(fresh.obsm[key]))
    assert (resumed.X != fresh.X).nnz == 0
    assert (resumed.layers["counts"] != fresh.layers["counts"]).nnz == 0
    # whole checkpoints of every merged stage take more room than the lean chain
    assert ad.read_h5ad(full_out / ".bonemet" / "cluster.h5ad").X is not None
    assert _size(ck) < _size(full_out / ".bonemet")
