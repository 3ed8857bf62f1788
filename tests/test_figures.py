"""Figures (bm.pl): files, pixel sizes, species, single sample, stable colours, skips.

The AnnData here is generated with numpy: every slot of the AnnData contract filled
(counts, log-normalised X, QC metrics and records, embeddings, populations, scores), so
the figures are tested without running the other stages (``tests/builders.py``).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from builders import make_annotated  # tests/builders.py
from matplotlib.figure import Figure

import bonemet as bm
from bonemet.pl import POPULATION_COLORS, MissingDataError


def png_size(path: Path) -> tuple[int, int]:
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def mouse() -> ad.AnnData:
    return make_annotated(species="mouse")


@pytest.fixture(scope="module")
def human() -> ad.AnnData:
    return make_annotated(900, 4, species="human", seed=1)


FULL_RUN = {
    "qc_violins", "qc_removed", "integration_umaps", "integration_metrics", "umap_sample",
    "umap_labels", "umap_population", "umap_cell_type", "umap_condition", "marker_dotplot",
    "composition_sample", "composition_condition", "signature_umaps",
    "signature_violins_population", "signature_violins_sample", "review_axes",
    "condition_comparisons",
}  # fmt: skip


@pytest.mark.slow
def test_save_figures_full_run(mouse: ad.AnnData, tmp_path: Path) -> None:
    dpi = 60
    paths = bm.pl.save_figures(mouse, tmp_path, formats=("png", "pdf"), dpi=dpi, strict=True)
    stems = {p.stem for p in paths}
    assert stems == FULL_RUN
    assert len(stems) >= 10
    for p in paths:
        assert p.exists() and p.stat().st_size > 5_000, p
    for p in (q for q in paths if q.suffix == ".pdf"):
        assert p.read_bytes()[:5] == b"%PDF-"
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*"))
    # pixel size = figure size x dpi: redraw some figures and compare
    names = ["umap_population", "composition_sample", "qc_removed", "integration_umaps"]
    for spec, fig in bm.pl.iter_figures(mouse, names=names, strict=True):
        w, h = fig.get_size_inches()
        pw, ph = png_size(tmp_path / f"{spec.name}.png")
        assert abs(pw - round(w * dpi)) <= 1 and abs(ph - round(h * dpi)) <= 1, spec.name


def test_png_is_figsize_times_dpi_at_300(mouse: ad.AnnData, tmp_path: Path) -> None:
    fig = bm.pl.umap(mouse, color="population")
    assert isinstance(fig, Figure)
    (path,) = bm.pl.save_figures(mouse, tmp_path, formats=("png",), names=["umap_population"])
    w, h = fig.get_size_inches()
    assert png_size(path) == (round(w * 300), round(h * 300))
    # a real picture, not a blank canvas: many distinct colours
    from matplotlib.image import imread

    img = imread(path)
    assert img.shape[0] > 1000
    sub = img[::7, ::7, :3].reshape(-1, 3)
    assert len(np.unique(np.round(sub, 2), axis=0)) > 20


@pytest.mark.slow
@pytest.mark.parametrize("species", ["human", "mouse"])
def test_every_function_on_each_species(species: str, human: ad.AnnData, mouse: ad.AnnData) -> None:
    a = human if species == "human" else mouse
    figs = {
        "umap": bm.pl.umap(a, color="population"),
        "umap_gene": bm.pl.umap(a, color=a.var_names[0]),
        "dotplot": bm.pl.marker_dotplot(a),
        "sig_umaps": bm.pl.signature_umaps(a),
        "violins": bm.pl.signature_violins(a),
        "comp": bm.pl.composition(a),
        "qc": bm.pl.qc_violins(a),
        "removed": bm.pl.qc_removed(a),
        "integration": bm.pl.integration_umaps(a),
        "metrics": bm.pl.integration_metrics(a),
        "axes": bm.pl.review_axes(a),
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure), name
        assert fig.axes, name
    # the dotplot uses the species' own marker symbols
    labels = [t.get_text() for t in figs["dotplot"].axes[0].get_xticklabels()]
    assert labels and all(g in a.var_names for g in labels)
    if species == "mouse":
        assert any(g[0].isupper() and g[1:].islower() for g in labels if g.isalpha())
    assert f"({species} symbols" in figs["dotplot"].subfigs[0]._suptitle.get_text()


def test_qc_thresholds_drawn(mouse: ad.AnnData) -> None:
    thr = bm.pl.qc_thresholds(mouse)
    assert thr["S1"]["counts"]["min"] == 20.0  # the strictest of floor (10) and threshold (20)
    assert thr["S1"]["mito"]["max"] == 15.0
    assert "hb" not in thr["S1"]  # high_ambient_hb (a flag) is not a threshold
    fig = bm.pl.qc_violins(mouse)
    dashed = [c for ax in fig.axes for c in ax.collections if c.get_linestyle()[0][1] is not None]
    assert len(dashed) >= 3 * 3  # counts min/max, genes min/max, mito max per sample
    table = bm.pp.qc_table(mouse)
    assert table.loc["S1", "removed_high_mito"] == 25
    assert table.loc["S1", "n_before"] == table.loc["S1", "n_after"] + 91
    # the removal bar draws every reason that removed a cell, and only those
    texts = [t.get_text() for t in bm.pl.qc_removed(mouse).axes[0].get_legend().get_texts()]
    labels = {t.split(" (")[0] for t in texts}
    removed = [c.removeprefix("removed_") for c in table.columns if c.startswith("removed_")]
    assert labels == {"kept"} | {r for r in removed if table[f"removed_{r}"].sum() > 0}
    # n cells in the legend
    assert f"kept ({int(table['n_after'].sum()):,})" in texts
    assert f"high_mito ({int(table['removed_high_mito'].sum()):,})" in texts


def test_population_colours_are_stable(mouse: ad.AnnData, human: ad.AnnData) -> None:
    from matplotlib.colors import to_hex

    def legend_colours(fig: Figure) -> dict[str, str]:
        out = {}
        for ax in fig.axes:
            leg = ax.get_legend()
            if leg is None:
                continue
            for h, t in zip(leg.legend_handles, leg.get_texts()):
                c = (
                    h.get_facecolor()
                    if hasattr(h, "get_facecolor") and not hasattr(h, "get_markerfacecolor")
                    else h.get_markerfacecolor()
                )
                # legend entries carry n cells: "CD4 T (81)"
                out[re.sub(r" \([\d,]+\)$", "", t.get_text())] = to_hex(c).upper()
        return out

    seen = [
        legend_colours(bm.pl.umap(mouse, color="population")),
        legend_colours(bm.pl.umap(human, color="population")),
        legend_colours(bm.pl.composition(mouse)),
        legend_colours(bm.pl.integration_umaps(human, color=["population"])),
    ]
    for colours in seen:
        assert colours
        for pop, col in colours.items():
            assert col == POPULATION_COLORS[pop].upper(), (pop, col)
    # the vocabulary is complete, colours are distinct, Unassigned is grey
    assert len(POPULATION_COLORS) == 33
    assert len(set(POPULATION_COLORS.values())) == 33
    assert POPULATION_COLORS["Unassigned"] == "#BDBDBD"
    # names outside the vocabulary get a colour from their name only (same every run)
    assert bm.pl.population_colors(["Odd cells"]) == bm.pl.population_colors(["Odd cells"])


def test_single_sample_and_no_optional_slots(tmp_path: Path) -> None:
    a = make_annotated(400, 1, species="human", condition=False, labels=False, seed=3)
    paths = bm.pl.save_figures(a, tmp_path, formats=("png",), dpi=50, strict=True)
    stems = {p.stem for p in paths}
    assert {"umap_population", "marker_dotplot", "qc_violins", "composition_sample",
            "review_axes", "integration_umaps", "signature_violins_sample"} <= stems  # fmt: skip
    # no condition, no labels: these are skipped, not failed
    assert not stems & {
        "umap_condition",
        "composition_condition",
        "integration_metrics",
        "umap_labels",
    }


@pytest.mark.slow
def test_missing_slots_skip_with_a_note(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    a = make_annotated(300, 2, seed=4)
    for k in ("population", "cell_type"):
        del a.obs[k]
    del a.obsm["X_umap_unintegrated"]
    a.obs = a.obs[[c for c in a.obs.columns if not c.startswith(("score_", "qc_"))]]
    del a.uns["bonemet"]["qc"]
    with pytest.raises(MissingDataError, match='obs\\["population"\\]'):
        bm.pl.marker_dotplot(a)
    with pytest.raises(MissingDataError, match="score"):
        bm.pl.signature_umaps(a)
    import logging

    with caplog.at_level(logging.INFO, logger="bonemet"):
        paths = bm.pl.save_figures(a, tmp_path, formats=("png",), dpi=40, strict=True)
    stems = {p.stem for p in paths}
    assert stems == {"umap_sample", "umap_labels", "umap_condition", "integration_metrics"}
    assert "figure marker_dotplot skipped" in caplog.text
    assert "figure qc_violins skipped" in caplog.text


def test_integration_metrics_table_detects_mixing(mouse: ad.AnnData) -> None:
    # the sklearn fallback here; the scib-metrics backend: tests/test_integration_metrics.py
    df = bm.pl.integration_metrics_table(mouse, backend="sklearn-fallback")
    assert list(df.index) == ["unintegrated (X_pca)", "integrated (X_scVI)"]
    before, after = df.iloc[0], df.iloc[1]
    # the generated PCA carries a sample shift that the "integrated" space lacks
    assert after["knn_batch_entropy"] > before["knn_batch_entropy"]
    assert after["silhouette_batch"] > before["silhouette_batch"]
    assert 0 <= after["silhouette_label"] <= 1 and after["ari_kmeans"] > 0.3
    assert np.isnan(before["ari_leiden"]) and np.isfinite(after["ari_leiden"])


def test_axes_table_holds_every_axis_the_figure_draws(mouse: ad.AnnData) -> None:
    df = bm.tl.axes_wide(bm.tl.axes_table(mouse, min_cells=3))
    assert list(df.index) == ["S1", "S2", "S3"]
    for x, y, *_ in bm.pl.AXES_PAIRS:
        assert x in df.columns and y in df.columns
    for col in ("osteoclast_SPP1", "tpex_fraction", "iron_macrophage_fraction",
                "tumour_erythroid_mimicry", "condition"):  # fmt: skip
        assert col in df.columns
    assert df["tpex_fraction"].dropna().between(0, 1).all()
    pop = mouse.obs["population"].astype(str)
    s1 = pop[mouse.obs["sample"] == "S1"]
    tpex, tex = (s1 == "CD8 Tpex (TCF1+)").sum(), (s1 == "CD8 Tex (terminal)").sum()
    if tpex + tex >= 3:
        assert df.loc["S1", "tpex_fraction"] == pytest.approx(tpex / (tpex + tex))


def test_bad_format_is_a_config_error(mouse: ad.AnnData, tmp_path: Path) -> None:
    with pytest.raises(bm.ConfigError, match="png, pdf or svg"):
        bm.pl.save_figures(mouse, tmp_path, formats=("gif",))


def test_palettes_cover_the_annotation_vocabularies() -> None:
    # every population and lineage the annotator can write has its own colour
    assert set(POPULATION_COLORS) == set(bm.tl.POPULATIONS)
    assert set(bm.pl.CELL_TYPE_COLORS) == set(bm.tl.CELL_TYPES)
    assert len(set(POPULATION_COLORS.values())) == len(POPULATION_COLORS)
    for pop, lineage in bm.tl.POPULATION_TO_CELL_TYPE.items():
        assert pop in POPULATION_COLORS and lineage in bm.pl.CELL_TYPE_COLORS
