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
# # bonemet quickstart
#
# This notebook runs the whole bonemet pipeline **step by step through the Python API** on
# generated bone-metastasis data, then looks at the results:
#
# 1. simulate raw counts with known truth (`bm.datasets`)
# 2. per-sample quality control (`bm.pp.qc`)
# 3. normalisation and highly variable genes (`bm.pp.normalize`)
# 4. integration with scVI (`bm.tl.integrate`)
# 5. clustering and UMAP (`bm.tl.cluster`)
# 6. annotation of lineages and named populations (`bm.tl.annotate`)
# 7. signature scores (`bm.tl.score`)
# 8. figures (`bm.pl`) and the HTML report (`bm.report`)
#
# `bm.run(config)` does the same in one call, with checkpoints (see notebook 03).
#
# The size of the example is set by environment variables so that the test suite can run
# this notebook in seconds: `BONEMET_NB_CELLS` (cells), `BONEMET_NB_EPOCHS` (scVI epochs)
# and `BONEMET_NB_OUT` (output folder).

# %%
# %matplotlib inline
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

import bonemet as bm

N_CELLS = int(os.environ.get("BONEMET_NB_CELLS", "6000"))
MAX_EPOCHS = int(os.environ.get("BONEMET_NB_EPOCHS", "30"))
OUT = Path(os.environ.get("BONEMET_NB_OUT", "results/notebooks")) / "01_quickstart"
OUT.mkdir(parents=True, exist_ok=True)
print(f"bonemet {bm.__version__}: {N_CELLS} cells, {MAX_EPOCHS} scVI epochs, output in {OUT}")

# %% [markdown]
# ## 1. Simulate
#
# Negative-binomial counts for 4 mouse marrow samples (2 bone metastasis, 2 control) with
# 27 named populations, batch effects, ambient RNA (with haemoglobin), doublets and damaged
# cells. `obs["true_population"]` is the truth we can check the annotation against.

# %%
adata = bm.datasets.simulate_bone_metastasis(N_CELLS, n_samples=4, species="mouse", seed=0)
adata

# %%
adata.obs[["sample", "condition", "true_population"]].value_counts(["sample", "condition"])

# %% [markdown]
# ## 2. Quality control
#
# Every sample gets its own MAD-based thresholds (combined with fixed floors), doublets are
# called with scrublet, and each removed cell is counted by reason in
# `uns["bonemet"]["qc"][sample]`.

# %%
adata = bm.pp.qc(adata, min_counts=200, min_genes=100, seed=0, copy=True)
bm.pp.qc_table(adata)

# %%
fig = bm.pl.qc_violins(adata)
fig

# %% [markdown]
# ## 3. Normalise
#
# Raw counts are kept in `layers["counts"]`; `X` becomes log1p(CP10k); highly variable genes
# are selected per batch (`seurat_v3` on the counts).

# %%
bm.pp.normalize(adata, n_top_genes=1500, batch_key="sample")
print(adata.layers["counts"].dtype, int(adata.var["highly_variable"].sum()), "HVGs")

# %% [markdown]
# ## 4. Integrate with scVI
#
# `accelerator="auto"` uses a GPU when there is one. The latent space goes to
# `obsm["X_scVI"]`; a PCA of the same genes (`obsm["X_pca"]`) is kept for the
# before/after comparison.

# %%
bm.tl.integrate(adata, method="scvi", batch_key="sample", max_epochs=MAX_EPOCHS, seed=0)
adata.obsm["X_scVI"].shape

# %% [markdown]
# ## 5. Cluster
#
# Neighbours on the latent space, leiden clusters (`obs["leiden"]` plus one column per
# resolution) and UMAPs after (`X_umap`) and before integration (`X_umap_unintegrated`).

# %%
bm.tl.cluster(adata, n_neighbors=15, resolution=1.0, seed=0)
adata.obs["leiden"].value_counts().head()

# %%
bm.pl.integration_umaps(adata, color=["sample"])

# %% [markdown]
# ## 6. Annotate
#
# Two levels from the curated marker sets in `signatures/`: the lineage
# (`obs["cell_type"]`) and the named population (`obs["population"]`), with a per-cell
# confidence and an explicit `Unassigned`.

# %%
bm.tl.annotate(adata, species="mouse")
adata.obs["population"].value_counts().head(12)

# %%
bm.pl.umap(adata, color="population")

# %% [markdown]
# Because the data are simulated, we can check the annotation against the truth.

# %%
agreement = pd.crosstab(adata.obs["true_population"], adata.obs["population"])
accuracy = (adata.obs["true_population"].astype(str) == adata.obs["population"].astype(str)).mean()
print(f"cells whose population matches the truth: {accuracy:.1%}")
agreement.iloc[:8, :8]

# %% [markdown]
# ## 7. Score the signatures
#
# Per-cell scores of the programmes the review is about (erythroid mimicry, ferroptosis,
# osteoclast activity, iron handling, hypoxia ...): `obs["score_<set>"]` (scanpy's
# control-gene method) and `obs["aucell_<set>"]` (AUCell).

# %%
bm.tl.score(adata, species="mouse", seed=0)
score_cols = [c for c in adata.obs.columns if c.startswith("score_")]
adata.obs[score_cols].describe().T.head()

# %%
bm.pl.signature_violins(adata, groupby="population")

# %% [markdown]
# ## 8. Figures and report
#
# `save_figures` writes every figure the data support as PNG (300 dpi) and PDF;
# `write_report` writes one self-contained `report.html` you can send to a collaborator.

# %%
paths = bm.pl.save_figures(adata, OUT / "figures", formats=("png", "pdf"), dpi=150)
sorted({p.stem for p in paths})

# %%
report = bm.report.write_report(adata, OUT, figures=paths)
print(report, f"{report.stat().st_size / 1e6:.1f} MB")

# %% [markdown]
# Finally, save the annotated object; every result lives in documented slots.

# %%
adata.write_h5ad(OUT / "bonemet.h5ad")
plt.close("all")
sorted(p.name for p in OUT.iterdir())
