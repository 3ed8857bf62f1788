"""Annotation in embeddings: the kNN graph, each lineage's own embedding, graph smoothing,
the marker-seeded classifiers and the cluster vote.
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError
from .._logging import logger
from ._annotate_markers import _log_normalised
from ._annotate_params import (
    _OVER_CLUSTER_LADDER,
    _OVER_CLUSTER_MAX,
    _SEED_C,
    _SEED_MIN,
    _SEED_OTHER,
    _SEED_SCORE,
    _SUBGRAPH_HVG,
    _SUBGRAPH_MIN_CELLS,
    _SUBGRAPH_PCS,
)


def _graph(
    adata: ad.AnnData, use_rep: str | None, layer: str | None, is_counts: bool, seed: int = 0
) -> sp.csr_matrix:
    C = adata.obsp.get("connectivities") if use_rep is None else None
    if C is not None and C.shape == (adata.n_obs, adata.n_obs):
        return sp.csr_matrix(C)
    import scanpy as sc

    rep = use_rep
    if rep is None:
        rep = next((r for r in ("X_scVI", "X_harmony", "X_pca") if r in adata.obsm), None)
    tmp = ad.AnnData(X=sp.csr_matrix((adata.n_obs, 1), dtype=np.float32))
    if rep is not None:
        if rep not in adata.obsm:
            raise InputError(
                f"use_rep={rep!r} is not in adata.obsm; pass one of {list(adata.obsm)}"
            )
        tmp.obsm["rep"] = np.asarray(adata.obsm[rep], dtype=np.float32)
    else:
        logger.info("annotate: no kNN graph or embedding; computing PCA for the graph")
        src = _log_normalised(adata, layer, is_counts)
        if "highly_variable" in adata.var:
            src.var["highly_variable"] = adata.var["highly_variable"].to_numpy()
        else:
            sc.pp.highly_variable_genes(src, n_top_genes=min(2000, src.n_vars))
        sc.pp.pca(src, n_comps=min(30, src.n_vars - 1, src.n_obs - 1), mask_var="highly_variable")
        tmp.obsm["rep"] = src.obsm["X_pca"]
    n_neighbors = int(min(15, max(2, adata.n_obs - 1)))
    sc.pp.neighbors(tmp, use_rep="rep", n_neighbors=n_neighbors, random_state=seed)
    return sp.csr_matrix(tmp.obsp["connectivities"])


def _lineage_embedding(
    adata: ad.AnnData, layer: str | None, is_counts: bool, cells: np.ndarray, seed: int
) -> tuple[np.ndarray, sp.csr_matrix] | None:
    """PCA of ``cells`` on their own variable genes, and its row-normalised kNN graph.

    Sub-types inside a lineage (CD4 vs CD8 T, classical vs non-classical monocytes) differ
    in few genes; on the whole-data embedding their neighbourhoods mix. Re-embedding the
    lineage alone (as one would by hand: subset, HVGs, PCA, kNN) separates them.
    ``None`` when the lineage is too small to re-embed.
    """
    if cells.size < _SUBGRAPH_MIN_CELLS:
        return None
    import scanpy as sc

    tmp = _log_normalised(adata, layer, is_counts, cells)
    detected = np.asarray((tmp.X > 0).sum(axis=0)).ravel()
    tmp = tmp[:, detected >= 3].copy()
    if tmp.n_vars < 20:
        return None
    n_top = int(min(_SUBGRAPH_HVG, tmp.n_vars))
    sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat")
    n_comps = int(min(_SUBGRAPH_PCS, tmp.n_obs - 2, int(tmp.var["highly_variable"].sum()) - 1))
    if n_comps < 2:
        return None
    sc.pp.pca(tmp, n_comps=n_comps, mask_var="highly_variable", random_state=seed)
    k = int(min(15, max(2, tmp.n_obs - 1)))
    sc.pp.neighbors(tmp, n_neighbors=k, use_rep="X_pca", random_state=seed)
    return np.asarray(tmp.obsm["X_pca"]), _smoother(sp.csr_matrix(tmp.obsp["connectivities"]))


def _seed_classifier() -> Any:
    """The L2 logistic regression both seeded refinements use."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=_SEED_C, max_iter=2000, class_weight="balanced")


def _seeded_state(pcs: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Probability of a state for every cell, from a classifier on its seeds."""
    use = pos | neg
    clf = _seed_classifier().fit(pcs[use], pos[use])
    return clf.predict_proba(pcs)[:, 1].astype(np.float32)


def _seeded_roots(raw: np.ndarray, pcs: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Root probabilities from a classifier trained on the lineage's unambiguous cells.

    Seeds are cells whose own (unsmoothed) marker evidence names one root and no other
    (``raw >= _SEED_SCORE`` for it, ``<= _SEED_OTHER`` for the rest). A logistic regression
    on the lineage's PCA learns from them what else separates the roots (co-expressed
    genes the marker lists do not name) and is applied to every cell of the lineage. This
    is the marker-seeded label transfer that hand-made workflows do by sub-clustering.
    Returns ``(probabilities, mask of the roots the classifier knows)`` or ``None`` when
    fewer than two roots have ``_SEED_MIN`` seeds.
    """
    n, k = raw.shape
    best = raw.argmax(axis=1)
    top = raw[np.arange(n), best]
    others = np.where(np.eye(k, dtype=bool)[best], -np.inf, raw).max(axis=1) if k > 1 else 0.0
    seeds = (top >= _SEED_SCORE) & (others <= _SEED_OTHER)
    counts = np.bincount(best[seeds], minlength=k)
    known = counts >= _SEED_MIN
    if known.sum() < 2:
        return None
    use = seeds & known[best]
    clf = _seed_classifier().fit(pcs[use], best[use])
    P = np.zeros((n, k), dtype=np.float32)
    P[:, clf.classes_] = clf.predict_proba(pcs).astype(np.float32)
    return P, known


def _smoother(C: sp.csr_matrix) -> sp.csr_matrix:
    W = C.copy().astype(np.float32)
    d = np.asarray(W.sum(axis=1)).ravel()
    d[d == 0] = 1.0
    return sp.diags(1.0 / d) @ W


def _smooth(S: np.ndarray, W: sp.csr_matrix, weight: float, n_iter: int) -> np.ndarray:
    out = S
    for _ in range(n_iter):
        out = (1.0 - weight) * out + weight * (W @ out)
    return out.astype(np.float32)


def _leiden(C: sp.csr_matrix, resolution: float, seed: int) -> np.ndarray:
    """Leiden (igraph, two iterations) of the graph ``C``; integer codes per cell."""
    import scanpy as sc

    tmp = ad.AnnData(X=sp.csr_matrix((C.shape[0], 1), dtype=np.float32))
    tmp.obsp["connectivities"] = C
    tmp.uns["neighbors"] = {"connectivities_key": "connectivities", "params": {"method": "umap"}}
    sc.tl.leiden(
        tmp,
        resolution=resolution,
        key_added="c",
        random_state=seed,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        neighbors_key="neighbors",
    )
    return pd.Categorical(tmp.obs["c"]).codes.astype(np.int64)


def _clusters(
    adata: ad.AnnData, cluster_key: str | None, C: sp.csr_matrix, seed: int
) -> np.ndarray:
    if cluster_key and cluster_key in adata.obs:
        return pd.Categorical(adata.obs[cluster_key]).codes.astype(np.int64)
    logger.info(
        "annotate: obs[%r] not found; clustering the graph (leiden) for cluster evidence",
        cluster_key,
    )
    return _leiden(C, 1.0, seed)


def _over_clusters(C: sp.csr_matrix, seed: int) -> tuple[np.ndarray, float]:
    """Small, many clusters of the annotation graph for the lineage cluster term.

    The resolution grows with the number of cells (CellTypist's majority-voting ladder),
    so that an over-cluster holds a few dozen cells at any size: a small population gets
    clusters of its own instead of being pooled with a large neighbour, and its call does
    not depend on what else is in the data set. Returns the codes and the resolution.
    """
    n = C.shape[0]
    resolution = next((r for limit, r in _OVER_CLUSTER_LADDER if n < limit), _OVER_CLUSTER_MAX)
    return _leiden(C, resolution, seed), float(resolution)
