"""Exceptions raised by bonemet.

Every error carries a message that says what was wrong and what to do about it.
The CLI prints ``str(error)`` as one line and exits non-zero.
"""

from __future__ import annotations

__all__ = [
    "one_line",
    "BonemetError",
    "ConfigError",
    "DownloadError",
    "InputError",
    "NotCountsError",
    "StageError",
]


class BonemetError(Exception):
    """Base class of every error bonemet raises on purpose."""


class InputError(BonemetError, ValueError):
    """An input file or object is missing, malformed or unsupported."""


class NotCountsError(InputError):
    """A count-based step was given data that are not raw integer counts."""


class ConfigError(BonemetError, ValueError):
    """A configuration is invalid. The message lists every problem found."""


class DownloadError(BonemetError, OSError):
    """A download failed (HTTP error, truncated or corrupt file, checksum mismatch)."""


class StageError(BonemetError, RuntimeError):
    """A pipeline stage cannot go on (e.g. a sample lost every cell in QC)."""


def one_line(e: BaseException | str, *, limit: int | None = None) -> str:
    """``e``'s message on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    msg = " ".join(str(e).split())
    if limit is not None and len(msg) > limit:
        msg = msg[: limit - 3] + "..."
    return msg
