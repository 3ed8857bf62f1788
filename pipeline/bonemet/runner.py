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
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad

from . import _checkpoint, _stages
from ._errors import InputError
from ._logging import logger
from ._meta import bonemet_uns, warnings_of
from ._outdir import OutputLock, clean_parts, drop_stale, mark_stale
from ._stages import REGISTRY, StageContext, stage_config
from ._threads import set_threads
from ._utils import release_memory, sha256_file, write_h5ad, write_json
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
        Keep every stage's checkpoint, each merged stage's as a whole, uncompressed AnnData.
        Default: lean, gzip-compressed checkpoints: of the per-sample stages only the last
        (QC) is kept, so a changed QC setting reads the input again; the gather stage
        (merge) keeps its annotations and is run again from the QC checkpoint on resume,
        its matrices checked against a fingerprint; each later stage stores what it
        changed.
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
        self._prints: _checkpoint.Prints = {}
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
        if not self.keep_checkpoints:
            # lean runs keep the last per-sample checkpoint (the QC outputs) only: an
            # earlier per-sample stage (reading the input) is cheap to run again
            for earlier in REGISTRY[: [s.name for s in REGISTRY].index(stage)]:
                if earlier.checkpoint == "samples":
                    shutil.rmtree(self._ckpt_samples(earlier.name), ignore_errors=True)

    def _read_samples(self, stage: str) -> dict[str, ad.AnnData]:
        d = self._ckpt_samples(stage)
        names = json.loads((d / "samples.json").read_text())
        return {n: ad.read_h5ad(d / f"{n}.h5ad") for n in names}

    # A merged stage's checkpoint holds only what the stage changed (see _checkpoint: obs and
    # var, and the obsm/obsp/varm/uns keys whose content changed). The gather stage's holds
    # its annotations and a fingerprint of its matrices: reading runs it again on the QC
    # checkpoint (seconds) and checks the fingerprint. A later stage that replaces a matrix
    # writes the whole object (X left out when derivable from the counts); a run with
    # keep_checkpoints writes every stage's whole object as it is. Reading a checkpoint
    # applies the chain of deltas to the last whole one, which gives the object exactly as
    # it was.
    def _matrices(self, adata: ad.AnnData) -> tuple:
        return (id(adata.X), tuple((k, id(v)) for k, v in sorted(adata.layers.items())))

    def _write_merged(self, stage: _stages.Stage, adata: ad.AnnData) -> None:
        path = self._ckpt(stage.name)
        if self.keep_checkpoints:
            write_h5ad(adata, path, compression=self._compression)
            self._fp = self._matrices(adata)
        elif stage.scope == "gather":
            part, self._prints = _checkpoint.stub(adata)
            write_h5ad(part, path, compression=self._compression)
            self._fp = self._matrices(adata)
        elif self._matrices(adata) != self._fp:
            write_h5ad(_checkpoint.whole(adata), path, compression=self._compression)
            self._fp = self._matrices(adata)
            self._prints = _checkpoint.prints(adata)
        else:
            lean, self._prints = _checkpoint.delta(adata, self._prints)
            write_h5ad(lean, path, compression=self._compression)

    def _read_merged(self, name: str) -> ad.AnnData:
        chain = []
        for stage in REGISTRY[: [s.name for s in REGISTRY].index(name) + 1]:
            if stage.checkpoint == "h5ad":
                chain.append(stage.name)
        adata: ad.AnnData | None = None
        for stage_name in reversed(chain):  # the last whole checkpoint first
            part = ad.read_h5ad(self._ckpt(stage_name))
            if _checkpoint.is_stub(part):
                adata = self._rerun_gather(stage_name, part)
                break
            if _checkpoint.is_whole(part) or stage_name == chain[0]:
                adata = _checkpoint.restore(part)
                break
        assert adata is not None
        start = chain.index(stage_name) + 1
        for later in chain[start:]:
            _checkpoint.apply(adata, ad.read_h5ad(self._ckpt(later)))
        self._fp = self._matrices(adata)
        self._prints = _checkpoint.prints(adata)
        return adata

    def _rerun_gather(self, name: str, part: ad.AnnData) -> ad.AnnData:
        """The gather stage's object from its stub: the stage run again on the last per-sample
        checkpoint, its matrices checked against the stub's fingerprint."""
        i = [s.name for s in REGISTRY].index(name)
        source = next(s for s in reversed(REGISTRY[:i]) if s.checkpoint == "samples")
        ctx = StageContext(
            out_dir=self.out, model_dir=self.out / "model", provenance=None, consume_input=True
        )
        adata = REGISTRY[i](self._read_samples(source.name), self.cfg, ctx)
        _checkpoint.check_rerun(adata, part)
        _checkpoint.apply(adata, part)
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
        # the last stage whose key, and every earlier stage's key, is unchanged and whose
        # checkpoint is there (lean runs remove the checkpoint of the input stage)
        unchanged = 0
        while unchanged < len(REGISTRY) and (
            state.get(REGISTRY[unchanged].name) == keys[REGISTRY[unchanged].name]
        ):
            unchanged += 1
        done = next((i + 1 for i in reversed(range(unchanged)) if self._has_ckpt(REGISTRY[i])), 0)
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
                consume_input=True,  # the samples are not read again once merged
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
            # freed per-sample objects and a stage's temporaries back to the OS: without it the
            # resident size stays at the merge stage's high-water mark to the end of the run
            release_memory()
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
        "decontx-scanpy",
        "pydeseq2",
        "statsmodels",
        "liana",
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
