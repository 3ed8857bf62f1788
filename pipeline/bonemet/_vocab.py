"""The fixed label vocabularies shared by annotation, the simulator and the figures.

``obs["cell_type"]`` takes values from :data:`CELL_TYPES` and ``obs["population"]`` from
:data:`POPULATIONS` (both end with ``"Unassigned"``); every CD8 state starts with "CD8".
"""

from __future__ import annotations

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
