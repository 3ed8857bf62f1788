"""One typed configuration for the Python API, the CLI and Nextflow.

Defaults live in ``configs/default.yaml``; a run config (YAML or dict) overrides only
the keys it names. Unknown keys and bad values fail before any work starts, with
every problem listed at once.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ._errors import ConfigError
from ._formats import INPUT_FORMATS
from ._resources import configs_dir

__all__ = [
    "Config",
    "load_config",
    "default_config_dict",
    "config_to_yaml",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputConfig(_Section):
    path: str | None = None
    geo: str | None = None
    samples: list[str] | None = None
    format: Literal[INPUT_FORMATS] = "auto"  # type: ignore[valid-type]
    sample_key: str | None = None
    label_key: str | None = None
    batch_key: str | None = None
    condition_key: str | None = None
    species: Literal["auto", "human", "mouse"] = "auto"
    allow_non_counts: bool = True
    geo_base_url: str = "https://ftp.ncbi.nlm.nih.gov/geo"
    geo_include_title: str | None = None
    geo_exclude_title: str | None = None
    geo_annotation: list[str] | None = None
    cache_dir: str | None = None

    @field_validator("geo_include_title", "geo_exclude_title")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        import re

        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression: {e}") from None
        return v

    @field_validator("geo_annotation", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("geo")
    @classmethod
    def _geo_accession(cls, v: str | None) -> str | None:
        import re

        if v is not None and not re.fullmatch(r"GSE\d{3,8}", v):
            raise ValueError(f"{v!r} is not a GEO series accession (GSE followed by digits)")
        return v


class OutputConfig(_Section):
    dir: str = "results/bonemet"


class QCConfig(_Section):
    min_counts: int = Field(500, ge=0)
    min_genes: int = Field(200, ge=0)
    max_pct_mito: float = Field(20.0, gt=0, le=100)
    mito_floor: float = Field(5.0, ge=0, le=100)
    nmads_counts: float = Field(5.0, gt=0)
    nmads_genes: float = Field(5.0, gt=0)
    nmads_mito: float = Field(3.0, gt=0)
    mad_scope: Literal["sample", "cluster"] = "cluster"
    group_resolution: float = Field(0.3, gt=0)
    min_group_cells: int = Field(30, ge=1)
    floor_reference_genes: int = Field(5000, ge=0)
    warn_removed_fraction: float = Field(0.3, gt=0, le=1)
    ambient: Literal["decontx", "none"] = "decontx"
    decontx_estimate_delta: bool = False
    min_cells_per_gene: int = Field(3, ge=0)
    doublets: bool = True
    doublet_rate: float = Field(0.06, gt=0, lt=1)
    remove_doublets: bool = True
    drop_empty_samples: bool = False
    high_hb_fraction: float = Field(0.01, ge=0, le=1)

    @model_validator(mode="after")
    def _mito_bounds(self) -> QCConfig:
        if self.mito_floor > self.max_pct_mito:
            raise ValueError(
                f"mito_floor ({self.mito_floor}) must not exceed max_pct_mito "
                f"({self.max_pct_mito}): the mito threshold is kept between the two"
            )
        return self


class NormalizeConfig(_Section):
    target_sum: float = Field(1e4, gt=0)
    n_top_genes: int = Field(2000, ge=50)
    hvg_flavor: Literal["seurat_v3", "seurat", "cell_ranger"] = "seurat_v3"


class IntegrateConfig(_Section):
    method: Literal["scvi", "harmony", "pca", "none"] = "scvi"
    batch_key: str = "sample"
    n_latent: int = Field(30, ge=2, le=200)
    n_hidden: int = Field(128, ge=8)
    n_layers: int = Field(2, ge=1, le=5)
    gene_likelihood: Literal["nb", "zinb", "poisson"] = "nb"
    max_epochs: int | None = Field(None, ge=1)
    batch_size: int = Field(128, ge=8)
    early_stopping: bool = True
    early_stopping_patience: int = Field(20, ge=1)
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    fast_path: Literal["auto", "on", "off"] = "auto"
    save_model: bool = True
    n_pcs: int = Field(50, ge=2)


class ClusterConfig(_Section):
    n_neighbors: int = Field(15, ge=2)
    resolution: float = Field(1.0, gt=0)
    resolutions: list[float] = Field(default_factory=lambda: [0.5, 1.0])
    umap_min_dist: float = Field(0.3, ge=0)
    unintegrated_umap_cells: int = Field(10000, ge=0)

    @field_validator("resolutions")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(r <= 0 for r in v):
            raise ValueError("every resolution must be > 0")
        return v


class AnnotateConfig(_Section):
    min_confidence: float = Field(0.15, ge=0, le=1)
    cluster_key: str = "leiden"
    celltypist_model: str | None = None
    scanvi_reference: str | None = None
    scanvi_max_epochs: int = Field(100, ge=1)


class ScoreConfig(_Section):
    methods: list[Literal["score_genes", "aucell"]] = Field(
        default_factory=lambda: ["score_genes", "aucell"]
    )
    min_coverage: float = Field(0.5, ge=0, le=1)
    pseudobulk_min_cells: int = Field(10, ge=1)
    ssgsea: bool = True
    # erythroid-mimicry read-out (bm.tl.erythroid_mimicry): BH level per sample, the null
    # (fitted to the tumour cells, or the T/B/NK background), an optional effect-size floor
    # (globin share >= min_fold x the null mean), minimum globin counts of a call, the
    # fewest background / tumour cells for a null, the doublet-score quantile above which a
    # globin-positive cell is a possible doublet (1: off) and the level of the per-sample CI
    mimicry_fdr: float = Field(0.05, gt=0, lt=1)
    mimicry_null: Literal["tumour_mixture", "background"] = "tumour_mixture"
    mimicry_min_fold: float = Field(1.0, ge=1)
    mimicry_min_globin_counts: int = Field(2, ge=0)
    mimicry_min_background_cells: int = Field(20, ge=3)
    mimicry_min_tumour_cells: int = Field(30, ge=5)
    mimicry_doublet_quantile: float = Field(0.95, gt=0, le=1)
    mimicry_ci_level: float = Field(0.95, gt=0, lt=1)


class CompareConfig(_Section):
    enabled: bool = True
    condition_key: str = "condition"
    reference: str | None = None
    subject_key: str | None = None
    covariates: list[str] = Field(default_factory=list)
    min_cells: int = Field(20, ge=1)
    min_samples_per_group: int = Field(3, ge=2)
    de: bool = True

    @model_validator(mode="before")
    @classmethod
    def _ligrec_moved(cls, data: Any) -> Any:
        if isinstance(data, dict):
            old = [k for k in data if k == "ligand_receptor" or str(k).startswith("ligrec_")]
            if old:
                raise ValueError(
                    f"{', '.join(old)}: ligand-receptor settings have their own section now: "
                    "ligrec.enabled, ligrec.max_cells, ligrec.n_perms, ligrec.alpha, "
                    "ligrec.min_fraction, ligrec.min_cells"
                )
        return data

    @field_validator("covariates")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("covariates must not repeat a column")
        return v

    @model_validator(mode="after")
    def _keys_differ(self) -> CompareConfig:
        keys = [self.condition_key, self.subject_key]
        clash = [c for c in self.covariates if c in keys]
        if clash or (self.subject_key is not None and self.subject_key == self.condition_key):
            raise ValueError(
                "condition_key, subject_key and covariates must name different obs columns"
            )
        return self


class LigrecConfig(_Section):
    """Ligand-receptor analysis per condition with LIANA+ (optional package ``liana``)."""

    enabled: bool = True
    min_cells: int = Field(20, ge=1)
    max_cells: int = Field(300, ge=1)
    n_perms: int = Field(100, ge=10)
    alpha: float = Field(0.05, gt=0, lt=1)
    min_fraction: float = Field(0.5, gt=0, le=1)


class AxesConfig(_Section):
    """The review's axes (tables ``axes``, ``axes_paired``, ``axes_correlations``)."""

    min_cells: int = Field(20, ge=1)
    neutrophil_stages: int = Field(4, ge=0, le=10)
    subject_key: str | None = None
    tissue_key: str | None = None
    bone_tissue: str = "bone"

    @field_validator("neutrophil_stages")
    @classmethod
    def _stages(cls, v: int) -> int:
        if v == 1:
            raise ValueError("neutrophil_stages must be 0 (no stages) or between 2 and 10")
        return v

    @model_validator(mode="after")
    def _pair_keys(self) -> AxesConfig:
        if (self.subject_key is None) != (self.tissue_key is None):
            raise ValueError(
                "axes.subject_key and axes.tissue_key go together: the paired OPN axis needs "
                "each sample's subject and tissue (set both, or neither)"
            )
        if self.subject_key is not None and self.subject_key == self.tissue_key:
            raise ValueError("axes.subject_key and axes.tissue_key must name different columns")
        return self


class ReportConfig(_Section):
    figures: bool = True
    formats: list[Literal["png", "pdf", "svg"]] = Field(default_factory=lambda: ["png", "pdf"])
    dpi: int = Field(300, ge=50, le=1200)
    integration_metrics: Literal["auto", "scib-metrics", "sklearn-fallback"] = "auto"


class Config(_Section):
    """The whole bonemet configuration (see ``configs/default.yaml``)."""

    input: InputConfig = Field(default_factory=InputConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    qc: QCConfig = Field(default_factory=QCConfig)
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    integrate: IntegrateConfig = Field(default_factory=IntegrateConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    ligrec: LigrecConfig = Field(default_factory=LigrecConfig)
    axes: AxesConfig = Field(default_factory=AxesConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    def section_dict(self, name: str) -> dict[str, Any]:
        return getattr(self, name).model_dump(mode="json")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(
            f"config file {str(p)!r} is a directory, not a YAML file: give a config file, or "
            "pass a data folder with --input DIR --out OUT"
        )
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist: give the path of a YAML file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {str(p)!r} is not UTF-8 text (byte {e.object[e.start]:#04x} at "
            f"offset {e.start}): save it as UTF-8"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(p)!r} must hold a mapping of sections, not {type(data).__name__}"
        )
    return data


def default_config_dict() -> dict[str, Any]:
    """The defaults of ``configs/default.yaml`` as a plain dict."""
    return _read_yaml(configs_dir() / "default.yaml")


def _deep_update(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_update(out[k], v)
        else:
            out[k] = v
    return out


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against configs/default.yaml)"
        else:
            msg = e["msg"]
        lines.append(f"{loc}: {msg}")
    n = len(lines)
    return f"invalid config {source} ({n} problem{'s' if n != 1 else ''}): " + "; ".join(lines)


def load_config(
    config: str | os.PathLike | dict[str, Any] | Config | None = None,
    *,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Build a validated :class:`Config`.

    Parameters
    ----------
    config
        A YAML path, a (partial) dict, an existing :class:`Config`, or ``None`` for
        the defaults.
    overrides
        A partial dict applied on top (used by CLI flags).

    Raises
    ------
    ConfigError
        Listing every unknown key and bad value at once.
    """
    source = "(dict)"
    if isinstance(config, Config):
        user = config.to_dict()
    elif config is None:
        user = {}
    elif isinstance(config, dict):
        user = config
    else:
        source = repr(str(config))
        user = _read_yaml(config)
    merged = _deep_update(default_config_dict(), user)
    if overrides:
        merged = _deep_update(merged, overrides)
    try:
        return Config.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
