"""Figure functions: each takes an AnnData and returns a matplotlib Figure.

Every function is keyword-only after ``adata``, draws on the non-interactive Agg canvas
(no pyplot state), uses one fixed colour per population (:data:`POPULATION_COLORS`),
puts legends outside the axes and labels axes with units. A figure that needs a slot the
AnnData lacks raises :class:`MissingDataError` naming the slot; :func:`save_figures`
turns that into a logged skip.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..tl._axes import AXIS_PAIRS
from ._common import (
    MissingDataError,
    bonemet_uns,
    categories,
    colors_for,
    figure_function,
    is_population_key,
    legend_columns,
    legend_width,
    new_figure,
    point_size,
    require,
    species_of,
)
from ._metrics import (
    BATCH_METRICS,
    BIO_METRICS,
    SCORE_COLUMNS,
    integrated_basis,
    integration_metrics_table,
)
from ._palette import UNASSIGNED

__all__ = [
    "umap",
    "marker_dotplot",
    "signature_umaps",
    "signature_violins",
    "composition",
    "qc_violins",
    "qc_removed",
    "integration_umaps",
    "integration_metrics",
    "review_axes",
    "score_keys",
    "qc_thresholds",
    "AXES_PAIRS",
    "neutrophil_stage_values",
    "KEY_PROGRAMMES",
]

# programmes in the order the review discusses them; any other score_* follows, sorted
_PROGRAMME_ORDER = (
    "erythroid_mimicry",
    "erythroid_mimicry_core",
    "erythroid_identity",
    "haem_synthesis",
    "ferroptosis_driver",
    "ferroptosis_suppressor",
    "ferroptosis_kegg",
    "ferroptosis_wp4313",
    "osteoclast_activity",
    "iron_uptake",
    "iron_storage",
    "iron_export",
    "hypoxia",
)  # the ligand-receptor sets (axis_*, vicious_cycle) are not per-cell scores
#: the programmes the issue asks violins for (all score_* when none of them is present)
KEY_PROGRAMMES = (
    "erythroid_mimicry",
    "ferroptosis_driver",
    "ferroptosis_suppressor",
    "osteoclast_activity",
    "iron_uptake",
    "iron_export",
    "hypoxia",
)

_LABELS = {
    "population": "Population",
    "cell_type": "Cell type",
    "sample": "Sample",
    "batch": "Batch",
    "condition": "Condition",
    "leiden": "Leiden cluster",
    "true_population": "True population (simulated)",
    "reference_label": "Reference label",
}


def _pretty(name: str) -> str:
    return _LABELS.get(name, name.replace("_", " "))


def _set_name(key: str) -> str:
    return re.sub(r"^(score|aucell)_", "", key)


def _pretty_set(key: str) -> str:
    from ._gene_sets import gene_set_title

    return gene_set_title(_set_name(key))


def score_keys(adata: Any, *, prefix: str = "score_") -> list[str]:
    """The signature-score columns (``obs["score_<set>"]``) in a fixed, meaningful order."""
    cols = [
        c
        for c in adata.obs.columns
        if str(c).startswith(prefix) and pd.api.types.is_numeric_dtype(adata.obs[c])
    ]
    rank = {f"{prefix}{n}": i for i, n in enumerate(_PROGRAMME_ORDER)}
    return sorted(cols, key=lambda c: (rank.get(c, len(rank)), c))


def _embedding(adata: Any, basis: str) -> np.ndarray:
    xy = np.asarray(adata.obsm[basis])[:, :2]
    return xy.astype(float)


def _style_embedding_axes(ax: Any, basis: str) -> None:
    label = basis.removeprefix("X_").replace("_unintegrated", "").upper()
    ax.set_xlabel(f"{label} 1 (a.u.)")
    ax.set_ylabel(f"{label} 2 (a.u.)")
    ax.set_xticks([])
    ax.set_yticks([])


def _scatter_categories(
    ax: Any,
    xy: np.ndarray,
    values: np.ndarray,
    cats: Sequence[str],
    colors: Mapping[str, str],
    *,
    size: float,
    seed: int = 0,
) -> list[Any]:
    """Scatter cells in a random (seeded) order so no category hides another."""
    order = np.random.default_rng(seed).permutation(len(values))
    # Unassigned cells go underneath the named ones
    order = order[np.argsort(values[order] != UNASSIGNED, kind="stable")]
    col = np.array([colors.get(v, "#BDBDBD") for v in values], dtype=object)
    ax.scatter(
        xy[order, 0], xy[order, 1], c=list(col[order]), s=size, linewidths=0, rasterized=True
    )
    n = pd.Series(values).value_counts()
    return [
        Line2D([], [], marker="o", linestyle="", markersize=6, color=colors[c],
               label=f"{c} ({int(n.get(c, 0)):,})")
        for c in cats
    ]  # fmt: skip


#: short names for on-data labels (the legend keeps the full name)
_SHORT = {
    "Iron-recycling macrophage (VCAM1+CD163+CCR3+)": "Iron-recycling mac.",
    "Immature neutrophil (CHI3L3+)": "CHI3L3+ imm. neutrophil",
    "CD8 Tpex (TCF1+)": "CD8 Tpex",
    "CD8 Tex (terminal)": "CD8 Tex",
    "Pericyte/Smooth muscle": "Pericyte/SMC",
    "Non-classical monocyte": "Non-classical mono.",
    "Classical monocyte": "Classical mono.",
    "Erythroid progenitor": "Erythroid prog.",
    "Tumour epithelial": "Tumour",
}


def _short_label(name: str) -> str:
    return _SHORT.get(name, re.sub(r"\s*\(.*\)$", "", name))


def _label_on_data(
    ax: Any,
    xy: np.ndarray,
    values: np.ndarray,
    cats: Sequence[str],
    *,
    min_cells: int = 5,
    fontsize: float = 7.5,
) -> list[Any]:
    """Each category's name at the median of its cells, white-outlined, nudged apart so no
    two labels overlap (largest categories placed first)."""
    from matplotlib import patheffects

    fig = ax.figure
    sizes = {c: int((values == c).sum()) for c in cats if c != UNASSIGNED}
    todo = [c for c in sorted(sizes, key=lambda c: -sizes[c]) if sizes[c] >= min_cells]
    renderer = fig.canvas.get_renderer()
    placed: list[Any] = []
    texts = []
    to_data = ax.transData.inverted()
    for c in todo:
        cx, cy = np.median(xy[values == c], axis=0)
        t = ax.text(cx, cy, _short_label(c), fontsize=fontsize, ha="center", va="center",
                    fontweight="bold", color="#111111", zorder=5,
                    path_effects=[patheffects.withStroke(linewidth=2.2, foreground="white")])  # fmt: skip
        bb = t.get_window_extent(renderer).expanded(1.05, 1.15)
        h = bb.height
        base = ax.transData.transform((cx, cy))
        for k in range(0, 24):
            dy = (k + 1) // 2 * h * (1 if k % 2 else -1)
            cand = bb.translated(0, dy)
            if not any(cand.overlaps(o) for o in placed):
                t.set_position(to_data.transform((base[0], base[1] + dy)))
                bb = cand
                break
        placed.append(bb)
        texts.append(t)
    return texts


def _outside_legend(ax: Any, handles: list[Any], title: str) -> None:
    if not handles:
        return
    ax.legend(
        handles=handles,
        title=title,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        ncol=legend_columns(len(handles)),
        handletextpad=0.3,
        columnspacing=0.8,
        alignment="left",
    )


# ----------------------------------------------------------------------------- UMAP


@figure_function
def umap(
    adata: Any,
    *,
    color: str = "population",
    basis: str = "X_umap",
    title: str | None = None,
    panel_size: float = 4.5,
    size: float | None = None,
    cmap: str = "viridis",
    seed: int = 0,
    labels_on_data: bool | None = None,
) -> Figure:
    """UMAP of the cells coloured by an obs column.

    Categorical columns get a legend outside the axes; ``population`` (and
    ``true_population``/``reference_label``) use the fixed population colours, samples and
    conditions a stable qualitative palette. Numeric columns get a colour bar.

    Parameters
    ----------
    adata
        Needs ``obsm[basis]`` and ``obs[color]`` (or ``color`` a gene in ``var_names``).
    color
        An obs column or a gene symbol.
    basis
        ``"X_umap"`` (integrated) or ``"X_umap_unintegrated"``.
    labels_on_data
        Write each category's name at its centroid (default: for populations and cell
        types); the legend gives the full names with n cells.
    """
    if color in adata.obs.columns:
        require(adata, obs=[color], obsm=[basis], what=f"UMAP by {color}")
        values = adata.obs[color]
    elif color in adata.var_names:
        require(adata, obsm=[basis], what=f"UMAP of {color}")
        from ._common import dense_column

        values = pd.Series(dense_column(adata, color), index=adata.obs_names)
    else:
        raise MissingDataError(f'UMAP needs obs["{color}"] (or a gene named {color!r})')
    xy = _embedding(adata, basis)
    s = size if size is not None else point_size(adata.n_obs)
    categorical = not pd.api.types.is_numeric_dtype(values) or isinstance(
        values.dtype, pd.CategoricalDtype
    )
    if categorical:
        cats, colors = colors_for(adata, color) if color in adata.obs else ([], {})
        labelled = (
            labels_on_data
            if labels_on_data is not None
            else (is_population_key(color) or color == "cell_type")
        )
        if labelled and panel_size == 4.5:
            panel_size = 6.0  # room for the names on the data
        ncol = legend_columns(len(cats))
        fig = new_figure(panel_size + legend_width(cats, ncol) + 0.4, panel_size + 0.3)
        ax = fig.add_subplot()
        vals = values.astype(str).to_numpy()
        handles = _scatter_categories(ax, xy, vals, cats, colors, size=s, seed=seed)
        _outside_legend(ax, handles, f"{_pretty(color)} (n cells)")
        if labelled:
            _style_embedding_axes(ax, basis)
            fig.draw_without_rendering()  # final axes position before measuring labels
            _label_on_data(ax, xy, vals, cats)
    else:
        fig = new_figure(panel_size + 1.2, panel_size + 0.3)
        ax = fig.add_subplot()
        v = values.to_numpy(dtype=float)
        order = np.argsort(np.nan_to_num(v, nan=-np.inf), kind="stable")
        sc = ax.scatter(
            xy[order, 0], xy[order, 1], c=v[order], s=s, cmap=cmap, linewidths=0, rasterized=True
        )
        unit = "log1p(CP10k)" if color in adata.var_names else "value"
        fig.colorbar(sc, ax=ax, shrink=0.6, label=f"{color} ({unit})")
    _style_embedding_axes(ax, basis)
    ax.set_title(title or f"{_pretty(color)} ({adata.n_obs:,} cells)")
    return fig


# ------------------------------------------------------------------- marker dotplot


def _group_means(
    adata: Any, genes: Sequence[str], groups: np.ndarray, cats: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean expression and fraction of expressing cells: groups x genes."""
    X = adata[:, list(genes)].X
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    X = X.astype(np.float64)
    mean = np.zeros((len(cats), len(genes)))
    frac = np.zeros_like(mean)
    for i, c in enumerate(cats):
        m = groups == c
        if m.any():
            mean[i] = X[m].mean(axis=0)
            frac[i] = (X[m] > 0).mean(axis=0)
    return mean, frac


def _marker_genes(
    adata: Any, groups: np.ndarray, cats: Sequence[str], *, n_genes: int, species: str
) -> tuple[list[str], list[str]]:
    """Defining markers per group: curated positives, ranked by specificity in this data."""
    from .._signatures import load_gene_sets, match_genes

    try:
        sets = load_gene_sets("population_marker")
    except Exception as e:  # no packaged marker files
        raise MissingDataError(f"marker dotplot needs population_marker gene sets ({e})") from e
    by_target: dict[str, list[str]] = {}
    for gs in sets.values():
        if gs.target:
            by_target.setdefault(gs.target.strip().lower(), []).extend(gs.genes(species))
    genes: list[str] = []
    owner: list[str] = []
    for c in cats:
        cand = by_target.get(c.strip().lower())
        if not cand:
            continue
        matched, _ = match_genes(cand, list(adata.var_names))
        matched = [g for g in matched if g not in genes]
        if not matched:
            continue
        mean, _ = _group_means(adata, matched, groups, [c])
        rest = groups != c
        if rest.any():
            X = adata[rest, matched].X
            X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
            other = np.asarray(X, dtype=float).mean(axis=0)
        else:
            other = np.zeros(len(matched))
        rank = np.argsort(-(mean[0] - other), kind="stable")[:n_genes]
        for j in rank:
            genes.append(matched[j])
            owner.append(c)
    return genes, owner


#: The dot plot's panels: a title and the lineages (``obs["cell_type"]``) it holds.
MARKER_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("T and NK cells", ("T cell", "NK cell")),
    ("B and plasma cells", ("B cell", "Plasma cell")),
    ("Monocytes, macrophages, MDSC, DCs and mast cells",
     ("Monocyte/Macrophage", "Dendritic cell", "Mast cell/Basophil")),
    ("Neutrophils and PMN-MDSC", ("Neutrophil",)),
    ("Erythroid, HSPC and megakaryocytes", ("Erythroid", "HSPC", "Megakaryocyte")),
    ("Bone, stroma, vessels and tumour",
     ("Osteoclast", "Osteoblast", "Stromal", "Chondrocyte", "Fibroblast",
      "Pericyte/Smooth muscle", "Endothelial", "Tumour epithelial")),
)  # fmt: skip

#: Genes each named state is defined by in the literature (human symbols; matched to the
#: data case-insensitively, so mouse orthologues with the same symbol match): always shown
#: first in that state's block, before the most specific curated markers of the data.
DEFINING_GENES: dict[str, tuple[str, ...]] = {
    "CD8 Tpex (TCF1+)": ("TCF7", "SLAMF6", "CXCR5"),
    "CD8 Tex (terminal)": ("HAVCR2", "TOX", "ENTPD1", "PDCD1"),
    "Iron-recycling macrophage (VCAM1+CD163+CCR3+)": ("VCAM1", "CD163", "CCR3", "SLC40A1"),
    "Immature neutrophil (CHI3L3+)": ("CHIL3", "CHI3L1", "LTF", "NGP"),
    "Treg": ("FOXP3", "IL2RA"),
    "Osteoclast": ("ACP5", "CTSK"),
    "Osteoblast": ("RUNX2", "SP7", "BGLAP"),
}


def _panel_of(population: str) -> int:
    from .._vocab import POPULATION_TO_CELL_TYPE

    lin = POPULATION_TO_CELL_TYPE.get(population)
    for i, (_, lineages) in enumerate(MARKER_PANELS):
        if lin in lineages:
            return i
    return len(MARKER_PANELS) - 1


def _defining(adata: Any, population: str, core: Sequence[str]) -> list[str]:
    upper = {str(g).upper(): str(g) for g in adata.var_names}
    out = []
    for g in (*core, *DEFINING_GENES.get(population, ())):
        hit = upper.get(str(g).upper())
        if hit is not None and hit not in out:
            out.append(hit)
    return out


@figure_function
def marker_dotplot(
    adata: Any,
    *,
    groupby: str = "population",
    n_genes: int = 3,
    species: str = "auto",
    include_unassigned: bool = False,
    cmap: str = "Reds",
) -> Figure:
    """Dot plot of the defining markers of every population present, one panel per lineage
    group (:data:`MARKER_PANELS`), so each panel stays legible at page width.

    Each population's block starts with the genes that define it (the ``*_core`` marker
    sets and :data:`DEFINING_GENES`: VCAM1, CD163, CCR3 and SLC40A1 for the iron-recycling
    macrophages), then the ``n_genes`` most specific curated ``population_marker`` genes in
    this data (mean log1p(CP10k) in the population minus elsewhere). Dot size: % of cells
    expressing; colour: mean expression scaled to 0..1 per gene within the panel. A
    coloured square marks each population and the population each gene belongs to.

    Parameters
    ----------
    adata
        Log-normalised ``X`` and ``obs[groupby]``.
    groupby
        ``"population"`` (default) or another column whose values are population names.
    species
        ``"auto"`` (from ``uns["bonemet"]["species"]`` or the gene symbols), ``"human"``,
        ``"mouse"``.
    """
    from .._signatures import load_gene_sets

    require(adata, obs=[groupby], what="marker dotplot", hint="run bm.tl.annotate first")
    sp = species if species in ("human", "mouse") else species_of(adata)
    cats, colors = colors_for(adata, groupby)
    if not include_unassigned:
        cats = [c for c in cats if c != UNASSIGNED]
    groups = adata.obs[groupby].astype(str).to_numpy()
    try:
        core_sets = [gs for gs in load_gene_sets("population_marker").values()
                     if gs.name.endswith("_core") and gs.target]  # fmt: skip
    except Exception:  # noqa: BLE001 - no packaged marker files: _marker_genes says so
        core_sets = []
    core = {}
    for gs in core_sets:
        core.setdefault(gs.target.strip().lower(), []).extend(gs.genes(sp))
    panels: list[tuple[str, list[str], list[str], list[str]]] = []
    for pi, (title, _lins) in enumerate(MARKER_PANELS):
        pcats = [c for c in cats if _panel_of(c) == pi]
        if not pcats:
            continue
        genes: list[str] = []
        owner: list[str] = []
        for c in pcats:
            first = [g for g in _defining(adata, c, core.get(c.lower(), [])) if g not in genes]
            ranked, _ = _marker_genes(adata, groups, [c], n_genes=n_genes + len(first),
                                      species=sp)  # fmt: skip
            rest = [g for g in ranked if g not in genes and g not in first]
            pick = first + rest[: max(n_genes - len(first), 1 if first else n_genes)]
            genes += pick
            owner += [c] * len(pick)
        if genes:
            panels.append((title, pcats, genes, owner))
    if not panels:
        raise MissingDataError(
            f"marker dotplot found no marker genes of the populations present in var_names "
            f"({sp} symbols)"
        )
    max_ng = max(len(g) for _, _, g, _ in panels)
    label_w = max(len(c) for c in cats) * 0.072 + 0.5
    col_w = 0.24
    width = max(col_w * max_ng + label_w + 0.8, 6.5)
    heights = [0.26 * len(p) + 1.55 for _, p, _, _ in panels]
    fig = new_figure(width, sum(heights) + 1.0)
    top, *subs = fig.subfigures(len(panels) + 1, 1, height_ratios=[1.0, *heights])
    max_area = 90.0
    for sub, (title, pcats, genes, owner) in zip(subs, panels):
        ng, nc = len(genes), len(pcats)
        mean, frac = _group_means(adata, genes, groups, pcats)
        span = mean.max(axis=0) - mean.min(axis=0)
        scaled = (mean - mean.min(axis=0)) / np.where(span > 0, span, 1.0)
        gs = sub.add_gridspec(1, 2, width_ratios=[ng + 1.6, max(max_ng - ng, 0) + 0.01])
        ax = sub.add_subplot(gs[0, 0])
        yy, xx = np.meshgrid(np.arange(nc), np.arange(ng), indexing="ij")
        ax.scatter(xx.ravel(), yy.ravel(), s=frac.ravel() * max_area, c=scaled.ravel(),
                   cmap=cmap, vmin=0, vmax=1, edgecolors="#444444", linewidths=0.3)  # fmt: skip
        ax.scatter(np.full(nc, -1.0), np.arange(nc), marker="s", s=50,
                   c=[colors[c] for c in pcats])  # fmt: skip
        ax.scatter(np.arange(ng), np.full(ng, -1.0), marker="s", s=30,
                   c=[colors[o] for o in owner])  # fmt: skip
        # a thin line between population blocks
        for j in range(1, ng):
            if owner[j] != owner[j - 1]:
                ax.axvline(j - 0.5, color="#DDDDDD", lw=0.6, zorder=0)
        ax.set_xticks(np.arange(ng), genes, rotation=90, fontstyle="italic", fontsize=8)
        n_cells = pd.Series(groups).value_counts()
        ax.set_yticks(np.arange(nc), [f"{c} ({int(n_cells.get(c, 0)):,})" for c in pcats],
                      fontsize=8.5)  # fmt: skip
        ax.set_xlim(-1.6, ng - 0.4)
        ax.set_ylim(nc - 0.4, -1.6)
        ax.spines[["left", "bottom"]].set_visible(False)
        ax.tick_params(length=0)
        ax.set_title(title, loc="left", fontsize=10)
    # legends in the top strip: dot size and colour scale
    lax = top.add_subplot(1, 2, 1)
    lax.axis("off")
    handles = [
        Line2D([], [], marker="o", linestyle="", color="#888888",
               markersize=np.sqrt(max_area * f), label=f"{int(f * 100)}")
        for f in (0.2, 0.4, 0.6, 0.8, 1.0)
    ]  # fmt: skip
    lax.legend(handles=handles, title="Cells expressing (%)", loc="center left", ncol=5,
               frameon=False, columnspacing=1.0, handletextpad=0.2)  # fmt: skip
    from matplotlib.cm import ScalarMappable

    cax = top.add_subplot(1, 2, 2)
    cax.axis("off")
    bar = cax.inset_axes([0.05, 0.45, 0.7, 0.16])
    top.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cmap), cax=bar,
                 orientation="horizontal", label="Mean expression (scaled per gene, 0–1)")  # fmt: skip
    top.suptitle(
        f"Defining markers per {_pretty(groupby).lower()} ({sp} symbols; n cells in brackets)",
        fontsize=11,
    )
    return fig


# --------------------------------------------------------------------- signatures


def _genes_found(adata: Any, key: str) -> str:
    rec = bonemet_uns(adata).get("gene_sets", {}).get(_set_name(key), {})
    try:
        return f"{int(rec['n_found'])} of {int(rec['n_total'])} genes"
    except (KeyError, TypeError, ValueError):
        return ""


@figure_function
def signature_umaps(
    adata: Any,
    *,
    keys: Sequence[str] | None = None,
    basis: str = "X_umap",
    ncols: int = 3,
    panel_size: float = 3.2,
    cmap: str = "RdBu_r",
    tumour: str = "Tumour epithelial",
    mimicry_key: str = "score_erythroid_mimicry",
) -> Figure:
    r"""UMAPs coloured by each signature score (``obs["score_<set>"]``), on one shared scale.

    Scores are scanpy ``score_genes`` values: the mean log1p(CP10k) expression of the set
    minus that of a matched control set, so every programme is in the same unit and 0 means
    "as the control genes". All panels share one diverging colour scale centred on 0 and
    clipped at ±the 99th percentile of \|score\| over all panels (one colour bar); cells
    with the highest \|score\| are drawn on top. A last panel shows erythroid mimicry on
    the tumour cells only (other cells grey), where the review's claim is about.
    """
    from matplotlib.colors import TwoSlopeNorm

    keys = list(keys) if keys is not None else score_keys(adata)
    if not keys:
        raise MissingDataError('signature UMAPs need obs["score_<set>"]: run bm.tl.score first')
    require(adata, obs=keys, obsm=[basis], what="signature UMAPs")
    xy = _embedding(adata, basis)
    tum = None
    if mimicry_key in adata.obs.columns and "population" in adata.obs.columns:
        m = (adata.obs["population"].astype(str) == tumour).to_numpy()
        tum = m if m.any() else None
    n_panels = len(keys) + (1 if tum is not None else 0)
    ncols = max(1, min(ncols, n_panels))
    nrows = int(np.ceil(n_panels / ncols))
    fig = new_figure(ncols * (panel_size + 0.25) + 1.0, nrows * (panel_size + 0.55) + 0.5)
    s = point_size(adata.n_obs)
    allv = np.concatenate([adata.obs[k].to_numpy(dtype=float) for k in keys])
    allv = allv[np.isfinite(allv)]
    lim = float(np.percentile(np.abs(allv), 99)) if allv.size else 1.0
    lim = lim if lim > 0 else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)
    axes = []
    sc = None

    def draw(ax: Any, v: np.ndarray, rows: np.ndarray | None = None) -> Any:
        if rows is not None:
            ax.scatter(xy[~rows, 0], xy[~rows, 1], c="#E3E3E3", s=s, linewidths=0,
                       rasterized=True)  # fmt: skip
            idx = np.flatnonzero(rows)
        else:
            idx = np.arange(len(v))
        idx = idx[np.argsort(np.nan_to_num(np.abs(v[idx]), nan=-np.inf), kind="stable")]
        return ax.scatter(xy[idx, 0], xy[idx, 1], c=np.clip(v[idx], -lim, lim), s=s,
                          cmap=cmap, norm=norm, linewidths=0, rasterized=True)  # fmt: skip

    for i, key in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        sc = draw(ax, adata.obs[key].to_numpy(dtype=float))
        _style_embedding_axes(ax, basis)
        found = _genes_found(adata, key)
        ax.set_title(_pretty_set(key) + (f"\n{found}" if found else ""), fontsize=9.5)
        axes.append(ax)
    if tum is not None:
        ax = fig.add_subplot(nrows, ncols, len(keys) + 1)
        sc = draw(ax, adata.obs[mimicry_key].to_numpy(dtype=float), tum)
        lo_, hi_ = np.nanpercentile(xy[tum], [1, 99], axis=0)
        pad = np.maximum((hi_ - lo_) * 0.35, 1e-3)
        ax.set_xlim(lo_[0] - pad[0], hi_[0] + pad[0])
        ax.set_ylim(lo_[1] - pad[1], hi_[1] + pad[1])
        _style_embedding_axes(ax, basis)
        ax.set_title(f"{_pretty_set(mimicry_key)}\ntumour cells only (n = {int(tum.sum()):,})",
                     fontsize=9.5)  # fmt: skip
        axes.append(ax)
    cb = fig.colorbar(sc, ax=axes, shrink=0.5, aspect=30, pad=0.02)
    cb.set_label(f"Score: set mean − control-set mean\n(log1p CP10k; shared, clipped ±{lim:.2g})")
    fig.suptitle(f"Signature scores on the UMAP ({adata.n_obs:,} cells; one colour scale)")
    return fig


def _violins(
    ax: Any, data: Sequence[np.ndarray], colors: Sequence[str], *, max_points: int = 2000
) -> None:
    """Violins that tolerate tiny or constant groups (drawn as points instead)."""
    rng = np.random.default_rng(0)
    for i, (vals, col) in enumerate(zip(data, colors)):
        vals = vals[np.isfinite(vals)]
        if len(vals) > max_points:
            vals = rng.choice(vals, size=max_points, replace=False)
        if len(vals) >= 3 and np.ptp(vals) > 0:
            parts = ax.violinplot([vals], positions=[i], widths=0.8, showextrema=False)
            for body in parts["bodies"]:
                body.set_facecolor(col)
                body.set_edgecolor("#333333")
                body.set_linewidth(0.4)
                body.set_alpha(0.85)
            q1, med, q3 = np.percentile(vals, [25, 50, 75])
            ax.vlines(i, q1, q3, color="#222222", linewidth=1.6)
            ax.scatter([i], [med], color="white", s=8, zorder=3, edgecolors="#222222", lw=0.4)
        elif len(vals):
            ax.scatter(np.full(len(vals), i), vals, color=col, s=6, edgecolors="#333333", lw=0.3)


@figure_function
def signature_violins(
    adata: Any,
    *,
    groupby: str = "population",
    keys: Sequence[str] | None = None,
    panel_height: float = 1.5,
) -> Figure:
    """Violins of each signature score by population (or by sample).

    One row per score; the white dot is the median, the bar the interquartile range.
    ``keys`` defaults to the key programmes (:data:`KEY_PROGRAMMES`) present, else every
    ``score_*`` column.
    """
    if keys is None:
        allk = score_keys(adata)
        keys = [k for k in allk if _set_name(k) in KEY_PROGRAMMES] or allk
    keys = list(keys)
    if not keys:
        raise MissingDataError('signature violins need obs["score_<set>"]: run bm.tl.score first')
    require(adata, obs=[groupby, *keys], what=f"signature violins by {groupby}")
    cats, colors = colors_for(adata, groupby)
    groups = adata.obs[groupby].astype(str).to_numpy()
    label_h = max(len(_short_label(c)) + 8 for c in cats) * 0.06 + 0.3
    width = min(max(0.42 * len(cats) + 2.2, 5.0), 30.0)
    fig = new_figure(width, panel_height * len(keys) + label_h + 0.5)
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        v = adata.obs[key].to_numpy(dtype=float)
        _violins(ax, [v[groups == c] for c in cats], [colors[c] for c in cats])
        ax.set_title(_pretty_set(key), loc="left", fontsize=10)
        ax.set_ylabel("Score (a.u.)")
        ax.axhline(0, color="#999999", lw=0.5, ls=":")
    n_cells = pd.Series(groups).value_counts()
    ticks = [f"{_short_label(c) if is_population_key(groupby) else c} ({int(n_cells.get(c, 0)):,})"
             for c in cats]  # fmt: skip
    axes[-1].set_xticks(np.arange(len(cats)), ticks, rotation=60, ha="right",
                        rotation_mode="anchor")  # fmt: skip
    axes[-1].set_xlim(-0.6, len(cats) - 0.4)
    axes[-1].set_xlabel(_pretty(groupby))
    fig.suptitle(f"Signature scores by {_pretty(groupby).lower()} (n cells under each)")
    return fig


# -------------------------------------------------------------------- composition


@figure_function
def composition(
    adata: Any,
    *,
    groupby: str = "sample",
    key: str = "population",
) -> Figure:
    """Stacked bars: the fraction of each population in each sample (or condition).

    The number of cells of each bar is written above it.
    """
    require(adata, obs=[groupby, key], what=f"composition by {groupby}")
    cats, colors = colors_for(adata, key)
    groups = categories(adata, groupby)
    tab = pd.crosstab(adata.obs[groupby].astype(str), adata.obs[key].astype(str))
    tab = tab.reindex(index=groups, columns=cats, fill_value=0)
    n = tab.sum(axis=1)
    frac = tab.div(n.where(n > 0, 1), axis=0) * 100
    ncol = legend_columns(len(cats))
    width = min(max(0.55 * len(groups) + 1.6, 3.2), 24.0) + legend_width(cats, ncol) + 0.4
    label_h = max(len(g) for g in groups) * 0.06
    fig = new_figure(width, 4.4 + label_h)
    ax = fig.add_subplot()
    bottom = np.zeros(len(groups))
    x = np.arange(len(groups))
    for c in cats:
        ax.bar(x, frac[c].to_numpy(), bottom=bottom, color=colors[c], width=0.8, label=c,
               edgecolor="white", linewidth=0.3)  # fmt: skip
        bottom += frac[c].to_numpy()
    for xi, ni in zip(x, n.to_numpy()):
        ax.text(xi, 101, f"{ni:,}", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(
        x,
        groups,
        rotation=45 if len(groups) > 3 else 0,
        ha="right" if len(groups) > 3 else "center",
    )
    ax.set_ylim(0, 112)
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.set_ylabel(
        "Cells (% of sample)" if groupby == "sample" else f"Cells (% of {_pretty(groupby).lower()})"
    )
    ax.set_xlabel(_pretty(groupby))
    total = tab.sum(axis=0)
    handles = [Patch(facecolor=colors[c], label=f"{c} ({int(total[c]):,})") for c in cats]
    _outside_legend(ax, handles[::-1], f"{_pretty(key)} (n cells)")
    fig.suptitle(f"{_pretty(key)} per {_pretty(groupby).lower()} (cells per bar on top)")
    return fig


# ----------------------------------------------------------------------------- QC

_QC_PANELS = (
    ("qc_total_counts", "Total counts (UMI per cell)", True, "counts"),
    ("qc_n_genes", "Genes detected (per cell)", True, "genes"),
    ("qc_pct_mito", "Mitochondrial reads (%)", False, "mito"),
    ("qc_pct_hb", "Haemoglobin reads (%)", False, "hb"),
)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def qc_thresholds(adata: Any) -> dict[str, dict[str, dict[str, float]]]:
    """The QC thresholds of each sample: ``{sample: {metric: {"min"|"max": value}}}``.

    ``metric`` is ``"counts"``, ``"genes"``, ``"mito"`` or ``"hb"``. Read from the
    ``threshold_<min|max>_<metric>`` (and ``floor_...``) keys of
    ``uns["bonemet"]["qc"][sample]``; the strictest bound wins. Infinite bounds (QC of
    non-count input) are left out.
    """
    qc = bonemet_uns(adata).get("qc", {})
    out: dict[str, dict[str, dict[str, float]]] = {}
    if not isinstance(qc, Mapping):
        return out
    pat = re.compile(r"^(?:thresholds?[._]|floor[._])?(min|max)[._](?:pct[._])?(\w+)$")
    metrics = {"counts": "counts", "genes": "genes", "mito": "mito", "hb": "hb"}
    for sample, info in qc.items():
        if not isinstance(info, Mapping):
            continue
        per: dict[str, dict[str, float]] = {}
        for k, v in _flatten(info).items():
            m = pat.match(k.split(".")[-1] if "." not in k else k.replace(".", "_", 1))
            if m is None or m.group(2) not in metrics or isinstance(v, bool | np.bool_):
                continue
            try:
                val = float(np.asarray(v).item())
            except (TypeError, ValueError):
                continue
            if not np.isfinite(val):
                continue
            side, metric = m.group(1), metrics[m.group(2)]
            cur = per.setdefault(metric, {})
            cur[side] = (
                max(cur.get(side, -np.inf), val)
                if side == "min"
                else min(cur.get(side, np.inf), val)
            )
        out[str(sample)] = per
    return out


@figure_function
def qc_violins(adata: Any, *, groupby: str = "sample", max_points: int = 400) -> Figure:
    """Per-sample violins of total counts, genes, % mito and % haemoglobin of every cell
    before QC, the removed cells marked and the thresholds drawn.

    The violins are all cells QC saw: the kept ones (``obs``) and the removed ones (their
    metrics kept by QC in ``uns["bonemet"]["qc"][sample]["cells_removed"]``, see
    :func:`bonemet.pp.qc_cells_table`). Removed cells are drawn as points coloured by the
    reason QC removed them (at most ``max_points`` per sample and panel); the per-sample
    thresholds are red dashes. An object from before QC kept removed cells shows the kept
    cells only (the title says so).
    """
    from ..pp import qc_cells_table

    keys = [p for p in _QC_PANELS if p[0] in adata.obs.columns]
    if not keys:
        raise MissingDataError('QC violins need obs["qc_total_counts"] etc.: run bm.pp.qc first')
    require(adata, obs=[groupby], what="QC violins")
    allc = qc_cells_table(adata) if groupby == "sample" else pd.DataFrame()
    has_removed = bool(len(allc)) and (allc["qc_removed"] != "").any()
    if has_removed:
        cells = allc
        cats = categories(adata, "sample")
        cats += sorted(set(cells["sample"]) - set(cats))
        from ._palette import category_colors

        colors = category_colors(cats)
    else:
        cells = adata.obs[[groupby, *[k for k, *_ in keys]]].rename(columns={groupby: "sample"})
        cells = cells.assign(sample=cells["sample"].astype(str), qc_removed="")
        cats, colors = colors_for(adata, groupby)
    groups = cells["sample"].astype(str).to_numpy()
    removed = cells["qc_removed"].astype(str).to_numpy()
    reasons = [r for r in dict.fromkeys(removed) if r]
    from ._palette import category_colors

    rcol = category_colors(reasons)
    thr = qc_thresholds(adata)
    ncols = 2 if len(keys) > 1 else 1
    nrows = int(np.ceil(len(keys) / ncols))
    panel_w = min(max(0.55 * len(cats) + 1.4, 3.2), 14.0)
    label_h = max(len(c) for c in cats) * 0.06
    fig = new_figure(ncols * panel_w + 1.0, nrows * (2.8 + label_h) + 1.0)
    rng = np.random.default_rng(0)
    drew_threshold = False
    for i, (key, label, log, metric) in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        v = cells[key].to_numpy(dtype=float)
        if log:
            v = np.log10(np.clip(v, 1, None))
        _violins(ax, [v[groups == c] for c in cats], ["#D9D9D9"] * len(cats))
        for j, c in enumerate(cats):
            gone = np.flatnonzero((groups == c) & (removed != ""))
            if gone.size > max_points:
                gone = rng.choice(gone, size=max_points, replace=False)
            if gone.size:
                ax.scatter(j + rng.uniform(-0.25, 0.25, gone.size), v[gone], s=3,
                           c=[rcol[r] for r in removed[gone]], linewidths=0, zorder=2,
                           rasterized=True)  # fmt: skip
            for side in ("min", "max"):
                t = thr.get(c, {}).get(metric, {}).get(side)
                if t is None or not np.isfinite(t):
                    continue
                ty = np.log10(max(t, 1)) if log else t
                ax.hlines(ty, j - 0.42, j + 0.42, colors="#D62728", linestyles="--", lw=1.2,
                          zorder=4)  # fmt: skip
                drew_threshold = True
        ax.set_ylabel(("log10 " if log else "") + label)
        ax.set_xticks(np.arange(len(cats)), cats, rotation=45 if len(cats) > 3 else 0,
                      ha="right" if len(cats) > 3 else "center")  # fmt: skip
        ax.set_xlim(-0.6, len(cats) - 0.4)
    handles = []
    if drew_threshold:
        handles.append(Line2D([], [], color="#D62728", ls="--", label="QC threshold"))
    n_by = pd.Series(removed[removed != ""]).value_counts()
    handles += [Line2D([], [], marker="o", ls="", color=rcol[r], markersize=4,
                       label=f"removed: {r.replace('_', ' ')} ({int(n_by[r]):,})")
                for r in reasons]  # fmt: skip
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4),
                   fontsize=8.5)  # fmt: skip
    n_all, n_gone = len(cells), int((removed != "").sum())
    what = (
        f"all {n_all:,} cells before QC; {n_gone:,} removed shown as points"
        if has_removed
        else f"the {n_all:,} cells kept"
    )
    fig.suptitle(f"Quality control per {_pretty(groupby).lower()} ({what})")
    return fig


@figure_function
def qc_removed(adata: Any) -> Figure:
    """Horizontal stacked bars per sample: cells kept and cells removed by each reason.

    A cell failing several filters counts under each reason QC recorded it for.
    """
    from .._errors import InputError
    from ..pp import qc_table

    try:
        df = qc_table(adata)
    except InputError as e:
        raise MissingDataError(
            'the QC removal bar needs uns["bonemet"]["qc"][sample] with removed counts: run bm.pp.qc'
        ) from e
    # a reason that removed no cell anywhere gets no legend entry
    df = df.rename(columns=lambda c: c.replace("removed_", "removed: ", 1))
    reasons = [c for c in df.columns if c.startswith("removed: ") and df[c].sum() > 0]
    samples = list(df.index)
    from ._palette import category_colors

    rc = category_colors([r.removeprefix("removed: ") for r in reasons])
    label_w = max(len(s) for s in samples) * 0.075 + 0.5
    legend_labels = ["kept", *rc]
    fig = new_figure(6.0 + label_w + legend_width(legend_labels, 1), 0.4 * len(samples) + 1.6)
    ax = fig.add_subplot()
    y = np.arange(len(samples))
    left = np.zeros(len(samples))
    handles = []
    if "n_after" in df.columns:
        kept = df["n_after"].to_numpy()
        ax.barh(y, kept, color="#B0B0B0", height=0.7)
        handles.append(Patch(facecolor="#B0B0B0", label=f"kept ({int(kept.sum()):,})"))
        left += kept
    for r in reasons:
        name = r.removeprefix("removed: ")
        vals = df[r].to_numpy()
        ax.barh(y, vals, left=left, color=rc[name], height=0.7)
        handles.append(Patch(facecolor=rc[name], label=f"{name} ({int(vals.sum()):,})"))
        left += vals
    ax.set_yticks(y, samples)
    ax.invert_yaxis()
    ax.set_xlabel("Cells (count)")
    ax.set_ylabel("Sample")
    ax.set_title("Cells kept and removed by QC reason")
    _outside_legend(ax, handles, "Reason")
    return fig


# ------------------------------------------------------------------- integration


@figure_function
def integration_umaps(
    adata: Any,
    *,
    color: Sequence[str] = ("sample", "population"),
    panel_size: float = 3.8,
) -> Figure:
    """UMAP before (``X_umap_unintegrated``, from PCA) and after integration (``X_umap``).

    The before-integration panel shows the cells it was computed for (a sample on large
    data; the count is in the title). One row per ``color`` column present (sample first: good integration mixes samples
    within each population while populations stay apart).
    """
    require(
        adata,
        obsm=["X_umap_unintegrated", "X_umap"],
        what="integration before/after UMAPs",
        hint="run bm.tl.cluster after bm.tl.integrate",
    )
    cols = [c for c in color if c in adata.obs.columns]
    if not cols:
        raise MissingDataError(f"integration UMAPs need one of obs {list(color)}")
    after = integrated_basis(adata) or "integrated"
    legends = []
    for c in cols:
        cats, _ = colors_for(adata, c)
        legends.append(legend_width(cats, legend_columns(len(cats))))
    fig = new_figure(2 * panel_size + max(legends) + 0.6, len(cols) * (panel_size + 0.2) + 0.3)
    axes = fig.subplots(len(cols), 2, squeeze=False)
    s = point_size(adata.n_obs)
    before = np.isfinite(_embedding(adata, "X_umap_unintegrated")).all(axis=1)
    n_before = int(before.sum())
    shown = "" if n_before == adata.n_obs else f", {n_before:,} of {adata.n_obs:,} cells"
    for r, c in enumerate(cols):
        cats, colors = colors_for(adata, c)
        vals = adata.obs[c].astype(str).to_numpy()
        for k, (basis, title, rows) in enumerate(
            (("X_umap_unintegrated", f"Before integration (PCA{shown})", before),
             ("X_umap", f"After integration ({after.removeprefix('X_')})", slice(None)))
        ):  # fmt: skip
            ax = axes[r, k]
            emb = _embedding(adata, basis)[rows]
            handles = _scatter_categories(ax, emb, vals[rows], cats, colors, size=s)
            _style_embedding_axes(ax, basis)
            ax.set_title(f"{title}\ncoloured by {_pretty(c).lower()}")
            if k == 1:
                _outside_legend(ax, handles, _pretty(c))
    return fig


_METRIC_LABELS = {
    "bras": "BRAS (batch ASW)",
    "ilisi": "iLISI",
    "kbet": "kBET",
    "graph_connectivity": "Graph connectivity",
    "pcr_comparison": "PCR comparison",
    "isolated_labels": "Isolated labels",
    "clisi": "cLISI",
    "batch_correction": "Batch correction (mean)",
    "bio_conservation": "Bio conservation (mean)",
    "total": "Total (0.4 batch + 0.6 bio)",
    "silhouette_batch": "Batch ASW",
    "knn_batch_entropy": "kNN batch entropy (iLISI-like)",
    "silhouette_label": "Label ASW",
    "ari_kmeans": "ARI (k-means vs labels)",
    "nmi_kmeans": "NMI (k-means vs labels)",
    "ari_leiden": "ARI (leiden vs labels)",
    "nmi_leiden": "NMI (leiden vs labels)",
}


@figure_function
def integration_metrics(
    adata: Any,
    *,
    table: pd.DataFrame | None = None,
    label_key: str | None = None,
) -> Figure:
    """Batch-mixing and bio-conservation metrics, before vs after integration.

    Grouped bars per metric (0..1, higher is better) with values written on the bars;
    ``table`` defaults to :func:`integration_metrics_table` (needs known labels).
    """
    df = table if table is not None else integration_metrics_table(adata, label_key=label_key)
    metrics = [
        m
        for m in (*BATCH_METRICS, *BIO_METRICS, *SCORE_COLUMNS)
        if m in df.columns and df[m].notna().any()
    ]
    if not metrics:
        raise MissingDataError("no integration metric could be computed (one batch, one label?)")
    fig = new_figure(8.6, 0.3 * len(metrics) * max(len(df), 1) + 1.6)
    ax = fig.add_subplot()
    n = len(df)
    h = 0.8 / n
    palette = ["#9E9E9E", "#0072B2", "#E69F00", "#009E73"]
    y = np.arange(len(metrics))
    for i, (name, row) in enumerate(df.iterrows()):
        vals = row[metrics].to_numpy(dtype=float)
        pos = y - 0.4 + h * (i + 0.5)
        ax.barh(pos, np.nan_to_num(vals), height=h * 0.92, color=palette[i % 4], label=str(name))
        for p, v in zip(pos, vals):
            ax.text(
                (0 if not np.isfinite(v) else max(v, 0)) + 0.01, p,
                "n/a" if not np.isfinite(v) else f"{v:.2f}", va="center", fontsize=8,
            )  # fmt: skip
    ax.set_yticks(y, [_METRIC_LABELS.get(m, m) for m in metrics])
    for t, m in zip(ax.get_yticklabels(), metrics):
        t.set_color(
            "#1F4E79" if m in BATCH_METRICS else "#7B3294" if m in BIO_METRICS else "#000000"
        )
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("Score (0–1, higher is better)")
    how = ""
    if "metrics_backend" in df.columns and "n_cells" in df.columns:
        how = f"\n{df['metrics_backend'].iloc[0]}, {int(df['n_cells'].iloc[0]):,} cells"
    ax.set_title(
        "Integration metrics: batch correction (blue labels), bio conservation (purple)" + how
    )
    ax.legend(title="Embedding", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return fig


# --------------------------------------------------------------------------- axes

#: (x key, y key, x label, y label, source) of the review's axes, as
#: :data:`bonemet.tl.AXIS_PAIRS` (quantities of :func:`bonemet.tl.axes_table`).
AXES_PAIRS = AXIS_PAIRS

#: SPP1 sources drawn side by side in the OPN panel: (quantity, label)
SPP1_SOURCES: tuple[tuple[str, str], ...] = (
    ("osteoclast_SPP1", "Osteoclast"),
    ("macrophage_SPP1", "Macrophage"),
    ("osteoblast_SPP1", "Osteoblast"),
    ("tumour_SPP1", "Tumour"),
)


_STAGE_QUANTITY = re.compile(r"^neutrophil_stage(\d+)_(share|chil3_fraction)$")


def neutrophil_stage_values(table: pd.DataFrame) -> pd.DataFrame:
    """The Chil3+ fraction per sample x neutrophil maturation stage from an axes table.

    One row per sample x stage of :func:`bonemet.tl.axes_table`'s
    ``neutrophil_stage<k>_chil3_fraction`` rows: ``sample``, ``condition`` (when the table
    has it), ``stage`` (1 = earliest), ``n_stages``, ``value``, ``ci_low``, ``ci_high``,
    ``n_cells`` (the stage's cells in the sample), ``share`` (the stage's share of the
    sample's neutrophils), ``gene`` (the read-out gene: Chil3, or CHI3L1 in human) and
    ``note``. Empty when the table has no stage rows.
    """
    cols = ["sample", "condition", "stage", "n_stages", "value", "ci_low", "ci_high",
            "n_cells", "share", "gene", "note"]  # fmt: skip
    if table is None or "quantity" not in table.columns:
        return pd.DataFrame(columns=cols)
    m = table["quantity"].astype(str).str.extract(_STAGE_QUANTITY)
    keep = m[0].notna()
    if not keep.any():
        return pd.DataFrame(columns=cols)
    t = table[keep].assign(stage=m.loc[keep, 0].astype(int), what=m.loc[keep, 1])
    frac = t[t["what"] == "chil3_fraction"].copy()
    share = t[t["what"] == "share"].set_index(["sample", "stage"])["value"]
    frac["share"] = [share.get((s, k), np.nan) for s, k in zip(frac["sample"], frac["stage"])]
    frac["n_stages"] = int(t["stage"].max())
    frac["gene"] = frac["label"].astype(str).str.split("+").str[0]
    if "condition" not in frac.columns:
        frac["condition"] = np.nan
    return frac[cols].sort_values(["stage", "sample"]).reset_index(drop=True)


def _stage_panel(
    ax: Any, stages: pd.DataFrame, levels: list[str], colors: Mapping[str, str], ref: str | None
) -> None:
    """Chil3+ fraction per maturation stage: samples as points with Wilson 95% CI bars,
    grouped by condition within each stage (``levels`` order, the reference first)."""
    shown = stages[np.isfinite(stages["value"].astype(float))]
    n_st = int(stages["n_stages"].iloc[0])
    groups = levels if levels else [None]
    width = 0.76 / len(groups)
    for k in range(1, n_st + 1):
        for j, c in enumerate(groups):
            sub = shown[(shown["stage"] == k)
                        & ((shown["condition"].astype(str) == c) if c is not None else True)]  # fmt: skip
            sub = sub.sort_values("sample")
            if not len(sub):
                continue
            centre = k - 1 - 0.38 + width * (j + 0.5)
            xs = centre + np.linspace(-0.3, 0.3, len(sub)) * width * (len(sub) > 1)
            v = sub["value"].to_numpy(float)
            err = np.nan_to_num([v - sub["ci_low"].to_numpy(float),
                                 sub["ci_high"].to_numpy(float) - v])  # fmt: skip
            col = colors.get(c, "#0072B2") if c is not None else "#0072B2"
            ax.errorbar(xs, v, yerr=np.clip(err, 0, None), fmt="o", color=col, ms=5,
                        mec="#222222", mew=0.5, elinewidth=0.8, capsize=2, zorder=3, ls="none")  # fmt: skip
            if len(sub) < 2:
                continue
            med = float(np.median(v))
            ax.plot([centre - 0.4 * width, centre + 0.4 * width], [med, med], color="#222222",
                    lw=1.2, zorder=4)  # fmt: skip
    n_all = stages["sample"].nunique()
    few = stages["note"].astype(str).str.extract(r"\(< (\d+)\)")[0].dropna()
    ticks = []
    for k in range(1, n_st + 1):
        sk = shown[shown["stage"] == k]
        end = "\nearliest" if k == 1 else ("\nmost mature" if k == n_st else "\n")
        sh = stages.loc[stages["stage"] == k, "share"].astype(float)
        share = f"{np.nanmedian(sh):.0%} of neutr." if np.isfinite(sh).any() else ""
        if len(sk):
            lo, hi = int(sk["n_cells"].min()), int(sk["n_cells"].max())
            n_txt = f"n = {lo}" if lo == hi else f"n = {lo}–{hi}"
        else:
            n_txt = "no sample"
        drawn = sk["sample"].nunique()
        part = f"\n{drawn} of {n_all} samples" if drawn < n_all else ""
        ticks.append(f"{k}{end}\n{n_txt}{part}\n{share}")
    ax.set_xticks(range(n_st), ticks, fontsize=8)
    ax.set_xlim(-0.6, n_st - 0.4)
    ax.set_ylim(-0.03, 1.03)
    gene = str(stages["gene"].iloc[0])
    floor = f", ≥ {few.iloc[0]} drawn" if len(few) else ""
    ax.set_xlabel(f"Maturation stage (n: cells per sample{floor}; median share)", fontsize=9)
    ax.set_ylabel(f"{gene}+ fraction of the stage (95% CI)")
    n_s = shown.groupby(shown["condition"].astype(str))["sample"].nunique() if levels else {}
    who = (
        ", ".join(f"{c} {int(n_s.get(c, 0))}" for c in levels) + " samples"
        if levels
        else f"{shown['sample'].nunique()} samples"
    )
    ax.set_title(f"DKK1 axis, Shi 2025: {gene}+ by neutrophil stage\n{who}", fontsize=10)


def _p_text(p: float) -> str:
    return f"p = {p:.2g}" if p >= 0.001 else "p < 0.001"


@figure_function
def review_axes(adata: Any, *, table: pd.DataFrame | None = None) -> Figure:
    """Per-sample scatter plots of the review's axes, one panel per pair, as the papers
    state them.

    Panels: SPP1 from every source (osteoclasts, macrophages, osteoblasts, tumour); SPP1 in
    osteoclasts vs Tpex / (Tpex + Tex) (Cheng 2025); SLC40A1 in the iron-recycling
    macrophages vs tumour TFRC, iron-recycling fraction vs tumour erythroid mimicry and the
    anaemia arm (TFRC vs globins in erythroid progenitors) (Han 2025); tumour DKK1 vs
    CHI3L3+ immature neutrophils (Shi 2025); PVR on myeloid / tumour cells vs TIGIT on CD8
    T cells / Tregs (Monteran 2024); the Chil3+ (human: CHI3L1+) fraction per neutrophil
    maturation stage (:func:`bonemet.tl.neutrophil_maturation`), samples as points grouped
    by condition (the reference first) with Wilson 95% CI bars, a bar at each group's
    median, n cells per sample and the stage's median share of neutrophils under each
    stage (Shi 2025). Points are samples (coloured by condition when
    known) with 95% CI bars; the title gives Spearman's rho with its p and n samples
    (:func:`bonemet.tl.axes_correlations`). Pairs missing in every sample are left out.

    Parameters
    ----------
    table
        The long table of :func:`bonemet.tl.axes_table` (default: computed from ``adata``).
    """
    from ..tl._axes import axes_correlations, axes_wide

    if table is None:
        from .._errors import InputError
        from ..tl import axes_table

        require(adata, obs=["sample", "population"], what="the review's axes")
        try:
            table = axes_table(adata)
        except InputError as e:
            raise MissingDataError(f"the review's axes: {e}") from e
    df = axes_wide(table)
    lo, hi = axes_wide(table, values="ci_low"), axes_wide(table, values="ci_high")
    nn = axes_wide(table, values="n_cells")
    pairs = [
        p for p in AXES_PAIRS
        if p[0] in df.columns and p[1] in df.columns
        and (df[p[0]].notna() & df[p[1]].notna()).any()
    ]  # fmt: skip
    spp1 = [(k, lab) for k, lab in SPP1_SOURCES if k in df.columns and df[k].notna().any()]
    stages = neutrophil_stage_values(table)
    if not np.isfinite(stages["value"].astype(float)).any():
        stages = stages.iloc[:0]
    if not pairs and not spp1 and stages.empty:
        raise MissingDataError(
            "no axis of the review could be computed: the populations involved are absent"
        )
    rho = axes_correlations(table).set_index(["x", "y"])
    has_cond = "condition" in df.columns and df["condition"].notna().any()
    conds = sorted(df["condition"].dropna().astype(str).unique()) if has_cond else []
    from ._palette import category_colors

    ccol = category_colors(conds)
    if has_cond and adata is not None and "condition" in adata.obs.columns:
        order, fixed = colors_for(adata, "condition")  # the colours of every other figure
        if set(conds) <= set(order):
            conds, ccol = [c for c in order if c in conds], fixed

    def colour(sample: Any) -> str:
        return ccol.get(str(df.loc[sample, "condition"]), "#0072B2") if has_cond else "#0072B2"

    n_panels = len(pairs) + (1 if spp1 else 0) + (0 if stages.empty else 1)
    ncols = min(2, n_panels)
    nrows = int(np.ceil(n_panels / ncols))
    leg = legend_width(conds, 1) if has_cond else 0.0
    fig = new_figure(ncols * 4.6 + leg + 0.3, nrows * 4.0 + 0.5)
    k = 0
    if spp1:
        k += 1
        ax = fig.add_subplot(nrows, ncols, k)
        samples = list(df.index)
        width = 0.7 / max(len(samples), 1)
        for j, (key, _lab) in enumerate(spp1):
            for i, s in enumerate(samples):
                v = df.loc[s, key]
                if not np.isfinite(v):
                    continue
                x = j - 0.35 + width * (i + 0.5)
                err = [[v - lo.loc[s, key]], [hi.loc[s, key] - v]]
                ax.errorbar(x, v, yerr=np.nan_to_num(err), fmt="o", color=colour(s), ms=5,
                            mec="#222222", mew=0.5, elinewidth=0.8, capsize=2, zorder=3)  # fmt: skip
        ax.set_xticks(range(len(spp1)), [lab for _k, lab in spp1])
        n_med = [int(np.nanmedian(nn[key].to_numpy(dtype=float))) for key, _ in spp1]
        ax.set_xlabel("Source (median cells per sample: " + ", ".join(map(str, n_med)) + ")")
        ax.set_ylabel("SPP1 (mean log1p CP10k, 95% CI)")
        ax.set_title("OPN axis, Cheng 2025: SPP1 by source\nn = "
                     f"{len(samples)} samples", fontsize=10)  # fmt: skip
    for xk, yk, xl, yl, src in pairs:
        k += 1
        ax = fig.add_subplot(nrows, ncols, k)
        sub = df.dropna(subset=[xk, yk])
        for s, r in sub.iterrows():
            xerr = np.nan_to_num([[r[xk] - lo.loc[s, xk]], [hi.loc[s, xk] - r[xk]]])
            yerr = np.nan_to_num([[r[yk] - lo.loc[s, yk]], [hi.loc[s, yk] - r[yk]]])
            ax.errorbar(r[xk], r[yk], xerr=xerr, yerr=yerr, fmt="o", color=colour(s), ms=6,
                        mec="#222222", mew=0.5, elinewidth=0.7, capsize=2, zorder=3)  # fmt: skip
        if len(sub) <= 12:
            for name, r in sub.iterrows():
                ax.annotate(str(name), (r[xk], r[yk]), xytext=(4, 3), textcoords="offset points",
                            fontsize=7, color="#333333")  # fmt: skip
        n = len(sub)
        title = src
        if (xk, yk) in rho.index and np.isfinite(rho.loc[(xk, yk), "rho"]):
            r_ = rho.loc[(xk, yk)]
            title += f"\nSpearman ρ = {r_['rho']:.2f}, {_p_text(r_['p'])}, n = {n} samples"
        else:
            title += f"\nn = {n} sample{'s' if n != 1 else ''} (no ρ below 3 or if constant)"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.margins(0.15)
    if not stages.empty:
        k += 1
        ax = fig.add_subplot(nrows, ncols, k)
        shown_conds = set(stages["condition"].dropna().astype(str)) if has_cond else set()
        levels = [c for c in conds if c in shown_conds]
        ref = None
        if levels:
            from ._conditions import reference_condition

            ref = reference_condition(adata, levels) if adata is not None else levels[0]
            levels = [ref, *[c for c in levels if c != ref]]
        _stage_panel(ax, stages, levels, ccol, ref)
    if has_cond:
        _outside_legend(
            fig.axes[min(ncols, n_panels) - 1],
            [Line2D([], [], marker="o", ls="", color=ccol[c], label=c) for c in conds],
            "Condition",
        )
    fig.suptitle("The review's axes, per sample (bars: 95% CI over cells)")
    return fig
