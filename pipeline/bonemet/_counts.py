"""Are these raw counts? One rule, used by every stage.

A matrix holds raw counts when the values it holds (a random sample of up to 200,000
non-zero values, seeded, for speed) are all finite, non-negative and integers (within
1e-4, so float32 storage of integers passes). A matrix of zeros passes too (it is empty
counts). Log-transformed, normalised, scaled or centred data fails, with the reason.

This module is a leaf: it imports nothing of bonemet.
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

__all__ = ["check_counts", "is_counts"]

_ONLY_ZEROS = "the matrix holds only zeros"


def check_counts(
    adata_or_matrix: ad.AnnData | np.ndarray | sp.spmatrix | Any,
    *,
    n_sample: int = 200_000,
    seed: int = 0,
) -> tuple[bool, str]:
    """Check whether a matrix holds raw counts.

    Looks at up to ``n_sample`` non-zero values (a random sample, for speed): raw counts are
    non-negative integers. Log-transformed data (non-integers with a small maximum) and
    other transformed data are reported with the reason.

    Returns
    -------
    ``(is_counts, reason)``: ``reason`` says what was found, in one line.
    """
    x = adata_or_matrix.X if isinstance(adata_or_matrix, ad.AnnData) else adata_or_matrix
    if x is None:
        return False, "the matrix is empty (X is None)"
    if sp.issparse(x):
        vals = np.asarray(x.data if hasattr(x, "data") else sp.csr_matrix(x).data)
    elif hasattr(x, "to_memory"):  # anndata backed/sparse dataset
        return check_counts(x.to_memory(), n_sample=n_sample, seed=seed)
    else:
        arr = np.asarray(x)
        flat = arr.ravel()
        if flat.size > 4 * n_sample:
            rng = np.random.default_rng(seed)
            flat = flat[rng.integers(0, flat.size, size=4 * n_sample)]
        vals = flat[flat != 0]
    if vals.size == 0:
        return True, _ONLY_ZEROS
    if vals.size > n_sample:
        rng = np.random.default_rng(seed)
        vals = vals[rng.integers(0, vals.size, size=n_sample)]
    vals = vals.astype(np.float64, copy=False)
    if not np.all(np.isfinite(vals)):
        return False, "the matrix holds NaN or infinite values, so it is not raw counts"
    vmin, vmax = float(vals.min()), float(vals.max())
    if vmin < 0:
        return (
            False,
            f"the matrix holds negative values (min {vmin:.3g}): scaled or centred data, not raw counts",
        )
    frac_nonint = float(np.mean(np.abs(vals - np.round(vals)) > 1e-4))
    if frac_nonint > 0:
        if vmax <= 20:
            return False, (
                f"{frac_nonint:.0%} of non-zero values are not integers and the maximum is {vmax:.3g}: "
                "looks log-transformed (e.g. log1p of normalised counts), not raw counts"
            )
        return False, (
            f"{frac_nonint:.0%} of non-zero values are not integers (max {vmax:.3g}): looks normalised, "
            "not raw counts"
        )
    return True, f"non-negative integers (max {vmax:.0f})"


def is_counts(x: Any, *, empty: bool = True) -> bool:
    """``True`` when ``x`` (an AnnData, its ``X``, a layer, any matrix) holds raw counts.

    ``empty`` is the answer for a matrix with no non-zero value (raw counts of nothing by
    the rule; callers that must tell counts from log-normalised values pass ``False``).
    """
    ok, reason = check_counts(x)
    if ok and reason == _ONLY_ZEROS:
        return empty
    return ok
