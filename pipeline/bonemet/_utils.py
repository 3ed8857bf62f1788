"""Small shared helpers: atomic writes, checksums, sample-id checks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._errors import InputError
from ._meta import add_warning  # noqa: F401  (re-exported: its home is _meta)

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
    """Write ``adata`` to ``path`` atomically (``.h5ad``, gzip-compressed by default)."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression=compression)
    return Path(path)


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
