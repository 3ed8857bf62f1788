"""Ligand–receptor analysis (LIANA+): resource, counting across samples, the planted pair."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import bonemet as bm
from bonemet.tl._ligrec import _aggregate, _highlight


@pytest.fixture(scope="module")
def liana():
    # imported here, not at collection: importing liana takes ~10 s
    return pytest.importorskip("liana")


def test_resources_ship_offline_and_gain_the_review_pairs(liana) -> None:
    hs = bm.tl.ligrec_resource("human")
    mm = bm.tl.ligrec_resource("mouse")
    pairs_hs = set(zip(hs["ligand"], hs["receptor"]))
    pairs_mm = set(zip(mm["ligand"], mm["receptor"]))
    # shipped in the liana wheel
    for p in [("SPP1", "CD44"), ("TNFSF11", "TNFRSF11A"), ("CXCL12", "CXCR4"), ("TF", "TFRC")]:
        assert p in pairs_hs
    assert ("Spp1", "Cd44") in pairs_mm and ("Tnfsf11", "Tnfrsf11a") in pairs_mm
    # absent from the shipped resources, added by bonemet with their source
    for p in [("DKK1", "CKAP4"), ("SLC40A1", "TFRC"), ("PVR", "TIGIT")]:
        assert p in pairs_hs
    for p in [("Dkk1", "Ckap4"), ("Pvr", "Tigit"), ("Nectin2", "Tigit"), ("Slc40a1", "Tfrc")]:
        assert p in pairs_mm
    src = mm.set_index(["ligand", "receptor"])["pair_source"]
    assert src[("Pvr", "Tigit")].startswith("bonemet:")
    assert src[("Spp1", "Cd44")] == "liana mouseconsensus"
    # the human consensus already has NECTIN2 -> TIGIT: not duplicated
    assert hs.duplicated(["ligand", "receptor"]).sum() == 0
    with pytest.raises(bm.InputError, match="human"):
        bm.tl.ligrec_resource("rat")


def test_highlights_match_complexes_and_mouse_symbols() -> None:
    assert _highlight("Spp1", "Itgav_Itgb3") == "OPN (Cheng 2025)"
    assert _highlight("SPP1", "CD44") == "OPN (Cheng 2025)"
    assert _highlight("Trf", "Tfrc") == "Iron transfer (Han 2025)"
    assert _highlight("Pvr", "Tigit") == "TIGIT (Monteran 2024)"
    assert _highlight("Tnfsf11", "Tnfrsf11a") == "RANKL-RANK"
    assert _highlight("Spp1", "Ptger4") == ""


def test_counting_across_samples() -> None:
    """n_significant / n_samples per condition; consistent needs >= half and >= 2 samples."""
    rows = []
    for s, c, mag in [
        ("a1", "bm", 0.01), ("a2", "bm", 0.02), ("a3", "bm", 0.5),
        ("c1", "ctl", 0.01), ("c2", "ctl", 0.9),
    ]:  # fmt: skip
        rows.append(dict(sample=s, condition=c, source="Osteoclast", target="CD8 T",
                         ligand_complex="Spp1", receptor_complex="Cd44", lr_means=1.0,
                         cellphone_pvals=0.01, magnitude_rank=mag, specificity_rank=0.01))  # fmt: skip
        rows.append(dict(sample=s, condition=c, source="B", target="B",
                         ligand_complex="Xx", receptor_complex="Yy", lr_means=0.1,
                         cellphone_pvals=0.9, magnitude_rank=0.9, specificity_rank=0.9))  # fmt: skip
    info = pd.DataFrame(
        {
            "sample": ["a1", "a2", "a3", "c1", "c2"],
            "condition": ["bm"] * 3 + ["ctl"] * 2,
            "n_populations": [3] * 5,
        }  # fmt: skip
    )
    src = {("SPP1", "CD44"): "liana mouseconsensus"}
    t = _aggregate(pd.DataFrame(rows), info, src, alpha=0.05, min_fraction=0.5)
    # the never-significant, non-highlighted pair is left out
    assert set(t["ligand"]) == {"Spp1"}
    bm_ = t.set_index("condition").loc["bm"]
    assert bm_["n_samples"] == 3 and bm_["n_significant"] == 2 and bm_["consistent"]
    assert bm_["samples_significant"] == "a1, a2" and bm_["fraction_significant"] == 2 / 3
    assert bm_["highlight"] == "OPN (Cheng 2025)" and bm_["pair_source"] == "liana mouseconsensus"
    ctl = t.set_index("condition").loc["ctl"]
    # one of two samples: half, but a pair must hold in two samples
    assert ctl["n_significant"] == 1 and not ctl["consistent"]


def _planted(seed: int = 0) -> ad.AnnData:
    """4 mouse samples; in bone_met, osteoclasts send Spp1 to CD8 T cells (Cd44)."""
    rng = np.random.default_rng(seed)
    genes = ["Spp1", "Cd44", "Cxcl12", "Cxcr4", "Dkk1", "Ckap4", "Actb", "Cd8a", "Acp5", "Cd14"]
    genes += ["mt-Co1", "mt-Nd1", "mt-Atp6"]
    # liana needs >= 2% of its resource's genes in var_names: filler genes from the resource
    if bm.tl.liana_available():
        res = bm.tl.ligrec_resource("mouse")
        genes += sorted({g for g in res["ligand"] if "_" not in g} - set(genes))[:150]
    else:
        genes += [f"Gene{i}" for i in range(150)]
    pops = {"Osteoclast": 25, "CD8 T": 25, "B": 25}
    blocks, obs = [], []
    for s, cond in [("s1", "bone_met"), ("s2", "bone_met"), ("s3", "control"), ("s4", "control")]:
        for p, n in pops.items():
            x = rng.poisson(0.3, size=(n, len(genes))).astype(float)
            x[:, genes.index("Actb")] += 20
            if p == "Osteoclast":
                x[:, genes.index("Acp5")] += 10
                if cond == "bone_met":
                    x[:, genes.index("Spp1")] += rng.poisson(30, n)
            if p == "CD8 T":
                x[:, genes.index("Cd8a")] += 10
                if cond == "bone_met":
                    x[:, genes.index("Cd44")] += rng.poisson(30, n)
            blocks.append(x)
            obs += [(s, cond, p)] * n
    X = np.vstack(blocks)
    X = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    o = pd.DataFrame(obs, columns=["sample", "condition", "population"])
    o.index = [f"c{i}" for i in range(len(o))]
    return ad.AnnData(X=X.astype(np.float32), obs=o, var=pd.DataFrame(index=genes))


def test_planted_pair_is_found_in_bone_met_samples_only(liana) -> None:
    a = _planted()
    bm.tl.ligand_receptor(a, min_cells=20, n_perms=20, seed=0)
    res = a.uns["bonemet_ligrec"]
    assert res["status"] == "done" and res["species"] == "mouse"
    t = res["table"]
    hit = t[(t["ligand"] == "Spp1") & (t["receptor"] == "Cd44") & (t["source"] == "Osteoclast")
            & (t["target"] == "CD8 T")].set_index("condition")  # fmt: skip
    assert hit.loc["bone_met", "n_significant"] == 2 and hit.loc["bone_met", "consistent"]
    if "control" in hit.index:
        assert hit.loc["control", "n_significant"] == 0
    samples = res["samples"].set_index("sample")
    assert (samples["n_populations"] == 3).all() and (samples["n_cells_used"] == 75).all()
    params = a.uns["bonemet"]["parameters"]["ligand_receptor"]
    assert params["liana_version"] == liana.__version__ and params["n_perms"] == 20
    # the report writes it as tables/ligand_receptor.csv
    from bonemet.report._tables import build_tables

    tabs = build_tables(a, names=["ligand_receptor", "ligand_receptor_samples"])
    assert set(tabs) == {"ligand_receptor", "ligand_receptor_samples"}
    fig = bm.pl.ligand_receptor_dotplot(a)
    assert [ax.get_title() for ax in fig.axes[:2]] == [
        "The review's pairs",
        "Most consistent interactions",
    ]
    assert any("Spp1 → Cd44  (Osteoclast → CD8 T)" == t.get_text()
               for t in fig.axes[0].get_yticklabels())  # fmt: skip
    # pair labels are legible (8 pt) and no text overlaps another
    assert min(t.get_fontsize() for t in fig.axes[0].get_yticklabels()) >= 8
    assert bm.pl.text_overlaps(fig) == []


def test_without_liana_it_warns_and_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    import bonemet.tl._ligrec as lr

    monkeypatch.setattr(lr, "liana_available", lambda: False)
    a = _planted()
    bm.tl.ligand_receptor(a)
    res = a.uns["bonemet_ligrec"]
    assert res["status"].startswith("skipped: the optional package liana")
    assert res["table"].empty
    assert any("pip install 'bonemet[ligrec]'" in w for w in a.uns["bonemet"]["warnings"])


def test_counts_or_unknown_species_skip_with_a_warning(liana) -> None:
    a = _planted()
    a.X = np.round(np.expm1(a.X))
    bm.tl.ligand_receptor(a)
    assert "raw counts" in a.uns["bonemet_ligrec"]["status"]
    b = _planted()
    b.var_names = [f"g{i}" for i in range(b.n_vars)]
    bm.tl.ligand_receptor(b)
    assert "species could not be detected" in b.uns["bonemet_ligrec"]["status"]


def test_bad_arguments_fail_before_work(liana) -> None:
    a = _planted()
    with pytest.raises(bm.InputError, match="min_cells"):
        bm.tl.ligand_receptor(a, min_cells=50, max_cells=10)
    del a.obs["population"]
    with pytest.raises(bm.InputError, match="annotate"):
        bm.tl.ligand_receptor(a)
