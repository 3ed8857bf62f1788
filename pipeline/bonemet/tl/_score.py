"""Signature scoring: one runner for per-cell scores (the read-outs built on them are in
``_readouts.py``, AUCell in ``_aucell.py``).

Scoring follows decoupler's pattern: every method is a small function with the same signature
``method(X, var_names, sets, *, seed) -> np.ndarray`` (cells x sets, every set at once),
registered in :data:`SCORE_METHODS`; one runner (:func:`score`) resolves the gene sets for the species,
filters them by coverage, calls the methods and writes the results.

AnnData slots written
--------------------
- ``obs["score_<set>"]``: control-gene score (:func:`scanpy.tl.score_genes`, seeded).
- ``obs["aucell_<set>"]``: AUCell (Aibar et al. 2017, doi:10.1038/nmeth.4463).
- ``obs["erythroid_mimicry_call"]``, ``obs["erythroid_mimicry_class"]``,
  ``obs["erythroid_mimicry_q"]``: the mimicry read-out (``_readouts.erythroid_mimicry``).
- ``uns["bonemet"]["gene_sets"][set]``: coverage, n_found, n_total, version, scored, species,
  genes_found, methods.
- ``uns["bonemet"]["warnings"]``: low-coverage sets, ambient-high samples.
- ``uns["bonemet"]["parameters"]["score"|"erythroid_mimicry"]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._counts import is_counts
from .._errors import InputError
from .._logging import logger
from .._meta import add_warning, bonemet_uns, warnings_of
from .._signatures import GeneSet, Species, load_gene_sets, match_genes
from .._species import resolve_species
from ._aucell import _method_aucell

__all__ = ["SCORE_METHODS", "LIGAND_RECEPTOR_SETS", "score", "default_programmes"]

# --------------------------------------------------------------------------------------
# vocabularies (obs["cell_type"] / obs["population"])
# --------------------------------------------------------------------------------------
ERYTHROID_CELL_TYPES = frozenset({"Erythroid"})
ERYTHROID_POPULATIONS = frozenset({"Erythroid progenitor"})
#: lineages that cannot express haemoglobin: the background for the ambient guard
HB_BACKGROUND_CELL_TYPES = ("T cell", "B cell", "NK cell")
_BACKGROUND_POPULATIONS = {
    "T cell": lambda p: p in ("CD4 T", "Treg") or p.startswith("CD8"),
    "B cell": lambda p: p == "B",
    "NK cell": lambda p: p == "NK",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _drop_warnings(adata: AnnData, prefix: str) -> None:
    """Remove earlier warnings starting with ``prefix`` (superseded by a new run)."""
    meta = bonemet_uns(adata)
    if "warnings" in meta:
        meta["warnings"] = [w for w in warnings_of(adata) if not w.startswith(prefix)]


#: layer of ambient-corrected counts written by QC (DecontX); scores use it when present
DECONTAMINATED = "decontaminated"


def _target_sum(adata: AnnData) -> float:
    """The CP-k target that ``X`` was normalised with (``bm.pp.normalize``; default 1e4)."""
    rec = bonemet_uns(adata, create=False).get("parameters", {}).get("normalize", {})
    try:
        return float(rec.get("target_sum", 1e4))
    except (TypeError, ValueError):
        return 1e4


def lognorm_corrected(adata: AnnData, layer: str = DECONTAMINATED) -> Any:
    """``layers[layer]`` (corrected counts) normalised as ``X`` is: log1p(CP10k).

    Sparse in, sparse out (CSR, float32); the target sum is the one recorded by
    :func:`bonemet.pp.normalize` (1e4 when none is recorded).
    """
    import scipy.sparse as sp

    M = adata.layers[layer]
    M = sp.csr_matrix(M, dtype=np.float32) if sp.issparse(M) else np.asarray(M, np.float32)
    tot = np.asarray(M.sum(axis=1)).ravel().astype(np.float64)
    scale = np.divide(_target_sum(adata), tot, out=np.zeros_like(tot), where=tot > 0)
    if sp.issparse(M):
        out = sp.diags(scale.astype(np.float32)) @ M
        out = sp.csr_matrix(out)
        out.data = np.log1p(out.data)
        return out
    return np.log1p(M * scale[:, None].astype(np.float32))


def _scoring_matrix(adata: AnnData, layer: str | None) -> tuple[Any, str]:
    """(matrix, what it is) for ``layer``: ``"auto"`` is the log1p-CP10k of the corrected
    counts (``layers["decontaminated"]``) when present, else ``X``."""
    if layer == "auto":
        if DECONTAMINATED in adata.layers:
            return lognorm_corrected(adata), f"{DECONTAMINATED} (log1p CP10k)"
        return adata.X, "X"
    return _matrix(adata, layer), "X" if layer is None else layer


def _matrix(adata: AnnData, layer: str | None) -> Any:
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise InputError(
            f"layer {layer!r} is not in adata.layers ({sorted(adata.layers)}); "
            "pass layer=None to use adata.X or one of the listed layers"
        )
    return adata.layers[layer]


def _check_lognorm(X: Any, where: str) -> None:
    if is_counts(X, empty=False):
        raise InputError(
            f"{where} holds raw integer counts, but scoring expects log-normalised expression; "
            "run bm.pp.normalize first (X = log1p CP10k), or pass layer= naming a log-normalised layer"
        )


def _obs_str(adata: AnnData, key: str, *, hint: str) -> pd.Series:
    if key not in adata.obs:
        raise InputError(f"obs[{key!r}] is missing; {hint}")
    return adata.obs[key].astype(str)


#: curated programme sets that pair ligands and receptors of *different* cells: a per-cell
#: score mixes them, so they are not scored by default (ligand-receptor analysis reads them);
#: name them in ``gene_sets=`` to score them anyway
LIGAND_RECEPTOR_SETS = frozenset(
    {"axis_spp1_cd44", "axis_tigit_pvr", "axis_dkk1_ckap4_stat6", "vicious_cycle"}
)


def default_programmes() -> dict[str, GeneSet]:
    """The curated programme sets scored per cell by default (all but
    :data:`LIGAND_RECEPTOR_SETS`)."""
    return {k: v for k, v in load_gene_sets("programme").items() if k not in LIGAND_RECEPTOR_SETS}


def _resolve_sets(
    gene_sets: None | str | Sequence[str] | Mapping[str, Sequence[str]],
) -> dict[str, GeneSet | list[str]]:
    """Gene sets by name: curated :class:`GeneSet` objects or custom lists."""
    if gene_sets is None:
        return dict(default_programmes())
    if isinstance(gene_sets, Mapping):
        out: dict[str, GeneSet | list[str]] = {}
        for name, genes in gene_sets.items():
            if not _NAME_RE.match(str(name)):
                raise InputError(
                    f"custom gene-set name {name!r} is not usable as an obs key; "
                    "use letters, digits, '_', '.' or '-'"
                )
            if isinstance(genes, str) or not all(isinstance(g, str) for g in genes):
                raise InputError(
                    f"custom gene set {name!r} must be a list of gene symbols, not {genes!r}"
                )
            out[str(name)] = list(dict.fromkeys(genes))
        return out
    names = [gene_sets] if isinstance(gene_sets, str) else list(gene_sets)
    available = load_gene_sets()
    unknown = [n for n in names if n not in available]
    if unknown:
        raise InputError(
            f"unknown gene set(s) {unknown}; available: {sorted(available)}, "
            "or pass a dict name -> list of genes for custom sets"
        )
    return {n: available[n] for n in names}


def _candidates(var_names: Sequence[str], genes: Iterable[str]) -> list[str]:
    """The var names that can match any of ``genes`` (case-insensitively), in var order.

    :func:`match_genes` on this short list gives the same result as on all ``var_names``
    (exact and case-insensitive candidates are both kept, in their original order), without
    rebuilding a lookup of every gene for each set.
    """
    wanted = {g.upper() for g in genes}
    return [v for v in map(str, var_names) if v.upper() in wanted]


def _set_genes(gs: GeneSet | list[str], species: Species) -> tuple[list[str], str, str]:
    """(genes for ``species``, version, why-empty) of a curated or custom set."""
    if isinstance(gs, GeneSet):
        return gs.genes(species), gs.version, gs.missing.get(species, "")
    return list(gs), "custom", ""


# --------------------------------------------------------------------------------------
# methods (decoupler's shape): (X, var_names, sets, *, seed) -> cells x sets array
# --------------------------------------------------------------------------------------
def _row_means(X: Any, idx: np.ndarray) -> np.ndarray:
    """Per cell, the mean of the columns ``idx`` (NaN-aware, float64), summed in ``idx``
    order as :func:`scanpy.tl.score_genes` sums them."""
    import scipy.sparse as sp

    sub = X[:, idx]
    if sp.issparse(sub):
        sub = sp.csr_matrix(sub)
        nan = np.isnan(sub.data)
        if nan.any():
            sub = sub.copy()
            n_nan = np.bincount(
                np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))[nan],
                minlength=sub.shape[0],
            )
            sub.data[nan] = 0
        else:
            n_nan = 0
        s = np.asarray(sub.sum(axis=1, dtype="float64")).ravel()
        return s / (sub.shape[1] - n_nan)
    return np.nanmean(np.asarray(sub), axis=1, dtype="float64")


def _gene_means(X: Any) -> np.ndarray:
    """Per gene, the NaN-aware mean over cells (float64), without copying ``X``."""
    import scipy.sparse as sp

    if not sp.issparse(X):
        return np.nanmean(np.asarray(X), axis=0)
    X = sp.csr_matrix(X)
    nan = np.isnan(X.data)
    if not nan.any():
        return np.asarray(X.sum(axis=0, dtype="float64")).ravel() / X.shape[0]
    data = np.where(nan, 0, X.data)
    s = np.bincount(X.indices, weights=data, minlength=X.shape[1])
    return s / (X.shape[0] - np.bincount(X.indices[nan], minlength=X.shape[1]))


def _method_score_genes(
    X: Any, var_names: Sequence[str], sets: Mapping[str, list[str]], *, seed: int
) -> np.ndarray:
    """Control-gene score (Seurat AddModuleScore / :func:`scanpy.tl.score_genes`) of each set.

    Mean expression of a set's genes minus the mean of ``50`` control genes per gene drawn
    from the same expression bins (25 bins), with ``random_state=seed`` for every set.

    The same steps and random draws as :func:`scanpy.tl.score_genes` (``ctrl_as_ref``),
    tested equal to it, with the genes' mean expression computed once: scanpy recomputes it
    for every set from two whole copies of the matrix (at 100k cells about 3 GB more
    memory, 16 times).
    """
    var = pd.Index(var_names).astype(str)
    pool = var.astype("string")
    obs_avg = pd.Series(_gene_means(X), index=pool)
    obs_avg = obs_avg[np.isfinite(obs_avg)]
    n_items = int(np.round(len(obs_avg) / (25 - 1)))
    obs_cut = obs_avg.rank(method="min") // n_items
    out = np.empty((X.shape[0], len(sets)), dtype=np.float64)
    for j, genes in enumerate(sets.values()):
        # the draws score_genes(random_state=seed) makes from the seeded global generator,
        # from a generator of its own (the global one is left alone)
        rs = np.random.RandomState(seed)
        gene_list = pd.Index(list(genes)).intersection(var)
        if len(gene_list) == 0:
            raise ValueError("No valid genes were passed for scoring.")
        control = pd.Index([], dtype="string")
        for cut in np.unique(obs_cut.loc[gene_list]):
            r_genes = obs_cut[obs_cut == cut].index
            if 50 < len(r_genes):
                r_genes = r_genes.to_series().sample(50, random_state=rs).index
            control = control.union(r_genes.difference(gene_list))
        if len(control) == 0:
            raise RuntimeError("No control genes found in any cut.")
        out[:, j] = _row_means(X, var.get_indexer(gene_list)) - _row_means(
            X, var.get_indexer(control)
        )
    return out


#: method name -> (function, obs key prefix); a method takes the matrix, its gene names and
#: every set at once (``{name: genes}``) and returns a cells x sets array
SCORE_METHODS: dict[str, tuple[Callable[..., np.ndarray], str]] = {
    "score_genes": (_method_score_genes, "score"),
    "aucell": (_method_aucell, "aucell"),
}


# --------------------------------------------------------------------------------------
# the runner
# --------------------------------------------------------------------------------------
def _coverage_table(
    adata: AnnData,
    gene_sets: None | str | Sequence[str] | Mapping[str, Sequence[str]],
    species: str,
    min_coverage: float,
) -> tuple[Species, list[dict[str, Any]]]:
    """The one place gene sets are matched and filtered by coverage."""
    if not 0 <= min_coverage <= 1:
        raise InputError(f"min_coverage must be within [0, 1], not {min_coverage!r}")
    sets = _resolve_sets(gene_sets)
    sp_ = resolve_species(adata, species)
    rows = []
    per_set = {name: _set_genes(gs, sp_) for name, gs in sets.items()}
    var = _candidates(adata.var_names, (g for v in per_set.values() for g in v[0]))
    for name, (genes, version, why_empty) in per_set.items():
        matched, cov = match_genes(genes, var)
        n_found = int(round(cov * len(genes)))
        scored = bool(matched) and cov >= min_coverage
        if not genes:
            reason = f"no {sp_} gene list" + (f" ({why_empty})" if why_empty else "")
        elif not scored:
            reason = (
                f"only {n_found}/{len(genes)} {sp_} genes found in var_names "
                f"(coverage {cov:.0%} < min_coverage {min_coverage:.0%})"
            )
        else:
            reason = ""
        rows.append(
            dict(
                name=name,
                genes=matched,
                coverage=float(cov),
                n_found=n_found,
                n_total=len(genes),
                version=version,
                scored=scored,
                reason=reason,
            )
        )
    return sp_, rows


def score(
    adata: AnnData,
    *,
    gene_sets: None | str | Sequence[str] | Mapping[str, Sequence[str]] = None,
    methods: Sequence[str] = ("score_genes", "aucell"),
    species: str = "auto",
    min_coverage: float = 0.5,
    layer: str | None = "auto",
    seed: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Score gene sets per cell with every method in ``methods`` (one runner).

    Parameters
    ----------
    adata
        Cells x genes, ``X`` log-normalised (log1p CP10k, see :func:`bonemet.pp.normalize`).
    gene_sets
        ``None``: every curated programme set in ``signatures/`` except the ligand-receptor
        sets (:data:`LIGAND_RECEPTOR_SETS`: ligand and receptor on different cells, so a
        per-cell score mixes them); a name or list of names of curated sets (any kind); or a
        dict ``name -> list of symbols`` for custom sets.
    methods
        Keys of :data:`SCORE_METHODS`: ``"score_genes"`` (control-gene score, written to
        ``obs["score_<set>"]``) and/or ``"aucell"`` (``obs["aucell_<set>"]``).
    species
        ``"auto"`` (recorded ``uns["bonemet"]["species"]``, else the species whose lists match
        the symbols better), ``"human"`` or ``"mouse"``. Matching is case-insensitive.
    min_coverage
        Sets with a smaller fraction of their genes in ``var_names`` are not scored; a warning
        goes to ``uns["bonemet"]["warnings"]`` (and any stale score column is removed).
    layer
        ``"auto"`` (default): the ambient-corrected counts ``layers["decontaminated"]``
        (written by QC), normalised as ``X`` is (log1p CP10k), when that layer exists, else
        ``X``; ``None``: ``X``; or a log-normalised layer to score instead of ``X``. What
        was scored is recorded in ``uns["bonemet"]["parameters"]["score"]["layer"]``.
    seed
        Seeds the control-gene draw and AUCell's tie-breaking.
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None`` (or the copy). Writes ``obs["score_<set>"]``, ``obs["aucell_<set>"]``,
    ``uns["bonemet"]["gene_sets"][set] = {coverage, n_found, n_total, version, scored,
    species, genes_found, methods}``, ``uns["bonemet"]["parameters"]["score"]``.
    """
    methods = tuple(methods)
    bad = [m for m in methods if m not in SCORE_METHODS]
    if bad or not methods:
        raise InputError(
            f"unknown scoring method(s) {bad or methods}; choose from {sorted(SCORE_METHODS)}"
        )
    adata = adata.copy() if copy else adata
    X, scored_from = _scoring_matrix(adata, layer)
    _check_lognorm(X, "adata.X" if scored_from == "X" else scored_from)
    sp_, table = _coverage_table(adata, gene_sets, species, min_coverage)

    to_score = {r["name"]: list(r["genes"]) for r in table if r["scored"]}
    scores = {
        m: SCORE_METHODS[m][0](X, adata.var_names, to_score, seed=seed) if to_score else None
        for m in methods
    }

    uns = bonemet_uns(adata)
    records = uns.setdefault("gene_sets", {})
    for r in table:
        name = r["name"]
        for m in methods:
            key = f"{SCORE_METHODS[m][1]}_{name}"
            if r["scored"]:
                adata.obs[key] = scores[m][:, list(to_score).index(name)]
            elif key in adata.obs:
                del adata.obs[key]
        _drop_warnings(adata, f"gene set {name!r} not scored:")  # superseded by this run
        if not r["scored"]:
            add_warning(adata, f"gene set {name!r} not scored: {r['reason']}")
        records[name] = {
            "coverage": r["coverage"],
            "n_found": r["n_found"],
            "n_total": r["n_total"],
            "version": r["version"],
            "scored": r["scored"],
            "species": sp_,
            "genes_found": [str(g) for g in r["genes"]],
            "methods": list(methods) if r["scored"] else [],
        }
    uns.setdefault("parameters", {})["score"] = {
        "gene_sets": [r["name"] for r in table],
        "methods": list(methods),
        "species": sp_,
        "min_coverage": float(min_coverage),
        "layer": scored_from,
        "seed": int(seed),
    }
    logger.info(
        "scored %d/%d gene sets (%s) with %s", len(to_score), len(table), sp_, ", ".join(methods)
    )
    return adata if copy else None
