"""Reading counts: files, samplesheets, GEO series."""

from __future__ import annotations

from . import _geo, _read, _samplesheet
from ._geo import *  # noqa: F401,F403
from ._read import *  # noqa: F401,F403
from ._samplesheet import *  # noqa: F401,F403

__all__ = [*_read.__all__, *_samplesheet.__all__, *_geo.__all__]
