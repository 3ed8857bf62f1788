"""Integration of samples: scVI (scvi-tools) on the HVGs, with harmony/PCA fallbacks."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._counts import is_counts
from .._errors import ConfigError, InputError, NotCountsError
from .._logging import is_quiet, logger
from .._meta import add_warning, bonemet_uns

__all__ = ["integrate"]

_METHODS = ("scvi", "harmony", "pca", "none")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _counts_problem(adata: ad.AnnData, layer: str | None) -> str | None:
    """Why ``adata`` cannot feed scVI (``None`` when it can)."""
    if bonemet_uns(adata).get("is_counts", True) is False:
        return "the input was flagged as not raw counts (uns['bonemet']['is_counts'] is False)"
    if layer is not None and layer not in adata.layers:
        return f"layers[{layer!r}] with raw counts is missing"
    x = adata.layers[layer] if layer is not None else adata.X
    if not is_counts(x):
        where = f"layers[{layer!r}]" if layer is not None else "X"
        return f"{where} holds non-integer or negative values, not raw counts"
    return None


def _device_name(device: Any) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    return str(device.type)


def _trainer_kwargs(n_obs: int, batch_size: int = 128) -> dict[str, Any]:
    """Lightning settings for scvi-tools training: a progress bar unless bonemet is quiet,
    and a logging interval no longer than the training batches of an epoch (lightning
    warns otherwise; scvi-tools keeps 90% of the cells for training)."""
    n_train_batches = int(np.ceil(0.9 * n_obs)) // batch_size
    return {
        "enable_progress_bar": not is_quiet(),
        "log_every_n_steps": int(max(1, min(10, n_train_batches))),
    }


def _stop_on_interrupt(seen: dict[str, bool]) -> Any:
    """A lightning callback that raises ``KeyboardInterrupt`` at the next batch or epoch
    boundary once ``seen["sigint"]`` is set.

    Python runs a signal handler wherever the main thread is at that moment; when that is a
    finaliser (``__del__``, a weakref or GC callback) the ``KeyboardInterrupt`` it raises is
    printed as "Exception ignored" and dropped, and training would go on to ``max_epochs``.
    The flag is set before the handler raises, so the interrupt is never lost.
    """
    from lightning.pytorch.callbacks import Callback

    class _StopOnInterrupt(Callback):
        def _check(self) -> None:
            if seen["sigint"]:
                logger.debug("SIGINT seen during training: stopping at this batch")
                raise KeyboardInterrupt

        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            self._check()

        def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
            self._check()

        def on_train_epoch_end(self, *args: Any, **kwargs: Any) -> None:
            self._check()

    return _StopOnInterrupt()


@contextlib.contextmanager
def _quiet_lightning(quiet: bool) -> Iterator[list[Any]]:
    """Around lightning training: quiet its loggers, and let Ctrl-C stay an interrupt.

    Lightning catches the ``KeyboardInterrupt`` of a Ctrl-C, tears the trainer down and
    calls ``sys.exit(1)``. A SIGINT seen here turns that exit back into
    ``KeyboardInterrupt``, so the CLI exits 130 with "bonemet: interrupted".

    Yields the callbacks to give the trainer (``callbacks=``): they stop training at the
    next batch when the interrupt itself was swallowed (:func:`_stop_on_interrupt`). A SIGINT
    seen in the block raises ``KeyboardInterrupt`` when the block ends, whatever happened
    to the exception the handler raised.
    """
    import signal

    names = ("lightning.pytorch", "lightning.fabric", "lightning", "scvi")
    old = {n: logging.getLogger(n).level for n in names}
    seen = {"sigint": False}

    def on_sigint(signum: int, frame: Any) -> None:
        seen["sigint"] = True
        raise KeyboardInterrupt

    # only the default handler is replaced (never one the caller installed)
    ours = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if ours:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        if quiet:
            for n in names:
                logging.getLogger(n).setLevel(logging.WARNING)
        yield [_stop_on_interrupt(seen)] if ours else []
        if seen["sigint"]:
            raise KeyboardInterrupt
    except SystemExit:
        if seen["sigint"]:
            raise KeyboardInterrupt from None
        raise
    finally:
        for n, lvl in old.items():
            logging.getLogger(n).setLevel(lvl)
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _pca_input(adata: ad.AnnData, genes: np.ndarray) -> Any:
    """Log-normalised HVG matrix for PCA (normalises a copy when X still holds counts)."""
    x = adata.X[:, genes] if genes is not None else adata.X
    if is_counts(x, empty=False):
        logger.info("X looks like raw counts; PCA uses log1p(CP10k) of it")
        tmp = ad.AnnData(
            X=sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else x.astype(np.float32)
        )
        import scanpy as sc

        sc.pp.normalize_total(tmp, target_sum=1e4)
        sc.pp.log1p(tmp)
        x = tmp.X
    return x


def _compute_pca(adata: ad.AnnData, genes: np.ndarray | None, n_pcs: int, seed: int) -> np.ndarray:
    import scanpy as sc

    x = _pca_input(adata, genes)
    n_comps = int(max(1, min(n_pcs, x.shape[1] - 1, adata.n_obs - 1)))
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float32)
    else:
        x = np.asarray(x, dtype=np.float32)
    pcs = sc.pp.pca(x, n_comps=n_comps, random_state=seed)
    return np.asarray(pcs, dtype=np.float32)


def _harmony(pcs: np.ndarray, batches: pd.Series, seed: int) -> np.ndarray:
    try:
        import harmonypy
    except ImportError as e:  # pragma: no cover - harmonypy is a dependency
        raise ConfigError(
            "method 'harmony' needs the harmonypy package: pip install harmonypy"
        ) from e
    meta = pd.DataFrame({"batch": batches.astype(str).to_numpy()})
    with _quiet_lightning(True):
        ho = harmonypy.run_harmony(pcs, meta, ["batch"], random_state=seed, verbose=False)
    z = np.asarray(ho.Z_corr)
    if z.shape[0] != pcs.shape[0]:  # harmonypy < 2 returns (d, n)
        z = z.T
    return np.ascontiguousarray(z, dtype=np.float32)


def _save_model_atomic(model: Any, model_dir: str | os.PathLike) -> Path:
    """Save to a temporary sibling directory, then rename it to ``model_dir``."""
    final = Path(model_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    old: Path | None = None
    try:
        model.save(str(tmp), overwrite=True, save_anndata=False)
        # mkdtemp makes a 0700 folder: give it the usual 0777 minus the umask, like mkdir
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return final


def _last(history: dict[str, pd.DataFrame], key: str) -> float | None:
    df = history.get(key) if history else None
    if df is None or len(df) == 0:
        return None
    values = pd.to_numeric(df.iloc[:, 0], errors="coerce").dropna()
    return float(values.iloc[-1]) if len(values) else None


# --------------------------------------------------------------------------------------------
# scVI
# --------------------------------------------------------------------------------------------
def _run_scvi(
    adata: ad.AnnData,
    genes: np.ndarray | None,
    *,
    batch_key: str,
    layer: str,
    n_latent: int,
    n_hidden: int,
    n_layers: int,
    gene_likelihood: str,
    max_epochs: int | None,
    batch_size: int,
    early_stopping: bool,
    early_stopping_patience: int,
    accelerator: str,
    fast_path: str,
    seed: int,
    model_dir: str | os.PathLike | None,
) -> dict[str, Any]:
    import scvi
    from scvi.model._utils import get_max_epochs_heuristic

    from ._scvi_fast import resolve_device, scaled_learning_rate, train_scvi_fast

    device = resolve_device(accelerator)  # clear error for gpu-without-CUDA, before any work
    use_fast = fast_path == "on" or (fast_path == "auto" and device.type == "cuda")

    counts = adata.layers[layer]
    if genes is not None:
        counts = counts[:, genes]
    counts = (
        sp.csr_matrix(counts, dtype=np.float32)
        if sp.issparse(counts)
        else np.asarray(counts, dtype=np.float32)
    )
    batches = adata.obs[batch_key].astype(str).astype("category")
    n_batches = len(batches.cat.categories)
    lean = ad.AnnData(
        obs=pd.DataFrame({batch_key: batches.to_numpy()}, index=adata.obs_names),
        var=pd.DataFrame(index=adata.var_names[genes] if genes is not None else adata.var_names),
        layers={layer: counts},
    )
    lean.obs[batch_key] = lean.obs[batch_key].astype("category")

    with _quiet_lightning(is_quiet()):  # lightning logs "Seed set to ..."
        scvi.settings.seed = seed
    scvi.model.SCVI.setup_anndata(lean, layer=layer, batch_key=batch_key if n_batches > 1 else None)
    model = scvi.model.SCVI(
        lean,
        n_latent=n_latent,
        n_hidden=n_hidden,
        n_layers=n_layers,
        gene_likelihood=gene_likelihood,
    )
    epochs = int(max_epochs) if max_epochs is not None else get_max_epochs_heuristic(lean.n_obs)
    lr = scaled_learning_rate(batch_size)
    trainer_kwargs = _trainer_kwargs(lean.n_obs, batch_size)
    if early_stopping and lean.n_obs - int(np.ceil(0.9 * lean.n_obs)) < 1:
        logger.info("scVI: %d cells leave no validation split; early stopping off", lean.n_obs)
        early_stopping = False
    if not early_stopping:
        # one validation pass, after the last epoch: gives the final validation ELBO cheaply
        trainer_kwargs["check_val_every_n_epoch"] = epochs
    else:
        trainer_kwargs["early_stopping_patience"] = int(early_stopping_patience)
    logger.info(
        "scVI: %d cells x %d genes, %d batch(es), %d epochs, batch %d, lr %.2g, %s path on %s",
        lean.n_obs,
        lean.n_vars,
        n_batches,
        epochs,
        batch_size,
        lr,
        "fast (device-resident)" if use_fast else "stock",
        _device_name(device),
    )
    t0 = time.perf_counter()
    with _quiet_lightning(is_quiet()) as interrupt_callbacks:
        if interrupt_callbacks:
            # a copy: scvi-tools' Trainer appends its own callbacks to the list it is given
            trainer_kwargs["callbacks"] = list(interrupt_callbacks)
        if use_fast:
            dm = train_scvi_fast(
                model,
                max_epochs=epochs,
                batch_size=batch_size,
                accelerator=accelerator,
                early_stopping=early_stopping,
                plan_kwargs={"lr": lr},
                **trainer_kwargs,
            )
            n_train = int(dm.n_train)
        else:
            model.train(
                max_epochs=epochs,
                batch_size=batch_size,
                accelerator="gpu" if device.type == "cuda" else "cpu",
                early_stopping=early_stopping,
                plan_kwargs={"lr": lr},
                **trainer_kwargs,
            )
            n_train = len(model.train_indices)
    train_s = time.perf_counter() - t0
    history = model.history or {}
    epochs_run = len(history.get("elbo_train", [])) or epochs

    latent = model.get_latent_representation()
    adata.obsm["X_scVI"] = np.asarray(latent, dtype=np.float32)
    if model_dir is not None:
        path = _save_model_atomic(model, model_dir)
        logger.info("scVI model saved to %s", path)
    # scvi-tools keeps every AnnData given to setup_anndata in a class-level store, so the
    # training copy of the counts would stay resident for the rest of the process (every
    # later stage of a one-process run): let it go with the model
    model.deregister_manager(lean)

    info: dict[str, Any] = {
        "method": "scvi",
        "use_rep": "X_scVI",
        "device": _device_name(device),
        "epochs": int(epochs_run),
        "max_epochs": int(epochs),
        "batch_size": int(batch_size),
        "learning_rate": float(lr),
        "early_stopping": bool(early_stopping),
        "fast_path": bool(use_fast),
        "train_seconds": round(float(train_s), 3),
        "cells_per_s": round(float(n_train * epochs_run / max(train_s, 1e-9)), 1),
        "n_train": int(n_train),
        "n_genes": int(lean.n_vars),
        "n_batches": int(n_batches),
        "batch_key": batch_key if n_batches > 1 else "",
        "model_dir": str(model_dir) if model_dir is not None else "",
    }
    if early_stopping:
        info["early_stopping_patience"] = int(early_stopping_patience)
    for key, name in (("elbo_train", "elbo_train"), ("elbo_validation", "elbo_validation")):
        v = _last(history, key)
        if v is not None and np.isfinite(v):
            info[name] = v
    val = history.get("elbo_validation")
    if early_stopping and val is not None and len(val) > 1:  # the curve early stopping read
        info["elbo_validation_per_epoch"] = np.asarray(val, dtype=np.float64).ravel().round(3)
    return info


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def integrate(
    adata: ad.AnnData,
    *,
    method: Literal["scvi", "harmony", "pca", "none"] = "scvi",
    batch_key: str = "sample",
    layer: str = "counts",
    n_latent: int = 30,
    n_hidden: int = 128,
    n_layers: int = 2,
    gene_likelihood: Literal["nb", "zinb", "poisson"] = "nb",
    max_epochs: int | None = None,
    batch_size: int = 128,
    early_stopping: bool = True,
    early_stopping_patience: int = 20,
    accelerator: Literal["auto", "cpu", "gpu"] = "auto",
    fast_path: Literal["auto", "on", "off"] | bool = "auto",
    seed: int = 0,
    model_dir: str | os.PathLike | None = None,
    use_highly_variable: bool = True,
    allow_fallback: bool = True,
    n_pcs: int = 50,
    copy: bool = False,
) -> ad.AnnData | None:
    """Integrate samples into one latent space.

    scVI (scvi-tools, used as a consumer) is trained on the highly variable genes of
    ``layers[layer]`` with ``batch_key`` as the batch covariate (a single batch trains
    without one). On a CUDA device the default ``fast_path="auto"`` trains through bonemet's
    device-resident data path (:mod:`bonemet.tl._scvi_fast`), which gives the same
    :class:`scvi.model.SCVI`; on CPU the stock scvi-tools loader is used.

    Non-count input (``uns["bonemet"]["is_counts"]`` False, or ``layers[layer]`` missing or
    not integer) cannot feed scVI: with ``allow_fallback`` it is integrated with harmony on
    PCA (or plain PCA for one batch) and a warning is recorded; otherwise
    :class:`~bonemet.NotCountsError` is raised.

    Parameters
    ----------
    adata
        Normalised AnnData (``X`` log1p(CP10k), raw counts in ``layers["counts"]``,
        ``var["highly_variable"]``).
    method
        ``"scvi"``, ``"harmony"`` (harmonypy on PCA), ``"pca"`` or ``"none"`` (= PCA).
    batch_key
        ``obs`` column with the batch of each cell.
    layer
        Layer with raw counts (scVI input).
    n_latent, n_hidden, n_layers, gene_likelihood
        scVI architecture (:class:`scvi.model.SCVI`).
    max_epochs
        ``None``: scvi-tools' heuristic (``min(400, 400 * 20000 / n_cells)``).
    batch_size
        Training mini-batch size. Batches larger than 128 train with Adam's learning rate
        scaled by ``sqrt(batch_size / 128)`` (cap ``1e-2``), see
        :func:`~bonemet.tl.scaled_learning_rate`.
    early_stopping
        scvi-tools early stopping on the validation ELBO (``elbo_validation``, checked
        every epoch on the 10% validation split; default on). Below 20k cells scvi-tools'
        heuristic trains 400 epochs; on Kang 2018, PBMC 4k and 2k generated cells early
        stopping ends at 211-256 of them with lineage and CD8-vs-CD4 accuracy and the
        integration score within 0.01 of 400 epochs (Kang at three seeds; 400 epochs
        alone vary by 0.004-0.013 between seeds; ``benchmarks/small_data_epochs.py``).
        Off when the data are too few for a validation split (under 10 cells).
    early_stopping_patience
        Epochs without a better validation ELBO before training stops (default 20;
        scvi-tools' own default is 45, which trained about 25 epochs more on those sets without
        better accuracy).
    accelerator
        ``"auto"``, ``"cpu"`` or ``"gpu"`` (raises :class:`~bonemet.ConfigError` without CUDA).
    fast_path
        ``"auto"``: device-resident data path on CUDA, stock loader on CPU; ``"on"``: always
        (also on CPU); ``"off"``: never.
    seed
        ``scvi.settings.seed`` and PCA/harmony seeds.
    model_dir
        Save the trained scVI model here (written to a temporary directory and renamed).
        Reload with ``scvi.model.SCVI.load(model_dir, adata=adata[:, adata.var.highly_variable].copy())``.
    use_highly_variable
        Train on ``var["highly_variable"]`` genes (all genes when the column is missing).
    allow_fallback
        Use harmony/PCA when scVI cannot run on the input instead of raising.
    n_pcs
        Principal components for ``obsm["X_pca"]`` (and harmony).
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` (or the copy when ``copy=True``). Writes

    * ``obsm["X_scVI"]`` (scVI), ``obsm["X_harmony"]`` (harmony), always ``obsm["X_pca"]``
      (PCA of the log-normalised HVGs; the before-integration view);
    * ``uns["bonemet"]["integrate"]``: ``method``, ``use_rep``, ``device``, ``epochs``,
      ``batch_size``, ``learning_rate``, ``fast_path`` (bool), ``train_seconds``,
      ``cells_per_s``, ``elbo_train``/``elbo_validation`` (final, per cell, when available);
    * ``uns["bonemet"]["warnings"]`` when a fallback was used.
    """
    if copy:
        adata = adata.copy()
    method = "pca" if method == "none" else method
    if method not in _METHODS:
        raise ConfigError(f"integrate method must be one of {', '.join(_METHODS)}, got {method!r}")
    if isinstance(fast_path, bool):
        fast_path = "on" if fast_path else "off"
    if fast_path not in ("auto", "on", "off"):
        raise ConfigError(f"fast_path must be 'auto', 'on' or 'off', got {fast_path!r}")
    if adata.n_obs < 3:
        raise InputError(f"integration needs at least 3 cells, got {adata.n_obs}")
    if batch_key not in adata.obs:
        raise InputError(
            f"batch_key {batch_key!r} is not a column of obs (columns: "
            f"{', '.join(map(str, adata.obs.columns)) or 'none'}); set integrate.batch_key"
        )
    if adata.obs[batch_key].isna().any():
        raise InputError(f"obs[{batch_key!r}] has missing values; every cell needs a batch")

    genes: np.ndarray | None = None
    if use_highly_variable:
        if "highly_variable" in adata.var:
            genes = np.flatnonzero(adata.var["highly_variable"].to_numpy(dtype=bool))
            if genes.size == 0:
                raise InputError(
                    "var['highly_variable'] selects no gene; run normalize (HVG selection) "
                    "again or pass use_highly_variable=False"
                )
        else:
            logger.info("no var['highly_variable']; integrating on all %d genes", adata.n_vars)

    n_batches = adata.obs[batch_key].nunique()
    meta = bonemet_uns(adata)
    seed = int(seed)

    # the before-integration view (and the base of harmony/PCA)
    adata.obsm["X_pca"] = _compute_pca(adata, genes, n_pcs, seed)

    info: dict[str, Any]
    if method == "scvi":
        problem = _counts_problem(adata, layer)
        if problem is not None:
            if not allow_fallback:
                raise NotCountsError(
                    f"scVI needs raw integer counts but {problem}; give raw counts (counts "
                    "layer) or choose integrate.method harmony/pca (or allow non-count input)"
                )
            fb = "harmony" if n_batches > 1 else "pca"
            add_warning(adata, f"scVI skipped: {problem}; integrated with {fb} on PCA instead")
            method = fb
    if method == "scvi":
        info = _run_scvi(
            adata,
            genes,
            batch_key=batch_key,
            layer=layer,
            n_latent=n_latent,
            n_hidden=n_hidden,
            n_layers=n_layers,
            gene_likelihood=gene_likelihood,
            max_epochs=max_epochs,
            batch_size=batch_size,
            early_stopping=early_stopping,
            early_stopping_patience=early_stopping_patience,
            accelerator=accelerator,
            fast_path=fast_path,
            seed=seed,
            model_dir=model_dir,
        )
    else:
        t0 = time.perf_counter()
        if method == "harmony" and n_batches > 1:
            adata.obsm["X_harmony"] = _harmony(adata.obsm["X_pca"], adata.obs[batch_key], seed)
            use_rep = "X_harmony"
        else:
            if method == "harmony":
                logger.info("one batch only: harmony has nothing to correct; using PCA")
            method, use_rep = "pca", "X_pca"
        info = {
            "method": method,
            "use_rep": use_rep,
            "device": "cpu",
            "fast_path": False,
            "train_seconds": round(time.perf_counter() - t0, 3),
            "n_batches": int(n_batches),
        }
    info["n_pcs"] = int(adata.obsm["X_pca"].shape[1])
    meta["integrate"] = info
    meta["device"] = info["device"]
    logger.info(
        "integrate: %s -> obsm[%r] (%s)",
        info["method"],
        info["use_rep"],
        f"{info.get('cells_per_s', 0):,.0f} cells/s" if info["method"] == "scvi" else "cpu",
    )
    return adata if copy else None
