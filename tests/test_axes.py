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
    stages = {f"neutrophil_stage{k}_{x}" for k in range(1, 5) for x in ("share", "chil3_fraction")}
    assert set(t["quantity"]) == {q.key for q in bm.tl.AXIS_QUANTITIES} | stages
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
    # no mimicry calls yet: noted, not fatal
    assert "erythroid_mimicry_call" in _get(t, "s1", "tumour_erythroid_mimicry")["note"]
    # with calls: the called fraction of the assessed tumour cells, Wilson CI, n
    b = a.copy()
    tum = (b.obs["population"] == "Tumour epithelial").to_numpy()
    call = np.zeros(b.n_obs, dtype=bool)
    call[np.flatnonzero(tum)[:1]] = True
    b.obs["erythroid_mimicry_call"] = call
    klass = np.where(tum, "below_background", "not_assessed").astype(object)
    klass[call] = "globin_only"
    b.obs["erythroid_mimicry_class"] = klass
    r = _get(bm.tl.axes_table(b, min_cells=1), "s1", "tumour_erythroid_mimicry")
    n_t = int((tum & (b.obs["sample"] == "s1").to_numpy()).sum())
    assert r["statistic"] == "fraction called" and r["n_cells"] == n_t
    assert r["value"] == pytest.approx(1 / n_t)
    lo, hi = bm.tl.wilson_interval(1, n_t)
    assert r["ci_low"] == pytest.approx(float(lo)) and r["ci_high"] == pytest.approx(float(hi))
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


# -- DKK1 axis: Chil3+ fraction per neutrophil maturation stage ---------------------------

NEU = ("Immature neutrophil (CHI3L3+)", "PMN-MDSC", "Mature neutrophil")


def _lognorm_truth(a: ad.AnnData) -> ad.AnnData:
    """Singlets, log1p CP10k, the planted populations as ``obs["population"]``."""
    import scanpy as sc

    a = a[~a.obs["true_doublet"].to_numpy()].copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    a.obs["population"] = a.obs["true_population"].astype(str)
    return a


@pytest.fixture(scope="module")
def neutrophil_data() -> ad.AnnData:
    return _lognorm_truth(bm.datasets.simulate_bone_metastasis(4000, 4, species="mouse", seed=3))


def _stage_values(t: pd.DataFrame, q: str) -> pd.Series:
    return t[t["quantity"] == q].set_index("sample")["value"]


def _pooled_chil3(a: ad.AnnData, stage: str, condition: str, gene: str = "Chil3") -> tuple:
    m = (a.obs["neutrophil_maturation_stage"] == stage) & (a.obs["condition"] == condition)
    pos = np.asarray(a[m.to_numpy(), gene].X.toarray()[:, 0] > 0)
    from bonemet.tl._axes import _wilson

    return _wilson(int(pos.sum()), int(pos.size))


def test_maturation_stages_put_the_planted_immature_state_early(neutrophil_data) -> None:
    a = neutrophil_data.copy()
    bm.tl.neutrophil_maturation(a)
    stage = a.obs["neutrophil_maturation_stage"]
    cats = list(stage.cat.categories)
    assert cats[0] == "stage 1/4 (earliest)" and cats[-1] == "stage 4/4 (most mature)"
    pop = a.obs["population"]
    assert stage[~pop.isin(NEU)].isna().all()  # only the neutrophil lineage is ordered
    code = stage.cat.codes
    imm, mat = pop == NEU[0], pop == NEU[2]
    # the CHI3L3+ cells sit at the granule-rich start, mature cells at the end
    assert (code[imm] == 0).mean() > 0.8 and (code[imm] <= 1).mean() > 0.95
    assert (code[mat] >= 2).mean() > 0.9
    assert (
        a.obs.loc[imm, "neutrophil_maturation"].median()
        < a.obs.loc[pop == NEU[1], "neutrophil_maturation"].median()
        < a.obs.loc[mat, "neutrophil_maturation"].median()
    )


def test_chil3_per_stage_separates_expansion_from_an_induced_state(neutrophil_data) -> None:
    a = neutrophil_data
    t = bm.tl.axes_table(a)
    cond = t.groupby("sample")["condition"].first()
    met, ctl = cond.index[cond == "bone_met"], cond.index[cond == "control"]
    early = _stage_values(t, "neutrophil_stage1_share")
    # DKK1 expands the early (Chil3+) stage: every bone_met sample above every control
    assert early[met].min() > early[ctl].max()
    r = t[t["quantity"] == "neutrophil_stage1_share"].iloc[0]
    assert r["n_cells"] >= 20 and r["ci_low"] <= r["value"] <= r["ci_high"]
    # in the earliest stage most cells are Chil3+ in both conditions (normal maturation)
    assert (_stage_values(t, "neutrophil_stage1_chil3_fraction").dropna() > 0.7).all()
    # in the generated truth mature neutrophils carry Chil3 equally in both conditions
    b = a.copy()
    bm.tl.neutrophil_maturation(b)
    last = "stage 4/4 (most mature)"
    pm, lo_m, hi_m = _pooled_chil3(b, last, "bone_met")
    pc, lo_c, hi_c = _pooled_chil3(b, last, "control")
    assert abs(pm - pc) < 0.1 and lo_m < hi_c and lo_c < hi_m
    # an induced state: Chil3 switched on in half of bone_met mature neutrophils. The
    # ordering does not use Chil3, so the stages stay; the late-stage fraction rises.
    c = a.copy()
    rng = np.random.default_rng(0)
    hit = np.flatnonzero(
        ((c.obs["population"] == NEU[2]) & (c.obs["condition"] == "bone_met")).to_numpy()
    )
    hit = hit[rng.random(hit.size) < 0.5]
    X = c.X.tolil()
    X[hit, c.var_names.get_loc("Chil3")] = 2.0
    c.X = X.tocsr()
    t2 = bm.tl.axes_table(c)
    assert (t2.loc[t2["quantity"].str.endswith("_share"), "value"].to_numpy()
            == pytest.approx(t.loc[t["quantity"].str.endswith("_share"), "value"].to_numpy(), nan_ok=True))  # fmt: skip
    late = _stage_values(t2, "neutrophil_stage4_chil3_fraction")
    before = _stage_values(t, "neutrophil_stage4_chil3_fraction")
    # half of the Chil3-negative mature cells turn positive: a rise of about (1 - before) / 2
    assert ((late[met] - before[met]) > 0.3 * (1 - before[met])).all()
    assert late[ctl].to_numpy() == pytest.approx(before[ctl].to_numpy())
    assert late[met].min() > late[ctl].max()


def test_axes_figure_draws_chil3_per_stage_one_point_per_sample_and_stage(neutrophil_data) -> None:
    from matplotlib.colors import to_hex

    from bonemet.pl._common import colors_for

    a = neutrophil_data.copy()
    a.uns["bonemet_compare"] = {"reference": "control"}
    t = bm.tl.axes_table(a)
    stages = bm.pl.neutrophil_stage_values(t)
    assert set(stages["stage"]) == {1, 2, 3, 4} and len(stages) == 4 * a.obs["sample"].nunique()
    fig = bm.pl.review_axes(a, table=t)
    assert not bm.pl.text_overlaps(fig), bm.pl.text_overlaps(fig)[:5]
    ax = next(x for x in fig.axes if "Chil3+ by neutrophil stage" in x.get_title())
    # one point (with its CI bar) per sample x stage that has enough cells
    pts = [(float(x), float(y)) for c in ax.containers for x, y in zip(*c.lines[0].get_data())]
    finite = stages.dropna(subset=["value"])
    assert len(pts) == len(finite) >= 12
    assert sorted(round(y, 9) for _, y in pts) == sorted(round(v, 9) for v in finite["value"])
    assert all(len(c.lines[2]) == 1 for c in ax.containers)  # the CI bars
    # grouped by condition within each stage, the reference (control) left of bone_met
    _, colors = colors_for(a, "condition")
    seen = set()
    for c in ax.containers:
        x = c.lines[0].get_xdata()
        k = int(np.round(np.mean(x)))
        side = np.mean(x) - k
        is_ref = to_hex(c.lines[0].get_color()) == to_hex(colors["control"])
        assert (side < 0) == is_ref
        seen.add(is_ref)
    assert seen == {True, False}
    # n cells per sample under each stage, and the samples per condition in the title
    ticks = [tl.get_text() for tl in ax.get_xticklabels()]
    assert ticks[0].startswith("1\nearliest\nn = ") and "most mature" in ticks[-1]
    n_drawn = finite.groupby("stage")["sample"].nunique().reindex([1, 2, 3, 4], fill_value=0)
    assert [f"of {len(set(stages['sample']))} samples" in x for x in ticks] == list(n_drawn < 4)
    assert "control 2, bone_met 2 samples" in ax.get_title()
    assert ax.get_ylabel().startswith("Chil3+ fraction")
    # the reference is the compare stage's, not a fixed name
    a.uns["bonemet_compare"] = {"reference": "bone_met"}
    _, colors = colors_for(a, "condition")  # the reference takes the first colour
    fig = bm.pl.review_axes(a, table=t)
    ax = next(x for x in fig.axes if "Chil3+ by neutrophil stage" in x.get_title())
    for c in ax.containers:
        x = c.lines[0].get_xdata()
        left = np.mean(x) - np.round(np.mean(x)) < 0
        assert left == (to_hex(c.lines[0].get_color()) == to_hex(colors["bone_met"]))
    assert "bone_met 2, control 2 samples" in ax.get_title()


def test_human_stage_readout_uses_chi3l1_as_the_proxy() -> None:
    a = _lognorm_truth(bm.datasets.simulate_bone_metastasis(2000, 2, species="human", seed=1))
    t = bm.tl.axes_table(a, min_cells=5)
    r = t[t["quantity"] == "neutrophil_stage1_chil3_fraction"].iloc[0]
    assert r["genes"] == "CHI3L1" and "proxy" in r["label"]
    assert "MPO" in t[t["quantity"] == "neutrophil_stage1_share"].iloc[0]["genes"]
    assert r["value"] > 0.5
    assert (
        not t[t["quantity"].str.startswith("neutrophil_stage")]["axis"].ne("DKK1 (Shi 2025)").any()
    )
    with pytest.raises(InputError, match="n_stages"):
        bm.tl.neutrophil_maturation(a, n_stages=1)
    assert not any(
        q.startswith("neutrophil_stage")
        for q in bm.tl.axes_table(a, neutrophil_stages=0)["quantity"]
    )


# -- OPN axis paired by subject (Cheng 2025: bone SPP1 vs extraosseous Tpex) ---------------


TPEX, TEX = "CD8 Tpex (TCF1+)", "CD8 Tex (terminal)"


@pytest.fixture(scope="module")
def paired_design() -> ad.AnnData:
    """Five subjects, each with a bone sample (bm01-05) and an extraosseous one (bm06-10).

    Planted: osteoclast SPP1 rises by subject in the bone sample, and the same subject's
    extraosseous Tpex / (Tpex + Tex) falls (0.8 to 0.05), so rho across subjects is -1."""
    a = _lognorm_truth(bm.datasets.simulate_bone_metastasis(4000, 10, species="mouse", seed=2))
    sample = a.obs["sample"].astype(str)
    num = sample.str[2:].astype(int)
    a.obs["mouse"] = [f"m{(i - 1) % 5 + 1}" for i in num]
    a.obs["site"] = np.where(num <= 5, "bone", "subcutaneous")
    X = a.X.tolil()
    spp1 = a.var_names.get_loc("Spp1")
    pop = a.obs["population"].to_numpy().copy()
    for i in range(5):
        oc = np.flatnonzero(
            ((sample == f"bm{i + 1:02d}") & (a.obs["population"] == "Osteoclast")).to_numpy()
        )
        for c in oc:
            X[c, spp1] = X[c, spp1] + 2.0 * i
        t = np.flatnonzero((sample == f"bm{i + 6:02d}").to_numpy() & np.isin(pop, [TPEX, TEX]))
        k = int(round(t.size * (0.8, 0.6, 0.4, 0.2, 0.05)[i]))
        pop[t[:k]], pop[t[k:]] = TPEX, TEX
    a.X = X.tocsr()
    a.obs["population"] = pop
    return a


def test_opn_pairs_each_subjects_bone_sample_with_its_extraosseous_one(paired_design) -> None:
    a = paired_design
    t = bm.tl.axes_table(a, min_cells=3, subject_key="mouse", tissue_key="site")
    assert {"subject", "tissue"} <= set(t.columns)
    pt = bm.tl.axes_paired(t).set_index("subject")
    assert list(pt.index) == ["m1", "m2", "m3", "m4", "m5"]
    assert pt.loc["m3", "bone_sample"] == "bm03" and pt.loc["m3", "extraosseous_sample"] == "bm08"
    # the paired values are the bone sample's SPP1 and the extraosseous sample's Tpex
    assert pt.loc["m3", "bone_osteoclast_SPP1_value"] == pytest.approx(
        _get(t, "bm03", "osteoclast_SPP1")["value"]
    )
    r = _get(t, "bm08", "tpex_fraction")
    assert pt.loc["m3", "extraosseous_tpex_fraction_value"] == pytest.approx(r["value"])
    assert pt.loc["m3", "extraosseous_tpex_fraction_n_cells"] == r["n_cells"] >= 3
    assert (pt["extraosseous_tpex_fraction_ci_low"] <= pt["extraosseous_tpex_fraction_value"]).all()
    assert pt["note"].eq("").all()
    c = bm.tl.axes_correlations(t)
    paired = c[c["axis"].str.contains("paired by subject")].iloc[0]
    # the planted inverse relation across subjects: rho = -1, exact p = 2 / 5!
    assert paired["rho"] == pytest.approx(-1.0) and paired["p"] == pytest.approx(2 / 120)
    assert paired["n_samples"] == 5 and paired["x"] == "bone:osteoclast_SPP1"
    # the per-sample rows are still there, as without subjects
    assert (c["x"] == "osteoclast_SPP1").sum() == 1
    # two subjects: not testable, said so
    two = t[t["subject"].isin(["m1", "m2"])]
    p2 = bm.tl.axes_correlations(two)
    p2 = p2[p2["axis"].str.contains("paired")].iloc[0]
    assert np.isnan(p2["rho"]) and p2["n_samples"] == 2 and "not testable" in p2["note"]


def test_opn_without_subjects_stays_per_sample_and_bad_designs_fail(paired_design) -> None:
    a = paired_design
    t = bm.tl.axes_table(a, min_cells=3)
    assert "subject" not in t.columns
    c = bm.tl.axes_correlations(t)
    assert not c["axis"].str.contains("paired").any()
    assert c.loc[c["x"] == "osteoclast_SPP1", "n_samples"].iloc[0] >= 5
    with pytest.raises(InputError, match="subject_key"):
        bm.tl.axes_table(a, subject_key="nope", tissue_key="site")
    with pytest.raises(InputError, match="axes_table"):
        bm.tl.axes_paired(t)
    b = a.copy()
    b.obs.loc[b.obs["sample"] == "bm06", "site"] = "bone"  # m1 now has two bone samples
    tb = bm.tl.axes_table(b, min_cells=3, subject_key="mouse", tissue_key="site")
    with pytest.raises(InputError, match="m1.*2 bone samples"):
        bm.tl.axes_paired(tb)
    b.obs["mouse"] = b.obs["mouse"].astype(str)
    b.obs.iloc[0, b.obs.columns.get_loc("mouse")] = "m9"  # a sample with two subjects
    with pytest.raises(InputError, match="several values"):
        bm.tl.axes_table(b, subject_key="mouse", tissue_key="site")


def test_run_tables_pair_by_the_axes_config(paired_design, tmp_path) -> None:
    from bonemet.report import build_tables

    a = paired_design.copy()
    a.obs["score_hypoxia"] = 0.0  # the axes tables are built for scored runs
    cfg = bm.load_config(
        {"axes": {"subject_key": "mouse", "tissue_key": "site", "min_cells": 3},
         "report": {"integration_metrics": "sklearn-fallback"}}
    )  # fmt: skip
    names = ["axes", "axes_paired", "axes_correlations"]
    tabs = build_tables(a, cfg, names=names)
    assert set(tabs) == set(names)
    assert tabs["axes_paired"]["subject"].tolist() == ["m1", "m2", "m3", "m4", "m5"]
    c = tabs["axes_correlations"]
    assert c.loc[c["axis"].str.contains("paired"), "rho"].iloc[0] == pytest.approx(-1.0)
    # default config: no pairing, and the stage rows follow axes.neutrophil_stages
    tabs = build_tables(
        a, bm.load_config({"axes": {"neutrophil_stages": 3, "min_cells": 3}}), names=names
    )
    assert "axes_paired" not in tabs
    assert not tabs["axes_correlations"]["axis"].str.contains("paired").any()
    assert "neutrophil_stage3_share" in set(tabs["axes"]["quantity"])
    assert "neutrophil_stage4_share" not in set(tabs["axes"]["quantity"])
    with pytest.raises(bm.ConfigError, match="go together"):
        bm.load_config({"axes": {"subject_key": "mouse"}})


def test_samplesheet_subject_and_tissue_reach_obs(tmp_path) -> None:
    raw = bm.datasets.simulate_bone_metastasis(300, 2, species="mouse", seed=4)
    rows = ["sample,path,condition,subject,tissue"]
    for s, tissue in (("bm01", "bone"), ("bm02", "subcutaneous")):
        part = raw[raw.obs["sample"] == s].copy()
        part.obs = part.obs[[]]
        part.obs_names = [n.split("_", 1)[1] for n in part.obs_names]
        part.write_h5ad(tmp_path / f"{s}.h5ad")
        rows.append(f"{s},{s}.h5ad,bone_met,m1,{tissue}")
    sheet = tmp_path / "samples.csv"
    sheet.write_text("\n".join(rows) + "\n")
    merged = bm.pp.merge(bm.io.ingest(sheet))
    per = merged.obs.groupby("sample", observed=True)[["subject", "tissue"]].first()
    assert per.loc["bm01"].tolist() == ["m1", "bone"]
    assert per.loc["bm02"].tolist() == ["m1", "subcutaneous"]
    sheet.write_text(rows[0] + "\n" + rows[1].replace(",m1,", ",mouse 1,") + "\n")
    with pytest.raises(InputError, match="subject 'mouse 1'"):
        bm.io.read_samplesheet(sheet)


def test_report_axes_paragraph_states_the_paired_rho(paired_design) -> None:
    from bonemet.report._narrative import axes_html

    a = paired_design
    t = bm.tl.axes_table(a, min_cells=3, subject_key="mouse", tissue_key="site")
    text = axes_html(t, a)
    opn = next(p for p in text.split("<div") if "OPN (Cheng 2025)" in p)
    assert "paired by subject" in opn and "n = 5 subjects" in opn and "-1.00" in opn
    two = axes_html(t[t["subject"].isin(["m1", "m2"])], a)
    assert "not testable: 2 subjects" in two
    assert "paired by subject" not in axes_html(bm.tl.axes_table(a, min_cells=3), a)
