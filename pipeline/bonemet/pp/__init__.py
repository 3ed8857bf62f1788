"""Preprocessing: QC, merging, normalisation and highly variable genes."""

from __future__ import annotations

from . import _merge, _normalize, _qc
from ._merge import *  # noqa: F401,F403
from ._normalize import *  # noqa: F401,F403
from ._qc import *  # noqa: F401,F403

__all__ = [*_qc.__all__, *_normalize.__all__, *_merge.__all__]
