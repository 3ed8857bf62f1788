"""The file sets of a GEO sample (10x triplets with any prefix, 10x .h5, .h5ad, dense
tables) and their readers."""

from __future__ import annotations

import gzip
import re
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._counts import is_counts
from .._errors import InputError, one_line
from .._logging import logger
from ._read import orientation_of, sniff_delimiter

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
    sep = sniff_delimiter(path)
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
            f"{path.name} ({gsm}) holds non-numeric values ({one_line(e, limit=200)}): not an expression table"
        ) from None
    except (UnicodeDecodeError, EOFError, OSError, zlib.error) as e:
        raise InputError(
            f"{path.name} ({gsm}) cannot be parsed as a table: {one_line(e, limit=200)}"
        ) from None
    if not blocks:
        raise InputError(f"{path.name} ({gsm}) has no data rows")
    X = sp.vstack(blocks, format="csr")
    orientation = orientation_of(row_labels, col_labels)
    if orientation == "genes x cells":
        X, cells, genes = X.T.tocsr(), col_labels, row_labels
    else:
        cells, genes = row_labels, col_labels
    logger.info("%s: %s table, %d cells x %d genes", path.name, orientation, len(cells), len(genes))
    X, genes, note = _merge_duplicate_genes(X, genes, is_counts=is_counts(X))
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
        from ._read import sum_duplicate_columns

        summed, uniques, _ = sum_duplicate_columns(X, names)
        return summed, uniques, f"{n} duplicate gene symbols summed"
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
    sep = sniff_delimiter(path)
    try:
        return pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            keep_default_na=True,
            engine="c" if sep != r"\s+" else "python",
        )
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError, zlib.error) as e:
        raise InputError(
            f"{path.name} cannot be parsed as a table: {one_line(e, limit=200)}"
        ) from None


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
