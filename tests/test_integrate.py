"""bm.tl.integrate: scVI on HVGs (stock and fast path, 1 epoch on CPU), fallbacks, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

anndata = pytest.importorskip("anndata")
sc = pytest.importorskip("scanpy")
scvi = pytest.importorskip("scvi")

import bonemet as bm  # noqa: E402
from bonemet._errors import ConfigError, InputError, NotCountsError  # noqa: E402

SMALL = {"n_latent": 4, "n_hidden": 16, "n_layers": 1, "max_epochs": 1, "accelerator": "cpu"}
KANG = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kang2018_pbmc_ifnb.h5ad"


def _adata(n: int = 800, g: int = 150, n_batches: int = 2, n_types: int = 3, seed: int = 0):
    """NB counts with cell types and a multiplicative batch effect; normalised like pp.normalize."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(0.5, 2.0, size=g)
    programmes = rng.lognormal(0, 1.0, size=(n_types, g))
    batch_eff = rng.lognormal(0, 0.5, size=(n_batches, g))
    t = rng.integers(0, n_types, n)
    b = rng.integers(0, n_batches, n)
    mu = base * programmes[t] * batch_eff[b] * rng.lognormal(0, 0.3, size=(n, 1))
    r = 3.0
    counts = rng.negative_binomial(r, r / (r + mu)).astype(np.float32)
    adata = anndata.AnnData(
        X=sp.csr_matrix(counts),
        obs=pd.DataFrame(
            {
                "sample": pd.Categorical([f"S{i}" for i in b]),
                "true_type": pd.Categorical([f"T{i}" for i in t]),
            },
            index=[f"S{b[i]}_c{i}" for i in range(n)],
        ),
        var=pd.DataFrame(index=[f"G{j}" for j in range(g)]),
    )
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.var["highly_variable"] = np.arange(g) < int(g * 0.8)
    adata.uns["bonemet"] = {"is_counts": True}
    return adata


def test_scvi_stock_path_writes_contract_and_model(tmp_path):
    adata = _adata()
    model_dir = tmp_path / "out" / "model"
    bm.tl.integrate(adata, model_dir=model_dir, fast_path="off", **SMALL)
    assert adata.obsm["X_scVI"].shape == (adata.n_obs, 4)
    assert np.isfinite(adata.obsm["X_scVI"]).all()
    assert adata.obsm["X_pca"].shape[0] == adata.n_obs
    info = adata.uns["bonemet"]["integrate"]
    assert info["method"] == "scvi" and info["use_rep"] == "X_scVI"
    assert info["device"] == "cpu" and info["fast_path"] is False
    assert info["epochs"] == 1 and info["batch_size"] == 128
    assert info["n_genes"] == int(adata.var["highly_variable"].sum())
    assert info["train_seconds"] > 0 and info["cells_per_s"] > 0
    assert np.isfinite(info["elbo_train"]) and np.isfinite(info["elbo_validation"])
    # counts untouched
    assert adata.layers["counts"].max() > 20 and adata.X.max() < 20
    # the model folder is complete, no temporary left, and reloads on the HVG subset
    assert (model_dir / "model.pt").is_file()
    assert [p.name for p in model_dir.parent.iterdir()] == ["model"]
    hvg = adata[:, adata.var["highly_variable"]].copy()
    model = scvi.model.SCVI.load(str(model_dir), adata=hvg)
    np.testing.assert_allclose(
        model.get_latent_representation(), adata.obsm["X_scVI"], rtol=1e-4, atol=1e-4
    )
    # h5ad-serialisable uns
    adata.write_h5ad(tmp_path / "a.h5ad")
    # a second run replaces the model folder atomically
    bm.tl.integrate(adata, model_dir=model_dir, fast_path="off", **SMALL)
    assert sorted(p.name for p in model_dir.parent.iterdir()) == ["model"]


def test_scvi_fast_path_on_cpu_is_seeded_and_recorded():
    a1, a2 = _adata(), _adata()
    bm.tl.integrate(a1, fast_path="on", seed=1, **SMALL)
    bm.tl.integrate(a2, fast_path="on", seed=1, **SMALL)
    assert a1.uns["bonemet"]["integrate"]["fast_path"] is True
    np.testing.assert_allclose(a1.obsm["X_scVI"], a2.obsm["X_scVI"], rtol=1e-5, atol=1e-5)
    # "auto" on a CPU machine is the stock loader
    if not torch.cuda.is_available():
        a3 = _adata()
        bm.tl.integrate(a3, fast_path="auto", **SMALL)
        assert a3.uns["bonemet"]["integrate"]["fast_path"] is False


def test_large_batch_scales_learning_rate():
    adata = _adata(n=600)
    bm.tl.integrate(adata, fast_path="on", **{**SMALL, "max_epochs": 1}, batch_size=512)
    info = adata.uns["bonemet"]["integrate"]
    assert info["batch_size"] == 512
    assert info["learning_rate"] == pytest.approx(1e-3 * np.sqrt(4))


def test_single_batch_runs():
    adata = _adata(n_batches=1)
    bm.tl.integrate(adata, **SMALL)
    assert adata.obsm["X_scVI"].shape == (adata.n_obs, 4)
    assert adata.uns["bonemet"]["integrate"]["n_batches"] == 1


@pytest.mark.parametrize("fast_path", ["off", "on"])
def test_training_copy_is_not_kept_after_integrate(fast_path):
    # scvi-tools keeps each AnnData given to setup_anndata in a class-level store; in a
    # one-process run the training copy of the counts then stays resident in every later stage
    store = scvi.model.SCVI._setup_adata_manager_store
    before = set(store)
    adata = _adata(n=500)
    bm.tl.integrate(adata, fast_path=fast_path, **SMALL)
    assert set(store) == before  # nothing left registered: the training copy is freed


def test_copy_returns_new_object():
    adata = _adata(n=500)
    out = bm.tl.integrate(adata, method="pca", copy=True)
    assert out is not adata and "X_pca" in out.obsm and "X_pca" not in adata.obsm


@pytest.mark.parametrize("how", ["flag", "float_layer", "missing_layer"])
def test_non_counts_refused_without_fallback(how):
    adata = _adata(n=400)
    if how == "flag":
        adata.uns["bonemet"]["is_counts"] = False
    elif how == "float_layer":
        adata.layers["counts"] = adata.X.copy()  # log values
    else:
        del adata.layers["counts"]
    with pytest.raises(NotCountsError, match="raw integer counts"):
        bm.tl.integrate(adata, allow_fallback=False, **SMALL)
    assert "X_scVI" not in adata.obsm


def test_non_counts_fall_back_to_harmony_with_warning(caplog):
    adata = _adata(n=600)
    adata.layers["counts"] = adata.X.copy()
    bm.tl.integrate(adata, **SMALL)
    info = adata.uns["bonemet"]["integrate"]
    assert info["method"] == "harmony" and info["use_rep"] == "X_harmony"
    assert adata.obsm["X_harmony"].shape == adata.obsm["X_pca"].shape
    assert "X_scVI" not in adata.obsm
    assert any("scVI skipped" in w for w in adata.uns["bonemet"]["warnings"])
    assert any("scVI skipped" in r.getMessage() for r in caplog.records)


def test_non_counts_single_batch_falls_back_to_pca():
    adata = _adata(n=400, n_batches=1)
    adata.uns["bonemet"]["is_counts"] = False
    bm.tl.integrate(adata, **SMALL)
    assert adata.uns["bonemet"]["integrate"]["use_rep"] == "X_pca"


def test_harmony_reduces_batch_separation():
    adata = _adata(n=900, g=200, n_batches=2, seed=2)
    bm.tl.integrate(adata, method="harmony", n_pcs=20)
    from sklearn.metrics import silhouette_score

    b = adata.obs["sample"].cat.codes.to_numpy()
    before = silhouette_score(adata.obsm["X_pca"], b)
    after = silhouette_score(adata.obsm["X_harmony"], b)
    assert after < before


@pytest.mark.parametrize("method", ["pca", "none"])
def test_pca_methods(method):
    adata = _adata(n=300)
    bm.tl.integrate(adata, method=method, n_pcs=10)
    info = adata.uns["bonemet"]["integrate"]
    assert info["method"] == "pca" and info["use_rep"] == "X_pca"
    assert adata.obsm["X_pca"].shape == (300, 10)


def test_bad_arguments():
    adata = _adata(n=300)
    with pytest.raises(InputError, match="batch_key 'donor'"):
        bm.tl.integrate(adata, batch_key="donor", **SMALL)
    with pytest.raises(ConfigError, match="method"):
        bm.tl.integrate(adata, method="mnn")
    adata.var["highly_variable"] = False
    with pytest.raises(InputError, match="highly_variable"):
        bm.tl.integrate(adata, **SMALL)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_gpu_requested_without_cuda():
    adata = _adata(n=300)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        bm.tl.integrate(adata, **{**SMALL, "accelerator": "gpu"})


@pytest.mark.skipif(not KANG.exists(), reason="shared Kang data not present")
def test_kang_real_cells_one_epoch():
    """Real PBMC counts (4 donors): one epoch of scVI on the fast path trains and embeds."""
    adata = anndata.read_h5ad(KANG)
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.obs["sample"] = adata.obs["sample"].astype("category")
    bm.tl.integrate(adata, fast_path="on", use_highly_variable=False, **SMALL)
    assert adata.obsm["X_scVI"].shape == (adata.n_obs, 4)
    assert np.isfinite(adata.uns["bonemet"]["integrate"]["elbo_validation"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_picks_fast_path_on_cuda(tmp_path):
    adata = _adata(n=2000)
    bm.tl.integrate(
        adata,
        **{**SMALL, "accelerator": "auto", "max_epochs": 2},
        batch_size=1024,
        model_dir=tmp_path / "model",
    )
    info = adata.uns["bonemet"]["integrate"]
    assert info["fast_path"] is True and info["device"].startswith("cuda")
    assert np.isfinite(adata.obsm["X_scVI"]).all()
    hvg = adata[:, adata.var["highly_variable"]].copy()
    assert scvi.model.SCVI.load(str(tmp_path / "model"), adata=hvg).is_trained_


def test_an_interrupt_swallowed_during_training_still_stops_it(monkeypatch):
    """Ctrl-C whose ``KeyboardInterrupt`` is raised inside a finaliser (where Python prints
    "Exception ignored" and drops it) must still end training, not run to ``max_epochs``."""
    import signal

    import scvi

    # a suite started in the background inherits SIGINT ignored: give this process Python's
    # own Ctrl-C handler for the test, as an interactive run has it
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    steps = {"n": 0}
    original = scvi.train.TrainingPlan.training_step

    class _RaisesInDel:
        def __del__(self) -> None:
            steps["signalled"] = True
            signal.raise_signal(signal.SIGINT)  # the handler raises here, inside __del__

    def training_step(self, batch, batch_idx):
        steps["n"] += 1
        if steps["n"] == 3:
            _RaisesInDel()  # created and collected at once: its __del__ swallows the interrupt
        return original(self, batch, batch_idx)

    monkeypatch.setattr(scvi.train.TrainingPlan, "training_step", training_step)
    adata = _adata(n=300)
    try:
        with pytest.raises(KeyboardInterrupt):
            bm.tl.integrate(adata, fast_path="on", **{**SMALL, "max_epochs": 200}, batch_size=128)
        after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert steps.get("signalled")
    # 2 training batches per epoch: stopped at the batch after the signal, not 400 steps later
    assert steps["n"] <= 4, steps
    assert "X_scVI" not in adata.obsm
    assert after is signal.default_int_handler  # the handler bonemet replaced is back
