"""The review's axes per sample, from population labels and log-normalised expression."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._signatures import match_genes
from .._vocab import (
    CHI3L3_NEUTROPHIL,
    IRON_MACROPHAGE,
    MACROPHAGE_POPULATIONS,
    MYELOID_POPULATIONS,
    NEUTROPHIL_POPULATIONS,
    TPEX,
    TUMOUR,
)
from ._score import _candidates, _check_lognorm, _matrix, _obs_str

__all__ = ["axes_table"]


# --------------------------------------------------------------------------------------
# the review's axes
# --------------------------------------------------------------------------------------
def axes_table(
    adata: AnnData,
    *,
    sample_key: str = "sample",
    layer: str | None = None,
    min_cells: int = 3,
) -> pd.DataFrame:
    """The review's axes per sample, from population labels and log-normalised expression.

    Columns (gene means are the mean of ``X`` or ``layers[layer]``, log1p CP10k, over the
    population's cells in the sample; genes are matched case-insensitively, so the mouse
    orthologues Spp1, Slc40a1, ... are found too):

    - OPN axis (Cheng 2025): ``osteoclast_SPP1`` vs ``cd8_tpex_fraction`` = cells of
      ``"CD8 Tpex (TCF1+)"`` among all populations starting with ``"CD8"``.
    - Iron axis (Han 2025): ``macrophage_SLC40A1`` (macrophages incl. the iron-recycling
      subset) vs ``tumour_TFRC``.
    - DKK1 axis (Shi 2025): ``tumour_DKK1`` vs ``chi3l3_neutrophil_fraction`` = CHI3L3+ immature
      neutrophils among neutrophil-lineage populations (immature, mature, PMN-MDSC).
    - TIGIT axis (Monteran 2024): ``cd8_TIGIT``, ``cd8_CD226`` vs ``tumour_PVR``,
      ``tumour_NECTIN2``, ``myeloid_PVR``, ``myeloid_NECTIN2`` (monocytes, macrophages, MDSC, cDC).
    - Erythroid mimicry (Han 2025): ``iron_macrophage_fraction`` (iron-recycling among all
      macrophages) vs ``tumour_erythroid_mimicry`` (mean ``obs["score_erythroid_mimicry"]``
      of tumour cells, when scored).

    ``n_cells`` and ``condition`` (when ``obs["condition"]`` exists) describe each sample.

    Each population's cell count is a column (``n_*``). A value is NaN when its population
    has fewer than ``min_cells`` cells in the sample or the gene is not in ``var_names``;
    ``note`` says which and why.
    """
    pop = _obs_str(
        adata, "population", hint="run bm.tl.annotate first (it writes obs['population'])"
    )
    samples = _obs_str(adata, sample_key, hint="set sample_key= to the obs column naming samples")
    X = _matrix(adata, layer)
    _check_lognorm(X, "adata.X" if layer is None else f"layers[{layer!r}]")
    groups = {
        "osteoclast": (pop == "Osteoclast").to_numpy(),
        "cd8": pop.str.startswith("CD8").to_numpy(),
        "cd8_tpex": (pop == TPEX).to_numpy(),
        "macrophage": pop.isin(MACROPHAGE_POPULATIONS).to_numpy(),
        "tumour": (pop == TUMOUR).to_numpy(),
        "neutrophil": pop.isin(NEUTROPHIL_POPULATIONS).to_numpy(),
        "chi3l3_neutrophil": (pop == CHI3L3_NEUTROPHIL).to_numpy(),
        "iron_macrophage": (pop == IRON_MACROPHAGE).to_numpy(),
        "myeloid": pop.isin(MYELOID_POPULATIONS).to_numpy(),
    }
    means = [
        ("osteoclast", "SPP1"),
        ("macrophage", "SLC40A1"),
        ("tumour", "TFRC"),
        ("tumour", "DKK1"),
        ("cd8", "TIGIT"),
        ("cd8", "CD226"),
        ("tumour", "PVR"),
        ("tumour", "NECTIN2"),
        ("myeloid", "PVR"),
        ("myeloid", "NECTIN2"),
    ]
    gene_col: dict[str, int | None] = {}
    axis_vars = _candidates(adata.var_names, [g for _, g in means])
    for _, g in means:
        hit, _cov = match_genes([g], axis_vars)
        gene_col[g] = int(adata.var_names.get_loc(hit[0])) if hit else None
    fractions = [
        ("cd8_tpex_fraction", "cd8_tpex", "cd8"),
        ("chi3l3_neutrophil_fraction", "chi3l3_neutrophil", "neutrophil"),
        ("iron_macrophage_fraction", "iron_macrophage", "macrophage"),
    ]
    mimicry = "score_erythroid_mimicry"
    condition = adata.obs["condition"].astype(str) if "condition" in adata.obs else None
    rows = []
    for s in sorted(samples.unique()):
        ins = (samples == s).to_numpy()
        row: dict[str, Any] = {"sample": s}
        notes: list[str] = []
        for gname, mask in groups.items():
            row[f"n_{gname}"] = int((mask & ins).sum())
        for gname, gene in means:
            col = f"{gname}_{gene}"
            n = row[f"n_{gname}"]
            j = gene_col[gene]
            if j is None:
                row[col] = np.nan
                notes.append(f"{col}: {gene} not in var_names")
            elif n < min_cells:
                row[col] = np.nan
                notes.append(f"{col}: {n} {gname} cells (< {min_cells})")
            else:
                v = X[groups[gname] & ins][:, j]
                row[col] = float(np.asarray(v.mean() if sp.issparse(v) else np.mean(v)))
        for col, num, den in fractions:
            n = row[f"n_{den}"]
            if n < min_cells:
                row[col] = np.nan
                notes.append(f"{col}: {n} {den} cells (< {min_cells})")
            else:
                row[col] = row[f"n_{num}"] / n
        tumour = groups["tumour"] & ins
        row["tumour_erythroid_mimicry"] = (
            float(adata.obs.loc[tumour, mimicry].mean())
            if mimicry in adata.obs and tumour.sum() >= min_cells
            else np.nan
        )
        row["n_cells"] = int(ins.sum())
        if condition is not None:
            row["condition"] = str(condition.to_numpy()[ins][0])
        row["note"] = "; ".join(notes)
        rows.append(row)
    order = [
        "sample",
        "osteoclast_SPP1",
        "cd8_tpex_fraction",
        "macrophage_SLC40A1",
        "tumour_TFRC",
        "tumour_DKK1",
        "chi3l3_neutrophil_fraction",
        "cd8_TIGIT",
        "cd8_CD226",
        "tumour_PVR",
        "tumour_NECTIN2",
        "myeloid_PVR",
        "myeloid_NECTIN2",
        "iron_macrophage_fraction",
        "tumour_erythroid_mimicry",
        *[f"n_{g}" for g in groups],
        "n_cells",
        *(["condition"] if condition is not None else []),
        "note",
    ]
    return pd.DataFrame(rows, columns=order)
