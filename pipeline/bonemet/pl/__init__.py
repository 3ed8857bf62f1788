"""Figures. Every function takes an AnnData and returns a matplotlib Figure."""

from __future__ import annotations

from . import _figures
from ._figures import *  # noqa: F401,F403

__all__ = [*_figures.__all__]
