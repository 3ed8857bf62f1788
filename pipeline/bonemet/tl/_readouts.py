"""Read-outs of the scores: summaries per group, pseudobulk ssGSEA, erythroid mimicry
(globins against a library-size-matched background, erythroid identity read separately, a
graded ambient guard), gene-set overlaps and the net ferroptosis index.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._counts import is_counts
from .._errors import InputError
from .._logging import logger
from .._meta import add_warning, bonemet_uns
from .._signatures import load_gene_sets, match_genes
from .._species import resolve_species
from .._vocab import (
    TUMOUR,
)
from ._score import (
    _BACKGROUND_POPULATIONS,
    DECONTAMINATED,
    ERYTHROID_CELL_TYPES,
    ERYTHROID_POPULATIONS,
    HB_BACKGROUND_CELL_TYPES,
    _coverage_table,
    _drop_warnings,
    _obs_str,
)

__all__ = [
    "score_summary",
    "pseudobulk_enrichment",
    "erythroid_mimicry",
    "erythroid_mimicry_calls",
    "wilson_interval",
    "MIMICRY_CLASSES",
    "gene_set_overlap",
    "ferroptosis_index",
    "ferroptosis_genes",
]


# --------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------
_SCORE_KEY = re.compile(r"^(score|aucell)_(.+)$")


def _gmm_threshold(x: np.ndarray, seed: int) -> float:
    """Where the posterior of the higher-mean component of a 2-Gaussian mixture reaches 0.5."""
    from sklearn.mixture import GaussianMixture

    x = x[np.isfinite(x)]
    if x.size < 10 or np.ptp(x) == 0:
        return float("nan")
    gm = GaussianMixture(n_components=2, random_state=seed).fit(x[:, None])
    hi = int(np.argmax(gm.means_.ravel()))
    grid = np.linspace(x.min(), x.max(), 2001)
    post = gm.predict_proba(grid[:, None])[:, hi]
    lo_mean, hi_mean = np.sort(gm.means_.ravel())
    between = (grid >= lo_mean) & (grid <= hi_mean) & (post >= 0.5)
    if between.any():
        return float(grid[np.argmax(between)])
    above = post >= 0.5
    return float(grid[np.argmax(above)]) if above.any() else float("nan")


def score_summary(
    adata: AnnData,
    *,
    groupby: str | Sequence[str] = ("population", "sample"),
    keys: Sequence[str] | None = None,
    threshold: str = "percentile",
    quantile: float = 0.95,
    reference: Sequence[str] | None = None,
    reference_key: str = "population",
    seed: int = 0,
) -> pd.DataFrame:
    """Mean score and fraction of cells above a data-derived threshold, per group.

    Parameters
    ----------
    adata
        Scored data (:func:`score`).
    groupby
        obs column(s) to group by, default population x sample.
    keys
        Score columns; default the ``obs["score_*"]`` and ``obs["aucell_*"]`` columns of the
        sets :func:`score` recorded as scored (all such columns when none is recorded).
    threshold
        ``"percentile"``: the ``quantile`` of the score in the reference cells;
        ``"gmm"``: the point where the upper component of a two-Gaussian mixture, fitted to the
        reference cells' scores, becomes more likely than the lower one.
    quantile
        For ``threshold="percentile"`` (default 0.95).
    reference
        Values of ``obs[reference_key]`` that make the reference (e.g. benign populations);
        default all cells, so that 5% of all cells lie above the 95th-percentile threshold
        and a group's fraction reads as enrichment over that.
    reference_key
        obs column that ``reference`` refers to.
    seed
        Seeds the mixture fit.

    Returns
    -------
    Long table: the groupby columns, ``set``, ``method``, ``key``, ``n_cells``, ``mean``,
    ``median``, ``fraction_above``, ``threshold``, ``threshold_method``, ``reference``.
    """
    groupby = [groupby] if isinstance(groupby, str) else list(groupby)
    for g in groupby:
        if g not in adata.obs:
            raise InputError(
                f"obs[{g!r}] is missing; run bm.tl.annotate for 'population' or choose groupby= from {list(adata.obs.columns)}"
            )
    if keys is None:
        # the columns bm.tl.score wrote (recorded), else every score_*/aucell_* column
        recorded = {
            name for name, r in bonemet_uns(adata).get("gene_sets", {}).items() if r.get("scored")
        }
        keys = [k for k in adata.obs.columns if _SCORE_KEY.match(str(k))]
        if recorded:
            keys = [k for k in keys if _SCORE_KEY.match(str(k)).group(2) in recorded]
    missing = [k for k in keys if k not in adata.obs]
    if not keys or missing:
        raise InputError(
            f"no score columns to summarise{f' (missing {missing})' if missing else ''}; run bm.tl.score first"
        )
    if threshold not in ("percentile", "gmm"):
        raise InputError(f"threshold must be 'percentile' or 'gmm', not {threshold!r}")
    if not 0 < quantile < 1:
        raise InputError(f"quantile must be within (0, 1), not {quantile!r}")
    if reference is None:
        ref_mask = np.ones(adata.n_obs, dtype=bool)
        ref_label = "all cells"
    else:
        vals = _obs_str(adata, reference_key, hint="choose reference_key= naming an obs column")
        ref_mask = vals.isin(list(reference)).to_numpy()
        if not ref_mask.any():
            raise InputError(
                f"no cells with obs[{reference_key!r}] in {list(reference)}; choose another reference"
            )
        ref_label = f"{reference_key} in {sorted(reference)}"
    method_name = f"percentile {quantile:g}" if threshold == "percentile" else "gmm"
    obs = adata.obs[groupby].copy()
    for g in groupby:
        obs[g] = obs[g].astype(str)
    frames = []
    for key in keys:
        x = pd.to_numeric(adata.obs[key], errors="coerce").to_numpy(dtype=np.float64)
        ref = x[ref_mask & np.isfinite(x)]
        if threshold == "percentile":
            thr = float(np.quantile(ref, quantile)) if ref.size else float("nan")
        else:
            thr = _gmm_threshold(ref, seed)
        df = obs.assign(_x=x, _above=x > thr)
        agg = df.groupby(groupby, observed=True, sort=True).agg(
            n_cells=("_x", "size"),
            mean=("_x", "mean"),
            median=("_x", "median"),
            fraction_above=("_above", "mean"),
        )
        agg = agg.reset_index()
        m = _SCORE_KEY.match(str(key))
        agg.insert(len(groupby), "set", m.group(2) if m else str(key))
        agg.insert(
            len(groupby) + 1,
            "method",
            {"score": "score_genes", "aucell": "aucell"}[m.group(1)] if m else "custom",
        )
        agg.insert(len(groupby) + 2, "key", str(key))
        agg["threshold"] = thr
        agg["threshold_method"] = method_name
        agg["reference"] = ref_label
        if not np.isfinite(thr):
            agg["fraction_above"] = np.nan
        frames.append(agg)
    return pd.concat(frames, ignore_index=True)


def _counts_matrix(adata: AnnData, layer: str | None) -> Any:
    if layer == "auto":
        layer = DECONTAMINATED if DECONTAMINATED in adata.layers else "counts"
    if layer is not None and layer in adata.layers:
        return adata.layers[layer]
    if is_counts(adata.X, empty=False):
        return adata.X
    raise InputError(
        f"layers[{layer!r}] is missing and adata.X does not hold counts; pseudobulk sums raw counts: "
        "keep them in layers['counts'] (bm.pp.normalize does) or pass layer= naming a counts layer"
    )


def _group_codes(adata: AnnData, groupby: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    for g in groupby:
        if g not in adata.obs:
            raise InputError(
                f"obs[{g!r}] is missing; run bm.tl.annotate for 'population' or choose groupby= from {list(adata.obs.columns)}"
            )
    keys = adata.obs[groupby].astype(str)
    grouped = keys.groupby(groupby, sort=True)
    codes = grouped.ngroup().to_numpy(dtype=np.int64)
    groups = grouped.size().index.to_frame(index=False)
    return codes, groups


def pseudobulk_enrichment(
    adata: AnnData,
    *,
    groupby: str | Sequence[str] = ("population", "sample"),
    min_cells: int = 10,
    gene_sets: None | str | Sequence[str] | Mapping[str, Sequence[str]] = None,
    species: str = "auto",
    min_coverage: float = 0.5,
    layer: str | None = "auto",
    min_size: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """ssGSEA (gseapy, offline) of gene sets on pseudobulk profiles per group.

    Counts (``layers[layer]``; default ``"auto"``: the ambient-corrected
    ``layers["decontaminated"]`` when QC wrote it, else ``layers["counts"]``) are summed per group (population x
    sample by default; groups with fewer than ``min_cells`` cells are skipped), scaled to CPM
    and log1p-transformed; :func:`gseapy.ssgsea` then scores every gene set (species-aware,
    case-robust matching; sets below ``min_coverage`` are skipped, as in :func:`score`).

    Returns
    -------
    Long, CSV-ready table: the groupby columns, ``n_cells``, ``set``, ``n_genes``,
    ``coverage``, ``ES`` (enrichment score), ``NES`` (gseapy's ssGSEA normalisation: ES
    divided by the range of all ES). Empty (same columns) when no group is large enough.
    """
    import gseapy

    groupby = [groupby] if isinstance(groupby, str) else list(groupby)
    if min_cells < 1:
        raise InputError(f"min_cells must be >= 1, not {min_cells!r}")
    counts = _counts_matrix(adata, layer)
    codes, groups = _group_codes(adata, groupby)
    n_cells = np.bincount(codes, minlength=len(groups))
    kept = np.flatnonzero(n_cells >= min_cells)
    cols = [*groupby, "n_cells", "set", "n_genes", "coverage", "ES", "NES"]
    sp_, table = _coverage_table(adata, gene_sets, species, min_coverage)
    sets = {r["name"]: r["genes"] for r in table if r["scored"] and len(r["genes"]) >= min_size}
    for r in table:
        if r["name"] not in sets:
            logger.warning(
                "pseudobulk ssGSEA: gene set %r skipped (%s)",
                r["name"],
                r["reason"] or f"fewer than {min_size} genes",
            )
    if kept.size == 0 or not sets:
        logger.warning(
            "pseudobulk ssGSEA: nothing to score (%d groups with >= %d cells, %d usable gene sets)",
            kept.size,
            min_cells,
            len(sets),
        )
        return pd.DataFrame(columns=cols)
    ind = sp.csr_matrix(
        (np.ones(codes.size), (codes, np.arange(codes.size))), shape=(len(groups), adata.n_obs)
    )[kept]
    sums = ind @ (counts if sp.issparse(counts) else np.asarray(counts))
    sums = np.asarray(sums.toarray() if sp.issparse(sums) else sums, dtype=np.float64)
    lib = sums.sum(axis=1, keepdims=True)
    lib[lib == 0] = 1.0
    expr = np.log1p(sums / lib * 1e6)
    present = expr.max(axis=0) > 0
    labels = [f"g{i}" for i in kept]
    df = pd.DataFrame(
        expr[:, present].T, index=np.asarray(adata.var_names)[present].astype(str), columns=labels
    )
    in_data = set(df.index)
    sets = {k: [g for g in v if g in in_data] for k, v in sets.items()}
    res = gseapy.ssgsea(
        data=df,
        gene_sets=sets,
        outdir=None,
        sample_norm_method="rank",
        min_size=min_size,
        max_size=max(5000, max(len(v) for v in sets.values())),
        permutation_num=0,
        threads=1,
        seed=seed,
        no_plot=True,
        verbose=False,
    ).res2d
    out = res.rename(columns={"Name": "_label", "Term": "set"})
    out["ES"] = out["ES"].astype(np.float64)
    out["NES"] = out["NES"].astype(np.float64)
    meta = groups.iloc[kept].copy()
    meta["n_cells"] = n_cells[kept]
    meta["_label"] = labels
    out = meta.merge(out, on="_label", how="inner")
    cov = {r["name"]: r["coverage"] for r in table}
    out["n_genes"] = out["set"].map({k: len(v) for k, v in sets.items()}).astype(int)
    out["coverage"] = out["set"].map(cov).astype(float)
    return out[cols].sort_values([*groupby, "set"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------
# erythroid mimicry with an ambient guard
# --------------------------------------------------------------------------------------
def _lineages(adata: AnnData) -> pd.Series:
    """obs["cell_type"], or lineage derived from obs["population"] where cell_type is absent."""
    if "cell_type" in adata.obs:
        return adata.obs["cell_type"].astype(str)
    pop = _obs_str(
        adata, "population", hint="run bm.tl.annotate first (it writes cell_type and population)"
    )
    out = pd.Series("other", index=adata.obs_names, dtype=object)
    for lineage, rule in _BACKGROUND_POPULATIONS.items():
        out[pop.map(rule).to_numpy(dtype=bool)] = lineage
    out[pop == TUMOUR] = TUMOUR
    out[pop.isin(ERYTHROID_POPULATIONS)] = "Erythroid"
    return out


def wilson_interval(k: Any, n: Any, *, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion ``k / n`` (NaN where ``n == 0``)."""
    from scipy.stats import norm

    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = float(norm.ppf(0.5 + level / 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        den = 1 + z**2 / n
        mid = (p + z**2 / (2 * n)) / den
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    lo, hi = np.clip(mid - half, 0, 1), np.clip(mid + half, 0, 1)
    bad = ~(n > 0)
    lo, hi = np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)
    return lo, hi


def _betabinom_fit(k: np.ndarray, n: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood beta-binomial (alpha, beta) of ``k`` successes in ``n`` trials.

    The per-cell share of a background cell's counts that come from the gene group varies
    from cell to cell (how much ambient RNA each droplet caught) on top of counting noise;
    the beta-binomial models both, so its tail is the right null for a cell of any size.
    """
    from scipy.optimize import minimize
    from scipy.special import betaln

    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    # an all-zero background still gets a finite null: half a count over the pooled total
    mu = max(k.sum(), 0.5) / max(n.sum(), 1.0)
    mu = min(mu, 0.5)

    def nll(x: np.ndarray) -> float:
        a, b = np.exp(x)
        return -float(np.sum(betaln(k + a, n - k + b) - betaln(a, b)))

    s0 = 100.0
    res = minimize(nll, np.log([mu * s0, (1 - mu) * s0]), method="Nelder-Mead",
                   options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 2000})  # fmt: skip
    a, b = np.exp(res.x)
    if not (np.isfinite(a) and np.isfinite(b)) or a <= 0 or b <= 0:
        a, b = mu * s0, (1 - mu) * s0
    return float(a), float(b)


def _betabinom_sf(k: np.ndarray, n: np.ndarray, a: float, b: float) -> np.ndarray:
    """P(K >= k) under BetaBinomial(n, a, b), per cell."""
    from scipy.stats import betabinom

    return np.clip(betabinom.sf(np.asarray(k) - 1, np.asarray(n), a, b), 0.0, 1.0)


def _betabinom_wfit(
    k: np.ndarray, n: np.ndarray, w: np.ndarray, mu0: float, conc0: float
) -> tuple[float, float]:
    """Weighted maximum-likelihood beta-binomial (mean, concentration)."""
    from scipy.optimize import minimize
    from scipy.special import betaln

    def nll(x: np.ndarray) -> float:
        mu = 1.0 / (1.0 + np.exp(-x[0]))
        c = np.exp(x[1])
        return -float(np.sum(w * (betaln(k + mu * c, n - k + (1 - mu) * c)
                                  - betaln(mu * c, (1 - mu) * c))))  # fmt: skip

    mu0 = float(np.clip(mu0, 1e-7, 0.5))
    x0 = np.array([np.log(mu0 / (1 - mu0)), np.log(np.clip(conc0, 1.0, 1e8))])
    res = minimize(nll, x0, method="Nelder-Mead",
                   options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 2000})  # fmt: skip
    x = res.x if np.all(np.isfinite(res.x)) else x0
    return float(1.0 / (1.0 + np.exp(-x[0]))), float(np.exp(x[1]))


def _betabinom_null_mixture(
    k: np.ndarray, n: np.ndarray, mu0: float, conc0: float, *, max_iter: int = 200
) -> tuple[tuple[float, float], float]:
    """Empirical null of globin counts among a sample's tumour cells.

    A two-component beta-binomial mixture fitted by EM to ``(k, n)``: the lower component
    is the null (the tumour cells' own residual ambient globin, its mean and its
    cell-to-cell spread), the upper one the globin-making cells. EM runs from three starts
    (null at ``mu0``; upper component wide and common, or narrow and rare) and the fit with
    the highest likelihood is kept. Returns the null's (alpha, beta) and its weight ``pi0``.
    Ambient correction leaves each cell type its own residual level and spread of ambient
    globin, so a null borrowed from T/B/NK cells, even with its mean moved, is miscalibrated
    for tumour cells; fitted to the tumour cells it is not.
    """
    from scipy.special import betaln, gammaln

    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    const = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)

    def logpmf(mu: float, c: float) -> np.ndarray:
        return const + betaln(k + mu * c, n - k + (1 - mu) * c) - betaln(mu * c, (1 - mu) * c)

    mu0 = float(np.clip(mu0, 1e-7, 0.5))
    c0 = float(np.clip(conc0, 1.0, 1e8))
    frac = k / np.maximum(n, 1.0)
    hi = [float(np.clip(max(np.quantile(frac, q), 3 * mu0), 1e-6, 0.9)) for q in (0.95, 0.99)]
    starts = [(mu0, c0, hi[0], 20.0, 0.85), (mu0, c0 / 5, 6 * mu0, 100.0, 0.95),
              (mu0, c0 / 10, hi[1], 50.0, 0.97)]  # fmt: skip
    best: tuple[float, float, float, float] | None = None
    for m0, cc0, m1, cc1, pi0 in starts:
        ll_old = -np.inf
        for _ in range(max_iter):
            l0 = np.log(pi0) + logpmf(m0, cc0)
            l1 = np.log(1 - pi0) + logpmf(m1, cc1)
            m = np.maximum(l0, l1)
            tot = np.exp(l0 - m) + np.exp(l1 - m)
            ll = float(np.sum(m + np.log(tot)))
            w0 = np.exp(l0 - m) / tot
            pi0 = float(np.clip(w0.mean(), 0.05, 0.999))
            m0, cc0 = _betabinom_wfit(k, n, w0, m0, cc0)
            m1, cc1 = _betabinom_wfit(k, n, 1 - w0, m1, cc1)
            if m1 < m0:  # the null is the lower component
                m0, cc0, m1, cc1, pi0 = m1, cc1, m0, cc0, 1 - pi0
            if abs(ll - ll_old) <= 1e-7 * abs(ll):
                break
            ll_old = ll
        l0 = np.log(pi0) + logpmf(m0, cc0)
        l1 = np.log(1 - pi0) + logpmf(m1, cc1)
        m = np.maximum(l0, l1)
        ll = float(np.sum(m + np.log(np.exp(l0 - m) + np.exp(l1 - m))))
        if np.isfinite(ll) and pi0 >= 0.5 and (best is None or ll > best[0]):
            best = (ll, m0, cc0, pi0)
    # one component (every tumour cell null) unless two fit better by BIC (3 more
    # parameters) with the null holding most cells: a majority of tumour cells are not
    # mimics, and without these checks a global null splits into two components itself
    m1_, c1_ = _betabinom_wfit(k, n, np.ones_like(k), mu0, c0)
    ll1 = float(np.sum(logpmf(m1_, c1_)))
    if best is None or best[3] < 0.5 or best[0] - ll1 <= 1.5 * np.log(max(k.size, 2)):
        return (m1_ * c1_, (1 - m1_) * c1_), 1.0
    _, m0, cc0, pi0 = best
    return (m0 * cc0, (1 - m0) * cc0), pi0


def _background_null(kb: np.ndarray, nb: np.ndarray, min_background: int) -> tuple[float, float]:
    """Beta-binomial of the background cells' globin counts, with one robust pass:
    background cells far outside the first fit (undetected doublets with an erythroid
    cell) do not widen the null."""
    a_, b_ = _betabinom_fit(kb, nb)
    keep = _betabinom_sf(kb, nb, a_, b_) > 1e-4
    if (~keep).any() and keep.sum() >= min_background:
        a_, b_ = _betabinom_fit(kb[keep], nb[keep])
    return a_, b_


def _mimicry_null_fits(
    samples: pd.Series,
    tumour: np.ndarray,
    bg: np.ndarray,
    hb: np.ndarray,
    total: np.ndarray,
    frac: np.ndarray,
    *,
    null: str,
    min_background: int,
    min_tumour_null: int,
) -> dict[Any, tuple[tuple[float, float], tuple[tuple[float, float], float] | None]]:
    """Per sample with enough background cells: the background fit ``(alpha, beta)`` and,
    where ``null="tumour_mixture"`` and it has ``min_tumour_null`` tumour cells, the null
    fitted to its tumour cells (two-component mixture, started from the background with
    its mean at the tumour cells' median when higher) with its weight, else None."""
    fits = {}
    for s in sorted(samples.unique()):
        ins = (samples == s).to_numpy()
        t, b = tumour & ins, bg & ins
        if b.sum() < min_background:
            continue
        a_, b_ = _background_null(np.rint(hb[b]), np.rint(total[b]), min_background)
        mix = None
        if null == "tumour_mixture" and t.sum() >= min_tumour_null:
            mu_start = max(a_ / (a_ + b_), float(np.median(frac[t])))
            mix = _betabinom_null_mixture(np.rint(hb[t]), np.rint(total[t]), mu_start, a_ + b_)
        fits[s] = ((a_, b_), mix)
    return fits


#: samples with a tumour-cell null needed before a small sample borrows theirs
_MIN_BORROW = 2


def _borrowed_null(fits: Mapping[Any, Any]) -> tuple[float, float, int] | None:
    """What the run's fitted tumour-cell nulls say, for samples too small to fit their own:
    the median ratio of the null's mean globin share to the sample's background mean (how
    much more residual ambient tumour cells keep), the median squared coefficient of
    variation of the null (its cell-to-cell spread, ``(1 - mu) rho / mu``), and how many
    samples they come from; None below :data:`_MIN_BORROW` samples.

    The T/B/NK null of a small sample, even with its mean raised to the tumour median,
    keeps the background's narrow spread: on a generated 20k-cell, 8-sample run it called
    15 of 18 tumour cells in a sample with one true mimic, against fitted tumour nulls that
    are 1.2-1.9x the background mean with 2-6x its overdispersion."""
    ratios, cv2 = [], []
    for (a_bg, b_bg), mix in fits.values():
        if mix is None:
            continue
        (a0, b0), _ = mix
        mu_bg, mu0 = a_bg / (a_bg + b_bg), a0 / (a0 + b0)
        if mu_bg > 0 and mu0 > 0:
            ratios.append(max(mu0 / mu_bg, 1.0))
            cv2.append((1 - mu0) / (a0 + b0 + 1.0) / mu0)
    if len(ratios) < _MIN_BORROW:
        return None
    return float(np.median(ratios)), float(np.median(cv2)), len(ratios)


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values."""
    p = np.asarray(p, dtype=np.float64)
    n = p.size
    if n == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def _mimicry_counts(adata: AnnData, layer: str | None) -> tuple[Any, str]:
    """(counts matrix, its name) for the mimicry read-out.

    ``"auto"``: ``layers["decontaminated"]`` (ambient-corrected by QC) when present, else
    ``layers["counts"]``; a named layer when present; else ``expm1(X)`` (CP10k).
    """
    if layer == "auto":
        for name in (DECONTAMINATED, "counts"):
            if name in adata.layers:
                return adata.layers[name], name
    elif layer is not None and layer in adata.layers:
        return adata.layers[layer], layer
    X = adata.X
    logger.warning(
        "erythroid_mimicry: no %s layer; using expm1(X) (CP10k), so count floors do not apply",
        "decontaminated or counts" if layer == "auto" else repr(layer),
    )
    return (X.expm1() if sp.issparse(X) else np.expm1(np.asarray(X))), "expm1(X)"


def _row_sums(M: Any, idx: Sequence[int] | None = None) -> np.ndarray:
    sub = M if idx is None else M[:, list(idx)]
    return np.asarray(sub.sum(axis=1)).ravel().astype(np.float64)


def _ambient_grade(frac: float, moderate: float, high: float) -> str:
    if not np.isfinite(frac):
        return "unknown"
    return "low" if frac < moderate else ("moderate" if frac < high else "high")


#: values of ``obs["erythroid_mimicry_class"]``
MIMICRY_CLASSES = (
    "globin_only",  # called: globins above the matched background, no erythroid identity
    "globin_and_identity",  # globins with erythroid identity: an erythroid cell or a doublet
    "possible_doublet",  # globin-positive, but a doublet score in the tumour cells' top tail
    "below_background",  # tumour cell, globins not above the background
    "not_assessed",  # not a tumour cell, a predicted doublet, or no threshold in the sample
)


def erythroid_mimicry(
    adata: AnnData,
    *,
    sample_key: str = "sample",
    background: Sequence[str] = HB_BACKGROUND_CELL_TYPES,
    fdr: float = 0.05,
    null: str = "tumour_mixture",
    min_background: int = 20,
    min_tumour_null: int = 30,
    min_hb_counts: int = 2,
    min_fold: float = 1.0,
    identity_level: float = 0.5,
    min_identity_counts: int = 2,
    null_floor: bool = True,
    doublet_quantile: float | None = 0.95,
    ambient_moderate: float = 0.002,
    ambient_max: float = 0.01,
    ci_level: float = 0.95,
    layer: str | None = "auto",
    species: str = "auto",
    key_added: str = "erythroid_mimicry_call",
) -> pd.DataFrame:
    """Erythroid mimicry in tumour cells: globins above a library-size-matched background,
    without erythroid identity.

    For every cell, ``k`` = counts of the globin core (``erythroid_mimicry_core``: HBB, HBA1,
    HBA2; mouse Hbb-bs, Hbb-bt, Hba-a1, Hba-a2) out of its ``n`` counts, read from the
    ambient-corrected counts (``layers["decontaminated"]``) when QC wrote them, else from
    ``layers["counts"]``.

    1. **Null matched for library size.** A beta-binomial of ``(k, n)`` (cell-to-cell
       variation of the ambient share on top of counting noise); a tumour cell's p-value is
       ``P(K >= k | n)`` under it *at its own n*, so a tumour cell with 3x the UMIs of a T
       cell is held to the same globin share, not to the T cells' noisier per-cell
       fractions. In each sample the cells that cannot make haemoglobin (``background``
       lineages: T, B, NK; predicted doublets left out) give the background fit (one robust
       pass). ``null="tumour_mixture"`` (default): ambient correction leaves each cell type
       its own residual level *and spread* of ambient globin, so the null is fitted to the
       sample's tumour cells themselves: a two-component beta-binomial mixture (EM from the
       background fit, three starts, best likelihood), whose lower component is the null
       and whose upper one holds the globin-making cells (weight ``1 - null_weight``).
       A sample with fewer than ``min_tumour_null`` tumour cells borrows the tumour-cell
       null of the run's other samples (when at least two have one): its mean is this
       sample's background mean times their median ratio of null to background mean, its
       spread their median squared coefficient of variation, its mean raised to this
       sample's tumour median when higher (``null_floor``); ``null_source`` "borrowed".
       Without two such samples, and with ``null="background"``, the background fit is
       used, its mean raised to the tumour cells' median share when higher
       (``null_floor``; its coefficient of variation kept). p-values are
       Benjamini-Hochberg adjusted within the sample's tumour cells; ``q <= fdr``,
       ``k >= min_hb_counts`` and a globin share at least ``min_fold`` x the null mean make
       a globin-positive cell.
    2. **Globins vs erythroid identity.** Erythroid identity (``erythroid_identity``: KLF1,
       GATA1, GYPA, SLC4A1, CA1, AHSP) is read separately. A globin-positive tumour cell
       whose identity share reaches ``identity_level`` x the median identity share of the
       sample's erythroid cells (and has ``>= min_identity_counts`` identity counts) is
       ``globin_and_identity``: an erythroid cell or a doublet with one, not called. The
       others are ``globin_only``: the mimicry calls.
    3. Erythroid cells (``cell_type == "Erythroid"`` / ``population == "Erythroid
       progenitor"``) and predicted doublets are never called. A globin-positive cell whose
       ``obs["doublet_score"]`` lies above the ``doublet_quantile`` of the sample's assessed
       tumour cells' scores is ``possible_doublet`` (a doublet with an erythroid cell that
       Scrublet kept), not a call. Every call's doublet score is in
       :func:`erythroid_mimicry_calls`.
    4. **Ambient guard, graded.** The pooled globin share of the background cells in the
       counts used is graded ``low`` (< ``ambient_moderate``), ``moderate`` or ``high``
       (>= ``ambient_max``; a warning is recorded). With corrected counts the grade reads the
       ambient left after correction; the raw-count share is reported alongside.

    Parameters
    ----------
    adata
        Annotated data (``obs["cell_type"]`` or ``obs["population"]``, ``obs[sample_key]``).
    background
        ``cell_type`` values used as the no-haemoglobin background.
    fdr
        Benjamini-Hochberg level for globin-positive cells, per sample.
    null
        ``"tumour_mixture"`` or ``"background"`` (see 1.).
    min_background
        Fewer background cells in a sample: no null and no calls there (noted).
    min_tumour_null
        Fewer tumour cells in a sample: the background null is used there (noted).
    min_hb_counts
        Minimum globin counts for a call (not applied to ``expm1(X)``).
    min_fold
        Minimum globin share of a call relative to the null mean (1: the test alone).
    identity_level, min_identity_counts
        When a globin-positive cell counts as having erythroid identity (see 2.).
    null_floor
        Raise the null's mean to the tumour cells' median globin share when higher (see 1.).
    doublet_quantile
        Doublet-score quantile above which a globin-positive cell is ``possible_doublet``
        (see 3.); ``None``: doublet scores are reported only.
    ambient_moderate, ambient_max
        Grade boundaries of the background globin share.
    ci_level
        Level of the Wilson interval of each sample's called fraction.
    layer
        ``"auto"`` (corrected counts, else counts), a counts layer, or ``None`` (``expm1(X)``).
    species
        For the gene lists; ``"auto"`` as in :func:`score`.
    key_added
        obs column for the per-cell call (bool).

    Returns
    -------
    One row per sample: ``counts_source``, ``n_tumour`` (cells assessed), ``n_background``,
    ``n_erythroid_excluded``, ``n_doublets_excluded``, ``tumour_hb_fraction`` and
    ``background_hb_fraction`` (pooled, counts used), ``background_hb_fraction_raw`` (raw
    counts), ``enrichment``, ``background_overdispersion`` (beta-binomial rho),
    ``null_source`` (``tumour_mixture``, ``borrowed`` or ``background``), ``null_hb_fraction`` (the
    null's mean globin share), ``null_overdispersion``, ``null_weight`` (mixture weight of
    the null component; NaN for the background null),
    ``threshold`` (globin share a tumour cell of median size needs for a call),
    ``n_globin_positive``, ``n_identity_excluded``, ``n_doublet_like_excluded``, ``n_called``,
    ``fraction_called``,
    ``fraction_ci_low``, ``fraction_ci_high`` (Wilson, ``ci_level``),
    ``doublet_score_called_median``, ``doublet_score_called_max``, ``mannwhitney_p``
    (tumour > background globin share, one-sided), ``ambient_grade``, ``ambient_high``, the
    tumour/background means of the mimicry score columns present (``score_erythroid_mimicry``,
    ``score_erythroid_mimicry_core``, ``score_erythroid_identity``, ``score_haem_synthesis``)
    and their means over the called and the other assessed tumour cells (``*_called``,
    ``*_not_called``: haem synthesis, WikiPathways WP561, as supporting evidence; it does not
    enter the call), and ``note``.

    Writes ``obs[key_added]`` (bool), ``obs["erythroid_mimicry_class"]`` (one of
    :data:`MIMICRY_CLASSES`), ``obs["erythroid_mimicry_q"]`` (BH-adjusted, NaN where not
    assessed) and ``uns["bonemet"]["parameters"]["erythroid_mimicry"]`` (including
    ``counts_source``).
    """
    from scipy.stats import mannwhitneyu

    if not 0 < fdr < 1:
        raise InputError(f"fdr must be within (0, 1), not {fdr!r}")
    if not 0 < ci_level < 1:
        raise InputError(f"ci_level must be within (0, 1), not {ci_level!r}")
    if null not in ("tumour_mixture", "background"):
        raise InputError(f"null must be 'tumour_mixture' or 'background', not {null!r}")
    if not min_fold >= 1.0:
        raise InputError(f"min_fold must be at least 1, not {min_fold!r}")
    lineage = _lineages(adata)
    samples = _obs_str(adata, sample_key, hint="set sample_key= to the obs column naming samples")
    pop = (
        adata.obs["population"].astype(str)
        if "population" in adata.obs
        else pd.Series("", index=adata.obs_names)
    )
    sets = load_gene_sets("programme")
    sp_ = resolve_species(adata, species)
    hb_genes, cov = match_genes(sets["erythroid_mimicry_core"].genes(sp_), adata.var_names)
    id_genes, id_cov = match_genes(sets["erythroid_identity"].genes(sp_), adata.var_names)
    no_hb = not hb_genes
    _drop_warnings(adata, "erythroid mimicry")
    if no_hb:
        add_warning(
            adata,
            f"erythroid mimicry not assessed: none of the globin genes "
            f"{sets['erythroid_mimicry_core'].genes(sp_)} is in var_names (check species= and "
            "gene filtering)",
        )
    M, source = _mimicry_counts(adata, layer)
    from_counts = source != "expm1(X)"
    hb_idx = adata.var_names.get_indexer(hb_genes)
    id_idx = adata.var_names.get_indexer(id_genes)
    total = _row_sums(M)
    hb = _row_sums(M, hb_idx)
    ident = _row_sums(M, id_idx) if len(id_idx) else np.zeros_like(hb)
    frac = np.divide(hb, total, out=np.zeros_like(hb), where=total > 0)
    id_frac = np.divide(ident, total, out=np.zeros_like(ident), where=total > 0)
    raw = adata.layers["counts"] if source != "counts" and "counts" in adata.layers else None
    hb_raw = _row_sums(raw, hb_idx) if raw is not None and not no_hb else None
    tot_raw = _row_sums(raw) if raw is not None and not no_hb else None

    erythroid = (
        lineage.isin(ERYTHROID_CELL_TYPES).to_numpy() | pop.isin(ERYTHROID_POPULATIONS).to_numpy()
    )
    doublet = (
        adata.obs["predicted_doublet"].astype(bool).to_numpy()
        if "predicted_doublet" in adata.obs
        else np.zeros(adata.n_obs, dtype=bool)
    )
    tumour_any = (lineage == TUMOUR).to_numpy() & ~erythroid
    tumour = tumour_any & ~doublet
    bg = lineage.isin(list(background)).to_numpy() & ~erythroid & ~doublet
    dscore = (
        pd.to_numeric(adata.obs["doublet_score"], errors="coerce").to_numpy(dtype=np.float64)
        if "doublet_score" in adata.obs
        else None
    )
    score_keys = [
        f"score_{n}"
        for n in ("erythroid_mimicry", "erythroid_mimicry_core", "erythroid_identity",
                  "haem_synthesis")
        if f"score_{n}" in adata.obs
    ]  # fmt: skip

    call = np.zeros(adata.n_obs, dtype=bool)
    klass = np.full(adata.n_obs, "not_assessed", dtype=object)
    qval = np.full(adata.n_obs, np.nan)
    rows = []
    fits = {} if no_hb else _mimicry_null_fits(
        samples, tumour, bg, hb, total, frac, null=null, min_background=min_background,
        min_tumour_null=min_tumour_null,
    )  # fmt: skip
    borrowed = _borrowed_null(fits) if null == "tumour_mixture" else None
    for s in sorted(samples.unique()):
        ins = (samples == s).to_numpy()
        t, b, e = tumour & ins, bg & ins, erythroid & ins
        notes = []
        hb_t, tot_t = hb[t].sum(), total[t].sum()
        hb_b, tot_b = hb[b].sum(), total[b].sum()
        t_frac = hb_t / tot_t if tot_t > 0 else np.nan
        b_frac = hb_b / tot_b if tot_b > 0 else np.nan
        b_raw = np.nan
        if hb_raw is not None and b.any() and tot_raw[b].sum() > 0:
            b_raw = hb_raw[b].sum() / tot_raw[b].sum()
        elif source == "counts":
            b_raw = b_frac
        thr = rho = pi0 = np.nan
        null_fit = None
        null_src = "background"
        if no_hb:
            t_frac = b_frac = np.nan
            notes.append("no globin genes in var_names: not assessed")
        elif s in fits:
            (a_, b_), mix = fits[s]
            rho = 1.0 / (a_ + b_ + 1.0)
            if mix is not None:
                (a_, b_), pi0 = mix
                null_src = "tumour_mixture"
                notes.append(
                    f"null fitted to the tumour cells (beta-binomial mixture: "
                    f"{1 - pi0:.0%} in the upper component)"
                )
            elif borrowed is not None:
                # too few tumour cells for their own null: the tumour-cell null of the
                # run's other samples, carried over by the ambient level of this one
                ratio, cv2, n_from = borrowed
                mu = min(a_ / (a_ + b_) * ratio, 0.5)
                med_t = float(np.median(frac[t])) if t.any() else 0.0
                raised = med_t > mu
                if null_floor and raised:
                    mu = min(med_t, 0.5)
                rho_n = min(cv2 * mu / (1 - mu), 0.999)
                conc = 1.0 / rho_n - 1.0
                a_, b_ = mu * conc, (1 - mu) * conc
                null_src = "borrowed"
                notes.append(
                    f"{int(t.sum())} tumour cells (< {min_tumour_null}): null borrowed from "
                    f"the tumour-cell nulls of {n_from} samples (mean {ratio:.2f}x this "
                    "sample's T/B/NK globin share"
                    + (f", raised to its tumour cells' median {mu:.2%}" if null_floor and raised
                       else "")
                    + f"; squared CV {cv2:.2f})"
                )  # fmt: skip
            elif null_floor and t.sum() >= min_background:
                # after correction the residual ambient share can differ between cell types:
                # the null's mean is never below the median share of the sample's tumour cells
                # (a majority of them are not mimics), its spread stays the background's
                conc, mu_t = a_ + b_, float(np.median(frac[t]))
                mu_b = a_ / conc
                if mu_t > mu_b:
                    # the ambient share varies multiplicatively (how much soup a droplet
                    # caught): keep the background's coefficient of variation
                    conc = (conc + 1) * mu_b * (1 - mu_t) / (mu_t * (1 - mu_b)) - 1
                    conc = max(conc, 1.0)
                    a_, b_ = mu_t * conc, (1 - mu_t) * conc
                    notes.append(f"null mean raised to the tumour cells' median ({mu_t:.2%})")
            if null == "tumour_mixture" and null_src == "background":
                notes.append(
                    f"{int(t.sum())} tumour cells (< {min_tumour_null}) and fewer than "
                    f"{_MIN_BORROW} samples with a tumour-cell null: background null (it "
                    "can be anti-conservative where tumour cells keep more residual ambient)"
                )
            null_fit = (a_, b_)
        else:
            notes.append(f"{int(b.sum())} background cells (< {min_background}): no null, no calls")
        if not t.any():
            notes.append("no tumour epithelial cells")
        called = np.zeros(adata.n_obs, dtype=bool)
        n_pos = n_id = n_dbl_like = 0
        if null_fit is not None and t.any():
            kt, nt = np.rint(hb[t]), np.rint(total[t])
            q = _bh(_betabinom_sf(kt, nt, *null_fit))
            qval[t] = q
            pos = (q <= fdr) & (hb[t] > 0)
            if from_counts:
                pos &= hb[t] >= min_hb_counts
            if min_fold > 1.0:  # an effect-size floor on top of the test
                pos &= frac[t] >= min_fold * null_fit[0] / (null_fit[0] + null_fit[1])
            # the globin share a tumour cell of median size needs (for the table)
            n_med = int(np.median(nt))
            from scipy.stats import betabinom

            crit = (
                float(betabinom.isf(fdr * max(pos.sum(), 1) / t.sum(), n_med, *null_fit)) + 1
            )  # the BH cut-off at this sample's number of positives
            thr = crit / n_med if n_med > 0 else np.nan
            ery_ref = float(np.median(id_frac[e])) if e.sum() >= 3 else np.nan
            if not np.isfinite(ery_ref) or ery_ref <= 0:
                e_all = erythroid & (id_frac > 0)
                ery_ref = float(np.median(id_frac[e_all])) if e_all.sum() >= 3 else np.nan
                if np.isfinite(ery_ref):
                    notes.append("fewer than 3 erythroid cells: identity read against all samples")
            has_id = ident[t] >= (min_identity_counts if from_counts else 0)
            if np.isfinite(ery_ref) and ery_ref > 0:
                has_id &= id_frac[t] >= identity_level * ery_ref
            else:
                has_id &= False
                notes.append("no erythroid reference: erythroid identity not assessed")
            dbl_like = np.zeros(int(t.sum()), dtype=bool)
            if doublet_quantile is not None and dscore is not None:
                ds_t = dscore[t]
                ok = np.isfinite(ds_t)
                if ok.sum() >= min_background:
                    cut = float(np.quantile(ds_t[ok], doublet_quantile))
                    dbl_like = ok & (ds_t > cut)
            tix = np.flatnonzero(t)
            klass[tix] = "below_background"
            klass[tix[pos & dbl_like]] = "possible_doublet"
            klass[tix[pos & has_id]] = "globin_and_identity"
            keep = pos & ~has_id & ~dbl_like
            klass[tix[keep]] = "globin_only"
            called[tix[keep]] = True
            n_pos, n_id = int(pos.sum()), int((pos & has_id).sum())
            n_dbl_like = int((pos & dbl_like & ~has_id).sum())
        call |= called
        grade = _ambient_grade(b_frac, ambient_moderate, ambient_max)
        ambient_high = grade == "high"
        where = "corrected counts" if source == DECONTAMINATED else source
        if grade == "high":
            notes.append(
                f"ambient haemoglobin high: {b_frac:.2%} of T/B/NK {where} are globin "
                f"(>= {ambient_max:.2%})"
                + ("; run ambient correction (qc.ambient) before reading mimicry"
                   if source != DECONTAMINATED else "")
            )  # fmt: skip
            add_warning(
                adata,
                f"erythroid mimicry: sample {s!r}: globin share of T/B/NK {where} is "
                f"{b_frac:.2%} (>= {ambient_max:.2%}); calls there rest on a high ambient "
                "background",
            )
        elif grade == "moderate":
            notes.append(f"ambient haemoglobin moderate: {b_frac:.2%} of T/B/NK {where}")
        p = np.nan
        if t.sum() >= 3 and b.sum() >= 3 and np.ptp(np.r_[frac[t], frac[b]]) > 0:
            p = float(mannwhitneyu(frac[t], frac[b], alternative="greater").pvalue)
        n_t = int(t.sum())
        lo, hi = wilson_interval(int(called.sum()), n_t, level=ci_level)
        ds = dscore[called] if dscore is not None else np.array([])
        ds = ds[np.isfinite(ds)]
        row = {
            "sample": s,
            "counts_source": source,
            "n_tumour": n_t,
            "n_background": int(b.sum()),
            "n_erythroid_excluded": int(e.sum()),
            "n_doublets_excluded": int((tumour_any & doublet & ins).sum()),
            "tumour_hb_fraction": t_frac,
            "background_hb_fraction": b_frac,
            "background_hb_fraction_raw": b_raw,
            "enrichment": t_frac / b_frac
            if b_frac and np.isfinite(b_frac) and b_frac > 0
            else np.nan,
            "background_overdispersion": rho,
            "null_source": null_src if null_fit is not None else "",
            "null_hb_fraction": null_fit[0] / sum(null_fit) if null_fit is not None else np.nan,
            "null_overdispersion": 1.0 / (sum(null_fit) + 1.0) if null_fit is not None else np.nan,
            "null_weight": pi0,
            "threshold": thr,
            "n_globin_positive": n_pos,
            "n_identity_excluded": n_id,
            "n_doublet_like_excluded": n_dbl_like,
            "n_called": int(called.sum()),
            "fraction_called": float(called.sum() / n_t) if n_t else np.nan,
            "fraction_ci_low": float(lo),
            "fraction_ci_high": float(hi),
            "doublet_score_called_median": float(np.median(ds)) if ds.size else np.nan,
            "doublet_score_called_max": float(np.max(ds)) if ds.size else np.nan,
            "mannwhitney_p": p,
            "ambient_grade": grade,
            "ambient_high": ambient_high,
        }
        for k in score_keys:
            v = adata.obs[k].to_numpy(dtype=np.float64)
            row[f"{k}_tumour"] = float(np.mean(v[t])) if t.any() else np.nan
            row[f"{k}_background"] = float(np.mean(v[b])) if b.any() else np.nan
            # supporting evidence (haem synthesis above all): the calls vs the other tumour cells
            rest = t & ~called
            row[f"{k}_called"] = float(np.mean(v[called])) if called.any() else np.nan
            row[f"{k}_not_called"] = float(np.mean(v[rest])) if rest.any() else np.nan
        row["note"] = "; ".join(notes)
        rows.append(row)
    adata.obs[key_added] = call
    adata.obs["erythroid_mimicry_class"] = pd.Categorical(klass, categories=list(MIMICRY_CLASSES))
    adata.obs["erythroid_mimicry_q"] = qval
    bonemet_uns(adata).setdefault("parameters", {})["erythroid_mimicry"] = {
        "hb_genes": list(hb_genes),
        "hb_coverage": float(cov),
        "identity_genes": list(id_genes),
        "identity_coverage": float(id_cov),
        "species": sp_,
        "counts_source": source,
        "background": list(background),
        "null": (
            "beta-binomial per sample (library-size matched): "
            + (
                "two-component mixture fitted to the tumour cells (borrowed from the "
                "run's other samples by a sample with too few tumour cells)"
                if null == "tumour_mixture"
                else "T/B/NK background"
            )
        ),  # fmt: skip
        "null_method": null,
        "fdr": float(fdr),
        "min_background": int(min_background),
        "min_tumour_null": int(min_tumour_null),
        "min_hb_counts": int(min_hb_counts),
        "min_fold": float(min_fold),
        "identity_level": float(identity_level),
        "min_identity_counts": int(min_identity_counts),
        "null_floor": bool(null_floor),
        "doublet_quantile": None if doublet_quantile is None else float(doublet_quantile),
        "ambient_moderate": float(ambient_moderate),
        "ambient_max": float(ambient_max),
        "ci": f"Wilson {ci_level:g}",
        "from_counts": bool(from_counts),
    }
    return pd.DataFrame(rows)


def erythroid_mimicry_calls(adata: AnnData, *, include_identity: bool = True) -> pd.DataFrame:
    """One row per mimicry call (and, with ``include_identity``, per globin-positive cell
    excluded for erythroid identity or as a possible doublet), read after
    :func:`erythroid_mimicry`.

    Columns: ``cell``, ``sample``, ``condition`` (when recorded), ``population``, ``class``,
    ``called``, ``q_value``, ``total_counts``, ``globin_counts``, ``globin_fraction``,
    ``identity_counts``, ``doublet_score``, ``predicted_doublet``,
    ``ambient_contamination`` (when QC estimated it), ``score_haem_synthesis`` (when
    scored: supporting evidence, not part of the call). Counts are from the layer the calls
    were made on (``counts_source``).
    """
    if "erythroid_mimicry_class" not in adata.obs:
        raise InputError("no erythroid-mimicry calls; run bm.tl.erythroid_mimicry first")
    rec = bonemet_uns(adata, create=False).get("parameters", {}).get("erythroid_mimicry", {})
    klass = adata.obs["erythroid_mimicry_class"].astype(str)
    keep = klass.eq("globin_only") | (
        include_identity & klass.isin(["globin_and_identity", "possible_doublet"])
    )
    sub = adata[keep.to_numpy()]
    source = str(rec.get("counts_source", "counts"))
    if source in sub.layers:
        M = sub.layers[source]
    else:  # the layer the calls used is gone (e.g. a slimmed checkpoint): CP10k from X
        X = sub.X
        M = X.expm1() if sp.issparse(X) else np.expm1(np.asarray(X))
        source = "expm1(X)"
    hb_idx = sub.var_names.get_indexer([g for g in rec.get("hb_genes", []) if g in sub.var_names])
    id_idx = sub.var_names.get_indexer(
        [g for g in rec.get("identity_genes", []) if g in sub.var_names]
    )
    total = _row_sums(M)
    hb = _row_sums(M, hb_idx) if len(hb_idx) else np.zeros(sub.n_obs)
    out = pd.DataFrame(
        {
            "cell": sub.obs_names.astype(str),
            "sample": sub.obs["sample"].astype(str).to_numpy() if "sample" in sub.obs else "",
        }
    )
    if "condition" in sub.obs:
        out["condition"] = sub.obs["condition"].astype(str).to_numpy()
    out["population"] = (
        sub.obs["population"].astype(str).to_numpy() if "population" in sub.obs else ""
    )
    out["class"] = klass[keep].to_numpy()
    out["called"] = out["class"].eq("globin_only")
    out["q_value"] = sub.obs["erythroid_mimicry_q"].to_numpy(dtype=np.float64)
    out["counts_source"] = source
    out["total_counts"] = total
    out["globin_counts"] = hb
    out["globin_fraction"] = np.divide(hb, total, out=np.zeros_like(hb), where=total > 0)
    out["identity_counts"] = _row_sums(M, id_idx) if len(id_idx) else 0.0
    for col in ("doublet_score", "predicted_doublet", "ambient_contamination",
                "score_haem_synthesis"):  # fmt: skip
        if col in sub.obs:
            out[col] = sub.obs[col].to_numpy()
    return out.sort_values(["sample", "called", "q_value"], ascending=[True, False, True])


# --------------------------------------------------------------------------------------
# gene sets a reviewer can read: overlaps, net ferroptosis
# --------------------------------------------------------------------------------------
def _scored_gene_lists(
    adata: AnnData | None, species: str, gene_sets: Sequence[str] | None
) -> dict[str, list[str]]:
    """{set: genes}: the genes each set was scored with (``uns`` record) when ``adata`` was
    scored, else the curated lists for ``species`` (default programmes)."""
    from ._score import default_programmes

    rec = bonemet_uns(adata, create=False).get("gene_sets", {}) if adata is not None else {}
    scored = {
        str(k): [str(g) for g in np.asarray(v.get("genes_found", []), dtype=object).ravel()]
        for k, v in rec.items()
        if isinstance(v, Mapping) and bool(v.get("scored"))
    }
    if gene_sets is not None:
        names = list(gene_sets)
    elif scored:
        names = list(scored)
    else:
        names = list(default_programmes())
    if any(n not in scored for n in names):
        sets = load_gene_sets()
        unknown = [n for n in names if n not in sets and n not in scored]
        if unknown:
            raise InputError(f"unknown gene set(s) {unknown}; available: {sorted(sets)}")
        sp_ = (
            resolve_species(adata, species)
            if adata is not None
            else ("human" if species == "auto" else species)
        )
    out = {}
    for n in names:
        out[n] = scored[n] if n in scored else load_gene_sets()[n].genes(sp_)
    return out


def gene_set_overlap(
    adata: AnnData | None = None,
    *,
    gene_sets: Sequence[str] | None = None,
    species: str = "auto",
) -> pd.DataFrame:
    """Shared genes between every pair of gene sets (Jaccard index and the genes).

    The sets are those :func:`score` scored on ``adata`` (their genes as found), or
    ``gene_sets`` by name, or, without ``adata``, the default programmes. Genes are compared
    case-insensitively.

    Returns
    -------
    One row per unordered pair: ``set_a``, ``set_b``, ``n_a``, ``n_b``, ``n_shared``,
    ``jaccard`` (shared / union), ``overlap_coefficient`` (shared / smaller set),
    ``shared_genes`` (``;``-separated). Sorted by Jaccard, largest first.
    """
    lists = _scored_gene_lists(adata, species, gene_sets)
    names = sorted(lists)
    up = {n: {g.upper() for g in lists[n]} for n in names}
    spelled = {n: {g.upper(): g for g in lists[n]} for n in names}
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = up[a] & up[b]
            union = up[a] | up[b]
            smaller = min(len(up[a]), len(up[b]))
            rows.append(
                {
                    "set_a": a,
                    "set_b": b,
                    "n_a": len(up[a]),
                    "n_b": len(up[b]),
                    "n_shared": len(shared),
                    "jaccard": len(shared) / len(union) if union else 0.0,
                    "overlap_coefficient": len(shared) / smaller if smaller else 0.0,
                    "shared_genes": ";".join(sorted(spelled[a][g] for g in shared)),
                }
            )
    cols = ["set_a", "set_b", "n_a", "n_b", "n_shared", "jaccard", "overlap_coefficient",
            "shared_genes"]  # fmt: skip
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["jaccard", "set_a", "set_b"], ascending=[False, True, True]).reset_index(
        drop=True
    )


#: genes read one by one in tumour cells next to the net ferroptosis index
FERROPTOSIS_GENES = ("GPX4", "SLC7A11", "TFRC", "ACSL4")


def ferroptosis_index(
    adata: AnnData,
    *,
    groupby: str | Sequence[str] = ("population", "sample"),
    prefix: str = "score",
) -> pd.DataFrame:
    """Net ferroptosis index per group: driver score minus suppressor score.

    Per cell, ``net = obs["<prefix>_ferroptosis_driver"] - obs["<prefix>_ferroptosis_suppressor"]``
    (FerrDb V2 core drivers and suppressors; both control-gene scores on the same scale, so
    a positive net means the driver programme outweighs the suppressors).

    Returns
    -------
    The groupby columns, ``n_cells``, ``driver_mean``, ``suppressor_mean``, ``net_mean``,
    ``net_median``, ``net_ci_low``/``net_ci_high`` (mean +- 1.96 standard errors) and
    ``method`` (``prefix``).
    """
    groupby = [groupby] if isinstance(groupby, str) else list(groupby)
    d, s = f"{prefix}_ferroptosis_driver", f"{prefix}_ferroptosis_suppressor"
    missing = [k for k in (d, s, *groupby) if k not in adata.obs]
    if missing:
        raise InputError(
            f"obs lacks {missing}; run bm.tl.score (ferroptosis_driver and ferroptosis_suppressor) "
            "and bm.tl.annotate first"
        )
    df = adata.obs[groupby].astype(str).copy()
    df["_d"] = adata.obs[d].to_numpy(dtype=np.float64)
    df["_s"] = adata.obs[s].to_numpy(dtype=np.float64)
    df["_n"] = df["_d"] - df["_s"]
    agg = df.groupby(groupby, observed=True, sort=True).agg(
        n_cells=("_n", "size"),
        driver_mean=("_d", "mean"),
        suppressor_mean=("_s", "mean"),
        net_mean=("_n", "mean"),
        net_median=("_n", "median"),
        _sd=("_n", "std"),
    )
    agg = agg.copy()  # a frame of its own: assigning columns below must not warn
    se = agg["_sd"].fillna(0.0) / np.sqrt(agg["n_cells"])
    agg["net_ci_low"] = agg["net_mean"] - 1.96 * se
    agg["net_ci_high"] = agg["net_mean"] + 1.96 * se
    agg = agg.drop(columns="_sd").reset_index()
    agg["method"] = prefix
    return agg


def ferroptosis_genes(
    adata: AnnData,
    *,
    genes: Sequence[str] = FERROPTOSIS_GENES,
    population: str = TUMOUR,
    sample_key: str = "sample",
    layer: str | None = "auto",
) -> pd.DataFrame:
    """GPX4, SLC7A11, TFRC and ACSL4 (or ``genes``) one by one in ``population`` per sample.

    Expression is log1p CP10k (``X``, or the corrected counts normalised the same way when
    ``layers["decontaminated"]`` exists and ``layer="auto"``); genes are matched
    case-insensitively (mouse Gpx4, ...).

    Returns
    -------
    One row per sample x gene: ``sample``, ``gene`` (as in ``var_names``, or the symbol asked
    for when absent), ``n_cells``, ``mean``, ``fraction_expressing`` (> 0), ``role``
    (FerrDb: driver / suppressor / both), ``note``.
    """
    from ._score import _candidates, _scoring_matrix

    pop = _obs_str(adata, "population", hint="run bm.tl.annotate first")
    samples = _obs_str(adata, sample_key, hint="set sample_key= to the obs column naming samples")
    X, _ = _scoring_matrix(adata, layer)
    sets = load_gene_sets("programme")
    drivers = {g.upper() for g in sets["ferroptosis_driver"].human} | {
        g.upper() for g in sets["ferroptosis_driver"].mouse
    }
    supp = {g.upper() for g in sets["ferroptosis_suppressor"].human} | {
        g.upper() for g in sets["ferroptosis_suppressor"].mouse
    }
    var = _candidates(adata.var_names, genes)
    cols = {}
    for g in genes:
        hit, _ = match_genes([g], var)
        cols[g] = (hit[0], int(adata.var_names.get_loc(hit[0]))) if hit else (g, None)
    in_pop = (pop == population).to_numpy()
    rows = []
    for s in sorted(samples.unique()):
        m = in_pop & (samples == s).to_numpy()
        for g in genes:
            name, j = cols[g]
            role = (
                "both"
                if g.upper() in drivers and g.upper() in supp
                else "driver"
                if g.upper() in drivers
                else "suppressor"
                if g.upper() in supp
                else ""
            )
            row = {"sample": s, "gene": name, "n_cells": int(m.sum()), "role": role}
            if j is None or not m.any():
                row.update(mean=np.nan, fraction_expressing=np.nan)
                row["note"] = "not in var_names" if j is None else f"no {population} cells"
            else:
                v = X[m][:, j]
                v = np.asarray(v.toarray() if sp.issparse(v) else v, dtype=np.float64).ravel()
                row.update(mean=float(v.mean()), fraction_expressing=float((v > 0).mean()))
                row["note"] = ""
            rows.append(row)
    return pd.DataFrame(
        rows, columns=["sample", "gene", "n_cells", "mean", "fraction_expressing", "role", "note"]
    )
