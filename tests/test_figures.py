"""Figures (bm.pl): files, pixel sizes, species, single sample, stable colours, skips.

The AnnData here is generated with numpy: every slot of the AnnData contract filled
(counts, log-normalised X, QC metrics and records, embeddings, populations, scores), so
the figures are tested without running the other stages. ``make_annotated`` is reused by
the report tests.
"""

from __future__ import annotations

import struct
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from matplotlib.figure import Figure

import bonemet as bm
from bonemet._signatures import load_gene_sets
from bonemet.pl import POPULATION_COLORS, MissingDataError

# populations the generated data holds (a realistic bone-metastasis mix)
POPS = (
    "CD4 T", "Treg", "CD8 T", "CD8 Tpex (TCF1+)", "CD8 Tex (terminal)", "NK", "B", "Plasma",
    "Classical monocyte", "Non-classical monocyte", "Macrophage",
    "Iron-recycling macrophage (VCAM1+CD163+CCR3+)", "M-MDSC", "PMN-MDSC",
    "Immature neutrophil (CHI3L3+)", "Mature neutrophil", "cDC2", "Erythroid progenitor",
    "Osteoclast", "MSC/Stromal", "Endothelial", "Tumour epithelial", "Unassigned",
)  # fmt: skip
LINEAGE = {
    "CD4 T": "T cell", "Treg": "T cell", "CD8 T": "T cell", "CD8 Tpex (TCF1+)": "T cell",
    "CD8 Tex (terminal)": "T cell", "NK": "NK cell", "B": "B cell", "Plasma": "Plasma cell",
    "Classical monocyte": "Monocyte/Macrophage", "Non-classical monocyte": "Monocyte/Macrophage",
    "Macrophage": "Monocyte/Macrophage",
    "Iron-recycling macrophage (VCAM1+CD163+CCR3+)": "Monocyte/Macrophage",
    "M-MDSC": "Monocyte/Macrophage", "PMN-MDSC": "Neutrophil",
    "Immature neutrophil (CHI3L3+)": "Neutrophil", "Mature neutrophil": "Neutrophil",
    "cDC2": "Dendritic cell", "Erythroid progenitor": "Erythroid", "Osteoclast": "Osteoclast",
    "MSC/Stromal": "Stromal", "Endothelial": "Endothelial",
    "Tumour epithelial": "Tumour epithelial", "Unassigned": "Unassigned",
}  # fmt: skip
PROGRAMMES = ("erythroid_mimicry", "ferroptosis_driver", "osteoclast_activity", "hypoxia")
AXIS_GENES = ("SPP1", "TFRC", "SLC40A1", "DKK1", "TIGIT", "PVR", "CD226", "NECTIN2")


def _symbol(g: str, species: str) -> str:
    return g if species == "human" else g[:1].upper() + g[1:].lower()


def make_annotated(
    n_cells: int = 1200,
    n_samples: int = 3,
    *,
    species: str = "mouse",
    seed: int = 0,
    condition: bool = True,
    labels: bool = True,
) -> ad.AnnData:
    """A fully annotated AnnData as the pipeline leaves it, generated with numpy."""
    rng = np.random.default_rng(seed)
    markers = {
        gs.target: gs.genes(species)[:6]
        for gs in load_gene_sets("population_marker").values()
        if gs.target in POPS
    }
    programmes = {n: gs.genes(species) for n, gs in load_gene_sets("programme").items()}
    genes: list[str] = []
    for g in [
        *(x for v in markers.values() for x in v),
        *(x for n in PROGRAMMES for x in programmes[n]),
    ]:
        if g not in genes:
            genes.append(g)
    mt = [f"{'MT' if species == 'human' else 'mt'}-{x}" for x in ("Co1", "Co2", "Nd1", "Atp6")]
    mt = [m.upper() if species == "human" else m for m in mt]
    extra = [_symbol(g, species) for g in AXIS_GENES] + mt + [f"Gene{i}" for i in range(60)]
    genes += [g for g in extra if g not in genes]
    n_genes = len(genes)
    gidx = {g: i for i, g in enumerate(genes)}

    samples = [f"S{i + 1}" for i in range(n_samples)]
    smp = rng.choice(samples, size=n_cells)
    p = np.linspace(2, 1, len(POPS))
    pop = rng.choice(POPS, size=n_cells, p=p / p.sum())
    lam = np.full((n_cells, n_genes), 0.3)
    for k, name in enumerate(POPS):
        m = pop == name
        for g in markers.get(name, []):
            lam[np.ix_(m, [gidx[g]])] += 4.0
        lam[np.ix_(m, [gidx[g] for g in extra[:8]])] += 0.5 * (k % 3)
    counts = rng.poisson(lam * rng.uniform(0.6, 1.6, size=(n_cells, 1))).astype(np.float32)
    Xc = sp.csr_matrix(counts)
    lib = counts.sum(1, keepdims=True)
    X = sp.csr_matrix(np.log1p(counts / np.maximum(lib, 1) * 1e4).astype(np.float32))

    obs = pd.DataFrame(index=[f"{s}_cell{i}" for i, s in enumerate(smp)])
    obs["sample"] = pd.Categorical(smp, categories=samples)
    obs["batch"] = obs["sample"]
    if condition:
        cond = {s: ("bone_metastasis" if i % 2 == 0 else "control") for i, s in enumerate(samples)}
        obs["condition"] = pd.Categorical([cond[s] for s in smp])
    pct_mito = counts[:, [gidx[m] for m in mt]].sum(1) / np.maximum(lib[:, 0], 1) * 100
    obs["qc_total_counts"] = lib[:, 0]
    obs["qc_n_genes"] = (counts > 0).sum(1).astype(float)
    obs["qc_pct_mito"] = pct_mito
    obs["qc_pct_hb"] = rng.gamma(1.0, 0.3, size=n_cells)
    obs["doublet_score"] = rng.beta(1, 10, size=n_cells)
    obs["predicted_doublet"] = False
    vocab = list(POPULATION_COLORS)
    obs["population"] = pd.Categorical(pop, categories=vocab)
    obs["cell_type"] = pd.Categorical([LINEAGE[x] for x in pop])
    obs["annotation_confidence"] = rng.uniform(0.2, 1.0, size=n_cells)
    if labels:
        obs["true_population"] = pd.Categorical(np.where(pop == "Unassigned", "CD4 T", pop))
    obs["leiden"] = pd.Categorical([str(POPS.index(x) % 12) for x in pop])
    for name in PROGRAMMES:
        cols = [gidx[g] for g in programmes[name] if g in gidx]
        v = np.asarray(X[:, cols].mean(1)).ravel() - np.asarray(X.mean(1)).ravel()
        obs[f"score_{name}"] = v
        obs[f"aucell_{name}"] = (v - v.min()) / (np.ptp(v) + 1e-9)

    centre = rng.normal(0, 6, size=(len(POPS), 10))
    pidx = np.array([POPS.index(x) for x in pop])
    sidx = np.array([samples.index(s) for s in smp])
    shift = rng.normal(0, 4, size=(n_samples, 10))
    latent = centre[pidx] + rng.normal(0, 1, size=(n_cells, 10))
    pca = latent + shift[sidx]
    a = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))
    a.layers["counts"] = Xc
    a.var["highly_variable"] = True
    a.var["mito"] = a.var_names.isin(mt)
    a.var["hb"] = False
    a.obsm["X_pca"] = pca.astype(np.float32)
    a.obsm["X_scVI"] = latent.astype(np.float32)
    a.obsm["X_umap"] = (latent[:, :2] + rng.normal(0, 0.3, (n_cells, 2))).astype(np.float32)
    a.obsm["X_umap_unintegrated"] = (pca[:, :2]).astype(np.float32)
    qc = {}
    for s in samples:
        n_after = int((smp == s).sum())
        removed = {"low_counts": 40, "high_counts": 3, "low_genes": 12, "high_genes": 2,
                   "high_mito": 25, "doublet": 9}  # fmt: skip
        qc[s] = {
            "n_before": n_after + sum(removed.values()),
            **{f"removed_{r}": v for r, v in removed.items()},
            "n_after": n_after,
            "threshold_min_counts": 20.0,
            "threshold_max_counts": float(np.percentile(lib, 99.5)),
            "threshold_min_genes": 10.0,
            "threshold_max_genes": float(n_genes),
            "threshold_max_pct_mito": 15.0,
            "floor_min_counts": 10.0,
            "median_pct_hb": 0.2,
            "high_ambient_hb": s == samples[0],
            "doublets": "scrublet (threshold 0.25)",
        }
    a.uns["bonemet"] = {
        "version": bm.__version__,
        "species": species,
        "is_counts": True,
        "device": "cpu",
        "qc": qc,
        "gene_sets": {
            n: {"coverage": 1.0 if i else 0.4, "n_found": 4, "n_total": 10}
            for i, n in enumerate(PROGRAMMES)
        },
        "warnings": ["gene set 'erythroid_mimicry': 40% of its genes found (< 50%)"],
        "parameters": {"qc": {"min_counts": 500}, "integrate": {"method": "scvi"}},
        "timings": {"qc": 1.5, "integrate": 12.0},
        "inputs": {
            s: {"path": f"/data/{s}.h5ad", "sha256": "0" * 64, "format": "h5ad"} for s in samples
        },
    }
    return a


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
}  # fmt: skip


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
    assert f"({species})" in figs["dotplot"].axes[0].get_xlabel()


def test_qc_thresholds_drawn(mouse: ad.AnnData) -> None:
    thr = bm.pl.qc_thresholds(mouse)
    assert thr["S1"]["counts"]["min"] == 20.0  # the strictest of floor (10) and threshold (20)
    assert thr["S1"]["mito"]["max"] == 15.0
    assert "hb" not in thr["S1"]  # high_ambient_hb (a flag) is not a threshold
    fig = bm.pl.qc_violins(mouse)
    dashed = [c for ax in fig.axes for c in ax.collections if c.get_linestyle()[0][1] is not None]
    assert len(dashed) >= 3 * 3  # counts min/max, genes min/max, mito max per sample
    table = bm.pl.qc_removed_table(mouse)
    assert table.loc["S1", "removed: high_mito"] == 25
    assert table.loc["S1", "n_before"] == table.loc["S1", "n_after"] + 91


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
                out[t.get_text()] = to_hex(c).upper()
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
    assert len(POPULATION_COLORS) == 28
    assert len(set(POPULATION_COLORS.values())) == 28
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
    df = bm.pl.integration_metrics_table(mouse)
    assert list(df.index) == ["unintegrated (X_pca)", "integrated (X_scVI)"]
    before, after = df.iloc[0], df.iloc[1]
    # the generated PCA carries a sample shift that the "integrated" space lacks
    assert after["knn_batch_entropy"] > before["knn_batch_entropy"]
    assert after["silhouette_batch"] > before["silhouette_batch"]
    assert 0 <= after["silhouette_label"] <= 1 and after["ari_kmeans"] > 0.3
    assert np.isnan(before["ari_leiden"]) and np.isfinite(after["ari_leiden"])


def test_review_axes_table(mouse: ad.AnnData) -> None:
    df = bm.pl.review_axes_table(mouse)
    assert list(df.index) == ["S1", "S2", "S3"]
    for col in ("osteoclast_SPP1", "cd8_tpex_fraction", "iron_macrophage_fraction",
                "tumour_erythroid_mimicry", "condition"):  # fmt: skip
        assert col in df.columns
    assert df["cd8_tpex_fraction"].between(0, 1).all()
    pop = mouse.obs["population"].astype(str)
    s1 = pop[mouse.obs["sample"] == "S1"]
    cd8 = s1.isin(["CD8 T", "CD8 Tpex (TCF1+)", "CD8 Tex (terminal)"]).sum()
    assert df.loc["S1", "cd8_tpex_fraction"] == pytest.approx(
        (s1 == "CD8 Tpex (TCF1+)").sum() / cd8
    )


def test_bad_format_is_a_config_error(mouse: ad.AnnData, tmp_path: Path) -> None:
    with pytest.raises(bm.ConfigError, match="png, pdf or svg"):
        bm.pl.save_figures(mouse, tmp_path, formats=("gif",))


def test_palettes_cover_the_annotation_vocabularies() -> None:
    assert list(bm.pl.POPULATIONS) == list(bm.tl.POPULATIONS)
    assert set(bm.pl.CELL_TYPE_COLORS) == set(bm.tl.CELL_TYPES)
    for pop, lineage in bm.tl.POPULATION_TO_CELL_TYPE.items():
        assert pop in POPULATION_COLORS and lineage in bm.pl.CELL_TYPE_COLORS
