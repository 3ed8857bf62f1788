"""bm.tl.compare: condition statistics with samples as replicates, on generated and real data."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import bonemet as bm
from bonemet._errors import InputError, NotCountsError

KANG = Path("../shared/data/kang2018_pbmc_ifnb.h5ad")
CHI3L3 = "Immature neutrophil (CHI3L3+)"
DE_POP = "Tumour epithelial"
SMALL = {"n_genes": 120, "cells_per_sample": 500}


def _warnings(adata: ad.AnnData) -> list[str]:
    return [str(w) for w in adata.uns.get("bonemet", {}).get("warnings", [])]


@pytest.fixture(scope="module")
def planted() -> ad.AnnData:
    """4 vs 4 samples, CHI3L3+ x3, 12 DE genes in tumour, tumour hypoxia +0.3, batch crossed."""
    a = bm.datasets.simulate_condition_design(
        n_per_group=4,
        abundance_fold={CHI3L3: 3.0},
        de_population=DE_POP,
        de_genes=12,
        de_lfc=2.0,
        score_shift={DE_POP: 0.3},
        concentration=300.0,
        batch=True,
        seed=3,
        **SMALL,
    )
    bm.tl.compare(a, covariates=["batch"], min_cells=20)
    return a


def test_planted_abundance_found_and_nulls_not(planted: ad.AnnData) -> None:
    da = planted.uns["bonemet_compare"]["differential_abundance"].set_index("test")
    assert da.loc[CHI3L3, "padj"] < 0.05
    assert da.loc["CHI3L3+ immature / neutrophils", "padj"] < 0.05
    assert da.loc[CHI3L3, "log2fc"] == pytest.approx(np.log2(3.0), abs=0.6)
    assert da.loc[CHI3L3, "ci_low"] < da.loc[CHI3L3, "log2fc"] < da.loc[CHI3L3, "ci_high"]
    for frac in ("Tpex / (Tpex + Tex)", "Tpex / CD8 T", "Iron-recycling / macrophages"):
        assert da.loc[frac, "padj"] >= 0.05, frac
        assert da.loc[frac, "ci_low"] < 0 < da.loc[frac, "ci_high"], frac
    assert set(da["kind"]) == {"population", "lineage fraction"}
    assert (da["n_ref"] == 4).all() and (da["n_test"] == 4).all()
    assert da["p_reliable"].all()
    # a within-lineage fraction whose denominators spread widely (here the iron-recycling
    # / macrophage fraction, 2.7-fold) is tested by the shrunk-rho Williams GLM
    from bonemet.tl._compare import DENOMINATOR_SPREAD_LIMIT, WILLIAMS_SHRUNK

    wide = (da["kind"] == "lineage fraction") & (
        da["denominator_spread"] >= DENOMINATOR_SPREAD_LIMIT
    )
    assert wide.any() and (da.loc[wide, "model"] == WILLIAMS_SHRUNK).all()
    assert (da.loc[~wide & (da["kind"] == "lineage fraction"), "model"] == "quasi-Poisson").all()
    assert da.loc[CHI3L3, "cells_per_sample"].count("=") == 8
    assert "compare:" not in " ".join(_warnings(planted))  # a 4 vs 4 design warns nothing


def test_planted_de_found_and_nulls_not(planted: ad.AnnData) -> None:
    de = planted.uns["bonemet_compare"]["pseudobulk_de"]
    tum = de[de["population"] == DE_POP].set_index("gene")
    truth = planted.var["de_truth"]
    hits = truth.index[truth != 0]
    # the down-regulated genes of the lowest baseline fall to a handful of counts
    assert (tum.loc[hits, "padj"] < 0.05).mean() >= 0.75
    assert np.all(np.sign(tum.loc[hits, "log2fc"]) == np.sign(truth[hits]))
    null_calls = (tum.drop(index=hits)["padj"] < 0.05).sum()
    assert null_calls <= 2
    others = de[de["population"] != DE_POP]
    assert len(others) > 0 and (others["padj"] < 0.05).mean() < 0.02
    assert {"log2fc", "lfc_se", "p", "padj", "ci_low", "ci_high"} <= set(de.columns)


def test_planted_score_shift_found(planted: ad.AnnData) -> None:
    st = planted.uns["bonemet_compare"]["score_tests"].set_index(["population", "score"])
    row = st.loc[(DE_POP, "hypoxia")]
    assert row["padj"] < 0.05 and row["effect"] == pytest.approx(0.3, abs=0.1)
    assert row["ci_low"] < 0.3 < row["ci_high"]
    assert not (st.xs("null", level="score")["padj"] < 0.05).any()


def test_results_round_trip_through_h5ad(planted: ad.AnnData, tmp_path: Path) -> None:
    path = tmp_path / "c.h5ad"
    planted.write_h5ad(path)
    back = ad.read_h5ad(path).uns["bonemet_compare"]
    res = planted.uns["bonemet_compare"]
    for key in ("differential_abundance", "pseudobulk_de", "score_tests", "de_skipped", "design"):
        pd.testing.assert_frame_equal(back[key], res[key], check_dtype=False)
    assert back["status"] == "done" and back["reference"] == "control"


def test_small_design_2_vs_2_warns_and_flags_p() -> None:
    a = bm.datasets.simulate_condition_design(n_per_group=2, seed=1, **SMALL)
    bm.tl.compare(a, de=False)
    res = a.uns["bonemet_compare"]
    da, st = res["differential_abundance"], res["score_tests"]
    assert da["p"].notna().all() and not da["p_reliable"].any()
    assert st["p"].notna().any() and not st["p_reliable"].any()
    assert any("2 vs 2 samples" in w and "unreliable" in w for w in _warnings(a))


def test_small_design_1_vs_1_gives_effects_without_p() -> None:
    a = bm.datasets.simulate_condition_design(n_per_group=1, seed=2, **SMALL)
    bm.tl.compare(a)
    res = a.uns["bonemet_compare"]
    da = res["differential_abundance"]
    assert da["log2fc"].notna().all() and da["p"].isna().all() and da["padj"].isna().all()
    assert res["score_tests"]["p"].isna().all() and res["score_tests"]["effect"].notna().all()
    assert len(res["pseudobulk_de"]) == 0 and len(res["de_skipped"]) > 0
    assert any("1 vs 1 samples" in w and "without p-values" in w for w in _warnings(a))


def test_one_condition_is_skipped_with_a_warning() -> None:
    a = bm.datasets.simulate_condition_design(n_per_group=2, seed=4, **SMALL)
    a = a[a.obs["condition"] == "bone_met"].copy()
    bm.tl.compare(a)
    res = a.uns["bonemet_compare"]
    assert res["status"].startswith("skipped")
    assert len(res["differential_abundance"]) == 0
    assert any("one level" in w for w in _warnings(a))


def test_missing_condition_key_lists_obs_columns() -> None:
    a = bm.datasets.simulate_condition_design(n_per_group=2, seed=5, **SMALL)
    with pytest.raises(InputError, match=r"'treatment' is not an obs column.*sample.*population"):
        bm.tl.compare(a, condition_key="treatment")


def test_unknown_reference_names_the_levels() -> None:
    a = bm.datasets.simulate_condition_design(n_per_group=2, seed=5, **SMALL)
    with pytest.raises(InputError, match=r"'healthy' is not a level.*control, bone_met"):
        bm.tl.compare(a, reference="healthy")


def test_confounded_covariate_is_refused() -> None:
    a = bm.datasets.simulate_condition_design(n_per_group=2, seed=5, **SMALL)
    a.obs["site"] = a.obs["condition"].astype(str)
    with pytest.raises(InputError, match="confounded"):
        bm.tl.compare(a, covariates=["site"])


def test_non_count_data_refuses_de_but_runs_da_and_scores() -> None:
    a = bm.datasets.simulate_condition_design(n_per_group=3, seed=6, **SMALL)
    a.layers["counts"] = a.layers["counts"].multiply(0.37).tocsr()
    with pytest.raises(NotCountsError, match="raw integer counts"):
        bm.tl.pseudobulk_de(a)
    bm.tl.compare(a)
    res = a.uns["bonemet_compare"]
    assert len(res["pseudobulk_de"]) == 0
    assert "raw integer counts" in res["de_skipped"]["reason"].iloc[0]
    assert len(res["differential_abundance"]) > 0 and len(res["score_tests"]) > 0
    assert any("pseudobulk DE needs raw counts" in w for w in _warnings(a))


def test_paired_design_uses_the_subject() -> None:
    a = bm.datasets.simulate_condition_design(
        n_per_group=3, paired=True, abundance_fold={CHI3L3: 2.5}, seed=8, **SMALL
    )
    bm.tl.compare(a, subject_key="subject", de=False)
    res = a.uns["bonemet_compare"]
    assert "subject" in res["design"].columns
    da = res["differential_abundance"].set_index("test")
    assert da.loc[CHI3L3, "log2fc"] > 0.8 and da.loc[CHI3L3, "p"] < 0.05


def test_populations_below_min_cells_are_skipped_with_the_reason() -> None:
    a = bm.datasets.simulate_condition_design(n_per_group=3, seed=9, **SMALL)
    de, skipped = bm.tl.pseudobulk_de(a, min_cells=60, populations=["B", "M-MDSC"])
    row = skipped.set_index("population")
    assert "M-MDSC" in row.index and ">= 60 cells" in row.loc["M-MDSC", "reason"]
    assert "M-MDSC" not in set(de["population"])


@pytest.mark.skipif(not KANG.exists(), reason="shared Kang 2018 data not present")
def test_kang_monocyte_pseudobulk_de_finds_interferon_genes() -> None:
    a = ad.read_h5ad(KANG)
    # the sample names carry the donor: ctrl101 / stim101 are donor 101
    a.obs["donor"] = a.obs["sample"].astype(str).str.extract(r"(\d+)$", expand=False)
    a.obs["population"] = a.obs["cell_type"].astype(str)
    a.layers["counts"] = a.X.copy()
    a = a[a.obs["population"] == "CD14+ Monocytes"].copy()
    bm.tl.compare(a, reference="ctrl", subject_key="donor", min_cells=20)
    res = a.uns["bonemet_compare"]
    de = res["pseudobulk_de"]
    top = de.sort_values("p").head(20)["gene"].tolist()
    canonical = {"ISG15", "IFI6", "IFIT1", "IFIT3", "MX1", "ISG20", "IFITM3", "OAS1", "LY6E"}
    assert len(canonical & set(top)) >= 5, top
    assert (de.set_index("gene").loc[list(canonical & set(top)), "log2fc"] > 2).all()
    assert not de["p_reliable"].any()
    assert any("2 vs 2 samples" in w for w in _warnings(a))
    assert res["design"]["subject"].tolist() == ["101", "107", "101", "107"]


@pytest.mark.skipif(not KANG.exists(), reason="shared Kang 2018 data not present")
def test_vectorized_inference_matches_pydeseq2_default() -> None:
    """Same objective, better minimised; same top genes and fold changes as PyDESeq2's own."""
    import warnings

    from pydeseq2 import utils
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference

    from bonemet.tl._compare import _pseudobulk
    from bonemet.tl._deseq_fast import VectorizedInference

    a = ad.read_h5ad(KANG)
    m = a[a.obs["cell_type"] == "CD14+ Monocytes"]
    samples = sorted(m.obs["sample"].astype(str).unique())
    pb = _pseudobulk(m.X, m.obs["sample"].astype(str).to_numpy(), samples)
    keep = (pb.sum(axis=0) >= 10) & ((pb > 0).sum(axis=0) >= 2)
    keep[np.flatnonzero(keep)[300:]] = False  # 300 genes keep the default path quick
    counts = pd.DataFrame(pb[:, keep].astype(int), index=samples, columns=m.var_names[keep])
    meta = pd.DataFrame(
        {"condition": [s[:4] for s in samples], "donor": [s[4:] for s in samples]}, index=samples
    )
    fits = {}
    for name, inf in (("default", DefaultInference(n_cpus=1)), ("vec", VectorizedInference())):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dds = DeseqDataSet(
                counts=counts, metadata=meta, design="~donor + condition", inference=inf, quiet=True
            )
            dds.deseq2()
        fits[name] = dds
    d, v = fits["default"], fits["vec"]
    x = d.obsm["design_matrix"].to_numpy(float)
    mu, y = d.layers["_mu_hat"], d.X

    def objective(i: int, alpha: float) -> float:
        w = mu[:, i] / (1 + mu[:, i] * alpha)
        return float(
            utils.nb_nll(y[:, i], mu[:, i], alpha) + 0.5 * np.linalg.slogdet((x.T * w) @ x)[1]
        )

    g_d = d.var["genewise_dispersions"].to_numpy()
    g_v = v.var["genewise_dispersions"].to_numpy()
    worse = [objective(i, g_v[i]) - objective(i, g_d[i]) for i in range(y.shape[1])]
    assert max(worse) < 1e-4  # never a worse minimum of PyDESeq2's own objective
    lfc_d = d.varm["LFC"].iloc[:, -1].to_numpy()
    lfc_v = v.varm["LFC"].iloc[:, -1].to_numpy()
    assert np.corrcoef(lfc_d, lfc_v)[0, 1] > 0.999
    assert np.median(np.abs(lfc_d - lfc_v)) < 0.05


def test_compare_config_is_validated_before_any_work() -> None:
    from bonemet._errors import ConfigError
    from bonemet.config import load_config

    c = load_config().compare
    assert (c.condition_key, c.reference, c.min_cells, c.min_samples_per_group) == (
        "condition",
        None,
        20,
        3,
    )
    with pytest.raises(ConfigError, match=r"2 problems.*compare\.covariates.*compare\.min_cells"):
        load_config({"compare": {"min_cells": 0, "covariates": ["batch", "batch"]}})
    with pytest.raises(ConfigError, match="different obs columns"):
        load_config({"compare": {"subject_key": "condition"}})


def test_volcano_draws_the_tested_populations(planted: ad.AnnData) -> None:
    fig = bm.pl.volcano(planted)
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith(DE_POP) and "4 vs 4 samples" in t for t in titles), titles
    tum = next(t for t in titles if t.startswith(DE_POP))
    n_sig = int(
        (
            planted.uns["bonemet_compare"]["pseudobulk_de"].query("population == @DE_POP")["padj"]
            < 0.05
        ).sum()
    )
    assert f"{n_sig} genes" in tum
    empty = planted.copy()
    empty.uns["bonemet_compare"] = {"pseudobulk_de": pd.DataFrame()}
    with pytest.raises(bm.pl.MissingDataError, match="pseudobulk_de"):
        bm.pl.volcano(empty)


def test_squeeze_dispersions_matches_limma_moment_fit() -> None:
    """The prior df and scale equal limma's fitFDist (scanpro's port) on the same values."""
    fitfdist = pytest.importorskip("scanpro.fitFDist")
    rng = np.random.default_rng(0)
    df = np.full(40, 4.0)
    phi = 2.5 * rng.chisquare(4, 40) / 4 * rng.lognormal(0, 0.3, 40)
    post, d0 = bm.tl.squeeze_dispersions(phi, df)
    ref = fitfdist.fit_f_dist(phi.copy(), df1=df.copy())
    assert d0 == pytest.approx(float(np.ravel(ref["df2"])[0]), rel=1e-6)
    assert np.allclose(post, (df * phi + d0 * float(np.ravel(ref["scale"])[0])) / (df + d0))
    assert post.std() < phi.std()  # shrunk towards the prior
    same, d_inf = bm.tl.squeeze_dispersions(np.full(10, 3.0), np.full(10, 4.0))
    assert d_inf == np.inf and np.allclose(same, 3.0)
    few, d_few = bm.tl.squeeze_dispersions(np.array([1.0, 5.0]), np.array([4.0, 4.0]))
    assert d_few == 0.0 and np.allclose(few, [1.0, 5.0])


def test_compare_stage_and_its_tables_survive_a_checkpoint(tmp_path: Path) -> None:
    """The stage stores DataFrames; tables built from a re-read checkpoint are identical."""
    from bonemet import _stages
    from bonemet.config import load_config
    from bonemet.report import build_tables

    a = bm.datasets.simulate_condition_design(
        n_per_group=3, abundance_fold={CHI3L3: 3.0}, batch=True, seed=12, **SMALL
    )
    cfg = load_config({"compare": {"covariates": ["batch"], "min_cells": 15}})
    _stages.compare(a, cfg)
    assert a.uns["bonemet"]["parameters"]["compare"]["min_cells"] == 15
    before = build_tables(a, cfg)
    names = ["compare_design", "differential_abundance", "score_tests", "pseudobulk_de"]
    assert set(names) <= set(before)
    a.write_h5ad(tmp_path / "ckpt.h5ad")
    after = build_tables(ad.read_h5ad(tmp_path / "ckpt.h5ad"), cfg)
    for name in names:
        pd.testing.assert_frame_equal(after[name], before[name], check_dtype=False)
    # the generated batch crosses the condition, so it can be a covariate
    assert before["compare_design"].groupby("condition")["batch"].nunique().eq(2).all()

    # no condition column under the default key: skipped with a warning, not an error
    b = bm.datasets.simulate_condition_design(n_per_group=2, seed=13, **SMALL)
    del b.obs["condition"]
    _stages.compare(b, load_config())
    assert "bonemet_compare" not in b.uns
    assert any("no 'condition' column" in w for w in _warnings(b))
    # a key the user named but the data lack is an error listing the columns
    with pytest.raises(InputError, match="'treatment' is not an obs column"):
        _stages.compare(b, load_config({"compare": {"condition_key": "treatment"}}))
    # switched off: nothing stored
    c = bm.datasets.simulate_condition_design(n_per_group=2, seed=14, **SMALL)
    _stages.compare(c, load_config({"compare": {"enabled": False}}))
    assert "bonemet_compare" not in c.uns


# -- read-out units: the erythroid-mimicry called fraction, neutrophil stage 1 ------------

MIMICRY_UNIT = "Erythroid-mimicry calls / tumour cells"
STAGE_UNIT = "Neutrophil stage 1 / neutrophil lineage"


def _plant_calls(a: ad.AnnData, rate: dict[str, float], seed: int) -> None:
    """obs["erythroid_mimicry_call"]: tumour cells called at ``rate[condition]``."""
    rng = np.random.default_rng(seed)
    tum = (a.obs["population"].astype(str) == DE_POP).to_numpy()
    p = a.obs["condition"].astype(str).map(rate).to_numpy(float)
    a.obs["erythroid_mimicry_call"] = tum & (rng.random(a.n_obs) < p)


def test_mimicry_called_fraction_is_a_tested_unit() -> None:
    a = bm.datasets.simulate_condition_design(n_per_group=4, seed=21, **SMALL)
    _plant_calls(a, {"control": 0.05, "bone_met": 0.25}, seed=21)
    # a tumour cell the read-out could not assess stays out of the denominator
    a.obs["erythroid_mimicry_class"] = np.where(
        a.obs["erythroid_mimicry_call"], "globin_only", "below_background"
    )
    first = np.flatnonzero((a.obs["population"] == DE_POP).to_numpy())[0]
    a.obs.iloc[first, a.obs.columns.get_loc("erythroid_mimicry_class")] = "not_assessed"
    bm.tl.compare(a, de=False)
    res = a.uns["bonemet_compare"]
    da = res["differential_abundance"].set_index("test")
    row = da.loc[MIMICRY_UNIT]
    assert row["kind"] == "called fraction" and row["model"] == "Williams"
    assert row["n_ref"] == 4 and row["n_test"] == 4 and row["p_reliable"]
    assert row["log2fc"] > 1 and row["ci_low"] > 0 and row["p"] < 0.05
    assert row["padj"] >= row["p"] and np.isfinite(row["overdispersion"])
    # one BH family per contrast: the unit's padj is BH over the whole table
    from statsmodels.stats.multitest import multipletests

    assert row["padj"] == pytest.approx(
        multipletests(da["p"].dropna(), method="fdr_bh")[1][
            list(da["p"].dropna().index).index(MIMICRY_UNIT)
        ]
    )
    tum = a.obs[(a.obs["population"] == DE_POP).to_numpy()]
    s0 = str(a.obs["sample"].iloc[first])
    n0 = int((tum["sample"] == s0).sum()) - 1
    assert f"{s0}={n0}" in row["cells_per_sample"].split(";")
    assert res["units"]["erythroid_mimicry"].startswith("obs[")
    # absent call column: no unit, and the record says why
    b = bm.datasets.simulate_condition_design(n_per_group=2, seed=22, **SMALL)
    bm.tl.compare(b, de=False)
    assert MIMICRY_UNIT not in set(b.uns["bonemet_compare"]["differential_abundance"]["test"])
    assert "absent" in b.uns["bonemet_compare"]["units"]["erythroid_mimicry"]


def _null_called_fractions(k: int, reps: int, seed: int):
    """Null per-sample called fractions: tumour cells 20-500 per sample (log-uniform), true
    fraction beta around 5-10 % with between-sample overdispersion, no condition effect."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(2 * k), np.r_[np.zeros(k), np.ones(k)]])
    for _ in range(reps):
        n = np.rint(np.exp(rng.uniform(np.log(20), np.log(500), 2 * k))).astype(int)
        mean, conc = rng.uniform(0.05, 0.10), rng.uniform(10, 60)
        calls = rng.binomial(n, rng.beta(mean * conc, (1 - mean) * conc, 2 * k))
        yield calls, n, x


def _null_p(fit, k: int, reps: int, seed: int) -> np.ndarray:
    import math

    from bonemet.tl._compare import _wald_t

    out = []
    for calls, n, x in _null_called_fractions(k, reps, seed):
        beta, se, df, phi = fit(calls, n, x)[:4]
        out.append(_wald_t(beta, se * math.sqrt(max(1.0, phi)), df)[0])
    p = np.asarray(out)
    return p[np.isfinite(p)]


def _calibrated(p: np.ndarray) -> bool:
    from scipy import stats

    fpr = float((p < 0.05).mean())
    # KS distance, not its p-value: the t on 4-6 residual df is slightly conservative
    # at 3 vs 3 (distance ~0.05), which enough replicates always reject
    return 0.02 <= fpr <= 0.065 and stats.kstest(p, "uniform").statistic < 0.08


def test_called_fraction_p_values_are_calibrated_on_nulls() -> None:
    """3 vs 3 and 4 vs 4 nulls: false-positive rate at 0.05 and uniformity of p (KS).

    The same check fails for the plain quasi-Poisson with offset (one dispersion for all
    samples: KS distance 0.12 here)."""
    from bonemet.tl._compare import _quasi_poisson, _williams

    for k, seed in ((3, 31), (4, 32)):
        p = _null_p(_williams, k, 800, seed)
        assert len(p) == 800
        assert _calibrated(p), (k, (p < 0.05).mean())
    assert not _calibrated(_null_p(_quasi_poisson, 4, 400, 32))


def test_neutrophil_stage1_share_finds_the_planted_immature_expansion() -> None:
    """The simulator raises CHI3L3+ immature neutrophils in bone_met (tumour DKK1): the
    earliest maturation stage's share of the neutrophil lineage is higher there."""
    import scanpy as sc

    a = bm.datasets.simulate_bone_metastasis(6400, 8, species="mouse", seed=3)
    a = a[~a.obs["true_doublet"].to_numpy()].copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    a.obs["population"] = a.obs["true_population"].astype(str)
    assert "neutrophil_maturation_stage" not in a.obs
    bm.tl.compare(a, de=False)
    res = a.uns["bonemet_compare"]
    assert "neutrophil_maturation_stage" not in a.obs  # computed, not written
    assert res["units"]["neutrophil_stage"].startswith("computed (4 stages")
    row = res["differential_abundance"].set_index("test").loc[STAGE_UNIT]
    assert row["kind"] == "maturation stage" and (row["n_ref"], row["n_test"]) == (4, 4)
    assert row["log2fc"] > 0.5 and row["ci_low"] > 0 and row["p"] < 0.05
    assert row["prop_test"] > row["prop_ref"]
    # stages already in obs are used as they are; 0 stages and none in obs: no unit
    bm.tl.neutrophil_maturation(a, n_stages=3)
    bm.tl.compare(a, de=False)
    assert "3 stages" not in a.uns["bonemet_compare"]["units"]["neutrophil_stage"]
    assert "stage 1/3" in a.uns["bonemet_compare"]["units"]["neutrophil_stage"]
    del a.obs["neutrophil_maturation_stage"]
    bm.tl.compare(a, de=False, neutrophil_stages=0)
    da = a.uns["bonemet_compare"]["differential_abundance"]
    assert STAGE_UNIT not in set(da["test"])


# -- the reference condition --------------------------------------------------------------


def _relabel(a: ad.AnnData, names: dict[str, str]) -> ad.AnnData:
    a.obs["condition"] = a.obs["condition"].astype(str).map(names).astype("category")
    return a


def test_reference_given_control_like_or_first_sorted_with_a_warning() -> None:
    base = bm.datasets.simulate_condition_design(n_per_group=2, seed=41, **SMALL)
    cases = [
        ({"control": "Vehicle", "bone_met": "treated"}, None, "Vehicle", "control-like name"),
        ({"control": "WT", "bone_met": "KO"}, None, "WT", "control-like name"),
        ({"control": "sham_op", "bone_met": "met"}, None, "sham_op", "control-like name"),
        (
            {"control": "ControlGroup", "bone_met": "Treated"},
            None,
            "ControlGroup",
            "control-like name",
        ),
        ({"control": "controlled", "bone_met": "free"}, None, "controlled", "first level (sorted)"),
        ({"control": "ctrl", "bone_met": "stim"}, "stim", "stim", "given"),
        ({"control": "mouse_b", "bone_met": "mouse_a"}, None, "mouse_a", "first level (sorted)"),
        ({"control": "healthy", "bone_met": "normal"}, None, "healthy", "first level (sorted)"),
    ]
    for names, given, ref, how in cases:
        a = _relabel(base.copy(), names)
        bm.tl.compare(a, reference=given, de=False)
        res = a.uns["bonemet_compare"]
        assert (res["reference"], res["reference_source"]) == (ref, how), names
        assert res["min_cells"] == 20 and res["min_samples_per_group"] == 3
        other = next(v for v in names.values() if v != ref)
        assert res["contrasts"] == [f"{other} vs {ref}"]
        warned = [w for w in _warnings(a) if "no reference condition given" in w]
        if how == "first level (sorted)":
            assert len(warned) == 1 and repr(ref) in warned[0], warned
            assert "compare.reference" in warned[0]
        else:
            assert not warned
    two = [w for w in _warnings(a) if "no reference" in w][0]
    assert "2 levels look like a control (healthy, normal)" in two


def test_reference_not_a_level_lists_the_levels() -> None:
    a = _relabel(
        bm.datasets.simulate_condition_design(n_per_group=2, seed=42, **SMALL),
        {"control": "WT", "bone_met": "KO"},
    )
    with pytest.raises(
        InputError, match=r"reference 'control' is not a level of 'condition'; levels: KO, WT"
    ):
        bm.tl.compare(a, reference="control")


def _wide_tpex_design() -> ad.AnnData:
    """3 vs 3 with most CD8 T cells of the first sample removed: the Tpex fractions'
    denominators spread about 6-fold between samples."""
    from bonemet._vocab import TEX, TPEX

    a = bm.datasets.simulate_condition_design(seed=3, n_per_group=3, cells_per_sample=600)
    pop = a.obs["population"].astype(str).to_numpy()
    smp = a.obs["sample"].astype(str).to_numpy()
    first = sorted(set(smp))[0]
    cd8 = np.flatnonzero(np.isin(pop, [TPEX, TEX]) & (smp == first))
    rng = np.random.default_rng(0)
    drop = rng.choice(cd8, size=len(cd8) - max(len(cd8) // 8, 3), replace=False)
    return a[np.setdiff1d(np.arange(a.n_obs), drop)].copy()


def test_wide_denominator_spread_is_tested_with_the_shrunk_rho_williams_model() -> None:
    """A within-lineage fraction whose denominators differ 6-fold between samples: the row
    says its spread and is tested by the beta-binomial GLM instead of the quasi-Poisson,
    with a note saying why; rows with even denominators keep the quasi-Poisson; the limit
    and its basis are in the result's record."""
    from bonemet.tl._compare import DENOMINATOR_SPREAD_LIMIT, WILLIAMS_SHRUNK

    a = _wide_tpex_design()
    bm.tl.compare(a, de=False)
    res = a.uns["bonemet_compare"]
    da = res["differential_abundance"].set_index("test")
    row = da.loc["Tpex / (Tpex + Tex)"]
    n = [int(v.split("=")[1]) for v in row["cells_per_sample"].split(";")]
    assert row["denominator_spread"] == pytest.approx(max(n) / min(n))
    assert row["denominator_spread"] >= DENOMINATOR_SPREAD_LIMIT
    assert row["model"] == WILLIAMS_SHRUNK and "beta-binomial" in row["note"]
    assert row["p_reliable"] and np.isfinite(row["p"]) and row["ci_low"] < row["ci_high"]
    assert 0 <= row["overdispersion"] < 1
    even = da[da["denominator_spread"] < DENOMINATOR_SPREAD_LIMIT]
    assert len(even) > 10 and even["p_reliable"].all() and (even["note"] == "").all()
    assert (even.loc[even["kind"] == "lineage fraction", "model"] == "quasi-Poisson").all()
    rec = res["denominator_spread_limit"]
    assert rec["limit"] == DENOMINATOR_SPREAD_LIMIT and rec["rows_williams"] >= 1
    assert "lineage_spread_sweep" in rec["basis"]


def test_wide_fraction_keeps_the_quasi_poisson_marked_when_the_williams_fit_fails(
    monkeypatch,
) -> None:
    """A beta-binomial fit that cannot be made (non-finite) leaves the quasi-Poisson p in
    place, with p_reliable False and a note that says so."""
    import bonemet.tl._compare as cmp

    def no_fit(units, prior_units=5.0):
        nan = float("nan")
        return [(nan, nan, u[2].shape[0] - u[2].shape[1], nan, nan) for u in units], nan

    monkeypatch.setattr(cmp, "williams_shrunk", no_fit)
    a = _wide_tpex_design()
    da = bm.tl.differential_abundance(a).set_index("test")
    row = da.loc["Tpex / (Tpex + Tex)"]
    assert row["model"] == "quasi-Poisson" and not row["p_reliable"]
    assert np.isfinite(row["p"]) and "could not be fitted" in row["note"]


def test_williams_shrunk_survives_degenerate_fractions() -> None:
    """A fraction of 0 in one group and one of 100 % everywhere give finite or NaN fits,
    no exception and no warning (warnings are errors in this suite)."""
    from bonemet.tl._compare import williams_shrunk

    x = np.column_stack([np.ones(6), np.r_[np.zeros(3), np.ones(3)]])
    n = np.array([20.0, 50, 400, 30, 100, 250])
    units = [
        (np.array([0, 0, 0, 5, 9, 30]), n, x),
        (n.copy(), n, x),
        (np.array([2, 6, 40, 3, 11, 20]), n, x),
    ]
    fits, pooled = williams_shrunk(units)
    assert len(fits) == 3 and 0.0 <= pooled <= 0.999
    assert np.isfinite(fits[2][0]) and fits[2][1] > 0


def _spread_null_fpr(
    spread: float, reps: int = 300, seed: int = 5, *, williams: bool = False
) -> float:
    """Moderated quasi-Poisson (as the even lineage fractions are tested), or the shrunk-rho
    Williams GLM (as the wide ones are), on 3 vs 3 nulls of 6 fractions, denominators
    log-spaced around 100 cells with max/min ``spread``, high between-sample
    overdispersion (Beta concentration 15)."""
    import math

    from bonemet.tl._compare import _quasi_poisson, _wald_t, squeeze_dispersions, williams_shrunk

    rng = np.random.default_rng(seed)
    base = np.rint(100 * np.exp(np.linspace(-0.5, 0.5, 6) * math.log(spread)))
    x = np.column_stack([np.ones(6), np.r_[np.zeros(3), np.ones(3)]])
    p = []
    for _ in range(reps):
        units = []
        for _u in range(6):
            n = rng.permutation(base)
            m = rng.uniform(0.05, 0.4)
            c = rng.binomial(n.astype(int), rng.beta(m * 15, (1 - m) * 15, 6))
            units.append((c, n, x))
        if williams:
            fits = [f[:4] for f in williams_shrunk(units)[0]]
        else:
            fits = [_quasi_poisson(*u) for u in units]
        post, d0 = squeeze_dispersions(np.array([f[3] for f in fits]), np.full(6, 4.0))
        for (b, se, df, _), ph in zip(fits, post, strict=True):
            p.append(_wald_t(b, se * math.sqrt(max(1.0, ph)), min(df + d0, 1e6))[0])
    return float((np.asarray(p) < 0.05).mean())


def test_denominator_spread_limit_matches_the_quasi_poisson_null_fpr() -> None:
    """1,800 null p-values each: calibrated at a 1.5-fold spread, anti-conservative at
    10-fold (the sweep: 0.054 and 0.104), the basis of DENOMINATOR_SPREAD_LIMIT."""
    assert _spread_null_fpr(1.5) <= 0.065
    assert _spread_null_fpr(10.0) > 0.075


def test_shrunk_rho_williams_is_calibrated_where_the_quasi_poisson_is_not() -> None:
    """The same 1,800 null p-values at 10- and 25-fold spreads through the model the wide
    lineage fractions get (the sweep, 2,000 sets per cell: at most 0.05 there)."""
    assert _spread_null_fpr(10.0, williams=True) <= 0.065
    assert _spread_null_fpr(25.0, williams=True) <= 0.065
