"""Built-in data: the bone-metastasis simulator."""

from __future__ import annotations

from . import _simulate
from ._simulate import *  # noqa: F401,F403

__all__ = [*_simulate.__all__]
