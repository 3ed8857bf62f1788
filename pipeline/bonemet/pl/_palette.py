"""Stable colours: one fixed colour per population in every figure of every run."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from .._vocab import POPULATIONS, UNASSIGNED

__all__ = [
    "CELL_TYPE_COLORS",
    "MIN_COLOR_DISTANCE",
    "color_distances",
    "POPULATION_COLORS",
    "POPULATIONS",
    "UNASSIGNED",
    "category_colors",
    "population_colors",
]

#: The population vocabulary (``obs["population"]``) and its fixed colours. Each lineage
#: has its own hue family and its states are shades within it: CD4 T/Treg blue, CD8 states
#: teal, NK indigo, B/plasma sky, monocytes orange, macrophages brown with the
#: iron-recycling subset red, MDSC magenta/pink, neutrophils purple, dendritic cells olive,
#: erythroid crimson, osteoclasts ochre, osteoblast lineage and stroma green, endothelium
#: salmon, tumour black. ``Unassigned`` is always grey. Every pair of colours differs by a
#: CIEDE2000 distance of at least :data:`MIN_COLOR_DISTANCE` (tested).
POPULATION_COLORS: dict[str, str] = {
    "CD4 T": "#1F4E9C",
    "Treg": "#8DA0E8",
    "CD8 T": "#0B7A75",
    "CD8 Tpex (TCF1+)": "#00B3A4",
    "CD8 Tex (terminal)": "#8FD9CC",
    "NK": "#2E2A80",
    "B": "#5FC9F0",
    "Plasma": "#0A86B8",
    "Classical monocyte": "#E8710A",
    "Non-classical monocyte": "#FFC98A",
    "Macrophage": "#8C4A1E",
    "Iron-recycling macrophage (VCAM1+CD163+CCR3+)": "#D62728",
    "M-MDSC": "#B0186B",
    "PMN-MDSC": "#F07CB8",
    "Immature neutrophil (CHI3L3+)": "#7E1FA8",
    "Mature neutrophil": "#C9A3E6",
    "cDC1": "#6B6B00",
    "cDC2": "#A8A800",
    "pDC": "#E0E08C",
    "Mast/Basophil": "#4E342E",
    "Erythroid progenitor": "#8E1B2E",
    "HSPC": "#4A5560",
    "Megakaryocyte": "#7D5A6B",
    "Osteoclast": "#C48A00",
    "Osteoblast": "#2E8B3A",
    "MSC/Stromal": "#4CC24F",
    "Osteoprogenitor": "#A8DF8E",
    "Chondrocyte": "#B8966A",
    "Fibroblast": "#8FB5A0",
    "Pericyte/Smooth muscle": "#8FA3B3",
    "Endothelial": "#E7A6A0",
    "Tumour epithelial": "#111111",
    UNASSIGNED: "#BDBDBD",
}

#: The smallest CIEDE2000 colour difference between any two population colours (about
#: 2.3 is a just-noticeable difference; 10 keeps neighbouring clusters apart on a UMAP).
MIN_COLOR_DISTANCE = 10.0

#: Lineage (``obs["cell_type"]``) colours: each lineage takes the colour of its main
#: population, so the two UMAPs read alike.
CELL_TYPE_COLORS: dict[str, str] = {
    "T cell": "#1F4E9C",
    "NK cell": "#2E2A80",
    "B cell": "#5FC9F0",
    "Plasma cell": "#0A86B8",
    "Monocyte/Macrophage": "#E8710A",
    "Neutrophil": "#7E1FA8",
    "Dendritic cell": "#6B6B00",
    "Mast cell/Basophil": "#4E342E",
    "Erythroid": "#8E1B2E",
    "HSPC": "#4A5560",
    "Megakaryocyte": "#7D5A6B",
    "Osteoclast": "#C48A00",
    "Osteoblast": "#2E8B3A",
    "Stromal": "#4CC24F",
    "Chondrocyte": "#B8966A",
    "Fibroblast": "#8FB5A0",
    "Pericyte/Smooth muscle": "#8FA3B3",
    "Endothelial": "#E7A6A0",
    "Tumour epithelial": "#111111",
    UNASSIGNED: "#BDBDBD",
}


def color_distances(colors: Mapping[str, str]) -> list[tuple[float, str, str]]:
    """CIEDE2000 distance of every pair of ``colors`` (name -> colour), smallest first."""
    import itertools

    import numpy as np
    from matplotlib.colors import to_rgb
    from skimage.color import deltaE_ciede2000, rgb2lab

    names = list(colors)
    lab = rgb2lab(np.array([[to_rgb(colors[n]) for n in names]]))[0]
    out = [
        (float(deltaE_ciede2000(lab[i], lab[j])), names[i], names[j])
        for i, j in itertools.combinations(range(len(names)), 2)
    ]
    return sorted(out)


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
