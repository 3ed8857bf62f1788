"""One thread setting caps BLAS, numba and torch (so two tasks on a node do not oversubscribe)."""

from __future__ import annotations

import os

import pytest
import yaml

from bonemet import ConfigError
from bonemet._threads import available_cores, resolve_threads, set_threads
from bonemet.cli import main


@pytest.fixture
def restore_threads():
    yield
    os.environ.pop("BONEMET_THREADS", None)
    set_threads(None)


def test_set_threads_caps_every_library(restore_threads):
    import numba
    import torch
    from threadpoolctl import threadpool_info

    assert set_threads(1) == 1
    assert torch.get_num_threads() == 1
    assert numba.get_num_threads() == 1
    assert all(lib["num_threads"] == 1 for lib in threadpool_info())
    assert os.environ["OMP_NUM_THREADS"] == "1"


def test_thread_count_comes_from_the_setting_then_env_then_affinity(monkeypatch):
    monkeypatch.delenv("BONEMET_THREADS", raising=False)
    assert resolve_threads(None) == available_cores() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("BONEMET_THREADS", "3")
    assert resolve_threads(None) == 3
    assert resolve_threads(2) == 2  # the config / --threads wins over the environment
    monkeypatch.setenv("BONEMET_THREADS", "many")
    with pytest.raises(ConfigError, match="BONEMET_THREADS"):
        resolve_threads(None)


def test_cli_threads_reaches_the_config(tmp_path, restore_threads):
    out = tmp_path / "cfg.yaml"
    assert main(["config", "--threads", "1", "--output", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["threads"] == 1
    assert main(["config", "--threads", "0", "--output", str(out)]) == 2  # refused: >= 1
