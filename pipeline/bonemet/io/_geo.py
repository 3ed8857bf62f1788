"""GEO series ingestion: accession → per-sample count matrices.

``read_geo`` / ``fetch_geo`` read the series' family SOFT file for the sample list,
characteristics and supplementary file URLs, download what the selected samples need
(per-sample files when GEO lists them, otherwise the series ``_RAW.tar``), recognise
the file sets (10x triplets with any prefix, 10x ``.h5``, ``.h5ad``, dense CSV/TSV
tables in either orientation), and build one AnnData per sample.

Downloads
---------
Every URL is built on one root, ``base_url`` (default ``https://ftp.ncbi.nlm.nih.gov/geo``);
the ``ftp://ftp.ncbi.nlm.nih.gov/geo/...`` URLs written in SOFT files are mapped onto it,
so a mirror or a local test server can stand in for GEO.

Files are cached below ``cache_dir`` (default ``pooch.os_cache("bonemet")/geo``) at their
path relative to the GEO root (``series/GSE1nnn/GSE1234/suppl/...``) and fetched with
:func:`pooch.retrieve`, which skips the network when a cached file exists (so a warm
cache works offline) and moves a new file into place only when the download succeeded.
pooch's own ``HTTPDownloader`` cannot resume: it opens its output with ``"w+b"`` and
pooch streams every attempt into a fresh temporary file, so a broken transfer of a
multi-GB ``_RAW.tar`` would restart from zero. bonemet therefore hands pooch a
downloader of its own (pooch's documented extension point) built on ``requests``: it
keeps the partial data in ``<file>.part``, resumes with an HTTP ``Range`` request,
retries with exponential back-off, checks the size against ``Content-Length``,
fully decompress-tests every ``.gz`` file, checks that no member of a ``.tar`` is cut
off, and shows a tqdm progress bar unless bonemet is quiet (or stderr is not a
terminal). A POSIX lock per file keeps two processes sharing a cache from writing the
same ``.part``. 404/403/410 fail at once; connection errors, short bodies, 5xx and bad
archives are retried. SHA-256 and size of every file are recorded in the provenance.

Archives
--------
``_RAW.tar`` and per-sample ``.tar.gz`` files are extracted below the cache only after
every member was checked: absolute paths, ``..`` components, symbolic/hard links and
device files make the command fail with an :class:`InputError` naming the member; the
extraction itself uses tarfile's ``data`` filter. Only the members of selected samples
(named ``GSM<id>…``) are extracted from a ``_RAW.tar``.

Writing
-------
All files of all selected samples are downloaded (and checked) before anything is
written, so a download failure leaves no output at all. Then ``fetch_geo`` reads one
sample at a time and writes it atomically (``OUT/<GSM>.h5ad``, temp file renamed on
success), so memory holds one sample at a time; the
samplesheet (``OUT/samplesheet.csv``) and ``OUT/geo_provenance.json`` are written only
after every sample succeeded. A stale samplesheet from an earlier run is removed
before the first sample is written. So a failed run leaves no samplesheet: per-sample
files that exist are complete, but the set is not, and nothing points at it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import BonemetError, DownloadError, InputError
from .._logging import is_quiet, logger
from .._utils import check_sample_id, sha256_file, write_csv, write_h5ad, write_json

__all__ = ["read_geo", "fetch_geo", "parse_soft", "geo_soft_url"]

GEO_BASE_URL = "https://ftp.ncbi.nlm.nih.gov/geo"
_GEO_URL_PREFIX = re.compile(r"^(?:ftp|https?)://ftp\.ncbi\.nlm\.nih\.gov/geo/", re.IGNORECASE)
_GSE = re.compile(r"^GSE\d+$")
_GSM = re.compile(r"^GSM\d+$")
_ORGANISMS = {"human": "homo sapiens", "mouse": "mus musculus"}
# obs columns that mean something to the pipeline: characteristics never overwrite them
_RESERVED_OBS = {
    "sample",
    "batch",
    "condition",
    "reference_label",
    "cell_type",
    "population",
    "leiden",
    "annotation_confidence",
    "doublet_score",
    "predicted_doublet",
    "barcode",
}


# --------------------------------------------------------------------------- SOFT


def _nnn(accession: str) -> str:
    """GEO's folder stub: GSE143791 -> GSE143nnn, GSE1234 -> GSE1nnn, GSE123 -> GSEnnn."""
    prefix, digits = accession[:3], accession[3:]
    return f"{prefix}{digits[:-3]}nnn" if len(digits) > 3 else f"{prefix}nnn"


def _check_accession(accession: str) -> str:
    acc = str(accession).strip().upper()
    if not _GSE.match(acc):
        raise InputError(
            f"{accession!r} is not a GEO series accession: give 'GSE' followed by digits, e.g. GSE143791"
        )
    return acc


def _norm_base(base_url: str) -> str:
    base = str(base_url).rstrip("/")
    scheme = urlsplit(base).scheme.lower()
    if scheme not in {"http", "https"}:
        raise InputError(
            f"GEO base URL {base_url!r} must be http(s), e.g. {GEO_BASE_URL} (ftp:// is not supported)"
        )
    return base


def geo_soft_url(accession: str, *, base_url: str = GEO_BASE_URL) -> str:
    """URL of a series' family SOFT file, ``{base}/series/<GSEnnn>/<GSE>/soft/<GSE>_family.soft.gz``."""
    acc = _check_accession(accession)
    return f"{_norm_base(base_url)}/series/{_nnn(acc)}/{acc}/soft/{acc}_family.soft.gz"


def _map_url(url: str, base: str) -> str:
    """Map a GEO URL (``ftp://ftp.ncbi.nlm.nih.gov/geo/...``) onto ``base``."""
    m = _GEO_URL_PREFIX.match(url)
    if m:
        return f"{base}/{url[m.end() :]}"
    if url.startswith(base + "/"):
        return url
    raise InputError(
        f"supplementary file URL {url!r} is not below the GEO root ftp.ncbi.nlm.nih.gov/geo: "
        "bonemet downloads only from the configured GEO base URL"
    )


def _rel_path(url: str, base: str) -> str:
    """Path of ``url`` relative to ``base``, checked to stay inside the cache."""
    rel = url[len(base) + 1 :]
    parts = PurePosixPath(rel).parts
    if not parts or any(p in {"..", "."} or p.startswith("/") for p in parts):
        raise InputError(f"URL {url!r} has an unsafe path; refusing to cache it")
    return rel


def _sanitise_key(key: str) -> str:
    k = re.sub(r"[^0-9a-zA-Z]+", "_", key.strip().lower()).strip("_")
    if not k:
        k = "characteristic"
    if k[0].isdigit():
        k = f"c_{k}"
    if k in _RESERVED_OBS:
        k = f"geo_{k}"
    return k


def parse_soft(text: str) -> dict[str, Any]:
    """Parse a GEO family SOFT text.

    Parameters
    ----------
    text
        The decompressed ``<GSE>_family.soft`` text.

    Returns
    -------
    dict
        ``{"series": {...}, "samples": {GSM: {...}}, "platforms": {GPL: {...}}}``.
        ``series`` holds ``accession``, ``title``, ``summary``, ``sample_ids`` (list),
        ``platform_ids`` (list), ``supplementary_files`` (list of URLs) and ``fields``
        (every ``!Series_*`` key → list of values). Each sample holds ``accession``,
        ``title``, ``organism`` (``;``-joined when several channels), ``source_name``,
        ``platform_id``, ``characteristics`` (dict: ``key: value`` lines, keys sanitised
        to obs-column names such as ``tissue_type``; repeated keys are ``; ``-joined;
        lines without a key go to ``characteristic``), ``characteristics_raw`` (list of
        the original strings), ``supplementary_files`` (every
        ``!Sample_supplementary_file_N`` except ``NONE``, in order) and ``fields``.
        Data tables (``!sample_table_begin`` … ``!sample_table_end``) are skipped.
    """
    series: dict[str, Any] = {"fields": {}}
    samples: dict[str, dict[str, Any]] = {}
    platforms: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    kind = None
    in_table = False
    for raw in text.splitlines():
        line = raw.rstrip("\r\n")
        if in_table:
            if line.lower().startswith("!") and line.lower().endswith("_table_end"):
                in_table = False
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("^"):
            key, _, value = line[1:].partition("=")
            kind, acc = key.strip().upper(), value.strip()
            if kind == "SERIES":
                current = series
                series.setdefault("accession", acc)
            elif kind == "SAMPLE":
                current = samples.setdefault(acc, {"accession": acc, "fields": {}})
            elif kind == "PLATFORM":
                current = platforms.setdefault(acc, {"accession": acc, "fields": {}})
            else:
                current = None
            continue
        if line.startswith("!"):
            if line.lower().endswith("_table_begin"):
                in_table = True
                continue
            key, sep, value = line[1:].partition("=")
            if current is None or not sep:
                continue
            current["fields"].setdefault(key.strip(), []).append(value.strip())
    # series
    f = series["fields"]
    series.setdefault("accession", (f.get("Series_geo_accession") or [None])[0])
    series["title"] = " ".join(f.get("Series_title", []))
    series["summary"] = " ".join(f.get("Series_summary", []))
    series["sample_ids"] = list(f.get("Series_sample_id", []))
    series["platform_ids"] = list(f.get("Series_platform_id", []))
    series["supplementary_files"] = [
        v for v in f.get("Series_supplementary_file", []) if v and v.upper() != "NONE"
    ]
    for s in samples.values():
        f = s["fields"]
        s["title"] = " ".join(f.get("Sample_title", [])).strip()
        orgs: list[str] = []
        for k in sorted(k for k in f if re.match(r"Sample_organism_ch\d+$", k)):
            orgs.extend(v for v in f[k] if v not in orgs)
        s["organism"] = "; ".join(orgs)
        s["source_name"] = "; ".join(f.get("Sample_source_name_ch1", []))
        s["platform_id"] = (f.get("Sample_platform_id") or [""])[0]
        chars: dict[str, str] = {}
        raw_chars: list[str] = []
        for k in sorted(k for k in f if re.match(r"Sample_characteristics_ch\d+$", k)):
            for v in f[k]:
                raw_chars.append(v)
                ck, csep, cv = v.partition(":")
                if csep and ck.strip():
                    name, val = _sanitise_key(ck), cv.strip()
                else:
                    name, val = "characteristic", v.strip()
                chars[name] = f"{chars[name]}; {val}" if name in chars else val
        s["characteristics"] = chars
        s["characteristics_raw"] = raw_chars
        supp_keys = sorted(
            (k for k in f if re.match(r"Sample_supplementary_file(_\d+)?$", k)),
            key=lambda k: int(k.rsplit("_", 1)[1]) if k[-1].isdigit() else 0,
        )
        s["supplementary_files"] = [v for k in supp_keys for v in f[k] if v and v.upper() != "NONE"]
    for p in platforms.values():
        p["title"] = " ".join(p["fields"].get("Platform_title", []))
        p["organism"] = "; ".join(p["fields"].get("Platform_organism", []))
    if not series["sample_ids"]:
        series["sample_ids"] = list(samples)
    return {"series": series, "samples": samples, "platforms": platforms}


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
                f"cannot reach {url}: {_short(e)}; check the network or --geo-base-url"
            ) from None
        if r.status_code >= 400:
            raise DownloadError(
                f"{url}: HTTP {r.status_code} ({r.reason}); check the accession and --geo-base-url"
            )
        n = r.headers.get("Content-Length")
        return int(n) if n and n.isdigit() else None


def _short(e: BaseException) -> str:
    s = str(e).replace("\n", " ")
    return s if len(s) < 200 else s[:197] + "..."


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
        return f"corrupt gzip ({_short(e)})"
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
        return f"corrupt or truncated tar archive ({_short(e)})"
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
                last = f"connection error: {_short(e)}"
                continue
            except DownloadError:
                raise
            except OSError as e:  # local: disk full, permissions
                raise DownloadError(
                    f"cannot write {self.part} while downloading {url}: {_short(e)}; "
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
            f"{archive.name} is not a readable tar archive ({_short(e)}); delete it from the cache and retry"
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
                        f"cannot extract {m.name!r} from {archive.name}: {_short(e)}"
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
        raise InputError(f"{archive.name} is not a readable tar archive ({_short(e)})") from None


# ------------------------------------------------------------------ file sets


_TRIPLET = re.compile(r"^(?P<prefix>.*?)(?P<part>barcodes|features|genes|matrix)\.(?:tsv|txt|mtx)$")
# per-cell tables (not matrices): whole name tokens, so "metastasis" is not "meta"
_META = re.compile(
    r"(?:^|[._-])(?:meta(?:[._-]?data)?|annotations?|annot|cell[._-]?(?:types?|info)|"
    r"clusters?|barcode[._-]?map)(?=[._-]|$)",
    re.IGNORECASE,
)
_GSM_IN_PATH = re.compile(r"(?:^|/)(GSM\d+)(?=[_.\-/]|$)", re.IGNORECASE)


def _gsm_of(name: str) -> str | None:
    """The GSM id a (tar member) path is named after: its first GSM-led component."""
    m = _GSM_IN_PATH.search(name.replace("\\", "/"))
    return m.group(1).upper() if m else None


@dataclass
class _FileSet:
    kind: str  # 10x_mtx | 10x_h5 | h5ad | csv
    files: list[Path]
    label: str
    parts: dict[str, Path] = field(default_factory=dict)


def _strip_gz(name: str) -> str:
    return name[:-3] if name.lower().endswith(".gz") else name


def _classify(paths: Sequence[Path]) -> tuple[list[_FileSet], list[Path], list[Path], list[Path]]:
    """Sort files into count-matrix sets, metadata tables, archives and unclassified."""
    triplets: dict[tuple[Path, str], dict[str, Path]] = {}
    sets: list[_FileSet] = []
    meta: list[Path] = []
    archives: list[Path] = []
    other: list[Path] = []
    for p in paths:
        low = p.name.lower()
        base = _strip_gz(low)
        m = _TRIPLET.match(base)
        if m:
            part = "features" if m["part"] == "genes" else m["part"]
            triplets.setdefault((p.parent, m["prefix"]), {})[part] = p
        elif low.endswith((".tar", ".tar.gz", ".tgz")):
            archives.append(p)
        elif base.endswith((".h5", ".hdf5")):
            sets.append(_FileSet("10x_h5", [p], p.name))
        elif base.endswith(".h5ad"):
            sets.append(_FileSet("h5ad", [p], p.name))
        elif base.endswith((".csv", ".tsv", ".txt")):
            if _META.search(re.sub(r"\.(csv|tsv|txt)$", "", base)):
                meta.append(p)
            else:
                sets.append(_FileSet("csv", [p], p.name))
        else:
            other.append(p)
    for (_parent, prefix), parts in triplets.items():
        if {"barcodes", "features", "matrix"} <= set(parts):
            files = [parts["barcodes"], parts["features"], parts["matrix"]]
            sets.append(_FileSet("10x_mtx", files, f"{prefix}(barcodes|features|matrix)", parts))
        else:
            other.extend(parts.values())
    return sets, meta, archives, other


def _pick_set(sets: list[_FileSet], gsm: str) -> _FileSet:
    if len(sets) == 1:
        return sets[0]

    def score(s: _FileSet) -> int:
        n = s.label.lower()
        return (2 if "filtered" in n else 0) - (2 if re.search(r"raw|unfiltered", n) else 0)

    ranked = sorted(sets, key=score, reverse=True)
    if score(ranked[0]) > score(ranked[1]):
        return ranked[0]
    names = ", ".join(s.label for s in sets)
    raise InputError(
        f"{gsm} has several count matrices ({names}) and bonemet cannot tell which to use: "
        "download them with fetch_geo(..., dry_run=True) to inspect, or read the file you want with bm.io.read"
    )


# --------------------------------------------------------------------- readers


def _open_text(path: Path) -> Any:
    return (
        gzip.open(path, "rt", newline="")
        if path.name.lower().endswith(".gz")
        else open(path, newline="")
    )


def _sniff_sep(path: Path, first: str) -> str:
    base = _strip_gz(path.name.lower())
    if base.endswith(".csv") and "," in first:
        return ","
    if "\t" in first:
        return "\t"
    if "," in first:
        return ","
    return r"\s+"


_BARCODE = re.compile(r"[ACGT]{10,}")
_GENE_HDR = {
    "",
    "gene",
    "genes",
    "symbol",
    "gene_symbol",
    "genesymbol",
    "gene_name",
    "gene_id",
    "geneid",
    "gene_ids",
    "feature",
    "features",
    "id",
    "x",
    "unnamed: 0",
    "name",
}


def _looks_like_cells(labels: Sequence[str]) -> float:
    sample = list(labels[:500])
    return float(np.mean([bool(_BARCODE.search(str(x))) for x in sample])) if sample else 0.0


def _looks_like_genes(labels: Sequence[str]) -> float:
    sample = [str(x) for x in labels[:5000]]
    hits = sum(
        bool(re.match(r"^(mt-|rp[ls]\d|hb[ab]|malat1$|actb$|gapdh$|ensg\d|ensmusg\d)", x, re.I))
        for x in sample
    )
    return hits / max(len(sample), 1)


def _read_dense_table(path: Path, gsm: str) -> Any:
    """Read a GEO dense expression table into an AnnData (cells × genes, CSR float32).

    Handles: first column = genes with a blank/``gene`` header; R ``write.table`` headers
    one field short (row names); the GSE190772 layout whose LAST column is the gene
    (header ends with ``gene``); either orientation (cells recognised by 10x barcodes,
    genes by common symbols). Read in row chunks into a sparse matrix.
    """
    import anndata as ad

    with _open_text(path) as fh:
        header = fh.readline().rstrip("\r\n")
        first = fh.readline().rstrip("\r\n")
    if not header or not first:
        raise InputError(f"{path.name} ({gsm}) has no data rows: it is not a count table")
    sep = _sniff_sep(path, header)
    splitter = re.compile(sep) if sep == r"\s+" else None
    hfields = splitter.split(header.strip()) if splitter else header.split(sep)
    dfields = splitter.split(first.strip()) if splitter else first.split(sep)
    hfields = [h.strip().strip('"') for h in hfields]
    label_pos: int
    if len(hfields) == len(dfields) - 1:
        label_pos, col_labels = 0, hfields  # R row names: header lacks the first field
    elif len(hfields) == len(dfields):
        if (
            hfields[-1].lower() in _GENE_HDR - {""}
            and _is_number(dfields[0])
            and not _is_number(dfields[-1])
        ):
            label_pos, col_labels = len(hfields) - 1, hfields[:-1]  # GSE190772: gene LAST
        else:
            label_pos, col_labels = 0, hfields[1:]
    else:
        raise InputError(
            f"{path.name} ({gsm}): the header has {len(hfields)} fields but the first row {len(dfields)}; "
            "not a dense expression table bonemet can read"
        )
    row_labels: list[str] = []
    blocks: list[sp.csr_matrix] = []
    ncol = len(col_labels)
    try:
        # the C parser converts straight to float32 (no per-value Python objects), so a
        # 33k-gene x 5k-cell GEO table is read in row chunks without a dense float64 copy
        numeric = [i for i in range(ncol + 1) if i != label_pos]
        reader = pd.read_csv(
            path,
            sep=sep,
            header=None,
            skiprows=1,
            chunksize=2000,
            dtype={label_pos: str, **dict.fromkeys(numeric, np.float32)},
            engine="c" if sep != r"\s+" else "python",
            quotechar='"',
            keep_default_na=False,
            na_values=dict.fromkeys(numeric, ["", "NA", "NaN", "nan"]),
        )
        for chunk in reader:
            if chunk.shape[1] != ncol + 1:
                raise InputError(
                    f"{path.name} ({gsm}): rows have {chunk.shape[1]} fields, expected {ncol + 1}"
                )
            row_labels.extend(chunk.iloc[:, label_pos].astype(str).str.strip('"').tolist())
            block = chunk.drop(columns=chunk.columns[label_pos]).to_numpy(dtype=np.float32)
            blocks.append(sp.csr_matrix(block))
    except (ValueError, TypeError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(
            f"{path.name} ({gsm}) holds non-numeric values ({_short(e)}): not an expression table"
        ) from None
    except (UnicodeDecodeError, EOFError, OSError, zlib.error) as e:
        raise InputError(f"{path.name} ({gsm}) cannot be parsed as a table: {_short(e)}") from None
    if not blocks:
        raise InputError(f"{path.name} ({gsm}) has no data rows")
    X = sp.vstack(blocks, format="csr")
    rows_cells, cols_cells = _looks_like_cells(row_labels), _looks_like_cells(col_labels)
    rows_genes, cols_genes = _looks_like_genes(row_labels), _looks_like_genes(col_labels)
    if cols_cells > rows_cells or (cols_cells == rows_cells and rows_genes >= cols_genes):
        X, cells, genes = X.T.tocsr(), col_labels, row_labels  # genes × cells (GEO's usual)
        orientation = "genes x cells"
    else:
        cells, genes = row_labels, col_labels
        orientation = "cells x genes"
    if max(rows_cells, cols_cells, rows_genes, cols_genes) == 0:
        logger.warning("%s: orientation not recognisable, assuming genes x cells", path.name)
    logger.info("%s: %s table, %d cells x %d genes", path.name, orientation, len(cells), len(genes))
    from ._read import check_counts

    X, genes, note = _merge_duplicate_genes(X, genes, is_counts=bool(check_counts(X)[0]))
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=pd.Index(cells, dtype=str)),
        var=pd.DataFrame(index=pd.Index(genes, dtype=str)),
    )
    adata.uns["bonemet"] = {
        "inputs": {gsm: {"path": str(path), "format": "csv", "orientation": orientation}},
        "warnings": [note] if note else [],
    }
    return adata


def _is_number(s: str) -> bool:
    try:
        float(s.strip().strip('"'))
    except ValueError:
        return False
    return True


def _merge_duplicate_genes(
    X: sp.csr_matrix, genes: Sequence[str], *, is_counts: bool
) -> tuple[sp.csr_matrix, list[str], str | None]:
    """Make gene symbols unique: sum duplicates of counts, keep the first of other values."""
    names = pd.Index([str(g) for g in genes])
    if names.is_unique:
        return X, list(names), None
    n = int(names.duplicated().sum())
    if is_counts:
        codes, uniques = pd.factorize(names)
        agg = sp.csr_matrix(
            (np.ones(len(codes), dtype=np.float32), (np.arange(len(codes)), codes)),
            shape=(len(codes), len(uniques)),
        )
        return (
            (X @ agg).tocsr().astype(np.float32),
            list(uniques),
            f"{n} duplicate gene symbols summed",
        )
    keep = np.flatnonzero(~names.duplicated())
    note = f"{n} duplicate gene symbols: kept the first of each (values are not counts)"
    return X[:, keep].tocsr(), list(names[keep]), note


def _stage_10x(fs: _FileSet, tmp: Path) -> Path:
    """Copy a (prefixed) 10x triplet into ``tmp`` under the standard names."""
    feat = fs.parts["features"]
    with _open_text(feat) as fh:
        ncols = len(fh.readline().rstrip("\r\n").split("\t"))
    if ncols >= 3:  # v3: gzipped, features.tsv.gz
        for part, path in fs.parts.items():
            dst = tmp / f"{part}.{'mtx' if part == 'matrix' else 'tsv'}.gz"
            if path.name.lower().endswith(".gz"):
                shutil.copyfile(path, dst)
            else:
                with open(path, "rb") as src, gzip.open(dst, "wb") as out:
                    shutil.copyfileobj(src, out)
    else:  # v2: plain genes.tsv / barcodes.tsv / matrix.mtx
        names = {"barcodes": "barcodes.tsv", "features": "genes.tsv", "matrix": "matrix.mtx"}
        for part, path in fs.parts.items():
            opener = gzip.open if path.name.lower().endswith(".gz") else open
            with opener(path, "rb") as src, open(tmp / names[part], "wb") as out:
                shutil.copyfileobj(src, out)
    return tmp


def _read_set(fs: _FileSet, gsm: str) -> Any:
    """Read one count-matrix file set into an AnnData (cells × genes)."""
    from . import _read

    if fs.kind == "csv":
        return _read_dense_table(fs.files[0], gsm)
    if fs.kind == "10x_mtx":
        with tempfile.TemporaryDirectory(prefix="bonemet-10x-") as tmp:
            folder = _stage_10x(fs, Path(tmp))
            return _read.read(folder, format="10x_mtx", sample=gsm)
    return _read.read(fs.files[0], format=fs.kind, sample=gsm)


def _read_table_any(path: Path) -> pd.DataFrame:
    with _open_text(path) as fh:
        first = fh.readline()
    sep = _sniff_sep(path, first)
    try:
        return pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            keep_default_na=True,
            engine="c" if sep != r"\s+" else "python",
        )
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError, zlib.error) as e:
        raise InputError(f"{path.name} cannot be parsed as a table: {_short(e)}") from None


def _join_cell_table(adata: Any, table: pd.DataFrame, *, source: str) -> str | None:
    """Add the columns of a per-cell table to obs, matched on the original barcodes."""
    barcodes = pd.Index(adata.obs["geo_barcode"].astype(str))
    best, best_n = None, 0
    for col in table.columns:
        vals = table[col].astype(str)
        n = int(barcodes.isin(vals).sum())
        if n > best_n:
            best, best_n = col, n
    if best is None or best_n < 0.5 * adata.n_obs:
        return f"{source}: fewer than half of the cells matched a column of the table; not joined"
    t = table.drop_duplicates(subset=[best]).set_index(best)
    t.index = t.index.astype(str)
    for col in t.columns:
        name = str(col)
        if not name or name.lower().startswith("unnamed:"):
            continue
        if name in adata.obs.columns:
            name = f"meta_{name}"
        values = t[col].reindex(barcodes)
        num = pd.to_numeric(values, errors="coerce")
        if num.notna().sum() == values.notna().sum() and values.notna().any():
            adata.obs[name] = num.to_numpy()
        else:
            adata.obs[name] = pd.Categorical(values.to_numpy())
    if best_n < adata.n_obs:
        return f"{source}: {adata.n_obs - best_n} of {adata.n_obs} cells have no row in the table"
    return None


# ------------------------------------------------------------------------ plan


@dataclass
class _SamplePlan:
    gsm: str
    title: str
    organism: str
    characteristics: dict[str, str]
    urls: list[str]  # per-sample supplementary files (mapped)
    from_tar: bool = False


@dataclass
class _Plan:
    accession: str
    base: str
    soft_url: str
    soft: dict[str, Any]
    samples: list[_SamplePlan]
    skipped: dict[str, str]
    raw_tar: str | None
    series_files: list[str]
    annotation_urls: list[str]
    foreign: list[str] = field(default_factory=list)


def _select(
    soft: dict[str, Any],
    *,
    samples: Sequence[str] | None,
    species: str | None,
    include_title: str | None,
    exclude_title: str | None,
) -> tuple[list[str], dict[str, str]]:
    all_samples = soft["samples"]
    order = [s for s in soft["series"]["sample_ids"] if s in all_samples] or list(all_samples)
    skipped: dict[str, str] = {}
    if samples is not None:
        wanted = [str(s).strip().upper() for s in samples]
        bad = [s for s in wanted if s not in all_samples]
        if bad:
            raise InputError(
                f"sample(s) {', '.join(bad)} are not in {soft['series'].get('accession')}: "
                f"choose from {', '.join(order[:20])}{' …' if len(order) > 20 else ''}"
            )
        keep = [s for s in order if s in set(wanted)]
    else:
        keep = list(order)
    if species not in (None, "auto"):
        if species not in _ORGANISMS:
            raise InputError(f"species must be 'human', 'mouse' or 'auto', not {species!r}")
        org = _ORGANISMS[species]
        for s in list(keep):
            o = all_samples[s]["organism"].lower()
            if org not in o:
                skipped[s] = (
                    f"organism {all_samples[s]['organism'] or 'unknown'!r} is not {species}"
                )
                keep.remove(s)
    for pattern, want in ((include_title, True), (exclude_title, False)):
        if pattern is None:
            continue
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise InputError(
                f"title pattern {pattern!r} is not a valid regular expression: {e}"
            ) from None
        for s in list(keep):
            if bool(rx.search(all_samples[s]["title"])) != want:
                verb = "does not match" if want else "matches"
                skipped[s] = f"title {all_samples[s]['title']!r} {verb} {pattern!r}"
                keep.remove(s)
    if not keep:
        raise InputError(
            f"no sample of {soft['series'].get('accession')} is left after filtering "
            f"({len(skipped)} excluded): check samples, species and the title patterns"
        )
    return keep, skipped


def _make_plan(
    accession: str,
    fetcher: _Fetcher,
    *,
    samples: Sequence[str] | None,
    species: str | None,
    include_title: str | None,
    exclude_title: str | None,
    annotation: str | Sequence[str] | None,
) -> _Plan:
    acc = _check_accession(accession)
    base = fetcher.base
    soft_url = geo_soft_url(acc, base_url=base)
    soft_path = fetcher.fetch(soft_url)
    try:
        with gzip.open(soft_path, "rt", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DownloadError(
            f"{soft_path.name} in the cache is unreadable ({_short(e)}); delete it and retry"
        ) from None
    soft = parse_soft(text)
    if soft["series"].get("accession") not in (acc, None):
        raise InputError(f"{soft_url} describes {soft['series']['accession']}, not {acc}")
    if not soft["samples"]:
        raise InputError(f"the SOFT file of {acc} lists no samples")
    for s in soft["samples"]:
        check_sample_id(s, where=f"{acc} SOFT")
    keep, skipped = _select(
        soft,
        samples=samples,
        species=species,
        include_title=include_title,
        exclude_title=exclude_title,
    )
    foreign: list[str] = []  # e.g. SRA links that older series list as supplementary files

    def mapped(urls: Sequence[str]) -> list[str]:
        out = []
        for u in urls:
            if _GEO_URL_PREFIX.match(u) or u.startswith(base + "/"):
                out.append(_map_url(u, base))
            else:
                foreign.append(u)
        return out

    series_files = mapped(soft["series"]["supplementary_files"])
    raw_tar = next((u for u in series_files if u.endswith("_RAW.tar")), None)
    plans: list[_SamplePlan] = []
    for gsm in keep:
        s = soft["samples"][gsm]
        urls = mapped(s["supplementary_files"])
        plan = _SamplePlan(gsm, s["title"], s["organism"], dict(s["characteristics"]), urls)
        if not urls:
            if raw_tar is None:
                why = "GEO lists no supplementary file for it and the series has no _RAW.tar"
                if samples is not None:
                    raise InputError(
                        f"{gsm}: {why}; its data may be in a series-level file (see the summary)"
                    )
                skipped[gsm] = why
                logger.warning("skipping %s: %s", gsm, why)
                continue
            plan.from_tar = True
        plans.append(plan)
    if not plans:
        raise InputError(f"none of the selected samples of {acc} has data files bonemet can fetch")
    annotation_urls: list[str] = []
    if annotation:
        pats = [annotation] if isinstance(annotation, str) else list(annotation)
        for pat in pats:
            hits = [u for u in series_files if fnmatch.fnmatch(u.rsplit("/", 1)[-1], pat)]
            if not hits:
                names = ", ".join(u.rsplit("/", 1)[-1] for u in series_files) or "none"
                raise InputError(
                    f"annotation {pat!r} matches no series file of {acc} (series files: {names})"
                )
            annotation_urls.extend(h for h in hits if h not in annotation_urls)
    if foreign:
        logger.warning(
            "%s: %d supplementary link(s) outside GEO not used (e.g. %s)",
            acc,
            len(foreign),
            foreign[0],
        )
    return _Plan(
        acc, base, soft_url, soft, plans, skipped, raw_tar, series_files, annotation_urls, foreign
    )


# ------------------------------------------------------------------------- run


def _dry_run(plan: _Plan, fetcher: _Fetcher) -> dict[str, Any]:
    files: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(url: str, sample: str | None) -> None:
        if url in seen:
            return
        seen.add(url)
        files.append(
            {
                "url": url,
                "sample": sample,
                "size": fetcher.head_size(url),
                "cached": fetcher.local_path(url).is_file(),
            }
        )

    for sp_ in plan.samples:
        for u in sp_.urls:
            add(u, sp_.gsm)
        if sp_.from_tar and plan.raw_tar:
            add(plan.raw_tar, None)
    for u in plan.annotation_urls:
        add(u, None)
    sizes = [f["size"] for f in files if f["size"] is not None]
    for f in files:
        size = "unknown size" if f["size"] is None else _fmt_size(f["size"])
        logger.info("would download %s (%s%s)", f["url"], size, ", cached" if f["cached"] else "")
    return {
        "files": files,
        "total_bytes": int(sum(sizes)),
        "unknown_sizes": sum(f["size"] is None for f in files),
    }


def _fmt_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


@dataclass
class _Opts:
    """Per-sample obs options (as in :func:`bonemet.io.ingest`)."""

    species: str | None = None
    label_key: str | None = None
    batch_key: str | None = None
    condition_key: str | None = None


def _iter_samples(
    plan: _Plan, fetcher: _Fetcher, summary: dict[str, Any], opts: _Opts
) -> Iterator[tuple[str, Any]]:
    """Download, classify and read each planned sample; yield (GSM, AnnData)."""
    from . import _read

    tar_members: dict[str, list[Path]] = {}
    tar_samples = [s.gsm for s in plan.samples if s.from_tar]
    if tar_samples and plan.raw_tar:
        tar_path = fetcher.fetch(plan.raw_tar)
        names = _tar_names(tar_path)
        wanted = set(tar_samples)

        def keep(name: str) -> bool:
            return _gsm_of(name) in wanted

        dest = tar_path.with_name(tar_path.name + ".d")
        extracted = _safe_extract(tar_path, dest, keep=keep)
        for p in extracted:
            gsm = _gsm_of(p.relative_to(dest).as_posix())
            tar_members.setdefault(gsm, []).append(p)
        not_ours = [n for n in names if _gsm_of(n) is None]
        if not_ours:
            summary["unclassified"].extend(
                {"sample": None, "file": n, "why": "tar member not named after a GSM"}
                for n in not_ours
            )
    annotations: list[tuple[str, pd.DataFrame]] = []
    for url in plan.annotation_urls:
        p = fetcher.fetch(url)
        annotations.append((p.name, _read_table_any(p)))

    # phase 1: download and classify everything, so that a download failure leaves nothing
    jobs: list[tuple[_SamplePlan, _FileSet, list[Path]]] = []
    for sp_ in plan.samples:
        paths = (
            tar_members.get(sp_.gsm, []) if sp_.from_tar else [fetcher.fetch(u) for u in sp_.urls]
        )
        if not paths:
            where = plan.raw_tar.rsplit("/", 1)[-1] if plan.raw_tar else "the series"
            raise InputError(f"{sp_.gsm}: no file named after it in {where}")
        sets, meta, archives, other = _classify(paths)
        for arc in archives:  # per-sample archives (e.g. a 10x folder as .tar.gz)
            inner = _safe_extract(arc, arc.with_name(arc.name + ".d"))
            s2, m2, a2, o2 = _classify(inner)
            sets += s2
            meta += m2
            other += o2 + a2
        for p in other:
            msg = (
                f"{sp_.gsm}: cannot classify {p.name} "
                "(not a 10x triplet, .h5, .h5ad or a table); not used"
            )
            logger.warning(msg)
            summary["unclassified"].append(
                {"sample": sp_.gsm, "file": p.name, "why": "unknown file type"}
            )
            summary["warnings"].append(msg)
        if not sets:
            raise InputError(
                f"{sp_.gsm}: none of its files is a count matrix bonemet can read "
                f"({', '.join(p.name for p in paths)})"
            )
        fs = _pick_set(sets, sp_.gsm)
        for s in sets:
            if s is not fs:
                summary["unclassified"].append(
                    {
                        "sample": sp_.gsm,
                        "file": s.label,
                        "why": f"another {s.kind} matrix; {fs.label} used",
                    }
                )
        jobs.append((sp_, fs, meta))
    # phase 2: read one sample at a time
    for sp_, fs, meta in jobs:
        logger.info("reading %s (%s: %s)", sp_.gsm, fs.kind, fs.label)
        adata = _read_set(fs, sp_.gsm)
        adata = _finish_sample(
            adata, sp_, fs, plan, fetcher, meta, annotations, summary, opts, _read
        )
        yield sp_.gsm, adata


def _finish_sample(
    adata: Any,
    sp_: _SamplePlan,
    fs: _FileSet,
    plan: _Plan,
    fetcher: _Fetcher,
    meta: list[Path],
    annotations: list[tuple[str, pd.DataFrame]],
    summary: dict[str, Any],
    opts: _Opts,
    _read: Any,
) -> Any:
    from .._version import __version__

    gsm = sp_.gsm
    species_hint = opts.species
    bm = dict(adata.uns.get("bonemet", {}))
    warnings = list(bm.get("warnings", []))
    # counts or not
    ok, reason = _read.check_counts(adata)
    ok = bool(ok)
    if not ok:
        msg = (
            f"{gsm}: values are not raw counts ({reason}); marked is_counts=False, so integration "
            "falls back to a non-count method (integrate.method / input.allow_non_counts)"
        )
        logger.warning(msg)
        warnings.append(msg)
        summary["warnings"].append(msg)
    # names: <GSM>_<barcode>, original kept in geo_barcode
    barcodes = pd.Index(adata.obs_names.astype(str))
    pre = f"{gsm}_"
    if (
        len(barcodes)
        and all(b.startswith(pre) for b in barcodes[:100])
        and barcodes.str.startswith(pre).all()
    ):
        barcodes = pd.Index([b[len(pre) :] for b in barcodes])
    adata.obs["geo_barcode"] = barcodes.to_numpy()
    names = pd.Index([f"{gsm}_{b}" for b in barcodes])
    if not names.is_unique:
        import anndata as ad

        names = pd.Index(ad.utils.make_index_unique(names))
    adata.obs_names = names
    adata.obs["sample"] = pd.Categorical([gsm] * adata.n_obs)
    adata.obs["geo_title"] = pd.Categorical([sp_.title] * adata.n_obs)
    adata.obs["geo_organism"] = pd.Categorical([sp_.organism] * adata.n_obs)
    for k, v in sp_.characteristics.items():
        name = k if k not in adata.obs.columns else f"geo_{k}"
        adata.obs[name] = pd.Categorical([v] * adata.n_obs)
    # per-sample metadata files and series annotation
    for p in meta:
        note = _join_cell_table(adata, _read_table_any(p), source=p.name)
        if note:
            warnings.append(f"{gsm}: {note}")
            logger.warning("%s: %s", gsm, note)
    for name, table in annotations:
        note = _join_cell_table(adata, table, source=name)
        if note:
            warnings.append(f"{gsm}: {note}")
            logger.warning("%s: %s", gsm, note)
    # species
    try:
        detected = _read.detect_species(adata.var_names)
    except BonemetError as e:
        if species_hint not in _ORGANISMS:
            raise InputError(f"{gsm}: {e}") from None
        detected = None
    if species_hint in _ORGANISMS and detected and detected != species_hint:
        msg = f"{gsm}: gene symbols look {detected} but species={species_hint} was asked"
        logger.warning(msg)
        warnings.append(msg)
        summary["warnings"].append(msg)
    species = species_hint if species_hint in _ORGANISMS else detected
    # label / batch / condition columns, as bonemet.io.ingest sets them
    for key, what in ((opts.label_key, "label_key"), (opts.batch_key, "batch_key"),
                      (opts.condition_key, "condition_key")):  # fmt: skip
        if key is not None and key not in adata.obs.columns:
            avail = ", ".join(map(str, adata.obs.columns[:25]))
            raise InputError(
                f"{what} {key!r} is not an obs column of {gsm} (columns: {avail}); "
                "per-cell labels come from sample metadata files or the annotation table"
            )
    if opts.label_key is not None:
        lab = adata.obs[opts.label_key].astype(object)
        adata.obs["reference_label"] = pd.Categorical(
            lab.where(lab.notna(), "unlabelled").astype(str).to_numpy()
        )
    batch = adata.obs[opts.batch_key].astype(str) if opts.batch_key else None
    adata.obs["batch"] = pd.Categorical(
        batch.to_numpy() if batch is not None else [gsm] * adata.n_obs
    )
    if opts.condition_key is not None:
        adata.obs["condition"] = pd.Categorical(
            adata.obs[opts.condition_key].astype(str).to_numpy()
        )
    # provenance
    main = fs.parts.get("matrix", fs.files[0])
    src = _source_url(main, sp_, plan, fetcher)
    bm.update(
        {
            "version": __version__,
            "is_counts": ok,
            "counts_check": str(reason),
            "species": species,
            "warnings": warnings,
        }
    )
    used = [
        {"file": q.name, "size": q.stat().st_size, "sha256": fetcher.sha256(q)}
        for q in [*fs.files, *meta]
    ]
    entry = next((e for e in summary["samples"] if e["sample"] == gsm), None)
    if entry is not None:
        entry["files_used"] = used
    inputs = {k: v for k, v in dict(bm.get("inputs", {})).items() if k == gsm}
    info = dict(inputs.get(gsm, {}))
    info.update({"path": src, "sha256": fetcher.sha256(main), "format": fs.kind})
    bm["inputs"] = {gsm: info}
    bm["geo"] = {
        "accession": plan.accession,
        "sample": gsm,
        "title": sp_.title,
        "organism": sp_.organism,
        "base_url": plan.base,
        "files": [p.name for p in fs.files],
        "metadata_files": [p.name for p in meta],
    }
    adata.uns["bonemet"] = bm
    return adata


def _source_url(path: Path, sp_: _SamplePlan, plan: _Plan, fetcher: _Fetcher) -> str:
    for u in sp_.urls:
        if fetcher.local_path(u) == path:
            return u
    if plan.raw_tar:
        return f"{plan.raw_tar}#{path.name}"
    return str(path)


def _setup(
    base_url: str, cache_dir: str | os.PathLike | None, retries: int, backoff: float, timeout: float
) -> _Fetcher:
    base = _norm_base(base_url)
    if cache_dir is None:
        import pooch

        cache = Path(pooch.os_cache("bonemet")) / "geo"
    else:
        cache = Path(cache_dir)
    return _Fetcher(
        base=base,
        cache=cache.expanduser().resolve(),
        retries=int(retries),
        backoff=float(backoff),
        timeout=float(timeout),
    )


def _new_summary(plan: _Plan, dry_run: bool) -> dict[str, Any]:
    return {
        "accession": plan.accession,
        "base_url": plan.base,
        "soft_url": plan.soft_url,
        "dry_run": dry_run,
        "series_title": plan.soft["series"].get("title", ""),
        "samples": [
            {
                "sample": s.gsm,
                "title": s.title,
                "organism": s.organism,
                "source": "series _RAW.tar" if s.from_tar else "sample files",
                "files": [u.rsplit("/", 1)[-1] for u in s.urls],
            }
            for s in plan.samples
        ],
        "skipped": [{"sample": k, "why": v} for k, v in plan.skipped.items()],
        "series_files": [u.rsplit("/", 1)[-1] for u in plan.series_files],
        "unclassified": [
            {"sample": None, "file": u, "why": "not a GEO file"} for u in plan.foreign
        ],
        "warnings": [],
    }


def read_geo(
    accession: str,
    *,
    base_url: str = GEO_BASE_URL,
    cache_dir: str | os.PathLike | None = None,
    samples: Sequence[str] | None = None,
    dry_run: bool = False,
    include_title: str | None = None,
    exclude_title: str | None = None,
    species: str | None = None,
    annotation: str | Sequence[str] | None = None,
    label_key: str | None = None,
    batch_key: str | None = None,
    condition_key: str | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Read a GEO series into one AnnData per sample.

    Parameters
    ----------
    accession
        Series accession, e.g. ``"GSE143791"``.
    base_url
        Root of every download (GEO's ``ftp://ftp.ncbi.nlm.nih.gov/geo/`` URLs are mapped
        onto it). Must be http(s).
    cache_dir
        Download cache; default ``pooch.os_cache("bonemet")/geo``. Files found there are
        not downloaded again (a warm cache works offline).
    samples
        GSM ids to keep (default: every sample of the series that passes the filters).
    dry_run
        Download only the SOFT file and return the plan (files, sizes from HEAD requests
        or the cache) instead of AnnData objects.
    include_title, exclude_title
        Regular expressions (``re.search``) on the sample titles, for mixed series.
    species
        ``"human"``/``"mouse"``: keep samples of that organism only (SOFT
        ``!Sample_organism_ch1``); recorded in ``uns["bonemet"]["species"]``.
        ``None``/``"auto"``: no filter, species detected from the gene symbols
        (:class:`InputError` when they do not tell).
    annotation
        File name or glob pattern(s) of series-level per-cell tables (e.g.
        ``"GSE143791_cell.annotation.human.csv.gz"``) whose columns are joined onto
        ``obs`` by the original cell barcode. Per-sample metadata files (names with a
        ``meta``/``metadata``/``annotation``/``celltype``/``clusters`` token) are joined the
        same way, always.
    label_key, batch_key, condition_key
        obs columns (SOFT characteristics, joined metadata) copied to
        ``obs["reference_label"]`` (missing labels: ``"unlabelled"``), ``obs["batch"]``
        (default: the GSM id) and ``obs["condition"]``, as :func:`bonemet.io.ingest` does.
    retries, backoff, timeout
        Retries per file after the first attempt, the first back-off delay in seconds
        (doubled each retry) and the HTTP timeout.

    Returns
    -------
    dict
        ``{GSM: AnnData}``: raw counts in ``X`` (cells × genes, unique symbols),
        ``obs["sample"]`` = GSM id, ``obs["geo_title"]``, ``obs["geo_organism"]``,
        ``obs["geo_barcode"]`` (the barcode as in the file), ``obs["batch"]``, one column
        per SOFT characteristic (sanitised key, e.g. ``tissue_type``), joined metadata
        columns, ``obs["reference_label"]``/``obs["condition"]`` when asked; obs names
        ``<GSM>_<barcode>``; ``uns["bonemet"]`` with ``version``, ``is_counts``,
        ``counts_check``, ``species``, ``inputs`` ({GSM: path (URL), sha256, format}),
        ``geo`` and ``warnings``. With ``dry_run=True`` the plan
        dict (as :func:`fetch_geo` returns it) instead.

    Raises
    ------
    DownloadError
        HTTP errors (404 …), truncated or corrupt gzip, size mismatch after retries.
    InputError
        Unknown accession or sample ids, unsafe tar members, unreadable files.
    """
    fetcher = _setup(base_url, cache_dir, retries, backoff, timeout)
    plan = _make_plan(
        accession,
        fetcher,
        samples=samples,
        species=species,
        include_title=include_title,
        exclude_title=exclude_title,
        annotation=annotation,
    )
    summary = _new_summary(plan, dry_run)
    opts = _Opts(species, label_key, batch_key, condition_key)
    if dry_run:
        summary.update(_dry_run(plan, fetcher))
        return summary
    return dict(_iter_samples(plan, fetcher, summary, opts))


def fetch_geo(
    accession: str,
    *,
    out: str | os.PathLike,
    base_url: str = GEO_BASE_URL,
    cache_dir: str | os.PathLike | None = None,
    samples: Sequence[str] | None = None,
    dry_run: bool = False,
    include_title: str | None = None,
    exclude_title: str | None = None,
    species: str | None = None,
    annotation: str | Sequence[str] | None = None,
    label_key: str | None = None,
    batch_key: str | None = None,
    condition_key: str | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Download a GEO series and write one ``.h5ad`` per sample (``bonemet fetch-geo``).

    Writes ``OUT/<GSM>.h5ad`` (each atomically, as soon as the sample is parsed), then,
    only after every sample succeeded, ``OUT/samplesheet.csv`` (columns ``sample``,
    ``path`` (relative to OUT), ``format``, ``title``, ``organism``, ``n_cells``, ``n_genes``,
    ``is_counts``, ``species``) and ``OUT/geo_provenance.json`` (URL, size and SHA-256
    of every file used, the summary). A samplesheet left by an earlier run is removed
    first, so a failed run never leaves a samplesheet pointing at an incomplete set.
    Parameters as :func:`read_geo`.

    Returns
    -------
    dict
        Summary: ``accession``, ``samples`` (one dict per sample: ``sample``, ``title``,
        ``organism``, ``path``, ``n_cells``, ``n_genes``, ``is_counts``, …),
        ``skipped``, ``unclassified`` (files not used and why), ``warnings``,
        ``downloads`` (``url``, ``path``, ``size``, ``sha256``, ``cached``),
        ``samplesheet``, ``provenance``; with ``dry_run=True`` ``files`` (``url``,
        ``size``, ``cached``) and ``total_bytes`` instead, and nothing is written.

    Raises
    ------
    DownloadError, InputError
        With a one-line message naming what failed (see :func:`read_geo`).
    """
    fetcher = _setup(base_url, cache_dir, retries, backoff, timeout)
    plan = _make_plan(
        accession,
        fetcher,
        samples=samples,
        species=species,
        include_title=include_title,
        exclude_title=exclude_title,
        annotation=annotation,
    )
    summary = _new_summary(plan, dry_run)
    opts = _Opts(species, label_key, batch_key, condition_key)
    out_dir = Path(out)
    if dry_run:
        summary.update(_dry_run(plan, fetcher))
        return summary
    out_dir.mkdir(parents=True, exist_ok=True)
    sheet, prov = out_dir / "samplesheet.csv", out_dir / "geo_provenance.json"
    for stale in (sheet, prov):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    rows: list[dict[str, Any]] = []
    by_gsm = {s["sample"]: s for s in summary["samples"]}
    for gsm, adata in _iter_samples(plan, fetcher, summary, opts):
        path = out_dir / f"{check_sample_id(gsm)}.h5ad"
        write_h5ad(adata, path)
        bmu = adata.uns["bonemet"]
        row = {
            "sample": gsm,
            "path": path.name,  # relative to the samplesheet's folder (portable)
            "format": "h5ad",
            "title": by_gsm[gsm]["title"],
            "organism": by_gsm[gsm]["organism"],
            "n_cells": int(adata.n_obs),
            "n_genes": int(adata.n_vars),
            "is_counts": bool(bmu["is_counts"]),
            "species": bmu["species"],
        }
        rows.append(row)
        by_gsm[gsm].update(
            {**row, "path": str(path.resolve()), "input_format": bmu["inputs"][gsm]["format"]}
        )
        del adata
    summary["downloads"] = list(fetcher.records.values())
    summary["samplesheet"] = str(sheet.resolve())
    summary["provenance"] = str(prov.resolve())
    write_json(summary, prov)
    write_csv(pd.DataFrame(rows), sheet, index=False)
    logger.info("%s: %d samples written to %s", plan.accession, len(rows), out_dir)
    return summary
