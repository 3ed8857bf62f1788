"""The Nextflow pipeline (main.nf), run with the real Nextflow.

``make test`` installs a pinned Nextflow into bin/nextflow first (``make nextflow``); these
tests are skipped only where neither bin/nextflow nor a ``nextflow`` on PATH exists and the
installer cannot run. Every run is offline (NXF_OFFLINE=true), in a temporary launch
folder with its own work dir.

One full ``-profile test`` run (generated data, 1 scVI epoch on CPU; the session fixture
``test_run`` of conftest.py) is shared by the tests that check its outputs, ``-resume`` and
the equality with ``bonemet run``, and by tests/test_container.py.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders import BAD_SHEETS, write_sheet  # tests/builders.py

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# what the test profile simulates (conf/test.config)
SIM = {"cells": "1500", "samples": "2", "species": "mouse", "seed": "0"}
# the test profile runs every task single-threaded; so does the reference `bonemet run`
ONE_THREAD = {
    k: "1"
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
}


def _find_nextflow() -> tuple[str | None, str]:
    local = ROOT / "bin" / "nextflow"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local), ""
    on_path = shutil.which("nextflow")
    if on_path:
        return on_path, ""
    if not (shutil.which("mvn") and shutil.which("java")):
        return None, "no bin/nextflow, no nextflow on PATH, and no mvn/java to run `make nextflow`"
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install_nextflow.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if r.returncode == 0 and local.is_file():
        return str(local), ""
    return None, f"`make nextflow` failed: {(r.stderr or r.stdout).strip()[-500:]}"


NEXTFLOW, WHY_NOT = _find_nextflow()
pytestmark = [
    pytest.mark.nextflow,
    pytest.mark.skipif(NEXTFLOW is None, reason=f"Nextflow unavailable: {WHY_NOT}"),
]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # `bonemet` for the tasks
    env["NXF_OFFLINE"] = "true"
    env["NXF_ANSI_LOG"] = "false"
    env["NXF_DISABLE_CHECK_LATEST"] = "true"
    env.setdefault("NXF_OPTS", "-Xms64m -Xmx1g")
    env.update(extra)
    return env


def nextflow(
    launch: Path, *args: str, timeout: float = 1500, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``nextflow run <repo> ARGS`` from ``launch`` with work dir ``launch/work``."""
    launch.mkdir(parents=True, exist_ok=True)
    cmd = [NEXTFLOW, "run", str(ROOT), "-ansi-log", "false", "-w", str(launch / "work"), *args]
    env = _env(**(extra_env or {}))
    r = subprocess.run(
        cmd, cwd=launch, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    r.log = r.stdout + r.stderr  # type: ignore[attr-defined]
    return r


def _fail_msg(r: subprocess.CompletedProcess, launch: Path) -> str:
    log = launch / ".nextflow.log"
    tail = log.read_text(errors="replace")[-4000:] if log.is_file() else ""
    return f"exit {r.returncode}\n--- output\n{r.log[-6000:]}\n--- .nextflow.log (tail)\n{tail}"


def _task_dirs(work: Path) -> list[Path]:
    if not work.is_dir():
        return []
    return [d for d in work.glob("??/*") if d.is_dir()]


def _latest_trace(outdir: Path) -> list[dict[str, str]]:
    traces = sorted(
        (outdir / "pipeline_info").glob("execution_trace_*.txt"), key=lambda p: p.stat().st_mtime
    )
    assert traces, f"no execution trace in {outdir / 'pipeline_info'}"
    with traces[-1].open() as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.mark.timeout(1800)
def test_test_profile_publishes_annotated_h5ad_and_report(test_run):
    import anndata as ad

    r, out, launch = test_run["result"], test_run["out"], test_run["launch"]
    assert r.returncode == 0, _fail_msg(r, launch)
    assert "Submitted process > BONEMET:MAKE_CONFIG" in r.log
    final = out / "bonemet.h5ad"
    assert final.is_file(), sorted(p.name for p in out.iterdir())
    adata = ad.read_h5ad(final)
    assert adata.n_obs > 500
    assert set(adata.obs["sample"].astype(str)) == {p.name for p in (out / "samples").iterdir()}
    assert len(set(adata.obs["sample"].astype(str))) == int(SIM["samples"])
    assert "counts" in adata.layers
    assert "leiden" in adata.obs and "X_umap" in adata.obsm
    assert "cell_type" in adata.obs and "population" in adata.obs
    assert any(c.startswith("score_") for c in adata.obs.columns)
    # published layout
    html = out / "report.html"
    assert html.is_file() and html.stat().st_size > 1000
    assert any((out / "tables").glob("*.csv"))
    for sample in adata.obs["sample"].cat.categories:
        assert (out / "samples" / sample / f"{sample}.qc.h5ad").is_file()
    info = out / "pipeline_info"
    assert (info / "config.yaml").is_file()
    versions = (info / "versions.yml").read_text()
    assert (
        '"BONEMET:INTEGRATE":' in versions and "bonemet: " in versions and "Nextflow:" in versions
    )
    for kind in ("execution_trace", "execution_timeline", "execution_report"):
        assert list(info.glob(f"{kind}_*")), f"no {kind} in {info}"
    # the config every stage used: test profile settings over configs/test.yaml
    import yaml

    cfg = yaml.safe_load((info / "config.yaml").read_text())
    assert cfg["integrate"]["max_epochs"] == 1
    assert cfg["integrate"]["accelerator"] == "cpu"
    rows = _latest_trace(out)
    assert {row["status"] for row in rows} == {"COMPLETED"}, rows
    assert sum(row["process"].endswith(":INGEST") for row in rows) == int(SIM["samples"])


@pytest.mark.timeout(600)
def test_resume_submits_no_task(test_run):
    launch, out = test_run["launch"], test_run["out"]
    assert test_run["result"].returncode == 0, "the first run failed (see the test above)"
    time.sleep(1.1)  # a new trace file name (timestamped to the second)
    r = nextflow(launch, "-profile", "test", "--outdir", str(out), "-resume")
    assert r.returncode == 0, _fail_msg(r, launch)
    assert "Submitted process" not in r.log, r.log
    assert "Cached process > BONEMET:REPORT" in r.log, r.log
    rows = _latest_trace(out)
    assert rows and {row["status"] for row in rows} == {"CACHED"}, rows
    assert (out / "bonemet.h5ad").is_file()


@pytest.mark.timeout(1200)
def test_same_cells_clusters_labels_as_bonemet_run(test_run, tmp_path):
    """Nextflow (one stage per task) and `bonemet run` (one process) agree exactly."""
    import anndata as ad

    out = test_run["out"]
    assert test_run["result"].returncode == 0, "the first run failed (see the test above)"
    bonemet = str(VENV_BIN / "bonemet") if (VENV_BIN / "bonemet").exists() else "bonemet"
    # the very files the Nextflow run ingested: SIMULATE's samplesheet in its task folder
    simulate = [row for row in _latest_trace(out) if row["process"].endswith(":SIMULATE")]
    assert len(simulate) == 1, simulate
    sheet = Path(simulate[0]["workdir"]) / "simulated" / "samplesheet.csv"
    assert sheet.is_file(), sheet
    env = _env(**ONE_THREAD)
    local = tmp_path / "local"
    r = subprocess.run(
        [
            bonemet,
            "run",
            str(out / "pipeline_info" / "config.yaml"),
            "--input",
            str(sheet),
            "--format",
            "samplesheet",
            "--out",
            str(local),
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1100,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    nf = ad.read_h5ad(out / "bonemet.h5ad")
    lo = ad.read_h5ad(local / "bonemet.h5ad")
    assert list(nf.obs_names) == list(lo.obs_names)
    assert list(nf.var_names) == list(lo.var_names)
    assert (nf.obs["leiden"].astype(str).values == lo.obs["leiden"].astype(str).values).all()
    for key in ("cell_type", "population"):
        if key in nf.obs or key in lo.obs:
            assert (nf.obs[key].astype(str).values == lo.obs[key].astype(str).values).all(), key


@pytest.mark.timeout(900)
def test_resume_reruns_only_the_stages_whose_settings_changed(test_run):
    """Each task gets its stage's slice of the config: a report setting re-runs the report only."""
    launch, out = test_run["launch"], test_run["out"]
    assert test_run["result"].returncode == 0, "the first run failed (see the test above)"
    time.sleep(1.1)
    r = nextflow(
        launch, "-profile", "test", "--outdir", str(out), "-resume", "--set", "report.dpi=100"
    )
    assert r.returncode == 0, _fail_msg(r, launch)
    rows = [(row["process"].split(":")[-1], row["status"]) for row in _latest_trace(out)]
    rerun = {name for name, st in rows if st != "CACHED"}
    assert rerun == {"MAKE_CONFIG", "REPORT"}, rows
    assert {name for name, _ in rows} >= {"INGEST", "QC", "MERGE", "INTEGRATE", "SCORE"}, rows
    import yaml

    assert (
        yaml.safe_load((out / "pipeline_info" / "config.yaml").read_text())["report"]["dpi"] == 100
    )


@pytest.mark.timeout(900)
def test_stub_run(tmp_path):
    """`-stub` runs the whole graph with each process's stub block: no analysis at all."""
    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = nextflow(tmp_path, "-profile", "test", "-stub", "--outdir", str(out), timeout=800)
    seconds = time.perf_counter() - t0
    assert r.returncode == 0, _fail_msg(r, tmp_path)
    for stage in (
        "MAKE_CONFIG",
        "SIMULATE",
        "MERGE",
        "INTEGRATE",
        "CLUSTER",
        "ANNOTATE",
        "SCORE",
        "COMPARE",
        "LIGREC",
        "REPORT",
    ):
        assert f"Submitted process > BONEMET:{stage}" in r.log, stage
    assert r.log.count("Submitted process > BONEMET:QC") == int(SIM["samples"])
    assert (out / "bonemet.h5ad").stat().st_size == 0  # touched by the stub, not computed
    assert (out / "report.html").is_file()
    assert (out / "pipeline_info" / "versions.yml").is_file()
    assert seconds < 600, f"the stub run took {seconds:.0f} s"


# what the Nextflow reader says about each of the shared bad sheets (tests/builders.py),
# which bonemet.io.read_samplesheet refuses too (tests/test_io.py)
BAD_SHEET_MESSAGES = [
    ["lacks the required column", "'path'"],
    ["row 2", "sample 'B'", "missing.h5ad", "does not exist"],
    ["row 3", "duplicate sample 'A'", "row 1"],
    ["row 1", "may contain only letters"],
    ["row 1", "format 'bam'"],
    ["row 1", "species 'rat'"],
    ["row 1", "sample column is empty"],
    ["lacks the required column", "'path'"],
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("sheet", "expected"),
    list(zip(BAD_SHEETS, BAD_SHEET_MESSAGES, strict=True)),
    ids=["missing-column", "missing-file", "duplicate-sample", "bad-sample-id", "bad-format",
         "bad-species", "empty-sample", "txt-is-tab-separated"],
)  # fmt: skip
def test_bad_samplesheet_stops_before_any_task(tmp_path, sheet, expected):
    path = write_sheet(tmp_path, *sheet)
    r = nextflow(tmp_path, "--input", str(path), "--outdir", str(tmp_path / "out"), timeout=280)
    assert r.returncode != 0, r.log
    for part in expected:
        assert part in r.log, (part, r.log)
    assert "Submitted process" not in r.log
    assert _task_dirs(tmp_path / "work") == []


@pytest.mark.timeout(300)
def test_input_and_outdir_are_checked(tmp_path):
    r = nextflow(
        tmp_path,
        "--input",
        str(tmp_path / "nope.csv"),
        "--outdir",
        str(tmp_path / "out"),
        timeout=280,
    )
    assert r.returncode != 0 and "does not exist" in r.log, r.log
    r = nextflow(tmp_path, "-profile", "test", timeout=280)
    assert r.returncode != 0 and "--outdir is required" in r.log, r.log
    assert _task_dirs(tmp_path / "work") == []
