"""Merging per-sample AnnData objects into one."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError
from .._logging import logger
from .._meta import bonemet_uns

__all__ = ["merge"]


def _merge_uns(parts: list[ad.AnnData]) -> dict[str, Any]:
    from .._version import __version__

    out: dict[str, Any] = {
        "version": __version__,
        "inputs": {},
        "qc": {},
        "warnings": [],
        "parameters": {},
    }
    species: dict[str, str] = {}
    is_counts = True
    for a in parts:
        bm = bonemet_uns(a, create=False)
        name = _sample_names(a)
        if bm.get("species") is not None:
            species[",".join(name)] = str(bm["species"])
        if "is_counts" in bm:
            is_counts = is_counts and bool(bm["is_counts"])
        else:
            from .._counts import check_counts

            is_counts = is_counts and check_counts(a.X)[0]
        out["inputs"].update({k: dict(v) for k, v in bm.get("inputs", {}).items()})
        out["qc"].update({k: dict(v) for k, v in bm.get("qc", {}).items()})
        for w in bm.get("warnings", []):
            if str(w) not in out["warnings"]:
                out["warnings"].append(str(w))
        for stage, params in bm.get("parameters", {}).items():
            out["parameters"].setdefault(stage, dict(params))
        for k in ("timings",):
            if k in bm:
                out.setdefault(k, {}).update(dict(bm[k]))
    if len(set(species.values())) > 1:
        by = "; ".join(f"{k}: {v}" for k, v in species.items())
        raise InputError(
            f"cannot merge samples of different species ({by}): analyse each species separately"
        )
    if species:
        out["species"] = next(iter(species.values()))
    out["is_counts"] = bool(is_counts)
    return out


def _sample_names(a: ad.AnnData) -> list[str]:
    if "sample" in a.obs and a.n_obs:
        return [str(s) for s in pd.unique(a.obs["sample"].astype(str))]
    return [str(s) for s in bonemet_uns(a, create=False).get("inputs", {})] or ["?"]


def merge(adatas: Mapping[str, ad.AnnData] | Sequence[ad.AnnData]) -> ad.AnnData:
    """Concatenate per-sample AnnData objects.

    Genes are outer-joined (a gene missing in a sample counts 0 there); ``X`` stays a sparse
    CSR matrix of raw counts. Samples left empty by QC are skipped (their QC record is kept).

    Parameters
    ----------
    adatas
        ``{sample: AnnData}`` (as from :func:`bonemet.io.ingest`) or a list.

    Returns
    -------
    One AnnData with ``obs["sample"]``/``obs["batch"]`` (categorical), ``var`` columns kept from
    the first sample that has the gene (``gene_ids``; ``mito``/``hb`` filled ``False``), and
    ``uns["bonemet"]`` merged: ``inputs`` and ``qc`` of every sample, ``warnings`` (unique),
    ``species`` (must agree) and ``is_counts`` (all samples).

    Raises
    ------
    InputError
        No samples, duplicate cell names across samples, or mixed species.
    """
    parts = list(adatas.values()) if isinstance(adatas, Mapping) else list(adatas)
    if not parts:
        raise InputError("nothing to merge: give at least one sample")
    if isinstance(adatas, Mapping):
        for key, a in adatas.items():
            if "sample" not in a.obs:
                a.obs["sample"] = pd.Categorical([str(key)] * a.n_obs)
    uns = _merge_uns(parts)
    nonempty = [a for a in parts if a.n_obs > 0]
    if not nonempty:
        raise InputError(
            "every sample is empty (no cells): nothing to merge; check the QC thresholds"
        )
    names = pd.Index(np.concatenate([a.obs_names.to_numpy() for a in nonempty]))
    if not names.is_unique:
        dup = names[names.duplicated()].unique()[:5].tolist()
        raise InputError(
            f"cell names are not unique across samples (e.g. {dup}): give every sample a distinct "
            "sample id so cells are named <sample>_<barcode>"
        )
    for a in nonempty:
        if not a.var_names.is_unique:
            raise InputError(
                f"gene names of sample {_sample_names(a)} are not unique: read it with bonemet.io.read, "
                "which sums duplicate symbols"
            )
        if not sp.issparse(a.X):
            a.X = sp.csr_matrix(np.asarray(a.X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = ad.concat(nonempty, join="outer", merge="first", fill_value=0, index_unique=None)
    merged.X = sp.csr_matrix(merged.X, dtype=np.float32)
    for k in list(merged.layers.keys()):
        if sp.issparse(merged.layers[k]):
            merged.layers[k] = sp.csr_matrix(merged.layers[k])
    for col in ("mito", "hb", "highly_variable"):
        if col in merged.var:
            merged.var[col] = merged.var[col].astype("boolean").fillna(False).astype(bool)
    if "gene_ids" in merged.var:
        ids = merged.var["gene_ids"].astype(object)
        merged.var["gene_ids"] = ids.where(
            ids.notna(), pd.Series(merged.var_names, index=ids.index)
        ).astype(str)
    order = [s for a in nonempty for s in _sample_names(a)]
    merged.obs["sample"] = pd.Categorical(
        merged.obs["sample"].astype(str), categories=list(dict.fromkeys(order))
    )
    if "batch" in merged.obs:
        b = merged.obs["batch"].astype(object)
        merged.obs["batch"] = pd.Categorical(
            b.where(b.notna(), merged.obs["sample"].astype(str)).astype(str)
        )
    else:
        merged.obs["batch"] = pd.Categorical(merged.obs["sample"].astype(str))
    for col in ("condition", "reference_label"):
        if col in merged.obs:
            merged.obs[col] = pd.Categorical(
                merged.obs[col].astype(object).where(merged.obs[col].notna(), "NA").astype(str)
            )
    merged.uns = {"bonemet": uns}
    logger.info(
        "merged %d samples: %d cells x %d genes", len(nonempty), merged.n_obs, merged.n_vars
    )
    return merged
