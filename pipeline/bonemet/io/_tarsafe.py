"""Safe tar extraction: every member checked (absolute paths, '..', links, devices)
before tarfile's ``data`` filter extracts the selected ones."""

from __future__ import annotations

import os
import re
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from .._errors import InputError, one_line

# ------------------------------------------------------------------------- tars


def _unsafe_reason(m: tarfile.TarInfo) -> str | None:
    name = m.name
    if (
        name.startswith(("/", "\\"))
        or re.match(r"^[A-Za-z]:", name)
        or PurePosixPath(name).is_absolute()
    ):
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "'..' in its path"
    if m.issym() or m.islnk():
        return f"a {'symbolic' if m.issym() else 'hard'} link to {m.linkname!r}"
    if not (m.isfile() or m.isdir()):
        return "not a regular file or folder"
    return None


def _safe_extract(archive: Path, dest: Path, *, keep: Any = None) -> list[Path]:
    """Extract ``archive`` below ``dest`` after checking every member.

    Members with absolute paths, ``..`` or links (and device files) make the whole
    extraction fail with an :class:`InputError` naming the member; the extraction itself
    also uses tarfile's ``data`` filter. ``keep(name) -> bool`` selects members; already
    extracted members of the right size are reused.
    """
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise InputError(
            f"{archive.name} is not a readable tar archive ({one_line(e, limit=200)}); delete it from the cache and retry"
        ) from None
    out: list[Path] = []
    with tf:
        members = tf.getmembers()
        for m in members:
            why = _unsafe_reason(m)
            if why:
                raise InputError(
                    f"unsafe member {m.name!r} in {archive.name}: {why}; refusing to extract "
                    "the archive (it is corrupt or was tampered with)"
                )
        filt = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        for m in members:
            if not m.isfile() or (keep is not None and not keep(m.name)):
                continue
            final = dest / m.name
            if final.is_file() and final.stat().st_size == m.size:
                out.append(final)
                continue
            dest.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=dest, prefix=".extract.") as tmp:
                try:
                    tf.extract(m, tmp, **filt)
                except (tarfile.TarError, OSError) as e:
                    raise InputError(
                        f"cannot extract {m.name!r} from {archive.name}: {one_line(e, limit=200)}"
                    ) from None
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(Path(tmp) / m.name, final)
            out.append(final)
    return out


def _tar_names(archive: Path) -> list[str]:
    try:
        with tarfile.open(archive, "r:*") as tf:
            return [m.name for m in tf.getmembers()]
    except (tarfile.TarError, OSError) as e:
        raise InputError(
            f"{archive.name} is not a readable tar archive ({one_line(e, limit=200)})"
        ) from None
