"""A gene-vectorised PyDESeq2 inference back end.

PyDESeq2 fits its per-gene models (dispersion MLE, IRLS, Wald tests) one gene at a time
through joblib and SciPy's L-BFGS-B; with a few pseudobulk samples and thousands of genes
that loop, not the arithmetic, is the cost. :class:`VectorizedInference` plugs into
PyDESeq2's ``Inference`` interface and computes the same quantities for all genes at once
with NumPy (batched ``p × p`` solves for the small designs of pseudobulk data):

- ``lin_reg_mu``: one least-squares solve for every gene;
- ``irls``: the same IRLS updates, convergence rule and ridge as PyDESeq2, genes frozen as
  they converge; a gene that diverges falls back to PyDESeq2's own per-gene solver;
- ``alpha_mle``: the same objective (negative-binomial likelihood, Cox–Reid term, optional
  log-normal prior) minimised over ``log(alpha)`` in the same bounds by a grid then a
  golden-section search, for every gene at once;
- ``wald_test``: the same statistic (two-sided; other alternatives use PyDESeq2's).

Everything else (size factors, trend, MAP shrinkage, Cook's distances, independent
filtering) stays PyDESeq2's. ``tests/test_compare.py`` checks it against PyDESeq2's
``DefaultInference`` on real data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydeseq2 import utils
from pydeseq2.default_inference import DefaultInference
from scipy.special import gammaln
from scipy.stats import norm

__all__ = ["VectorizedInference"]

_GOLD = (np.sqrt(5.0) - 1.0) / 2.0


def _nb_nll(counts: np.ndarray, mu: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Negative-binomial negative log likelihood per gene (columns), as PyDESeq2's nb_nll."""
    a1 = 1.0 / alpha[None, :]
    logbinom = gammaln(counts + a1) - gammaln(counts + 1.0) - gammaln(a1)
    return (
        a1 * np.log(alpha[None, :])
        - logbinom
        + (counts + a1) * np.log(mu + a1)
        - counts * np.log(mu)
    ).sum(axis=0)


def _xtwx(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``X^T diag(w_g) X`` for every gene g: (genes, p, p)."""
    return np.einsum("ip,ig,iq->gpq", x, w, x, optimize=True)


class VectorizedInference(DefaultInference):
    """PyDESeq2 inference with the per-gene fits vectorised over genes (see module doc).

    Parameters
    ----------
    grid_points
        Points of the initial ``log(alpha)`` grid of the dispersion search.
    golden_iters
        Golden-section iterations after the grid (the bracket shrinks by 0.618 each).
    **kwargs
        Passed to :class:`pydeseq2.default_inference.DefaultInference` (used for the
        steps not vectorised here).
    """

    def __init__(self, *, grid_points: int = 41, golden_iters: int = 40, **kwargs: Any) -> None:
        kwargs.setdefault("n_cpus", 1)
        super().__init__(**kwargs)
        self.grid_points = int(grid_points)
        self.golden_iters = int(golden_iters)

    # ------------------------------------------------------------------ means
    def lin_reg_mu(  # noqa: D102
        self,
        counts: np.ndarray,
        size_factors: np.ndarray,
        design_matrix: np.ndarray,
        min_mu: float,
    ) -> np.ndarray:
        x = np.asarray(design_matrix, dtype=float)
        y = counts / size_factors[:, None]
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        return np.maximum(size_factors[:, None] * (x @ coef), min_mu)

    # ------------------------------------------------------------------- IRLS
    def irls(  # noqa: D102
        self,
        counts: np.ndarray,
        size_factors: np.ndarray,
        design_matrix: np.ndarray,
        disp: np.ndarray,
        min_mu: float,
        beta_tol: float,
        min_beta: float = -30,
        max_beta: float = 30,
        optimizer: str = "L-BFGS-B",
        maxiter: int = 250,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        x = np.asarray(design_matrix, dtype=float)
        y = np.asarray(counts, dtype=float)
        n, p = x.shape
        g = y.shape[1]
        sf = np.asarray(size_factors, dtype=float)[:, None]
        disp = np.asarray(disp, dtype=float)
        ridge = np.eye(p) * 1e-6
        if np.linalg.matrix_rank(x) == p:
            q, r = np.linalg.qr(x)
            beta = np.linalg.solve(r, q.T @ np.log(y / sf + 0.1)).T  # (g, p)
        else:
            beta = np.zeros((g, p))
            with np.errstate(divide="ignore"):
                beta[:, 0] = np.log(y / sf).mean(axis=0)
        mu = np.maximum(sf * np.exp(x @ beta.T), min_mu)
        dev = np.full(g, 1000.0)
        active = np.ones(g, dtype=bool)
        fallback = np.zeros(g, dtype=bool)
        it = 0
        while active.any():
            idx = np.flatnonzero(active)
            m = mu[:, idx]
            w = m / (1.0 + m * disp[None, idx])
            z = np.log(m / sf) + (y[:, idx] - m) / m
            h = _xtwx(x, w) + ridge[None]
            rhs = np.einsum("ip,ig->gp", x, w * z)
            beta_hat = np.linalg.solve(h, rhs[..., None])[..., 0]
            it += 1
            bad = (np.abs(beta_hat) > max_beta).any(axis=1) | (it >= maxiter)
            if bad.any():
                fallback[idx[bad]] = True
                active[idx[bad]] = False
            good = idx[~bad]
            beta[good] = beta_hat[~bad]
            mu[:, good] = np.maximum(sf * np.exp(x @ beta[good].T), min_mu)
            new_dev = -2.0 * _nb_nll(y[:, good], mu[:, good], disp[good])
            ratio = np.abs(new_dev - dev[good]) / (np.abs(new_dev) + 0.1)
            dev[good] = new_dev
            active[good[ratio <= beta_tol]] = False
        converged = np.ones(g, dtype=bool)
        for i in np.flatnonzero(fallback):
            b, _, _, conv = utils.irls_solver(
                counts=y[:, i],
                size_factors=sf[:, 0],
                design_matrix=x,
                disp=disp[i],
                min_mu=min_mu,
                beta_tol=beta_tol,
                min_beta=min_beta,
                max_beta=max_beta,
                optimizer=optimizer,
                maxiter=maxiter,
            )
            beta[i] = b
            converged[i] = conv
        mu_t = np.maximum(sf * np.exp(x @ beta.T), min_mu)
        w = mu_t / (1.0 + mu_t * disp[None, :])
        inv = np.linalg.inv(_xtwx(x, w) + ridge[None])
        hat = np.einsum("ip,gpq,iq->ig", x, inv, x, optimize=True) * w
        return beta, sf * np.exp(x @ beta.T), hat, converged

    # ------------------------------------------------------------- dispersion
    def alpha_mle(  # noqa: D102
        self,
        counts: np.ndarray,
        design_matrix: np.ndarray,
        mu: np.ndarray,
        alpha_hat: np.ndarray,
        min_disp: float,
        max_disp: float,
        prior_disp_var: float | None = None,
        cr_reg: bool = True,
        prior_reg: bool = False,
        optimizer: str = "L-BFGS-B",
    ) -> tuple[np.ndarray, np.ndarray]:
        if prior_reg and prior_disp_var is None:
            raise ValueError("Sigma_prior is required for prior regularization")
        x = np.asarray(design_matrix, dtype=float)
        y = np.asarray(counts, dtype=float)
        mu = np.asarray(mu, dtype=float)
        log_hat = np.log(np.asarray(alpha_hat, dtype=float))

        def loss(la: np.ndarray) -> np.ndarray:
            alpha = np.exp(la)
            out = _nb_nll(y, mu, alpha)
            if cr_reg:
                w = mu / (1.0 + mu * alpha[None, :])
                out = out + 0.5 * np.linalg.slogdet(_xtwx(x, w))[1]
            if prior_reg:
                out = out + (la - log_hat) ** 2 / (2.0 * prior_disp_var)
            return out

        lo, hi = np.log(min_disp), np.log(max_disp)
        grid = np.linspace(lo, hi, self.grid_points)
        vals = np.stack([loss(np.full(y.shape[1], v)) for v in grid])  # (points, genes)
        best = np.nanargmin(np.where(np.isfinite(vals), vals, np.inf), axis=0)
        step = grid[1] - grid[0]
        a = np.clip(grid[best] - step, lo, hi)
        b = np.clip(grid[best] + step, lo, hi)
        c = b - _GOLD * (b - a)
        d = a + _GOLD * (b - a)
        fc, fd = loss(c), loss(d)
        for _ in range(self.golden_iters):
            left = fc < fd
            b = np.where(left, d, b)
            a = np.where(left, a, c)
            new_c = b - _GOLD * (b - a)
            new_d = a + _GOLD * (b - a)
            # one of the two inner points carries over, the other is new
            c_next = np.where(left, new_c, d)
            d_next = np.where(left, c, new_d)
            f_new = loss(np.where(left, new_c, new_d))
            fc, fd = np.where(left, f_new, fd), np.where(left, fc, f_new)
            c, d = c_next, d_next
        la = np.clip((a + b) / 2.0, lo, hi)
        return np.exp(la), np.ones(y.shape[1], dtype=bool)

    # -------------------------------------------------------------- Wald test
    def wald_test(  # noqa: D102
        self,
        design_matrix: np.ndarray,
        disp: np.ndarray,
        lfc: np.ndarray,
        mu: np.ndarray,
        ridge_factor: np.ndarray,
        contrast: np.ndarray,
        lfc_null: np.ndarray,
        alt_hypothesis: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if alt_hypothesis is not None:
            return super().wald_test(
                design_matrix=design_matrix,
                disp=disp,
                lfc=lfc,
                mu=mu,
                ridge_factor=ridge_factor,
                contrast=contrast,
                lfc_null=lfc_null,
                alt_hypothesis=alt_hypothesis,  # type: ignore[arg-type]
            )
        x = np.asarray(design_matrix, dtype=float)
        mu = np.asarray(mu, dtype=float)
        w = mu / (1.0 + mu * np.asarray(disp, dtype=float)[None, :])
        m = _xtwx(x, w)
        h = np.linalg.inv(m + np.asarray(ridge_factor)[None])
        hc = h @ np.asarray(contrast, dtype=float)
        se = np.sqrt(np.einsum("gp,gpq,gq->g", hc, m, hc))
        lfc = np.asarray(lfc, dtype=float)
        stat = (lfc - lfc_null) @ np.asarray(contrast, dtype=float) / se
        return 2.0 * norm.sf(np.abs(stat)), stat, se
