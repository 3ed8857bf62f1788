"""The run's tables and the self-contained HTML report."""

from __future__ import annotations

from . import _html, _tables
from ._html import *  # noqa: F401,F403
from ._tables import *  # noqa: F401,F403

__all__ = [*_html.__all__, *_tables.__all__]
