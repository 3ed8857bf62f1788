"""Gene-set figures: which scored sets share genes (a reviewer's first question)."""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ._common import MissingDataError, bonemet_uns, figure_function, new_figure

__all__ = ["gene_set_overlap", "gene_set_title"]

#: how a set's source is named in a title, when its name ends with the source's tag
_SOURCE_TAGS = {"kegg": "KEGG", "reactome": "Reactome", "hallmark": "MSigDB Hallmark",
                "go": "GO"}  # fmt: skip


@functools.lru_cache(maxsize=256)
def _source_of(name: str) -> str:
    from .._signatures import load_gene_sets

    try:
        gs = load_gene_sets().get(name)
    except Exception:  # noqa: BLE001 - no packaged sets: the title has no source
        return ""
    if gs is None:
        return ""
    src = gs.source.strip()
    m = re.match(r"^([A-Z][\w'-]+(?: and [A-Z][\w'-]+)? et al\.? \d{4})", src)
    if m:
        return m.group(1)
    m = re.match(r"^(WikiPathways WP\d+|KEGG|FerrDb V\d+|PanglaoDB|CellMarker [\d.]+|MSigDB)", src)
    if m:
        return m.group(1)
    return " ".join(re.split(r"[\s,;(]+", src)[:2])


def gene_set_title(name: str, *, short: bool = False) -> str:
    """A title for gene set ``name`` (``score_`` prefix allowed): its words, capitalised,
    and its source in brackets, from the set's YAML (``Ferroptosis (KEGG)``,
    ``Ferroptosis (WikiPathways WP4313)``, ``Hypoxia (Buffa et al. 2010)``). ``short``
    leaves the source out."""
    base = re.sub(r"^(score|aucell)_", "", str(name))
    words = base.split("_")
    tag = ""
    if len(words) > 1 and words[-1] in _SOURCE_TAGS:
        tag = _SOURCE_TAGS[words.pop()]
    elif len(words) > 1 and re.fullmatch(r"wp\d+", words[-1]):
        tag = "WikiPathways " + words.pop().upper()
    text = " ".join(words)
    text = text[:1].upper() + text[1:]
    if short:
        return text
    src = tag or _source_of(base)
    return f"{text} ({src})" if src else text


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
    labels = [gene_set_title(n) for n in names]
    ax.set_xticks(range(k), labels, rotation=90)
    ax.set_yticks(range(k), labels)
    ax.set_title("Gene-set overlap (number: shared genes; diagonal: set size)")
    cb = fig.colorbar(im, ax=ax, shrink=0.6)
    cb.set_label("Jaccard index")
    return fig
