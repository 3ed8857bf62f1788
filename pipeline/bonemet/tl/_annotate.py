"""Marker-based annotation of lineages and bone-metastasis populations.

``annotate`` needs no download and no pretrained model. It reads the curated marker sets
(``signatures/lineage_*.yaml``, ``signatures/population_*.yaml``) and works in four steps:

1. **Per-cell marker scores.** Each marker gene's ambient floor (its 25th percentile in
   the sample, ``sample_key``) is subtracted; the log-normalised expression is then
   divided by a robust per-gene scale (the larger of the 90th percentile of its non-zero
   values, its 99th percentile over all cells and ``log1p(1)``) and clipped to ``[0, 1]``.
   A set's score is the mean of the *top half* of its positive genes minus ``0.5 x`` the
   mean of the top half of its negative genes. The top half makes a score robust to
   dropout and to one ambient transcript (haemoglobin, LYZ); the haemoglobin chains
   (``pp.hb_genes``) count as one gene of a set, their mean, so that the four mouse chains
   cannot fill the top half of the erythroid set in droplets that only carry ambient
   haemoglobin; a set measured by fewer
   than three of its genes (or not all of a shorter set) is shrunk in proportion, so
   that one gene cannot make a call.
   Several lineage files with one target are *alternative* programmes (the larger score
   counts): pDC (``lineage_pdc``) vs cDC (``lineage_dendritic_cell``), neutrophil
   progenitors' primary granules vs the mature neutrophil programme.
   A marker gene detected in fewer than three cells (or 1% of the cells, if fewer) counts
   as not measured, exactly as if a gene filter (scanpy's ``min_cells=3``, which
   ``bm.pp.normalize`` applies) had removed it, so the calls do not depend on whether the
   matrix was filtered first (the genes are listed in ``uns``).
   **Lineage discriminators** (``signatures/discriminate_*.yaml``, see
   ``_annotate_discriminate``) then split the evidence of two lineages that share a
   programme or tie on their own sets by the genes only one of them has: T vs NK
   (TCR/CD3/CD8B/CD5/CD6/CD28 vs KLRF1/NCR1/FCER1G/TYROBP/SH2D1B, the cytotoxic programme
   shared), osteoblast and marrow CAR stroma vs fibroblast (RUNX2/SP7/ALPL/BGLAP/IBSP/
   DMP1/SOST/PHEX and CXCL12/LEPR/KITLG/VCAM1/ADIPOQ/EBF3 vs DPT/PI16/MFAP5/FBLN1, the
   collagen/decorin/lumican programme shared), dendritic cells vs monocytes/macrophages
   (FLT3/DPP4/ZBTB46 vs C5AR1/FCGR1A/MERTK/MAFB: monocyte-like DCs, Ly6C+ Cd209a+ without
   Siglech, tie the two lineage sets), using what the matrix measures: an unmeasured side
   stands at a fixed prior (or, for a pair whose lineage sets tell it apart on their own
   genes, ``lineage_sets: distinct``, the pair is not split), and the shared programme
   stands in for a thinly measured lineage; the two sides are compared over the cell's
   kNN neighbourhood, and a side's genes that the pair's clusters show to be measured
   (CD3/TCR in the T clusters) count against a cell whose neighbourhood lacks them, in
   proportion to how well they are measured (none for genes absent from the matrix or
   undetected everywhere); cells with
   both programmes (NKT-like; ``"both programmes: Osteoblast and Fibroblast"``) whose kNN
   neighbourhood also shows both are ``Unassigned`` with that reason in
   ``obs["annotation_note"]`` (a lone cell with a few UMIs of the other side amid cells of
   one programme is decided by the lineage rule). Coverage of each side is in ``uns``; a
   thinly measured side is warned about where the data hold cells of the pair.
2. **Graph smoothing.** Scores are diffused over the kNN graph of the (integrated)
   embedding: ``adata.obsp["connectivities"]`` when present, else a graph computed on
   ``use_rep`` / ``X_scVI`` / ``X_harmony`` / ``X_pca`` (or a PCA made here).
3. **Lineage (``obs["cell_type"]``).** Each cell's evidence is the mean of its own
   smoothed lineage scores and its over-cluster's mean scores; a cell whose own evidence
   for another lineage is stronger by ``0.1`` overrides its cluster. The over-clusters
   are leiden clusters of the annotation graph at a resolution that grows with the
   number of cells (CellTypist's majority-voting ladder: 5 below 5k cells up to 30 above
   200k), a few dozen cells each, so that a small population is not pooled with a large
   neighbour and its call does not change when unrelated cells are added to the data.
   Confidence is ``sqrt(best) x (best - second) / best``; cells below ``min_confidence``
   or with a best score under ``0.1`` are ``Unassigned`` (not forced into a lineage),
   unless their best lineage is the confident call of at least half of their
   over-cluster's cells and their best score is at least ``0.05`` (majority voting over
   over-clusters, as CellTypist does, but never against the cell's own evidence): a cell
   with few UMIs detects every marker less often, and its neighbours say what it is. Such
   cells keep their low confidence and the note ``"weak own evidence: lineage of its
   over-cluster"``; a cluster without a confident majority stays ``Unassigned``.
4. **Population (``obs["population"]``), cell level within the lineage.** A lineage has
   root populations (CD4 T vs CD8 T; classical / non-classical monocyte vs macrophage;
   mature vs immature neutrophil; cDC1 / cDC2 / pDC) that compete on the genes that
   distinguish them within the lineage (their genes minus the lineage set and minus the
   genes of the sibling roots' states, when at least two remain: IL7R/CCR7 are CD8 Tpex
   genes too, so CD4 T vs CD8 T rests on CD4/CD40LG vs CD8A/CD8B where they are measured),
   and states that refine a root: Treg within CD4 T; CD8 Tpex / CD8 Tex
   within CD8 T; M-MDSC within classical monocytes; iron-recycling macrophages within
   macrophages; PMN-MDSC within either neutrophil root. A state is judged only on genes
   that neither its parent nor its lineage set holds (so shared S100A8/9 or CD8A say
   nothing; shrunk like a lineage set where fewer than three of them are measured: M-MDSC
   without ARG1/NOS2 is not called on CD33 or IL1B alone), and is called when that score
   exceeds the parent's median cell by ``0.2`` (the threshold clipped to ``[0.15, 0.45]``):
   a data-derived "high" rather than a fixed cut-off. A state of several roots (PMN-MDSC)
   can make up most of one of them, so its typical cell is the lower of that root's median
   and the median over all its roots. Several marker files with the same target must *all*
   be present (geometric mean of their scores), e.g. the Tpex progenitor programme AND the
   PD-1/TOX exhaustion axis; the iron-recycling programme AND its VCAM1/CD163/CCR3
   phenotype. A short required set that dropping the parent's genes would leave with fewer
   than three genes keeps them (CD163-high is part of the phenotype), so it does not rest
   on one or two genes. A required set that the data cannot measure (e.g. no PDCD1/TOX in
   the matrix) means the state is not called. States are smoothed less than lineages so
   that small subpopulations inside big clusters survive.
5. **Seeded refinement in the lineage's own embedding.** Sub-types differ in few genes and
   mix on the whole-data embedding, so each lineage with several roots (>= 50 cells) is
   re-embedded alone (its own 1,000 variable genes, 20 PCs, kNN), as one would by hand.
   Roots are smoothed on that graph. Cells whose *own* marker evidence names one root
   and no other (>= 0.3 vs <= 0.05) seed an L2 logistic regression on the lineage PCs,
   which learns what else separates the roots; cells are re-decided by the mean of its
   probability and the smoothed marker score (roots with < 10 seeds keep the marker
   call). The T-cell states defined by a programme (Treg, CD8 Tpex, CD8 Tex) likewise
   get a classifier when they have >= 20 seeds (and >= 5% of the parent): the cells the
   threshold calls on their own evidence vs cells with none; probability >= 0.5 makes
   the call. States defined by a surface phenotype (M-MDSC, PMN-MDSC, the
   VCAM1+CD163+CCR3+ macrophage) keep the threshold rule (a classifier called 15-36% of
   healthy blood monocytes M-MDSC), but their scores are smoothed in the lineage's own
   embedding like the roots: cells of a real state are neighbours there, while parent
   cells that happen to express a few of its markers (mature neutrophils with some
   OLR1/ARG1) are surrounded by cells without them. On Kang 2018 step 5 lifts CD8-vs-CD4
   agreement from 0.922 to 0.937; on generated data CD8 Tpex F1 from 0.70-0.89 to
   0.87-0.98 and PMN-MDSC from 0.70-0.93 to 0.97-1.00, while fewer healthy blood monocytes
   are called M-MDSC (``benchmarks/annotation_accuracy.py``).

An optional scANVI reference (``scanvi_reference=``, a saved ``scvi.model.SCANVI``; see
``bm.tl.build_scanvi_reference``) or CellTypist model (``celltypist_model=``; needs the
``celltypist`` package) can assign a lineage to low-confidence cells; neither is required.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError
from .._logging import logger
from .._meta import add_warning, bonemet_uns
from .._signatures import GeneSet, load_gene_sets
from .._species import resolve_species
from .._vocab import CELL_TYPES, POPULATION_TO_CELL_TYPE, POPULATIONS, UNASSIGNED
from ..pp._qc import hb_genes
from ._annotate_discriminate import NKT_NOTE, _Discriminator, discriminate
from ._annotate_eval import _reference_lineages
from ._annotate_graph import (
    _clusters,
    _graph,
    _lineage_embedding,
    _over_clusters,
    _seeded_roots,
    _seeded_state,
    _smooth,
    _smoother,
)
from ._annotate_markers import (
    _expression,
    _gene_index,
    _log_normalised,
    _match,
    _remove_background,
    _scale,
    _score,
    _Set,
    _shrink,
)
from ._annotate_params import (
    _ABSENCE_MIN_CELLS,
    _CLUSTER_WEIGHT,
    _LINEAGE_SMOOTH,
    _MIN_DETECTED_CELLS,
    _MIN_GENES,
    _MIN_LINEAGE_SCORE,
    _NEG_WEIGHT,
    _OVERRIDE_MARGIN,
    _ROOT_SMOOTH,
    _SEED_MIN,
    _SEED_OTHER,
    _SEED_SCORE,
    _STATE_CAP,
    _STATE_FLOOR,
    _STATE_MARGIN,
    _STATE_SEED_FRAC,
    _STATE_SEED_MIN,
    _STATE_SEED_NONE,
    _STATE_SEED_SCORE,
    _STATE_SMOOTH,
    _SUBGRAPH_HVG,
    _SUBGRAPH_PCS,
    _SUBGRAPH_SMOOTH,
    _VOTE_MIN_SCORE,
    _VOTE_SHARE,
)

__all__ = ["CELL_TYPES", "POPULATIONS", "POPULATION_TO_CELL_TYPE", "annotate"]


# Population hierarchy inside each lineage: roots compete by score; a state refines one of
# its parents when its own programme (genes not shared with the parent) is strong enough.
_ROOTS: dict[str, tuple[str, ...]] = {
    "T cell": ("CD4 T", "CD8 T"),
    "NK cell": ("NK",),
    "B cell": ("B",),
    "Plasma cell": ("Plasma",),
    "Monocyte/Macrophage": ("Classical monocyte", "Non-classical monocyte", "Macrophage"),
    "Neutrophil": ("Mature neutrophil", "Immature neutrophil (CHI3L3+)"),
    "Dendritic cell": ("cDC1", "cDC2", "pDC"),
    "Mast cell/Basophil": ("Mast/Basophil",),
    "Erythroid": ("Erythroid progenitor",),
    "HSPC": ("HSPC",),
    "Megakaryocyte": ("Megakaryocyte",),
    "Osteoclast": ("Osteoclast",),
    "Osteoblast": ("Osteoblast",),
    "Stromal": ("MSC/Stromal",),
    "Chondrocyte": ("Chondrocyte",),
    "Fibroblast": ("Fibroblast",),
    "Pericyte/Smooth muscle": ("Pericyte/Smooth muscle",),
    "Endothelial": ("Endothelial",),
    "Tumour epithelial": ("Tumour epithelial",),
}
_STATES: dict[str, tuple[str, ...]] = {
    "CD4 T": ("Treg",),
    "CD8 T": ("CD8 Tpex (TCF1+)", "CD8 Tex (terminal)"),
    "Classical monocyte": ("M-MDSC",),
    "Macrophage": ("Iron-recycling macrophage (VCAM1+CD163+CCR3+)",),
    "Mature neutrophil": ("PMN-MDSC",),
    "MSC/Stromal": ("Osteoprogenitor",),
    "Immature neutrophil (CHI3L3+)": ("PMN-MDSC",),
}

VOTE_NOTE = "weak own evidence: lineage of its over-cluster"

# States defined by a transcriptional programme get the seeded classifier. States defined by
# a surface phenotype keep the threshold on their own markers: with the classifier, healthy
# PBMC classical monocytes were called M-MDSC (HLA-DR low) at 15-36% instead of 7-12%
# (Kang 2018, pbmc4k); PMN-MDSC (LOX-1; a state of two roots) and the VCAM1+CD163+CCR3+
# macrophage lost F1 on generated data.
_LEARNED_STATES = frozenset({"Treg", "CD8 Tpex (TCF1+)", "CD8 Tex (terminal)"})


# --------------------------------------------------------------------------- main
def annotate(
    adata: ad.AnnData,
    *,
    species: str = "auto",
    cluster_key: str | None = "leiden",
    min_confidence: float = 0.15,
    layer: str | None = None,
    use_rep: str | None = None,
    sample_key: str = "sample",
    celltypist_model: str | Path | None = None,
    scanvi_reference: str | Path | None = None,
    scanvi_max_epochs: int = 100,
    accelerator: str = "auto",
    seed: int = 0,
    copy: bool = False,
) -> ad.AnnData | None:
    """Annotate lineages and bone-metastasis populations from curated markers.

    Parameters
    ----------
    adata
        Cells x genes. ``X`` (or ``layer``) log1p(CP10k) as after ``bm.pp.normalize``; raw
        counts are normalised on the fly. Gene symbols human or mouse, any case.
    species
        ``"auto"`` (the species whose marker lists match more genes), ``"human"``, ``"mouse"``.
    cluster_key
        ``obs`` column with clusters for the T-vs-NK discriminators' cluster-level
        evidence of which genes are measured (default ``leiden``); when absent, the graph
        is clustered with leiden for this purpose only. The lineage call pools cells over
        its own over-clustering (step 3), not over these clusters.
    min_confidence
        Cells whose lineage confidence is below this are ``Unassigned``.
    layer
        Layer with log-normalised expression instead of ``X``.
    use_rep
        Embedding for the kNN graph. Default: ``obsp["connectivities"]`` if present, else
        ``X_scVI`` / ``X_harmony`` / ``X_pca`` / a PCA computed here.
    sample_key
        ``obs`` column with the sample; each gene's ambient floor (25th percentile) is
        removed per sample. Ignored when absent.
    celltypist_model
        Optional path of a CellTypist model; when given and ``celltypist`` is installed,
        its majority-voted labels assign a lineage to low-confidence cells. Skipped with a
        warning otherwise.
    scanvi_reference
        Optional directory of a saved scANVI model (``bm.tl.build_scanvi_reference`` or
        ``scvi.model.SCANVI.save``). The cells are mapped onto it (scArches: query training
        for ``scanvi_max_epochs`` on ``accelerator``), its labels and probabilities are written
        to ``obs["scanvi_label"]`` / ``obs["scanvi_probability"]``, and cells the markers leave
        unsure (confidence below ``2 x min_confidence``) take its lineage when its probability
        is >= 0.5. Needs raw counts (``layers["counts"]`` or ``X``).
    scanvi_max_epochs
        Query training epochs for ``scanvi_reference`` (scvi-tools' tutorial uses 100).
    accelerator
        Device for the scANVI query training: ``auto``, ``cpu`` or ``gpu``.
    seed
        Random seed for graph construction / clustering done here.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None`` (or the copy). Writes ``obs["cell_type"]`` and ``obs["population"]`` (categoricals
    with the fixed vocabularies ``CELL_TYPES`` / ``POPULATIONS``), ``obs["annotation_confidence"]``
    (0..1), ``obs["annotation_note"]`` (why a cell is Unassigned when there is a named reason,
    e.g. NKT-like; else empty), ``uns["bonemet"]["annotate"]`` (method, parameters, species,
    marker coverage per set, discriminator coverage, ``n_nkt_like``) and ``uns["bonemet"]["gene_sets"][<set>]`` coverage records.
    """
    if not 0.0 <= float(min_confidence) <= 1.0:
        raise InputError(f"min_confidence must be within [0, 1], got {min_confidence!r}")
    if int(scanvi_max_epochs) < 1:
        raise InputError(f"scanvi_max_epochs must be >= 1, got {scanvi_max_epochs!r}")
    if adata.n_obs < 2:
        raise InputError("annotate needs at least 2 cells")
    if layer is not None and layer not in adata.layers:
        raise InputError(f"layer {layer!r} not in adata.layers ({list(adata.layers)})")
    adata = adata.copy() if copy else adata
    scanvi_mapped = None
    if scanvi_reference is not None:  # first: a bad reference fails before anything is written
        from ._reference import scanvi_predict

        scanvi_mapped = scanvi_predict(
            adata,
            scanvi_reference,
            layer="counts",  # X when there is no counts layer
            batch_key=sample_key,
            max_epochs=scanvi_max_epochs,
            accelerator=accelerator,
            seed=seed,
        )

    lin_sets = load_gene_sets("lineage_marker")
    disc_sets = load_gene_sets("lineage_discriminator")
    pop_sets = load_gene_sets("population_marker")
    sp_ = resolve_species(adata, species)
    index = _gene_index(adata.var_names)
    # a marker detected in (almost) no cell is unmeasured, the same as one a gene filter
    # removed: calls must not depend on whether the user filtered genes before annotating
    listed = [
        g
        for s in (*lin_sets.values(), *disc_sets.values(), *pop_sets.values())
        for sign in ("positive", "negative", "shared")
        for g in s.genes(sp_, sign=sign)  # type: ignore[arg-type]
    ]
    index, undetected = _drop_undetected(adata, layer, index, listed)

    # the haemoglobin chains count as one gene of a set (their mean, a virtual column one
    # past the last gene): they are the main ambient transcripts of marrow and blood, and
    # four mouse chains would otherwise fill the top half of the erythroid set in every
    # droplet that carries ambient haemoglobin
    hb_var = set(np.flatnonzero(hb_genes(adata.var_names, sp_)).tolist())
    hb_col = adata.n_vars
    hb_used: set[int] = set()

    def match(genes: list[str]) -> list[int]:
        js = _match(genes, index)
        chains = [j for j in js if j in hb_var]
        hb_used.update(chains)
        return [j for j in js if j not in hb_var] + ([hb_col] if chains else [])

    def n_slots(genes: list[str]) -> int:
        hb = hb_genes(pd.Index(genes), sp_) if genes else np.zeros(0, dtype=bool)
        return int((~hb).sum()) + int(hb.any())

    def build(s: GeneSet) -> _Set:
        pos_g, neg_g = s.genes(sp_, sign="positive"), s.genes(sp_, sign="negative")
        return _Set(
            s.name, str(s.target), match(pos_g), match(neg_g), n_slots(pos_g), n_slots(neg_g)
        )

    lsets = {n: build(s) for n, s in lin_sets.items()}
    discs = [
        _Discriminator(
            n,
            str(s.target),
            str(s.versus),
            match(s.genes(sp_, sign="positive")),
            match(s.genes(sp_, sign="negative")),
            match(s.genes(sp_, sign="shared")),
            n_slots(s.genes(sp_, sign="positive")),
            n_slots(s.genes(sp_, sign="negative")),
            n_slots(s.genes(sp_, sign="shared")),
            s.lineage_sets or "overlapping",
        )
        for n, s in disc_sets.items()
    ]
    psets = {n: build(s) for n, s in pop_sets.items()}
    bad = {s.target for s in lsets.values()} - set(CELL_TYPES)
    bad |= {s.target for s in psets.values()} - set(POPULATIONS)
    bad |= {x for d in discs for x in (d.target, d.versus)} - set(CELL_TYPES)
    if bad:
        raise InputError(f"marker sets target labels outside the vocabulary: {sorted(bad)}")

    cols = sorted(
        (
            {j for s in (*lsets.values(), *psets.values()) for j in (*s.pos, *s.neg)}
            | {j for d in discs for j in (*d.pos, *d.neg, *d.shared)}
            | hb_used
        )
        - {hb_col}
    )
    if not cols:
        # nothing to annotate with: say so and leave every cell Unassigned, rather than
        # failing a whole pipeline run after integration
        add_warning(
            adata,
            f"annotate: none of the {sp_} marker genes is in adata.var_names (e.g. "
            f"{list(map(str, adata.var_names[:5]))}), so every cell is Unassigned; use gene "
            "symbols (not Ensembl ids) of a whole human or mouse transcriptome",
        )
        n = adata.n_obs
        adata.obs["cell_type"] = pd.Categorical([UNASSIGNED] * n, categories=list(CELL_TYPES))
        adata.obs["population"] = pd.Categorical([UNASSIGNED] * n, categories=list(POPULATIONS))
        adata.obs["annotation_confidence"] = np.zeros(n)
        adata.uns["bonemet"]["annotate"] = {"method": "none (no marker gene found)", "species": sp_}
        return adata if copy else None
    col = {j: i for i, j in enumerate(cols)}
    expr, normalised_here = _expression(adata, layer, cols)
    expr = _scale(
        _remove_background(expr, adata.obs[sample_key] if sample_key in adata.obs else None)
    )
    if hb_used:
        chains = expr[:, [col[j] for j in sorted(hb_used)]].mean(axis=1, keepdims=True)
        expr = np.hstack([expr, chains]).astype(np.float32, copy=False)
        col[hb_col] = expr.shape[1] - 1

    connectivities = _graph(adata, use_rep, layer, normalised_here, seed)
    smoother = _smoother(connectivities)
    clusters = _clusters(adata, cluster_key, connectivities, seed)

    # ---- lineage
    lineages = [c for c in CELL_TYPES if c != UNASSIGNED]
    lineage_raw = np.zeros((adata.n_obs, len(lineages)), dtype=np.float32)
    for k, lin in enumerate(lineages):
        members = [s for s in lsets.values() if s.target == lin and s.pos]
        if not members:
            lineage_raw[:, k] = -1.0
            continue
        vals = []
        for s in members:
            v = _score(expr, col, s.pos, s.neg) * _shrink(len(s.pos), s.n_pos_total)
            vals.append(v)
        # several files of one lineage are alternative programmes (cDC vs pDC): any of them
        lineage_raw[:, k] = np.max(vals, axis=0)
    lineage_neg = {
        lin: [j for s in lsets.values() if s.target == lin for j in s.neg] for lin in lineages
    }
    thin = {
        lin: not any(
            len(s.pos) >= _MIN_GENES and s.coverage >= 0.5
            for s in lsets.values()
            if s.target == lin
        )
        for lin in lineages
    }
    lineage_raw, both_notes, disc_info = discriminate(
        lineage_raw, lineages, expr, col, discs, lineage_neg, thin, smoother, clusters
    )
    lineage_smooth = _smooth(lineage_raw, smoother, *_LINEAGE_SMOOTH)
    # the cluster term pools over small over-clusters, not the user's clusters: a coarse
    # cluster that merges a small population with a big neighbour would decide its call
    over, over_resolution = _over_clusters(connectivities, seed)
    ncl = int(over.max()) + 1
    onehot = sp.csr_matrix(
        (np.ones(adata.n_obs, dtype=np.float32), (over, np.arange(adata.n_obs))),
        shape=(ncl, adata.n_obs),
    )
    sizes = np.asarray(onehot.sum(axis=1)).ravel()
    lineage_cluster = (onehot @ lineage_smooth) / np.maximum(sizes, 1)[:, None]
    combined = (1 - _CLUSTER_WEIGHT) * lineage_smooth + _CLUSTER_WEIGHT * lineage_cluster[over]
    best_comb = combined.argmax(axis=1)
    best_cell = lineage_smooth.argmax(axis=1)
    rows = np.arange(adata.n_obs)
    override = (best_cell != best_comb) & (
        lineage_smooth[rows, best_cell] - lineage_smooth[rows, best_comb] > _OVERRIDE_MARGIN
    )
    lineage_evidence = np.where(override[:, None], lineage_smooth, combined)
    lin_idx = np.where(override, best_cell, best_comb)
    s1 = lineage_evidence[rows, lin_idx]
    runner_up = lineage_evidence.copy()
    runner_up[rows, lin_idx] = -np.inf
    s2 = (
        np.maximum(runner_up.max(axis=1), 0.0)
        if lineage_evidence.shape[1] > 1
        else np.zeros_like(s1)
    )
    lin_conf = np.sqrt(np.clip(s1, 0, 1)) * np.clip((s1 - s2) / np.maximum(s1, 1e-6), 0, 1)
    lin_label = np.asarray(lineages, dtype=object)[lin_idx]

    # ---- optional refinement by a user's model (scANVI reference, CellTypist)
    ref_info: dict[str, dict[str, Any]] = {
        "scanvi": {"used": False, "reference": str(scanvi_reference or "")},
        "celltypist": {"used": False, "model": str(celltypist_model or "")},
    }
    refined = np.zeros(adata.n_obs, dtype=bool)
    if scanvi_mapped is not None:
        labels, prob, info = scanvi_mapped
        adata.obs["scanvi_label"] = pd.Categorical(labels)
        adata.obs["scanvi_probability"] = prob.astype(np.float32)
        lin_label, lin_conf, info = _refine_lineages(
            labels, prob, lin_label, lin_conf, min_confidence, {**ref_info["scanvi"], **info}
        )
        refined |= info.pop("_changed")
        ref_info["scanvi"] = info
    if celltypist_model is not None:
        got = _celltypist_predict(adata, layer, str(celltypist_model), is_counts=normalised_here)
        if got is None:
            ref_info["celltypist"]["skipped"] = "celltypist not installed"
        else:
            labels, prob, info = got
            lin_label, lin_conf, info = _refine_lineages(
                labels, prob, lin_label, lin_conf, min_confidence, info
            )
            refined |= info.pop("_changed")
            ref_info["celltypist"] = info
    s1 = np.where(refined, 1.0, s1)

    unassigned = (lin_conf < min_confidence) | (s1 < _MIN_LINEAGE_SCORE)
    voted = _over_cluster_vote(lin_label, unassigned, s1, over)
    unassigned &= ~voted
    # cells with both programmes of a discriminated pair (T/NK: NKT-like): a defined
    # outcome, Unassigned with a reason, not whichever of the two a small difference favours
    in_pair = np.zeros(adata.n_obs, dtype=bool)
    for d in discs:
        in_pair |= (both_notes == d.note) & np.isin(lin_label, [d.target, d.versus])
    both_programmes = in_pair & ~refined
    unassigned |= both_programmes
    voted &= ~both_programmes
    note = np.where(both_programmes, both_notes, np.where(voted, VOTE_NOTE, ""))
    nkt_like = note == NKT_NOTE
    lin_label = np.where(unassigned, UNASSIGNED, lin_label)

    # ---- populations within lineages
    def lineage_graph(cells: np.ndarray) -> tuple[np.ndarray, sp.csr_matrix] | None:
        return _lineage_embedding(adata, layer, normalised_here, cells, seed)

    pop_label, pop_conf = _assign_populations(
        expr, col, smoother, psets, list(lsets.values()), lin_label, lineage_graph
    )
    conf = np.where(unassigned, lin_conf, lin_conf * (0.75 + 0.25 * pop_conf))
    conf = np.clip(conf, 0.0, 1.0).astype(np.float32)

    adata.obs["cell_type"] = pd.Categorical(lin_label, categories=list(CELL_TYPES))
    adata.obs["population"] = pd.Categorical(pop_label, categories=list(POPULATIONS))
    adata.obs["annotation_confidence"] = conf
    adata.obs["annotation_note"] = pd.Categorical(note)

    # ---- provenance
    meta = bonemet_uns(adata)
    params = {
        "species": species,
        "species_used": sp_,
        "cluster_key": cluster_key
        if cluster_key and cluster_key in adata.obs
        else "leiden (computed here)",
        "cluster_term": f"leiden over-clustering at resolution {over_resolution:g} "
        f"({ncl} clusters)",
        "min_confidence": float(min_confidence),
        "layer": layer if layer is not None else "X",
        "use_rep": use_rep if use_rep is not None else "auto",
        "sample_key": sample_key if sample_key in adata.obs else "",
        "celltypist_model": str(celltypist_model) if celltypist_model is not None else "",
        "scanvi_reference": str(scanvi_reference) if scanvi_reference is not None else "",
        "scanvi_max_epochs": int(scanvi_max_epochs),
        "seed": int(seed),
    }
    coverage = {n: float(s.coverage) for n, s in {**lsets, **psets}.items()}
    low = sorted(n for n, c in coverage.items() if c < 0.5)
    meta["annotate"] = {
        "method": (
            "marker scores (top-half mean of per-gene-scaled log expression, minus 0.5x negatives), "
            "kNN-graph smoothed; lineage from cell + over-cluster evidence with per-cell override; "
            "populations within lineage at cell level (roots on lineage-distinguishing genes, "
            "states on their own genes above a parent-relative threshold; AND sets by geometric mean); "
            "roots and abundant T-cell states refined by marker-seeded logistic regression "
            "in the lineage's own PCA"
        ),
        "parameters": params,
        "species": sp_,
        "normalised_here": bool(normalised_here),
        "marker_coverage": coverage,
        "low_coverage_sets": low,
        "n_unassigned": int(unassigned.sum()),
        "n_nkt_like": int(nkt_like.sum()),
        "n_both_programmes": int(both_programmes.sum()),
        "n_over_cluster_vote": int(voted.sum()),
        "discriminators": disc_info,
        "markers_undetected": undetected,
        "constants": {
            "neg_weight": _NEG_WEIGHT,
            "min_genes_lineage": _MIN_GENES,
            "min_detected_cells": _MIN_DETECTED_CELLS,
            "cluster_weight": _CLUSTER_WEIGHT,
            "override_margin": _OVERRIDE_MARGIN,
            "min_lineage_score": _MIN_LINEAGE_SCORE,
            "state_floor": _STATE_FLOOR,
            "state_margin": _STATE_MARGIN,
            "state_cap": _STATE_CAP,
            "lineage_pcs": _SUBGRAPH_PCS,
            "lineage_hvg": _SUBGRAPH_HVG,
            "seed_score": _SEED_SCORE,
            "seed_other": _SEED_OTHER,
            "seed_min": _SEED_MIN,
            "state_seed_min": _STATE_SEED_MIN,
        },
        **{
            name: {k: v for k, v in d.items() if isinstance(v, str | bool | int | float | list)}
            for name, d in ref_info.items()
        },
    }
    meta.setdefault("parameters", {})["annotate"] = params
    gs = meta.setdefault("gene_sets", {})
    for n, s in {**lsets, **psets}.items():
        gs[n] = {
            "coverage": float(s.coverage),
            "n_found": len(s.pos),
            "n_total": int(s.n_pos_total),
        }
    if low:
        add_warning(
            adata, f"annotate: marker sets with <50% of genes found ({sp_}): {', '.join(low)}"
        )
    for name, d in disc_info.items():
        # only where the data hold cells of the pair: a PBMC matrix without osteoblast genes
        # needs no warning about the osteoblast/fibroblast split
        if d["n_pair_cells"] < _ABSENCE_MIN_CELLS:
            continue
        if not d["applied"]:
            add_warning(
                adata,
                f"annotate: {name} not applied: {d['not_applied_because']} "
                f"({d['target_genes_found']}/{d['target_genes_total']} {d['target']}, "
                f"{d['versus_genes_found']}/{d['versus_genes_total']} {d['versus']} found); "
                "their own marker sets tell the two lineages apart",
            )
        elif d["prior_used_for"]:
            add_warning(
                adata,
                f"annotate: {name}: discriminating genes thinly measured for "
                f"{', '.join(d['prior_used_for'])} ({d['target_genes_found']}/"
                f"{d['target_genes_total']} {d['target']}, {d['versus_genes_found']}/"
                f"{d['versus_genes_total']} {d['versus']} found); that side stands at a "
                "fixed prior, so the other must show its own genes to win",
            )
    logger.info(
        "annotate: %d cells, %d unassigned; lineages: %s",
        adata.n_obs,
        int(unassigned.sum()),
        ", ".join(f"{k}={v}" for k, v in pd.Series(lin_label).value_counts().items()),
    )
    return adata if copy else None


def _drop_undetected(
    adata: ad.AnnData, layer: str | None, index: dict[str, int], genes: Sequence[str]
) -> tuple[dict[str, int], list[str]]:
    """``index`` without the marker genes detected in fewer than ``_MIN_DETECTED_CELLS``
    cells (or 1% of the cells, if fewer), and those genes' names."""
    cols = sorted(set(_match(list(genes), index)))
    if not cols:
        return index, []
    X = adata.X if layer is None else adata.layers[layer]
    sub = X[:, cols]
    n_det = np.asarray((sub > 0).sum(axis=0)).ravel()
    floor = min(_MIN_DETECTED_CELLS, max(1, math.ceil(0.01 * adata.n_obs)))
    gone = {c for c, n in zip(cols, n_det) if n < floor}
    if not gone:
        return index, []
    kept = {g: j for g, j in index.items() if j not in gone}
    return kept, sorted(str(adata.var_names[j]) for j in gone)


def _over_cluster_vote(
    lin_label: np.ndarray, unassigned: np.ndarray, s1: np.ndarray, over: np.ndarray
) -> np.ndarray:
    """Cells whose weak evidence agrees with their over-cluster's majority call.

    A cell below the confidence rule (few UMIs: every marker detected less often) keeps its
    best lineage when that lineage is the confident call of at least ``_VOTE_SHARE`` of its
    over-cluster's cells and its own best score is at least ``_VOTE_MIN_SCORE``: majority
    voting over over-clusters as in CellTypist, but never against the cell's own evidence,
    and a cluster of weak cells (no confident majority) stays Unassigned.
    """
    labels, codes = np.unique(lin_label.astype(str), return_inverse=True)
    ncl = int(over.max()) + 1
    called = ~unassigned
    counts = np.zeros((ncl, labels.size), dtype=np.int64)
    np.add.at(counts, (over[called], codes[called]), 1)
    sizes = np.bincount(over, minlength=ncl)
    top = counts.argmax(axis=1)  # ties: the first label in sorted order
    majority = (counts.max(axis=1) > 0) & (counts.max(axis=1) >= _VOTE_SHARE * sizes)
    voted = unassigned & majority[over] & (codes == top[over]) & (s1 >= _VOTE_MIN_SCORE)
    return voted


def _set_scores(
    E: np.ndarray, col: Mapping[int, int], members: list[_Set], drop: set[int]
) -> np.ndarray | None:
    """AND-combined score of the sets of one target; ``drop`` removes parent genes."""
    vals = []
    for s in members:
        if not s.pos:  # a required set that cannot be measured: the target cannot be called
            return None
        pos = [j for j in s.pos if j not in drop]
        if not pos:  # every gene is already implied by the parent / lineage
            continue
        if len(members) > 1 and len(pos) < min(len(s.pos), _MIN_GENES):
            # a short required phenotype (VCAM1+CD163+CCR3+) keeps the parent genes it
            # names: without them it would rest on one or two genes, and its high level
            # of a shared gene (CD163) is part of the phenotype
            pos = list(s.pos)
        # shrunk by the genes actually scored: a state left with one or two of its own
        # genes measured (M-MDSC without ARG1/NOS2) must not be called on one gene
        n_listed = s.n_pos_total - (len(s.pos) - len(pos))
        vals.append(_score(E, col, pos, s.neg) * _shrink(len(pos), n_listed))
    if not vals:
        return None
    if len(vals) == 1:
        return vals[0]
    # AND: geometric mean of the (non-negative) set scores; zero when any set is absent
    return np.exp(np.mean(np.log(np.clip(np.stack(vals), 1e-6, None)), axis=0)).astype(np.float32)


def _assign_populations(
    E: np.ndarray,
    col: Mapping[int, int],
    W: sp.csr_matrix,
    psets: Mapping[str, _Set],
    lsets: Sequence[_Set],
    lin_label: np.ndarray,
    lineage_graph: Callable[[np.ndarray], tuple[np.ndarray, sp.csr_matrix] | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    n = E.shape[0]
    by_target: dict[str, list[_Set]] = {}
    for s in psets.values():
        by_target.setdefault(s.target, []).append(s)
    pop = np.full(n, UNASSIGNED, dtype=object)
    conf = np.zeros(n, dtype=np.float32)
    cache: dict[tuple[str, str], np.ndarray | None] = {}

    raw_cache: dict[tuple[str, str], np.ndarray | None] = {}

    def raw_score(target: str, parent: str | None) -> np.ndarray | None:
        key = (target, parent or "")
        if key not in raw_cache:
            drop: set[int] = set()
            if parent is not None:  # a state is judged on genes its parent/lineage lacks
                drop = {j for s in by_target.get(parent, []) for j in s.pos}
                drop |= {
                    j for s in lsets if s.target == POPULATION_TO_CELL_TYPE[parent] for j in s.pos
                }
            else:  # a root competes on the genes that distinguish it within its lineage
                lineage = POPULATION_TO_CELL_TYPE[target]
                lin_genes = {j for s in lsets if s.target == lineage for j in s.pos}
                own = [j for s in by_target.get(target, []) for j in s.pos]
                # ... and from its sibling roots' states: a gene a sibling's state lists
                # (IL7R/CCR7 of CD8 Tpex next to CD4 T) says nothing between the two roots
                mine = set(_STATES.get(target, ()))
                sib_states = {
                    st
                    for r in _ROOTS[lineage]
                    if r != target
                    for st in _STATES.get(r, ())
                    if st not in mine
                }
                sib_genes = {j for st in sib_states for s in by_target.get(st, []) for j in s.pos}
                if len(_ROOTS[lineage]) > 1 and len(set(own) - lin_genes - sib_genes) >= 2:
                    drop = lin_genes | sib_genes
                elif len(_ROOTS[lineage]) > 1 and len(set(own) - lin_genes) >= 2:
                    drop = lin_genes
            raw_cache[key] = _set_scores(E, col, by_target.get(target, []), drop)
        return raw_cache[key]

    def smoothed(target: str, parent: str | None) -> np.ndarray | None:
        key = (target, parent or "")
        if key not in cache:
            raw = raw_score(target, parent)
            how = _ROOT_SMOOTH if parent is None else _STATE_SMOOTH
            cache[key] = None if raw is None else _smooth(raw[:, None], W, *how)[:, 0]
        return cache[key]

    for lin, roots in _ROOTS.items():
        cells = np.flatnonzero(lin_label == lin)
        if cells.size == 0:
            continue
        emb = lineage_graph(cells) if (lineage_graph is not None and len(roots) > 1) else None
        # in the lineage's own embedding roots are smoothed there (from raw scores);
        # otherwise on the whole-data graph
        score_of = raw_score if emb is not None else smoothed
        avail = [(r, v) for r in roots if (v := score_of(r, None)) is not None]
        if not avail:
            avail = [(roots[0], np.zeros(n, np.float32))]
        R = np.stack([v[cells] for _, v in avail], axis=1)
        if emb is not None:
            pcs, Wl = emb
            fit = _seeded_roots(R, pcs) if len(avail) > 1 else None
            R = _smooth(R, Wl, *_SUBGRAPH_SMOOTH)
            if fit is not None:
                P, known = fit
                # a cell whose marker evidence points to a root the classifier knows is
                # re-decided among those roots by the mean of the classifier's
                # probability and the smoothed marker score; other roots keep theirs
                to_known = known[R.argmax(axis=1)]
                Q = np.where(known[None, :], 0.5 * P + 0.5 * R, -1.0)
                R = np.where(to_known[:, None], Q, R)
        bi = R.argmax(axis=1)
        root = np.asarray([r for r, _ in avail], dtype=object)[bi]
        if R.shape[1] > 1:
            srt = np.sort(R, axis=1)
            c = np.clip((srt[:, -1] - srt[:, -2]) / np.maximum(np.abs(srt[:, -1]), 1e-6), 0, 1)
        else:
            c = np.ones(cells.size, dtype=np.float32)
        label = root.copy()
        # states refine their parent root when their own programme is present
        for parent in set(root.tolist()):
            states = _STATES.get(parent, ())
            if not states:
                continue
            m = root == parent
            sub = cells[m]
            # each state's score over the lineage's cells (judged on genes this parent lacks)
            S_all = []
            for st in states:
                if emb is not None and st not in _LEARNED_STATES:
                    # a phenotype state is smoothed in the lineage's own embedding, where
                    # its cells are neighbours and look-alikes scattered in the parent are not
                    rv = raw_score(st, parent)
                    v = None if rv is None else _smooth(rv[cells, None], emb[1], *_SUBGRAPH_SMOOTH)
                    S_all.append(np.full(cells.size, -np.inf, np.float32) if v is None else v[:, 0])
                    continue
                v = smoothed(st, parent)
                S_all.append(np.full(cells.size, -np.inf, np.float32) if v is None else v[cells])
            S = np.stack(S_all, axis=1)[m]
            # a state needs its programme clearly above the parent's typical cell
            # (median of the parent's cells + margin), and above an absolute floor. A
            # state of several roots (PMN-MDSC) may make up most of one of them, so its
            # typical cell is taken over the cells of all its roots where that is lower
            base = np.median(np.where(np.isfinite(S), S, 0), axis=0)
            for i, st in enumerate(states):
                roots_of = [r for r, sts in _STATES.items() if st in sts and r in roots]
                pooled = np.isin(root, roots_of)
                if len(roots_of) > 1 and pooled.sum() > m.sum() and np.isfinite(S[:, i]).all():
                    base[i] = min(base[i], float(np.median(S_all[i][pooled])))
            thr = np.clip(base + _STATE_MARGIN, _STATE_FLOOR, _STATE_CAP)
            excess = S - thr[None, :]
            if emb is not None:  # the lineage embedding also serves its states
                # seeded classifier in the lineage's embedding: seeds are the cells the
                # threshold calls on their own evidence, and cells with none at all
                local = np.flatnonzero(m)
                for i, st in enumerate(states):
                    rv = raw_score(st, parent)
                    if rv is None or st not in _LEARNED_STATES:
                        continue
                    rs = rv[sub]
                    pos = (rs >= _STATE_SEED_SCORE) & (excess[:, i] >= 0)
                    neg = (rs <= _STATE_SEED_NONE) & (excess[:, i] < 0)
                    if pos.sum() < max(_STATE_SEED_MIN, _STATE_SEED_FRAC * sub.size) or (
                        neg.sum() < _STATE_SEED_MIN
                    ):  # rare states keep the threshold rule (too few seeds to learn from)
                        continue
                    p_state = _seeded_state(emb[0][local], pos, neg)
                    # same scale as the threshold rule: >= 0 is a call
                    excess[:, i] = (p_state - 0.5) * (2 * _STATE_MARGIN)
            bs = excess.argmax(axis=1)
            top = excess[np.arange(sub.size), bs]
            hit = top >= 0
            lab = label[m]
            lab[hit] = np.asarray(states, dtype=object)[bs[hit]]
            label[m] = lab
            cm = c[m]
            cm[hit] = np.minimum(cm[hit], np.clip(0.5 + top[hit] / (2 * _STATE_MARGIN), 0, 1))
            cm[~hit] = np.minimum(cm[~hit], np.clip(-top[~hit] / _STATE_MARGIN, 0, 1))
            c[m] = cm
        pop[cells] = label
        conf[cells] = c
    return pop, conf


def _lineage_of(label: str) -> str | None:
    """bonemet lineage of a model's label: its own vocabulary first, then common spellings."""
    if label in POPULATION_TO_CELL_TYPE:
        return POPULATION_TO_CELL_TYPE[label]
    if label in CELL_TYPES:
        return None if label == UNASSIGNED else label
    return (_reference_lineages(label) or (None,))[0]


def _refine_lineages(
    labels: np.ndarray,
    prob: np.ndarray,
    lin_label: np.ndarray,
    lin_conf: np.ndarray,
    min_confidence: float,
    info: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Low-confidence cells that a model calls with probability >= 0.5 take its lineage.

    "changed" when it differs from the marker call, "confirmed" when it agrees. Also records
    how often the model's lineage agrees with the marker lineage over all cells it can name.
    """
    mapped = np.array([_lineage_of(str(x)) for x in labels], dtype=object)
    named = np.array([m is not None for m in mapped])
    used = (lin_conf < 2 * min_confidence) & (prob >= 0.5) & named
    differs = used & (mapped != lin_label)
    # agreement with the lineage as given, before this model changes any cell
    agreement = float((mapped[named] == lin_label[named]).mean()) if named.any() else 0.0
    lin_label = lin_label.copy()
    lin_conf = lin_conf.copy()
    lin_label[used] = mapped[used]
    lin_conf[used] = np.maximum(lin_conf[used], prob[used].astype(np.float32) * 0.5)
    info.update(
        used=True,
        n_changed=int(differs.sum()),
        n_confirmed=int((used & ~differs).sum()),
        n_unmapped_labels=int((~named).sum()),
        lineage_agreement=agreement,
        _changed=used,
    )
    return lin_label, lin_conf, info


def _celltypist_predict(
    adata: ad.AnnData, layer: str | None, model_path: str, *, is_counts: bool = False
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    """A CellTypist model's label and probability per cell (``None`` when not installed).

    CellTypist expects log1p(CP10k) expression; raw counts are normalised for it here.
    """
    try:
        import celltypist  # type: ignore[import-not-found]
    except ImportError:
        add_warning(
            adata,
            "annotate: celltypist_model given but celltypist is not installed; skipped "
            "(pip install celltypist)",
        )
        return None
    if not Path(model_path).is_file():
        raise InputError(
            f"CellTypist model {model_path!r} not found; pass the path of a .pkl model"
        )
    tmp = _log_normalised(adata, layer, is_counts)
    res = celltypist.annotate(tmp, model=model_path, majority_voting=False)
    labels = res.predicted_labels["predicted_labels"].astype(str).to_numpy()
    prob = res.probability_matrix.max(axis=1).to_numpy()
    return labels, prob, {"model": model_path}
