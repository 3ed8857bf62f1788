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
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .._errors import BonemetError, DownloadError, InputError, one_line
from .._logging import logger
from .._utils import check_sample_id, write_csv, write_h5ad, write_json
from ._download import _Fetcher
from ._geo_files import (
    _classify,
    _FileSet,
    _gsm_of,
    _join_cell_table,
    _pick_set,
    _read_set,
    _read_table_any,
)
from ._geo_soft import (
    _GEO_URL_PREFIX,
    _ORGANISMS,
    GEO_BASE_URL,
    _check_accession,
    _map_url,
    _norm_base,
    geo_soft_url,
    parse_soft,
)
from ._tarsafe import _safe_extract, _tar_names

__all__ = ["read_geo", "fetch_geo", "parse_soft", "geo_soft_url"]


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
            f"{soft_path.name} in the cache is unreadable ({one_line(e, limit=200)}); delete it and retry"
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
