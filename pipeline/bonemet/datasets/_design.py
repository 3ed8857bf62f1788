"""A small generator of multi-sample, two-condition data with known truth.

It exists to test and calibrate the ``compare`` stage: every sample is a biological
replicate, so population proportions vary between samples (Dirichlet-multinomial) and
every gene's mean varies between samples (log-normal), on top of negative-binomial
cell-to-cell noise. Planted abundance shifts, planted DE genes and planted score shifts
are the only differences between conditions; everything else is a null.
"""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._vocab import POPULATION_TO_CELL_TYPE

__all__ = ["simulate_condition_design", "DESIGN_POPULATIONS"]

#: populations of the generated design (the ones the within-lineage fractions use, plus
#: a few others) and their mean share of a sample's cells
DESIGN_POPULATIONS: dict[str, float] = {
    "CD8 T": 0.08,
    "CD8 Tpex (TCF1+)": 0.05,
    "CD8 Tex (terminal)": 0.07,
    "B": 0.10,
    "Classical monocyte": 0.10,
    "M-MDSC": 0.05,
    "Macrophage": 0.09,
    "Iron-recycling macrophage (VCAM1+CD163+CCR3+)": 0.04,
    "PMN-MDSC": 0.06,
    "Immature neutrophil (CHI3L3+)": 0.06,
    "Mature neutrophil": 0.14,
    "Tumour epithelial": 0.16,
}


def simulate_condition_design(
    *,
    n_per_group: int | tuple[int, int] = 3,
    cells_per_sample: int = 600,
    n_genes: int = 300,
    conditions: tuple[str, str] = ("control", "bone_met"),
    abundance_fold: Mapping[str, float] | None = None,
    de_population: str | None = None,
    de_genes: int = 0,
    de_lfc: float = 2.0,
    score_shift: Mapping[str, float] | None = None,
    concentration: float = 150.0,
    sample_sd: float = 0.2,
    dispersion: float = 0.3,
    paired: bool = False,
    batch: bool = False,
    populations: Mapping[str, float] | None = None,
    seed: int = 0,
) -> ad.AnnData:
    """Generate a two-condition, multi-sample count matrix with planted truth.

    Parameters
    ----------
    n_per_group
        Samples per condition (one number, or ``(reference, other)``).
    cells_per_sample
        Mean cells per sample (each sample draws its own size, ±25%).
    n_genes
        Genes; gene ``g<i>`` (``i`` from 0).
    conditions
        ``(reference, other)`` condition names.
    abundance_fold
        Population -> fold change of its expected share in the second condition (the
        other shares are renormalised).
    de_population, de_genes, de_lfc
        The first ``de_genes`` genes get a log2 fold change ``de_lfc`` (alternating sign) in
        ``de_population`` of the second condition.
    score_shift
        Population -> shift of the per-cell ``obs["score_hypoxia"]`` in the second
        condition (``obs["score_null"]`` never changes).
    concentration
        Dirichlet concentration of the per-sample proportions (smaller: more variable
        between replicates).
    sample_sd
        Standard deviation of the per-sample, per-gene log mean (biological variation of
        replicates).
    dispersion
        Negative-binomial dispersion of cell counts.
    paired
        Sample ``i`` of both conditions comes from subject ``subj<i>`` (a shared subject
        effect on gene means and proportions); needs equal group sizes.
    batch
        Add ``obs["batch"]`` (two batches, each holding both conditions) with a batch effect
        on gene means.
    populations
        Population -> mean share (default :data:`DESIGN_POPULATIONS`).
    seed
        Random seed.

    Returns
    -------
    AnnData with integer counts in ``X`` and ``layers["counts"]``, ``obs`` columns
    ``sample``, ``condition``, ``population``, ``cell_type``, ``score_hypoxia``,
    ``score_null`` (and ``subject``, ``batch``); ``var["de_truth"]`` is the planted log2
    fold change of each gene in ``de_population``.
    """
    rng = np.random.default_rng(seed)
    n_ref, n_alt = (n_per_group, n_per_group) if isinstance(n_per_group, int) else n_per_group
    if paired and n_ref != n_alt:
        raise ValueError("paired designs need equal group sizes")
    pops = dict(populations or DESIGN_POPULATIONS)
    names = list(pops)
    base = np.array([pops[p] for p in names], dtype=float)
    base /= base.sum()
    fold = {str(k): float(v) for k, v in (abundance_fold or {}).items()}
    unknown = set(fold) - set(names)
    if unknown:
        raise ValueError(f"abundance_fold names unknown populations: {sorted(unknown)}")
    shifts = {str(k): float(v) for k, v in (score_shift or {}).items()}

    # population mean profiles: shared baseline, each population with its own markers
    log_base = rng.normal(-0.5, 1.2, n_genes)
    prof = log_base[None, :] + rng.normal(0, 0.6, (len(names), n_genes))
    de_truth = np.zeros(n_genes)
    if de_population is not None and de_genes:
        if de_population not in names:
            raise ValueError(f"de_population {de_population!r} is not one of {names}")
        de_truth[:de_genes] = de_lfc * np.where(np.arange(de_genes) % 2 == 0, 1.0, -1.0)

    samples: list[str] = []
    conds: list[str] = []
    subjects: list[str] = []
    for c, n in zip(conditions, (n_ref, n_alt), strict=True):
        for i in range(n):
            samples.append(f"{c}{i + 1:02d}")
            conds.append(c)
            subjects.append(f"subj{i + 1}")
    n_subj = max(n_ref, n_alt)
    subj_gene = rng.normal(0, sample_sd, (n_subj, n_genes))
    subj_prop = rng.normal(0, 0.15, (n_subj, len(names)))
    batch_effect = rng.normal(0, 0.3, (2, n_genes))

    blocks = []
    obs_parts = []
    for s, (name, c, subj) in enumerate(zip(samples, conds, subjects, strict=True)):
        alt = c == conditions[1]
        j = int(subj[4:]) - 1
        share = base * np.array([fold.get(p, 1.0) if alt else 1.0 for p in names])
        if paired:
            share = share * np.exp(subj_prop[j])
        share /= share.sum()
        props = rng.dirichlet(concentration * share)
        n_cells = int(round(cells_per_sample * rng.uniform(0.75, 1.25)))
        counts_per_pop = rng.multinomial(n_cells, props)
        labels = np.repeat(names, counts_per_pop)
        pop_idx = np.repeat(np.arange(len(names)), counts_per_pop)
        sample_log = rng.normal(0, sample_sd, n_genes)
        if paired:
            sample_log = subj_gene[j] + rng.normal(0, sample_sd / 2, n_genes)
        b = s % 2 if batch else 0
        log_mu = prof[pop_idx] + sample_log[None, :]
        if batch:
            log_mu = log_mu + batch_effect[b][None, :]
        if alt and de_population is not None:
            hit = pop_idx == names.index(de_population)
            log_mu[hit] += de_truth[None, :] * np.log(2)
        size = rng.lognormal(0, 0.25, len(labels))[:, None]
        mu = np.exp(log_mu) * size
        r = 1.0 / dispersion
        lam = rng.gamma(r, mu / r)
        blocks.append(sp.csr_matrix(rng.poisson(lam).astype(np.float32)))
        hyp = rng.normal(0, 0.1, len(labels)) + rng.normal(0, 0.05)
        if alt:
            hyp += np.array([shifts.get(p, 0.0) for p in labels])
        part = pd.DataFrame(
            {
                "sample": name,
                "condition": c,
                "population": labels,
                "score_hypoxia": hyp,
                "score_null": rng.normal(0, 0.1, len(labels)) + rng.normal(0, 0.05),
            }
        )
        if paired:
            part["subject"] = subj
        if batch:
            part["batch"] = f"batch{b + 1}"
        obs_parts.append(part)
    obs = pd.concat(obs_parts, ignore_index=True)
    obs.index = [f"cell{i}" for i in range(len(obs))]
    obs["cell_type"] = pd.Categorical(obs["population"].map(POPULATION_TO_CELL_TYPE))
    for col in ("sample", "population", "subject", "batch"):
        if col in obs:
            obs[col] = pd.Categorical(obs[col])
    obs["condition"] = pd.Categorical(obs["condition"], categories=list(conditions))
    x = sp.vstack(blocks).tocsr()
    var = pd.DataFrame({"de_truth": de_truth}, index=[f"g{i}" for i in range(n_genes)])
    adata = ad.AnnData(X=x, obs=obs, var=var)
    adata.layers["counts"] = x.copy()
    return adata
