"""Condition comparisons drawn as a paper shows them: one point per sample, a box per
condition, the compare stage's effect and adjusted p in the panel title."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._vocab import CALLED_FRACTIONS, HYPOTHESES, POPULATIONS
from ._common import (
    MissingDataError,
    colors_for,
    figure_function,
    new_figure,
    reference_of,
    require,
)
from ._gene_sets import gene_set_title
from ._palette import category_colors

__all__ = ["condition_comparisons", "per_sample_values", "reference_condition", "COMPARISONS"]

#: The comparisons drawn: (title, kind, test, population), one per row of
#: :data:`bonemet._vocab.HYPOTHESES` (the report's hypotheses, in their order). ``kind``
#: ``"da"`` is a within-lineage fraction of :data:`bonemet.tl.LINEAGE_FRACTIONS`, a called
#: fraction of :data:`bonemet._vocab.CALLED_FRACTIONS` or a population's share of all
#: cells; ``"score"`` is the per-sample mean of ``obs["score_<test>"]`` in ``population``.
COMPARISONS: tuple[tuple[str, str, str, str | None], ...] = tuple(
    (h.title, h.kind, h.test, h.population) for h in HYPOTHESES
)


def reference_condition(adata: Any, levels: Sequence[str]) -> str:
    """The baseline condition (:func:`bonemet.pl._common.reference_of`): the compare stage's
    reference, else the run's ``compare.reference``, else the first level. Never a fixed name."""
    return str(reference_of(adata, levels))


def per_sample_values(adata: Any, *, condition_key: str = "condition") -> pd.DataFrame:
    """Per sample, the value of every comparison of :data:`COMPARISONS` the data allows.

    Long table: ``comparison`` (the panel title), ``sample``, ``condition``, ``value``,
    ``n_cells`` (cells in the denominator, or in the population for a score). A sample
    with no cell in the denominator has no row. A called fraction (tumour erythroid
    mimicry, :data:`bonemet._vocab.CALLED_FRACTIONS`) is computed from ``obs`` here: the
    tumour cells the call assessed whose call is true over those cells, ``n_cells`` = the
    assessed tumour cells (no call column: no rows), so the figure does not depend on the
    compare stage.
    """
    from ..tl._compare import LINEAGE_FRACTIONS

    require(adata, obs=["sample", "population", condition_key], what="condition comparisons")
    obs = adata.obs
    pop = obs["population"].astype(str)
    smp = obs["sample"].astype(str)
    cond = obs.groupby(smp, observed=True)[condition_key].first().astype(str)
    counts = pd.crosstab(smp, pop)
    rows = []
    for title, kind, test, population in COMPARISONS:
        if kind == "da" and test in CALLED_FRACTIONS:
            call_key, den_pop, class_key = CALLED_FRACTIONS[test]
            if call_key not in obs.columns:
                continue
            m = (pop == den_pop).to_numpy()
            if class_key in obs.columns:  # the cells the call assessed
                m &= (obs[class_key].astype(str) != "not_assessed").to_numpy()
            if not m.any():
                continue
            called = obs[call_key].astype("boolean").fillna(False).to_numpy(dtype=bool)
            g = pd.Series(called[m], index=smp[m]).groupby(level=0)
            for s, k in g.sum().items():
                n = int(g.size()[s])
                rows.append((title, s, cond[s], float(k) / n, n))
        elif kind == "da":
            if test in LINEAGE_FRACTIONS:
                num, den = LINEAGE_FRACTIONS[test]
            elif test in POPULATIONS:
                num, den = (test,), tuple(counts.columns)
            else:
                continue
            if not any(p in counts.columns for p in num):
                continue
            n_num = counts.reindex(columns=list(num), fill_value=0).sum(axis=1)
            n_den = counts.reindex(columns=list(den), fill_value=0).sum(axis=1)
            for s in counts.index:
                if n_den[s] > 0:
                    rows.append((title, s, cond[s], n_num[s] / n_den[s], int(n_den[s])))
        else:
            col = f"score_{test}"
            if col not in obs.columns:
                continue
            m = (pop == population).to_numpy()
            if not m.any():
                continue
            g = obs.loc[m, col].astype(float).groupby(smp[m], observed=True)
            for s, v in g.mean().items():
                rows.append((title, s, cond[s], float(v), int(g.size()[s])))
    return pd.DataFrame(rows, columns=["comparison", "sample", "condition", "value", "n_cells"])


def _result(adata: Any, kind: str, test: str, population: str | None) -> pd.Series | None:
    res = adata.uns.get("bonemet_compare")
    if not isinstance(res, dict):
        return None
    if kind == "da":
        df = res.get("differential_abundance")
        if isinstance(df, pd.DataFrame) and not df.empty:
            hit = df[df["test"].astype(str) == test]
            return hit.iloc[0] if len(hit) else None
    else:
        df = res.get("score_tests")
        if isinstance(df, pd.DataFrame) and not df.empty:
            hit = df[(df["score"].astype(str).isin([test, f"score_{test}"]))
                     & (df["population"].astype(str) == str(population))]  # fmt: skip
            return hit.iloc[0] if len(hit) else None
    return None


def _result_text(r: pd.Series | None, kind: str) -> str:
    if r is None:
        return "not tested by compare\n"
    eff = "log2FC" if kind == "da" else "Δ mean"
    v = r["log2fc"] if kind == "da" else r["effect"]
    ci = pd.to_numeric(pd.Series([r.get("ci_low"), r.get("ci_high")]), errors="coerce")
    if not np.isfinite(ci).all():
        return (
            f"{eff} {v:.2f}, no CI\nnot testable: {int(r['n_test'])} vs {int(r['n_ref'])} samples"
        )
    txt = f"{eff} {v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]\n"
    p = pd.to_numeric(pd.Series([r.get("p")]), errors="coerce").iloc[0]
    if not np.isfinite(p):
        return txt + "no p-value"
    if not bool(r.get("p_reliable", True)):
        return txt + f"{int(r['n_test'])} vs {int(r['n_ref'])} samples: p unreliable"
    padj = float(r["padj"])
    return txt + (f"padj {padj:.2g}" if padj >= 0.001 else "padj < 0.001")


@figure_function
def condition_comparisons(
    adata: Any, *, condition_key: str = "condition", ncols: int = 4
) -> Figure:
    """Box + points per condition for each comparison the report tests.

    One point per sample (the samples are the replicates: within-lineage fractions, the
    called fraction of tumour cells for erythroid mimicry and per-sample mean programme
    scores); boxes show the median and interquartile range of the
    samples of each condition (those the test uses), the reference condition first. The x labels give n samples
    per condition; the panel title gives the compare stage's estimate with its 95% CI and
    adjusted p (or why there is none). A sample with fewer than the compare stage's
    ``min_cells`` cells of the population is an open point in a score panel (the score test
    leaves it out). Comparisons whose populations are absent are left out.
    """
    tab = per_sample_values(adata, condition_key=condition_key)
    if tab.empty or tab["condition"].nunique() < 2:
        raise MissingDataError("condition comparisons need two conditions and the populations")
    cats = adata.obs[condition_key]
    levels = (
        [str(c) for c in cats.cat.categories if str(c) in set(tab["condition"])]
        if isinstance(cats.dtype, pd.CategoricalDtype)
        else sorted(tab["condition"].unique())
    )
    ref = reference_condition(adata, levels)
    levels = [ref, *[c for c in levels if c != ref]]
    _, fixed = colors_for(adata, condition_key)  # the colours of the other figures
    colors = fixed if set(levels) <= set(fixed) else category_colors(levels)
    shown = [c for c in COMPARISONS if c[0] in set(tab["comparison"])]
    ncols = max(1, min(ncols, len(shown)))
    nrows = int(np.ceil(len(shown) / ncols))
    n_samples = tab.groupby("condition")["sample"].nunique()
    fig = new_figure(ncols * 3.1 + 0.3, nrows * 3.1 + 0.8)
    rng = np.random.default_rng(0)
    params = adata.uns.get("bonemet", {}).get("parameters", {}).get("compare", {})
    min_cells = int(params.get("min_cells", 20)) if hasattr(params, "get") else 20
    any_few = False
    for i, (title, kind, test, population) in enumerate(shown):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        sub = tab[tab["comparison"] == title]
        for j, c in enumerate(levels):
            v = sub.loc[sub["condition"] == c, "value"].to_numpy(float)
            few = sub.loc[sub["condition"] == c, "n_cells"].to_numpy() < min_cells
            if kind == "da":
                few[:] = False  # abundance tests use every sample's counts
            if v.size:
                ax.boxplot([v[~few] if (~few).any() else v], positions=[j], widths=0.5,
                           showfliers=False,
                           medianprops={"color": "#222222"}, boxprops={"color": "#666666"},
                           whiskerprops={"color": "#666666"}, capprops={"color": "#666666"})  # fmt: skip
                x = j + rng.uniform(-0.12, 0.12, v.size)
                ax.scatter(x[~few], v[~few], s=22, color=colors[c], edgecolors="#222222",
                           linewidths=0.5, zorder=3)  # fmt: skip
                if few.any():
                    any_few = True
                    ax.scatter(x[few], v[few], s=22, facecolors="white", edgecolors=colors[c],
                               linewidths=1.0, zorder=3)  # fmt: skip
        ax.set_xticks(range(len(levels)),
                      [f"{c}\n(n = {int(n_samples.get(c, 0))})" for c in levels], fontsize=8)  # fmt: skip
        ax.set_xlim(-0.6, len(levels) - 0.4)
        r = _result(adata, kind, test, population)
        ax.set_title(f"{title}\n{_result_text(r, kind)}", fontsize=8.5)
        if kind == "da":
            ax.set_ylabel("Fraction per sample", fontsize=8.5)
            ax.set_ylim(bottom=0)
        else:
            ax.set_ylabel(f"{gene_set_title(test, short=True)} score\n(mean per sample, a.u.)",
                          fontsize=8.5)  # fmt: skip
    handles = [Line2D([], [], marker="o", ls="", color=colors[c], markeredgecolor="#222222",
                      label=f"{c} (n = {int(n_samples.get(c, 0))} samples)") for c in levels]  # fmt: skip
    if any_few:
        handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="white",
                              markeredgecolor="#444444",
                              label=f"open: < {min_cells} cells, left out of the score test"))  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8.5)
    fig.suptitle(
        f"Condition comparisons, one point per sample (reference: {ref}; "
        "under each title the compare estimate [95% CI])",
        fontsize=10,
    )
    return fig
