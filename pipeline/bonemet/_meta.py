"""The ``uns["bonemet"]`` record: one accessor and one warnings list.

Every stage records what it did under ``adata.uns["bonemet"]`` (version, species,
parameters, timings, QC records, gene-set coverage, warnings). :func:`bonemet_uns` is the
one way to reach it; :func:`add_warning` and :func:`warnings_of` the one way to write and
read the warnings, which an ``.h5ad`` round trip turns from a list into an array.

This module is a leaf: it imports nothing of bonemet but logging.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MIMICRY_KEY", "bonemet_uns", "add_warning", "warnings_of"]

#: uns key of the per-sample erythroid-mimicry table that the score stage keeps for the report
MIMICRY_KEY = "bonemet_erythroid_mimicry"


def bonemet_uns(adata: Any, *, create: bool = True) -> dict[str, Any]:
    """``adata.uns["bonemet"]`` (created empty when ``create``; else ``{}`` when absent)."""
    if create:
        return adata.uns.setdefault("bonemet", {})
    meta = adata.uns.get("bonemet", {})
    return meta if isinstance(meta, dict) else {}


def warnings_of(adata: Any) -> list[str]:
    """The recorded warnings as a list of strings (whatever an h5ad round trip made of it)."""
    warns = bonemet_uns(adata, create=False).get("warnings", [])
    if hasattr(warns, "tolist"):
        warns = warns.tolist()
    if isinstance(warns, str):
        warns = [warns]
    return [str(w) for w in warns]


def add_warning(adata: Any, msg: str) -> None:
    """Append ``msg`` to ``uns["bonemet"]["warnings"]`` (once) and log it."""
    from ._logging import logger

    warns = warnings_of(adata)
    if msg not in warns:
        warns.append(msg)
    bonemet_uns(adata)["warnings"] = warns
    logger.warning(msg)
