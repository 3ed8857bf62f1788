"""Samplesheets: one row per sample, columns ``sample,path`` plus optional ``format,batch,condition,species,subject,tissue``.

The rules (columns, required fields, the sample-id pattern, allowed formats and species,
unique samples, paths that must exist) live in one file, ``bonemet/data/schema_input.json``
(the nf-schema samplesheet format); the Nextflow workflow reads the same file.
"""

from __future__ import annotations

import io
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from .._errors import InputError
from .._resources import package_data_dir

__all__ = ["read_samplesheet", "samplesheet_schema", "SAMPLESHEET_COLUMNS"]

_REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://.+")


@lru_cache(maxsize=1)
def samplesheet_schema() -> dict[str, Any]:
    """The samplesheet rules (``bonemet/data/schema_input.json``)."""
    return json.loads((package_data_dir() / "schema_input.json").read_text())


def _rules() -> tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    schema = samplesheet_schema()
    props = schema["items"]["properties"]
    return props, tuple(schema["items"]["required"]), tuple(schema.get("uniqueEntries", ()))


#: the columns, required then optional (the schema's order)
SAMPLESHEET_COLUMNS: tuple[str, ...] = tuple(samplesheet_schema()["items"]["properties"])


def _separator(p: Path) -> str | None:
    return "\t" if p.name.lower().endswith((".tsv", ".txt")) else None


def read_samplesheet(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a samplesheet CSV.

    Parameters
    ----------
    path
        A CSV (or TSV) with a header row. Required columns: ``sample`` (an id matching
        ``^[A-Za-z0-9._-]+$``, unique) and ``path`` (a file or folder; relative paths are
        resolved against the samplesheet's folder). Optional: ``format`` (``auto``,
        ``10x_mtx``, ``10x_h5``, ``h5ad``, ``csv``/``tsv``), ``batch`` (default: the sample),
        ``condition``, ``species`` (``auto``, ``human``, ``mouse``), ``subject`` and
        ``tissue`` (the animal or patient and the tissue of the sample, ids like the sample's;
        ingest writes them to ``obs["subject"]`` and ``obs["tissue"]``, e.g. for the paired
        OPN axis, ``axes.subject_key``/``axes.tissue_key``). Other columns are kept.

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
    props, required, unique = _rules()
    try:
        # blank lines and lines starting with '#' are skipped (as the Nextflow reader does)
        lines = [
            ln
            for ln in p.read_text(encoding="utf-8-sig").splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")
        ]
        df = pd.read_csv(
            io.StringIO("\n".join(lines)),
            sep=_separator(p),
            engine="python",
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=True,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        msg = " ".join(str(e).split())
        raise InputError(
            f"cannot parse samplesheet {str(p)!r} as CSV ({msg}): fix the file"
        ) from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        optional = [c for c in SAMPLESHEET_COLUMNS if c not in required]
        raise InputError(
            f"samplesheet {str(p)!r} lacks the required column(s) {', '.join(missing)}: its "
            f"header must be '{','.join(required)}' plus optional {','.join(optional)} "
            f"(found: {','.join(df.columns)})"
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
    seen: dict[str, dict[str, int]] = {c: {} for c in unique}
    paths: list[str] = []
    for i, row in enumerate(df.itertuples(index=False), start=1):
        r = row._asdict()
        where = f"row {i}"
        if r.get("sample"):
            where = f"row {i} (sample {r['sample']!r})"
        for c in required:
            if not r[c]:
                problems.append(f"{where}: empty {c!r} field")
        for c, rule in props.items():
            v = r[c]
            if not v:
                continue
            if "pattern" in rule and not re.fullmatch(rule["pattern"], v):
                problems.append(f"{where}: {c} {v!r} {rule.get('errorMessage', 'is not allowed')}")
            if "enum" in rule and v.lower() not in rule["enum"]:
                problems.append(
                    f"{where}: unknown {c} {v!r} (use one of {', '.join(rule['enum'][:6])})"
                )
        for c in unique:
            v = r[c]
            if v and v in seen[c]:
                problems.append(f"{where}: duplicate {c} (also in row {seen[c][v]})")
            elif v:
                seen[c][v] = i
        fpath = r["path"]
        resolved = ""
        if fpath and props["path"].get("exists"):
            if _REMOTE.match(fpath):
                problems.append(
                    f"{where}: {fpath!r} is a remote path: the local runner reads local files "
                    "(download it, or run the Nextflow pipeline, which stages remote files)"
                )
            else:
                q = Path(fpath).expanduser()
                q = q if q.is_absolute() else base / q
                resolved = str(q.resolve())
                if not q.exists():
                    problems.append(
                        f"{where}: file {fpath!r} does not exist (looked at {resolved})"
                    )
        paths.append(resolved)
    if problems:
        shown = problems[:10]
        more = f"; … and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise InputError(f"samplesheet {str(p)!r}: " + "; ".join(shown) + more)

    df["path"] = paths
    for c, rule in props.items():
        if "enum" in rule:
            df[c] = df[c].str.lower()
        if "default" in rule:
            df[c] = df[c].replace("", rule["default"])
    df["batch"] = df["batch"].where(df["batch"] != "", df["sample"])
    cols = list(SAMPLESHEET_COLUMNS) + [c for c in df.columns if c not in SAMPLESHEET_COLUMNS]
    return df[cols].reset_index(drop=True)
