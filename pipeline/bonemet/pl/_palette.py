"""Stable colours: one fixed colour per population in every figure of every run."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from .._vocab import POPULATIONS, UNASSIGNED

__all__ = [
    "CELL_TYPE_COLORS",
    "POPULATION_COLORS",
    "POPULATIONS",
    "UNASSIGNED",
    "category_colors",
    "population_colors",
]

#: The population vocabulary (``obs["population"]``) and its fixed colours. Related
#: states share a hue family (T cells blue/green, monocytes orange, macrophages brown/red,
#: MDSC pink, neutrophils purple, DCs olive, bone cells gold, stroma violet), and the
#: states the review is about (CD8 Tpex, iron-recycling macrophages, CHI3L3+ immature
#: neutrophils, tumour) get the strongest colours. ``Unassigned`` is always grey.
POPULATION_COLORS: dict[str, str] = {
    "CD4 T": "#1F77B4",
    "Treg": "#9EDAE5",
    "CD8 T": "#17BECF",
    "CD8 Tpex (TCF1+)": "#2CA02C",
    "CD8 Tex (terminal)": "#98DF8A",
    "NK": "#BCBD22",
    "B": "#AEC7E8",
    "Plasma": "#393B79",
    "Classical monocyte": "#FF7F0E",
    "Non-classical monocyte": "#FFBB78",
    "Macrophage": "#8C564B",
    "Iron-recycling macrophage (VCAM1+CD163+CCR3+)": "#D62728",
    "M-MDSC": "#E377C2",
    "PMN-MDSC": "#F7B6D2",
    "Immature neutrophil (CHI3L3+)": "#9467BD",
    "Mature neutrophil": "#C5B0D5",
    "cDC1": "#637939",
    "cDC2": "#B5CF6B",
    "pDC": "#CEDB9C",
    "Mast/Basophil": "#8C6D31",
    "Erythroid progenitor": "#E7969C",
    "HSPC": "#5254A3",
    "Megakaryocyte": "#843C39",
    "Osteoclast": "#BD9E39",
    "Osteoblast": "#E7BA52",
    "MSC/Stromal": "#7B4173",
    "Osteoprogenitor": "#CE6DBD",
    "Chondrocyte": "#E7CB94",
    "Fibroblast": "#DE9ED6",
    "Pericyte/Smooth muscle": "#6B6ECF",
    "Endothelial": "#A55194",
    "Tumour epithelial": "#252525",
    UNASSIGNED: "#BDBDBD",
}

#: Lineage (``obs["cell_type"]``) colours: each lineage takes the colour of its main
#: population, so the two UMAPs read alike.
CELL_TYPE_COLORS: dict[str, str] = {
    "T cell": "#1F77B4",
    "NK cell": "#BCBD22",
    "B cell": "#AEC7E8",
    "Plasma cell": "#393B79",
    "Monocyte/Macrophage": "#FF7F0E",
    "Neutrophil": "#9467BD",
    "Dendritic cell": "#637939",
    "Mast cell/Basophil": "#8C6D31",
    "Erythroid": "#E7969C",
    "HSPC": "#5254A3",
    "Megakaryocyte": "#843C39",
    "Osteoclast": "#BD9E39",
    "Osteoblast": "#E7BA52",
    "Stromal": "#7B4173",
    "Chondrocyte": "#E7CB94",
    "Fibroblast": "#DE9ED6",
    "Pericyte/Smooth muscle": "#6B6ECF",
    "Endothelial": "#A55194",
    "Tumour epithelial": "#252525",
    UNASSIGNED: "#BDBDBD",
}

# Distinct colours for other categories (samples, conditions, lineages): Okabe-Ito
# first (colour-blind safe), then tab20-like tones.
_QUALITATIVE = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
    "#000000", "#7F3C8D", "#11A579", "#3969AC", "#F2B701", "#E73F74", "#80BA5A",
    "#E68310", "#008695", "#CF1C90", "#f97b72", "#4b4b8f", "#A5AA99",
)  # fmt: skip


def _hashed_color(name: str) -> str:
    """A colour that depends only on ``name`` (stable across runs and machines)."""
    h = int(hashlib.md5(name.encode("utf-8")).hexdigest()[:8], 16)
    return _QUALITATIVE[h % len(_QUALITATIVE)]


def population_colors(populations: Iterable[str] | None = None) -> dict[str, str]:
    """Colours for ``populations`` (default: the whole vocabulary).

    A population of the vocabulary always gets the same colour; any other name gets a
    colour derived from a hash of the name, so it too is the same in every run.
    """
    if populations is None:
        return dict(POPULATION_COLORS)
    return {str(p): POPULATION_COLORS.get(str(p), _hashed_color(str(p))) for p in populations}


def category_colors(
    categories: Iterable[str], *, fixed: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Colours for an ordered list of categories (samples, conditions, clusters).

    Categories named in ``fixed`` keep that colour; ``Unassigned`` is grey; the rest get
    the qualitative palette in order (so a run's samples, sorted, always get the same
    colours), falling back to hashed colours past 20 categories.
    """
    cats = [str(c) for c in categories]
    out: dict[str, str] = {}
    i = 0
    for c in cats:
        if fixed and c in fixed:
            out[c] = fixed[c]
        elif c == UNASSIGNED:
            out[c] = POPULATION_COLORS[UNASSIGNED]
        elif len(cats) <= len(_QUALITATIVE):
            out[c] = _QUALITATIVE[i % len(_QUALITATIVE)]
            i += 1
        else:
            out[c] = _hashed_color(c)
    return out
