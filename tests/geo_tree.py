"""A GEO-shaped folder tree for GSE1000 (five samples in four formats), for the GEO tests.

Built from the 10x fixtures in ../shared/data/10x/ (renamed with GSM prefixes) and
generated count tables; ``tests/geo_server.py`` serves it on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

from bonemet.io import _geo_soft

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
V3 = DATA / "10x" / "v3_chr21"
V2 = DATA / "10x" / "v2_chr21" / "filtered_gene_bc_matrices" / "hg19_chr21"
ACC = "GSE1000"
FTP = "ftp://ftp.ncbi.nlm.nih.gov/geo"
FAST = {"retries": 2, "backoff": 0.01, "timeout": 10}

HUMAN_GENES = ["MT-CO1", "MT-ND1", "ACTB", "GAPDH", "B2M", "MALAT1", "CD74", "LYZ", "PTPRC",
               "CD3E", "CD14", "HLA-DRA", "RPL13", "RPS6", "FTL", "HBB", "CTSK", "ACP5",
               "SPP1", "COL1A1"]  # fmt: skip


def _sample_dir(gsm: str) -> str:
    return f"samples/{_geo_soft._nnn(gsm)}/{gsm}/suppl"


def _series_dir(acc: str) -> str:
    return f"series/{_geo_soft._nnn(acc)}/{acc}"


def _soft(acc: str, samples: list[dict], series_files: list[str]) -> str:
    lines = [
        "^DATABASE = GeoMiame",
        "!Database_name = Gene Expression Omnibus (GEO)",
        "!Database_institute = NCBI NLM NIH",
        f"^SERIES = {acc}",
        "!Series_title = Single-cell atlas of bone metastases (test)",
        f"!Series_geo_accession = {acc}",
        "!Series_status = Public on Jan 01 2021",
        "!Series_summary = Line one of the summary.",
        "!Series_summary = Line two of the summary.",
        "!Series_type = Expression profiling by high throughput sequencing",
        "!Series_platform_id = GPL20301",
        "!Series_platform_id = GPL17021",
    ]
    lines += [f"!Series_sample_id = {s['gsm']}" for s in samples]
    lines += [
        f"!Series_supplementary_file = {FTP}/{_series_dir(acc)}/suppl/{f}" for f in series_files
    ]
    # older series also list an SRA link: not a GEO file, listed and not used
    lines.append(
        "!Series_supplementary_file = ftp://ftp-trace.ncbi.nlm.nih.gov/sra/sra-instant/reads/ByStudy/sra/SRP/SRP123/SRP123456"
    )
    lines += [
        "^PLATFORM = GPL20301",
        "!Platform_title = Illumina HiSeq 4000 (Homo sapiens)",
        "!Platform_organism = Homo sapiens",
        "#ID = probe id",
        "!platform_table_begin",
        "ID\tSEQUENCE",
        "1\tACGT",
        "!platform_table_end",
    ]
    for s in samples:
        lines += [
            f"^SAMPLE = {s['gsm']}",
            f"!Sample_title = {s['title']}",
            f"!Sample_geo_accession = {s['gsm']}",
            "!Sample_type = SRA",
            "!Sample_channel_count = 1",
            f"!Sample_source_name_ch1 = {s.get('source', 'bone marrow')}",
            f"!Sample_organism_ch1 = {s.get('organism', 'Homo sapiens')}",
        ]
        lines += [f"!Sample_characteristics_ch1 = {c}" for c in s.get("chars", [])]
        lines += ["!Sample_molecule_ch1 = polyA RNA", "!Sample_platform_id = GPL20301"]
        files = s.get("files") or []
        for i, f in enumerate(files or ["NONE"], start=1):
            url = f if f == "NONE" else f"{FTP}/{_sample_dir(s['gsm'])}/{f}"
            lines.append(f"!Sample_supplementary_file_{i} = {url}")
        lines.append("!Sample_data_row_count = 0")
    return "\n".join(lines) + "\n"


def _gz(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as fh:
        fh.write(data)
    return buf.getvalue()


def _counts_table(prefix: str, *, n_cells: int = 30, seed: int = 0) -> tuple[bytes, pd.DataFrame]:
    """Genes x cells count CSV, blank first header, one duplicated symbol (GSE143791 style)."""
    rng = np.random.default_rng(seed)
    genes = [*HUMAN_GENES, "ACTB"]  # duplicate symbol: summed by the reader
    cells = [f"{prefix}_{''.join(rng.choice(list('ACGT'), 16))}-1" for _ in range(n_cells)]
    x = rng.negative_binomial(2, 0.3, size=(len(genes), n_cells))
    df = pd.DataFrame(x, index=genes, columns=cells)
    text = "," + ",".join(cells) + "\n"
    text += "".join(g + "," + ",".join(map(str, row)) + "\n" for g, row in zip(genes, x))
    return text.encode(), df


def _log_table(prefix: str, *, n_cells: int = 25, seed: int = 1) -> tuple[bytes, bytes]:
    """GSE190772 layout: tab-separated, header = cells + 'gene', LAST field = gene; log values."""
    rng = np.random.default_rng(seed)
    cells = [f"{prefix}_{''.join(rng.choice(list('ACGT'), 16))}" for _ in range(n_cells)]
    x = np.log1p(
        rng.gamma(1.0, 2.0, size=(len(HUMAN_GENES), n_cells))
        * (rng.random((len(HUMAN_GENES), n_cells)) > 0.5)
    )
    text = "\t".join(cells) + "\tgene\n"
    text += "".join(
        "\t".join(f"{v:.4f}" for v in row) + f"\t{g}\n" for g, row in zip(HUMAN_GENES, x)
    )
    meta = "cell.ID\tcell_type3\tnCount_RNA\n" + "".join(
        f"{c}\t{'Macrophage' if i % 2 else 'Osteoclast'}\t{100 + i}\n" for i, c in enumerate(cells)
    )
    return text.encode(), meta.encode()


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_tree(root: Path) -> dict:
    """A GEO-shaped tree for GSE1000 with five samples in four formats."""
    root.mkdir(parents=True, exist_ok=True)
    t1 = "S1-Tumor"
    d1 = root / _sample_dir("GSM1001")
    d1.mkdir(parents=True)
    for part in ("barcodes.tsv.gz", "features.tsv.gz", "matrix.mtx.gz"):
        shutil.copyfile(V3 / "filtered_feature_bc_matrix" / part, d1 / f"GSM1001_{t1}_{part}")
    d2 = root / _sample_dir("GSM1002")
    d2.mkdir(parents=True)
    shutil.copyfile(
        V3 / "filtered_feature_bc_matrix.h5", d2 / "GSM1002_S2_filtered_feature_bc_matrix.h5"
    )
    (d2 / "GSM1002_S2.cloupe").write_bytes(b"not a matrix")
    csv3, df3 = _counts_table("S3-Distal", seed=3)
    csv4, _ = _counts_table("KO1", seed=4)
    d5 = root / _sample_dir("GSM1005")
    d5.mkdir(parents=True)
    log5, meta5 = _log_table("BoM7")
    (d5 / "GSM1005_BoM7_scRNA_LogCounts.txt.gz").write_bytes(_gz(log5))
    (d5 / "GSM1005_BoM7_scRNA_MetaData.txt.gz").write_bytes(_gz(meta5))
    # a per-sample .tar.gz holding a 10x folder, and a gzipped v2 triplet (genes.tsv.gz)
    d6 = root / _sample_dir("GSM1006")
    d6.mkdir(parents=True)
    with tarfile.open(d6 / "GSM1006_S6_filtered_feature_bc_matrix.tar.gz", "w:gz") as tf:
        tf.add(V3 / "filtered_feature_bc_matrix", arcname="filtered_feature_bc_matrix")
    d7 = root / _sample_dir("GSM1007")
    d7.mkdir(parents=True)
    for part in ("barcodes.tsv", "genes.tsv", "matrix.mtx"):
        (d7 / f"GSM1007_S7_{part}.gz").write_bytes(_gz((V2 / part).read_bytes()))
    sdir = root / _series_dir(ACC)
    (sdir / "suppl").mkdir(parents=True)
    (sdir / "soft").mkdir(parents=True)
    tar = _tar_bytes({
        "GSM1001_S1-Tumor_barcodes.tsv.gz": (d1 / f"GSM1001_{t1}_barcodes.tsv.gz").read_bytes(),
        "GSM1003_S3-Distal.count.csv.gz": _gz(csv3),
        "GSM1004_KO1.count.csv.gz": _gz(csv4),
    })  # fmt: skip
    (sdir / "suppl" / f"{ACC}_RAW.tar").write_bytes(tar)
    labels = "".join(
        f"{c},{'TAM' if i % 3 else 'Osteoclasts'}\n" for i, c in enumerate(df3.columns)
    )
    (sdir / "suppl" / f"{ACC}_cell.annotation.csv.gz").write_bytes(
        _gz(f"barcode,cells\n{labels}".encode())
    )
    samples = [
        {"gsm": "GSM1001", "title": t1,
         "chars": ["subject id: P1", "tissue type: Tumor", "age: 67", "treatment: ADT", "treatment: RT"],
         "files": [f"GSM1001_{t1}_{p}" for p in ("barcodes.tsv.gz", "features.tsv.gz", "matrix.mtx.gz")]},
        {"gsm": "GSM1002", "title": "S2-Benign", "chars": ["subject id: P2", "tissue type: Benign"],
         "files": ["GSM1002_S2_filtered_feature_bc_matrix.h5", "GSM1002_S2.cloupe"]},
        {"gsm": "GSM1003", "title": "S3-Distal", "chars": ["subject id: P1", "tissue type: Distal"]},
        {"gsm": "GSM1004", "title": "KO1", "organism": "Mus musculus", "chars": ["strain: C57BL/6"]},
        {"gsm": "GSM1005", "title": "BoM7", "chars": ["tissue: bone metastasis", "Sample"],
         "files": ["GSM1005_BoM7_scRNA_LogCounts.txt.gz", "GSM1005_BoM7_scRNA_MetaData.txt.gz"]},
        {"gsm": "GSM1006", "title": "S6-Extra", "files": ["GSM1006_S6_filtered_feature_bc_matrix.tar.gz"]},
        {"gsm": "GSM1007", "title": "S7-Extra",
         "files": [f"GSM1007_S7_{p}.gz" for p in ("barcodes.tsv", "genes.tsv", "matrix.mtx")]},
    ]  # fmt: skip
    soft = _soft(ACC, samples, [f"{ACC}_RAW.tar", f"{ACC}_cell.annotation.csv.gz"])
    (sdir / "soft" / f"{ACC}_family.soft.gz").write_bytes(_gz(soft.encode()))
    return {"root": root, "df3": df3, "soft": soft}
