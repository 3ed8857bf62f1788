"""Integration metrics: batch mixing and biological conservation.

scib-metrics pulls in jax and is rarely installed, so bonemet computes a documented,
lightweight set with scikit-learn. Each metric is scaled so that **higher is better**
and lies in 0..1, following the scib definitions (Luecken et al. 2022, Nat Methods
19:41):

``silhouette_label``
    Cell-type ASW: ``(silhouette(embedding, labels) + 1) / 2``. Bio conservation.
``silhouette_batch``
    Batch ASW: per label, ``mean(1 - |silhouette(embedding, batch)|)`` over that label's
    cells, then averaged over labels. Batch mixing.
``knn_batch_entropy``
    iLISI-like: for each cell, the entropy of the batch composition of its k nearest
    neighbours divided by ``log(n_batches)``; averaged. Batch mixing.
``ari_kmeans`` / ``nmi_kmeans``
    Agreement of a k-means clustering (k = number of labels) with the labels. Bio
    conservation; defined alike for every embedding, so before and after compare.
``ari_leiden`` / ``nmi_leiden``
    Agreement of ``obs["leiden"]`` with the labels (integrated embedding only, since
    leiden was computed on it).

Cells are subsampled (``max_cells``, fixed seed) to keep the cost bounded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._common import MissingDataError

__all__ = ["integration_metrics_table", "label_key_of", "integrated_basis"]

BATCH_METRICS = ("silhouette_batch", "knn_batch_entropy")
BIO_METRICS = ("silhouette_label", "ari_kmeans", "nmi_kmeans", "ari_leiden", "nmi_leiden")


def label_key_of(adata: Any) -> str | None:
    """The obs column holding known labels: ``reference_label``, else ``true_population``."""
    for key in ("reference_label", "true_population"):
        if key in adata.obs.columns and adata.obs[key].notna().any():
            return key
    return None


def integrated_basis(adata: Any) -> str | None:
    """The integrated latent space present: ``X_scVI``, else ``X_harmony``."""
    for key in ("X_scVI", "X_harmony"):
        if key in adata.obsm:
            return key
    return None


def _knn_batch_entropy(emb: np.ndarray, batch: np.ndarray, k: int) -> float:
    from sklearn.neighbors import NearestNeighbors

    codes, uniq = pd.factorize(batch)
    nb = len(uniq)
    if nb < 2:
        return float("nan")
    k = int(min(k, len(emb) - 1))
    if k < 2:
        return float("nan")
    idx = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb, return_distance=False)
    neigh = codes[idx[:, 1:]]
    counts = np.stack([(neigh == b).sum(axis=1) for b in range(nb)], axis=1) / k
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nansum(np.where(counts > 0, counts * np.log(counts), 0.0), axis=1)
    return float(np.mean(ent) / np.log(nb))


def _silhouette_batch(emb: np.ndarray, labels: np.ndarray, batch: np.ndarray) -> float:
    from sklearn.metrics import silhouette_samples

    scores = []
    for lab in pd.unique(labels):
        m = labels == lab
        b = batch[m]
        nb = len(pd.unique(b))
        if nb < 2 or nb >= m.sum():
            continue
        s = silhouette_samples(emb[m], b)
        scores.append(float(np.mean(1.0 - np.abs(s))))
    return float(np.mean(scores)) if scores else float("nan")


def _embedding_metrics(
    emb: np.ndarray, labels: np.ndarray, batch: np.ndarray, *, k: int, seed: int
) -> dict[str, float]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

    out: dict[str, float] = {}
    n_lab = len(pd.unique(labels))
    if 2 <= n_lab < len(emb):
        out["silhouette_label"] = float((silhouette_score(emb, labels) + 1) / 2)
        km = KMeans(n_clusters=n_lab, n_init=3, random_state=seed).fit_predict(emb)
        out["ari_kmeans"] = float(adjusted_rand_score(labels, km))
        out["nmi_kmeans"] = float(normalized_mutual_info_score(labels, km))
    else:
        out.update(silhouette_label=np.nan, ari_kmeans=np.nan, nmi_kmeans=np.nan)
    out["silhouette_batch"] = _silhouette_batch(emb, labels, batch)
    out["knn_batch_entropy"] = _knn_batch_entropy(emb, batch, k)
    return out


def integration_metrics_table(
    adata: Any,
    *,
    label_key: str | None = None,
    batch_key: str = "batch",
    max_cells: int = 5000,
    n_neighbors: int = 15,
    seed: int = 0,
) -> pd.DataFrame:
    """Batch-mixing and bio-conservation metrics before and after integration.

    Returns a DataFrame (not a figure): one row per embedding (``X_pca`` =
    unintegrated, then ``X_scVI``/``X_harmony`` when present), one column per metric
    (see the module docstring; higher is better), plus ``n_cells`` used.

    Parameters
    ----------
    adata
        Needs ``obsm["X_pca"]`` and/or an integrated ``obsm``, labels in
        ``obs[label_key]`` (default ``reference_label``, else ``true_population``) and
        the batch in ``obs[batch_key]`` (falls back to ``obs["sample"]``).
    max_cells
        Cells are subsampled to at most this many (fixed ``seed``).
    """
    label_key = label_key or label_key_of(adata)
    if label_key is None or label_key not in adata.obs.columns:
        raise MissingDataError(
            'integration metrics need known labels in obs["reference_label"] '
            '(--label-key) or obs["true_population"] (generated data)'
        )
    if batch_key not in adata.obs.columns:
        batch_key = "sample"
    if batch_key not in adata.obs.columns:
        raise MissingDataError('integration metrics need obs["sample"] or obs["batch"]')
    bases = [b for b in ("X_pca", integrated_basis(adata)) if b is not None and b in adata.obsm]
    if not bases:
        raise MissingDataError('integration metrics need obsm["X_pca"] or obsm["X_scVI"]')

    keep = adata.obs[label_key].notna().to_numpy()
    idx = np.flatnonzero(keep)
    rng = np.random.default_rng(seed)
    if len(idx) > max_cells:
        idx = np.sort(rng.choice(idx, size=max_cells, replace=False))
    labels = adata.obs[label_key].astype(str).to_numpy()[idx]
    batch = adata.obs[batch_key].astype(str).to_numpy()[idx]

    rows = {}
    for basis in bases:
        emb = np.asarray(adata.obsm[basis])[idx].astype(np.float64)
        if basis == "X_pca" and emb.shape[1] > 50:
            emb = emb[:, :50]
        row = _embedding_metrics(emb, labels, batch, k=n_neighbors, seed=seed)
        if basis != "X_pca" and "leiden" in adata.obs.columns:
            from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

            lei = adata.obs["leiden"].astype(str).to_numpy()[idx]
            row["ari_leiden"] = float(adjusted_rand_score(labels, lei))
            row["nmi_leiden"] = float(normalized_mutual_info_score(labels, lei))
        else:
            row["ari_leiden"] = row["nmi_leiden"] = np.nan
        row["n_cells"] = float(len(idx))
        name = "unintegrated (X_pca)" if basis == "X_pca" else f"integrated ({basis})"
        rows[name] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df = df[[*BATCH_METRICS, *BIO_METRICS, "n_cells"]]
    df.index.name = "embedding"
    return df
