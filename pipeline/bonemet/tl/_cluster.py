"""Neighbours on the integrated latent space, leiden at several resolutions, UMAP."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .._errors import InputError
from .._logging import logger
from .._meta import bonemet_uns

__all__ = ["cluster"]

_REP_ORDER = ("X_scVI", "X_harmony", "X_pca")
_UNINTEGRATED_KEY = "neighbors_unintegrated"


def _res_key(res: float) -> str:
    """``leiden_<res>`` with the resolution as a float (1 -> ``leiden_1.0``)."""
    return f"leiden_{float(res)}"


@contextlib.contextmanager
def _umap_warnings() -> Iterator[None]:
    """Well-separated populations give a disconnected kNN graph; UMAP's spectral start then
    warns (sklearn) although UMAP handles it (it embeds the components separately)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        yield


def _default_rep(adata: ad.AnnData) -> str:
    integ = bonemet_uns(adata, create=False).get("integrate", {})
    rep = integ.get("use_rep") if isinstance(integ, dict) else None
    if rep and rep in adata.obsm:
        return str(rep)
    for rep in _REP_ORDER:
        if rep in adata.obsm:
            return rep
    raise InputError(
        "no integrated representation found (obsm has none of X_scVI, X_harmony, X_pca); "
        "run integrate first or pass use_rep"
    )


def cluster(
    adata: ad.AnnData,
    *,
    use_rep: str | None = None,
    n_neighbors: int = 15,
    resolution: float = 1.0,
    resolutions: Sequence[float] = (0.5, 1.0),
    umap_min_dist: float = 0.3,
    unintegrated_cells: int = 10000,
    seed: int = 0,
    copy: bool = False,
) -> ad.AnnData | None:
    """Cluster cells on the integrated space and embed them with UMAP.

    Builds the k-nearest-neighbour graph on ``use_rep`` (scanpy, pynndescent for large data),
    runs leiden (igraph flavour, 2 iterations, undirected) at every resolution and computes a
    UMAP. A second neighbour graph on ``X_pca`` of at most ``unintegrated_cells`` cells (a
    seeded sample; the main graph is kept) gives the before-integration UMAP for the report.

    Parameters
    ----------
    adata
        AnnData after :func:`~bonemet.tl.integrate`.
    use_rep
        ``obsm`` key to cluster on. Default: ``uns["bonemet"]["integrate"]["use_rep"]``, else
        the first of ``X_scVI``, ``X_harmony``, ``X_pca`` present.
    n_neighbors
        Neighbours per cell.
    resolution
        Main leiden resolution, written to ``obs["leiden"]`` (also computed when missing from
        ``resolutions``).
    resolutions
        Every resolution to compute (``obs["leiden_<res>"]``).
    umap_min_dist
        UMAP ``min_dist``.
    unintegrated_cells
        Cells in the before-integration UMAP (a seeded random sample when there are more;
        the others get NaN coordinates); ``0`` leaves it out.
    seed
        Random state of neighbours, leiden and UMAP.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` (or the copy). Writes ``obs["leiden"]``, ``obs["leiden_<res>"]`` (categoricals
    of cluster ids), ``obsm["X_umap"]``, ``obsm["X_umap_unintegrated"]`` (when ``X_pca``
    exists and ``unintegrated_cells`` > 0; NaN for cells outside the sample), scanpy's ``obsp["distances"]``/``obsp["connectivities"]`` and
    ``uns["neighbors"]``, ``uns["bonemet"]["cluster"]`` (use_rep, resolutions, n_clusters).
    """
    import scanpy as sc

    if copy:
        adata = adata.copy()
    if adata.n_obs < 3:
        raise InputError(f"clustering needs at least 3 cells, got {adata.n_obs}")
    rep = use_rep or _default_rep(adata)
    if rep not in adata.obsm:
        raise InputError(
            f"use_rep {rep!r} is not in obsm (have: {', '.join(adata.obsm) or 'none'})"
        )
    k = int(max(2, min(n_neighbors, adata.n_obs - 1)))
    res_list = [float(r) for r in resolutions]
    if float(resolution) not in res_list:
        res_list.append(float(resolution))

    sc.pp.neighbors(adata, n_neighbors=k, use_rep=rep, random_state=seed)
    n_clusters: dict[str, int] = {}
    for res in res_list:
        key = _res_key(res)
        sc.tl.leiden(
            adata,
            resolution=res,
            key_added=key,
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=seed,
        )
        n_clusters[key] = int(adata.obs[key].nunique())
        logger.info("leiden at resolution %g: %d clusters", res, n_clusters[key])
    main = _res_key(resolution)
    adata.obs["leiden"] = adata.obs[main].copy()
    with _umap_warnings():
        sc.tl.umap(adata, min_dist=umap_min_dist, random_state=seed)
    adata.uns.pop("umap", None)

    n_unintegrated = 0
    if "X_pca" in adata.obsm and unintegrated_cells > 0:
        n_unintegrated = min(adata.n_obs, int(unintegrated_cells))
        if rep == "X_pca" and n_unintegrated == adata.n_obs:
            adata.obsm["X_umap_unintegrated"] = adata.obsm["X_umap"].copy()
        else:
            # a separate, lean object: the main graph in adata stays the integrated one
            cells = np.arange(adata.n_obs)
            if n_unintegrated < adata.n_obs:
                rng = np.random.default_rng(seed)
                cells = np.sort(rng.choice(adata.n_obs, n_unintegrated, replace=False))
            lean = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names[cells].copy()))
            lean.obsm["X_pca"] = np.asarray(adata.obsm["X_pca"])[cells]
            k_lean = int(max(2, min(n_neighbors, len(cells) - 1)))
            sc.pp.neighbors(
                lean,
                n_neighbors=k_lean,
                use_rep="X_pca",
                random_state=seed,
                key_added=_UNINTEGRATED_KEY,
            )
            with _umap_warnings():
                sc.tl.umap(
                    lean,
                    min_dist=umap_min_dist,
                    random_state=seed,
                    neighbors_key=_UNINTEGRATED_KEY,
                )
            umap = np.full((adata.n_obs, 2), np.nan, dtype=np.float32)
            umap[cells] = np.asarray(lean.obsm["X_umap"], dtype=np.float32)
            adata.obsm["X_umap_unintegrated"] = umap
    elif "X_umap_unintegrated" in adata.obsm:
        del adata.obsm["X_umap_unintegrated"]  # from an earlier run with other settings

    bonemet_uns(adata)["cluster"] = {
        "use_rep": rep,
        "n_neighbors": k,
        "resolution": float(resolution),
        "resolutions": np.asarray(res_list, dtype=float),
        "n_clusters": n_clusters,
        "unintegrated_umap_cells": n_unintegrated,
    }
    return adata if copy else None
