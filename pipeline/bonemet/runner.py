"""The resumable local runner behind ``bonemet run`` and :func:`bonemet.run`.

Each stage's result is checkpointed under ``OUT/.bonemet/`` with a key made of the
inputs' checksums, the stage's configuration, the previous stage's key and the bonemet
version. Re-running skips every stage whose key is unchanged, and a run killed mid-way
continues from the last completed stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad

from . import _stages
from ._errors import InputError
from ._logging import logger
from ._meta import bonemet_uns, warnings_of
from ._outdir import OutputLock, clean_parts, drop_stale, mark_stale
from ._stages import REGISTRY, StageContext, stage_config
from ._threads import set_threads
from ._utils import sha256_file, write_h5ad, write_json
from ._version import __version__
from .config import Config, config_to_yaml, load_config

__all__ = ["run", "Runner", "input_checksums"]


def input_checksums(cfg: Config) -> dict[str, str]:
    """SHA-256 of every input file (the samplesheet and the files it names)."""
    inp = cfg.input
    if inp.geo:
        return {"geo": f"{inp.geo}:{','.join(inp.samples or [])}"}
    if not inp.path:
        raise InputError(
            "no input given: set input.path (a file, 10x folder or samplesheet) or input.geo, "
            "or pass --input"
        )
    p = Path(inp.path)
    if not p.exists():
        raise InputError(f"input {str(p)!r} does not exist: check the path")
    sums = {str(p): sha256_file(p)}
    if p.is_file() and p.suffix.lower() in {".csv", ".tsv"}:
        from .io import read_samplesheet

        try:
            sheet = read_samplesheet(p)
        except InputError:
            sheet = None  # a count CSV, not a samplesheet
        if sheet is not None:
            for f in sheet["path"]:
                sums[str(f)] = sha256_file(f)
    return sums


class Runner:
    """Run every stage for one config, with checkpoints and resume.

    Parameters
    ----------
    config
        A :class:`~bonemet.config.Config`, a YAML path or a dict.
    resume
        Skip stages whose key is unchanged (default). ``False`` recomputes everything.
    keep_checkpoints
        Write every merged stage's checkpoint as a whole, uncompressed AnnData (default: lean,
        gzip-compressed checkpoints of what each stage changed, applied to the gather
        stage's whole one on resume).
    """

    def __init__(
        self,
        config: Config | str | os.PathLike | dict | None,
        *,
        resume: bool = True,
        on_stage: Callable[[str, str], None] | None = None,
        keep_checkpoints: bool = False,
    ):
        self.cfg = config if isinstance(config, Config) else load_config(config)
        self.out = Path(self.cfg.output.dir)
        self.state_dir = self.out / ".bonemet"
        self.resume = resume
        self.cfg_dict = self.cfg.to_dict()
        self.skipped: list[str] = []
        self.ran: list[str] = []
        self.timings: dict[str, float] = {}
        self.input_sums: dict[str, str] = {}
        self.threads: int | None = None
        self.keep_checkpoints = keep_checkpoints
        self._fp: tuple = ()
        # lean runs also compress their checkpoints (gzip, as bonemet.h5ad); whole ones not
        self._compression: str | None = None if keep_checkpoints else "gzip"
        self.on_stage = on_stage or (lambda stage, event: None)

    # -- keys and checkpoints -------------------------------------------------
    def _keys(self) -> dict[str, str]:
        # hashed once per run: the stage keys and provenance share the result
        self.input_sums = input_checksums(self.cfg)
        prev = json.dumps(self.input_sums, sort_keys=True)
        keys = {}
        for stage in REGISTRY:
            part: Any = stage_config(self.cfg, stage.name)
            if stage.key_extra is not None and (extra := stage.key_extra(self.cfg)):
                part = [part, extra]
            blob = json.dumps([__version__, stage.name, prev, part], sort_keys=True, default=str)
            prev = hashlib.sha256(blob.encode()).hexdigest()
            keys[stage.name] = prev
        return keys

    def _state_path(self) -> Path:
        return self.state_dir / "state.json"

    def _load_state(self) -> dict[str, str]:
        try:
            return json.loads(self._state_path().read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self, state: dict[str, str]) -> None:
        write_json(state, self._state_path())

    def _ckpt(self, stage: str) -> Path:
        return self.state_dir / f"{stage}.h5ad"

    def _ckpt_samples(self, stage: str) -> Path:
        return self.state_dir / stage

    def _write_samples(self, stage: str, samples: dict[str, ad.AnnData]) -> None:
        d = self._ckpt_samples(stage)
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.h5ad"):
            old.unlink()
        for name, a in samples.items():
            write_h5ad(a, d / f"{name}.h5ad", compression=self._compression)
        write_json(sorted(samples), d / "samples.json")

    def _read_samples(self, stage: str) -> dict[str, ad.AnnData]:
        d = self._ckpt_samples(stage)
        names = json.loads((d / "samples.json").read_text())
        return {n: ad.read_h5ad(d / f"{n}.h5ad") for n in names}

    # A merged stage's checkpoint holds only what the stage can change (obs, var, obsm, obsp,
    # varm, uns): the gather stage's checkpoint holds the matrices (X and layers), which later
    # stages read but do not replace. A stage that does replace a matrix, or a run with
    # keep_checkpoints, writes the whole object. Reading a checkpoint applies the chain of
    # lean checkpoints to the last whole one, which gives the object exactly as it was.
    def _matrices(self, adata: ad.AnnData) -> tuple:
        return (id(adata.X), tuple((k, id(v)) for k, v in sorted(adata.layers.items())))

    def _write_merged(self, stage: _stages.Stage, adata: ad.AnnData) -> None:
        whole = (
            self.keep_checkpoints or stage.scope == "gather" or self._matrices(adata) != self._fp
        )
        obj = adata if whole else _lean(adata)
        write_h5ad(obj, self._ckpt(stage.name), compression=self._compression)
        if whole:
            self._fp = self._matrices(adata)

    def _read_merged(self, name: str) -> ad.AnnData:
        chain = []
        for stage in REGISTRY[: [s.name for s in REGISTRY].index(name) + 1]:
            if stage.checkpoint == "h5ad":
                chain.append(stage.name)
        adata: ad.AnnData | None = None
        for stage_name in reversed(chain):  # the last whole checkpoint first
            part = ad.read_h5ad(self._ckpt(stage_name))
            if part.X is not None or stage_name == chain[0]:
                adata = part
                break
        assert adata is not None
        start = chain.index(stage_name) + 1
        for later in chain[start:]:
            _apply_lean(adata, ad.read_h5ad(self._ckpt(later)))
        self._fp = self._matrices(adata)
        return adata

    def _has_ckpt(self, stage: _stages.Stage) -> bool:
        if stage.checkpoint == "samples":
            return (self._ckpt_samples(stage.name) / "samples.json").is_file()
        if stage.checkpoint == "outputs":
            return (self.out / "report.html").is_file()
        return self._ckpt(stage.name).is_file()

    # -- running --------------------------------------------------------------
    def run(self) -> ad.AnnData:
        """Run (or resume) the pipeline; returns the final annotated AnnData.

        The run holds ``OUT/.bonemet/run.lock`` throughout (a second run into the same
        folder is refused) and first removes the temporary files of interrupted runs.
        """
        self.threads = set_threads(self.cfg.threads)
        if self.cfg.integrate.accelerator in ("gpu", "cuda"):  # refused before any work
            from .tl._scvi_fast import resolve_device

            resolve_device(self.cfg.integrate.accelerator)
        with OutputLock(self.out):
            clean_parts(self.out)
            return self._run()

    def _run(self) -> ad.AnnData:
        t_start = time.time()
        self.out.mkdir(parents=True, exist_ok=True)
        keys = self._keys()
        state = self._load_state() if self.resume else {}
        names = [s.name for s in REGISTRY]
        # the last stage whose key and checkpoint chain are intact
        done = 0
        for i, stage in enumerate(REGISTRY):
            if state.get(stage.name) == keys[stage.name] and self._has_ckpt(stage):
                done = i + 1
            else:
                break
        if done == len(REGISTRY) and (self.out / "bonemet.h5ad").is_file():
            logger.info("every stage is up to date in %s: nothing to do", self.out)
            self.skipped = names
            return ad.read_h5ad(self.out / "bonemet.h5ad")
        # a sink (the report) leaves files, not an h5ad: resume before the first one at the latest
        first_sink = next(i for i, s in enumerate(REGISTRY) if s.checkpoint == "outputs")
        resume_from = min(done, first_sink)
        samples: dict[str, ad.AnnData] | None = None
        adata: ad.AnnData | None = None
        while resume_from:  # an unreadable checkpoint (e.g. truncated) is recomputed
            last = REGISTRY[resume_from - 1]
            try:
                if last.checkpoint == "samples":
                    samples = self._read_samples(last.name)
                else:
                    adata = self._read_merged(last.name)
                break
            except Exception as e:  # noqa: BLE001 - h5py/anndata/json raise many types
                logger.warning(
                    "the %s checkpoint in %s cannot be read (%s): recomputing that stage",
                    last.name,
                    self.state_dir,
                    " ".join(f"{type(e).__name__}: {e}".split())[:200],
                )
                resume_from -= 1
        self.skipped = names[:resume_from]
        if self.skipped:
            logger.info("resuming: skipping %s (unchanged)", ", ".join(self.skipped))
        for name in names[resume_from:]:
            state.pop(name, None)
        self._save_state(state)
        mark_stale(self.out)  # the finished results no longer match: move them aside

        for stage in REGISTRY[resume_from:]:
            t0 = time.perf_counter()
            self.on_stage(stage.name, "start")
            ctx = StageContext(
                out_dir=self.out,
                model_dir=self.out / "model",
                provenance=self.provenance(adata, t_start) if stage.scope == "sink" else None,
            )
            if stage.scope == "source":
                samples = stage(None, self.cfg, ctx)
            elif stage.scope == "sample":
                assert samples is not None
                samples = {k: stage(v, self.cfg, ctx) for k, v in samples.items()}
            elif stage.scope == "gather":
                assert samples is not None
                adata, samples = stage(samples, self.cfg, ctx), None
            else:
                assert adata is not None
                result = stage(adata, self.cfg, ctx)
                if stage.scope == "merged":
                    adata = result
            if stage.checkpoint == "samples":
                assert samples is not None
                self._write_samples(stage.name, samples)
            elif stage.checkpoint == "h5ad":
                assert adata is not None
                self._write_merged(stage, adata)
            self.timings[stage.name] = round(time.perf_counter() - t0, 3)
            self.ran.append(stage.name)
            state[stage.name] = keys[stage.name]
            self._save_state(state)
            self.on_stage(stage.name, "end")
        assert adata is not None
        meta = bonemet_uns(adata)
        meta["timings"] = {**meta.get("timings", {}), **self.timings}
        write_h5ad(adata, self.out / "bonemet.h5ad")
        write_json(self.provenance(adata, t_start), self.out / "provenance.json")
        (self.out / "config.yaml").write_text(config_to_yaml(self.cfg))
        drop_stale(self.out)
        return adata

    def provenance(self, adata: ad.AnnData, t_start: float) -> dict[str, Any]:
        meta = bonemet_uns(adata, create=False)
        return {
            "bonemet_version": __version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_seconds": round(time.time() - t_start, 3),
            "stages_run": list(self.ran),
            "stages_skipped": list(self.skipped),
            "timings": {**dict(meta.get("timings", {})), **self.timings},
            "device": _device(meta),
            "threads": self.threads,
            "config": self.cfg_dict,
            "inputs": self.input_sums,
            "packages": package_versions(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "n_cells": int(adata.n_obs),
            "n_genes": int(adata.n_vars),
            "species": meta.get("species", ""),
            "warnings": warnings_of(adata),
        }


def _lean(adata: ad.AnnData) -> ad.AnnData:
    """``adata`` without its matrices (X and layers): what a merged stage may change."""
    return ad.AnnData(
        obs=adata.obs,
        var=adata.var,
        obsm=dict(adata.obsm),
        obsp=dict(adata.obsp),
        varm=dict(adata.varm),
        uns=dict(adata.uns),
    )


def _apply_lean(adata: ad.AnnData, lean: ad.AnnData) -> None:
    """Make ``adata``'s annotations those of a lean checkpoint (keys it lacks are removed)."""
    adata.obs = lean.obs
    adata.var = lean.var
    adata.uns = dict(lean.uns)
    for slot in ("obsm", "obsp", "varm"):
        mine, theirs = getattr(adata, slot), getattr(lean, slot)
        for key in list(mine):
            if key not in theirs:
                del mine[key]
        for key in theirs:
            mine[key] = theirs[key]


def _device(meta: dict[str, Any]) -> str:
    integ = meta.get("integrate", {})
    if isinstance(integ, dict) and integ.get("device"):
        return str(integ["device"])
    return "cpu"


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in (
        "bonemet",
        "scanpy",
        "anndata",
        "scvi-tools",
        "torch",
        "lightning",
        "numpy",
        "scipy",
        "pandas",
        "leidenalg",
        "igraph",
        "pynndescent",
        "decoupler",
        "gseapy",
        "harmonypy",
        "pydantic",
        "matplotlib",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def run(
    config: Config | str | os.PathLike | dict | None = None, *, resume: bool = True
) -> ad.AnnData:
    """Run the whole pipeline for ``config`` and return the annotated AnnData.

    Parameters
    ----------
    config
        A :class:`~bonemet.config.Config`, the path of a YAML config, or a dict of
        overrides of ``configs/default.yaml`` (e.g.
        ``{"input": {"path": "counts.h5ad", "sample_key": "sample"}, "output": {"dir": "out"}}``).
    resume
        Skip stages whose inputs and configuration are unchanged since the last run
        in the same output folder.

    Returns
    -------
    The final AnnData, also written to ``<output.dir>/bonemet.h5ad`` with tables,
    figures, ``report.html`` and ``provenance.json`` beside it.
    """
    return Runner(config, resume=resume).run()
