"""Cell names are ``<sample>_<barcode>`` exactly once, however often a file is read."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

import bonemet as bm
from bonemet.io._read import prefix_cell_names


def _h5ad(path: Path, names: list[str], samples: list[str] | None = None) -> Path:
    rng = np.random.default_rng(0)
    x = sp.csr_matrix(rng.poisson(2.0, size=(len(names), 30)).astype(np.float32))
    obs = pd.DataFrame(index=names)
    if samples is not None:
        obs["sample"] = samples
    a = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"Gene{i}" for i in range(30)]))
    a.write_h5ad(path)
    return path


def test_prefix_is_idempotent() -> None:
    once = prefix_cell_names(["AAAC-1", "bm01_AAAG-1"], "bm01")
    assert list(once) == ["bm01_AAAC-1", "bm01_AAAG-1"]
    assert list(prefix_cell_names(once, "bm01")) == list(once)
    # another sample's prefix is not this one's
    assert list(prefix_cell_names(["bm010_A"], "bm01")) == ["bm01_bm010_A"]


def test_ingesting_a_bonemet_file_does_not_prefix_twice(tmp_path: Path) -> None:
    p = _h5ad(tmp_path / "bm01.h5ad", ["bm01_AAAC-1", "bm01_AAAG-1", "bm01_AATC-1"])
    (a,) = bm.io.ingest(p, species="mouse").values()
    assert list(a.obs_names) == ["bm01_AAAC-1", "bm01_AAAG-1", "bm01_AATC-1"]
    again = tmp_path / "again.h5ad"
    a.write_h5ad(again)
    (b,) = bm.io.ingest(again, species="mouse").values()
    assert not b.obs_names.str.startswith("bm01_bm01_").any()


def test_split_by_sample_key_prefixes_once(tmp_path: Path) -> None:
    names = ["A_c1", "A_c2", "c3", "B_c4"]
    p = _h5ad(tmp_path / "two.h5ad", names, samples=["A", "A", "B", "B"])
    out = bm.io.ingest(p, sample_key="sample", species="mouse")
    assert list(out["A"].obs_names) == ["A_c1", "A_c2"]
    assert list(out["B"].obs_names) == ["B_c3", "B_c4"]
