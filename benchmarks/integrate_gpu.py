#!/usr/bin/env python
"""Issue-7 benchmark: stock scvi-tools vs bonemet's device-resident scVI data path.

For each generated data set (known truth: cell type and batch; default 200k and 1M cells x
2,000 genes, 4 batches) and for the Kang PBMC set (``../shared/data``, real cells, quality
only) it trains the same :class:`scvi.model.SCVI` architecture with

* ``stock_bs128``  – ``SCVI.train(batch_size=128)``, scvi-tools defaults (lr 1e-3);
* ``stock_bs1024`` – ``SCVI.train(batch_size=1024)``, lr 1e-3;
* ``fast_bs1024``, ``fast_bs4096`` – bonemet's path (:func:`bonemet.tl.train_scvi_fast`)
  with bonemet's learning-rate rule (:func:`bonemet.tl.scaled_learning_rate`),

and records per run: training cells/s (training batches only, CUDA-synchronised per
epoch), wall time, validation ELBO after every epoch and the wall time at which it first
reached ``stock_bs1024``'s final validation ELBO, peak GPU memory, and integration quality of
the embedding.

Quality: :func:`bonemet.pl.integration_metrics_table` on one random subsample
(``--metric-cells``) shared by all runs, with a PCA of the log-normalised counts as the
unintegrated reference: scib-metrics' ``Benchmarker`` (batch correction, bio conservation,
total; raw scores) when the ``metrics`` extra is installed, otherwise the table's documented
sklearn fallback (see ``bonemet/pl/_metrics.py``). ``quality_method`` in the JSON says which.

Output: ``benchmarks/results/<date>-<gpu>.json`` (``--out`` to change) with top-level
``device``, ``cells``, ``cells_per_s``, ``speedup_vs_stock_bs1024`` (wall time to the same
validation ELBO), ``scib_total_delta_vs_stock`` (bonemet path minus stock, on the headline
data set) and every run under ``datasets``. Results of several invocations on the same
date/GPU are merged (run 200k and 1M separately if one call must stay short).

Usage::

    .venv/bin/python benchmarks/integrate_gpu.py                  # 200k + 1M + Kang on CUDA
    .venv/bin/python benchmarks/integrate_gpu.py --sizes 200000   # one size
    .venv/bin/python benchmarks/integrate_gpu.py --smoke          # tiny, CPU, checks the script

Where scib-metrics cannot be installed (jaxlib's wheel alone is larger than what
``benchmarks/gpu_session.sh`` can carry to a GPU machine), ``--save-embeddings DIR`` keeps
each data set's metric subsample, and ``--rescore RESULT.json`` scores it again with
scib-metrics on another machine and updates the file's quality fields.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pipeline"))

import torch  # noqa: E402

KANG = ROOT.parent / "shared" / "data" / "kang2018_pbmc_ifnb.h5ad"
RUNS_DEFAULT = ("stock_bs128", "stock_bs1024", "fast_bs1024", "fast_bs4096")
HEADLINE_FAST = "fast_bs4096"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def nb_dataset(n_cells: int, n_genes: int, *, n_batches: int = 4, n_types: int = 12, seed: int = 0):
    """Negative-binomial counts with known cell types and multiplicative batch effects.

    Each type has a log-normal expression programme over a shared baseline; each batch scales
    genes by a log-normal factor (sd 0.4) and shifts library size; library sizes are
    log-normal around ~1,500 UMIs over the 2,000 genes (10x-like after HVG selection).
    Generated in chunks with torch (on CUDA when available), stored as float32 CSR.
    """
    import anndata as ad

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator(device=dev)
    g.manual_seed(seed)
    rng = np.random.default_rng(seed)
    base = rng.gamma(0.4, 1.0, size=n_genes)
    base /= base.sum()
    prog = np.exp(
        rng.normal(0, 1.2, size=(n_types, n_genes)) * (rng.random((n_types, n_genes)) < 0.15)
    )
    beff = np.exp(rng.normal(0, 0.4, size=(n_batches, n_genes)))
    lib_shift = np.exp(rng.normal(0, 0.3, size=n_batches))
    type_p = rng.dirichlet(np.full(n_types, 3.0))
    types = rng.choice(n_types, size=n_cells, p=type_p)
    batches = rng.integers(0, n_batches, size=n_cells)
    lib = np.exp(rng.normal(math.log(1500), 0.35, size=n_cells)) * lib_shift[batches]
    prof = base[None, :] * prog  # (types, genes)
    theta = 5.0
    chunks = []
    step = 50_000
    prof_t = torch.as_tensor(prof, dtype=torch.float32, device=dev)
    beff_t = torch.as_tensor(beff, dtype=torch.float32, device=dev)
    for s in range(0, n_cells, step):
        e = min(n_cells, s + step)
        t_idx = torch.as_tensor(types[s:e], device=dev)
        b_idx = torch.as_tensor(batches[s:e], device=dev)
        mu = prof_t[t_idx] * beff_t[b_idx]
        mu = (
            mu
            / mu.sum(1, keepdim=True)
            * torch.as_tensor(lib[s:e, None], dtype=torch.float32, device=dev)
        )
        gam = torch._standard_gamma(torch.full_like(mu, theta), generator=g) * (mu / theta)
        x = torch.poisson(gam, generator=g).to_sparse_csr().cpu()
        chunks.append(
            sp.csr_matrix(
                (x.values().numpy(), x.col_indices().numpy(), x.crow_indices().numpy()),
                shape=(e - s, n_genes),
            )
        )
    x = sp.vstack(chunks, format="csr").astype(np.float32)
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical([f"b{i}" for i in batches]),
            "label": pd.Categorical([f"t{i}" for i in types]),
        },
        index=[f"c{i}" for i in range(n_cells)],
    )
    adata = ad.AnnData(obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
    adata.layers["counts"] = x
    return adata


def bonemet_dataset(n_cells: int, n_genes: int, seed: int = 0):
    """``bm.datasets.simulate_bone_metastasis`` restricted to ``n_genes`` HVGs (seurat_v3)."""
    import scanpy as sc

    import bonemet as bm

    adata = bm.datasets.simulate_bone_metastasis(n_cells=n_cells, n_samples=4, seed=seed)
    adata.layers["counts"] = sp.csr_matrix(adata.X, dtype=np.float32)
    sc.pp.highly_variable_genes(adata, n_top_genes=n_genes, flavor="seurat_v3", layer="counts")
    adata = adata[:, adata.var["highly_variable"]].copy()
    adata.obs["batch"] = adata.obs["sample"].astype("category")
    adata.obs["label"] = adata.obs["true_population"].astype("category")
    return adata


def kang_dataset():
    import anndata as ad

    adata = ad.read_h5ad(KANG)
    adata.layers["counts"] = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.obs["batch"] = adata.obs["sample"].astype(str).astype("category")
    adata.obs["label"] = adata.obs["cell_type"].astype(str).astype("category")
    return adata


# ---------------------------------------------------------------------------------------------
# training with timing
# ---------------------------------------------------------------------------------------------
def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _make_callback(target: float | None, min_epochs: int):
    from lightning.pytorch.callbacks import Callback

    class Recorder(Callback):
        """Per-epoch training time, validation ELBO, and stop once ``target`` is reached."""

        def __init__(self) -> None:
            self.t0 = time.perf_counter()
            self.epoch_start = 0.0
            self.train_s: list[float] = []
            self.elbo: list[float] = []
            self.wall: list[float] = []
            self.reached_at: float | None = None
            self._train_end_marked = False

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            _sync()
            self.epoch_start = time.perf_counter()
            self._train_end_marked = False

        def _mark_train_end(self) -> None:
            if not self._train_end_marked:
                _sync()
                self.train_s.append(time.perf_counter() - self.epoch_start)
                self._train_end_marked = True

        def on_validation_start(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking:
                self._mark_train_end()

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking:
                return
            v = trainer.callback_metrics.get("elbo_validation")
            if v is None:
                return
            _sync()
            now = time.perf_counter() - self.t0
            self.elbo.append(float(v))
            self.wall.append(now)
            if target is not None and self.reached_at is None and float(v) <= target:
                self.reached_at = now
            if (
                target is not None
                and self.reached_at is not None
                and trainer.current_epoch + 1 >= min_epochs
            ):
                trainer.should_stop = True

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self._mark_train_end()

    return Recorder()


def train_run(
    adata,
    name: str,
    *,
    epochs: int,
    max_epochs: int,
    target: float | None,
    arch: dict[str, Any],
    accelerator: str,
    seed: int,
) -> tuple[dict[str, Any], np.ndarray]:
    import scvi

    from bonemet.tl import scaled_learning_rate, train_scvi_fast

    kind, bs = re.fullmatch(r"(stock|fast)_bs(\d+)", name).groups()
    bs = int(bs)
    scvi.settings.seed = seed
    model = scvi.model.SCVI(adata, **arch)
    cb = _make_callback(target, epochs)
    n_train_est = math.ceil(0.9 * adata.n_obs)
    common = {
        "max_epochs": max_epochs,
        "check_val_every_n_epoch": 1,
        "callbacks": [cb],
        "enable_progress_bar": False,
        "log_every_n_steps": max(1, min(10, n_train_est // bs)),
    }
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    _sync()
    t0 = time.perf_counter()
    cb.t0 = t0
    if kind == "stock":
        model.train(
            batch_size=bs,
            accelerator="gpu" if accelerator == "cuda" else "cpu",
            **common,
        )
        lr = 1e-3
        n_train = len(model.train_indices)
    else:
        lr = scaled_learning_rate(bs)
        dm = train_scvi_fast(
            model,
            batch_size=bs,
            accelerator="gpu" if accelerator == "cuda" else "cpu",
            plan_kwargs={"lr": lr},
            **common,
        )
        n_train = dm.n_train
    _sync()
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    train_s = float(np.sum(cb.train_s)) if cb.train_s else wall
    epochs_run = len(cb.train_s) or 1
    emb = model.get_latent_representation()
    res = {
        "kind": kind,
        "batch_size": bs,
        "learning_rate": lr,
        "epochs": epochs_run,
        "n_train": int(n_train),
        "wall_s": round(wall, 3),
        "train_s": round(train_s, 3),
        "cells_per_s": round(n_train * epochs_run / max(train_s, 1e-9), 1),
        "elbo_validation": [round(v, 4) for v in cb.elbo],
        "elbo_wall_s": [round(v, 3) for v in cb.wall],
        "final_elbo_validation": cb.elbo[-1] if cb.elbo else None,
        "time_to_target_s": None if cb.reached_at is None else round(cb.reached_at, 3),
        "peak_gpu_mem_gb": round(peak / 2**30, 3),
    }
    log(
        f"  {name}: {res['cells_per_s']:,.0f} cells/s, {epochs_run} epochs, wall {wall:.1f} s, "
        f"val ELBO {res['final_elbo_validation']}, to target {res['time_to_target_s']}"
    )
    del model
    return res, emb


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def metric_subsample(
    adata, embeddings: dict[str, np.ndarray], *, metric_cells: int, seed: int
) -> dict[str, np.ndarray]:
    """One random subsample shared by all runs: batch, label, each embedding, and ``X_pca``.

    ``X_pca`` (30 PCs of the log-normalised counts of the subsample) is the unintegrated
    reference of scib-metrics' ``pcr_comparison``.
    """
    import anndata as ad
    import scanpy as sc

    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(adata.n_obs, min(adata.n_obs, metric_cells), replace=False))
    a = ad.AnnData(X=sp.csr_matrix(adata.layers["counts"][sub], dtype=np.float32))
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    arrays = {
        # unicode, not object arrays: np.load reads them without pickle
        "batch": np.asarray(adata.obs["batch"].astype(str).to_numpy()[sub], dtype=str),
        "label": np.asarray(adata.obs["label"].astype(str).to_numpy()[sub], dtype=str),
        "X_pca": sc.pp.pca(a.X, n_comps=30, random_state=seed).astype(np.float32),
    }
    for k, e in embeddings.items():
        arrays[k] = np.asarray(e, dtype=np.float32)[sub]
    return arrays


def quality(arrays: dict[str, np.ndarray], *, seed: int) -> dict:
    """Metrics of each embedding of :func:`metric_subsample`'s arrays.

    :func:`bonemet.pl.integration_metrics_table` with scib-metrics' full default set when
    it is installed, else the table's sklearn fallback. If scib-metrics is installed but
    fails, the error is recorded and the fallback used.
    """
    import anndata as ad

    from bonemet.pl import integration_metrics_table

    names = [k for k in arrays if k not in ("batch", "label", "X_pca")]
    n = len(arrays["batch"])
    a = ad.AnnData(
        obs=pd.DataFrame(
            {"batch": arrays["batch"].astype(str), "label": arrays["label"].astype(str)},
            index=[f"c{i}" for i in range(n)],
        )
    )
    for k in ("X_pca", *names):
        a.obsm[k] = np.asarray(arrays[k])
    kw = {
        "label_key": "label",
        "batch_key": "batch",
        "bases": ["X_pca", *names],
        "max_cells": n,
        "preset": "full",  # scib-metrics' default metric set
        "n_jobs": os.cpu_count() or 1,
        "seed": seed,
    }
    out: dict[str, Any] = {"n_cells": int(n)}
    t0 = time.perf_counter()
    try:
        df = integration_metrics_table(a, **kw)
    except Exception as e:  # scib present but failed: record why, use the fallback
        out["scib_error"] = f"{type(e).__name__}: {e}"[:300]
        df = integration_metrics_table(a, backend="sklearn-fallback", **kw)
    out["method"] = str(df["metrics_backend"].iloc[0])
    out["metrics_s"] = round(time.perf_counter() - t0, 1)
    for key, row_name in {"X_pca": "unintegrated (X_pca)", **{k: k for k in names}}.items():
        row = df.loc[row_name]
        out[key] = {  # NaN (not computed, e.g. leiden here) left out: the JSON stays strict
            str(c): float(v)
            for c, v in row.items()
            if c != "n_cells" and _isnum(v) and math.isfinite(float(v))
        }
    return out


def apply_quality(ds: dict[str, Any], q: dict[str, Any]) -> None:
    """Put ``q`` (from :func:`quality`) into a dataset record, with the deltas vs stock."""
    runs = ds["runs"]
    stock_key = "stock_bs128" if "stock_bs128" in q else "stock_bs1024"
    for name in runs:
        runs[name].pop("quality", None)
        runs[name].pop("scib_total_delta_vs_stock", None)
        if name in q:
            runs[name]["quality"] = q[name]
            runs[name]["scib_total_delta_vs_stock"] = round(
                q[name]["total"] - q[stock_key]["total"], 4
            )
    ds.pop("scib_error", None)
    ds.update(
        {
            "quality_method": q["method"],
            "quality_cells": q["n_cells"],
            "quality_s": q["metrics_s"],
            "quality_reference": stock_key,
            "quality_unintegrated": q["X_pca"],
            **({"scib_error": q["scib_error"]} if "scib_error" in q else {}),
        }
    )


def _dist_versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _isnum(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
def bench_dataset(
    adata, tag: str, args, *, runs: list[str], epochs: int, arch, accelerator
) -> dict:
    import scvi

    scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key="batch")
    log(
        f"{tag}: {adata.n_obs:,} cells x {adata.n_vars:,} genes, {adata.obs['batch'].nunique()} batches"
    )
    results: dict[str, Any] = {}
    embs: dict[str, np.ndarray] = {}
    # the reference first: its final validation ELBO is the target for the others
    order = ["stock_bs1024"] + [r for r in runs if r != "stock_bs1024"]
    target = None
    for name in order:
        if name not in runs and name != "stock_bs1024":
            continue
        e = epochs
        if name == "stock_bs128" and adata.n_obs > args.stock128_max_cells:
            e = 1  # throughput only: a full stock batch-128 run is too long at this size
        res, emb = train_run(
            adata,
            name,
            epochs=e,
            max_epochs=e if name.startswith("stock") else max(e, args.max_epoch_factor * e),
            target=None if name == "stock_bs1024" else target,
            arch=arch,
            accelerator=accelerator,
            seed=args.seed,
        )
        if name == "stock_bs1024":
            target = res["final_elbo_validation"]
            res["time_to_target_s"] = res["wall_s"]
        results[name] = res
        if not (name == "stock_bs128" and e < epochs):
            embs[name] = emb
    ref = results["stock_bs1024"]
    for name, res in results.items():
        t = res.get("time_to_target_s")
        res["speedup_vs_stock_bs1024"] = (
            round(ref["wall_s"] / t, 3) if t and name != "stock_bs1024" else None
        )
        res["cells_per_s_vs_stock_bs1024"] = round(res["cells_per_s"] / ref["cells_per_s"], 3)
    arrays = metric_subsample(adata, embs, metric_cells=args.metric_cells, seed=args.seed)
    ds: dict[str, Any] = {
        "cells": int(adata.n_obs),
        "genes": int(adata.n_vars),
        "batches": int(adata.obs["batch"].nunique()),
        "labels": int(adata.obs["label"].nunique()),
        "target_elbo_validation": target,
        "runs": results,
    }
    if args.save_embeddings is not None:
        # the metric subsample, to score again elsewhere (--rescore) where scib-metrics is
        args.save_embeddings.mkdir(parents=True, exist_ok=True)
        path = args.save_embeddings / f"{tag}-metric-subsample.npz"
        np.savez_compressed(path, **arrays)
        ds["embeddings_file"] = path.name
        log(f"  metric subsample saved to {path}")
    apply_quality(ds, quality(arrays, seed=args.seed))
    return ds


def rescore(path: Path, *, seed: int) -> int:
    """Score the saved metric subsamples of a result JSON again (here: with scib-metrics)."""
    record = json.loads(path.read_text())
    for tag, ds in record["datasets"].items():
        name = ds.get("embeddings_file")
        if not name:
            log(f"{tag}: no saved metric subsample; left as it is")
            continue
        with np.load(path.parent / name, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        q = quality(arrays, seed=seed)
        apply_quality(ds, q)
        ds["quality_scored_on"] = _here()
        log(f"{tag}: {q['method']} in {q['metrics_s']} s")
    summarise(record)
    record.setdefault("versions", {})["rescored_with"] = _dist_versions(
        "scib-metrics", "jax", "jaxlib"
    )
    _write_json(record, path)
    log(f"wrote {path}")
    return 0


def _here() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _write_json(record: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.part")
    tmp.write_text(json.dumps(record, indent=2, default=float) + "\n")
    os.replace(tmp, out)


def summarise(record: dict[str, Any]) -> None:
    """The headline fields of a result record, from its datasets."""
    gen = sorted(
        (k for k in record["datasets"] if k.startswith("generated_")),
        key=lambda k: abs(int(k.split("_")[1]) - 200_000),
    )
    head = record["datasets"][gen[0]] if gen else next(iter(record["datasets"].values()))
    fast_name = (
        HEADLINE_FAST
        if HEADLINE_FAST in head["runs"]
        else next((r for r in head["runs"] if r.startswith("fast")), "stock_bs1024")
    )
    fast = head["runs"][fast_name]
    record.update(
        {
            "cells": head["cells"],
            "headline_dataset": gen[0] if gen else None,
            "headline_run": fast_name,
            "cells_per_s": fast["cells_per_s"],
            "speedup_vs_stock_bs1024": fast.get("speedup_vs_stock_bs1024"),
            "scib_total_delta_vs_stock": fast.get("scib_total_delta_vs_stock"),
            "quality_method": head["quality_method"],
        }
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU: checks the script")
    p.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=5, help="epochs of the stock reference runs")
    p.add_argument(
        "--max-epoch-factor",
        type=int,
        default=2,
        help="fast runs may train up to this many times --epochs to reach the target",
    )
    p.add_argument(
        "--stock128-max-cells",
        type=int,
        default=200_000,
        help="above this, stock batch-128 runs 1 epoch (throughput only)",
    )
    p.add_argument("--runs", nargs="+", default=list(RUNS_DEFAULT))
    p.add_argument("--generator", choices=["nb", "bonemet"], default="nb")
    p.add_argument("--no-kang", action="store_true")
    p.add_argument(
        "--kang-epochs",
        type=int,
        default=200,
        help="epochs on the 1,556-cell Kang set (scvi-tools' heuristic gives 400)",
    )
    p.add_argument("--metric-cells", type=int, default=10_000)
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--save-embeddings",
        type=Path,
        default=None,
        metavar="DIR",
        help="save each data set's metric subsample (embeddings, labels, batches) as .npz here",
    )
    p.add_argument(
        "--rescore",
        type=Path,
        default=None,
        metavar="JSON",
        help="only score the saved metric subsamples of this result file again, and update it",
    )
    args = p.parse_args(argv)
    if args.rescore is not None:
        return rescore(args.rescore, seed=args.seed)

    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("scvi").setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)

    from bonemet.tl import resolve_device

    if args.smoke:
        args.sizes, args.genes, args.epochs, args.kang_epochs = [3000], 200, 2, 2
        args.metric_cells = 1500
        arch = {"n_latent": 10, "n_hidden": 32, "n_layers": 1}
        if args.accelerator == "auto":
            args.accelerator = "cpu"
    else:
        arch = {"n_latent": 30, "n_hidden": 128, "n_layers": 2, "gene_likelihood": "nb"}
    device = resolve_device(args.accelerator)
    if device.type == "cuda":
        dev_name = torch.cuda.get_device_name(device)
    else:
        dev_name = f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    log(f"device: {dev_name}; torch {torch.__version__}")

    datasets: dict[str, Any] = {}
    for n in args.sizes:
        t = time.perf_counter()
        if args.generator == "bonemet":
            adata = bonemet_dataset(n, args.genes, seed=args.seed)
        else:
            adata = nb_dataset(n, args.genes, seed=args.seed)
        log(f"generated {n:,} cells in {time.perf_counter() - t:.1f} s")
        datasets[f"generated_{n}"] = bench_dataset(
            adata,
            f"generated_{n}",
            args,
            runs=args.runs,
            epochs=args.epochs,
            arch=arch,
            accelerator=device.type,
        )
        del adata
    if not args.no_kang and KANG.exists():
        kang = kang_dataset()
        datasets["kang2018"] = bench_dataset(
            kang,
            "kang2018",
            args,
            runs=list(args.runs),
            epochs=args.kang_epochs,
            arch=arch,
            accelerator=device.type,
        )

    import scvi

    import bonemet

    gpu_tag = re.sub(r"[^A-Za-z0-9]+", "-", dev_name.split("(")[0]).strip("-").lower()
    if args.out is not None:
        out = args.out
    elif args.smoke:  # a check of the script, not a result: keep it out of the repository
        out = Path(tempfile.gettempdir()) / "bonemet-integrate-gpu-smoke.json"
    else:
        out = ROOT / "benchmarks" / "results" / f"{_dt.date.today().isoformat()}-{gpu_tag}.json"
    record: dict[str, Any] = {}
    if out.exists():
        record = json.loads(out.read_text())
    record.setdefault("datasets", {}).update(datasets)
    summarise(record)
    record.update(
        {
            "device": dev_name,
            "smoke": bool(args.smoke),
            "targets": {
                "cells_per_s_at_200k": 400_000,
                "speedup_vs_stock_bs1024": 5.0,
                "scib_total_delta_vs_stock_min": -0.01,
            },
            "versions": {
                "torch": torch.__version__,
                "scvi-tools": scvi.__version__,
                "bonemet": getattr(bonemet, "__version__", "?"),
                "python": platform.python_version(),
                **_dist_versions("scib-metrics", "jax", "jaxlib", "anndata", "scanpy"),
            },
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
    )
    _write_json(record, out)
    log(f"wrote {out}")
    log(
        f"headline {record['headline_dataset']} {record['headline_run']}: {record['cells_per_s']:,.0f} cells/s, "
        f"speed-up vs stock bs1024 (time to same val ELBO) {record['speedup_vs_stock_bs1024']}, "
        f"scib total delta {record['scib_total_delta_vs_stock']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
