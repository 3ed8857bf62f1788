"""Small shared helpers: atomic writes, checksums, sample-id checks."""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._errors import InputError

__all__ = [
    "SAMPLE_ID_PATTERN",
    "atomic_path",
    "check_sample_id",
    "sha256_file",
    "write_h5ad",
    "write_json",
    "write_csv",
]

SAMPLE_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")


def check_sample_id(sample: str, *, where: str = "") -> str:
    """Return ``sample`` if it is a safe id (``^[A-Za-z0-9._-]+$``), else raise InputError."""
    s = str(sample)
    if not SAMPLE_ID_PATTERN.match(s) or s in {".", ".."}:
        loc = f" ({where})" if where else ""
        raise InputError(
            f"sample id {s!r}{loc} is not allowed: use only letters, digits, '.', '_' and '-'"
        )
    return s


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    A failure removes the temporary file, so no half-written file ever carries the
    final name.
    """
    path = Path(path)
    if path.is_dir():  # os.replace would fail only after the work, naming the temporary
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files: give the result the usual 0666 minus the umask
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_h5ad(adata: Any, path: str | os.PathLike, *, compression: str | None = "gzip") -> Path:
    """Write ``adata`` to ``path`` atomically (``.h5ad``, gzip-compressed by default).

    A failed write (e.g. a full disk) raises one :class:`OSError` naming ``path``, and the
    HDF5 objects of the partial file are released at once, so they print nothing later.
    """
    with atomic_path(path) as tmp, _quiet_hdf5_teardown():
        try:
            adata.write_h5ad(tmp, compression=compression)
        except Exception as e:  # noqa: BLE001 - h5py reports write failures as several types
            code = getattr(e, "errno", None)
            if code is None and (m := re.search(r"errno = (\d+)", str(e))):
                code = int(m.group(1))
            # drop the frames so the HDF5 handles they hold close now, under the quiet hook
            traceback.clear_frames(e.__traceback__)
            e.__traceback__ = None
            gc.collect()
            if code:
                raise OSError(code, os.strerror(code), str(path)) from None
            raise
    return Path(path)


@contextlib.contextmanager
def _quiet_hdf5_teardown() -> Iterator[None]:
    """Silence h5py's deallocator errors while a failed write is torn down.

    When writes fail (a full disk), closing the file makes HDF5 retry them, and h5py prints
    each failure as an "Exception ignored" traceback; the write's own error says it once.
    """
    hooks = sys.unraisablehook, sys.excepthook

    def h5_teardown(exc: BaseException | None, obj: Any = None) -> bool:
        text = f"{obj!r} {exc}"
        return isinstance(exc, RuntimeError | OSError) and (
            "h5py" in text or "file write failed" in text
        )

    def unraisable(u: Any) -> None:
        if not h5_teardown(u.exc_value, u.object):
            hooks[0](u)

    def excepthook(t: type[BaseException], v: BaseException, tb: Any) -> None:
        # Cython deallocators print their errors through sys.excepthook too
        if not h5_teardown(v):
            hooks[1](t, v, tb)

    sys.unraisablehook, sys.excepthook = unraisable, excepthook
    try:
        yield
    finally:
        sys.unraisablehook, sys.excepthook = hooks


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


def write_csv(df: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)
    return Path(path)


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (or of every file below a folder, in sorted order)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def release_memory() -> bool:
    """Hand freed memory back to the operating system (between stages).

    CPython frees an object's memory into the C allocator, and glibc keeps the freed heap
    pages of many small allocations (below its mmap threshold, up to 32 MB: every
    per-sample matrix of a run with thousands of cells per sample) in the process, so the
    resident size stays at a stage's high-water mark for the rest of the run. ``gc`` first
    (reference cycles), then glibc's ``malloc_trim(0)``. Measured after the merge stage of a
    40k-cell, 16-sample run: resident 2.79 -> 1.53 GiB. Returns False where the C library
    has no ``malloc_trim`` (macOS, musl): nothing else to do there.
    """
    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
