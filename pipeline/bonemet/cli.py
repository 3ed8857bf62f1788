"""The ``bonemet`` command line.

``bonemet run`` runs every stage on one machine (resumable), ``bonemet demo`` does it on
generated data, and one command per stage (``ingest``, ``qc``, ``merge``, ``integrate``,
``cluster``, ``annotate``, ``score``, ``report``) is what Nextflow calls.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import BonemetError, ConfigError, InputError, one_line
from ._formats import FORMAT_ALIASES, FORMATS, INPUT_FORMATS
from ._version import __version__

if TYPE_CHECKING:
    from .config import Config

__all__ = ["main", "build_parser"]

EPILOG = """\
examples:
  bonemet demo --out results/demo
  bonemet run configs/my_study.yaml
  bonemet run --input counts.h5ad --sample-key sample --label-key cell_type --out results/x
  bonemet run --input samplesheet.csv --out results/x --max-epochs 50
  bonemet fetch-geo GSE143791 --out data/GSE143791 --dry-run
  bonemet reference --input atlas.h5ad --label-key cell_type --out refs/atlas

Every command takes --config CFG.yaml (a partial config over configs/default.yaml)
and --quiet. Documentation: README.md.
"""


def _add_common(p: argparse.ArgumentParser, *, config: bool = True) -> None:
    if config:
        p.add_argument("--config", metavar="CFG.yaml", help="run config (YAML) over the defaults")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for BLAS, numba and torch (default: $BONEMET_THREADS, else the "
        "cores this process may use)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or log lines")


def _add_stage(
    sub: Any, name: str, help_: str, *, multi_input: bool = False
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_)
    if multi_input:
        p.add_argument(
            "--input", nargs="+", required=True, metavar="H5AD", help="per-sample .h5ad files"
        )
    else:
        p.add_argument("--input", required=True, metavar="H5AD", help="the previous stage's .h5ad")
    p.add_argument(
        "--output", required=True, metavar="H5AD", help="where to write this stage's .h5ad"
    )
    _add_common(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bonemet",
        description="Single-cell RNA-seq pipeline for bone-metastasis research: "
        "ingest -> QC -> scVI integration -> clusters -> annotation of bone-metastasis "
        "populations -> signature scores -> figures, tables and an HTML report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bonemet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on generated bone-metastasis data",
        description="Generate a bone-metastasis data set (negative-binomial counts with known "
        "populations, batch effects, ambient RNA and doublets) and run every stage on it.",
    )
    p.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    p.add_argument("--cells", type=int, default=20000, help="number of cells (default 20000)")
    p.add_argument(
        "--samples",
        type=int,
        default=6,
        help="number of samples, half bone_met and half control (default 6: 3 vs 3)",
    )
    p.add_argument("--species", choices=["human", "mouse"], default="mouse")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument(
        "--max-epochs", type=int, default=None, help="scVI epochs (default: demo config)"
    )
    p.add_argument("--no-resume", action="store_true", help="recompute every stage")
    p.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep every stage's whole AnnData in OUT/.bonemet (default: lean checkpoints)",
    )
    _add_common(p)

    p = sub.add_parser(
        "run",
        help="run every stage on one machine (resumable)",
        description="Run every stage for a config file, or for --input with flags. Re-running in "
        "the same --out skips stages whose inputs and settings are unchanged.",
    )
    p.add_argument("config_file", nargs="?", metavar="CONFIG.yaml", help="run config")
    p.add_argument(
        "--input",
        metavar="PATH",
        help=".h5ad, 10x folder or .h5, count CSV/TSV, or samplesheet CSV",
    )
    p.add_argument("--sample-key", metavar="COL", help="obs column naming the sample (.h5ad input)")
    p.add_argument(
        "--label-key",
        metavar="COL",
        help="obs column with reference labels (kept as reference_label)",
    )
    p.add_argument(
        "--batch-key", metavar="COL", help="obs column naming the batch if not the sample"
    )
    p.add_argument("--species", choices=["auto", "human", "mouse"])
    p.add_argument("--format", choices=INPUT_FORMATS)
    p.add_argument("--geo", metavar="GSE", help="a GEO series accession instead of --input")
    p.add_argument("--out", metavar="DIR", help="output folder")
    p.add_argument("--max-epochs", type=int, help="scVI epochs (default: scvi-tools' heuristic)")
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu"])
    p.add_argument("--seed", type=int)
    p.add_argument("--no-resume", action="store_true", help="recompute every stage")
    p.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep every stage's whole AnnData in OUT/.bonemet (default: lean checkpoints)",
    )
    _add_common(p, config=False)

    p = sub.add_parser(
        "simulate",
        help="write generated per-sample .h5ad files and a samplesheet",
        description="Generate bone-metastasis data and write one .h5ad per sample plus "
        "DIR/samplesheet.csv (used by the Nextflow test profile).",
    )
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--cells", type=int, default=2000)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--species", choices=["human", "mouse"], default="mouse")
    p.add_argument("--seed", type=int, default=0)
    _add_common(p, config=False)

    p = sub.add_parser(
        "config",
        help="write a merged, validated config (defaults + file + --set)",
        description="Merge configs/default.yaml, an optional --config file and --set overrides; "
        "validate; write the result (Nextflow passes this file to every stage).",
    )
    p.add_argument("--output", required=True, metavar="CFG.yaml")
    p.add_argument(
        "--stage-dir",
        metavar="DIR",
        help="also write DIR/<stage>.yaml with only the keys each stage reads (Nextflow gives "
        "each task its slice, so -resume re-runs only stages whose own keys changed)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override (repeatable)",
    )
    _add_common(p)

    p = sub.add_parser(
        "ingest",
        help="read one sample's counts into .h5ad",
        description="Read one sample (any supported format) into a raw-count .h5ad.",
    )
    p.add_argument(
        "--input", required=True, metavar="PATH", help="counts: .h5ad, 10x folder or .h5, CSV/TSV"
    )
    p.add_argument(
        "--sample", required=True, metavar="ID", help="sample id (letters, digits, . _ -)"
    )
    p.add_argument(
        "--format",
        default="auto",
        help=f"{', '.join(FORMATS)} (aliases: "
        f"{', '.join(a for a in FORMAT_ALIASES if a not in FORMATS)}); default auto",
    )
    p.add_argument("--batch", metavar="B")
    p.add_argument("--condition", metavar="C")
    p.add_argument("--subject", metavar="S", help="the animal or patient of the sample")
    p.add_argument("--tissue", metavar="T", help="the sample's tissue (e.g. bone)")
    p.add_argument("--species", choices=["auto", "human", "mouse"])
    p.add_argument("--output", required=True, metavar="H5AD")
    _add_common(p)

    from ._stages import REGISTRY

    for stage in REGISTRY:
        if stage.scope == "source":
            continue  # ingest: its own parser above (a raw file and a sample id)
        if stage.scope == "sink":
            p = sub.add_parser(stage.name, help=stage.help, description=stage.help)
            p.add_argument("--input", required=True, metavar="H5AD")
            p.add_argument("--output", required=True, metavar="DIR")
            _add_common(p)
            continue
        p = _add_stage(sub, stage.name, stage.help, multi_input=stage.scope == "gather")
        for opt in stage.options:
            p.add_argument(opt.flag, metavar=opt.metavar, help=opt.help)

    p = sub.add_parser(
        "reference",
        help="train a scANVI reference from labelled cells (for annotate.scanvi_reference)",
        description="Train scVI then scANVI (scArches-ready: layer norm, covariates encoded) on "
        "a labelled .h5ad with raw counts and save the model to DIR. Set "
        "annotate.scanvi_reference: DIR to map later runs onto it.",
    )
    p.add_argument("--input", required=True, metavar="H5AD", help="labelled cells, raw counts")
    p.add_argument("--label-key", required=True, metavar="COL", help="obs column with labels")
    p.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    p.add_argument("--batch-key", default="sample", metavar="COL", help="default: sample")
    p.add_argument("--layer", default="counts", metavar="L", help="counts layer (X if absent)")
    p.add_argument("--n-top-genes", type=int, default=2000, metavar="N")
    p.add_argument("--max-epochs", type=int, metavar="N", help="scVI epochs (default: heuristic)")
    p.add_argument("--scanvi-max-epochs", type=int, default=20, metavar="N")
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    _add_common(p, config=False)

    p = sub.add_parser(
        "fetch-geo",
        help="download a GEO series into per-sample .h5ad files",
        description="Read a GEO series' SOFT file, download its supplementary count files and "
        "write one .h5ad per sample plus a samplesheet.",
    )
    p.add_argument("accession", metavar="GSE")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--samples", metavar="GSM1,GSM2", help="only these samples")
    p.add_argument(
        "--geo-base-url", metavar="URL", help="root of every download (default GEO's HTTPS)"
    )
    p.add_argument("--cache-dir", metavar="DIR", help="download cache (default: user cache)")
    p.add_argument(
        "--dry-run", action="store_true", help="list what would be downloaded and its size"
    )
    p.add_argument(
        "--species", choices=["human", "mouse"], help="keep only samples of this organism"
    )
    p.add_argument("--include-title", metavar="REGEX", help="keep only samples whose title matches")
    p.add_argument("--exclude-title", metavar="REGEX", help="drop samples whose title matches")
    p.add_argument(
        "--annotation",
        action="append",
        metavar="FILE",
        help="series file with cell annotations to join (repeatable)",
    )
    p.add_argument(
        "--label-key", metavar="COL", help="annotation column kept as obs['reference_label']"
    )
    _add_common(p)
    return parser


def _parse_value(v: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(v)
    except yaml.YAMLError:
        return v


def _set_overrides(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        key, value = item.split("=", 1)
        cur = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = _parse_value(value)
    return out


def _load(args: argparse.Namespace, overrides: dict[str, Any] | None = None):
    """The config of a per-stage command, with its thread cap applied."""
    from ._threads import set_threads
    from .config import load_config

    over = dict(overrides or {})
    if getattr(args, "threads", None) is not None:
        over["threads"] = args.threads
    cfg = load_config(getattr(args, "config", None), overrides=over or None)
    set_threads(cfg.threads)
    return cfg


def _read(path: str):
    import anndata as ad

    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"input {path!r} does not exist: give the .h5ad written by the previous stage"
        )
    try:
        adata = ad.read_h5ad(p)
    except Exception as e:  # noqa: BLE001 - h5py/anndata raise many types
        raise InputError(f"cannot read {path!r} as .h5ad ({type(e).__name__}: {e})") from None
    from ._checkpoint import MARK

    if MARK in adata.uns:
        # a lean checkpoint holds only what its stage added: it is not a stage's input
        raise InputError(
            f"{path!r} is a lean checkpoint of `bonemet run` (it holds only what its stage "
            "added, not the whole object): give a stage's full output (bonemet.h5ad, or "
            "the .h5ad a per-stage command wrote), or continue the run with `bonemet run` "
            "(it resumes from its checkpoints)"
        )
    return adata


def demo_config(
    src: str | Path,
    out: str | Path,
    *,
    species: str,
    seed: int = 0,
    integrate: dict[str, Any] | None = None,
    base: str | Path | None = None,
    batched: bool = False,
) -> Config:
    """The run config of ``bonemet demo`` for the simulated ``src`` (benchmarks use it too).

    ``batched``: the data has an ``obs["batch"]`` that crosses condition (see
    :func:`demo_design`); it becomes the samples' batch and a covariate of ``compare``.
    """
    from ._resources import configs_dir
    from .config import load_config

    inp = {
        "path": str(src),
        "sample_key": "sample",
        "label_key": "true_population",
        "condition_key": "condition",
        "species": species,
    }
    over: dict[str, Any] = {
        "input": inp,
        "output": {"dir": str(out)},
        "seed": seed,
        "integrate": integrate or {},
    }
    if batched:
        inp["batch_key"] = "batch"
        over["compare"] = {"covariates": ["batch"]}
    return load_config(base or configs_dir() / "demo.yaml", overrides=over)


def demo_design(n_samples: int) -> dict[str, Any]:
    """The simulator options of ``bonemet demo`` for ``n_samples`` samples.

    Two processing batches that cross condition once each condition has two samples or
    more (so condition is not confounded with batch), and 30 planted DE genes in classical
    monocytes (half up, half down, log2 fold change 1.5 in bone_met).
    """
    n_met = (n_samples + 1) // 2
    design: dict[str, Any] = {"de_population": "Classical monocyte", "de_genes": 30}
    if min(n_met, n_samples - n_met) >= 2:
        design["n_batches"] = 2
    return design


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import datasets
    from ._utils import write_h5ad
    from .runner import Runner

    out = Path(args.out)
    integ: dict[str, Any] = {"accelerator": args.accelerator}
    if args.max_epochs:
        integ["max_epochs"] = args.max_epochs
    design = demo_design(args.samples)
    tag = "_b2" if "n_batches" in design else ""
    src = (
        out
        / "input"
        / f"simulated_{args.species}_{args.cells}_{args.samples}_{args.seed}{tag}_de.h5ad"
    )
    cfg = demo_config(
        src,
        out,
        species=args.species,
        seed=args.seed,
        integrate=integ,
        base=args.config,
        batched="n_batches" in design,
    )
    if args.threads is not None:
        cfg.threads = args.threads
    if not src.is_file():
        adata = datasets.simulate_bone_metastasis(
            n_cells=args.cells,
            n_samples=args.samples,
            species=args.species,
            seed=args.seed,
            **design,
        )
        write_h5ad(adata, src)
    Runner(cfg, resume=not args.no_resume, keep_checkpoints=args.keep_checkpoints).run()
    _done(out)
    return 0


def _done(out: Path) -> None:
    from ._logging import is_quiet

    if not is_quiet():
        print(
            f"bonemet: results in {out}/ (bonemet.h5ad, tables/, figures/, report.html, provenance.json)"
        )


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .runner import Runner

    over: dict[str, Any] = {}
    inp = {
        k: v
        for k, v in {
            "path": args.input,
            "sample_key": args.sample_key,
            "label_key": args.label_key,
            "batch_key": args.batch_key,
            "species": args.species,
            "format": args.format,
            "geo": args.geo,
        }.items()
        if v is not None
    }
    if inp:
        over["input"] = inp
    if args.batch_key:
        over.setdefault("integrate", {})["batch_key"] = "batch"
    if args.out:
        over["output"] = {"dir": args.out}
    if args.max_epochs is not None:
        over.setdefault("integrate", {})["max_epochs"] = args.max_epochs
    if args.accelerator:
        over.setdefault("integrate", {})["accelerator"] = args.accelerator
    if args.seed is not None:
        over["seed"] = args.seed
    if args.threads is not None:
        over["threads"] = args.threads
    if not args.config_file and not args.input and not args.geo:
        raise InputError("give a CONFIG.yaml, or --input PATH (or --geo GSE) with --out DIR")
    if not args.config_file and not args.out:
        raise InputError("--out DIR is required with --input")
    cfg = load_config(args.config_file, overrides=over)
    Runner(cfg, resume=not args.no_resume, keep_checkpoints=args.keep_checkpoints).run()
    _done(Path(cfg.output.dir))
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    import pandas as pd

    from . import datasets
    from ._utils import write_csv, write_h5ad

    out = Path(args.out)
    adata = datasets.simulate_bone_metastasis(
        n_cells=args.cells, n_samples=args.samples, species=args.species, seed=args.seed
    )
    rows = []
    for s in (
        adata.obs["sample"].cat.categories
        if hasattr(adata.obs["sample"], "cat")
        else sorted(set(adata.obs["sample"]))
    ):
        sub = adata[adata.obs["sample"] == s].copy()
        sub.obs_names = [n[len(f"{s}_") :] if n.startswith(f"{s}_") else n for n in sub.obs_names]
        path = write_h5ad(sub, out / f"{s}.h5ad")
        cond = str(sub.obs["condition"].iloc[0]) if "condition" in sub.obs else ""
        rows.append({"sample": s, "path": str(path.resolve()), "format": "h5ad", "condition": cond})
    write_csv(pd.DataFrame(rows), out / "samplesheet.csv", index=False)
    return 0


def _cmd_reference(args: argparse.Namespace) -> int:
    from . import tl
    from ._threads import set_threads

    set_threads(args.threads)
    adata = _read(args.input)
    out = tl.build_scanvi_reference(
        adata,
        args.out,
        label_key=args.label_key,
        batch_key=args.batch_key,
        layer=args.layer,
        n_top_genes=args.n_top_genes,
        max_epochs=args.max_epochs,
        scanvi_max_epochs=args.scanvi_max_epochs,
        accelerator=args.accelerator,
        seed=args.seed,
    )
    print(out)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from ._utils import atomic_path
    from .config import config_to_yaml

    cfg = _load(args, _set_overrides(args.set))
    with atomic_path(args.output) as tmp:
        tmp.write_text(config_to_yaml(cfg))
    if args.stage_dir:
        import yaml

        from ._stages import STAGES, stage_config

        out = Path(args.stage_dir)
        out.mkdir(parents=True, exist_ok=True)
        for stage in STAGES:
            with atomic_path(out / f"{stage}.yaml") as tmp:
                tmp.write_text(yaml.safe_dump(stage_config(cfg, stage), sort_keys=False))
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    import tempfile

    import pandas as pd

    from . import _stages
    from ._utils import check_sample_id, write_h5ad

    sample = check_sample_id(args.sample, where="--sample")
    over = {"input": {"species": args.species}} if args.species else None
    cfg = _load(args, over)
    src = Path(args.input)
    if not src.exists():
        raise InputError(f"input {args.input!r} does not exist: check the samplesheet path")
    row = {"sample": sample, "path": str(src.resolve()), "format": args.format}
    if args.batch:
        row["batch"] = args.batch
    if args.condition:
        row["condition"] = args.condition
    for col in ("subject", "tissue"):
        if getattr(args, col, None):
            row[col] = getattr(args, col)
    # One-row samplesheet: the same code path as a local run of a whole samplesheet.
    with tempfile.TemporaryDirectory() as tmp:
        sheet = Path(tmp) / "samplesheet.csv"
        pd.DataFrame([row]).to_csv(sheet, index=False)
        cfg.input.format = "samplesheet"
        samples = _stages.ingest(str(sheet), cfg)
    write_h5ad(samples[sample], args.output)
    return 0


def _context(stage: Any, args: argparse.Namespace, **fields: Any):
    from ._stages import StageContext

    for opt in stage.options:
        value = getattr(args, opt.flag.lstrip("-").replace("-", "_"), None)
        if value is not None:
            fields[opt.context_field] = Path(value)
    return StageContext(**fields)


def _stage_cmd(name: str):
    """``bonemet <stage> --input ... --output ...`` for a registry stage (what Nextflow calls)."""

    def cmd(args: argparse.Namespace) -> int:
        from ._stages import get_stage
        from ._utils import write_h5ad

        stage = get_stage(name)
        cfg = _load(args)
        if stage.scope == "gather":
            # the list is this command's own: the samples are freed once concatenated
            ctx = _context(stage, args, consume_input=True)
            adata = stage([_read(p) for p in args.input], cfg, ctx)
        elif stage.scope == "sink":
            out = Path(args.output)
            adata = _read(args.input)
            stage(adata, cfg, _context(stage, args, out_dir=out))
            write_h5ad(adata, out / "bonemet.h5ad")
            return 0
        else:
            adata = stage(_read(args.input), cfg, _context(stage, args))
        write_h5ad(adata, args.output)
        return 0

    return cmd


def _cmd_fetch_geo(args: argparse.Namespace) -> int:
    import json

    from . import io

    over: dict[str, Any] = {}
    for key, value in {
        "geo_base_url": args.geo_base_url,
        "cache_dir": args.cache_dir,
        "species": args.species,
        "geo_include_title": args.include_title,
        "geo_exclude_title": args.exclude_title,
        "geo_annotation": args.annotation,
        "label_key": args.label_key,
    }.items():
        if value is not None:
            over[key] = value
    cfg = _load(args, {"input": over} if over else None)
    inp = cfg.input
    samples = [s.strip() for s in args.samples.split(",") if s.strip()] if args.samples else None
    summary = io.fetch_geo(
        args.accession,
        out=args.out,
        base_url=inp.geo_base_url,
        cache_dir=inp.cache_dir,
        samples=samples or inp.samples,
        dry_run=args.dry_run,
        include_title=inp.geo_include_title,
        exclude_title=inp.geo_exclude_title,
        species=None if inp.species == "auto" else inp.species,
        annotation=inp.geo_annotation,
        label_key=inp.label_key,
    )
    if args.dry_run or not args.quiet:
        print(json.dumps(summary, indent=2, default=str))
    return 0


def _commands() -> dict[str, Any]:
    from ._stages import REGISTRY

    cmds: dict[str, Any] = {
        "demo": _cmd_demo,
        "run": _cmd_run,
        "simulate": _cmd_simulate,
        "config": _cmd_config,
        "ingest": _cmd_ingest,
    }
    cmds.update({s.name: _stage_cmd(s.name) for s in REGISTRY if s.scope != "source"})
    cmds.update({"fetch-geo": _cmd_fetch_geo, "reference": _cmd_reference})
    return cmds


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bonemet`` command. Returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from ._logging import setup_cli_logging

    setup_cli_logging(quiet=getattr(args, "quiet", False))
    try:
        return _commands()[args.command](args)
    except (InputError, ConfigError) as e:
        print(f"bonemet: error: {one_line(e)}", file=sys.stderr)
        return 2
    except BonemetError as e:
        print(f"bonemet: error: {one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"bonemet: error: {_os_error(e)}", file=sys.stderr)
        _exit_if_hdf5_is_stuck(e)
        return 1
    except KeyboardInterrupt:
        print("bonemet: interrupted", file=sys.stderr)
        return 130


def _exit_if_hdf5_is_stuck(e: OSError) -> None:
    """Exit at once after a write failed for lack of space, when HDF5 still holds files.

    HDF5 cannot close a file whose writes fail (it retries them), and closing the library
    at interpreter exit then crashes. The partial file is already removed, so nothing is
    lost by skipping that teardown.
    """
    import errno
    import os

    h5py = sys.modules.get("h5py")
    if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) and h5py is not None:
        if h5py.h5f.get_obj_count() > 0:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)


def _os_error(e: OSError) -> str:
    """One line for an operating-system error: what failed, on which path, what to do."""
    import errno
    import os
    import re

    code = e.errno
    if code is None and (m := re.search(r"errno = (\d+)", str(e))):
        code = int(m.group(1))  # h5py puts the C errno into its message
    hints = {
        errno.EACCES: "check the folder's permissions, or choose another output folder",
        errno.EPERM: "check the folder's permissions, or choose another output folder",
        errno.EROFS: "the file system is read-only: choose another output folder",
        errno.ENOSPC: "no space left on the device: free some space or choose another folder",
        errno.EDQUOT: "the disk quota is used up: free some space or choose another folder",
        errno.EFBIG: "a file hit the file size limit (ulimit -f) or the disk is full: raise "
        "the limit or free some space",
        errno.EISDIR: "give the path of a file, not of a folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
        errno.EEXIST: "a file of that name exists where a folder is needed: choose another path",
    }
    what = os.strerror(code) if code else one_line(e)
    # a rename names its destination second: that is the path the user gave
    name = getattr(e, "filename2", None) or getattr(e, "filename", None)
    where = f": {name}" if name else ""
    hint = hints.get(code or -1, "")
    return f"{what}{where}" + (f" ({hint})" if hint else "")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
