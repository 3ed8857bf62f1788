"""Calibration and power of the compare stage on generated data (3 vs 3 samples).

Null data sets have no condition effect; per-sample population proportions are
Dirichlet-multinomial and every gene's mean varies between samples (log-normal), as
between biological replicates (:func:`bonemet.datasets.simulate_condition_design`). On
each null the script records the fraction of p-values below 0.05 for

- differential abundance: bonemet's quasi-Poisson GLM with moderated dispersions
  (populations and within-lineage fractions, the latter also alone as
  ``da_lineage_fraction``; also without moderation), a quasi-binomial
  GLM (logit link, same design, unmoderated), and scanpro (propeller, logit transform,
  populations only);
- pseudobulk DE (PyDESeq2) in three populations;
- score tests (a score without effect, every population; the null score has a per-sample
  shift shared by all populations of a sample), with and without moderated variances.

Power data sets plant a 3x shift of CHI3L3+ immature neutrophils, 20 DE genes
(|log2FC| = 1.5) in tumour cells and a tumour score shift; power is the fraction of planted
effects with BH-adjusted p < 0.05, and the false discoveries are counted on the rest.
Finally ``compare`` is timed on a 20k-cell, 6-sample data set. Prints JSON and writes
``benchmarks/results/compare_calibration.json``.

The erythroid-mimicry called fraction (``called_fraction`` in the JSON) is checked on its
own nulls: per-sample tumour-cell counts log-uniform between 20 and 500, each sample's true
called fraction drawn from a beta around a mean of 5-10 % (concentration 10-60, i.e.
between-sample overdispersion rho 0.016-0.09), no condition effect; 3 vs 3 and 4 vs 4. The
unit's model (Williams' beta-binomial-type quasi-likelihood, :func:`bonemet.tl._compare.
_williams`) against the plain quasi-Poisson with offset it would otherwise get and a
quasi-binomial GLM: false-positive rates at 0.05 and 0.01, the KS distance of p from
uniform with its p-value, and the power at a planted 2x fraction.

``lineage_spread_sweep``: where the quasi-Poisson breaks. Null sets of 6 fractions whose
denominators spread between samples by a max/min ratio of 1.5, 2, 2.5, 3, 5, 10 or 25
(log-spaced around 100 cells), with low (concentration 150, the standard null's) or high (15)
between-sample overdispersion of the true fraction, 3 vs 3 and 4 vs 4: FPR at 0.05 and
power at a planted 2x fraction of the moderated quasi-Poisson the lineage fractions had,
Williams per unit, and pooled-rho moderated Williams variants (closed form for the
two-group design), and the per-fraction rho shrunk towards the pooled one.
``differential_abundance`` tests a lineage fraction whose denominators spread 2.5-fold or
more (``DENOMINATOR_SPREAD_LIMIT``: the smallest swept spread whose quasi-Poisson FPR
passes 0.06) with the shrunk-rho Williams model (prior 5 units' df) instead.
``lineage_model_trial``: the pooled-rho and shrunk-rho beta-binomial Williams models on
the standard design, where the pooled rho loses power on the planted CHI3L3+ fraction
(so the quasi-Poisson stays where it is calibrated).
``population_spread_check``: the same quasi-Poisson on population-like units (about 1,000
cells per sample, shares 2-20 %), where a 3- or 10-fold spread does not make it
anti-conservative; the spread mark is for the within-lineage fractions only.

Needs scanpro (``pip install scanpro``) for the comparison. Usage:
``nice python benchmarks/compare_calibration.py [--n-null 50] [--n-power 20]``;
``--only called_fraction`` / ``spread_sweep`` / ``population_spread`` runs that part alone and updates it in
the existing JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
import warnings
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import bonemet as bm  # noqa: E402
from bonemet.tl._compare import _abundance_units, _model_matrix  # noqa: E402

DE_POPS = ["Tumour epithelial", "Mature neutrophil", "B"]
PLANTED_POP = "Immature neutrophil (CHI3L3+)"
PLANTED_FRACTION = "CHI3L3+ immature / neutrophils"


def quasi_binomial_p(adata) -> pd.Series:
    """p of the condition in a quasi-binomial GLM (logit), dispersion floored at 1."""
    import statsmodels.api as sm
    from scipy import stats

    design, ref, _ = bm.tl.compare_design(adata)
    numer, denom, _ = _abundance_units(adata, "population", "sample")
    out = {}
    for test in numer.columns:
        n = denom.loc[design.index, test]
        d = design[n > 0]
        x = numer.loc[d.index, test].to_numpy(float)
        nn = n[n > 0].to_numpy(float)
        xm = _model_matrix(d, covariates=[], subject=False, reference=ref)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sm.GLM(x / nn, xm, family=sm.families.Binomial(), var_weights=nn).fit()
        df = xm.shape[0] - xm.shape[1]
        mu = res.fittedvalues
        phi = max(1.0, float(np.sum(nn * (x / nn - mu) ** 2 / (mu * (1 - mu))) / df))
        t = res.params[-1] / (res.bse[-1] * math.sqrt(phi))
        out[test] = float(2 * stats.t.sf(abs(t), df))
    return pd.Series(out)


SCANPRO_FAILURES = {"robust": 0}


def scanpro_p(adata) -> pd.Series:
    """scanpro's p (robust eBayes; non-robust where its robust F-fit fails, counted)."""
    from scanpro import scanpro

    kw = {"clusters_col": "population", "conds_col": "condition", "samples_col": "sample"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            r = scanpro(adata.obs, verbosity=0, **kw)
        except ValueError:
            SCANPRO_FAILURES["robust"] += 1
            r = scanpro(adata.obs, verbosity=0, robust=False, **kw)
    return r.results["p_values"]


def run_compare(adata, *, de_pops=None, pydeseq2=False) -> dict[str, pd.DataFrame]:
    da = bm.tl.differential_abundance(adata)
    st = bm.tl.score_tests(adata)
    de, _ = bm.tl.pseudobulk_de(adata, populations=de_pops)
    out = {"da": da, "scores": st, "de": de}
    out["da_unmoderated"] = bm.tl.differential_abundance(adata, moderate=False)
    out["scores_moderated"] = bm.tl.score_tests(adata, moderate=True)
    if pydeseq2:
        out["de_pydeseq2"] = bm.tl.pseudobulk_de(adata, populations=de_pops, inference="pydeseq2")[
            0
        ]
    return out


def _called_fraction_sets(k: int, reps: int, seed: int, fold: float = 1.0):
    """Per-sample (calls, tumour cells, design) of the called-fraction simulation."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(2 * k), np.r_[np.zeros(k), np.ones(k)]])
    for _ in range(reps):
        n = np.rint(np.exp(rng.uniform(np.log(20), np.log(500), 2 * k))).astype(int)
        mean, conc = rng.uniform(0.05, 0.10), rng.uniform(10, 60)
        m = np.r_[np.full(k, mean), np.full(k, min(mean * fold, 0.9))]
        calls = rng.binomial(n, rng.beta(m * conc, (1 - m) * conc))
        yield calls, n, x


def _quasi_binomial_fit(x, n, xm):
    """Logit quasi-binomial GLM (one dispersion for all samples): coefficient, SE, df, phi."""
    import statsmodels.api as sm

    y = x.astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sm.GLM(np.column_stack([y, n - y]), xm, family=sm.families.Binomial()).fit()
    df = xm.shape[0] - xm.shape[1]
    mu = res.fittedvalues
    phi = float(np.sum((y - n * mu) ** 2 / (n * mu * (1 - mu))) / df)
    return float(res.params[-1]), float(res.bse[-1]), df, phi


def called_fraction_calibration(reps: int, power_reps: int) -> dict:
    from scipy import stats

    from bonemet.tl._compare import _quasi_poisson, _wald_t, _williams

    models = {
        "williams (used)": _williams,
        "quasi_poisson_offset (before)": _quasi_poisson,
        "quasi_binomial_logit": _quasi_binomial_fit,
    }

    def pvals(fit, k, n_sets, seed, fold=1.0):
        out = []
        for calls, n, xm in _called_fraction_sets(k, n_sets, seed, fold):
            beta, se, df, phi = fit(calls, n, xm)[:4]
            out.append(_wald_t(beta, se * math.sqrt(max(1.0, phi)), df)[0])
        p = np.asarray(out, dtype=float)
        return p[np.isfinite(p)]

    res: dict = {
        "simulation": "tumour cells per sample log-uniform 20-500; true called fraction per "
        "sample ~ Beta(mean 5-10 %, concentration 10-60); no condition effect (power: the "
        "test group's mean x2); t on the residual df, dispersion floored at 1",
        "n_datasets_per_design": reps,
        "n_power_datasets_per_design": power_reps,
    }
    for k, seed in ((3, 71), (4, 72)):
        design = f"{k}v{k}"
        res[design] = {}
        for name, fit in models.items():
            t0 = time.perf_counter()
            p = pvals(fit, k, reps, seed)
            ks = stats.kstest(p, "uniform")
            pw = pvals(fit, k, power_reps, seed + 100, fold=2.0)
            res[design][name] = {
                "fpr_0.05": frac_below(p),
                "fpr_0.01": frac_below(p, 0.01),
                "ks_distance": round(float(ks.statistic), 4),
                "ks_p": float(f"{ks.pvalue:.3g}"),
                "n_pvalues": int(len(p)),
                "power_2x_p_0.05": frac_below(pw),
                "seconds": round(time.perf_counter() - t0, 1),
            }
    return res


def lineage_fractions_wide(reps: int) -> dict:
    """Six within-lineage fractions per null set, denominators 20-500 cells per sample,
    true fractions 5-40 % (beta, concentration 10-60): the moderated quasi-Poisson the
    lineage fractions use below the spread limit, Williams per unit, the pooled-rho
    moderated Williams model (:func:`_williams_pooled`, tried and not used), the shrunk-rho
    model and the pipeline's rule (quasi-Poisson below the spread limit, shrunk rho above)."""
    from bonemet.tl._compare import (
        _RHO_PRIOR_UNITS,
        DENOMINATOR_SPREAD_LIMIT,
        _quasi_poisson,
        _wald_t,
        _williams,
        squeeze_dispersions,
    )

    out: dict = {
        "simulation": "per null set 6 fractions; denominators log-uniform 20-500 per "
        "sample; true fraction ~ Beta(mean 5-40 %, concentration 10-60); no effect",
        "n_datasets_per_design": reps,
    }
    for k, seed in ((3, 81), (4, 82)):
        rng = np.random.default_rng(seed)
        xm = np.column_stack([np.ones(2 * k), np.r_[np.zeros(k), np.ones(k)]])
        p_qp, p_w, p_pool, p_shrunk, p_rule = [], [], [], [], []
        for _ in range(reps):
            fits, ws, units = [], [], []
            for _u in range(6):
                n = np.rint(np.exp(rng.uniform(np.log(20), np.log(500), 2 * k))).astype(int)
                m, conc = rng.uniform(0.05, 0.4), rng.uniform(10, 60)
                x = rng.binomial(n, rng.beta(m * conc, (1 - m) * conc, 2 * k))
                fits.append(_quasi_poisson(x, n, xm))
                ws.append(_williams(x, n, xm))
                units.append((x, n, xm))
            phi = np.array([f[3] for f in fits])
            dfs = np.array([f[2] for f in fits], dtype=float)
            post, d0 = squeeze_dispersions(phi, dfs)
            qp = [
                _wald_t(b, se * math.sqrt(max(1.0, ph)), min(dfr + d0, 1e6))[0]
                for (b, se, dfr, _), ph in zip(fits, post, strict=True)
            ]
            p_qp.extend(qp)
            for b, se, dfr, ph, _ in ws:
                p_w.append(_wald_t(b, se * math.sqrt(max(1.0, ph)), dfr)[0])
            for out_p, fitted in (
                (p_pool, _williams_pooled(units)[0]),
                (p_shrunk, _williams_shrunk(units, _RHO_PRIOR_UNITS)[0]),
            ):
                post, d0 = squeeze_dispersions(
                    np.array([f[3] for f in fitted]), np.array([f[2] for f in fitted], float)
                )
                out_p.extend(
                    _wald_t(b, se * math.sqrt(max(1.0, ph)), min(dfr + d0, 1e6))[0]
                    for (b, se, dfr, *_), ph in zip(fitted, post, strict=True)
                )
            # the pipeline's rule: quasi-Poisson below the spread limit, shrunk rho above
            wide = [u[1].max() / u[1].min() >= DENOMINATOR_SPREAD_LIMIT for u in units]
            p_rule.extend(s if w else q for q, s, w in zip(qp, p_shrunk[-6:], wide, strict=True))
        out[f"{k}v{k}"] = {
            "quasi_poisson_moderated (used below the spread limit)": {
                "fpr_0.05": frac_below(p_qp),
                "fpr_0.01": frac_below(p_qp, 0.01),
            },
            "williams_pooled_rho_moderated (tried, not used)": {
                "fpr_0.05": frac_below(p_pool),
                "fpr_0.01": frac_below(p_pool, 0.01),
            },
            "williams_shrunk_rho_5x_moderated": {
                "fpr_0.05": frac_below(p_shrunk),
                "fpr_0.01": frac_below(p_shrunk, 0.01),
            },
            "pipeline rule (used: quasi-Poisson below the spread limit, shrunk rho above)": {
                "fpr_0.05": frac_below(p_rule),
                "fpr_0.01": frac_below(p_rule, 0.01),
            },
            "williams_per_unit": {
                "fpr_0.05": frac_below(p_w),
                "fpr_0.01": frac_below(p_w, 0.01),
            },
            "n_pvalues": len(p_w),
        }
    return out


# ------------------------------------------------------------ denominator-spread sweep
def _williams_pooled(units: list) -> tuple[list, float]:
    """The fraction units of one contrast with one between-sample spread ``rho`` (the
    pipeline's :func:`~bonemet.tl._compare.williams_shrunk` with an infinite prior): each
    unit's scale ``phi_u`` is then moderated across the units by the caller. Tried for
    every lineage fraction and not used: calibrated at every spread of the sweep, but it
    loses power on the standard set (``lineage_model_trial``)."""
    from bonemet.tl._compare import williams_shrunk

    return williams_shrunk(units, math.inf)


def _williams_shrunk(units: list, prior_units: float) -> tuple[list, float]:
    """Each unit's own rho shrunk towards the pooled one with a prior of ``prior_units``
    units' residual df (:func:`~bonemet.tl._compare.williams_shrunk`; the pipeline uses
    it, prior 5, for the lineage fractions whose denominators spread widely)."""
    from bonemet.tl._compare import williams_shrunk

    return williams_shrunk(units, prior_units)


SPREADS = (1.5, 2.0, 2.5, 3.0, 5.0, 10.0, 25.0)
#: Dirichlet-type concentration of the samples' true fractions: 150 as the standard null
#: (rho ~ 0.007), 15 for a high between-sample spread (rho ~ 0.06)
CONCENTRATIONS = {"low": 150.0, "high": 15.0}


def _spread_sets(k: int, reps: int, spread: float, conc: float, rng, fold: float = 1.0):
    """``reps`` null sets of 6 fractions: (x, n) arrays of shape (reps, 6, 2k).

    A unit's 2k denominators are log-spaced from ``100 / sqrt(spread)`` to ``100 *
    sqrt(spread)`` (max/min = ``spread``), in random order over the samples; its mean
    fraction is uniform 5-40 % and each sample's true fraction ~ Beta(mean, ``conc``)."""
    base = np.exp(np.linspace(-0.5, 0.5, 2 * k) * np.log(spread)) * 100.0
    n = np.rint(base)[rng.permuted(np.tile(np.arange(2 * k), (reps, 6, 1)), axis=2)]
    m = rng.uniform(0.05, 0.4, (reps, 6, 1)) * np.r_[np.ones(k), np.full(k, fold)]
    f = rng.beta(m * conc, (1 - m) * conc)
    return rng.binomial(n.astype(int), f).astype(float), n


def _two_group_fit(x, n, k, rho, binomial: bool = False):
    """Closed form of the log-link offset GLM with Williams weights on ``~ condition``
    (first k samples reference): beta, SE without scale, Pearson statistic. ``rho`` 0 is
    the quasi-Poisson fit; ``binomial``: counting variance ``mu (1 - mu / n)`` (the
    beta-binomial form) instead of ``mu``."""
    w = 1.0 / (1.0 + (n - 1.0) * rho)
    g0, g1 = slice(0, k), slice(k, 2 * k)
    p0 = (w[..., g0] * x[..., g0]).sum(-1) / (w[..., g0] * n[..., g0]).sum(-1)
    p1 = (w[..., g1] * x[..., g1]).sum(-1) / (w[..., g1] * n[..., g1]).sum(-1)
    mu = n * np.concatenate([np.repeat(p0[..., None], k, -1), np.repeat(p1[..., None], k, -1)], -1)
    q0, q1 = (1.0 - p0, 1.0 - p1) if binomial else (1.0, 1.0)
    q = mu / n if binomial else 0.0
    x2 = (w * (x - mu) ** 2 / (mu * (1.0 - q))).sum(-1)
    var = q0 / (w[..., g0] * mu[..., g0]).sum(-1) + q1 / (w[..., g1] * mu[..., g1]).sum(-1)
    return np.log(p1 / p0), np.sqrt(var), x2


def _rho_root(x, n, k, target, *, pooled: bool, binomial: bool = False):
    """rho with Pearson = ``target`` (per unit, or summed over a set's units when
    ``pooled``), by bisection on [0, 0.999]; 0 where Pearson at 0 is already below."""

    def stat(r):
        r = r[..., None] if not pooled else r[..., None, None]
        x2 = _two_group_fit(x, n, k, r, binomial)[2]
        return x2.sum(-1) if pooled else x2

    shape = x.shape[:-2] if pooled else x.shape[:-1]
    lo, hi = np.zeros(shape), np.full(shape, 0.999)
    t = target * (x.shape[-2] if pooled else 1)
    for _ in range(45):
        mid = (lo + hi) / 2
        above = stat(mid) > t
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return np.where(stat(np.zeros(shape)) > t, hi, 0.0)


def _sweep_pvalues(x, n, k):
    """p-values (flattened) of the lineage-fraction models on (reps, 6, 2k) sets."""
    from scipy import stats

    from bonemet.tl._compare import squeeze_dispersions

    df = 2 * k - 2
    out = {}
    # moderated quasi-Poisson (as the lineage fractions are tested), floored at 1
    xx = np.where(
        (x[..., :k].sum(-1, keepdims=True) == 0) | (x[..., k:].sum(-1, keepdims=True) == 0),
        x + 0.5,
        x,
    )
    beta, se, x2 = _two_group_fit(xx, n, k, 0.0)
    phi = x2 / df
    post = np.empty_like(phi)
    d0 = np.empty(phi.shape[0])
    for i in range(phi.shape[0]):
        post[i], d0[i] = squeeze_dispersions(phi[i], np.full(6, float(df)))
    dft = np.minimum(df + d0, 1e6)[:, None]
    out["quasi_poisson_moderated (used below the spread limit)"] = 2 * stats.t.sf(
        np.abs(beta / (se * np.sqrt(np.maximum(post, 1.0)))), dft
    )
    # Williams per unit (the read-out units' model), t on the residual df
    rho = _rho_root(xx, n, k, df, pooled=False)
    beta, se, x2 = _two_group_fit(xx, n, k, rho[..., None])
    out["williams_per_unit"] = 2 * stats.t.sf(
        np.abs(beta / (se * np.sqrt(np.maximum(x2 / df, 1.0)))), df
    )
    # moderated Williams: one rho per set (pooled Pearson = pooled df), then each unit's
    # scale phi at that rho squeezed across the set's units, t on df + d0
    rho0 = _rho_root(xx, n, k, df, pooled=True)
    beta, se, x2 = _two_group_fit(xx, n, k, rho0[:, None, None])
    phi = x2 / df
    for i in range(phi.shape[0]):
        post[i], d0[i] = squeeze_dispersions(phi[i], np.full(6, float(df)))
    dft = np.minimum(df + d0, 1e6)[:, None]
    out["williams_poisson_pooled_rho_moderated_no_floor"] = 2 * stats.t.sf(
        np.abs(beta / (se * np.sqrt(post))), dft
    )
    out["williams_poisson_pooled_rho_moderated"] = 2 * stats.t.sf(
        np.abs(beta / (se * np.sqrt(np.maximum(post, 1.0)))), dft
    )
    # the same with the beta-binomial counting variance mu (1 - mu / n), as
    # _williams_pooled (checked against it to 1e-5)
    rho0 = _rho_root(xx, n, k, df, pooled=True, binomial=True)
    beta, se, x2 = _two_group_fit(xx, n, k, rho0[:, None, None], True)
    phi = x2 / df
    for i in range(phi.shape[0]):
        post[i], d0[i] = squeeze_dispersions(phi[i], np.full(6, float(df)))
    dft = np.minimum(df + d0, 1e6)[:, None]
    out["williams_binomial_pooled_rho_moderated"] = 2 * stats.t.sf(
        np.abs(beta / (se * np.sqrt(np.maximum(post, 1.0)))), dft
    )
    floor = np.where(rho0 > 0, 0.0, 1.0)[:, None]
    out["williams_binomial_pooled_rho_moderated_no_floor_when_rho_above_0"] = 2 * stats.t.sf(
        np.abs(beta / (se * np.sqrt(np.maximum(post, floor)))), dft
    )
    # per-unit rho shrunk towards the set's pooled rho (prior weight in residual df:
    # one unit's df, or the other five units' df), then moderated scale floored at 1
    rho_u = _rho_root(xx, n, k, df, pooled=False, binomial=True)
    for name, prior in (("1x", df), ("5x", 5 * df)):
        rho_s = (df * rho_u + prior * rho0[:, None]) / (df + prior)
        beta, se, x2 = _two_group_fit(xx, n, k, rho_s[..., None], True)
        phi = x2 / df
        for i in range(phi.shape[0]):
            post[i], d0[i] = squeeze_dispersions(phi[i], np.full(6, float(df)))
        dft = np.minimum(df + d0, 1e6)[:, None]
        out[f"williams_binomial_shrunk_rho_{name}_moderated"] = 2 * stats.t.sf(
            np.abs(beta / (se * np.sqrt(np.maximum(post, 1.0)))), dft
        )
    return {m: p.ravel() for m, p in out.items()}


def lineage_model_trial(n_power: int, n_null: int) -> dict:
    """The standard design (:func:`bonemet.datasets.simulate_condition_design`, 3 vs 3,
    ~600 cells per sample, CHI3L3+ x3 on the power sets): the lineage fractions' moderated
    quasi-Poisson against :func:`_williams_pooled` (scale floored at 1 or not), other
    rows as ``differential_abundance`` fits them, one BH family per table."""
    from bonemet.tl._compare import _bh, _quasi_poisson, _wald_t, squeeze_dispersions

    common = {"n_per_group": 3, "cells_per_sample": 600, "n_genes": 300}
    planted = {
        "abundance_fold": {PLANTED_POP: 3.0},
        "de_population": "Tumour epithelial",
        "de_genes": 20,
        "de_lfc": 1.5,
        "score_shift": {"Tumour epithelial": 0.2},
    }
    models = (
        "quasi_poisson_moderated (used below the spread limit)",
        "williams_pooled_floor_1",
        "williams_pooled_no_floor",
        "williams_shrunk_1x_floor_1",
        "williams_shrunk_5x_floor_1",
        "pipeline rule (used)",
    )
    power = {m: [] for m in models}
    power_p = {m: [] for m in models}
    null = {m: [] for m in models}
    for null_set, reps, seed in ((False, n_power, 5000), (True, n_null, 1000)):
        for i in range(reps):
            kw = {} if null_set else planted
            a = bm.datasets.simulate_condition_design(seed=seed + i, **kw, **common)
            da = bm.tl.differential_abundance(a, neutrophil_stages=0).set_index("test")
            design, ref, _ = bm.tl.compare_design(a)
            num, den, kinds = _abundance_units(a, "population", "sample")
            lin = [t for t in num.columns if kinds[t] == "lineage fraction"]
            xm = _model_matrix(design, covariates=[], subject=False, reference=ref)
            units = [
                (num.loc[design.index, t].to_numpy(), den.loc[design.index, t].to_numpy(), xm)
                for t in lin
            ]
            for m in models:
                if m.startswith("pipeline"):
                    p = da["p"]  # differential_abundance as it is (the spread rule included)
                    if null_set:
                        null[m].extend(p[lin].tolist())
                    else:
                        power[m].append(bool(_bh(p)[PLANTED_FRACTION] < 0.05))
                        power_p[m].append(bool(p[PLANTED_FRACTION] < 0.05))
                    continue
                if m.startswith("quasi"):
                    fits = [_quasi_poisson(*u) for u in units]
                elif m.startswith("williams_shrunk"):
                    fits = _williams_shrunk(units, 1.0 if "_1x" in m else 5.0)[0]
                else:
                    fits = _williams_pooled(units)[0]
                post, d0 = squeeze_dispersions(
                    np.array([f[3] for f in fits]), np.array([f[2] for f in fits], dtype=float)
                )
                floor = 0.0 if m.endswith("no_floor") else 1.0
                p = da["p"].copy()
                for t, f, ph in zip(lin, fits, post, strict=True):
                    se = f[1] * math.sqrt(max(floor, ph))
                    p[t] = _wald_t(f[0], se, min(f[2] + d0, 1e6))[0]
                if null_set:
                    null[m].extend(p[lin].tolist())
                else:
                    power[m].append(bool(_bh(p)[PLANTED_FRACTION] < 0.05))
                    power_p[m].append(bool(p[PLANTED_FRACTION] < 0.05))
    return {
        "design": "3 vs 3, ~600 cells/sample, Dirichlet concentration 150 (power sets: "
        "CHI3L3+ x3, seeds 5000+; nulls seeds 1000+); neutrophil stage unit left out",
        "n_power_datasets": n_power,
        "n_null_datasets": n_null,
        "chi3l3_fraction_detected_padj_0.05": {
            m: round(float(np.mean(v)), 3) for m, v in power.items()
        },
        "chi3l3_fraction_detected_p_0.05": {
            m: round(float(np.mean(v)), 3) for m, v in power_p.items()
        },
        "lineage_null_fpr_0.05": {m: frac_below(np.asarray(v, float)) for m, v in null.items()},
        "note": "the pooled rho is shared by fractions whose true spread differs (a "
        "lineage's Dirichlet concentration scales with its share), which costs the large "
        "neutrophil lineage its efficiency; each fraction's own rho shrunk towards the "
        "pooled one (prior 1 or 5 units' df) gets part of it back. The pipeline keeps the "
        "quasi-Poisson where the denominators spread less than DENOMINATOR_SPREAD_LIMIT "
        "and uses the shrunk-rho model (prior 5, calibrated at every swept spread) above",
    }


def population_spread_check(reps: int) -> dict:
    """The sweep's quasi-Poisson on population-like units: 6 per set, denominators (a
    sample's cells) log-spaced around 1,000 with max/min 3 or 10, shares 2-20 %, 3 vs 3."""
    rng = np.random.default_rng(7)
    out: dict = {
        "simulation": "6 units per set, denominators log-spaced around 1,000 cells, mean "
        "share uniform 2-20 %, sample share ~ Beta(mean, c), 3 vs 3, no effect",
        "n_datasets_per_cell": reps,
        "fpr_0.05": {},
    }
    for s, conc in ((3.0, 150.0), (10.0, 150.0), (3.0, 15.0), (10.0, 15.0)):
        base = np.exp(np.linspace(-0.5, 0.5, 6) * np.log(s)) * 1000.0
        n = np.rint(base)[rng.permuted(np.tile(np.arange(6), (reps, 6, 1)), axis=2)]
        m = rng.uniform(0.02, 0.2, (reps, 6, 1))
        x = rng.binomial(n.astype(int), rng.beta(m * conc, (1 - m) * conc)).astype(float)
        p = _sweep_pvalues(x, n, 3)["quasi_poisson_moderated (used below the spread limit)"]
        out["fpr_0.05"][f"spread {s:g} concentration {conc:g}"] = frac_below(p)
    return out


def spread_sweep(reps: int, power_reps: int) -> dict:
    """FPR at 0.05 of the lineage-fraction models by denominator spread (max/min between
    samples) and between-sample overdispersion of the true fraction, 3v3 and 4v4; power
    at a planted 2x fraction."""
    out: dict = {
        "simulation": "per set 6 fractions; a unit's denominators log-spaced between "
        "100/sqrt(s) and 100*sqrt(s) cells (max/min = s), random order over samples; "
        "mean fraction uniform 5-40 %, sample fraction ~ Beta(mean, concentration c): "
        "overdispersion low c=150 (the standard null's), high c=15; power: test group x2",
        "n_datasets_per_cell": reps,
        "n_power_datasets_per_cell": power_reps,
        "fpr_0.05": {},
        "power_2x_p_0.05": {},
    }
    rng = np.random.default_rng(91)
    for k in (3, 4):
        for od, conc in CONCENTRATIONS.items():
            for s in SPREADS:
                cell = f"{k}v{k} {od} spread {s:g}"
                x, n = _spread_sets(k, reps, s, conc, rng)
                p = _sweep_pvalues(x, n, k)
                out["fpr_0.05"][cell] = {m: frac_below(v) for m, v in p.items()}
                x, n = _spread_sets(k, power_reps, s, conc, rng, fold=2.0)
                p = _sweep_pvalues(x, n, k)
                out["power_2x_p_0.05"][cell] = {m: frac_below(v) for m, v in p.items()}
                print(cell, out["fpr_0.05"][cell], out["power_2x_p_0.05"][cell], flush=True)
    return out


def frac_below(p: pd.Series | np.ndarray, alpha: float = 0.05) -> float:
    p = pd.Series(np.asarray(p, dtype=float)).dropna()
    return round(float((p < alpha).mean()), 4) if len(p) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-null", type=int, default=50)
    ap.add_argument("--n-power", type=int, default=20)
    ap.add_argument("--timing-cells", type=int, default=20_000)
    ap.add_argument("--out", default="benchmarks/results/compare_calibration.json")
    ap.add_argument("--n-called", type=int, default=5000)
    ap.add_argument(
        "--only", choices=["called_fraction", "spread_sweep", "population_spread"], default=None
    )
    ap.add_argument("--n-sweep", type=int, default=2000)
    ap.add_argument("--n-trial", type=int, default=100)
    args = ap.parse_args()
    t_all = time.perf_counter()
    pop_spread = population_spread_check(1500)
    if args.only == "population_spread":
        path = Path(args.out)
        out = json.loads(path.read_text()) if path.exists() else {}
        out["population_spread_check"] = pop_spread
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(pop_spread, indent=2))
        return
    t0 = time.perf_counter()
    sweep = spread_sweep(args.n_sweep, max(args.n_sweep // 2, 100))
    sweep["seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    trial = lineage_model_trial(args.n_trial, args.n_trial)
    trial["seconds"] = round(time.perf_counter() - t0, 1)
    if args.only == "spread_sweep":
        path = Path(args.out)
        out = json.loads(path.read_text()) if path.exists() else {}
        out["lineage_spread_sweep"] = sweep
        out["lineage_model_trial"] = trial
        out.setdefault("called_fraction", {})["lineage_fractions_wide_denominators"] = (
            lineage_fractions_wide(max(args.n_called // 10, 100))
        )
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps({"sweep": sweep, "trial": trial}, indent=2))
        return
    called = called_fraction_calibration(args.n_called, max(args.n_called // 5, 200))
    called["lineage_fractions_wide_denominators"] = lineage_fractions_wide(
        max(args.n_called // 10, 100)
    )
    if args.only == "called_fraction":
        path = Path(args.out)
        out = json.loads(path.read_text()) if path.exists() else {}
        out["called_fraction"] = called
        out["called_fraction"]["machine"] = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "seconds": round(time.perf_counter() - t_all, 1),
        }
        text = json.dumps(out, indent=2)
        print(json.dumps(called, indent=2))
        path.write_text(text + "\n")
        return
    common = {"n_per_group": 3, "cells_per_sample": 600, "n_genes": 300}

    keys = ("da_qp", "da_qp_pop", "da_lineage_fraction", "da_qp_unmoderated", "da_qb", "da_scanpro")
    null_p: dict[str, list] = {k: [] for k in keys}
    null_p.update(de=[], de_pydeseq2_default_inference=[], scores=[], scores_moderated=[])
    per_set_min_da = []
    for i in range(args.n_null):
        a = bm.datasets.simulate_condition_design(seed=1000 + i, **common)
        # PyDESeq2's own inference on the first 10 nulls (it is ~25x slower)
        r = run_compare(a, de_pops=DE_POPS, pydeseq2=i < 10)
        if "de_pydeseq2" in r:
            null_p["de_pydeseq2_default_inference"].extend(r["de_pydeseq2"]["p"])
        null_p["da_qp"].extend(r["da"]["p"])
        null_p["da_qp_pop"].extend(r["da"].query("kind == 'population'")["p"])
        null_p["da_lineage_fraction"].extend(r["da"].query("kind == 'lineage fraction'")["p"])
        null_p["da_qp_unmoderated"].extend(r["da_unmoderated"]["p"])
        null_p["da_qb"].extend(quasi_binomial_p(a))
        null_p["da_scanpro"].extend(scanpro_p(a))
        null_p["de"].extend(r["de"]["p"])
        null_p["scores"].extend(r["scores"].query("score == 'null'")["p"])
        null_p["scores_moderated"].extend(r["scores_moderated"].query("score == 'null'")["p"])
        per_set_min_da.append(float(r["da"]["padj"].min()))
    null = {
        "n_datasets": args.n_null,
        "design": "3 vs 3 samples, ~600 cells/sample, 12 populations, 300 genes, "
        "Dirichlet concentration 150, per-sample gene log-mean sd 0.2, NB dispersion 0.3",
        "fraction_p_below_0.05": {k: frac_below(v) for k, v in null_p.items()},
        "fraction_p_below_0.01": {k: frac_below(v, 0.01) for k, v in null_p.items()},
        "n_pvalues": {k: int(pd.Series(v, dtype=float).notna().sum()) for k, v in null_p.items()},
        "scanpro_robust_fit_failures": SCANPRO_FAILURES["robust"],
        "da_datasets_with_any_padj_below_0.05": round(
            float(np.mean(np.asarray(per_set_min_da) < 0.05)), 4
        ),
    }

    planted_genes = [f"g{i}" for i in range(20)]
    pw: dict[str, list] = {
        "da_population": [],
        "da_fraction": [],
        "da_false": [],
        "de_true": [],
        "de_false": [],
        "score_true": [],
        "score_false": [],
        "scanpro_population": [],
        "scanpro_population_bh": [],
        "da_population_p": [],
        "da_population_unmoderated": [],
        "score_true_moderated": [],
    }
    for i in range(args.n_power):
        a = bm.datasets.simulate_condition_design(
            seed=5000 + i,
            abundance_fold={PLANTED_POP: 3.0},
            de_population="Tumour epithelial",
            de_genes=20,
            de_lfc=1.5,
            score_shift={"Tumour epithelial": 0.2},
            **common,
        )
        r = run_compare(a, de_pops=["Tumour epithelial"])
        da = r["da"].set_index("test")
        pw["da_population"].append(da.loc[PLANTED_POP, "padj"] < 0.05)
        pw["da_population_p"].append(da.loc[PLANTED_POP, "p"] < 0.05)
        dau = r["da_unmoderated"].set_index("test")
        pw["da_population_unmoderated"].append(dau.loc[PLANTED_POP, "padj"] < 0.05)
        pw["da_fraction"].append(da.loc[PLANTED_FRACTION, "padj"] < 0.05)
        # the planted shift moves every other population's share a little (they are
        # renormalised), so false calls are counted on the within-lineage fractions that
        # do not involve neutrophils
        unaffected = [t for t in da.index if t.startswith(("Tpex", "M-MDSC /", "Iron-recycling /"))]
        pw["da_false"].extend((da.loc[unaffected, "padj"] < 0.05).tolist())
        de = r["de"]
        hit = de["gene"].isin(planted_genes)
        pw["de_true"].extend((de.loc[hit, "padj"] < 0.05).tolist())
        pw["de_false"].extend((de.loc[~hit, "padj"] < 0.05).tolist())
        st = r["scores"]
        tum = (st["population"] == "Tumour epithelial") & (st["score"] == "hypoxia")
        pw["score_true"].extend((st.loc[tum, "padj"] < 0.05).tolist())
        stm = r["scores_moderated"]
        pw["score_true_moderated"].extend((stm.loc[tum, "padj"] < 0.05).tolist())
        pw["score_false"].extend((st.loc[st["score"] == "null", "padj"] < 0.05).tolist())
        sp_p = scanpro_p(a)
        pw["scanpro_population"].append(bool(sp_p.loc[PLANTED_POP] < 0.05))
        from statsmodels.stats.multitest import multipletests

        sp_adj = pd.Series(multipletests(sp_p.to_numpy(float), method="fdr_bh")[1], sp_p.index)
        pw["scanpro_population_bh"].append(bool(sp_adj.loc[PLANTED_POP] < 0.05))
    power = {
        "n_datasets": args.n_power,
        "planted": "CHI3L3+ immature neutrophils x3 in share; 20 genes |log2FC| 1.5 in tumour; "
        "tumour hypoxia score +0.2 (per-cell sd 0.1, per-sample sd 0.05)",
        "da_population_detected_padj_0.05": round(float(np.mean(pw["da_population"])), 4),
        "da_population_detected_p_0.05": round(float(np.mean(pw["da_population_p"])), 4),
        "da_unmoderated_population_detected_padj_0.05": round(
            float(np.mean(pw["da_population_unmoderated"])), 4
        ),
        "da_fraction_detected_padj_0.05": round(float(np.mean(pw["da_fraction"])), 4),
        "da_unaffected_fractions_called_padj_0.05": round(float(np.mean(pw["da_false"])), 4),
        "scanpro_population_detected_p_0.05": round(float(np.mean(pw["scanpro_population"])), 4),
        "scanpro_population_detected_padj_0.05": round(
            float(np.mean(pw["scanpro_population_bh"])), 4
        ),
        "de_planted_detected_padj_0.05": round(float(np.mean(pw["de_true"])), 4),
        "de_unplanted_called_padj_0.05": round(float(np.mean(pw["de_false"])), 4),
        "score_planted_detected_padj_0.05": round(float(np.mean(pw["score_true"])), 4),
        "score_null_called_padj_0.05": round(float(np.mean(pw["score_false"])), 4),
        "score_moderated_planted_detected_padj_0.05": round(
            float(np.mean(pw["score_true_moderated"])), 4
        ),
    }

    per_sample = args.timing_cells // 6
    big = bm.datasets.simulate_condition_design(
        seed=7, n_per_group=3, cells_per_sample=per_sample, n_genes=2000, batch=True
    )
    t0 = time.perf_counter()
    bm.tl.compare(big, covariates=["batch"])
    timing = {
        "cells": int(big.n_obs),
        "genes": int(big.n_vars),
        "samples": 6,
        "populations": int(big.obs["population"].nunique()),
        "seconds": round(time.perf_counter() - t0, 2),
        "de_populations_tested": int(
            big.uns["bonemet_compare"]["pseudobulk_de"]["population"].nunique()
        ),
    }

    out = {
        "null": null,
        "power": power,
        "called_fraction": called,
        "lineage_spread_sweep": sweep,
        "lineage_model_trial": trial,
        "population_spread_check": pop_spread,
        "timing_compare": timing,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "total_seconds": round(time.perf_counter() - t_all, 1),
    }
    text = json.dumps(out, indent=2)
    print(text)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


if __name__ == "__main__":
    main()
