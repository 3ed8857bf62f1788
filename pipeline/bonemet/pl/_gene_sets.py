"""Gene-set figures: which scored sets share genes (a reviewer's first question)."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ._common import MissingDataError, bonemet_uns, figure_function, new_figure

__all__ = ["gene_set_overlap"]


@figure_function
def gene_set_overlap(adata: Any = None, *, gene_sets: Any = None) -> Figure:
    """Heatmap of the Jaccard index between every pair of scored gene sets.

    Cells show the number of shared genes; the diagonal is each set's size. The sets are
    those :func:`bonemet.tl.score` scored on ``adata`` (genes as found), as in
    :func:`bonemet.tl.gene_set_overlap`, whose table this draws.
    """
    from ..tl import gene_set_overlap as overlap_table

    rec = bonemet_uns(adata).get("gene_sets", {}) if adata is not None else {}
    if (
        adata is not None
        and gene_sets is None
        and not any(bool(v.get("scored")) for v in rec.values() if hasattr(v, "get"))
    ):
        raise MissingDataError(
            'gene_set_overlap needs uns["bonemet"]["gene_sets"]: run bm.tl.score'
        )
    tab = overlap_table(adata, gene_sets=gene_sets)
    names = sorted(set(tab["set_a"]) | set(tab["set_b"]))
    if len(names) < 2:
        raise MissingDataError("gene_set_overlap needs at least two scored gene sets")
    k = len(names)
    ix = {n: i for i, n in enumerate(names)}
    J = np.eye(k)
    S = np.zeros((k, k), dtype=int)
    for r in tab.itertuples(index=False):
        i, j = ix[r.set_a], ix[r.set_b]
        J[i, j] = J[j, i] = r.jaccard
        S[i, j] = S[j, i] = r.n_shared
        S[i, i], S[j, j] = r.n_a, r.n_b
    size = max(4.0, 0.42 * k + 2.2)
    fig = new_figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(J, cmap="Reds", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if S[i, j]:
                ax.text(j, i, str(S[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if J[i, j] > 0.5 else "black")  # fmt: skip
    labels = [n.replace("_", " ") for n in names]
    ax.set_xticks(range(k), labels, rotation=90)
    ax.set_yticks(range(k), labels)
    ax.set_title("Gene-set overlap (number: shared genes; diagonal: set size)")
    cb = fig.colorbar(im, ax=ax, shrink=0.6)
    cb.set_label("Jaccard index")
    return fig
