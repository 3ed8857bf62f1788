"""Per-sample QC: metrics, MAD thresholds + floors, reasons, doublets, Hb flags, empty samples."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import bonemet as bm
from bonemet import StageError
from bonemet.pp._qc import QC_REASONS, hb_genes, mito_genes

NO_DOUBLETS = {"doublets": False}


def _with_sample(a: ad.AnnData, name: str) -> ad.AnnData:
    a.obs_names = [f"{name}_{b}" for b in a.obs_names]
    a.obs["sample"] = pd.Categorical([name] * a.n_obs)
    a.uns["bonemet"] = {"species": "human", "is_counts": True, "warnings": []}
    return a


def _planted(make_counts, seed: int = 0) -> tuple[ad.AnnData, dict[str, np.ndarray]]:
    """300 good cells plus planted failures: 10 tiny libraries, 8 huge ones, 10 high-mito."""
    a = _with_sample(make_counts(328, 400, seed=seed), "S1")
    x = a.X.toarray()
    rng = np.random.default_rng(seed)
    low, high, mito = np.arange(0, 10), np.arange(10, 18), np.arange(18, 28)
    x[low] = rng.binomial(x[low].astype(int), 0.01)
    x[high] = x[high] * 40
    x[mito, :13] = x[mito, :13] * 25 + 50
    a.X = sp.csr_matrix(x.astype(np.float32))
    return a, {"low_counts": low, "high_counts": high, "high_mito": mito}


def test_qc_removes_planted_cells_and_counts_reasons(make_counts):
    a, planted = _planted(make_counts)
    names = {k: set(a.obs_names[v]) for k, v in planted.items()}
    raw_before = a.X.copy()
    out = bm.pp.qc(a, min_counts=200, min_genes=50, max_pct_mito=20, copy=True, **NO_DOUBLETS)
    assert a.n_obs == 328  # copy=True leaves the input alone
    assert (a.X != raw_before).nnz == 0
    kept = set(out.obs_names)
    for cells in names.values():
        assert not cells & kept
    rec = out.uns["bonemet"]["qc"]["S1"]
    assert rec["n_before"] == 328
    assert rec["removed_low_counts"] >= 10
    # huge libraries also carry more genes; each cell counts under its first reason only
    assert rec["removed_high_counts"] + rec["removed_high_genes"] >= 8
    assert rec["removed_high_mito"] >= 10
    assert (
        rec["n_after"]
        == out.n_obs
        == rec["n_before"] - sum(rec[f"removed_{r}"] for r in QC_REASONS)
    )
    assert rec["n_after"] >= 0.9 * 300  # few good cells are lost
    assert rec["threshold_min_counts"] >= 200 and rec["threshold_max_pct_mito"] <= 20
    for col in (
        "qc_total_counts",
        "qc_n_genes",
        "qc_pct_mito",
        "qc_pct_hb",
        "doublet_score",
        "predicted_doublet",
    ):
        assert col in out.obs
    assert out.var["mito"].sum() == 13 and out.var["hb"].sum() == 3
    assert rec["doublets"] == "off"
    assert (out.obs["qc_pct_mito"] <= rec["threshold_max_pct_mito"]).all()


def test_qc_in_place_and_table(make_counts):
    a, _ = _planted(make_counts, seed=1)
    assert bm.pp.qc(a, min_counts=200, min_genes=50, **NO_DOUBLETS) is None
    t = bm.pp.qc_table(a)
    assert list(t.index) == ["S1"]
    assert list(t.columns[:10]) == [
        "n_before",
        *[f"removed_{r}" for r in QC_REASONS],
        "n_after",
        "median_pct_hb",
        "high_ambient_hb",
    ]
    assert t.loc["S1", "n_after"] == a.n_obs
    # records survive an h5ad round trip
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        bm._utils.write_h5ad(a, Path(d) / "q.h5ad")
        b = ad.read_h5ad(Path(d) / "q.h5ad")
    pd.testing.assert_frame_equal(
        bm.pp.qc_table(b)[t.columns[:10]], t[t.columns[:10]], check_dtype=False
    )


def test_fixed_floor_beats_mad(make_counts):
    a = _with_sample(make_counts(150, 300, mean_counts=800, seed=4), "S2")
    # 300 genes: floor_reference_genes=0 keeps the floors fixed (scaling has its own test)
    bm.pp.qc(a, min_counts=1000, min_genes=10, floor_reference_genes=0, **NO_DOUBLETS)
    rec = a.uns["bonemet"]["qc"]["S2"]
    assert rec["threshold_min_counts"] == 1000
    assert rec["removed_low_counts"] > 0
    assert (a.obs["qc_total_counts"] >= 1000).all()


def test_empty_sample_error_names_sample_and_thresholds(make_counts):
    a = _with_sample(make_counts(60, 200, mean_counts=300, seed=5), "tiny")
    fixed = {"floor_reference_genes": 0, **NO_DOUBLETS}  # 200 genes: keep the floor fixed
    with pytest.raises(StageError) as e:
        bm.pp.qc(a, min_counts=5000, min_genes=10, copy=True, **fixed)
    msg = str(e.value)
    assert "\n" not in msg
    assert "'tiny'" in msg and "min_counts 5000" in msg and "drop_empty_samples" in msg
    out = bm.pp.qc(a, min_counts=5000, min_genes=10, drop_empty=True, copy=True, **fixed)
    assert out.n_obs == 0
    rec = out.uns["bonemet"]["qc"]["tiny"]
    assert rec["dropped"] is True and rec["n_after"] == 0 and rec["removed_low_counts"] == 60
    assert any("tiny" in w and "dropped" in w for w in out.uns["bonemet"]["warnings"])


def test_scrublet_per_sample_and_tiny_sample_skipped(make_counts):
    a = _with_sample(make_counts(300, 400, seed=6, n_types=4), "D")
    x = a.X.toarray()
    types = a.obs["true_type"].astype(str).to_numpy()
    i0, i1 = np.flatnonzero(types == "type0")[:15], np.flatnonzero(types == "type2")[:15]
    x[i0] = x[i0] + x[i1]  # 15 heterotypic doublets
    a.X = sp.csr_matrix(x)
    bm.pp.qc(a, min_counts=100, min_genes=20, nmads_counts=np.inf, nmads_genes=np.inf,
             doublet_rate=0.05, remove_doublets=False, seed=0)  # fmt: skip
    rec = a.uns["bonemet"]["qc"]["D"]
    assert rec["doublets"].startswith("scrublet")
    score = a.obs["doublet_score"].to_numpy()
    assert np.isfinite(score).all()
    planted = a.obs_names.isin([f"D_CELL{i:05d}-1" for i in i0])
    assert score[planted].mean() > score[~planted].mean()
    assert rec["removed_doublet"] == 0  # remove_doublets=False
    small = _with_sample(make_counts(40, 200, seed=7), "small")
    bm.pp.qc(small, min_counts=10, min_genes=10)
    rec = small.uns["bonemet"]["qc"]["small"]
    assert rec["doublets"].startswith("skipped: 40 cells")
    assert small.obs["doublet_score"].isna().all() and not small.obs["predicted_doublet"].any()


def test_multi_sample_thresholds_per_sample(make_counts):
    a = _with_sample(make_counts(120, 300, mean_counts=1000, seed=8), "A")
    b = _with_sample(make_counts(120, 300, mean_counts=8000, seed=9), "B")
    m = ad.concat([a, b])
    m.uns["bonemet"] = {"species": "human", "is_counts": True}
    bm.pp.qc(m, min_counts=100, min_genes=20, **NO_DOUBLETS)
    qc = m.uns["bonemet"]["qc"]
    assert set(qc) == {"A", "B"}
    assert qc["B"]["threshold_min_counts"] > qc["A"]["threshold_min_counts"]


def test_hb_and_mito_genes_species_aware():
    human = pd.Index(
        ["HBB", "HBA1", "HBA2", "HBD", "HBP1", "HBEGF", "HBS1L", "HBBP1", "MT-CO1", "MTOR"]
    )
    assert list(human[hb_genes(human, "human")]) == ["HBB", "HBA1", "HBA2", "HBD"]
    assert list(human[mito_genes(human, "human")]) == ["MT-CO1"]
    mouse = pd.Index(["Hbb-bs", "Hba-a1", "Hbp1", "Hbegf", "mt-Co1", "Mtor", "HBB-BT", "MT-ND1"])
    assert list(mouse[hb_genes(mouse, "mouse")]) == ["Hbb-bs", "Hba-a1", "HBB-BT"]
    assert list(mouse[mito_genes(mouse, "mouse")]) == ["mt-Co1", "MT-ND1"]


def test_high_ambient_hb_flag(make_counts):
    a = _with_sample(make_counts(120, 300, seed=10), "hb")
    x = a.X.toarray()
    x[:, 13:16] += 40  # HBB/HBA1/HBA2 in every droplet: ambient haemoglobin
    a.X = sp.csr_matrix(x)
    bm.pp.qc(a, min_counts=100, min_genes=20, high_hb_fraction=0.01, **NO_DOUBLETS)
    t = bm.pp.qc_table(a)
    assert t.loc["hb", "median_pct_hb"] > 1
    assert bool(t.loc["hb", "high_ambient_hb"])
    assert (a.obs["qc_pct_hb"] > 0).all()


def test_qc_non_counts_skips_count_filters(make_counts):
    a = _with_sample(make_counts(80, 300, seed=11), "log")
    x = a.X.toarray()
    a.X = sp.csr_matrix(np.log1p(x / x.sum(1, keepdims=True) * 1e4).astype(np.float32))
    a.uns["bonemet"]["is_counts"] = False
    bm.pp.qc(a, min_counts=500, min_genes=20)
    rec = a.uns["bonemet"]["qc"]["log"]
    assert rec["removed_low_counts"] == 0 and rec["removed_high_mito"] == 0
    assert "not raw counts" in rec["note"] and rec["doublets"].startswith("skipped")


def test_qc_real_pbmc_sample(shared_data):
    out = bm.io.ingest(shared_data / "kang2018_pbmc_ifnb.h5ad", sample_key="sample")
    a = out["ctrl107"]
    bm.pp.qc(a, min_counts=100, min_genes=50, doublets=False)
    rec = a.uns["bonemet"]["qc"]["ctrl107"]
    assert rec["n_before"] == 296 and 250 <= rec["n_after"] <= 296
    assert rec["n_hb_genes"] == 1  # HBB, not HBP1
