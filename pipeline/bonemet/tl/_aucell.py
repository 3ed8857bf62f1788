"""AUCell (Aibar et al. 2017, doi:10.1038/nmeth.4463), decoupler's algorithm written for whole
sparse matrices: one ranking index serves every gene set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._errors import InputError

__all__: list[str] = []


def _uniform(seed: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Deterministic uniforms in [0, 1) per (seed, cell, gene) (splitmix64 hash)."""
    with np.errstate(over="ignore"):
        h = (
            np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
            + rows.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
            + cols.astype(np.uint64) * np.uint64(0x94D049BB133111EB)
        )
        for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            h = (h ^ (h >> np.uint64(shift))) * np.uint64(mult)
        h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


class _AUCellIndex:
    """AUCell contributions of a set of genes, computed from per-cell rankings.

    This is decoupler's AUCell (``decoupler.mt.aucell``, Aibar et al. 2017) written for whole
    sparse matrices at once: genes are ranked per cell by expression (rank 1 = highest,
    ties broken at random), only the top ``n_up = ceil(0.05 * n_genes)`` ranks count, and
    the AUC of a set is ``sum(max(n_up - rank_g, 0)) / max_auc``, identical to the recovery
    curve area in decoupler. Per cell and gene only ``n_up - rank`` is kept (sparse), so one
    index serves every set. Tie draws are hashed from (seed, cell, gene), so a set's AUCell does
    not depend on which other sets were indexed or on the block size. Unlike decoupler, genes with zero counts in
    every cell are not removed before ``n_up`` is chosen.
    """

    def __init__(
        self,
        X: Any,
        var_names: Sequence[str],
        genes: Iterable[str],
        *,
        seed: int,
        chunk_nnz: int = 4_000_000,
    ) -> None:
        X = sp.csr_matrix(X) if not sp.issparse(X) else X.tocsr()
        if X.data.size and X.data.min() < 0:
            raise InputError(
                "AUCell ranks expression and needs non-negative values, but the matrix has negative "
                "values (scaled data?); pass layer= naming log-normalised expression"
            )
        if X.data.size and (X.data == 0).any():
            X = X.copy()
            X.eliminate_zeros()
        n, p = X.shape
        self.n_genes = p
        self.n_up = int(np.clip(np.ceil(0.05 * p), 2, p))
        pos = {str(v): i for i, v in enumerate(var_names)}
        self.genes = list(dict.fromkeys(g for g in genes if g in pos))
        cols = np.array([pos[g] for g in self.genes], dtype=np.int64)
        self._col = {g: j for j, g in enumerate(self.genes)}
        colmap = np.full(p, -1, dtype=np.int64)
        colmap[cols] = np.arange(cols.size)
        nnz_row = np.diff(X.indptr)
        blocks = []
        r0 = 0
        while r0 < n:
            # rows per block so that a block holds about chunk_nnz entries
            cum = np.cumsum(nnz_row[r0:])
            r1 = r0 + max(1, int(np.searchsorted(cum, chunk_nnz)))
            r1 = min(r1, n)
            blocks.append(self._block(X[r0:r1], colmap, cols, r0, seed))
            r0 = r1
        self.contrib = sp.vstack(blocks, format="csc") if blocks else sp.csc_matrix((n, cols.size))

    def _block(
        self, sub: sp.csr_matrix, colmap: np.ndarray, cols: np.ndarray, r0: int, seed: int
    ) -> sp.csr_matrix:
        m, p = sub.shape
        k = cols.size
        n_up = self.n_up
        nnz_row = np.diff(sub.indptr).astype(np.int64)
        rows = np.repeat(np.arange(m, dtype=np.int64), nnz_row)
        data = np.asarray(sub.data, dtype=np.float64)
        # sort every row's entries by decreasing value (one argsort on a combined key)
        dmax = float(data.max()) if data.size else 0.0
        order = np.argsort(rows * (dmax + 1.0) + (dmax - data), kind="stable")
        sd, sr = data[order], rows[order]
        within = np.arange(sd.size, dtype=np.int64) - sub.indptr[sr]
        new_run = np.ones(sd.size, dtype=bool)
        new_run[1:] = (sr[1:] != sr[:-1]) | (sd[1:] != sd[:-1])
        starts = np.flatnonzero(new_run)
        run_id = np.cumsum(new_run) - 1
        run_len = np.diff(np.append(starts, sd.size))
        # stored entries of the indexed genes: rank = #larger + 1 + random place among equals
        jcol = colmap[sub.indices[order]]
        sel = jcol >= 0
        r, j, rid = sr[sel], jcol[sel], run_id[sel]
        greater, equal = within[starts[rid]], run_len[rid]
        rank = greater + 1 + np.floor(_uniform(seed, r + r0, cols[j]) * equal).astype(np.int64)
        out_r, out_j, out_c = [r], [j], [n_up - rank]
        # zeros rank after all stored entries; they reach the top n_up only in sparse cells
        low = np.flatnonzero(nnz_row + 1 < n_up)
        if low.size and k:
            pos = np.full(m, -1, dtype=np.int64)
            pos[low] = np.arange(low.size)
            present = np.zeros((low.size, k), dtype=bool)
            hit = pos[r] >= 0
            present[pos[r[hit]], j[hit]] = True
            zr, zj = np.nonzero(~present)
            zrow = low[zr]
            g0 = nnz_row[zrow]
            zrank = (
                g0 + 1 + np.floor(_uniform(seed, zrow + r0, cols[zj]) * (p - g0)).astype(np.int64)
            )
            out_r.append(zrow)
            out_j.append(zj)
            out_c.append(n_up - zrank)
        rr, jj, cc = (np.concatenate(x) for x in (out_r, out_j, out_c))
        keep = cc > 0
        return sp.csr_matrix((cc[keep].astype(np.float64), (rr[keep], jj[keep])), shape=(m, k))

    def max_auc(self, k: int) -> float:
        m = min(k, self.n_up - 1)
        return float(m * self.n_up - m * (m + 1) / 2)

    def auc(self, genes: Sequence[str]) -> np.ndarray:
        idx = [self._col[g] for g in dict.fromkeys(genes)]
        if not idx:
            raise InputError("AUCell needs at least one gene of the set in var_names")
        s = np.asarray(self.contrib[:, idx].sum(axis=1)).ravel()
        return s / self.max_auc(len(idx))


def _method_aucell(
    X: Any, var_names: Sequence[str], sets: Mapping[str, list[str]], *, seed: int
) -> np.ndarray:
    """AUCell (decoupler's algorithm, vectorised; see :class:`_AUCellIndex`) of each set.

    One ranking index over the union of the sets' genes serves every set; a set's values do
    not depend on the other sets (tie draws are hashed per cell and gene).
    """
    index = _AUCellIndex(X, var_names, [g for genes in sets.values() for g in genes], seed=seed)
    return np.column_stack([index.auc(genes) for genes in sets.values()])
