"""The review's axes per sample, as the papers state them, each value with n cells and a 95% CI.

One row per sample × quantity (:func:`axes_table`); :func:`axes_wide` pivots the values to
one row per sample and :func:`axes_correlations` gives Spearman's rho across samples for the
pairs of :data:`AXIS_PAIRS`, always with its p-value and n.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy import stats

from .._errors import InputError
from .._signatures import match_genes
from .._vocab import (
    CD8_POPULATIONS,
    CHI3L3_NEUTROPHIL,
    IRON_MACROPHAGE,
    MACROPHAGE_POPULATIONS,
    MYELOID_POPULATIONS,
    NEUTROPHIL_POPULATIONS,
    TEX,
    TPEX,
    TUMOUR,
)
from ._score import _candidates, _check_lognorm, _matrix, _obs_str

__all__ = [
    "AXIS_PAIRS",
    "AXIS_QUANTITIES",
    "axes_table",
    "axes_wide",
    "axes_correlations",
]

#: population groups the axes read (name -> populations)
AXIS_GROUPS: dict[str, tuple[str, ...]] = {
    "Osteoclast": ("Osteoclast",),
    "Macrophage": MACROPHAGE_POPULATIONS,
    "Iron-recycling macrophage": (IRON_MACROPHAGE,),
    "Osteoblast": ("Osteoblast",),
    "Tumour epithelial": (TUMOUR,),
    "CD8 T (all states)": CD8_POPULATIONS,
    "CD8 Tpex + Tex": (TPEX, TEX),
    "Treg": ("Treg",),
    "Myeloid": MYELOID_POPULATIONS,
    "Neutrophil": NEUTROPHIL_POPULATIONS,
    "Erythroid progenitor": ("Erythroid progenitor",),
}

#: globin genes (human and mouse symbols; matched case-insensitively, absent ones ignored)
GLOBIN_GENES = ("HBB", "HBA1", "HBA2", "Hbb-bs", "Hbb-bt", "Hba-a1", "Hba-a2")


@dataclass(frozen=True)
class AxisQuantity:
    """One quantity of an axis.

    ``kind`` is ``"mean"`` (mean log1p CP10k of ``genes`` over ``group``'s cells; several
    genes: the per-cell mean over those found), ``"fraction"`` (cells of ``numerator``
    among ``group``; ``numerator="<gene>+"`` means cells with the gene detected) or
    ``"score"`` (mean of ``obs[score]`` over ``group``'s cells).
    """

    key: str
    axis: str
    kind: str
    group: str
    label: str
    genes: tuple[str, ...] = ()
    numerator: tuple[str, ...] | str = ()
    score: str = ""


_OPN, _IRON, _ANAEMIA = "OPN (Cheng 2025)", "Iron (Han 2025)", "Anaemia (Han 2025)"
_DKK1, _TIGIT = "DKK1 (Shi 2025)", "TIGIT (Monteran 2024)"

#: Every quantity :func:`axes_table` reports, in order.
AXIS_QUANTITIES: tuple[AxisQuantity, ...] = (
    # OPN: osteoclast osteopontin depletes TCF1+ progenitor-exhausted CD8 T cells
    AxisQuantity("tpex_fraction", _OPN, "fraction", "CD8 Tpex + Tex",
                 "CD8 Tpex / (Tpex + Tex)", numerator=(TPEX,)),
    AxisQuantity("osteoclast_SPP1", _OPN, "mean", "Osteoclast", "SPP1 in osteoclasts",
                 genes=("SPP1",)),
    AxisQuantity("macrophage_SPP1", _OPN, "mean", "Macrophage",
                 "SPP1 in macrophages (all)", genes=("SPP1",)),
    AxisQuantity("spp1pos_macrophage_fraction", _OPN, "fraction", "Macrophage",
                 "SPP1+ macrophages / macrophages", numerator="SPP1+"),
    AxisQuantity("osteoblast_SPP1", _OPN, "mean", "Osteoblast", "SPP1 in osteoblasts",
                 genes=("SPP1",)),
    AxisQuantity("tumour_SPP1", _OPN, "mean", "Tumour epithelial", "SPP1 in tumour cells",
                 genes=("SPP1",)),
    # iron: VCAM1+CD163+CCR3+ macrophages hand iron (ferroportin) to tumour CD71
    AxisQuantity("iron_macrophage_fraction", _IRON, "fraction", "Macrophage",
                 "Iron-recycling / macrophages", numerator=(IRON_MACROPHAGE,)),
    AxisQuantity("iron_macrophage_SLC40A1", _IRON, "mean", "Iron-recycling macrophage",
                 "SLC40A1 (ferroportin) in iron-recycling macrophages", genes=("SLC40A1",)),
    AxisQuantity("tumour_TFRC", _IRON, "mean", "Tumour epithelial",
                 "TFRC (CD71) in tumour cells", genes=("TFRC",)),
    AxisQuantity("tumour_erythroid_mimicry", _IRON, "score", "Tumour epithelial",
                 "Erythroid mimicry score in tumour cells", score="score_erythroid_mimicry"),
    # anaemia arm: iron-starved erythroblasts (TFRC up) that mature less (globins, ALAS2)
    AxisQuantity("erythroid_TFRC", _ANAEMIA, "mean", "Erythroid progenitor",
                 "TFRC in erythroid progenitors", genes=("TFRC",)),
    AxisQuantity("erythroid_globin", _ANAEMIA, "mean", "Erythroid progenitor",
                 "Globins (HBB/HBA) in erythroid progenitors", genes=GLOBIN_GENES),
    AxisQuantity("erythroid_ALAS2", _ANAEMIA, "mean", "Erythroid progenitor",
                 "ALAS2 in erythroid progenitors", genes=("ALAS2",)),
    # DKK1: tumour DKK1 -> CKAP4 on neutrophils -> CHI3L3+ immature neutrophils
    AxisQuantity("tumour_DKK1", _DKK1, "mean", "Tumour epithelial", "DKK1 in tumour cells",
                 genes=("DKK1",)),
    AxisQuantity("neutrophil_CKAP4", _DKK1, "mean", "Neutrophil",
                 "CKAP4 in neutrophils", genes=("CKAP4",)),
    AxisQuantity("chi3l3_neutrophil_fraction", _DKK1, "fraction", "Neutrophil",
                 "CHI3L3+ immature / neutrophils", numerator=(CHI3L3_NEUTROPHIL,)),
    # TIGIT on CD8 T and Treg; its ligands PVR/NECTIN2 on myeloid and tumour cells
    AxisQuantity("cd8_TIGIT", _TIGIT, "mean", "CD8 T (all states)", "TIGIT in CD8 T cells",
                 genes=("TIGIT",)),
    AxisQuantity("treg_TIGIT", _TIGIT, "mean", "Treg", "TIGIT in Tregs", genes=("TIGIT",)),
    AxisQuantity("cd8_CD226", _TIGIT, "mean", "CD8 T (all states)",
                 "CD226 (DNAM-1) in CD8 T cells", genes=("CD226",)),
    AxisQuantity("myeloid_PVR", _TIGIT, "mean", "Myeloid", "PVR in myeloid cells",
                 genes=("PVR",)),
    AxisQuantity("myeloid_NECTIN2", _TIGIT, "mean", "Myeloid", "NECTIN2 in myeloid cells",
                 genes=("NECTIN2",)),
    AxisQuantity("tumour_PVR", _TIGIT, "mean", "Tumour epithelial", "PVR in tumour cells",
                 genes=("PVR",)),
    AxisQuantity("tumour_NECTIN2", _TIGIT, "mean", "Tumour epithelial",
                 "NECTIN2 in tumour cells", genes=("NECTIN2",)),
)  # fmt: skip

#: (x key, y key, x label, y label, axis) pairs read across samples (figure and rho)
AXIS_PAIRS: tuple[tuple[str, str, str, str, str], ...] = (
    ("osteoclast_SPP1", "tpex_fraction", "SPP1 in osteoclasts (mean log1p CP10k)",
     "CD8 Tpex / (Tpex + Tex)", "OPN axis, Cheng 2025"),
    ("iron_macrophage_SLC40A1", "tumour_TFRC",
     "SLC40A1 in iron-recycling macrophages (mean log1p CP10k)",
     "TFRC in tumour cells (mean log1p CP10k)", "Iron axis, Han 2025"),
    ("iron_macrophage_fraction", "tumour_erythroid_mimicry",
     "Iron-recycling macrophages (fraction of macrophages)",
     "Erythroid mimicry in tumour (mean score, a.u.)", "Erythroid mimicry, Han 2025"),
    ("erythroid_TFRC", "erythroid_globin", "TFRC in erythroid progenitors (mean log1p CP10k)",
     "Globins in erythroid progenitors (mean log1p CP10k)", "Anaemia arm, Han 2025"),
    ("tumour_DKK1", "chi3l3_neutrophil_fraction", "DKK1 in tumour cells (mean log1p CP10k)",
     "CHI3L3+ immature neutrophils (fraction of neutrophils)", "DKK1 axis, Shi 2025"),
    ("myeloid_PVR", "cd8_TIGIT", "PVR in myeloid cells (mean log1p CP10k)",
     "TIGIT in CD8 T cells (mean log1p CP10k)", "TIGIT axis, Monteran 2024"),
    ("tumour_PVR", "treg_TIGIT", "PVR in tumour cells (mean log1p CP10k)",
     "TIGIT in Tregs (mean log1p CP10k)", "TIGIT axis (Treg), Monteran 2024"),
)  # fmt: skip

_COLUMNS = [
    "sample",
    "axis",
    "quantity",
    "label",
    "group",
    "genes",
    "statistic",
    "value",
    "ci_low",
    "ci_high",
    "n_cells",
    "note",
]


def _mean_ci(v: np.ndarray) -> tuple[float, float, float]:
    """Mean and its 95% t-interval over cells."""
    n = v.size
    m = float(v.mean())
    if n < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))
    # expression and most scores here cannot go below their minimum: clip the lower bound
    return m, max(m - half, float(v.min())) if v.min() >= 0 else m - half, m + half


def _wilson(k: int, n: int) -> tuple[float, float, float]:
    """Proportion and its 95% Wilson score interval."""
    p = k / n
    z = 1.959963984540054
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return p, max(0.0, centre - half), min(1.0, centre + half)


def _dense_cols(X: Any, rows: np.ndarray, cols: list[int]) -> np.ndarray:
    sub = X[rows][:, cols]
    return np.asarray(sub.toarray() if sp.issparse(sub) else sub, dtype=np.float64)


def axes_table(
    adata: AnnData,
    *,
    sample_key: str = "sample",
    layer: str | None = None,
    min_cells: int = 20,
) -> pd.DataFrame:
    """The review's axes per sample, as the papers state them (:data:`AXIS_QUANTITIES`).

    - OPN (Cheng 2025): ``tpex_fraction`` = Tpex / (Tpex + Tex); SPP1 from every source
      reported separately: osteoclasts, macrophages (with ``spp1pos_macrophage_fraction``,
      the SPP1-detected macrophages), osteoblasts, tumour cells.
    - Iron (Han 2025): SLC40A1 on the VCAM1+CD163+CCR3+ iron-recycling subset (not all
      macrophages), the subset's fraction of macrophages, TFRC on tumour cells, tumour
      erythroid mimicry (mean ``obs["score_erythroid_mimicry"]``, when scored).
    - Anaemia arm (Han 2025): TFRC, globins (HBB/HBA; mouse Hbb-bs/bt, Hba-a1/a2) and ALAS2
      in erythroid progenitors (iron starvation raises TFRC; maturation raises globins).
    - DKK1 (Shi 2025): tumour DKK1, CKAP4 on neutrophils, CHI3L3+ immature neutrophils
      among neutrophils.
    - TIGIT (Monteran 2024): TIGIT on CD8 T cells (every CD8 state) and on Tregs, CD226 on
      CD8 T; PVR and NECTIN2 on myeloid cells (monocytes, macrophages, MDSC, cDC) and on
      tumour cells.

    Parameters
    ----------
    adata
        Annotated data (``obs["population"]``, ``obs[sample_key]``), log-normalised ``X``.
    sample_key
        The obs column naming samples.
    layer
        A log-normalised layer to use instead of ``X``.
    min_cells
        Fewer cells of the group in a sample: the value is NaN and ``note`` says so.

    Returns
    -------
    Long table, one row per sample × quantity: ``sample``, ``axis``, ``quantity`` (key),
    ``label``, ``group`` (the cells averaged or the denominator), ``genes`` (those found),
    ``statistic`` (``mean log1p CP10k``, ``fraction`` or ``mean score``), ``value``,
    ``ci_low``/``ci_high`` (95%: t-interval over cells for means, Wilson for fractions),
    ``n_cells`` (cells of ``group``) and ``note``; ``condition`` when ``obs["condition"]``
    exists. Genes are matched case-insensitively (mouse orthologues too).
    """
    if min_cells < 1:
        raise InputError(f"min_cells must be >= 1, not {min_cells!r}")
    pop = _obs_str(
        adata, "population", hint="run bm.tl.annotate first (it writes obs['population'])"
    ).to_numpy()
    samples = _obs_str(
        adata, sample_key, hint="set sample_key= to the obs column naming samples"
    ).to_numpy()
    X = _matrix(adata, layer)
    _check_lognorm(X, "adata.X" if layer is None else f"layers[{layer!r}]")
    masks = {g: np.isin(pop, list(p)) for g, p in AXIS_GROUPS.items()}
    wanted = sorted({g for q in AXIS_QUANTITIES for g in q.genes} | {"SPP1"})
    cand = _candidates(adata.var_names, wanted)
    col: dict[str, int] = {}
    for g in wanted:
        hit, _cov = match_genes([g], cand)
        if hit:
            col[g] = int(adata.var_names.get_loc(hit[0]))
    condition = adata.obs["condition"].astype(str).to_numpy() if "condition" in adata.obs else None
    rows: list[dict[str, Any]] = []
    for s in sorted(set(samples)):
        ins = samples == s
        for q in AXIS_QUANTITIES:
            cells = np.flatnonzero(masks[q.group] & ins)
            n = int(cells.size)
            found = [adata.var_names[col[g]] for g in q.genes if g in col]
            row: dict[str, Any] = {
                "sample": s,
                "axis": q.axis,
                "quantity": q.key,
                "label": q.label,
                "group": q.group,
                "genes": ", ".join(map(str, dict.fromkeys(found))),
                "statistic": {"mean": "mean log1p CP10k", "fraction": "fraction"}.get(
                    q.kind, "mean score"
                ),
                "value": np.nan,
                "ci_low": np.nan,
                "ci_high": np.nan,
                "n_cells": n,
                "note": "",
            }
            if q.kind == "mean" and not found:
                row["note"] = f"{'/'.join(q.genes[:3])} not in var_names"
            elif q.kind == "score" and q.score not in adata.obs:
                row["note"] = f"obs[{q.score!r}] absent (run bm.tl.score)"
            elif q.kind == "fraction" and q.numerator == "SPP1+" and "SPP1" not in col:
                row["note"] = "SPP1 not in var_names"
            elif n < min_cells:
                row["note"] = f"{n} {q.group} cells (< {min_cells})"
            elif q.kind == "mean":
                idx = sorted({col[g] for g in q.genes if g in col})
                v = _dense_cols(X, cells, idx).mean(axis=1)
                row["value"], row["ci_low"], row["ci_high"] = _mean_ci(v)
            elif q.kind == "score":
                v = pd.to_numeric(adata.obs[q.score], errors="coerce").to_numpy(np.float64)[cells]
                v = v[np.isfinite(v)]
                row["value"], row["ci_low"], row["ci_high"] = _mean_ci(v)
            else:
                if q.numerator == "SPP1+":
                    k = int((_dense_cols(X, cells, [col["SPP1"]])[:, 0] > 0).sum())
                else:
                    k = int(np.isin(pop[cells], list(q.numerator)).sum())
                row["value"], row["ci_low"], row["ci_high"] = _wilson(k, n)
            if condition is not None:
                row["condition"] = str(condition[ins][0])
            rows.append(row)
    cols = _COLUMNS[:1] + (["condition"] if condition is not None else []) + _COLUMNS[1:]
    return pd.DataFrame(rows, columns=cols)


def axes_wide(table: pd.DataFrame, *, values: str = "value") -> pd.DataFrame:
    """One row per sample (index), one column per quantity (``values``: value, ci_low, ...),
    plus ``condition`` when the table has it."""
    wide = table.pivot(index="sample", columns="quantity", values=values)
    order = [q.key for q in AXIS_QUANTITIES if q.key in wide.columns]
    wide = wide[order + [c for c in wide.columns if c not in order]]
    wide.columns.name = None
    if "condition" in table.columns:
        wide["condition"] = table.groupby("sample")["condition"].first()
    return wide


def _spearman_exact(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman rho with an exact two-sided permutation p (n <= 8)."""
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rho = float(np.corrcoef(rx, ry)[0, 1])
    perms = np.array(list(itertools.permutations(ry)))
    rx_c = rx - rx.mean()
    pc = perms - perms.mean(axis=1, keepdims=True)
    r = (pc @ rx_c) / (np.sqrt((pc**2).sum(axis=1)) * np.sqrt((rx_c**2).sum()))
    p = float(np.mean(np.abs(r) >= abs(rho) - 1e-12))
    return rho, p


def axes_correlations(
    table: pd.DataFrame,
    *,
    pairs: Sequence[tuple[str, str, str, str, str]] = AXIS_PAIRS,
    min_samples: int = 3,
) -> pd.DataFrame:
    """Spearman's rho across samples for each pair of quantities, with its p and n.

    A pair is read over the samples where both values are defined. With fewer than
    ``min_samples`` samples (or a constant quantity) rho and p are NaN and ``note`` says
    why. The p-value is exact (all permutations) for up to 8 samples, else scipy's
    t-approximation; it is two-sided.

    Returns
    -------
    ``axis, x, y, n_samples, rho, p, method, note``.
    """
    wide = axes_wide(table) if "quantity" in table.columns else table
    out = []
    for xk, yk, _xl, _yl, axis in pairs:
        row: dict[str, Any] = {"axis": axis, "x": xk, "y": yk, "n_samples": 0, "rho": np.nan,
                               "p": np.nan, "method": "", "note": ""}  # fmt: skip
        if xk not in wide.columns or yk not in wide.columns:
            row["note"] = "quantity absent"
            out.append(row)
            continue
        sub = wide[[xk, yk]].apply(pd.to_numeric, errors="coerce").dropna()
        n = len(sub)
        row["n_samples"] = n
        x, y = sub[xk].to_numpy(), sub[yk].to_numpy()
        if n < min_samples:
            row["note"] = f"{n} samples with both values (< {min_samples})"
        elif np.ptp(x) == 0 or np.ptp(y) == 0:
            row["note"] = "a quantity is constant across samples"
        elif n <= 8:
            row["rho"], row["p"] = _spearman_exact(x, y)
            row["method"] = "Spearman, exact permutation p"
        else:
            res = stats.spearmanr(x, y)
            row["rho"], row["p"] = float(res.statistic), float(res.pvalue)
            row["method"] = "Spearman, t-approximation p"
        out.append(row)
    return pd.DataFrame(out)
