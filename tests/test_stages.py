"""The stage registry is the one list of stages: the runner, the CLI and Nextflow follow it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import bonemet as bm
from bonemet import _stages
from bonemet.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _subcommands() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices)


def test_every_stage_has_a_cli_command_and_a_config_slice() -> None:
    assert _stages.STAGES == tuple(s.name for s in _stages.REGISTRY)
    assert len(set(_stages.STAGES)) == len(_stages.STAGES)
    assert set(_stages.STAGES) <= _subcommands()
    assert set(_stages.STAGE_SECTIONS) == set(_stages.STAGES)
    cfg = bm.load_config()
    for name in _stages.STAGES:
        assert isinstance(_stages.stage_config(cfg, name), dict)
    # per-sample stages come first, then one gather, then merged stages, sinks last
    scopes = [s.scope for s in _stages.REGISTRY]
    assert scopes[0] == "source" and scopes.count("gather") == 1 and scopes[-1] == "sink"
    gather = scopes.index("gather")
    assert set(scopes[1:gather]) <= {"sample"} and "sample" not in scopes[gather:]


def _nf_processes() -> set[str]:
    wf = (ROOT / "pipeline" / "workflows" / "bonemet.nf").read_text()
    return set(re.findall(r"include\s*\{\s*([A-Z_]+)\s*\}", wf))


def test_nextflow_has_one_process_per_stage() -> None:
    """Nextflow cannot import Python: its processes and stub stage list must match the registry."""
    procs = _nf_processes()
    for name in _stages.STAGES:
        assert name.upper() in procs, f"pipeline/workflows/bonemet.nf lacks process {name.upper()}"
        module = ROOT / "pipeline" / "modules" / "local" / name / "main.nf"
        assert module.is_file(), module
        assert re.search(rf"process\s+{name.upper()}\s*\{{", module.read_text())
    stub = (ROOT / "pipeline" / "modules" / "local" / "make_config" / "main.nf").read_text()
    listed = re.search(r"for s in ([a-z_ ]+); do touch stages", stub)
    assert listed, "MAKE_CONFIG's stub no longer lists the stages"
    assert tuple(listed.group(1).split()) == _stages.STAGES


def test_unknown_stage_is_a_config_error() -> None:
    with pytest.raises(bm.ConfigError, match="unknown stage 'plot'"):
        _stages.get_stage("plot")


def test_a_merged_stage_runs_through_the_registry_call(tmp_path) -> None:
    """A registry row's call passes the context: integrate saves its model where asked."""
    adata = bm.datasets.simulate_bone_metastasis(n_cells=600, n_samples=2, species="mouse", seed=2)
    cfg = bm.load_config(
        {
            "integrate": {"method": "pca"},
            "normalize": {"n_top_genes": 200},
            "qc": {"doublets": False},
        }
    )
    merged = _stages.get_stage("merge")({"a": adata}, cfg)
    out = _stages.get_stage("integrate")(
        merged, cfg, _stages.StageContext(model_dir=tmp_path / "m")
    )
    assert "X_pca" in out.obsm or "X_scVI" in out.obsm
    assert out.uns["bonemet"]["timings"]["integrate"] >= 0


def test_merge_frees_the_samples_only_when_handed_over() -> None:
    """The runner hands its samples over (each sample would otherwise be held twice at the
    merge stage's peak); a caller's own dict is left as it was."""
    import gc
    import weakref

    cfg = bm.load_config({"normalize": {"n_top_genes": 100}})
    sim = bm.datasets.simulate_bone_metastasis(n_cells=400, n_samples=2, species="mouse", seed=3)
    samples = {s: sim[sim.obs["sample"] == s].copy() for s in sim.obs["sample"].unique()}
    del sim
    merge = _stages.get_stage("merge")
    kept = merge(samples, cfg)
    assert len(samples) == 2 and kept.n_obs == sum(a.n_obs for a in samples.values())
    refs = [weakref.ref(a) for a in samples.values()]
    handed = merge(samples, cfg, _stages.StageContext(consume_input=True))
    gc.collect()
    assert samples == {} and not any(r() is not None for r in refs)
    assert handed.n_obs == kept.n_obs and (handed.X != kept.X).nnz == 0
    listed = [kept[kept.obs["sample"] == s].copy() for s in kept.obs["sample"].cat.categories]
    merge(listed, cfg, _stages.StageContext(consume_input=True))  # the CLI's list of files
    assert listed == []


def test_a_ligrec_setting_reruns_ligrec_and_the_report_not_compare(tmp_path) -> None:
    """Ligand-receptor analysis is its own stage: its settings leave the DE results cached."""
    from bonemet.runner import Runner

    (tmp_path / "x.h5ad").write_bytes(b"counts")
    base = {"input": {"path": str(tmp_path / "x.h5ad")}, "output": {"dir": str(tmp_path / "o")}}
    before = Runner(base)._keys()
    after = Runner({**base, "ligrec": {"n_perms": 500, "alpha": 0.01}})._keys()
    assert [s for s in before if before[s] != after[s]] == ["ligrec", "report"]
    # a compare setting reruns compare and what follows it
    de = Runner({**base, "compare": {"de": False}})._keys()
    assert [s for s in before if before[s] != de[s]] == ["compare", "ligrec", "report"]
    assert _stages.STAGES.index("ligrec") == _stages.STAGES.index("compare") + 1
    with pytest.raises(bm.ConfigError, match="ligrec.n_perms"):
        bm.load_config({"compare": {"ligrec_n_perms": 50}})


def test_compare_stage_leaves_ligand_receptor_to_its_own_stage() -> None:
    a = bm.datasets.simulate_condition_design(n_per_group=2, cells_per_sample=200, seed=1)
    from bonemet import load_config

    on = load_config({"compare": {"de": False, "min_cells": 5}})
    assert on.ligrec.enabled  # ligand-receptor on, yet compare does not run it
    out = _stages.get_stage("compare")(a, on)
    assert "bonemet_compare" in out.uns and "bonemet_ligrec" not in out.uns
    cfg = load_config({"compare": {"de": False, "min_cells": 5}, "ligrec": {"enabled": False}})
    out = _stages.get_stage("ligrec")(out, cfg)
    assert "bonemet_ligrec" not in out.uns  # disabled
    assert out.uns["bonemet"]["parameters"]["ligrec"]["enabled"] is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_memory_returns_freed_small_allocations_to_the_os():
    """Between stages the runner hands freed memory back: glibc otherwise keeps the heap
    pages of many small arrays (each per-sample matrix) resident to the end of the run."""
    import os

    import numpy as np

    from bonemet._utils import release_memory

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    chunks = [np.ones(8_000) for _ in range(4_000)]  # 64 kB each, below the mmap threshold
    keep = np.ones(8_000)  # allocated last, so the freed pages are not at the heap's top
    held = rss()
    del chunks
    assert release_memory()
    # about 250 MB were freed; at least most of it has left the process
    assert held - rss() > 150 * 2**20
    assert keep.sum() == 8_000
