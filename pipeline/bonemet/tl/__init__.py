"""Tools: integration, clustering, annotation, signature scoring, condition comparison."""

from __future__ import annotations

from typing import Any

from . import (
    _annotate,
    _annotate_eval,
    _axes,
    _cluster,
    _compare,
    _integrate,
    _ligrec,
    _readouts,
    _reference,
    _score,
)
from ._annotate import *  # noqa: F401,F403
from ._annotate_eval import *  # noqa: F401,F403
from ._axes import *  # noqa: F401,F403
from ._cluster import *  # noqa: F401,F403
from ._compare import *  # noqa: F401,F403
from ._integrate import *  # noqa: F401,F403
from ._ligrec import *  # noqa: F401,F403
from ._readouts import *  # noqa: F401,F403
from ._reference import *  # noqa: F401,F403
from ._score import *  # noqa: F401,F403

# The device-resident scVI data path imports scvi-tools (seconds, ~1 GB): load it on
# first use only, so `import bonemet` stays light.
_LAZY = (
    "DeviceBatchLoader",
    "DeviceDataSplitter",
    "DeviceDataStore",
    "gather_csr_rows",
    "plan_residency",
    "resolve_device",
    "scaled_learning_rate",
    "train_scvi_fast",
)

__all__ = [
    *_integrate.__all__,
    *_cluster.__all__,
    *_annotate.__all__,
    *_annotate_eval.__all__,
    *_reference.__all__,
    *_score.__all__,
    *_readouts.__all__,
    *_axes.__all__,
    *_compare.__all__,
    *_ligrec.__all__,
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import _scvi_fast

        return getattr(_scvi_fast, name)
    raise AttributeError(f"module 'bonemet.tl' has no attribute {name!r}")
