"""End to end through the real CLI: generated data, 1-epoch scVI, outputs, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import yaml

import bonemet as bm
from bonemet._resources import configs_dir

pytestmark = pytest.mark.e2e

BONEMET = [sys.executable, "-m", "bonemet.cli"]


def _config(tmp: Path, src: Path, out: Path, **extra) -> Path:
    cfg = yaml.safe_load((configs_dir() / "test.yaml").read_text())
    cfg["input"] = {
        "path": str(src),
        "sample_key": "sample",
        "label_key": "true_population",
        "condition_key": "condition",
    }
    cfg["output"] = {"dir": str(out)}
    for k, v in extra.items():
        cfg.setdefault(k, {}).update(v)
    p = tmp / f"{out.name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(scope="module")
def sim_h5ad(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sim")
    adata = bm.datasets.simulate_bone_metastasis(n_cells=2000, n_samples=2, species="mouse", seed=1)
    p = tmp / "sim.h5ad"
    adata.write_h5ad(p)
    return p


@pytest.fixture(scope="module")
def finished_run(sim_h5ad, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    out = tmp / "out"
    cfg = _config(tmp, sim_h5ad, out)
    t0 = time.perf_counter()
    res = subprocess.run([*BONEMET, "run", str(cfg), "-q"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, cfg, time.perf_counter() - t0


def test_outputs_follow_the_anndata_contract(finished_run, sim_h5ad):
    out, _, _ = finished_run
    adata = ad.read_h5ad(out / "bonemet.h5ad")
    src = ad.read_h5ad(sim_h5ad)
    # QC removed some cells (planted low-quality cells and doublets) but not most
    assert 0.6 * src.n_obs < adata.n_obs < src.n_obs
    counts = adata.layers["counts"]
    assert np.allclose(counts.data, np.round(counts.data))
    assert np.isclose(np.expm1(adata.X[:50].toarray()).sum(axis=1), 1e4, rtol=1e-3).all()
    for key in (
        "sample",
        "batch",
        "leiden",
        "cell_type",
        "population",
        "annotation_confidence",
        "reference_label",
        "doublet_score",
        "predicted_doublet",
        "qc_pct_mito",
        "qc_pct_hb",
    ):
        assert key in adata.obs, key
    for key in ("X_scVI", "X_umap", "X_pca"):
        assert key in adata.obsm, key
    assert adata.obsm["X_scVI"].shape == (adata.n_obs, 10)
    assert any(c.startswith("score_") for c in adata.obs)
    assert adata.obs_names.is_unique
    meta = adata.uns["bonemet"]
    assert meta["version"] == bm.__version__
    assert set(meta["timings"]) >= {
        "ingest",
        "qc",
        "merge",
        "integrate",
        "cluster",
        "annotate",
        "score",
    }


def test_tables_provenance_model_report(finished_run):
    out, _, _ = finished_run
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["bonemet_version"] == bm.__version__
    assert prov["device"] == "cpu"
    assert 1 <= prov["threads"] <= len(os.sched_getaffinity(0))
    assert set(prov["timings"]) >= {"ingest", "qc", "merge", "integrate", "cluster", "report"}
    assert all(len(v) == 64 for v in prov["inputs"].values())  # sha256
    assert prov["packages"]["scvi-tools"] and prov["packages"]["scanpy"]
    assert prov["config"]["integrate"]["max_epochs"] == 1
    qc = (out / "tables" / "qc_summary.csv").read_text()
    assert "n_before" in qc and "n_after" in qc
    assert (out / "tables" / "population_counts.csv").is_file()
    assert (out / "report.html").stat().st_size > 10_000
    import scvi

    adata = ad.read_h5ad(out / "bonemet.h5ad")
    hvg = adata[:, adata.var["highly_variable"]].copy()
    model = scvi.model.SCVI.load(str(out / "model"), adata=hvg)
    z = model.get_latent_representation(hvg)
    assert z.shape == adata.obsm["X_scVI"].shape
    # no temporary files left behind anywhere
    assert not list(out.rglob("*.part"))


def test_rerun_skips_every_stage(finished_run):
    out, cfg, first = finished_run
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    res = subprocess.run([*BONEMET, "run", str(cfg)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "every stage is up to date" in " ".join((res.stderr + res.stdout).split())
    # no stage ran: not one checkpoint, table, figure or result file was rewritten
    now = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert now == written
    # a changed cluster setting reruns cluster and what follows, not the earlier stages
    cfg_data = yaml.safe_load(Path(cfg).read_text())
    cfg_data["cluster"]["resolution"] = 0.5
    Path(cfg).write_text(yaml.safe_dump(cfg_data))
    res = subprocess.run([*BONEMET, "run", str(cfg), "-q"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["stages_skipped"] == ["ingest", "qc", "merge", "integrate"]
    assert prov["stages_run"] == ["cluster", "annotate", "score", "compare", "ligrec", "report"]


def test_killed_run_resumes_from_last_completed_stage(sim_h5ad, tmp_path):
    out = tmp_path / "killed"
    cfg = _config(tmp_path, sim_h5ad, out)
    proc = subprocess.Popen(
        [*BONEMET, "run", str(cfg), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    state = out / ".bonemet" / "state.json"
    deadline = time.time() + 600
    killed = False
    while time.time() < deadline and proc.poll() is None:
        try:
            if "integrate" in json.loads(state.read_text()):
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.wait()
    assert killed, "the run finished before it could be killed"
    assert not (out / "bonemet.h5ad").exists()
    res = subprocess.run([*BONEMET, "run", str(cfg), "-q"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["stages_skipped"][:4] == ["ingest", "qc", "merge", "integrate"]
    assert "integrate" not in prov["stages_run"]
    assert ad.read_h5ad(out / "bonemet.h5ad").n_obs > 0


def test_single_sample_run(tmp_path):
    adata = bm.datasets.simulate_bone_metastasis(n_cells=1200, n_samples=1, species="human", seed=3)
    src = tmp_path / "one.h5ad"
    adata.write_h5ad(src)
    out = tmp_path / "one"
    res = subprocess.run(
        [
            *BONEMET,
            "run",
            "--input",
            str(src),
            "--out",
            str(out),
            "--max-epochs",
            "1",
            "--accelerator",
            "cpu",
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    result = ad.read_h5ad(out / "bonemet.h5ad")
    assert result.obs["sample"].nunique() == 1
    assert "X_scVI" in result.obsm and "cell_type" in result.obs
    assert result.uns["bonemet"]["species"] == "human"


def test_non_integer_counts_refused_for_scvi(tmp_path, capsys):
    adata = bm.datasets.simulate_bone_metastasis(n_cells=600, n_samples=1, species="mouse", seed=4)
    adata.X = adata.X.astype(np.float32) * 0.37
    src = tmp_path / "lognorm.h5ad"
    adata.write_h5ad(src)
    out = tmp_path / "o"
    cfg = _config(tmp_path, src, out, input={"allow_non_counts": False})
    from bonemet.cli import main

    assert main(["run", str(cfg), "-q"]) != 0
    err = capsys.readouterr().err
    # warnings are on stderr too; the error itself is one line
    lines = [ln for ln in err.splitlines() if ln.startswith("bonemet: error:")]
    assert len(lines) == 1 and "count" in lines[0].lower() and "Traceback" not in err
    assert not (out / "bonemet.h5ad").exists()
