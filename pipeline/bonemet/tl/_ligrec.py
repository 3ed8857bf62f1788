"""Ligand–receptor analysis per condition with LIANA+ (``liana``), sample-aware.

Each sample is analysed on its own with LIANA+'s rank aggregate (CellPhoneDB, Connectome,
log2FC, NATMI and SingleCellSignalR, aggregated by robust rank aggregation) over the
populations that have at least ``min_cells`` cells in it; a population with more than
``max_cells`` cells is subsampled to that many (seeded) so the runtime stays bounded. An
interaction (source population, target population, ligand, receptor) is *significant in a
sample* when both its aggregate magnitude rank and its aggregate specificity rank are
``<= alpha``. Per condition the table then says in how many of the condition's samples the
interaction was testable (both populations present) and significant, and calls it
*consistent* when it was significant in at least ``min_fraction`` of them (and in at least
two samples, where the condition has two or more).

The resources ship inside the liana wheel (``omni_resource.csv``: ``consensus`` for human,
``mouseconsensus`` for mouse); nothing is downloaded. The review's pairs that the resource
lacks are added from :data:`REVIEW_PAIRS`, each with its source, and marked in the table
(``pair_source``). SLC40A1 (ferroportin) -> TFRC (CD71) is iron transfer, not a binding.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._counts import is_counts
from .._errors import InputError
from .._logging import logger
from .._meta import add_warning, bonemet_uns
from .._species import resolve_species
from .._vocab import UNASSIGNED

__all__ = [
    "LIGREC_HIGHLIGHTS",
    "REVIEW_PAIRS",
    "ligand_receptor",
    "ligrec_resource",
    "liana_available",
]

#: The review's pairs that bonemet adds when the shipped resource lacks them:
#: (ligand, receptor, source). Human symbols; the mouse symbols are the capitalised forms.
REVIEW_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("DKK1", "CKAP4", "bonemet: Kimura et al. 2016 J Clin Invest 126:2689 "
     "(doi:10.1172/JCI84658); Shi et al. 2025 Cancer Cell 43:1937"),
    ("PVR", "TIGIT", "bonemet: Yu et al. 2009 Nat Immunol 10:48 (doi:10.1038/ni.1674)"),
    ("NECTIN2", "TIGIT", "bonemet: Yu et al. 2009 Nat Immunol 10:48 (doi:10.1038/ni.1674)"),
    ("PVR", "CD226", "bonemet: Bottino et al. 2003 J Exp Med 198:557 "
     "(doi:10.1084/jem.20030788)"),
    ("NECTIN2", "CD226", "bonemet: Bottino et al. 2003 J Exp Med 198:557 "
     "(doi:10.1084/jem.20030788)"),
    ("SLC40A1", "TFRC", "bonemet: iron transfer (ferroportin export -> CD71 uptake), "
     "not a binding; Han et al. 2025 Cell 188:6335"),
)  # fmt: skip

#: axis -> (ligand, receptor) patterns (upper-case; a receptor ending in ``*`` matches
#: every receptor, complex included, that starts with it), highlighted in the table.
LIGREC_HIGHLIGHTS: dict[str, tuple[tuple[str, str], ...]] = {
    "OPN (Cheng 2025)": (("SPP1", "CD44"), ("SPP1", "ITG*")),
    "DKK1 (Shi 2025)": (("DKK1", "CKAP4"),),
    "TIGIT (Monteran 2024)": (
        ("PVR", "TIGIT"),
        ("NECTIN2", "TIGIT"),
        ("TIGIT", "PVR"),
        ("TIGIT", "NECTIN2"),
        ("PVR", "CD226"),
        ("NECTIN2", "CD226"),
    ),
    "RANKL-RANK": (("TNFSF11", "TNFRSF11A"),),
    "CXCL12-CXCR4": (("CXCL12", "CXCR4"),),
    "Iron transfer (Han 2025)": (("SLC40A1", "TFRC"), ("TF", "TFRC")),
}

#: mouse symbols whose upper case differs from the human symbol
_MOUSE_ALIASES = {"TRF": "TF"}

_TABLE_COLUMNS = [
    "condition",
    "source",
    "target",
    "ligand",
    "receptor",
    "highlight",
    "pair_source",
    "n_samples",
    "n_tested",
    "n_significant",
    "fraction_significant",
    "consistent",
    "median_magnitude_rank",
    "median_specificity_rank",
    "mean_lr_means",
    "min_cellphone_pval",
    "samples_significant",
]


def liana_available() -> bool:
    """Whether the optional ``liana`` package can be imported."""
    import importlib.util

    return importlib.util.find_spec("liana") is not None


def _liana() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import liana

    return liana


def ligrec_resource(species: str = "human") -> pd.DataFrame:
    """The ligand–receptor resource of a run: LIANA+'s shipped one plus :data:`REVIEW_PAIRS`.

    Parameters
    ----------
    species
        ``"human"`` (liana ``consensus``) or ``"mouse"`` (liana ``mouseconsensus``).

    Returns
    -------
    Columns ``ligand``, ``receptor`` (complexes as ``A_B``, as liana writes them) and
    ``pair_source`` (``"liana <resource>"`` or the bonemet source of an added pair).
    """
    if species not in ("human", "mouse"):
        raise InputError(f"species must be 'human' or 'mouse', not {species!r}")
    li = _liana()
    name = "consensus" if species == "human" else "mouseconsensus"
    res = li.rs.select_resource(name).drop_duplicates().reset_index(drop=True)
    res["pair_source"] = f"liana {name}"
    have = {(str(a).upper(), str(b).upper()) for a, b in zip(res["ligand"], res["receptor"])}
    extra = []
    for lig, rec, src in REVIEW_PAIRS:
        if (lig, rec) in have:
            continue
        if species == "mouse":
            lig, rec = lig.capitalize(), rec.capitalize()
        extra.append({"ligand": lig, "receptor": rec, "pair_source": src})
    if extra:
        res = pd.concat([res, pd.DataFrame(extra)], ignore_index=True)
    return res


def _highlight(ligand: str, receptor: str) -> str:
    lig = _MOUSE_ALIASES.get(ligand.upper(), ligand.upper())
    rec = receptor.upper()
    for axis, pats in LIGREC_HIGHLIGHTS.items():
        for pl, pr in pats:
            if lig != pl:
                continue
            if rec == pr or (pr.endswith("*") and rec.startswith(pr[:-1])):
                return axis
    return ""


def _subsample(
    pop: np.ndarray, *, min_cells: int, max_cells: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, int], dict[str, int]]:
    """Indices kept (populations with >= min_cells, each capped at max_cells); counts."""
    keep: list[np.ndarray] = []
    n_all: dict[str, int] = {}
    n_used: dict[str, int] = {}
    for p in sorted(set(pop)):
        idx = np.flatnonzero(pop == p)
        n_all[p] = int(idx.size)
        if p == UNASSIGNED or idx.size < min_cells:
            continue
        if idx.size > max_cells:
            idx = np.sort(rng.choice(idx, size=max_cells, replace=False))
        n_used[p] = int(idx.size)
        keep.append(idx)
    return (np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)), n_all, n_used


def _run_sample(
    X: Any,
    var_names: pd.Index,
    pop: np.ndarray,
    resource: pd.DataFrame,
    *,
    expr_prop: float,
    min_cells: int,
    n_perms: int,
    seed: int,
) -> pd.DataFrame:
    li = _liana()
    sub = ad.AnnData(
        X=sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, np.float32),
        obs=pd.DataFrame({"_group": pd.Categorical(pop)}, index=[f"c{i}" for i in range(len(pop))]),
        var=pd.DataFrame(index=var_names.astype(str)),
    )
    with warnings.catch_warnings():
        # liana and its dependencies warn about pandas/anndata deprecations on every call
        warnings.simplefilter("ignore")
        out = li.mt.rank_aggregate(
            sub,
            groupby="_group",
            resource=resource[["ligand", "receptor"]],
            expr_prop=expr_prop,
            min_cells=min_cells,
            use_raw=False,
            n_perms=n_perms,
            seed=seed,
            verbose=False,
            inplace=False,
        )
    return out


def ligand_receptor(
    adata: ad.AnnData,
    *,
    condition_key: str = "condition",
    sample_key: str = "sample",
    groupby: str = "population",
    species: str = "auto",
    layer: str | None = None,
    min_cells: int = 20,
    max_cells: int = 300,
    expr_prop: float = 0.1,
    n_perms: int = 100,
    alpha: float = 0.05,
    min_fraction: float = 0.5,
    seed: int = 0,
    key_added: str = "bonemet_ligrec",
    copy: bool = False,
) -> ad.AnnData | None:
    """Ligand–receptor interactions per condition, counted across samples (LIANA+).

    Parameters
    ----------
    adata
        Annotated cells: log-normalised ``X`` (or ``layers[layer]``), ``obs[groupby]``,
        ``obs[sample_key]`` and, when present, ``obs[condition_key]`` (without it every
        sample counts as condition ``"all"``).
    condition_key, sample_key, groupby
        obs columns: the condition of each sample, the sample (the replicate unit), the
        populations that send and receive.
    species
        ``"auto"`` (:func:`bonemet._species.resolve_species`), ``"human"`` or ``"mouse"``:
        chooses the resource (:func:`ligrec_resource`).
    layer
        Log-normalised layer to use instead of ``X``.
    min_cells
        Cells a population needs in a sample to take part in that sample's analysis.
    max_cells
        Cells per population and sample above which the population is subsampled (seeded).
    expr_prop
        Fraction of a population's cells that must express the ligand (receptor) (liana).
    n_perms
        Permutations for the CellPhoneDB specificity p-values (liana).
    alpha
        An interaction is significant in a sample when its aggregate magnitude rank and
        specificity rank are both ``<= alpha``.
    min_fraction
        A condition's interaction is ``consistent`` when significant in at least this
        fraction of the condition's testable samples (and in two samples or more where two
        or more were testable).
    seed
        Seeds subsampling and permutations.
    key_added
        ``uns`` key of the results.
    copy
        Return a copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` (or the copy). ``uns[key_added]`` holds ``table`` (one row per condition ×
    interaction that was significant in at least one sample or is one of the review's
    :data:`LIGREC_HIGHLIGHTS`; columns ``condition, source, target, ligand, receptor,
    highlight, pair_source, n_samples`` (samples of the condition), ``n_tested`` (samples
    where liana scored it: both populations present and expressed), ``n_significant``,
    ``fraction_significant`` (of ``n_samples``), ``consistent``, the medians of the
    aggregate ranks, ``mean_lr_means``, ``min_cellphone_pval``, ``samples_significant``),
    ``samples`` (per sample: condition, cells, cells used, populations used, seconds),
    ``parameters`` and ``status`` (``"done"`` or ``"skipped: <reason>"``). Without liana
    installed nothing is computed: a warning says how to install it.
    """
    adata = adata.copy() if copy else adata
    params = {
        "condition_key": condition_key,
        "sample_key": sample_key,
        "groupby": groupby,
        "min_cells": int(min_cells),
        "max_cells": int(max_cells),
        "expr_prop": float(expr_prop),
        "n_perms": int(n_perms),
        "alpha": float(alpha),
        "min_fraction": float(min_fraction),
        "seed": int(seed),
        "significance": "aggregate magnitude_rank <= alpha and specificity_rank <= alpha",
    }
    if min_cells < 1 or max_cells < min_cells:
        raise InputError(
            f"ligand_receptor: need 1 <= min_cells <= max_cells, got {min_cells}, {max_cells}"
        )
    if not 0 < alpha < 1 or not 0 < min_fraction <= 1:
        raise InputError("ligand_receptor: alpha must be in (0, 1) and min_fraction in (0, 1]")
    for key in (sample_key, groupby):
        if key not in adata.obs:
            raise InputError(
                f"ligand_receptor: obs[{key!r}] is missing; obs columns: "
                f"{', '.join(map(str, adata.obs.columns))}"
                + (" (run bm.tl.annotate first)" if key == groupby else "")
            )

    def skipped(reason: str) -> ad.AnnData | None:
        add_warning(adata, f"ligand-receptor analysis skipped: {reason}")
        adata.uns[key_added] = {
            "status": f"skipped: {reason}",
            "parameters": params,
            "table": pd.DataFrame(columns=_TABLE_COLUMNS),
        }
        return adata if copy else None

    if not liana_available():
        return skipped(
            "the optional package liana (LIANA+) is not installed; install it with "
            "`pip install 'bonemet[ligrec]'` (or `pip install liana`)"
        )
    X = adata.X if layer is None else adata.layers[layer]
    where = "adata.X" if layer is None else f"layers[{layer!r}]"
    if is_counts(X, empty=False):
        return skipped(
            f"{where} holds raw counts; LIANA+ needs log-normalised expression "
            "(run bm.pp.normalize, or pass layer= naming a log-normalised layer)"
        )
    sp_ = resolve_species(adata, species, strict=False)
    if sp_ is None:
        return skipped(
            "the species could not be detected from the gene names; set input.species "
            "(API: species='human' or 'mouse')"
        )
    resource = ligrec_resource(sp_)
    source_of = {
        (str(a).upper(), str(b).upper()): s
        for a, b, s in zip(resource["ligand"], resource["receptor"], resource["pair_source"])
    }
    samples = adata.obs[sample_key].astype(str).to_numpy()
    if condition_key in adata.obs:
        cond = adata.obs[condition_key].astype(str).to_numpy()
    else:
        cond = np.full(adata.n_obs, "all", dtype=object)
    pops = adata.obs[groupby].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    per_sample: list[pd.DataFrame] = []
    info: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for s in sorted(set(samples)):
        ins = np.flatnonzero(samples == s)
        conds = set(cond[ins])
        if len(conds) != 1:
            raise InputError(
                f"ligand_receptor: sample {s!r} holds several {condition_key!r} values "
                f"({sorted(conds)}); a sample must have one condition"
            )
        c = conds.pop()
        keep, n_all, n_used = _subsample(
            pops[ins], min_cells=min_cells, max_cells=max_cells, rng=rng
        )
        row = {
            "sample": s,
            "condition": c,
            "n_cells": int(ins.size),
            "n_cells_used": int(keep.size),
            "n_populations": len(n_used),
            "populations": ", ".join(f"{p} ({n})" for p, n in n_used.items()),
            "seconds": 0.0,
            "note": "",
        }
        if len(n_used) < 2:
            row["note"] = f"fewer than 2 populations with >= {min_cells} cells: not analysed"
            info.append(row)
            continue
        t0 = time.perf_counter()
        idx = ins[keep]
        res = _run_sample(
            X[idx],
            adata.var_names,
            pops[idx],
            resource,
            expr_prop=expr_prop,
            min_cells=min_cells,
            n_perms=n_perms,
            seed=seed,
        )
        row["seconds"] = round(time.perf_counter() - t0, 2)
        logger.info(
            "ligand-receptor: sample %s (%s): %d cells, %d populations, %d interactions, %.1f s",
            s,
            c,
            keep.size,
            len(n_used),
            len(res),
            row["seconds"],
        )
        res = res.assign(sample=s, condition=c)
        per_sample.append(res)
        info.append(row)
    seconds = time.perf_counter() - t_all
    sample_info = pd.DataFrame(info)
    if not per_sample:
        return skipped(f"no sample has two populations with >= {min_cells} cells")
    long = pd.concat(per_sample, ignore_index=True)
    table = _aggregate(long, sample_info, source_of, alpha=alpha, min_fraction=min_fraction)
    adata.uns[key_added] = {
        "status": "done",
        "species": sp_,
        "parameters": params,
        "seconds": round(seconds, 2),
        "table": _safe(table),
        "samples": _safe(sample_info),
    }
    bonemet_uns(adata).setdefault("parameters", {})["ligand_receptor"] = {
        **params,
        "species": sp_,
        "liana_version": str(getattr(_liana(), "__version__", "?")),
        "methods": "CellPhoneDB, Connectome, log2FC, NATMI, SingleCellSignalR (rank_aggregate)",
    }
    return adata if copy else None


def _aggregate(
    long: pd.DataFrame,
    sample_info: pd.DataFrame,
    source_of: dict[tuple[str, str], str],
    *,
    alpha: float,
    min_fraction: float,
) -> pd.DataFrame:
    long = long.rename(columns={"ligand_complex": "ligand", "receptor_complex": "receptor"})
    long["significant"] = (long["magnitude_rank"] <= alpha) & (long["specificity_rank"] <= alpha)
    keys = ["condition", "source", "target", "ligand", "receptor"]
    pair = long[["ligand", "receptor"]].drop_duplicates()
    pair["highlight"] = [
        _highlight(str(a), str(b)) for a, b in zip(pair["ligand"], pair["receptor"])
    ]
    long = long.merge(pair, on=["ligand", "receptor"], how="left")
    hit = long.groupby(keys, observed=True)["significant"].transform("any")
    long = long[hit | (long["highlight"] != "")]
    g = long.groupby(keys, observed=True, sort=False)
    out = g.agg(
        highlight=("highlight", "first"),
        n_tested=("sample", "size"),
        n_significant=("significant", "sum"),
        median_magnitude_rank=("magnitude_rank", "median"),
        median_specificity_rank=("specificity_rank", "median"),
        mean_lr_means=("lr_means", "mean"),
        min_cellphone_pval=("cellphone_pvals", "min"),
    ).reset_index()
    sig = long[long["significant"]].groupby(keys, observed=True)["sample"]
    names = sig.agg(lambda x: ", ".join(sorted(map(str, x)))).rename("samples_significant")
    out = out.merge(names.reset_index(), on=keys, how="left")
    out["samples_significant"] = out["samples_significant"].fillna("")
    analysed = sample_info[sample_info["n_populations"] >= 2]
    n_per_cond = analysed.groupby("condition").size()
    out["n_samples"] = out["condition"].map(n_per_cond).astype(int)
    out["n_significant"] = out["n_significant"].astype(int)
    out["fraction_significant"] = out["n_significant"] / out["n_samples"]
    need = np.maximum(
        np.ceil(min_fraction * out["n_samples"].to_numpy() - 1e-9),
        np.minimum(2, out["n_samples"].to_numpy()),
    )
    out["consistent"] = (out["n_significant"].to_numpy() >= need) & (out["n_significant"] > 0)
    out["pair_source"] = [
        source_of.get((str(a).upper(), str(b).upper()), "liana")
        for a, b in zip(out["ligand"], out["receptor"])
    ]
    out = out.sort_values(
        ["condition", "consistent", "fraction_significant", "median_magnitude_rank"],
        ascending=[True, False, False, True],
    )
    return out[_TABLE_COLUMNS].reset_index(drop=True)


def _safe(df: pd.DataFrame) -> pd.DataFrame:
    """Text columns as str, a plain RangeIndex: round-trips through h5ad."""
    out = df.reset_index(drop=True).copy()
    for c in out.columns:
        if out[c].dtype == object or isinstance(out[c].dtype, pd.CategoricalDtype):
            out[c] = out[c].astype(object).where(out[c].notna(), "").astype(str)
    return out
