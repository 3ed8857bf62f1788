"""The input formats bonemet reads: one list, used by the readers, the config, the CLI and
(through a test) the samplesheet schema.

This module is a leaf: it imports nothing of bonemet.
"""

from __future__ import annotations

__all__ = ["FORMATS", "FORMAT_ALIASES", "INPUT_FORMATS"]

#: formats accepted by :func:`bonemet.io.read`
FORMATS: tuple[str, ...] = ("auto", "10x_mtx", "10x_h5", "h5ad", "csv", "tsv")
#: every spelling the readers accept -> the format it means
FORMAT_ALIASES: dict[str, str] = {
    "mtx": "10x_mtx",
    "10x": "10x_mtx",
    "10x_mtx": "10x_mtx",
    "h5": "10x_h5",
    "10x_h5": "10x_h5",
    "h5ad": "h5ad",
    "csv": "csv",
    "tsv": "csv",
    "txt": "csv",
    "auto": "auto",
}
#: what ``input.format`` may say: a reader format, or a samplesheet of them
INPUT_FORMATS: tuple[str, ...] = (*FORMATS, "samplesheet")
