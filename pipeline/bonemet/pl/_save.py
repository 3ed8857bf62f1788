"""Write every figure a run supports (PNG/PDF), skipping the ones whose data is absent."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .._logging import logger
from .._meta import add_warning
from .._utils import atomic_path
from ._common import STYLE, MissingDataError, note_skip
from ._compare import ligand_receptor_dotplot, volcano
from ._conditions import condition_comparisons
from ._figures import (
    composition,
    integration_metrics,
    integration_umaps,
    marker_dotplot,
    qc_removed,
    qc_violins,
    review_axes,
    signature_umaps,
    signature_violins,
    umap,
)
from ._gene_sets import gene_set_overlap
from ._metrics import label_key_of

__all__ = ["save_figures", "FIGURES", "FigureSpec", "iter_figures"]

#: memory (bytes) the raster layers of one PDF/SVG may take while it is written
VECTOR_RASTER_BUDGET = 384 * 2**20


def vector_raster_dpi(fig: Figure, dpi: int, budget: int = VECTOR_RASTER_BUDGET) -> int:
    """The resolution of a PDF/SVG figure's rasterized layers (the scatter points).

    matplotlib renders each rasterized artist of a vector file on a buffer the size of the
    whole figure at ``dpi`` and keeps every buffer until the file is finished, so a
    figure of many scatter panels (the signature UMAPs: 16 at 11 x 19 in) needs
    ``n x width x height x dpi^2 x 4`` bytes: 1.2 GB at 300 dpi, whatever the number of
    cells. Above ``budget`` the layers are drawn at the largest resolution that fits (at
    least 100 dpi); the text and lines stay vectors and the PNG keeps ``dpi``.
    """
    n = sum(
        1
        for ax in fig.axes
        for artist in ax.get_children()
        if getattr(artist, "get_rasterized", lambda: False)()
    )
    w, h = fig.get_size_inches()
    need = n * float(w) * float(h) * 4.0
    if n == 0 or need * dpi**2 <= budget:
        return int(dpi)
    return int(max(100, min(dpi, (budget / need) ** 0.5)))


def _needs_levels(key: str, n: int = 2) -> Callable[[Any], str | None]:
    def check(adata: Any) -> str | None:
        if key not in adata.obs.columns:
            return f'obs["{key}"] is absent'
        if adata.obs[key].nunique() < n:
            return f'obs["{key}"] has fewer than {n} values'
        return None

    return check


def _needs_labels(adata: Any) -> str | None:
    return None if label_key_of(adata) else "no known labels (reference_label/true_population)"


@dataclass(frozen=True)
class FigureSpec:
    """One figure of a run: file stem, report section, title, caption and how to draw it."""

    name: str
    section: str
    title: str
    caption: str
    draw: Callable[[Any], Figure]
    check: Callable[[Any], str | None] | None = None


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("condition_comparisons", "results", "Condition comparisons, per sample",
               "Each tested within-lineage fraction (Tpex in CD8, MDSC in monocytes and "
               "neutrophils, CHI3L3+ in neutrophils, iron-recycling in macrophages), osteoclast "
               "share and tumour programme score: one point per sample, box per condition "
               "(median, IQR), n samples per condition under it; above each panel the compare "
               "stage's estimate with its 95% CI and adjusted p.",
               condition_comparisons, _needs_levels("condition")),
    FigureSpec("qc_violins", "qc", "QC metrics per sample",
               "Total counts, genes, % mitochondrial and % haemoglobin reads of every cell before "
               "QC (grey violins); removed cells are points coloured by the reason (n per reason "
               "in the legend); red dashes are the per-sample thresholds (the loosest of the sample's "
               "pre-QC groups: with per-group thresholds a cell can be removed inside them).",
               qc_violins),
    FigureSpec("qc_removed", "qc", "Cells removed by QC",
               "Cells kept and removed per sample, by reason.", qc_removed),
    FigureSpec("integration_umaps", "integration", "Before and after integration",
               "UMAP of PCA (before) and of the integrated latent space (after), by sample and "
               "population.", integration_umaps),
    FigureSpec("integration_metrics", "integration", "Integration metrics",
               "Batch mixing and bio conservation before vs after integration (0–1, higher is "
               "better), against the known labels.", integration_metrics, _needs_labels),
    FigureSpec("umap_sample", "integration", "UMAP by sample",
               "Integrated UMAP coloured by sample.", lambda a: umap(a, color="sample")),
    FigureSpec("umap_labels", "integration", "UMAP by known labels",
               "Integrated UMAP coloured by the reference (or simulated) labels.",
               lambda a: umap(a, color=label_key_of(a) or "reference_label"), _needs_labels),
    FigureSpec("umap_population", "populations", "UMAP by population",
               "Integrated UMAP coloured by annotated population: one hue family per lineage, "
               "names at each population's median position, n cells in the legend.",
               lambda a: umap(a, color="population")),
    FigureSpec("umap_cell_type", "populations", "UMAP by cell type",
               "Integrated UMAP coloured by lineage.", lambda a: umap(a, color="cell_type")),
    FigureSpec("umap_condition", "populations", "UMAP by condition",
               "Integrated UMAP coloured by condition.", lambda a: umap(a, color="condition"),
               _needs_levels("condition")),
    FigureSpec("marker_dotplot", "populations", "Marker genes",
               "Defining markers of every population, one panel per lineage group: each "
               "block starts with the genes the state is defined by (e.g. VCAM1, CD163, CCR3, "
               "SLC40A1 for iron-recycling macrophages), then the most specific curated markers "
               "in this data; n cells per population in brackets.", marker_dotplot),
    FigureSpec("composition_sample", "populations", "Composition per sample",
               "Fraction of each population per sample.", composition),
    FigureSpec("composition_condition", "populations", "Composition per condition",
               "Fraction of each population per condition.",
               lambda a: composition(a, groupby="condition"), _needs_levels("condition", 1)),
    FigureSpec("signature_umaps", "signatures", "Signature scores on the UMAP",
               "Per-cell programme scores (scanpy score_genes: set mean minus matched control-set "
               "mean, log1p CP10k) on one shared colour scale centred on 0 and clipped at the 99th "
               "percentile of |score|; last panel: erythroid mimicry on the tumour cells only.",
               signature_umaps),
    FigureSpec("signature_violins_population", "signatures", "Signature scores by population",
               "Per-cell programme scores by population.", signature_violins),
    FigureSpec("signature_violins_sample", "signatures", "Signature scores by sample",
               "Per-cell programme scores by sample.",
               lambda a: signature_violins(a, groupby="sample")),
    FigureSpec("gene_set_overlap", "signatures", "Gene-set overlap",
               "Jaccard index between the scored gene sets; numbers are shared genes (diagonal: "
               "genes found per set).", gene_set_overlap),
    FigureSpec("review_axes", "axes", "The review's axes",
               "Per-sample quantities of the axes in the bone-metastasis literature.", review_axes),
    FigureSpec("volcano", "compare", "Pseudobulk differential expression",
               "Genes per population (pseudobulk over samples, PyDESeq2): log2 fold change vs "
               "-log10 p; coloured: BH-adjusted p < 0.05; samples per group in each title.",
               volcano),
    FigureSpec("ligand_receptor", "compare", "Ligand–receptor interactions",
               "LIANA+ rank aggregate per sample; dot size: fraction of a condition's samples "
               "where the interaction is significant (n samples under each condition), colour: "
               "median magnitude rank. Left: the review's pairs; right: the most consistent.",
               ligand_receptor_dotplot),
)  # fmt: skip


def iter_figures(
    adata: Any, *, names: Sequence[str] | None = None, strict: bool = False
) -> Iterator[tuple[FigureSpec, Figure]]:
    """Draw each figure the data supports; log a note for each one skipped.

    A figure whose data is absent is skipped with an info note. Any other error is a
    warning (and is added to ``uns["bonemet"]["warnings"]``) unless ``strict``, when it
    is raised.
    """
    wanted = set(names) if names is not None else None
    for spec in FIGURES:
        if wanted is not None and spec.name not in wanted:
            continue
        reason = spec.check(adata) if spec.check else None
        if reason:
            note_skip(spec.name, reason)
            continue
        try:
            fig = spec.draw(adata)
        except MissingDataError as e:
            note_skip(spec.name, str(e))
            continue
        except Exception as e:
            if strict:
                raise
            msg = f"figure {spec.name} failed: {type(e).__name__}: {e}"
            add_warning(adata, msg)
            continue
        yield spec, fig


def save_figures(
    adata: Any,
    out_dir: str | os.PathLike,
    *,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 300,
    names: Sequence[str] | None = None,
    strict: bool = False,
) -> list[Path]:
    """Write every figure the data supports to ``out_dir/<name>.<format>``.

    Each file is written atomically (temporary file renamed on success). Figures whose
    slots are absent (no condition, no labels, no scores, ...) are skipped with a logged
    note; a full run with two conditions writes all of :data:`FIGURES`.

    Parameters
    ----------
    adata
        The annotated AnnData (see the AnnData contract).
    out_dir
        Folder for the files (created).
    formats
        Any of ``"png"``, ``"pdf"``, ``"svg"``.
    dpi
        Resolution of raster output: a PNG is ``figsize * dpi`` pixels. The scatter
        layers of a PDF/SVG use it too, unless a figure of many panels would need more
        than :data:`VECTOR_RASTER_BUDGET` for them (see :func:`vector_raster_dpi`).
    names
        Only these figures (the ``FIGURES`` names); default all.
    strict
        Raise on an unexpected plotting error instead of warning.

    Returns
    -------
    The written paths, in figure order then format order.
    """
    import matplotlib as mpl

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fmts = [f.lower().lstrip(".") for f in formats]
    bad = [f for f in fmts if f not in ("png", "pdf", "svg")]
    if bad:
        from .._errors import ConfigError

        raise ConfigError(f"figure formats {bad} are not supported: use png, pdf or svg")
    paths: list[Path] = []
    for spec, fig in iter_figures(adata, names=names, strict=strict):
        with mpl.rc_context(STYLE):
            for fmt in fmts:
                path = out / f"{spec.name}.{fmt}"
                res = dpi if fmt == "png" else vector_raster_dpi(fig, dpi)
                if res != dpi:
                    logger.info("figure %s.%s: raster layers at %d dpi", spec.name, fmt, res)
                with atomic_path(path) as tmp:
                    fig.savefig(tmp, format=fmt, dpi=res, metadata=_metadata(fmt))
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o644)  # temp files are created 0600
                paths.append(path)
        logger.info("figure %s written", spec.name)
    logger.info("%d figures written to %s", len({p.stem for p in paths}), out)
    return paths


def _metadata(fmt: str) -> dict[str, Any] | None:
    if fmt == "pdf":
        return {"Creator": "bonemet", "CreationDate": None}
    if fmt == "png":
        return {"Software": "bonemet"}
    return None
