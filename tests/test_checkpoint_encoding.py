"""The lean checkpoint encoding: deltas of what changed, and X derived from the counts."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from bonemet import _checkpoint as ck


def _adata(seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    counts = sp.random(60, 40, density=0.3, format="csr", random_state=seed, dtype=np.float32)
    counts.data = np.ceil(counts.data * 20)
    a = ad.AnnData(
        X=counts.copy(),
        obs=pd.DataFrame(
            {"sample": pd.Categorical(["a", "b"] * 30)}, index=[f"c{i}" for i in range(60)]
        ),
    )
    a.obsm["X_pca"] = rng.normal(size=(60, 5)).astype(np.float32)
    a.obsp["distances"] = sp.random(60, 60, density=0.1, format="csr", random_state=seed)
    a.uns["bonemet"] = {"stage": "merge", "table": pd.DataFrame({"x": [1.0, 2.0]})}
    return a


def _write_read(a: ad.AnnData, tmp_path, name: str) -> ad.AnnData:
    a.write_h5ad(tmp_path / f"{name}.h5ad")
    return ad.read_h5ad(tmp_path / f"{name}.h5ad")


def test_delta_holds_only_changed_keys_and_rebuilds_the_object(tmp_path) -> None:
    a = _adata()
    before = ck.prints(a)
    base = _write_read(a.copy(), tmp_path, "base")
    a.obsm["X_pca"][0, 0] += 1.0  # changed in place
    a.obsm["X_umap"] = np.zeros((60, 2), dtype=np.float32)  # added
    del a.obsp["distances"]  # removed
    a.uns["bonemet"]["stage"] = "cluster"  # a nested change
    a.uns["new"] = np.arange(3)
    a.obs["leiden"] = pd.Categorical(["0", "1", "2"] * 20)
    lean, after = ck.delta(a, before)
    assert set(lean.obsm) == {"X_pca", "X_umap"} and not lean.obsp
    assert set(lean.uns) == {"bonemet", "new", ck.MARK}
    assert lean.X is None and not ck.is_whole(lean)
    unchanged, _ = ck.delta(a, after)  # nothing changed since: no key is stored again
    assert not unchanged.obsm and set(unchanged.uns) == {ck.MARK}
    ck.apply(base, _write_read(lean, tmp_path, "lean"))
    assert list(base.obsm) == list(a.obsm) and not base.obsp
    np.testing.assert_array_equal(base.obsm["X_pca"], a.obsm["X_pca"])
    pd.testing.assert_frame_equal(base.obs, a.obs)
    assert base.uns["bonemet"]["stage"] == "cluster" and list(base.uns) == ["bonemet", "new"]
    assert ck.fingerprint(base.uns["bonemet"]["table"]) == ck.fingerprint(a.uns["bonemet"]["table"])


def test_derived_x_is_dropped_only_when_exact(tmp_path) -> None:
    import scanpy as sc

    a = _adata()
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    a.uns["bonemet"]["parameters"] = {"normalize": {"is_counts": True, "target_sum": 1e4}}
    stored = ck.whole(a)
    assert stored.X is None and ck.is_whole(stored)
    back = ck.restore(_write_read(stored, tmp_path, "whole"))
    assert ck.MARK not in back.uns and back.X.dtype == a.X.dtype
    assert (back.X != a.X).nnz == 0
    a.X.data[0] += 1.0  # no longer what normalize makes of the counts
    assert ck.whole(a) is a
    a.uns["bonemet"]["parameters"]["normalize"]["is_counts"] = False
    assert ck.whole(a) is a


def test_gather_stub_checks_the_rerun_matrices() -> None:
    import pytest

    a = _adata()
    a.layers["counts"] = a.X.copy()
    part, _ = ck.stub(a)
    assert part.X is None and not part.layers and ck.is_stub(part)
    again = _adata()
    again.layers["counts"] = again.X.copy()
    ck.check_rerun(again, part)  # the same matrices: fine
    again.layers["counts"].data[0] += 1.0
    with pytest.raises(ValueError, match="did not reproduce"):
        ck.check_rerun(again, part)
