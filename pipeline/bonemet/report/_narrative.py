"""The report's text sections, generated from the run: Methods, Samples, Results.

Every number comes from the object (``uns["bonemet"]["parameters"]`` and the stage
records, ``uns["bonemet_compare"]``), the run's config or its provenance; nothing here is
a hard-coded parameter. A parameter the run did not record is left out of the text, not
guessed.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from .._meta import bonemet_uns
from .._vocab import CALLED_FRACTIONS, MIMICRY_CALLED_FRACTION, WILLIAMS_SHRUNK
from .._vocab import HYPOTHESES as _HYPOTHESES

__all__ = [
    "CITATIONS",
    "HYPOTHESES",
    "methods_html",
    "results_html",
    "sample_table",
    "sample_table_html",
]

#: tool -> (package whose version is reported, citation)
CITATIONS: dict[str, tuple[str | None, str]] = {
    "bonemet": ("bonemet", "this pipeline"),
    "Scanpy": ("scanpy", "Wolf, Angerer & Theis 2018, Genome Biol 19:15"),
    "AnnData": ("anndata", "Virshup et al. 2024, J Open Source Softw 9:4371"),
    "Scrublet": ("scanpy", "Wolock, Lopez & Klein 2019, Cell Syst 8:281"),
    "DecontX": ("decontx-scanpy", "Yang et al. 2020, Genome Biol 21:57"),
    "Seurat v3 HVG selection": ("scanpy", "Stuart et al. 2019, Cell 177:1888"),
    "scVI": ("scvi-tools", "Lopez et al. 2018, Nat Methods 15:1053; Gayoso et al. 2022, "
             "Nat Biotechnol 40:163"),
    "Harmony": ("harmonypy", "Korsunsky et al. 2019, Nat Methods 16:1289"),
    "Leiden": ("leidenalg", "Traag, Waltman & van Eck 2019, Sci Rep 9:5233"),
    "UMAP": ("umap-learn", "McInnes, Healy & Melville 2018, arXiv:1802.03426"),
    "AUCell": ("decoupler", "Aibar et al. 2017, Nat Methods 14:1083; decoupler: "
               "Badia-i-Mompel et al. 2022, Bioinform Adv 2:vbac016"),
    "ssGSEA": ("gseapy", "Barbie et al. 2009, Nature 462:108; Fang et al. 2023, "
                        "Bioinformatics 39:btac757"),
    "PyDESeq2": ("pydeseq2", "Muzellec et al. 2023, Bioinformatics 39:btad547; DESeq2: Love, "
                 "Huber & Anders 2014, Genome Biol 15:550"),
    "Empirical-Bayes variance moderation": (None, "Smyth 2004, Stat Appl Genet Mol Biol 3:3"),
    "Benjamini–Hochberg FDR": (None, "Benjamini & Hochberg 1995, J R Stat Soc B 57:289"),
    "LIANA+": ("liana", "Dimitrov et al. 2024, Nat Cell Biol 26:1613"),
}  # fmt: skip

#: (heading, kind, test, population) of the review's hypotheses, one per row of
#: :data:`bonemet._vocab.HYPOTHESES` (the figure's panels read the same rows): kind "da"
#: reads ``differential_abundance`` (test = its ``test`` column), kind "score" reads
#: ``score_tests`` (test = the score, population = the tested population)
HYPOTHESES: tuple[tuple[str, str, str, str | None], ...] = tuple(
    (h.heading, h.kind, h.test, h.population) for h in _HYPOTHESES
)

_ALPHA = 0.05


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _v(x: Any) -> Any:
    """A plain Python value of a stored scalar / array (h5ad round trips give numpy)."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.item() if x.ndim == 0 else x.tolist()
    return x


def _given(x: Any) -> bool:
    x = _v(x)
    return x is not None and x != "" and not (isinstance(x, float) and math.isnan(x))


def _fmt(x: Any) -> str:
    x = _v(x)
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:g}"
    if isinstance(x, list | tuple):
        return ", ".join(map(_fmt, x))
    return str(x)


class _Params:
    """Stage parameters: the object's record first, then the config's section."""

    def __init__(self, adata: Any, cfg: Mapping[str, Any] | None) -> None:
        u = bonemet_uns(adata, create=False)
        p = u.get("parameters", {})
        self.recorded: Mapping[str, Any] = p if isinstance(p, Mapping) else {}
        self.cfg: Mapping[str, Any] = cfg or {}

    _CFG_SECTION = {"ingest": "input", "merge": "normalize"}

    def get(self, stage: str, key: str, default: Any = None) -> Any:
        for src in (self.recorded.get(stage), self.cfg.get(self._CFG_SECTION.get(stage, stage))):
            if isinstance(src, Mapping) and key in src and _given(src[key]):
                return _v(src[key])
        return default

    def ran(self, stage: str) -> bool:
        return isinstance(self.recorded.get(stage), Mapping)


def _versions(provenance: Mapping[str, Any] | None) -> dict[str, str]:
    """Package versions of the run: its provenance, else this environment's."""
    from ..runner import package_versions

    given = (provenance or {}).get("packages")
    out = dict(given) if isinstance(given, Mapping) and given else package_versions()
    for pkg in ("pydeseq2", "decontx-scanpy", "liana", "umap-learn", "scanpy"):
        if pkg not in out:
            try:
                out[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                continue
    return {str(k): str(v) for k, v in out.items()}


def _tool(name: str, versions: Mapping[str, str], used: set[str]) -> str:
    """``name`` with its version, e.g. "scvi-tools 1.2.0"; the tool joins the citation table."""
    used.add(name)
    pkg = CITATIONS.get(name, (None, ""))[0]
    ver = versions.get(pkg) if pkg else None
    return (
        f"{name} {ver}"
        if ver and pkg and name.lower() == pkg.lower()
        else (f"{name} ({pkg} {ver})" if ver else name)
    )


def _used(name: str, used: set[str]) -> str:
    used.add(name)
    return name


def _qc_records(adata: Any) -> dict[str, Mapping[str, Any]]:
    qc = bonemet_uns(adata, create=False).get("qc", {})
    return (
        {str(s): r for s, r in qc.items() if isinstance(r, Mapping)}
        if isinstance(qc, Mapping)
        else {}
    )


def _range(recs: Mapping[str, Mapping[str, Any]], key: str, fmt: str = "{:.3g}") -> str | None:
    vals = [float(_v(r[key])) for r in recs.values() if key in r and _given(r[key])]
    vals = [v for v in vals if np.isfinite(v)]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"


# ------------------------------------------------------------------------ methods


def methods_html(
    adata: Any, cfg: Mapping[str, Any] | None, provenance: Mapping[str, Any] | None
) -> str:
    """The Methods section: what each stage did, with which tool (version, citation)."""
    P = _Params(adata, cfg)
    u = bonemet_uns(adata, create=False)
    versions = _versions(provenance)
    used: set[str] = set()
    paras: list[tuple[str, str]] = []

    # input
    inputs = u.get("inputs", {}) if isinstance(u.get("inputs"), Mapping) else {}
    qcrec = _qc_records(adata)
    n_samples = (
        len(qcrec)
        or len(inputs)
        or (adata.obs["sample"].nunique() if "sample" in adata.obs.columns else 0)
    )
    formats = sorted({str(_v(i.get("format"))) for i in inputs.values()
                      if isinstance(i, Mapping) and _given(i.get("format"))})  # fmt: skip
    species = u.get("species") or P.get("ingest", "species")
    txt = (
        f"{n_samples} samples were read"
        + (f" ({', '.join(formats)})" if formats else "")
        + (f"; species {_e(species)}" if species else "")
        + f"; the analysis used {_tool('bonemet', versions, used)} with "
        f"{_tool('AnnData', versions, used)} and {_tool('Scanpy', versions, used)}."
    )
    paras.append(("Input", txt))

    # QC
    if P.ran("qc") or qcrec:
        parts = []
        mc, mg = P.get("qc", "min_counts"), P.get("qc", "min_genes")
        if _given(mc) or _given(mg):
            parts.append(
                "Cells were kept per sample with at least "
                + " and ".join(
                    x
                    for x in (
                        f"{_fmt(mc)} UMIs" if _given(mc) else "",
                        f"{_fmt(mg)} detected genes" if _given(mg) else "",
                    )
                    if x
                )  # fmt: skip
                + " (fixed floors"
                + (
                    f", scaled for panels below {_fmt(P.get('qc', 'floor_reference_genes'))} genes"
                    if _given(P.get("qc", "floor_reference_genes"))
                    and float(P.get("qc", "floor_reference_genes")) > 0
                    else ""
                )
                + ")"
            )
        mads = [
            f"{_fmt(P.get('qc', k))} MADs on {what}"
            for k, what in (("nmads_counts", "log UMIs"), ("nmads_genes", "log genes"),
                            ("nmads_mito", "% mitochondrial reads (high side)"))
            if _given(P.get("qc", k))
        ]  # fmt: skip
        if mads:
            scope = P.get("qc", "mad_scope")
            scope_txt = (
                f", MADs computed within pre-QC Leiden clusters of each sample (resolution "
                f"{_fmt(P.get('qc', 'group_resolution'))}) so that high-mito populations are "
                "judged against their own level"
                if scope == "cluster"
                else (", MADs per sample" if scope else "")
            )
            parts.append("and within " + ", ".join(mads) + scope_txt)
        mito = P.get("qc", "max_pct_mito")
        if _given(mito):
            floor = P.get("qc", "mito_floor")
            parts.append(
                f"; the mitochondrial threshold was capped at {_fmt(mito)}%"
                + (f" and never below {_fmt(floor)}%" if _given(floor) else "")
            )
        applied = []
        for key, what in (("threshold_min_counts", "minimum UMIs"),
                          ("threshold_min_genes", "minimum genes"),
                          ("threshold_max_pct_mito", "maximum % mito")):  # fmt: skip
            r = _range(qcrec, key)
            if r is not None:
                applied.append(f"{what} {r}")
        txt = " ".join(parts).replace(" ;", ";") + "."
        if applied:
            txt += f" Thresholds applied across samples: {'; '.join(applied)}."
        if P.get("qc", "doublets"):
            rate = P.get("qc", "doublet_rate")
            txt += (
                f" Doublets were scored per sample with {_tool('Scrublet', versions, used)}"
                + (f" (expected rate {_fmt(rate)})" if _given(rate) else "")
                + ("; predicted doublets were removed" if P.get("qc", "remove_doublets") else "")
                + "."
            )
        amb = P.get("qc", "ambient")
        if amb == "decontx":
            est = P.get("qc", "decontx_estimate_delta")
            med = _range(qcrec, "median_ambient_contamination", "{:.1%}")
            txt += (
                f" Ambient RNA was estimated per sample on the kept cells with "
                f"{_tool('DecontX', versions, used)}"
                + (" (prior re-estimated each EM step)" if est else
                   " (fixed prior, delta not re-estimated)" if est is not None else "")
                + "; the corrected counts are in layers['decontaminated'], the raw counts "
                "are kept unchanged"
                + (f"; median estimated contamination per sample {med}" if med else "")
                + "."
            )  # fmt: skip
        elif amb == "none":
            txt += " No ambient-RNA correction was applied (qc.ambient = none)."
        hb = P.get("qc", "high_hb_fraction")
        if _given(hb):
            txt += (
                f" A sample whose median haemoglobin fraction exceeds {_fmt(hb)} is flagged "
                "for ambient haemoglobin."
            )
        mcg = P.get("qc", "min_cells_per_gene")
        if _given(mcg):
            txt += f" Genes detected in fewer than {_fmt(mcg)} cells were removed."
        removed = {}
        for r in qcrec.values():
            for k, v in r.items():
                if str(k).startswith("removed_") and _given(v):
                    removed[str(k)[8:].replace("_", " ")] = removed.get(
                        str(k)[8:].replace("_", " "), 0
                    ) + int(_v(v))
        nb = sum(int(_v(r["n_before"])) for r in qcrec.values() if "n_before" in r)
        na = sum(int(_v(r["n_after"])) for r in qcrec.values() if "n_after" in r)
        if nb:
            txt += f" QC kept {na:,} of {nb:,} cells"
            shown = [f"{k}: {v:,}" for k, v in removed.items() if v]
            txt += f" (removed by reason — {'; '.join(shown)})." if shown else "."
        paras.append(("Quality control and ambient RNA", txt))

    # normalisation / HVG
    if P.ran("normalize") or P.ran("merge"):
        ts = P.get("normalize", "target_sum")
        flavor = P.get("normalize", "hvg_flavor_used") or P.get("normalize", "hvg_flavor")
        n_hvg = P.get("normalize", "n_highly_variable") or P.get("normalize", "n_top_genes")
        bk = P.get("normalize", "hvg_batch_key_used") or P.get("normalize", "batch_key")
        txt = (
            "Counts were kept in layers['counts']; X is log1p of counts scaled to "
            f"{_fmt(ts) if _given(ts) else 'a fixed total'} per cell."
        )
        if _given(n_hvg):
            tool = (
                _tool("Seurat v3 HVG selection", versions, used)
                if flavor == "seurat_v3"
                else (f"the {flavor} method" if flavor else "Scanpy")
            )
            txt += (
                f" {_fmt(n_hvg)} highly variable genes were selected with {tool}"
                + (f", batch-aware by {_e(bk)}" if _given(bk) else "") + "."
            )  # fmt: skip
        paras.append(("Normalisation and highly variable genes", txt))

    # integration
    integ = u.get("integrate", {}) if isinstance(u.get("integrate"), Mapping) else {}
    method = integ.get("method") or P.get("integrate", "method")
    if method:
        method = str(_v(method))
        if method == "scvi":
            ep, mx = integ.get("epochs"), P.get("integrate", "max_epochs")
            settings = [
                f"{_fmt(P.get('integrate', k))} {what}"
                for k, what in (("n_latent", "latent dimensions"), ("n_hidden", "hidden units"),
                                ("n_layers", "layers"))
                if _given(P.get("integrate", k))
            ]  # fmt: skip
            gl = P.get("integrate", "gene_likelihood")
            txt = (
                f"Samples were integrated with {_tool('scVI', versions, used)} on the raw counts "
                f"of the highly variable genes"
                + (f", batch key {_e(P.get('integrate', 'batch_key'))}"
                   if _given(P.get("integrate", "batch_key")) else "")
                + (f"; {', '.join(settings)}" if settings else "")
                + (f", {_e(gl)} likelihood" if _given(gl) else "")
                + ". Training: "
                + (f"{_fmt(ep)} epochs" if _given(ep) else "epochs not recorded")
                + (f" (max_epochs {_fmt(mx)}"
                   + (", early stopping on the validation ELBO"
                      + (f", patience {_fmt(integ['early_stopping_patience'])}"
                         if _given(integ.get("early_stopping_patience")) else "")
                      if integ.get("early_stopping", P.get("integrate", "early_stopping")) else
                      ", no early stopping") + ")" if _given(mx) else "")
                + (f", batch size {_fmt(integ.get('batch_size') or P.get('integrate', 'batch_size'))}"
                   if _given(integ.get("batch_size") or P.get("integrate", "batch_size")) else "")
                + (f", learning rate {_fmt(integ['learning_rate'])}"
                   if _given(integ.get("learning_rate")) else "")
                + (f", on {_e(_v(integ['device']))}" if _given(integ.get("device")) else "")
                + (f"; final ELBO train {float(_v(integ['elbo_train'])):.1f}"
                   if _given(integ.get("elbo_train")) else "")
                + (f", validation {float(_v(integ['elbo_validation'])):.1f}"
                   if _given(integ.get("elbo_validation")) else "")
                + ". The latent space is obsm['X_scVI']."
            )  # fmt: skip
        elif method == "harmony":
            txt = f"Samples were integrated with {_tool('Harmony', versions, used)} on PCA"
            npcs = integ.get("n_pcs") or P.get("integrate", "n_pcs")
            txt += f" ({_fmt(npcs)} components)." if _given(npcs) else "."
        else:
            txt = f"Integration method: {_e(method)}."
        paras.append(("Integration", txt))

    # clustering
    if P.ran("cluster"):
        clu = u.get("cluster", {}) if isinstance(u.get("cluster"), Mapping) else {}
        res = P.get("cluster", "resolution")
        ress = P.get("cluster", "resolutions")
        ncl = clu.get("n_clusters", {})
        nres = ncl.get(f"leiden_{_fmt(res)}") if isinstance(ncl, Mapping) and _given(res) else None
        if nres is None and isinstance(ncl, Mapping) and _given(res):
            nres = ncl.get(f"leiden_{float(res)}")
        txt = (
            f"A {_fmt(P.get('cluster', 'n_neighbors'))}-nearest-neighbour graph"
            + (f" on {_e(_v(clu['use_rep']))}" if _given(clu.get("use_rep")) else "")
            + f" was clustered with {_tool('Leiden', versions, used)} at resolution "
            + (_fmt(res) if _given(res) else "(not recorded)")
            + (f" ({int(_v(nres))} clusters)" if _given(nres) else "")
            + (f"; resolutions computed: {_fmt(ress)}" if _given(ress) else "")
            + f". The embedding is {_tool('UMAP', versions, used)}"
            + (f" (min_dist {_fmt(P.get('cluster', 'umap_min_dist'))})"
               if _given(P.get("cluster", "umap_min_dist")) else "")
            + "."
        )  # fmt: skip
        paras.append(("Clustering", txt))

    # annotation
    ann = u.get("annotate", {}) if isinstance(u.get("annotate"), Mapping) else {}
    if P.ran("annotate") or ann:
        txt = (
            "Cells were annotated at two levels (obs['cell_type'] lineage, then "
            "obs['population'] for the named states) from the curated marker sets in "
            "signatures/"
        )
        if _given(ann.get("method")):
            txt += f": {_e(_v(ann['method']))}"
        mc = P.get("annotate", "min_confidence")
        if _given(mc):
            txt += f". Cells with confidence below {_fmt(mc)} are Unassigned"
        consts = ann.get("constants")
        if isinstance(consts, Mapping) and consts:
            txt += "; rule constants: " + ", ".join(
                f"{_e(k)} = {_fmt(v)}" for k, v in consts.items()
            )
        ct = ann.get("celltypist")
        if isinstance(ct, Mapping) and _v(ct.get("used")):
            txt += f"; CellTypist model {_e(_v(ct.get('model')))}"
        if _given(ann.get("n_unassigned")):
            txt += f". {int(_v(ann['n_unassigned'])):,} cells were left Unassigned"
        cov = ann.get("marker_coverage")
        if isinstance(cov, Mapping) and cov:
            vals = [float(_v(v)) for v in cov.values() if _given(v)]
            if vals:
                txt += (
                    f". Marker-set coverage in the data: {min(vals):.0%}–{max(vals):.0%} of "
                    f"each set's genes ({len(vals)} sets)"
                )
        paras.append(("Annotation", txt + "."))

    # scoring
    if P.ran("score"):
        sets = P.get("score", "gene_sets") or []
        meth = P.get("score", "methods") or []
        meth = [meth] if isinstance(meth, str) else list(meth)
        names = []
        for m in meth:
            if m == "score_genes":
                names.append("Scanpy score_genes (mean of the set minus a matched control set)")
            elif m == "aucell":
                names.append(_tool("AUCell", versions, used))
            else:
                names.append(str(m))
        txt = (
            f"{len(sets) if isinstance(sets, list) else 1} gene sets were scored per cell "
            f"({_fmt(sets)})"
            + (f" with {' and '.join(names)}" if names else "")
            + (f" on layer {_e(P.get('score', 'layer'))}" if _given(P.get("score", "layer")) else "")
            + (f"; a set with less than {_fmt(P.get('score', 'min_coverage'))} of its genes in "
               "the data is flagged" if _given(P.get("score", "min_coverage")) else "")
        )  # fmt: skip
        if P.get("score", "ssgsea"):
            txt += (
                f"; pseudobulk enrichment per population × sample with "
                f"{_tool('ssGSEA', versions, used)}"
                + (f" (at least {_fmt(P.get('score', 'pseudobulk_min_cells'))} cells)"
                   if _given(P.get("score", "pseudobulk_min_cells")) else "")
            )  # fmt: skip
        em = P.recorded.get("erythroid_mimicry")
        if isinstance(em, Mapping) and _given(em.get("null")):
            src = {"decontaminated": "ambient-corrected counts"}.get(
                str(_v(em.get("counts_source"))), f"{_fmt(em.get('counts_source'))}"
            )
            txt += (
                f". Erythroid-mimicry calls, per sample: each tumour cell's adult-globin counts "
                f"({_e(_fmt(em.get('hb_genes')))}) in its {_e(src)} tested against a "
                f"{_e(_fmt(em['null']))}, at the cell's own library size; Benjamini–Hochberg "
                f"within the sample's tumour cells at FDR {_fmt(em.get('fdr'))}, with at least "
                f"{_fmt(em.get('min_hb_counts'))} globin counts and {_fmt(em.get('min_fold'))}× "
                "the null's mean share; a globin-positive cell that also carries erythroid "
                f"identity ({_e(_fmt(em.get('identity_genes')))}) is counted as an erythroid "
                "cell or doublet, not a call, as are predicted doublets"
                + (
                    " and cells in the doublet-score tail"
                    if _given(em.get("doublet_quantile"))
                    else ""
                )
                + "; per-sample called fractions with "
                f"{_e(_fmt(em.get('ci', 'Wilson')))} intervals"
            )
        elif isinstance(em, Mapping) and _given(em.get("quantile")):  # results of older runs
            txt += (
                f". Erythroid-mimicry calls: haemoglobin counts above the "
                f"{_fmt(em['quantile'])} quantile of background cells ({_fmt(em.get('background'))}"
                f"), at least {_fmt(em.get('min_hb_counts'))} Hb counts"
            )
        paras.append(("Signature scoring", txt + "."))

    # compare
    res = adata.uns.get("bonemet_compare")
    if P.ran("compare") or isinstance(res, Mapping):
        ck = P.get("compare", "condition_key", "condition")
        ref = (
            _v(res.get("reference")) if isinstance(res, Mapping) else P.get("compare", "reference")
        )
        cov = P.get("compare", "covariates") or []
        cov = [cov] if isinstance(cov, str) else list(cov)
        subj = P.get("compare", "subject_key")
        design = " + ".join([*cov, *([subj] if _given(subj) else []), ck])
        msg = P.get("compare", "min_samples_per_group")
        mcells = P.get("compare", "min_cells")
        txt = (
            f"Conditions ({_e(ck)}) were compared with samples as replicates against the "
            f"reference {_e(ref) if _given(ref) else '(first level)'}"
            + (f" ({_e(_v(res['reference_source']))})"
               if isinstance(res, Mapping) and _given(res.get("reference_source")) else "")
            + f", design ~ {_e(design)}"
            + (" (paired by subject)" if _given(subj) else "")
            + ". Differential abundance of every population and of the within-lineage fractions: "
            "a quasi-Poisson GLM of each sample's count with log(denominator) as offset, the "
            "condition coefficient is the log2 fold change of the proportion; Pearson "
            "dispersions moderated across tests by empirical Bayes (limma's squeezeVar; "
            f"{CITATIONS[_used('Empirical-Bayes variance moderation', used)][1]}) and floored at 1, Wald t-tests on residual plus prior df. "
            + _williams_methods(res)
            + (_spread_methods(res) if isinstance(res, Mapping) else "")
            + "Programme scores: per-sample mean score of each population (samples with at least "
            f"{_fmt(mcells) if _given(mcells) else 'the minimum'} cells of it), ordinary least squares "
            "on the same design, t-based 95% CI."
        )  # fmt: skip
        if P.get("compare", "de"):
            txt += (
                f" Pseudobulk differential expression per population (counts summed per sample) "
                f"with {_tool('PyDESeq2', versions, used)}."
            )
        txt += (
            f" p-values were adjusted with {_tool('Benjamini–Hochberg FDR', versions, used)} "
            "within each contrast and read-out"
            + (f"; with fewer than {_fmt(msg)} samples in a group a p-value is reported as "
               "unreliable, with one sample none is computed" if _given(msg) else "")
            + "."
        )  # fmt: skip
        paras.append(("Comparison of conditions", txt))

    lr = P.recorded.get("ligand_receptor")
    if isinstance(lr, Mapping) and lr:
        if "liana_version" in lr:
            versions = {**versions, "liana": str(_v(lr["liana_version"]))}
        txt = (
            f"Ligand–receptor interactions per condition with {_tool('LIANA+', versions, used)}"
            + (f": {_e(_v(lr['methods']))}" if _given(lr.get("methods")) else "")
            + (f", {_fmt(lr['n_perms'])} permutations" if _given(lr.get("n_perms")) else "")
            + (f", expressed in at least {_fmt(lr['expr_prop'])} of a group's cells"
               if _given(lr.get("expr_prop")) else "")
            + (f"; significance: {_e(_v(lr['significance']))}" if _given(lr.get("significance")) else "")
            + (f"; a pair counts when it holds in at least {_fmt(lr['min_fraction'])} of the "
               "samples" if _given(lr.get("min_fraction")) else "")
            + "."
        )  # fmt: skip
        paras.append(("Ligand–receptor analysis", txt))

    out = ["<div class='methods'>"]
    for head, txt in paras:
        out.append(f"<h3>{_e(head)}</h3><p>{txt}</p>")
    rows = []
    for name, (pkg, cite) in CITATIONS.items():
        if name not in used:
            continue
        ver = versions.get(pkg, "–") if pkg else "–"
        rows.append(
            f"<tr><td class='text'>{_e(name)}</td><td class='text'>{_e(pkg or '–')}</td>"
            f"<td class='text'>{_e(ver)}</td><td class='text'>{_e(cite)}</td></tr>"
        )
    if rows:
        out.append(
            "<h3>Software and citations</h3><div class='tablewrap'><table class='citations'>"
            "<tr><th>tool</th><th>package</th><th>version</th><th>citation</th></tr>"
            + "".join(rows) + "</table></div>"
        )  # fmt: skip
    out.append("</div>")
    return "".join(out)


# ----------------------------------------------------------------------- samples


def sample_table(adata: Any, cfg: Mapping[str, Any] | None = None) -> pd.DataFrame | None:
    """One row per sample: condition, subject, batch, cells before/after QC, cells kept."""
    if "sample" not in adata.obs.columns:
        return None
    P = _Params(adata, cfg)
    keys = {
        "condition": P.get("compare", "condition_key") or P.get("ingest", "condition_key") or "condition",
        "subject": P.get("compare", "subject_key"),
        "batch": P.get("ingest", "batch_key") or "batch",
    }  # fmt: skip
    obs = adata.obs
    samples = obs["sample"].astype(str)
    order = list(pd.unique(samples))
    qc = _qc_records(adata)
    order += [s for s in qc if s not in order]
    df = pd.DataFrame(index=pd.Index(order, name="sample"))
    for col, key in keys.items():
        if _given(key) and key in obs.columns and key != "sample":
            df[col] = obs[key].astype(str).groupby(samples, observed=True).first().reindex(order)
    for col, key in (("cells before QC", "n_before"), ("cells after QC", "n_after")):
        vals = [_v(qc.get(s, {}).get(key)) for s in order]
        if any(_given(v) for v in vals):
            df[col] = pd.array([int(v) if _given(v) else pd.NA for v in vals], dtype="Int64")
    kept = samples.value_counts().reindex(order).fillna(0).astype(int)
    if "cells after QC" not in df.columns or not (df["cells after QC"] == kept).all():
        df["cells in the object"] = kept.to_numpy()
    return df.reset_index()


# ----------------------------------------------------------------------- results


def _p(x: Any) -> str:
    x = float(x)
    return "–" if not np.isfinite(x) else (f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}")


def _num(x: Any, nd: int = 2) -> str:
    x = float(x)
    return "–" if not np.isfinite(x) else f"{x:.{nd}f}"


def _verdict(row: Mapping[str, Any], ref: str, other: str, n_ref: int, n_test: int,
             min_per_group: int | None) -> str:  # fmt: skip
    """The closing clause: not testable, p unreliable, or significant / not at FDR 5%."""
    p, padj = float(row.get("p", np.nan)), float(row.get("padj", np.nan))
    if min(n_ref, n_test) < 2 or not np.isfinite(p):
        return (
            f" <b>Not testable: {n_test} vs {n_ref} samples</b> (a group needs at least two "
            "samples for a p-value)."
        )
    note = str(_v(row.get("note", "")) or "")
    enough = not min_per_group or min(n_ref, n_test) >= int(min_per_group)
    if not bool(row.get("p_reliable", True)) and enough and "spread" in note:
        # enough samples, but denominators too unequal for the model's p (compare's note)
        return (
            f" p = {_p(p)} (adjusted {_p(padj)}), <b>not reliable</b>: {_e(note)}; read "
            "the estimate and its CI, with the per-sample values in the figure."
        )
    if not bool(row.get("p_reliable", True)):
        need = f" (fewer than {min_per_group} per group)" if min_per_group else ""
        return (
            f" <b>Not testable: {n_test} vs {n_ref} samples</b>{need}: the estimate is shown, its "
            f"p-value ({_p(p)}, adjusted {_p(padj)}) is not reliable."
        )
    sig = np.isfinite(padj) and padj < _ALPHA
    return (
        f" BH-adjusted p = {_p(padj)} (p = {_p(p)}): "
        + (f"<b>significant at FDR {_ALPHA:.0%}</b>." if sig else f"not significant at FDR {_ALPHA:.0%}.")
    )  # fmt: skip


def _williams_methods(res: Any) -> str:
    """The Methods sentence for the abundance units the compare stage fitted with Williams'
    variance (read from the table's ``model`` column), or ``""`` when there are none."""
    da = res.get("differential_abundance") if isinstance(res, Mapping) else None
    if not isinstance(da, pd.DataFrame) or "model" not in da or "test" not in da:
        return ""
    units = list(dict.fromkeys(da.loc[da["model"].astype(str) == "Williams", "test"].astype(str)))
    if not units:
        return ""
    return (
        f"{'; '.join(_e(u) for u in units)}: the same log-link GLM with a beta-binomial-type "
        "variance (Williams 1982, J R Stat Soc C 31:144; φ·μ·(1 + (n − 1)ρ), ρ the "
        "between-sample spread of the true fraction), because their denominators vary "
        "widely between samples and a single dispersion over-weights the large samples. "
    )


def _spread_methods(res: Mapping[str, Any]) -> str:
    """The Methods sentence on within-lineage fractions whose denominators vary widely."""
    rec = res.get("denominator_spread_limit")
    if not isinstance(rec, Mapping) or not _given(rec.get("limit")):
        return ""
    n = rec.get("rows_williams", rec.get("rows_marked"))
    if "rows_williams" not in rec:  # a result from before the shrunk-rho model
        return (
            f"A within-lineage fraction whose denominator varies {_fmt(rec['limit'])}-fold or "
            "more between the samples tested has its p-value marked unreliable (the "
            "quasi-Poisson was measured anti-conservative there on null simulations)"
            + (f"; {_fmt(n)} row(s) here" if _given(n) else "")
            + ". "
        )
    return (
        f"A within-lineage fraction whose denominator varies {_fmt(rec['limit'])}-fold or more "
        "between the samples tested, where the quasi-Poisson was measured anti-conservative "
        "on null simulations, is tested instead with a log-link GLM with beta-binomial "
        "variance (Williams 1982), its between-sample spread ρ shrunk towards the pooled ρ "
        "of the contrast's lineage fractions (calibrated on the same simulations)"
        + (f"; {_fmt(n)} row(s) here" if _given(n) else "")
        + ". "
    )


def _da_sentence(row: Mapping[str, Any], ref: str, other: str, min_per_group: int | None) -> str:
    n_ref, n_test = int(row["n_ref"]), int(row["n_test"])
    fc = float(row["log2fc"])
    if str(row.get("test", "")) in CALLED_FRACTIONS:
        call_key, den, _ = CALLED_FRACTIONS[str(row["test"])]
        kind = f"called fraction of the assessed {den.lower()} cells (obs['{call_key}'])"
    elif row.get("kind") == "lineage fraction":
        kind = "within-lineage fraction"
    else:
        kind = "proportion of all cells"
    model = {
        "Williams": "Log-link GLM with beta-binomial-type (Williams) variance",
        WILLIAMS_SHRUNK: "Log-link GLM with beta-binomial (Williams) variance, ρ shrunk "
        "towards the pooled ρ because the denominators vary widely",
    }.get(str(row.get("model", "")), "Quasi-Poisson GLM")
    txt = (
        f"{model} of the {kind} ({n_test} {_e(other)} vs {n_ref} {_e(ref)} samples): "
        f"mean {float(row['prop_ref']):.1%} in {_e(ref)} vs {float(row['prop_test']):.1%} in "
        f"{_e(other)}; log2 fold change {_num(fc)} (95% CI {_num(row['ci_low'])} to "
        f"{_num(row['ci_high'])})"
        + (f", {2 ** fc:.2f}-fold" if np.isfinite(fc) else "")
        + "."
    )  # fmt: skip
    return txt + _verdict(row, ref, other, n_ref, n_test, min_per_group)


def _score_sentence(row: Mapping[str, Any], ref: str, other: str, min_per_group: int | None) -> str:
    n_ref, n_test = int(row["n_ref"]), int(row["n_test"])
    txt = (
        f"OLS on per-sample mean scores ({n_test} {_e(other)} vs {n_ref} {_e(ref)} samples with "
        f"enough cells): mean {_num(row['mean_ref'], 3)} in {_e(ref)} vs {_num(row['mean_test'], 3)} "
        f"in {_e(other)}; difference {_num(row['effect'], 3)} (95% CI {_num(row['ci_low'], 3)} to "
        f"{_num(row['ci_high'], 3)})."
    )  # fmt: skip
    return txt + _verdict(row, ref, other, n_ref, n_test, min_per_group)


def _not_tested_called(adata: Any, test: str) -> str:
    """Why a called fraction has no compare row: no calls in the object, no cell of the
    denominator, or a compare result older than the called-fraction test."""
    call_key, den, _ = CALLED_FRACTIONS[test]
    obs = adata.obs
    if call_key not in obs.columns:
        why = f"no per-cell calls (obs['{_e(call_key)}'] is absent: the score stage did not call them)"
    elif "population" not in obs.columns or not (obs["population"].astype(str) == den).any():
        why = f"no {_e(den)} cells in this object"
    else:
        why = (
            f"the compare results have no '{_e(test)}' test (computed before the compare "
            "stage tested the called fraction: rerun compare)"
        )
    return f"<b>Not tested</b>: {why}."


def _not_tested_score(adata: Any, P: _Params, pop: str | None, mcells: Any) -> str:
    """Why a population's score was not tested: samples per condition with enough cells."""
    ck = P.get("compare", "condition_key", "condition")
    need = int(mcells) if _given(mcells) else 1
    obs = adata.obs
    if pop is None or "population" not in obs.columns or ck not in obs.columns:
        return "Not tested."
    sub = obs.loc[obs["population"].astype(str) == pop, ["sample", ck]].astype(str)
    per = sub.groupby(["sample", ck], observed=True).size()
    enough = per[per >= need].reset_index()[ck].value_counts()
    conds = list(pd.unique(obs[ck].astype(str)))
    counts = ", ".join(f"{int(enough.get(c, 0))} {_e(c)}" for c in conds)
    return (
        f"<b>Not testable</b>: samples with at least {need} {_e(pop)} cells — {counts} "
        "(a group needs at least two)."
    )


#: the figures a results paragraph refers to, by kind of test
_RESULT_FIGURES = {
    "da": ("condition_comparisons", "review_axes", "composition_condition"),
    "score": ("condition_comparisons", "signature_violins_population", "review_axes"),
    # a called fraction (erythroid mimicry) is not a population's share: no composition plot
    "called": ("condition_comparisons", "review_axes", "signature_umaps"),
}
_RESULT_TABLES = {
    "da": "differential_abundance",
    "score": "score_tests",
    "called": "differential_abundance",
}


def _refs(kind: str, figure_numbers: Mapping[str, int] | None) -> str:
    """ " (Figure 3, Figure 5; table score_tests)": links to the figures the report shows."""
    figs = [
        f"<a href='#fig-{_e(n)}'>Figure {int(figure_numbers[n])}</a>"
        for n in _RESULT_FIGURES[kind]
        if figure_numbers and n in figure_numbers
    ]
    return f" ({', '.join([*figs, f'table {_RESULT_TABLES[kind]}'])})"


def _effect(row: Mapping[str, Any], col: str, nd: int = 2) -> str:
    return (
        f"{_e(row.get('test', row.get('population', '')))} ({col.replace('log2fc', 'log2FC')} "
        f"{_num(row[col], nd)}, 95% CI {_num(row['ci_low'], nd)} to {_num(row['ci_high'], nd)}, "
        f"adjusted p {_p(row['padj'])})"
    )


def _design(df: pd.DataFrame) -> str:
    """ "2 vs 2 samples" (the most samples any test of ``df`` had per group)."""
    return f"at most {int(df['n_test'].max())} vs {int(df['n_ref'].max())} samples"


def _others_html(
    da: pd.DataFrame,
    st: pd.DataFrame,
    de: pd.DataFrame,
    skipped: pd.DataFrame,
    contrast: str,
    figure_numbers: Mapping[str, int] | None,
) -> str:
    """Every other tested population in a few sentences: what passed FDR 5%, what could not."""

    def of(df: pd.DataFrame) -> pd.DataFrame:
        return (
            df[df["contrast"] == contrast] if len(df) and "contrast" in df.columns else df.iloc[:0]
        )

    out = []
    pops = of(da)
    pops = pops[pops["kind"] == "population"] if "kind" in pops.columns else pops
    if len(pops):
        rel = pops[pops["p_reliable"].astype(bool)]
        sig = rel[rel["padj"] < _ALPHA].sort_values("padj")
        txt = f"{len(pops)} populations were tested for differential abundance"
        if len(rel) < len(pops):
            txt += f" ({len(pops) - len(rel)} with unreliable or no p-value: too few samples)"
        if len(sig):
            txt += "; at FDR 5%: " + "; ".join(_effect(r, "log2fc") for r in sig.to_dict("records"))
        elif len(rel):
            txt += "; none at FDR 5%"
        else:
            big = pops.assign(_a=pops["log2fc"].abs()).sort_values("_a", ascending=False).head(3)
            txt += (
                f"; no reliable p-value ({_design(pops)}); largest estimated changes: "
                + "; ".join(_effect(r, "log2fc") for r in big.to_dict("records"))
            )
        out.append(txt + "." + _refs("da", figure_numbers))
    sc = of(st)
    if len(sc):
        rel = sc[sc["p_reliable"].astype(bool)]
        sig = rel[rel["padj"] < _ALPHA].sort_values("padj")
        txt = (
            f"{len(sc)} population × score tests ({sc['population'].nunique()} populations, "
            f"{sc['score'].nunique()} scores, {len(rel)} with a reliable p-value)"
        )
        if len(sig):
            shown = [
                f"{_e(r['score'])} in {_e(r['population'])} (difference {_num(r['effect'], 3)}, "
                f"95% CI {_num(r['ci_low'], 3)} to {_num(r['ci_high'], 3)}, adjusted p "
                f"{_p(r['padj'])})"
                for r in sig.head(8).to_dict("records")
            ]
            more = f" and {len(sig) - 8} more" if len(sig) > 8 else ""
            txt += "; at FDR 5%: " + "; ".join(shown) + more
        elif len(rel):
            txt += "; none at FDR 5%"
        else:
            txt += f"; no reliable p-value ({_design(sc)})"
        out.append(txt + "." + _refs("score", figure_numbers))
    dd, sk = of(de), of(skipped)
    if len(dd) or len(sk):
        parts, none, unreliable = [], [], []
        for pop, g in dd.groupby("population", sort=False):
            n_ref, n_test = int(g["n_ref"].iloc[0]), int(g["n_test"].iloc[0])
            if not g["p_reliable"].astype(bool).any():
                unreliable.append(f"{_e(pop)} ({n_test} vs {n_ref})")
                continue
            sig = g[(g["padj"] < _ALPHA) & g["p_reliable"].astype(bool)].sort_values("padj")
            if not len(sig):
                none.append(_e(pop))
                continue
            top = ", ".join(
                f"{_e(r['gene'])} (log2FC {_num(r['log2fc'])})"
                for r in sig.head(3).to_dict("records")
            )
            parts.append(
                f"{_e(pop)} ({n_test} vs {n_ref} samples): {len(sig)} of {len(g):,} genes at "
                f"FDR 5%, top {top}"
            )
        if none:
            parts.append(f"no gene at FDR 5% in {len(none)} populations ({', '.join(none)})")
        if unreliable:
            parts.append(
                f"p-values not reliable (too few samples) in {len(unreliable)} populations "
                f"({', '.join(unreliable)})"
            )
        txt = "Pseudobulk DE (PyDESeq2): " + ("; ".join(parts) if parts else "no population tested")
        if len(sk):
            txt += (
                f". {len(sk)} populations not tested (too few samples with enough cells), e.g. "
                f"{_e(sk['population'].iloc[0])}: {_e(sk['reason'].iloc[0])}"
            )
        figs = (
            f" (<a href='#fig-volcano'>Figure {int(figure_numbers['volcano'])}</a>, table "
            "pseudobulk_de)"
            if figure_numbers and "volcano" in figure_numbers
            else " (table pseudobulk_de)"
        )
        out.append(txt + "." + figs)
    if not out:
        return ""
    return (
        "<div class='result others'><p><b>All tested populations.</b> "
        + "</p><p>".join(out)
        + "</p></div>"
    )


#: axis quantity -> the differential-abundance test of the same fraction in ``compare``
_AXIS_TESTS = {
    "tpex_fraction": "Tpex / (Tpex + Tex)",
    "iron_macrophage_fraction": "Iron-recycling / macrophages",
    "chi3l3_neutrophil_fraction": "CHI3L3+ immature / neutrophils",
    "tumour_erythroid_mimicry": MIMICRY_CALLED_FRACTION,
}


def _opn_paired(axes: pd.DataFrame) -> str:
    """Cheng 2025's paired design in words: rho across subjects with p and n, or why not."""
    from .._errors import BonemetError
    from ..tl import axes_correlations

    try:
        c = axes_correlations(axes)
    except BonemetError as e:  # a design the pairing refuses (e.g. two bone samples)
        return f"paired by subject: not computed ({_e(e)})"
    r = c[c["axis"].str.contains("paired by subject")]
    if not len(r):
        return "paired by subject: not computed"
    r = r.iloc[0]
    head = (
        "paired by subject (SPP1 in osteoclasts of the subject's bone sample vs Tpex / "
        "(Tpex + Tex) in its extraosseous sample, table axes_paired): "
    )
    if not np.isfinite(float(r["rho"])):
        return head + f"{_e(r['note'])}"
    return head + (
        f"Spearman &rho; {_num(r['rho'])}, p {_p(r['p'])} "
        f"({_e(r['method'])}), n = {int(r['n_samples'])} subjects"
    )


def axes_html(axes: pd.DataFrame | None, adata: Any, cfg: Mapping[str, Any] | None = None) -> str:
    """One paragraph per axis of the review from the per-sample axes table: per quantity
    and condition the mean of the sample values, the samples with enough cells, and the
    ``compare`` test where the quantity is one of its fractions."""
    need = {"sample", "axis", "quantity", "label", "value", "n_cells"}
    if not isinstance(axes, pd.DataFrame) or not need <= set(axes.columns):
        return ""
    res = adata.uns.get("bonemet_compare")
    da = res.get("differential_abundance") if isinstance(res, Mapping) else None
    da = da if isinstance(da, pd.DataFrame) else pd.DataFrame()
    ref = str(_v(res.get("reference", ""))) if isinstance(res, Mapping) else ""
    cond = "condition" if "condition" in axes.columns else None
    out = []
    for axis, g in axes.groupby("axis", sort=False):
        parts = []
        for q, gq in g.groupby("quantity", sort=False):
            label = str(gq["label"].iloc[0])
            vals = pd.to_numeric(gq["value"], errors="coerce")
            groups = gq.groupby(cond, sort=True) if cond else [("all samples", gq)]
            per = []
            for level, gl in groups:
                v = pd.to_numeric(gl["value"], errors="coerce").dropna()
                cells = int(pd.to_numeric(gl["n_cells"], errors="coerce").fillna(0).sum())
                per.append(
                    f"{_e(level)} {_num(v.mean(), 3) if len(v) else '–'} "
                    f"({len(v)} of {len(gl)} samples, {cells:,} cells)"
                )
            txt = f"{_e(label)}: " + " vs ".join(per)
            if vals.notna().sum() == 0:
                notes = [str(n) for n in gq.get("note", pd.Series(dtype=str)) if str(n)]
                txt = f"{_e(label)}: not measured in any sample" + (
                    f" (e.g. {_e(notes[0])})" if notes else ""
                )
            test = _AXIS_TESTS.get(str(q))
            if test and len(da) and "test" in da.columns:
                row = da[da["test"] == test]
                if len(row):
                    r = row.iloc[0]
                    txt += (
                        f" — compare ({_e(r.get('contrast', ''))}): log2FC {_num(r['log2fc'])} (95% CI {_num(r['ci_low'])} to "
                        f"{_num(r['ci_high'])}), adjusted p {_p(r['padj'])}"
                        + ("" if bool(r["p_reliable"]) else " (not reliable: small design)")
                    )
            parts.append(txt)
        if str(axis).startswith("OPN") and {"subject", "tissue"} <= set(axes.columns):
            parts.append(_opn_paired(axes))
        out.append(
            f"<div class='result axis'><p><b>{_e(axis)}.</b> " + "; ".join(parts) + ".</p></div>"
        )
    if not out:
        return ""
    head = (
        "<p class='note'>Per quantity: the mean of the per-sample values by condition (a sample "
        "counts when it has enough cells of the group), with cells summed over samples; "
        + (f"the reference is {_e(ref)}; " if ref else "")
        + "per-sample values with their 95% CIs are in table axes.</p>"
    )
    return "<h3>The review's axes</h3>" + head + "".join(out)


def results_html(
    adata: Any,
    cfg: Mapping[str, Any] | None = None,
    *,
    figure_numbers: Mapping[str, int] | None = None,
) -> str:
    """One short paragraph per hypothesis and contrast, from ``uns["bonemet_compare"]``.

    ``figure_numbers`` (figure name -> its number in the report) adds references to the
    figures that show the tested quantities."""
    res = adata.uns.get("bonemet_compare")
    if not isinstance(res, Mapping):
        return ""
    P = _Params(adata, cfg)
    msg = P.get("compare", "min_samples_per_group")
    msg = int(msg) if _given(msg) else None
    mcells = P.get("compare", "min_cells")
    ref = str(_v(res.get("reference", "")))
    da = res.get("differential_abundance")
    st = res.get("score_tests")
    da = da if isinstance(da, pd.DataFrame) else pd.DataFrame()
    st = st if isinstance(st, pd.DataFrame) else pd.DataFrame()
    contrasts = _v(res.get("contrasts"))
    if isinstance(contrasts, str):
        contrasts = [contrasts]
    if not contrasts:
        contrasts = list(pd.unique(pd.concat([da.get("contrast", pd.Series(dtype=str)),
                                              st.get("contrast", pd.Series(dtype=str))])))  # fmt: skip
    status = str(_v(res.get("status", "")))
    if not contrasts:
        return f"<p class='note'>No contrast was tested ({_e(status or 'no results')}).</p>"
    out = []
    for contrast in contrasts:
        contrast = str(contrast)
        other = contrast.split(" vs ")[0] if " vs " in contrast else contrast
        out.append(f"<h3>{_e(contrast)}</h3>")
        items = []
        for i, (head, kind, test, pop) in enumerate(HYPOTHESES, 1):
            if kind == "da":
                sub = (
                    da[(da.get("contrast") == contrast) & (da.get("test") == test)]
                    if len(da)
                    else da
                )
                if len(sub):
                    body = _da_sentence(sub.iloc[0].to_dict(), ref, other, msg)
                elif test in CALLED_FRACTIONS:
                    body = _not_tested_called(adata, test)
                else:
                    body = ("Not tested: the population (or its lineage) is absent from this "
                            "object's samples.")  # fmt: skip
            else:
                scored = f"score_{test}" in adata.obs.columns or (
                    len(st) > 0 and bool((st["score"] == test).any())
                )
                if not scored:
                    continue  # the run did not score this programme
                sub = (
                    st[(st["contrast"] == contrast) & (st["score"] == test)
                       & (st["population"] == pop)]
                    if len(st) else st
                )  # fmt: skip
                if len(sub):
                    body = _score_sentence(sub.iloc[0].to_dict(), ref, other, msg)
                else:
                    body = _not_tested_score(adata, P, pop, mcells)
            items.append(
                f"<div class='result' id='result-{_e(contrast.replace(' ', '_'))}-{i}'>"
                f"<p><b>{_e(head)}.</b> {body}"
                f"{_refs('called' if test in CALLED_FRACTIONS else kind, figure_numbers)}</p></div>"
            )
        out.extend(items)
        de = res.get("pseudobulk_de")
        skipped = res.get("de_skipped")
        out.append(
            _others_html(
                da,
                st,
                de if isinstance(de, pd.DataFrame) else pd.DataFrame(),
                skipped if isinstance(skipped, pd.DataFrame) else pd.DataFrame(),
                contrast,
                figure_numbers,
            )
        )
    return "".join(out)


def sample_table_html(adata: Any, cfg: Mapping[str, Any] | None = None) -> str:
    df = sample_table(adata, cfg)
    if df is None or df.empty:
        return ""
    head = "".join(f"<th class='text'>{_e(c)}</th>" for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for c in df.columns:
            v = r[c]
            txt = (
                "–"
                if pd.isna(v)
                else (f"{int(v):,}" if isinstance(v, int | np.integer) else str(v))
            )
            cls = " class='text'" if not isinstance(v, int | np.integer) else ""
            cells.append(f"<td{cls}>{_e(txt)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        "<div class='tablewrap'><table class='samples' id='sample-table'>"
        f"<tr>{head}</tr>{''.join(rows)}</table></div>"
    )
