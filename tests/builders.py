"""Builders of test data shared by several test modules (import them from here).

``BAD_SHEETS`` are samplesheets that both the Python reader and the Nextflow workflow must
refuse (``write_sheet`` puts one beside the two data files it names).

``scanpy_prep`` and ``read_labelled`` prepare the shared real labelled sets for the
annotator the plain-scanpy way (no scVI).

``make_annotated`` generates, with numpy only, an AnnData with every slot of the AnnData
contract filled (counts, log-normalised X, QC metrics and records, embeddings,
populations, scores), so figures and the report are tested without running the stages.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

import bonemet as bm
from bonemet._signatures import load_gene_sets
from bonemet.pl import POPULATION_COLORS

# populations the generated data holds (a realistic bone-metastasis mix)
POPS = (
    "CD4 T", "Treg", "CD8 T", "CD8 Tpex (TCF1+)", "CD8 Tex (terminal)", "NK", "B", "Plasma",
    "Classical monocyte", "Non-classical monocyte", "Macrophage",
    "Iron-recycling macrophage (VCAM1+CD163+CCR3+)", "M-MDSC", "PMN-MDSC",
    "Immature neutrophil (CHI3L3+)", "Mature neutrophil", "cDC2", "Erythroid progenitor",
    "Osteoclast", "MSC/Stromal", "Endothelial", "Tumour epithelial", "Unassigned",
)  # fmt: skip
LINEAGE = {
    "CD4 T": "T cell", "Treg": "T cell", "CD8 T": "T cell", "CD8 Tpex (TCF1+)": "T cell",
    "CD8 Tex (terminal)": "T cell", "NK": "NK cell", "B": "B cell", "Plasma": "Plasma cell",
    "Classical monocyte": "Monocyte/Macrophage", "Non-classical monocyte": "Monocyte/Macrophage",
    "Macrophage": "Monocyte/Macrophage",
    "Iron-recycling macrophage (VCAM1+CD163+CCR3+)": "Monocyte/Macrophage",
    "M-MDSC": "Monocyte/Macrophage", "PMN-MDSC": "Neutrophil",
    "Immature neutrophil (CHI3L3+)": "Neutrophil", "Mature neutrophil": "Neutrophil",
    "cDC2": "Dendritic cell", "Erythroid progenitor": "Erythroid", "Osteoclast": "Osteoclast",
    "MSC/Stromal": "Stromal", "Endothelial": "Endothelial",
    "Tumour epithelial": "Tumour epithelial", "Unassigned": "Unassigned",
}  # fmt: skip
PROGRAMMES = ("erythroid_mimicry", "ferroptosis_driver", "osteoclast_activity", "hypoxia")
AXIS_GENES = ("SPP1", "TFRC", "SLC40A1", "DKK1", "TIGIT", "PVR", "CD226", "NECTIN2")


def _symbol(g: str, species: str) -> str:
    return g if species == "human" else g[:1].upper() + g[1:].lower()


def _removed_cells(rng: np.random.Generator, removed: dict[str, int], med: float) -> dict:
    """QC metrics of the removed cells, as ``bm.pp.qc`` records them (reason: an index into
    ``bm.pp.QC_REASONS``)."""
    reasons = np.concatenate([np.full(n, bm.pp.QC_REASONS.index(r)) for r, n in removed.items()])
    n = reasons.size
    counts = rng.lognormal(np.log(med), 0.4, n)
    counts[reasons == 0] = rng.uniform(3, 19, (reasons == 0).sum())
    mito = rng.gamma(2.0, 2.0, n)
    mito[reasons == 4] = rng.uniform(16, 60, (reasons == 4).sum())
    return {
        "qc_total_counts": counts.astype(np.float32),
        "qc_n_genes": np.maximum(counts * 0.6, 1).astype(np.float32),
        "qc_pct_mito": mito.astype(np.float32),
        "qc_pct_hb": rng.gamma(1.0, 0.3, n).astype(np.float32),
        "reason": reasons.astype(np.int8),
    }


def make_annotated(
    n_cells: int = 1200,
    n_samples: int = 3,
    *,
    species: str = "mouse",
    seed: int = 0,
    condition: bool = True,
    labels: bool = True,
) -> ad.AnnData:
    """A fully annotated AnnData as the pipeline leaves it, generated with numpy."""
    rng = np.random.default_rng(seed)
    markers = {
        gs.target: gs.genes(species)[:6]
        for gs in load_gene_sets("population_marker").values()
        if gs.target in POPS
    }
    programmes = {n: gs.genes(species) for n, gs in load_gene_sets("programme").items()}
    genes: list[str] = []
    for g in [
        *(x for v in markers.values() for x in v),
        *(x for n in PROGRAMMES for x in programmes[n]),
    ]:
        if g not in genes:
            genes.append(g)
    mt = [f"{'MT' if species == 'human' else 'mt'}-{x}" for x in ("Co1", "Co2", "Nd1", "Atp6")]
    mt = [m.upper() if species == "human" else m for m in mt]
    extra = [_symbol(g, species) for g in AXIS_GENES] + mt + [f"Gene{i}" for i in range(60)]
    genes += [g for g in extra if g not in genes]
    n_genes = len(genes)
    gidx = {g: i for i, g in enumerate(genes)}

    samples = [f"S{i + 1}" for i in range(n_samples)]
    smp = rng.choice(samples, size=n_cells)
    p = np.linspace(2, 1, len(POPS))
    pop = rng.choice(POPS, size=n_cells, p=p / p.sum())
    lam = np.full((n_cells, n_genes), 0.3)
    for k, name in enumerate(POPS):
        m = pop == name
        for g in markers.get(name, []):
            lam[np.ix_(m, [gidx[g]])] += 4.0
        lam[np.ix_(m, [gidx[g] for g in extra[:8]])] += 0.5 * (k % 3)
    counts = rng.poisson(lam * rng.uniform(0.6, 1.6, size=(n_cells, 1))).astype(np.float32)
    Xc = sp.csr_matrix(counts)
    lib = counts.sum(1, keepdims=True)
    X = sp.csr_matrix(np.log1p(counts / np.maximum(lib, 1) * 1e4).astype(np.float32))

    obs = pd.DataFrame(index=[f"{s}_cell{i}" for i, s in enumerate(smp)])
    obs["sample"] = pd.Categorical(smp, categories=samples)
    obs["batch"] = obs["sample"]
    if condition:
        cond = {s: ("bone_metastasis" if i % 2 == 0 else "control") for i, s in enumerate(samples)}
        obs["condition"] = pd.Categorical([cond[s] for s in smp])
    pct_mito = counts[:, [gidx[m] for m in mt]].sum(1) / np.maximum(lib[:, 0], 1) * 100
    obs["qc_total_counts"] = lib[:, 0]
    obs["qc_n_genes"] = (counts > 0).sum(1).astype(float)
    obs["qc_pct_mito"] = pct_mito
    obs["qc_pct_hb"] = rng.gamma(1.0, 0.3, size=n_cells)
    obs["doublet_score"] = rng.beta(1, 10, size=n_cells)
    obs["predicted_doublet"] = False
    vocab = list(POPULATION_COLORS)
    obs["population"] = pd.Categorical(pop, categories=vocab)
    obs["cell_type"] = pd.Categorical([LINEAGE[x] for x in pop])
    obs["annotation_confidence"] = rng.uniform(0.2, 1.0, size=n_cells)
    if labels:
        obs["true_population"] = pd.Categorical(np.where(pop == "Unassigned", "CD4 T", pop))
    obs["leiden"] = pd.Categorical([str(POPS.index(x) % 12) for x in pop])
    for name in PROGRAMMES:
        cols = [gidx[g] for g in programmes[name] if g in gidx]
        v = np.asarray(X[:, cols].mean(1)).ravel() - np.asarray(X.mean(1)).ravel()
        obs[f"score_{name}"] = v
        obs[f"aucell_{name}"] = (v - v.min()) / (np.ptp(v) + 1e-9)

    centre = rng.normal(0, 6, size=(len(POPS), 10))
    pidx = np.array([POPS.index(x) for x in pop])
    sidx = np.array([samples.index(s) for s in smp])
    shift = rng.normal(0, 4, size=(n_samples, 10))
    latent = centre[pidx] + rng.normal(0, 1, size=(n_cells, 10))
    pca = latent + shift[sidx]
    a = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))
    a.layers["counts"] = Xc
    a.var["highly_variable"] = True
    a.var["mito"] = a.var_names.isin(mt)
    a.var["hb"] = False
    a.obsm["X_pca"] = pca.astype(np.float32)
    a.obsm["X_scVI"] = latent.astype(np.float32)
    a.obsm["X_umap"] = (latent[:, :2] + rng.normal(0, 0.3, (n_cells, 2))).astype(np.float32)
    a.obsm["X_umap_unintegrated"] = (pca[:, :2]).astype(np.float32)
    qc = {}
    for s in samples:
        n_after = int((smp == s).sum())
        removed = {"low_counts": 40, "high_counts": 3, "low_genes": 12, "high_genes": 2,
                   "high_mito": 25, "doublet": 9}  # fmt: skip
        qc[s] = {
            "n_before": n_after + sum(removed.values()),
            **{f"removed_{r}": v for r, v in removed.items()},
            "n_after": n_after,
            "threshold_min_counts": 20.0,
            "threshold_max_counts": float(np.percentile(lib, 99.5)),
            "threshold_min_genes": 10.0,
            "threshold_max_genes": float(n_genes),
            "threshold_max_pct_mito": 15.0,
            "floor_min_counts": 10.0,
            "median_pct_hb": 0.2,
            "high_ambient_hb": s == samples[0],
            "doublets": "scrublet (threshold 0.25)",
            "cells_removed": _removed_cells(rng, removed, float(np.median(lib))),
        }
    a.uns["bonemet"] = {
        "version": bm.__version__,
        "species": species,
        "is_counts": True,
        "device": "cpu",
        "qc": qc,
        "gene_sets": {
            n: {"coverage": 1.0 if i else 0.4, "n_found": 4, "n_total": 10}
            for i, n in enumerate(PROGRAMMES)
        },
        "warnings": ["gene set 'erythroid_mimicry': 40% of its genes found (< 50%)"],
        "parameters": {"qc": {"min_counts": 500}, "integrate": {"method": "scvi"}},
        "timings": {"qc": 1.5, "integrate": 12.0},
        "inputs": {
            s: {"path": f"/data/{s}.h5ad", "sha256": "0" * 64, "format": "h5ad"} for s in samples
        },
    }
    return a


BAD_SHEETS: list[tuple[str, str]] = [
    ("samples.csv", "sample,file\nA,a.h5ad\n"),  # no path column
    ("samples.csv", "sample,path\nA,a.h5ad\nB,missing.h5ad\n"),  # a file that does not exist
    ("samples.csv", "sample,path\nA,a.h5ad\nB,b.h5ad\nA,b.h5ad\n"),  # a duplicate sample
    ("samples.csv", "sample,path\nA;rm -rf,a.h5ad\n"),  # an unsafe sample id
    ("samples.csv", "sample,path,format\nA,a.h5ad,bam\n"),  # an unknown format
    ("samples.csv", "sample,path,species\nA,a.h5ad,rat\n"),  # an unknown species
    ("samples.csv", "sample,path\n,a.h5ad\n"),  # an empty sample
    ("samples.txt", "sample,path\nA,a.h5ad\n"),  # .txt is tab-separated: no 'path' column
]


def write_sheet(folder: Path, name: str, text: str) -> Path:
    """``folder/name`` holding ``text``, beside empty ``a.h5ad`` and ``b.h5ad``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.h5ad").write_bytes(b"")
    (folder / "b.h5ad").write_bytes(b"")
    p = folder / name
    p.write_text(text)
    return p


def scanpy_prep(adata: ad.AnnData) -> ad.AnnData:
    """Counts in X -> log1p CP10k, HVG, PCA, kNN graph, leiden (plain scanpy)."""
    import scanpy as sc

    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=2000, flavor="seurat")
    sc.pp.pca(adata, n_comps=30, mask_var="highly_variable", random_state=0)
    sc.pp.neighbors(adata, n_neighbors=15, random_state=0)
    sc.tl.leiden(adata, flavor="igraph", n_iterations=2, directed=False, random_state=0)
    return adata


def read_labelled(shared_data: Path, name: str) -> ad.AnnData:
    """A shared real set with its ``cell_type`` labels moved to ``obs["reference_label"]``."""
    adata = ad.read_h5ad(shared_data / f"{name}.h5ad")
    adata.obs["reference_label"] = adata.obs.pop("cell_type").astype(str)
    return adata
