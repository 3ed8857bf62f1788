"""Readers for count matrices: 10x mtx / h5, .h5ad, dense CSV/TSV; species and count checks.

Every reader returns one sample as an :class:`~anndata.AnnData` with

- ``X``: a CSR matrix (float32) of the values in the file (raw counts for count input);
- ``var_names``: unique gene symbols (duplicate symbols are summed), ``var["gene_ids"]``
  where the file has ids;
- only ``Gene Expression`` features (antibody, multiplexing, CRISPR … are dropped and
  counted in ``uns["bonemet"]["inputs"][<name>]["features_dropped"]``).

:func:`ingest` turns a path (a file, a folder, a samplesheet or a multi-sample
``.h5ad``) into one AnnData per sample following the bonemet AnnData contract.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._counts import check_counts
from .._errors import InputError, one_line
from .._formats import FORMAT_ALIASES, FORMATS
from .._logging import logger
from .._meta import bonemet_uns
from .._species import detect_species, resolve_species, species_contradiction
from .._utils import check_sample_id, sha256_file

__all__ = ["read", "ingest", "detect_species", "check_counts", "FORMATS"]

_GEX = "Gene Expression"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# folder names 10x tools give their outputs; a sample is named after the folder above them
_TENX_DIR_NAMES = {
    "filtered_feature_bc_matrix",
    "raw_feature_bc_matrix",
    "filtered_gene_bc_matrices",
    "raw_gene_bc_matrices",
    "filtered_gene_bc_matrices_h5",
    "raw_gene_bc_matrices_h5",
    "sample_filtered_feature_bc_matrix",
    "outs",
    "count",
}


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------


def _to_csr(x: Any) -> sp.csr_matrix:
    """A float32 CSR matrix of ``x`` (dense or sparse)."""
    if sp.issparse(x):
        m = sp.csr_matrix(x)
    else:
        m = sp.csr_matrix(np.asarray(x))
    if m.dtype != np.float32:
        m = m.astype(np.float32)
    m.sum_duplicates()
    m.eliminate_zeros()
    return m


def _strip_suffixes(name: str) -> str:
    for suf in (".gz", ".bz2", ".zip", ".xz"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
    for suf in (".h5ad", ".h5", ".hdf5", ".csv", ".tsv", ".txt", ".mtx", ".loom"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    return name


def sanitize_sample_id(name: str) -> str:
    """Turn ``name`` into a safe sample id (``^[A-Za-z0-9._-]+$``)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name).strip()).strip("._-")
    return s or "sample"


def _default_sample_name(path: Path) -> str:
    """Name a sample after its file or, for 10x output folders/files, the folder above."""
    p = path.resolve()
    stem = _strip_suffixes(p.name)
    # /x/S1/filtered_gene_bc_matrices/hg19 -> S1 ; /x/S1/outs/filtered_feature_bc_matrix.h5 -> S1
    parts = [stem, *[q.name for q in p.parents]]
    i = 0
    if p.is_dir() and p.parent.name in _TENX_DIR_NAMES and stem not in _TENX_DIR_NAMES:
        i = 1  # a genome sub-folder
    while i < len(parts) - 1 and (
        parts[i] in _TENX_DIR_NAMES or _strip_suffixes(parts[i]) in _TENX_DIR_NAMES
    ):
        i += 1
    return sanitize_sample_id(parts[i])


def _is_hdf5(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == _HDF5_MAGIC
    except OSError:
        return False


def _find_mtx(folder: Path) -> tuple[Path, str | None] | None:
    """The folder holding ``[prefix]matrix.mtx[.gz]`` at or below ``folder`` (one level deep
    per step, only when the choice is unique) and the file-name prefix."""
    for _ in range(3):
        hits = sorted(
            f.name
            for f in folder.iterdir()
            if f.is_file() and re.search(r"matrix\.mtx(\.gz)?$", f.name)
        )
        if len(hits) == 1:
            prefix = re.sub(r"matrix\.mtx(\.gz)?$", "", hits[0])
            return folder, (prefix or None)
        if len(hits) > 1:
            raise InputError(
                f"folder {str(folder)!r} holds several matrix files ({', '.join(hits)}): "
                "give the path of one sample's folder, or one samplesheet row per sample"
            )
        subdirs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if len(subdirs) != 1:
            return None
        folder = subdirs[0]
    return None


def _guess_format(path: Path) -> str:
    if path.is_dir():
        if _find_mtx(path) is not None:
            return "10x_mtx"
        raise InputError(
            f"folder {str(path)!r} holds no 10x matrix (matrix.mtx[.gz] with barcodes and "
            "features/genes files): give a 10x folder, a .h5/.h5ad/.csv file, or a samplesheet"
        )
    name = path.name.lower()
    base = _strip_suffixes(name) if name.endswith(".gz") else name
    if name.endswith(".h5ad"):
        return "h5ad"
    if name.endswith((".h5", ".hdf5")):
        return "10x_h5"
    if re.search(r"matrix\.mtx(\.gz)?$", name):
        return "10x_mtx"
    if name.endswith((".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")) or base != name:
        return "csv"
    if _is_hdf5(path):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                return "h5ad" if "obs" in f and "var" in f else "10x_h5"
        except OSError:
            pass
    raise InputError(
        f"cannot tell the format of {str(path)!r} from its name: pass format= "
        f"(one of {', '.join(FORMATS[1:])})"
    )


def _normalize_format(fmt: str | None) -> str:
    key = str(fmt or "auto").strip().lower()
    if key not in FORMAT_ALIASES:
        raise InputError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    return FORMAT_ALIASES[key]


# --------------------------------------------------------------------------------------
# gene handling
# --------------------------------------------------------------------------------------


def _keep_gene_expression(adata: ad.AnnData, info: dict[str, Any]) -> ad.AnnData:
    """Drop features whose ``feature_types`` is not ``Gene Expression`` and count them."""
    col = next((c for c in ("feature_types", "feature_type") if c in adata.var), None)
    if col is None:
        info["features_dropped"] = {}
        info["n_features_dropped"] = 0
        return adata
    ft = adata.var[col].astype(str)
    keep = (ft == _GEX).to_numpy()
    dropped = ft[~keep].value_counts()
    info["features_dropped"] = {str(k): int(v) for k, v in dropped.items()}
    info["n_features_dropped"] = int((~keep).sum())
    if not keep.any():
        raise InputError(
            f"{info['path']!r} has no 'Gene Expression' features (only {', '.join(dropped.index)}): "
            "bonemet needs gene-expression counts"
        )
    if (~keep).any():
        logger.info(
            "dropped %d non-gene-expression features (%s)",
            int((~keep).sum()),
            ", ".join(f"{k}: {v}" for k, v in info["features_dropped"].items()),
        )
        adata = adata[:, keep].copy()
    return adata


def sum_duplicate_genes(adata: ad.AnnData) -> tuple[ad.AnnData, int]:
    """Sum the columns of genes that share a symbol; return the new AnnData and how many
    columns were merged away. ``var["gene_ids"]`` keeps the first id of each symbol."""
    names = pd.Index(adata.var_names.astype(str).str.strip())
    if names.is_unique:
        if not adata.var_names.equals(names):
            adata.var_names = names
        return adata, 0
    new_x, uniques, first = sum_duplicate_columns(adata.X, names)
    var = adata.var.iloc[first].copy()
    var.index = pd.Index(uniques)
    out = ad.AnnData(X=new_x, obs=adata.obs.copy(), var=var, uns=dict(adata.uns))
    return out, len(names) - len(uniques)


def sum_duplicate_columns(
    x: Any, names: Sequence[str]
) -> tuple[sp.csr_matrix, list[str], np.ndarray]:
    """Sum the columns of ``x`` that share a name (one sparse product).

    Returns the float32 CSR matrix with one column per unique name (first-seen order), the
    unique names, and the index of each name's first column.
    """
    codes, uniques = pd.factorize(pd.Index([str(n) for n in names]))
    n_old, n_new = len(codes), len(uniques)
    agg = sp.csr_matrix(
        (np.ones(n_old, dtype=np.float32), (np.arange(n_old), codes)), shape=(n_old, n_new)
    )
    new_x = (x @ agg) if sp.issparse(x) else sp.csr_matrix(np.asarray(x)) @ agg
    first = pd.Series(np.arange(n_old)).groupby(codes).first().to_numpy()
    return _to_csr(new_x), [str(u) for u in uniques], first


_ENSEMBL = r"^ENS[A-Z]*G\d{6,}"


def _check_gene_names(adata: ad.AnnData, path: str) -> None:
    """Refuse Ensembl ids as gene names when the file carries no symbols to map them to."""
    vn = adata.var_names.astype(str)
    if len(vn) and np.mean(vn.str.match(_ENSEMBL)) > 0.5:
        shown = ", ".join(vn[:3])
        raise InputError(
            f"the gene names of {path!r} are Ensembl ids (e.g. {shown}) and the file has no gene "
            "symbols to map them to, but the marker and signature gene sets are symbols: give a "
            "file that carries symbols (a 10x features.tsv holds ids and symbols; a CSV may hold "
            "ids then symbols in its first two columns) or map the ids to symbols first"
        )


def _check_values(adata: ad.AnnData, path: str) -> None:
    """Refuse missing, infinite and negative values, naming the first cell and gene.

    A few negative values among otherwise integer data are an input error; data that are
    scaled throughout (many negative, non-integer values) pass, and are reported as not
    being counts by :func:`check_counts`.
    """
    x = adata.X
    m = x.tocsr() if sp.issparse(x) else sp.csr_matrix(np.asarray(x))
    data = np.asarray(m.data)

    def where(mask: np.ndarray) -> str:
        i = int(np.flatnonzero(mask)[0])
        row = int(np.searchsorted(m.indptr, i, side="right") - 1)
        return f"first at cell {str(adata.obs_names[row])!r}, gene {str(adata.var_names[m.indices[i]])!r}"

    bad = ~np.isfinite(data)
    if bad.any():
        raise InputError(
            f"{path!r} holds {int(bad.sum())} NaN or infinite value(s) ({where(bad)}): counts "
            "cannot be missing (an empty field is read as NaN); fill them in or remove those "
            "cells or genes"
        )
    neg = data < 0
    if neg.any():
        rest = data[~neg]
        integer = rest.size == 0 or bool(np.all(np.abs(rest - np.round(rest)) < 1e-4))
        if integer or neg.mean() < 0.01:
            i = int(np.flatnonzero(neg)[0])
            raise InputError(
                f"{path!r} holds {int(neg.sum())} negative value(s) ({where(neg)}: "
                f"{float(data[i]):g}): counts cannot be negative; fix those entries or give the "
                "raw count matrix"
            )


def prefix_cell_names(names: Sequence[Any], sample: str) -> pd.Index:
    """Cell names ``<sample>_<barcode>``; a name that already starts with ``<sample>_`` is
    kept as it is, so reading a file written by bonemet (or ingesting twice) never gives
    ``S1_S1_<barcode>``."""
    pre = f"{sample}_"
    return pd.Index([b if b.startswith(pre) else pre + b for b in map(str, names)])


def _finalize(adata: ad.AnnData, info: dict[str, Any], *, sample: str | None) -> ad.AnnData:
    _check_gene_names(adata, info["path"])
    adata = _keep_gene_expression(adata, info)
    adata.var_names = adata.var_names.astype(str)
    adata, n_dup = sum_duplicate_genes(adata)
    info["n_duplicate_genes_summed"] = int(n_dup)
    for c in ("feature_types", "feature_type"):
        if c in adata.var and (adata.var[c].astype(str) == _GEX).all():
            del adata.var[c]
    if "gene_ids" in adata.var:
        adata.var["gene_ids"] = adata.var["gene_ids"].astype(str)
    adata.X = _to_csr(adata.X)
    adata.obs_names = adata.obs_names.astype(str)
    name = info.pop("_name")
    if sample is not None:
        check_sample_id(sample, where=f"reading {info['path']}")
        adata.obs_names = prefix_cell_names(adata.obs_names, sample)
        adata.obs["sample"] = pd.Categorical([sample] * adata.n_obs)
        name = sample
    if not adata.obs_names.is_unique:
        adata.obs_names_make_unique()
    bm = bonemet_uns(adata)
    bm.setdefault("inputs", {})[name] = info
    bm.setdefault("warnings", [])
    return adata


# --------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------


def _read_10x_mtx(path: Path) -> ad.AnnData:
    import scanpy as sc

    found = _find_mtx(path if path.is_dir() else path.parent)
    if found is None:
        raise InputError(
            f"no matrix.mtx[.gz] found in {str(path)!r}: give the folder that holds "
            "matrix.mtx, barcodes.tsv and features.tsv (or genes.tsv)"
        )
    folder, prefix = found
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata = sc.read_10x_mtx(
                folder, var_names="gene_symbols", make_unique=False, gex_only=False, prefix=prefix
            )
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - every reader failure becomes one clear line
        raise InputError(
            f"cannot read 10x folder {str(folder)!r} ({type(e).__name__}: {one_line(e, limit=300)}): it must hold "
            "matrix.mtx, barcodes.tsv and features.tsv/genes.tsv (plain or .gz) from Cell Ranger"
        ) from None
    return adata


def _check_10x_h5(path: Path, genome: str | None) -> tuple[str, str | None]:
    """Validate a 10x HDF5 file's layout; return ("v3", None) or ("v2", genome)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(
            f"cannot open {str(path)!r} as HDF5 ({one_line(e, limit=300)}): is it a 10x .h5 file?"
        ) from None
    with f:
        if "matrix" in f:
            g = f["matrix"]
            need = [
                "barcodes",
                "data",
                "indices",
                "indptr",
                "shape",
                "features/id",
                "features/name",
            ]
            missing = [k for k in need if k not in g]
            if missing:
                what = ", ".join(f"matrix/{m}" for m in missing)
                hint = " (feature ids)" if "features/id" in missing else ""
                raise InputError(
                    f"10x HDF5 file {str(path)!r} is malformed: it lacks {what}{hint}; "
                    "re-export it with Cell Ranger (v3+) or give the matrix.mtx folder instead"
                )
            return "v3", None
        if "obs" in f and "var" in f:
            raise InputError(
                f"{str(path)!r} is an AnnData file: name it *.h5ad or pass format='h5ad'"
            )
        need = ["barcodes", "data", "indices", "indptr", "shape", "genes"]
        genomes = [k for k in f if isinstance(f[k], h5py.Group) and all(n in f[k] for n in need)]
        if not genomes:
            raise InputError(
                f"{str(path)!r} is not a 10x HDF5 matrix (no 'matrix' group and no genome group "
                "with barcodes/data/indices/indptr/shape/genes): give a Cell Ranger .h5 file"
            )
        if genome is not None:
            if genome not in genomes:
                raise InputError(
                    f"genome {genome!r} is not in {str(path)!r}: pick one of {', '.join(genomes)}"
                )
            return "v2", genome
        if len(genomes) > 1:
            raise InputError(
                f"10x HDF5 file {str(path)!r} holds several genomes ({', '.join(genomes)}): "
                f"pick one with bm.io.read(path, genome={genomes[0]!r})"
            )
        return "v2", genomes[0]


def _read_10x_h5(path: Path, genome: str | None) -> ad.AnnData:
    import scanpy as sc

    version, g = _check_10x_h5(path, genome)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata = sc.read_10x_h5(path, genome=g, gex_only=False)
    except Exception as e:  # noqa: BLE001
        raise InputError(
            f"cannot read 10x HDF5 file {str(path)!r} ({type(e).__name__}: {one_line(e, limit=300)}): "
            "give a Cell Ranger .h5 file, or the matrix.mtx folder instead"
        ) from None
    if version == "v3" and genome is not None and "genome" in adata.var:
        keep = (adata.var["genome"].astype(str) == genome).to_numpy()
        if not keep.any():
            avail = ", ".join(sorted(adata.var["genome"].astype(str).unique()))
            raise InputError(f"genome {genome!r} is not in {str(path)!r}: pick one of {avail}")
        adata = adata[:, keep].copy()
    return adata


_SYMBOL_COLUMNS = (
    "gene_symbols",
    "gene_symbol",
    "feature_name",
    "symbol",
    "gene_name",
    "gene_names",
)


def _read_h5ad(path: Path) -> tuple[ad.AnnData, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata = ad.read_h5ad(path)
    except Exception as e:  # noqa: BLE001
        raise InputError(
            f"cannot read .h5ad file {str(path)!r} ({type(e).__name__}: {one_line(e, limit=300)}): "
            "is it an AnnData file written by anndata/scanpy?"
        ) from None
    source = "X"
    ok, _ = check_counts(adata.X)
    if not ok:
        # look for raw counts elsewhere before giving up on them
        if "counts" in adata.layers and check_counts(adata.layers["counts"])[0]:
            adata.X = adata.layers["counts"]
            source = "layers['counts']"
        elif adata.raw is not None and check_counts(adata.raw.X)[0]:
            raw = adata.raw.to_adata()
            raw.obs = adata.obs
            raw.uns = adata.uns
            adata = raw
            source = "raw.X"
    adata.layers = {}
    adata.raw = None
    for k in list(adata.obsm.keys()):
        del adata.obsm[k]
    for k in list(adata.obsp.keys()):
        del adata.obsp[k]
    for k in list(adata.varm.keys()):
        del adata.varm[k]
    for k in list(adata.varp.keys()):
        del adata.varp[k]
    # Ensembl ids as var_names with a symbol column: use the symbols
    vn = adata.var_names.astype(str)
    if len(vn) and np.mean(vn.str.match(r"^ENS[A-Z]*G\d{6,}")) > 0.5:
        col = next((c for c in _SYMBOL_COLUMNS if c in adata.var), None)
        if col is not None:
            sym = adata.var[col].astype(str).to_numpy()
            ids = vn.to_numpy()
            good = np.array([s not in ("", "nan", "None") for s in sym])
            adata.var["gene_ids"] = ids
            adata.var_names = pd.Index(np.where(good, sym, ids))
    # bonemet bookkeeping from an earlier run does not describe this ingest
    adata.uns.pop("bonemet", None)
    return adata, source


def sniff_delimiter(path: Path) -> str:
    """The delimiter of a (gzipped) text table: ``,``, tab, ``;`` or runs of whitespace."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", newline="") as fh:  # type: ignore[operator]
            head = fh.readline()
            second = fh.readline()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise InputError(
            f"cannot read text file {str(path)!r} ({one_line(e, limit=300)}): is it a CSV/TSV?"
        ) from None
    if not head.strip():
        raise InputError(f"{str(path)!r} is empty: give a count table with a header row")
    try:
        return csv.Sniffer().sniff(head + second, delimiters=",\t; ").delimiter
    except csv.Error:
        counts = {d: head.count(d) for d in (",", "\t", ";")}
        best = max(counts, key=counts.get)  # type: ignore[arg-type]
        if counts[best] == 0:
            return r"\s+"
        return best


_COMMON_GENES = {
    g.upper()
    for g in """ACTB GAPDH B2M MALAT1 TMSB4X TMSB10 FTL FTH1 EEF1A1 TPT1 PTPRC CD74 LYZ S100A8 S100A9
    S100A4 S100A6 S100A10 S100A11 CD3E CD3D CD3G CD4 CD8A CD8B CD14 CD19 CD79A CD79B MS4A1 NKG7 GNLY
    IL7R CCR7 LTB VIM ACTG1 MYL6 PFN1 CFL1 UBB UBC HSP90AB1 HSPA8 NPM1 PPIA JUN FOS JUNB IER2 DUSP1
    KLF6 ZFP36 CXCL12 COL1A1 COL1A2 COL3A1 SPARC ACP5 CTSK MMP9 SPP1 APOE C1QA C1QB C1QC CD68 CSF1R
    ITGAM ADGRE1 LY6C1 CCL5 GZMB GZMA PRF1 MKI67 TOP2A TYROBP FCER1G LST1 AIF1 SRGN CST3 HBB HBA1
    HBA2 ALB EPCAM KRT8 KRT18 KRT19 PECAM1 CDH5 KDR RUNX2 SP7 BGLAP ALPL IBSP ELANE MPO CAMP LTF
    NEAT1 XIST ARHGDIB CORO1A LCP1 CD52 CD37 CD48 CD53 TXNIP SAT1 ANXA1 ANXA2 LGALS1 LGALS3 FN1
    H2AFZ H3F3A H3F3B HMGB1 HMGB2 TUBA1B TUBB STMN1 EIF1 EEF2 RACK1 NACA BTF3 SERF2 COX4I1 ATP5F1E""".split()
}
_GENE_PATTERN = re.compile(
    r"^(MT-|RP[LS]\d|ENS[A-Z]*G\d{6,}|GM\d{3,}$|.*RIK$|C\d+ORF\d+|LINC\d{3,}|MIR\d+HG|HLA-|H2-)",
    re.IGNORECASE,
)
_BARCODE_PATTERN = re.compile(r"[ACGTN]{8,}|^cell[_.-]?\d+|^\d+$|^bc[_.-]?\d+", re.IGNORECASE)


def _gene_likeness(labels: Sequence[Any]) -> float:
    """Fraction of ``labels`` that look like gene symbols/ids minus those that look like barcodes."""
    lab = [str(x) for x in list(labels)[:5000]]
    if not lab:
        return 0.0
    gene = sum(1 for s in lab if s.upper() in _COMMON_GENES or _GENE_PATTERN.match(s))
    bc = sum(1 for s in lab if _BARCODE_PATTERN.search(s))
    return (gene - bc) / len(lab)


def orientation_of(row_labels: Sequence[Any], col_labels: Sequence[Any]) -> str:
    """``"genes x cells"`` or ``"cells x genes"``: which side of a table holds the genes.

    The side whose labels look more like gene symbols or ids (and less like cell barcodes)
    holds the genes. With no evidence either way, the longer side does: count tables from
    papers hold more genes than cells, and are usually genes x cells.
    """
    row_score, col_score = _gene_likeness(row_labels), _gene_likeness(col_labels)
    if row_score != col_score:
        return "genes x cells" if row_score > col_score else "cells x genes"
    return "genes x cells" if len(row_labels) >= len(col_labels) else "cells x genes"


def _read_csv(path: Path) -> tuple[ad.AnnData, str]:
    sep = sniff_delimiter(path)
    try:
        # the header is read apart, so duplicate names are not mangled (``CD14.1``)
        header = pd.read_csv(
            path,
            sep=sep,
            header=None,
            nrows=1,
            dtype=str,
            keep_default_na=False,
            engine="python" if sep == r"\s+" else "c",
        )
        df = pd.read_csv(
            path,
            sep=sep,
            header=None,
            skiprows=1,
            index_col=0,
            engine="python" if sep == r"\s+" else "c",
        )
        names = [str(v) for v in header.iloc[0].tolist()]
        if len(names) == df.shape[1] + 1:
            names = names[1:]  # first header field names the index column (or is blank)
        if len(names) != df.shape[1]:
            raise ValueError(f"the header has {len(names)} fields but rows have {df.shape[1] + 1}")
        df.columns = names
        df.index.name = None
    except Exception as e:  # noqa: BLE001
        raise InputError(
            f"cannot parse {str(path)!r} as a delimited count table ({type(e).__name__}: {one_line(e, limit=300)}): "
            "give a CSV/TSV with gene or cell names in the first column and a header row"
        ) from None
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise InputError(f"count table {str(path)!r} has no rows or no columns")
    df.index = df.index.astype(str)
    df.columns = df.columns.astype(str)
    ids: pd.Index | None = None
    pos = [i for i, dt in enumerate(df.dtypes) if not pd.api.types.is_numeric_dtype(dt)]
    if pos == [0]:
        # first column ids, second column symbols (genes x cells)
        ids = df.index
        sym = df.iloc[:, 0].astype(str).to_numpy()
        df = df.iloc[:, 1:]
        df.index = pd.Index(sym)
        pos = []
    non_num = [str(df.columns[i]) for i in pos]
    if non_num:
        shown = ", ".join(map(repr, non_num[:5]))
        raise InputError(
            f"count table {str(path)!r} has non-numeric columns ({shown}{', …' if len(non_num) > 5 else ''}): "
            "give a table of numbers with names in the first column only"
        )
    orientation = "genes x cells" if ids is not None else orientation_of(df.index, df.columns)
    values = df.to_numpy(dtype=np.float32, na_value=np.nan)  # refused by _check_values
    if orientation == "genes x cells":
        x = sp.csr_matrix(values.T)
        obs_names, var_names = df.columns, df.index
    else:
        x = sp.csr_matrix(values)
        obs_names, var_names = df.index, df.columns
    var = pd.DataFrame(index=pd.Index(var_names.astype(str)))
    if ids is not None:
        var["gene_ids"] = ids.astype(str).to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate symbols are summed right after
        adata = ad.AnnData(X=x, obs=pd.DataFrame(index=pd.Index(obs_names.astype(str))), var=var)
    return adata, orientation


def read(
    path: str | os.PathLike,
    *,
    format: str = "auto",
    sample: str | None = None,
    genome: str | None = None,
) -> ad.AnnData:
    """Read one sample's count matrix.

    Parameters
    ----------
    path
        A 10x folder (``matrix.mtx[.gz]`` + ``barcodes``/``features``/``genes`` files, or a
        folder holding a single such folder, e.g. ``filtered_gene_bc_matrices/``), a 10x
        ``.h5`` (Cell Ranger v2 or v3+), an ``.h5ad`` or a dense CSV/TSV (optionally gzipped;
        genes × cells or cells × genes, detected from which axis holds gene symbols).
    format
        ``"auto"`` (from the path), ``"10x_mtx"``, ``"10x_h5"``, ``"h5ad"``, ``"csv"``/``"tsv"``.
    sample
        If given, ``obs["sample"]`` is set to it and cell names become ``<sample>_<barcode>``.
    genome
        For multi-genome Cell Ranger v2 ``.h5`` files (and to subset v3 files): the genome to read.

    Returns
    -------
    AnnData with CSR float32 ``X`` (raw counts, integer-valued, for count input), unique gene
    symbols as ``var_names`` (duplicates summed), ``var["gene_ids"]`` where the file has ids, and
    ``uns["bonemet"]["inputs"][<sample or file stem>]`` = ``{"path", "format",
    "n_features_dropped", "features_dropped", "n_duplicate_genes_summed", ...}``.

    Raises
    ------
    InputError
        Missing path, unknown or malformed format (one-line message naming the file).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(
            f"input path {str(p)!r} does not exist: check the path (relative paths start at {os.getcwd()!r})"
        )
    fmt = _normalize_format(format)
    if fmt == "auto":
        fmt = _guess_format(p)
    info: dict[str, Any] = {
        "path": str(p.resolve()),
        "format": fmt,
        "_name": sample or _default_sample_name(p),
    }
    if fmt == "10x_mtx":
        adata = _read_10x_mtx(p)
    elif fmt == "10x_h5":
        if p.is_dir():
            raise InputError(
                f"{str(p)!r} is a folder, not a 10x .h5 file: use format='10x_mtx' or 'auto'"
            )
        adata = _read_10x_h5(p, genome)
        if genome is not None:
            info["genome"] = genome
    elif fmt == "h5ad":
        if p.is_dir():
            raise InputError(f"{str(p)!r} is a folder, not an .h5ad file")
        adata, source = _read_h5ad(p)
        info["counts_source"] = source
    elif fmt == "csv":
        if p.is_dir():
            raise InputError(f"{str(p)!r} is a folder, not a CSV/TSV file")
        adata, orientation = _read_csv(p)
        info["orientation"] = orientation
    else:  # pragma: no cover - _normalize_format guards this
        raise InputError(f"unknown format {format!r}")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(
            f"{str(p)!r} holds an empty matrix ({adata.n_obs} cells x {adata.n_vars} genes)"
        )
    _check_values(adata, info["path"])
    adata = _finalize(adata, info, sample=sample)
    logger.info("read %s (%s): %d cells x %d genes", p, fmt, adata.n_obs, adata.n_vars)
    return adata


# --------------------------------------------------------------------------------------
# ingest
# --------------------------------------------------------------------------------------


def _looks_like_samplesheet(p: Path) -> bool:
    if not p.is_file() or not p.name.lower().endswith((".csv", ".tsv", ".txt")):
        return False
    try:
        with open(p, newline="") as fh:
            head = fh.readline()
    except (OSError, UnicodeDecodeError):
        return False
    cols = [c.strip().strip('"').lower() for c in re.split(r"[,\t;]", head)]
    # a samplesheet names its columns; a count table's header is cell or gene names. A
    # header with a "sample" column among a few is a samplesheet, even when it lacks "path"
    # (read_samplesheet then says so)
    return "sample" in cols and ("path" in cols or len(cols) <= 10)


def _column(adata: ad.AnnData, key: str, what: str, path: str) -> pd.Series:
    if key not in adata.obs:
        avail = ", ".join(map(str, adata.obs.columns[:20])) or "none"
        raise InputError(f"{what} {key!r} is not an obs column of {path!r} (columns: {avail})")
    return adata.obs[key]


def _annotate_sample(
    adata: ad.AnnData,
    *,
    sample: str,
    path: str,
    fmt: str,
    sha: str,
    label_key: str | None,
    batch_key: str | None,
    condition_key: str | None,
    batch: str | None,
    condition: str | None,
    species: str,
) -> ad.AnnData:
    from .._version import __version__

    check_sample_id(sample, where=path)
    if label_key is not None:
        adata.obs["reference_label"] = pd.Categorical(
            _column(adata, label_key, "label_key", path).astype(str)
        )
    if batch_key is not None:
        b = _column(adata, batch_key, "batch_key", path).astype(str).to_numpy()
    else:
        b = np.full(adata.n_obs, batch if batch else sample, dtype=object)
    if batch_key != "batch" and "batch" in adata.obs:
        adata.obs = adata.obs.rename(columns={"batch": "batch_original"})
    if condition_key is not None:
        cond = _column(adata, condition_key, "condition_key", path).astype(str).to_numpy()
    elif condition:
        cond = np.full(adata.n_obs, condition, dtype=object)
    else:
        cond = None
    adata.obs_names = prefix_cell_names(adata.obs_names, sample)
    if not adata.obs_names.is_unique:
        adata.obs_names_make_unique()
    adata.obs["sample"] = pd.Categorical([sample] * adata.n_obs)
    adata.obs["batch"] = pd.Categorical(b)
    if cond is not None:
        adata.obs["condition"] = pd.Categorical(cond)
    bm = bonemet_uns(adata)
    old_inputs = bm.get("inputs", {})
    prior = next(iter(old_inputs.values()), {}) if old_inputs else {}
    entry = {**prior, "path": path, "format": fmt, "sha256": sha}
    warnings_ = list(bm.get("warnings", []))
    try:
        sp_ = resolve_species(adata.var_names, species)
    except InputError as e:
        raise InputError(f"sample {sample!r} ({path}): {e}") from None
    if species in ("human", "mouse") and (clash := species_contradiction(adata.var_names, species)):
        warnings_.append(f"sample {sample}: {clash}")
        logger.warning("sample %s: %s", sample, clash)
    is_counts, reason = check_counts(adata.X)
    if not is_counts:
        warnings_.append(
            f"sample {sample}: input is not raw counts ({reason}); count-based steps (scVI, "
            "scrublet, seurat_v3 HVG) will be skipped or refused"
        )
        logger.warning("sample %s: not raw counts: %s", sample, reason)
    bm.clear()
    bm.update(
        {
            "version": __version__,
            "species": sp_,
            "is_counts": bool(is_counts),
            "counts_check": reason,
            "inputs": {sample: entry},
            "warnings": warnings_,
        }
    )
    return adata


def ingest(
    path: str | os.PathLike,
    *,
    format: str = "auto",
    sample_key: str | None = None,
    label_key: str | None = None,
    batch_key: str | None = None,
    condition_key: str | None = None,
    species: str = "auto",
) -> dict[str, ad.AnnData]:
    """Read an input into one raw-count AnnData per sample.

    Parameters
    ----------
    path
        A samplesheet CSV (columns ``sample,path`` plus optional ``format,batch,condition,species``;
        detected from its header), a single ``.h5ad`` (split by ``sample_key`` if given), or any
        file/folder :func:`read` takes (one sample named after the file, sanitised).
    format
        ``"auto"``, ``"samplesheet"`` or a :func:`read` format.
    sample_key, label_key, batch_key, condition_key
        obs columns (of ``.h5ad`` input) naming the sample, reference labels (kept as
        ``obs["reference_label"]``), batch (default: the sample) and condition.
    species
        ``"auto"`` (detected from gene symbols), ``"human"`` or ``"mouse"``; a samplesheet's
        ``species`` column overrides it per row. All samples must agree.

    Returns
    -------
    ``{sample: AnnData}``; each has ``obs["sample"]``, ``obs["batch"]`` (categorical),
    ``obs["condition"]`` if given, ``obs["reference_label"]`` if ``label_key``, cell names
    ``<sample>_<barcode>`` and ``uns["bonemet"]`` = ``{"version", "species", "is_counts",
    "counts_check", "inputs": {sample: {"path", "format", "sha256", ...}}, "warnings": [...]}``.
    Non-count input is not an error here: ``is_counts`` is False and a warning is recorded.
    """
    from ._samplesheet import read_samplesheet

    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"input path {str(p)!r} does not exist: check the path")
    fmt = str(format or "auto").strip().lower()
    out: dict[str, ad.AnnData] = {}
    if fmt == "samplesheet" or (fmt == "auto" and _looks_like_samplesheet(p)):
        sheet = read_samplesheet(p)
        for row in sheet.itertuples(index=False):
            rd = row._asdict()
            rows = _ingest_one(
                Path(rd["path"]),
                fmt=rd.get("format") or "auto",
                sample=rd["sample"],
                sample_key=None,
                label_key=label_key,
                batch_key=batch_key,
                condition_key=condition_key,
                batch=rd.get("batch") or None,
                condition=rd.get("condition") or None,
                species=species if rd.get("species", "auto") == "auto" else rd["species"],
            )
            for col in ("subject", "tissue"):  # the sample's design, for paired read-outs
                if rd.get(col):
                    for one in rows.values():
                        one.obs[col] = pd.Categorical([rd[col]] * one.n_obs)
            out.update(rows)
    else:
        out = _ingest_one(
            p,
            fmt=fmt,
            sample=None,
            sample_key=sample_key,
            label_key=label_key,
            batch_key=batch_key,
            condition_key=condition_key,
            batch=None,
            condition=None,
            species=species,
        )
    found = {s: a.uns["bonemet"]["species"] for s, a in out.items()}
    if len(set(found.values())) > 1:
        by = ", ".join(f"{s}: {v}" for s, v in found.items())
        raise InputError(
            f"samples are of different species ({by}): analyse each species separately, or fix the "
            "species column of the samplesheet"
        )
    return out


def _ingest_one(
    p: Path,
    *,
    fmt: str,
    sample: str | None,
    sample_key: str | None,
    label_key: str | None,
    batch_key: str | None,
    condition_key: str | None,
    batch: str | None,
    condition: str | None,
    species: str,
) -> dict[str, ad.AnnData]:
    fmt_n = _normalize_format(fmt)
    if fmt_n == "auto":
        if not p.exists():
            raise InputError(f"input path {str(p)!r} does not exist: check the path")
        fmt_n = _guess_format(p)
    if fmt_n != "h5ad" and (sample_key or label_key or batch_key or condition_key):
        given = [
            k
            for k, v in {
                "sample_key": sample_key,
                "label_key": label_key,
                "batch_key": batch_key,
                "condition_key": condition_key,
            }.items()
            if v
        ]
        raise InputError(
            f"{', '.join(given)} name obs columns, but {str(p)!r} ({fmt_n}) has no cell annotations: "
            "use them only with .h5ad input"
        )
    adata = read(p, format=fmt_n)
    sha = sha256_file(p)
    spath = str(p.resolve())
    kw = dict(
        label_key=label_key,
        batch_key=batch_key,
        condition_key=condition_key,
        batch=batch,
        condition=condition,
        species=species,
        path=spath,
        fmt=fmt_n,
        sha=sha,
    )
    if sample_key is None:
        name = sample or _default_sample_name(p)
        if (
            sample is None
            and fmt_n == "h5ad"
            and "sample" in adata.obs
            and adata.obs["sample"].nunique() > 1
        ):
            bonemet_uns(adata).setdefault("warnings", []).append(
                f"{spath}: obs['sample'] has {adata.obs['sample'].nunique()} values but no sample_key "
                "was given, so all cells form one sample; pass sample_key='sample' to split them"
            )
        if "sample" in adata.obs and sample is None and fmt_n == "h5ad":
            adata.obs = adata.obs.rename(columns={"sample": "sample_original"})
        return {name: _annotate_sample(adata, sample=name, **kw)}
    col = _column(adata, sample_key, "sample_key", spath)
    values = col.astype(str)
    names = {v: sanitize_sample_id(v) for v in pd.unique(values)}
    clash = pd.Series(list(names.values())).duplicated()
    if clash.any():
        raise InputError(
            f"sample names in obs[{sample_key!r}] of {spath!r} collide after making them safe "
            f"({sorted(set(pd.Series(list(names.values()))[clash]))}): rename the samples"
        )
    out: dict[str, ad.AnnData] = {}
    for v, name in names.items():
        sub = adata[(values == v).to_numpy()].copy()
        if sample_key != "sample" and "sample" in sub.obs:
            sub.obs = sub.obs.rename(columns={"sample": "sample_original"})
        out[name] = _annotate_sample(sub, sample=name, **kw)
    return out
