"""Logging and progress for bonemet (rich-based, silenced by ``quiet``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import TypeVar

logger = logging.getLogger("bonemet")
_T = TypeVar("_T")
_state = {"quiet": False}

__all__ = ["logger", "progress", "set_quiet", "is_quiet"]


def set_quiet(quiet: bool = True) -> None:
    """Silence (``quiet=True``) or restore bonemet's log lines and progress bars."""
    _state["quiet"] = bool(quiet)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def is_quiet() -> bool:
    return _state["quiet"]


def setup_cli_logging(quiet: bool = False) -> None:
    """Attach a rich handler to the ``bonemet`` logger (CLI only)."""
    from rich.console import Console
    from rich.logging import RichHandler

    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        # log lines and warnings go to stderr; stdout carries only what a command prints
        handler = RichHandler(
            console=Console(stderr=True), show_path=False, markup=False, rich_tracebacks=False
        )
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
        logger.addHandler(handler)
        logger.propagate = False
    set_quiet(quiet)


def progress(iterable: Iterable[_T], *, description: str, total: int | None = None) -> Iterator[_T]:
    """Iterate with a rich progress bar unless quiet."""
    if is_quiet():
        yield from iterable
        return
    from rich.progress import track

    yield from track(iterable, description=description, total=total, transient=True)


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Log the start and the duration of a step."""
    import time

    t0 = time.perf_counter()
    logger.info("%s …", name)
    yield
    logger.info("%s done in %.1f s", name, time.perf_counter() - t0)
