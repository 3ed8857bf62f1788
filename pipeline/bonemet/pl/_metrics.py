"""Integration metrics: batch correction and biological conservation.

Two backends compute them on one random subsample of the labelled cells (``max_cells``,
fixed seed; the table's ``n_cells`` column says how many were used and its
``metrics_backend`` column which backend):

``scib-metrics`` (the ``metrics`` extra; used whenever it imports)
    :class:`scib_metrics.benchmark.Benchmarker`, raw scores
    (``get_results(min_max_scale=False)``, so the values do not depend on which embeddings
    are compared), exact neighbours (scikit-learn). Batch correction: ``ilisi``,
    ``graph_connectivity``, ``pcr_comparison`` (0 for ``X_pca`` itself, the
    pre-integration reference), and with ``preset="full"`` (scib-metrics' default set)
    also ``bras`` (batch-removal ASW) and ``kbet`` (per label); the report uses
    ``preset="fast"``, without those two, for run time. Bio conservation (both presets):
    ``isolated_labels``, ``nmi_kmeans``, ``ari_kmeans``, ``silhouette_label``, ``clisi``.
    The aggregates are scib's:
    ``batch_correction`` and ``bio_conservation`` are the means of their metrics and
    ``total = 0.4 * batch_correction + 0.6 * bio_conservation`` (Luecken et al. 2022,
    Nat Methods 19:41). With one batch the batch metrics and ``total`` are NaN.
``sklearn-fallback`` (scib-metrics absent, or fewer labelled cells than its 90-neighbour
graph needs)
    A lightweight set in the scib definitions, each scaled to 0..1, higher is better:

    ``silhouette_label``
        Cell-type ASW: ``(silhouette(embedding, labels) + 1) / 2``. Bio conservation.
    ``silhouette_batch``
        Batch ASW: per label, ``mean(1 - |silhouette(embedding, batch)|)`` over that
        label's cells, then averaged over labels. Batch correction.
    ``knn_batch_entropy``
        iLISI-like: for each cell, the entropy of the batch composition of its k nearest
        neighbours divided by ``log(n_batches)``; averaged. Batch correction.
    ``ari_kmeans`` / ``nmi_kmeans``
        Agreement of a k-means clustering (k = number of labels) with the labels. Bio
        conservation.

    ``batch_correction`` is the mean of the two batch metrics, ``bio_conservation`` the
    mean of the three bio metrics and ``total`` weighs them 0.4/0.6 as scib does; the
    values are not comparable with scib-metrics' scores, only between embeddings.

Both backends add ``ari_leiden`` / ``nmi_leiden``: agreement of ``obs["leiden"]`` with the
labels (integrated embedding only, since leiden was computed on it; not part of the
aggregates). Results are cached by the content of the subsample, so the report's table
and figure of one run compute them once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._errors import ConfigError, InputError
from .._logging import logger
from ._common import MissingDataError

__all__ = [
    "metrics_backend_default",
    "integration_metrics_table",
    "label_key_of",
    "integrated_basis",
    "metrics_backend",
]

#: Batch-correction metric columns of either backend (scib-metrics first).
BATCH_METRICS = (
    "bras",
    "ilisi",
    "kbet",
    "graph_connectivity",
    "pcr_comparison",
    "silhouette_batch",
    "knn_batch_entropy",
)
#: Bio-conservation metric columns of either backend.
BIO_METRICS = (
    "isolated_labels",
    "clisi",
    "silhouette_label",
    "ari_kmeans",
    "nmi_kmeans",
    "ari_leiden",
    "nmi_leiden",
)
#: The aggregate scores, in both backends.
SCORE_COLUMNS = ("batch_correction", "bio_conservation", "total")
SCIB = "scib-metrics"
FALLBACK = "sklearn-fallback"
#: Subsample size of the report's table (see the README for its measured run time).
DEFAULT_MAX_CELLS = 5000

# scib-metrics' raw metric names -> the table's columns
_SCIB_COLUMNS = {
    "isolated_labels": "isolated_labels",
    "nmi_ari_cluster_labels_kmeans_nmi": "nmi_kmeans",
    "nmi_ari_cluster_labels_kmeans_ari": "ari_kmeans",
    "silhouette_label": "silhouette_label",
    "clisi_knn": "clisi",
    "bras": "bras",
    "ilisi_knn": "ilisi",
    "kbet_per_label": "kbet",
    "graph_connectivity": "graph_connectivity",
    "pcr_comparison": "pcr_comparison",
    "Batch correction": "batch_correction",
    "Bio conservation": "bio_conservation",
    "Total": "total",
}
# the "fast" preset: scib-metrics' default set without its two per-label batch metrics
_PER_LABEL_OFF = {"kbet_per_label": False, "bras": False}
_SCIB_MIN_CELLS = 91  # the Benchmarker builds a 90-neighbour graph
_CACHE: OrderedDict[str, pd.DataFrame] = OrderedDict()
_CACHE_SIZE = 4


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


def _import_benchmarker() -> Any:
    with warnings.catch_warnings():
        # umap (imported by scib-metrics) warns at import when TensorFlow is absent
        warnings.filterwarnings("ignore", message=".*Tensorflow not installed.*")
        from scib_metrics.benchmark import Benchmarker

    return Benchmarker


_DEFAULT_BACKEND: list[str] = ["auto"]


@contextlib.contextmanager
def metrics_backend_default(backend: str) -> Iterator[None]:
    """Within the block, :func:`integration_metrics_table` called without ``backend`` uses
    ``backend`` (the report stage sets its config's ``report.integration_metrics``)."""
    if backend not in ("auto", SCIB, FALLBACK):
        raise ConfigError(f"unknown integration metrics backend {backend!r}")
    _DEFAULT_BACKEND.append(backend)
    try:
        yield
    finally:
        _DEFAULT_BACKEND.pop()


def _release_jax() -> None:
    """Drop jax's compiled kernels and return freed heap to the system after the metrics.

    The report draws its figures after the metrics table; without this they stack on the
    ~0.2 GB of executables the metrics compiled (measured on a 2k-cell run), and the
    results are cached above, so nothing is compiled again."""
    import sys

    jax = sys.modules.get("jax")
    if jax is not None:
        jax.clear_caches()
    from .._utils import release_memory

    release_memory()


def metrics_backend() -> str:
    """The backend :func:`integration_metrics_table` uses by default here.

    ``"scib-metrics"`` when scib-metrics (and jax) import, else ``"sklearn-fallback"``.
    """
    try:
        _import_benchmarker()
    except ImportError:
        return FALLBACK
    return SCIB


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


def _fallback_row(
    emb: np.ndarray, labels: np.ndarray, batch: np.ndarray, *, k: int, seed: int
) -> dict[str, float]:
    row = _embedding_metrics(emb, labels, batch, k=k, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mean of all-NaN (one batch)
        bc = float(np.nanmean([row["silhouette_batch"], row["knn_batch_entropy"]]))
        bio = float(np.nanmean([row["silhouette_label"], row["ari_kmeans"], row["nmi_kmeans"]]))
    row.update(batch_correction=bc, bio_conservation=bio, total=0.4 * bc + 0.6 * bio)
    return row


def _exact_neighbors(x: np.ndarray, n_neighbors: int, *, n_jobs: int = 1) -> Any:
    """Exact kNN (self first) for the Benchmarker, instead of its numba-compiled pynndescent."""
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    dist, idx = NearestNeighbors(n_neighbors=n_neighbors, n_jobs=n_jobs).fit(x).kneighbors(x)
    return NeighborsResults(indices=idx, distances=dist)


def _scib_rows(
    embs: dict[str, np.ndarray],
    pre: np.ndarray,
    labels: np.ndarray,
    batch: np.ndarray,
    *,
    n_jobs: int,
    preset: str,
) -> dict[str, dict[str, float]]:
    import anndata as ad

    Benchmarker = _import_benchmarker()  # first: it quiets umap's import warning
    from scib_metrics.benchmark import BatchCorrection, BioConservation

    n_batches = len(pd.unique(batch))
    a = ad.AnnData(
        obs=pd.DataFrame(
            {"batch": pd.Categorical(batch), "label": pd.Categorical(labels)},
            index=[str(i) for i in range(len(labels))],
        )
    )
    keys = []
    for i, emb in enumerate(embs.values()):
        a.obsm[f"e{i}"] = np.ascontiguousarray(emb, dtype=np.float32)
        keys.append(f"e{i}")
    a.obsm["X_pre"] = np.ascontiguousarray(pre, dtype=np.float32)
    bench = Benchmarker(
        a,
        batch_key="batch",
        label_key="label",
        embedding_obsm_keys=keys,
        bio_conservation_metrics=BioConservation(),
        batch_correction_metrics=(
            (BatchCorrection() if preset == "full" else BatchCorrection(**_PER_LABEL_OFF))
            if n_batches >= 2
            else None
        ),
        pre_integrated_embedding_obsm_key="X_pre",
        n_jobs=n_jobs,
        progress_bar=False,
    )
    bench.prepare(neighbor_computer=functools.partial(_exact_neighbors, n_jobs=n_jobs))
    with warnings.catch_warnings():
        # scib-metrics clips a negative PCR comparison (integration raised the batch's
        # share of variance) to 0 and says so; the 0 in the table is the record of it
        warnings.filterwarnings("ignore", message="PCR comparison score is negative")
        bench.benchmark()
    res = bench.get_results(min_max_scale=False, clean_names=False)
    res = res.drop(index="Metric Type", errors="ignore")
    rows: dict[str, dict[str, float]] = {}
    for key, name in zip(keys, embs):
        row = {_SCIB_COLUMNS[c]: float(v) for c, v in res.loc[key].items() if c in _SCIB_COLUMNS}
        for col in ("ilisi", "graph_connectivity", "pcr_comparison"):
            row.setdefault(col, np.nan)
        if preset == "full":
            row.setdefault("bras", np.nan)
            row.setdefault("kbet", np.nan)
        row.setdefault("batch_correction", np.nan)
        row.setdefault("total", np.nan)
        rows[name] = row
    return rows


def _fingerprint(*parts: Any) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str((p.dtype, p.shape)).encode())
            h.update(np.ascontiguousarray(p).tobytes() if p.dtype != object else repr(p).encode())
        else:
            h.update(repr(p).encode())
        h.update(b"|")
    return h.hexdigest()


def integration_metrics_table(
    adata: Any,
    *,
    label_key: str | None = None,
    batch_key: str = "batch",
    bases: Sequence[str] | None = None,
    max_cells: int = DEFAULT_MAX_CELLS,
    backend: Literal["auto", "scib-metrics", "sklearn-fallback"] | None = None,
    preset: Literal["fast", "full"] = "fast",
    n_neighbors: int = 15,
    n_jobs: int = 1,
    seed: int = 0,
) -> pd.DataFrame:
    """Batch-correction and bio-conservation metrics before and after integration.

    Returns a DataFrame (not a figure): one row per embedding (``X_pca`` =
    unintegrated, then ``X_scVI``/``X_harmony`` when present), one column per metric of
    the backend used (see the module docstring; higher is better), the aggregates
    ``batch_correction``, ``bio_conservation`` and ``total``, ``n_cells`` (the subsample
    size) and ``metrics_backend`` (``"scib-metrics"`` or ``"sklearn-fallback"``).

    Parameters
    ----------
    adata
        Needs ``obsm["X_pca"]`` and/or an integrated ``obsm``, labels in
        ``obs[label_key]`` (default ``reference_label``, else ``true_population``) and
        the batch in ``obs[batch_key]`` (falls back to ``obs["sample"]``).
    label_key
        Obs column of the known labels; cells without a label are left out.
    batch_key
        Obs column of the batch.
    bases
        Obsm keys to score, in row order; default ``X_pca`` and :func:`integrated_basis`.
        ``X_pca`` (its first 50 components) is the pre-integration reference of
        scib-metrics' ``pcr_comparison``; without it the first basis is.
    max_cells
        Cells are subsampled to at most this many (fixed ``seed``).
    backend
        ``None``: the default (``"auto"``, or what :func:`metrics_backend_default` set).
        ``"auto"``: scib-metrics when it imports and the subsample has more than 90
        cells and two labels, else the sklearn fallback (logged). Naming a backend
        forces it (an error if scib-metrics is not installed).
    preset
        scib-metrics' metric set: ``"full"`` is its default set; ``"fast"`` (the report's)
        leaves out ``kbet`` and ``bras``, the two metrics computed per label, for which jax
        compiles a kernel per label size: on the demo (27 labels, 5,000 cells) the full set
        took 147 s of CPU, the fast one 45 s (README, Integration metrics).
    n_neighbors
        k of the fallback's kNN batch entropy.
    n_jobs
        Threads of the exact neighbour search that feeds scib-metrics' graph metrics.
    seed
        Seed of the subsample and of k-means.

    Returns
    -------
    The metrics table, index ``embedding`` (``"unintegrated (X_pca)"``,
    ``"integrated (X_scVI)"``, or ``"<key>"`` for other ``bases``).
    """
    backend = backend or _DEFAULT_BACKEND[-1]
    if backend not in ("auto", SCIB, FALLBACK):
        raise InputError(
            f"integration metrics backend {backend!r} is unknown: use 'auto', "
            f"'{SCIB}' or '{FALLBACK}'"
        )
    if preset not in ("fast", "full"):
        raise InputError(f"integration metrics preset {preset!r} is unknown: use 'fast' or 'full'")
    if max_cells < 2:
        raise InputError(f"integration metrics max_cells must be at least 2, got {max_cells}")
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
    if bases is None:
        bases = [b for b in ("X_pca", integrated_basis(adata)) if b is not None]
    bases = [b for b in bases if b in adata.obsm]
    if not bases:
        raise MissingDataError('integration metrics need obsm["X_pca"] or obsm["X_scVI"]')

    keep = adata.obs[label_key].notna().to_numpy()
    idx = np.flatnonzero(keep)
    rng = np.random.default_rng(seed)
    if len(idx) > max_cells:
        idx = np.sort(rng.choice(idx, size=max_cells, replace=False))
    labels = adata.obs[label_key].astype(str).to_numpy()[idx]
    batch = adata.obs[batch_key].astype(str).to_numpy()[idx]
    embs: dict[str, np.ndarray] = {}
    for basis in bases:
        emb = np.asarray(adata.obsm[basis])[idx].astype(np.float64)
        if basis == "X_pca" and emb.shape[1] > 50:
            emb = emb[:, :50]
        embs[basis] = emb
    pre = embs.get("X_pca", next(iter(embs.values())))
    leiden = (
        adata.obs["leiden"].astype(str).to_numpy()[idx] if "leiden" in adata.obs.columns else None
    )

    use = backend
    if backend == "auto":
        use = metrics_backend()
        if use == SCIB and (len(idx) < _SCIB_MIN_CELLS or len(pd.unique(labels)) < 2):
            logger.info(
                "integration metrics: %d labelled cells, %d labels; scib-metrics needs "
                "more than 90 cells and 2 labels, using the sklearn fallback",
                len(idx),
                len(pd.unique(labels)),
            )
            use = FALLBACK
    elif backend == SCIB:
        try:
            _import_benchmarker()
        except ImportError as e:
            raise InputError(
                f"integration metrics backend 'scib-metrics' is not importable ({e}): "
                "install it with pip install 'bonemet[metrics]' or use backend 'auto'"
            ) from None

    key = _fingerprint(
        use, preset, list(embs), *embs.values(), labels, batch, leiden, n_neighbors, seed
    )
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key].copy()

    if use == SCIB:
        rows = _scib_rows(embs, pre, labels, batch, n_jobs=n_jobs, preset=preset)
        _release_jax()
    else:
        rows = {
            b: _fallback_row(e, labels, batch, k=n_neighbors, seed=seed) for b, e in embs.items()
        }
    out: dict[str, dict[str, Any]] = {}
    default_bases = {"X_pca", "X_scVI", "X_harmony"}
    for basis, row in rows.items():
        if basis != "X_pca" and leiden is not None:
            from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

            row["ari_leiden"] = float(adjusted_rand_score(labels, leiden))
            row["nmi_leiden"] = float(normalized_mutual_info_score(labels, leiden))
        else:
            row["ari_leiden"] = row["nmi_leiden"] = np.nan
        if basis == "X_pca":
            name = "unintegrated (X_pca)"
        elif basis in default_bases:
            name = f"integrated ({basis})"
        else:
            name = basis
        out[name] = {**row, "n_cells": float(len(idx)), "metrics_backend": use}
    df = pd.DataFrame.from_dict(out, orient="index")
    cols = [c for c in (*BATCH_METRICS, *BIO_METRICS) if c in df.columns]
    df = df[[*cols, *SCORE_COLUMNS, "n_cells", "metrics_backend"]]
    df.index.name = "embedding"
    _CACHE[key] = df.copy()
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return df
