"""Samplesheets: one row per sample, columns ``sample,path`` plus optional ``format,batch,condition,species``."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .._errors import InputError
from .._utils import check_sample_id

__all__ = ["read_samplesheet", "SAMPLESHEET_COLUMNS"]

#: required then optional columns
SAMPLESHEET_COLUMNS = ("sample", "path", "format", "batch", "condition", "species")
_REQUIRED = ("sample", "path")
_FORMATS = ("auto", "10x_mtx", "10x_h5", "h5ad", "csv", "tsv", "mtx", "10x", "h5", "txt")
_SPECIES = ("auto", "human", "mouse")


def read_samplesheet(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a samplesheet CSV.

    Parameters
    ----------
    path
        A CSV (or TSV) with a header row. Required columns: ``sample`` (an id matching
        ``^[A-Za-z0-9._-]+$``, unique) and ``path`` (a file or folder; relative paths are
        resolved against the samplesheet's folder). Optional: ``format`` (``auto``,
        ``10x_mtx``, ``10x_h5``, ``h5ad``, ``csv``/``tsv``), ``batch`` (default: the sample),
        ``condition``, ``species`` (``auto``, ``human``, ``mouse``). Other columns are kept.

    Returns
    -------
    DataFrame with one row per sample, the columns above (absolute paths; empty optional
    fields filled with defaults: format ``auto``, batch = sample, species ``auto``,
    condition ``""``).

    Raises
    ------
    InputError
        Listing every problem found, each naming its data row (1-based, the header not counted).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"samplesheet {str(p)!r} does not exist or is not a file: check the path")
    sep = "\t" if p.name.lower().endswith((".tsv", ".txt")) else None
    try:
        df = pd.read_csv(
            p, sep=sep, engine="python", dtype=str, keep_default_na=False, skip_blank_lines=True
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        msg = " ".join(str(e).split())
        raise InputError(
            f"cannot parse samplesheet {str(p)!r} as CSV ({msg}): fix the file"
        ) from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise InputError(
            f"samplesheet {str(p)!r} lacks the column(s) {', '.join(missing)}: its header must be "
            f"'sample,path' plus optional {','.join(SAMPLESHEET_COLUMNS[2:])} (found: {','.join(df.columns)})"
        )
    dup_cols = df.columns[df.columns.duplicated()].tolist()
    if dup_cols:
        raise InputError(f"samplesheet {str(p)!r} repeats the column(s) {', '.join(dup_cols)}")
    if len(df) == 0:
        raise InputError(f"samplesheet {str(p)!r} has no data rows: add one row per sample")
    for c in SAMPLESHEET_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    df = df.apply(lambda s: s.str.strip())

    base = p.resolve().parent
    problems: list[str] = []
    seen: dict[str, int] = {}
    paths: list[str] = []
    for i, row in enumerate(df.itertuples(index=False), start=1):
        r = row._asdict()
        where = f"row {i}"
        sample = r["sample"]
        if sample:
            where = f"row {i} (sample {sample!r})"
        for c in _REQUIRED:
            if not r[c]:
                problems.append(f"{where}: empty {c!r} field")
        if sample:
            try:
                check_sample_id(sample)
            except InputError:
                problems.append(
                    f"{where}: bad sample id: use only letters, digits, '.', '_' and '-'"
                )
            if sample in seen:
                problems.append(f"{where}: duplicate sample name (also in row {seen[sample]})")
            else:
                seen[sample] = i
        fpath = r["path"]
        resolved = ""
        if fpath:
            q = Path(fpath).expanduser()
            q = q if q.is_absolute() else base / q
            resolved = str(q.resolve())
            if not q.exists():
                problems.append(f"{where}: file {fpath!r} does not exist (looked at {resolved})")
        paths.append(resolved)
        fmt = r["format"].lower()
        if fmt and fmt not in _FORMATS:
            problems.append(
                f"{where}: unknown format {r['format']!r} (use one of {', '.join(_FORMATS[:6])})"
            )
        spc = r["species"].lower()
        if spc and spc not in _SPECIES:
            problems.append(f"{where}: unknown species {r['species']!r} (use auto, human or mouse)")
    if problems:
        shown = problems[:10]
        more = f"; … and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise InputError(f"samplesheet {str(p)!r}: " + "; ".join(shown) + more)

    df["path"] = paths
    df["format"] = df["format"].str.lower().replace("", "auto")
    df["species"] = df["species"].str.lower().replace("", "auto")
    df["batch"] = df["batch"].where(df["batch"] != "", df["sample"])
    cols = list(SAMPLESHEET_COLUMNS) + [c for c in df.columns if c not in SAMPLESHEET_COLUMNS]
    return df[cols].reset_index(drop=True)
