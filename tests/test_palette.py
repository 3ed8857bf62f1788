"""The population palette: one hue family per lineage, every colour distinguishable."""

from __future__ import annotations

from bonemet._vocab import POPULATION_TO_CELL_TYPE, POPULATIONS
from bonemet.pl import (
    CELL_TYPE_COLORS,
    MIN_COLOR_DISTANCE,
    POPULATION_COLORS,
    color_distances,
)


def test_every_population_has_a_colour() -> None:
    assert set(POPULATIONS) <= set(POPULATION_COLORS)
    assert set(POPULATION_TO_CELL_TYPE.values()) <= set(CELL_TYPE_COLORS)


def test_no_two_populations_look_alike() -> None:
    """CIEDE2000 between every pair of population colours is above the documented bound
    (the old palette had M-MDSC vs osteoprogenitor at 4.8 and osteoclast vs osteoblast at 9.2)."""
    closest = color_distances(POPULATION_COLORS)
    assert closest[0][0] >= MIN_COLOR_DISTANCE, closest[:3]
    assert color_distances(CELL_TYPE_COLORS)[0][0] >= MIN_COLOR_DISTANCE


def test_the_named_pairs_are_far_apart() -> None:
    d = {frozenset((a, b)): x for x, a, b in color_distances(POPULATION_COLORS)}
    for a, b in [("Osteoclast", "Osteoblast"), ("cDC1", "cDC2"), ("cDC2", "pDC"),
                 ("pDC", "NK"), ("cDC1", "NK"), ("MSC/Stromal", "Endothelial")]:  # fmt: skip
        assert d[frozenset((a, b))] >= 15, (a, b, d[frozenset((a, b))])


def test_lineage_colour_is_its_main_population_colour() -> None:
    assert CELL_TYPE_COLORS["T cell"] == POPULATION_COLORS["CD4 T"]
    assert CELL_TYPE_COLORS["Neutrophil"] == POPULATION_COLORS["Immature neutrophil (CHI3L3+)"]
    assert CELL_TYPE_COLORS["Osteoclast"] == POPULATION_COLORS["Osteoclast"]
