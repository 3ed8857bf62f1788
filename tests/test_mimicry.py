"""Erythroid mimicry read-out, gene-set overlaps and the net ferroptosis index, on small
hand-built counts with planted truth."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

import bonemet as bm
from bonemet._errors import InputError

GLOBIN = ["HBB", "HBA1", "HBA2"]
IDENTITY = ["KLF1", "GATA1", "GYPA", "SLC4A1", "CA1", "AHSP"]
FILL = [f"FILL{i}" for i in range(100)]
GENES = GLOBIN + IDENTITY + FILL
#: fixed, uneven filler-gene shares (control-gene scoring needs genes across expression bins)
FILL_W = np.random.default_rng(42).gamma(0.7, 1.0, len(FILL))
FILL_W /= FILL_W.sum()


def _cells(rng, n, lib, ambient, *, globin=0.0, identity=0.0, spread=0.5):
    """Counts for ``n`` cells of median size ``lib``: a per-cell ambient globin share drawn
    around ``ambient`` (cell-to-cell variation ``spread``), plus own globin/identity shares."""
    size = rng.lognormal(np.log(lib), 0.3, n)
    amb = ambient * rng.gamma(1 / spread**2, spread**2, n) if ambient else np.zeros(n)
    p_glob = amb + globin
    p_id = np.full(n, identity)
    rest = np.clip(1 - p_glob - p_id, 0.05, 1)
    k_g = rng.poisson((size * p_glob)[:, None] / len(GLOBIN) * np.ones((1, len(GLOBIN))))
    k_i = rng.poisson((size * p_id)[:, None] / len(IDENTITY) * np.ones((1, len(IDENTITY))))
    k_f = rng.poisson((size * rest)[:, None] * FILL_W[None, :])
    return np.hstack([k_g, k_i, k_f]).astype(np.float32)


def _adata(blocks, seed=0, spread=0.5) -> ad.AnnData:
    """blocks: (sample, cell_type, population, n, lib, ambient, globin, identity, planted[,
    spread])"""
    rng = np.random.default_rng(seed)
    mats, obs = [], []
    for s, ct, pop, n, lib, amb, glob, ident, planted, *sp_ in blocks:
        sd = sp_[0] if sp_ else spread  # a block's own cell-to-cell ambient spread
        mats.append(_cells(rng, n, lib, amb, globin=glob, identity=ident, spread=sd))
        obs += [(s, ct, pop, planted)] * n
    o = pd.DataFrame(obs, columns=["sample", "cell_type", "population", "planted"])
    o.index = [f"c{i}" for i in range(len(o))]
    a = ad.AnnData(X=sp.csr_matrix(np.vstack(mats)), obs=o, var=pd.DataFrame(index=GENES))
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    return a


T, TUM, ERY = (
    ("T cell", "CD8 T"),
    ("Tumour epithelial", "Tumour epithelial"),
    (
        "Erythroid",
        "Erythroid progenitor",
    ),
)


def test_library_size_confound_creates_no_calls():
    """Same ambient globin share everywhere; tumour cells 1/10 the size of large T cells.

    A threshold on the T cells' per-cell fractions is too tight for small cells (their
    fractions are noisier): it calls many tumour cells. The null at each cell's own size
    does not, and still finds the planted mimics."""
    blocks = [
        ("s1", *T, 300, 20000, 0.01, 0.0, 0.0, False),
        ("s1", *TUM, 400, 1000, 0.01, 0.0, 0.0, False),
        ("s1", *TUM, 40, 1000, 0.01, 0.08, 0.0, True),
    ]
    a = _adata(blocks, spread=0.2)
    tab = bm.tl.erythroid_mimicry(a, species="human").set_index("sample")
    call = a.obs["erythroid_mimicry_call"].to_numpy()
    planted = a.obs["planted"].to_numpy()
    tum = (a.obs["population"] == "Tumour epithelial").to_numpy()
    # the confound is real: the naive per-cell threshold calls >5% of the non-mimic cells
    M = a.layers["counts"]
    frac = np.asarray(M[:, :3].sum(1)).ravel() / np.asarray(M.sum(1)).ravel()
    naive = frac > np.quantile(frac[~tum], 0.99)
    assert naive[tum & ~planted].mean() > 0.05
    # the size-matched null: at most 1% false calls, the planted mimics found
    assert call[tum & ~planted].mean() <= 0.01
    assert call[planted].mean() >= 0.9
    assert tab.loc["s1", "counts_source"] == "counts"
    assert 0 < tab.loc["s1", "background_overdispersion"] < 0.1
    p = a.uns["bonemet"]["parameters"]["erythroid_mimicry"]
    assert p["counts_source"] == "counts" and "beta-binomial" in p["null"]


def test_globin_only_vs_globin_and_identity():
    blocks = [
        ("s1", *T, 200, 3000, 0.002, 0.0, 0.0, False),
        ("s1", *ERY, 50, 3000, 0.002, 0.30, 0.02, False),
        ("s1", *TUM, 100, 9000, 0.002, 0.0, 0.0, False),
        ("s1", *TUM, 30, 9000, 0.002, 0.05, 0.0, True),  # mimicry: globins, no identity
        ("s1", *TUM, 20, 9000, 0.002, 0.05, 0.02, False),  # globins + erythroid identity
    ]
    a = _adata(blocks, seed=1)
    # haem synthesis higher in the planted mimics: reported next to the calls, not used
    a.obs["score_haem_synthesis"] = np.where(a.obs["planted"].to_numpy(), 0.5, 0.0)
    tab = bm.tl.erythroid_mimicry(a, species="human").set_index("sample")
    assert tab.loc["s1", "score_haem_synthesis_called"] > 0.4
    assert tab.loc["s1", "score_haem_synthesis_not_called"] < 0.1
    klass = a.obs["erythroid_mimicry_class"].astype(str).to_numpy()
    call = a.obs["erythroid_mimicry_call"].to_numpy()
    n = np.cumsum([b[3] for b in blocks])
    mim, both = slice(n[2], n[3]), slice(n[3], n[4])
    assert (klass[mim] == "globin_only").mean() >= 0.9 and call[mim].mean() >= 0.9
    assert (klass[both] == "globin_and_identity").mean() >= 0.9 and not call[both].any()
    assert (klass[: n[1]] == "not_assessed").all()  # T and erythroid cells are never assessed
    assert tab.loc["s1", "n_identity_excluded"] == (klass[both] == "globin_and_identity").sum()
    assert tab.loc["s1", "n_called"] == call.sum()
    # the calls table: one row per call and per identity-excluded cell, doublet score kept
    a.obs["doublet_score"] = np.linspace(0, 0.3, a.n_obs)
    a.obs["predicted_doublet"] = False
    calls = bm.tl.erythroid_mimicry_calls(a)
    assert set(calls["class"]) == {"globin_only", "globin_and_identity"}
    assert calls["called"].sum() == call.sum()
    got = calls.set_index("cell")["doublet_score"]
    np.testing.assert_allclose(got, a.obs.loc[got.index, "doublet_score"])
    assert (calls.loc[calls["called"], "identity_counts"] < calls["identity_counts"].max()).all()
    assert (calls.loc[calls["called"], "score_haem_synthesis"] == 0.5).mean() >= 0.9


def test_per_sample_ci_and_graded_ambient():
    from statsmodels.stats.proportion import proportion_confint

    blocks = []
    for s, amb in (("low", 0.0005), ("mid", 0.004), ("high", 0.02)):
        blocks += [
            (s, *T, 100, 3000, amb, 0.0, 0.0, False),
            (s, *TUM, 60, 9000, amb, 0.0, 0.0, False),
            (s, *TUM, 20, 9000, amb, 0.15, 0.0, True),
        ]
    a = _adata(blocks, seed=2)
    tab = bm.tl.erythroid_mimicry(a, species="human").set_index("sample")
    for col in ("n_tumour", "n_called", "fraction_called", "fraction_ci_low", "fraction_ci_high"):
        assert col in tab.columns
    for _s, r in tab.iterrows():
        lo, hi = proportion_confint(r["n_called"], r["n_tumour"], alpha=0.05, method="wilson")
        assert r["fraction_ci_low"] == pytest.approx(lo) and r["fraction_ci_high"] == pytest.approx(
            hi
        )
        assert r["fraction_ci_low"] <= r["fraction_called"] <= r["fraction_ci_high"]
        assert r["n_tumour"] == 80
    assert tab["ambient_grade"].to_dict() == {"high": "high", "low": "low", "mid": "moderate"}
    assert tab.loc["high", "ambient_high"] and not tab.loc["mid", "ambient_high"]
    warns = a.uns["bonemet"]["warnings"]
    assert any("'high'" in w for w in warns) and not any("'mid'" in w for w in warns)
    lo, hi = bm.tl.wilson_interval([0, 5], [10, 0])
    assert lo[0] == 0 and hi[0] == pytest.approx(0.2775, abs=1e-4) and np.isnan(lo[1])


def test_corrected_counts_are_used_when_present():
    """layers["decontaminated"] (QC's DecontX counts) drives the calls and the scores."""
    blocks = [
        ("s1", *T, 150, 3000, 0.02, 0.0, 0.0, False),
        ("s1", *TUM, 80, 9000, 0.02, 0.0, 0.0, False),
        ("s1", *TUM, 20, 9000, 0.02, 0.02, 0.0, True),
    ]
    a = _adata(blocks, seed=3)
    raw = bm.tl.erythroid_mimicry(a, species="human").set_index("sample")
    assert raw.loc["s1", "ambient_grade"] == "high"
    # a corrected layer: the ambient globin removed (what DecontX aims at), here by hand
    rng = np.random.default_rng(0)
    C = a.layers["counts"].toarray()
    amb = rng.binomial(C[:, :3].astype(int), 0.9 * (~a.obs["planted"].to_numpy())[:, None]
                       + 0.45 * a.obs["planted"].to_numpy()[:, None])  # fmt: skip
    C[:, :3] -= amb
    a.layers["decontaminated"] = sp.csr_matrix(C.astype(np.float32) * 0.999)  # not integers
    tab = bm.tl.erythroid_mimicry(a, species="human").set_index("sample")
    assert tab.loc["s1", "counts_source"] == "decontaminated"
    assert tab.loc["s1", "background_hb_fraction"] < raw.loc["s1", "background_hb_fraction"] / 5
    assert tab.loc["s1", "background_hb_fraction_raw"] == pytest.approx(
        raw.loc["s1", "background_hb_fraction"]
    )
    assert tab.loc["s1", "ambient_grade"] != "high"
    call = a.obs["erythroid_mimicry_call"].to_numpy()
    planted = a.obs["planted"].to_numpy()
    assert call[planted].mean() > 0.8 and call[~planted].mean() < 0.02
    rec = a.uns["bonemet"]["parameters"]["erythroid_mimicry"]
    assert rec["counts_source"] == "decontaminated"
    # programme scores: the corrected layer normalised as X is
    bm.tl.score(a, gene_sets={"glob": GLOBIN}, methods=("score_genes",), species="human")
    assert a.uns["bonemet"]["parameters"]["score"]["layer"] == "decontaminated (log1p CP10k)"
    b = a.copy()
    bm.tl.score(b, gene_sets={"glob": GLOBIN}, methods=("score_genes",), layer=None)
    assert b.uns["bonemet"]["parameters"]["score"]["layer"] == "X"
    assert not np.allclose(a.obs["score_glob"], b.obs["score_glob"])
    L = bm.tl._score.lognorm_corrected(a)
    ref = a.copy()
    ref.X = a.layers["decontaminated"].copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    np.testing.assert_allclose(L.toarray(), ref.X.toarray(), rtol=1e-5, atol=1e-6)


def test_gene_set_overlap_table():
    sets = ["erythroid_mimicry", "erythroid_mimicry_core", "erythroid_identity",
            "haem_synthesis", "lineage_erythroid"]  # fmt: skip
    tab = bm.tl.gene_set_overlap(gene_sets=sets, species="human")
    assert len(tab) == len(sets) * (len(sets) - 1) // 2
    pair = {frozenset((r.set_a, r.set_b)): r for r in tab.itertuples()}
    core = pair[frozenset(("erythroid_mimicry", "erythroid_mimicry_core"))]
    assert core.n_shared == 3 and core.jaccard == pytest.approx(3 / 13)
    assert core.overlap_coefficient == 1.0 and core.shared_genes == "HBA1;HBA2;HBB"
    # the split: mimicry no longer shares the erythroid-identity genes
    assert pair[frozenset(("erythroid_mimicry", "erythroid_identity"))].n_shared == 0
    lin = pair[frozenset(("erythroid_identity", "lineage_erythroid"))]
    assert lin.n_shared == 6
    assert list(tab.columns) == ["set_a", "set_b", "n_a", "n_b", "n_shared", "jaccard",
                                 "overlap_coefficient", "shared_genes"]  # fmt: skip
    assert tab["jaccard"].is_monotonic_decreasing
    # from a scored object: the genes as found, every scored pair
    a = _adata([("s1", *T, 30, 2000, 0.01, 0, 0, False), ("s1", *TUM, 30, 2000, 0.01, 0, 0, False)])
    bm.tl.score(a, gene_sets={"g": GLOBIN, "gi": GLOBIN[:2] + IDENTITY[:2], "i": IDENTITY},
                methods=("aucell",))  # fmt: skip
    t2 = bm.tl.gene_set_overlap(a)
    assert set(zip(t2.set_a, t2.set_b)) == {("g", "gi"), ("g", "i"), ("gi", "i")}
    assert t2.set_index(["set_a", "set_b"]).loc[("g", "gi"), "jaccard"] == pytest.approx(2 / 5)
    fig = bm.pl.gene_set_overlap(a)
    assert fig.axes and fig.axes[0].get_title().startswith("Gene-set overlap")
    with pytest.raises(InputError, match="unknown"):
        bm.tl.gene_set_overlap(gene_sets=["nope"])


def test_net_ferroptosis_index_and_genes():
    genes = ["GPX4", "SLC7A11", "TFRC", "ACSL4", "ACTB"]
    X = np.zeros((6, 5))
    X[:, 4] = 3.0
    X[:3, 0] = [1.0, 2.0, 3.0]  # GPX4 in the tumour cells
    X[:3, 2] = [0.0, 0.0, 1.5]  # TFRC in one tumour cell
    obs = pd.DataFrame(
        {
            "sample": ["s1"] * 6,
            "population": ["Tumour epithelial"] * 3 + ["Macrophage"] * 3,
            "score_ferroptosis_driver": [0.5, 0.7, 0.9, 0.1, 0.1, 0.1],
            "score_ferroptosis_suppressor": [0.2, 0.2, 0.2, 0.4, 0.5, 0.6],
        },
        index=[f"c{i}" for i in range(6)],
    )
    a = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))
    idx = bm.tl.ferroptosis_index(a).set_index("population")
    assert idx.loc["Tumour epithelial", "net_mean"] == pytest.approx(0.5)
    assert idx.loc["Macrophage", "net_mean"] == pytest.approx(-0.4)
    assert idx.loc["Tumour epithelial", "driver_mean"] == pytest.approx(0.7)
    assert idx.loc["Macrophage", "net_ci_low"] < -0.4 < idx.loc["Macrophage", "net_ci_high"]
    assert (idx["n_cells"] == 3).all()
    g = bm.tl.ferroptosis_genes(a).set_index("gene")
    assert list(g.index) == ["GPX4", "SLC7A11", "TFRC", "ACSL4"]
    assert g.loc["GPX4", "mean"] == pytest.approx(2.0)
    assert g.loc["TFRC", "fraction_expressing"] == pytest.approx(1 / 3)
    assert g.loc["GPX4", "role"] == "suppressor" and g.loc["ACSL4", "role"] == "driver"
    del a.obs["score_ferroptosis_suppressor"]
    with pytest.raises(InputError, match="ferroptosis_suppressor"):
        bm.tl.ferroptosis_index(a)


def test_null_floor_and_doublet_like_calls():
    """Tumour cells that keep more residual ambient than T cells (after correction) are not
    calls; a globin-positive cell in the tumour cells' doublet-score tail is a possible
    doublet, not a call."""
    blocks = [
        ("s1", *T, 200, 3000, 0.002, 0.0, 0.0, False),
        ("s1", *TUM, 200, 9000, 0.006, 0.0, 0.0, False),  # more residual ambient than T
        ("s1", *TUM, 30, 9000, 0.006, 0.06, 0.0, True),
    ]
    a = _adata(blocks, seed=4)
    planted = a.obs["planted"].to_numpy()
    tum = (a.obs["population"] == "Tumour epithelial").to_numpy()
    # the T cells' null as it is calls many tumour cells; moved to their median it does not
    bm.tl.erythroid_mimicry(a, species="human", null="background", null_floor=False)
    assert a.obs["erythroid_mimicry_call"].to_numpy()[tum & ~planted].mean() > 0.1
    tab = bm.tl.erythroid_mimicry(a, species="human", null="background").set_index("sample")
    call = a.obs["erythroid_mimicry_call"].to_numpy()
    assert call[tum & ~planted].mean() <= 0.02 and call[planted].mean() >= 0.9
    assert "tumour cells' median" in tab.loc["s1", "note"]
    # the default null, fitted to the tumour cells (mixture), needs no such rule
    tab = bm.tl.erythroid_mimicry(a, species="human").set_index("sample")
    call = a.obs["erythroid_mimicry_call"].to_numpy()
    assert call[tum & ~planted].mean() <= 0.02 and call[planted].mean() >= 0.9
    assert tab.loc["s1", "null_source"] == "tumour_mixture"
    assert tab.loc["s1", "null_hb_fraction"] == pytest.approx(0.006, rel=0.25)
    assert tab.loc["s1", "null_weight"] == pytest.approx(200 / 230, abs=0.05)
    # doublet scores: the top tail of the tumour cells among the planted cells
    ds = np.full(a.n_obs, 0.02)
    first = np.flatnonzero(planted)[:8]
    ds[first] = 0.3
    a.obs["doublet_score"] = ds
    tab = bm.tl.erythroid_mimicry(a, species="human").set_index("sample")
    klass = a.obs["erythroid_mimicry_class"].astype(str).to_numpy()
    assert (klass[first] == "possible_doublet").all()
    assert not a.obs["erythroid_mimicry_call"].to_numpy()[first].any()
    assert tab.loc["s1", "n_doublet_like_excluded"] == 8
    assert tab.loc["s1", "doublet_score_called_max"] == pytest.approx(0.02)
    bm.tl.erythroid_mimicry(a, species="human", doublet_quantile=None)
    assert a.obs["erythroid_mimicry_call"].to_numpy()[first].all()


def test_null_calibrated_when_tumour_ambient_differs_from_background():
    """After correction tumour cells keep their own residual ambient level *and* spread.
    Null data (no mimics): the default null calls no more than the FDR level allows; the
    T/B/NK null moved to the tumour median (spread kept) calls far more. With 10% mimics
    the share of false calls stays near the FDR level."""
    base = [("s1", *T, 300, 3000, 0.002, 0.0, 0.0, False, 0.25)]
    null_tum = [("s1", *TUM, 600, 9000, 0.005, 0.0, 0.0, False, 0.6)]  # wider than T
    a = _adata(base + null_tum, seed=7)
    tum = (a.obs["population"] == "Tumour epithelial").to_numpy()
    bm.tl.erythroid_mimicry(a, species="human", fdr=0.05)
    assert a.obs["erythroid_mimicry_call"].to_numpy()[tum].mean() <= 0.05
    bm.tl.erythroid_mimicry(a, species="human", fdr=0.05, null="background")
    assert a.obs["erythroid_mimicry_call"].to_numpy()[tum].mean() > 0.1
    mixed = _adata(base + null_tum + [("s1", *TUM, 60, 9000, 0.005, 0.03, 0.0, True, 0.6)],
                   seed=17)  # fmt: skip
    bm.tl.erythroid_mimicry(mixed, species="human", fdr=0.05)
    call = mixed.obs["erythroid_mimicry_call"].to_numpy()
    planted = mixed.obs["planted"].to_numpy()
    assert call.sum() > 0 and (call & ~planted).sum() / call.sum() <= 0.1
    assert call[planted].mean() >= 0.8


def test_small_sample_borrows_the_tumour_null_of_the_others():
    """A sample with too few tumour cells for its own null borrows the run's tumour-cell
    null, moved to its ambient level, instead of the narrow T/B/NK one: its null tumour
    cells are not called, its mimics are."""
    blocks = []
    for s, amb in (("s1", 0.002), ("s2", 0.003), ("s3", 0.0025)):
        blocks.append((s, *T, 300, 3000, amb, 0.0, 0.0, False, 0.25))
        n_tum = 400 if s != "s3" else 15  # s3: below min_tumour_null (30)
        blocks.append((s, *TUM, n_tum, 9000, 2.5 * amb, 0.0, 0.0, False, 0.6))
        blocks.append((s, *TUM, 40 if s != "s3" else 3, 9000, 2.5 * amb, 0.04, 0.0, True, 0.6))
    a = _adata(blocks, seed=11)
    planted = a.obs["planted"].to_numpy()
    tum = (a.obs["population"] == "Tumour epithelial").to_numpy()
    s3 = (a.obs["sample"] == "s3").to_numpy()
    tab = bm.tl.erythroid_mimicry(a, species="human").set_index("sample")
    call = a.obs["erythroid_mimicry_call"].to_numpy()
    assert tab.loc["s3", "null_source"] == "borrowed" and "borrowed from" in tab.loc["s3", "note"]
    assert list(tab.loc[["s1", "s2"], "null_source"]) == ["tumour_mixture"] * 2
    assert call[s3 & tum & ~planted].sum() <= 1 and call[s3 & planted].all()
    # the background null with its mean at the tumour median (what a small sample used
    # before) keeps the T cells' narrow spread and calls many of them
    bm.tl.erythroid_mimicry(a, species="human", null="background")
    assert a.obs["erythroid_mimicry_call"].to_numpy()[s3 & tum & ~planted].sum() >= 4
    # one large sample is too few to borrow from: background null, and the note says so
    b = a[a.obs["sample"].isin(["s1", "s3"]).to_numpy()].copy()
    tab = bm.tl.erythroid_mimicry(b, species="human").set_index("sample")
    assert tab.loc["s3", "null_source"] == "background"
    assert "anti-conservative" in tab.loc["s3", "note"]


@pytest.mark.slow  # 6 runs of 8 samples (about 40 s)
def test_borrowed_null_is_calibrated_on_null_samples():
    """Null data, 6 runs of 3 large and 5 small samples (20 tumour cells each, no mimics),
    tumour residual ambient 2x the T cells' and wider: the borrowed null calls at most the
    FDR level of the small samples' tumour cells (measured 0.25% over 12 runs); the T/B/NK
    null with its mean at the tumour median, which they used before, calls far more."""
    borrowed, background = [], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        blocks = []
        for i in range(8):
            amb = float(rng.uniform(0.001, 0.004))
            blocks.append((f"s{i}", *T, 300, 3000, amb, 0.0, 0.0, False, 0.25))
            blocks.append((f"s{i}", *TUM, 400 if i < 3 else 20, 9000, 2 * amb, 0.0, 0.0, False,
                           0.6))  # fmt: skip
        a = _adata(blocks, seed=100 + seed)
        small = (a.obs["sample"].isin([f"s{i}" for i in range(3, 8)]).to_numpy()
                 & (a.obs["population"] == "Tumour epithelial").to_numpy())  # fmt: skip
        tab = bm.tl.erythroid_mimicry(a, species="human", fdr=0.05).set_index("sample")
        assert (tab.loc[[f"s{i}" for i in range(3, 8)], "null_source"] == "borrowed").all()
        borrowed.append(a.obs["erythroid_mimicry_call"].to_numpy()[small].mean())
        bm.tl.erythroid_mimicry(a, species="human", fdr=0.05, null="background")
        background.append(a.obs["erythroid_mimicry_call"].to_numpy()[small].mean())
    assert np.mean(borrowed) <= 0.05 and max(borrowed) <= 0.1
    assert np.mean(background) > 0.05


def test_mimicry_parameters_in_the_config():
    from pydantic import ValidationError

    from bonemet.config import Config

    s = Config.model_validate({"score": {"mimicry_fdr": 0.1, "mimicry_null": "background"}}).score
    assert s.mimicry_fdr == 0.1 and s.mimicry_null == "background"
    assert Config.model_validate({}).score.mimicry_fdr == 0.05
    for bad in ({"mimicry_fdr": 0.0}, {"mimicry_null": "tumour"}, {"mimicry_min_fold": 0.5}):
        with pytest.raises(ValidationError, match="mimicry"):
            Config.model_validate({"score": bad})
