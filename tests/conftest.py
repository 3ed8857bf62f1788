"""Shared pytest fixtures: the real data folder and a small count generator.

Keep this file small; area-specific fixtures belong in the test module that uses them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

REPO_ROOT = Path(__file__).resolve().parents[1]


def _find_shared_data() -> Path | None:
    candidates = [
        os.environ.get("BONEMET_SHARED_DATA", ""),
        str(REPO_ROOT.parent / "shared" / "data"),
        "/work/shared/data",
    ]
    for c in candidates:
        if c and (Path(c) / "10x").is_dir():
            return Path(c).resolve()
    return None


# pytest-xdist (``make test`` runs ``-n 2 --dist loadfile``): a worker takes whole modules, so a
# module's fixtures are built once. The modules that share one session fixture (``test_run``:
# a single ``nextflow run -profile test``) go to one worker together, so the run happens once.
_SHARED_RUN_MODULES = {"test_nextflow": "nextflow", "test_container": "nextflow"}
# Heavier tiers are handed out first, so the last module to finish is a short one.
_TIER_RANK = {"container": 0, "nextflow": 0, "e2e": 1, "notebooks": 1, "slow": 1}


def _module_group(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return _SHARED_RUN_MODULES.get(Path(module).stem, module)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that read the real data sets (the ``shared_data`` fixture) form the realdata tier.

    In a pytest-xdist worker the modules are also ordered heaviest tier first (a stable sort:
    within a module, and between modules of one tier, the order is kept).
    """
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank: dict[str, int] = {}
        for item in items:
            r = min(
                (_TIER_RANK.get(m.name, len(_TIER_RANK)) for m in item.iter_markers()),
                default=len(_TIER_RANK),
            )
            g = _module_group(item.nodeid)
            rank[g] = min(rank.get(g, r), r)
        items.sort(key=lambda it: rank[_module_group(it.nodeid)])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` with the shared-run modules as one unit, in collection order."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class _ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _module_group(nodeid)

    config.option.loadscopereorder = False  # keep the heaviest-first order made above
    return _ModuleGroups(config, log)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real fixtures; see its README). Skips when it is not present."""
    p = _find_shared_data()
    if p is None:
        pytest.skip("real data folder ../shared/data not found (set BONEMET_SHARED_DATA)")
    return p


_MT_HUMAN = ["MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3", "MT-ND3",
             "MT-ND4L", "MT-ND4", "MT-ND5", "MT-ND6", "MT-CYB"]  # fmt: skip
_HB_HUMAN = ["HBB", "HBA1", "HBA2"]
_HB_MOUSE = ["Hbb-bs", "Hba-a1", "Hba-a2"]


def gene_names(n_genes: int, species: str = "human") -> list[str]:
    """``n_genes`` symbols: 13 mito, 3 haemoglobin, ribosomal proteins, then fillers."""
    if species == "human":
        mt, hb = _MT_HUMAN, _HB_HUMAN
        rib = [f"RPL{i}" for i in range(3, 40)] + [f"RPS{i}" for i in range(2, 30)]
        fill = [f"GENE{i}" for i in range(n_genes)]
    else:
        mt = ["mt-" + g[3:].capitalize() for g in _MT_HUMAN]
        hb = _HB_MOUSE
        rib = [f"Rpl{i}" for i in range(3, 40)] + [f"Rps{i}" for i in range(2, 30)]
        fill = [f"Gene{i}" for i in range(n_genes)]
    names = mt + hb + rib + fill
    return names[:n_genes]


def simulate_counts(
    n_cells: int = 300,
    n_genes: int = 400,
    *,
    species: str = "human",
    n_types: int = 3,
    mean_counts: float = 3000.0,
    pct_mito: float = 3.0,
    seed: int = 0,
) -> ad.AnnData:
    """Negative-binomial counts with ``n_types`` cell types (each type up-regulates its own
    block of genes), mito genes at about ``pct_mito`` % of each library. ``obs["true_type"]``."""
    rng = np.random.default_rng(seed)
    names = gene_names(n_genes, species)
    n_mt = 13
    base = rng.gamma(0.6, 1.0, size=n_genes)
    base[:n_mt] = 0
    types = rng.integers(0, n_types, size=n_cells)
    profiles = np.tile(base, (n_types, 1))
    block = max(1, (n_genes - 100) // n_types)
    for t in range(n_types):
        lo = 100 + t * block
        profiles[t, lo : lo + block // 2] *= 8
    profiles /= profiles.sum(axis=1, keepdims=True)
    profiles *= 1 - pct_mito / 100
    profiles[:, :n_mt] = pct_mito / 100 / n_mt
    lib = rng.lognormal(np.log(mean_counts), 0.3, size=n_cells)
    mu = profiles[types] * lib[:, None]
    counts = rng.poisson(rng.gamma(5.0, mu / 5.0))
    obs = pd.DataFrame(
        {"true_type": pd.Categorical([f"type{t}" for t in types])},
        index=[f"CELL{i:05d}-1" for i in range(n_cells)],
    )
    return ad.AnnData(
        X=sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=pd.DataFrame(index=names)
    )


@pytest.fixture
def make_counts() -> Callable[..., ad.AnnData]:
    """Factory fixture for :func:`simulate_counts`."""
    return simulate_counts


@pytest.fixture(scope="session")
def test_run(tmp_path_factory):
    """One ``nextflow run . -profile test --outdir OUT`` for the session: checked by
    tests/test_nextflow.py, compared with the container run by tests/test_container.py."""
    import time

    from test_nextflow import nextflow

    launch = tmp_path_factory.mktemp("nf_test_profile")
    out = launch / "out"
    t0 = time.perf_counter()
    r = nextflow(launch, "-profile", "test", "--outdir", str(out))
    return {"launch": launch, "out": out, "result": r, "seconds": time.perf_counter() - t0}
