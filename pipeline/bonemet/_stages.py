"""The pipeline's stages: each declared once, in :data:`REGISTRY`.

A stage is one row (name, function, scope, the config keys it reads, help text) and one
function here that takes the data, the validated :class:`~bonemet.config.Config` and a
:class:`StageContext`. The local runner (:func:`bonemet.run`), the per-stage CLI commands
that Nextflow calls (``bonemet <stage>``) and the resume keys all derive from the
registry, so both paths give the same cells, clusters and labels for the same config.

Scopes say what a stage takes and returns, and so how it is checkpointed:

``source``
    nothing (reads the input named in the config) -> per-sample AnnData
``sample``
    one sample -> that sample (run once per sample)
``gather``
    all samples -> one merged AnnData
``merged``
    the merged AnnData -> the merged AnnData
``sink``
    the merged AnnData -> files in the output folder (the report)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._errors import ConfigError, InputError, NotCountsError
from ._meta import MIMICRY_KEY, bonemet_uns
from .config import Config

if TYPE_CHECKING:
    import anndata as ad

__all__ = [
    "REGISTRY",
    "STAGES",
    "STAGE_SECTIONS",
    "SAMPLE_STAGES",
    "Stage",
    "StageContext",
    "StageOption",
    "get_stage",
    "stage_config",
    "model_checksums",
    "ingest",
    "qc",
    "merge",
    "integrate",
    "cluster",
    "annotate",
    "score",
    "compare",
    "ligrec",
    "report",
]

Scope = Literal["source", "sample", "gather", "merged", "sink"]


@dataclass(frozen=True)
class StageContext:
    """What a stage may need besides its data and the config.

    Attributes
    ----------
    out_dir
        The run's output folder (the ``sink`` stage writes there).
    model_dir
        Where the integrate stage saves the scVI model (``None``: not saved).
    provenance
        The runner's run facts, shown by the report.
    consume_input
        The caller hands its input over: the gather stage empties the ``{sample: AnnData}``
        mapping it was given as soon as the samples are concatenated, so their memory is
        free before normalisation (the merge stage's peak held every sample twice: at 100k
        cells 5.9 GiB, 2.1 GiB of it the per-sample objects). Off by default: a notebook
        user's dict is left alone.
    """

    out_dir: Path | None = None
    model_dir: Path | None = None
    provenance: Mapping[str, Any] | None = None
    consume_input: bool = False


@dataclass(frozen=True)
class StageOption:
    """An extra per-stage CLI option that fills one :class:`StageContext` field."""

    flag: str
    metavar: str
    help: str
    context_field: str


@dataclass(frozen=True)
class Stage:
    """One pipeline stage, declared once.

    Attributes
    ----------
    name
        The stage's name: the CLI command, the checkpoint name and, upper-cased, the
        Nextflow process.
    func
        ``func(data, cfg, ctx)`` with ``data`` as the scope says.
    scope
        ``source``, ``sample``, ``gather``, ``merged`` or ``sink`` (module docstring).
    sections
        The config keys the stage reads (dotted paths; a section name means all of it;
        ``""`` means the whole config). Resume keys and Nextflow's per-stage config slices
        hash exactly these, so a stage reruns only when its own settings change.
    help
        One line for ``bonemet --help``.
    options
        Extra CLI options of ``bonemet <stage>`` (e.g. ``--model-dir``).
    key_extra
        ``key_extra(cfg)`` adds to the resume key what the config alone does not say
        (e.g. the checksum of a model file the stage reads).
    """

    name: str
    func: Callable[..., Any]
    scope: Scope
    sections: tuple[str, ...]
    help: str
    options: tuple[StageOption, ...] = field(default=())
    key_extra: Callable[[Config], Any] | None = None

    @property
    def per_sample(self) -> bool:
        return self.scope in ("source", "sample")

    @property
    def checkpoint(self) -> Literal["samples", "h5ad", "outputs"]:
        """``samples``: one .h5ad per sample; ``h5ad``: the merged object; ``outputs``: files."""
        if self.per_sample:
            return "samples"
        return "outputs" if self.scope == "sink" else "h5ad"

    def __call__(self, data: Any, cfg: Config, ctx: StageContext | None = None) -> Any:
        return self.func(data, cfg, ctx or StageContext())


def _record(adata: ad.AnnData, stage: str, params: Mapping[str, Any], seconds: float) -> None:
    from ._version import __version__

    meta = bonemet_uns(adata)
    meta["version"] = __version__
    recorded = meta.setdefault("parameters", {})
    # the function's own record (e.g. detected species) wins over the config echo
    recorded[stage] = {
        **{k: ("" if v is None else v) for k, v in dict(params).items()},
        **dict(recorded.get(stage, {})),
    }
    meta.setdefault("timings", {})[stage] = round(float(seconds), 3)


def ingest(path: str | None, cfg: Config, ctx: StageContext | None = None) -> dict[str, ad.AnnData]:
    """Read ``path``, or the input named in ``cfg.input`` when ``None``, into per-sample AnnData."""
    from . import io

    inp = cfg.input
    t0 = time.perf_counter()
    if inp.geo and not path:
        samples = io.read_geo(
            inp.geo,
            base_url=inp.geo_base_url,
            cache_dir=inp.cache_dir,
            samples=inp.samples,
            include_title=inp.geo_include_title,
            exclude_title=inp.geo_exclude_title,
            species=None if inp.species == "auto" else inp.species,
            annotation=inp.geo_annotation,
            label_key=inp.label_key,
            batch_key=inp.batch_key,
            condition_key=inp.condition_key,
        )
    else:
        src = path or inp.path
        if not src:
            raise InputError(
                "no input given: set input.path (a file, 10x folder or samplesheet) or "
                "input.geo in the config, or pass --input"
            )
        samples = io.ingest(
            src,
            format=inp.format,
            sample_key=inp.sample_key,
            label_key=inp.label_key,
            batch_key=inp.batch_key,
            condition_key=inp.condition_key,
            species=inp.species,
        )
    if not samples:
        raise InputError(f"the input {path or inp.path or inp.geo!r} holds no sample")
    not_counts = [k for k, a in samples.items() if not bonemet_uns(a).get("is_counts", True)]
    if not_counts and not inp.allow_non_counts and cfg.integrate.method == "scvi":
        raise NotCountsError(
            f"sample(s) {', '.join(not_counts)} are not raw integer counts "
            "(non-integer or log-scale values): scVI needs raw counts. Give the raw count "
            "matrix, or set input.allow_non_counts: true to integrate with harmony on PCA instead"
        )
    dt = time.perf_counter() - t0
    for a in samples.values():
        _record(a, "ingest", cfg.section_dict("input"), dt / len(samples))
    return samples


def qc(adata: ad.AnnData, cfg: Config, ctx: StageContext | None = None) -> ad.AnnData:
    """Per-sample QC (MAD thresholds per sample or pre-QC cluster, floors scaled to the genes
    measured, doublets, DecontX ambient correction), cells removed by reason."""
    from . import pp

    q = cfg.qc
    t0 = time.perf_counter()
    out = pp.qc(
        adata,
        min_counts=q.min_counts,
        min_genes=q.min_genes,
        max_pct_mito=q.max_pct_mito,
        mito_floor=q.mito_floor,
        nmads_counts=q.nmads_counts,
        nmads_genes=q.nmads_genes,
        nmads_mito=q.nmads_mito,
        mad_scope=q.mad_scope,
        group_resolution=q.group_resolution,
        min_group_cells=q.min_group_cells,
        floor_reference_genes=q.floor_reference_genes,
        warn_removed_fraction=q.warn_removed_fraction,
        ambient=q.ambient,
        decontx_estimate_delta=q.decontx_estimate_delta,
        doublets=q.doublets,
        doublet_rate=q.doublet_rate,
        remove_doublets=q.remove_doublets,
        drop_empty=q.drop_empty_samples,
        high_hb_fraction=q.high_hb_fraction,
        species=cfg.input.species,
        seed=cfg.seed,
        copy=True,
    )
    _record(out, "qc", cfg.section_dict("qc"), time.perf_counter() - t0)
    return out


def merge(
    samples: Mapping[str, ad.AnnData] | list[ad.AnnData],
    cfg: Config,
    ctx: StageContext | None = None,
) -> ad.AnnData:
    """Concatenate samples (sorted by sample id), then normalise and select HVGs."""
    from . import pp

    t0 = time.perf_counter()
    if isinstance(samples, Mapping):
        items = dict(sorted(samples.items()))
    else:
        items = {}
        for a in samples:
            name = str(a.obs["sample"].iloc[0]) if a.n_obs else str(len(items))
            if name in items:
                raise InputError(
                    f"duplicate sample id {name!r}: two inputs hold sample {name!r}, and merging "
                    "would keep only one; give each sample once, or ingest them under "
                    "different --sample ids"
                )
            items[name] = a
        items = dict(sorted(items.items()))
    # empty samples (dropped by qc.drop_empty_samples) keep their QC record through merge
    adata = pp.merge(items)
    if ctx is not None and ctx.consume_input:
        items.clear()
        if isinstance(samples, (MutableMapping, list)):
            samples.clear()
        from ._utils import release_memory

        release_memory()
    n = cfg.normalize
    pp.normalize(
        adata,
        target_sum=n.target_sum,
        n_top_genes=n.n_top_genes,
        flavor=n.hvg_flavor,
        batch_key=cfg.integrate.batch_key if cfg.integrate.batch_key in adata.obs else "sample",
        min_cells=cfg.qc.min_cells_per_gene,
    )
    _record(adata, "merge", cfg.section_dict("normalize"), time.perf_counter() - t0)
    return adata


def integrate(adata: ad.AnnData, cfg: Config, ctx: StageContext | None = None) -> ad.AnnData:
    """scVI (or the configured fallback) on the HVGs: ``obsm["X_scVI"]``; the model goes to
    ``ctx.model_dir`` when given (and ``integrate.save_model``)."""
    model_dir = ctx.model_dir if ctx else None
    from . import tl

    i = cfg.integrate
    t0 = time.perf_counter()
    tl.integrate(
        adata,
        method=i.method,
        batch_key=i.batch_key,
        n_latent=i.n_latent,
        n_hidden=i.n_hidden,
        n_layers=i.n_layers,
        gene_likelihood=i.gene_likelihood,
        max_epochs=i.max_epochs,
        batch_size=i.batch_size,
        early_stopping=i.early_stopping,
        early_stopping_patience=i.early_stopping_patience,
        accelerator=i.accelerator,
        fast_path=i.fast_path,
        seed=cfg.seed,
        model_dir=str(model_dir) if (model_dir and i.save_model) else None,
        allow_fallback=cfg.input.allow_non_counts,
        n_pcs=i.n_pcs,
    )
    _record(adata, "integrate", cfg.section_dict("integrate"), time.perf_counter() - t0)
    return adata


def cluster(adata: ad.AnnData, cfg: Config, ctx: StageContext | None = None) -> ad.AnnData:
    """Neighbours on the integrated space, leiden at each resolution, UMAP."""
    from . import tl

    c = cfg.cluster
    t0 = time.perf_counter()
    tl.cluster(
        adata,
        n_neighbors=c.n_neighbors,
        resolution=c.resolution,
        resolutions=c.resolutions,
        umap_min_dist=c.umap_min_dist,
        unintegrated_cells=c.unintegrated_umap_cells,
        seed=cfg.seed,
    )
    _record(adata, "cluster", cfg.section_dict("cluster"), time.perf_counter() - t0)
    return adata


def annotate(adata: ad.AnnData, cfg: Config, ctx: StageContext | None = None) -> ad.AnnData:
    """Lineage (``cell_type``) and named populations (``population``) with confidence."""
    from . import tl

    a = cfg.annotate
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {}
    if a.celltypist_model:
        kwargs["celltypist_model"] = a.celltypist_model
    if a.scanvi_reference:
        kwargs["scanvi_reference"] = a.scanvi_reference
        kwargs["scanvi_max_epochs"] = a.scanvi_max_epochs
        kwargs["accelerator"] = cfg.integrate.accelerator
    tl.annotate(
        adata,
        species=cfg.input.species,
        cluster_key=a.cluster_key,
        min_confidence=a.min_confidence,
        seed=cfg.seed,
        **kwargs,
    )
    _record(adata, "annotate", cfg.section_dict("annotate"), time.perf_counter() - t0)
    return adata


def score(adata: ad.AnnData, cfg: Config, ctx: StageContext | None = None) -> ad.AnnData:
    """Programme scores per cell (control-gene method and AUCell)."""
    from . import tl

    s = cfg.score
    t0 = time.perf_counter()
    tl.score(
        adata,
        methods=tuple(s.methods),
        species=cfg.input.species,
        min_coverage=s.min_coverage,
        seed=cfg.seed,
    )
    if "cell_type" in adata.obs:
        # per-cell calls (obs["erythroid_mimicry_call"]) belong to the scored object; the
        # per-sample table goes to uns for the report stage
        mimicry = tl.erythroid_mimicry(
            adata,
            fdr=s.mimicry_fdr,
            null=s.mimicry_null,
            min_fold=s.mimicry_min_fold,
            min_hb_counts=s.mimicry_min_globin_counts,
            min_background=s.mimicry_min_background_cells,
            min_tumour_null=s.mimicry_min_tumour_cells,
            doublet_quantile=s.mimicry_doublet_quantile,
            ci_level=s.mimicry_ci_level,
        )
        text = mimicry.select_dtypes("object").columns
        mimicry[text] = mimicry[text].fillna("").astype(str)  # h5ad-safe
        adata.uns[MIMICRY_KEY] = mimicry
    _record(adata, "score", cfg.section_dict("score"), time.perf_counter() - t0)
    return adata


def compare(adata: ad.AnnData, cfg: Config, ctx: StageContext | None = None) -> ad.AnnData:
    """Conditions compared with samples as replicates: abundance, pseudobulk DE, scores."""
    from . import tl
    from ._meta import add_warning

    c = cfg.compare
    t0 = time.perf_counter()
    if not c.enabled:
        pass
    elif c.condition_key not in adata.obs and c.condition_key == "condition":
        # no condition recorded at all (the default key): nothing to compare, not an error
        add_warning(
            adata,
            "compare: skipped: obs has no 'condition' column; set input.condition_key (or "
            "compare.condition_key) to the column that names each sample's condition",
        )
    else:
        tl.compare(
            adata,
            condition_key=c.condition_key,
            reference=c.reference,
            subject_key=c.subject_key,
            covariates=c.covariates,
            min_cells=c.min_cells,
            min_samples_per_group=c.min_samples_per_group,
            de=c.de,
            neutrophil_stages=cfg.axes.neutrophil_stages,
        )
    _record(adata, "compare", cfg.section_dict("compare"), time.perf_counter() - t0)
    return adata


def ligrec(adata: ad.AnnData, cfg: Config, ctx: StageContext | None = None) -> ad.AnnData:
    """Ligand-receptor interactions per condition (LIANA+), counted across samples.

    Its own stage, so that a changed ligand-receptor setting reruns this stage (and the
    report) only, never the condition tests and pseudobulk DE of ``compare``. Runs when
    ``ligrec.enabled`` and ``compare.enabled`` (no condition comparison: none)."""
    from . import tl

    lr = cfg.ligrec
    t0 = time.perf_counter()
    if lr.enabled and cfg.compare.enabled:
        tl.ligand_receptor(
            adata,
            condition_key=cfg.compare.condition_key,
            species=cfg.input.species,
            min_cells=lr.min_cells,
            max_cells=lr.max_cells,
            n_perms=lr.n_perms,
            alpha=lr.alpha,
            min_fraction=lr.min_fraction,
            seed=cfg.seed,
        )
    _record(adata, "ligrec", cfg.section_dict("ligrec"), time.perf_counter() - t0)
    return adata


def report(adata: ad.AnnData, cfg: Config, ctx: StageContext | None = None) -> dict[str, Any]:
    """Tables, figures and the HTML report of a run, written into ``ctx.out_dir``."""
    from . import pl
    from . import report as rep

    if ctx is None or ctx.out_dir is None:
        raise InputError("the report stage needs an output folder (StageContext.out_dir)")
    out = Path(ctx.out_dir)
    t0 = time.perf_counter()
    with pl.metrics_backend_default(cfg.report.integration_metrics):
        tables = rep.write_tables(adata, cfg, out / "tables")
        figures: list[Path] = []
        if cfg.report.figures:
            figures = pl.save_figures(
                adata, out / "figures", formats=tuple(cfg.report.formats), dpi=cfg.report.dpi
            )
    html = rep.write_report(
        adata,
        out,
        tables=tables,
        figures=figures,
        config=cfg.to_dict(),
        provenance=dict(ctx.provenance or {}),
    )
    _record(adata, "report", cfg.section_dict("report"), time.perf_counter() - t0)
    return {"tables": tables, "figures": figures, "report": html}


def model_checksums(cfg: Config) -> dict[str, str]:
    """SHA-256 of the user's models that annotate reads (CellTypist ``.pkl``, scANVI ``model.pt``).

    Part of the annotate stage's resume key, so replacing a model at the same path reruns
    annotation. A path that does not exist is left to annotate to report.
    """
    from ._utils import sha256_file

    a = cfg.annotate
    files = [Path(a.celltypist_model)] if a.celltypist_model else []
    if a.scanvi_reference:
        files.append(Path(a.scanvi_reference) / "model.pt")
    return {str(f): sha256_file(f) for f in files if f.is_file()}


# ------------------------------------------------------------------------ the registry

_MODEL_DIR = StageOption("--model-dir", "DIR", "where to save the scVI model", "model_dir")

#: Every stage, in run order. Adding a stage is one row here and one function above.
REGISTRY: tuple[Stage, ...] = (
    Stage("ingest", ingest, "source", ("input", "integrate.method"),
          "read one sample's counts into .h5ad"),
    Stage("qc", qc, "sample", ("qc", "seed", "input.species"),
          "per-sample QC: MAD thresholds, floors, doublets, ambient RNA"),
    Stage("merge", merge, "gather", ("normalize", "qc.min_cells_per_gene", "integrate.batch_key"),
          "merge per-sample .h5ad files, normalise, select HVGs"),
    Stage("integrate", integrate, "merged", ("integrate", "seed", "input.allow_non_counts"),
          "scVI integration (or the configured fallback)", options=(_MODEL_DIR,)),
    Stage("cluster", cluster, "merged", ("cluster", "seed"), "neighbours, leiden, UMAP"),
    Stage("annotate", annotate, "merged",
          ("annotate", "input.species", "integrate.accelerator", "seed"),
          "cell types and bone-metastasis populations", key_extra=model_checksums),
    Stage("score", score, "merged", ("score", "input.species", "seed"),
          "signature scores per cell"),
    Stage("compare", compare, "merged",
          ("compare", "axes.neutrophil_stages", "seed", "input.species"),
          "conditions compared with samples as replicates (abundance, DE, scores)"),
    Stage("ligrec", ligrec, "merged",
          ("ligrec", "compare.enabled", "compare.condition_key", "seed", "input.species"),
          "ligand-receptor interactions per condition (LIANA+), counted across samples"),
    Stage("report", report, "sink", ("",), "tables, figures and report.html"),
)  # fmt: skip

#: Stage names in run order.
STAGES: tuple[str, ...] = tuple(s.name for s in REGISTRY)
#: The stages that run once per sample.
SAMPLE_STAGES: tuple[str, ...] = tuple(s.name for s in REGISTRY if s.per_sample)
#: The config keys each stage reads (the registry's ``sections``); tests/test_config.py
#: checks the stage code against it.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {s.name: s.sections for s in REGISTRY}


def get_stage(name: str) -> Stage:
    """The registry row of stage ``name``."""
    for s in REGISTRY:
        if s.name == name:
            return s
    raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")


def stage_config(cfg: Config, stage: str) -> dict[str, Any]:
    """The part of ``cfg`` that ``stage`` reads, as a nested dict (loads back with defaults)."""
    full = cfg.to_dict()
    out: dict[str, Any] = {}
    for dotted in get_stage(stage).sections:
        if not dotted:
            return full
        parts = dotted.split(".")
        src: Any = full
        dst = out
        for part in parts[:-1]:
            src = src[part]
            dst = dst.setdefault(part, {})
        dst[parts[-1]] = src[parts[-1]]
    return out
