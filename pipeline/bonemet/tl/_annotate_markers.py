"""Annotation primitives: gene matching (case-insensitive, Ensembl suffixes), marker-set
scores (top-half means, negatives, shrinkage for thinly measured sets), on-the-fly
log-normalisation, per-sample background removal and scaling.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._counts import is_counts
from ._annotate_params import (
    _BACKGROUND_QUANTILE,
    _MIN_BACKGROUND_CELLS,
    _MIN_GENES,
    _NEG_WEIGHT,
    _SCALE_FLOOR,
    _SCALE_QUANTILE,
)

# --------------------------------------------------------------------------- genes
_SUFFIX = re.compile(r"^(.+?)[_.](ENS[A-Z]*G\d+)(\.\d+)?$", re.IGNORECASE)


def _gene_index(var_names: Sequence[str]) -> dict[str, int]:
    """Upper-cased symbol -> column; ``SYMBOL_ENSG...`` names also answer to ``SYMBOL``."""
    idx: dict[str, int] = {}
    names = [str(v) for v in var_names]
    for i, v in enumerate(names):
        idx.setdefault(v.upper(), i)
    for i, v in enumerate(names):
        m = _SUFFIX.match(v)
        if m:
            idx.setdefault(m.group(1).upper(), i)
    return idx


def _match(genes: Sequence[str], index: Mapping[str, int]) -> list[int]:
    out: list[int] = []
    for g in genes:
        j = index.get(g.upper())
        if j is not None and j not in out:
            out.append(j)
    return out


# --------------------------------------------------------------------------- scoring
@dataclass
class _Set:
    name: str
    target: str
    pos: list[int]
    neg: list[int]
    n_pos_total: int
    n_neg_total: int
    coverage: float = field(init=False)

    def __post_init__(self) -> None:
        self.coverage = len(self.pos) / max(self.n_pos_total, 1)


def _shrink(n_found: int, n_listed: int) -> float:
    """Down-weight a set measured by fewer than three (or all of fewer) of its genes."""
    return min(1.0, n_found / min(n_listed, _MIN_GENES))


def _topk_mean(m: np.ndarray) -> np.ndarray:
    """Mean of the top half (rounded up) of each row."""
    if m.shape[1] == 0:
        return np.zeros(m.shape[0], dtype=np.float32)
    k = max(1, math.ceil(m.shape[1] / 2))
    if k == m.shape[1]:
        return m.mean(axis=1)
    part = np.partition(m, m.shape[1] - k, axis=1)[:, m.shape[1] - k :]
    return part.mean(axis=1)


def _score(
    E: np.ndarray, col: Mapping[int, int], pos: Sequence[int], neg: Sequence[int]
) -> np.ndarray:
    p = _topk_mean(E[:, [col[j] for j in pos]])
    if neg:
        p = p - _NEG_WEIGHT * _topk_mean(E[:, [col[j] for j in neg]])
    return p.astype(np.float32)


def _expression(adata: ad.AnnData, layer: str | None, cols: list[int]) -> tuple[np.ndarray, bool]:
    """Log-normalised expression of ``cols`` (cells x genes); normalises counts on the fly."""
    X = adata.X if layer is None else adata.layers[layer]
    sub = X[:, cols]
    sub = sub.toarray() if sp.issparse(sub) else np.asarray(sub)
    sub = sub.astype(np.float32, copy=False)
    # raw counts: log1p(CP10k) with the full library size
    counts = is_counts(X, empty=False)
    if counts:
        lib = np.asarray(X.sum(axis=1)).ravel().astype(np.float64)
        lib[lib == 0] = 1.0
        sub = np.log1p(sub / lib[:, None] * 1e4).astype(np.float32)
    return sub, counts


def _log_normalised(
    adata: ad.AnnData, layer: str | None, is_counts: bool, cells: np.ndarray | None = None
) -> ad.AnnData:
    """A lean AnnData of ``X`` (or ``layer``) as float32 CSR, log1p(CP10k) normalised here
    when it holds raw counts; ``cells`` selects rows. Gene and cell names are kept."""
    X = adata.X if layer is None else adata.layers[layer]
    names = adata.obs_names
    if cells is not None:
        X, names = X[cells], names[cells]
    out = ad.AnnData(
        X=sp.csr_matrix(X, dtype=np.float32),
        obs=pd.DataFrame(index=names.copy()),
        var=pd.DataFrame(index=adata.var_names.copy()),
    )
    if is_counts:
        import scanpy as sc

        sc.pp.normalize_total(out, target_sum=1e4)
        sc.pp.log1p(out)
    return out


def _remove_background(E: np.ndarray, samples: pd.Series | None) -> np.ndarray:
    """Subtract each gene's ambient floor: its 25th percentile within each sample.

    Ambient transcripts (haemoglobin, LYZ) are detected in most droplets of a sample; a
    genuine marker is absent from at least a quarter of the cells, so its floor is 0.
    """
    groups = [np.arange(E.shape[0])]
    if samples is not None:
        codes = pd.Categorical(samples).codes
        groups = [np.flatnonzero(codes == c) for c in np.unique(codes)]
        groups = [g for g in groups if g.size]
    out = E.copy()
    for g in groups:
        if g.size < _MIN_BACKGROUND_CELLS:
            g_bg = np.quantile(E, _BACKGROUND_QUANTILE, axis=0)
        else:
            g_bg = np.quantile(E[g], _BACKGROUND_QUANTILE, axis=0)
        out[g] = np.maximum(E[g] - g_bg[None, :], 0.0)
    return out


def _scale(E: np.ndarray) -> np.ndarray:
    """Per-gene scale to [0, 1]: ``x / max(q90(x > 0), q99(x), log1p(1))``.

    The 90th percentile of the non-zero values keeps rare markers at full scale; the 99th
    percentile over all cells keeps transcripts that are everywhere at a low ambient level
    (haemoglobin, LYZ) small next to the cells that really express them.
    """
    out = np.empty_like(E)
    for j in range(E.shape[1]):
        x = E[:, j]
        nz = x[x > 0]
        s = float(np.quantile(nz, _SCALE_QUANTILE)) if nz.size else 1.0
        s = max(s, float(np.quantile(x, 0.99)), _SCALE_FLOOR)
        out[:, j] = np.clip(x / s, 0.0, 1.0)
    return out
