"""Faults a user runs into: bad input, interrupts, concurrent runs, full or read-only disks.

Each case runs the real ``bonemet`` command in a subprocess and checks what the user sees:
the exit code, one ``bonemet: error:`` line on stderr and no traceback, no output that looks
finished, and input files left byte for byte as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from conftest import simulate_counts

import bonemet as bm
from bonemet._resources import configs_dir

# the faults are tried through the real CLI, most on a whole run: the e2e tier
pytestmark = pytest.mark.e2e

BONEMET = [sys.executable, "-m", "bonemet.cli"]
FINAL_OUTPUTS = ("bonemet.h5ad", "report.html", "provenance.json", "config.yaml", "tables")


def _cli(*args: str, timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*BONEMET, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw
    )


def _error_line(res: subprocess.CompletedProcess) -> str:
    """The single ``bonemet: error:`` line of stderr (fails on a traceback or several)."""
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("bonemet: error:")]
    assert len(lines) == 1, res.stderr[-3000:]
    return lines[0]


def _sha(paths: list[Path]) -> dict[str, str]:
    out = {}
    for p in paths:
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _counts_csv(path: Path, adata: ad.AnnData) -> Path:
    """Write ``adata`` as a genes x cells CSV (the layout of most count tables in papers)."""
    df = pd.DataFrame(adata.X.toarray().T, index=adata.var_names, columns=adata.obs_names)
    df.to_csv(path, float_format="%.6g")
    return path


def _config(tmp: Path, src: Path, out: Path, **extra: dict) -> Path:
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
def small(tmp_path_factory) -> Path:
    """A folder of small inputs: human and mouse count CSVs (300 cells x 400 genes)."""
    d = tmp_path_factory.mktemp("inputs")
    _counts_csv(d / "human.csv", simulate_counts(300, 400, species="human", seed=0))
    _counts_csv(d / "mouse.csv", simulate_counts(300, 400, species="mouse", seed=1))
    return d


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """One finished ``bonemet run`` (1,200 generated cells, 2 samples): (out, config, input)."""
    tmp = tmp_path_factory.mktemp("run")
    adata = bm.datasets.simulate_bone_metastasis(n_cells=1200, n_samples=2, species="mouse", seed=1)
    src = tmp / "sim.h5ad"
    adata.write_h5ad(src)
    out = tmp / "out"
    cfg = _config(tmp, src, out)
    res = _cli("run", cfg, "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    return out, cfg, src


def _copy_run(finished_run, tmp: Path, **extra: dict) -> tuple[Path, Path]:
    """A copy of the finished run's folder with its own config (so tests can change it)."""
    out0, _, src = finished_run
    out = tmp / "copy"
    shutil.copytree(out0, out, symlinks=True)
    return out, _config(tmp, src, out, **extra)


def _tables(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "tables").glob("*.csv"))}


# ----------------------------------------------------------------------------- item 1


def test_qc_of_an_h5ad_that_already_holds_warnings(small, tmp_path):
    """Non-count input records a warning at ingest; QC of the written .h5ad adds more."""
    a = simulate_counts(300, 400, species="human", seed=0)
    x = a.X.toarray()
    lg = np.log1p(x / x.sum(1, keepdims=True) * 1e4)
    src = _counts_csv(tmp_path / "log1p.csv", ad.AnnData(sp.csr_matrix(lg), a.obs, a.var))
    res = _cli("ingest", "--input", src, "--sample", "lg", "--output", tmp_path / "lg.h5ad", "-q")
    assert res.returncode == 0, res.stderr[-2000:]
    res = _cli("qc", "--input", tmp_path / "lg.h5ad", "--output", tmp_path / "lg.qc.h5ad", "-q")
    assert res.returncode == 0, res.stderr[-2000:]
    warns = list(ad.read_h5ad(tmp_path / "lg.qc.h5ad").uns["bonemet"]["warnings"])
    assert any("not raw counts" in str(w) for w in warns)
    assert any("doublet" in str(w) for w in warns)  # skipped on non-count input, said so


# ----------------------------------------------------------------------------- item 2


def test_report_tables_are_the_same_whichever_path_wrote_them(finished_run, tmp_path):
    out, cfg, _ = finished_run
    first = _tables(out)
    # the per-stage report command (what Nextflow runs) on the final .h5ad
    res = _cli("report", "--input", out / "bonemet.h5ad", "--output", tmp_path / "rep",
               "--config", cfg, "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    again = _tables(tmp_path / "rep")
    assert again.keys() == first.keys()
    for name in first:
        assert again[name] == first[name], name
    # the runner rebuilding only the report from the score checkpoint
    copy, cfg2 = _copy_run(finished_run, tmp_path, report={"dpi": 72})
    res = _cli("run", cfg2, "-q")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((copy / "provenance.json").read_text())["stages_run"] == ["report"]
    assert _tables(copy) == first
    cov = pd.read_csv(out / "tables" / "gene_set_coverage.csv", index_col=0)
    assert (
        cov.index.str.startswith("lineage_").any() and cov.index.str.startswith("erythroid").any()
    )
    assert "\n" not in "".join(cov["genes_found"].dropna().astype(str))
    mim = pd.read_csv(out / "tables" / "erythroid_mimicry.csv")
    assert mim.columns[0] == "sample"


# ----------------------------------------------------------------------------- item 3


def test_a_second_run_into_the_same_folder_is_refused(finished_run, tmp_path):
    from bonemet._outdir import OutputLock

    copy, cfg = _copy_run(finished_run, tmp_path)
    before = _sha([copy])
    with OutputLock(copy):
        res = _cli("run", cfg, "-q")
    assert res.returncode == 1
    line = _error_line(res)
    assert f"PID {os.getpid()}" in line and str(copy) in line
    assert _sha([copy]) == before  # the refused run touched nothing
    assert not (copy / ".bonemet" / "run.lock").exists()  # released


def test_a_lock_left_by_a_dead_run_is_taken_over(finished_run, tmp_path):
    copy, cfg = _copy_run(finished_run, tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = copy / ".bonemet" / "run.lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    res = _cli("run", cfg)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"PID {dead.pid}" in " ".join(res.stderr.split())  # said what it took over
    assert not lock.exists()


def test_output_lock_unit(tmp_path):
    from bonemet._errors import StageError
    from bonemet._outdir import OutputLock

    lock = OutputLock(tmp_path / "o")
    with lock:
        info = json.loads(lock.path.read_text())
        assert info["pid"] == os.getpid()
        with pytest.raises(StageError, match=f"PID {os.getpid()}"), OutputLock(tmp_path / "o"):
            pass
        assert lock.path.exists()  # the refused second lock did not remove the first
    assert not lock.path.exists()
    # an unreadable lock file (e.g. a run killed while writing it) counts as stale
    lock.path.parent.mkdir(parents=True, exist_ok=True)
    lock.path.write_text("{")
    with OutputLock(tmp_path / "o"):
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


# ----------------------------------------------------------------------------- item 4, 13


def test_a_failed_rerun_moves_the_stale_results_aside(finished_run, tmp_path):
    copy, cfg = _copy_run(
        finished_run, tmp_path, annotate={"celltypist_model": str(tmp_path / "missing.pkl")}
    )
    res = _cli("run", cfg, "-q")
    assert res.returncode == 2
    assert "missing.pkl" in _error_line(res)
    for name in FINAL_OUTPUTS:
        assert not (copy / name).exists(), name  # nothing stale looks current
    prev = copy / ".bonemet" / "previous"
    assert (prev / "bonemet.h5ad").is_file() and (prev / "report.html").is_file()
    # fixing the config finishes the run and drops the previous results
    _config(tmp_path, finished_run[2], copy)
    res = _cli("run", cfg, "-q")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (copy / "bonemet.h5ad").is_file() and not prev.exists()


def test_part_files_of_killed_runs_are_cleaned(finished_run, tmp_path):
    copy, cfg = _copy_run(finished_run, tmp_path)
    planted = [
        copy / ".bonemet" / ".score.h5ad.x1y2z3.part",
        copy / ".bonemet" / "qc" / ".bm01.h5ad.abc123.part",
        copy / "tables" / ".qc_summary.csv.q1w2e3.part",
    ]
    for p in planted:
        p.write_bytes(b"half written")
    (copy / ".model.k9j8h7.part").mkdir()
    (copy / ".model.k9j8h7.part" / "model.pt").write_bytes(b"half")
    keep = copy / "notes.part"  # not a bonemet temporary name: left alone
    keep.write_text("mine")
    res = _cli("run", cfg, "-q")
    assert res.returncode == 0, res.stderr[-2000:]
    assert not [p for p in planted if p.exists()]
    assert not (copy / ".model.k9j8h7.part").exists()
    assert keep.read_text() == "mine"


def test_outdir_unit(tmp_path):
    from bonemet._outdir import clean_parts, drop_stale, mark_stale

    out = tmp_path / "o"
    (out / "tables").mkdir(parents=True)
    (out / "tables" / "a.csv").write_text("x")
    (out / "bonemet.h5ad").write_text("h")
    (out / "model").mkdir()
    (out / ".bonemet").mkdir()
    (out / ".bonemet" / ".a.h5ad.12345678.part").write_text("p")
    assert clean_parts(out) == 1
    moved = mark_stale(out)
    assert sorted(p.name for p in moved) == ["bonemet.h5ad", "tables"]
    assert not (out / "bonemet.h5ad").exists() and (out / "model").is_dir()
    assert (out / ".bonemet" / "previous" / "tables" / "a.csv").read_text() == "x"
    assert mark_stale(out) == []  # nothing left to move; the first copy is kept
    assert (out / ".bonemet" / "previous" / "bonemet.h5ad").is_file()
    drop_stale(out)
    assert not (out / ".bonemet" / "previous").exists()


# ----------------------------------------------------------------------------- item 5


def test_ctrl_c_during_scvi_training_exits_130(tmp_path):
    a = simulate_counts(400, 300, species="human", seed=4)
    a.obs["sample"] = pd.Categorical(np.repeat(["s1", "s2"], 200))
    a.layers["counts"] = a.X.copy()
    sc_ = pytest.importorskip("scanpy")
    sc_.pp.normalize_total(a, target_sum=1e4)
    sc_.pp.log1p(a)
    a.var["highly_variable"] = True
    src = tmp_path / "merged.h5ad"
    a.write_h5ad(src)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("integrate: {max_epochs: 5000, accelerator: cpu, early_stopping: false}\n")

    def default_sigint() -> None:
        # a shell starts background jobs with SIGINT ignored, and a child inherits that (so
        # Python never installs its Ctrl-C handler): a suite started with `&` would test a
        # process that cannot be interrupted at all. The child gets the default disposition.
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(
        [
            *BONEMET,
            "integrate",
            "--input",
            str(src),
            "--output",
            str(tmp_path / "i.h5ad"),
            "--config",
            str(cfg),
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )
    lines: list[str] = []
    started = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for ln in proc.stdout:
            lines.append(ln)
            if "training" in ln.lower() or "Epoch" in ln:
                started.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        assert started.wait(300), "".join(lines)[-3000:]
        time.sleep(3)  # well inside the training loop
        proc.send_signal(signal.SIGINT)
        # as long as the start above: the exit code, not the wait, is what is tested
        rc = proc.wait(300)
    finally:
        if proc.poll() is None:  # never leave a 5,000-epoch training behind
            proc.kill()
            proc.wait(30)
    t.join(10)
    text = "".join(lines)
    assert rc == 130, text[-3000:]
    assert "bonemet: interrupted" in text
    assert "Traceback" not in text
    assert not (tmp_path / "i.h5ad").exists()


# ----------------------------------------------------------------------------- item 6


def test_a_truncated_checkpoint_is_recomputed(finished_run, tmp_path):
    copy, cfg = _copy_run(finished_run, tmp_path, report={"dpi": 72})
    ckpt = copy / ".bonemet" / "score.h5ad"
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    res = _cli("run", cfg, "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    err = " ".join(res.stderr.split())
    assert "score checkpoint" in err and "recomputing that stage" in err
    prov = json.loads((copy / "provenance.json").read_text())
    # from the intact annotate checkpoint: score and what follows it run again
    assert prov["stages_run"][0] == "score" and prov["stages_skipped"][-1] == "annotate"
    assert ad.read_h5ad(ckpt).n_obs == ad.read_h5ad(copy / "bonemet.h5ad").n_obs


# ----------------------------------------------------------------------------- item 7


def test_a_declared_species_that_contradicts_the_genes_is_warned_about(small, tmp_path):
    res = _cli("ingest", "--input", small / "mouse.csv", "--sample", "m", "--species", "human",
               "--output", tmp_path / "m.h5ad")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    err = " ".join(res.stderr.split())
    assert "declared 'human'" in err and "look mouse" in err
    assert "look mouse" not in res.stdout  # warnings go to stderr
    warns = " ".join(map(str, ad.read_h5ad(tmp_path / "m.h5ad").uns["bonemet"]["warnings"]))
    assert "look mouse" in warns
    # the matching species, given or detected, says nothing
    res = _cli("ingest", "--input", small / "mouse.csv", "--sample", "m", "--species", "mouse",
               "--output", tmp_path / "m2.h5ad")  # fmt: skip
    assert res.returncode == 0 and "declared" not in res.stderr


# ----------------------------------------------------------------------------- item 10


def test_ensembl_ids_are_mapped_to_symbols_from_features_tsv(tmp_path):
    import gzip

    from scipy.io import mmwrite

    a = simulate_counts(200, 300, species="human", seed=5)
    d = tmp_path / "tenx"
    d.mkdir()
    mmwrite(d / "matrix.mtx", sp.coo_matrix(a.X.T))
    ids = [f"ENSG{i:011d}" for i in range(a.n_vars)]
    feats = pd.DataFrame({"id": ids, "name": a.var_names, "type": "Gene Expression"})
    feats.to_csv(d / "features.tsv", sep="\t", header=False, index=False)
    pd.Series(a.obs_names).to_csv(d / "barcodes.tsv", header=False, index=False)
    for f in list(d.iterdir()):
        with open(f, "rb") as src, gzip.open(f"{f}.gz", "wb") as dst:
            dst.write(src.read())
        f.unlink()
    r = bm.io.read(d)
    assert list(r.var_names[:3]) == ["MT-ND1", "MT-ND2", "MT-CO1"]
    assert r.var["gene_ids"].iloc[0] == "ENSG00000000000"
    # a features file whose name column repeats the ids: no symbols to map to
    feats["name"] = ids
    with gzip.open(d / "features.tsv.gz", "wt") as fh:
        feats.to_csv(fh, sep="\t", header=False, index=False)
    with pytest.raises(bm.InputError, match="Ensembl"):
        bm.io.read(d)


# ----------------------------------------------------------------------------- item 14


def test_model_folder_follows_the_umask(finished_run):
    out, _, _ = finished_run
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((out / "model").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((out / "model").stat().st_mode) == stat.S_IMODE(
        (out / "tables").stat().st_mode
    )


# ----------------------------------------------------------------------------- fault matrix


def _no_cuda() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return True


def _drop_dac() -> list[str]:
    """A prefix that makes root obey file permissions (root ignores a read-only mode)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def _limit_file_size() -> None:  # preexec_fn: `ulimit -f 64` (64 KiB)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write(), not a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def _csv_with(small: Path, tmp: Path, value: float, where: tuple[int, int]) -> Path:
    df = pd.read_csv(small / "human.csv", index_col=0)
    df.iloc[where] = value
    p = tmp / "bad.csv"
    df.to_csv(p)
    return p


# each case: (setup(small, tmp) -> (argv, inputs, outputs), exit code, message pattern)
Case = Callable[[Path, Path], tuple[list, list[Path], list[Path]]]


def _case_out_is_a_file(small, tmp):
    (tmp / "o").write_text("a file")
    return ["run", "--input", small / "human.csv", "--out", tmp / "o"], [tmp / "o"], []


def _case_read_only_out(small, tmp):
    (tmp / "ro").mkdir()
    os.chmod(tmp / "ro", 0o555)
    argv = [*_drop_dac(), "run", "--input", small / "human.csv", "--out", tmp / "ro" / "x"]
    return argv, [], [tmp / "ro" / "x"]


def _case_config_output_is_a_dir(small, tmp):
    (tmp / "d").mkdir()
    return ["config", "--output", tmp / "d"], [tmp / "d"], []


def _case_config_not_utf8(small, tmp):
    (tmp / "c.yaml").write_bytes("qc: {min_counts: 1}  # caf\xe9\n".encode("latin-1"))
    return ["run", tmp / "c.yaml"], [tmp / "c.yaml"], []


def _case_disk_full(small, tmp):
    return (
        ["ingest", "--input", small / "human.csv", "--sample", "s", "--output", tmp / "s.h5ad"],
        [],
        [tmp / "s.h5ad"],
    )


def _case_nan(small, tmp):
    p = _csv_with(small, tmp, np.nan, (20, 7))
    return (
        ["ingest", "--input", p, "--sample", "s", "--output", tmp / "s.h5ad"],
        [p],
        [tmp / "s.h5ad"],
    )


def _case_negative(small, tmp):
    p = _csv_with(small, tmp, -3, (20, 7))
    return (
        ["ingest", "--input", p, "--sample", "s", "--output", tmp / "s.h5ad"],
        [p],
        [tmp / "s.h5ad"],
    )


def _case_ensembl_only(small, tmp):
    df = pd.read_csv(small / "human.csv", index_col=0)
    df.index = [f"ENSG{i:011d}" for i in range(len(df))]
    df.to_csv(tmp / "ens.csv")
    return ["run", "--input", tmp / "ens.csv", "--out", tmp / "o"], [tmp / "ens.csv"], [tmp / "o"]


def _case_duplicate_merge(small, tmp):
    a = simulate_counts(150, 300, seed=6)
    a.obs["sample"] = "s1"
    a.write_h5ad(tmp / "a.h5ad")
    a.write_h5ad(tmp / "b.h5ad")
    ins = [tmp / "a.h5ad", tmp / "b.h5ad"]
    return ["merge", "--input", *ins, "--output", tmp / "m.h5ad"], ins, [tmp / "m.h5ad"]


def _case_sheet_without_path(small, tmp):
    (tmp / "sheet.csv").write_text(f"sample,file\ns1,{small / 'human.csv'}\n")
    return (
        ["run", "--input", tmp / "sheet.csv", "--out", tmp / "o"],
        [tmp / "sheet.csv"],
        [tmp / "o"],
    )


def _case_run_a_dir(small, tmp):
    return ["run", small], [small], []


def _case_gpu_without_cuda(small, tmp):
    if not _no_cuda():
        pytest.skip("a CUDA GPU is present")
    return (
        ["run", "--input", small / "human.csv", "--out", tmp / "o", "--accelerator", "gpu"],
        [small / "human.csv"],
        [tmp / "o"],
    )


FAULTS = {
    "out-is-a-file": (
        _case_out_is_a_file,
        1,
        r"(File exists|Not a directory): .*/o(/\.bonemet)? \(a ",
    ),
    "read-only-out": (_case_read_only_out, 1, r"Permission denied: .*/ro/x \(check"),
    "config-output-is-a-dir": (_case_config_output_is_a_dir, 1, r"Is a directory: .*/d \(give"),
    "config-not-utf8": (_case_config_not_utf8, 2, r"not UTF-8.*c\.yaml|c\.yaml.*not UTF-8"),
    "disk-full": (_case_disk_full, 1, r"File too large.*file size limit"),
    "nan-in-csv": (_case_nan, 2, r"NaN.*first at"),
    "negative-in-csv": (_case_negative, 2, r"negative.*first at"),
    "ensembl-only": (_case_ensembl_only, 2, r"Ensembl"),
    "duplicate-sample-merge": (_case_duplicate_merge, 2, r"duplicate sample id 's1'"),
    "samplesheet-without-path": (_case_sheet_without_path, 2, r"samplesheet.*lacks.*path"),
    "run-a-directory": (_case_run_a_dir, 2, r"is a directory.*--input"),
    "gpu-without-cuda": (_case_gpu_without_cuda, 2, r"no CUDA"),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_matrix(name, small, tmp_path):
    setup, code, pattern = FAULTS[name]
    argv, inputs, outputs = setup(small, tmp_path)
    inputs = [*inputs, small]
    before = _sha(inputs)
    prefix, argv = ([], argv) if argv[0] != "setpriv" else (argv[:3], argv[3:])
    kw = {"preexec_fn": _limit_file_size} if name == "disk-full" else {}
    res = subprocess.run(
        [*prefix, *BONEMET, *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        **kw,
    )
    assert res.returncode == code, res.stderr[-3000:]
    import re

    line = _error_line(res)
    assert re.search(pattern, line), line
    assert len(line) < 600
    assert _sha(inputs) == before  # input bytes unchanged
    for o in outputs:  # nothing that looks finished
        assert not o.is_file(), o
        if o.is_dir():
            assert not any((o / f).exists() for f in FINAL_OUTPUTS), o
            assert not list(o.rglob("*.h5ad")), o
    assert not list(tmp_path.rglob("*.part"))
