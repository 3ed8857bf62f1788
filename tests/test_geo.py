"""GEO ingestion, offline: a real HTTP server on 127.0.0.1 serves a GEO-shaped tree.

The tree is built per test from the 10x fixtures in ../shared/data/10x/ (renamed with GSM
prefixes) and generated count tables. Failures (404, truncated/corrupt gzip, a connection
cut mid-file, an unsafe tar member) are injected through the server or the served files.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from geo_server import GeoServer  # tests/geo_server.py (pytest puts tests/ on sys.path)
from geo_tree import (  # tests/geo_tree.py
    ACC,
    FAST,
    HUMAN_GENES,
    ROOT,
    V2,
    V3,
    _counts_table,
    _gz,
    _sample_dir,
    _series_dir,
    build_tree,
)

import bonemet as bm
from bonemet import DownloadError, InputError
from bonemet.config import load_config
from bonemet.io import _geo_files, _geo_soft

pytestmark = pytest.mark.skipif(not V3.is_dir(), reason="needs ../shared/data/10x/v3_chr21")


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def tree(tmp_path):
    return build_tree(tmp_path / "geo")


@pytest.fixture
def server(tree):
    with GeoServer(tree["root"]) as srv:
        yield srv


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ SOFT + URLs


SOFT_TEXT = """^DATABASE = GeoMiame
!Database_name = Gene Expression Omnibus (GEO)
^SERIES = GSE143791
!Series_title = Single-cell analysis of human bone metastatic prostate cancer
!Series_geo_accession = GSE143791
!Series_summary = We analysed tumour, involved and distal marrow.
!Series_overall_design = scRNA-seq of 9 patients
!Series_sample_id = GSM4274678
!Series_sample_id = GSM4274705
!Series_sample_id = GSM4490340
!Series_supplementary_file = ftp://ftp.ncbi.nlm.nih.gov/geo/series/GSE143nnn/GSE143791/suppl/GSE143791_RAW.tar
!Series_supplementary_file = ftp://ftp.ncbi.nlm.nih.gov/geo/series/GSE143nnn/GSE143791/suppl/GSE143791_cell.annotation.human.csv.gz
!Series_platform_id = GPL20301
^PLATFORM = GPL20301
!Platform_title = Illumina HiSeq 4000 (Homo sapiens)
!Platform_organism = Homo sapiens
^SAMPLE = GSM4274678
!Sample_title = BMET1-Tumor
!Sample_geo_accession = GSM4274678
!Sample_source_name_ch1 = bone metastasis
!Sample_organism_ch1 = Homo sapiens
!Sample_characteristics_ch1 = subject id: BMET1
!Sample_characteristics_ch1 = tissue type: Tumor
!Sample_characteristics_ch1 = age: 67
!Sample_characteristics_ch1 = psa prior to surgery: 12.5
!Sample_characteristics_ch1 = treatment: ADT
!Sample_characteristics_ch1 = treatment: enzalutamide
!Sample_platform_id = GPL20301
!Sample_supplementary_file_1 = ftp://ftp.ncbi.nlm.nih.gov/geo/samples/GSM4274nnn/GSM4274678/suppl/GSM4274678_BMET1-Tumor.count.csv.gz
!Sample_supplementary_file_2 = ftp://ftp.ncbi.nlm.nih.gov/geo/samples/GSM4274nnn/GSM4274678/suppl/GSM4274678_BMET1-Tumor.metadata.csv.gz
!Sample_data_row_count = 0
^SAMPLE = GSM4274705
!Sample_title = BMM4-Benign
!Sample_geo_accession = GSM4274705
!Sample_organism_ch1 = Homo sapiens
!Sample_characteristics_ch1 = subject id: BMM4
!Sample_characteristics_ch1 = tissue type: Benign
!Sample_characteristics_ch1 = 3' v2 chemistry
!Sample_supplementary_file_1 = NONE
#ID_REF =
#VALUE = normalized count
!sample_table_begin
ID_REF\tVALUE
!Sample_title = not a title
!sample_table_end
^SAMPLE = GSM4490340
!Sample_title = SCG_MBMMet1_KO1
!Sample_organism_ch1 = Mus musculus
!Sample_characteristics_ch1 = strain: C57BL/6
!Sample_supplementary_file_1 = ftp://ftp.ncbi.nlm.nih.gov/geo/samples/GSM4490nnn/GSM4490340/suppl/GSM4490340_SCG_MBMMet1_KO1.counts.csv.gz
"""


def test_parse_soft_realistic():
    soft = bm.io.parse_soft(SOFT_TEXT)
    ser = soft["series"]
    assert ser["accession"] == "GSE143791"
    assert ser["sample_ids"] == ["GSM4274678", "GSM4274705", "GSM4490340"]
    assert ser["platform_ids"] == ["GPL20301"]
    assert [u.rsplit("/", 1)[1] for u in ser["supplementary_files"]] == [
        "GSE143791_RAW.tar",
        "GSE143791_cell.annotation.human.csv.gz",
    ]
    assert soft["platforms"]["GPL20301"]["organism"] == "Homo sapiens"
    s = soft["samples"]["GSM4274678"]
    assert s["title"] == "BMET1-Tumor"
    assert s["organism"] == "Homo sapiens"
    assert s["characteristics"] == {
        "subject_id": "BMET1",
        "tissue_type": "Tumor",
        "age": "67",
        "psa_prior_to_surgery": "12.5",
        "treatment": "ADT; enzalutamide",
    }
    assert len(s["characteristics_raw"]) == 6
    assert [u.rsplit("/", 1)[1] for u in s["supplementary_files"]] == [
        "GSM4274678_BMET1-Tumor.count.csv.gz",
        "GSM4274678_BMET1-Tumor.metadata.csv.gz",
    ]
    b = soft["samples"]["GSM4274705"]
    assert b["title"] == "BMM4-Benign"  # the table block is skipped
    assert b["supplementary_files"] == []
    assert b["characteristics"]["characteristic"] == "3' v2 chemistry"
    assert soft["samples"]["GSM4490340"]["organism"] == "Mus musculus"


def test_urls_and_folders():
    assert _geo_soft._nnn("GSE143791") == "GSE143nnn"
    assert _geo_soft._nnn("GSE1234") == "GSE1nnn"
    assert _geo_soft._nnn("GSE123") == "GSEnnn"
    assert bm.io.geo_soft_url("GSE143791", base_url="http://x/geo/") == (
        "http://x/geo/series/GSE143nnn/GSE143791/soft/GSE143791_family.soft.gz"
    )
    url = "ftp://ftp.ncbi.nlm.nih.gov/geo/samples/GSM4274nnn/GSM4274678/suppl/a.csv.gz"
    assert _geo_soft._map_url(url, "http://127.0.0.1:9/geo") == (
        "http://127.0.0.1:9/geo/samples/GSM4274nnn/GSM4274678/suppl/a.csv.gz"
    )
    with pytest.raises(InputError, match="not a GEO series accession"):
        bm.io.geo_soft_url("GSM1001")
    with pytest.raises(InputError, match="not below the GEO root"):
        _geo_soft._map_url("https://evil.example/x.csv.gz", "http://127.0.0.1:9")
    with pytest.raises(InputError, match="http"):
        bm.io.read_geo("GSE1000", base_url="ftp://ftp.ncbi.nlm.nih.gov/geo")


def test_soft_filtering_title_species(server, tmp_path):
    kw = {"base_url": server.url, "cache_dir": tmp_path / "c", "dry_run": True, **FAST}
    plan = bm.io.read_geo(ACC, species="human", include_title=r"^S\d-(Tumor|Distal)$", **kw)
    assert [s["sample"] for s in plan["samples"]] == ["GSM1001", "GSM1003"]
    skipped = {s["sample"]: s["why"] for s in plan["skipped"]}
    assert "Mus musculus" in skipped["GSM1004"] and "S2-Benign" in skipped["GSM1002"]
    plan = bm.io.read_geo(ACC, exclude_title="KO", samples=["GSM1004", "GSM1005"], **kw)
    assert [s["sample"] for s in plan["samples"]] == ["GSM1005"]
    with pytest.raises(InputError, match="GSM9999"):
        bm.io.read_geo(ACC, samples=["GSM9999"], **kw)
    with pytest.raises(InputError, match="no sample"):
        bm.io.read_geo(ACC, include_title="^nothing$", **kw)


# ------------------------------------------------------------------ happy path


def test_fetch_geo_happy_path_and_offline_cache(tree, server, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    summary = bm.io.fetch_geo(
        ACC,
        out=out,
        base_url=server.url,
        cache_dir=cache,
        species="human",
        exclude_title="Extra$",
        annotation="GSE1000_cell.annotation*",
        **FAST,
    )
    # the mouse sample is excluded by organism; its tar member is never extracted
    assert [s["sample"] for s in summary["samples"]] == ["GSM1001", "GSM1002", "GSM1003", "GSM1005"]
    assert [s["sample"] for s in summary["skipped"]] == ["GSM1004", "GSM1006", "GSM1007"]
    tar_dir = next(cache.rglob(f"{ACC}_RAW.tar.d"))
    assert sorted(p.name for p in tar_dir.iterdir()) == ["GSM1003_S3-Distal.count.csv.gz"]
    # files it cannot classify are listed, not ignored
    assert {
        "sample": "GSM1002",
        "file": "GSM1002_S2.cloupe",
        "why": "unknown file type",
    } in summary["unclassified"]
    assert any(
        u["why"] == "not a GEO file" and "SRP123456" in u["file"] for u in summary["unclassified"]
    )
    sheet = pd.read_csv(out / "samplesheet.csv")
    assert list(sheet.columns[:3]) == ["sample", "path", "format"]
    assert sheet["sample"].tolist() == ["GSM1001", "GSM1002", "GSM1003", "GSM1005"]
    assert sheet["is_counts"].tolist() == [True, True, True, False]
    checked = bm.io.read_samplesheet(out / "samplesheet.csv")  # the pipeline's own reader
    assert [Path(x) for x in checked["path"]] == [
        (out / f"{g}.h5ad").resolve() for g in sheet["sample"]
    ]
    assert not list(out.glob("*.part")) and not list(out.glob(".*"))

    ref = sc.read_10x_h5(V3 / "filtered_feature_bc_matrix.h5")
    a1, a2, a3, a5 = (
        ad.read_h5ad(out / f"{g}.h5ad") for g in ("GSM1001", "GSM1002", "GSM1003", "GSM1005")
    )
    for a, gsm in ((a1, "GSM1001"), (a2, "GSM1002")):
        assert a.shape == ref.shape
        assert (a.obs["sample"] == gsm).all()
        assert a.obs_names[0] == f"{gsm}_{ref.obs_names[0]}"
        np.testing.assert_array_equal(a.X.sum(axis=1).A1, ref.X.sum(axis=1).A1)
    assert a1.obs["tissue_type"].iloc[0] == "Tumor"
    assert a1.obs["subject_id"].iloc[0] == "P1" and a1.obs["age"].iloc[0] == "67"
    assert a1.obs["treatment"].iloc[0] == "ADT; RT"  # repeated characteristic
    assert a1.obs["geo_title"].iloc[0] == "S1-Tumor"
    assert list(a1.uns["bonemet"]["geo"]["files"]) == [
        "GSM1001_S1-Tumor_barcodes.tsv.gz",
        "GSM1001_S1-Tumor_features.tsv.gz",
        "GSM1001_S1-Tumor_matrix.mtx.gz",
    ]
    assert a2.obs["tissue_type"].iloc[0] == "Benign"
    # dense CSV from inside the _RAW.tar: genes x cells, duplicate ACTB summed
    df3 = tree["df3"]
    assert a3.n_obs == df3.shape[1] and a3.n_vars == len(HUMAN_GENES)
    assert a3.obs["geo_barcode"].tolist() == list(df3.columns)
    assert a3.obs_names[0] == f"GSM1003_{df3.columns[0]}"
    # the series annotation joins on the original barcode (GSE143791 style)
    assert a3.obs["cells"].iloc[0] == "Osteoclasts" and a3.obs["cells"].iloc[1] == "TAM"
    assert "cells" not in a1.obs  # no barcode of GSM1001 is in the table: not joined, warned
    expected_actb = df3.loc["ACTB"].sum(axis=0).to_numpy()
    np.testing.assert_array_equal(a3[:, "ACTB"].X.toarray().ravel(), expected_actb)
    assert "1 duplicate gene symbols summed" in list(a3.uns["bonemet"]["warnings"])
    assert a3.uns["bonemet"]["is_counts"] is True or a3.uns["bonemet"]["is_counts"] == np.True_
    assert a3.uns["bonemet"]["inputs"]["GSM1003"]["path"].endswith(
        f"{ACC}_RAW.tar#GSM1003_S3-Distal.count.csv.gz"
    )
    assert summary["samples"][2]["source"] == "series _RAW.tar"
    member = next(cache.rglob("GSM1003_S3-Distal.count.csv.gz"))
    assert summary["samples"][2]["files_used"] == [
        {"file": member.name, "size": member.stat().st_size, "sha256": _sha(member)}
    ]
    # log-normalised GSE190772-style table: detected, marked, metadata joined
    assert not bool(a5.uns["bonemet"]["is_counts"])
    assert a5.n_obs == 25 and "MT-CO1" in a5.var_names
    assert set(a5.obs["cell_type3"].astype(str)) == {"Macrophage", "Osteoclast"}
    assert a5.obs["nCount_RNA"].dtype.kind in "if"
    assert (
        a5.obs["characteristic"].iloc[0] == "Sample"
        and a5.obs["tissue"].iloc[0] == "bone metastasis"
    )
    assert any("not raw counts" in w for w in summary["warnings"])
    # cell names unique across samples
    names = pd.Index(np.concatenate([a.obs_names for a in (a1, a2, a3, a5)]))
    assert names.is_unique
    # provenance: size + SHA-256 of every downloaded file
    prov = json.loads((out / "geo_provenance.json").read_text())
    by_name = {Path(d["url"]).name: d for d in prov["downloads"]}
    for name in ("GSE1000_family.soft.gz", "GSE1000_RAW.tar", "GSM1002_S2_filtered_feature_bc_matrix.h5",
                 "GSM1001_S1-Tumor_matrix.mtx.gz", "GSM1005_BoM7_scRNA_MetaData.txt.gz"):  # fmt: skip
        served = next(tree["root"].rglob(name))
        assert by_name[name]["size"] == served.stat().st_size
        assert by_name[name]["sha256"] == _sha(served)
    assert a2.uns["bonemet"]["inputs"]["GSM1002"]["sha256"] == _sha(
        next(tree["root"].rglob("GSM1002_S2_filtered_feature_bc_matrix.h5"))
    )

    # warm cache, server gone: no network needed
    server.stop()
    adatas = bm.io.read_geo(ACC, base_url=server_url_of(summary), cache_dir=cache, species="human",
                            samples=["GSM1003", "GSM1001"], **FAST)  # fmt: skip
    assert list(adatas) == ["GSM1001", "GSM1003"]
    assert (adatas["GSM1001"].obs["batch"] == "GSM1001").all()
    # labels from the per-sample metadata, condition from a characteristic (as ingest does)
    a = bm.io.read_geo(ACC, base_url=summary["base_url"], cache_dir=cache, samples=["GSM1005"],
                       label_key="cell_type3", condition_key="tissue", **FAST)["GSM1005"]  # fmt: skip
    assert set(a.obs["reference_label"]) == {"Macrophage", "Osteoclast"}
    assert (a.obs["condition"] == "bone metastasis").all()
    assert a.uns["bonemet"]["species"] == "human" and not a.uns["bonemet"]["is_counts"]
    with pytest.raises(InputError, match="label_key 'cells' is not an obs column of GSM1005"):
        bm.io.read_geo(ACC, base_url=summary["base_url"], cache_dir=cache, samples=["GSM1005"],
                       label_key="cells", **FAST)  # fmt: skip
    assert adatas["GSM1003"].n_obs == a3.n_obs
    np.testing.assert_array_equal(adatas["GSM1001"].X.toarray(), a1.X.toarray())


def server_url_of(summary: dict) -> str:
    return summary["base_url"]


def test_dry_run_lists_sizes_without_downloading(tree, server, tmp_path):
    out = tmp_path / "out"
    plan = bm.io.fetch_geo(ACC, out=out, base_url=server.url, cache_dir=tmp_path / "c",
                           dry_run=True, samples=["GSM1002", "GSM1003"], **FAST)  # fmt: skip
    names = {Path(f["url"]).name: f["size"] for f in plan["files"]}
    assert set(names) == {
        "GSM1002_S2_filtered_feature_bc_matrix.h5",
        "GSM1002_S2.cloupe",
        f"{ACC}_RAW.tar",
    }
    for name, size in names.items():
        assert size == next(tree["root"].rglob(name)).stat().st_size
    assert plan["total_bytes"] == sum(names.values())
    assert [p for _, p, _ in server.gets()] == [f"/{_series_dir(ACC)}/soft/{ACC}_family.soft.gz"]
    assert not out.exists()


# ------------------------------------------------------------------ failures


def _no_outputs(out: Path) -> None:
    assert not list(out.glob("*.h5ad")), "a .h5ad was left behind"
    assert not (out / "samplesheet.csv").exists()


def test_404_fails_cleanly(server, tmp_path):
    out = tmp_path / "out"
    path = f"/{_sample_dir('GSM1002')}/GSM1002_S2_filtered_feature_bc_matrix.h5"
    server.faults[path] = "404"
    with pytest.raises(
        DownloadError, match=r"GSM1002_S2_filtered_feature_bc_matrix\.h5: HTTP 404"
    ) as e:
        bm.io.fetch_geo(
            ACC, out=out, base_url=server.url, cache_dir=tmp_path / "c", species="human", **FAST
        )
    assert "\n" not in str(e.value)
    assert len(server.gets(path)) == 1  # a 404 is not retried
    _no_outputs(out)
    # an unknown accession: the SOFT file is missing
    with pytest.raises(DownloadError, match="GSE2000_family.soft.gz: HTTP 404"):
        bm.io.fetch_geo("GSE2000", out=out, base_url=server.url, cache_dir=tmp_path / "c", **FAST)


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_bad_gzip_fails_cleanly(tree, server, tmp_path, damage):
    name = "GSM1001_S1-Tumor_matrix.mtx.gz"
    served = tree["root"] / _sample_dir("GSM1001") / name
    data = served.read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        mid = len(data) // 2
        data = data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 64]) + data[mid + 64 :]
    served.write_bytes(data)
    out, cache = tmp_path / "out", tmp_path / "c"
    with pytest.raises(DownloadError, match=rf"{name} failed after 3 attempts: {damage} gzip") as e:
        bm.io.fetch_geo(
            ACC, out=out, base_url=server.url, cache_dir=cache, samples=["GSM1001"], **FAST
        )
    assert "\n" not in str(e.value)
    assert len(server.gets(name)) == 3
    _no_outputs(out)
    assert not list(cache.rglob(name)) and not list(cache.rglob(name + ".part"))


def test_truncated_tar_fails_cleanly(tree, server, tmp_path):
    served = tree["root"] / _series_dir(ACC) / "suppl" / f"{ACC}_RAW.tar"
    data = served.read_bytes()
    with tarfile.open(served) as tf:
        last = tf.getmembers()[-1]
    served.write_bytes(data[: last.offset_data + last.size // 2])  # the last member is cut off
    out, cache = tmp_path / "out", tmp_path / "c"
    with pytest.raises(
        DownloadError, match=rf"{ACC}_RAW.tar failed after 3 attempts: .*truncated tar"
    ):
        bm.io.fetch_geo(
            ACC, out=out, base_url=server.url, cache_dir=cache, samples=["GSM1003"], **FAST
        )
    _no_outputs(out)
    assert not list(cache.rglob(f"{ACC}_RAW.tar")) and not list(cache.rglob(f"{ACC}_RAW.tar.part"))


def test_interrupted_download_resumes_with_range(tree, server, tmp_path):
    tar_path = f"/{_series_dir(ACC)}/suppl/{ACC}_RAW.tar"
    server.faults[tar_path] = "cut_once"
    out, cache = tmp_path / "out", tmp_path / "c"
    summary = bm.io.fetch_geo(ACC, out=out, base_url=server.url, cache_dir=cache,
                              samples=["GSM1003"], **FAST)  # fmt: skip
    gets = server.gets(tar_path)
    served = tree["root"] / tar_path.lstrip("/")
    size = served.stat().st_size
    assert len(gets) == 2
    assert gets[0][2] is None
    assert gets[1][2] == f"bytes={size // 2}-"  # resumed where the connection broke
    rec = next(d for d in summary["downloads"] if d["url"].endswith(tar_path))
    assert rec["sha256"] == _sha(served) and rec["size"] == size
    assert (out / "GSM1003.h5ad").is_file() and (out / "samplesheet.csv").is_file()


def test_connection_cut_every_time_fails(server, tmp_path):
    name = "GSM1002_S2_filtered_feature_bc_matrix.h5"
    server.faults[f"/{_sample_dir('GSM1002')}/{name}"] = "cut_always"
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match=rf"{name} failed after 3 attempts"):
        bm.io.fetch_geo(ACC, out=out, base_url=server.url, cache_dir=tmp_path / "c",
                        samples=["GSM1002"], **FAST)  # fmt: skip
    _no_outputs(out)


@pytest.mark.parametrize(
    ("member", "why"),
    [
        ("../evil.csv.gz", "'..'"),
        ("/tmp/abs.csv.gz", "absolute path"),
        ("GSM1003_link.csv.gz", "link"),
    ],
)
def test_unsafe_tar_member_refused(tree, server, tmp_path, member, why):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        good = _gz(_counts_table("S3", seed=3)[0])
        info = tarfile.TarInfo("GSM1003_S3.count.csv.gz")
        info.size = len(good)
        tf.addfile(info, io.BytesIO(good))
        bad = tarfile.TarInfo(member)
        if why == "link":
            bad.type, bad.linkname = tarfile.SYMTYPE, "/etc/passwd"
        else:
            bad.size = 4
        tf.addfile(bad, None if why == "link" else io.BytesIO(b"evil"))
    (tree["root"] / _series_dir(ACC) / "suppl" / f"{ACC}_RAW.tar").write_bytes(buf.getvalue())
    out, cache = tmp_path / "out", tmp_path / "c"
    with pytest.raises(
        InputError, match=rf"unsafe member '{member}' in {ACC}_RAW.tar: .*{why}"
    ) as e:
        bm.io.fetch_geo(
            ACC, out=out, base_url=server.url, cache_dir=cache, samples=["GSM1003"], **FAST
        )
    assert "\n" not in str(e.value)
    _no_outputs(out)
    assert not list(cache.rglob("*.csv.gz"))  # nothing was extracted
    assert not (tmp_path / "evil.csv.gz").exists()


# ------------------------------------------------------------------ readers


def test_sample_archive_and_v2_triplet(server, tmp_path):
    adatas = bm.io.read_geo(ACC, base_url=server.url, cache_dir=tmp_path / "c", species="human",
                            include_title="Extra$", **FAST)  # fmt: skip
    assert list(adatas) == ["GSM1006", "GSM1007"]
    ref3 = sc.read_10x_h5(V3 / "filtered_feature_bc_matrix.h5")
    assert adatas["GSM1006"].shape == ref3.shape
    ref2 = sc.read_10x_mtx(V2)
    a7 = adatas["GSM1007"]
    assert a7.n_obs == ref2.n_obs == 12
    np.testing.assert_array_equal(a7.X.sum(axis=1).A1, ref2.X.sum(axis=1).A1)
    assert a7.obs_names[0] == f"GSM1007_{ref2.obs_names[0]}"


def test_dense_table_layouts(tmp_path):
    genes = HUMAN_GENES[:6]
    cells = ["AAACCTGAGAAGGCCT-1", "AAACCTGAGACAGACC-1", "AAACCTGAGATCTGAA-1"]
    x = np.arange(18).reshape(6, 3)
    # cells x genes, gene names as header, first column = cells
    p = tmp_path / "GSM1_cxg.csv"
    p.write_text("cell," + ",".join(genes) + "\n" + "".join(
        c + "," + ",".join(map(str, x[:, j])) + "\n" for j, c in enumerate(cells)
    ))  # fmt: skip
    a = _geo_files._read_dense_table(p, "GSM1")
    assert list(a.obs_names) == cells and list(a.var_names) == genes
    np.testing.assert_array_equal(a.X.toarray(), x.T)
    # R write.table: header one field short, tab-separated, genes x cells
    p = tmp_path / "GSM1_r.txt.gz"
    p.write_bytes(_gz(("\t".join(cells) + "\n" + "".join(
        g + "\t" + "\t".join(map(str, x[i])) + "\n" for i, g in enumerate(genes)
    )).encode()))  # fmt: skip
    a = _geo_files._read_dense_table(p, "GSM1")
    assert list(a.obs_names) == cells and list(a.var_names) == genes
    np.testing.assert_array_equal(a.X.toarray(), x.T)
    # GSE190772: last column is the gene
    p = tmp_path / "GSM1_last.txt"
    p.write_text("\t".join(cells) + "\tgene\n" + "".join(
        "\t".join(map(str, x[i])) + f"\t{g}\n" for i, g in enumerate(genes)
    ))  # fmt: skip
    a = _geo_files._read_dense_table(p, "GSM1")
    assert list(a.obs_names) == cells and list(a.var_names) == genes
    np.testing.assert_array_equal(a.X.toarray(), x.T)
    p = tmp_path / "GSM1_bad.csv"
    p.write_text(",a,b\nACTB,1,x\n")
    with pytest.raises(InputError, match="non-numeric"):
        _geo_files._read_dense_table(p, "GSM1")


def test_classify_file_sets(tmp_path):
    names = ["GSM1_A_barcodes.tsv.gz", "GSM1_A_genes.tsv.gz", "GSM1_A_matrix.mtx.gz",
             "GSM1_B_barcodes.tsv.gz", "GSM1_x.h5", "GSM1_y.h5ad", "GSM1_counts.csv.gz",
             "GSM1_metadata.tsv.gz", "GSM1_obj.rds", "GSM1_c.tar.gz"]  # fmt: skip
    sets, meta, archives, other = _geo_files._classify([tmp_path / n for n in names])
    kinds = sorted(s.kind for s in sets)
    assert kinds == ["10x_h5", "10x_mtx", "csv", "h5ad"]
    assert [p.name for p in meta] == ["GSM1_metadata.tsv.gz"]
    assert [p.name for p in archives] == ["GSM1_c.tar.gz"]
    assert sorted(p.name for p in other) == ["GSM1_B_barcodes.tsv.gz", "GSM1_obj.rds"]
    with pytest.raises(InputError, match="several count matrices"):
        _geo_files._pick_set(sets, "GSM1")
    # name tokens, not substrings: "Metastasis" is not "meta"
    sets, meta, _, _ = _geo_files._classify(
        [Path(n) for n in ("GSM2_Metastasis1.counts.csv.gz", "GSE1_cell.annotation.human.csv.gz",
                           "GSM3_BoM7_scRNA_MetaData.txt.gz", "GSM3_cell_type.txt")]
    )  # fmt: skip
    assert [s.files[0].name for s in sets] == ["GSM2_Metastasis1.counts.csv.gz"]
    assert len(meta) == 3
    assert _geo_files._gsm_of("GSM4274678_BMET1-Tumor.count.csv.gz") == "GSM4274678"
    assert _geo_files._gsm_of("GSM12/filtered_feature_bc_matrix/matrix.mtx.gz") == "GSM12"
    assert _geo_files._gsm_of("GSM12a_x.csv") is None and _geo_files._gsm_of("README.txt") is None
    raw = _geo_files._FileSet("10x_h5", [tmp_path / "r.h5"], "GSM1_raw_feature_bc_matrix.h5")
    filt = _geo_files._FileSet("10x_h5", [tmp_path / "f.h5"], "GSM1_filtered_feature_bc_matrix.h5")
    assert _geo_files._pick_set([raw, filt], "GSM1") is filt


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize("acc", ["GSE143791", "GSE190772", "GSE266330"])
def test_geo_configs_load(acc):
    path = ROOT / "configs" / "geo" / f"{acc}.yaml"
    cfg = load_config(path)
    assert cfg.input.geo == acc
    assert cfg.input.species == "human"
    text = path.read_text()
    assert "unverified" in text.lower()
    if acc == "GSE190772":
        assert cfg.integrate.method != "scvi" and cfg.input.allow_non_counts


# ------------------------------------------------------------------ CLI


def test_cli_fetch_geo(tree, server, tmp_path, capsys):
    """`bonemet fetch-geo` in-process: success, then a one-line error and exit code 1."""
    import logging

    from bonemet import _logging, cli

    out = tmp_path / "out"
    server.faults[f"/{_sample_dir('GSM1002')}/GSM1002_S2_filtered_feature_bc_matrix.h5"] = "404"
    base = ["fetch-geo", ACC, "--out", str(out), "--geo-base-url", server.url,
            "--cache-dir", str(tmp_path / "c"), "--quiet"]  # fmt: skip
    lg = logging.getLogger("bonemet")
    saved = (list(lg.handlers), lg.propagate, lg.level, _logging.is_quiet())
    try:  # the CLI installs its log handler globally: restore it afterwards
        assert cli.main([*base, "--samples", "GSM1003"]) == 0
        assert pd.read_csv(out / "samplesheet.csv")["sample"].tolist() == ["GSM1003"]
        capsys.readouterr()
        assert cli.main([*base, "--samples", "GSM1002"]) == 1
        err = capsys.readouterr().err
    finally:
        lg.handlers[:] = saved[0]
        lg.propagate = saved[1]
        _logging.set_quiet(saved[3])
        lg.setLevel(saved[2])
    # warnings are logged to stderr too; the error is one line of its own
    lines = [ln for ln in err.splitlines() if ln.startswith("bonemet: error: ")]
    assert len(lines) == 1 and "HTTP 404" in lines[0] and "Traceback" not in err
    # the failed run removed the earlier samplesheet and wrote no .h5ad for GSM1002
    assert not (out / "GSM1002.h5ad").exists() and not (out / "samplesheet.csv").exists()
