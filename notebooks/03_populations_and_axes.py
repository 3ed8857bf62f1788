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
# # Named populations, the review's axes, and figures for a paper
#
# The bone-metastasis literature this project serves is about a handful of cell states:
# VCAM1⁺CD163⁺CCR3⁺ iron-recycling macrophages (Han 2025), CD8⁺TCF1⁺ progenitor-exhausted T
# cells depleted by osteoclast-derived osteopontin (Cheng 2025), CHI3L3⁺ immature
# neutrophils induced by tumour DKK1 (Shi 2025), MDSC and TIGIT (Monteran 2024). This
# notebook runs the pipeline in one call (`bm.run`), then looks at those populations and
# the per-sample axes that link them, and makes publication figures.

# %%
# %matplotlib inline
import os
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import Rectangle

import bonemet as bm
from bonemet.pl import POPULATION_COLORS

N_CELLS = int(os.environ.get("BONEMET_NB_CELLS", "8000"))
MAX_EPOCHS = int(os.environ.get("BONEMET_NB_EPOCHS", "30"))
OUT = Path(os.environ.get("BONEMET_NB_OUT", "results/notebooks")) / "03_populations"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Run the pipeline in one call
#
# Simulated human data (6 samples: 3 bone metastasis, 3 control), written to an `.h5ad`
# and run with a config dict. `label_key` keeps the simulated truth as
# `obs["reference_label"]`, which turns on the integration metrics and the label agreement.
# The run is resumable: running the cell again skips every finished stage.

# %%
sim = bm.datasets.simulate_bone_metastasis(N_CELLS, n_samples=6, species="human", seed=3)
src = OUT / "input.h5ad"
sim.write_h5ad(src)

cfg = bm.load_config(
    {
        "input": {"path": str(src), "sample_key": "sample", "condition_key": "condition",
                  "label_key": "true_population", "species": "human"},
        "output": {"dir": str(OUT / "run")},
        "qc": {"min_counts": 200, "min_genes": 100},
        "normalize": {"n_top_genes": 1500},
        "integrate": {"max_epochs": MAX_EPOCHS, "n_latent": 20, "accelerator": "auto"},
        "report": {"dpi": 150},
    }
)  # fmt: skip
adata = bm.run(cfg)
adata

# %% [markdown]
# ## The named populations
#
# `obs["population"]` uses a fixed vocabulary, and every bonemet figure draws a population
# in the same colour (`bm.pl.POPULATION_COLORS`), in every run.

# %%
fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
names = list(POPULATION_COLORS)
for i, name in enumerate(names):
    ax.add_patch(Rectangle((i % 4 * 2.5, -(i // 4)), 0.3, 0.8, color=POPULATION_COLORS[name]))
    ax.text(i % 4 * 2.5 + 0.4, -(i // 4) + 0.4, name, va="center", fontsize=7)
ax.set_xlim(0, 10)
ax.set_ylim(-(len(names) // 4) - 0.2, 1)
ax.axis("off")
plt.show()

# %%
counts = adata.obs["population"].value_counts()
conf = adata.obs.groupby("population", observed=True)["annotation_confidence"].median()
pd.DataFrame({"cells": counts, "median confidence": conf.round(2)}).dropna().head(30)

# %%
bm.pl.umap(adata, color="population")

# %% [markdown]
# The simulated truth tells us how well the annotation worked, per reference label:

# %%
bm.tl.label_agreement(adata, label_key="reference_label").head(15)

# %%
bm.pl.marker_dotplot(adata, n_genes=3)

# %% [markdown]
# ### Composition per sample and per condition

# %%
bm.pl.composition(adata, groupby="sample")

# %%
bm.pl.composition(adata, groupby="condition")

# %% [markdown]
# ## The review's axes, per sample
#
# `bm.tl.axes_table` gives, per sample, the quantities each axis links, as the papers state
# them, each with its n cells and 95% CI: SPP1 from every source (osteoclasts, macrophages,
# osteoblasts, tumour) and Tpex / (Tpex + Tex) (OPN axis), ferroportin (SLC40A1) on the
# iron-recycling macrophages and CD71 (TFRC) on tumour cells (iron axis), TFRC and globins in
# erythroid progenitors (anaemia arm), tumour DKK1 and CHI3L3⁺ neutrophils (DKK1 axis), TIGIT
# on CD8 T cells and Tregs and its ligands PVR/NECTIN2 (TIGIT axis). A value is NaN when a
# sample has fewer than `min_cells` (default 20) cells of the group; the `note` says so.
# This small demo has few cells per sample, so we lower `min_cells` here.

# %%
axes = bm.tl.axes_table(adata, min_cells=5)
axes[axes["sample"] == axes["sample"].iloc[0]][["quantity", "value", "ci_low", "ci_high",
                                                "n_cells", "note"]].round(3)  # fmt: skip

# %% [markdown]
# One row per sample (`bm.tl.axes_wide`), and Spearman's ρ across samples, always with its
# p-value and the number of samples (`bm.tl.axes_correlations`):

# %%
bm.tl.axes_wide(axes).iloc[:, :8].round(3)

# %%
bm.tl.axes_correlations(axes)

# %%
bm.pl.review_axes(adata)

# %% [markdown]
# Erythroid mimicry in tumour cells is guarded against ambient haemoglobin: the threshold
# comes from cells that cannot make haemoglobin (T, B, NK) in the same sample.

# %%
bm.tl.erythroid_mimicry(adata).head()

# %% [markdown]
# ## Figures for a paper
#
# Every `bm.pl` function returns a matplotlib `Figure`, so you can restyle it before
# saving: change titles and fonts, resize, save as PDF/SVG (text stays editable) at any dpi.

# %%
fig = bm.pl.umap(adata, color="population", panel_size=3.2, title="")
ax = fig.axes[0]
ax.set_title("a  Populations", loc="left", fontweight="bold")
for t in ax.get_legend().get_texts():
    t.set_fontsize(7)
fig.savefig(OUT / "figure1a.pdf")
fig.savefig(OUT / "figure1a.png", dpi=600)
fig

# %% [markdown]
# The fixed palette also colours your own plots, e.g. the fraction of the review's key
# populations per condition:

# %%
key_pops = ["CD8 Tpex (TCF1+)", "Iron-recycling macrophage (VCAM1+CD163+CCR3+)",
            "Immature neutrophil (CHI3L3+)", "Osteoclast", "Tumour epithelial"]  # fmt: skip
frac = pd.crosstab(adata.obs["condition"], adata.obs["population"], normalize="index") * 100
frac = frac.reindex(columns=key_pops, fill_value=0)
with mpl.rc_context({"font.size": 9}):
    fig, ax = plt.subplots(figsize=(6.5, 3), layout="constrained")
    frac.T.plot.barh(ax=ax, color=["#0072B2", "#E69F00"], width=0.8)
    for label in ax.get_yticklabels():
        label.set_color(POPULATION_COLORS[label.get_text()])
    ax.set_xlabel("Cells (% of condition)")
    ax.set_ylabel("")
    ax.legend(title="Condition", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.savefig(OUT / "figure1b.svg")
plt.show()

# %% [markdown]
# The run folder holds the same figures as PNG (300 dpi by default) and PDF, the tables as
# CSV, and `report.html` (see notebook 04 to re-use them).

# %%
run = Path(cfg.output.dir)
sorted(p.name for p in (run / "figures").glob("*.pdf"))

# %%
plt.close("all")
