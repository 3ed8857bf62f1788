"""The review's axes as the papers state them: values, n cells, 95% CIs, rho with p and n."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import bonemet as bm
from bonemet import InputError

IRON = "Iron-recycling macrophage (VCAM1+CD163+CCR3+)"


def _axes_data() -> ad.AnnData:
    genes = ["SPP1", "SLC40A1", "TFRC", "DKK1", "CKAP4", "TIGIT", "CD226", "PVR", "NECTIN2",
             "HBB", "HBA1", "ALAS2", "ACTB"]  # fmt: skip
    cells = []  # (sample, population, {gene: value})
    s1 = [
        ("Osteoclast", 4, {"SPP1": 2.5}),
        ("Osteoblast", 2, {"SPP1": 1.0}),
        ("CD8 T", 4, {"TIGIT": 0.0}),
        ("CD8 Tpex (TCF1+)", 2, {"TIGIT": 0.5, "CD226": 1.5}),
        ("CD8 Tex (terminal)", 6, {"TIGIT": 2.5}),
        ("Treg", 3, {"TIGIT": 2.0}),
        ("Macrophage", 3, {"SLC40A1": 1.0}),
        (IRON, 1, {"SLC40A1": 3.0, "SPP1": 0.5}),
        (
            "Tumour epithelial",
            4,
            {"TFRC": 1.5, "DKK1": 0.75, "PVR": 2.0, "NECTIN2": 1.0, "SPP1": 0.25},
        ),  # fmt: skip
        ("Immature neutrophil (CHI3L3+)", 3, {"CKAP4": 1.0}),
        ("Mature neutrophil", 3, {}),
        ("Classical monocyte", 4, {"PVR": 0.5, "NECTIN2": 1.5}),
        ("Erythroid progenitor", 5, {"TFRC": 2.0, "HBB": 4.0, "HBA1": 3.0, "ALAS2": 1.0}),
    ]
    s2 = [p for p in s1 if p[0] != "Osteoclast"]  # no osteoclasts in s2
    for s, spec in (("s1", s1), ("s2", s2)):
        for pop, n, vals in spec:
            cells += [(s, pop, vals)] * n
    X = np.zeros((len(cells), len(genes)))
    for i, (_, _, vals) in enumerate(cells):
        X[i, genes.index("ACTB")] = 3.3
        for g, v in vals.items():
            X[i, genes.index(g)] = v
    # one tumour cell of s1 with more TFRC: a spread for the t-interval
    tum = [i for i, c in enumerate(cells) if c[0] == "s1" and c[1] == "Tumour epithelial"]
    X[tum[0], genes.index("TFRC")] = 3.5
    obs = pd.DataFrame(
        [(s, p) for s, p, _ in cells],
        columns=["sample", "population"],
        index=[f"c{i}" for i in range(len(cells))],
    )
    obs["condition"] = obs["sample"].map({"s1": "bone_met", "s2": "control"})
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))


def _get(t: pd.DataFrame, sample: str, q: str) -> pd.Series:
    return t[(t["sample"] == sample) & (t["quantity"] == q)].iloc[0]


@pytest.mark.parametrize("sparse", [False, True])
def test_axes_as_the_papers_state_them(sparse: bool) -> None:
    a = _axes_data()
    if sparse:
        a.X = sp.csr_matrix(a.X)
    t = bm.tl.axes_table(a, min_cells=1)
    assert set(t["quantity"]) == {q.key for q in bm.tl.AXIS_QUANTITIES}
    # Tpex / (Tpex + Tex), not over all CD8 (which would be 2 / 12), with a Wilson CI
    r = _get(t, "s1", "tpex_fraction")
    assert r["value"] == pytest.approx(2 / 8) and r["n_cells"] == 8
    assert r["ci_low"] == pytest.approx(0.0715, abs=1e-3)
    assert r["ci_high"] == pytest.approx(0.5907, abs=1e-3)
    # SPP1 from every source, separately
    assert _get(t, "s1", "osteoclast_SPP1")["value"] == pytest.approx(2.5)
    assert _get(t, "s1", "osteoblast_SPP1")["value"] == pytest.approx(1.0)
    assert _get(t, "s1", "tumour_SPP1")["value"] == pytest.approx(0.25)
    assert _get(t, "s1", "macrophage_SPP1")["value"] == pytest.approx(0.5 / 4)
    assert _get(t, "s1", "spp1pos_macrophage_fraction")["value"] == pytest.approx(1 / 4)
    # iron: ferroportin on the iron-recycling subset only (all macrophages would be 1.5)
    r = _get(t, "s1", "iron_macrophage_SLC40A1")
    assert r["value"] == pytest.approx(3.0) and r["n_cells"] == 1
    assert _get(t, "s1", "iron_macrophage_fraction")["value"] == pytest.approx(1 / 4)
    # a mean carries a t-interval over cells: TFRC in tumour = (3.5 + 3 * 1.5) / 4
    r = _get(t, "s1", "tumour_TFRC")
    v = np.array([3.5, 1.5, 1.5, 1.5])
    from scipy import stats

    half = stats.t.ppf(0.975, 3) * v.std(ddof=1) / 2
    assert r["value"] == pytest.approx(v.mean()) and r["n_cells"] == 4
    assert r["ci_high"] == pytest.approx(v.mean() + half)
    assert r["ci_low"] == pytest.approx(max(v.mean() - half, 1.5))  # clipped at the minimum
    # anaemia arm in erythroid progenitors
    assert _get(t, "s1", "erythroid_TFRC")["value"] == pytest.approx(2.0)
    r = _get(t, "s1", "erythroid_globin")
    assert r["value"] == pytest.approx(3.5) and r["genes"] == "HBB, HBA1"
    assert _get(t, "s1", "erythroid_ALAS2")["value"] == pytest.approx(1.0)
    # TIGIT on every CD8 state and on Tregs; PVR/NECTIN2 on myeloid and tumour cells
    assert _get(t, "s1", "cd8_TIGIT")["value"] == pytest.approx((2 * 0.5 + 6 * 2.5) / 12)
    assert _get(t, "s1", "treg_TIGIT")["value"] == pytest.approx(2.0)
    assert _get(t, "s1", "myeloid_PVR")["value"] == pytest.approx(4 * 0.5 / 8)
    assert _get(t, "s1", "tumour_NECTIN2")["value"] == pytest.approx(1.0)
    assert _get(t, "s1", "neutrophil_CKAP4")["value"] == pytest.approx(0.5)
    # the score is absent: noted, not fatal
    assert "score_erythroid_mimicry" in _get(t, "s1", "tumour_erythroid_mimicry")["note"]
    # no osteoclasts in s2
    r = _get(t, "s2", "osteoclast_SPP1")
    assert np.isnan(r["value"]) and r["n_cells"] == 0 and "Osteoclast" in r["note"]
    assert set(t["condition"]) == {"bone_met", "control"}


def test_min_cells_default_is_20_and_genes_match_mouse_case() -> None:
    a = _axes_data()
    a = a[:, [g for g in a.var_names if g != "DKK1"]].copy()
    a.var_names = [g.capitalize() for g in a.var_names]  # mouse-style symbols
    t = bm.tl.axes_table(a)
    r = _get(t, "s1", "osteoclast_SPP1")
    assert np.isnan(r["value"]) and r["note"] == "4 Osteoclast cells (< 20)"
    t = bm.tl.axes_table(a, min_cells=3)
    assert _get(t, "s1", "osteoclast_SPP1")["value"] == pytest.approx(2.5)
    assert "not in var_names" in _get(t, "s1", "tumour_DKK1")["note"]
    b = a.copy()
    del b.obs["population"]
    with pytest.raises(InputError, match="annotate"):
        bm.tl.axes_table(b)


def test_spearman_comes_with_p_and_n() -> None:
    rows = []
    xs, ys = [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.3, 0.4]
    for i, (x, y) in enumerate(zip(xs, ys)):
        for q, v in (("osteoclast_SPP1", x), ("tpex_fraction", y), ("tumour_DKK1", x)):
            rows.append({"sample": f"s{i}", "quantity": q, "value": v})
    rows.append({"sample": "s0", "quantity": "chi3l3_neutrophil_fraction", "value": 0.3})
    c = bm.tl.axes_correlations(pd.DataFrame(rows)).set_index("x")
    r = c.loc["osteoclast_SPP1"]
    # exact permutation p, two-sided: 2 of the 4! orderings are as extreme
    assert r["rho"] == pytest.approx(1.0) and r["p"] == pytest.approx(2 / 24)
    assert r["n_samples"] == 4 and "exact" in r["method"]
    r = c.loc["tumour_DKK1"]
    assert np.isnan(r["rho"]) and np.isnan(r["p"]) and r["n_samples"] == 1
    assert "< 3" in r["note"]


def test_review_axes_figure_titles_carry_rho_p_and_n() -> None:
    a = _axes_data()
    fig = bm.pl.review_axes(a, table=bm.tl.axes_table(a, min_cells=1))
    titles = [ax.get_title() for ax in fig.axes]
    assert any("SPP1 by source" in s for s in titles)
    assert all("n = " in s for s in titles)
