"""Integration metrics (bm.pl.integration_metrics_table): scib-metrics and the fallback.

The scib-metrics path runs the real ``Benchmarker`` (jax on CPU) on a few hundred
generated cells whose unintegrated space carries a batch shift that the "integrated" one
lacks; the fallback path is taken by making ``import scib_metrics`` fail.
"""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import bonemet as bm
from bonemet.pl import _metrics

N_CELLS = 400


def _embedded(n: int = N_CELLS, n_batches: int = 3, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 4, n)
    bat = rng.integers(0, n_batches, n)
    centres = rng.normal(0, 3.0, size=(4, 10))
    shift = rng.normal(0, 3.0, size=(n_batches, 10))
    bio = centres[lab] + rng.normal(size=(n, 10))
    a = ad.AnnData(
        obs=pd.DataFrame(
            {
                "sample": pd.Categorical([f"S{i}" for i in bat]),
                "true_population": pd.Categorical([f"type{i}" for i in lab]),
                "leiden": pd.Categorical([str(i) for i in lab]),
            },
            index=[f"c{i}" for i in range(n)],
        )
    )
    a.obsm["X_pca"] = (bio + shift[bat]).astype(np.float32)
    a.obsm["X_scVI"] = (bio + 0.1 * rng.normal(size=(n, 10))).astype(np.float32)
    return a


@pytest.fixture
def no_scib(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import scib_metrics`` raises ImportError, as where the extra is not installed."""
    for name in list(sys.modules):
        if name == "scib_metrics" or name.startswith("scib_metrics."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "scib_metrics", None)
    monkeypatch.setitem(sys.modules, "scib_metrics.benchmark", None)
    monkeypatch.setattr(_metrics, "_CACHE", type(_metrics._CACHE)())


@pytest.fixture(scope="module")
def scib_table() -> pd.DataFrame:
    pytest.importorskip("scib_metrics", reason="the metrics extra is not installed")
    return bm.pl.integration_metrics_table(_embedded(), preset="full")


@pytest.mark.slow
def test_scib_backend_scores_the_integrated_space_higher(scib_table: pd.DataFrame) -> None:
    df = scib_table
    assert bm.pl.metrics_backend() == "scib-metrics"
    assert list(df.index) == ["unintegrated (X_pca)", "integrated (X_scVI)"]
    assert (df["metrics_backend"] == "scib-metrics").all()
    assert (df["n_cells"] == N_CELLS).all()
    scib_cols = ["bras", "ilisi", "kbet", "graph_connectivity", "pcr_comparison",
                 "isolated_labels", "clisi", "silhouette_label", "ari_kmeans", "nmi_kmeans"]  # fmt: skip
    assert set(scib_cols) <= set(df.columns)
    assert "knn_batch_entropy" not in df.columns  # the fallback's metric
    vals = df[[*scib_cols, "batch_correction", "bio_conservation", "total"]].astype(float)
    assert vals.notna().all().all() and ((vals >= 0) & (vals <= 1)).all().all()
    before, after = df.iloc[0], df.iloc[1]
    # the batch shift of X_pca is gone from X_scVI: every batch metric rises
    for col in ("bras", "ilisi", "kbet", "pcr_comparison"):
        assert after[col] > before[col], col
    assert before["pcr_comparison"] == pytest.approx(0, abs=1e-5)  # X_pca is its own reference
    assert after["total"] > before["total"] + 0.1
    # scib's aggregates: means per class, total weighted 0.4 / 0.6
    bc = after[["bras", "ilisi", "kbet", "graph_connectivity", "pcr_comparison"]].mean()
    bio = after[["isolated_labels", "clisi", "silhouette_label", "ari_kmeans", "nmi_kmeans"]]
    assert after["batch_correction"] == pytest.approx(bc)
    assert after["bio_conservation"] == pytest.approx(bio.mean())
    assert after["total"] == pytest.approx(0.4 * bc + 0.6 * bio.mean())
    assert np.isnan(before["ari_leiden"]) and after["ari_leiden"] == pytest.approx(1.0)


@pytest.mark.slow
def test_fast_preset_leaves_out_the_per_label_metrics(scib_table: pd.DataFrame) -> None:
    df = bm.pl.integration_metrics_table(_embedded())  # the report's default
    assert (df["metrics_backend"] == "scib-metrics").all()
    assert "kbet" not in df.columns and "bras" not in df.columns
    shared = ["ilisi", "graph_connectivity", "pcr_comparison", "isolated_labels", "clisi",
              "silhouette_label", "ari_kmeans", "nmi_kmeans"]  # fmt: skip
    pd.testing.assert_frame_equal(df[shared], scib_table[shared])
    bc = df[["ilisi", "graph_connectivity", "pcr_comparison"]].mean(axis=1)
    assert np.allclose(df["batch_correction"], bc)


@pytest.mark.slow
def test_scib_backend_with_one_batch_has_no_batch_scores(scib_table: pd.DataFrame) -> None:
    a = _embedded(n_batches=1)
    df = bm.pl.integration_metrics_table(a, backend="scib-metrics", preset="full")
    assert (df["metrics_backend"] == "scib-metrics").all()
    assert df[["kbet", "ilisi", "batch_correction", "total"]].isna().all().all()
    assert df["bio_conservation"].notna().all()


def test_fallback_when_scib_metrics_cannot_be_imported(no_scib: None) -> None:
    assert bm.pl.metrics_backend() == "sklearn-fallback"
    df = bm.pl.integration_metrics_table(_embedded())
    assert (df["metrics_backend"] == "sklearn-fallback").all()
    assert (df["n_cells"] == N_CELLS).all()
    assert "kbet" not in df.columns
    before, after = df.iloc[0], df.iloc[1]
    assert after["knn_batch_entropy"] > before["knn_batch_entropy"]
    assert after["silhouette_batch"] > before["silhouette_batch"]
    bc = np.mean([after["silhouette_batch"], after["knn_batch_entropy"]])
    bio = np.mean([after["silhouette_label"], after["ari_kmeans"], after["nmi_kmeans"]])
    assert after["total"] == pytest.approx(0.4 * bc + 0.6 * bio)
    assert after["total"] > before["total"]


def test_forcing_scib_without_it_is_a_clear_error(no_scib: None) -> None:
    with pytest.raises(bm.InputError, match=r"not importable.*bonemet\[metrics\]"):
        bm.pl.integration_metrics_table(_embedded(), backend="scib-metrics")


def test_small_subsample_uses_the_fallback_and_states_its_size() -> None:
    df = bm.pl.integration_metrics_table(_embedded(), max_cells=60)
    assert (df["n_cells"] == 60).all()
    assert (df["metrics_backend"] == "sklearn-fallback").all()  # scib needs > 90 cells


def test_result_is_cached_by_content(monkeypatch: pytest.MonkeyPatch) -> None:
    a = _embedded(seed=3)
    first = bm.pl.integration_metrics_table(a, backend="sklearn-fallback")

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("recomputed")

    monkeypatch.setattr(_metrics, "_fallback_row", fail)
    again = bm.pl.integration_metrics_table(a, backend="sklearn-fallback")
    pd.testing.assert_frame_equal(first, again)
    a.obsm["X_scVI"] = a.obsm["X_scVI"] + 1.0  # new content: computed again
    with pytest.raises(AssertionError, match="recomputed"):
        bm.pl.integration_metrics_table(a, backend="sklearn-fallback")


def test_bad_arguments_are_clear_errors() -> None:
    a = _embedded()
    with pytest.raises(bm.InputError, match="backend 'scib' is unknown"):
        bm.pl.integration_metrics_table(a, backend="scib")
    with pytest.raises(bm.InputError, match="preset 'all' is unknown"):
        bm.pl.integration_metrics_table(a, preset="all")
    with pytest.raises(bm.InputError, match="max_cells must be at least 2"):
        bm.pl.integration_metrics_table(a, max_cells=1)
    del a.obs["true_population"]
    with pytest.raises(bm.pl.MissingDataError, match="known labels"):
        bm.pl.integration_metrics_table(a)


def test_the_report_setting_chooses_the_backend_for_table_and_figure() -> None:
    """``report.integration_metrics`` reaches every call made without a backend (the table
    and the figure of one report), and unknown names are refused."""
    adata = _embedded(300, seed=4)
    with bm.pl.metrics_backend_default("sklearn-fallback"):
        table = bm.pl.integration_metrics_table(adata)
        bm.pl.integration_metrics(adata)
    assert set(table["metrics_backend"]) == {"sklearn-fallback"}
    cfg = bm.load_config({"report": {"integration_metrics": "sklearn-fallback"}})
    assert cfg.report.integration_metrics == "sklearn-fallback"
    with pytest.raises(bm.ConfigError, match="report.integration_metrics"):
        bm.load_config({"report": {"integration_metrics": "fast"}})
    with pytest.raises(bm.ConfigError, match="unknown integration metrics backend"):
        with bm.pl.metrics_backend_default("fast"):
            pass
