"""The device-resident scVI data path, on CPU tensors; CUDA tests are marked gpu."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

anndata = pytest.importorskip("anndata")
scvi = pytest.importorskip("scvi")

from scvi import REGISTRY_KEYS  # noqa: E402
from scvi.dataloaders import DataSplitter  # noqa: E402

from bonemet._errors import ConfigError  # noqa: E402
from bonemet.tl import (  # noqa: E402
    DeviceBatchLoader,
    DeviceDataSplitter,
    DeviceDataStore,
    gather_csr_rows,
    plan_residency,
    resolve_device,
    scaled_learning_rate,
    train_scvi_fast,
)


def _counts_adata(n: int = 700, g: int = 120, n_batches: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    mu = rng.gamma(0.6, 2.0, size=g)
    shift = rng.lognormal(0, 0.4, size=(n_batches, g))
    batch = rng.integers(0, n_batches, n)
    lam = mu[None, :] * shift[batch]
    x = rng.poisson(lam).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = 0  # extra sparsity
    x[5] = 0  # an all-zero cell
    adata = anndata.AnnData(
        obs=pd.DataFrame(
            {"sample": pd.Categorical([f"s{b}" for b in batch])},
            index=[f"c{i}" for i in range(n)],
        ),
        var=pd.DataFrame(index=[f"g{j}" for j in range(g)]),
    )
    adata.layers["counts"] = sp.csr_matrix(x)
    return adata


def _model(adata, **kw):
    scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key="sample")
    return scvi.model.SCVI(adata, n_hidden=16, n_latent=4, n_layers=1, **kw)


@pytest.fixture
def model():
    scvi.settings.seed = 0
    return _model(_counts_adata())


def _batch_codes(adata, model):
    mapping = model.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
    lookup = {c: i for i, c in enumerate(mapping)}
    return np.array([lookup[c] for c in adata.obs["sample"].astype(str)])


# ---------------------------------------------------------------------------------------------
# gathering
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("residency", ["dense", "csr"])
def test_gathered_batches_equal_anndata_rows(model, residency):
    adata = model.adata
    store = DeviceDataStore(model.adata_manager, "cpu", residency=residency)
    assert store.residency == residency
    counts = adata.layers["counts"].toarray()
    codes = _batch_codes(adata, model)
    rng = np.random.default_rng(1)
    for size in (1, 37, 256):
        idx = rng.choice(adata.n_obs, size, replace=False)
        idx[0] = 5  # include the all-zero cell
        b = store.gather(torch.as_tensor(idx))
        assert b[REGISTRY_KEYS.X_KEY].dtype == torch.float32
        np.testing.assert_array_equal(b[REGISTRY_KEYS.X_KEY].numpy(), counts[idx])
        assert b[REGISTRY_KEYS.BATCH_KEY].shape == (size, 1)
        assert b[REGISTRY_KEYS.BATCH_KEY].dtype == torch.int64
        np.testing.assert_array_equal(b[REGISTRY_KEYS.BATCH_KEY].numpy()[:, 0], codes[idx])
        assert set(b) == {k for k in model.adata_manager.data_registry}


def test_gather_matches_stock_loader(model):
    """Same keys, dtypes, shapes and values as scvi-tools' own AnnDataLoader."""
    idx = np.array([3, 0, 11, 5, 42, 699])
    stock = next(iter(model._make_data_loader(adata=model.adata, indices=idx, batch_size=6)))
    ours = DeviceDataStore(model.adata_manager, "cpu", residency="csr").gather(torch.as_tensor(idx))
    assert set(stock) == set(ours)
    for key in stock:
        assert stock[key].dtype == ours[key].dtype, key
        np.testing.assert_array_equal(stock[key].numpy(), ours[key].numpy())


def test_gather_csr_rows_edge_cases():
    m = sp.csr_matrix(np.array([[0, 2, 0], [0, 0, 0], [1, 0, 3], [0, 0, 0]], dtype=np.float32))
    crow = torch.as_tensor(m.indptr.astype(np.int64))
    col = torch.as_tensor(m.indices.astype(np.int32))
    val = torch.as_tensor(m.data)
    for idx in ([1, 3], [2, 2, 0], [3, 2, 1, 0]):
        out = gather_csr_rows(crow, col, val, torch.as_tensor(idx), 3)
        np.testing.assert_array_equal(out.numpy(), m.toarray()[idx])


def test_streamed_loader_covers_every_cell_once(model):
    store = DeviceDataStore(model.adata_manager, "cpu", residency="stream", chunk_cells=64)
    idx = np.arange(0, model.adata.n_obs, 2)
    counts = model.adata.layers["counts"].toarray()
    codes = _batch_codes(model.adata, model)
    loader = DeviceBatchLoader(
        store, idx, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    assert len(loader) == int(np.ceil(len(idx) / 32))
    xs, bs = [], []
    for b in loader:
        xs.append(b[REGISTRY_KEYS.X_KEY].numpy())
        bs.append(b[REGISTRY_KEYS.BATCH_KEY].numpy()[:, 0])
    assert len(xs) == len(loader)
    x, bcodes = np.concatenate(xs), np.concatenate(bs)
    # every selected cell exactly once: match rows back to cells through the row content
    assert x.shape == (len(idx), counts.shape[1])
    assert sorted(map(bytes, x)) == sorted(map(bytes, counts[idx]))
    assert np.bincount(bcodes).tolist() == np.bincount(codes[idx]).tolist()


def test_loader_shuffles_per_epoch_and_drop_last(model):
    store = DeviceDataStore(model.adata_manager, "cpu", residency="dense")
    idx = np.arange(100)
    loader = DeviceBatchLoader(
        store, idx, batch_size=30, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    assert len(loader) == 4
    e1 = torch.cat([b[REGISTRY_KEYS.X_KEY] for b in loader])
    e2 = torch.cat([b[REGISTRY_KEYS.X_KEY] for b in loader])
    assert e1.shape[0] == e2.shape[0] == 100
    assert not torch.equal(e1, e2)  # a new permutation each epoch
    dl = DeviceBatchLoader(store, idx, batch_size=30, shuffle=False, drop_last=True)
    assert len(dl) == 3
    seq = torch.cat([b[REGISTRY_KEYS.X_KEY] for b in dl])
    np.testing.assert_array_equal(seq.numpy(), model.adata.layers["counts"][:90].toarray())


def test_plan_residency():
    n, g = 100_000, 2_000
    assert plan_residency(n, g, 10**7, "cpu", free_bytes=10 * 4 * n * g) == "dense"
    assert plan_residency(n, g, 10**7, "cpu", free_bytes=4 * n * g) == "csr"
    assert plan_residency(n, g, 10**7, "cpu", free_bytes=10**6) == "stream"


# ---------------------------------------------------------------------------------------------
# the split equals stock scvi-tools'
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "batch_size", "train_size"), [(700, 128, None), (1000, 64, 0.8), (333, 32, None)]
)
def test_split_sizes_and_indices_equal_stock(n, batch_size, train_size):
    scvi.settings.seed = 3
    m = _model(_counts_adata(n=n))
    stock = DataSplitter(m.adata_manager, train_size=train_size, batch_size=batch_size)
    ours = DeviceDataSplitter(
        m.adata_manager, device="cpu", train_size=train_size, batch_size=batch_size
    )
    stock.setup()
    ours.setup()
    assert (ours.n_train, ours.n_val) == (stock.n_train, stock.n_val)
    for key in ("train_idx", "val_idx", "test_idx"):
        np.testing.assert_array_equal(getattr(ours, key), getattr(stock, key))
    assert len(ours.train_dataloader()) == len(stock.train_dataloader())
    assert len(ours.val_dataloader()) == len(stock.val_dataloader())
    assert ours.n_obs == n
    ours.teardown()
    assert ours.store is None


def test_small_last_batch_rule_matches_stock():
    # 900 training cells = 7 * 128 + 4 ... and 4 >= 3: pick n so the remainder is 1
    n = 1000
    bs = 899  # ceil(0.9 * 1000) = 900 = 899 + 1 -> stock moves 1 cell to validation
    scvi.settings.seed = 0
    m = _model(_counts_adata(n=n, g=20))
    with pytest.warns(UserWarning, match="moved from training set"):
        stock = DataSplitter(m.adata_manager, batch_size=bs)
    with pytest.warns(UserWarning, match="moved from training set"):
        ours = DeviceDataSplitter(m.adata_manager, device="cpu", batch_size=bs)
    assert (ours.n_train, ours.n_val) == (stock.n_train, stock.n_val) == (899, 101)


# ---------------------------------------------------------------------------------------------
# training through scvi-tools gives a standard SCVI
# ---------------------------------------------------------------------------------------------
# scArches freezes reference modules on purpose; lightning warns about them (query mapping)
@pytest.mark.filterwarnings("ignore:Found .* module.*in eval mode")
@pytest.mark.parametrize("residency", ["csr", "stream"])
def test_one_epoch_fast_training_gives_standard_scvi(model, residency, tmp_path):
    dm = train_scvi_fast(
        model,
        max_epochs=1,
        batch_size=128,
        accelerator="cpu",
        residency=residency,
        chunk_cells=256,
        check_val_every_n_epoch=1,
        enable_progress_bar=False,
        log_every_n_steps=1,
    )
    assert type(model) is scvi.model.SCVI
    assert model.is_trained_
    assert dm.store is None  # device tensors released after fit
    assert len(model.train_indices) == dm.n_train and len(model.validation_indices) == dm.n_val
    for key in ("elbo_train", "elbo_validation"):
        v = model.history[key].to_numpy().astype(float)
        assert v.shape[0] == 1 and np.all(np.isfinite(v))
    lat = model.get_latent_representation()
    assert lat.shape == (model.adata.n_obs, 4) and np.isfinite(lat).all()
    norm = model.get_normalized_expression(n_samples=1)
    assert norm.shape == model.adata.shape
    model.save(tmp_path / "m", save_anndata=False)
    loaded = scvi.model.SCVI.load(tmp_path / "m", adata=model.adata)
    np.testing.assert_allclose(loaded.get_latent_representation(), lat, rtol=1e-4, atol=1e-5)
    # scArches-style query mapping onto the trained reference
    query = _counts_adata(n=200, seed=7)
    scvi.model.SCVI.prepare_query_anndata(query, loaded)
    q = scvi.model.SCVI.load_query_data(query, loaded)
    q.train(
        max_epochs=1,
        plan_kwargs={"weight_decay": 0.0},
        enable_progress_bar=False,
        log_every_n_steps=1,
    )
    assert q.get_latent_representation().shape == (200, 4)


def test_heuristic_epochs_from_datamodule(model):
    from scvi.model._utils import get_max_epochs_heuristic

    train_scvi_fast(
        model, max_epochs=None, accelerator="cpu", enable_progress_bar=False, max_steps=2
    )  # stop after two steps: only the epoch plan matters here
    assert model.trainer.max_epochs == get_max_epochs_heuristic(model.adata.n_obs)


def test_scaled_learning_rate():
    assert scaled_learning_rate(128) == pytest.approx(1e-3)
    assert scaled_learning_rate(64) == pytest.approx(1e-3)
    assert scaled_learning_rate(1024) == pytest.approx(1e-3 * np.sqrt(8))
    assert scaled_learning_rate(4096) == pytest.approx(1e-3 * np.sqrt(32))
    assert scaled_learning_rate(10**7) == pytest.approx(1e-2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_gpu_without_cuda_is_a_clear_error():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("gpu")
    assert resolve_device("auto").type == "cpu"


# ---------------------------------------------------------------------------------------------
# CUDA only
# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("residency", ["auto", "csr", "stream"])
def test_fast_path_on_cuda(residency, tmp_path):
    scvi.settings.seed = 0
    m = _model(_counts_adata(n=3000, g=200))
    store = DeviceDataStore(m.adata_manager, "cuda", residency=residency, chunk_cells=512)
    if residency != "stream":
        idx = torch.randperm(3000, device="cuda")[:500]
        b = store.gather(idx)
        assert b[REGISTRY_KEYS.X_KEY].is_cuda
        np.testing.assert_array_equal(
            b[REGISTRY_KEYS.X_KEY].cpu().numpy(),
            m.adata.layers["counts"][idx.cpu().numpy()].toarray(),
        )
    dm = train_scvi_fast(
        m,
        max_epochs=2,
        batch_size=256,
        accelerator="gpu",
        residency=residency,
        chunk_cells=512,
        check_val_every_n_epoch=1,
        enable_progress_bar=False,
    )
    assert dm.device.type == "cuda"
    assert np.isfinite(m.history["elbo_validation"].to_numpy().astype(float)).all()
    m.save(tmp_path / "m", save_anndata=False)
    assert scvi.model.SCVI.load(
        tmp_path / "m", adata=m.adata
    ).get_latent_representation().shape == (
        3000,
        4,
    )


def test_lazy_exports_list_the_whole_module():
    """bonemet.tl loads _scvi_fast on first use; its name list must match the module's."""
    import bonemet.tl as tl
    from bonemet.tl import _scvi_fast

    assert set(tl._LAZY) == set(_scvi_fast.__all__)
    assert all(getattr(tl, name) is getattr(_scvi_fast, name) for name in tl._LAZY)
