"""Every curated gene-set file validates; programme lists are the referenced ones; matching."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bonemet._errors import ConfigError
from bonemet._resources import signatures_dir
from bonemet._signatures import (
    GeneSet,
    load_gene_set_file,
    load_gene_sets,
    match_genes,
)
from bonemet._species import resolve_species, species_contradiction

FILES = sorted(signatures_dir().glob("*.yaml"))

# fixed vocabularies
CELL_TYPES = {
    "T cell", "NK cell", "B cell", "Plasma cell", "Monocyte/Macrophage", "Neutrophil",
    "Dendritic cell", "Mast cell/Basophil", "Erythroid", "HSPC", "Osteoclast", "Osteoblast",
    "Stromal", "Endothelial", "Tumour epithelial", "Unassigned", "Megakaryocyte", "Chondrocyte",
    "Fibroblast", "Pericyte/Smooth muscle",
}  # fmt: skip
POPULATIONS = {
    "CD4 T", "Treg", "CD8 T", "CD8 Tpex (TCF1+)", "CD8 Tex (terminal)", "NK", "B", "Plasma",
    "Classical monocyte", "Non-classical monocyte", "Macrophage",
    "Iron-recycling macrophage (VCAM1+CD163+CCR3+)", "M-MDSC", "PMN-MDSC",
    "Immature neutrophil (CHI3L3+)", "Mature neutrophil", "cDC1", "cDC2", "pDC", "Mast/Basophil",
    "Erythroid progenitor", "HSPC", "Osteoclast", "Osteoblast", "MSC/Stromal", "Endothelial",
    "Tumour epithelial", "Unassigned", "Megakaryocyte", "Osteoprogenitor", "Chondrocyte",
    "Fibroblast", "Pericyte/Smooth muscle",
}  # fmt: skip

# a reference: DOI, PMID/PMC, or a named database with its release/identifier
SOURCE_RE = re.compile(
    r"(doi:|10\.\d{4,}/|PMID|PMC\d|KEGG|WikiPathways|FerrDb|PanglaoDB|CellMarker|MSigDB|HGNC|MGI|Ensembl)",
    re.IGNORECASE,
)


def _lists(gs: GeneSet) -> dict[str, list[str]]:
    out = {"human": gs.genes("human"), "mouse": gs.genes("mouse")}
    if gs.kind != "programme":
        out["human_negative"] = gs.genes("human", sign="negative")
        out["mouse_negative"] = gs.genes("mouse", sign="negative")
    return out


def test_there_are_files():
    assert len(FILES) >= 15, f"expected the curated gene sets in {signatures_dir()}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_file_validates(path: Path):
    gs = load_gene_set_file(path)  # schema: fields, kinds, duplicates, name == stem
    assert SOURCE_RE.search(gs.source), (
        f"{path.name}: source {gs.source!r} names no DOI/PMID/database"
    )
    assert gs.version.strip(), f"{path.name}: empty version"
    # human and mouse lists both present, or the absence explained in `missing`
    for sp in ("human", "mouse"):
        assert gs.genes(sp) or gs.missing.get(sp, "").strip(), (
            f"{path.name}: no {sp} genes and missing.{sp} does not explain why"
        )
    if gs.kind != "programme":
        allowed = CELL_TYPES if gs.kind == "lineage_marker" else POPULATIONS | CELL_TYPES
        assert gs.target in allowed, f"{path.name}: target {gs.target!r} is not in the vocabulary"
    if "proxy" in (gs.description + gs.source).lower():
        assert "proxy" in gs.notes.lower(), f"{path.name}: a proxy list needs a 'proxy: ...' note"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_symbols_look_like_their_species(path: Path):
    """Catches a human list pasted as the mouse list (and the reverse)."""
    gs = load_gene_set_file(path)
    for key, genes in _lists(gs).items():
        if not genes:
            continue
        if key.startswith("human"):
            bad = [g for g in genes if g != g.upper() and "orf" not in g]
            assert not bad, f"{path.name}: {key} symbols not in human (upper-case) style: {bad}"
        else:
            mouse_style = [g for g in genes if any(c.islower() for c in g)]
            assert len(mouse_style) >= 0.8 * len(genes), (
                f"{path.name}: {key} looks like human symbols: {genes}"
            )


KEGG = (
    "ACSL1 ACSL3 ACSL4 ACSL5 ACSL6 ALOX15 ATG5 ATG7 CP CYBB FTH1 FTL FTMT GCLC GCLM GPX4 GSS HMOX1 "
    "LPCAT3 MAP1LC3A MAP1LC3B MAP1LC3B2 MAP1LC3C NCOA4 PCBP1 PCBP2 PRNP SAT1 SAT2 SLC11A2 SLC39A14 "
    "SLC39A8 SLC3A2 SLC40A1 SLC7A11 STEAP3 TF TFRC TP53 VDAC2 VDAC3"
).split()
WP_EXTRA = (
    "AIFM2 AKR1C1 AKR1C2 AKR1C3 BACH1 CBS CHMP5 CHMP6 CISD1 COQ2 CTH DPP4 FDFT1 GCH1 HMGCR HSPB1 "
    "IREB2 NOX1 NOX4 PHKG2 POR SLC1A5 SLC38A1 TXNRD1"
).split()

EXPECTED_HUMAN = {
    # globins + haem synthesis; the erythroid-identity genes are their own set (they are the
    # erythroid lineage's markers, so they made doublets and ambient RNA read as mimicry)
    "erythroid_mimicry": (
        "HBB HBA1 HBA2 HBD ALAS1 ALAS2 ALAD HMBS UROS UROD CPOX PPOX FECH".split()
    ),
    "erythroid_mimicry_core": "HBB HBA1 HBA2".split(),
    "erythroid_identity": "KLF1 GATA1 GYPA SLC4A1 CA1 AHSP".split(),
    "haem_synthesis": "ALAS1 ALAS2 ALAD HMBS UROS UROD CPOX PPOX FECH".split(),
    "ferroptosis_kegg": KEGG,
    "ferroptosis_wp4313": [g for g in KEGG if g != "MAP1LC3B2"] + WP_EXTRA,
    "ferroptosis_driver": (
        "ACSL4 TP53 HMOX1 ALOX15 NOX4 IREB2 TFRC KEAP1 NCOA4 ALOX12 ATF3 LPCAT3 SAT1 ATG5 ATG7 "
        "SLC11A2 SLC39A14 CHAC1 POR"
    ).split(),
    "ferroptosis_suppressor": (
        "GPX4 SLC7A11 NFE2L2 FTH1 SCD FTMT SLC40A1 AIFM2 GCH1 DHODH CBS FXN LCN2 HSPB1 CISD1 MT1G "
        "SLC3A2 GCLC AKR1C1 AKR1C2 AKR1C3"
    ).split(),
    "osteoclast_activity": (
        "ACP5 CTSK MMP9 CALCR OSCAR DCSTAMP OCSTAMP ATP6V0D2 NFATC1 TNFRSF11A SIGLEC15 ITGB3 CA2 TCIRG1"
    ).split(),
    "iron_uptake": "TFRC TFR2 SLC11A2 STEAP3 SLC39A14 SLC39A8 CD163 LRP1 SLC48A1 SCARA5 LCN2".split(),
    "iron_storage": "FTH1 FTL NCOA4 IREB2 ACO1 PCBP1 FBXL5".split(),
    "iron_export": "SLC40A1 HEPH CP FLVCR1 HMOX1 SPIC HAMP".split(),
    "hypoxia": (
        "VEGFA SLC2A1 PGAM1 ENO1 LDHA TPI1 P4HA1 MRPS17 CDKN3 ADM NDRG1 TUBB6 ALDOA MIF ACOT7 "
        "BNIP3 CA9 PDK1 EGLN3 ANKRD37 PFKFB3 HK2 ERO1A"
    ).split(),
    "axis_spp1_cd44": "SPP1 CD44 ITGAV ITGB3".split(),
    "axis_dkk1_ckap4_stat6": "DKK1 CKAP4 STAT6".split(),
    "axis_tigit_pvr": "TIGIT PVR NECTIN2 CD226".split(),
    "vicious_cycle": (
        "PTHLH TGFB1 TGFB2 TNFSF11 TNFRSF11B IL11 IL19 IL20RA IL20RB JAK1 STAT3 SOCS3 FOS"
    ).split(),
}


def test_programme_sets_are_the_referenced_lists():
    sets = load_gene_sets("programme")
    assert set(EXPECTED_HUMAN) <= set(sets), (
        f"missing programmes: {set(EXPECTED_HUMAN) - set(sets)}"
    )
    for name, genes in EXPECTED_HUMAN.items():
        assert sets[name].human == genes, name
        assert sets[name].kind == "programme"
    assert len(sets["ferroptosis_kegg"].human) == 41
    assert len(sets["ferroptosis_wp4313"].human) == 64


def test_mouse_orthologues_and_their_notes():
    sets = load_gene_sets("programme")
    kegg = sets["ferroptosis_kegg"]
    assert {"Trp53", "Trf", "Ftl1"} <= set(kegg.mouse)
    assert len(kegg.mouse) == 39 and "MAP1LC3B2" in kegg.notes and "MAP1LC3C" in kegg.notes
    assert {"Hbb-bs", "Hbb-bt", "Hba-a1", "Hba-a2"} == set(sets["erythroid_mimicry_core"].mouse)
    assert "Car9" in sets["hypoxia"].mouse and "CA9" in sets["hypoxia"].notes
    assert "HBD" in sets["erythroid_mimicry"].notes  # no mouse orthologue, explained
    assert "AKR1C" in sets["ferroptosis_suppressor"].notes
    assert "Chil3" in sets["axis_dkk1_ckap4_stat6"].mouse
    # every human gene without a same-letters mouse counterpart is explained in the notes
    for name, gs in sets.items():
        mouse_upper = {g.upper() for g in gs.mouse}
        unexplained = [
            g for g in gs.human
            if g not in mouse_upper and g not in gs.notes and not any(g.startswith(p) for p in ("AKR1C",))
        ]  # fmt: skip
        assert not unexplained, (
            f"{name}: human genes without mouse counterpart or note: {unexplained}"
        )


def test_proxy_lists_say_so():
    sets = load_gene_sets("programme")
    for name in ("erythroid_mimicry", "erythroid_mimicry_core"):
        assert sets[name].notes.lower().startswith("proxy:"), name


# ---- negative: a bad file is rejected with a message naming it --------------------------
GOOD = """name: {name}
kind: programme
version: "1"
source: "PMID 1"
human: [A1, B2]
mouse: [A1a, B2b]
"""


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("name: bad_set\nkind: programme\nversion: '1'\nhuman: [A]\nmouse: [a]\n", "source"),
        (
            "name: bad_set\nkind: programme\nversion: '1'\nsource: PMID 1\nhuman: [A]\n",
            "mouse list is empty",
        ),
        (
            "name: bad_set\nkind: signature\nversion: '1'\nsource: PMID 1\nhuman: [A]\nmouse: [a]\n",
            "kind",
        ),
        (
            "name: bad_set\nkind: population_marker\nversion: '1'\nsource: PMID 1\nhuman: [A]\nmouse: [a]\n",
            "positive",
        ),
        (
            "name: bad_set\nkind: programme\nversion: '1'\nsource: PMID 1\nhuman: [A, A]\nmouse: [a]\n",
            "duplicate",
        ),
        (
            "name: other\nkind: programme\nversion: '1'\nsource: PMID 1\nhuman: [A]\nmouse: [a]\n",
            "file stem",
        ),
        (
            "name: bad_set\nkind: programme\nversion: '1'\nsource: PMID 1\nhuman: [A]\n"
            "mouse: [a]\nlineage_sets: distinct\n",
            "lineage_discriminator only",
        ),
        (
            "name: bad_set\nkind: lineage_discriminator\nversion: '1'\nsource: PMID 1\n"
            "target: T cell\nversus: NK cell\npositive: {human: [A], mouse: [a]}\n"
            "negative: {human: [B], mouse: [b]}\nlineage_sets: sometimes\n",
            "lineage_sets",
        ),
        ("- just\n- a list\n", "mapping"),
        ("name: [unclosed\n", "cannot read"),
    ],
)
def test_bad_file_is_rejected_naming_it(tmp_path: Path, text: str, fragment: str):
    p = tmp_path / "bad_set.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_gene_set_file(p)
    assert str(p) in str(e.value) and fragment in str(e.value)


def test_bad_file_among_good_ones_is_named(tmp_path: Path):
    (tmp_path / "good_one.yaml").write_text(GOOD.format(name="good_one"))
    (tmp_path / "broken.yaml").write_text(
        "name: broken\nkind: programme\nversion: '1'\nsource: x\n"
    )
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_gene_sets(directory=tmp_path)


def test_missing_species_can_be_explained(tmp_path: Path):
    p = tmp_path / "human_only.yaml"
    p.write_text(
        "name: human_only\nkind: programme\nversion: '1'\nsource: PMID 1\nhuman: [CHI3L1]\n"
        "missing: {mouse: 'no orthologue'}\n"
    )
    gs = load_gene_set_file(p)
    assert gs.genes("mouse") == [] and gs.missing["mouse"] == "no orthologue"


# ---- matching --------------------------------------------------------------------------
def test_match_is_case_robust_for_upper_cased_mouse_data():
    core = load_gene_sets("programme")["erythroid_mimicry_core"]
    var = ["HBB-BS", "HBB-BT", "HBA-A1", "ALAS2", "ACTB", "Cd8a"]
    matched, cov = match_genes(core.mouse, var)
    assert matched == ["HBB-BS", "HBB-BT", "HBA-A1"]
    assert cov == pytest.approx(3 / 4)


def test_match_prefers_exact_and_reports_coverage():
    matched, cov = match_genes(["Spp1", "CD44", "Nope"], ["SPP1", "Spp1", "Cd44"])
    assert matched == ["Spp1", "Cd44"] and cov == pytest.approx(2 / 3)
    assert match_genes([], ["A"]) == ([], 0.0)


def test_resolve_species():
    """One rule: explicit, else the species the reader recorded, else the symbols."""
    import anndata as ad
    import pandas as pd

    assert resolve_species(["CD8A"], "mouse") == "mouse"
    assert resolve_species(["mt-Co1", "mt-Nd1", "Cd8a", "Ptprc", "Actb", "Lyz2"]) == "mouse"
    assert resolve_species(["MT-CO1", "MT-ND1", "CD8A", "PTPRC", "ACTB", "LYZ"]) == "human"
    with pytest.raises(ValueError, match="species"):
        resolve_species(["A"], "zebrafish")
    # a recorded species wins over the symbols (upper-cased mouse data recorded as mouse)
    a = ad.AnnData(var=pd.DataFrame(index=["MT-CO1", "MT-ND1", "CD8A", "PTPRC", "ACTB", "LYZ"]))
    assert resolve_species(a) == "human"
    a.uns["bonemet"] = {"species": "mouse"}
    assert resolve_species(a) == "mouse"
    assert resolve_species(a, "human") == "human"
    # undecidable names: an error, or None for QC's any-case mito matching
    with pytest.raises(ValueError, match="cannot detect the species"):
        resolve_species(["A1", "B2"])
    assert resolve_species(["A1", "B2"], strict=False) is None
    # a declared species the symbols contradict is named, with what to do
    mouse = ["mt-Co1", "mt-Nd1", "Cd8a", "Ptprc", "Actb", "Lyz2", "Hbb-bs"]
    msg = species_contradiction(mouse, "human")
    assert msg and "look mouse" in msg and "'auto'" in msg
    assert species_contradiction(mouse, "mouse") is None
