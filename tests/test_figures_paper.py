"""Figures a paper could use: per-sample points, labelled UMAPs, per-lineage marker panels,
QC of every cell before QC, one colour scale for the signatures, titles from the gene-set
files, and no overlapping text in any figure."""

from __future__ import annotations

import numpy as np
import pytest
from builders import make_annotated

import bonemet as bm


@pytest.fixture(scope="module")
def adata():
    a = make_annotated(1200, 4, seed=3)
    bm.tl.compare(a, de=False, min_cells=5)
    return a


def test_no_figure_has_overlapping_text(adata) -> None:
    drawn = 0
    for spec, fig in bm.pl.iter_figures(adata, strict=True):
        assert not bm.pl.text_overlaps(fig), (spec.name, bm.pl.text_overlaps(fig)[:5])
        drawn += 1
    assert drawn >= 15


def test_text_overlaps_detects_overlap() -> None:
    from bonemet.pl._common import new_figure

    fig = new_figure(3, 2)
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, "Osteoclast")
    ax.text(0.52, 0.5, "Osteoblast")
    assert ("Osteoclast", "Osteoblast") in bm.pl.text_overlaps(fig)


def test_marker_dotplot_shows_defining_genes_per_lineage_panel(adata) -> None:
    fig = bm.pl.marker_dotplot(adata)
    panels = {ax.get_title(loc="left"): ax for ax in fig.axes if ax.get_title(loc="left")}
    assert "T and NK cells" in panels and "Neutrophils and PMN-MDSC" in panels
    mye = panels["Monocytes, macrophages, MDSC, DCs and mast cells"]
    genes = [t.get_text() for t in mye.get_xticklabels()]
    for g in ("Vcam1", "Cd163", "Ccr3", "Slc40a1"):
        assert g in genes, (g, genes)
    # legible at page width: at most 14 inches wide, at most ~35 genes in a panel
    assert fig.get_size_inches()[0] <= 14
    assert all(len(ax.get_xticks()) <= 35 for ax in panels.values())


def test_population_umap_is_labelled_on_the_data_with_n_in_legend(adata) -> None:
    fig = bm.pl.umap(adata, color="population")
    ax = fig.axes[0]
    labels = {t.get_text() for t in ax.texts}
    assert {"CD8 Tpex", "Iron-recycling mac.", "Osteoclast"} <= labels
    n = int((adata.obs["population"] == "Osteoclast").sum())
    assert f"Osteoclast ({n:,})" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_signature_umaps_share_one_scale_and_show_tumour_mimicry(adata) -> None:
    fig = bm.pl.signature_umaps(adata)
    norms = {id(c.norm) for ax in fig.axes for c in ax.collections if c.get_array() is not None}
    assert len(norms) == 1
    titles = [ax.get_title() for ax in fig.axes]
    assert any("tumour cells only" in t for t in titles)
    assert any(t.startswith("Erythroid mimicry (Han et al. 2025)") for t in titles)
    assert sum("Score" in ax.get_ylabel() for ax in fig.axes) == 1  # one colour bar


def test_gene_set_titles_come_from_the_yaml() -> None:
    t = bm.pl.gene_set_title
    assert t("ferroptosis_kegg") == "Ferroptosis (KEGG)"
    assert t("score_ferroptosis_wp4313") == "Ferroptosis (WikiPathways WP4313)"
    assert t("hypoxia") == "Hypoxia (Buffa et al. 2010)"
    assert t("ferroptosis_driver", short=True) == "Ferroptosis driver"


def test_condition_comparisons_one_point_per_sample_reference_first(adata) -> None:
    fig = bm.pl.condition_comparisons(adata)
    tab = bm.pl.per_sample_values(adata)
    first = next(ax for ax in fig.axes if ax.get_title().startswith("CD8 Tpex / (Tpex + Tex)\n"))
    assert first.get_xticklabels()[0].get_text().startswith("control\n(n = 2)")
    pts = sum(len(c.get_offsets()) for c in first.collections)
    assert pts == tab[tab["comparison"] == "CD8 Tpex / (Tpex + Tex)"]["sample"].nunique() == 4
    assert "2 vs 2 samples: p unreliable" in first.get_title()
    # the reference comes from the compare stage (the run's config), not a fixed name
    b = adata.copy()
    b.uns["bonemet_compare"] = dict(b.uns["bonemet_compare"], reference="bone_metastasis")
    fig = bm.pl.condition_comparisons(b)
    assert fig.axes[0].get_xticklabels()[0].get_text().startswith("bone_metastasis")


def test_qc_keeps_every_removed_cell_and_the_violins_show_them() -> None:
    a = make_annotated(600, 2, seed=4)
    raw = a.copy()
    raw.X = raw.layers["counts"].copy()
    raw.obs = raw.obs[["sample", "condition"]].copy()
    del raw.uns["bonemet"]["qc"]
    bm.pp.qc(raw, doublets=False, ambient="none", min_counts=60, min_genes=5)
    recs = raw.uns["bonemet"]["qc"]
    n_before = sum(r["n_before"] for r in recs.values())
    n_removed = sum(r["n_before"] - r["n_after"] for r in recs.values())
    assert n_removed > 0
    cells = bm.pp.qc_cells_table(raw)
    assert len(cells) == n_before and (cells["qc_removed"] != "").sum() == n_removed
    gone = cells[cells["qc_removed"] != ""]
    assert set(gone["qc_removed"]) <= set(bm.pp.QC_REASONS)
    for s, rec in recs.items():  # a cell removed for low counts is below its threshold
        low = gone[(gone["sample"] == s) & (gone["qc_removed"] == "low_counts")]
        assert (low["qc_total_counts"] < rec["threshold_min_counts"] + 1e-6).all()
    fig = bm.pl.qc_violins(raw)
    assert f"all {n_before:,} cells before QC; {n_removed:,} removed" in fig._suptitle.get_text()
    assert np.isfinite(cells["qc_pct_mito"]).all()


def test_conditions_are_coloured_alike_reference_first(adata) -> None:
    from bonemet.pl._common import colors_for

    order, colors = colors_for(adata, "condition")
    assert order[0] == adata.uns["bonemet_compare"]["reference"] == "control"
    from matplotlib.colors import to_hex

    umap_leg = bm.pl.umap(adata, color="condition").axes[0].get_legend()
    got = {t.get_text().split(" (")[0]: to_hex(h.get_color())
           for t, h in zip(umap_leg.get_texts(), umap_leg.legend_handles)}  # fmt: skip
    assert got == {c: colors[c].lower() for c in order}
    fig = bm.pl.condition_comparisons(adata)
    leg = {t.get_text().split(" (")[0]: to_hex(h.get_color())
           for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)
           if "samples" in t.get_text()}  # fmt: skip
    assert leg == got


def test_mimicry_panel_is_the_called_fraction_of_tumour_cells() -> None:
    """Per sample: tumour cells called / tumour cells assessed (n = those cells), from obs,
    whether or not compare ran; calls outside the tumour do not count."""
    import anndata as ad
    import pandas as pd

    from bonemet._vocab import MIMICRY_CALL_KEY, TUMOUR, hypothesis

    # (sample, condition, population, called, cells)
    spec = [("a", "ctl", TUMOUR, True, 3), ("a", "ctl", TUMOUR, False, 27),
            ("a", "ctl", "CD4 T", True, 10), ("b", "met", TUMOUR, True, 12),
            ("b", "met", TUMOUR, False, 8), ("b", "met", "B", False, 5),
            ("c", "met", "B", True, 4)]  # fmt: skip
    rows = [(s, c, p, k) for s, c, p, k, n in spec for _ in range(n)]
    obs = pd.DataFrame(rows, columns=["sample", "condition", "population", MIMICRY_CALL_KEY],
                       index=[f"c{i}" for i in range(len(rows))])  # fmt: skip
    a = ad.AnnData(X=np.zeros((len(rows), 1)), obs=obs)
    title = hypothesis("erythroid_mimicry").title
    tab = bm.pl.per_sample_values(a)
    got = tab[tab["comparison"] == title].set_index("sample")
    assert got["value"].to_dict() == pytest.approx({"a": 3 / 30, "b": 12 / 20})
    assert got["n_cells"].to_dict() == {"a": 30, "b": 20}  # no tumour in c: no row
    assert got.loc["b", "condition"] == "met"
    # the mean mimicry score is not what the panel reads
    a.obs["score_erythroid_mimicry"] = 5.0
    again = bm.pl.per_sample_values(a)
    assert again[again["comparison"] == title]["value"].max() < 1
    fig = bm.pl.condition_comparisons(a)
    assert fig.axes[0].get_title().startswith(f"{title}\nnot tested by compare")
    # cells the call did not assess (predicted doublets) are not in the denominator
    klass = np.where(a.obs[MIMICRY_CALL_KEY], "globin_only", "negative").astype(object)
    klass[np.flatnonzero((a.obs["sample"] == "b") & ~a.obs[MIMICRY_CALL_KEY])[:4]] = "not_assessed"
    a.obs["erythroid_mimicry_class"] = klass
    tab = bm.pl.per_sample_values(a)
    got = tab[tab["comparison"] == title].set_index("sample")
    assert got.loc["b", "value"] == pytest.approx(12 / 16) and got.loc["b", "n_cells"] == 16
    assert got.loc["a", "value"] == pytest.approx(3 / 30)
    # without calls in obs the panel is left out (the score is never a stand-in)
    del a.obs[MIMICRY_CALL_KEY]
    assert title not in set(bm.pl.per_sample_values(a)["comparison"])
