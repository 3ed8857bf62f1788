"""Simulated bone-metastasis scRNA-seq data with known truth (the demo data).

:func:`simulate_bone_metastasis` draws negative-binomial UMI counts for a set of
bone-marrow samples with metastatic tumour cells. The generative model, in short:

* **Gene universe** (about 5,400 genes of the chosen species): every marker and
  signature gene of the populations below (from the curated marker sets' sources),
  13 mitochondrial genes, ribosomal protein genes, haemoglobin genes, housekeeping genes
  and real filler symbols. Fillers and their baseline expression come from 10x PBMC 4k
  (``bonemet/data/gene_universe_human.tsv.gz``); mouse fillers use the usual
  capitalisation rule, mouse markers their real mouse symbols (``Chil3``, ``Ly6g``,
  ``Hbb-bs``, ``Adgre1``, ``mt-Co1`` …).
* **Hierarchical programmes**: each population's expression profile is the baseline plus
  the programmes it belongs to, from broad to narrow (haematopoietic → myeloid →
  monocyte/macrophage → iron-recycling macrophage). Each programme uses its *core*
  markers, a seeded random *part* of its other canonical markers at varied effect sizes,
  and random non-marker genes up or down, so a lookup of canonical markers is not enough,
  while the defining biology (e.g. VCAM1/CD163/CCR3 on iron-recycling macrophages, TCF7
  on CD8 Tpex, Chil3 on immature neutrophils) is there.
* **Cell-level programmes**: within-lineage heterogeneity factors, proliferation,
  immediate-early stress genes, tumour hypoxia, tumour erythroid mimicry (haemoglobin and
  erythroid genes up, more often in hypoxic cells), erythroid maturation, and tumour DKK1
  at a per-sample level (which also raises the share of CHI3L3+/Chil3+ immature
  neutrophils, as in Shi et al. 2025).
* **Samples**: composition drawn from a Dirichlet around a base composition per
  condition (``bone_met`` or ``control`` = tumour-distal marrow with few disseminated
  tumour cells), gene-wise log-normal batch factors, per-sample library-size scale,
  ambient RNA (a mixture of the sample's cell profiles weighted towards erythroid cells,
  plus a haemoglobin component), heterotypic doublets and a few low-quality cells (high
  mitochondrial fraction, low counts).
* **Counts**: lognormal library sizes (median about 4-5k UMIs), gene-specific
  negative-binomial dispersion (gamma-Poisson) on the cell's own RNA, Poisson ambient.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError
from .._logging import logger
from .._resources import package_data_dir
from .._vocab import NOT_SIMULATED as _NOT_SIMULATED
from .._vocab import POPULATION_TO_CELL_TYPE as _VOCAB_MAP
from .._vocab import UNASSIGNED as _UNASSIGNED

__all__ = ["simulate_bone_metastasis"]

_UNIVERSE_FILE = "gene_universe_human.tsv.gz"

# --------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------


#: the populations simulated (the annotation vocabulary without "Unassigned" and without the
#: populations added later that the generator does not draw, ``_vocab.NOT_SIMULATED``)
POPULATIONS: tuple[str, ...] = tuple(
    p for p in _VOCAB_MAP if p != _UNASSIGNED and p not in _NOT_SIMULATED
)
#: their lineages (the ``cell_type`` vocabulary without "Unassigned")
CELL_TYPES: tuple[str, ...] = tuple(dict.fromkeys(_VOCAB_MAP[p] for p in POPULATIONS))
POPULATION_TO_CELL_TYPE: dict[str, str] = {p: _VOCAB_MAP[p] for p in POPULATIONS}

_TPEX = "CD8 Tpex (TCF1+)"
_TEX = "CD8 Tex (terminal)"
_IRON_MAC = "Iron-recycling macrophage (VCAM1+CD163+CCR3+)"
_IMM_NEU = "Immature neutrophil (CHI3L3+)"

# --------------------------------------------------------------------------------------
# Gene tokens: "SYMBOL" (human; mouse by capitalisation), "HUMAN|Mouse" where they
# differ, "HUMAN|" human only, "|Mouse" mouse only. A trailing "!" marks a highly
# expressed gene (a few % of a cell's UMIs, e.g. S100A8/9 in neutrophils).
# --------------------------------------------------------------------------------------

_MITO = {
    "human": [
        "MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3",
        "MT-ND3", "MT-ND4L", "MT-ND4", "MT-ND5", "MT-ND6", "MT-CYB",
    ],
    "mouse": [
        "mt-Nd1", "mt-Nd2", "mt-Co1", "mt-Co2", "mt-Atp8", "mt-Atp6", "mt-Co3",
        "mt-Nd3", "mt-Nd4l", "mt-Nd4", "mt-Nd5", "mt-Nd6", "mt-Cytb",
    ],
}  # fmt: skip

_HB = ["HBB|Hbb-bs", "HBA1|Hba-a1", "HBA2|Hba-a2", "HBD|Hbb-bt"]

_HOUSEKEEPING = [
    "ACTB", "GAPDH", "B2M", "TMSB4X", "MALAT1", "EEF1A1", "TPT1", "UBC", "UBB", "PPIA",
    "HSP90AB1", "YWHAZ", "PGK1", "TBP", "HPRT1", "RPLP0", "EEF2", "PFN1", "CFL1", "ARPC2",
]  # fmt: skip

_SIGNATURES: dict[str, list[str]] = {
    "hypoxia": [
        "VEGFA", "SLC2A1", "PGAM1", "ENO1", "LDHA", "TPI1", "P4HA1", "MRPS17", "CDKN3",
        "ADM", "NDRG1", "TUBB6", "ALDOA", "MIF", "ACOT7", "BNIP3", "CA9", "PDK1", "EGLN3",
        "ANKRD37", "HK2", "PFKFB3", "ERO1A", "HIF1A",
    ],
    "ferroptosis": [
        "ACSL4", "NCOA4", "SAT1", "GPX4", "SLC7A11", "TFRC", "SLC3A2", "LPCAT3", "CYBB",
        "ALOX15", "GCLM", "GCLC", "NFE2L2", "ATF3", "CHAC1", "SLC39A14", "STEAP3",
        "TP53|Trp53", "FTH1", "FTL|Ftl1", "PCBP1", "PCBP2", "VDAC2", "VDAC3", "ACSL1",
    ],
    "iron_export": ["FTH1", "FTL|Ftl1", "CP", "HEPH", "FLVCR1", "SLC48A1", "SLC11A1"],
    "iron_uptake": ["TFRC", "TFR2", "SLC11A2", "STEAP3", "SLC39A14", "SLC39A8", "LRP1", "LCN2"],
    "proliferation": [
        "MKI67", "TOP2A", "STMN1", "HMGB2", "CDK1", "CCNB1", "CCNB2", "UBE2C", "BIRC5",
        "CENPF", "TYMS", "PCNA", "MCM2", "MCM5", "TUBB|Tubb5", "H2AZ1|H2az1", "CKS2", "NUSAP1",
    ],
    "stress": ["FOS", "FOSB", "JUN", "JUNB", "DUSP1", "EGR1", "IER2", "ZFP36", "HSPA1A", "HSPA1B"],
    "mimicry_erythroid": ["ALAS2", "AHSP", "GYPA", "SLC4A1", "KLF1", "GATA1", "CA1|Car1"],
    "dkk1": ["DKK1"],
    "axes": ["CD44", "CKAP4", "STAT6", "TIGIT", "PVR", "NECTIN2", "CD226", "IL1B", "PTHLH",
             "TGFB1", "TNFSF11", "TNFRSF11B", "IL11", "JAK1", "STAT3", "SOCS3"],
}  # fmt: skip


@dataclass(frozen=True)
class _Prog:
    """A population-level programme: genes up (markers, with target levels) and down."""

    name: str
    members: dict[str, float]
    core: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()
    n_random: int = 12
    kind: Literal["marker", "signature"] = "marker"
    extra: dict[str, Any] = field(default_factory=dict)


def _load_programmes() -> tuple[_Prog, ...]:
    """The programme table (``bonemet/data/simulator_programmes.yaml``), in draw order."""
    import yaml

    rows = yaml.safe_load((package_data_dir() / "simulator_programmes.yaml").read_text())
    progs = []
    for r in rows:
        r = dict(r)
        for k in ("core", "optional", "negative"):
            if k in r:
                r[k] = tuple(r[k])
        if "extra" in r:
            r["extra"] = {k: tuple(v) if isinstance(v, list) else v for k, v in r["extra"].items()}
        progs.append(_Prog(**r))
    unknown = {pop for pr in progs for pop in pr.members} - set(POPULATIONS)
    if unknown:
        raise ValueError(f"simulator_programmes.yaml names unknown populations: {sorted(unknown)}")
    return tuple(progs)


_PROGRAMMES: tuple[_Prog, ...] = _load_programmes()

# Ribosomal-protein content relative to the baseline (log fold), per cell type.
_RIBO_LFC = {
    "T cell": 0.35, "NK cell": 0.1, "B cell": 0.3, "Plasma cell": -0.4,
    "Monocyte/Macrophage": -0.3, "Neutrophil": -0.9, "Dendritic cell": 0.0,
    "Mast cell/Basophil": -0.2, "Erythroid": 0.2, "HSPC": 0.5, "Osteoclast": -0.4,
    "Osteoblast": -0.2, "Stromal": -0.3, "Endothelial": -0.2, "Tumour epithelial": 0.1,
}  # fmt: skip

# Library size relative to the median cell, and mean mitochondrial fraction.
_LIB_FACTOR = {
    "T cell": 0.75, "NK cell": 0.8, "B cell": 0.8, "Plasma cell": 1.7,
    "Monocyte/Macrophage": 1.15, "Neutrophil": 0.55, "Dendritic cell": 1.2,
    "Mast cell/Basophil": 1.0, "Erythroid": 0.9, "HSPC": 1.2, "Osteoclast": 1.8,
    "Osteoblast": 1.5, "Stromal": 1.4, "Endothelial": 1.2, "Tumour epithelial": 2.0,
}  # fmt: skip
_MITO_MEAN = {
    "T cell": 0.040, "NK cell": 0.040, "B cell": 0.035, "Plasma cell": 0.045,
    "Monocyte/Macrophage": 0.050, "Neutrophil": 0.025, "Dendritic cell": 0.045,
    "Mast cell/Basophil": 0.040, "Erythroid": 0.025, "HSPC": 0.040, "Osteoclast": 0.060,
    "Osteoblast": 0.055, "Stromal": 0.055, "Endothelial": 0.050, "Tumour epithelial": 0.065,
}  # fmt: skip
# Probability that a cell of the cell type is cycling.
_CYCLING = {
    "Tumour epithelial": 0.3, "HSPC": 0.35, "Erythroid": 0.45, "Plasma cell": 0.1,
    "Neutrophil": 0.04, "T cell": 0.03, "B cell": 0.05, "NK cell": 0.03,
}  # fmt: skip

# Base composition (relative weights) of a bone-metastatic marrow and of a
# tumour-distal ("control") marrow. Normalised to fractions.
_BASE_COMPOSITION = {
    "bone_met": {
        "CD4 T": 3.0, "Treg": 1.2, "CD8 T": 2.8, _TPEX: 1.0, _TEX: 2.2, "NK": 2.0, "B": 6.5,
        "Plasma": 1.2, "Classical monocyte": 6.0, "Non-classical monocyte": 2.0,
        "Macrophage": 5.0, _IRON_MAC: 0.9, "M-MDSC": 3.0, "PMN-MDSC": 4.5, _IMM_NEU: 3.0,
        "Mature neutrophil": 15.0, "cDC1": 0.7, "cDC2": 1.3, "pDC": 1.0, "Mast/Basophil": 0.8,
        "Erythroid progenitor": 8.0, "HSPC": 2.0, "Osteoclast": 1.4, "Osteoblast": 1.2,
        "MSC/Stromal": 1.8, "Endothelial": 1.3, "Tumour epithelial": 14.0,
    },
    "control": {
        "CD4 T": 3.5, "Treg": 0.9, "CD8 T": 3.4, _TPEX: 1.3, _TEX: 1.0, "NK": 2.2, "B": 8.5,
        "Plasma": 1.2, "Classical monocyte": 7.0, "Non-classical monocyte": 2.2,
        "Macrophage": 4.5, _IRON_MAC: 0.6, "M-MDSC": 1.4, "PMN-MDSC": 1.8, _IMM_NEU: 1.3,
        "Mature neutrophil": 20.0, "cDC1": 0.8, "cDC2": 1.4, "pDC": 1.2, "Mast/Basophil": 0.8,
        "Erythroid progenitor": 15.0, "HSPC": 2.6, "Osteoclast": 0.8, "Osteoblast": 1.2,
        "MSC/Stromal": 1.8, "Endothelial": 1.3, "Tumour epithelial": 1.2,
    },
}  # fmt: skip

_SPECIES = ("human", "mouse")


# --------------------------------------------------------------------------------------
# Gene universe
# --------------------------------------------------------------------------------------


def _to_mouse(symbol: str) -> str:
    """Human → mouse symbol by the usual capitalisation rule (``CD8A`` → ``Cd8a``)."""
    if symbol.upper().startswith("MT-"):
        return "mt-" + symbol[3:].capitalize()
    return symbol[:1].upper() + symbol[1:].lower()


def _parse_token(token: str, species: str) -> tuple[str | None, str | None, bool]:
    """Return (symbol for ``species`` or None, human symbol or None, high?)."""
    high = token.endswith("!")
    token = token.rstrip("!")
    if "|" in token:
        human, mouse = token.split("|")
        sym = human if species == "human" else mouse
        return (sym or None), (human or None), high
    return (token if species == "human" else _to_mouse(token)), token, high


def _read_universe_file() -> pd.DataFrame:
    path = package_data_dir() / _UNIVERSE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"bonemet's gene-universe file {path} is missing: reinstall bonemet "
            "(pip install -e .) or rebuild it with bonemet.datasets._simulate._build_gene_universe"
        )
    with gzip.open(path, "rt") as fh:
        return pd.read_csv(fh, sep="\t", comment="#")


_RIBO_RE = re.compile(r"^RP[LS]\d+[AXL]?\d?$|^RPLP[0-2]$|^RPSA$")
_HUMAN_ONLY_RE = re.compile(r"^(RPS4Y|RPL3L|XIST|UTY|DDX3Y|EIF1AY|KDM5D|ZFY|CYP\dA\d+)")


@dataclass
class _Universe:
    genes: list[str]
    role: np.ndarray  # str per gene: marker, signature, housekeeping, ribo, mito, hb, filler
    base: np.ndarray  # natural-log baseline weight


def _gene_universe(species: str, rng: np.random.Generator) -> _Universe:
    table = _read_universe_file()
    pbmc = dict(zip(table["symbol"], table["log10_mean_fraction"] * np.log(10)))
    seen: set[str] = set()
    genes: list[str] = []
    role: list[str] = []
    base: list[float] = []
    human_taken: set[str] = set()

    def add(sym: str | None, human: str | None, r: str, b: float) -> None:
        if human:
            human_taken.add(human)
        if sym is None or sym in seen:
            return
        seen.add(sym)
        genes.append(sym)
        role.append(r)
        base.append(b)

    # mitochondrial genes: relative weights from PBMC
    for h, s in zip(_MITO["human"], _MITO[species]):
        add(s, h, "mito", pbmc.get(h, np.log(1e-4)))
    for tok in _HB:
        s, h, _ = _parse_token(tok, species)
        add(s, h, "hb", np.log(2e-6))
    # population markers: low baseline outside their programmes
    for prog in _PROGRAMMES:
        if prog.kind != "marker":
            continue
        for tok in (*prog.core, *prog.optional, *prog.negative):
            s, h, _ = _parse_token(tok, species)
            add(s, h, "marker", float(np.log(1e-6) + rng.normal(0, 0.5)))
    # signature genes: baseline from PBMC where known, else moderate-low
    sig_tokens = [t for v in _SIGNATURES.values() for t in v]
    sig_tokens += [t for p in _PROGRAMMES if p.kind == "signature" for t in p.optional]
    for tok in sig_tokens:
        s, h, _ = _parse_token(tok, species)
        b = pbmc.get(h) if h else None
        add(s, h, "signature", float(b if b is not None else np.log(1.5e-5) + rng.normal(0, 0.5)))
    for tok in _HOUSEKEEPING:
        s, h, _ = _parse_token(tok, species)
        add(s, h, "housekeeping", float(pbmc.get(h, np.log(2e-4))))
    # fillers (incl. ribosomal genes) in PBMC order
    for h, b in zip(table["symbol"], table["log10_mean_fraction"] * np.log(10)):
        if h.startswith("MT-") or h in human_taken:
            continue
        if species == "mouse" and _HUMAN_ONLY_RE.match(h):
            continue
        s = h if species == "human" else _to_mouse(h)
        add(s, h, "ribo" if _RIBO_RE.match(h) else "filler", float(b))
    return _Universe(genes=genes, role=np.asarray(role), base=np.asarray(base, dtype=np.float64))


def _build_gene_universe(
    h5ad: str | Path = "../shared/data/pbmc4k_soupx.h5ad", *, n_genes: int = 5400
) -> Path:
    """Rebuild ``bonemet/data/gene_universe_human.tsv.gz`` from 10x PBMC 4k counts.

    Keeps the ``n_genes`` protein-coding-looking symbols with the highest mean fraction of
    a cell's UMIs (no Ensembl ids, LINC/clone-based names, antisense, ORFs, HLA/KIR/LILR,
    ZNF or olfactory families) plus the 13 mitochondrial genes. Maintainer tool; not used
    at run time.
    """
    import anndata as ad

    adata = ad.read_h5ad(h5ad)
    X = sp.csr_matrix(adata.X, dtype=np.float64)
    total = np.asarray(X.sum(1)).ravel()
    mean = np.asarray((sp.diags(1 / np.maximum(total, 1)) @ X).mean(0)).ravel()
    names = np.asarray(adata.var_names)
    ok_re = re.compile(r"^[A-Z][A-Z0-9]{1,9}$")
    bad_re = re.compile(
        r"^(ENSG|LINC|LOC|AC\d|AL\d|AP\d|RP\d|CT[AB]|KIAA|FAM\d|ZNF|OR\d|HLA|KIR|LILR|MIR|SNOR|"
        r"SCARNA|TRAV|TRBV|TRGV|TRDV|IGHV|IGKV|IGLV|RNU|RNA5|HIST)|ORF"
    )
    ok = np.array([bool(ok_re.match(g)) and not bad_re.search(g) for g in names])
    order = np.argsort(-np.where(ok, mean, -1.0))[:n_genes]
    mito = [i for i, g in enumerate(names) if g.startswith("MT-")]
    out = package_data_dir() / _UNIVERSE_FILE
    with gzip.open(out, "wt") as fh:
        fh.write("# Human gene symbols and mean fraction of UMIs per cell (log10) in 10x PBMC 4k\n")
        fh.write(
            "# (pbmc4k_soupx.h5ad, 2,170 cells, GRCh38 symbols). "
            "Built by bonemet.datasets._simulate._build_gene_universe.\n"
        )
        fh.write("symbol\tlog10_mean_fraction\n")
        for i in [*order, *mito]:
            fh.write(f"{names[i]}\t{np.log10(max(mean[i], 1e-9)):.3f}\n")
    return out


# --------------------------------------------------------------------------------------
# Population profiles
# --------------------------------------------------------------------------------------


def _annotator_sets(species: str) -> dict[str, set[str]]:
    """Per marker set ``bm.tl.annotate`` reads for ``species`` (lineage, population and
    discriminator sets): the upper-cased symbols of its positive, negative and shared
    genes."""
    from .._signatures import load_gene_sets

    sets = load_gene_sets(("lineage_marker", "population_marker", "lineage_discriminator"))
    out = {
        name: {
            g.upper()
            for sign in ("positive", "negative", "shared")
            for g in s.genes(species, sign=sign)  # type: ignore[arg-type]
        }
        for name, s in sets.items()
    }
    return {k: v for k, v in out.items() if v}


def _annotator_genes(species: str) -> set[str]:
    """Upper-cased symbols of every gene ``bm.tl.annotate`` reads for ``species`` (positive,
    negative and shared genes of the lineage, population and discriminator marker sets)."""
    return set().union(*_annotator_sets(species).values())


def _held_out_half(
    cand: list[str],
    sets: dict[str, set[str]],
    hold_rng: np.random.Generator,
    n_draws: int = 2048,
) -> list[str]:
    """A seeded half of ``cand`` (a programme's annotator-read genes) to hold out, balanced
    per marker set as well as over the programme.

    Of ``n_draws`` seeded random halves of the programme (an odd count rounds either way),
    the one kept is the one that leaves fewest marker sets of two or more genes wholly
    held out or wholly planted there (a population set, what a named state rests on,
    counting ten times a lineage or discriminator set), then the one whose sets are
    nearest half. A draw over the programme alone could hold out every gene of a short
    set (both PD-1/TOX genes of a required exhaustion set), which no marker reader could
    then see; that would measure the generator, not the annotator.
    """
    n = len(cand)
    if n == 0:
        return []
    up = [g.upper() for g in cand]
    touched = [
        (np.array([u in genes for u in up]), name.startswith("population_"))
        for name, genes in sets.items()
    ]
    touched = [t for t in touched if t[0].any()]
    member = np.array([m for m, _ in touched] + [np.ones(n, dtype=bool)], dtype=float).T
    whole_cost = np.array([10.0 if pop else 1.0 for _, pop in touched] + [1.0])
    size = member.sum(axis=0)
    n_hold = n // 2 + (hold_rng.random(n_draws) < 0.5) * (n % 2)
    order = hold_rng.random((n_draws, n)).argsort(axis=1)
    held = order < n_hold[:, None]  # each row: a random set of n_hold genes
    h = held.astype(float) @ member  # held genes per set, per draw
    wholly = ((h == 0) | (h == size)) & (size >= 2)
    cost = (wholly * whole_cost).sum(axis=1) + (np.abs(h - size / 2) / size).sum(axis=1) / 100
    best = held[int(np.argmin(cost))]
    return [c for c, x in zip(cand, best) if x]


def _held_apart_swaps(
    uni: _Universe, species: str, hold_rng: np.random.Generator
) -> tuple[dict[str, dict[str, str]], np.ndarray]:
    """Per marker programme: the annotator-read genes held out -> the private gene that
    takes each one's slot; and the universe's baseline with the private genes made
    marker-like (silent outside their programme)."""
    sets = _annotator_sets(species)
    read = set().union(*sets.values())
    base = uni.base.copy()
    fill = np.flatnonzero(uni.role == "filler")
    # private genes: fillers the annotator never reads, from the less expressed half, so
    # that like a marker they stand out where their programme plants them
    fill = fill[[uni.genes[g].upper() not in read for g in fill]]
    fill = fill[base[fill] <= np.median(base[fill])]
    pool = list(hold_rng.permutation(fill))
    swaps: dict[str, dict[str, str]] = {}
    for prog in _PROGRAMMES:
        if prog.kind != "marker":
            continue
        syms = [_parse_token(t, species)[0] for t in (*prog.core, *prog.optional)]
        cand = list(dict.fromkeys(s for s in syms if s is not None and s.upper() in read))
        sw: dict[str, str] = {}
        for s in _held_out_half(cand, sets, hold_rng):
            g = int(pool.pop())
            base[g] = float(np.log(1e-6) + hold_rng.normal(0, 0.5))
            sw[s] = uni.genes[g]
        swaps[prog.name] = sw
    return swaps, base


def _population_profiles(
    uni: _Universe,
    species: str,
    rng: np.random.Generator,
    hold_rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, dict[str, list[str]], dict[str, list[str]], dict[str, dict[str, str]]]:
    """Log-weights (populations × genes), the marker genes each programme used and left
    out, and (``hold_rng`` given: held-apart programmes) each programme's held-out
    annotator genes -> the private genes planted in their place."""
    G = len(uni.genes)
    P = len(POPULATIONS)
    gidx = {g: i for i, g in enumerate(uni.genes)}
    pidx = {p: i for i, p in enumerate(POPULATIONS)}
    fold = np.ones((P, G))  # linear-scale up-regulation (programmes add up, saturating)
    down = np.zeros((P, G))  # log-scale down-regulation
    filler_pool = np.flatnonzero(uni.role == "filler")
    used: dict[str, list[str]] = {}
    unused: dict[str, list[str]] = {}
    swaps: dict[str, dict[str, str]] = {}
    base = uni.base
    if hold_rng is not None:
        swaps, base = _held_apart_swaps(uni, species, hold_rng)

    def target_lfc(g: int, lo: float, hi: float, r: np.random.Generator = rng) -> float:
        return float(np.log(np.exp(r.uniform(np.log(lo), np.log(hi)))) - base[g])

    for prog in _PROGRAMMES:
        lfc: dict[int, float] = {}
        high_genes: set[int] = set()
        neg: dict[int, float] = {}
        names_used: list[str] = []
        names_unused: list[str] = []
        sw = swaps.get(prog.name, {})
        dkeys: set[int] = set()  # the genes the default mode would raise
        if prog.kind == "marker":
            for tok in prog.core:
                s, _, high = _parse_token(tok, species)
                if s is None:
                    continue
                dkeys.add(gidx[s])
                if s in sw:  # held apart: a private gene takes the slot
                    names_unused.append(s)
                    s = sw[s]
                lo, hi = prog.extra.get("high", (6e-3, 3e-2)) if high else (2e-4, 2e-3)
                lfc[gidx[s]] = max(target_lfc(gidx[s], lo, hi), 1.0)
                if high:
                    high_genes.add(gidx[s])
                names_used.append(s)
            core_syms = {_parse_token(t, species)[0] for t in prog.core}
            opts = [_parse_token(t, species) for t in prog.optional]
            opts = [o for o in opts if o[0] is not None and o[0] not in core_syms]
            # a seeded random part of the canonical markers, at varied effect sizes
            keep = rng.random(len(opts)) < rng.uniform(0.4, 0.7)
            if opts and not keep.any() and not prog.core:
                keep[rng.integers(len(opts))] = True
            for (s, _, high), k in zip(opts, keep):
                if not k and hold_rng is None:
                    names_unused.append(s)
                    continue
                if k:
                    dkeys.add(gidx[s])
                if s in sw:
                    names_unused.append(s)
                    s = sw[s]
                lo, hi = prog.extra.get("high", (3e-3, 2e-2)) if high else (5e-5, 1e-3)
                # held apart, the half left out is the only omission; genes the default
                # mode drops draw their level from the held-apart generator, so that the
                # main stream (and all else) stays as in the default mode
                r = rng if k else hold_rng
                lfc[gidx[s]] = max(target_lfc(gidx[s], lo, hi, r), 0.7)
                if high:
                    high_genes.add(gidx[s])
                names_used.append(s)
        else:
            frac = prog.extra.get("frac", 0.7)
            for tok in prog.optional:
                s, _, _ = _parse_token(tok, species)
                if s is None:
                    continue
                if rng.random() < frac:
                    lfc[gidx[s]] = rng.uniform(0.6, 1.8)
                    names_used.append(s)
                else:
                    names_unused.append(s)
        for tok in prog.negative:
            s, _, _ = _parse_token(tok, species)
            if s is not None:
                neg[gidx[s]] = -rng.uniform(1.5, 3.0)
        # random non-marker genes, up and down
        if prog.n_random:
            rnd = rng.choice(filler_pool, size=prog.n_random, replace=False)
            sign = np.where(rng.random(prog.n_random) < 0.6, 1.0, -1.0)
            # identity programmes (many genes) shift more strongly than sub-states
            top = 3.0 if prog.n_random >= 60 else 2.6
            for g, sg, mag in zip(rnd, sign, rng.uniform(0.4, top, prog.n_random)):
                if sg > 0:
                    lfc.setdefault(int(g), mag)
                    dkeys.add(int(g))
                else:
                    neg.setdefault(int(g), -mag)
        idx = np.fromiter(lfc.keys(), dtype=np.int64, count=len(lfc))
        val = np.fromiter(lfc.values(), dtype=np.float64, count=len(lfc))
        nidx = np.fromiter(neg.keys(), dtype=np.int64, count=len(neg))
        nval = np.fromiter(neg.values(), dtype=np.float64, count=len(neg))
        for pop, w in prog.members.items():
            # per-population jitter of the shared programme (members are not identical)
            held = hold_rng is not None and prog.kind == "marker"
            jit = rng.normal(0, 0.15, len(dkeys) if held else len(idx))
            if held:  # the main stream draws as in the default mode
                jit = np.r_[jit, hold_rng.normal(0, 0.15, max(len(idx) - len(jit), 0))]
                jit = jit[: len(idx)]
            fold[pidx[pop], idx] += w * (np.exp(val + jit) - 1.0)
            down[pidx[pop], nidx] += w * nval
        # sub-state programmes leak into sibling states of the same cell type at a low
        # level (markers are rarely all-or-none between closely related states)
        is_high = np.isin(idx, list(high_genes))
        cts = {POPULATION_TO_CELL_TYPE[p] for p in prog.members}
        if len(cts) == 1:
            (ct,) = cts
            for sib in POPULATIONS:
                if POPULATION_TO_CELL_TYPE[sib] == ct and sib not in prog.members:
                    w = rng.uniform(0.02, 0.12) * np.where(is_high, 0.15, 1.0)
                    fold[pidx[sib], idx] += w * (np.exp(val) - 1.0)
        used[prog.name] = names_used
        unused[prog.name] = names_unused

    eta = base[None, :] + np.log(fold) + down
    # ribosomal content per cell type, and a little population-specific noise everywhere
    ribo = uni.role == "ribo"
    for pop, p in pidx.items():
        eta[p, ribo] += _RIBO_LFC[POPULATION_TO_CELL_TYPE[pop]]
    eta += rng.normal(0, 0.1, eta.shape)
    eta[:, uni.role == "mito"] = -np.inf  # mitochondrial share is set per cell
    return eta, used, unused, swaps


# --------------------------------------------------------------------------------------
# Cell-level programmes (loadings; scores per cell)
# --------------------------------------------------------------------------------------


@dataclass
class _CellProgrammes:
    names: list[str]
    loadings: np.ndarray  # K × G (natural-log fold per unit score)


def _cell_programmes(uni: _Universe, species: str, rng: np.random.Generator) -> _CellProgrammes:
    G = len(uni.genes)
    gidx = {g: i for i, g in enumerate(uni.genes)}
    filler_pool = np.flatnonzero(uni.role == "filler")
    names: list[str] = []
    rows: list[np.ndarray] = []

    def genes_of(tokens: list[str]) -> list[int]:
        out = []
        for t in tokens:
            s, _, _ = _parse_token(t, species)
            if s is not None and s in gidx:
                out.append(gidx[s])
        return out

    def add(name: str, idx: list[int] | np.ndarray, val: np.ndarray | float) -> None:
        row = np.zeros(G)
        row[np.asarray(idx, dtype=np.int64)] = val
        names.append(name)
        rows.append(row)

    # within-lineage heterogeneity: two factors per cell type
    for ct in CELL_TYPES:
        for k in range(2):
            idx = rng.choice(filler_pool, size=40, replace=False)
            add(f"het:{ct}:{k}", idx, rng.normal(0, 0.35, 40))
    idx = genes_of(_SIGNATURES["proliferation"])
    add("proliferation", idx, rng.uniform(1.8, 3.2, len(idx)))
    idx = genes_of(_SIGNATURES["stress"])
    add("stress", idx, rng.uniform(1.0, 2.5, len(idx)))
    idx = genes_of(_SIGNATURES["hypoxia"])
    add("hypoxia", idx, rng.uniform(0.6, 1.8, len(idx)))
    # erythroid mimicry: haemoglobin strongly, some erythroid genes moderately
    hb = genes_of(_HB)
    ery = genes_of(_SIGNATURES["mimicry_erythroid"])
    ery = list(rng.choice(ery, size=max(3, len(ery) // 2 + 1), replace=False))
    row_idx = hb + ery
    add("mimicry", row_idx, np.r_[rng.uniform(7.6, 8.6, len(hb)), rng.uniform(3.0, 5.0, len(ery))])
    # erythroid maturation (score from -1 to 1): Hb and late genes up, early genes down
    late = genes_of([*_HB, "ALAS2", "SLC4A1", "GYPA"])
    early = genes_of(["KIT", "GATA2", "CD34", "MKI67", "TFRC"])
    add(
        "erythroid_maturation",
        late + early,
        np.r_[np.full(len(late), 1.6), np.full(len(early), -1.2)],
    )
    add("dkk1", genes_of(["DKK1"]), 2.2)
    return _CellProgrammes(names=names, loadings=np.vstack(rows))


#: haem biosynthesis (WikiPathways WP561; ALAS2, the erythroid ALA synthase, is a marker)
_HAEM = ["ALAS1", "ALAD", "HMBS", "UROS", "UROD", "CPOX", "PPOX", "FECH"]
#: populations that carry the TIGIT ligands PVR (CD155) and NECTIN2 (CD112), and their weight
_TIGIT_LIGAND_POPS = {
    "Classical monocyte": 1.0, "Non-classical monocyte": 1.0, "Macrophage": 1.0,
    _IRON_MAC: 1.0, "M-MDSC": 1.0, "PMN-MDSC": 0.5, "cDC1": 1.0, "cDC2": 1.0,
    "Tumour epithelial": 1.0,
}  # fmt: skip


def _add_haem_and_tigit(
    uni: _Universe,
    eta: np.ndarray,
    cprog: _CellProgrammes,
    theta: np.ndarray,
    batch: np.ndarray,
    species: str,
    rng: np.random.Generator,
) -> tuple[_Universe, np.ndarray, _CellProgrammes, np.ndarray, np.ndarray]:
    """Haem synthesis, ALAS2, TIGIT and its ligands, added after every other draw.

    The haem-synthesis genes missing from the universe are appended as its last genes;
    their levels, and every change below, come from ``rng`` (a generator of their own), so
    the cells, populations and programmes drawn before stay as they were. Erythroid
    progenitors make haem for their globins: the haem enzymes 5-15x, ALAS2 (the erythroid
    ALA synthase) at 0.05-0.2 % of UMIs at least; the mimicry programme raises the haem
    enzymes moderately (2-3x at a score of 1). TIGIT on terminally exhausted CD8 T cells
    and Tregs (0.03-0.1 % of UMIs at least); PVR and NECTIN2 2-5x on myeloid and tumour
    cells.
    """
    gidx = {g: i for i, g in enumerate(uni.genes)}
    pidx = {p: i for i, p in enumerate(POPULATIONS)}
    syms = [_parse_token(t, species)[0] for t in _HAEM]
    new = [s for s in syms if s not in gidx]
    if new:
        n = len(new)
        base_new = np.log(3e-5) + rng.normal(0, 0.3, n)
        uni = _Universe(
            genes=[*uni.genes, *new],
            role=np.r_[uni.role, np.full(n, "signature")],
            base=np.r_[uni.base, base_new],
        )
        eta = np.c_[eta, base_new[None, :] + rng.normal(0, 0.1, (eta.shape[0], n))]
        cprog = _CellProgrammes(
            names=cprog.names, loadings=np.c_[cprog.loadings, np.zeros((len(cprog.names), n))]
        )
        theta = np.r_[theta, np.clip(np.exp(rng.normal(np.log(8.0), 0.8, n)), 0.2, 200.0)]
        batch = np.c_[batch, rng.normal(0, 0.1, (batch.shape[0], n))]
        gidx = {g: i for i, g in enumerate(uni.genes)}
    eta = eta.copy()
    finite = np.isfinite(eta)
    # log share of a gene in each population's profile (mitochondrial genes set apart)
    lse = np.log(np.sum(np.exp(np.where(finite, eta, -np.inf)), axis=1))

    def at_least(pop: str, sym: str, lo: float, hi: float) -> None:
        p, g = pidx[pop], gidx[sym]
        eta[p, g] = max(eta[p, g], lse[p] + np.log(rng.uniform(lo, hi)))

    haem = [gidx[s] for s in syms]
    ery = pidx["Erythroid progenitor"]
    eta[ery, haem] += np.log(rng.uniform(5.0, 15.0, len(haem)))
    alas2 = _parse_token("ALAS2", species)[0]
    at_least("Erythroid progenitor", alas2, 5e-4, 2e-3)
    loadings = cprog.loadings.copy()
    loadings[cprog.names.index("mimicry"), haem] = rng.uniform(0.6, 1.2, len(haem))
    cprog = _CellProgrammes(names=cprog.names, loadings=loadings)
    tigit = _parse_token("TIGIT", species)[0]
    for pop in (_TEX, "Treg"):
        at_least(pop, tigit, 3e-4, 1e-3)
    for tok in ("PVR", "NECTIN2"):
        g = gidx[_parse_token(tok, species)[0]]
        for pop, w in _TIGIT_LIGAND_POPS.items():
            eta[pidx[pop], g] += np.log1p(w * (rng.uniform(2.0, 5.0) - 1.0))
    return uni, eta, cprog, theta, batch


# --------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------


def _barcodes(n: int, rng: np.random.Generator) -> np.ndarray:
    alphabet = np.array(list("ACGT"))
    out: np.ndarray = np.array([], dtype=object)
    while len(out) < n:
        codes = rng.integers(0, 4, size=(n - len(out), 16))
        new = np.array(["".join(r) + "-1" for r in alphabet[codes]], dtype=object)
        out = pd.unique(np.concatenate([out, new]))
    return np.asarray(out[:n], dtype=object)


def _sample_counts_chunk(
    lam: np.ndarray,
    theta: np.ndarray,
    rng: np.random.Generator,
    *,
    ambient: tuple[np.ndarray, np.ndarray] | None = None,
) -> sp.csr_matrix:
    """Gamma-Poisson (negative-binomial) counts for a chunk of cells, as CSR.

    ``lam`` (cells × genes, float32) holds the expected counts of the cells' own RNA; it
    is modified in place. Each entry gets gamma noise of gene-wise shape ``theta``
    (mean 1, variance ``1/theta``), which makes the counts NB(mean, theta).
    ``ambient`` = (ambient UMIs per cell, ambient profile per cell) adds ambient RNA as
    plain Poisson counts. Returns float32, integer-valued CSR with sorted indices.
    """
    n, G = lam.shape
    th = np.broadcast_to(theta.astype(np.float32), (n, G))
    noise = rng.standard_gamma(th, dtype=np.float32)
    noise *= (1.0 / theta).astype(np.float32)[None, :]
    lam *= noise
    del noise
    if ambient is not None:
        amb_umis, amb_prof = ambient
        lam += amb_umis[:, None] * amb_prof
    counts = rng.poisson(lam)
    nz = np.flatnonzero(counts)
    rows = nz // G
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    data = counts.ravel()[nz].astype(np.float32)
    return sp.csr_matrix((data, (nz % G).astype(np.int32), indptr), shape=(n, G))


def simulate_bone_metastasis(
    n_cells: int = 20000,
    n_samples: int = 4,
    *,
    species: Literal["human", "mouse"] = "mouse",
    seed: int = 0,
    doublet_rate: float = 0.03,
    ambient: float = 0.03,
    low_quality_rate: float = 0.02,
    median_counts: float = 5000.0,
    n_batches: int | None = None,
    de_population: str | None = None,
    de_genes: int = 0,
    de_lfc: float = 1.5,
    programmes: Literal["annotator", "held_apart"] = "annotator",
) -> Any:
    """Simulate raw UMI counts of bone-metastatic and control marrow samples.

    Negative-binomial counts with known truth for 27 populations (the annotation
    vocabulary), hierarchical marker programmes that use only part of each population's
    canonical markers, per-sample composition shifts, batch effects, ambient RNA with a
    haemoglobin component, heterotypic doublets and low-quality cells. Same ``seed`` →
    identical data.

    Parameters
    ----------
    n_cells
        Total number of cells (droplets, including doublets and low-quality cells).
    n_samples
        Number of samples (``bm01``, ``bm02`` …). With two or more, the first half
        (rounded up) are ``bone_met`` and the rest ``control`` (tumour-distal marrow
        with few disseminated tumour cells).
    species
        ``"mouse"`` (symbols such as ``Cd8a``, ``Chil3``, ``Hbb-bs``, ``mt-Co1``) or
        ``"human"`` (``CD8A``, ``CHI3L1``, ``HBB``, ``MT-CO1``).
    seed
        Seed of the random generator.
    doublet_rate
        Fraction of droplets that are heterotypic doublets (two cells of different cell
        types, from the same sample); ``obs["true_doublet"]``. A doublet keeps the
        ``true_population`` of its first cell; leave doublets out when scoring annotation.
    ambient
        Mean fraction of a droplet's UMIs that come from the sample's ambient RNA (which
        carries a haemoglobin component). Varies by sample and cell.
    low_quality_rate
        Fraction of damaged cells (low counts, 20–60 % mitochondrial);
        ``obs["true_low_quality"]``.
    median_counts
        Approximate median UMIs per cell before per-sample scaling.
    n_batches
        ``None`` (default): every sample has its own gene-wise batch factors. An integer:
        the samples are processed in ``n_batches`` batches that cross condition (the
        samples of each condition are dealt to the batches in turn), each batch with its
        own gene-wise factors and every sample with a smaller residual of its own; the
        batch is written to ``obs["batch"]``. Condition is then not confounded with batch,
        so a design ``~ batch + condition`` can separate them.
    de_population
        A population (one of the 27) whose expression differs between conditions in
        ``de_genes`` planted genes: half up, half down by ``de_lfc`` (natural-log scale ×
        1/ln 2 = log2 fold change ``de_lfc``) in ``bone_met`` against ``control``; the
        genes and their signed log2 fold changes are in
        ``uns["bonemet_simulation"]["planted_de"]``. Every other gene and population is
        a null for differential expression.
    de_genes
        Number of planted DE genes (0: none).
    de_lfc
        Absolute log2 fold change of the planted DE genes.
    programmes
        How population programmes pick their genes. ``"annotator"`` (default): from the
        canonical marker lists, which are also the lists ``bm.tl.annotate`` reads (core
        genes always, a seeded 40-70 % of the others), so annotation accuracy on such data
        is optimistic. ``"held_apart"``: validation that is not circular. In each marker
        programme the genes the annotator reads (any lineage, population or discriminator
        marker set, positive, negative or shared) are split by a seeded draw, balanced
        per marker set so that no set the programme touches (a short required set such as
        PD-1/TOX too) is wholly held out or wholly planted there where a half avoids it:
        one half is
        planted, the other half is **not** up-regulated, and each gene left out hands its
        slot (core or not, its level and effect-size draw) to a *private* gene: a filler
        symbol the annotator never reads, given a marker-like silent baseline. Signal
        strength per programme is therefore the same, but only half of the annotator's
        markers for a population carry it; the annotator has to recognise a population by
        the half it can see (and by the structure the private genes give the embedding).
        Programme genes the annotator does not read are planted as usual, every planted
        gene of the kept half at full membership (no further random omission). The split
        and the extra genes' levels use their own generator (seeded from ``seed``), so the
        cells (samples, populations, composition, batch factors) are those of the default
        mode with the same ``seed``; only the programmes' genes differ.
        ``uns["bonemet_simulation"]["held_apart"]`` lists, per programme, the genes held
        out and the private genes that took their places.

    Returns
    -------
    AnnData
        Raw counts in ``X`` (CSR, float32, integer-valued); ``var_names`` unique gene
        symbols; ``obs_names`` ``<sample>_<barcode>``. ``obs`` columns: ``sample``,
        ``condition``, ``true_population``, ``true_cell_type``, ``true_doublet``,
        ``true_erythroid_mimicry``, ``true_hypoxic``, ``true_low_quality``,
        ``true_globin_own`` and ``true_globin_ambient`` (expected globin UMIs of the
        droplet's own RNA and of its ambient RNA, before counting noise) (and ``batch``
        with ``n_batches``). ``uns["bonemet_simulation"]["expected_composition"]``: each
        population's expected share of a sample's cells per condition (the planted
        abundance truth; samples vary around it).
        ``uns["bonemet_simulation"]``: the parameters, per-sample parameters, and the
        marker genes each programme used (``markers_used``) or left out
        (``markers_unused``); with ``programmes="held_apart"`` also ``held_apart``
        (programme -> ``held_out`` and ``private`` genes, in slot order).

    Examples
    --------
    >>> import bonemet as bm
    >>> adata = bm.datasets.simulate_bone_metastasis(2000, 2, species="human", seed=1)
    """
    import anndata as ad

    if species not in _SPECIES:
        raise InputError(f"species must be 'human' or 'mouse', not {species!r}")
    n_cells, n_samples = int(n_cells), int(n_samples)
    if n_samples < 1:
        raise InputError(f"n_samples must be at least 1, not {n_samples}")
    if n_cells < 30 * n_samples:
        raise InputError(
            f"n_cells={n_cells} is too few for {n_samples} samples: ask for at least "
            f"{30 * n_samples} cells (30 per sample)"
        )
    for name, val, hi in (("doublet_rate", doublet_rate, 0.5), ("ambient", ambient, 0.5),
                          ("low_quality_rate", low_quality_rate, 0.5)):  # fmt: skip
        if not 0.0 <= float(val) < hi:
            raise InputError(f"{name} must be in [0, {hi}), not {val}")
    if not median_counts > 100:
        raise InputError(f"median_counts must be above 100, not {median_counts}")
    if n_batches is not None and not 1 <= int(n_batches) <= n_samples:
        raise InputError(
            f"n_batches must be between 1 and n_samples ({n_samples}), not {n_batches}"
        )
    if de_genes and de_population not in POPULATIONS:
        raise InputError(
            f"de_population must be one of the simulated populations ({', '.join(POPULATIONS)}), "
            f"not {de_population!r}"
        )
    if int(de_genes) < 0 or not float(de_lfc) > 0:
        raise InputError(f"de_genes must be ≥ 0 and de_lfc above 0, not {de_genes} and {de_lfc}")
    if programmes not in ("annotator", "held_apart"):
        raise InputError(f"programmes must be 'annotator' or 'held_apart', not {programmes!r}")

    rng = np.random.default_rng(seed)
    uni = _gene_universe(species, rng)
    G = len(uni.genes)
    hold_rng = np.random.default_rng([int(seed), 104729]) if programmes == "held_apart" else None
    eta_pop, used, unused, swaps = _population_profiles(uni, species, rng, hold_rng)
    cprog = _cell_programmes(uni, species, rng)
    K = len(cprog.names)
    kidx = {k: i for i, k in enumerate(cprog.names)}
    pidx = {p: i for i, p in enumerate(POPULATIONS)}
    pop_ct = np.array([CELL_TYPES.index(POPULATION_TO_CELL_TYPE[p]) for p in POPULATIONS])
    mito_idx = np.flatnonzero(uni.role == "mito")
    mito_dist = np.exp(uni.base[mito_idx])
    mito_dist /= mito_dist.sum()
    hb_idx = np.flatnonzero(uni.role == "hb")
    hb_dist = np.array([0.55, 0.25, 0.15, 0.05])[: len(hb_idx)]
    hb_dist /= hb_dist.sum()
    # residual (within-state) overdispersion: NB shape, median 8 (markers burstier)
    theta = np.exp(rng.normal(np.log(8.0), 0.8, G))
    theta[uni.role == "marker"] /= 2.0  # marker genes are burstier
    theta[uni.role == "housekeeping"] *= 3.0
    theta[mito_idx] = 20.0
    theta = np.clip(theta, 0.2, 200.0)

    # ---- samples
    samples = [f"bm{i + 1:02d}" for i in range(n_samples)]
    n_met = (n_samples + 1) // 2 if n_samples >= 2 else 1
    conditions = ["bone_met" if i < n_met else "control" for i in range(n_samples)]
    size_w = rng.uniform(0.8, 1.2, n_samples)
    n_per = rng.multinomial(n_cells - 30 * n_samples, size_w / size_w.sum()) + 30
    lib_scale = np.exp(rng.normal(0, 0.2, n_samples))
    amb_frac = ambient * rng.uniform(0.5, 1.5, n_samples)
    amb_hb = rng.uniform(0.15, 0.45, n_samples)
    mito_shift = np.exp(rng.normal(0, 0.15, n_samples))
    dkk1 = np.array(
        [rng.uniform(0.6, 1.6) if c == "bone_met" else rng.uniform(0.0, 0.4) for c in conditions]
    )
    hypoxic_frac = np.array(
        [rng.uniform(0.35, 0.6) if c == "bone_met" else rng.uniform(0.15, 0.3) for c in conditions]
    )
    # batch: small gene-wise log factors everywhere, larger ones on a few % of genes
    batch = rng.normal(0, 0.1, (n_samples, G))
    batch += rng.normal(0, 0.5, (n_samples, G)) * (rng.random((n_samples, G)) < 0.03)
    batch[:, mito_idx] = 0.0
    # the options below draw from their own generator, so the default output stays as it was
    rng_opt = np.random.default_rng([int(seed), 1])
    batch_of = np.arange(n_samples)
    if n_batches is not None:
        within = np.zeros(n_samples, dtype=np.int64)
        for c in set(conditions):
            idx = [i for i, x in enumerate(conditions) if x == c]
            within[idx] = np.arange(len(idx))
        batch_of = within % int(n_batches)
        b_f = rng_opt.normal(0, 0.1, (int(n_batches), G))
        b_f += rng_opt.normal(0, 0.5, (int(n_batches), G)) * (
            rng_opt.random((int(n_batches), G)) < 0.03
        )
        b_f[:, mito_idx] = 0.0
        batch = b_f[batch_of] + 0.3 * batch  # shared by batch, plus a residual per sample
    de_idx = np.zeros(0, dtype=np.int64)
    de_sign = np.zeros(0)
    if de_genes:
        pool = np.flatnonzero(uni.role == "filler")
        eta_p = eta_pop[pidx[de_population], pool]
        pool = pool[eta_p >= np.quantile(eta_p, 0.5)]  # expressed well enough to be tested
        de_idx = np.sort(rng_opt.choice(pool, size=min(int(de_genes), len(pool)), replace=False))
        de_sign = np.where(np.arange(len(de_idx)) % 2 == 0, 1.0, -1.0)
        rng_opt.shuffle(de_sign)
    compositions = np.zeros((n_samples, len(POPULATIONS)))
    counts_per_pop = np.zeros((n_samples, len(POPULATIONS)), dtype=np.int64)
    for s in range(n_samples):
        base = np.array([_BASE_COMPOSITION[conditions[s]][p] for p in POPULATIONS])
        base[pidx[_IMM_NEU]] *= 0.6 + 0.6 * dkk1[s]  # DKK1 → CHI3L3+ neutrophils (Shi 2025)
        base /= base.sum()
        comp = rng.dirichlet(base * 250.0)
        compositions[s] = comp
        cnt = rng.multinomial(n_per[s], comp)
        min_n = 3 if n_per[s] >= 300 else (1 if n_per[s] >= 60 else 0)
        for p in np.flatnonzero(cnt < min_n):  # every population present in every sample
            need = min_n - cnt[p]
            cnt[p] += need
            cnt[np.argmax(cnt)] -= need
        counts_per_pop[s] = cnt

    # ---- cells: primary specs, then one partner spec per doublet
    sample_of = np.repeat(np.arange(n_samples), n_per)
    pop_of = np.concatenate(
        [rng.permutation(np.repeat(np.arange(len(POPULATIONS)), counts_per_pop[s])) for s in range(n_samples)]
    )  # fmt: skip
    N = n_cells
    is_doublet = np.zeros(N, dtype=bool)
    n_dbl = rng.binomial(N, doublet_rate) if doublet_rate > 0 else 0
    if n_dbl:
        is_doublet[rng.choice(N, size=n_dbl, replace=False)] = True
    dbl_cells = np.flatnonzero(is_doublet)
    partner_pop = np.empty(len(dbl_cells), dtype=np.int64)
    for j, c in enumerate(dbl_cells):  # heterotypic: partner of another cell type
        comp = compositions[sample_of[c]].copy()
        comp[pop_ct == pop_ct[pop_of[c]]] = 0.0
        partner_pop[j] = rng.choice(len(POPULATIONS), p=comp / comp.sum())
    spec_pop = np.concatenate([pop_of, partner_pop])
    spec_sample = np.concatenate([sample_of, sample_of[dbl_cells]])
    M = len(spec_pop)
    spec_ct = pop_ct[spec_pop]
    ct_names = np.asarray(CELL_TYPES)[spec_ct]

    lib_f = np.array([_LIB_FACTOR[c] for c in CELL_TYPES])[spec_ct]
    lib = median_counts * lib_scale[spec_sample] * lib_f * np.exp(rng.normal(0, 0.45, M)) / 1.1
    mito_mean = np.array([_MITO_MEAN[c] for c in CELL_TYPES])[spec_ct] * mito_shift[spec_sample]
    mito_f = np.clip(mito_mean * np.exp(rng.normal(0, 0.35, M)), 0.003, 0.3)
    low_q = np.zeros(M, dtype=bool)
    n_lq = rng.binomial(N, low_quality_rate) if low_quality_rate > 0 else 0
    if n_lq:
        low_q[rng.choice(np.flatnonzero(~is_doublet), size=min(n_lq, N - n_dbl), replace=False)] = (
            True
        )
    mito_f[low_q] = rng.uniform(0.2, 0.6, low_q.sum())
    lib[low_q] *= rng.uniform(0.12, 0.35, low_q.sum())
    a = amb_frac[spec_sample]
    amb_c = np.clip(rng.beta(4.0 * np.ones(M), 4.0 * (1 - a) / np.maximum(a, 1e-6)), 0, 0.5)
    if ambient == 0:
        amb_c[:] = 0.0
    amb_c[low_q] = np.minimum(amb_c[low_q] * 3, 0.6)  # damaged cells: more soup

    # cell-level programme scores
    scores = np.zeros((M, K), dtype=np.float64)
    for ct_i, ct in enumerate(CELL_TYPES):
        m = spec_ct == ct_i
        for k in range(2):
            scores[m, kidx[f"het:{ct}:{k}"]] = rng.normal(0, 1, m.sum())
    p_cyc = np.array([_CYCLING.get(c, 0.02) for c in CELL_TYPES])[spec_ct]
    scores[:, kidx["proliferation"]] = (rng.random(M) < p_cyc) * rng.uniform(0.7, 1.2, M)
    scores[:, kidx["stress"]] = (rng.random(M) < 0.08) * rng.uniform(0.5, 1.3, M)
    tum = spec_pop == pidx["Tumour epithelial"]
    hyp = tum & (rng.random(M) < hypoxic_frac[spec_sample])
    scores[hyp, kidx["hypoxia"]] = rng.uniform(0.6, 1.4, hyp.sum())
    mim = tum & (rng.random(M) < np.where(hyp, 0.3, 0.06))
    # mimicry strength: the mimics of Han et al. 2025 make haemoglobin robustly (HBB is
    # their read-out), so most (3/4) make globin well above a marrow's ambient globin; a
    # weak quarter stays near or under it, so that the detection limit (own vs ambient
    # globin UMIs, obs["true_globin_own"] / obs["true_globin_ambient"]) stays measurable
    u = rng.uniform(0.0, 1.0, mim.sum())
    scores[mim, kidx["mimicry"]] = np.where(
        u < 0.25, 0.6 + 0.35 * u / 0.25, 0.95 + 0.3 * (u - 0.25) / 0.75
    )
    ery = spec_pop == pidx["Erythroid progenitor"]
    scores[ery, kidx["erythroid_maturation"]] = rng.uniform(-0.8, 1.2, ery.sum())
    scores[tum, kidx["dkk1"]] = dkk1[spec_sample[tum]] + rng.normal(0, 0.25, tum.sum())
    # haem synthesis, ALAS2, TIGIT and its ligands: their own generator, drawn last
    uni, eta_pop, cprog, theta, batch = _add_haem_and_tigit(
        uni, eta_pop, cprog, theta, batch, species, np.random.default_rng([int(seed), 2])
    )
    G = len(uni.genes)

    # ---- ambient profile per sample: cell profiles weighted towards erythroid, plus Hb
    amb_profiles = np.zeros((n_samples, G))
    lib_pop = np.array([_LIB_FACTOR[POPULATION_TO_CELL_TYPE[p]] for p in POPULATIONS])
    ery_w = np.where(np.asarray(POPULATIONS) == "Erythroid progenitor", 4.0, 1.0)
    for s in range(n_samples):
        e = eta_pop + batch[s]
        e = np.exp(e - e.max(1, keepdims=True))
        e /= e.sum(1, keepdims=True)
        e *= 0.94
        e[:, mito_idx] = 0.06 * mito_dist
        w = compositions[s] * lib_pop * ery_w
        prof = (w / w.sum()) @ e
        prof *= 1 - amb_hb[s]
        prof[hb_idx] += amb_hb[s] * hb_dist
        amb_profiles[s] = prof / prof.sum()

    # ---- counts, in chunks
    # linear profile per (sample, population), normalised over non-mitochondrial genes
    W = np.exp(eta_pop[None, :, :] + batch[:, None, :])
    if len(de_idx):
        met = np.asarray(conditions) == "bone_met"
        W[np.ix_(met, [pidx[de_population]], de_idx)] *= np.exp(de_sign * float(de_lfc) * np.log(2))
    W /= W.sum(2, keepdims=True)
    W = W.reshape(n_samples * len(POPULATIONS), G).astype(np.float32)
    prog_cols = np.flatnonzero(np.any(cprog.loadings != 0, axis=0))
    load_cols = cprog.loadings[:, prog_cols].astype(np.float32)
    partner_of = np.full(N, -1, dtype=np.int64)
    partner_of[dbl_cells] = N + np.arange(len(dbl_cells))

    def expected(ix: np.ndarray) -> np.ndarray:
        """Expected UMIs of the cells' own RNA (before NB noise), cells × genes."""
        e = W[spec_sample[ix] * len(POPULATIONS) + spec_pop[ix]]
        sub = e[:, prog_cols] * np.exp(scores[ix].astype(np.float32) @ load_cols)
        z = e.sum(1) + (sub.sum(1) - e[:, prog_cols].sum(1))
        e[:, prog_cols] = sub
        own = lib[ix] * (1 - amb_c[ix])
        e *= (own * (1 - mito_f[ix]) / z)[:, None].astype(np.float32)
        e[:, mito_idx] = ((own * mito_f[ix])[:, None] * mito_dist[None, :]).astype(np.float32)
        return e

    chunks = []
    chunk = 2048
    amb32 = amb_profiles.astype(np.float32)
    # expected globin UMIs per droplet, own RNA vs ambient (the mimicry detection limit)
    glob_own = np.zeros(N)
    glob_amb = np.zeros(N)
    for start in range(0, N, chunk):
        ix = np.arange(start, min(start + chunk, N))
        lam = expected(ix)
        lib_c = lib[ix].copy()
        d = partner_of[ix] >= 0
        if d.any():
            pix = partner_of[ix][d]
            lam[d] += expected(pix)
            lib_c[d] += lib[pix]
        amb_umis = (lib_c * amb_c[ix]).astype(np.float32)
        glob_own[ix] = lam[:, hb_idx].sum(1)
        glob_amb[ix] = amb_umis * amb32[spec_sample[ix]][:, hb_idx].sum(1)
        chunks.append(
            _sample_counts_chunk(lam, theta, rng, ambient=(amb_umis, amb32[spec_sample[ix]]))
        )
    X = sp.vstack(chunks, format="csr")
    X.sort_indices()

    # ---- AnnData
    obs = pd.DataFrame(
        {
            "sample": pd.Categorical(np.asarray(samples)[sample_of], categories=samples),
            "condition": pd.Categorical(
                np.asarray(conditions)[sample_of],
                categories=[c for c in ("bone_met", "control") if c in conditions],
            ),
            "true_population": pd.Categorical(
                np.asarray(POPULATIONS)[pop_of], categories=list(POPULATIONS)
            ),
            "true_cell_type": pd.Categorical(ct_names[:N], categories=list(CELL_TYPES)),
            "true_doublet": is_doublet,
            "true_erythroid_mimicry": mim[:N],
            "true_hypoxic": hyp[:N],
            "true_low_quality": low_q[:N],
            "true_globin_own": glob_own,
            "true_globin_ambient": glob_amb,
        }
    )
    if n_batches is not None:
        names = [f"batch{b + 1}" for b in range(int(n_batches))]
        obs["batch"] = pd.Categorical(np.asarray(names)[batch_of[sample_of]], categories=names)
    bc = _barcodes(N, rng)
    obs.index = pd.Index([f"{samples[s]}_{b}" for s, b in zip(sample_of, bc)], dtype=str)
    var = pd.DataFrame(index=pd.Index(uni.genes, dtype=str))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.uns["bonemet_simulation"] = {
        "species": species,
        "seed": int(seed),
        "n_cells": int(n_cells),
        "n_samples": int(n_samples),
        "doublet_rate": float(doublet_rate),
        "ambient": float(ambient),
        "low_quality_rate": float(low_quality_rate),
        "median_counts": float(median_counts),
        "n_genes": int(G),
        "populations": np.asarray(POPULATIONS, dtype=object),
        "cell_types": np.asarray(CELL_TYPES, dtype=object),
        "samples": {
            "sample": np.asarray(samples, dtype=object),
            "condition": np.asarray(conditions, dtype=object),
            "n_cells": n_per.astype(np.int64),
            "library_scale": lib_scale,
            "ambient_fraction": amb_frac,
            "ambient_hb_share": amb_hb,
            "dkk1_level": dkk1,
            "hypoxic_fraction": hypoxic_frac,
        },
        "composition": pd.DataFrame(compositions, index=samples, columns=list(POPULATIONS)).to_json(
            orient="split"
        ),
        "expected_composition": _expected_composition(conditions).to_json(orient="split"),
        # keys are programme names ('/' would nest groups in HDF5)
        "markers_used": {k.replace("/", "_"): np.asarray(v, dtype=str) for k, v in used.items()},
        "markers_unused": {
            k.replace("/", "_"): np.asarray(v, dtype=str) for k, v in unused.items()
        },
        "programmes": programmes,
    }
    if hold_rng is not None:
        adata.uns["bonemet_simulation"]["held_apart"] = {
            k.replace("/", "_"): {
                "held_out": np.asarray(list(v), dtype=str),
                "private": np.asarray(list(v.values()), dtype=str),
            }
            for k, v in swaps.items()
        }
    if n_batches is not None:
        adata.uns["bonemet_simulation"]["n_batches"] = int(n_batches)
        adata.uns["bonemet_simulation"]["samples"]["batch"] = np.asarray(
            [f"batch{b + 1}" for b in batch_of], dtype=object
        )
    if len(de_idx):
        adata.uns["bonemet_simulation"]["planted_de"] = {
            "population": str(de_population),
            "genes": np.asarray([uni.genes[g] for g in de_idx], dtype=object),
            "log2fc": de_sign * float(de_lfc),
        }
    logger.info(
        "simulated %d cells x %d genes (%s, %d samples, seed %d)", N, G, species, n_samples, seed
    )
    return adata


def _expected_composition(conditions: list[str]) -> pd.DataFrame:
    """Expected population shares per condition (rows), with the DKK1 effect at its mean."""
    # the per-sample DKK1 level is uniform on [0.6, 1.6] (bone_met) or [0, 0.4] (control)
    dkk1_mean = {"bone_met": 1.1, "control": 0.2}
    rows = {}
    for c in dict.fromkeys(conditions):
        base = np.array([_BASE_COMPOSITION[c][p] for p in POPULATIONS])
        base[POPULATIONS.index(_IMM_NEU)] *= 0.6 + 0.6 * dkk1_mean[c]
        rows[c] = base / base.sum()
    return pd.DataFrame(rows, index=list(POPULATIONS)).T
