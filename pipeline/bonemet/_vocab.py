"""The fixed label vocabularies shared by annotation, the simulator and the figures.

``obs["cell_type"]`` takes values from :data:`CELL_TYPES` and ``obs["population"]`` from
:data:`POPULATIONS` (both end with ``"Unassigned"``); every CD8 state starts with "CD8".
"""

from __future__ import annotations

from typing import Literal, NamedTuple

__all__ = [
    "UNASSIGNED",
    "NOT_SIMULATED",
    "CELL_TYPES",
    "POPULATIONS",
    "POPULATION_TO_CELL_TYPE",
    "NAMED_POPULATIONS",
    "TPEX",
    "TEX",
    "CHI3L3_NEUTROPHIL",
    "IRON_MACROPHAGE",
    "TUMOUR",
    "CD8_POPULATIONS",
    "NEUTROPHIL_POPULATIONS",
    "MACROPHAGE_POPULATIONS",
    "MYELOID_POPULATIONS",
    "MIMICRY_CALL_KEY",
    "MIMICRY_CLASS_KEY",
    "MIMICRY_CALLED_FRACTION",
    "CALLED_FRACTIONS",
    "Hypothesis",
    "HYPOTHESES",
    "hypothesis",
]

UNASSIGNED = "Unassigned"

POPULATION_TO_CELL_TYPE: dict[str, str] = {
    "CD4 T": "T cell",
    "Treg": "T cell",
    "CD8 T": "T cell",
    "CD8 Tpex (TCF1+)": "T cell",
    "CD8 Tex (terminal)": "T cell",
    "NK": "NK cell",
    "B": "B cell",
    "Plasma": "Plasma cell",
    "Classical monocyte": "Monocyte/Macrophage",
    "Non-classical monocyte": "Monocyte/Macrophage",
    "Macrophage": "Monocyte/Macrophage",
    "Iron-recycling macrophage (VCAM1+CD163+CCR3+)": "Monocyte/Macrophage",
    "M-MDSC": "Monocyte/Macrophage",
    "PMN-MDSC": "Neutrophil",
    "Immature neutrophil (CHI3L3+)": "Neutrophil",
    "Mature neutrophil": "Neutrophil",
    "cDC1": "Dendritic cell",
    "cDC2": "Dendritic cell",
    "pDC": "Dendritic cell",
    "Mast/Basophil": "Mast cell/Basophil",
    "Erythroid progenitor": "Erythroid",
    "HSPC": "HSPC",
    "Megakaryocyte": "Megakaryocyte",
    "Osteoclast": "Osteoclast",
    "Osteoblast": "Osteoblast",
    "MSC/Stromal": "Stromal",
    "Osteoprogenitor": "Stromal",
    "Chondrocyte": "Chondrocyte",
    "Fibroblast": "Fibroblast",
    "Pericyte/Smooth muscle": "Pericyte/Smooth muscle",
    "Endothelial": "Endothelial",
    "Tumour epithelial": "Tumour epithelial",
    UNASSIGNED: UNASSIGNED,
}
"""Population -> lineage (``cell_type``) mapping, in vocabulary order. ``MSC/Stromal`` is
the CXCL12-abundant reticular (CAR) / LEPR+ MSC population; ``Osteoprogenitor`` is its
osteo-primed state."""

NOT_SIMULATED: tuple[str, ...] = (
    "Megakaryocyte",
    "Osteoprogenitor",
    "Chondrocyte",
    "Fibroblast",
    "Pericyte/Smooth muscle",
)
"""Populations added to the vocabulary (2026) that ``bm.datasets.simulate_bone_metastasis``
does not draw, so that its default output stays as it was."""

POPULATIONS: tuple[str, ...] = tuple(POPULATION_TO_CELL_TYPE)
"""Fixed vocabulary of ``obs["population"]`` (categories in this order)."""

CELL_TYPES: tuple[str, ...] = (
    "T cell",
    "NK cell",
    "B cell",
    "Plasma cell",
    "Monocyte/Macrophage",
    "Neutrophil",
    "Dendritic cell",
    "Mast cell/Basophil",
    "Erythroid",
    "HSPC",
    "Megakaryocyte",
    "Osteoclast",
    "Osteoblast",
    "Stromal",
    "Chondrocyte",
    "Fibroblast",
    "Pericyte/Smooth muscle",
    "Endothelial",
    "Tumour epithelial",
    UNASSIGNED,
)
"""Fixed vocabulary of ``obs["cell_type"]`` (categories in this order)."""

NAMED_POPULATIONS: tuple[str, ...] = (
    "Iron-recycling macrophage (VCAM1+CD163+CCR3+)",
    "M-MDSC",
    "PMN-MDSC",
    "Immature neutrophil (CHI3L3+)",
    "CD8 Tpex (TCF1+)",
    "CD8 Tex (terminal)",
)
"""The populations the bone-metastasis findings are about; accuracy is reported for each."""

# -- population groups that read-outs take fractions and means over --------------------

TPEX = "CD8 Tpex (TCF1+)"
TEX = "CD8 Tex (terminal)"
CHI3L3_NEUTROPHIL = "Immature neutrophil (CHI3L3+)"
IRON_MACROPHAGE = "Iron-recycling macrophage (VCAM1+CD163+CCR3+)"
TUMOUR = "Tumour epithelial"

CD8_POPULATIONS: tuple[str, ...] = ("CD8 T", TPEX, TEX)
"""Every CD8 T-cell state."""
NEUTROPHIL_POPULATIONS: tuple[str, ...] = (CHI3L3_NEUTROPHIL, "Mature neutrophil", "PMN-MDSC")
"""Neutrophil-lineage populations (denominator of the CHI3L3+ fraction)."""
MACROPHAGE_POPULATIONS: tuple[str, ...] = ("Macrophage", IRON_MACROPHAGE)
"""Macrophages, with the iron-recycling subset."""
MYELOID_POPULATIONS: tuple[str, ...] = (
    "Classical monocyte",
    "Non-classical monocyte",
    *MACROPHAGE_POPULATIONS,
    "M-MDSC",
    "PMN-MDSC",
    "cDC1",
    "cDC2",
)
"""Mononuclear myeloid populations that present PVR/NECTIN2 (monocytes, macrophages, MDSC, cDC)."""

for _group in (CD8_POPULATIONS, NEUTROPHIL_POPULATIONS, MYELOID_POPULATIONS, NOT_SIMULATED):
    assert set(_group) <= set(POPULATIONS), _group


# -- the review's hypotheses: one table for the report's paragraphs and the figure's panels

MIMICRY_CALL_KEY = "erythroid_mimicry_call"
"""The per-cell erythroid-mimicry call (bool ``obs`` column, :func:`bonemet.tl.erythroid_mimicry`)."""

MIMICRY_CLASS_KEY = "erythroid_mimicry_class"
"""The per-cell class of that call; ``"not_assessed"`` cells (predicted doublets) were not called."""

MIMICRY_CALLED_FRACTION = "Erythroid-mimicry calls / tumour cells"
"""The compare stage's differential-abundance unit (its ``test`` name) of the per-sample
called fraction: tumour cells with ``obs[MIMICRY_CALL_KEY]`` true over the tumour cells
the call assessed."""

CALLED_FRACTIONS: dict[str, tuple[str, str, str]] = {
    MIMICRY_CALLED_FRACTION: (MIMICRY_CALL_KEY, TUMOUR, MIMICRY_CLASS_KEY)
}
"""Called-fraction units: test name -> (bool obs column of the call, denominator
population, obs column of the call's class). The denominator is the population's cells,
less those whose class is ``"not_assessed"`` when the class column exists; the numerator
is those of them whose call is true."""


class Hypothesis(NamedTuple):
    """One hypothesis of the review, as the report states it and the figure draws it.

    ``kind`` ``"da"`` reads the compare stage's ``differential_abundance`` by its ``test``
    column (a within-lineage fraction of :data:`bonemet.tl.LINEAGE_FRACTIONS`, a called
    fraction of :data:`CALLED_FRACTIONS` or a population's share of all cells); ``"score"``
    reads ``score_tests`` (``test`` = the score's set, in ``population``).
    """

    key: str
    heading: str  # the report's result paragraph
    title: str  # the figure's panel title (short)
    kind: Literal["da", "score"]
    test: str
    population: str | None


# In the review's order: iron / erythroid mimicry (Han 2025), osteopontin / Tpex (Cheng
# 2025), DKK1 / CHI3L3+ neutrophils (Shi 2025), MDSC, osteoclasts, ferroptosis.
# Ferroptosis is read as two directional programmes, drivers and suppressors. The KEGG
# ferroptosis pathway is in neither the report's paragraphs nor the figure: it lists the
# drivers (ACSL4, LPCAT3, ALOX15, NCOA4, TFRC) together with the suppressors (GPX4, SLC7A11,
# GCLC/GCLM, FTH1/FTL), so a shift of its mean score says neither more nor less
# ferroptosis. Its score test still runs and is reported with every other test.
HYPOTHESES: tuple[Hypothesis, ...] = (
    Hypothesis("erythroid_mimicry", "Tumour erythroid mimicry: called fraction of tumour cells",
               "Tumour erythroid-mimicry calls", "da", MIMICRY_CALLED_FRACTION, TUMOUR),
    Hypothesis("iron_macrophage", "Iron-recycling macrophages within macrophages",
               "Iron-recycling / macrophages", "da", "Iron-recycling / macrophages", None),
    Hypothesis("tpex", "Progenitor-exhausted CD8 T cells: Tpex / (Tpex + Tex)",
               "CD8 Tpex / (Tpex + Tex)", "da", "Tpex / (Tpex + Tex)", None),
    Hypothesis("tpex_cd8", "Tpex within all CD8 T cells", "CD8 Tpex / all CD8 T", "da",
               "Tpex / CD8 T", None),
    Hypothesis("chi3l3_neutrophil", "CHI3L3+ immature neutrophils within neutrophils",
               "CHI3L3+ immature / neutrophils", "da", "CHI3L3+ immature / neutrophils", None),
    Hypothesis("m_mdsc", "M-MDSC within classical monocytes", "M-MDSC / classical monocytes",
               "da", "M-MDSC / classical monocytes", None),
    Hypothesis("pmn_mdsc", "PMN-MDSC within neutrophils", "PMN-MDSC / neutrophils", "da",
               "PMN-MDSC / neutrophils", None),
    Hypothesis("osteoclast", "Osteoclast abundance", "Osteoclasts / all cells", "da",
               "Osteoclast", None),
    Hypothesis("ferroptosis_driver", "Tumour ferroptosis (driver programme)",
               "Tumour ferroptosis drivers", "score", "ferroptosis_driver", TUMOUR),
    Hypothesis("ferroptosis_suppressor", "Tumour ferroptosis (suppressor programme)",
               "Tumour ferroptosis suppressors", "score", "ferroptosis_suppressor", TUMOUR),
)  # fmt: skip
"""The review's hypotheses: the report's result paragraphs
(:data:`bonemet.report._narrative.HYPOTHESES`) and the condition-comparison panels
(:data:`bonemet.pl.COMPARISONS`) are both read from this table, in this order."""


def hypothesis(key: str) -> Hypothesis:
    """The row of :data:`HYPOTHESES` with ``key``."""
    for h in HYPOTHESES:
        if h.key == key:
            return h
    raise KeyError(f"no hypothesis {key!r}; keys: {', '.join(h.key for h in HYPOTHESES)}")


assert len({h.key for h in HYPOTHESES}) == len({h.title for h in HYPOTHESES}) == len(HYPOTHESES)
assert all(h.population in POPULATIONS for h in HYPOTHESES if h.population is not None)

#: ``model`` of a within-lineage fraction that compare tests with the beta-binomial
#: (Williams) GLM and a shrunk per-fraction rho, because its denominators spread widely
WILLIAMS_SHRUNK = "Williams (shrunk rho)"
