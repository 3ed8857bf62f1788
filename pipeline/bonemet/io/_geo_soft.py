"""GEO SOFT files: accession checks, URLs on one root, the family SOFT parser."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .._errors import InputError

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
