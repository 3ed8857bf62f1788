"""scANVI reference mapping (scArches): build a labelled reference, map query cells onto it.

A reference is a :class:`scvi.model.SCANVI` saved to a directory, as scvi-tools writes it
(``model.pt``). :func:`build_scanvi_reference` makes one from any labelled AnnData with raw
counts (a public atlas, or a bonemet run you checked by hand) with the architecture scArches
surgery needs (layer norm, no batch norm, covariates encoded). ``bm.tl.annotate(adata,
scanvi_reference=DIR)`` then maps the query onto it (``SCANVI.load_query_data`` plus a short
query training, as in the scvi-tools reference-mapping tutorial) and uses its predictions to
refine the cells the markers leave unsure. Any SCANVI model saved by scvi-tools works as a
reference; one trained with batch norm maps less well (scvi-tools warns).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError
from .._logging import is_quiet, logger
from .._meta import add_warning

__all__ = ["build_scanvi_reference"]

# scArches surgery needs these (scvi-tools reference-mapping tutorial)
_ARCHES = {
    "use_layer_norm": "both",
    "use_batch_norm": "none",
    "encode_covariates": True,
    "dropout_rate": 0.2,
    "n_layers": 2,
}
_MIN_GENE_OVERLAP = 0.5  # below this a query cannot be mapped (wrong species / gene ids)
_WARN_GENE_OVERLAP = 0.8
_MIN_LABEL_CELLS = 3  # scvi-tools warns below this


def _trainer_kwargs(n_obs: int, accelerator: str) -> dict[str, Any]:
    """The pipeline's lightning settings plus the device (clear error for gpu without CUDA)."""
    from ._integrate import _trainer_kwargs as lightning_kwargs
    from ._scvi_fast import resolve_device

    device = resolve_device(accelerator)
    return {"accelerator": "gpu" if device.type == "cuda" else "cpu", **lightning_kwargs(n_obs)}


def _counts(adata: ad.AnnData, layer: str | None) -> sp.csr_matrix:
    """Raw integer counts from ``layers[layer]`` (or ``X``), or a clear error."""
    from ._integrate import _counts_problem

    use = layer if layer is not None and layer in adata.layers else None
    why = _counts_problem(adata, use)
    if why is not None:
        raise InputError(
            f"scANVI needs raw counts but {why}; keep the counts in layers['counts'] "
            "(bm.pp.normalize does) or pass layer=None when X holds them"
        )
    x = adata.layers[use] if use is not None else adata.X
    return sp.csr_matrix(x, dtype=np.float32)


def build_scanvi_reference(
    adata: ad.AnnData,
    out: str | os.PathLike,
    *,
    label_key: str,
    batch_key: str | None = "sample",
    layer: str | None = "counts",
    n_top_genes: int = 2000,
    n_latent: int = 30,
    max_epochs: int | None = None,
    scanvi_max_epochs: int = 20,
    unlabeled_category: str = "Unknown",
    accelerator: str = "auto",
    seed: int = 0,
) -> Path:
    """Train a scANVI reference on labelled cells and save it to ``out``.

    Parameters
    ----------
    adata
        Labelled cells with raw counts in ``layers[layer]`` (or ``X`` when ``layer`` is
        ``None`` or absent). Not modified.
    out
        Directory to write (replaced atomically if it exists).
    label_key
        ``obs`` column with the labels to transfer. bonemet maps them to its lineages when
        used with ``annotate``: its own vocabulary (``cell_type`` or ``population``) or
        common spellings (``T cells``, ``CD14+ Monocytes``, ``MNP``, ...).
    batch_key
        ``obs`` column with the batch (sample); ignored when absent or a single batch.
    n_top_genes
        Highly variable genes the reference uses (scanpy ``seurat_v3`` on the counts, with
        the same fall-backs as ``bm.pp.normalize``).
    max_epochs, scanvi_max_epochs
        scVI pre-training epochs (default: scvi-tools' heuristic) and scANVI epochs.
    unlabeled_category
        Label of cells without a label (kept out of training as labels).

    Returns
    -------
    The directory written. Load it with ``scvi.model.SCANVI.load(out, adata=...)`` or pass
    it to ``bm.tl.annotate(..., scanvi_reference=out)``.
    """
    import scanpy as sc
    import scvi

    from ..pp._normalize import _hvg
    from ._integrate import _quiet_lightning, _save_model_atomic

    if label_key not in adata.obs:
        raise InputError(
            f"label_key {label_key!r} is not in adata.obs (columns: {list(adata.obs.columns)})"
        )
    labels = adata.obs[label_key].astype(object).where(adata.obs[label_key].notna())
    labels = labels.fillna(unlabeled_category).astype(str)
    sizes = labels[labels != unlabeled_category].value_counts()
    rare = sorted(sizes.index[sizes < _MIN_LABEL_CELLS])
    if rare:  # scANVI cannot learn a label from one or two cells
        logger.warning(
            "scANVI reference: labels with fewer than %d cells are left out: %s",
            _MIN_LABEL_CELLS,
            ", ".join(rare),
        )
        keep = ~labels.isin(rare).to_numpy()
        adata, labels = adata[keep], labels[keep]
    n_labels = labels[labels != unlabeled_category].nunique()
    if n_labels < 2:
        raise InputError(
            f"obs[{label_key!r}] has {n_labels} label(s) besides {unlabeled_category!r}; "
            "a reference needs at least two"
        )
    kw = _trainer_kwargs(adata.n_obs, accelerator)
    counts = _counts(adata, layer)
    lean = ad.AnnData(
        X=counts,
        obs=pd.DataFrame({"label": labels.to_numpy()}, index=adata.obs_names.astype(str)),
        var=pd.DataFrame(index=adata.var_names.astype(str)),
    )
    use_batch = batch_key is not None and batch_key in adata.obs
    if use_batch:
        lean.obs["batch"] = adata.obs[batch_key].astype(str).to_numpy()
        use_batch = lean.obs["batch"].nunique() > 1
    sc.pp.filter_genes(lean, min_cells=3)
    # the pipeline's HVG selection: seurat_v3 on counts, falling back when loess cannot fit
    lean.layers["counts"] = lean.X.copy()
    sc.pp.normalize_total(lean, target_sum=1e4)
    sc.pp.log1p(lean)
    _hvg(
        lean,
        n_top_genes=n_top_genes,
        flavor="seurat_v3",
        batch_key="batch" if use_batch else None,
        layer="counts",
    )
    lean = lean[:, lean.var["highly_variable"].to_numpy()].copy()
    lean.obs["label"] = lean.obs["label"].astype("category")
    with _quiet_lightning(is_quiet()) as interrupt_callbacks:
        scvi.settings.seed = seed
        scvi.model.SCVI.setup_anndata(
            lean, layer="counts", batch_key="batch" if use_batch else None, labels_key="label"
        )
        vae = scvi.model.SCVI(lean, n_latent=n_latent, **_ARCHES)
        t0 = time.perf_counter()
        # a fresh list per fit: scvi-tools' Trainer appends its own callbacks to the one given
        vae.train(max_epochs=max_epochs, callbacks=list(interrupt_callbacks), **kw)
        model = scvi.model.SCANVI.from_scvi_model(vae, unlabeled_category=unlabeled_category)
        model.train(
            max_epochs=int(scanvi_max_epochs),
            n_samples_per_label=100,
            callbacks=list(interrupt_callbacks),
            **kw,
        )
        secs = time.perf_counter() - t0
    path = _save_model_atomic(model, out)
    # scvi-tools' class-level store holds every AnnData set up: let the training copy go
    vae.deregister_manager(lean)
    model.deregister_manager(lean)
    logger.info(
        "scANVI reference: %d cells x %d genes, %d labels, %.0f s; saved to %s",
        lean.n_obs,
        lean.n_vars,
        n_labels,
        secs,
        path,
    )
    return path


def _load_reference(reference: Path) -> tuple[dict[str, Any], list[str]]:
    """The saved model's registry and gene names, from one read of ``model.pt``."""
    from scvi.model.base._save_load import _load_saved_files

    attr_dict, var_names, _, _ = _load_saved_files(str(reference), load_adata=False)
    return attr_dict["registry_"], [str(g) for g in var_names]


def scanvi_predict(
    adata: ad.AnnData,
    reference: str | os.PathLike,
    *,
    layer: str | None = "counts",
    batch_key: str = "sample",
    max_epochs: int = 100,
    accelerator: str = "auto",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Map ``adata`` onto a saved scANVI reference; per-cell label, probability and a record.

    Genes are matched to the reference case-insensitively (mouse data with upper-cased
    symbols still maps); reference genes the query lacks are zero, as
    ``SCANVI.prepare_query_anndata`` does. Fewer than half of the reference's genes is an
    error (wrong species or Ensembl ids vs symbols).
    """
    import scvi

    from ._integrate import _quiet_lightning

    ref = Path(reference)
    if not (ref / "model.pt").is_file():
        raise InputError(
            f"scANVI reference {str(ref)!r} not found (no model.pt in it); pass the directory "
            "written by bm.tl.build_scanvi_reference or scvi.model.SCANVI.save"
        )
    registry, ref_genes = _load_reference(ref)
    if registry.get("model_name") != "SCANVI":
        raise InputError(
            f"{str(ref)!r} holds a {registry.get('model_name')} model, not SCANVI; make a "
            "reference with bm.tl.build_scanvi_reference or scvi.model.SCANVI.from_scvi_model"
        )
    setup = registry["setup_args"]
    categorical = list(setup.get("categorical_covariate_keys") or ())
    continuous = list(setup.get("continuous_covariate_keys") or ())
    if missing := [k for k in (*categorical, *continuous) if k not in adata.obs]:
        raise InputError(
            f"the scANVI reference was trained with covariates {missing} that adata.obs lacks"
        )
    upper = {g.upper(): i for i, g in enumerate(adata.var_names.astype(str))}
    take = [(upper[g.upper()], g) for g in ref_genes if g.upper() in upper]
    overlap = len(take) / max(len(ref_genes), 1)
    if overlap < _MIN_GENE_OVERLAP:
        raise InputError(
            f"only {len(take)} of the scANVI reference's {len(ref_genes)} genes are in "
            f"adata.var_names (e.g. reference {ref_genes[:3]} vs data "
            f"{list(map(str, adata.var_names[:3]))}); the reference is of another species or "
            "uses other gene ids (symbols vs Ensembl)"
        )
    if overlap < _WARN_GENE_OVERLAP:
        add_warning(
            adata,
            f"scANVI reference: {len(take)} of {len(ref_genes)} reference genes found "
            f"({overlap:.0%}); the missing ones are set to zero and the mapping is less sure",
        )
    counts = _counts(adata, layer)
    cols = np.fromiter((j for j, _ in take), dtype=np.int64, count=len(take))
    obs = pd.DataFrame(index=adata.obs_names.astype(str))
    if setup.get("batch_key"):
        b = adata.obs[batch_key] if batch_key in adata.obs else pd.Series("query", index=obs.index)
        obs[setup["batch_key"]] = b.astype(str).to_numpy()
    for k in categorical:
        obs[k] = adata.obs[k].astype(str).to_numpy()
    for k in continuous:
        obs[k] = adata.obs[k].to_numpy()
    obs[setup["labels_key"]] = setup["unlabeled_category"]
    q = ad.AnnData(X=counts[:, cols], obs=obs, var=pd.DataFrame(index=[g for _, g in take]))
    if setup.get("layer"):
        q.layers[setup["layer"]] = q.X
    kw = _trainer_kwargs(q.n_obs, accelerator)
    with _quiet_lightning(is_quiet()) as interrupt_callbacks:
        scvi.settings.seed = seed
        scvi.model.SCANVI.prepare_query_anndata(q, str(ref))
        model = scvi.model.SCANVI.load_query_data(q, str(ref))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            # scArches freezes the reference's layers on purpose; lightning warns about it
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode")
            model.train(
                max_epochs=int(max_epochs),
                plan_kwargs={"weight_decay": 0.0},
                callbacks=list(interrupt_callbacks),
                **kw,
            )
        secs = time.perf_counter() - t0
        soft = model.predict(soft=True)
    model.deregister_manager(q)  # the class-level store would keep the query resident
    soft = soft.drop(columns=[setup["unlabeled_category"]], errors="ignore")
    P = soft.to_numpy(dtype=np.float32)
    best = P.argmax(axis=1)
    labels = soft.columns.astype(str).to_numpy()[best]
    prob = P[np.arange(P.shape[0]), best]
    info = {
        "reference": str(ref),
        "n_reference_genes": len(ref_genes),
        "n_genes_found": len(take),
        "max_epochs": int(max_epochs),
        "train_seconds": round(float(secs), 2),
        "reference_labels": list(map(str, soft.columns)),
    }
    return labels, prob, info
