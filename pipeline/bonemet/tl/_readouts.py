"""Read-outs of the scores: summaries per group, pseudobulk ssGSEA, erythroid mimicry with an
ambient-haemoglobin guard, and the review's axes per sample.
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
    ERYTHROID_CELL_TYPES,
    ERYTHROID_POPULATIONS,
    HB_BACKGROUND_CELL_TYPES,
    _coverage_table,
    _obs_str,
)

__all__ = ["score_summary", "pseudobulk_enrichment", "erythroid_mimicry"]


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
    layer: str | None = "counts",
    min_size: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """ssGSEA (gseapy, offline) of gene sets on pseudobulk profiles per group.

    Counts (``layers[layer]``, default ``"counts"``) are summed per group (population x
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


def erythroid_mimicry(
    adata: AnnData,
    *,
    sample_key: str = "sample",
    background: Sequence[str] = HB_BACKGROUND_CELL_TYPES,
    quantile: float = 0.99,
    min_background: int = 20,
    min_hb_counts: int = 2,
    ambient_max: float = 0.01,
    layer: str | None = "counts",
    species: str = "auto",
    key_added: str = "erythroid_mimicry_call",
) -> pd.DataFrame:
    """Erythroid mimicry in tumour cells, read against an ambient-haemoglobin background.

    Per cell, the Hb fraction is the share of its counts from the core set
    (``erythroid_mimicry_core``: HBB/HBA1/HBA2/ALAS2, mouse Hbb-bs/Hbb-bt/Hba-a1/Hba-a2/Alas2).
    In every sample, cells that cannot express haemoglobin (``background`` lineages: T, B, NK)
    measure the ambient level; the threshold is the ``quantile`` of their per-cell fraction.
    A tumour-epithelial cell is called when its fraction is above that threshold and it has at
    least ``min_hb_counts`` core counts. Erythroid cells (``cell_type == "Erythroid"`` or
    ``population == "Erythroid progenitor"``) and predicted doublets are never called.

    Parameters
    ----------
    adata
        Annotated data (``obs["cell_type"]`` or ``obs["population"]``, ``obs[sample_key]``).
    background
        ``cell_type`` values used as the no-haemoglobin background.
    quantile
        Quantile of the background's per-cell Hb fraction used as the call threshold.
    min_background
        Fewer background cells in a sample: no threshold and no calls there (noted).
    min_hb_counts
        Minimum core Hb counts for a call (counts layer only).
    ambient_max
        A sample whose pooled background Hb fraction exceeds this is flagged
        ``ambient_high`` (and a warning recorded): its Hb signal is largely ambient.
    layer
        Counts layer (default ``"counts"``); without it, ``expm1(X)`` (CP10k) is used.
    species
        For the core gene list; ``"auto"`` as in :func:`score`.
    key_added
        obs column for the per-cell call (bool).

    Returns
    -------
    One row per sample: ``n_tumour``, ``n_background``, ``n_erythroid_excluded``,
    ``tumour_hb_fraction`` and ``background_hb_fraction`` (pooled counts), ``enrichment``
    (their ratio), ``threshold``, ``n_called``, ``fraction_called``, ``mannwhitney_p``
    (tumour > background, one-sided), ``ambient_high``, the tumour/background means of
    ``obs["score_erythroid_mimicry*"]`` when present, and ``note``.
    """
    from scipy.stats import mannwhitneyu

    lineage = _lineages(adata)
    samples = _obs_str(adata, sample_key, hint="set sample_key= to the obs column naming samples")
    pop = (
        adata.obs["population"].astype(str)
        if "population" in adata.obs
        else pd.Series("", index=adata.obs_names)
    )
    core = load_gene_sets("programme")["erythroid_mimicry_core"]
    sp_ = resolve_species(adata, species)
    hb_genes, cov = match_genes(core.genes(sp_), adata.var_names)
    no_hb = not hb_genes
    if no_hb:
        add_warning(
            adata,
            f"erythroid mimicry not assessed: none of the core haemoglobin genes "
            f"{core.genes(sp_)} is in var_names (check species= and gene filtering)",
        )
    idx = adata.var_names.get_indexer(hb_genes)
    if layer is not None and layer in adata.layers:
        M = adata.layers[layer]
        from_counts = True
    else:
        X = adata.X
        M = X.expm1() if sp.issparse(X) else np.expm1(np.asarray(X))
        from_counts = False
        logger.warning("erythroid_mimicry: layers[%r] missing; using expm1(X) (CP10k)", layer)
    total = np.asarray(M.sum(axis=1)).ravel().astype(np.float64)
    hb = np.asarray(M[:, idx].sum(axis=1)).ravel().astype(np.float64)
    frac = np.divide(hb, total, out=np.zeros_like(hb), where=total > 0)

    erythroid = (
        lineage.isin(ERYTHROID_CELL_TYPES).to_numpy() | pop.isin(ERYTHROID_POPULATIONS).to_numpy()
    )
    tumour = (lineage == TUMOUR).to_numpy() & ~erythroid
    if "predicted_doublet" in adata.obs:
        tumour &= ~adata.obs["predicted_doublet"].astype(bool).to_numpy()
    bg = lineage.isin(list(background)).to_numpy() & ~erythroid
    score_keys = [
        k for k in ("score_erythroid_mimicry", "score_erythroid_mimicry_core") if k in adata.obs
    ]

    call = np.zeros(adata.n_obs, dtype=bool)
    rows = []
    for s in sorted(samples.unique()):
        ins = (samples == s).to_numpy()
        t, b = tumour & ins, bg & ins
        notes = []
        hb_t, tot_t = hb[t].sum(), total[t].sum()
        hb_b, tot_b = hb[b].sum(), total[b].sum()
        t_frac = hb_t / tot_t if tot_t > 0 else np.nan
        b_frac = hb_b / tot_b if tot_b > 0 else np.nan
        thr = np.nan
        if no_hb:
            t_frac = b_frac = np.nan
            notes.append("no core haemoglobin genes in var_names: not assessed")
        elif b.sum() >= min_background:
            thr = float(np.quantile(frac[b], quantile))
        else:
            notes.append(
                f"{int(b.sum())} background cells (< {min_background}): no threshold, no calls"
            )
        if not t.any():
            notes.append("no tumour epithelial cells")
        called = np.zeros(adata.n_obs, dtype=bool)
        if np.isfinite(thr) and t.any():
            called = t & (frac > thr) & (hb > 0)
            if from_counts:
                called &= hb >= min_hb_counts
        call |= called
        ambient_high = bool(np.isfinite(b_frac) and b_frac > ambient_max)
        if ambient_high:
            notes.append(
                f"ambient haemoglobin high: {b_frac:.2%} of T/B/NK counts are Hb (> {ambient_max:.2%}); "
                "run ambient correction (SoupX/CellBender) before reading mimicry"
            )
            add_warning(
                adata,
                f"sample {s!r}: Hb fraction in T/B/NK background is {b_frac:.2%} (> {ambient_max:.2%}); "
                "erythroid-mimicry calls there are unreliable (ambient haemoglobin)",
            )
        p = np.nan
        if t.sum() >= 3 and b.sum() >= 3 and np.ptp(np.r_[frac[t], frac[b]]) > 0:
            p = float(mannwhitneyu(frac[t], frac[b], alternative="greater").pvalue)
        row = {
            "sample": s,
            "n_tumour": int(t.sum()),
            "n_background": int(b.sum()),
            "n_erythroid_excluded": int((erythroid & ins).sum()),
            "tumour_hb_fraction": t_frac,
            "background_hb_fraction": b_frac,
            "enrichment": t_frac / b_frac
            if b_frac and np.isfinite(b_frac) and b_frac > 0
            else np.nan,
            "threshold": thr,
            "n_called": int(called.sum()),
            "fraction_called": float(called.sum() / t.sum()) if t.any() else np.nan,
            "mannwhitney_p": p,
            "ambient_high": ambient_high,
        }
        for k in score_keys:
            v = adata.obs[k].to_numpy(dtype=np.float64)
            row[f"{k}_tumour"] = float(np.mean(v[t])) if t.any() else np.nan
            row[f"{k}_background"] = float(np.mean(v[b])) if b.any() else np.nan
        row["note"] = "; ".join(notes)
        rows.append(row)
    adata.obs[key_added] = call
    bonemet_uns(adata).setdefault("parameters", {})["erythroid_mimicry"] = {
        "hb_genes": list(hb_genes),
        "hb_coverage": float(cov),
        "species": sp_,
        "background": list(background),
        "quantile": float(quantile),
        "min_background": int(min_background),
        "min_hb_counts": int(min_hb_counts),
        "ambient_max": float(ambient_max),
        "from_counts": bool(from_counts),
    }
    return pd.DataFrame(rows)
