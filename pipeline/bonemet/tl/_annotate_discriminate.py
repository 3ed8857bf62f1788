"""Discriminating two lineages that share a programme or tie on their own marker sets (T vs
NK; osteoblast and CAR stroma vs fibroblast; dendritic cell vs monocyte/macrophage), with
partial coverage.

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
  default on the shared cytotoxic genes. That prior is for pairs whose lineage sets
  overlap (carry the shared programme; ``lineage_sets: overlapping``, the default); a
  discriminator with ``lineage_sets: distinct`` (DC vs monocyte, whose lineage sets share
  no gene and tell the two apart on their own) is not applied when one side has no gene in
  the matrix: a prior would then take monocytes whose few C5AR1/MAFB counts dropped out
  away from their lineage. With neither side in the matrix no pair is split
  (``applied: False`` and the reason in the record);
* the split compares the two sides at the scale of the cell's neighbourhood: with a kNN
  graph (``W``) the measured part of each side (``dA = s v + (1 - s) prior``, ``v`` the
  top-half mean, ``s`` the shrinkage weight) has ``v`` graph-smoothed, so a side resting on
  one or two detected genes with dropout (NCR1 in half of the NK cells) does not flip
  cell by cell;
* **evidence by absence**: a side's genes that the data set shows to be measured count
  against a cell whose neighbourhood lacks them. A gene's expected detection ``p_g`` is its
  highest detection rate (fraction of cells above the ambient floor) in any cluster of at
  least ``_ABSENCE_MIN_CELLS`` cells the pair claims (raw best lineage is one of the two);
  the cell's neighbourhood detection ``n_g`` is the kNN-smoothed detection (the cell's
  own without a graph). The side's completeness is ``c = sum min(n_g, p_g) / sum p_g``,
  trusted in proportion to how well the side is measured, ``w = min(1, sum p_g / 3)``
  (three fully detected genes' worth), and the measured part of the side's evidence is
  multiplied by ``f = 1 - w (1 - c)``: ``e = s v f + (1 - s) prior``. An NK cluster
  without CD3/TCR transcripts, in a data set whose T cells express them, so has little T
  evidence even when it carries germline TRBC transcripts, the shared cytotoxic programme
  and few of its own NK genes. Genes absent from the matrix, or undetected in every
  cluster of the pair (a gene panel, a list gene the data's populations do not express),
  give no absence evidence (``w = 0``): the side keeps its presence evidence or the prior.
  Only the pair's clusters count (FCER1G/TYROBP in monocytes say nothing about NK cells).
  Without ``clusters`` there is no absence evidence;
* the side with more evidence (``eA`` vs ``eB``) keeps ``U``, the other gets
  ``U x (e_less / e_more)^2``: a cell with twice the NK evidence of T evidence keeps a
  quarter of its T score. A side with none of its discriminating genes in the matrix that
  wins at the prior keeps its own lineage score, not ``U`` (unless the shared programme
  stands in for its thinly measured lineage): it has shown nothing of its own, so a stromal
  or tumour cell's collagen genes, which score for osteoblasts, do not become fibroblast
  evidence in a matrix without the fibroblast genes. Where both sides are measured and
  neither shows its genes (both ``< _DISCRIM_NONE``), the pair is left as it was: the cell
  is of neither lineage's discriminating kind (a CAR stromal cell to the osteoblast /
  fibroblast pair), and a tie must not hand one of them the other's score.
* **NKT-like** cells carry both programmes clearly (both sides measured, ``dA`` and ``dB``
  >= ``_NKT_PRESENT``, and ``r = dA / (dA + dB)`` within ``[0.4, 0.6]``: neither side has 1.5x the other). They get a defined outcome:
  ``Unassigned`` with the note ``"NKT-like: T and NK programmes"`` (other pairs:
  ``"both programmes: <target> and <versus>"``) in ``obs["annotation_note"]`` rather than
  whichever lineage a small difference favours.
  With a kNN graph (``W``), the cell's *neighbourhood* must show both programmes too (the
  graph-smoothed ``r`` within the same band): NKT-like cells are a population, while a
  single cell with a few UMIs of both sides (a handful of TRDC/CD3 counts in an NK cell)
  amid cells that clearly have one programme is called by the usual lineage rule.
  NKT-like is judged on the cell's own presence evidence ``dA``, ``dB`` (before the
  smoothing and the absence factor of the split).

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
    _ABSENCE_MIN_CELLS,
    _DISCRIM_MIN_GENES,
    _DISCRIM_NONE,
    _DISCRIM_PRIOR,
    _LINEAGE_SMOOTH,
    _NEG_WEIGHT,
    _NKT_PRESENT,
    _NKT_RATIO,
)

NKT_NOTE = "NKT-like: T and NK programmes"


def both_note(target: str, versus: str) -> str:
    """The ``annotation_note`` of cells with both programmes of a pair (T/NK: NKT-like)."""
    if {target, versus} == {"T cell", "NK cell"}:
        return NKT_NOTE
    return f"both programmes: {target} and {versus}"


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
    lineage_sets: str = "overlapping"  # or "distinct" (module docstring)

    @property
    def note(self) -> str:
        return both_note(self.target, self.versus)


def _side_parts(
    E: np.ndarray, col: Mapping[int, int], genes: Sequence[int]
) -> tuple[np.ndarray, float]:
    """Top-half mean of a side's measured genes and its weight against the prior."""
    if not genes:
        return np.zeros(E.shape[0], dtype=np.float32), 0.0
    v = _topk_mean(E[:, [col[j] for j in genes]]).astype(np.float32)
    return v, min(1.0, len(genes) / _DISCRIM_MIN_GENES)


def _side(E: np.ndarray, col: Mapping[int, int], genes: Sequence[int]) -> np.ndarray:
    """Top-half mean of a side's measured genes, shrunk to the prior when thinly measured."""
    v, w = _side_parts(E, col, genes)
    return (w * v + (1.0 - w) * _DISCRIM_PRIOR).astype(np.float32)


def _expected_detection(
    E: np.ndarray,
    col: Mapping[int, int],
    genes: Sequence[int],
    pair: np.ndarray,
    clusters: np.ndarray | None,
) -> np.ndarray:
    """Per gene: its highest detection rate in a cluster of >= _ABSENCE_MIN_CELLS pair cells.

    0 for every gene without ``clusters`` or without such a cluster.
    """
    p = np.zeros(len(genes), dtype=np.float32)
    if not genes or clusters is None:
        return p
    det = E[:, [col[j] for j in genes]] > 0
    for k in np.unique(clusters[pair]):
        m = pair & (clusters == k)
        if int(m.sum()) >= _ABSENCE_MIN_CELLS:
            p = np.maximum(p, det[m].mean(axis=0).astype(np.float32))
    return p


def _absence_factor(
    E: np.ndarray,
    col: Mapping[int, int],
    genes: Sequence[int],
    p: np.ndarray,
    W: Any,
) -> tuple[np.ndarray, float]:
    """``1 - w (1 - c)`` per cell (module docstring) and the trust ``w`` of the side."""
    n = E.shape[0]
    total = float(p.sum())
    w = min(1.0, total / _DISCRIM_MIN_GENES)
    if w <= 0.0:
        return np.ones(n, dtype=np.float32), 0.0
    det = (E[:, [col[j] for j in genes]] > 0).astype(np.float32)
    if W is not None:
        det = _smooth(det, W, *_LINEAGE_SMOOTH)
    c = np.minimum(det, p[None, :]).sum(axis=1) / total
    return (1.0 - w * (1.0 - c)).astype(np.float32), w


def discriminate(
    raw: np.ndarray,
    lineages: Sequence[str],
    E: np.ndarray,
    col: Mapping[int, int],
    discriminators: Sequence[_Discriminator],
    lineage_neg: Mapping[str, Sequence[int]],
    thin: Mapping[str, bool],
    W: Any = None,
    clusters: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Apply each discriminator to the raw lineage scores (cells x lineages).

    ``thin[lineage]`` says that lineage's own marker set is thinly measured, so the shared
    programme may stand in for it. ``W`` (row-normalised kNN graph, optional): the split
    compares the sides' neighbourhood evidence, the absence evidence uses neighbourhood
    detection, and NKT-like needs the neighbourhood's discriminating evidence to be mixed
    as well. ``clusters`` (cluster code per cell, optional):
    where each side's genes are expressed, for the evidence by absence (none without it).
    Returns the adjusted scores, per cell the note of a pair whose programmes it carries
    both (``""`` for none; T/NK: NKT-like; the first pair applied wins) and a record per
    discriminator (coverage of each side, expected detections and absence
    weight of each side, NKT-like).
    """
    out = raw.copy()
    both = np.full(raw.shape[0], "", dtype=object)
    info: dict[str, Any] = {}
    for d in discriminators:
        if d.target not in lineages or d.versus not in lineages:
            continue
        a, b = lineages.index(d.target), lineages.index(d.versus)
        coverage = _coverage(d)
        best = out.argmax(axis=1)
        pair = (best == a) | (best == b)  # the cells the pair claims
        # nothing to split on: neither side in the matrix, or (distinct lineage sets, which
        # tell the pair apart themselves) one side missing
        distinct = d.lineage_sets == "distinct"
        missing = [s for s, g in ((d.target, d.pos), (d.versus, d.neg)) if not g]
        if len(missing) == 2 or (missing and distinct):
            info[d.name] = {
                **coverage,
                "applied": False,
                "not_applied_because": f"no discriminating gene of {' or '.join(missing)} in "
                "the matrix",
                "prior_used_for": [],
                "n_pair_cells": int(pair.sum()),
            }
            continue
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
        # evidence by absence: a side's genes measured in the pair's clusters but missing
        # from the cell's neighbourhood lower that side's evidence
        pA = _expected_detection(E, col, d.pos, pair, clusters)
        pB = _expected_detection(E, col, d.neg, pair, clusters)
        fA, wA = _absence_factor(E, col, d.pos, pA, W)
        fB, wB = _absence_factor(E, col, d.neg, pB, W)
        # each side's presence evidence over the neighbourhood (a side resting on one or
        # two genes with dropout flips cell by cell otherwise), times its absence factor;
        # the prior part of a thinly measured side is not scaled
        vA, sA = _side_parts(E, col, d.pos)
        vB, sB = _side_parts(E, col, d.neg)
        if W is not None:
            vA = _smooth(vA, W, *_LINEAGE_SMOOTH)
            vB = _smooth(vB, W, *_LINEAGE_SMOOTH)
        eA = sA * vA * fA + (1.0 - sA) * _DISCRIM_PRIOR
        eB = sB * vB * fB + (1.0 - sB) * _DISCRIM_PRIOR
        # the side with more discriminating evidence keeps U; the other is scaled by the
        # squared ratio of the two sides' evidence. A side that wins with none of its
        # genes in the matrix (it stands at the prior) keeps its own lineage score instead
        # of U, unless the shared programme stands in for it: it has shown nothing of its
        # own, so the other lineage's score (a stromal or tumour cell's collagen genes
        # scoring for osteoblasts) must not become its evidence
        ratio = np.minimum(eA, eB) / np.maximum(np.maximum(eA, eB), 1e-6)
        keepA = U if (d.pos or d.target in stand_in) else out[:, a]
        keepB = U if (d.neg or d.versus in stand_in) else out[:, b]
        newA = np.where(eA >= eB, keepA, U * ratio**2)
        newB = np.where(eB > eA, keepB, U * ratio**2)
        # both sides measured and neither shows its genes (a marrow CAR cell with the
        # collagen programme, neither osteoblast nor fibroblast genes): nothing to split
        silent = bool(d.pos and d.neg) & (np.maximum(eA, eB) < _DISCRIM_NONE)
        out[:, a] = np.where(silent, out[:, a], newA)
        out[:, b] = np.where(silent, out[:, b], newB)
        measured = len(d.pos) >= _DISCRIM_MIN_GENES and len(d.neg) >= _DISCRIM_MIN_GENES
        nkt = measured & (dA >= _NKT_PRESENT) & (dB >= _NKT_PRESENT) & (r >= _NKT_RATIO)
        nkt &= r <= 1 - _NKT_RATIO
        n_cell_level = int(nkt.sum())
        if W is not None and nkt.any():
            dS = _smooth(np.stack([dA, dB], axis=1), W, *_LINEAGE_SMOOTH)
            r_nb = dS[:, 0] / np.maximum(dS.sum(axis=1), 1e-6)
            nkt &= (r_nb >= _NKT_RATIO) & (r_nb <= 1 - _NKT_RATIO)
        both[nkt & (both == "")] = d.note
        info[d.name] = {
            **coverage,
            "applied": True,
            "prior_used_for": [
                s for s, g in ((d.target, d.pos), (d.versus, d.neg)) if len(g) < _DISCRIM_MIN_GENES
            ],
            "shared_stands_in_for": stand_in,
            "target_expected_detections": float(pA.sum()),
            "versus_expected_detections": float(pB.sum()),
            "target_absence_weight": float(wA),
            "versus_absence_weight": float(wB),
            "n_pair_cells": int(pair.sum()),
            "both_programmes_note": d.note,
            "n_both_programmes": int(nkt.sum()),
            "n_both_programmes_cell_level": n_cell_level,
        }
    return out.astype(np.float32), both.astype(str), info


def _coverage(d: _Discriminator) -> dict[str, Any]:
    """Genes found / listed of each side of a discriminator."""
    return {
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
        "lineage_sets": d.lineage_sets,
    }
