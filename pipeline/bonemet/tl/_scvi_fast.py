"""Device-resident data path for scvi-tools training.

Stock scvi-tools feeds ``SCVI.train`` through :class:`~scvi.dataloaders.AnnDataLoader`: every
mini-batch is sliced from the AnnData on the host, densified by scipy, collated and copied to
the GPU. On a GPU that loader, not the model, is the bottleneck (README, Performance). This
module keeps the registered count matrix and covariates **on the training
device** and draws each mini-batch by index there:

* :class:`DeviceDataStore` holds every tensor of the scvi-tools data registry (``X``,
  ``batch``, ``labels``, covariates…) on one device, either as a dense matrix (when it fits)
  or as CSR parts (``crow``, ``col``, ``val``), or — when even the CSR does not fit — streams
  chunks from pinned host memory with a background copy thread.
* :func:`gather_csr_rows` densifies a set of CSR rows with vectorised tensor ops
  (``repeat_interleave`` + one scatter): no Python per-cell loop, no host round trip except
  one scalar (the number of non-zeros in the batch).
* :class:`DeviceDataSplitter` subclasses scvi-tools' own
  :class:`~scvi.dataloaders.DataSplitter`, so the train/validation/test split (sizes,
  ``train_size=0.9`` default, the small-last-batch rule, ``scvi.settings.seed`` permutation)
  is *exactly* stock; only the dataloaders are replaced. It is passed to
  ``SCVI.train(datamodule=...)``, so scvi-tools' :class:`~scvi.train.TrainingPlan`,
  :class:`~scvi.train.TrainRunner`, early stopping, history and the max-epochs heuristic
  (from ``datamodule.n_obs``) are the stock ones and the result is a plain
  :class:`scvi.model.SCVI` (``save``/``load``, ``get_latent_representation``,
  ``get_normalized_expression``, scArches query mapping).

Batch size and learning rate
----------------------------
Large batches make the device path fast, but give fewer optimizer steps per epoch. bonemet's documented rule
(:func:`scaled_learning_rate`) scales Adam's learning rate with the square root of the batch
size relative to scvi-tools' default (``lr = 1e-3 * sqrt(batch_size / 128)``, capped at
``1e-2``), the usual rule for adaptive optimizers. Its effect on integration quality is what
``benchmarks/integrate_gpu.py`` measures (scib-metrics vs stock); no quality claim is made
here without that measurement.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

from .._logging import logger

__all__ = [
    "DeviceBatchLoader",
    "DeviceDataSplitter",
    "DeviceDataStore",
    "gather_csr_rows",
    "plan_residency",
    "resolve_device",
    "scaled_learning_rate",
    "train_scvi_fast",
]

Residency = Literal["dense", "csr", "stream"]

#: fraction of free device memory the resident matrix may take (the rest is for the model)
MEMORY_FRACTION = 0.5
BASE_BATCH_SIZE = 128
BASE_LR = 1e-3
MAX_LR = 1e-2


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def scaled_learning_rate(
    batch_size: int, *, base_lr: float = BASE_LR, base_batch_size: int = BASE_BATCH_SIZE
) -> float:
    """Learning rate for ``batch_size`` by bonemet's square-root rule.

    ``lr = base_lr * sqrt(batch_size / base_batch_size)`` for batches larger than scvi-tools'
    default of 128, capped at ``1e-2``; smaller or equal batches keep ``base_lr`` (scvi-tools'
    default ``1e-3``).

    Parameters
    ----------
    batch_size
        Training mini-batch size.
    base_lr
        Learning rate at ``base_batch_size``.
    base_batch_size
        Batch size ``base_lr`` was tuned for.

    Returns
    -------
    The learning rate to pass to :class:`~scvi.train.TrainingPlan` (``plan_kwargs={"lr": ...}``).
    """
    if batch_size <= base_batch_size:
        return float(base_lr)
    return float(min(base_lr * math.sqrt(batch_size / base_batch_size), MAX_LR))


def resolve_device(accelerator: str = "auto") -> torch.device:
    """Torch device that scvi-tools/lightning will train on for ``accelerator``.

    ``"auto"`` picks ``cuda`` when available, else ``cpu`` (scvi-tools never picks MPS on
    ``auto``). ``"gpu"``/``"cuda"`` without CUDA raises :class:`~bonemet.ConfigError`.
    """
    from .._errors import ConfigError

    acc = (accelerator or "auto").lower()
    if acc in {"gpu", "cuda"}:
        if not torch.cuda.is_available():
            raise ConfigError(
                "accelerator='gpu' was requested but PyTorch sees no CUDA GPU "
                "(torch.cuda.is_available() is False); use accelerator 'auto' or 'cpu', or "
                "install a CUDA build of torch on a GPU machine"
            )
        return torch.device("cuda", torch.cuda.current_device())
    if acc == "cpu":
        return torch.device("cpu")
    if acc == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    raise ConfigError(f"accelerator must be 'auto', 'cpu' or 'gpu', got {accelerator!r}")


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:  # host RAM available to us
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 4 << 30


def plan_residency(
    n_obs: int,
    n_vars: int,
    nnz: int | None,
    device: torch.device | str,
    *,
    free_bytes: int | None = None,
    fraction: float = MEMORY_FRACTION,
) -> Residency:
    """Choose how the count matrix lives on ``device``.

    ``"dense"`` when ``n_obs * n_vars`` float32 values fit in ``fraction`` of the free memory
    (fastest gather: one ``index_select``); otherwise ``"csr"`` when the CSR parts fit;
    otherwise ``"stream"`` (chunks copied from pinned host memory by a background thread).

    Parameters
    ----------
    n_obs, n_vars
        Matrix shape.
    nnz
        Stored non-zeros (``None`` for a dense input).
    device
        Training device; free memory is read with :func:`torch.cuda.mem_get_info` on CUDA.
    free_bytes
        Override the free-memory estimate (tests).
    fraction
        Share of the free memory the matrix may take.
    """
    device = torch.device(device)
    free = _free_bytes(device) if free_bytes is None else int(free_bytes)
    budget = fraction * free
    dense_bytes = 4 * n_obs * n_vars
    if nnz is None:
        nnz = n_obs * n_vars
    csr_bytes = 8 * (n_obs + 1) + 8 * nnz  # int64 crow, int32 col + float32 val
    if dense_bytes <= budget:
        return "dense"
    if csr_bytes <= budget:
        return "csr"
    return "stream"


def gather_csr_rows(
    crow: torch.Tensor,
    col: torch.Tensor,
    val: torch.Tensor,
    idx: torch.Tensor,
    n_vars: int,
) -> torch.Tensor:
    """Dense ``(len(idx), n_vars)`` rows ``idx`` of a CSR matrix, gathered on its device.

    Fully vectorised: row lengths from ``crow``, positions by ``repeat_interleave``, one
    ``index_put`` into a zero matrix. The only host synchronisation is the batch's total
    number of non-zeros (needed to size the position vector).

    Parameters
    ----------
    crow
        ``int64`` row pointers, length ``n_rows + 1``.
    col
        Column indices (``int32`` or ``int64``) of the stored values.
    val
        Stored values (the output has their dtype).
    idx
        ``int64`` row indices on the same device.
    n_vars
        Number of columns.
    """
    device = val.device
    b = idx.numel()
    starts = crow.index_select(0, idx)
    lens = crow.index_select(0, idx + 1) - starts
    out = torch.zeros((b, n_vars), dtype=val.dtype, device=device)
    total = int(lens.sum())
    if total == 0:
        return out
    rows = torch.repeat_interleave(torch.arange(b, device=device), lens, output_size=total)
    first = torch.cumsum(lens, 0) - lens  # offset of each row's first value in the output
    pos = torch.arange(total, device=device) - first.index_select(0, rows)
    pos = pos + starts.index_select(0, rows)
    cols = col.index_select(0, pos).to(torch.int64)
    out.view(-1).index_put_((rows * n_vars + cols,), val.index_select(0, pos))
    return out


def _to_csr(x: Any) -> sp.csr_matrix:
    if sp.issparse(x):
        x = sp.csr_matrix(x)
    else:
        x = sp.csr_matrix(np.asarray(x))
    x.sum_duplicates()
    x.sort_indices()
    return x


# --------------------------------------------------------------------------------------------
# the device-resident store
# --------------------------------------------------------------------------------------------
class DeviceDataStore:
    """Every tensor of an scvi-tools data registry, resident on ``device``.

    Parameters
    ----------
    adata_manager
        The model's :class:`~scvi.data.AnnDataManager` (``model.adata_manager``).
    device
        Device to hold the tensors (``"cpu"`` works: same code, used by CI).
    residency
        ``"auto"`` (:func:`plan_residency`), ``"dense"``, ``"csr"`` or ``"stream"``.
    chunk_cells
        Rows per streamed chunk (``"stream"`` only); default: as many as fit in an eighth of
        the memory budget, at least 16 batches.
    """

    def __init__(
        self,
        adata_manager: Any,
        device: torch.device | str = "cpu",
        *,
        residency: Literal["auto", "dense", "csr", "stream"] = "auto",
        chunk_cells: int | None = None,
    ) -> None:
        from scvi import REGISTRY_KEYS
        from scvi.data._utils import registry_key_to_default_dtype

        self.device = torch.device(device)
        self.x_key = REGISTRY_KEYS.X_KEY
        t0 = time.perf_counter()
        registry_keys = [
            k for k in adata_manager.data_registry.keys() if k != REGISTRY_KEYS.MINIFY_TYPE_KEY
        ]
        x = adata_manager.get_from_registry(self.x_key)
        self.n_obs, self.n_vars = int(x.shape[0]), int(x.shape[1])
        nnz = int(x.nnz) if sp.issparse(x) else None
        forced = residency != "auto"
        if residency == "auto":
            residency = plan_residency(self.n_obs, self.n_vars, nnz, self.device)
        if residency not in ("dense", "csr", "stream"):
            raise ValueError(f"residency must be auto|dense|csr|stream, got {residency!r}")
        self.residency: Residency = residency
        self.chunk_cells = chunk_cells

        # covariates: small dense tensors, always resident
        self.obs_tensors: dict[str, torch.Tensor] = {}
        for key in registry_keys:
            if key == self.x_key:
                continue
            arr = adata_manager.get_from_registry(key)
            if hasattr(arr, "to_numpy"):
                arr = arr.to_numpy()
            arr = np.asarray(arr)
            if arr.ndim == 1:
                arr = arr[:, None]
            dtype = registry_key_to_default_dtype(key)
            self.obs_tensors[key] = torch.as_tensor(arr.astype(dtype, copy=False)).to(self.device)

        self.dense: torch.Tensor | None = None
        self.crow = self.col = self.val = None
        self.host_csr: sp.csr_matrix | None = None
        if residency == "dense":
            xd = x.toarray() if sp.issparse(x) else np.asarray(x)
            self.dense = torch.as_tensor(np.ascontiguousarray(xd, dtype=np.float32)).to(self.device)
        else:
            csr = _to_csr(x)
            if residency == "csr":
                self.crow = torch.as_tensor(csr.indptr.astype(np.int64)).to(self.device)
                self.col = torch.as_tensor(csr.indices.astype(np.int32)).to(self.device)
                self.val = torch.as_tensor(csr.data.astype(np.float32)).to(self.device)
            else:
                self.host_csr = csr.astype(np.float32)
                logger.info(
                    "scVI fast path: %s; streaming chunks of the %d x %d count matrix to %s "
                    "from pinned host memory with a background copy",
                    "streaming requested" if forced else "the matrix does not fit in memory",
                    self.n_obs,
                    self.n_vars,
                    self.device,
                )
        self.setup_seconds = time.perf_counter() - t0
        logger.info(
            "scVI fast path: %d x %d matrix %s on %s (%.1f s)",
            self.n_obs,
            self.n_vars,
            {"dense": "dense-resident", "csr": "CSR-resident", "stream": "streamed"}[residency],
            self.device,
            self.setup_seconds,
        )

    @property
    def nbytes(self) -> int:
        """Bytes the store holds on its device."""
        ts = [self.dense, self.crow, self.col, self.val, *self.obs_tensors.values()]
        return int(sum(t.element_size() * t.numel() for t in ts if t is not None))

    def gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mini-batch dict (scvi-tools registry keys) for rows ``idx`` (resident modes)."""
        if self.dense is not None:
            x = self.dense.index_select(0, idx)
        elif self.crow is not None:
            x = gather_csr_rows(self.crow, self.col, self.val, idx, self.n_vars)
        else:
            raise RuntimeError("gather() needs a resident store; streamed stores use a loader")
        batch = {self.x_key: x}
        for key, t in self.obs_tensors.items():
            batch[key] = t.index_select(0, idx)
        return batch

    def release(self) -> None:
        """Drop the device tensors (called when training ends)."""
        self.dense = self.crow = self.col = self.val = None
        self.host_csr = None
        self.obs_tensors = {}


# --------------------------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------------------------
class DeviceBatchLoader:
    """Iterable of mini-batch dicts drawn by index from a :class:`DeviceDataStore`.

    Same batching as scvi-tools' ``AnnDataLoader`` (``BatchSampler`` over a random or
    sequential sampler): ``ceil(n / batch_size)`` batches (``floor`` with ``drop_last``), a
    fresh permutation per epoch when ``shuffle``. The permutation is drawn on the device.
    """

    def __init__(
        self,
        store: DeviceDataStore,
        indices: np.ndarray,
        *,
        batch_size: int,
        shuffle: bool,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        self.store = store
        self.indices_np = np.asarray(indices, dtype=np.int64)
        self.indices = torch.as_tensor(self.indices_np).to(store.device)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = bool(drop_last)
        self.generator = generator

    def __len__(self) -> int:
        n = len(self.indices_np)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return self.indices
        perm = torch.randperm(
            len(self.indices_np), device=self.store.device, generator=self.generator
        )
        return self.indices.index_select(0, perm)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.store.residency == "stream":
            yield from self._iter_stream()
            return
        order = self._order()
        bs = self.batch_size
        for i in range(len(self)):
            yield self.store.gather(order[i * bs : (i + 1) * bs])

    # -- streaming: host CSR -> pinned chunk -> device (background thread) -> gather ---------
    def _chunk_rows(self) -> int:
        store, bs = self.store, self.batch_size
        if store.chunk_cells:
            rows = int(store.chunk_cells)
        else:
            csr = store.host_csr
            bytes_per_row = 8 * csr.nnz / max(csr.shape[0], 1) + 8
            budget = _free_bytes(store.device) * MEMORY_FRACTION / 8
            rows = int(budget // max(bytes_per_row, 1))
        rows = max(rows, 16 * bs)
        return max(bs, (rows // bs) * bs)  # whole batches per chunk

    def _iter_stream(self) -> Iterator[dict[str, torch.Tensor]]:
        store = self.store
        dev = store.device
        cuda = dev.type == "cuda"
        order = self._order().cpu().numpy()
        n_batches = len(self)
        n_used = min(len(order), n_batches * self.batch_size)
        order = order[:n_used]
        rows_per_chunk = self._chunk_rows()
        chunks = [order[i : i + rows_per_chunk] for i in range(0, n_used, rows_per_chunk)]
        q: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()
        copy_stream = torch.cuda.Stream(dev) if cuda else None

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def producer() -> None:
            try:
                for rows in chunks:
                    sub = store.host_csr[rows]  # vectorised scipy row gather
                    parts = [
                        torch.from_numpy(sub.indptr.astype(np.int64)),
                        torch.from_numpy(sub.indices.astype(np.int32)),
                        torch.from_numpy(sub.data.astype(np.float32, copy=False)),
                    ]
                    event = None
                    if cuda:
                        parts = [p.pin_memory() for p in parts]
                        with torch.cuda.stream(copy_stream):
                            parts = [p.to(dev, non_blocking=True) for p in parts]
                            event = torch.cuda.Event()
                            event.record(copy_stream)
                    if not put((parts, torch.from_numpy(rows), event)):
                        return
                put(None)
            except BaseException as e:  # surfaced in the consumer
                put(e)

        thread = threading.Thread(target=producer, name="bonemet-scvi-stream", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                (crow, col, val), rows, event = item
                if cuda:
                    torch.cuda.current_stream(dev).wait_event(event)
                    for t in (crow, col, val):
                        t.record_stream(torch.cuda.current_stream(dev))
                rows_dev = rows.to(dev)
                for s in range(0, len(rows), self.batch_size):
                    local = torch.arange(
                        s, min(s + self.batch_size, len(rows)), device=dev, dtype=torch.int64
                    )
                    batch = {store.x_key: gather_csr_rows(crow, col, val, local, store.n_vars)}
                    glob = rows_dev.index_select(0, local)
                    for key, t in store.obs_tensors.items():
                        batch[key] = t.index_select(0, glob)
                    yield batch
        finally:
            stop.set()
            thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# the scvi-tools hook
# --------------------------------------------------------------------------------------------
def _datasplitter_base() -> type:
    from scvi.dataloaders import DataSplitter

    return DataSplitter


class DeviceDataSplitter(_datasplitter_base()):  # type: ignore[misc]
    """scvi-tools :class:`~scvi.dataloaders.DataSplitter` whose loaders draw on the device.

    The split (``n_train``/``n_val``, ``train_idx``/``val_idx``/``test_idx``) is computed by
    the parent class, so it equals stock scvi-tools' for the same ``scvi.settings.seed``,
    ``train_size``, ``validation_size`` and ``batch_size``. Pass it to
    ``SCVI.train(datamodule=...)``; ``n_obs`` lets scvi-tools apply its max-epochs heuristic.

    Parameters
    ----------
    adata_manager
        ``model.adata_manager`` of an :class:`scvi.model.SCVI` set up on the data.
    device
        Training device (where the tensors live).
    batch_size
        Mini-batch size.
    train_size, validation_size, shuffle_set_split, drop_last, external_indexing
        As in :class:`~scvi.dataloaders.DataSplitter`.
    residency
        ``"auto"``, ``"dense"``, ``"csr"`` or ``"stream"`` (see :class:`DeviceDataStore`).
    chunk_cells
        Rows per streamed chunk.
    seed
        Seed of the on-device shuffling generator (default ``scvi.settings.seed``).
    """

    def __init__(
        self,
        adata_manager: Any,
        *,
        device: torch.device | str = "cpu",
        batch_size: int = 128,
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        drop_last: bool = False,
        external_indexing: list | None = None,
        residency: Literal["auto", "dense", "csr", "stream"] = "auto",
        chunk_cells: int | None = None,
        seed: int | None = None,
    ) -> None:
        from scvi import settings

        super().__init__(
            adata_manager,
            train_size=train_size,
            validation_size=validation_size,
            shuffle_set_split=shuffle_set_split,
            external_indexing=external_indexing,
            batch_size=batch_size,
            drop_last=drop_last,
        )
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.n_obs = int(adata_manager.adata.n_obs)
        self.residency = residency
        self.chunk_cells = chunk_cells
        self.seed = int(settings.seed if seed is None else seed)
        self.store: DeviceDataStore | None = None
        self._generator: torch.Generator | None = None

    def setup(self, stage: str | None = None) -> None:
        """Split indices (stock rule) and build the device store once."""
        super().setup(stage)
        if self.store is None:
            self.store = DeviceDataStore(
                self.adata_manager,
                self.device,
                residency=self.residency,
                chunk_cells=self.chunk_cells,
            )
            self._generator = torch.Generator(device=self.device)
            self._generator.manual_seed(self.seed)

    def _loader(self, idx: np.ndarray, *, shuffle: bool, drop_last: bool) -> DeviceBatchLoader:
        if self.store is None:
            self.setup()
        return DeviceBatchLoader(
            self.store,
            idx,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            generator=self._generator,
        )

    def train_dataloader(self) -> DeviceBatchLoader:
        return self._loader(self.train_idx, shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self) -> DeviceBatchLoader | None:
        if len(self.val_idx) > 0:
            return self._loader(self.val_idx, shuffle=False, drop_last=False)
        return None

    def test_dataloader(self) -> DeviceBatchLoader | None:
        if len(self.test_idx) > 0:
            return self._loader(self.test_idx, shuffle=False, drop_last=False)
        return None

    def teardown(self, stage: str | None = None) -> None:
        """Free the device tensors when lightning is done with the data."""
        if self.store is not None:
            self.store.release()
            self.store = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def train_scvi_fast(
    model: Any,
    *,
    max_epochs: int | None = None,
    batch_size: int = 128,
    accelerator: str = "auto",
    train_size: float | None = None,
    validation_size: float | None = None,
    early_stopping: bool = False,
    residency: Literal["auto", "dense", "csr", "stream"] = "auto",
    chunk_cells: int | None = None,
    plan_kwargs: dict | None = None,
    **trainer_kwargs: Any,
) -> DeviceDataSplitter:
    """Train an :class:`scvi.model.SCVI` (or any unsupervised scvi-tools model) on the device path.

    Equivalent to ``model.train(max_epochs=..., batch_size=..., accelerator=...)`` except
    for where mini-batches come from. Returns the data module used (its ``store`` is released
    after training; ``n_train``/``n_val`` and the indices stay).

    Parameters
    ----------
    model
        An initialised scvi-tools model (``SCVI(adata, ...)``).
    max_epochs
        ``None``: scvi-tools' heuristic (:func:`scvi.model.get_max_epochs_heuristic`).
    batch_size
        Mini-batch size.
    accelerator
        ``auto``, ``cpu`` or ``gpu``; the store is built on the matching torch device.
    train_size, validation_size
        Split as in scvi-tools.
    early_stopping
        scvi-tools early stopping (monitors ``elbo_validation``).
    residency, chunk_cells
        See :class:`DeviceDataStore`.
    plan_kwargs
        Passed to the training plan (e.g. ``{"lr": scaled_learning_rate(batch_size)}``).
    **trainer_kwargs
        Passed to :class:`scvi.train.Trainer`.
    """
    device = resolve_device(accelerator)
    dm = DeviceDataSplitter(
        model.adata_manager,
        device=device,
        batch_size=batch_size,
        train_size=train_size,
        validation_size=validation_size,
        residency=residency,
        chunk_cells=chunk_cells,
    )
    # lightning warns when an epoch has fewer steps than the logging interval
    trainer_kwargs.setdefault("log_every_n_steps", int(max(1, min(10, dm.n_train // batch_size))))
    if early_stopping and dm.n_val == 0:
        raise ValueError("Can't run Early Stopping with validation monitor with no validation set")
    model.train(
        max_epochs=max_epochs,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else "auto",
        early_stopping=early_stopping,
        datamodule=dm,
        plan_kwargs=plan_kwargs,
        **trainer_kwargs,
    )
    return dm
