"""Generated data whose populations are not built from the annotator's own marker lists.

``simulate_bone_metastasis(programmes="held_apart")`` plants, per programme, a seeded half of
the genes ``bm.tl.annotate`` reads (balanced per marker set) and gives the other half's
slots to private genes the annotator never reads. These tests check that the split is real and that annotation still
recognises the populations from the half it can see.
"""

from __future__ import annotations

import numpy as np
import pytest
from builders import scanpy_prep  # tests/builders.py
from sklearn.metrics import f1_score

import bonemet as bm
from bonemet.datasets._simulate import (
    _PROGRAMMES,
    _annotator_genes,
    _annotator_sets,
    _parse_token,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("species", ["human", "mouse"])
def test_held_apart_plants_half_of_the_annotator_genes(species: str) -> None:
    held = bm.datasets.simulate_bone_metastasis(
        2000, 2, species=species, seed=3, programmes="held_apart"
    )
    default = bm.datasets.simulate_bone_metastasis(2000, 2, species=species, seed=3)
    sim = held.uns["bonemet_simulation"]
    read = _annotator_genes(species)
    marker_sets = _annotator_sets(species)
    n_read = n_planted = 0
    for prog in _PROGRAMMES:
        if prog.kind != "marker":
            continue
        key = prog.name.replace("/", "_")
        genes = {_parse_token(t, species)[0] for t in (*prog.core, *prog.optional)} - {None}
        listed = {g for g in genes if g.upper() in read}
        used = set(sim["markers_used"][key])
        out = set(sim["held_apart"][key]["held_out"])
        private = list(sim["held_apart"][key]["private"])
        assert out <= listed and not out & used  # held-out genes are not raised
        assert len(private) == len(out)  # each one's slot went to a private gene ...
        assert set(private) <= used and not {g.upper() for g in private} & read  # ... unread
        planted = listed & used
        assert planted == listed - out  # the other annotator genes are all planted
        if len(listed) >= 4:
            assert 0.3 <= len(planted) / len(listed) <= 0.7, (prog.name, planted, listed)
        # the split is balanced per marker set: no set (a short required set such as
        # PD-1/TOX too) is wholly held out of a programme, nor wholly planted
        for name, set_genes in marker_sets.items():
            inside = {g for g in listed if g.upper() in set_genes}
            if len(inside) >= 2:
                assert 0 < len(inside & planted) < len(inside), (prog.name, name, inside, planted)
        n_read += len(listed)
        n_planted += len(planted)
    assert 0.45 <= n_planted / n_read <= 0.55
    # the cells are the default mode's: same samples and populations for the same seed
    assert (
        held.obs["true_population"].to_numpy() == default.obs["true_population"].to_numpy()
    ).all()
    assert (held.obs["sample"].to_numpy() == default.obs["sample"].to_numpy()).all()
    assert sim["programmes"] == "held_apart"
    assert "held_apart" not in default.uns["bonemet_simulation"]


def test_annotation_on_held_apart_programmes_meets_a_floor() -> None:
    """Measured (``benchmarks/annotation_accuracy.py --fast``, human seed 0): macro-F1 0.980,
    lineage 1.000, iron-recycling macrophage 1.00, M-MDSC 1.00, PMN-MDSC 0.98, CD8 Tpex
    0.75, CD8 Tex 0.98, osteoblast 1.00. CD8 Tpex rests on the draw: this one holds PDCD1
    out of the exhaustion programme, so the required PD-1/TOX set is TOX alone, detected in
    under half of the Tpex cells (0.84 on the draw before the DC/monocyte discriminator's
    genes joined the annotator-read genes and moved the seeded split; 0.10-0.95 over the
    benchmark's four draws), hence its lower floor here. Before the split was balanced per
    marker set, three of the four M-MDSC genes were held out of its programme and M-MDSC
    scored 0.00 (macro-F1 0.943); before the osteoblast/fibroblast discriminator,
    osteoblasts (collagen and lumican of the shared mesenchymal programme planted, half of
    the osteogenic genes held out) tied with the fibroblast set and were all Unassigned."""
    adata = bm.datasets.simulate_bone_metastasis(
        6000, 2, species="human", seed=0, programmes="held_apart"
    )
    keep = ~(adata.obs["true_doublet"].astype(bool) | adata.obs["true_low_quality"].astype(bool))
    adata = scanpy_prep(adata[keep.to_numpy()].copy())
    bm.tl.annotate(adata)
    truth = adata.obs["true_population"].astype(str)
    pred = adata.obs["population"].astype(str)
    labels = sorted(set(truth))
    f1 = dict(zip(labels, f1_score(truth, pred, labels=labels, average=None, zero_division=0)))
    lineage = (adata.obs["true_cell_type"].astype(str) == adata.obs["cell_type"].astype(str)).mean()
    assert float(np.mean(list(f1.values()))) >= 0.95, f1
    assert lineage >= 0.97
    for state in (
        "Iron-recycling macrophage (VCAM1+CD163+CCR3+)",
        "M-MDSC",
        "PMN-MDSC",
        "CD8 Tex (terminal)",
    ):
        assert f1[state] >= 0.8, (state, f1[state])
    assert f1["CD8 Tpex (TCF1+)"] >= 0.7, f1["CD8 Tpex (TCF1+)"]
    assert f1["Osteoblast"] >= 0.9, f1["Osteoblast"]
    assert f1["MSC/Stromal"] >= 0.9, f1["MSC/Stromal"]
