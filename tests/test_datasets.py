"""Tests of the bone-metastasis simulator (bm.datasets.simulate_bone_metastasis)."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import bonemet as bm
from bonemet.datasets._simulate import CELL_TYPES, POPULATION_TO_CELL_TYPE, POPULATIONS

TPEX = "CD8 Tpex (TCF1+)"
TEX = "CD8 Tex (terminal)"
IRON = "Iron-recycling macrophage (VCAM1+CD163+CCR3+)"
IMM = "Immature neutrophil (CHI3L3+)"
MOUSE_HB = ["Hbb-bs", "Hbb-bt", "Hba-a1", "Hba-a2"]
HUMAN_HB = ["HBB", "HBA1", "HBA2", "HBD"]


@pytest.fixture(scope="module")
def mouse() -> ad.AnnData:
    return bm.datasets.simulate_bone_metastasis(4000, 4, species="mouse", seed=0)


@pytest.fixture(scope="module")
def human() -> ad.AnnData:
    return bm.datasets.simulate_bone_metastasis(1500, 2, species="human", seed=3)


def _lognorm(adata: ad.AnnData) -> sp.csr_matrix:
    X = sp.csr_matrix(adata.X, dtype=np.float64)
    tot = np.asarray(X.sum(1)).ravel()
    X = sp.diags(1e4 / tot) @ X
    X.data = np.log1p(X.data)
    return sp.csr_matrix(X)


def _mean_expr(adata: ad.AnnData, logx: sp.csr_matrix, gene: str, mask: np.ndarray) -> float:
    j = adata.var_names.get_loc(gene)
    return float(np.asarray(logx[mask][:, j].mean()))


def _fraction(adata: ad.AnnData, genes: list[str]) -> np.ndarray:
    X = adata.X
    tot = np.asarray(X.sum(1)).ravel()
    return np.asarray(X[:, adata.var_names.isin(genes)].sum(1)).ravel() / tot


def test_shape_counts_and_names(mouse: ad.AnnData) -> None:
    assert mouse.n_obs == 4000
    assert 4000 <= mouse.n_vars <= 7000
    assert sp.issparse(mouse.X) and mouse.X.format == "csr"
    assert mouse.X.dtype == np.float32
    data = mouse.X.data
    assert np.all(data > 0) and np.array_equal(data, np.round(data))
    assert mouse.var_names.is_unique and mouse.obs_names.is_unique
    for name, sample in zip(mouse.obs_names[:50], mouse.obs["sample"][:50]):
        assert name.startswith(f"{sample}_")
    for s in mouse.obs["sample"].cat.categories:
        assert re.match(r"^[A-Za-z0-9._-]+$", s)
    assert list(mouse.obs["sample"].cat.categories) == ["bm01", "bm02", "bm03", "bm04"]
    cond = mouse.obs.groupby("sample", observed=True)["condition"].first()
    assert list(cond) == ["bone_met", "bone_met", "control", "control"]
    for col in ("true_doublet", "true_erythroid_mimicry", "true_low_quality", "true_hypoxic"):
        assert mouse.obs[col].dtype == bool


def test_vocabularies(mouse: ad.AnnData) -> None:
    assert len(POPULATIONS) == 27 and len(CELL_TYPES) == 15
    assert list(mouse.obs["true_population"].cat.categories) == list(POPULATIONS)
    assert list(mouse.obs["true_cell_type"].cat.categories) == list(CELL_TYPES)
    pairs = mouse.obs[["true_population", "true_cell_type"]].drop_duplicates()
    for pop, ct in zip(pairs["true_population"], pairs["true_cell_type"]):
        assert POPULATION_TO_CELL_TYPE[pop] == ct
    assert POPULATION_TO_CELL_TYPE["M-MDSC"] == "Monocyte/Macrophage"
    assert POPULATION_TO_CELL_TYPE["PMN-MDSC"] == "Neutrophil"


def test_species_symbols(mouse: ad.AnnData, human: ad.AnnData) -> None:
    mv, hv = set(mouse.var_names), set(human.var_names)
    for g in ["Chil3", "Hbb-bs", "mt-Co1", "mt-Cytb", "Ly6g", "Ly6c2", "Adgre1", "Cd8a", "Rpl13a"]:
        assert g in mv, g
    for g in ["CHI3L1", "HBB", "MT-CO1", "CD8A", "CEACAM8", "RPL13A", "HLA-DRA"]:
        assert g in hv, g
    assert not {"HBB", "MT-CO1", "CD8A", "CHI3L1"} & mv
    assert not {"Hbb-bs", "mt-Co1", "Cd8a", "Chil3"} & hv
    assert sum(g.startswith("mt-") for g in mv) == 13
    assert sum(g.startswith("MT-") for g in hv) == 13
    assert sum(bool(re.match(r"^R[Pp][LlSs]\d", g)) for g in mv) >= 60


def test_every_population_in_every_sample(mouse: ad.AnnData) -> None:
    tab = pd.crosstab(mouse.obs["true_population"], mouse.obs["sample"])
    assert tab.shape == (27, 4)
    assert (tab.values >= 3).all(), tab[(tab < 3).any(axis=1)]


def test_small_population_fractions(mouse: ad.AnnData) -> None:
    n = mouse.obs["true_population"].value_counts()
    cd8 = n["CD8 T"] + n[TPEX] + n[TEX]
    assert 0.12 <= n[TPEX] / cd8 <= 0.3
    myeloid = (mouse.obs["true_cell_type"] == "Monocyte/Macrophage").sum()
    assert 0.02 <= n[IRON] / myeloid <= 0.1
    for pop in ("M-MDSC", "PMN-MDSC", IMM, "cDC1", "Osteoclast"):
        assert 0.004 <= n[pop] / mouse.n_obs <= 0.08, pop
    # composition shifts: MDSCs and tumour enriched in bone_met samples
    frac = pd.crosstab(mouse.obs["condition"], mouse.obs["true_population"], normalize="index")
    assert frac.loc["bone_met", "Tumour epithelial"] > 3 * frac.loc["control", "Tumour epithelial"]
    assert frac.loc["bone_met", "PMN-MDSC"] > frac.loc["control", "PMN-MDSC"]
    assert frac.loc["bone_met", IMM] > frac.loc["control", IMM]


def test_library_sizes_and_mito(mouse: ad.AnnData) -> None:
    tot = np.asarray(mouse.X.sum(1)).ravel()
    assert 2500 <= np.median(tot) <= 7000
    per_sample = pd.Series(tot).groupby(mouse.obs["sample"].to_numpy()).median()
    assert per_sample.max() / per_sample.min() > 1.05  # per-sample scale factors
    mito = _fraction(mouse, [g for g in mouse.var_names if g.startswith("mt-")])
    good = ~mouse.obs["true_low_quality"].to_numpy()
    assert 0.02 <= np.median(mito[good]) <= 0.1
    lq = mouse.obs["true_low_quality"].to_numpy()
    assert 0.005 <= lq.mean() <= 0.05
    assert np.median(mito[lq]) > 0.15
    assert np.median(tot[lq]) < 0.5 * np.median(tot[good])


def test_doublets(mouse: ad.AnnData) -> None:
    d = mouse.obs["true_doublet"].to_numpy()
    assert 0.015 <= d.mean() <= 0.05
    tot = np.asarray(mouse.X.sum(1)).ravel()
    assert np.median(tot[d]) > 1.3 * np.median(tot[~d])


def test_erythroid_mimicry_and_ambient_hb(mouse: ad.AnnData) -> None:
    obs = mouse.obs
    hb = _fraction(mouse, MOUSE_HB)
    tum = (obs["true_population"] == "Tumour epithelial").to_numpy() & ~obs[
        "true_doublet"
    ].to_numpy()
    mim = obs["true_erythroid_mimicry"].to_numpy()
    assert mim[tum].sum() >= 20 and not mim[~tum & ~obs["true_doublet"].to_numpy()].any()
    assert np.median(hb[tum & mim]) > 2 * np.median(hb[tum & ~mim])
    # mimicry is commoner in hypoxic tumour cells
    hyp = obs["true_hypoxic"].to_numpy()
    assert mim[tum & hyp].mean() > mim[tum & ~hyp].mean()
    # ambient RNA carries haemoglobin into cells that make none
    t_cells = (obs["true_cell_type"] == "T cell").to_numpy()
    assert (hb[t_cells] > 0).mean() > 0.5
    ery = (obs["true_population"] == "Erythroid progenitor").to_numpy()
    assert np.median(hb[ery]) > 10 * np.median(hb[t_cells])


def test_no_ambient_means_less_hb() -> None:
    a0 = bm.datasets.simulate_bone_metastasis(800, 2, seed=5, ambient=0.0, doublet_rate=0.0)
    a1 = bm.datasets.simulate_bone_metastasis(800, 2, seed=5, ambient=0.08, doublet_rate=0.0)
    t0 = (a0.obs["true_cell_type"] == "T cell").to_numpy()
    t1 = (a1.obs["true_cell_type"] == "T cell").to_numpy()
    assert np.mean(_fraction(a0, MOUSE_HB)[t0]) * 5 < np.mean(_fraction(a1, MOUSE_HB)[t1])


def test_reproducible() -> None:
    a = bm.datasets.simulate_bone_metastasis(600, 2, species="human", seed=11)
    b = bm.datasets.simulate_bone_metastasis(600, 2, species="human", seed=11)
    c = bm.datasets.simulate_bone_metastasis(600, 2, species="human", seed=12)
    assert (a.X != b.X).nnz == 0
    assert a.obs.equals(b.obs) and a.var_names.equals(b.var_names)
    assert (a.X != c.X).nnz > 0


def test_batch_effect_separates_samples(mouse: ad.AnnData) -> None:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    obs = mouse.obs
    m = (
        (obs["true_population"] == "Mature neutrophil")
        & ~obs["true_doublet"]
        & ~obs["true_low_quality"]
    ).to_numpy()
    logx = _lognorm(mouse)[m]
    top = np.argsort(-np.asarray(logx.mean(0)).ravel())[:800]
    pcs = PCA(15, random_state=0).fit_transform(logx[:, top].toarray())
    y = obs["sample"].to_numpy()[m]
    acc = cross_val_score(LogisticRegression(max_iter=2000), pcs, y, cv=3).mean()
    assert acc > 0.6  # chance is about 0.25


def test_markers_enriched_but_partial(mouse: ad.AnnData) -> None:
    obs = mouse.obs
    single = ~obs["true_doublet"].to_numpy()
    logx = _lognorm(mouse)
    pop = obs["true_population"].to_numpy()

    def is_(*pops: str) -> np.ndarray:
        return np.isin(pop, pops) & single

    cd8 = is_("CD8 T", TPEX, TEX)
    in_cd8 = _mean_expr(mouse, logx, "Cd8a", cd8)
    assert in_cd8 > 0.3 and in_cd8 > 20 * _mean_expr(mouse, logx, "Cd8a", ~cd8 & single)
    checks = [  # (gene, population(s) high, population(s) low, margin)
        ("Tcf7", (TPEX,), (TEX,), 0.3),
        ("Havcr2", (TEX,), (TPEX,), 0.3),
        ("Foxp3", ("Treg",), ("CD4 T",), 0.3),
        ("Chil3", (IMM,), ("Mature neutrophil",), 1.0),
        ("Vcam1", (IRON,), ("Macrophage",), 0.5),
        ("Cd163", (IRON,), ("Macrophage",), 0.5),
        ("Ccr3", (IRON,), ("Macrophage",), 0.5),
        ("Slc40a1", (IRON,), ("Macrophage",), 0.5),
        ("Spp1", ("Osteoclast",), ("Macrophage",), 1.5),
        ("Epcam", ("Tumour epithelial",), ("Osteoblast", "B"), 0.8),
        ("C1qa", ("Macrophage", IRON), ("Classical monocyte",), 0.5),
        ("Ly6g", ("Mature neutrophil", "PMN-MDSC"), ("Classical monocyte",), 0.5),
    ]
    for gene, hi, lo, margin in checks:
        assert (
            _mean_expr(mouse, logx, gene, is_(*hi))
            > _mean_expr(mouse, logx, gene, is_(*lo)) + margin
        ), gene
    # the programmes use only part of the canonical markers
    sim = mouse.uns["bonemet_simulation"]
    used, unused = sim["markers_used"], sim["markers_unused"]
    assert sum(len(v) for v in unused.values()) >= 60
    assert sum(len(unused[k]) > 0 for k in unused) >= 20
    assert {"Vcam1", "Cd163", "Ccr3"} <= set(used["iron-recycling macrophage"])
    # an unused canonical marker is not enriched the way a used one is
    left_out = [g for g in unused["Osteoclast"] if g in mouse.var_names]
    assert left_out
    ocl = is_("Osteoclast")
    other = single & ~ocl
    gains = [_mean_expr(mouse, logx, g, ocl) - _mean_expr(mouse, logx, g, other) for g in left_out]
    assert min(gains) < 0.5


def test_dkk1_by_sample(mouse: ad.AnnData) -> None:
    obs = mouse.obs
    tum = ((obs["true_population"] == "Tumour epithelial") & ~obs["true_doublet"]).to_numpy()
    logx = _lognorm(mouse)
    j = mouse.var_names.get_loc("Dkk1")
    by = (
        pd.Series(np.asarray(logx[tum][:, j].todense()).ravel())
        .groupby(obs["condition"].to_numpy()[tum])
        .mean()
    )
    assert by["bone_met"] > by["control"]
    level = mouse.uns["bonemet_simulation"]["samples"]["dkk1_level"]
    assert np.ptp(level) > 0.3


def test_uns_roundtrip(human: ad.AnnData, tmp_path) -> None:
    path = tmp_path / "sim.h5ad"
    human.write_h5ad(path)
    back = ad.read_h5ad(path)
    sim = back.uns["bonemet_simulation"]
    assert sim["species"] == "human" and sim["seed"] == 3 and sim["n_cells"] == 1500
    assert list(sim["samples"]["sample"]) == ["bm01", "bm02"]
    comp = pd.read_json(__import__("io").StringIO(sim["composition"]), orient="split")
    assert np.allclose(comp.sum(axis=1), 1.0)
    assert (back.X != human.X).nnz == 0


def test_human_markers(human: ad.AnnData) -> None:
    single = ~human.obs["true_doublet"].to_numpy()
    logx = _lognorm(human)
    pop = human.obs["true_population"].to_numpy()
    imm = (pop == IMM) & single
    mat = (pop == "Mature neutrophil") & single
    assert _mean_expr(human, logx, "CHI3L1", imm) > _mean_expr(human, logx, "CHI3L1", mat) + 1.0
    ery = (pop == "Erythroid progenitor") & single
    assert np.median(_fraction(human, HUMAN_HB)[ery]) > 0.05


def test_single_sample() -> None:
    a = bm.datasets.simulate_bone_metastasis(300, 1, seed=1, species="human")
    assert a.n_obs == 300 and set(a.obs["condition"]) == {"bone_met"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"species": "rat"}, "species"),
        ({"n_cells": 50, "n_samples": 4}, "too few"),
        ({"n_samples": 0}, "n_samples"),
        ({"doublet_rate": 0.7}, "doublet_rate"),
        ({"ambient": -0.1}, "ambient"),
        ({"n_samples": 2, "n_batches": 3}, "n_batches"),
        ({"de_population": "Osteocyte", "de_genes": 5}, "de_population"),
        ({"de_population": "B", "de_genes": 5, "de_lfc": 0}, "de_lfc"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(bm.InputError, match=match):
        bm.datasets.simulate_bone_metastasis(**{"n_cells": 500, **kwargs})


def test_options_leave_the_default_output_alone() -> None:
    """n_batches and planted DE draw from their own generator: the default data is unchanged,
    and with them every cell keeps its sample, population and truth flags."""
    a = bm.datasets.simulate_bone_metastasis(900, 4, species="human", seed=5)
    b = bm.datasets.simulate_bone_metastasis(
        900, 4, species="human", seed=5, n_batches=2, de_population="B", de_genes=10
    )
    assert "batch" not in a.obs and "planted_de" not in a.uns["bonemet_simulation"]
    cols = ["sample", "condition", "true_population", "true_doublet", "true_low_quality"]
    assert all(np.array_equal(a.obs[c].to_numpy(), b.obs[c].to_numpy()) for c in cols)
    assert (a.X != b.X).nnz > 0


def test_batches_cross_condition() -> None:
    a = bm.datasets.simulate_bone_metastasis(1800, 6, seed=2, n_batches=2)
    design = a.obs.groupby(["condition", "batch"], observed=True)["sample"].nunique()
    # 3 samples per condition, dealt to 2 batches: both batches in both conditions
    assert design.to_dict() == {
        ("bone_met", "batch1"): 2, ("bone_met", "batch2"): 1,
        ("control", "batch1"): 2, ("control", "batch2"): 1,
    }  # fmt: skip
    assert list(a.uns["bonemet_simulation"]["samples"]["batch"]) == [
        "batch1", "batch2", "batch1", "batch1", "batch2", "batch1"
    ]  # fmt: skip


@pytest.mark.slow
def test_planted_truth_is_recovered_with_samples_as_replicates() -> None:
    """The demo's design (6 samples, 2 batches crossing condition, planted DE in classical
    monocytes): the compare stage's tests on the true populations find the large planted
    abundance shifts and the planted DE genes, and leave the planted nulls alone."""
    a = bm.datasets.simulate_bone_metastasis(
        6000, 6, seed=0, n_batches=2, de_population="Classical monocyte", de_genes=30
    )
    a = a[~a.obs["true_doublet"] & ~a.obs["true_low_quality"]].copy()
    a.layers["counts"] = a.X.copy()
    sim = a.uns["bonemet_simulation"]
    exp = pd.read_json(__import__("io").StringIO(sim["expected_composition"]), orient="split")
    assert np.allclose(exp.sum(axis=1), 1.0)
    truth = np.log2(exp.loc["bone_met"] / exp.loc["control"])
    kw = {"population_key": "true_population", "covariates": ["batch"], "reference": "control"}
    da = bm.tl.differential_abundance(a, **kw)
    da = da[da["kind"] == "population"].set_index("test")
    big = truth.index[truth.abs() >= 1.5]  # tumour ×11, CHI3L3+ immature neutrophils ×3.8
    null = truth.index[truth.abs() < 0.1]  # plasma, macrophage, mast, osteoblast, MSC, endothelial
    assert len(big) == 2 and len(null) == 6
    assert (da.loc[big, "padj"] < 0.05).all()
    assert (np.sign(da.loc[big, "log2fc"]) == np.sign(truth[big])).all()
    assert (da.loc[null, "padj"] >= 0.05).all()
    de, _ = bm.tl.pseudobulk_de(a, **kw, populations=["Classical monocyte", "B"])
    planted = dict(zip(sim["planted_de"]["genes"], sim["planted_de"]["log2fc"]))
    mono = de[de["population"] == "Classical monocyte"].set_index("gene")
    hits = mono.index[mono["padj"] < 0.05]
    found = [g for g in planted if g in hits]
    assert len(found) >= 0.8 * len(planted)
    assert all(np.sign(mono.loc[g, "log2fc"]) == np.sign(planted[g]) for g in found)
    assert len(set(hits) - set(planted)) <= 0.2 * len(hits)
    b_hits = set(de.loc[(de["population"] == "B") & (de["padj"] < 0.05), "gene"])
    assert not b_hits & set(planted)  # the planted genes differ in monocytes only


def _share(adata: ad.AnnData, gene: str, mask: np.ndarray) -> float:
    X = adata.X
    tot = np.asarray(X.sum(1)).ravel()
    j = adata.var_names.get_loc(gene)
    return float(np.mean(np.asarray(X[:, j].todense()).ravel()[mask] / tot[mask]))


def test_haem_synthesis_tigit_and_its_ligands(mouse: ad.AnnData) -> None:
    """Erythroid progenitors make haem (the WP561 enzymes and Alas2) and mimics more than
    other tumour cells; TIGIT on Tex and Tregs, its ligands PVR/NECTIN2 on myeloid and
    tumour cells; the globin truth separates a mimic's own globin from ambient globin."""
    obs = mouse.obs
    pop = obs["true_population"].astype(str).to_numpy()
    single = ~obs["true_doublet"].to_numpy()
    ery = (pop == "Erythroid progenitor") & single
    lymph = np.isin(pop, ["B", "CD4 T", "CD8 T"]) & single
    haem = ["Alas1", "Alad", "Hmbs", "Uros", "Urod", "Cpox", "Ppox", "Fech"]
    for g in [*haem, "Alas2"]:
        assert _share(mouse, g, ery) > 2.5 * _share(mouse, g, lymph), g
    assert _share(mouse, "Alas2", ery) > 5e-4
    tum = (pop == "Tumour epithelial") & single
    mim = obs["true_erythroid_mimicry"].to_numpy()
    h_mim = np.mean([_share(mouse, g, tum & mim) for g in haem])
    h_tum = np.mean([_share(mouse, g, tum & ~mim) for g in haem])
    h_ery = np.mean([_share(mouse, g, ery) for g in haem])
    assert 1.3 * h_tum < h_mim < h_ery  # moderately, below erythroid cells
    cd8 = (pop == "CD8 T") & single
    for p in (TEX, "Treg"):
        assert _share(mouse, "Tigit", (pop == p) & single) > 5 * _share(mouse, "Tigit", cd8), p
    for p in ("Classical monocyte", "Macrophage", "Tumour epithelial"):
        m = (pop == p) & single
        assert _share(mouse, "Pvr", m) + _share(mouse, "Nectin2", m) > 1.5 * (
            _share(mouse, "Pvr", lymph) + _share(mouse, "Nectin2", lymph)
        ), p
    own = obs["true_globin_own"].to_numpy()
    amb = obs["true_globin_ambient"].to_numpy()
    assert np.median(own[tum & mim]) > 20 * np.median(own[tum & ~mim])
    assert (amb[single] > 0).all()
    # most mimics make globin well above the droplet's ambient globin, a weak tail does not
    above = own[tum & mim] >= 2 * amb[tum & mim]
    assert 0.5 < above.mean() < 0.95
