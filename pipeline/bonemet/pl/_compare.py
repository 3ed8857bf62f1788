"""Figures of the compare stage (condition statistics with samples as replicates)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ._common import MissingDataError, figure_function, new_figure, reference_of

__all__ = ["volcano", "VOLCANO_POPULATIONS", "ligand_receptor_dotplot"]

#: the populations the review is about, drawn by :func:`volcano` when tested
VOLCANO_POPULATIONS: tuple[str, ...] = (
    "Tumour epithelial",
    "CD8 T",
    "CD8 Tpex (TCF1+)",
    "CD8 Tex (terminal)",
    "Mature neutrophil",
    "Immature neutrophil (CHI3L3+)",
    "PMN-MDSC",
    "Macrophage",
    "Iron-recycling macrophage (VCAM1+CD163+CCR3+)",
    "Osteoclast",
)


@figure_function
def volcano(
    adata: Any,
    *,
    key: str = "bonemet_compare",
    populations: Sequence[str] | None = None,
    contrast: str | None = None,
    alpha: float = 0.05,
    n_labels: int = 6,
    max_panels: int = 8,
) -> Figure:
    """Volcano plots of the pseudobulk DE, one panel per population.

    Points are genes: log2 fold change against -log10 p; genes with ``padj < alpha`` are
    coloured (up red, down blue) and the ``n_labels`` smallest-p of them named. The panel
    title gives the samples per group and the number of significant genes; a design below
    ``min_samples_per_group`` is marked "p unreliable".

    Parameters
    ----------
    adata
        AnnData after :func:`bonemet.tl.compare` (``uns[key]["pseudobulk_de"]``).
    key
        The ``uns`` key of the compare results.
    populations
        Populations to draw (default: those of :data:`VOLCANO_POPULATIONS` that were tested,
        else the first tested ones).
    contrast
        The contrast to draw (default: the first).
    alpha
        Significance level on ``padj``.
    n_labels
        Genes named per panel.
    max_panels
        At most this many panels.
    """
    res = adata.uns.get(key)
    de = res.get("pseudobulk_de") if isinstance(res, dict) else None
    if not isinstance(de, pd.DataFrame) or de.empty:
        raise MissingDataError(
            f'the volcano plot needs uns["{key}"]["pseudobulk_de"]: run the compare stage '
            "with DE on raw counts and at least two samples per condition"
        )
    contrasts = list(dict.fromkeys(de["contrast"].astype(str)))
    contrast = contrast or contrasts[0]
    de = de[de["contrast"] == contrast]
    tested = list(dict.fromkeys(de["population"].astype(str)))
    if populations is None:
        pops = [p for p in VOLCANO_POPULATIONS if p in tested] or tested
    else:
        pops = [p for p in populations if p in tested]
        if not pops:
            raise MissingDataError(f"none of {list(populations)} has pseudobulk DE results")
    pops = pops[:max_panels]
    ncols = min(4, len(pops))
    nrows = int(np.ceil(len(pops) / ncols))
    fig = new_figure(max(ncols * 3.3 + 0.2, 4.4), nrows * 3.1 + 0.7)
    for i, pop in enumerate(pops):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        d = de[(de["population"] == pop) & de["p"].notna()]
        x = d["log2fc"].to_numpy(float)
        y = -np.log10(np.clip(d["p"].to_numpy(float), 1e-300, 1.0))
        sig = (d["padj"] < alpha).to_numpy()
        colour = np.where(~sig, "#BBBBBB", np.where(x > 0, "#D55E00", "#0072B2"))
        ax.scatter(x, y, c=colour, s=6, linewidths=0, rasterized=True)
        for _, r in d[sig].nsmallest(n_labels, "p").iterrows():
            ax.annotate(
                str(r["gene"]),
                (r["log2fc"], -np.log10(max(r["p"], 1e-300))),
                xytext=(2, 2),
                textcoords="offset points",
                fontsize=7,
            )
        n_ref = int(d["n_ref"].iloc[0]) if len(d) else 0
        n_test = int(d["n_test"].iloc[0]) if len(d) else 0
        flag = "" if len(d) == 0 or bool(d["p_reliable"].iloc[0]) else ", p unreliable"
        short = pop if len(pop) <= 26 else pop[:24] + "…"
        ax.set_title(
            f"{short}\n{n_test} vs {n_ref} samples, {int(sig.sum())} genes{flag}", fontsize=9
        )
        ax.set_xlabel("log2 fold change")
        if i % ncols == 0:
            ax.set_ylabel("-log10 p")
    fig.suptitle(f"Pseudobulk DE (PyDESeq2), {contrast}\ncoloured: padj < {alpha}", fontsize=10)
    return fig


def _lr_rows(t: pd.DataFrame, n: int, per_group: int | None) -> pd.DataFrame:
    """The interactions to draw: best first (fraction significant, then magnitude rank)."""
    keys = ["highlight", "ligand", "receptor", "source", "target"]
    best = (
        t.groupby(keys, observed=True, sort=False)
        .agg(frac=("fraction_significant", "max"), rank=("median_magnitude_rank", "min"))
        .reset_index()
        .sort_values(["frac", "rank"], ascending=[False, True])
    )
    if per_group is not None:
        best = best.groupby("highlight", sort=False).head(per_group)
    return best.head(n)


@figure_function
def ligand_receptor_dotplot(
    adata: Any,
    *,
    key: str = "bonemet_ligrec",
    n_highlighted: int = 24,
    n_top: int = 16,
) -> Figure:
    """Ligand–receptor interactions per condition (LIANA+ rank aggregate, per sample).

    Left: the review's pairs (:data:`bonemet.tl.LIGREC_HIGHLIGHTS`, at most 4 per axis);
    right: the interactions significant in the largest fraction of a condition's samples.
    A row is ligand → receptor (source → target population); a column is a condition. Dot
    size: fraction of the condition's samples where the interaction is significant
    (aggregate magnitude and specificity ranks <= alpha); colour: -log10 of the median
    aggregate magnitude rank over the samples where it was scored; no dot: not scored in
    any sample of that condition (a population absent or the genes not expressed).

    Parameters
    ----------
    adata
        AnnData after :func:`bonemet.tl.ligand_receptor` (``uns[key]["table"]``).
    key
        The ``uns`` key of the results.
    n_highlighted, n_top
        Rows in the left and right panels.
    """
    res = adata.uns.get(key)
    t = res.get("table") if isinstance(res, dict) else None
    if not isinstance(t, pd.DataFrame) or t.empty:
        raise MissingDataError(
            f'the ligand-receptor dot plot needs uns["{key}"]["table"]: run the ligrec stage '
            "with ligrec.enabled and liana installed"
        )
    t = t.copy()
    t["highlight"] = t["highlight"].astype(str)
    conds = sorted(t["condition"].astype(str).unique())
    ref = reference_of(adata, conds)  # the reference condition first, as in every figure
    conds = [ref, *[c for c in conds if c != ref]] if ref else conds
    n_samples = t.groupby("condition")["n_samples"].max().reindex(conds).fillna(0).astype(int)
    alpha = float(res.get("parameters", {}).get("alpha", 0.05))
    panels = []
    hl = t[t["highlight"] != ""]
    if not hl.empty:
        panels.append(("The review's pairs", hl, _lr_rows(hl, n_highlighted, 4)))
    top = t[t["n_significant"] > 0]
    if not top.empty:
        panels.append(("Most consistent interactions", top, _lr_rows(top, n_top, None)))
    if not panels:
        raise MissingDataError("no ligand-receptor interaction to draw")
    vmax = 4.0
    height = max(len(r) for _, _, r in panels) * 0.28 + 2.2
    fig = new_figure(len(panels) * (4.6 + 0.45 * len(conds)) + 1.4, height)
    from matplotlib.colors import Normalize

    norm = Normalize(0, vmax)
    sc = None
    for i, (title, sub, rows) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        labels = []
        for j, r in enumerate(rows.itertuples(index=False)):
            src, tgt = (str(x).replace(" (VCAM1+CD163+CCR3+)", "") for x in (r.source, r.target))
            lab = f"{r.ligand} → {r.receptor}  ({src} → {tgt})"
            labels.append(lab if len(lab) <= 60 else lab[:58] + "…")
            m = sub[(sub["ligand"] == r.ligand) & (sub["receptor"] == r.receptor)
                    & (sub["source"] == r.source) & (sub["target"] == r.target)]  # fmt: skip
            for _, row in m.iterrows():
                x = conds.index(str(row["condition"]))
                frac = float(row["fraction_significant"])
                c = -np.log10(max(float(row["median_magnitude_rank"]), 10**-vmax))
                sc = ax.scatter(x, j, s=25 + 200 * frac, c=[c], cmap="viridis", norm=norm,
                                edgecolors="#222222", linewidths=0.5, zorder=3)  # fmt: skip
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_xticks(range(len(conds)), [f"{c}\n(n = {n_samples[c]})" for c in conds])
        ax.set_xlim(-0.6, len(conds) - 0.4)
        ax.grid(axis="y", color="#EEEEEE", zorder=0)
        ax.set_title(title, fontsize=10)
    if sc is not None:
        cb = fig.colorbar(sc, ax=fig.axes, shrink=0.5, pad=0.01)
        cb.set_label("-log10 median magnitude rank")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color="#888888", markeredgecolor="#222222",
                      markersize=np.sqrt(25 + 200 * f), label=f"{f:.0%}")
               for f in (0.25, 0.5, 1.0)]  # fmt: skip
    fig.axes[0].legend(handles=handles, title="samples significant", loc="upper left",
                       bbox_to_anchor=(0.0, -0.08), ncol=3, fontsize=8, title_fontsize=8,
                       frameon=False)  # fmt: skip
    fig.suptitle(
        f"Ligand–receptor interactions (LIANA+ rank aggregate per sample; significant: "
        f"magnitude and specificity rank ≤ {alpha:g})",
        fontsize=10,
    )
    return fig
