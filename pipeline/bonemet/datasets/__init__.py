"""Built-in data: the bone-metastasis simulator and a small condition-design generator."""

from __future__ import annotations

from . import _design, _simulate
from ._design import *  # noqa: F401,F403
from ._simulate import *  # noqa: F401,F403

__all__ = [*_simulate.__all__, *_design.__all__]
