"""Normalisation (log1p CP10k) and batch-aware highly variable genes."""

from __future__ import annotations

import warnings
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import StageError
from .._logging import logger
from .._meta import warnings_of

__all__ = ["normalize"]


_MIN_CELLS_LOESS = 10
_MIN_GENES_LOESS = 10


def _loess_problem(x: sp.csr_matrix, batches: np.ndarray | None) -> str:
    """Why seurat_v3's per-batch loess cannot run here ("" when it can).

    skmisc's loess crashes the interpreter (segfault) on a batch whose genes all have zero
    variance (e.g. one cell), so tiny batches are caught before it runs.
    """
    groups = (
        [np.arange(x.shape[0])]
        if batches is None
        else [np.flatnonzero(batches == b) for b in pd.unique(batches)]
    )
    for idx in groups:
        label = "the data" if batches is None else f"batch {batches[idx[0]]!r}"
        if idx.size < _MIN_CELLS_LOESS:
            return f"{label} has {idx.size} cells (< {_MIN_CELLS_LOESS})"
        sub = x[idx]
        mean = np.asarray(sub.mean(axis=0)).ravel()
        sq = np.asarray(sub.multiply(sub).mean(axis=0)).ravel()
        n_var = int(np.sum(sq - mean**2 > 1e-12))
        if n_var < _MIN_GENES_LOESS:
            return f"{label} has {n_var} genes with non-zero variance (< {_MIN_GENES_LOESS})"
    return ""


def _hvg(
    adata: ad.AnnData,
    *,
    n_top_genes: int,
    flavor: str,
    batch_key: str | None,
    layer: str | None,
) -> tuple[str, str | None, list[str]]:
    """Run scanpy's HVG with fall-backs; return (flavor used, batch key used, notes)."""
    import scanpy as sc

    notes: list[str] = []
    attempts: list[tuple[str, str | None, str | None]] = [(flavor, batch_key, layer)]
    if batch_key is not None:
        attempts.append((flavor, None, layer))
    if flavor != "seurat":
        attempts.append(("seurat", batch_key, None))
        if batch_key is not None:
            attempts.append(("seurat", None, None))
    last: Exception | None = None
    for fl, bk, ly in attempts:
        if fl.startswith("seurat_v3"):
            x = adata.layers[ly] if ly else adata.X
            batches = adata.obs[bk].astype(str).to_numpy() if bk else None
            problem = _loess_problem(sp.csr_matrix(x), batches)
            if problem:
                last = ValueError(f"{problem}: too small for the loess fit")
                logger.info("HVG flavor=%s batch_key=%s skipped: %s", fl, bk, problem)
                continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sc.pp.highly_variable_genes(
                    adata,
                    n_top_genes=int(min(n_top_genes, adata.n_vars)),
                    flavor=fl,
                    batch_key=bk,
                    layer=ly,
                    subset=False,
                )
            if (fl, bk) != (flavor, batch_key):
                notes.append(
                    f"HVG with flavor={flavor!r}, batch_key={batch_key!r} failed "
                    f"({type(last).__name__}: {' '.join(str(last).split())[:120]}); used flavor={fl!r}, "
                    f"batch_key={bk!r}"
                )
            return fl, bk, notes
        except Exception as e:  # noqa: BLE001 - fall back to a simpler HVG method
            last = e
            logger.info("HVG flavor=%s batch_key=%s failed: %s", fl, bk, e)
    raise StageError(
        f"highly variable gene selection failed on {adata.n_obs} cells x {adata.n_vars} genes "
        f"({type(last).__name__}: {' '.join(str(last).split())[:200]}): check that the data hold "
        "enough cells and expressed genes"
    )


def normalize(
    adata: ad.AnnData,
    *,
    target_sum: float = 1e4,
    n_top_genes: int = 2000,
    flavor: str = "seurat_v3",
    batch_key: str | None = "sample",
    min_cells: int = 3,
    copy: bool = False,
) -> ad.AnnData | None:
    """Store raw counts, log-normalise and select batch-aware highly variable genes.

    Parameters
    ----------
    adata
        Merged samples with raw counts in ``X`` (or in ``layers["counts"]`` when re-run).
    target_sum
        Counts per cell after scaling (CP10k by default) before ``log1p``.
    n_top_genes
        Number of highly variable genes (capped at the number of genes).
    flavor
        scanpy HVG flavor; ``"seurat_v3"`` runs on the counts layer. Falls back to no batch key,
        then to ``"seurat"`` on ``X``, when a batch is too small for it (recorded in warnings).
    batch_key
        obs column for batch-aware HVG, used when it has more than one value.
    min_cells
        Genes detected in fewer cells are removed first.
    copy
        Return a copy instead of working in place.

    Returns
    -------
    ``None`` or the AnnData with ``layers["counts"]`` (raw counts, CSR), ``X`` = log1p(CP10k),
    ``var["highly_variable"]`` (+ scanpy's HVG columns), ``var["n_cells"]`` and
    ``uns["bonemet"]["parameters"]["normalize"]``. If ``uns["bonemet"]["is_counts"]`` is False
    (log-normalised input), count-based steps are skipped: ``X`` is kept, HVG use
    ``flavor="seurat"`` on ``X``, no ``layers["counts"]``, and a warning is recorded.
    """
    import scanpy as sc

    from .._counts import check_counts

    if copy:
        adata = adata.copy()
    bm = adata.uns.setdefault("bonemet", {})
    warn: list[str] = warnings_of(adata)  # a list again after an h5ad round trip
    bm["warnings"] = warn
    is_counts = bm.get("is_counts")
    source = "X"
    if is_counts is None:
        is_counts = check_counts(adata.X)[0]
    if is_counts and not check_counts(adata.X)[0] and "counts" in adata.layers:
        source = "layers['counts']"  # re-run on normalised data: start again from the counts
        adata.X = adata.layers["counts"].copy()
    is_counts = bool(is_counts)
    bm["is_counts"] = is_counts
    if adata.n_obs == 0:
        raise StageError(
            "cannot normalise an AnnData with no cells: every sample lost its cells in QC"
        )
    if not sp.issparse(adata.X):
        adata.X = sp.csr_matrix(np.asarray(adata.X))
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)

    n_cells = np.asarray((adata.X > 0).sum(axis=0)).ravel()
    keep = n_cells >= int(min_cells)
    if not keep.any():
        raise StageError(
            f"no gene is detected in at least {min_cells} cells ({adata.n_obs} cells): lower "
            "normalize min_cells or check the input"
        )
    n_removed = int((~keep).sum())
    if n_removed:
        adata._inplace_subset_var(keep)  # rebuilds uns: fetch the bookkeeping dicts again
        n_cells = n_cells[keep]
        bm = adata.uns.setdefault("bonemet", {})
        warn = bm["warnings"] = warnings_of(adata)
    adata.var["n_cells"] = n_cells.astype(np.int64)

    bk = (
        batch_key
        if batch_key and batch_key in adata.obs and adata.obs[batch_key].nunique() > 1
        else None
    )
    if batch_key and batch_key not in adata.obs:
        warn.append(f"normalize: batch_key {batch_key!r} is not an obs column; HVG without batches")
    for k in ("highly_variable", "highly_variable_rank", "highly_variable_nbatches",
              "highly_variable_intersection", "means", "variances", "variances_norm",
              "dispersions", "dispersions_norm"):  # fmt: skip
        if k in adata.var:
            del adata.var[k]
    params: dict[str, Any] = {
        "target_sum": float(target_sum),
        "n_top_genes": int(n_top_genes),
        "flavor": str(flavor),
        "batch_key": str(batch_key) if batch_key else "",
        "min_cells": int(min_cells),
        "n_genes_removed_min_cells": n_removed,
        "counts_source": source,
    }
    if is_counts:
        adata.layers["counts"] = adata.X.copy()
        sc.pp.normalize_total(adata, target_sum=float(target_sum))
        sc.pp.log1p(adata)
        layer = "counts" if flavor == "seurat_v3" or flavor == "seurat_v3_paper" else None
        used, used_bk, notes = _hvg(
            adata, n_top_genes=n_top_genes, flavor=flavor, batch_key=bk, layer=layer
        )
    else:
        msg = (
            "normalize: input is not raw counts; kept X as given (assumed log-normalised), "
            "no layers['counts'], HVG with flavor='seurat' on X"
        )
        if msg not in warn:
            warn.append(msg)
        logger.warning(msg)
        used, used_bk, notes = _hvg(
            adata, n_top_genes=n_top_genes, flavor="seurat", batch_key=bk, layer=None
        )
    for n in notes:
        warn.append(f"normalize: {n}")
        logger.warning(n)
    adata.var["highly_variable"] = adata.var["highly_variable"].astype(bool)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    params.update(
        {
            "hvg_flavor_used": used,
            "hvg_batch_key_used": used_bk or "",
            "n_highly_variable": int(adata.var["highly_variable"].sum()),
            "is_counts": is_counts,
        }
    )
    bm.setdefault("parameters", {})["normalize"] = params
    logger.info(
        "normalised %d cells; %d HVG (%s%s)",
        adata.n_obs,
        params["n_highly_variable"],
        used,
        f", batch_key={used_bk}" if used_bk else "",
    )
    return adata if copy else None
