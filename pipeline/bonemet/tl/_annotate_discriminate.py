"""Discriminating two lineages that share a programme (T vs NK), with partial coverage.

Cytotoxic CD8 T cells and NK cells share NKG7, GNLY, PRF1, CD2 and CD247; the genes that
tell them apart are few (TCR constant chains, CD3, CD8B, CD5, CD6, CD28 vs KLRF1, NCR1,
FCER1G, TYROBP, SH2D1B), and a processed matrix may lack some of them (a 3,000-gene
matrix without CD3E). A ``lineage_discriminator`` gene set (``signatures/discriminate_*``)
names the target's discriminating genes (``positive``), the other lineage's
(``negative``) and the programme both carry (``shared``). For each cell:

* ``U`` = the larger of the two lineage scores: the evidence that the cell belongs to the
  pair at all. Where a lineage's own marker set is thinly measured (fewer than three of
  its genes, or under half of them, in the matrix) the shared-programme score stands in
  for it, so a T cell stays in the pair when its T genes are missing;
* ``dA``, ``dB`` = top-half means of the measured discriminating genes of each side. A side
  measured by fewer than ``_DISCRIM_MIN_GENES`` genes is shrunk towards a fixed prior
  ``_DISCRIM_PRIOR`` (with none measured it *is* the prior), so that where CD3/TCR genes
  are absent the NK side must show its own genes clearly to win, instead of winning by
  default on the shared cytotoxic genes;
* the side with more discriminating evidence keeps ``U``, the other gets
  ``U x (d_less / d_more)^2``: a cell with twice the NK evidence of T evidence keeps a
  quarter of its T score.
* **NKT-like** cells carry both programmes clearly (both sides measured, ``dA`` and ``dB``
  >= ``_NKT_PRESENT``, and ``r = dA / (dA + dB)`` within ``[0.4, 0.6]``: neither side has 1.5x the other). They get a defined outcome:
  ``Unassigned`` with the note ``"NKT-like: T and NK programmes"`` in
  ``obs["annotation_note"]`` rather than whichever lineage a small difference favours.
  With a kNN graph (``W``), the cell's *neighbourhood* must show both programmes too (the
  graph-smoothed ``r`` within the same band): NKT-like cells are a population, while a
  single cell with a few UMIs of both sides (a handful of TRDC/CD3 counts in an NK cell)
  amid cells that clearly have one programme is called by the usual lineage rule.

The coverage of every side (genes found / listed) is recorded in ``uns``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._annotate_graph import _smooth
from ._annotate_markers import _topk_mean
from ._annotate_params import (
    _DISCRIM_MIN_GENES,
    _DISCRIM_PRIOR,
    _LINEAGE_SMOOTH,
    _NEG_WEIGHT,
    _NKT_PRESENT,
    _NKT_RATIO,
)

NKT_NOTE = "NKT-like: T and NK programmes"


@dataclass
class _Discriminator:
    name: str
    target: str
    versus: str
    pos: list[int]  # target's discriminating genes (matched columns)
    neg: list[int]  # versus's discriminating genes
    shared: list[int]
    n_pos_total: int
    n_neg_total: int
    n_shared_total: int


def _side(E: np.ndarray, col: Mapping[int, int], genes: Sequence[int]) -> np.ndarray:
    """Top-half mean of a side's measured genes, shrunk to the prior when thinly measured."""
    n = E.shape[0]
    if not genes:
        return np.full(n, _DISCRIM_PRIOR, dtype=np.float32)
    v = _topk_mean(E[:, [col[j] for j in genes]])
    w = min(1.0, len(genes) / _DISCRIM_MIN_GENES)
    return (w * v + (1.0 - w) * _DISCRIM_PRIOR).astype(np.float32)


def discriminate(
    raw: np.ndarray,
    lineages: Sequence[str],
    E: np.ndarray,
    col: Mapping[int, int],
    discriminators: Sequence[_Discriminator],
    lineage_neg: Mapping[str, Sequence[int]],
    thin: Mapping[str, bool],
    W: Any = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Apply each discriminator to the raw lineage scores (cells x lineages).

    ``thin[lineage]`` says that lineage's own marker set is thinly measured, so the shared
    programme may stand in for it. ``W`` (row-normalised kNN graph, optional): NKT-like
    needs the neighbourhood's discriminating evidence to be mixed as well. Returns the adjusted scores, a mask of NKT-like cells (both programmes present) and a
    record per discriminator (coverage of each side, cells decided each way, NKT-like).
    """
    out = raw.copy()
    both = np.zeros(raw.shape[0], dtype=bool)
    info: dict[str, Any] = {}
    for d in discriminators:
        if d.target not in lineages or d.versus not in lineages:
            continue
        a, b = lineages.index(d.target), lineages.index(d.versus)
        dA = _side(E, col, d.pos)
        dB = _side(E, col, d.neg)
        U = np.maximum(out[:, a], out[:, b])
        stand_in = [x for x in (d.target, d.versus) if thin.get(x, False)]
        if d.shared and stand_in:
            disc = set(d.pos) | set(d.neg)
            negs = [
                j
                for j in {*lineage_neg.get(d.target, ()), *lineage_neg.get(d.versus, ())}
                if j not in disc
            ]
            sh = _topk_mean(E[:, [col[j] for j in d.shared]])
            sh = sh * min(1.0, len(d.shared) / 3)
            if negs:
                sh = sh - _NEG_WEIGHT * _topk_mean(E[:, [col[j] for j in negs]])
            U = np.maximum(U, sh.astype(np.float32))
        r = dA / np.maximum(dA + dB, 1e-6)
        # the side with more discriminating evidence keeps U; the other is scaled by the
        # squared ratio of the two sides' evidence
        ratio = np.minimum(dA, dB) / np.maximum(np.maximum(dA, dB), 1e-6)
        out[:, a] = U * np.where(dA >= dB, 1.0, ratio**2)
        out[:, b] = U * np.where(dB > dA, 1.0, ratio**2)
        measured = len(d.pos) >= _DISCRIM_MIN_GENES and len(d.neg) >= _DISCRIM_MIN_GENES
        nkt = measured & (dA >= _NKT_PRESENT) & (dB >= _NKT_PRESENT) & (r >= _NKT_RATIO)
        nkt &= r <= 1 - _NKT_RATIO
        n_cell_level = int(nkt.sum())
        if W is not None and nkt.any():
            dS = _smooth(np.stack([dA, dB], axis=1), W, *_LINEAGE_SMOOTH)
            r_nb = dS[:, 0] / np.maximum(dS.sum(axis=1), 1e-6)
            nkt &= (r_nb >= _NKT_RATIO) & (r_nb <= 1 - _NKT_RATIO)
        both |= nkt
        info[d.name] = {
            "target": d.target,
            "versus": d.versus,
            "target_genes_found": len(d.pos),
            "target_genes_total": d.n_pos_total,
            "versus_genes_found": len(d.neg),
            "versus_genes_total": d.n_neg_total,
            "shared_genes_found": len(d.shared),
            "shared_genes_total": d.n_shared_total,
            "target_coverage": len(d.pos) / max(d.n_pos_total, 1),
            "versus_coverage": len(d.neg) / max(d.n_neg_total, 1),
            "prior_used_for": [
                s for s, g in ((d.target, d.pos), (d.versus, d.neg)) if len(g) < _DISCRIM_MIN_GENES
            ],
            "shared_stands_in_for": stand_in,
            "n_both_programmes": int(nkt.sum()),
            "n_both_programmes_cell_level": n_cell_level,
        }
    return out.astype(np.float32), both, info
