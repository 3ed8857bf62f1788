"""Per-sample quality control: metrics, MAD thresholds (per sample or per pre-QC cluster) with
floors that scale with the genes measured, doublets, ambient-RNA correction (DecontX) and
Hb/ambient flags."""

from __future__ import annotations

import re
import time
import warnings
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._counts import check_counts
from .._errors import InputError, StageError
from .._logging import logger
from .._meta import add_warning, warnings_of
from .._species import resolve_species

__all__ = [
    "qc",
    "qc_table",
    "qc_group_table",
    "qc_cells_table",
    "REMOVED_CELL_METRICS",
    "preqc_groups",
    "decontaminate",
    "mito_genes",
    "hb_genes",
    "QC_REASONS",
    "AMBIENT_METHODS",
]

#: the reasons a cell is removed, in the order they are tested (a cell counts under its first)
QC_REASONS = ("low_counts", "high_counts", "low_genes", "high_genes", "high_mito", "doublet")
_MIN_CELLS_SCRUBLET = 100
#: ambient-RNA correction methods of ``qc(ambient=...)``
AMBIENT_METHODS = ("decontx", "none")
#: fewer cells than this in a sample: one pre-QC group (no clustering)
_MIN_CELLS_GROUPS = 50
#: the obs column with each cell's pre-QC group
GROUP_KEY = "qc_group"

# haemoglobin chains only (HBA1/2, HBB, HBD, HBG1/2, HBE1, HBZ, HBM, HBQ1); not HBP1, HBEGF,
# HBS1L, HBAP1/HBBP1 pseudogenes
_HB_HUMAN = re.compile(r"^HB(A1|A2|B|D|G1|G2|E1|Z|M|Q1)$")
# mouse Hba-a1, Hba-a2, Hba-x, Hbb-bs, Hbb-bt, Hbb-b1, Hbb-b2, Hbb-y, Hbb-bh1, Hbq1a/b (any case)
_HB_MOUSE = re.compile(r"^HB[AB]-[A-Z0-9]+$|^HBQ1[AB]?$", re.IGNORECASE)


def mito_genes(var_names: pd.Index | list[str], species: str | None = None) -> np.ndarray:
    """Boolean mask of mitochondrially encoded genes (``MT-`` human, ``mt-`` mouse; any case
    for upper-cased mouse data)."""
    names = pd.Index(var_names).astype(str)
    if species == "human":
        return np.asarray(names.str.startswith("MT-"))
    return np.asarray(names.str.upper().str.startswith("MT-"))


def hb_genes(var_names: pd.Index | list[str], species: str | None = None) -> np.ndarray:
    """Boolean mask of haemoglobin chain genes, species-aware (no HBP1/HBEGF-like hits)."""
    names = pd.Index(var_names).astype(str)
    human = np.asarray([bool(_HB_HUMAN.match(n)) for n in names])
    mouse = np.asarray([bool(_HB_MOUSE.match(n)) for n in names])
    if species == "human":
        return human
    if species == "mouse":
        return mouse
    return human | mouse


def _mad(x: np.ndarray) -> float:
    """Median absolute deviation scaled by 1.4826 (consistent with the SD of a normal
    distribution), as R's ``mad()`` and scater's ``isOutlier`` use it."""
    med = np.median(x)
    return float(1.4826 * np.median(np.abs(x - med)))


def _metrics(x: sp.csr_matrix, mito: np.ndarray, hb: np.ndarray) -> dict[str, np.ndarray]:
    total = np.asarray(x.sum(axis=1)).ravel().astype(np.float64)
    n_genes = np.diff(x.indptr)
    denom = np.where(total > 0, total, 1.0)
    pct_mito = (
        np.asarray(x[:, mito].sum(axis=1)).ravel() / denom * 100
        if mito.any()
        else np.zeros_like(total)
    )
    pct_hb = (
        np.asarray(x[:, hb].sum(axis=1)).ravel() / denom * 100 if hb.any() else np.zeros_like(total)
    )
    return {
        "qc_total_counts": total,
        "qc_n_genes": np.asarray(n_genes, dtype=np.int64),
        "qc_pct_mito": pct_mito,
        "qc_pct_hb": pct_hb,
    }


def _scrublet(
    x: sp.csr_matrix, obs_names: pd.Index, *, doublet_rate: float, seed: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Run scanpy's scrublet on one sample; return scores, calls and a status string."""
    import scanpy as sc

    n = x.shape[0]
    scores = np.full(n, np.nan)
    calls = np.zeros(n, dtype=bool)
    if n < _MIN_CELLS_SCRUBLET:
        return scores, calls, f"skipped: {n} cells < {_MIN_CELLS_SCRUBLET}"
    tmp = ad.AnnData(X=x.copy(), obs=pd.DataFrame(index=obs_names.copy()))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sc.pp.scrublet(
                tmp,
                expected_doublet_rate=float(doublet_rate),
                random_state=int(seed),
                n_prin_comps=int(min(30, n - 1, max(2, tmp.n_vars - 1))),
                # exact kNN (sklearn): pynndescent's numba compile costs minutes per process on
                # small machines, and the data (cells + 2x simulated doublets) are small
                use_approx_neighbors=False,
                verbose=False,
            )
    except Exception as e:  # noqa: BLE001 - doublet calling is best effort; QC goes on
        return (
            scores,
            calls,
            f"skipped: scrublet failed ({type(e).__name__}: {' '.join(str(e).split())[:150]})",
        )
    scores = tmp.obs["doublet_score"].to_numpy(dtype=float, na_value=np.nan)
    thr = tmp.uns.get("scrublet", {}).get("threshold")
    if thr is None or any("threshold" in str(w.message).lower() for w in caught):
        return scores, calls, "scrublet: automatic threshold failed, no doublets called"
    pred = tmp.obs["predicted_doublet"].to_numpy()
    calls = np.array([bool(v) if v is not None and v == v else False for v in pred], dtype=bool)
    return scores, calls, f"scrublet (threshold {float(thr):.3f})"


def preqc_groups(
    x: sp.spmatrix | np.ndarray,
    *,
    resolution: float = 0.3,
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    seed: int = 0,
) -> np.ndarray:
    """Coarse pre-QC clusters of one sample's raw counts.

    log1p(CP10k) → the ``n_top_genes`` genes of highest variance → PCA (``n_pcs``,
    scikit-learn) → exact kNN graph (``n_neighbors``, symmetrised) → leiden (igraph,
    modularity, ``resolution``). No numba is compiled (scanpy's UMAP connectivities cost
    minutes of compile time per process on small machines). Used for QC thresholds within
    groups (``mad_scope="cluster"``) and as DecontX's cell populations. A sample with
    fewer than 50 cells is one group.

    Returns
    -------
    Integer labels ``0..k-1`` (largest group first), one per cell (row of ``x``).
    """
    import igraph as ig
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors
    from threadpoolctl import threadpool_limits

    n = x.shape[0]
    if n < _MIN_CELLS_GROUPS or x.shape[1] < 3:
        return np.zeros(n, dtype=np.int64)
    x = sp.csr_matrix(x, dtype=np.float32)
    tot = np.asarray(x.sum(axis=1)).ravel()
    xl = sp.csr_matrix(sp.diags(1e4 / np.where(tot > 0, tot, 1.0)) @ x, dtype=np.float32)
    xl.data = np.log1p(xl.data)
    mu = np.asarray(xl.mean(axis=0)).ravel()
    var = np.asarray(xl.multiply(xl).mean(axis=0)).ravel() - mu**2
    top = np.sort(np.argsort(-var, kind="stable")[: min(int(n_top_genes), x.shape[1])])
    dense = xl[:, top].toarray()
    n_comps = int(max(2, min(n_pcs, n - 1, dense.shape[1] - 1)))
    # one BLAS thread: on a busy 2-core machine threaded BLAS made this PCA 30x slower
    # (3 s vs 0.06 s for 400 x 2,000), and single-threaded it takes < 1 s at 5,000 cells
    with threadpool_limits(limits=1, user_api="blas"):
        pcs = PCA(n_components=n_comps, random_state=seed, svd_solver="randomized").fit_transform(
            dense
        )
    k = int(min(n_neighbors, n - 1))
    nn = NearestNeighbors(n_neighbors=k + 1).fit(pcs)
    ind = nn.kneighbors(pcs, return_distance=False)[:, 1:]
    rows = np.repeat(np.arange(n), k)
    adj = sp.csr_matrix((np.ones(rows.size), (rows, ind.ravel())), shape=(n, n))
    adj = adj.maximum(adj.T).tocoo()
    upper = adj.row < adj.col
    g = ig.Graph(n=n, edges=list(zip(adj.row[upper].tolist(), adj.col[upper].tolist())))
    import random

    state = random.getstate()
    random.seed(int(seed))  # igraph draws from Python's generator
    try:
        part = g.community_leiden(
            objective_function="modularity", resolution=float(resolution), n_iterations=2
        )
    finally:
        random.setstate(state)
    labels = np.asarray(part.membership, dtype=np.int64)
    # relabel by size (largest first) so labels do not depend on igraph's numbering
    sizes = np.bincount(labels)
    rank = np.empty_like(sizes)
    rank[np.lexsort((np.arange(sizes.size), -sizes))] = np.arange(sizes.size)
    return rank[labels]


def decontaminate(
    x: sp.spmatrix,
    groups: np.ndarray,
    *,
    seed: int = 0,
    max_iter: int = 500,
    estimate_delta: bool = False,
) -> tuple[sp.csr_matrix, np.ndarray, str]:
    """DecontX (``decontx-scanpy``, a port of the Bioconductor package) on one sample.

    Parameters
    ----------
    x
        Raw counts of the sample's cells (cells × genes).
    groups
        Cell populations for DecontX's mixture (pre-QC clusters); at least two are needed.
    seed, max_iter
        Random seed and EM iterations of DecontX.
    estimate_delta
        Re-estimate the Beta prior of the native fraction at every EM step (DecontX's
        default; its Dirichlet fit costs ~1.4 s per step whatever the number of cells).
        False keeps the prior at (10, 10). The two differ (``benchmarks/qc_ambient.py``).

    Returns
    -------
    ``(native, contamination, status)``: the decontaminated counts (CSR float32, not
    rounded, the sparsity of ``x``), each cell's estimated ambient fraction (NaN when
    skipped) and a status string. A sample DecontX cannot run on (one population, fewer
    than two cells) is returned unchanged with status ``skipped: <why>``.
    """
    x = sp.csr_matrix(x)
    n = x.shape[0]
    contamination = np.full(n, np.nan)
    totals = np.asarray(x.sum(axis=1)).ravel()
    ok = totals > 0
    groups = np.asarray(groups)
    if ok.sum() < 2 or np.unique(groups[ok]).size < 2:
        return (
            sp.csr_matrix(x, dtype=np.float32),
            contamination,
            "skipped: DecontX needs at least two cell populations (pre-QC clusters)",
        )
    try:
        import pydecontx
    except ImportError as e:
        raise InputError(
            "qc.ambient: decontx needs the decontx-scanpy package (import name pydecontx), "
            f"which is not installed ({e}): pip install decontx-scanpy, or set qc.ambient: none"
        ) from None
    idx = np.flatnonzero(ok)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pydecontx.decontx(
            x[idx].astype(np.float64),
            z=groups[idx],
            compute_umap=False,
            max_iter=int(max_iter),
            estimate_delta=bool(estimate_delta),
            seed=int(seed),
            verbose=False,
        )
    native = sp.lil_matrix(x.shape, dtype=np.float32) if not ok.all() else None
    dec = sp.csr_matrix(res["decontX_counts"], dtype=np.float32)
    if native is not None:
        # rows of empty cells stay empty
        full = sp.vstack([dec, sp.csr_matrix((n - idx.size, x.shape[1]), dtype=np.float32)])
        order = np.concatenate([idx, np.flatnonzero(~ok)])
        inv = np.empty_like(order)
        inv[order] = np.arange(n)
        dec = sp.csr_matrix(full[inv])
    dec.eliminate_zeros()
    contamination[idx] = np.asarray(res["contamination"], dtype=float)
    iters = [int(v.get("iterations", 0)) for v in res.get("estimates", {}).values()]
    return dec, contamination, f"decontx ({iters[0] if iters else 0} EM iterations)"


def _group_bounds(
    v: np.ndarray,
    groups: np.ndarray,
    nm: float,
    *,
    min_group_cells: int,
) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[float, float, float]]]:
    """Per-cell ``median ± nm × MAD`` bounds of ``v`` computed within each group.

    A group with fewer than ``min_group_cells`` cells (or a MAD of 0) uses its own median
    and the MAD of the sample's within-group residuals (``v`` minus its group's median),
    so small populations are judged against their own level. Returns the lower and upper
    bound per cell and ``{group: (median, mad, n)}``."""
    inf = float("inf")
    lo = np.full(v.size, -inf)
    hi = np.full(v.size, inf)
    info: dict[int, tuple[float, float, float]] = {}
    if v.size == 0 or not np.isfinite(nm):
        return lo, hi, info
    ug = np.unique(groups)
    meds = {int(g): float(np.median(v[groups == g])) for g in ug}
    resid = v - np.array([meds[int(g)] for g in groups])
    pooled = _mad(resid)
    for g in ug:
        m = groups == g
        mad = _mad(v[m]) if m.sum() >= min_group_cells else 0.0
        if mad == 0:
            mad = pooled
        info[int(g)] = (meds[int(g)], mad, float(m.sum()))
        if mad > 0:
            lo[m] = meds[int(g)] - nm * mad
            hi[m] = meds[int(g)] + nm * mad
    return lo, hi, info


def _qc_one(
    x: sp.csr_matrix,
    obs_names: pd.Index,
    sample: str,
    *,
    mito: np.ndarray,
    hb: np.ndarray,
    is_counts: bool,
    min_counts: float,
    min_genes: float,
    max_pct_mito: float,
    mito_floor: float,
    nmads_counts: float,
    nmads_genes: float,
    nmads_mito: float,
    mad_scope: str,
    group_resolution: float,
    min_group_cells: int,
    floor_reference_genes: int,
    ambient: str,
    decontx_estimate_delta: bool,
    doublets: bool,
    doublet_rate: float,
    seed: int,
    high_hb_fraction: float,
    remove_doublets: bool,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any], sp.csr_matrix | None]:
    m = _metrics(x, mito, hb)
    n = x.shape[0]
    inf = float("inf")
    lc = np.log1p(m["qc_total_counts"])
    lg = np.log1p(m["qc_n_genes"].astype(float))

    # floors scale with the genes measured: a gene panel cannot reach whole-transcriptome floors
    factor = 1.0
    if floor_reference_genes > 0 and x.shape[1] < floor_reference_genes:
        factor = x.shape[1] / float(floor_reference_genes)
    eff_min_counts = float(min_counts) * factor
    eff_min_genes = float(min_genes) * factor

    need_groups = mad_scope == "cluster" or (ambient != "none" and is_counts)
    t0 = time.perf_counter()
    groups = (
        preqc_groups(x, resolution=group_resolution, seed=seed)
        if need_groups
        else np.zeros(n, dtype=np.int64)
    )
    t_groups = time.perf_counter() - t0
    tgroups = groups if mad_scope == "cluster" else np.zeros(n, dtype=np.int64)
    mgc = int(min_group_cells) if mad_scope == "cluster" else 1

    c_lo, c_hi, _ = _group_bounds(lc, tgroups, nmads_counts, min_group_cells=mgc)
    g_lo, g_hi, _ = _group_bounds(lg, tgroups, nmads_genes, min_group_cells=mgc)
    if mad_scope == "cluster":
        # counts and genes: an outlier of its group or of the whole sample is removed, so a
        # group made of damaged droplets or empty-ish barcodes is not its own yardstick
        one = np.zeros(n, dtype=np.int64)
        for v, nm, lo, hi in ((lc, nmads_counts, c_lo, c_hi), (lg, nmads_genes, g_lo, g_hi)):
            s_lo, s_hi, _ = _group_bounds(v, one, nm, min_group_cells=1)
            np.maximum(lo, s_lo, out=lo)
            np.minimum(hi, s_hi, out=hi)
    thr_cells = {
        "min_counts": np.maximum(eff_min_counts, np.expm1(c_lo)),
        "max_counts": np.expm1(c_hi),
        "min_genes": np.maximum(eff_min_genes, np.expm1(g_lo)),
        "max_genes": np.expm1(g_hi),
        "max_pct_mito": np.full(n, float(max_pct_mito)),
    }
    if mito.any() and n:
        _, m_hi, _ = _group_bounds(m["qc_pct_mito"], tgroups, nmads_mito, min_group_cells=mgc)
        # never above the absolute cap, never below the floor
        thr_cells["max_pct_mito"] = np.minimum(
            float(max_pct_mito), np.maximum(min(float(mito_floor), float(max_pct_mito)), m_hi)
        )
    skipped = ""
    if not is_counts:
        # values are not counts: only the detected-gene filters mean anything
        thr_cells["min_counts"] = np.full(n, -inf)
        thr_cells["max_counts"] = np.full(n, inf)
        thr_cells["max_pct_mito"] = np.full(n, inf)
        skipped = "input is not raw counts: count and mito thresholds, doublets and ambient skipped"
    fails = {
        "low_counts": m["qc_total_counts"] < thr_cells["min_counts"],
        "high_counts": m["qc_total_counts"] > thr_cells["max_counts"],
        "low_genes": m["qc_n_genes"] < thr_cells["min_genes"],
        "high_genes": m["qc_n_genes"] > thr_cells["max_genes"],
        "high_mito": m["qc_pct_mito"] > thr_cells["max_pct_mito"],
    }
    reason = np.full(n, "", dtype=object)
    for r, mask in fails.items():
        reason[(reason == "") & mask] = r
    passed = reason == ""
    scores = np.full(n, np.nan)
    calls = np.zeros(n, dtype=bool)
    if not doublets:
        status = "off"
    elif not is_counts:
        status = "skipped: input is not raw counts"
    elif passed.sum() == 0:
        status = "skipped: no cell passed the other filters"
    else:
        idx = np.flatnonzero(passed)
        s, c, status = _scrublet(x[idx], obs_names[idx], doublet_rate=doublet_rate, seed=seed)
        scores[idx], calls[idx] = s, c
    if remove_doublets:
        reason[(reason == "") & calls] = "doublet"
    keep = reason == ""

    # ambient RNA: DecontX on the kept cells, their pre-QC clusters as populations
    native: sp.csr_matrix | None = None
    contamination = np.full(n, np.nan)
    amb_status, t_amb = ambient, 0.0
    if ambient != "none":
        kidx = np.flatnonzero(keep)
        if not is_counts:
            native = sp.csr_matrix(x[kidx], dtype=np.float32)
            amb_status = "skipped: input is not raw counts"
        elif kidx.size == 0:
            native = sp.csr_matrix((0, x.shape[1]), dtype=np.float32)
            amb_status = "skipped: no cell passed QC"
        else:
            t0 = time.perf_counter()
            native, contamination[kidx], amb_status = decontaminate(
                x[kidx], groups[kidx], seed=seed, estimate_delta=decontx_estimate_delta
            )
            t_amb = time.perf_counter() - t0

    m["doublet_score"] = scores
    m["predicted_doublet"] = calls
    m["ambient_contamination"] = contamination
    m[GROUP_KEY] = groups
    m["_keep"] = keep
    med_hb = float(np.median(m["qc_pct_hb"])) if n else 0.0

    def _loosest(k: str) -> float:
        v = thr_cells[k]
        if v.size == 0:
            return inf if k.startswith("max") else -inf
        return float(v.min() if k.startswith("min") else v.max())

    by_group: dict[str, Any] = {}
    ug = np.unique(groups)
    by_group["group"] = np.asarray([f"c{int(g)}" for g in ug], dtype=object)
    gmask = [groups == g for g in ug]
    by_group["n_before"] = np.asarray([int(gm.sum()) for gm in gmask], dtype=np.int64)
    by_group["kept"] = np.asarray([int((gm & keep).sum()) for gm in gmask], dtype=np.int64)
    for r in QC_REASONS:
        by_group[f"removed_{r}"] = np.asarray(
            [int((gm & (reason == r)).sum()) for gm in gmask], dtype=np.int64
        )
    by_group["median_total_counts"] = np.asarray(
        [float(np.median(m["qc_total_counts"][gm])) for gm in gmask]
    )
    by_group["median_pct_mito"] = np.asarray(
        [float(np.median(m["qc_pct_mito"][gm])) for gm in gmask]
    )
    for k in ("min_counts", "max_counts", "min_genes", "max_genes", "max_pct_mito"):
        by_group[f"threshold_{k}"] = np.asarray(
            [float(thr_cells[k][gm][0]) if gm.any() else np.nan for gm in gmask]
        )
    if ambient != "none":
        by_group["median_ambient_contamination"] = np.asarray(
            [
                float(np.nanmedian(contamination[gm & keep]))
                if np.isfinite(contamination[gm & keep]).any()
                else np.nan
                for gm in gmask
            ]
        )
    kc = contamination[keep]
    rec: dict[str, Any] = {
        "n_before": int(n),
        **{f"removed_{r}": int(np.sum(reason == r)) for r in QC_REASONS},
        "n_after": int(keep.sum()),
        **{f"threshold_{k}": _loosest(k) for k in thr_cells},
        "floor_min_counts": eff_min_counts,
        "floor_min_genes": eff_min_genes,
        "floor_max_pct_mito": float(max_pct_mito),
        "configured_min_counts": float(min_counts),
        "configured_min_genes": float(min_genes),
        "floor_scale": float(factor),
        "mito_floor": float(mito_floor),
        "nmads_counts": float(nmads_counts),
        "nmads_genes": float(nmads_genes),
        "nmads_mito": float(nmads_mito),
        "mad_scope": str(mad_scope),
        "n_groups": int(ug.size),
        "groups_seconds": float(t_groups),
        "n_genes_measured": int(x.shape[1]),
        "n_mito_genes": int(mito.sum()),
        "n_hb_genes": int(hb.sum()),
        "median_pct_mito": float(np.median(m["qc_pct_mito"])) if n else 0.0,
        "median_pct_hb": med_hb,
        "high_ambient_hb": bool(med_hb / 100.0 > high_hb_fraction),
        "n_predicted_doublets": int(calls.sum()),
        "doublets": status,
        "ambient": amb_status,
        "ambient_seconds": float(t_amb),
        "median_ambient_contamination": (
            float(np.nanmedian(kc)) if kc.size and np.isfinite(kc).any() else float("nan")
        ),
        "note": skipped,
        "dropped": False,
        "by_group": by_group,
        "cells_removed": _removed_cells(m, reason),
    }
    return m, keep, rec, native


#: the per-cell metrics :func:`qc` keeps of each removed cell (``cells_removed`` record)
REMOVED_CELL_METRICS = ("qc_total_counts", "qc_n_genes", "qc_pct_mito", "qc_pct_hb")


def _removed_cells(m: dict[str, np.ndarray], reason: np.ndarray) -> dict[str, np.ndarray]:
    """The QC metrics of the cells QC removes (float32) and each one's first failing reason
    (``reason``: int8 index into :data:`QC_REASONS`), so figures can show every cell before
    QC. Kept cells' metrics stay in ``obs``; this costs ~17 bytes per removed cell."""
    gone = reason != ""
    out = {k: np.asarray(m[k][gone], dtype=np.float32) for k in REMOVED_CELL_METRICS if k in m}
    code = {r: i for i, r in enumerate(QC_REASONS)}
    out["reason"] = np.asarray([code[r] for r in reason[gone]], dtype=np.int8)
    return out


def qc(
    adata: ad.AnnData,
    *,
    min_counts: float = 500,
    min_genes: float = 200,
    max_pct_mito: float = 20.0,
    mito_floor: float = 5.0,
    nmads_counts: float = 5.0,
    nmads_genes: float = 5.0,
    nmads_mito: float = 3.0,
    mad_scope: Literal["sample", "cluster"] = "cluster",
    group_resolution: float = 0.3,
    min_group_cells: int = 30,
    floor_reference_genes: int = 5000,
    warn_removed_fraction: float = 0.3,
    ambient: Literal["decontx", "none"] = "decontx",
    decontx_estimate_delta: bool = False,
    doublets: bool = True,
    doublet_rate: float = 0.06,
    remove_doublets: bool = True,
    seed: int = 0,
    drop_empty: bool = False,
    high_hb_fraction: float = 0.01,
    species: str = "auto",
    copy: bool = False,
) -> ad.AnnData | None:
    """Per-sample quality control of raw counts, with ambient-RNA correction.

    For each sample (``obs["sample"]``; the whole object if absent):

    1. metrics (total counts, detected genes, % mito, % haemoglobin);
    2. coarse pre-QC groups (:func:`preqc_groups`: log1p CP10k, PCA, kNN, leiden at
       ``group_resolution``) when ``mad_scope="cluster"`` or ambient correction needs them;
    3. MAD thresholds on ``log1p`` total counts and ``log1p`` detected genes (both sides) and
       on % mito (high side) — ``median ± nmads × MAD``, the MAD scaled by 1.4826 as in
       scater's ``isOutlier`` (so ``nmads`` is roughly a number of standard deviations) —
       computed over the whole sample (``mad_scope="sample"``) or within each pre-QC group
       (``"cluster"``: a population with more mitochondrial reads, such as tumour cells or
       osteoclasts, is judged against its own level, so the share removed does not depend on
       how much of the sample it makes up; for counts and genes a cell is also removed when
       it is an outlier of the whole sample, so a group of damaged droplets is not its own
       yardstick; for mito the absolute cap ``max_pct_mito`` is that guard); groups under
       ``min_group_cells`` use their median and the sample's pooled within-group MAD;
    4. floors: ``min_counts``/``min_genes`` raise the low side, scaled by
       ``n_genes / floor_reference_genes`` when fewer genes than that are measured (a
       240-gene panel gets floors of 24 counts and 10 genes, not 500 and 200); the mito
       threshold is kept within ``[mito_floor, max_pct_mito]``;
    5. doublets with scanpy's scrublet on the cells that passed;
    6. ambient RNA (``ambient="decontx"``): DecontX (the ``decontx-scanpy`` port of the
       Bioconductor package; Yang et al. 2020, Genome Biology 21:57) on the kept cells, with
       the pre-QC groups as its populations.

    A warning (``uns["bonemet"]["warnings"]``, shown in the report) names every sample that
    loses more than ``warn_removed_fraction`` of its cells, with the main reason.

    Parameters
    ----------
    adata
        Raw counts in ``X`` (one sample, or several: each gets its own thresholds).
    min_counts, min_genes
        Floors of the low side (before scaling with the genes measured).
    max_pct_mito, mito_floor
        The mito threshold is never above ``max_pct_mito`` nor below ``mito_floor``.
    nmads_counts, nmads_genes, nmads_mito
        MAD multipliers (``inf`` disables a side).
    mad_scope
        ``"sample"`` (one set of thresholds per sample) or ``"cluster"`` (per pre-QC group).
    group_resolution, min_group_cells
        Leiden resolution of the pre-QC groups; smallest group with its own MAD.
    floor_reference_genes
        Floors apply in full at this many genes or more and scale linearly below (0: fixed
        floors).
    warn_removed_fraction
        Warn when a sample loses more than this fraction of its cells.
    ambient
        ``"decontx"`` or ``"none"``.
    decontx_estimate_delta
        DecontX re-estimates its Beta prior at every EM step (the package default; ~1.4 s
        per step whatever the sample's size). False (bonemet's default) keeps the prior at
        (10, 10): measured on the 20k demo it removed more of the ambient haemoglobin from
        non-erythroid cells in every sample (23–91 % vs 12–71 %), was 1.4–2.5× faster in
        3 of 4 samples, and removed more counts overall (11–17 % vs 8–14 %; the simulated
        ambient is 3–4 %): ``benchmarks/results/qc_ambient.json``.
    doublets, doublet_rate, remove_doublets, seed
        scrublet per sample (``expected_doublet_rate``, exact nearest neighbours) on the cells
        that passed the other filters; samples with < 100 such cells are skipped with the
        reason recorded. ``seed`` also seeds the pre-QC groups and DecontX.
    drop_empty
        If a sample loses every cell: False raises :class:`~bonemet.StageError`; True drops it
        (the result may be empty) and records ``dropped``.
    high_hb_fraction
        A sample whose median haemoglobin fraction exceeds this is flagged ``high_ambient_hb``.
    species
        ``"auto"`` (``uns["bonemet"]["species"]`` or detected), ``"human"``, ``"mouse"``: which
        mito/Hb symbols to use.
    copy
        Return a filtered copy instead of filtering in place.

    Returns
    -------
    ``None`` (in place) or the filtered AnnData. ``X`` stays the raw counts (the later
    ``layers["counts"]`` is a copy of it, never modified). Sets ``obs["qc_total_counts"]``,
    ``obs["qc_n_genes"]``, ``obs["qc_pct_mito"]``, ``obs["qc_pct_hb"]``,
    ``obs["qc_group"]`` (the cell's pre-QC group within its sample, ``c0``, ``c1`` …; ``c0``
    for all when no groups were needed), ``obs["doublet_score"]``, ``obs["predicted_doublet"]``,
    ``var["mito"]``, ``var["hb"]``; with ``ambient="decontx"`` also
    ``layers["decontaminated"]`` (DecontX's native counts: CSR float32, **not rounded**, same
    shape as ``X``; a sample DecontX skipped keeps its raw counts there) and
    ``obs["ambient_contamination"]`` (DecontX's estimated ambient fraction of each cell's
    counts, NaN where skipped). ``uns["bonemet"]["qc"][sample]`` = thresholds (for
    ``mad_scope="cluster"`` the loosest applied to any group), effective floors,
    ``n_before``, ``removed_<reason>``, ``n_after``, Hb summary, doublet and ambient status,
    and ``by_group`` (per pre-QC group: cells before, kept, removed by reason, thresholds;
    see :func:`qc_group_table`) and ``cells_removed`` (the QC metrics of every removed cell
    and its reason, an index into :data:`QC_REASONS`; see :func:`qc_cells_table`).
    """
    if mad_scope not in ("sample", "cluster"):
        raise InputError(f"mad_scope must be 'sample' or 'cluster', not {mad_scope!r}")
    if ambient not in AMBIENT_METHODS:
        raise InputError(f"ambient must be one of {', '.join(AMBIENT_METHODS)}, not {ambient!r}")
    if copy:
        adata = adata.copy()
    x = adata.X
    if not sp.issparse(x):
        x = sp.csr_matrix(np.asarray(x))
    x = sp.csr_matrix(x)
    bm = adata.uns.setdefault("bonemet", {})
    is_counts = bm.get("is_counts")
    if is_counts is None:
        is_counts = check_counts(x)[0]
    is_counts = bool(is_counts)
    species_ = resolve_species(adata, species, strict=False)
    mito = mito_genes(adata.var_names, species_)
    hb = hb_genes(adata.var_names, species_)
    adata.var["mito"] = mito
    adata.var["hb"] = hb
    if "sample" in adata.obs:
        samples = adata.obs["sample"].astype(str).to_numpy()
    else:
        name = next(iter(bm.get("inputs", {})), "sample")
        samples = np.full(adata.n_obs, name, dtype=object)
        adata.obs["sample"] = pd.Categorical(samples)
    cols = {
        "qc_total_counts": np.zeros(adata.n_obs, dtype=np.float64),
        "qc_n_genes": np.zeros(adata.n_obs, dtype=np.int64),
        "qc_pct_mito": np.zeros(adata.n_obs, dtype=np.float64),
        "qc_pct_hb": np.zeros(adata.n_obs, dtype=np.float64),
        "doublet_score": np.full(adata.n_obs, np.nan),
        "predicted_doublet": np.zeros(adata.n_obs, dtype=bool),
        GROUP_KEY: np.zeros(adata.n_obs, dtype=np.int64),
    }
    if ambient != "none":
        cols["ambient_contamination"] = np.full(adata.n_obs, np.nan)
    natives: list[tuple[np.ndarray, sp.csr_matrix]] = []
    big_loss: list[str] = []
    keep_all = np.zeros(adata.n_obs, dtype=bool)
    records = bm.setdefault("qc", {})
    # a list again after an h5ad round trip made it an array
    warn = bm["warnings"] = warnings_of(adata)
    kw = dict(
        mito=mito,
        hb=hb,
        is_counts=is_counts,
        min_counts=min_counts,
        min_genes=min_genes,
        max_pct_mito=max_pct_mito,
        mito_floor=mito_floor,
        nmads_counts=nmads_counts,
        nmads_genes=nmads_genes,
        nmads_mito=nmads_mito,
        mad_scope=mad_scope,
        group_resolution=group_resolution,
        min_group_cells=min_group_cells,
        floor_reference_genes=floor_reference_genes,
        ambient=ambient,
        decontx_estimate_delta=decontx_estimate_delta,
        doublets=doublets,
        doublet_rate=doublet_rate,
        seed=seed,
        high_hb_fraction=high_hb_fraction,
        remove_doublets=remove_doublets,
    )
    for s in pd.unique(samples):
        idx = np.flatnonzero(samples == s)
        m, keep, rec, native = _qc_one(x[idx], adata.obs_names[idx], str(s), **kw)
        for k in cols:
            cols[k][idx] = m[k]
        keep_all[idx] = keep
        if native is not None:
            natives.append((idx[keep], native))
        if rec["ambient"].startswith("skipped") and ambient != "none" and rec["n_after"]:
            warn.append(
                f"sample {s}: ambient correction {rec['ambient']}; layers['decontaminated'] "
                "holds its raw counts"
            )
        if rec["n_after"] == 0:
            thr = (
                f"min_counts {rec['threshold_min_counts']:.0f}, max_counts {rec['threshold_max_counts']:.0f}, "
                f"min_genes {rec['threshold_min_genes']:.0f}, max_genes {rec['threshold_max_genes']:.0f}, "
                f"max_pct_mito {rec['threshold_max_pct_mito']:.1f}"
            )
            removed = ", ".join(
                f"{r} {rec['removed_' + r]}" for r in QC_REASONS if rec["removed_" + r]
            )
            if not drop_empty:
                raise StageError(
                    f"sample {s!r} has no cell left after QC ({rec['n_before']} cells; removed: {removed}; "
                    f"thresholds: {thr}): lower the qc floors (qc.min_counts, qc.min_genes, "
                    "qc.max_pct_mito) or set qc.drop_empty_samples: true to drop the sample"
                )
            rec["dropped"] = True
            warn.append(f"sample {s}: no cell passed QC ({thr}); the sample was dropped")
            logger.warning("sample %s lost every cell in QC and was dropped", s)
        if rec["note"]:
            warn.append(f"sample {s}: {rec['note']}")
        if rec["doublets"].startswith("skipped") and doublets and is_counts:
            warn.append(f"sample {s}: doublet detection {rec['doublets']}")
        records[str(s)] = rec
        lost = rec["n_before"] - rec["n_after"]
        if (
            rec["n_before"]
            and not rec["dropped"]
            and lost > warn_removed_fraction * rec["n_before"]
        ):
            main = max(QC_REASONS, key=lambda r: rec["removed_" + r])
            thr_of = {
                "low_counts": f"min_counts {rec['threshold_min_counts']:.0f}",
                "high_counts": f"max_counts {rec['threshold_max_counts']:.0f}",
                "low_genes": f"min_genes {rec['threshold_min_genes']:.0f}",
                "high_genes": f"max_genes {rec['threshold_max_genes']:.0f}",
                "high_mito": f"max_pct_mito {rec['threshold_max_pct_mito']:.1f}",
                "doublet": "scrublet calls",
            }
            big_loss.append(
                f"sample {s}: QC removed {lost} of {rec['n_before']} cells "
                f"({100 * lost / rec['n_before']:.0f}%); main reason {main} "
                f"({rec['removed_' + main]} cells, {thr_of[main]}); check the thresholds "
                "(qc.min_counts, qc.min_genes, qc.max_pct_mito, qc.nmads_*) against the data"
            )
        logger.info(
            "QC %s: %d -> %d cells (%s)",
            s,
            rec["n_before"],
            rec["n_after"],
            ", ".join(f"{r}: {rec['removed_' + r]}" for r in QC_REASONS),
        )
    groups_col = cols.pop(GROUP_KEY)
    for k, v in cols.items():
        adata.obs[k] = v
    labels = np.array([f"c{int(g)}" for g in range(int(groups_col.max(initial=0)) + 1)])
    adata.obs[GROUP_KEY] = pd.Categorical(labels[groups_col] if adata.n_obs else [])
    bm.setdefault("parameters", {})["qc"] = {
        "min_counts": float(min_counts),
        "min_genes": float(min_genes),
        "max_pct_mito": float(max_pct_mito),
        "mito_floor": float(mito_floor),
        "nmads_counts": float(nmads_counts),
        "nmads_genes": float(nmads_genes),
        "nmads_mito": float(nmads_mito),
        "mad_scope": str(mad_scope),
        "group_resolution": float(group_resolution),
        "min_group_cells": int(min_group_cells),
        "floor_reference_genes": int(floor_reference_genes),
        "warn_removed_fraction": float(warn_removed_fraction),
        "ambient": str(ambient),
        "decontx_estimate_delta": bool(decontx_estimate_delta),
        "doublets": bool(doublets),
        "doublet_rate": float(doublet_rate),
        "remove_doublets": bool(remove_doublets),
        "seed": int(seed),
        "drop_empty": bool(drop_empty),
        "high_hb_fraction": float(high_hb_fraction),
    }
    if not keep_all.all():
        adata._inplace_subset_obs(keep_all)
    if ambient != "none":
        # rows in the order of the kept cells (ascending original position)
        pos = np.concatenate([p for p, _ in natives]) if natives else np.zeros(0, dtype=int)
        mats = [mat for _, mat in natives]
        layer = (
            sp.vstack(mats, format="csr")
            if mats
            else sp.csr_matrix((0, adata.n_vars), dtype=np.float32)
        )
        layer = sp.csr_matrix(layer[np.argsort(pos, kind="stable")], dtype=np.float32)
        adata.layers["decontaminated"] = layer
    for msg in big_loss:
        add_warning(adata, msg)
    if "sample" in adata.obs and isinstance(adata.obs["sample"].dtype, pd.CategoricalDtype):
        adata.obs["sample"] = adata.obs["sample"].cat.remove_unused_categories()
    return adata if copy else None


def qc_cells_table(adata: ad.AnnData) -> pd.DataFrame:
    """Every cell before QC: one row per cell, kept ones from ``obs`` and removed ones from
    ``uns["bonemet"]["qc"][sample]["cells_removed"]``.

    Columns ``sample``, ``qc_total_counts``, ``qc_n_genes``, ``qc_pct_mito``,
    ``qc_pct_hb`` (those recorded) and ``qc_removed`` (``""`` for a kept cell, else the
    first failing reason of :data:`QC_REASONS`). Empty when QC recorded no removed cells
    (an object from before this record existed).
    """
    recs = adata.uns.get("bonemet", {}).get("qc", {})
    cols = [c for c in REMOVED_CELL_METRICS if c in adata.obs.columns]
    parts = []
    if "sample" in adata.obs.columns and cols:
        kept = adata.obs[["sample", *cols]].copy()
        kept["sample"] = kept["sample"].astype(str)
        kept["qc_removed"] = ""
        parts.append(kept.reset_index(drop=True))
    for s, rec in recs.items():
        rc = dict(rec).get("cells_removed") if hasattr(rec, "get") else None
        if not hasattr(rc, "get") or "reason" not in rc:
            continue
        code = np.asarray(rc["reason"], dtype=int)
        gone = pd.DataFrame({c: np.asarray(rc[c], dtype=float) for c in cols if c in rc})
        gone.insert(0, "sample", str(s))
        gone["qc_removed"] = np.asarray(QC_REASONS, dtype=object)[code] if code.size else []
        parts.append(gone)
    if not parts:
        return pd.DataFrame(columns=["sample", *cols, "qc_removed"])
    return pd.concat(parts, ignore_index=True)


def qc_table(adata: ad.AnnData) -> pd.DataFrame:
    """One row per sample from ``uns["bonemet"]["qc"]``: ``n_before``, ``removed_<reason>``…,
    ``n_after``, ``median_pct_hb``, ``high_ambient_hb`` and the thresholds used."""
    recs = adata.uns.get("bonemet", {}).get("qc", {})
    if not recs:
        raise InputError("no QC records in uns['bonemet']['qc']: run bonemet.pp.qc first")
    df = pd.DataFrame.from_dict(
        {
            k: {kk: vv for kk, vv in dict(v).items() if kk not in ("by_group", "cells_removed")}
            for k, v in recs.items()
        },
        orient="index",
    )
    df.index.name = "sample"
    first = [
        "n_before",
        *[f"removed_{r}" for r in QC_REASONS],
        "n_after",
        "median_pct_hb",
        "high_ambient_hb",
    ]
    for c in first:
        if c not in df:
            df[c] = 0
    # h5ad stores dict keys sorted: sort the rest so a table rebuilt from a file is identical
    rest = sorted(c for c in df.columns if c not in first)
    df = df[first + rest].sort_index()
    for c in ["n_before", "n_after", *[f"removed_{r}" for r in QC_REASONS]]:
        df[c] = df[c].astype(int)
    df["high_ambient_hb"] = df["high_ambient_hb"].astype(bool)
    return df


def qc_group_table(adata: ad.AnnData) -> pd.DataFrame:
    """Cells kept and removed by reason per sample × pre-QC group (``uns["bonemet"]["qc"]
    [sample]["by_group"]``): columns ``sample``, ``group``, ``n_before``, ``kept``,
    ``removed_<reason>``…, ``removed``, ``removed_fraction``, group medians and the thresholds
    applied to the group. Groups are the per-sample pre-QC clusters (``c0``, ``c1`` …; one
    ``c0`` per sample when QC ran with ``mad_scope="sample"`` and no ambient correction)."""
    recs = adata.uns.get("bonemet", {}).get("qc", {})
    if not recs:
        raise InputError("no QC records in uns['bonemet']['qc']: run bonemet.pp.qc first")
    frames = []
    for sample, rec in recs.items():
        bg = dict(rec).get("by_group")
        if not isinstance(bg, dict) or "group" not in bg:
            continue
        df = pd.DataFrame({k: np.asarray(v).ravel() for k, v in bg.items()})
        df.insert(0, "sample", str(sample))
        frames.append(df)
    if not frames:
        raise InputError(
            "the QC records have no per-group counts (QC from an older bonemet): re-run bonemet qc"
        )
    df = pd.concat(frames, ignore_index=True)
    df["group"] = df["group"].astype(str)
    removed = [f"removed_{r}" for r in QC_REASONS]
    for c in ["n_before", "kept", *removed]:
        df[c] = df[c].astype(int)
    df["removed"] = df[removed].sum(axis=1)
    df["removed_fraction"] = (df["removed"] / df["n_before"].where(df["n_before"] > 0)).round(4)
    first = ["sample", "group", "n_before", "kept", *removed, "removed", "removed_fraction"]
    rest = sorted(c for c in df.columns if c not in first)
    order = df["group"].str[1:].astype(int)
    return (
        df.assign(_o=order)
        .sort_values(["sample", "_o"])
        .drop(columns="_o")[first + rest]
        .reset_index(drop=True)
    )
