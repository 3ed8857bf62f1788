"""The self-contained HTML report."""

from __future__ import annotations

from . import _html
from ._html import *  # noqa: F401,F403

__all__ = [*_html.__all__]
