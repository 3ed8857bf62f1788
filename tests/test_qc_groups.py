"""QC within pre-QC clusters (composition-neutral removal), floors scaled to the genes
measured, the >30 % removal warning, the per-group table and DecontX's ambient layer."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import bonemet as bm
from bonemet import ConfigError
from bonemet.pp._qc import QC_REASONS, hb_genes, preqc_groups

FAST = {"doublets": False, "ambient": "none"}


def _two_conditions(make_counts) -> ad.AnnData:
    """A high-mito population (type1, ~9 % mito) that is 55 % of one sample and 10 % of the
    other; type0 has ~3 % mito. The classic case where one MAD per sample removes the
    population in the sample where it is rare."""
    base = make_counts(1200, 400, n_types=2, mean_counts=3000, seed=21)
    x = base.X.toarray()
    t1 = (base.obs["true_type"] == "type1").to_numpy()
    x[t1, :13] *= 3.2
    base.X = sp.csr_matrix(x.astype(np.float32))
    i0, i1 = np.flatnonzero(~t1), np.flatnonzero(t1)
    parts = []
    for name, n0, n1, lo0, lo1 in (("met", 180, 220, 0, 0), ("ctrl", 360, 40, 180, 220)):
        idx = np.concatenate([i0[lo0 : lo0 + n0], i1[lo1 : lo1 + n1]])
        p = base[idx].copy()
        p.obs_names = [f"{name}_{b}" for b in p.obs_names]
        p.obs["sample"] = name
        parts.append(p)
    a = ad.concat(parts)
    a.obs["sample"] = pd.Categorical(a.obs["sample"])
    a.uns["bonemet"] = {"species": "human", "is_counts": True, "warnings": []}
    return a


def _removal(a: ad.AnnData, out: ad.AnnData) -> pd.DataFrame:
    removed = ~a.obs_names.isin(out.obs_names)
    df = pd.DataFrame({"s": a.obs["sample"].astype(str), "t": a.obs["true_type"].astype(str)})
    return df.assign(r=removed).groupby(["t", "s"], observed=True)["r"].mean().unstack("s")


def test_cluster_scope_removes_a_high_mito_population_evenly(make_counts):
    a = _two_conditions(make_counts)
    rates = {
        scope: _removal(a, bm.pp.qc(a, mad_scope=scope, copy=True, **FAST))
        for scope in ("sample", "cluster")
    }
    # one MAD per sample: type1 is judged against the low-mito majority where it is rare
    diff_sample = (rates["sample"]["met"] - rates["sample"]["ctrl"]).abs()
    assert diff_sample["type1"] > 0.20
    diff = (rates["cluster"]["met"] - rates["cluster"]["ctrl"]).abs()
    assert (diff <= 0.05).all(), rates["cluster"]
    assert rates["cluster"].loc["type1"].max() < 0.10


def test_cluster_scope_keeps_removing_damaged_cells(make_counts):
    a = _two_conditions(make_counts)
    x = a.X.toarray()
    rng = np.random.default_rng(3)
    bad = rng.choice(a.n_obs, 40, replace=False)  # damaged: tiny library or mostly mito
    x[bad[:20]] = rng.binomial(x[bad[:20]].astype(int), 0.01)
    x[bad[20:], :13] = x[bad[20:], :13] * 30 + 40
    a.X = sp.csr_matrix(x.astype(np.float32))
    out = bm.pp.qc(a, copy=True, **FAST)
    assert not set(a.obs_names[bad]) & set(out.obs_names)
    rec = out.uns["bonemet"]["qc"]["met"]
    assert rec["mad_scope"] == "cluster" and rec["n_groups"] >= 2
    assert rec["threshold_max_pct_mito"] <= 20.0  # the absolute cap holds in every group


def test_generated_data_removal_rates_equal_between_conditions():
    a = bm.datasets.simulate_bone_metastasis(4000, 4, seed=1)
    a.uns["bonemet"] = {"species": "mouse", "is_counts": True, "warnings": []}
    out = bm.pp.qc(a, seed=0, copy=True, **FAST)
    obs = a.obs
    ok = ~obs["true_doublet"].astype(bool) & ~obs["true_low_quality"].astype(bool)
    df = pd.DataFrame(
        {
            "pop": obs["true_population"].astype(str),
            "cond": obs["condition"].astype(str),
            "removed": ~obs.index.isin(out.obs_names),
        }
    )[ok.to_numpy()]
    g = df.groupby(["pop", "cond"], observed=True)["removed"].agg(["size", "mean"])
    rate, n = g["mean"].unstack("cond"), g["size"].unstack("cond")
    big = n.min(axis=1) >= 30
    assert big.sum() >= 8
    diff = (rate["bone_met"] - rate["control"]).abs()[big]
    # at most 5 percentage points; for populations under 100 cells per condition the
    # difference of two removal rates has a sampling error of a few points itself, so they
    # may exceed it by up to 1.96 standard errors (of the pooled rate)
    pooled = ((rate * n).sum(axis=1) / n.sum(axis=1))[big]
    se = np.sqrt(pooled * (1 - pooled) * (1 / n["bone_met"] + 1 / n["control"]))[big]
    allowed = 0.05 + np.where(n.min(axis=1)[big] >= 100, 0.0, 1.96 * se)
    assert (diff <= allowed).all(), pd.DataFrame({"diff": diff, "allowed": allowed})
    assert (n.min(axis=1)[big] >= 100).sum() >= 4  # the strict 5 points bind somewhere
    # the planted damaged cells are still removed
    assert (~obs.index.isin(out.obs_names))[obs["true_low_quality"].to_numpy()].mean() > 0.9


def test_preqc_groups_find_the_types(make_counts):
    a = make_counts(400, 400, n_types=3, seed=5)
    g = preqc_groups(a.X, seed=0)
    tab = pd.crosstab(g, a.obs["true_type"].astype(str))
    assert tab.shape[0] >= 3
    assert (tab.max(axis=1) / tab.sum(axis=1)).min() > 0.9  # each group is one type
    assert np.array_equal(g, preqc_groups(a.X, seed=0))  # deterministic
    assert preqc_groups(a.X[:30], seed=0).max() == 0  # tiny samples: one group


def test_floors_scale_with_genes_measured_and_warn(make_counts):
    a = make_counts(300, 240, mean_counts=900, seed=7)  # a 240-gene panel
    a.obs_names = [f"panel_{b}" for b in a.obs_names]
    a.obs["sample"] = pd.Categorical(["panel"] * a.n_obs)
    a.uns["bonemet"] = {"species": "human", "is_counts": True, "warnings": []}
    assert np.median(np.diff(a.X.tocsr().indptr)) < 160  # about the floor's number of genes
    fixed = bm.pp.qc(a, min_genes=160, floor_reference_genes=0, copy=True, **FAST)
    assert fixed.n_obs < 0.7 * a.n_obs
    msg = [w for w in fixed.uns["bonemet"]["warnings"] if "QC removed" in w]
    assert len(msg) == 1 and "sample panel" in msg[0] and "main reason low_" in msg[0]
    scaled = bm.pp.qc(a, min_genes=160, copy=True, **FAST)
    rec = scaled.uns["bonemet"]["qc"]["panel"]
    assert rec["floor_min_genes"] == pytest.approx(160 * 240 / 5000)
    assert rec["floor_scale"] == pytest.approx(240 / 5000)
    assert scaled.n_obs > 0.9 * a.n_obs
    assert not [w for w in scaled.uns["bonemet"]["warnings"] if "QC removed" in w]


def test_group_table_adds_up_and_is_registered(make_counts):
    a = _two_conditions(make_counts)
    bm.pp.qc(a, **FAST)
    t = bm.pp.qc_group_table(a)
    summary = bm.pp.qc_table(a)
    for s, sub in t.groupby("sample"):
        assert sub["kept"].sum() == summary.loc[s, "n_after"]
        assert sub["n_before"].sum() == summary.loc[s, "n_before"]
        for r in QC_REASONS:
            assert sub[f"removed_{r}"].sum() == summary.loc[s, f"removed_{r}"]
    assert (t["kept"] + t["removed"] == t["n_before"]).all()
    assert set(a.obs["qc_group"].astype(str)) <= set(t["group"])
    tables = bm.report.build_tables(a, None, names=["qc_removed_by_group"])
    assert list(tables) == ["qc_removed_by_group"]


def test_decontx_layer_contract_through_merge_and_normalize():
    sim = bm.datasets.simulate_bone_metastasis(800, 2, seed=2)
    samples = {}
    for s in ("bm01", "bm02"):
        p = sim[sim.obs["sample"] == s].copy()
        p.uns["bonemet"] = {"species": "mouse", "is_counts": True, "warnings": []}
        raw = p.X.copy()
        bm.pp.qc(p, doublets=False, ambient="decontx", seed=0)
        kept = sim.obs_names[sim.obs["sample"] == s].get_indexer(p.obs_names)
        assert (p.X != raw[kept]).nnz == 0  # X stays the raw counts
        d = p.layers["decontaminated"]
        assert sp.issparse(d) and d.shape == p.shape and d.dtype == np.float32
        assert d.nnz <= p.X.nnz and (d.data >= 0).all()
        assert (d - p.X).max() <= 1e-4  # DecontX only removes counts
        c = p.obs["ambient_contamination"].to_numpy()
        assert np.isfinite(c).all() and ((c >= 0) & (c <= 1)).all()
        assert p.uns["bonemet"]["qc"][s]["ambient"].startswith("decontx")
        samples[s] = p
    merged = bm.pp.merge(samples)
    assert "decontaminated" in merged.layers and sp.issparse(merged.layers["decontaminated"])
    bm.pp.normalize(merged, n_top_genes=200, min_cells=3, flavor="seurat")
    assert merged.layers["decontaminated"].shape == merged.shape
    assert check_raw(merged)
    hb = hb_genes(merged.var_names, "mouse")
    o = merged.obs
    non_ery = (
        (o["true_cell_type"].astype(str) != "Erythroid")
        & ~o["true_doublet"].astype(bool)
        & ~o["true_erythroid_mimicry"].astype(bool)
    ).to_numpy()

    def hb_share(m):
        m = sp.csr_matrix(m)[non_ery]
        return m[:, hb].sum() / m.sum()

    # DecontX removes part of the ambient haemoglobin (0.0109 -> 0.0078 measured; its ambient
    # model is a mixture of the clusters, the simulated soup is richer in Hb than any such
    # mixture: see benchmarks/results/qc_ambient.json)
    assert hb_share(merged.layers["decontaminated"]) < 0.85 * hb_share(merged.layers["counts"])


def check_raw(a: ad.AnnData) -> bool:
    """``layers["counts"]`` holds integers and the decontaminated layer never exceeds it."""
    c = a.layers["counts"]
    return bool(np.all(np.mod(c.data, 1) == 0)) and (a.layers["decontaminated"] - c).max() <= 1e-4


def test_config_keys_validated_before_work():
    cfg = bm.load_config({"qc": {"ambient": "none", "mad_scope": "sample"}})
    assert cfg.qc.ambient == "none" and cfg.qc.mad_scope == "sample"
    assert bm.load_config({}).qc.ambient == "decontx"
    with pytest.raises(ConfigError, match="ambient"):
        bm.load_config({"qc": {"ambient": "soupx"}})
    with pytest.raises(ConfigError, match="mito_floor"):
        bm.load_config({"qc": {"mito_floor": 30, "max_pct_mito": 20}})
    with pytest.raises(bm.InputError, match="mad_scope"):
        bm.pp.qc(ad.AnnData(sp.csr_matrix((3, 3), dtype=np.float32)), mad_scope="donor")
