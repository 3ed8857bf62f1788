"""Figures of the compare stage (condition statistics with samples as replicates)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ._common import MissingDataError, figure_function, new_figure

__all__ = ["volcano", "VOLCANO_POPULATIONS"]

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
