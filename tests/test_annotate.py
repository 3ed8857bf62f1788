"""bm.tl.annotate: vocabularies, Unassigned, real PBMC accuracy, generated-data accuracy.

Floors sit a little below what ``benchmarks/annotation_accuracy.py`` measures, so a
regression fails. Preprocessing here is the fast path (log1p CP10k, HVG, PCA, kNN,
leiden), not scVI, to keep the file quick.
"""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from builders import read_labelled, scanpy_prep  # tests/builders.py
from sklearn.metrics import f1_score

import bonemet as bm
from bonemet._errors import InputError
from bonemet._vocab import NAMED_POPULATIONS as NAMED
from bonemet.tl import _annotate as annot

_prep = scanpy_prep


def _real(shared_data, name: str) -> ad.AnnData:
    return scanpy_prep(read_labelled(shared_data, name))


def _sim(species: str, n_cells: int = 5000, seed: int = 0) -> ad.AnnData:
    adata = bm.datasets.simulate_bone_metastasis(
        n_cells=n_cells, n_samples=2, species=species, seed=seed
    )
    keep = np.ones(adata.n_obs, dtype=bool)
    for c in ("true_doublet", "true_low_quality"):  # QC removes these before annotation
        if c in adata.obs:
            keep &= ~adata.obs[c].astype(bool).to_numpy()
    return _prep(adata[keep].copy())


def _f1(adata: ad.AnnData) -> dict[str, float]:
    truth = adata.obs["true_population"].astype(str)
    pred = adata.obs["population"].astype(str)
    labels = sorted(set(truth))
    vals = f1_score(truth, pred, labels=labels, average=None, zero_division=0)
    return dict(zip(labels, map(float, vals)))


def _mmdsc_fraction(adata: ad.AnnData) -> float:
    """M-MDSC calls among monocyte calls (healthy blood has few M-MDSC)."""
    pop = adata.obs["population"].astype(str)
    mono = pop.isin(["Classical monocyte", "Non-classical monocyte", "M-MDSC"])
    return float((pop[mono] == "M-MDSC").mean())


@pytest.fixture(scope="module")
def sim_human() -> ad.AnnData:
    adata = _sim("human")
    bm.tl.annotate(adata)
    return adata


@pytest.fixture(scope="module")
def sim_mouse_raw() -> ad.AnnData:
    return _sim("mouse")


# ----------------------------------------------------------------------------- vocabulary
def test_vocabularies_are_fixed() -> None:
    assert annot.CELL_TYPES[-1] == "Unassigned" and len(annot.CELL_TYPES) == 20
    assert len(annot.POPULATIONS) == 33 and annot.POPULATIONS[-1] == "Unassigned"
    assert set(annot.POPULATION_TO_CELL_TYPE.values()) == set(annot.CELL_TYPES)
    cd8 = [p for p in annot.POPULATIONS if "CD8" in p]
    assert cd8 and all(p.startswith("CD8") for p in cd8)
    # every marker set targets a vocabulary label; every label has a marker set
    from bonemet._signatures import load_gene_sets

    lin = {s.target for s in load_gene_sets("lineage_marker").values()}
    pop = {s.target for s in load_gene_sets("population_marker").values()}
    assert lin == set(annot.CELL_TYPES) - {"Unassigned"}
    assert pop == set(annot.POPULATIONS) - {"Unassigned"}


@pytest.mark.slow
def test_outputs_are_categorical_with_full_vocabulary(sim_human: ad.AnnData, tmp_path) -> None:
    sim_human.write_h5ad(tmp_path / "annotated.h5ad")  # uns stays h5ad-serialisable
    back = ad.read_h5ad(tmp_path / "annotated.h5ad")
    assert list(back.obs["population"].cat.categories) == list(annot.POPULATIONS)
    obs = sim_human.obs
    assert list(obs["cell_type"].cat.categories) == list(annot.CELL_TYPES)
    assert list(obs["population"].cat.categories) == list(annot.POPULATIONS)
    conf = obs["annotation_confidence"].to_numpy()
    assert conf.dtype.kind == "f" and np.all((conf >= 0) & (conf <= 1))
    # population and cell_type agree through the documented mapping
    mapped = obs["population"].astype(str).map(annot.POPULATION_TO_CELL_TYPE)
    assert (mapped == obs["cell_type"].astype(str)).all()
    meta = sim_human.uns["bonemet"]["annotate"]
    assert meta["species"] == "human" and meta["marker_coverage"]["lineage_t_cell"] > 0.5
    assert sim_human.uns["bonemet"]["gene_sets"]["population_m_mdsc"]["n_found"] >= 3


# ----------------------------------------------------------------------------- generated data
@pytest.mark.slow
def test_generated_human_accuracy(sim_human: ad.AnnData) -> None:
    f1 = _f1(sim_human)
    assert np.mean(list(f1.values())) >= 0.96, f1  # measured 0.993
    for name in NAMED:  # measured >= 0.95 (PMN-MDSC 0.95 since states use the lineage graph)
        assert f1[name] >= 0.85, (name, f1)
    # the seeded classifier in the T-cell embedding recovers Tpex with dropout of its markers
    assert f1["CD8 Tpex (TCF1+)"] >= 0.90 and f1["M-MDSC"] >= 0.90, f1
    lineage = (
        sim_human.obs["true_cell_type"].astype(str) == sim_human.obs["cell_type"].astype(str)
    ).mean()
    assert lineage >= 0.95


@pytest.mark.slow
def test_generated_nk_without_its_discriminating_genes_is_nk() -> None:
    """Human seed 1 plants none of KLRF1/FCER1G/TYROBP in its NK programme: its NK cells
    carry the shared cytotoxic genes, germline TRBC1/TRBC2 and NCR1 in half of them. The
    sides are compared over the neighbourhood, and the CD3/TCR genes its T cells express
    well count against T by their absence from the NK cluster. Measured: NK F1 1.00,
    macro-F1 0.993 (before: NK F1 0.56, 76 of 129 NK cells Unassigned, macro-F1 0.975)."""
    adata = _sim("human", n_cells=6000, seed=1)
    bm.tl.annotate(adata)
    f1 = _f1(adata)
    assert f1["NK"] >= 0.95, f1["NK"]
    assert np.mean(list(f1.values())) >= 0.98, f1
    info = adata.uns["bonemet"]["annotate"]["discriminators"]["discriminate_t_vs_nk"]
    assert info["target_absence_weight"] == 1.0  # CD3/TCR measured in the T clusters


def test_generated_mouse_accuracy_and_uppercase_symbols(sim_mouse_raw: ad.AnnData) -> None:
    adata = bm.tl.annotate(sim_mouse_raw, copy=True)
    assert "cell_type" not in sim_mouse_raw.obs  # copy=True leaves the input alone
    assert adata.uns["bonemet"]["annotate"]["species"] == "mouse"
    f1 = _f1(adata)
    assert np.mean(list(f1.values())) >= 0.96, f1  # measured 0.995
    for name in NAMED:  # measured >= 0.96
        assert f1[name] >= 0.85, (name, f1)

    upper = sim_mouse_raw.copy()
    upper.var_names = [v.upper() for v in upper.var_names]
    bm.tl.annotate(upper)
    assert upper.uns["bonemet"]["annotate"]["species"] == "mouse"
    f1u = _f1(upper)
    assert np.mean(list(f1u.values())) >= 0.90, f1u
    assert f1u["Immature neutrophil (CHI3L3+)"] >= 0.75  # Chil3 -> CHIL3 still matches


# ----------------------------------------------------------------------------- Unassigned
def test_nonsense_cells_are_unassigned(sim_mouse_raw: ad.AnnData) -> None:
    """Cells whose expression is random non-marker genes fit nothing: Unassigned."""
    from bonemet._signatures import load_gene_sets

    base = sim_mouse_raw[:1500].copy()
    markers = {
        g.upper()
        for s in load_gene_sets(("lineage_marker", "population_marker")).values()
        for sign in ("positive", "negative")
        for g in s.genes("mouse", sign=sign)
    }
    non_marker = np.flatnonzero([v.upper() not in markers for v in base.var_names])
    rng = np.random.default_rng(1)
    n_bad = 150
    counts = np.zeros((n_bad, base.n_vars), dtype=np.float32)
    for i in range(n_bad):
        genes = rng.choice(non_marker, size=600, replace=False)
        counts[i, genes] = rng.poisson(3.0, size=genes.size) + 1
    bad = ad.AnnData(X=sp.csr_matrix(counts), var=pd.DataFrame(index=base.var_names))
    bad.obs_names = [f"nonsense_{i}" for i in range(n_bad)]
    bad.obs["sample"] = "nonsense"
    good = ad.AnnData(
        X=base.layers["counts"].copy(),
        obs=base.obs[["sample"]].copy(),
        var=pd.DataFrame(index=base.var_names),
    )
    both = ad.concat([good, bad])
    both.obs["sample"] = both.obs["sample"].astype(str).astype("category")
    both = _prep(both)
    bm.tl.annotate(both)
    is_bad = both.obs_names.str.startswith("nonsense_")
    frac_unassigned = (both.obs.loc[is_bad, "cell_type"] == "Unassigned").mean()
    assert frac_unassigned >= 0.9
    assert (both.obs.loc[is_bad, "population"] == "Unassigned").mean() >= 0.9
    assert (both.obs.loc[~is_bad, "cell_type"] != "Unassigned").mean() >= 0.9
    assert both.obs.loc[is_bad, "annotation_confidence"].median() < 0.15


def test_ambient_haemoglobin_counts_as_one_gene_of_the_erythroid_set() -> None:
    """A mouse sample without erythroid cells whose droplets all carry ambient haemoglobin:
    the four mouse chains (Hbb-bs/bt, Hba-a1/a2) count as one gene of the 13-gene erythroid
    set, so they cannot fill its top half and cost cells their lineage call. Measured: all
    cells keep their lineage; with every chain counted as its own gene 1.6% were Unassigned
    (lineage accuracy 0.984)."""
    adata = bm.datasets.simulate_bone_metastasis(n_cells=3000, n_samples=2, species="mouse", seed=0)
    obs = adata.obs
    keep = ~(obs["true_doublet"].astype(bool) | obs["true_low_quality"].astype(bool))
    keep &= obs["true_cell_type"].astype(str) != "Erythroid"
    adata = _prep(adata[keep.to_numpy()].copy())
    bm.tl.annotate(adata)
    lineage = (adata.obs["true_cell_type"].astype(str) == adata.obs["cell_type"].astype(str)).mean()
    assert lineage >= 0.995
    assert (adata.obs["cell_type"] == "Unassigned").mean() <= 0.005
    rec = adata.uns["bonemet"]["gene_sets"]["lineage_erythroid"]
    assert rec["n_total"] == 10  # 13 genes, the four chains as one


# ----------------------------------------------------------------------------- real PBMC
def test_kang_pbmc_accuracy(shared_data) -> None:
    adata = _real(shared_data, "kang2018_pbmc_ifnb")
    bm.tl.annotate(adata)
    lin = bm.tl.lineage_accuracy(adata, label_key="reference_label")
    assert lin["n_evaluated"] == adata.n_obs
    assert lin["accuracy"] >= 0.94, lin
    t = bm.tl.cd8_cd4_accuracy(adata, label_key="reference_label")
    assert t["accuracy"] >= 0.90, t
    assert _mmdsc_fraction(adata) <= 0.12  # measured 0.09: healthy monocytes are not MDSC
    tab = bm.tl.label_agreement(adata, label_key="reference_label")
    assert tab.to_numpy().sum() == adata.n_obs
    assert tab.loc["CD14+ Monocytes", "Monocyte/Macrophage"] >= 380
    # no bone-marrow-only population is invented in blood
    pops = set(adata.obs["population"].astype(str))
    assert not pops & {
        "Iron-recycling macrophage (VCAM1+CD163+CCR3+)",
        "Osteoclast",
        "Tumour epithelial",
    }


def test_pbmc4k_accuracy(shared_data) -> None:
    adata = _real(shared_data, "pbmc4k_soupx")
    bm.tl.annotate(adata, cluster_key=None)  # clusters computed internally
    lin = bm.tl.lineage_accuracy(adata, label_key="reference_label")
    assert lin["n_excluded"] >= 20  # "?" cells are not evaluated
    assert lin["accuracy"] >= 0.92, lin
    for label in ("B", "T_CD4", "T_CD8", "MNP"):
        assert lin["per_label"][label] >= 0.95, lin
    t = bm.tl.cd8_cd4_accuracy(adata, label_key="reference_label")
    assert t["accuracy"] >= 0.93, t
    assert _mmdsc_fraction(adata) <= 0.12
    assert adata.uns["bonemet"]["annotate"]["parameters"]["cluster_key"] == "leiden (computed here)"


# ----------------------------------------------------------------------------- helpers / edge cases
def test_lineage_accuracy_mapping_and_exclusions() -> None:
    obs = pd.DataFrame(
        {
            "reference_label": ["MNP", "MNP", "T_CD8", "?", "CD14+ Monocytes", "NK"],
            "cell_type": [
                "Dendritic cell",
                "Monocyte/Macrophage",
                "NK cell",
                "T cell",
                "Monocyte/Macrophage",
                "NK cell",
            ],
            "population": ["cDC2", "Classical monocyte", "NK", "CD4 T", "Classical monocyte", "NK"],
        }
    )
    adata = ad.AnnData(obs=obs.set_index(pd.Index([f"c{i}" for i in range(6)])))
    res = bm.tl.lineage_accuracy(adata)
    assert res["n_evaluated"] == 5 and res["n_excluded"] == 1
    assert res["accuracy"] == pytest.approx(4 / 5)
    res2 = bm.tl.lineage_accuracy(adata, mapping={"NK": ()})  # user mapping wins; () = skip
    assert res2["n_evaluated"] == 4
    t = bm.tl.cd8_cd4_accuracy(adata)
    assert t["n_reference_t"] == 1 and t["n_called_t"] == 0 and t["accuracy_all"] == 0.0


def test_counts_input_without_graph_and_celltypist_skip(
    sim_mouse_raw: ad.AnnData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raw counts in X, no graph, no clusters: normalised and graphed internally, no new slots."""
    sub = sim_mouse_raw[:800]
    adata = ad.AnnData(
        X=sub.layers["counts"].copy(),
        obs=sub.obs[["sample", "true_population"]].copy(),
        var=pd.DataFrame(index=sub.var_names),
    )
    # without the celltypist package the optional refinement is skipped with a warning
    monkeypatch.setitem(sys.modules, "celltypist", None)  # import celltypist -> ImportError
    bm.tl.annotate(adata, species="mouse", celltypist_model="/nonexistent/model.pkl")
    ct = adata.uns["bonemet"]["annotate"]["celltypist"]
    assert ct["used"] is False and "not installed" in ct["skipped"]
    assert any("celltypist" in w for w in adata.uns["bonemet"]["warnings"])
    meta = adata.uns["bonemet"]["annotate"]
    assert meta["normalised_here"] is True
    assert not adata.obsp.keys() and "X_pca" not in adata.obsm
    assert (adata.obs["cell_type"] != "Unassigned").mean() > 0.8


def _labelled_halves(split_seed: int) -> tuple[ad.AnnData, ad.AnnData]:
    """A simulated set split in two: a reference with labels in obs["label"], and a query."""
    full = _sim("human", n_cells=2400, seed=6)
    order = np.random.default_rng(split_seed).permutation(full.n_obs)
    half = full.n_obs // 2
    ref, query = full[order[:half]].copy(), full[order[half:]].copy()
    # labels as public models and atlases spell them; bonemet maps them to its lineages
    ref.obs["label"] = (
        ref.obs["true_cell_type"].astype(str).replace({"B cell": "B cells", "T cell": "T cells"})
    ).to_numpy()
    return ref, query


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # the test model
def test_celltypist_model_rescues_low_confidence_cells(tmp_path) -> None:
    """A real CellTypist model (trained offline here) assigns cells the markers leave unsure."""
    celltypist = pytest.importorskip("celltypist")
    ref, query = _labelled_halves(split_seed=0)
    model = celltypist.train(
        ref,
        labels="label",
        feature_selection=False,
        use_SGD=True,
        max_iter=30,
        n_jobs=1,
        random_state=0,
    )
    path = tmp_path / "model.pkl"
    model.write(str(path))
    with pytest.raises(InputError, match="not found"):
        bm.tl.annotate(query.copy(), celltypist_model=tmp_path / "missing.pkl")

    strict = dict(min_confidence=0.4)  # a strict threshold leaves more cells unsure
    plain = bm.tl.annotate(query, copy=True, **strict)
    refined = bm.tl.annotate(query, copy=True, celltypist_model=path, **strict)
    info = refined.uns["bonemet"]["annotate"]["celltypist"]
    assert info["used"] is True and info["n_confirmed"] + info["n_changed"] > 0
    truth = query.obs["true_cell_type"].astype(str).to_numpy()
    before = plain.obs["cell_type"].astype(str).to_numpy()
    after = refined.obs["cell_type"].astype(str).to_numpy()
    rescued = (before == "Unassigned") & (after != "Unassigned")
    assert rescued.sum() >= 3, info
    assert (after[rescued] == truth[rescued]).mean() >= 0.9
    assert (after == truth).mean() >= (before == truth).mean()


@pytest.fixture(scope="module")
def scanvi_split(tmp_path_factory) -> tuple[ad.AnnData, ad.AnnData, object]:
    """Half of a simulated set as a scANVI reference (real scvi-tools training), half as query."""
    ref, query = _labelled_halves(split_seed=1)
    path = bm.tl.build_scanvi_reference(
        ref,
        tmp_path_factory.mktemp("scanvi") / "reference",
        label_key="label",
        n_top_genes=1000,
        max_epochs=10,
        scanvi_max_epochs=5,
        accelerator="cpu",
    )
    return ref, query, path


def test_scanvi_reference_rescues_low_confidence_cells(scanvi_split) -> None:
    """A scANVI reference (scArches query mapping) assigns cells the markers leave unsure."""
    ref, query, path = scanvi_split
    assert (path / "model.pt").is_file()
    assert "label" not in query.obs and "scanvi_label" not in ref.obs  # inputs left alone
    strict = dict(min_confidence=0.4)  # a strict threshold leaves more cells unsure
    plain = bm.tl.annotate(query, copy=True, **strict)
    refined = bm.tl.annotate(
        query, copy=True, scanvi_reference=path, scanvi_max_epochs=5, accelerator="cpu", **strict
    )
    info = refined.uns["bonemet"]["annotate"]["scanvi"]
    assert info["used"] is True and info["n_genes_found"] == info["n_reference_genes"] == 1000
    assert "T cells" in info["reference_labels"] and "Unknown" not in info["reference_labels"]
    truth = query.obs["true_cell_type"].astype(str).to_numpy()
    mapped = np.array([annot._lineage_of(x) for x in refined.obs["scanvi_label"].astype(str)])
    assert (mapped == truth).mean() >= 0.8  # the transferred labels themselves are right
    assert info["lineage_agreement"] >= 0.8
    assert refined.obs["scanvi_probability"].between(0, 1).all()
    before = plain.obs["cell_type"].astype(str).to_numpy()
    after = refined.obs["cell_type"].astype(str).to_numpy()
    assert info["n_confirmed"] + info["n_changed"] > 0
    rescued = (before == "Unassigned") & (after != "Unassigned")
    assert rescued.sum() >= 3, info
    assert (after[rescued] == truth[rescued]).mean() >= 0.9
    assert (after == truth).mean() >= (before == truth).mean()
    # confident marker calls are never overridden by the reference
    sure = plain.obs["annotation_confidence"].to_numpy() >= 2 * 0.4
    assert (after[sure] == before[sure]).all()
    # neither the reference's training copy nor the query stays in scvi-tools' class-level
    # stores (it would stay resident for the rest of the process)
    import scvi

    for cls in (scvi.model.SCVI, scvi.model.SCANVI):
        kept = [m.adata.n_obs for m in cls._setup_adata_manager_store.values()]
        assert ref.n_obs not in kept and query.n_obs not in kept, (cls.__name__, kept)


def test_refine_lineages_counts_and_agreement() -> None:
    """Unsure cells take a model's lineage; agreement is measured before any cell changes."""
    labels = np.array(["T cells", "B cells", "B cells", "CD8 Tpex (TCF1+)", "Unknown"])
    prob = np.array([0.9, 0.9, 0.4, 0.9, 0.9])
    lin = np.array(["T cell", "T cell", "T cell", "T cell", "T cell"], dtype=object)
    conf = np.array([0.05, 0.05, 0.05, 0.9, 0.05], dtype=np.float32)
    out, new_conf, info = annot._refine_lineages(labels, prob, lin, conf, 0.15, {})
    assert out.tolist() == ["T cell", "B cell", "T cell", "T cell", "T cell"]
    assert (info["n_changed"], info["n_confirmed"], info["n_unmapped_labels"]) == (1, 1, 1)
    assert info["lineage_agreement"] == pytest.approx(2 / 4)  # cells 0 and 3 of the 4 named
    assert new_conf[1] == pytest.approx(0.45) and lin[1] == "T cell"  # input not modified


def test_scanvi_reference_errors_and_case_robust_genes(scanvi_split, tmp_path) -> None:
    ref, query, path = scanvi_split
    q = query[:300].copy()
    with pytest.raises(InputError, match="not found"):
        bm.tl.annotate(q.copy(), scanvi_reference=tmp_path / "missing")
    # symbols of another species (or Ensembl ids): a clear error, nothing written
    other = q.copy()
    other.var_names = [f"ENSG{i:011d}" for i in range(other.n_vars)]
    with pytest.raises(InputError, match="other gene ids"):
        bm.tl.annotate(other, scanvi_reference=path, scanvi_max_epochs=1)
    assert "cell_type" not in other.obs and "scanvi_label" not in other.obs
    # no raw counts to map with
    nocounts = q.copy()
    del nocounts.layers["counts"]
    with pytest.raises(InputError, match="raw counts"):
        bm.tl.annotate(nocounts, scanvi_reference=path, scanvi_max_epochs=1)
    # upper- or lower-cased symbols still find every reference gene
    lower = q.copy()
    lower.var_names = [g.lower() for g in lower.var_names]
    bm.tl.annotate(lower, species="human", scanvi_reference=path, scanvi_max_epochs=1)
    info = lower.uns["bonemet"]["annotate"]["scanvi"]
    assert info["n_genes_found"] == info["n_reference_genes"]
    with pytest.raises(InputError, match="scanvi_max_epochs"):
        bm.tl.annotate(q.copy(), scanvi_reference=path, scanvi_max_epochs=0)
    with pytest.raises(InputError, match="label_key"):
        bm.tl.build_scanvi_reference(ref, tmp_path / "r", label_key="nope")


def test_scanvi_reference_from_the_cli(scanvi_split, tmp_path, capsys) -> None:
    """`bonemet reference` builds a reference; `annotate.scanvi_reference` maps a stage onto it."""
    from bonemet.cli import main

    ref, query, path = scanvi_split
    small = ref[:400].copy()
    small.obs["label"] = small.obs["true_cell_type"].astype(str).to_numpy()
    small.write_h5ad(tmp_path / "labelled.h5ad")
    args = ["reference", "--input", str(tmp_path / "labelled.h5ad"), "--out"]
    assert main([*args, str(tmp_path / "bad"), "--label-key", "nope", "-q"]) == 2
    assert "label_key 'nope' is not in adata.obs" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # nothing half-written
    assert main([*args, str(tmp_path / "r"), "--label-key", "label", "-q", "--max-epochs", "1",
                 "--scanvi-max-epochs", "1", "--n-top-genes", "300", "--accelerator", "cpu"]) == 0  # fmt: skip
    assert (tmp_path / "r" / "model.pt").is_file()
    captured = capsys.readouterr()
    out = captured.out
    assert out.strip().splitlines()[-1] == str(tmp_path / "r")  # the path, last, for scripts
    # a 2-cell label: warned about on stderr, with the other log lines
    assert "fewer than 3 cells are left" in " ".join(captured.err.split())

    query[:300].write_h5ad(tmp_path / "clustered.h5ad")
    (tmp_path / "cfg.yaml").write_text(
        f"annotate: {{scanvi_reference: '{path}', scanvi_max_epochs: 2}}\n"
        "integrate: {accelerator: cpu}\n"
    )
    out = tmp_path / "annotated.h5ad"
    rc = main(["annotate", "--input", str(tmp_path / "clustered.h5ad"), "--output", str(out),
               "--config", str(tmp_path / "cfg.yaml"), "-q"])  # fmt: skip
    assert rc == 0
    res = ad.read_h5ad(out)
    info = res.uns["bonemet"]["annotate"]["scanvi"]
    assert info["used"] and info["max_epochs"] == 2 and "scanvi_label" in res.obs


def test_bad_arguments() -> None:
    adata = ad.AnnData(
        X=sp.csr_matrix(np.ones((5, 3), dtype=np.float32)), var=pd.DataFrame(index=["A", "B", "C"])
    )
    with pytest.raises(ValueError, match="min_confidence"):
        bm.tl.annotate(adata, min_confidence=2.0)
    # no marker gene at all: every cell Unassigned, with a warning for the report
    # (a pipeline run does not fail after integration because of the gene panel)
    bm.tl.annotate(adata, species="human")
    assert set(adata.obs["cell_type"]) == {"Unassigned"}
    assert set(adata.obs["population"]) == {"Unassigned"}
    assert (adata.obs["annotation_confidence"] == 0).all()
    assert any("none of the human marker genes" in w for w in adata.uns["bonemet"]["warnings"])


def test_over_cluster_vote_only_confirms_a_cells_own_best_lineage() -> None:
    """Weak cells take their over-cluster's confident majority only where their own best
    lineage agrees; a cluster without a confident majority, a disagreeing cell and a cell
    with almost no evidence stay Unassigned."""
    lab = np.array(["B cell"] * 6 + ["T cell"] * 2 + ["B cell"] * 2 + ["T cell"] * 4, dtype=object)
    unassigned = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0], dtype=bool)
    s1 = np.array([0.5] * 4 + [0.08, 0.02, 0.08, 0.08, 0.08, 0.08, 0.08, 0.08, 0.08, 0.5])
    over = np.array([0] * 8 + [1] * 6)
    voted = annot._over_cluster_vote(lab, unassigned, s1, over)
    # cluster 0: 4 of 8 confident B calls (half): cell 4 (B, 0.08) is voted, cell 5 (B,
    # 0.02) has too little evidence, cells 6-7 (best T) disagree
    assert voted.tolist()[:8] == [False] * 4 + [True, False, False, False]
    # cluster 1: one confident call of six: no majority, nobody is voted
    assert not voted[8:].any()


def test_a_state_left_with_few_own_genes_is_not_called_on_one_gene() -> None:
    """A state is judged on the genes its parent lacks; where only one or two of those are
    measured (human M-MDSC in PBMC: ARG1/NOS2 undetected, CD33/IL1B left after the
    monocyte genes) the score shrinks as a lineage set's does, so one high IL1B is not a
    call. Measured (fast path): healthy-blood M-MDSC calls, Kang 0.050 -> 0.000 and PBMC
    4k 0.032 -> 0.000 of monocytes, generated data unchanged."""
    from bonemet.tl._annotate_markers import _Set

    # genes 0-3 are the parent's; 4 and 5 the state's own; 6 and 7 listed but unmeasured
    E = np.zeros((1, 6), np.float32)
    E[0, 4] = 1.0  # one own gene high
    col = {j: j for j in range(6)}
    state = _Set("s", "M-MDSC", [0, 1, 2, 3, 4, 5], [], 8, 0)
    full = annot._set_scores(E, col, [state], set())
    own = annot._set_scores(E, col, [state], {0, 1, 2, 3})
    # top half of the 2 own genes is the one high gene, shrunk by 2 of min(4 listed, 3)
    assert own[0] == pytest.approx(2 / 3)
    # without dropping parent genes the set keeps its 6 measured genes: no shrinkage
    assert full[0] == pytest.approx(1 / 3)  # top 3 of 6: (1 + 0 + 0) / 3
