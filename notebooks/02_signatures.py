# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Signatures: inspect, extend, compare scoring methods, add your own
#
# bonemet's gene sets live in `signatures/`, one YAML file per set, each with its human
# and mouse symbols, its source (DOI, PMID or database release) and notes where a list is a
# proxy. This notebook
#
# 1. lists the curated sets and their provenance,
# 2. checks how many genes of each set a dataset has (coverage),
# 3. compares the two scoring methods (scanpy's control-gene score and AUCell),
# 4. adds a custom gene set, from a Python list and from a validated YAML file.

# %%
# %matplotlib inline
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from scipy.stats import spearmanr

import bonemet as bm
from bonemet import load_gene_set_file, load_gene_sets, match_genes

N_CELLS = int(os.environ.get("BONEMET_NB_CELLS", "4000"))
OUT = Path(os.environ.get("BONEMET_NB_OUT", "results/notebooks")) / "02_signatures"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. The curated gene sets
#
# Three kinds: `lineage_marker` and `population_marker` sets (signed marker lists used by
# the annotation) and `programme` sets (the scores).

# %%
sets = load_gene_sets()
catalogue = pd.DataFrame(
    {
        "kind": gs.kind,
        "version": gs.version,
        "n_human": len(gs.genes("human")),
        "n_mouse": len(gs.genes("mouse")),
        "source": gs.source[:70],
    }
    for gs in sets.values()
)
catalogue.index = list(sets)
catalogue["kind"].value_counts()

# %%
programmes = load_gene_sets("programme")
catalogue.loc[list(programmes)]

# %% [markdown]
# Every set documents where it comes from. The erythroid-mimicry list, for example, is a
# proxy built from erythroid marker databases because the paper's own list is not public:

# %%
ery = programmes["erythroid_mimicry"]
print(ery.description)
print("source:", ery.source)
print("notes:", ery.notes)
print("mouse genes:", ery.genes("mouse"))

# %% [markdown]
# ## 2. Data to score
#
# A small simulated mouse dataset, quality-controlled and normalised. Scoring does not need
# scVI, so this notebook integrates with PCA only (`method="pca"`), which is fast.

# %%
adata = bm.datasets.simulate_bone_metastasis(N_CELLS, n_samples=2, species="mouse", seed=2)
adata = bm.pp.qc(adata, min_counts=200, min_genes=100, seed=0, copy=True)
bm.pp.normalize(adata, n_top_genes=1500, batch_key="sample")
bm.tl.integrate(adata, method="pca", seed=0)
bm.tl.cluster(adata, seed=0)
bm.tl.annotate(adata, species="mouse")
adata

# %% [markdown]
# ### Coverage
#
# Matching is case-insensitive, so upper-cased mouse symbols still match. A set whose
# coverage is below `min_coverage` (default 50 %) is not scored and a warning is recorded.

# %%
coverage = pd.DataFrame(
    {
        name: {
            "n_genes": len(gs.genes("mouse")),
            "coverage": match_genes(gs.genes("mouse"), adata.var_names)[1],
        }
        for name, gs in programmes.items()
    }
).T.sort_values("coverage")
coverage

# %% [markdown]
# ## 3. Score, and compare the two methods
#
# `bm.tl.score` runs every method on every set through one runner:
# `obs["score_<set>"]` is scanpy's `score_genes` (mean expression of the set minus a
# matched random control set, as Seurat's AddModuleScore) and `obs["aucell_<set>"]` is
# AUCell (the area under the recovery curve of the set's genes in each cell's ranking).

# %%
bm.tl.score(adata, methods=("score_genes", "aucell"), species="mouse", seed=0)
pd.DataFrame(adata.uns["bonemet"]["gene_sets"]).T[["coverage", "n_found", "n_total", "scored"]]

# %%
scored = [c.removeprefix("score_") for c in adata.obs.columns if c.startswith("score_")]
agreement = pd.Series(
    {
        s: spearmanr(adata.obs[f"score_{s}"], adata.obs[f"aucell_{s}"]).statistic
        for s in scored
        if f"aucell_{s}" in adata.obs
    },
    name="Spearman rho (score_genes vs AUCell)",
).sort_values()
agreement.to_frame()

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), layout="constrained")
for ax, s in zip(axes, ["erythroid_mimicry", "osteoclast_activity"]):
    ax.scatter(adata.obs[f"score_{s}"], adata.obs[f"aucell_{s}"], s=3, alpha=0.5, rasterized=True)
    ax.set_xlabel("score_genes (a.u.)")
    ax.set_ylabel("AUCell (0–1)")
    ax.set_title(s.replace("_", " "))
plt.show()

# %% [markdown]
# Per population and sample, `bm.tl.score_summary` gives means and the fraction of cells
# above a data-derived threshold.

# %%
summary = bm.tl.score_summary(adata)
summary.head()

# %%
bm.pl.signature_violins(adata, keys=["score_erythroid_mimicry", "score_osteoclast_activity"])

# %% [markdown]
# ## 4. Add your own gene set
#
# ### From a Python list
#
# Pass `{name: [genes]}`; the result lands in `obs["score_<name>"]` like a curated set.
# A per-cell score suits a programme that one cell runs on its own; here a small
# interferon-response set (interferon-stimulated genes).

# %%
custom = {"interferon_response": ["Isg15", "Ifitm3", "Mx1", "Stat1", "Irf7", "Bst2", "Xaf1"]}
bm.tl.score(adata, gene_sets=custom, methods=("score_genes",), species="mouse", seed=0)
ifn = adata.obs.groupby("population", observed=True)["score_interferon_response"].mean()
ifn.sort_values().tail()

# %%
bm.pl.signature_umaps(adata, keys=["score_interferon_response", "score_erythroid_mimicry"])

# %% [markdown]
# A ligand and its receptor are not a per-cell programme: osteopontin (SPP1) is made by
# osteoclasts, macrophages, osteoblasts or tumour cells and read by CD44 / integrins on
# *other* cells (CD8 T cells in Cheng et al. 2025), so a per-cell "SPP1 + CD44" score mixes
# two cells' genes. Ligand–receptor pairs are read by the ligand–receptor analysis of the
# compare stage (LIANA+, per condition); what a per-cell read-out can say is who makes
# SPP1: its expression by source population.

# %%
spp1 = adata.var_names.get_loc("Spp1")
col = adata.X[:, spp1]
col = col.toarray().ravel() if hasattr(col, "toarray") else col.ravel()
by_source = (
    pd.DataFrame({"population": adata.obs["population"].astype(str).to_numpy(), "Spp1": col})
    .groupby("population")["Spp1"]
    .agg(mean_log1p_cp10k="mean", fraction_detected=lambda v: (v > 0).mean(), n_cells="size")
    .sort_values("mean_log1p_cp10k", ascending=False)
)
by_source.head(8)

# %% [markdown]
# Erythroid mimicry is read per cell, but as a call rather than a score:
# `bm.tl.erythroid_mimicry` tests each tumour cell's globin counts against a
# library-size-matched null and reports the called fraction per sample with a 95% CI.

# %%
bm.tl.erythroid_mimicry(adata)[
    [
        "sample",
        "n_tumour",
        "n_called",
        "fraction_called",
        "fraction_ci_low",
        "fraction_ci_high",
        "null_source",
    ]
]

# %% [markdown]
# ### As a validated YAML file
#
# To share a set, write it in the same format as `signatures/` (name = file stem, source,
# human and mouse lists). The loader validates it and fails with a clear message on any
# problem (empty species list without an explanation, duplicate genes, missing source ...).

# %%
yaml_text = """\
name: interferon_response
kind: programme
version: "2025.1"
description: type I interferon response (interferon-stimulated genes)
source: "illustrative tutorial set: interferon-stimulated genes"
notes: "small illustrative set for the tutorial, not a curated signature"
human: [ISG15, IFITM3, MX1, STAT1, IRF7, BST2, XAF1]
mouse: [Isg15, Ifitm3, Mx1, Stat1, Irf7, Bst2, Xaf1]
"""
my_dir = OUT / "my_signatures"
my_dir.mkdir(exist_ok=True)
(my_dir / "interferon_response.yaml").write_text(yaml_text)
mine = load_gene_sets(directory=my_dir)
mine["interferon_response"].genes("human")

# %% [markdown]
# A broken file is refused with a message that says what to fix:

# %%
(my_dir / "broken.yaml").write_text(
    "name: broken\nkind: programme\nversion: '1'\nsource: me\nhuman: [A, A]\n"
)
try:
    load_gene_set_file(my_dir / "broken.yaml")
except bm.ConfigError as e:
    print("ConfigError:", e)
(my_dir / "broken.yaml").unlink()

# %% [markdown]
# Curated and custom sets can be scored together by name, or the file's genes passed as a
# dict as above. Put new curated sets in `signatures/` (with their source) to make them part
# of every run.

# %%
plt.close("all")
