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
# # Re-use the outputs of a run (CLI, Python or Nextflow), and start from GEO
#
# `bonemet run`, `bonemet demo`, `bm.run(...)` and the Nextflow pipeline
# (`nextflow run . --input samplesheet.csv --outdir DIR`) all write the same layout:
#
# ```
# DIR/bonemet.h5ad        the annotated AnnData (the AnnData contract in README)
# DIR/tables/*.csv        QC, composition, scores, axes, label agreement ...
# DIR/figures/*.png|pdf   every figure
# DIR/report.html         one self-contained report
# DIR/provenance.json     inputs + checksums, config, versions, device, timings
# DIR/pipeline_info/      (Nextflow only) execution report, timeline, trace
# ```
#
# So everything below works on a Nextflow `--outdir` too: point `RUN` at it.

# %%
# %matplotlib inline
import json
import os
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import pandas as pd

import bonemet as bm
from bonemet._resources import configs_dir

N_CELLS = int(os.environ.get("BONEMET_NB_CELLS", "4000"))
OUT = Path(os.environ.get("BONEMET_NB_OUT", "results/notebooks")) / "04_reuse"
RUN = Path(os.environ.get("BONEMET_RUN_DIR", OUT / "run"))

# %% [markdown]
# If you have no run at hand, make a small one. (On the command line:
# `bonemet demo --out results/demo --cells 4000`.) Here integration uses PCA + harmony to
# keep it quick; a real run uses scVI.

# %%
if not (RUN / "bonemet.h5ad").exists():
    sim = bm.datasets.simulate_bone_metastasis(N_CELLS, n_samples=3, species="mouse", seed=4)
    OUT.mkdir(parents=True, exist_ok=True)
    sim.write_h5ad(OUT / "input.h5ad")
    bm.run(
        {
            "input": {"path": str(OUT / "input.h5ad"), "sample_key": "sample",
                      "condition_key": "condition", "species": "mouse"},
            "output": {"dir": str(RUN)},
            "qc": {"min_counts": 200, "min_genes": 100},
            "integrate": {"method": "harmony"},
            "report": {"dpi": 100, "formats": ["png"]},
        }
    )  # fmt: skip
sorted(p.name for p in RUN.iterdir())

# %% [markdown]
# ## Load the results

# %%
adata = ad.read_h5ad(RUN / "bonemet.h5ad")
adata

# %%
provenance = json.loads((RUN / "provenance.json").read_text())
{k: provenance[k] for k in list(provenance)[:8]}

# %%
tables = {p.stem: pd.read_csv(p) for p in sorted((RUN / "tables").glob("*.csv"))}
list(tables)

# %%
tables["qc_summary"].head()

# %% [markdown]
# Run-level facts are kept in `uns["bonemet"]`: species, parameters of every stage,
# gene-set coverage, timings and warnings.

# %%
meta = adata.uns["bonemet"]
print(
    "species:", meta["species"], "| device:", meta.get("device"), "| stages:", list(meta["timings"])
)
list(meta.get("warnings", []))[:5]

# %% [markdown]
# ## Re-plot
#
# Every figure is one function call on the loaded object, so it can be redrawn with other
# settings, for example a different grouping, basis or size:

# %%
bm.pl.umap(adata, color="condition", panel_size=3.5)

# %%
bm.pl.signature_violins(adata, groupby="sample", keys=["score_erythroid_mimicry", "score_hypoxia"])

# %% [markdown]
# Or write figures again in another format and build a report from them, e.g. SVG for an
# illustration program (`names=` picks figures; leave it out for all of them):

# %%
new = OUT / "replot"
paths = bm.pl.save_figures(
    adata,
    new / "figures",
    formats=("svg", "png"),
    dpi=120,
    names=["umap_population", "composition_sample", "review_axes"],
)
report = bm.report.write_report(adata, new, figures=paths, provenance=provenance)
print(sorted(p.name for p in paths), report)

# %% [markdown]
# ## Start from a GEO accession
#
# bonemet reads GEO series directly: it downloads the SOFT file and the supplementary files
# (resumable, cached, checked), reads each sample's counts (10x, dense CSV/TSV, tar
# archives), and joins the authors' cell annotation when the series has one. Ready-made
# configs for bone-metastasis series are shipped:

# %%
sorted(p.name for p in (configs_dir() / "geo").glob("*.yaml"))

# %%
geo_cfg = bm.load_config(configs_dir() / "geo" / "GSE143791.yaml")
geo_cfg.input.model_dump()

# %% [markdown]
# Downloading needs internet access, so the calls below are not run here:
#
# ```python
# # see what would be downloaded, without downloading
# plan = bm.io.fetch_geo("GSE143791", out="data/GSE143791", dry_run=True)
# # download and write one .h5ad per sample plus data/GSE143791/samplesheet.csv
# bm.io.fetch_geo("GSE143791", out="data/GSE143791")
# # or run everything from the accession
# adata = bm.run(configs_dir() / "geo" / "GSE143791.yaml")
# ```
#
# and on the command line or with Nextflow:
#
# ```bash
# bonemet fetch-geo GSE143791 --out data/GSE143791 --dry-run
# bonemet run configs/geo/GSE143791.yaml --out results/GSE143791
# nextflow run . --geo GSE143791 --outdir results/GSE143791 -profile docker,gpu
# ```
#
# The result folder has the layout above, so this notebook re-plots it unchanged
# (`BONEMET_RUN_DIR=results/GSE143791`).

# %%
plt.close("all")
