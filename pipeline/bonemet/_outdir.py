"""Ownership of an output folder by one run: the run lock, stale results, temporary files.

A run takes ``OUT/.bonemet/run.lock`` (its PID, host and start time) before it reads or
writes anything in ``OUT``, so a second run into the same folder stops with a message that
names the first. A lock whose process is gone (a killed run) is taken over. Holding the
lock, the run removes the temporary ``.part`` files that killed runs left behind, and moves
the previous run's final outputs to ``OUT/.bonemet/previous/`` before it recomputes any
stage, so a rerun that fails never leaves stale results looking current.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from ._errors import StageError
from ._logging import logger

__all__ = ["OutputLock", "FINAL_OUTPUTS", "clean_parts", "mark_stale", "drop_stale"]

#: what a finished run writes into its output folder (the model folder is a stage output)
FINAL_OUTPUTS = (
    "bonemet.h5ad",
    "report.html",
    "provenance.json",
    "config.yaml",
    "tables",
    "figures",
)
# the names of :func:`bonemet._utils.atomic_path` and ``tempfile.mkstemp``/``mkdtemp``
# temporaries: ".<final name>.<random>.part"
_PART = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.part$")


def _state_dir(out: Path) -> Path:
    return out / ".bonemet"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class OutputLock:
    """Exclusive lock on an output folder, held by this process.

    Parameters
    ----------
    out
        The output folder (created if missing). The lock file is ``out/.bonemet/run.lock``.

    Raises
    ------
    StageError
        From :meth:`acquire` when a live process holds the lock (the message names its PID).
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.path = _state_dir(self.out) / "run.lock"
        self._held = False

    def _holder(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: written by a run killed mid-write
        return info if isinstance(info, dict) else {}

    def acquire(self) -> OutputLock:
        """Take the lock; take over a lock whose process is gone."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released in between: try again
                pid = holder.get("pid")
                here = holder.get("host", me["host"]) == me["host"]
                if isinstance(pid, int) and (not here or _alive(pid)):
                    where = "" if here else f" on host {holder.get('host')}"
                    raise StageError(
                        f"output folder {str(self.out)!r} is in use by another bonemet run "
                        f"(PID {pid}{where}, started {holder.get('started', '?')}): wait for it "
                        f"to finish or use another output folder; if no such run exists, "
                        f"delete {str(self.path)!r}"
                    ) from None
                logger.warning(
                    "taking over the lock of a run that is gone (PID %s) in %s", pid, self.out
                )
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(me) + "\n")
            self._held = True
            return self
        raise StageError(
            f"cannot take the lock {str(self.path)!r}: another run keeps taking it; try again"
        )

    def release(self) -> None:
        """Remove the lock file if this process still holds it."""
        if not self._held:
            return
        self._held = False
        holder = self._holder()
        if holder and holder.get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def clean_parts(out: str | os.PathLike) -> int:
    """Remove the ``.part`` temporaries that killed runs left anywhere in ``out``.

    Call it only while holding :class:`OutputLock`: every such file then belongs to a run
    that is gone. Returns how many files and folders were removed.
    """
    out = Path(out)
    if not out.is_dir():
        return 0
    found = [p for p in out.rglob("*.part") if _PART.match(p.name)]
    n = 0
    for p in sorted(found, key=lambda q: len(q.parts)):
        if not os.path.lexists(p):
            continue  # inside a folder removed above
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    if n:
        logger.info("removed %d temporary file(s) left by an interrupted run in %s", n, out)
    return n


def _previous(out: Path) -> Path:
    return _state_dir(out) / "previous"


def mark_stale(out: str | os.PathLike) -> list[Path]:
    """Move the previous run's final outputs to ``out/.bonemet/previous/``.

    Called before a rerun recomputes its first stage: from then on those files no longer
    describe the folder's checkpoints. Files already moved by an earlier failed rerun stay
    where they are (they are the last finished results). Returns the paths moved.
    """
    out = Path(out)
    prev = _previous(out)
    moved = []
    for name in FINAL_OUTPUTS:
        src = out / name
        if not os.path.lexists(src):
            continue
        prev.mkdir(parents=True, exist_ok=True)
        dst = prev / name
        if os.path.lexists(dst):
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst)
            else:
                dst.unlink()
        os.replace(src, dst)
        moved.append(dst)
    if moved:
        logger.warning(
            "the previous results in %s are out of date and were moved to %s until this run "
            "finishes",
            out,
            prev,
        )
    return moved


def drop_stale(out: str | os.PathLike) -> None:
    """Remove ``out/.bonemet/previous/`` once a run has written current results."""
    prev = _previous(Path(out))
    if prev.exists():
        shutil.rmtree(prev, ignore_errors=True)
