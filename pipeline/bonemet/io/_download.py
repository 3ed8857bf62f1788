"""Resumable, checked downloads (pooch with a downloader that resumes with HTTP Range,
retries, checks sizes, gzip streams and tar members) and per-file locks."""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import shutil
import tarfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import DownloadError, one_line
from .._logging import is_quiet, logger
from .._utils import sha256_file
from ._geo_soft import _rel_path

# --------------------------------------------------------------------- downloads


@dataclass
class _Fetcher:
    """Downloads GEO files into the cache (pooch.retrieve + a resumable downloader)."""

    base: str
    cache: Path
    retries: int = 3
    backoff: float = 1.0
    timeout: float = 60.0
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    _sha: dict[str, str] = field(default_factory=dict)
    _session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            import requests

            from .._version import __version__

            self._session = requests.Session()
            self._session.headers["User-Agent"] = f"bonemet/{__version__} (+GEO ingestion)"
            # no transport compression: byte offsets (Range) and sizes refer to the file itself
            self._session.headers["Accept-Encoding"] = "identity"
        return self._session

    def sha256(self, path: Path) -> str:
        """SHA-256 of a cached or extracted file (each file hashed once)."""
        key = str(path)
        if key not in self._sha:
            self._sha[key] = sha256_file(path)
        return self._sha[key]

    def local_path(self, url: str) -> Path:
        return self.cache / _rel_path(url, self.base)

    def fetch(self, url: str) -> Path:
        """Return the cached file for ``url``, downloading it first when needed."""
        import pooch

        target = self.local_path(url)
        cached = target.is_file()
        if not cached:
            logger.info("downloading %s", url)
        plog = pooch.get_logger()
        level = plog.level
        plog.setLevel(logging.WARNING)  # pooch logs every download at INFO; bonemet logs its own
        try:
            path = Path(
                pooch.retrieve(
                    url,
                    known_hash=None,
                    fname=target.name,
                    path=target.parent,
                    downloader=_ResumableDownloader(self, target),
                )
            )
        finally:
            plog.setLevel(level)
        if url not in self.records:
            self.records[url] = {
                "url": url,
                "path": str(path),
                "size": path.stat().st_size,
                "sha256": self.sha256(path),
                "cached": cached,
            }
        return path

    def head_size(self, url: str) -> int | None:
        """Size of ``url`` (cached file, else an HTTP HEAD request); raise on 404."""
        target = self.local_path(url)
        if target.is_file():
            return target.stat().st_size
        import requests

        try:
            r = self.session.head(url, allow_redirects=True, timeout=self.timeout)
        except requests.RequestException as e:
            raise DownloadError(
                f"cannot reach {url}: {one_line(e, limit=200)}; check the network or --geo-base-url"
            ) from None
        if r.status_code >= 400:
            raise DownloadError(
                f"{url}: HTTP {r.status_code} ({r.reason}); check the accession and --geo-base-url"
            )
        n = r.headers.get("Content-Length")
        return int(n) if n and n.isdigit() else None


class _Retry(Exception):
    """A transient failure: try again (resuming when the partial data are good)."""


def _check_gzip(path: Path) -> str | None:
    """Fully decompress ``path``; return a problem description or None."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
    except EOFError:
        return "truncated gzip (ends before the end of the compressed stream)"
    except (OSError, zlib.error) as e:
        return f"corrupt gzip ({one_line(e, limit=200)})"
    return None


def _check_tar(path: Path, *, compressed: bool) -> str | None:
    """Read every member header of a tar archive; return a problem description or None.

    tarfile stops silently at a short read, so for an uncompressed archive every member's
    data must also end inside the file (a compressed one was fully decompressed already).
    """
    size = path.stat().st_size
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if not compressed and m.isfile() and m.offset_data + m.size > size:
                    return f"truncated tar archive (member {m.name!r} is cut off)"
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        return f"corrupt or truncated tar archive ({one_line(e, limit=200)})"
    return None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX ``flock``), so that two processes sharing a cache
    never append to the same ``.part`` file; a no-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class _ResumableDownloader:
    """A pooch downloader: ``.part`` file + HTTP Range resume, retries, checks."""

    def __init__(self, fetcher: _Fetcher, target: Path) -> None:
        self.f = fetcher
        self.target = target
        self.part = target.with_name(target.name + ".part")

    def __call__(self, url: str, output_file: str, pooch: Any) -> None:
        with _file_lock(self.part.with_name(self.part.name + ".lock")):
            if self.target.is_file():  # another process finished it while we waited
                shutil.copyfile(self.target, output_file)
                return
            self._download(url, output_file)

    def _download(self, url: str, output_file: str) -> None:
        import requests
        import urllib3

        attempts = self.f.retries + 1
        last: str = ""
        for attempt in range(attempts):
            if attempt:
                delay = self.f.backoff * 2 ** (attempt - 1)
                logger.info("retrying %s in %.1f s (%s)", url, delay, last)
                time.sleep(delay)
            try:
                self._attempt(url)
            except _Retry as e:
                last = str(e)
                continue
            except (
                requests.RequestException,
                urllib3.exceptions.HTTPError,
                ConnectionError,
                TimeoutError,
            ) as e:
                last = f"connection error: {one_line(e, limit=200)}"
                continue
            except DownloadError:
                raise
            except OSError as e:  # local: disk full, permissions
                raise DownloadError(
                    f"cannot write {self.part} while downloading {url}: {one_line(e, limit=200)}; "
                    "check the cache folder (--cache-dir)"
                ) from None
            os.replace(self.part, output_file)
            return
        raise DownloadError(
            f"download of {url} failed after {attempts} attempts: {last}; "
            "try again later or check --geo-base-url"
        )

    def _attempt(self, url: str) -> None:
        from tqdm import tqdm  # plain text bar: no ipywidgets needed in notebooks

        offset = self.part.stat().st_size if self.part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self.f.session.get(url, headers=headers, stream=True, timeout=self.f.timeout) as r:
            if r.status_code == 416 and offset:
                self.part.unlink()  # the partial file does not fit the remote one: restart
                raise _Retry("partial file does not match the remote file (HTTP 416)")
            if r.status_code in {400, 401, 403, 404, 410}:
                raise DownloadError(
                    f"{url}: HTTP {r.status_code} ({r.reason}); check the accession, the sample ids "
                    "and --geo-base-url"
                )
            if r.status_code >= 400:
                raise _Retry(f"HTTP {r.status_code} ({r.reason})")
            total: int | None
            if offset and r.status_code == 206:
                m = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", r.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != offset:
                    self.part.unlink()
                    raise _Retry("server answered the Range request with a different range")
                total = int(m.group(2)) if m.group(2) != "*" else None
                mode = "ab"
            else:
                n = r.headers.get("Content-Length")
                total = int(n) if n and n.isdigit() else None
                offset, mode = 0, "wb"  # no resume support on the server: start over
            bar = tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                leave=False,
                desc=self.target.name[:40],
                disable=True if is_quiet() else None,  # None: off when not a terminal
            )
            try:
                with open(self.part, mode) as out:
                    for chunk in r.raw.stream(1 << 16, decode_content=False):
                        out.write(chunk)
                        bar.update(len(chunk))
            finally:
                bar.close()
        size = self.part.stat().st_size
        if total is not None and size != total:
            if size > total:
                self.part.unlink()
            raise _Retry(f"size mismatch: got {size} bytes, Content-Length says {total}")
        name = self.target.name.lower()
        problem = _check_gzip(self.part) if name.endswith((".gz", ".tgz")) else None
        if problem is None and name.endswith((".tar", ".tar.gz", ".tgz")):
            problem = _check_tar(self.part, compressed=not name.endswith(".tar"))
        if problem:
            self.part.unlink()  # bad data cannot be resumed
            raise _Retry(problem)
