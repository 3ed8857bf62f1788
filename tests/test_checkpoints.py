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


def test_resume_from_lean_checkpoints_equals_a_fresh_run(sim, tmp_path, capsys):
    lean_out = tmp_path / "lean"
    Runner(_cfg(sim, lean_out)).run()
    ck = lean_out / ".bonemet"
    # the gather stage's checkpoint: its annotations and its matrices' fingerprint (resume
    # runs merge again on the QC checkpoint and checks it)
    merged = ad.read_h5ad(ck / "merge.h5ad")
    assert merged.X is None and not merged.layers and "leiden" not in merged.obs
    assert len(merged.uns["bonemet_checkpoint"]["matrices"]) == 40
    assert not (ck / "ingest").exists() and (ck / "qc" / "samples.json").is_file()
    for stage in ("integrate", "cluster", "annotate", "score"):
        part = ad.read_h5ad(ck / f"{stage}.h5ad")
        assert part.X is None and not part.layers, stage  # only what the stage changes
    # deltas: the neighbour graphs are stored once, by the stage that made them
    assert set(ad.read_h5ad(ck / "cluster.h5ad").obsp) == {"connectivities", "distances"}
    assert not ad.read_h5ad(ck / "annotate.h5ad").obsp
    # a lean checkpoint given to a per-stage command: a clear error, nothing written
    from bonemet.cli import main

    assert main(["report", "--input", str(ck / "score.h5ad"), "--output", str(tmp_path / "r"),
                 "-q"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "is a lean checkpoint of `bonemet run`" in err and "bonemet.h5ad" in err
    assert not (tmp_path / "r").exists()
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
    assert (resumed.X != fresh.X).nnz == 0 and resumed.X.dtype == fresh.X.dtype
    assert (resumed.layers["counts"] != fresh.layers["counts"]).nnz == 0
    assert list(resumed.uns) == list(fresh.uns) and "bonemet_checkpoint" not in resumed.uns
    # whole checkpoints of every merged stage take more room than the lean chain
    assert ad.read_h5ad(full_out / ".bonemet" / "cluster.h5ad").X is not None
    assert (full_out / ".bonemet" / "ingest" / "samples.json").is_file()
    assert _size(ck) < _size(full_out / ".bonemet")
    assert _size(ck) <= 1.5 * (lean_out / "bonemet.h5ad").stat().st_size
