"""Readers, species detection, counts check, samplesheets and ingest (bonemet.io)."""

from __future__ import annotations

import gzip
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from builders import BAD_SHEETS, write_sheet  # tests/builders.py

import bonemet as bm
from bonemet import InputError

# ----------------------------------------------------------------------------- helpers


def _assert_counts_matrix(a: ad.AnnData) -> None:
    assert isinstance(a.X, sp.csr_matrix)
    assert a.X.dtype == np.float32
    assert np.all(a.X.data == np.round(a.X.data))
    assert (a.X.data >= 0).all()
    assert a.var_names.is_unique
    assert a.obs_names.is_unique


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- 10x readers

TENX = {
    # name: (relative path, n_cells, n_genes)
    "v2_mtx_parent": ("10x/v2_chr21/filtered_gene_bc_matrices", 12, 343),
    "v2_mtx": ("10x/v2_chr21/filtered_gene_bc_matrices/hg19_chr21", 12, 343),
    "v2_h5": ("10x/v2_chr21/filtered_gene_bc_matrices_h5.h5", 12, 343),
    "v3_mtx_gz": ("10x/v3_chr21/filtered_feature_bc_matrix", 1107, 507),
    "v3_h5": ("10x/v3_chr21/filtered_feature_bc_matrix.h5", 1107, 507),
    "v3_gex_antibody": ("10x/v3_gex_plus_antibody/filtered_feature_bc_matrix", 1024, 100),
}


@pytest.mark.parametrize("name", list(TENX))
def test_read_10x_fixtures(shared_data, name):
    rel, n_cells, n_genes = TENX[name]
    a = bm.io.read(shared_data / rel)
    assert a.shape == (n_cells, n_genes)
    _assert_counts_matrix(a)
    assert "gene_ids" in a.var
    assert bm.io.detect_species(a.var_names) == "human"
    assert bm.io.check_counts(a)[0]
    (info,) = a.uns["bonemet"]["inputs"].values()
    assert info["format"] == ("10x_h5" if rel.endswith(".h5") else "10x_mtx")


def test_v3_mtx_and_h5_agree(shared_data):
    m = bm.io.read(shared_data / TENX["v3_mtx_gz"][0])
    h = bm.io.read(shared_data / TENX["v3_h5"][0])
    assert list(m.var_names) == list(h.var_names)
    assert list(m.obs_names) == list(h.obs_names)
    assert (m.X != h.X).nnz == 0
    assert m.var["gene_ids"].str.startswith("ENSG").all()


def test_gex_only_and_dropped_counted(shared_data):
    a = bm.io.read(shared_data / "10x/v3_gex_plus_antibody", sample="S1")
    assert a.n_vars == 100
    assert not any("TotalSeq" in g for g in a.var_names)
    info = a.uns["bonemet"]["inputs"]["S1"]
    assert info["n_features_dropped"] == 17
    assert info["features_dropped"] == {"Antibody Capture": 17}
    assert a.obs_names[0].startswith("S1_")
    assert (a.obs["sample"] == "S1").all()


def test_multi_genome_h5(shared_data):
    p = shared_data / "10x/v2_chr21/multiple_genomes.h5"
    with pytest.raises(InputError) as e:
        bm.io.read(p)
    msg = _one_line(e)
    assert "several genomes" in msg and "hg19_chr21" in msg and "genome=" in msg
    a = bm.io.read(p, genome="hg19_chr21")
    assert a.shape == (12, 343)
    with pytest.raises(InputError, match="pick one of"):
        bm.io.read(p, genome="mm10")


def test_malformed_h5_refused(shared_data):
    p = shared_data / "10x/malformed/h5_without_feature_ids.h5"
    with pytest.raises(InputError) as e:
        bm.io.read(p)
    msg = _one_line(e)
    assert str(p) in msg and "features/id" in msg and "malformed" in msg


def test_missing_path_and_bad_format(tmp_path):
    with pytest.raises(InputError, match="does not exist") as e:
        bm.io.read(tmp_path / "nope.h5")
    assert "nope.h5" in _one_line(e)
    (tmp_path / "x.bin").write_bytes(b"abc")
    with pytest.raises(InputError, match="format"):
        bm.io.read(tmp_path / "x.bin")
    with pytest.raises(InputError, match="unknown format"):
        bm.io.read(tmp_path / "x.bin", format="loom")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no 10x matrix"):
        bm.io.read(tmp_path / "empty")


# ----------------------------------------------------------------------------- h5ad / CSV


def test_read_h5ad_prefers_counts_and_symbols(tmp_path, make_counts):
    a = make_counts(50, 120, seed=3)
    counts = a.X.copy()
    a.var["feature_name"] = a.var_names
    a.var_names = [f"ENSG{i:011d}" for i in range(a.n_vars)]
    a.layers["counts"] = counts
    x = counts.toarray()
    a.X = sp.csr_matrix(np.log1p(x / x.sum(1, keepdims=True) * 1e4).astype(np.float32))
    a.uns["bonemet"] = {"qc": {"old": {"n_before": 1}}}
    a.write_h5ad(tmp_path / "s.h5ad")
    r = bm.io.read(tmp_path / "s.h5ad")
    assert r.uns["bonemet"]["inputs"]["s"]["counts_source"] == "layers['counts']"
    assert "qc" not in r.uns["bonemet"]
    assert r.var_names[0] == "MT-ND1" and r.var["gene_ids"].iloc[0] == "ENSG00000000000"
    assert (r.X != counts).nnz == 0
    assert not r.layers


def _write_table(df: pd.DataFrame, path: Path, sep: str) -> None:
    text = df.to_csv(sep=sep)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)


@pytest.mark.parametrize(
    ("orientation", "fname", "sep"),
    [
        ("genes x cells", "counts.csv", ","),
        ("cells x genes", "counts.tsv.gz", "\t"),
        ("genes x cells", "counts.txt", "\t"),
    ],
)
def test_read_csv_orientations(tmp_path, make_counts, orientation, fname, sep):
    a = make_counts(40, 150, seed=1)
    dense = pd.DataFrame(a.X.toarray().astype(int), index=a.obs_names, columns=a.var_names)
    table = dense.T if orientation == "genes x cells" else dense
    _write_table(table, tmp_path / fname, sep)
    r = bm.io.read(tmp_path / fname)
    assert r.uns["bonemet"]["inputs"]["counts"]["orientation"] == orientation
    assert r.shape == a.shape
    assert list(r.var_names) == list(a.var_names)
    assert (r.X != a.X).nnz == 0
    _assert_counts_matrix(r)


def test_read_csv_barcodes_and_duplicate_symbols(tmp_path):
    rng = np.random.default_rng(0)
    genes = ["CD14", "LYZ", "CD14", "ACTB", "MT-CO1", "S100A8"]
    cells = [f"AAACCTGAG{i:03d}TCGA-1" for i in range(8)]
    m = rng.integers(0, 5, size=(len(genes), len(cells)))
    df = pd.DataFrame(m, index=genes, columns=cells)
    text = df.to_csv()
    assert text.startswith(",")  # blank first header
    (tmp_path / "t.csv").write_text(text)
    r = bm.io.read(tmp_path / "t.csv")
    assert r.shape == (8, 5)
    assert list(r.var_names) == ["CD14", "LYZ", "ACTB", "MT-CO1", "S100A8"]
    np.testing.assert_array_equal(r[:, "CD14"].X.toarray().ravel(), m[0] + m[2])
    assert r.uns["bonemet"]["inputs"]["t"]["n_duplicate_genes_summed"] == 1
    # cells x genes with the same labels
    df.T.to_csv(tmp_path / "u.csv")
    assert bm.io.read(tmp_path / "u.csv").shape == (8, 5)


def test_read_csv_non_numeric_refused(tmp_path):
    pd.DataFrame({"a": ["x", "y"], "b": [1, 2], "c": ["p", "q"]}, index=["G1", "G2"]).to_csv(
        tmp_path / "bad.csv"
    )
    with pytest.raises(InputError, match="non-numeric"):
        bm.io.read(tmp_path / "bad.csv")


# ----------------------------------------------------------------------------- species


def test_detect_species(make_counts):
    assert bm.io.detect_species(make_counts(5, 200, species="human").var_names) == "human"
    mouse = make_counts(5, 200, species="mouse").var_names
    assert bm.io.detect_species(mouse) == "mouse"
    # upper-cased mouse data: MT- prefix like human, but mouse-only genes decide
    upper = [g.upper() for g in mouse] + ["HBB-BS", "CHIL3", "LY6C2", "GM12345", "2310001H17RIK"]
    assert bm.io.detect_species(upper) == "mouse"
    # upper-cased human without mitochondrial or ribosomal genes still human (orf / LINC / HLA)
    assert bm.io.detect_species(["CD14", "LYZ", "C21orf58", "HLA-DRA", "LINC01234"]) == "human"
    assert bm.io.detect_species(["ENSMUSG00000000001", "ENSMUSG00000000028"]) == "mouse"
    assert bm.io.detect_species(["Cd14", "Lyz2", "mt-Co1"]) == "mouse"
    # human genes that look like mouse patterns (GRIK3 is not a RIKEN clone, GM140 not a Gm gene)
    assert bm.io.detect_species(["GRIK3", "GRIK2", "GM140", "CD14", "MT-CO1"]) == "human"
    assert bm.io.detect_species(["CD14", "A430005L14RIK", "GM42418", "MT-CO1"]) == "mouse"


def test_detect_species_undecidable():
    with pytest.raises(InputError, match="species='human'") as e:
        bm.io.detect_species([f"feature_{i}" for i in range(30)])
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="species"):
        bm.io.detect_species([])


def test_detect_species_real_upper_human(shared_data):
    a = ad.read_h5ad(shared_data / "pbmc4k_soupx.h5ad", backed="r")
    names = a.var_names.copy()
    a.file.close()
    assert bm.io.detect_species(names) == "human"


# ----------------------------------------------------------------------------- counts check


def test_check_counts(make_counts):
    a = make_counts(60, 150, seed=2)
    ok, why = bm.io.check_counts(a)
    assert ok and "integer" in why
    x = a.X.toarray()
    logn = np.log1p(x / x.sum(1, keepdims=True) * 1e4)
    ok, why = bm.io.check_counts(sp.csr_matrix(logn))
    assert not ok and "log" in why
    ok, why = bm.io.check_counts(logn - logn.mean(0))
    assert not ok and "negative" in why
    ok, why = bm.io.check_counts(x / x.sum(1, keepdims=True) * 1e4)
    assert not ok and "not integers" in why
    assert bm.io.check_counts(np.zeros((3, 3)))[0]


# ----------------------------------------------------------------------------- samplesheet


def _sheet(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "samples.csv"
    p.write_text(text)
    return p


def test_samplesheet_ok(tmp_path, shared_data):
    (tmp_path / "data").symlink_to(shared_data / "10x")
    p = _sheet(
        tmp_path,
        "sample,path,format,condition,species\n"
        "A,data/v3_chr21/filtered_feature_bc_matrix,,ctrl,\n"
        f"B,{shared_data / '10x/v3_chr21/filtered_feature_bc_matrix.h5'},10x_h5,tumour,human\n",
    )
    df = bm.io.read_samplesheet(p)
    assert list(df["sample"]) == ["A", "B"]
    assert list(df["format"]) == ["auto", "10x_h5"]
    assert list(df["batch"]) == ["A", "B"]
    assert list(df["species"]) == ["auto", "human"]
    assert Path(df["path"][0]).is_absolute() and Path(df["path"][0]).exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("sample,file\nA,x\n", "lacks the required column(s) path"),
        ("sample,path\nA,{ok}\n,{ok}\n", "row 2: empty 'sample' field"),
        (
            "sample,path\nA,{ok}\nB,missing.h5\n",
            "row 2 (sample 'B'): file 'missing.h5' does not exist",
        ),
        (
            "sample,path\nA,{ok}\nA,{ok}\n",
            "row 2 (sample 'A'): duplicate sample (also in row 1)",
        ),
        (
            "sample,path\nA,{ok}\nbad id,{ok}\n",
            "row 2 (sample 'bad id'): sample 'bad id' may contain only letters",
        ),
        ("sample,path,format\nA,{ok},loom\n", "row 1 (sample 'A'): unknown format 'loom'"),
        ("sample,path,species\nA,{ok},rat\n", "row 1 (sample 'A'): unknown species 'rat'"),
        ("sample,path\n", "no data rows"),
    ],
)
def test_samplesheet_errors(tmp_path, body, expected):
    (tmp_path / "ok.h5").write_bytes(b"")
    p = _sheet(tmp_path, body.format(ok="ok.h5"))
    with pytest.raises(InputError) as e:
        bm.io.read_samplesheet(p)
    msg = _one_line(e)
    assert expected in msg
    assert str(p) in msg


@pytest.mark.parametrize(("name", "text"), BAD_SHEETS, ids=[n for n, _ in BAD_SHEETS])
def test_bad_samplesheets_are_refused(tmp_path, name, text):
    """The same bad sheets that the Nextflow workflow must refuse (tests/test_nextflow.py)."""
    with pytest.raises(InputError):
        bm.io.read_samplesheet(write_sheet(tmp_path, name, text))


def test_samplesheet_rules_come_from_the_schema():
    from bonemet._utils import SAMPLE_ID_PATTERN

    schema = bm.io.samplesheet_schema()
    props = schema["items"]["properties"]
    assert bm.io.SAMPLESHEET_COLUMNS == tuple(props)
    assert props["sample"]["pattern"] == SAMPLE_ID_PATTERN.pattern
    assert schema["uniqueEntries"] == ["sample"]
    from bonemet._formats import FORMAT_ALIASES

    assert set(props["format"]["enum"]) == set(FORMAT_ALIASES)
    # the Nextflow reader loads the same file and carries no rule of its own
    nf = Path(__file__).resolve().parents[1] / "pipeline" / "workflows" / "samplesheet.nf"
    text = nf.read_text()
    assert "schema_input.json" in text
    for literal in ("'10x_mtx'", "'human'", "[A-Za-z0-9._-]"):
        assert literal not in text, literal


# ----------------------------------------------------------------------------- ingest


def test_ingest_samplesheet(tmp_path, shared_data):
    p = _sheet(
        tmp_path,
        "sample,path,batch,condition\n"
        f"A,{shared_data / '10x/v3_chr21/filtered_feature_bc_matrix'},run1,ctrl\n"
        f"B,{shared_data / '10x/v3_chr21/filtered_feature_bc_matrix.h5'},,tumour\n",
    )
    out = bm.io.ingest(p)
    assert list(out) == ["A", "B"]
    a, b = out["A"], out["B"]
    assert a.obs_names[0].startswith("A_") and b.obs_names[0].startswith("B_")
    assert set(a.obs_names).isdisjoint(b.obs_names)
    assert isinstance(a.obs["sample"].dtype, pd.CategoricalDtype)
    assert (a.obs["batch"] == "run1").all() and (b.obs["batch"] == "B").all()
    assert (b.obs["condition"] == "tumour").all()
    u = a.uns["bonemet"]
    assert u["species"] == "human" and u["is_counts"] is True and u["warnings"] == []
    assert set(u["inputs"]) == {"A"}
    assert u["inputs"]["A"]["format"] == "10x_mtx" and len(u["inputs"]["A"]["sha256"]) == 64
    # uns stays h5ad-serialisable
    bm._utils.write_h5ad(a, tmp_path / "a.h5ad")
    assert ad.read_h5ad(tmp_path / "a.h5ad").uns["bonemet"]["inputs"]["A"]["path"]


def test_ingest_mixed_species_refused(tmp_path, shared_data, make_counts):
    m = make_counts(20, 200, species="mouse")
    m.write_h5ad(tmp_path / "mouse.h5ad")
    p = _sheet(
        tmp_path,
        f"sample,path\nH,{shared_data / '10x/v2_chr21/filtered_gene_bc_matrices'}\nM,mouse.h5ad\n",
    )
    with pytest.raises(InputError, match="different species") as e:
        bm.io.ingest(p)
    assert "H: human" in _one_line(e) and "M: mouse" in str(e.value)


def test_ingest_h5ad_split_by_sample_key(shared_data):
    out = bm.io.ingest(
        shared_data / "kang2018_pbmc_ifnb.h5ad",
        sample_key="sample",
        label_key="cell_type",
        condition_key="condition",
    )
    assert len(out) == 4
    assert sum(a.n_obs for a in out.values()) == 1556
    for s, a in out.items():
        assert (a.obs["sample"] == s).all()
        assert a.obs_names.str.startswith(f"{s}_").all()
        assert "reference_label" in a.obs and "condition" in a.obs
        assert a.uns["bonemet"]["species"] == "human"
    with pytest.raises(InputError, match="label_key 'celltype' is not an obs column"):
        bm.io.ingest(shared_data / "kang2018_pbmc_ifnb.h5ad", label_key="celltype")


def test_ingest_single_file_and_non_counts(tmp_path, make_counts):
    a = make_counts(30, 150)
    x = a.X.toarray()
    a.X = sp.csr_matrix(np.log1p(x / x.sum(1, keepdims=True) * 1e4).astype(np.float32))
    a.write_h5ad(tmp_path / "my sample!.h5ad")
    out = bm.io.ingest(tmp_path / "my sample!.h5ad")
    (name,) = out
    assert name == "my_sample"
    u = out[name].uns["bonemet"]
    assert u["is_counts"] is False
    assert any("not raw counts" in w for w in u["warnings"])
    with pytest.raises(InputError, match="species='human'"):
        b = make_counts(10, 40)
        b.var_names = [f"feature_{i}" for i in range(40)]
        b.write_h5ad(tmp_path / "anon.h5ad")
        bm.io.ingest(tmp_path / "anon.h5ad")
    assert (
        bm.io.ingest(tmp_path / "anon.h5ad", species="mouse")["anon"].uns["bonemet"]["species"]
        == "mouse"
    )


def test_ingest_keys_need_h5ad(shared_data):
    with pytest.raises(InputError, match="only with .h5ad"):
        bm.io.ingest(shared_data / "10x/v3_chr21/filtered_feature_bc_matrix.h5", label_key="x")


def test_ingest_samplesheet_species(tmp_path, make_counts):
    b = make_counts(10, 40)
    b.var_names = [f"feature_{i}" for i in range(40)]
    b.write_h5ad(tmp_path / "anon.h5ad")
    p = _sheet(tmp_path, "sample,path,species\nX,anon.h5ad,mouse\n")
    assert bm.io.ingest(p)["X"].uns["bonemet"]["species"] == "mouse"
    p2 = tmp_path / "s2.csv"
    p2.write_text("sample,path\nX,anon.h5ad\n")
    assert bm.io.ingest(p2, species="human")["X"].uns["bonemet"]["species"] == "human"
    with pytest.raises(InputError, match="sample 'X'.*species='human'"):
        bm.io.ingest(p2)


def test_read_prefixed_10x_files_and_id_symbol_csv(tmp_path, shared_data):
    import shutil

    folder = tmp_path / "GSM1"
    folder.mkdir()
    for f in (shared_data / TENX["v3_mtx_gz"][0]).iterdir():
        shutil.copy(f, folder / f"GSM1_{f.name}")  # GEO-style file names
    a = bm.io.read(folder)
    assert a.shape == (1107, 507)
    assert "GSM1" in a.uns["bonemet"]["inputs"]
    df = pd.DataFrame(
        {"symbol": ["CD14", "LYZ", "CD14"], "c1": [1, 2, 3], "c2": [0, 5, 1]},
        index=["ENSG01", "ENSG02", "ENSG03"],
    )
    df.to_csv(tmp_path / "ids.csv")
    r = bm.io.read(tmp_path / "ids.csv")
    assert list(r.var_names) == ["CD14", "LYZ"]
    assert list(r.var["gene_ids"]) == ["ENSG01", "ENSG02"]
    np.testing.assert_array_equal(r.X.toarray(), [[4, 2], [1, 5]])
