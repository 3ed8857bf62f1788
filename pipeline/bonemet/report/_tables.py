"""The run's tables: each declared once, in :data:`TABLES`.

The local runner and ``bonemet report`` write them to ``OUT/tables/<name>.csv`` and the
HTML report shows the same tables (read back from those files, or built here when the
report is written from a notebook). Adding a table is one row and one builder.

A builder takes the AnnData and the run's :class:`~bonemet.config.Config` and returns a
DataFrame, or ``None`` when the object lacks what the table needs. Tables are built from
what the object holds, so a report rebuilt from a checkpoint writes identical files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._errors import BonemetError
from .._logging import logger
from .._meta import MIMICRY_KEY, bonemet_uns
from .._utils import write_csv

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["TABLES", "Table", "build_tables", "write_tables", "table_section"]


@dataclass(frozen=True)
class Table:
    """One table of the run.

    Attributes
    ----------
    name
        File stem (``tables/<name>.csv``) and the report's table title.
    build
        ``build(adata, cfg)`` -> DataFrame, or ``None`` when not applicable.
    section
        The report section that shows it.
    """

    name: str
    build: Callable[[Any, Config | None], pd.DataFrame | None]
    section: str


def _has(adata: Any, *keys: str) -> bool:
    return all(k in adata.obs.columns for k in keys)


def _qc_summary(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    from ..pp import qc_table

    return qc_table(adata) if bonemet_uns(adata, create=False).get("qc") else None


def _qc_removed_by_group(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    from ..pp import qc_group_table

    qc = bonemet_uns(adata, create=False).get("qc")
    if not isinstance(qc, Mapping) or not any(
        isinstance(r, Mapping) and "by_group" in r for r in qc.values()
    ):
        return None
    return qc_group_table(adata)


def _counts_by_sample(key: str) -> Callable[[Any, Config | None], pd.DataFrame | None]:
    def build(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
        if not _has(adata, key, "sample"):
            return None
        tab = pd.crosstab(adata.obs[key], adata.obs["sample"])
        return tab.loc[tab.sum(axis=1) > 0]

    return build


def _population_fractions(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    counts = _counts_by_sample("population")(adata, cfg)
    return None if counts is None else (counts / counts.sum(axis=0)).round(5)


def _listed(v: Any) -> Any:
    """Lists (arrays after an h5ad round trip) as one ``;``-separated cell."""
    if isinstance(v, list | tuple | np.ndarray):
        return ";".join(str(x) for x in np.asarray(v, dtype=object).ravel())
    if isinstance(v, np.generic):
        return v.item()
    return v


def _gene_set_coverage(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    gs = bonemet_uns(adata, create=False).get("gene_sets")
    if not isinstance(gs, Mapping) or not gs:
        return None
    rows = {
        str(name): {str(k): _listed(v) for k, v in info.items()}
        for name, info in gs.items()
        if isinstance(info, Mapping)
    }
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "gene_set"
    # columns in a fixed order: an h5ad round trip stores each record's keys sorted
    first = ["coverage", "n_found", "n_total", "version", "scored", "species"]
    cols = [c for c in first if c in df.columns] + sorted(c for c in df.columns if c not in first)
    return df[cols].sort_index()


def _scored(adata: Any) -> bool:
    return _has(adata, "population") and any(c.startswith("score_") for c in adata.obs.columns)


def _score_summary(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    from ..tl import score_summary

    return score_summary(adata) if _scored(adata) else None


def _erythroid_mimicry(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    if not _scored(adata):
        return None
    stored = adata.uns.get(MIMICRY_KEY)
    if isinstance(stored, pd.DataFrame):
        return stored.reset_index(drop=True)
    from ..tl import erythroid_mimicry

    return erythroid_mimicry(adata)


def _erythroid_mimicry_calls(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    if "erythroid_mimicry_class" not in adata.obs.columns:
        return None
    from ..tl import erythroid_mimicry_calls

    return erythroid_mimicry_calls(adata)


def _gene_set_overlap(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    from ..tl import gene_set_overlap

    return gene_set_overlap(adata) if _scored(adata) else None


def _ferroptosis_index(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    if not _has(adata, "score_ferroptosis_driver", "score_ferroptosis_suppressor", "sample"):
        return None
    from ..tl import ferroptosis_index

    return ferroptosis_index(adata) if _scored(adata) else None


def _ferroptosis_genes(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    from ..tl import ferroptosis_genes

    return ferroptosis_genes(adata) if _scored(adata) and _has(adata, "sample") else None


def _axes(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    from ..tl import axes_table

    if not _scored(adata):
        return None
    if cfg is None:
        return axes_table(adata)
    a = cfg.axes
    return axes_table(
        adata,
        min_cells=a.min_cells,
        neutrophil_stages=a.neutrophil_stages,
        subject_key=a.subject_key,
        tissue_key=a.tissue_key,
    )


def _axes_paired(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    """Cheng 2025's design: a subject's bone SPP1 beside its extraosseous Tpex fraction."""
    if cfg is None or cfg.axes.subject_key is None:
        return None
    from ..tl import axes_paired

    table = _axes(adata, cfg)
    return None if table is None else axes_paired(table, bone_tissue=cfg.axes.bone_tissue)


def _axes_correlations(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    from ..tl import axes_correlations

    table = _axes(adata, cfg)
    if table is None:
        return None
    bone = cfg.axes.bone_tissue if cfg is not None else "bone"
    return axes_correlations(table, bone_tissue=bone)


def _pseudobulk_ssgsea(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    if cfg is None or not cfg.score.ssgsea or not _scored(adata) or "counts" not in adata.layers:
        return None
    from ..tl import pseudobulk_enrichment

    return pseudobulk_enrichment(adata, min_cells=cfg.score.pseudobulk_min_cells)


def _label_agreement(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    from ..tl import label_agreement

    return label_agreement(adata) if _has(adata, "reference_label", "cell_type") else None


def _label_agreement_population(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    """Population x population confusion and per-population F1 (labels at population level)."""
    if not _has(adata, "reference_label", "population"):
        return None
    from ..tl import population_agreement

    tab = population_agreement(adata)
    return None if tab is None else tab.reset_index()


def _integration_metrics(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    if "X_umap" not in adata.obsm:
        return None
    from ..pl import integration_metrics_table

    return integration_metrics_table(
        adata, backend=cfg.report.integration_metrics if cfg is not None else None
    )


def _compare_part(part: str) -> Callable[[Any, Config | None], pd.DataFrame | None]:
    """A table stored by the compare stage in ``uns["bonemet_compare"]``."""

    def build(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
        res = adata.uns.get("bonemet_compare")
        df = res.get(part) if isinstance(res, Mapping) else None
        return df.reset_index(drop=True) if isinstance(df, pd.DataFrame) else None

    return build


def _ligrec_part(part: str) -> Callable[[Any, Config | None], pd.DataFrame | None]:
    """A table stored by the ligand-receptor analysis in ``uns["bonemet_ligrec"]``."""

    def build(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
        res = adata.uns.get("bonemet_ligrec")
        df = res.get(part) if isinstance(res, Mapping) else None
        return df.reset_index(drop=True) if isinstance(df, pd.DataFrame) else None

    return build


#: Every table of a run, in the order the report shows them.
TABLES: tuple[Table, ...] = (
    Table("qc_summary", _qc_summary, "qc"),
    Table("qc_removed_by_group", _qc_removed_by_group, "qc"),
    Table("integration_metrics", _integration_metrics, "integration"),
    Table("population_counts", _counts_by_sample("population"), "populations"),
    Table("population_fractions", _population_fractions, "populations"),
    Table("cell_type_counts", _counts_by_sample("cell_type"), "populations"),
    Table("label_agreement", _label_agreement, "populations"),
    Table("label_agreement_population", _label_agreement_population, "populations"),
    Table("gene_set_coverage", _gene_set_coverage, "signatures"),
    Table("score_summary", _score_summary, "signatures"),
    Table("erythroid_mimicry", _erythroid_mimicry, "signatures"),
    Table("erythroid_mimicry_calls", _erythroid_mimicry_calls, "signatures"),
    Table("gene_set_overlap", _gene_set_overlap, "signatures"),
    Table("ferroptosis_index", _ferroptosis_index, "signatures"),
    Table("ferroptosis_genes_tumour", _ferroptosis_genes, "signatures"),
    Table("pseudobulk_ssgsea", _pseudobulk_ssgsea, "signatures"),
    Table("axes", _axes, "axes"),
    Table("axes_paired", _axes_paired, "axes"),
    Table("axes_correlations", _axes_correlations, "axes"),
    Table("compare_design", _compare_part("design"), "compare"),
    Table("differential_abundance", _compare_part("differential_abundance"), "compare"),
    Table("score_tests", _compare_part("score_tests"), "compare"),
    Table("pseudobulk_de", _compare_part("pseudobulk_de"), "compare"),
    Table("pseudobulk_de_skipped", _compare_part("de_skipped"), "compare"),
    Table("ligand_receptor", _ligrec_part("table"), "compare"),
    Table("ligand_receptor_samples", _ligrec_part("samples"), "compare"),
)


def table_section(name: str) -> str:
    """The report section of table ``name`` (``"other"`` for a table not in :data:`TABLES`)."""
    return next((t.section for t in TABLES if t.name == name), "other")


def build_tables(
    adata: Any, cfg: Config | None = None, *, names: Sequence[str] | None = None
) -> dict[str, pd.DataFrame]:
    """Build the :data:`TABLES` that ``adata`` has the data for (in registry order).

    A table whose builder fails on the object (a missing population, a gene set absent)
    is left out with a log line, so one unbuildable table does not stop the report.
    """
    out: dict[str, pd.DataFrame] = {}
    for t in TABLES:
        if names is not None and t.name not in names:
            continue
        try:
            df = t.build(adata, cfg)
        except (BonemetError, KeyError, ValueError) as e:
            logger.info("table %s skipped: %s", t.name, e)
            continue
        if isinstance(df, pd.DataFrame) and not df.empty:
            out[t.name] = _with_sample_design(df, adata, cfg)
    return out


def _sample_design(adata: Any, cfg: Config | None) -> pd.DataFrame | None:
    """Per sample: its condition (and subject) where the object records them."""
    keys = ["condition"]
    if cfg is not None:
        keys = [
            cfg.compare.condition_key,
            *([cfg.compare.subject_key] if cfg.compare.subject_key else []),
        ]
    keys = [k for k in dict.fromkeys(keys) if k in adata.obs.columns and k != "sample"]
    if "sample" not in adata.obs.columns or not keys:
        return None
    obs = adata.obs[["sample", *keys]].astype(str)
    design = obs.groupby("sample", observed=True)[keys].first()
    design.index = design.index.astype(str)
    names = {}
    if cfg is not None:
        names = {cfg.compare.condition_key: "condition", cfg.compare.subject_key: "subject"}
    return design.rename(columns=names)


def _with_sample_design(df: pd.DataFrame, adata: Any, cfg: Config | None) -> pd.DataFrame:
    """A table with one sample per row gains the sample's condition (and subject) columns."""
    design = _sample_design(adata, cfg)
    if design is None:
        return df
    if "sample" in df.columns:
        samples = df["sample"].astype(str)
    elif df.index.name == "sample":
        samples = pd.Series(df.index.astype(str), index=df.index)
    else:
        return df
    add = [c for c in design.columns if c not in df.columns]
    if not add:
        return df
    df = df.copy()
    for c in add:
        df[c] = samples.map(design[c]).to_numpy()
    return df


def _keep_index(df: pd.DataFrame) -> bool:
    # a named index carries data (sample, population, gene_set); an unnamed one is row numbers
    return df.index.name is not None or any(n is not None for n in df.index.names)


def write_tables(adata: Any, cfg: Config | None, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write :func:`build_tables` into ``out_dir/<name>.csv`` (atomically); name -> path."""
    out = Path(out_dir)
    return {
        name: write_csv(df, out / f"{name}.csv", index=_keep_index(df))
        for name, df in build_tables(adata, cfg).items()
    }
