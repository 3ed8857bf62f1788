"""bm.tl.score and the read-outs built on it, on small hand-built data with planted truth."""

from __future__ import annotations

import socket

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

import bonemet as bm
from bonemet._errors import InputError
from bonemet._signatures import load_gene_sets
from bonemet.tl._aucell import _AUCellIndex

N_PER_SAMPLE = 200
N_PLANTED = 30  # per sample: the first cells, labelled tumour, with the hypoxia programme up
POPS = {  # population -> cell_type
    "Tumour epithelial": "Tumour epithelial",
    "CD8 T": "T cell",
    "Macrophage": "Monocyte/Macrophage",
    "B": "B cell",
}


def _programme_genes(species: str) -> list[str]:
    sets = load_gene_sets("programme")
    return list(dict.fromkeys(g for s in sets.values() for g in s.genes(species)))


def make_data(species: str = "human", seed: int = 0) -> ad.AnnData:
    """Poisson counts over programme genes + fillers; hypoxia planted in the first tumour cells."""
    rng = np.random.default_rng(seed)
    filler = [f"FILL{i}" if species == "human" else f"Fill{i}" for i in range(300)]
    genes = _programme_genes(species) + filler
    hyp = [genes.index(g) for g in load_gene_sets("programme")["hypoxia"].genes(species)]
    n = 2 * N_PER_SAMPLE
    rate = rng.gamma(0.5, 2.0, len(genes))
    lam = rate[None, :] * rng.lognormal(0, 0.3, n)[:, None]
    planted = np.zeros(n, dtype=bool)
    for s in range(2):
        planted[s * N_PER_SAMPLE : s * N_PER_SAMPLE + N_PLANTED] = True
    lam[np.ix_(planted, hyp)] *= 8
    counts = rng.poisson(lam).astype(np.float32)
    pops = np.array(list(POPS))[rng.integers(1, len(POPS), n)]
    pops[planted] = "Tumour epithelial"
    for s in range(2):  # unplanted tumour cells too
        pops[s * N_PER_SAMPLE + N_PLANTED : s * N_PER_SAMPLE + N_PLANTED + 20] = "Tumour epithelial"
    obs = pd.DataFrame(
        {
            "sample": pd.Categorical(np.repeat(["s1", "s2"], N_PER_SAMPLE)),
            "population": pops,
            "cell_type": [POPS[p] for p in pops],
            "planted": planted,
        },
        index=[f"c{i}" for i in range(n)],
    )
    a = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=genes))
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    return a


@pytest.fixture(scope="module")
def scored() -> ad.AnnData:
    a = make_data("human")
    bm.tl.score(a, seed=0)
    return a


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    from scipy.stats import rankdata

    r = rankdata(s)
    n1, n0 = y.sum(), (~y).sum()
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


# ---- the runner ------------------------------------------------------------------------
def test_every_programme_is_scored_and_recorded(scored: ad.AnnData):
    programmes = bm.tl.default_programmes()
    # the ligand-receptor sets (ligand and receptor on different cells) are not per-cell scores
    assert set(load_gene_sets("programme")) - set(programmes) == bm.tl.LIGAND_RECEPTOR_SETS
    assert not any(c.endswith(tuple(bm.tl.LIGAND_RECEPTOR_SETS)) for c in scored.obs.columns)
    rec = scored.uns["bonemet"]["gene_sets"]
    for name, gs in programmes.items():
        assert f"score_{name}" in scored.obs and f"aucell_{name}" in scored.obs
        r = rec[name]
        assert r["coverage"] == 1.0 and r["n_found"] == r["n_total"] == len(gs.human)
        assert r["version"] == gs.version and r["scored"] is True and r["species"] == "human"
    assert scored.uns["bonemet"]["parameters"]["score"]["species"] == "human"
    assert "warnings" not in scored.uns["bonemet"] or not scored.uns["bonemet"]["warnings"]


@pytest.mark.parametrize("prefix", ["score", "aucell"])
def test_planted_cells_rank_above_the_others(scored: ad.AnnData, prefix: str):
    y = scored.obs["planted"].to_numpy()
    assert _auroc(y, scored.obs[f"{prefix}_hypoxia"].to_numpy()) > 0.97
    # an unrelated programme does not separate them (AUCell ranks genes within a cell, so
    # the 23 planted hypoxia genes push an unrelated set's genes down a little: lower bound
    # 0.25; it was 0.3 with the 15-gene hypoxia set)
    assert 0.25 < _auroc(y, scored.obs[f"{prefix}_osteoclast_activity"].to_numpy()) < 0.7


def test_seeded_and_copy():
    a = make_data("human")
    b = bm.tl.score(a, gene_sets=["hypoxia"], seed=3, copy=True)
    assert "score_hypoxia" not in a.obs and "bonemet" not in a.uns
    c = bm.tl.score(a, gene_sets="hypoxia", seed=3, copy=True)
    np.testing.assert_array_equal(b.obs["score_hypoxia"], c.obs["score_hypoxia"])
    np.testing.assert_array_equal(b.obs["aucell_hypoxia"], c.obs["aucell_hypoxia"])
    assert [k for k in b.obs if k.startswith(("score_", "aucell_"))] == [
        "score_hypoxia",
        "aucell_hypoxia",
    ]


def test_upper_cased_mouse_data_match():
    m = make_data("mouse")
    up = m.copy()
    up.var_names = [g.upper() for g in m.var_names]
    bm.tl.score(m, gene_sets=["erythroid_mimicry_core", "hypoxia", "ferroptosis_kegg"])
    bm.tl.score(up, gene_sets=["erythroid_mimicry_core", "hypoxia", "ferroptosis_kegg"])
    for a in (m, up):
        rec = a.uns["bonemet"]["gene_sets"]
        assert rec["erythroid_mimicry_core"]["species"] == "mouse"  # auto: mouse lists match
        assert rec["erythroid_mimicry_core"]["coverage"] == 1.0
        assert rec["ferroptosis_kegg"]["n_found"] == 39
    # the core is globins only (ALAS2 is in haem_synthesis)
    assert list(up.uns["bonemet"]["gene_sets"]["erythroid_mimicry_core"]["genes_found"]) == [
        "HBB-BS", "HBB-BT", "HBA-A1", "HBA-A2",
    ]  # fmt: skip
    for k in ("score_hypoxia", "aucell_hypoxia", "aucell_erythroid_mimicry_core"):
        np.testing.assert_allclose(m.obs[k], up.obs[k])


def test_low_coverage_set_is_warned_not_scored():
    a = make_data("human")
    a.obs["score_half"] = 1.0  # stale column from an earlier run
    bm.tl.score(
        a,
        gene_sets={"half": ["VEGFA", "NOPE1", "NOPE2", "NOPE3"], "ok": ["VEGFA", "LDHA", "ENO1"]},
    )
    rec = a.uns["bonemet"]["gene_sets"]
    assert rec["half"]["coverage"] == 0.25 and rec["half"]["n_found"] == 1
    assert rec["half"]["n_total"] == 4 and rec["half"]["scored"] is False
    assert rec["half"]["version"] == "custom"
    assert "score_half" not in a.obs and "aucell_half" not in a.obs
    assert rec["ok"]["scored"] is True and "score_ok" in a.obs
    warns = list(a.uns["bonemet"]["warnings"])
    assert len(warns) == 1 and "'half'" in warns[0] and "25%" in warns[0]
    # the same run again does not duplicate the warning
    bm.tl.score(a, gene_sets={"half": ["VEGFA", "NOPE1", "NOPE2", "NOPE3"]})
    assert len(a.uns["bonemet"]["warnings"]) == 1
    # scored in a later run (lower min_coverage): the old warning is superseded
    bm.tl.score(a, gene_sets={"half": ["VEGFA", "NOPE1", "NOPE2", "NOPE3"]}, min_coverage=0.2)
    assert "score_half" in a.obs and not list(a.uns["bonemet"]["warnings"])


def test_missing_species_list_is_warned(tmp_path):
    a = make_data("human")
    bm.tl.score(a, gene_sets={"empty": []}, min_coverage=0.0)
    assert a.uns["bonemet"]["gene_sets"]["empty"]["scored"] is False
    assert "empty" in a.uns["bonemet"]["warnings"][0]


def test_bad_inputs():
    a = make_data("human")
    with pytest.raises(InputError, match="unknown scoring method"):
        bm.tl.score(a, methods=("zscore",))
    with pytest.raises(InputError, match="unknown gene set"):
        bm.tl.score(a, gene_sets=["no_such_set"])
    with pytest.raises(InputError, match="obs key"):
        bm.tl.score(a, gene_sets={"bad name!": ["VEGFA"]})
    with pytest.raises(InputError, match="layer 'nope'"):
        bm.tl.score(a, layer="nope")
    with pytest.raises(InputError, match="raw integer counts"):
        bm.tl.score(a, layer="counts")
    with pytest.raises(InputError, match="min_coverage"):
        bm.tl.score(a, min_coverage=2)


def test_uns_is_h5ad_serialisable(scored: ad.AnnData, tmp_path):
    a = scored.copy()
    bm.tl.score(a, gene_sets={"half": ["VEGFA", "NOPE1", "NOPE2", "NOPE3"]})
    bm.tl.erythroid_mimicry(a)
    a.write_h5ad(tmp_path / "x.h5ad")
    b = ad.read_h5ad(tmp_path / "x.h5ad")
    assert b.uns["bonemet"]["gene_sets"]["hypoxia"]["n_found"] == 23  # Buffa 15 + 8 HIF targets
    assert b.obs["erythroid_mimicry_class"].dtype == "category"
    assert bool(b.uns["bonemet"]["gene_sets"]["half"]["scored"]) is False
    assert b.obs["erythroid_mimicry_call"].dtype == bool


# ---- AUCell ----------------------------------------------------------------------------
def test_aucell_equals_decoupler():
    import decoupler as dc

    rng = np.random.default_rng(1)
    n, p = 40, 200
    X = rng.gamma(1.0, 1.0, (n, p))  # no ties, no zeros: rankings are unique
    var = [f"G{i}" for i in range(p)]
    df = pd.DataFrame(X, index=[f"c{i}" for i in range(n)], columns=var)
    net = pd.DataFrame({"source": ["A"] * 12 + ["B"] * 5, "target": var[:12] + var[100:105]})
    es, _ = dc.mt.aucell(df, net, tmin=3)
    es = es.loc[df.index]
    index = _AUCellIndex(X, var, var[:12] + var[100:105], seed=0)
    np.testing.assert_allclose(index.auc(var[:12]), es["A"], atol=1e-12)
    np.testing.assert_allclose(index.auc(var[100:105]), es["B"], atol=1e-12)
    # sparse input, ties at zero: independent of block size and of the other indexed genes
    S = sp.random(300, 400, density=0.05, random_state=2, format="csr")
    S.data = np.round(S.data * 4) + 1
    names = [f"G{i}" for i in range(400)]
    big = _AUCellIndex(S, names, names[:50], seed=7, chunk_nnz=500)
    small = _AUCellIndex(S, names, names[10:20], seed=7)
    np.testing.assert_array_equal(big.auc(names[10:20]), small.auc(names[10:20]))
    v = big.auc(names[:50])
    assert v.min() >= 0 and v.max() <= 1


def test_control_gene_score_equals_scanpy_score_genes():
    """bonemet's control-gene score is scanpy's score_genes, draw for draw, with the gene
    means computed once instead of once per set."""
    from bonemet.tl._score import _method_score_genes

    rng = np.random.default_rng(5)
    S = sp.random(500, 1200, density=0.08, random_state=3, format="csr", dtype=np.float32)
    S.data = np.log1p(S.data * 20).astype(np.float32)
    S = sp.csr_matrix(S.multiply(np.r_[np.ones(5), 0, np.ones(1194)][None, :]), dtype=np.float32)
    # (G5 is never detected)
    S.eliminate_zeros()
    names = [f"G{i}" for i in range(1200)]
    sets = {
        "a": names[:30],
        "b": [names[i] for i in rng.choice(1200, 12, replace=False)],
        "c": names[100:104] + ["NOT_A_GENE"],
        "d": [names[5], names[6]],
    }
    for X in (S, S.toarray()):
        got = _method_score_genes(X, names, sets, seed=11)
        tmp = ad.AnnData(X=X.copy(), var=pd.DataFrame(index=names))
        for j, genes in enumerate(sets.values()):
            sc.tl.score_genes(tmp, genes, ctrl_size=50, n_bins=25, random_state=11,
                              score_name="_s", use_raw=False)  # fmt: skip
            np.testing.assert_array_equal(got[:, j], tmp.obs["_s"].to_numpy())
    # NaN entries are left out of the means, as scanpy leaves them out
    T = S.copy()
    T.data[::97] = np.nan
    got = _method_score_genes(T, names, {"a": names[:30]}, seed=2)
    tmp = ad.AnnData(X=T.copy(), var=pd.DataFrame(index=names))
    sc.tl.score_genes(tmp, names[:30], ctrl_size=50, n_bins=25, random_state=2, use_raw=False)
    # (equal to float32 precision: the two sum float32 data in different orders)
    np.testing.assert_allclose(got[:, 0], tmp.obs["score"].to_numpy(), rtol=1e-4, atol=1e-7)


# ---- summaries -------------------------------------------------------------------------
def test_score_summary(scored: ad.AnnData):
    tab = bm.tl.score_summary(scored)
    assert {"population", "sample", "set", "method", "n_cells", "mean", "fraction_above"} <= set(
        tab.columns
    )
    assert {"threshold", "threshold_method", "reference"} <= set(tab.columns)
    h = tab[tab.key == "score_hypoxia"].set_index(["population", "sample"])
    thr = float(np.quantile(scored.obs["score_hypoxia"], 0.95))
    assert np.allclose(h["threshold"], thr) and (h["threshold_method"] == "percentile 0.95").all()
    # 5% of all cells lie above the threshold: all of them planted tumour cells
    above = scored.obs["score_hypoxia"] > thr
    assert above.sum() == pytest.approx(0.05 * scored.n_obs, abs=1)
    assert scored.obs.loc[above, "planted"].all()
    for s in ("s1", "s2"):
        n_above = (above & (scored.obs["sample"] == s)).sum()
        tum = ("Tumour epithelial", s)
        assert h.loc[tum, "fraction_above"] == pytest.approx(n_above / h.loc[tum, "n_cells"])
        others = h.xs(s, level="sample").drop("Tumour epithelial")
        assert h.loc[tum, "mean"] > others["mean"].max()
        assert h.loc[("CD8 T", s), "fraction_above"] == 0
    assert h["n_cells"].sum() == scored.n_obs
    ref = bm.tl.score_summary(scored, keys=["score_hypoxia"], reference=["CD8 T", "B"])
    cd8b = scored.obs["population"].isin(["CD8 T", "B"])
    assert np.allclose(ref["threshold"], np.quantile(scored.obs.loc[cd8b, "score_hypoxia"], 0.95))
    gmm = bm.tl.score_summary(scored, keys=["score_hypoxia"], threshold="gmm", groupby="sample")
    assert np.isfinite(gmm["threshold"]).all() and list(gmm["sample"]) == ["s1", "s2"]
    with pytest.raises(InputError, match="population"):
        bm.tl.score_summary(scored, groupby=("nope", "sample"))
    # only the columns bm.tl.score wrote are summarised by default
    other = scored.copy()
    other.obs["score_from_elsewhere"] = 0.0
    assert "score_from_elsewhere" not in set(bm.tl.score_summary(other)["key"])
    assert set(tab["key"]) == {
        f"{p}_{n}" for p in ("score", "aucell") for n in bm.tl.default_programmes()
    }


def test_pseudobulk_ssgsea_offline(scored: ad.AnnData, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    tab = bm.tl.pseudobulk_enrichment(scored, min_cells=10)
    assert list(tab.columns) == [
        "population", "sample", "n_cells", "set", "n_genes", "coverage", "ES", "NES",
    ]  # fmt: skip
    assert tab["n_cells"].min() >= 10
    sizes = scored.obs.groupby(["population", "sample"], observed=True).size()
    for row in tab.itertuples():
        assert row.n_cells == sizes[(row.population, row.sample)]
    assert set(tab["set"]) == set(bm.tl.default_programmes())
    for s in ("s1", "s2"):
        h = tab[(tab.set == "hypoxia") & (tab["sample"] == s)].set_index("population")
        assert h["ES"].idxmax() == "Tumour epithelial"
    few = bm.tl.pseudobulk_enrichment(scored, min_cells=10_000)
    assert few.empty and list(few.columns) == list(tab.columns)


# ---- erythroid mimicry -----------------------------------------------------------------
def _mimicry_data() -> tuple[ad.AnnData, dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    hb = ["HBB", "HBA1", "HBA2", "ALAS2"]
    genes = hb + [f"FILL{i}" for i in range(200)]
    blocks = []  # (sample, cell_type, population, n, hb_rate)
    for s, ambient in (("clean", 0.0), ("soupy", 0.05)):
        blocks += [
            (s, "T cell", "CD8 T", 40, ambient),
            (s, "B cell", "B", 20, ambient),
            (s, "NK cell", "NK", 20, ambient),
            (s, "Tumour epithelial", "Tumour epithelial", 30, ambient),  # no mimicry
            (s, "Tumour epithelial", "Tumour epithelial", 10, 0.2),  # mimicry
            (s, "Erythroid", "Erythroid progenitor", 10, 0.6),  # real erythroid cells
        ]
    blocks.append(("tiny", "T cell", "CD8 T", 5, 0.0))
    blocks.append(("tiny", "Tumour epithelial", "Tumour epithelial", 10, 0.2))
    rows, obs = [], []
    for s, ct, pop, n, rate in blocks:
        other = rng.poisson(5.0, (n, 200))
        total = other.sum(1, keepdims=True)
        # Hb counts: a fraction `rate` of the cell's counts, spread over the four genes
        h = (
            rng.poisson(total * rate / (1 - rate) / 4 * np.ones((1, 4)))
            if rate
            else np.zeros((n, 4))
        )
        rows.append(np.hstack([h, other]))
        obs += [(s, ct, pop, rate == 0.2 and ct == "Tumour epithelial")] * n
    counts = np.vstack(rows).astype(np.float32)
    o = pd.DataFrame(obs, columns=["sample", "cell_type", "population", "planted"])
    o.index = [f"c{i}" for i in range(len(o))]
    a = ad.AnnData(X=sp.csr_matrix(counts), obs=o, var=pd.DataFrame(index=genes))
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    return a, {"planted": o["planted"].to_numpy()}


def test_erythroid_mimicry_guard():
    a, truth = _mimicry_data()
    tab = bm.tl.erythroid_mimicry(a, species="human").set_index("sample")
    call = a.obs["erythroid_mimicry_call"].to_numpy()
    # clean sample: exactly the planted tumour cells are called; background is clean
    clean = (a.obs["sample"] == "clean").to_numpy()
    np.testing.assert_array_equal(call[clean], truth["planted"][clean])
    assert not tab.loc["clean", "ambient_high"] and tab.loc["clean", "n_called"] == 10
    assert tab.loc["clean", "n_background"] == 80 and tab.loc["clean", "n_tumour"] == 40
    assert tab.loc["clean", "mannwhitney_p"] < 1e-3
    # soupy sample: Hb in T/B/NK is ambient -> flagged, warned
    assert tab.loc["soupy", "ambient_high"] and tab.loc["soupy", "background_hb_fraction"] > 0.03
    assert "ambient" in tab.loc["soupy", "note"]
    assert any("'soupy'" in w and "ambient" in w for w in a.uns["bonemet"]["warnings"])
    # real erythroid cells are never calls; only tumour cells can be
    assert not call[a.obs["cell_type"].to_numpy() == "Erythroid"].any()
    assert set(a.obs.loc[call, "cell_type"]) == {"Tumour epithelial"}
    assert tab.loc["clean", "n_erythroid_excluded"] == 10
    # too few background cells: no threshold, no calls, explained
    assert np.isnan(tab.loc["tiny", "threshold"]) and tab.loc["tiny", "n_called"] == 0
    assert "background cells" in tab.loc["tiny", "note"]


def test_erythroid_mimicry_reports_scores_and_works_from_population_only():
    a, truth = _mimicry_data()
    bm.tl.score(a, gene_sets=["erythroid_mimicry_core"], species="human", min_coverage=0.5)
    del a.obs["cell_type"]  # lineage derived from population
    tab = bm.tl.erythroid_mimicry(a, species="human").set_index("sample")
    assert tab.loc["clean", "n_called"] == 10 and tab.loc["clean", "n_background"] == 80
    assert (
        tab.loc["clean", "score_erythroid_mimicry_core_tumour"]
        > tab.loc["clean", "score_erythroid_mimicry_core_background"]
    )


# ---- axes: tests/test_axes.py ------------------------------------------------------------
def test_erythroid_mimicry_without_hb_genes_is_noted_not_fatal():
    a, _ = _mimicry_data()
    a = a[:, ~a.var_names.isin(["HBB", "HBA1", "HBA2", "ALAS2"])].copy()
    tab = bm.tl.erythroid_mimicry(a, species="human")
    assert (tab["n_called"] == 0).all() and tab["threshold"].isna().all()
    assert tab["note"].str.contains("not assessed").all()
    assert any("not assessed" in w for w in a.uns["bonemet"]["warnings"])
    assert not a.obs["erythroid_mimicry_call"].any()


def test_simulated_truth_mouse():
    """On the simulator's mouse data (true labels as annotation), scores find the planted truth."""
    a = bm.datasets.simulate_bone_metastasis(n_cells=1500, n_samples=2, species="mouse", seed=1)
    a = a[~a.obs["true_doublet"].astype(bool)].copy()
    a.obs["population"] = a.obs["true_population"].astype(str)
    a.obs["cell_type"] = a.obs["true_cell_type"].astype(str)
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    bm.tl.score(a, gene_sets=["hypoxia", "osteoclast_activity", "erythroid_mimicry"])
    assert a.uns["bonemet"]["gene_sets"]["hypoxia"]["species"] == "mouse"
    tum = (a.obs["population"] == "Tumour epithelial").to_numpy()
    for prefix in ("score", "aucell"):
        hyp = a.obs[f"{prefix}_hypoxia"].to_numpy()
        assert _auroc(a.obs["true_hypoxic"].to_numpy(bool)[tum], hyp[tum]) > 0.9
        ery = a.obs[f"{prefix}_erythroid_mimicry"].to_numpy()
        assert _auroc(a.obs["true_erythroid_mimicry"].to_numpy(bool)[tum], ery[tum]) > 0.85
        osteo = (a.obs["population"] == "Osteoclast").to_numpy()
        assert _auroc(osteo, a.obs[f"{prefix}_osteoclast_activity"].to_numpy()) > 0.95
    tab = bm.tl.erythroid_mimicry(a)
    call = a.obs["erythroid_mimicry_call"].to_numpy()
    assert not call[~tum].any()
    assert tab["n_called"].sum() == call.sum()
    axes = bm.tl.axes_wide(bm.tl.axes_table(a, min_cells=3))
    assert list(axes.index) == sorted(a.obs["sample"].astype(str).unique())
    assert axes["tpex_fraction"].between(0, 1).all()
