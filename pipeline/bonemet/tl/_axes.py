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
    "axes_paired",
    "neutrophil_maturation",
    "NEUTROPHIL_STAGE_GENES",
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
    among ``group``; ``numerator="<gene>+"`` means cells with the gene detected),
    ``"score"`` (mean of ``obs[score]`` over ``group``'s cells) or ``"called"`` (cells
    with the bool ``obs[score]`` true among ``group``'s cells that the call assessed).
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
    AxisQuantity("tumour_erythroid_mimicry", _IRON, "called", "Tumour epithelial",
                 "Erythroid-mimicry calls / tumour cells", score="erythroid_mimicry_call"),
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
     "Erythroid-mimicry calls (fraction of tumour cells)", "Erythroid mimicry, Han 2025"),
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


#: Neutrophil maturation stage genes per species: ``early`` = promyelocyte/myelocyte
#: (primary/azurophil granule MPO, ELANE, PRTN3, AZU1, CTSG, then secondary/specific granule
#: LTF, CAMP, LCN2, CEACAM8; mouse Ngp, Cd177; CEBPE), ``mature`` = segmented neutrophil
#: (CXCR2, FCGR3B, CXCR1, MME/CD10, FPR1, MNDA; mouse Cxcr2, Ly6g, Retnlg, Ccl6, Cd101,
#: Fpr1). Sources: Cowland & Borregaard 2016 Immunol Rev (granule timing: azurophil
#: proteins in promyelocytes, specific granules in myelocytes/metamyelocytes); Xie et al.
#: 2020 Nat Immunol doi:10.1038/s41590-020-0736-z (mouse stages G0-G5: Mpo/Elane early,
#: Ltf/Camp/Ngp in myelocytes, Retnlg/Ccl6 mature); Evrard et al. 2018 Immunity (Cd101,
#: Cxcr2 on mature cells); Marini et al. 2017 Blood doi:10.1182/blood-2016-04-713206
#: (CD10/MME marks mature cells). The read-out gene (Chil3 / CHI3L1) is in neither set, so
#: the ordering does not use it.
NEUTROPHIL_STAGE_GENES: dict[str, dict[str, tuple[str, ...]]] = {
    "human": {
        "early": ("MPO", "ELANE", "PRTN3", "AZU1", "CTSG", "LTF", "CAMP", "LCN2", "CEACAM8",
                  "CEBPE"),
        "mature": ("CXCR2", "FCGR3B", "CXCR1", "MME", "FPR1", "MNDA"),
    },
    "mouse": {
        "early": ("Mpo", "Elane", "Prtn3", "Ctsg", "Ltf", "Camp", "Ngp", "Lcn2", "Cd177",
                  "Cebpe"),
        "mature": ("Cxcr2", "Ly6g", "Retnlg", "Ccl6", "Cd101", "Fpr1"),
    },
}  # fmt: skip

#: the Chil3+ read-out gene: mouse Chil3 (Ym1, CHI3L3); human CHI3L1 (YKL-40), a
#: functional analogue used as the proxy (rodent Chil3 has no human orthologue)
CHIL3_GENE = {"mouse": "Chil3", "human": "CHI3L1"}


def _species_of(adata: AnnData) -> str:
    from .._species import resolve_species

    found = resolve_species(adata, "auto", strict=False)
    if found is None:  # the species whose stage genes match more var names
        hits = {
            sp_: len(match_genes([*g["early"], *g["mature"]], list(map(str, adata.var_names)))[0])
            for sp_, g in NEUTROPHIL_STAGE_GENES.items()
        }
        found = max(hits, key=lambda k: hits[k])
    return str(found)


def _maturation(
    adata: AnnData, X: Any, cells: np.ndarray, species: str
) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Maturation score of ``cells``: mean z of the mature genes minus mean z of the early
    genes (z per gene over ``cells``; genes constant over them are left out)."""
    var = list(map(str, adata.var_names))
    found: dict[str, list[str]] = {}
    parts = []
    for part in ("mature", "early"):
        hit, _ = match_genes(list(NEUTROPHIL_STAGE_GENES[species][part]), var)
        idx = [adata.var_names.get_loc(h) for h in hit]
        M = _dense_cols(X, cells, idx) if idx else np.zeros((cells.size, 0))
        sd = M.std(axis=0)
        keep = sd > 0
        found[part] = [h for h, k in zip(hit, keep) if k]
        if not keep.any():
            raise InputError(
                f"no {part} neutrophil stage gene varies over the neutrophil-lineage cells "
                f"(looked for {', '.join(NEUTROPHIL_STAGE_GENES[species][part])}): the "
                "maturation ordering needs them"
            )
        parts.append(((M[:, keep] - M[:, keep].mean(axis=0)) / sd[keep]).mean(axis=1))
    return parts[0] - parts[1], found


def _stage_bins(score: np.ndarray, n_stages: int) -> np.ndarray:
    """Stage 0 .. n_stages - 1: equal-width bins between the 2nd and 98th percentiles of
    ``score`` (cells beyond them go to the end stages)."""
    lo, hi = np.quantile(score, [0.02, 0.98])
    if not hi > lo:
        return np.zeros(score.size, dtype=np.int64)
    edges = np.linspace(lo, hi, n_stages + 1)[1:-1]
    return np.searchsorted(edges, score, side="right").astype(np.int64)


def _stage_label(k: int, n: int) -> str:
    end = " (earliest)" if k == 0 else (" (most mature)" if k == n - 1 else "")
    return f"stage {k + 1}/{n}{end}"


def neutrophil_maturation(
    adata: AnnData,
    *,
    n_stages: int = 4,
    layer: str | None = None,
    key_added: str = "neutrophil_maturation",
    copy: bool = False,
) -> AnnData | None:
    """Order neutrophil-lineage cells by maturation and bin them into stages.

    The maturation score of a cell of :data:`~bonemet._vocab.NEUTROPHIL_POPULATIONS`
    (CHI3L3+ immature, PMN-MDSC, mature) is the mean z-score of the mature genes minus the
    mean z-score of the early (promyelocyte/myelocyte granule) genes of
    :data:`NEUTROPHIL_STAGE_GENES` (z per gene over all neutrophil-lineage cells of the
    data, pooled across samples, so that every sample and condition shares one scale).
    Stages are ``n_stages`` equal-width bins of the score between its pooled 2nd and 98th
    percentiles: stage 1 holds the most granule-rich (earliest) cells, the last stage the
    most mature. Chil3 (CHI3L1 in human) is not used, so the Chil3+ fraction can be read
    per stage (:func:`axes_table`).

    Parameters
    ----------
    adata
        Annotated data (``obs["population"]``), log-normalised ``X``.
    n_stages
        Number of stages (2 to 10).
    layer
        A log-normalised layer to use instead of ``X``.
    key_added
        ``obs[key_added]`` gets the score (NaN outside the neutrophil lineage) and
        ``obs[key_added + "_stage"]`` the stage (categorical ``stage 1/4 (earliest)`` …).
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or the copy with the two columns when ``copy=True``.
    """
    if not 2 <= int(n_stages) <= 10:
        raise InputError(f"n_stages must be between 2 and 10, not {n_stages!r}")
    adata = adata.copy() if copy else adata
    pop = _obs_str(
        adata, "population", hint="run bm.tl.annotate first (it writes obs['population'])"
    ).to_numpy()
    X = _matrix(adata, layer)
    _check_lognorm(X, "adata.X" if layer is None else f"layers[{layer!r}]")
    cells = np.flatnonzero(np.isin(pop, list(NEUTROPHIL_POPULATIONS)))
    if cells.size < 2:
        raise InputError(f"{cells.size} neutrophil-lineage cells: too few to order")
    score, _found = _maturation(adata, X, cells, _species_of(adata))
    full = np.full(adata.n_obs, np.nan)
    full[cells] = score
    labels = [_stage_label(k, int(n_stages)) for k in range(int(n_stages))]
    stage = np.full(adata.n_obs, None, dtype=object)
    stage[cells] = np.asarray(labels, dtype=object)[_stage_bins(score, int(n_stages))]
    adata.obs[key_added] = full
    adata.obs[f"{key_added}_stage"] = pd.Categorical(stage, categories=labels)
    return adata if copy else None


def axes_table(
    adata: AnnData,
    *,
    sample_key: str = "sample",
    layer: str | None = None,
    min_cells: int = 20,
    neutrophil_stages: int = 4,
    subject_key: str | None = None,
    tissue_key: str | None = None,
) -> pd.DataFrame:
    """The review's axes per sample, as the papers state them (:data:`AXIS_QUANTITIES`).

    - OPN (Cheng 2025): ``tpex_fraction`` = Tpex / (Tpex + Tex); SPP1 from every source
      reported separately: osteoclasts, macrophages (with ``spp1pos_macrophage_fraction``,
      the SPP1-detected macrophages), osteoblasts, tumour cells.
    - Iron (Han 2025): SLC40A1 on the VCAM1+CD163+CCR3+ iron-recycling subset (not all
      macrophages), the subset's fraction of macrophages, TFRC on tumour cells, tumour
      erythroid mimicry as the fraction of the tumour cells :func:`erythroid_mimicry`
      assessed that it called (``obs["erythroid_mimicry_call"]``, Wilson 95% CI; predicted
      doublets are not assessed), not a mean per-cell score.
    - Anaemia arm (Han 2025): TFRC, globins (HBB/HBA; mouse Hbb-bs/bt, Hba-a1/a2) and ALAS2
      in erythroid progenitors (iron starvation raises TFRC; maturation raises globins).
    - DKK1 (Shi 2025): tumour DKK1, CKAP4 on neutrophils, CHI3L3+ immature neutrophils
      among neutrophils; and, per neutrophil maturation stage (:func:`neutrophil_maturation`:
      neutrophil-lineage cells ordered by a granule-to-mature gene score, binned into
      ``neutrophil_stages`` stages on one scale for all samples), the stage's share of the
      sample's neutrophils (``neutrophil_stage<k>_share``) and the Chil3+ fraction of its
      cells (``neutrophil_stage<k>_chil3_fraction``; human: CHI3L1+ as the proxy). Normal
      marrow maturation puts Chil3+ cells in the early stages; an induced immature-like
      state shows as Chil3+ cells in later stages or a larger early-stage share in one
      condition.
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
    neutrophil_stages
        Number of neutrophil maturation stages (0: no stage rows).
    subject_key
        The obs column naming each sample's subject (animal or patient): adds a
        ``subject`` column, which :func:`axes_paired` and :func:`axes_correlations` use to
        pair a subject's bone sample with its extraosseous one (Cheng 2025's design).
    tissue_key
        The obs column naming each sample's tissue (e.g. ``bone`` or ``subcutaneous``):
        adds a ``tissue`` column.

    Returns
    -------
    Long table, one row per sample × quantity: ``sample``, ``axis``, ``quantity`` (key),
    ``label``, ``group`` (the cells averaged or the denominator), ``genes`` (those found),
    ``statistic`` (``mean log1p CP10k``, ``fraction``, ``fraction called`` or
    ``mean score``), ``value``, ``ci_low``/``ci_high`` (95%: t-interval over cells for means, Wilson for fractions),
    ``n_cells`` (cells of ``group``) and ``note``; ``condition`` when ``obs["condition"]``
    exists, ``subject`` and ``tissue`` with ``subject_key`` and ``tissue_key``. Genes are
    matched case-insensitively (mouse orthologues too).
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
    per_sample = {
        name: _one_per_sample(adata, key, samples, name)
        for name, key in (("subject", subject_key), ("tissue", tissue_key))
        if key is not None
    }
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
                "statistic": {
                    "mean": "mean log1p CP10k",
                    "fraction": "fraction",
                    "called": "fraction called",
                }.get(q.kind, "mean score"),  # fmt: skip
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
            elif q.kind == "called" and q.score not in adata.obs:
                row["note"] = f"obs[{q.score!r}] absent (run bm.tl.erythroid_mimicry)"
            elif q.kind == "fraction" and q.numerator == "SPP1+" and "SPP1" not in col:
                row["note"] = "SPP1 not in var_names"
            elif q.kind == "called":
                ok = cells
                if "erythroid_mimicry_class" in adata.obs:  # the cells the call assessed
                    klass = adata.obs["erythroid_mimicry_class"].astype(str).to_numpy()
                    ok = cells[klass[cells] != "not_assessed"]
                row["n_cells"] = n = int(ok.size)
                if n < min_cells:
                    row["note"] = f"{n} assessed {q.group} cells (< {min_cells})"
                else:
                    k = int(adata.obs[q.score].to_numpy(dtype=bool)[ok].sum())
                    row["value"], row["ci_low"], row["ci_high"] = _wilson(k, n)
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
    if neutrophil_stages:
        stage_rows = _neutrophil_stage_rows(
            adata, X, pop, samples, int(neutrophil_stages), min_cells=min_cells
        )
        if condition is not None:
            cond_of = dict(zip(samples, condition))
            for r in stage_rows:
                r["condition"] = str(cond_of[r["sample"]])
        rows += stage_rows
    for name, of in per_sample.items():
        for r in rows:
            r[name] = of[r["sample"]]
    cols = _COLUMNS[:1] + (["condition"] if condition is not None else []) + list(per_sample)
    return pd.DataFrame(rows, columns=cols + _COLUMNS[1:])


def _one_per_sample(adata: AnnData, key: str, samples: np.ndarray, name: str) -> dict[str, str]:
    """``obs[key]``'s one value per sample (an error if a sample has several)."""
    if key not in adata.obs:
        raise InputError(
            f"{name}_key {key!r} is not an obs column; obs columns: {', '.join(map(str, adata.obs))}"
        )
    vals = pd.DataFrame({"s": samples, "v": adata.obs[key].astype(str).to_numpy()})
    n = vals.groupby("s")["v"].nunique()
    if (n > 1).any():
        bad = ", ".join(map(str, n.index[n > 1][:5]))
        raise InputError(f"{name}_key {key!r}: sample(s) {bad} hold several values; one per sample")
    return vals.groupby("s")["v"].first().to_dict()


def _neutrophil_stage_rows(
    adata: AnnData,
    X: Any,
    pop: np.ndarray,
    samples: np.ndarray,
    n_stages: int,
    *,
    min_cells: int,
) -> list[dict[str, Any]]:
    """Per sample x maturation stage: the stage's share of neutrophils and its Chil3+ fraction."""
    if not 2 <= n_stages <= 10:
        raise InputError(f"neutrophil_stages must be 0 or between 2 and 10, not {n_stages!r}")
    species = _species_of(adata)
    gene = CHIL3_GENE[species]
    neu = np.isin(pop, list(NEUTROPHIL_POPULATIONS))
    cells = np.flatnonzero(neu)
    hit, _ = match_genes([gene], list(map(str, adata.var_names)))
    note_all = ""
    stage = np.full(adata.n_obs, -1, dtype=np.int64)
    genes_used = ""
    if cells.size < 2:
        note_all = f"{cells.size} neutrophil-lineage cells: no maturation ordering"
    else:
        try:
            score, found = _maturation(adata, X, cells, species)
        except InputError as e:
            note_all = str(e).split(":")[0]
        else:
            stage[cells] = _stage_bins(score, n_stages)
            genes_used = f"early: {', '.join(found['early'])}; mature: {', '.join(found['mature'])}"
    pos = np.zeros(adata.n_obs, dtype=bool)
    if hit:
        pos[cells] = _dense_cols(X, cells, [int(adata.var_names.get_loc(hit[0]))])[:, 0] > 0
    proxy = " (CHI3L1 as the human proxy)" if species == "human" else ""
    rows: list[dict[str, Any]] = []
    for s in sorted(set(samples)):
        ins = samples == s
        n_neu = int((neu & ins).sum())
        for k in range(n_stages):
            lab = _stage_label(k, n_stages)
            in_k = ins & (stage == k)
            n_k = int(in_k.sum())
            for kind in ("share", "chil3"):
                row: dict[str, Any] = {
                    "sample": s,
                    "axis": _DKK1,
                    "quantity": f"neutrophil_stage{k + 1}_{'share' if kind == 'share' else 'chil3_fraction'}",
                    "label": (
                        f"Neutrophils at maturation {lab} / neutrophils"
                        if kind == "share"
                        else f"{gene}+ among neutrophils at maturation {lab}{proxy}"
                    ),
                    "group": "Neutrophil" if kind == "share" else f"Neutrophil {lab}",
                    "genes": genes_used if kind == "share" else (hit[0] if hit else ""),
                    "statistic": "fraction",
                    "value": np.nan,
                    "ci_low": np.nan,
                    "ci_high": np.nan,
                    "n_cells": n_neu if kind == "share" else n_k,
                    "note": note_all,
                }
                n = row["n_cells"]
                if note_all:
                    pass
                elif kind == "chil3" and not hit:
                    row["note"] = f"{gene} not in var_names"
                elif n < min_cells:
                    row["note"] = f"{n} {row['group']} cells (< {min_cells})"
                else:
                    k_pos = n_k if kind == "share" else int((pos & in_k).sum())
                    row["value"], row["ci_low"], row["ci_high"] = _wilson(k_pos, n)
                rows.append(row)
    return rows


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


#: the paired OPN design (Cheng 2025): (quantity in the bone sample, in the extraosseous one)
OPN_PAIRED = ("osteoclast_SPP1", "tpex_fraction")


def axes_paired(
    table: pd.DataFrame, *, bone_tissue: str = "bone", pair: tuple[str, str] = OPN_PAIRED
) -> pd.DataFrame:
    """Pair each subject's bone sample with the same subject's extraosseous sample.

    Cheng 2025's design: osteoclast osteopontin (SPP1, read in the bone sample) acts
    through the blood on TCF1+ progenitor CD8 T cells of an extraosseous tumour (Tpex /
    (Tpex + Tex), read in the extraosseous sample of the same subject).

    Parameters
    ----------
    table
        :func:`axes_table` with ``subject_key`` and ``tissue_key`` given (columns
        ``subject`` and ``tissue``).
    bone_tissue
        The ``tissue`` value of bone samples; every other value is extraosseous.
    pair
        (quantity read in the bone sample, quantity read in the extraosseous sample).

    Returns
    -------
    One row per subject: ``subject``, ``bone_sample``, ``extraosseous_sample``, then for
    each side (``bone_`` + the first quantity, ``extraosseous_`` + the second) its
    ``value``, ``ci_low``, ``ci_high`` and ``n_cells``, and ``note`` (why a subject has no
    pair or no value). A subject with several bone or several extraosseous samples is an
    error.
    """
    if not {"subject", "tissue"} <= set(table.columns):
        raise InputError(
            "axes_paired needs the subject and tissue of each sample: run "
            "bm.tl.axes_table(adata, subject_key=..., tissue_key=...)"
        )
    bq, eq = pair
    per = table.drop_duplicates("sample").set_index("sample")[["subject", "tissue"]]
    out = []
    for subj, g in per.groupby("subject", sort=True):
        bone = sorted(g.index[g["tissue"] == bone_tissue])
        extra = sorted(g.index[g["tissue"] != bone_tissue])
        for side, ss in (("bone", bone), ("extraosseous", extra)):
            if len(ss) > 1:
                raise InputError(
                    f"subject {subj!r} has {len(ss)} {side} samples ({', '.join(ss)}): the "
                    "paired design takes one of each per subject"
                )
        row: dict[str, Any] = {"subject": subj, "bone_sample": bone[0] if bone else "",
                               "extraosseous_sample": extra[0] if extra else ""}  # fmt: skip
        notes = []
        for side, ss, q in (("bone", bone, bq), ("extraosseous", extra, eq)):
            r = table[(table["sample"] == ss[0]) & (table["quantity"] == q)] if ss else table[:0]
            for c in ("value", "ci_low", "ci_high", "n_cells"):
                row[f"{side}_{q}_{c}"] = r[c].iloc[0] if len(r) else np.nan
            if not ss:
                notes.append(f"no {side} sample")
            elif len(r) and str(r["note"].iloc[0]):
                notes.append(f"{side}: {r['note'].iloc[0]}")
        row["note"] = "; ".join(notes)
        out.append(row)
    return pd.DataFrame(out)


def _rho_row(x: np.ndarray, y: np.ndarray, row: dict[str, Any], min_n: int, unit: str) -> None:
    n = len(x)
    row["n_samples"] = n
    if n < min_n:
        row["note"] = f"not testable: {n} {unit} with both values (< {min_n})"
    elif np.ptp(x) == 0 or np.ptp(y) == 0:
        row["note"] = f"a quantity is constant across {unit}"
    elif n <= 8:
        row["rho"], row["p"] = _spearman_exact(x, y)
        row["method"] = "Spearman, exact permutation p"
    else:
        res = stats.spearmanr(x, y)
        row["rho"], row["p"] = float(res.statistic), float(res.pvalue)
        row["method"] = "Spearman, t-approximation p"


def axes_correlations(
    table: pd.DataFrame,
    *,
    pairs: Sequence[tuple[str, str, str, str, str]] = AXIS_PAIRS,
    min_samples: int = 3,
    bone_tissue: str = "bone",
) -> pd.DataFrame:
    """Spearman's rho across samples for each pair of quantities, with its p and n.

    A pair is read over the samples where both values are defined. With fewer than
    ``min_samples`` samples (or a constant quantity) rho and p are NaN and ``note`` says
    why. The p-value is exact (all permutations) for up to 8 samples, else scipy's
    t-approximation; it is two-sided.

    When the table has ``subject`` and ``tissue`` columns (:func:`axes_table` with
    ``subject_key`` and ``tissue_key``), one more row reads the OPN axis as Cheng 2025 did,
    across subjects (:func:`axes_paired`): SPP1 in osteoclasts of the subject's bone
    sample (``x = "bone:osteoclast_SPP1"``) against Tpex / (Tpex + Tex) in the same
    subject's extraosseous sample (``y = "extraosseous:tpex_fraction"``); ``n_samples`` is
    then the number of subjects, and below ``min_samples`` it is "not testable".

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
        _rho_row(sub[xk].to_numpy(), sub[yk].to_numpy(), row, min_samples, "samples")
        out.append(row)
    if {"subject", "tissue", "quantity"} <= set(table.columns):
        bq, eq = OPN_PAIRED
        pt = axes_paired(table, bone_tissue=bone_tissue)
        xc, yc = f"bone_{bq}_value", f"extraosseous_{eq}_value"
        sub = pt[[xc, yc]].apply(pd.to_numeric, errors="coerce").dropna()
        row = {"axis": "OPN axis, Cheng 2025 (paired by subject)", "x": f"bone:{bq}",
               "y": f"extraosseous:{eq}", "n_samples": 0, "rho": np.nan, "p": np.nan,
               "method": "", "note": ""}  # fmt: skip
        _rho_row(sub[xc].to_numpy(), sub[yc].to_numpy(), row, min_samples, "subjects")
        out.append(row)
    return pd.DataFrame(out)
