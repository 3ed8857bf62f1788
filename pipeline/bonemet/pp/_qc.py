"""Per-sample quality control: metrics, MAD thresholds with fixed floors, doublets, Hb/ambient flags."""

from __future__ import annotations

import re
import warnings
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._counts import check_counts
from .._errors import InputError, StageError
from .._logging import logger
from .._meta import warnings_of
from .._species import resolve_species

__all__ = ["qc", "qc_table", "mito_genes", "hb_genes", "QC_REASONS"]

#: the reasons a cell is removed, in the order they are tested (a cell counts under its first)
QC_REASONS = ("low_counts", "high_counts", "low_genes", "high_genes", "high_mito", "doublet")
_MIN_CELLS_SCRUBLET = 100

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
    nmads_counts: float,
    nmads_genes: float,
    nmads_mito: float,
    doublets: bool,
    doublet_rate: float,
    seed: int,
    high_hb_fraction: float,
    remove_doublets: bool,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
    m = _metrics(x, mito, hb)
    n = x.shape[0]
    inf = float("inf")
    lc = np.log1p(m["qc_total_counts"])
    lg = np.log1p(m["qc_n_genes"].astype(float))

    def _bounds(v: np.ndarray, nm: float) -> tuple[float, float]:
        if v.size == 0:
            return -inf, inf
        mad = _mad(v)
        if mad == 0 or not np.isfinite(nm):
            return -inf, inf
        med = float(np.median(v))
        return float(np.expm1(med - nm * mad)), float(np.expm1(med + nm * mad))

    c_lo, c_hi = _bounds(lc, nmads_counts)
    g_lo, g_hi = _bounds(lg, nmads_genes)
    mito_mad_hi = inf
    if mito.any() and m["qc_pct_mito"].size:
        mad = _mad(m["qc_pct_mito"])
        if mad > 0 and np.isfinite(nmads_mito):
            mito_mad_hi = float(np.median(m["qc_pct_mito"]) + nmads_mito * mad)
    thr: dict[str, float] = {
        "min_counts": max(float(min_counts), c_lo),
        "max_counts": c_hi,
        "min_genes": max(float(min_genes), g_lo),
        "max_genes": g_hi,
        "max_pct_mito": min(float(max_pct_mito), mito_mad_hi),
    }
    skipped = ""
    if not is_counts:
        # values are not counts: only the detected-gene filters mean anything
        thr.update(min_counts=-inf, max_counts=inf, max_pct_mito=inf)
        skipped = "input is not raw counts: count and mito thresholds and doublets skipped"
    fails = {
        "low_counts": m["qc_total_counts"] < thr["min_counts"],
        "high_counts": m["qc_total_counts"] > thr["max_counts"],
        "low_genes": m["qc_n_genes"] < thr["min_genes"],
        "high_genes": m["qc_n_genes"] > thr["max_genes"],
        "high_mito": m["qc_pct_mito"] > thr["max_pct_mito"],
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
    m["doublet_score"] = scores
    m["predicted_doublet"] = calls
    m["_keep"] = keep
    med_hb = float(np.median(m["qc_pct_hb"])) if n else 0.0
    rec: dict[str, Any] = {
        "n_before": int(n),
        **{f"removed_{r}": int(np.sum(reason == r)) for r in QC_REASONS},
        "n_after": int(keep.sum()),
        **{f"threshold_{k}": float(v) for k, v in thr.items()},
        "floor_min_counts": float(min_counts),
        "floor_min_genes": float(min_genes),
        "floor_max_pct_mito": float(max_pct_mito),
        "nmads_counts": float(nmads_counts),
        "nmads_genes": float(nmads_genes),
        "nmads_mito": float(nmads_mito),
        "n_mito_genes": int(mito.sum()),
        "n_hb_genes": int(hb.sum()),
        "median_pct_mito": float(np.median(m["qc_pct_mito"])) if n else 0.0,
        "median_pct_hb": med_hb,
        "high_ambient_hb": bool(med_hb / 100.0 > high_hb_fraction),
        "n_predicted_doublets": int(calls.sum()),
        "doublets": status,
        "note": skipped,
        "dropped": False,
    }
    return m, keep, rec


def qc(
    adata: ad.AnnData,
    *,
    min_counts: float = 500,
    min_genes: float = 200,
    max_pct_mito: float = 20.0,
    nmads_counts: float = 5.0,
    nmads_genes: float = 5.0,
    nmads_mito: float = 3.0,
    doublets: bool = True,
    doublet_rate: float = 0.06,
    remove_doublets: bool = True,
    seed: int = 0,
    drop_empty: bool = False,
    high_hb_fraction: float = 0.01,
    species: str = "auto",
    copy: bool = False,
) -> ad.AnnData | None:
    """Per-sample quality control of raw counts.

    For each sample (``obs["sample"]``; the whole object if absent) compute metrics, derive
    MAD thresholds on ``log1p`` total counts and ``log1p`` detected genes (both sides) and on
    % mito (high side) — ``median ± nmads × MAD``, the MAD scaled by 1.4826 as in scater's
    ``isOutlier`` (so ``nmads`` is roughly a number of standard deviations) — combine them with the fixed
    floors (``min_counts``, ``min_genes`` raise the low side; ``max_pct_mito`` caps mito), call
    doublets with scanpy's scrublet on the cells that passed, and remove failing cells.

    Parameters
    ----------
    adata
        Raw counts in ``X`` (one sample, or several: each gets its own thresholds).
    min_counts, min_genes, max_pct_mito
        Fixed floors applied to every sample.
    nmads_counts, nmads_genes, nmads_mito
        MAD multipliers (``inf`` disables a side).
    doublets, doublet_rate, remove_doublets, seed
        scrublet per sample (``expected_doublet_rate``, exact nearest neighbours) on the cells
        that passed the other filters; samples with < 100 such cells are skipped with the
        reason recorded.
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
    ``None`` (in place) or the filtered AnnData. Sets ``obs["qc_total_counts"]``,
    ``obs["qc_n_genes"]``, ``obs["qc_pct_mito"]``, ``obs["qc_pct_hb"]``, ``obs["doublet_score"]``,
    ``obs["predicted_doublet"]``, ``var["mito"]``, ``var["hb"]`` and
    ``uns["bonemet"]["qc"][sample]`` = thresholds, ``n_before``, ``removed_<reason>``, ``n_after``,
    Hb summary, doublet status.
    """
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
    }
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
        nmads_counts=nmads_counts,
        nmads_genes=nmads_genes,
        nmads_mito=nmads_mito,
        doublets=doublets,
        doublet_rate=doublet_rate,
        seed=seed,
        high_hb_fraction=high_hb_fraction,
        remove_doublets=remove_doublets,
    )
    for s in pd.unique(samples):
        idx = np.flatnonzero(samples == s)
        m, keep, rec = _qc_one(x[idx], adata.obs_names[idx], str(s), **kw)
        for k in cols:
            cols[k][idx] = m[k]
        keep_all[idx] = keep
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
        logger.info(
            "QC %s: %d -> %d cells (%s)",
            s,
            rec["n_before"],
            rec["n_after"],
            ", ".join(f"{r}: {rec['removed_' + r]}" for r in QC_REASONS),
        )
    for k, v in cols.items():
        adata.obs[k] = v
    bm.setdefault("parameters", {})["qc"] = {
        "min_counts": float(min_counts),
        "min_genes": float(min_genes),
        "max_pct_mito": float(max_pct_mito),
        "nmads_counts": float(nmads_counts),
        "nmads_genes": float(nmads_genes),
        "nmads_mito": float(nmads_mito),
        "doublets": bool(doublets),
        "doublet_rate": float(doublet_rate),
        "remove_doublets": bool(remove_doublets),
        "seed": int(seed),
        "drop_empty": bool(drop_empty),
        "high_hb_fraction": float(high_hb_fraction),
    }
    if not keep_all.all():
        adata._inplace_subset_obs(keep_all)
    if "sample" in adata.obs and isinstance(adata.obs["sample"].dtype, pd.CategoricalDtype):
        adata.obs["sample"] = adata.obs["sample"].cat.remove_unused_categories()
    return adata if copy else None


def qc_table(adata: ad.AnnData) -> pd.DataFrame:
    """One row per sample from ``uns["bonemet"]["qc"]``: ``n_before``, ``removed_<reason>``…,
    ``n_after``, ``median_pct_hb``, ``high_ambient_hb`` and the thresholds used."""
    recs = adata.uns.get("bonemet", {}).get("qc", {})
    if not recs:
        raise InputError("no QC records in uns['bonemet']['qc']: run bonemet.pp.qc first")
    df = pd.DataFrame.from_dict({k: dict(v) for k, v in recs.items()}, orient="index")
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
