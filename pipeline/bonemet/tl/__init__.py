"""Tools: integration, clustering, annotation, signature scoring."""

from __future__ import annotations

from . import _annotate, _cluster, _integrate, _score, _scvi_fast
from ._annotate import *  # noqa: F401,F403
from ._cluster import *  # noqa: F401,F403
from ._integrate import *  # noqa: F401,F403
from ._score import *  # noqa: F401,F403
from ._scvi_fast import *  # noqa: F401,F403

__all__ = [*_integrate.__all__, *_scvi_fast.__all__, *_cluster.__all__, *_annotate.__all__, *_score.__all__]
