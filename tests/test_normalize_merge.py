"""Merging samples and normalisation + HVG (bonemet.pp.merge / bonemet.pp.normalize)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import bonemet as bm
from bonemet import InputError


def _sample(make_counts, name: str, *, n_cells=80, n_genes=300, seed=0, species="human", drop=()):
    a = make_counts(n_cells, n_genes, seed=seed, species=species)
    if drop:
        a = a[:, [g for g in a.var_names if g not in drop]].copy()
    a.obs_names = [f"{name}_{b}" for b in a.obs_names]
    a.obs["sample"] = pd.Categorical([name] * a.n_obs)
    a.obs["batch"] = pd.Categorical([name] * a.n_obs)
    a.var["gene_ids"] = [f"ID_{g}" for g in a.var_names]
    a.uns["bonemet"] = {
        "species": species,
        "is_counts": True,
        "inputs": {name: {"path": f"/data/{name}", "format": "h5ad", "sha256": "0" * 64}},
        "qc": {name: {"n_before": a.n_obs, "n_after": a.n_obs}},
        "warnings": [f"note about {name}"],
    }
    return a


def test_merge_outer_join_and_uns(make_counts):
    a = _sample(make_counts, "A", seed=1, drop=("GENE5",))
    b = _sample(make_counts, "B", seed=2, drop=("GENE7",))
    m = bm.pp.merge({"A": a, "B": b})
    assert m.n_obs == a.n_obs + b.n_obs
    assert set(m.var_names) == set(a.var_names) | set(b.var_names)
    assert isinstance(m.X, sp.csr_matrix)
    # GENE5 is absent from A: zero there, B's counts kept
    g5 = m[:, "GENE5"].X.toarray().ravel()
    assert (g5[m.obs["sample"] == "A"] == 0).all()
    np.testing.assert_array_equal(
        g5[(m.obs["sample"] == "B").to_numpy()], b[:, "GENE5"].X.toarray().ravel()
    )
    assert m.var.loc["GENE7", "gene_ids"] == "ID_GENE7"
    assert list(m.obs["sample"].cat.categories) == ["A", "B"]
    assert isinstance(m.obs["batch"].dtype, pd.CategoricalDtype)
    u = m.uns["bonemet"]
    assert set(u["inputs"]) == {"A", "B"} and set(u["qc"]) == {"A", "B"}
    assert u["warnings"] == ["note about A", "note about B"]
    assert u["species"] == "human" and u["is_counts"] is True


def test_merge_refuses_bad_inputs(make_counts):
    a = _sample(make_counts, "A", seed=1)
    m = _sample(make_counts, "M", seed=2, species="mouse")
    with pytest.raises(InputError, match="different species"):
        bm.pp.merge([a, m])
    b = _sample(make_counts, "B", seed=3)
    b.obs_names = a.obs_names
    with pytest.raises(InputError, match="not unique across samples"):
        bm.pp.merge([a, b])
    with pytest.raises(InputError, match="nothing to merge"):
        bm.pp.merge([])


def test_merge_skips_empty_and_tracks_is_counts(make_counts):
    a = _sample(make_counts, "A", seed=1)
    e = _sample(make_counts, "E", seed=2)[:0].copy()
    e.uns["bonemet"]["qc"]["E"] = {"n_before": 80, "n_after": 0, "dropped": True}
    n = _sample(make_counts, "N", seed=3)
    n.uns["bonemet"]["is_counts"] = False
    m = bm.pp.merge([a, e, n])
    assert set(m.obs["sample"]) == {"A", "N"}
    assert m.uns["bonemet"]["qc"]["E"]["dropped"]
    assert m.uns["bonemet"]["is_counts"] is False


def test_normalize_counts_path(make_counts):
    a = _sample(make_counts, "A", n_cells=150, seed=1)
    b = _sample(make_counts, "B", n_cells=150, seed=2)
    m = bm.pp.merge([a, b])
    # a gene seen in only 2 cells is removed by min_cells=3
    x = m.X.tolil()
    x[:, 50] = 0
    x[:2, 50] = 1
    m.X = x.tocsr()
    rare = m.var_names[50]
    raw = m.X.copy()
    out = bm.pp.normalize(m, target_sum=1e4, n_top_genes=100, batch_key="sample", copy=True)
    assert "counts" not in m.layers  # copy=True
    assert rare not in out.var_names and out.n_vars == m.n_vars - 1
    counts = out.layers["counts"]
    assert isinstance(counts, sp.csr_matrix) and isinstance(out.X, sp.csr_matrix)
    keep = m.var_names != rare
    assert (counts != raw[:, keep]).nnz == 0
    np.testing.assert_allclose(np.expm1(out.X.toarray()).sum(1), 1e4, rtol=1e-3)
    assert out.var["highly_variable"].dtype == bool and out.var["highly_variable"].sum() == 100
    p = out.uns["bonemet"]["parameters"]["normalize"]
    assert p["hvg_flavor_used"] == "seurat_v3" and p["hvg_batch_key_used"] == "sample"
    assert "highly_variable_nbatches" in out.var
    assert p["n_genes_removed_min_cells"] == 1
    # re-running starts again from the counts layer, not from log data
    again = bm.pp.normalize(out, n_top_genes=100, copy=True)
    np.testing.assert_allclose(again.X.toarray(), out.X.toarray(), rtol=1e-5)


def test_normalize_single_batch_and_tiny_batch(make_counts):
    a = _sample(make_counts, "A", n_cells=120, seed=1)
    one = bm.pp.normalize(bm.pp.merge([a]), n_top_genes=50, copy=True)
    assert one.uns["bonemet"]["parameters"]["normalize"]["hvg_batch_key_used"] == ""
    # a one-cell batch would crash seurat_v3's loess (segfault): HVG falls back without batches
    t = _sample(make_counts, "T", n_cells=1, seed=2)
    m = bm.pp.merge([_sample(make_counts, "A", n_cells=120, seed=1), t])
    bm.pp.normalize(m, n_top_genes=50, min_cells=1)
    assert m.var["highly_variable"].sum() == 50
    assert "counts" in m.layers
    p = m.uns["bonemet"]["parameters"]["normalize"]
    assert p["hvg_flavor_used"] == "seurat_v3" and p["hvg_batch_key_used"] == ""
    assert any("batch 'T' has 1 cells" in w for w in m.uns["bonemet"]["warnings"])
    # a single cell in all: no loess at all, seurat on X
    solo = bm.pp.merge([_sample(make_counts, "S", n_cells=1, seed=3)])
    bm.pp.normalize(solo, n_top_genes=10, min_cells=1)
    assert solo.uns["bonemet"]["parameters"]["normalize"]["hvg_flavor_used"] == "seurat"


def test_normalize_non_counts_path(make_counts):
    a = _sample(make_counts, "A", n_cells=100, seed=1)
    x = a.X.toarray()
    a.X = sp.csr_matrix(np.log1p(x / x.sum(1, keepdims=True) * 1e4).astype(np.float32))
    a.uns["bonemet"]["is_counts"] = False
    m = bm.pp.merge([a])
    before = m.copy()
    bm.pp.normalize(m, n_top_genes=60)
    assert "counts" not in m.layers
    assert abs(m.X - before[:, m.var_names].X).max() < 1e-6
    p = m.uns["bonemet"]["parameters"]["normalize"]
    assert p["hvg_flavor_used"] == "seurat" and p["is_counts"] is False
    assert any("not raw counts" in w for w in m.uns["bonemet"]["warnings"])
    assert m.var["highly_variable"].sum() == 60


def test_ingest_qc_merge_normalize_real(shared_data, tmp_path):
    samples = bm.io.ingest(
        shared_data / "kang2018_pbmc_ifnb.h5ad", sample_key="sample", label_key="cell_type"
    )
    for a in samples.values():
        bm.pp.qc(a, min_counts=100, min_genes=50, doublets=False)
    m = bm.pp.merge(samples)
    bm.pp.normalize(m, n_top_genes=500)
    assert m.obs["sample"].nunique() == 4 and "reference_label" in m.obs
    assert m.var["highly_variable"].sum() == 500
    assert m.uns["bonemet"]["parameters"]["normalize"]["hvg_batch_key_used"] == "sample"
    bm._utils.write_h5ad(m, tmp_path / "m.h5ad")
    back = ad.read_h5ad(tmp_path / "m.h5ad")
    assert set(back.uns["bonemet"]["qc"]) == set(samples)
    assert back.layers["counts"].sum() == m.layers["counts"].sum()
