"""How the runner stores a merged stage's result in ``OUT/.bonemet/`` (lean checkpoints).

Three encodings keep the checkpoint folder small while resume stays exact:

* **Deltas.** A stage's lean checkpoint holds ``obs`` and ``var`` whole (small) and, of
  ``obsm``, ``obsp``, ``varm`` and ``uns``, only the keys whose content changed since the
  previous checkpoint (by a content fingerprint), with the full key order of each slot.
  Reading applies the chain of deltas, in order, to the last whole checkpoint.
* **Re-run gather stage.** The gather stage (merge + normalize) is cheap next to the
  per-sample checkpoints it reads, which are kept: its checkpoint holds its annotations and
  a fingerprint of its matrices, and reading runs the stage again on the per-sample
  checkpoint and checks the fingerprint (a mismatch makes the checkpoint unreadable, so
  the runner recomputes from there).
* **Derived X.** A whole checkpoint whose ``X`` is exactly ``log1p`` of CP-``target_sum``
  normalised ``layers["counts"]`` (checked before writing) is stored without ``X``, and
  ``X`` is recomputed, with the same code, on reading.

The bonemet version is part of every stage key, so a checkpoint is never read by other
code than the code that wrote it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._meta import bonemet_uns

#: uns key of the checkpoint encoding (never left in a returned object)
MARK = "bonemet_checkpoint"
SLOTS = ("obsm", "obsp", "varm")

Prints = dict[str, dict[str, str]]


def _feed(h: Any, v: Any) -> None:
    if isinstance(v, Mapping):
        h.update(b"{")
        for k in v:
            h.update(repr(k).encode())
            _feed(h, v[k])
        h.update(b"}")
    elif sp.issparse(v):
        m = v.tocsr()
        h.update(repr((type(v).__name__, m.shape, m.dtype.str)).encode())
        for part in (m.data, m.indices, m.indptr):
            h.update(np.ascontiguousarray(part).tobytes())
    elif isinstance(v, pd.DataFrame):
        h.update(repr((list(map(str, v.columns)), [str(d) for d in v.dtypes])).encode())
        h.update(repr(list(map(str, v.index))).encode())
        for c in v.columns:
            _feed(h, v[c])
    elif isinstance(v, pd.Series):
        h.update(repr((str(v.name), str(v.dtype), len(v))).encode())
        if isinstance(v.dtype, pd.CategoricalDtype):
            h.update(repr(list(v.cat.categories)).encode())
            h.update(np.ascontiguousarray(v.cat.codes.to_numpy()).tobytes())
        elif v.dtype.kind in "biufcmM":
            h.update(np.ascontiguousarray(v.to_numpy()).tobytes())
        else:
            h.update(repr(v.tolist()).encode())
    elif isinstance(v, np.ndarray):
        h.update(repr((v.shape, v.dtype.str)).encode())
        if v.dtype.kind == "O" or v.dtype.kind in "US":
            h.update(repr(v.tolist()).encode())
        else:
            h.update(np.ascontiguousarray(v).tobytes())
    elif isinstance(v, (list, tuple)):
        h.update(b"[")
        for x in v:
            _feed(h, x)
        h.update(b"]")
    else:
        h.update(repr((type(v).__name__, v)).encode())


def fingerprint(v: Any) -> str:
    """A content hash of an AnnData slot value (arrays, sparse, frames, nested dicts)."""
    h = hashlib.sha1(usedforsecurity=False)
    _feed(h, v)
    return h.hexdigest()


def prints(adata: ad.AnnData) -> Prints:
    """Fingerprints of every key of ``obsm``, ``obsp``, ``varm`` and ``uns``."""
    out = {slot: {k: fingerprint(v) for k, v in getattr(adata, slot).items()} for slot in SLOTS}
    out["uns"] = {k: fingerprint(v) for k, v in adata.uns.items() if k != MARK}
    return out


def matrix_print(adata: ad.AnnData) -> str:
    """A content hash of ``X`` and every layer."""
    return fingerprint({"X": adata.X, **{f"layer:{k}": v for k, v in adata.layers.items()}})


def stub(adata: ad.AnnData) -> tuple[ad.AnnData, Prints]:
    """The gather stage's checkpoint: every annotation, and the matrices' fingerprint."""
    lean, now = delta(adata, {})
    lean.uns[MARK]["matrices"] = matrix_print(adata)
    return lean, now


def check_rerun(adata: ad.AnnData, stub_part: ad.AnnData) -> None:
    """Raise when a re-run gather stage did not reproduce the matrices it checkpointed."""
    want = stub_part.uns.get(MARK, {}).get("matrices")
    if want is None or matrix_print(adata) != want:
        raise ValueError("the gather stage run again did not reproduce its checkpointed matrices")


def is_stub(part: ad.AnnData) -> bool:
    """Whether a checkpoint read back is a gather stage's stub (see :func:`stub`)."""
    return "matrices" in part.uns.get(MARK, {})


def delta(adata: ad.AnnData, before: Prints) -> tuple[ad.AnnData, Prints]:
    """The lean checkpoint of ``adata`` against the fingerprints of the previous one."""
    now = prints(adata)

    def changed(slot: str, values: Mapping[str, Any]) -> dict[str, Any]:
        old = before.get(slot, {})
        return {k: values[k] for k in values if k != MARK and old.get(k) != now[slot][k]}

    order = {slot: list(now[slot]) for slot in (*SLOTS, "uns")}
    uns = changed("uns", adata.uns)
    uns[MARK] = {"delta": True, "order": order}
    lean = ad.AnnData(
        obs=adata.obs,
        var=adata.var,
        obsm=changed("obsm", adata.obsm),
        obsp=changed("obsp", adata.obsp),
        varm=changed("varm", adata.varm),
        uns=uns,
    )
    return lean, now


def apply(adata: ad.AnnData, lean: ad.AnnData) -> None:
    """Make ``adata``'s annotations those recorded by a lean checkpoint (in place)."""
    mark = lean.uns.get(MARK)
    adata.obs = lean.obs
    adata.var = lean.var
    if mark is None:  # a whole-annotation lean checkpoint: keys it lacks are removed
        order = {slot: list(getattr(lean, slot)) for slot in SLOTS}
        order["uns"] = list(lean.uns)
    else:
        order = {k: [str(x) for x in v] for k, v in mark["order"].items()}
    for slot in SLOTS:
        mine, theirs = getattr(adata, slot), getattr(lean, slot)
        merged = {k: (theirs[k] if k in theirs else mine[k]) for k in order[slot]}
        for key in list(mine):
            del mine[key]
        for key, v in merged.items():
            mine[key] = v
    adata.uns = {k: (lean.uns[k] if k in lean.uns else adata.uns[k]) for k in order["uns"]}


def _lognorm(adata: ad.AnnData) -> Any | None:
    """``log1p`` of CP-``target_sum`` normalised ``layers["counts"]``, as normalize writes it;
    None when normalize did not derive X from counts."""
    import scanpy as sc

    params = bonemet_uns(adata, create=False).get("parameters", {}).get("normalize", {})
    if not params or not params.get("is_counts") or "counts" not in adata.layers:
        return None
    tmp = ad.AnnData(X=sp.csr_matrix(adata.layers["counts"], dtype=np.float32, copy=True))
    sc.pp.normalize_total(tmp, target_sum=float(params["target_sum"]))
    sc.pp.log1p(tmp)
    return sp.csr_matrix(tmp.X, dtype=np.float32)


def _same(a: Any, b: Any) -> bool:
    if not (sp.issparse(a) and sp.issparse(b)) or a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.tocsr(), b.tocsr()
    a.sort_indices()
    b.sort_indices()
    return bool(
        np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
        and np.array_equal(a.data, b.data)
    )


def whole(adata: ad.AnnData) -> ad.AnnData:
    """The whole checkpoint of ``adata``: without ``X`` when X is derivable from counts."""
    derived = _lognorm(adata) if sp.issparse(adata.X) else None
    if derived is None or not _same(derived, adata.X):
        return adata
    return ad.AnnData(
        obs=adata.obs,
        var=adata.var,
        layers=dict(adata.layers),
        obsm=dict(adata.obsm),
        obsp=dict(adata.obsp),
        varm=dict(adata.varm),
        uns={**adata.uns, MARK: {"x": "log1p_cp_counts"}},
    )


def is_whole(part: ad.AnnData) -> bool:
    """Whether a checkpoint read back holds the matrices (X, or X derivable)."""
    mark = part.uns.get(MARK, {})
    return part.X is not None or mark.get("x") == "log1p_cp_counts"


def restore(part: ad.AnnData) -> ad.AnnData:
    """A whole checkpoint read back, with a derived X recomputed and the mark removed."""
    mark = part.uns.pop(MARK, None)
    if mark is not None and mark.get("x") == "log1p_cp_counts":
        x = _lognorm(part)
        assert x is not None
        part.X = x
    return part
