"""CLI surface: help, version, config command, one-line errors with no half-written output."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

import bonemet as bm
from bonemet.cli import main

COMMANDS = [
    "demo",
    "run",
    "simulate",
    "config",
    "ingest",
    "qc",
    "merge",
    "integrate",
    "cluster",
    "annotate",
    "score",
    "report",
    "fetch-geo",
    "reference",
]


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"bonemet {bm.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for c in COMMANDS:
        assert c in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: bonemet " + command in capsys.readouterr().out


def test_entry_point_installed():
    out = subprocess.run(
        [sys.executable, "-m", "bonemet.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("bonemet ")


def test_config_command_merges_and_validates(tmp_path, capsys):
    out = tmp_path / "cfg.yaml"
    assert (
        main(
            [
                "config",
                "--output",
                str(out),
                "--set",
                "integrate.max_epochs=2",
                "--set",
                "cluster.resolutions=[0.3, 0.8]",
                "-q",
            ]
        )
        == 0
    )
    cfg = yaml.safe_load(out.read_text())
    assert cfg["integrate"]["max_epochs"] == 2
    assert cfg["cluster"]["resolutions"] == [0.3, 0.8]
    assert cfg["qc"]["max_pct_mito"] == 20.0  # defaults filled in
    bad = tmp_path / "bad.yaml"
    assert (
        main(
            [
                "config",
                "--output",
                str(bad),
                "--set",
                "integrate.max_epochs=-1",
                "--set",
                "qc.nope=1",
                "-q",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("bonemet: error: invalid config")
    assert "integrate.max_epochs" in err and "qc.nope" in err
    assert len(err.strip().splitlines()) == 1
    assert not bad.exists()


def test_run_unknown_config_key_fails_before_any_work(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    out = tmp_path / "out"
    cfg.write_text(
        f"input:\n  path: {tmp_path}/x.h5ad\noutput:\n  dir: {out}\nqc:\n  min_cell: 3\n"
    )
    assert main(["run", str(cfg), "-q"]) == 2
    err = capsys.readouterr().err
    assert "qc.min_cell" in err and "unknown key" in err
    assert not out.exists()


def test_run_missing_input_names_the_path(tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "nowhere.h5ad"
    assert main(["run", "--input", str(missing), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err
    assert not (out / "bonemet.h5ad").exists()


def test_stage_command_missing_input(tmp_path, capsys):
    out = tmp_path / "o.h5ad"
    assert (
        main(["cluster", "--input", str(tmp_path / "none.h5ad"), "--output", str(out), "-q"]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_ingest_rejects_unsafe_sample_id(tmp_path, capsys):
    out = tmp_path / "o.h5ad"
    assert (
        main(
            ["ingest", "--input", str(tmp_path), "--sample", "../evil", "--output", str(out), "-q"]
        )
        == 2
    )
    assert "not allowed" in capsys.readouterr().err
    assert not out.exists()
