"""Compare conditions with samples as replicates.

Three read-outs share one sample-level design (``~ covariates [+ subject] + condition``):

- differential abundance of every population and of the within-lineage fractions in
  :data:`LINEAGE_FRACTIONS`: a quasi-Poisson GLM of a sample's cell count with the log of
  its denominator as offset, so the condition coefficient is the log fold change of the
  proportion; Pearson dispersions moderated across tests by empirical Bayes (limma's
  squeezeVar) and floored at 1, Wald t-tests on the residual plus prior degrees of
  freedom. The erythroid-mimicry called fraction of tumour cells and the earliest
  neutrophil maturation stage's share of the neutrophil lineage: the same log-link GLM
  with a beta-binomial-type variance (Williams' quasi-likelihood), because their
  denominators vary tenfold or more between samples;
- pseudobulk differential expression per population (counts summed per sample ×
  population from ``layers["counts"]``) with PyDESeq2;
- score tests: the per-sample mean of each ``obs["score_*"]`` per population, ordinary
  least squares on the same design (t on the residual degrees of freedom).

Small designs are said, not hidden: with fewer than ``min_samples_per_group`` samples in a
group the p-values are kept but marked unreliable (``p_reliable`` False) and a warning
says so; with one sample in a group no p-value is computed; with one condition nothing is
tested and a warning says so. ``benchmarks/compare_calibration.py`` measures how uniform
the p-values are on generated nulls.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from .._counts import is_counts
from .._errors import InputError
from .._logging import logger
from .._meta import add_warning
from .._vocab import (
    CD8_POPULATIONS,
    CHI3L3_NEUTROPHIL,
    IRON_MACROPHAGE,
    MACROPHAGE_POPULATIONS,
    MIMICRY_CALL_KEY,
    MIMICRY_CALLED_FRACTION,
    MIMICRY_CLASS_KEY,
    NEUTROPHIL_POPULATIONS,
    POPULATIONS,
    TEX,
    TPEX,
    TUMOUR,
    UNASSIGNED,
    WILLIAMS_SHRUNK,
)

__all__ = [
    "LINEAGE_FRACTIONS",
    "compare",
    "compare_design",
    "differential_abundance",
    "pseudobulk_de",
    "score_tests",
    "squeeze_dispersions",
]

#: name -> (numerator populations, denominator populations) of the within-lineage fractions
LINEAGE_FRACTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Tpex / (Tpex + Tex)": ((TPEX,), (TPEX, TEX)),
    "Tpex / CD8 T": ((TPEX,), CD8_POPULATIONS),
    "M-MDSC / classical monocytes": (("M-MDSC",), ("M-MDSC", "Classical monocyte")),
    "PMN-MDSC / neutrophils": (("PMN-MDSC",), NEUTROPHIL_POPULATIONS),
    "CHI3L3+ immature / neutrophils": ((CHI3L3_NEUTROPHIL,), NEUTROPHIL_POPULATIONS),
    "Iron-recycling / macrophages": ((IRON_MACROPHAGE,), MACROPHAGE_POPULATIONS),
}

_LN2 = math.log(2.0)


# --------------------------------------------------------------------------- design
def compare_design(
    adata: ad.AnnData,
    *,
    condition_key: str = "condition",
    reference: str | None = None,
    sample_key: str = "sample",
    subject_key: str | None = None,
    covariates: Sequence[str] = (),
) -> tuple[pd.DataFrame, str, list[str]]:
    """The per-sample design table, the reference level and the other levels.

    Parameters
    ----------
    adata
        Cells with ``obs[sample_key]`` and ``obs[condition_key]``.
    condition_key, reference, sample_key, subject_key, covariates
        See :func:`compare`.

    Returns
    -------
    ``(design, reference, others)``: ``design`` has one row per sample (index: sample)
    with columns ``condition``, ``subject`` (when given), one column per covariate and
    ``n_cells``.

    Raises
    ------
    InputError
        A key is missing from ``obs`` (the message lists the columns), ``reference`` is not
        a level (the message lists the levels), a sample holds two conditions, subjects or
        covariate values, or a covariate is confounded with the condition.
    """
    obs = adata.obs
    cols = ", ".join(map(str, obs.columns))
    for what, key in (("condition_key", condition_key), ("sample_key", sample_key)):
        if key not in obs:
            raise InputError(
                f"compare: {what} {key!r} is not an obs column; obs columns: {cols}. "
                f"Set compare.{what} to the column that names the {what.split('_')[0]}"
            )
    if subject_key is not None and subject_key not in obs:
        raise InputError(
            f"compare: subject_key {subject_key!r} is not an obs column; obs columns: {cols}"
        )
    missing = [c for c in covariates if c not in obs]
    if missing:
        raise InputError(
            f"compare: covariate(s) {', '.join(map(repr, missing))} are not obs columns; "
            f"obs columns: {cols}"
        )
    keys = {"condition": condition_key}
    if subject_key is not None:
        keys["subject"] = subject_key
    for c in covariates:
        keys[c] = c
    df = pd.DataFrame({name: obs[key].to_numpy() for name, key in keys.items()})
    df["sample"] = obs[sample_key].astype(str).to_numpy()
    if df["condition"].isna().any():
        raise InputError(
            f"compare: {int(df['condition'].isna().sum())} cells have no {condition_key!r} "
            "value; give every sample a condition"
        )
    rows = {}
    for sample, part in df.groupby("sample", sort=True):
        row: dict[str, Any] = {}
        for name in keys:
            vals = part[name].drop_duplicates()
            if len(vals) > 1:
                raise InputError(
                    f"compare: sample {sample!r} has more than one {keys[name]!r} value "
                    f"({', '.join(map(str, vals.tolist()[:4]))}); a sample must hold one "
                    "condition, subject and covariate value"
                )
            row[name] = vals.iloc[0]
        row["n_cells"] = len(part)
        rows[sample] = row
    design = pd.DataFrame.from_dict(rows, orient="index")
    design.index.name = "sample"
    design["condition"] = design["condition"].astype(str)
    if subject_key is not None:
        design["subject"] = design["subject"].astype(str)
    levels = _condition_levels(obs[condition_key], design)
    reference, _how, msg = _resolve_reference(levels, reference, condition_key=condition_key)
    if msg:
        add_warning(adata, msg)
    others = [lv for lv in levels if lv != reference]
    for c in covariates:
        if design[c].dtype.kind not in "if":
            design[c] = design[c].astype(str)
        x = _model_matrix(design, covariates=[c], subject=False)
        if others and np.linalg.matrix_rank(x) < x.shape[1]:
            raise InputError(
                f"compare: covariate {c!r} is confounded with {condition_key!r} (or "
                "constant): the condition effect cannot be separated from it; drop it "
                "from compare.covariates"
            )
    return design, reference, others


#: words (case-insensitive, whole words of a level) that name a control condition
CONTROL_WORDS: tuple[str, ...] = (
    "control",
    "ctrl",
    "healthy",
    "normal",
    "naive",
    "sham",
    "vehicle",
    "wt",
)


def _condition_levels(cond: pd.Series, design: pd.DataFrame) -> list[str]:
    """The condition levels present in ``design``: category order, else sorted."""
    present = set(design["condition"])
    if isinstance(cond.dtype, pd.CategoricalDtype):
        return [str(c) for c in cond.cat.categories if str(c) in present]
    return sorted(present)


def _looks_like_control(level: str) -> bool:
    # words split at non-letters and at case changes: "ctrl_1", "ControlGroup", "WT-1"
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+", level)
    return any(w.lower() in CONTROL_WORDS for w in words)


def _resolve_reference(
    levels: Sequence[str], reference: str | None, *, condition_key: str = "condition"
) -> tuple[str, str, str | None]:
    """The reference level, how it was chosen, and the warning to record (or ``None``).

    ``reference`` given: it must be a level (``how="given"``). Otherwise the one level
    whose name contains a control word (:data:`CONTROL_WORDS`, e.g. ``Control``,
    ``ctrl``, ``WT``, ``sham``; ``how="control-like name"``) when exactly one does; else
    the first level in sorted order (``how="first level (sorted)"``) with a warning that
    names it and says how to choose another.

    Raises
    ------
    InputError
        ``reference`` is not a level (the message lists the levels).
    """
    levels = [str(lv) for lv in levels]
    if reference is not None:
        if str(reference) not in levels:
            raise InputError(
                f"compare: reference {reference!r} is not a level of {condition_key!r}; "
                f"levels: {', '.join(levels)}. Set compare.reference to one of them"
            )
        return str(reference), "given", None
    if len(levels) == 1:
        return levels[0], "only level", None
    like = [lv for lv in levels if _looks_like_control(lv)]
    if len(like) == 1:
        return like[0], "control-like name", None
    first = sorted(levels)[0]
    why = (
        f"{len(like)} levels look like a control ({', '.join(like)})"
        if like
        else "no level looks like a control"
    )
    msg = (
        f"compare: no reference condition given and {why}: {first!r}, the first of the "
        f"levels of {condition_key!r} in sorted order ({', '.join(sorted(levels))}), is the "
        "reference; set compare.reference (reference= in Python) to choose another"
    )
    return first, "first level (sorted)", msg


def _model_matrix(
    design: pd.DataFrame, *, covariates: Sequence[str], subject: bool, reference: str | None = None
) -> np.ndarray:
    """Intercept, covariates (dummy-coded), subject dummies, then the condition column last."""
    ref = reference if reference is not None else sorted(design["condition"].unique())[0]
    parts = [np.ones((len(design), 1))]
    for c in covariates:
        col = design[c]
        if col.dtype.kind in "if":
            parts.append(col.to_numpy(float)[:, None] - float(col.mean()))
        else:
            parts.append(pd.get_dummies(col.astype(str), drop_first=True).to_numpy(float))
    if subject and "subject" in design:
        parts.append(pd.get_dummies(design["subject"], drop_first=True).to_numpy(float))
    parts.append((design["condition"] != ref).to_numpy(float)[:, None])
    x = np.hstack(parts)
    return x


def _group_sizes(design: pd.DataFrame, reference: str, other: str) -> tuple[int, int]:
    c = design["condition"]
    return int((c == reference).sum()), int((c == other).sum())


def _small_design_warning(
    adata: ad.AnnData, n_ref: int, n_alt: int, reference: str, other: str, min_per_group: int
) -> None:
    if min(n_ref, n_alt) < 2:
        add_warning(
            adata,
            f"compare: {other} vs {reference} has {n_alt} vs {n_ref} samples: one sample in a "
            "group leaves no replicate, so effects are reported without p-values",
        )
    elif min(n_ref, n_alt) < min_per_group:
        add_warning(
            adata,
            f"compare: {other} vs {reference} has {n_alt} vs {n_ref} samples, fewer than "
            f"compare.min_samples_per_group={min_per_group} in a group: effects and CIs are "
            "reported, p-values are unreliable (p_reliable is False)",
        )


def _bh(p: pd.Series) -> pd.Series:
    from statsmodels.stats.multitest import multipletests

    out = pd.Series(np.nan, index=p.index)
    ok = p.notna().to_numpy()
    if ok.any():
        out[ok] = multipletests(p[ok].to_numpy(float), method="fdr_bh")[1]
    return out


def _cells_text(n: pd.Series) -> str:
    return ";".join(f"{s}={int(v)}" for s, v in n.items())


# ------------------------------------------------------------------ abundance model
def _quasi_poisson(
    x: np.ndarray, n: np.ndarray, design_x: np.ndarray
) -> tuple[float, float, int, float]:
    """Condition (last column) coefficient, its Poisson SE, residual df, Pearson dispersion."""
    import statsmodels.api as sm

    df_resid = design_x.shape[0] - design_x.shape[1]
    if np.linalg.matrix_rank(design_x) < design_x.shape[1]:
        return float("nan"), float("nan"), df_resid, float("nan")
    y = x.astype(float)
    alt = design_x[:, -1] > 0
    if y[alt].sum() == 0 or y[~alt].sum() == 0:
        y = y + 0.5  # a group without any cell: a continuity correction keeps the log finite
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sm.GLM(y, design_x, family=sm.families.Poisson(), offset=np.log(n)).fit()
    phi = float("nan")
    if df_resid > 0:
        mu = res.fittedvalues
        phi = float(np.sum((y - mu) ** 2 / mu) / df_resid)
    return float(res.params[-1]), float(res.bse[-1]), df_resid, phi


def _trigamma_inverse(x: float) -> float:
    """``y`` with ``trigamma(y) == x`` (Newton's method as in limma's trigammaInverse)."""
    from scipy.special import polygamma

    if x > 1e7:
        return 1.0 / math.sqrt(x)
    if x < 1e-6:
        return 1.0 / x
    y = 0.5 + 1.0 / x
    for _ in range(50):
        tri = float(polygamma(1, y))
        dif = tri * (1.0 - tri / x) / float(polygamma(2, y))
        y += dif
        if -dif / y < 1e-8:
            break
    return y


def squeeze_dispersions(phi: np.ndarray, df: np.ndarray) -> tuple[np.ndarray, float]:
    """Empirical-Bayes moderation of dispersions (limma's squeezeVar, Smyth 2004).

    A scaled F distribution is fitted to the dispersions by moments; each dispersion is
    replaced by its posterior mean ``(df * phi + d0 * s0) / (df + d0)`` and carries
    ``df + d0`` degrees of freedom. Fewer than 3 usable values: returned unchanged, ``d0 = 0``.

    Parameters
    ----------
    phi
        Dispersions (residual variances), one per test.
    df
        Their residual degrees of freedom.

    Returns
    -------
    ``(posterior dispersions, prior df d0)``; ``d0`` may be ``inf`` (all equal up to noise).
    """
    from scipy.special import digamma, polygamma

    phi = np.asarray(phi, dtype=float)
    df = np.asarray(df, dtype=float)
    ok = np.isfinite(phi) & (df > 0)
    if ok.sum() < 3:
        return phi.copy(), 0.0
    x = phi[ok]
    med = float(np.median(x))
    x = np.maximum(x, 1e-5 * (med if med > 0 else 1.0))
    d1 = df[ok]
    e = np.log(x) - digamma(d1 / 2) + np.log(d1 / 2)
    emean = float(e.mean())
    evar = float(((e - emean) ** 2).sum() / (len(e) - 1) - polygamma(1, d1 / 2).mean())
    out = phi.copy()
    if evar > 0:
        d0 = 2.0 * _trigamma_inverse(evar)
        s0 = math.exp(emean + digamma(d0 / 2) - math.log(d0 / 2))
        out[ok] = (d1 * phi[ok] + d0 * s0) / (d1 + d0)
    else:
        d0 = math.inf
        out[ok] = float(x.mean())
    return out, d0


def _wald_t(
    beta: float, se: float, df_resid: int, *, scale: float = 1.0
) -> tuple[float, float, float]:
    """p and 95% CI (in units of ``beta / scale``) from a t on ``df_resid`` df."""
    if df_resid < 1 or not np.isfinite(se) or se <= 0:
        return float("nan"), float("nan"), float("nan")
    q = stats.t.ppf(0.975, df_resid)
    p = float(2 * stats.t.sf(abs(beta / se), df_resid))
    return p, (beta - q * se) / scale, (beta + q * se) / scale


def _williams(
    x: np.ndarray, n: np.ndarray, design_x: np.ndarray
) -> tuple[float, float, int, float, float]:
    """Log-link GLM of a fraction with beta-binomial-type variance (Williams 1982).

    ``Var(x_i) = phi * mu_i * (1 + (n_i - 1) * rho)``: counting noise plus a between-sample
    spread of the true fraction, whose share of the variance grows with the sample's
    denominator ``n_i``. ``rho`` is the moment estimate that brings the Pearson statistic
    to its residual df (0 when it is already below); the fit weights the samples by
    ``1 / (1 + (n_i - 1) rho)``, so a sample with 500 cells in the denominator does not
    count 25x one with 20. A plain quasi-Poisson (one dispersion for all samples)
    over-weights the large samples, whose fractions vary as much as the small ones':
    measured anti-conservative with 20-500 cells per sample (false-positive rate at 0.05
    for 3 vs 3 / 4 vs 4: 0.055 / 0.083; Williams 0.040 / 0.051;
    ``benchmarks/compare_calibration.py``).

    Returns the condition (last column) coefficient, its SE (weights included, scale
    not), the residual df, the scale ``phi`` (Pearson / df at ``rho``: 1 when ``rho > 0``)
    and ``rho``.
    """
    from scipy.optimize import brentq

    nan = float("nan")
    df_resid = design_x.shape[0] - design_x.shape[1]
    if np.linalg.matrix_rank(design_x) < design_x.shape[1]:
        return nan, nan, df_resid, nan, nan
    y = x.astype(float)
    n = n.astype(float)
    alt = design_x[:, -1] > 0
    if y[alt].sum() == 0 or y[~alt].sum() == 0:
        y = y + 0.5  # a group without any call: a continuity correction keeps the log finite
    start = [np.linalg.lstsq(design_x, np.log((y + 0.5) / n), rcond=None)[0]]

    def fit(rho: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Weighted Poisson IRLS (log link, offset); coefficients, covariance, Pearson."""
        # warm start: the last fit of the root search
        beta, cov, x2 = _williams_irls(y, n, design_x, rho, binomial=False, start=start[0])
        start[0] = beta
        return beta, cov, x2

    beta, cov, x2 = fit(0.0)
    rho = 0.0
    if df_resid > 0 and x2 > df_resid:
        hi = 0.999
        if fit(hi)[2] > df_resid:
            rho = hi
        else:
            rho = float(brentq(lambda r: fit(r)[2] - df_resid, 0.0, hi, xtol=1e-6))
        beta, cov, x2 = fit(rho)
    phi = x2 / df_resid if df_resid > 0 else nan
    return float(beta[-1]), float(math.sqrt(max(cov[-1, -1], 0.0))), df_resid, phi, rho


def _williams_irls(
    y: np.ndarray,
    n: np.ndarray,
    design_x: np.ndarray,
    rho: float,
    *,
    binomial: bool = True,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Log-link offset GLM with Williams weights ``1 / (1 + (n - 1) rho)`` by IRLS:
    coefficients, covariance (scale 1), Pearson statistic. ``binomial``: beta-binomial
    variance ``mu (1 - mu / n) (1 + (n - 1) rho)``; else ``mu (1 + (n - 1) rho)`` (the
    read-out units of :func:`_williams`). ``start``: initial coefficients (default the
    least-squares fit of the log fractions)."""
    offset = np.log(n)
    w = 1.0 / (1.0 + (n - 1.0) * rho)
    if start is None:
        start = np.linalg.lstsq(design_x, np.log((y + 0.5) / n), rcond=None)[0]
    beta = start.copy()
    for _ in range(100):
        mu = np.exp(design_x @ beta + offset)
        q = np.minimum(mu / n, 0.999) if binomial else 0.0
        ww = w * mu / (1.0 - q)
        z = design_x @ beta + (y - mu) / mu
        xtw = design_x.T * ww
        new = np.linalg.solve(xtw @ design_x, xtw @ z)
        done = np.max(np.abs(new - beta)) < 1e-9
        beta = new
        if done:
            break
    mu = np.exp(design_x @ beta + offset)
    q = np.minimum(mu / n, 0.999) if binomial else 0.0
    cov = np.linalg.inv((design_x.T * (w * mu / (1.0 - q))) @ design_x)
    return beta, cov, float(np.sum(w * (y - mu) ** 2 / (mu * (1.0 - q))))


def _rho_moment(stat: Any, target: float) -> float:
    """``rho`` in [0, 0.999] with ``stat(rho) == target`` (0 when already below at 0)."""
    from scipy.optimize import brentq

    at0 = stat(0.0)
    if not np.isfinite(at0) or at0 <= target:
        return 0.0
    hi = 0.999
    at_hi = stat(hi)
    if not np.isfinite(at_hi):
        return 0.0
    if at_hi > target:
        return hi
    try:
        return float(brentq(lambda r: stat(r) - target, 0.0, hi, xtol=1e-7))
    except ValueError:  # a non-finite Pearson statistic inside the bracket
        return 0.0


#: prior weight, in units' residual df, of the pooled rho in :func:`williams_shrunk`
_RHO_PRIOR_UNITS = 5.0


def williams_shrunk(
    units: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    prior_units: float = _RHO_PRIOR_UNITS,
) -> tuple[list[tuple[float, float, int, float, float]], float]:
    """Beta-binomial (Williams) GLMs of several fractions, each with its own between-sample
    spread ``rho`` shrunk towards the one they share.

    Each unit ``(x, n, design)`` is a log-link offset GLM with variance
    ``phi_u * mu (1 - mu / n) (1 + (n - 1) rho_u)`` (:func:`_williams_irls`), which
    weights a sample by ``1 / (1 + (n - 1) rho)`` so that one with 500 cells in the
    denominator does not count 25x one with 20. A unit's own moment estimate of ``rho``
    (Pearson = its residual df) rests on 4 or 6 df; it is shrunk towards the pooled
    estimate (summed Pearson = summed df over the units) with a prior weight of
    ``prior_units`` units' df: ``rho_u = (df rho_own + prior rho_pooled) / (df + prior)``.
    The scale ``phi_u`` (Pearson / df at ``rho_u``) is moderated across the units by the
    caller; ``prior_units`` ``inf`` gives every unit the pooled rho. Measured in
    ``benchmarks/compare_calibration.py``: calibrated at every swept denominator spread
    (1.5- to 25-fold) where the quasi-Poisson is not.

    Returns per unit ``(beta, SE at scale 1, residual df, phi_u, rho_u)`` and the pooled rho.
    """
    prepared: list[tuple[np.ndarray, np.ndarray, np.ndarray, int] | None] = []
    for x, n, design_x in units:
        df_resid = design_x.shape[0] - design_x.shape[1]
        if np.linalg.matrix_rank(design_x) < design_x.shape[1]:
            prepared.append(None)
            continue
        y = x.astype(float)
        alt = design_x[:, -1] > 0
        if y[alt].sum() == 0 or y[~alt].sum() == 0:
            y = y + 0.5  # a group without any cell: a continuity correction keeps the log finite
        prepared.append((y, n.astype(float), design_x, df_resid))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # a degenerate fit gives non-finite values, which the caller checks
        return _williams_shrunk_fits(prepared, prior_units)


def _williams_shrunk_fits(
    prepared: list[tuple[np.ndarray, np.ndarray, np.ndarray, int] | None], prior_units: float
) -> tuple[list[tuple[float, float, int, float, float]], float]:
    nan = float("nan")
    failed = (np.linalg.LinAlgError, FloatingPointError, ValueError)
    ok = [u for u in prepared if u is not None and u[3] > 0]
    pooled = 0.0
    if ok:
        try:
            pooled = _rho_moment(
                lambda r: sum(_williams_irls(y, n, xm, r)[2] for y, n, xm, _ in ok),
                float(sum(u[3] for u in ok)),
            )
        except failed:
            pooled = 0.0
    out = []
    for u in prepared:
        if u is None:
            out.append((nan, nan, 0, nan, nan))
            continue
        y, n, xm, df_resid = u
        try:
            rho = pooled
            if df_resid > 0 and not math.isinf(prior_units):
                own = _rho_moment(
                    lambda r, y=y, n=n, xm=xm: _williams_irls(y, n, xm, r)[2], df_resid
                )
                prior = prior_units * df_resid
                rho = (df_resid * own + prior * pooled) / (df_resid + prior)
            beta, cov, x2 = _williams_irls(y, n, xm, rho)
        except failed:  # a singular fit: the caller keeps its other model
            out.append((nan, nan, df_resid, nan, nan))
            continue
        phi = x2 / df_resid if df_resid > 0 else nan
        out.append((float(beta[-1]), math.sqrt(max(cov[-1, -1], 0.0)), df_resid, phi, rho))
    return out, pooled


#: max/min denominator across a within-lineage fraction's samples from which it is tested
#: with :func:`williams_shrunk` instead of the quasi-Poisson. Measured in
#: ``benchmarks/compare_calibration.py`` (``lineage_spread_sweep``: 6 fractions per null
#: set, denominators log-spaced around 100 cells, 2,000 sets per cell): with high
#: between-sample overdispersion (Beta concentration 15) the moderated quasi-Poisson's FPR
#: at 0.05 is 0.053 / 0.055 (3 vs 3 / 4 vs 4) at a 1.5-fold spread, 0.058 / 0.055 at
#: 2-fold, 0.067 / 0.061 at 2.5-fold, 0.066 / 0.063 at 3-fold, rising to 0.147 / 0.145 at
#: 25-fold; with low overdispersion (concentration 150) it passes 0.06 from 5-fold
#: (0.062 / 0.058) and 10-fold (0.071 / 0.072). The limit is the smallest swept spread whose
#: FPR passes 0.06 (2.5-fold). The shrunk-rho Williams model is at 0.040-0.059 in every
#: cell of the sweep, but applied to every fraction it finds the planted CHI3L3+ fraction
#: of the standard design less often (100 sets: 0.53 against the quasi-Poisson's 0.73;
#: ``lineage_model_trial``), so the quasi-Poisson stays where it is calibrated (with the
#: rule: 0.73, null FPR 0.053). Population-like units (about 1,000 cells per sample,
#: shares 2-20 %) stay at or below 0.05 at 3- and 10-fold (``population_spread_check``)
#: and keep the quasi-Poisson.
DENOMINATOR_SPREAD_LIMIT = 2.5
_SPREAD_NOTE = (
    "denominator spread {s:.1f}x between samples (>= {lim:g}x): tested with the "
    "beta-binomial GLM (per-fraction rho shrunk towards the pooled rho) instead of the "
    "quasi-Poisson, whose null FPR at 0.05 is up to {fpr} at this spread"
)
_SPREAD_NOTE_UNFITTED = (
    "denominator spread {s:.1f}x between samples (>= {lim:g}x): the beta-binomial GLM "
    "could not be fitted, so the quasi-Poisson p is kept; it is anti-conservative at this "
    "spread (null FPR at 0.05 up to {fpr})"
)
#: measured null FPR at 0.05 (3 vs 3, high overdispersion) per sweep spread, for the note
_SPREAD_FPR = ((2.5, 0.067), (3.0, 0.066), (5.0, 0.083), (10.0, 0.109), (25.0, 0.147))


def _spread_note(spread: float, *, fitted: bool = True) -> str:
    fpr = max((f for s, f in _SPREAD_FPR if s <= spread), default=_SPREAD_FPR[0][1])
    worse = spread > _SPREAD_FPR[-1][0]
    return (_SPREAD_NOTE if fitted else _SPREAD_NOTE_UNFITTED).format(
        s=spread, lim=DENOMINATOR_SPREAD_LIMIT, fpr=f"{fpr:.3f}" + (" or more" if worse else "")
    )


#: obs column of the neutrophil maturation stage (:func:`bonemet.tl.neutrophil_maturation`)
NEUTROPHIL_STAGE_KEY = "neutrophil_maturation_stage"
#: the differential-abundance unit of the earliest maturation stage
NEUTROPHIL_STAGE1_FRACTION = "Neutrophil stage 1 / neutrophil lineage"
#: unit kinds whose denominators vary most between samples: fitted by :func:`_williams`
#: and tested alone (their dispersion is not moderated with other units)
_WILLIAMS_KINDS = ("called fraction", "maturation stage")


def _per_sample(mask: np.ndarray, samples: pd.Series, index: pd.Index) -> pd.Series:
    return (
        pd.Series(mask, index=samples.index)
        .groupby(samples.to_numpy())
        .sum()
        .reindex(index, fill_value=0)
        .astype(int)
    )


def _neutrophil_stages(
    adata: ad.AnnData, population_key: str, n_stages: int
) -> tuple[pd.Series | None, str]:
    """Each neutrophil-lineage cell's maturation stage, and where it came from.

    ``obs["neutrophil_maturation_stage"]`` when it is there; otherwise computed here with
    :func:`bonemet.tl.neutrophil_maturation` (``n_stages`` stages, on ``X``) without
    writing into ``adata``. ``(None, reason)`` when it cannot be computed.
    """
    from ._axes import neutrophil_maturation

    obs = adata.obs
    if NEUTROPHIL_STAGE_KEY in obs and isinstance(
        obs[NEUTROPHIL_STAGE_KEY].dtype, pd.CategoricalDtype
    ):
        return obs[NEUTROPHIL_STAGE_KEY], f"obs[{NEUTROPHIL_STAGE_KEY!r}]"
    if not n_stages:
        return None, "neutrophil_stages is 0"
    light = ad.AnnData(
        X=adata.X,
        obs=pd.DataFrame(
            {"population": obs[population_key].astype(str).to_numpy()}, index=obs.index
        ),
        var=pd.DataFrame(index=adata.var_names),
    )
    species = dict(adata.uns.get("bonemet", {}) or {}).get("species")
    if species in ("human", "mouse"):
        light.uns["bonemet"] = {"species": species}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            neutrophil_maturation(light, n_stages=int(n_stages))
    except InputError as e:
        return None, str(e)
    return light.obs[NEUTROPHIL_STAGE_KEY], f"computed ({int(n_stages)} stages, X)"


def _abundance_units(
    adata: ad.AnnData,
    population_key: str,
    sample_key: str,
    *,
    neutrophil_stages: int = 0,
    info: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Per sample: numerator and denominator counts of every population and fraction.

    Populations (of all cells), the within-lineage fractions of :data:`LINEAGE_FRACTIONS`,
    the erythroid-mimicry called fraction (when ``obs["erythroid_mimicry_call"]`` exists)
    and, with ``neutrophil_stages``, the earliest maturation stage's share of the
    neutrophil lineage. ``info`` (a dict) receives where the extra units came from, or why
    they are absent.
    """
    info = {} if info is None else info
    smp = adata.obs[sample_key].astype(str)
    pop = adata.obs[population_key].astype(str)
    tab = pd.crosstab(smp, pop).sort_index()
    total = tab.sum(axis=1)
    pops = [p for p in tab.columns if p != UNASSIGNED]
    num = {p: tab[p] for p in pops}
    den = {p: total for p in pops}
    kinds = dict.fromkeys(num, "population")
    for name, (top, bottom) in LINEAGE_FRACTIONS.items():
        if not all(p in tab.columns for p in top) or not any(p in tab.columns for p in bottom):
            continue
        num[name] = tab[list(top)].sum(axis=1)
        den[name] = tab[[p for p in bottom if p in tab.columns]].sum(axis=1)
        kinds[name] = "lineage fraction"
    obs = adata.obs
    if MIMICRY_CALL_KEY in obs:
        # the denominator is the tumour cells the read-out assessed (its n_tumour): a
        # sample where no call could be made (no background null) drops out of the test
        # rather than counting as zero calls
        tumour = (pop == TUMOUR).to_numpy()
        if MIMICRY_CLASS_KEY in obs:
            tumour &= (obs[MIMICRY_CLASS_KEY].astype(str) != "not_assessed").to_numpy()
        call = obs[MIMICRY_CALL_KEY].astype("boolean").fillna(False).to_numpy(bool)
        if tumour.any():
            num[MIMICRY_CALLED_FRACTION] = _per_sample(tumour & call, smp, tab.index)
            den[MIMICRY_CALLED_FRACTION] = _per_sample(tumour, smp, tab.index)
            kinds[MIMICRY_CALLED_FRACTION] = "called fraction"
            info["erythroid_mimicry"] = f"obs[{MIMICRY_CALL_KEY!r}]"
        else:
            info["erythroid_mimicry"] = "absent: no assessed tumour cells"
    else:
        info["erythroid_mimicry"] = f"absent: no obs[{MIMICRY_CALL_KEY!r}] (run the score stage)"
    stage, source = (
        _neutrophil_stages(adata, population_key, neutrophil_stages)
        if neutrophil_stages or NEUTROPHIL_STAGE_KEY in obs
        else (None, "neutrophil_stages is 0")
    )
    if stage is not None and len(stage.cat.categories):
        lineage = pop.isin(NEUTROPHIL_POPULATIONS).to_numpy()
        first = stage.astype(object).to_numpy() == stage.cat.categories[0]
        num[NEUTROPHIL_STAGE1_FRACTION] = _per_sample(lineage & first, smp, tab.index)
        den[NEUTROPHIL_STAGE1_FRACTION] = _per_sample(lineage, smp, tab.index)
        kinds[NEUTROPHIL_STAGE1_FRACTION] = "maturation stage"
        info["neutrophil_stage"] = f"{source}; stage 1 = {stage.cat.categories[0]}"
    else:
        info["neutrophil_stage"] = f"absent: {source}"
    return pd.DataFrame(num), pd.DataFrame(den), pd.Series(kinds)


def differential_abundance(
    adata: ad.AnnData,
    *,
    condition_key: str = "condition",
    reference: str | None = None,
    sample_key: str = "sample",
    subject_key: str | None = None,
    covariates: Sequence[str] = (),
    population_key: str = "population",
    min_samples_per_group: int = 3,
    moderate: bool = True,
    neutrophil_stages: int = 4,
    info: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Differential abundance of every population and within-lineage fraction.

    A log-link GLM per test: a sample's count of the population (or of a fraction's
    numerator) with ``log(denominator)`` as offset (all the sample's cells for a
    population, the lineage's cells for a fraction), design ``~ covariates [+ subject] +
    condition``. The condition coefficient is the log fold change of the proportion.
    Populations and within-lineage fractions: quasi-Poisson, the SE scaled by the Pearson
    dispersion, moderated across the tests of one kind (``moderate``) and floored at 1,
    tested with a t. The read-out fractions (called, maturation stage): their denominators
    vary tenfold or more between samples, so they get a beta-binomial-type variance
    (Williams' quasi-likelihood, ``model`` column; ``overdispersion`` = its rho), tested
    with a t on the residual df without moderation. BH adjustment across all tests of one
    contrast.

    Two read-out units join them when their inputs are there: the erythroid-mimicry
    called fraction (``"Erythroid-mimicry calls / tumour cells"``, kind ``called
    fraction``: tumour cells with ``obs["erythroid_mimicry_call"]`` over the tumour cells
    the read-out assessed) and the earliest neutrophil maturation stage's share of the
    neutrophil lineage (``"Neutrophil stage 1 / neutrophil lineage"``, kind ``maturation
    stage``; stages from ``obs["neutrophil_maturation_stage"]`` or computed with
    :func:`bonemet.tl.neutrophil_maturation`).

    Parameters
    ----------
    adata
        Cells with ``obs[population_key]``, ``obs[sample_key]``, ``obs[condition_key]``.
    condition_key, reference, sample_key, subject_key, covariates
        See :func:`compare`.
    population_key
        The population labels.
    min_samples_per_group
        Below this many samples in a group, ``p_reliable`` is False.
    moderate
        Moderate the dispersions across the tests of a contrast by empirical Bayes
        (:func:`squeeze_dispersions`, as limma and edgeR's quasi-likelihood do; not the
        Williams units); the t-tests then use the residual plus the prior degrees of freedom.
    neutrophil_stages
        Stages for the neutrophil stage-1 unit when ``obs["neutrophil_maturation_stage"]``
        is absent (0: no such unit).
    info
        A dict that receives where the read-out units came from, or why they are absent.

    Returns
    -------
    One row per contrast × test: ``contrast``, ``test``, ``kind`` (population, lineage
    fraction, called fraction, maturation stage), ``log2fc``, ``ci_low``, ``ci_high``,
    ``p``, ``padj``, ``p_reliable``, ``n_ref``, ``n_test``, ``prop_ref``, ``prop_test``
    (mean of the samples' proportions), ``dispersion`` (moderated, at least 1), ``df`` (of
    the t-test), ``cells_per_sample`` (the denominator per sample), ``model``
    (``quasi-Poisson``, ``Williams`` or ``Williams (shrunk rho)``), ``overdispersion``
    (Williams' rho, NaN for quasi-Poisson units), ``denominator_spread`` (max/min
    denominator across the samples tested) and ``note``. A within-lineage fraction whose denominator spread is at least
    :data:`DENOMINATOR_SPREAD_LIMIT`, where the quasi-Poisson's null FPR at 0.05 passes
    0.06 (``benchmarks/compare_calibration.py``, ``lineage_spread_sweep``), is tested with
    :func:`williams_shrunk` instead (``model`` ``"Williams (shrunk rho)"``, its rho in
    ``overdispersion``, and a note saying why), which is calibrated at every swept spread.
    """
    if population_key not in adata.obs:
        raise InputError(
            f"compare: population_key {population_key!r} is not an obs column; obs columns: "
            f"{', '.join(map(str, adata.obs.columns))}. Run annotate first"
        )
    design, reference, others = compare_design(
        adata,
        condition_key=condition_key,
        reference=reference,
        sample_key=sample_key,
        subject_key=subject_key,
        covariates=covariates,
    )
    numer, denom, kinds = _abundance_units(
        adata, population_key, sample_key, neutrophil_stages=neutrophil_stages, info=info
    )
    rows = []
    for other in others:
        sub = design[design["condition"].isin([reference, other])]
        n_ref, n_alt = _group_sizes(sub, reference, other)
        reliable = min(n_ref, n_alt) >= min_samples_per_group
        fits = []
        lineage_units: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for test in numer.columns:
            n = denom.loc[sub.index, test]
            keep = n > 0
            d = sub[keep]
            x = numer.loc[d.index, test].to_numpy()
            nn = n[keep].to_numpy()
            k_ref, k_alt = _group_sizes(d, reference, other)
            beta = se0 = phi = rho = float("nan")
            df_resid = 0
            williams = kinds[test] in _WILLIAMS_KINDS
            if k_ref >= 1 and k_alt >= 1:
                xm = _model_matrix(
                    d, covariates=covariates, subject=subject_key is not None, reference=reference
                )
                if williams:
                    beta, se0, df_resid, phi, rho = _williams(x, nn, xm)
                else:
                    beta, se0, df_resid, phi = _quasi_poisson(x, nn, xm)
                if kinds[test] == "lineage fraction":
                    lineage_units[len(fits)] = (x, nn, xm)
            prop = pd.Series(x / nn, index=d.index)
            is_ref = d["condition"] == reference
            spread = float(nn.max() / nn.min()) if len(nn) else float("nan")
            ok = bool(reliable and min(k_ref, k_alt) >= min_samples_per_group)
            fits.append((beta, se0, df_resid, phi, min(k_ref, k_alt)))
            rows.append(
                {
                    "contrast": f"{other} vs {reference}",
                    "test": test,
                    "kind": kinds[test],
                    "log2fc": beta / _LN2,
                    "p_reliable": ok,
                    "n_ref": k_ref,
                    "n_test": k_alt,
                    "prop_ref": float(prop[is_ref].mean()) if is_ref.any() else float("nan"),
                    "prop_test": float(prop[~is_ref].mean()) if (~is_ref).any() else float("nan"),
                    "cells_per_sample": _cells_text(n[keep]),
                    "model": "Williams" if williams else "quasi-Poisson",
                    "overdispersion": rho,
                    "denominator_spread": spread,
                    "note": "",
                }
            )
        phis = np.array([f[3] for f in fits])
        dfs = np.array([f[2] for f in fits], dtype=float)
        kind = np.array([kinds[t] for t in numer.columns])
        post, prior_df = phis.copy(), np.zeros(len(fits))
        if moderate:
            # each kind gets its own prior; the fractions' Williams dispersions are ~1 by
            # construction and are not moderated
            for k in np.unique(kind):
                if k in _WILLIAMS_KINDS:
                    continue
                m = kind == k
                post[m], prior_df[m] = squeeze_dispersions(phis[m], dfs[m])
        # A within-lineage fraction whose denominators spread widely between samples: the
        # quasi-Poisson over-weights its large samples and is anti-conservative there, so
        # it is tested by the beta-binomial GLM with a shrunk per-unit rho instead (fitted
        # over all the contrast's lineage fractions, whose scales are moderated together)
        contrast_rows = rows[len(rows) - len(fits) :]
        wide = [
            i
            for i in lineage_units
            if contrast_rows[i]["denominator_spread"] >= DENOMINATOR_SPREAD_LIMIT
        ]
        if wide:
            order = sorted(lineage_units)
            shrunk, _ = williams_shrunk([lineage_units[i] for i in order])
            w_phi = np.array([f[3] for f in shrunk])
            w_df = np.array([f[2] for f in shrunk], dtype=float)
            w_post, w_d0 = squeeze_dispersions(w_phi, w_df) if moderate else (w_phi.copy(), 0.0)
            for j, i in enumerate(order):
                if i not in wide:
                    continue
                beta, se0, df_resid, _, rho = shrunk[j]
                if not (np.isfinite(beta) and np.isfinite(se0) and np.isfinite(w_phi[j])):
                    # no beta-binomial fit: the quasi-Poisson p stays, said to be unreliable
                    contrast_rows[i].update(
                        p_reliable=False,
                        note=_spread_note(contrast_rows[i]["denominator_spread"], fitted=False),
                    )
                    continue
                fits[i] = (beta, se0, df_resid, w_phi[j], fits[i][4])
                post[i], prior_df[i] = w_post[j], w_d0
                contrast_rows[i].update(
                    log2fc=beta / _LN2,
                    model=WILLIAMS_SHRUNK,
                    overdispersion=rho,
                    note=_spread_note(contrast_rows[i]["denominator_spread"]),
                )
        for row, (beta, se0, df_resid, _, k_min), ph, d0 in zip(
            rows[len(rows) - len(fits) :], fits, post, prior_df, strict=True
        ):
            ph = max(1.0, float(ph)) if np.isfinite(ph) else float("nan")
            df_total = df_resid + d0 if df_resid > 0 else 0
            if k_min >= 2 and np.isfinite(ph):
                p, lo, hi = _wald_t(beta, se0 * math.sqrt(ph), min(df_total, 1e6), scale=_LN2)
            else:
                p, lo, hi = float("nan"), float("nan"), float("nan")
            row.update(ci_low=lo, ci_high=hi, p=p, dispersion=ph, df=float(min(df_total, 1e6)))
    out = pd.DataFrame(rows, columns=_DA_COLUMNS)
    out.insert(out.columns.get_loc("p") + 1, "padj", np.nan)
    # One BH family per contrast over every unit of the table, the read-out units
    # included: they are read next to the populations and fractions, and a family of
    # their own chosen after seeing the table would not control the FDR of what is read;
    # two more tests in a family of ~30 change the other adjusted p-values little.
    for _, idx in out.groupby("contrast").groups.items():
        out.loc[idx, "padj"] = _bh(out.loc[idx, "p"]).to_numpy()
    return out


_DA_COLUMNS = [
    "contrast",
    "test",
    "kind",
    "log2fc",
    "ci_low",
    "ci_high",
    "p",
    "p_reliable",
    "n_ref",
    "n_test",
    "prop_ref",
    "prop_test",
    "dispersion",
    "df",
    "cells_per_sample",
    "model",
    "overdispersion",
    "denominator_spread",
    "note",
]


# ----------------------------------------------------------------- pseudobulk DE
def _pseudobulk(m: Any, groups: np.ndarray, order: Sequence[str]) -> np.ndarray:
    """Rows of ``m`` summed per group (in ``order``)."""
    code = pd.Categorical(groups, categories=list(order)).codes
    keep = code >= 0
    ind = sp.csr_matrix(
        (np.ones(int(keep.sum())), (code[keep], np.flatnonzero(keep))),
        shape=(len(order), m.shape[0]),
    )
    out = ind @ m
    return np.asarray(out.todense() if sp.issparse(out) else out)


def _safe_meta(d: pd.DataFrame, covariates: Sequence[str], reference: str) -> pd.DataFrame:
    """PyDESeq2 metadata with formula-safe names and levels."""
    meta = pd.DataFrame(index=[f"S{i}" for i in range(len(d))])
    meta["condition"] = np.where(d["condition"].to_numpy() == reference, "ref", "alt")
    if "subject" in d:
        codes = {v: f"subj{i}" for i, v in enumerate(sorted(d["subject"].unique()))}
        meta["subject"] = d["subject"].map(codes).to_numpy()
    for i, c in enumerate(covariates):
        col = d[c]
        if col.dtype.kind in "if":
            meta[f"cov{i}"] = col.to_numpy(float)
        else:
            codes = {v: f"lv{j}" for j, v in enumerate(sorted(col.astype(str).unique()))}
            meta[f"cov{i}"] = col.astype(str).map(codes).to_numpy()
    return meta


def _deseq(
    counts: np.ndarray,
    genes: Sequence[str],
    meta: pd.DataFrame,
    *,
    paired: bool,
    inference: Literal["vectorized", "pydeseq2"] = "vectorized",
) -> tuple[pd.DataFrame, list[str]]:
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    from ._deseq_fast import VectorizedInference

    terms = [c for c in meta.columns if c.startswith("cov")]
    if paired:
        terms.append("subject")
    formula = "~" + " + ".join([*terms, "condition"])
    cdf = pd.DataFrame(counts.astype(np.int64), index=meta.index, columns=list(genes))
    from threadpoolctl import threadpool_limits

    inf = VectorizedInference() if inference == "vectorized" else DefaultInference(n_cpus=1)
    notes: list[str] = []
    # per-gene fits on tiny matrices: BLAS threads only add contention
    with threadpool_limits(limits=1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dds = DeseqDataSet(
            counts=cdf,
            metadata=meta,
            design=formula,
            refit_cooks=True,
            inference=inf,
            quiet=True,
        )
        dds.deseq2()
        res = DeseqStats(dds, contrast=["condition", "alt", "ref"], inference=inf, quiet=True)
        res.summary()
    for w in caught:
        msg = str(w.message).split("\n")[0]
        if msg not in notes:
            notes.append(msg)
    return res.results_df, notes


def pseudobulk_de(
    adata: ad.AnnData,
    *,
    condition_key: str = "condition",
    reference: str | None = None,
    sample_key: str = "sample",
    subject_key: str | None = None,
    covariates: Sequence[str] = (),
    population_key: str = "population",
    layer: str | None = "counts",
    min_cells: int = 20,
    min_samples_per_group: int = 3,
    min_gene_counts: int = 10,
    populations: Sequence[str] | None = None,
    inference: Literal["vectorized", "pydeseq2"] = "vectorized",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pseudobulk differential expression per population with PyDESeq2.

    Counts of ``layers[layer]`` are summed per sample × population; samples with fewer
    than ``min_cells`` cells of the population are left out of that population's test. A
    population is skipped (and the reason recorded) when a group keeps fewer than
    ``min(min_samples_per_group, samples in the group)`` samples, or fewer than 2. Genes
    with fewer than ``min_gene_counts`` counts over the kept pseudobulks, or seen in fewer
    than 2 of them, are not tested. Design ``~ covariates [+ subject] + condition``, Wald
    test of the condition with PyDESeq2's defaults (Cook's outlier refit, independent
    filtering; ``padj`` is BH within the population).

    Parameters
    ----------
    adata
        Cells with raw integer counts in ``layers[layer]`` (``X`` when ``layer`` is None).
    condition_key, reference, sample_key, subject_key, covariates, population_key
        See :func:`compare`.
    layer
        The counts layer.
    min_cells
        Cells of a population a sample needs for its pseudobulk to be used.
    min_samples_per_group
        Below this many samples in a group, ``p_reliable`` is False.
    min_gene_counts
        Gene filter (summed counts over the kept pseudobulks).
    populations
        Only these populations (default: all but ``Unassigned``).
    inference
        ``"vectorized"`` (default): PyDESeq2 with the per-gene fits vectorised over genes
        (:class:`~bonemet.tl._deseq_fast.VectorizedInference`, ~25x faster);
        ``"pydeseq2"``: PyDESeq2's own ``DefaultInference``.

    Returns
    -------
    ``(results, skipped)``. ``results``: one row per contrast × population × gene with
    ``base_mean``, ``log2fc``, ``lfc_se``, ``ci_low``, ``ci_high`` (Wald 95%), ``stat``,
    ``p``, ``padj``, ``p_reliable``, ``n_ref``, ``n_test``, ``notes`` (PyDESeq2's warnings).
    ``skipped``: ``contrast``, ``population``, ``reason``.

    Raises
    ------
    NotCountsError
        The layer does not hold raw integer counts.
    """
    from .._errors import NotCountsError

    m = adata.layers[layer] if layer is not None and layer in adata.layers else None
    if layer is not None and m is None:
        raise NotCountsError(
            f"compare: layers[{layer!r}] is missing: pseudobulk DE needs raw counts there"
        )
    if m is None:
        m = adata.X
    if not is_counts(m):
        where = f"layers[{layer!r}]" if layer is not None else "X"
        raise NotCountsError(
            f"compare: {where} does not hold raw integer counts (negative or non-integer "
            "values): pseudobulk DE needs raw counts. Give the raw count matrix"
        )
    design, reference, others = compare_design(
        adata,
        condition_key=condition_key,
        reference=reference,
        sample_key=sample_key,
        subject_key=subject_key,
        covariates=covariates,
    )
    paired = subject_key is not None
    obs = adata.obs
    pop = obs[population_key].astype(str).to_numpy()
    smp = obs[sample_key].astype(str).to_numpy()
    pops = (
        list(populations)
        if populations is not None
        else [p for p in pd.unique(pop) if p != UNASSIGNED]
    )
    order = [p for p in _POP_ORDER if p in pops] + sorted(p for p in pops if p not in _POP_ORDER)
    genes = adata.var_names.astype(str)
    results, skipped = [], []
    for other in others:
        contrast = f"{other} vs {reference}"
        sub = design[design["condition"].isin([reference, other])]
        g_ref, g_alt = _group_sizes(sub, reference, other)
        for p in order:
            cells = pop == p
            n_cells = pd.Series(smp[cells]).value_counts().reindex(sub.index, fill_value=0)
            d = sub[n_cells >= min_cells]
            k_ref, k_alt = _group_sizes(d, reference, other)
            need_ref = max(2, min(min_samples_per_group, g_ref))
            need_alt = max(2, min(min_samples_per_group, g_alt))
            if k_ref < need_ref or k_alt < need_alt:
                skipped.append(
                    {
                        "contrast": contrast,
                        "population": p,
                        "reason": (
                            f"{k_ref} {reference} and {k_alt} {other} samples have >= "
                            f"{min_cells} cells (need {need_ref} and {need_alt})"
                        ),
                    }
                )
                continue
            pb = _pseudobulk(m[cells], smp[cells], list(d.index))
            tot = pb.sum(axis=0)
            expressed = (tot >= min_gene_counts) & ((pb > 0).sum(axis=0) >= 2)
            if expressed.sum() < 2:
                skipped.append(
                    {
                        "contrast": contrast,
                        "population": p,
                        "reason": "fewer than 2 genes expressed",
                    }
                )
                continue
            meta = _safe_meta(d, covariates, reference)
            try:
                res, notes = _deseq(
                    pb[:, expressed], genes[expressed], meta, paired=paired, inference=inference
                )
            except (ValueError, np.linalg.LinAlgError) as e:
                skipped.append(
                    {"contrast": contrast, "population": p, "reason": f"PyDESeq2 failed: {e}"}
                )
                continue
            se = res["lfcSE"].to_numpy(float)
            lfc = res["log2FoldChange"].to_numpy(float)
            results.append(
                pd.DataFrame(
                    {
                        "contrast": contrast,
                        "population": p,
                        "gene": res.index.astype(str),
                        "base_mean": res["baseMean"].to_numpy(float),
                        "log2fc": lfc,
                        "lfc_se": se,
                        "ci_low": lfc - 1.959964 * se,
                        "ci_high": lfc + 1.959964 * se,
                        "stat": res["stat"].to_numpy(float),
                        "p": res["pvalue"].to_numpy(float),
                        "padj": res["padj"].to_numpy(float),
                        "p_reliable": min(k_ref, k_alt) >= min_samples_per_group,
                        "n_ref": k_ref,
                        "n_test": k_alt,
                        "notes": "; ".join(notes),
                    }
                )
            )
            logger.info(f"compare: pseudobulk DE {p} ({contrast}): {int(expressed.sum())} genes")
    # within a population, genes by p (the report shows the first rows)
    results = [r.sort_values("p", kind="stable", na_position="last") for r in results]
    out = (
        pd.concat(results, ignore_index=True)
        if results
        else pd.DataFrame(columns=_DE_COLUMNS).astype({"p_reliable": bool})
    )
    return out, pd.DataFrame(skipped, columns=["contrast", "population", "reason"])


_POP_ORDER = list(POPULATIONS)
_DE_COLUMNS = [
    "contrast",
    "population",
    "gene",
    "base_mean",
    "log2fc",
    "lfc_se",
    "ci_low",
    "ci_high",
    "stat",
    "p",
    "padj",
    "p_reliable",
    "n_ref",
    "n_test",
    "notes",
]


# ------------------------------------------------------------------- score tests
def score_tests(
    adata: ad.AnnData,
    *,
    condition_key: str = "condition",
    reference: str | None = None,
    sample_key: str = "sample",
    subject_key: str | None = None,
    covariates: Sequence[str] = (),
    population_key: str = "population",
    min_cells: int = 20,
    min_samples_per_group: int = 3,
    moderate: bool = False,
) -> pd.DataFrame:
    """Per population, the per-sample mean of each ``obs["score_*"]`` between conditions.

    Ordinary least squares of the sample means on ``~ covariates [+ subject] +
    condition`` (samples with fewer than ``min_cells`` cells of the population left
    out); effect = difference in mean score (other - reference) with its t-based 95% CI on
    the residual degrees of freedom. BH adjustment across every population × score of one
    contrast.

    Parameters
    ----------
    adata
        Cells with ``obs["score_*"]`` columns.
    condition_key, reference, sample_key, subject_key, covariates, population_key
        See :func:`compare`.
    min_cells
        Cells of a population a sample needs for its mean to be used.
    min_samples_per_group
        Below this many samples in a group, ``p_reliable`` is False.
    moderate
        Moderate the residual variances of one score across populations by empirical Bayes
        (limma's approach; t on residual plus prior df). Off by default: a sample-wide
        shift of a score is shared by every population, the tests are then not independent
        and moderated p-values are too small.

    Returns
    -------
    One row per contrast × population × score: ``contrast``, ``population``, ``score``,
    ``effect``, ``ci_low``, ``ci_high``, ``p``, ``padj``, ``p_reliable``, ``df``, ``n_ref``,
    ``n_test``, ``mean_ref``, ``mean_test``, ``cells_per_sample``.
    """
    scores = [c for c in adata.obs.columns if str(c).startswith("score_")]
    design, reference, others = compare_design(
        adata,
        condition_key=condition_key,
        reference=reference,
        sample_key=sample_key,
        subject_key=subject_key,
        covariates=covariates,
    )
    rows = []
    if scores and population_key in adata.obs:
        obs = adata.obs
        df = pd.DataFrame(
            {
                "sample": obs[sample_key].astype(str).to_numpy(),
                "population": obs[population_key].astype(str).to_numpy(),
                **{s: obs[s].to_numpy(float) for s in scores},
            }
        )
        df = df[df["population"] != UNASSIGNED]
        means = df.groupby(["population", "sample"], sort=True)[scores].mean()
        sizes = df.groupby(["population", "sample"], sort=True).size()
        for other in others:
            sub = design[design["condition"].isin([reference, other])]
            fits: list[tuple[str, float, float, float, int, int]] = []
            start = len(rows)
            for p in sorted(df["population"].unique()):
                n = sizes.loc[p].reindex(sub.index, fill_value=0)
                d = sub[n >= min_cells]
                k_ref, k_alt = _group_sizes(d, reference, other)
                if k_ref == 0 or k_alt == 0:
                    continue
                xm = _model_matrix(
                    d, covariates=covariates, subject=subject_key is not None, reference=reference
                )
                for s in scores:
                    y = means.loc[p][s].reindex(d.index).to_numpy(float)
                    beta, unscaled, sigma2, df_resid = _ols_last(y, xm)
                    fits.append((s, beta, unscaled, sigma2, df_resid, min(k_ref, k_alt)))
                    is_ref = (d["condition"] == reference).to_numpy()
                    rows.append(
                        {
                            "contrast": f"{other} vs {reference}",
                            "population": p,
                            "score": s.removeprefix("score_"),
                            "effect": beta,
                            "p_reliable": min(k_ref, k_alt) >= min_samples_per_group,
                            "n_ref": k_ref,
                            "n_test": k_alt,
                            "mean_ref": float(np.mean(y[is_ref])),
                            "mean_test": float(np.mean(y[~is_ref])),
                            "cells_per_sample": _cells_text(n[n >= min_cells]),
                        }
                    )
            # residual variances moderated per score across populations (limma's eBayes)
            sig2 = np.array([f[3] for f in fits])
            dfs = np.array([f[4] for f in fits], dtype=float)
            post, prior_df = sig2.copy(), np.zeros(len(fits))
            names = np.array([f[0] for f in fits])
            if moderate:
                for name in np.unique(names):
                    m = names == name
                    post[m], prior_df[m] = squeeze_dispersions(sig2[m], dfs[m])
            for row, (_, beta, unscaled, _, df_resid, k_min), s2, d0 in zip(
                rows[start:], fits, post, prior_df, strict=True
            ):
                df_total = min(df_resid + d0, 1e6) if df_resid > 0 else 0
                if k_min >= 2 and np.isfinite(s2):
                    pv, lo, hi = _wald_t(beta, unscaled * math.sqrt(s2), df_total)
                else:
                    pv, lo, hi = float("nan"), float("nan"), float("nan")
                row.update(ci_low=lo, ci_high=hi, p=pv, df=float(df_total))
    cols = [
        "contrast",
        "population",
        "score",
        "effect",
        "ci_low",
        "ci_high",
        "p",
        "p_reliable",
        "df",
        "n_ref",
        "n_test",
        "mean_ref",
        "mean_test",
        "cells_per_sample",
    ]
    out = pd.DataFrame(rows, columns=cols)
    out.insert(out.columns.get_loc("p") + 1, "padj", np.nan)
    for _, idx in out.groupby("contrast").groups.items():
        out.loc[idx, "padj"] = _bh(out.loc[idx, "p"]).to_numpy()
    return out.astype({"p_reliable": bool})


def _ols_last(y: np.ndarray, x: np.ndarray) -> tuple[float, float, float, int]:
    """OLS coefficient of the last column, its unscaled SE, the residual variance and df."""
    df_resid = x.shape[0] - x.shape[1]
    nan = float("nan")
    if np.linalg.matrix_rank(x) < x.shape[1]:
        return nan, nan, nan, df_resid
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    unscaled = float(math.sqrt(max(np.linalg.inv(x.T @ x)[-1, -1], 0.0)))
    if df_resid < 1:
        return float(coef[-1]), unscaled, nan, df_resid
    resid = y - x @ coef
    return float(coef[-1]), unscaled, float(resid @ resid) / df_resid, df_resid


# ----------------------------------------------------------------------- compare
def compare(
    adata: ad.AnnData,
    *,
    condition_key: str = "condition",
    reference: str | None = None,
    sample_key: str = "sample",
    subject_key: str | None = None,
    covariates: Sequence[str] = (),
    population_key: str = "population",
    layer: str | None = "counts",
    min_cells: int = 20,
    min_samples_per_group: int = 3,
    de: bool = True,
    neutrophil_stages: int = 4,
    key_added: str = "bonemet_compare",
    copy: bool = False,
) -> ad.AnnData | None:
    """Differential abundance, pseudobulk DE and score tests between conditions.

    Samples are the replicates; every test uses the design ``~ covariates [+ subject] +
    condition`` (subject when ``subject_key`` is given: a paired design). Each level of
    ``condition_key`` other than ``reference`` is compared with ``reference``.

    Parameters
    ----------
    adata
        Annotated cells: ``obs[sample_key]``, ``obs[condition_key]``,
        ``obs[population_key]``, raw counts in ``layers[layer]`` (for DE) and
        ``obs["score_*"]`` (for the score tests).
    condition_key
        The obs column naming each sample's condition.
    reference
        The baseline level. Default: the one level whose name reads as a control
        (:data:`CONTROL_WORDS`: control, ctrl, healthy, normal, naive, sham, vehicle, wt;
        case-insensitive, as a word of the level) when exactly one does, else the first
        level in sorted order, with a warning that names it.
    sample_key
        The obs column naming the sample (the replicate unit).
    subject_key
        The obs column naming the subject (animal or patient) of a paired design.
    covariates
        Obs columns (constant within a sample) added to the design, e.g. batch.
    population_key
        The population labels.
    layer
        The raw-counts layer for pseudobulk DE.
    min_cells
        Cells of a population a sample needs to enter that population's DE and score tests.
    min_samples_per_group
        Fewer samples in a group: p-values reported but marked unreliable, with a warning.
    de
        Run pseudobulk DE (the slowest part).
    neutrophil_stages
        Maturation stages of the neutrophil stage-1 abundance unit, computed here when
        ``obs["neutrophil_maturation_stage"]`` is absent (the config's
        ``axes.neutrophil_stages``; 0: no such unit).
    key_added
        ``uns`` key of the results.
    copy
        Return a copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` (or the copy). ``uns[key_added]`` holds DataFrames ``differential_abundance``
    (:func:`differential_abundance`), ``pseudobulk_de`` and ``de_skipped``
    (:func:`pseudobulk_de`), ``score_tests`` (:func:`score_tests`), ``design`` (one row per
    sample), ``status`` (``"done"`` or ``"skipped: <reason>"``), ``reference`` and
    ``reference_source`` (``given``, ``control-like name``, ``first level (sorted)`` or
    ``only level``), ``contrasts``, ``min_cells``, ``min_samples_per_group`` and
    ``units`` (where the read-out abundance units came from, or why they are absent). Non-count data skips
    DE with a warning; DA and score tests still run. A single condition skips everything
    with a warning.

    Raises
    ------
    InputError
        Missing obs keys, an unknown reference, inconsistent per-sample values or a
        covariate confounded with the condition (see :func:`compare_design`).
    """
    from .._errors import NotCountsError

    if min_cells < 1 or min_samples_per_group < 1:
        raise InputError("compare: min_cells and min_samples_per_group must be >= 1")
    adata = adata.copy() if copy else adata
    covariates = list(covariates)
    kw: dict[str, Any] = {
        "condition_key": condition_key,
        "reference": reference,
        "sample_key": sample_key,
        "subject_key": subject_key,
        "covariates": covariates,
    }
    design, ref, others = compare_design(adata, **kw)
    _, ref_source, _ = _resolve_reference(
        _condition_levels(adata.obs[condition_key], design), reference, condition_key=condition_key
    )
    if population_key not in adata.obs:
        raise InputError(
            f"compare: population_key {population_key!r} is not an obs column; obs columns: "
            f"{', '.join(map(str, adata.obs.columns))}. Run annotate first"
        )
    kw["reference"] = ref
    empty_de = pd.DataFrame(columns=_DE_COLUMNS).astype({"p_reliable": bool})
    result: dict[str, Any] = {
        "design": _h5ad_safe(design.reset_index()),
        "reference": ref,
        "reference_source": ref_source,
        "contrasts": [f"{o} vs {ref}" for o in others],
        "min_cells": int(min_cells),
        "min_samples_per_group": int(min_samples_per_group),
    }
    if not others:
        msg = (
            f"compare: skipped: {condition_key!r} has one level ({ref}) only, so there is "
            "nothing to compare"
        )
        add_warning(adata, msg)
        result.update(
            status=f"skipped: one condition ({ref})",
            differential_abundance=_h5ad_safe(pd.DataFrame(columns=_DA_COLUMNS + ["padj"])),
            pseudobulk_de=_h5ad_safe(empty_de),
            de_skipped=_h5ad_safe(pd.DataFrame(columns=["contrast", "population", "reason"])),
            score_tests=_h5ad_safe(pd.DataFrame()),
        )
        adata.uns[key_added] = result
        return adata if copy else None
    for other in others:
        n_ref, n_alt = _group_sizes(design[design["condition"].isin([ref, other])], ref, other)
        _small_design_warning(adata, n_ref, n_alt, ref, other, min_samples_per_group)
    units: dict[str, Any] = {}
    da = differential_abundance(
        adata,
        population_key=population_key,
        min_samples_per_group=min_samples_per_group,
        neutrophil_stages=neutrophil_stages,
        info=units,
        **kw,
    )
    result["units"] = units
    result["denominator_spread_limit"] = {
        "limit": DENOMINATOR_SPREAD_LIMIT,
        "applies_to": "within-lineage fractions: from this spread on they are tested with "
        "the shrunk-rho Williams GLM instead of the quasi-Poisson",
        "basis": "benchmarks/compare_calibration.py lineage_spread_sweep: moderated "
        "quasi-Poisson null FPR at 0.05, 3 vs 3 / 4 vs 4, high between-sample "
        "overdispersion: 0.053 / 0.055 at a 1.5-fold spread, 0.058 / 0.055 at 2-fold, "
        "0.067 / 0.061 at 2.5-fold, 0.066 / 0.063 at 3-fold, 0.147 / 0.145 at 25-fold",
        "rows_williams": int((da["model"] == WILLIAMS_SHRUNK).sum()) if "model" in da else 0,
    }
    st = score_tests(
        adata,
        population_key=population_key,
        min_cells=min_cells,
        min_samples_per_group=min_samples_per_group,
        **kw,
    )
    de_res, de_skip = empty_de, pd.DataFrame(columns=["contrast", "population", "reason"])
    if de:
        try:
            de_res, de_skip = pseudobulk_de(
                adata,
                population_key=population_key,
                layer=layer,
                min_cells=min_cells,
                min_samples_per_group=min_samples_per_group,
                **kw,
            )
        except NotCountsError as e:
            add_warning(adata, f"{e}; differential abundance and score tests still ran")
            de_skip = pd.DataFrame(
                [
                    {"contrast": c, "population": "(all)", "reason": str(e)}
                    for c in result["contrasts"]
                ]
            )
    result.update(
        status="done",
        differential_abundance=_h5ad_safe(da),
        pseudobulk_de=_h5ad_safe(de_res),
        de_skipped=_h5ad_safe(de_skip),
        score_tests=_h5ad_safe(st),
    )
    adata.uns[key_added] = result
    return adata if copy else None


def _h5ad_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Text columns as str (no NaN objects), a plain RangeIndex: round-trips through h5ad."""
    out = df.reset_index(drop=True).copy()
    for c in out.columns:
        if out[c].dtype == object or isinstance(out[c].dtype, pd.CategoricalDtype):
            out[c] = out[c].astype(object).where(out[c].notna(), "").astype(str)
    out.columns = [str(c) for c in out.columns]
    return out
