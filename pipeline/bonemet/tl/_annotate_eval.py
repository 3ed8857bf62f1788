"""Evaluation of an annotation against reference labels: the documented label mapping,
confusion tables, lineage accuracy and CD8-vs-CD4 agreement.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._errors import InputError

__all__ = [
    "REFERENCE_LINEAGES",
    "REFERENCE_POPULATIONS",
    "label_agreement",
    "population_agreement",
    "lineage_accuracy",
    "cd8_cd4_accuracy",
]


# Reference labels of public sets -> accepted lineages (lower-cased, stripped). Used by
# ``lineage_accuracy``; labels not listed are mapped by keywords (``_reference_lineages``).
REFERENCE_LINEAGES: dict[str, tuple[str, ...]] = {
    # Kang et al. 2018 (muscat example_sce)
    "cd4 t cells": ("T cell",),
    "cd8 t cells": ("T cell",),
    "b cells": ("B cell",),
    "nk cells": ("NK cell",),
    "cd14+ monocytes": ("Monocyte/Macrophage",),
    "fcgr3a+ monocytes": ("Monocyte/Macrophage",),
    "dendritic cells": ("Dendritic cell",),
    "megakaryocytes": ("Megakaryocyte",),
    # short forms
    "cd4 t": ("T cell",),
    "cd8 t": ("T cell",),
    "b": ("B cell",),
    "nk": ("NK cell",),
    # SoupX pbmc4k
    "t_cd4": ("T cell",),
    "t_cd8": ("T cell",),
    "mnp": ("Monocyte/Macrophage", "Dendritic cell"),
}
"""Documented mapping of common reference labels to accepted ``cell_type`` values.

Kang 2018: ``CD14+ Monocytes``/``FCGR3A+ Monocytes`` -> Monocyte/Macrophage, ``CD4 T cells``/
``CD8 T cells`` -> T cell, ``B cells`` -> B cell, ``NK cells`` -> NK cell. SoupX pbmc4k:
``T_CD4``/``T_CD8`` -> T cell, ``MNP`` (mononuclear phagocytes) -> Monocyte/Macrophage or
Dendritic cell, ``B``, ``NK``. An empty tuple or ``?`` means the label is not evaluated.
"""

# Reference labels that name one bonemet population (lower-cased). Labels equal to a
# population of the vocabulary (any case) map to it as well (generated data, bonemet runs).
REFERENCE_POPULATIONS: dict[str, str] = {
    "cd4 t cells": "CD4 T",
    "cd8 t cells": "CD8 T",
    "b cells": "B",
    "nk cells": "NK",
    "cd14+ monocytes": "Classical monocyte",
    "fcgr3a+ monocytes": "Non-classical monocyte",
    "t_cd4": "CD4 T",
    "t_cd8": "CD8 T",
    "nk": "NK",
    "b": "B",
    "treg": "Treg",
    "plasma cells": "Plasma",
    "pdc": "pDC",
    "cdc1": "cDC1",
    "cdc2": "cDC2",
}
"""Documented mapping of common reference labels to one ``population``; reference CD8
labels map to ``CD8 T`` (a Tpex/Tex call then shows as a state of the same lineage)."""

_EXCLUDED_LABELS = {"?", "", "nan", "none", "unknown", "unassigned", "doublet", "doublets"}

_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"plasma", ("Plasma cell",)),
    (r"\bnk\b|natural killer", ("NK cell",)),
    (r"(^|[^a-z])(cd4|cd8|treg|t[ _-]?cell|t_)|mait|gamma.?delta", ("T cell",)),
    (r"(^|[^a-z])b([ _-]?cell|$)|naive b|memory b|pro-?b|pre-?b", ("B cell",)),
    (r"mono|macro|kupffer|microglia", ("Monocyte/Macrophage",)),
    (r"\bdc\b|dendritic|cdc|pdc", ("Dendritic cell",)),
    (r"neutro|granulocyte|pmn", ("Neutrophil",)),
    (r"mast|basophil", ("Mast cell/Basophil",)),
    (r"erythr", ("Erythroid",)),
    (r"osteoprogenitor|osteo-?car|skeletal stem|skeletal progenitor", ("Stromal", "Osteoblast")),
    (r"megakaryo|platelet", ("Megakaryocyte",)),
    (r"chondro", ("Chondrocyte",)),
    (r"hsc|hspc|progenitor|stem", ("HSPC",)),
    (r"pericyte|smooth muscle|mural|\bsmc\b|vsmc", ("Pericyte/Smooth muscle",)),
    (r"osteoclast", ("Osteoclast",)),
    (r"osteoblast|osteocyte", ("Osteoblast",)),
    (r"endothel", ("Endothelial",)),
    (r"fibroblast|\bcaf\b", ("Fibroblast",)),
    (r"stroma|msc|mesenchym|car cell|lepr", ("Stromal",)),
    (r"epithel|tumou?r|cancer|malignant|carcinoma", ("Tumour epithelial",)),
)


def _reference_lineages(label: Any) -> tuple[str, ...] | None:
    """Accepted lineages for a reference label; ``None`` when the label is not evaluated."""
    s = str(label).strip().lower()
    if s in _EXCLUDED_LABELS:
        return None
    if s in REFERENCE_LINEAGES:
        return REFERENCE_LINEAGES[s] or None
    for pat, lin in _KEYWORDS:
        if re.search(pat, s):
            return lin
    return None


# --------------------------------------------------------------------------- agreement
def label_agreement(
    adata: ad.AnnData, *, label_key: str = "reference_label", key: str = "cell_type"
) -> pd.DataFrame:
    """Confusion table (cell counts): reference labels (rows) x annotation (columns).

    Parameters
    ----------
    adata
        Annotated data with ``obs[label_key]`` and ``obs[key]``.
    label_key
        Reference labels (``obs["reference_label"]`` when the run got ``--label-key``).
    key
        ``"cell_type"`` or ``"population"``.
    """
    for k in (label_key, key):
        if k not in adata.obs:
            raise InputError(f"obs[{k!r}] not found; run bm.tl.annotate / pass --label-key first")
    ref = adata.obs[label_key].astype(str)
    pred = adata.obs[key].astype(str)
    tab = pd.crosstab(ref.rename(label_key), pred.rename(key))
    cats = (
        list(adata.obs[key].cat.categories)
        if isinstance(adata.obs[key].dtype, pd.CategoricalDtype)
        else []
    )
    order = [c for c in cats if c in tab.columns] + [c for c in tab.columns if c not in cats]
    return tab[order]


def population_agreement(
    adata: ad.AnnData,
    *,
    label_key: str = "reference_label",
    key: str = "population",
    min_mapped: float = 0.5,
) -> pd.DataFrame | None:
    """Population x population confusion with per-population precision, recall and F1.

    Reference labels are mapped to populations: a label equal to a vocabulary population
    (any case) maps to it, else through :data:`REFERENCE_POPULATIONS`; unmapped cells are
    left out. Rows are reference populations, the columns are the predicted populations
    (cell counts) followed by ``n_reference``, ``precision``, ``recall`` and ``f1`` of the
    row's population. ``None`` when fewer than ``min_mapped`` of the cells map (the
    reference labels are not at population level).
    """
    from .._vocab import POPULATIONS

    for k in (label_key, key):
        if k not in adata.obs:
            raise InputError(f"obs[{k!r}] not found; run bm.tl.annotate / pass --label-key first")
    vocab = {p.lower(): p for p in POPULATIONS if p != "Unassigned"}
    ref_raw = adata.obs[label_key].astype(str).str.strip()
    uniq = {
        lab: vocab.get(lab.lower(), REFERENCE_POPULATIONS.get(lab.lower())) for lab in set(ref_raw)
    }
    ref = ref_raw.map(uniq)
    mapped = ref.notna().to_numpy()
    if mapped.sum() == 0 or mapped.mean() < min_mapped:
        return None
    r = ref[mapped].astype(str).to_numpy()
    p = adata.obs[key].astype(str).to_numpy()[mapped]
    tab = pd.crosstab(pd.Series(r, name="reference_population"), pd.Series(p, name=key))
    order = [c for c in POPULATIONS if c in tab.columns] + [
        c for c in tab.columns if c not in POPULATIONS
    ]
    tab = tab[order]
    rows = [c for c in POPULATIONS if c in tab.index]
    tab = tab.loc[rows]
    n_ref = tab.sum(axis=1)
    tp = np.array([tab.loc[x, x] if x in tab.columns else 0 for x in rows], dtype=float)
    n_pred = np.array([int((p == x).sum()) for x in rows], dtype=float)
    recall = tp / np.maximum(n_ref.to_numpy(dtype=float), 1)
    precision = np.where(n_pred > 0, tp / np.maximum(n_pred, 1), 0.0)
    f1 = np.where(
        precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0
    )
    out = tab.copy()
    out["n_reference"] = n_ref.to_numpy()
    out["precision"] = precision
    out["recall"] = recall
    out["f1"] = f1
    return out


def lineage_accuracy(
    adata: ad.AnnData,
    *,
    label_key: str = "reference_label",
    key: str = "cell_type",
    mapping: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Fraction of evaluable cells whose ``cell_type`` is accepted for their reference label.

    Reference labels map to accepted lineages through ``mapping`` (lower-cased keys), then
    ``REFERENCE_LINEAGES``, then keywords; labels such as ``?`` and labels that map to
    nothing are excluded. ``Unassigned`` counts as wrong.

    Returns
    -------
    dict with ``accuracy``, ``n_evaluated``, ``n_excluded`` and ``per_label`` accuracies.
    """
    extra = {str(k).strip().lower(): tuple(v) for k, v in (mapping or {}).items()}
    ref = adata.obs[label_key].astype(str).to_numpy()
    pred = adata.obs[key].astype(str).to_numpy()
    ok = np.zeros(ref.size, dtype=bool)
    ev = np.zeros(ref.size, dtype=bool)
    accepted: dict[str, tuple[str, ...] | None] = {}
    for lab in np.unique(ref):
        low = lab.strip().lower()
        accepted[lab] = (extra[low] or None) if low in extra else _reference_lineages(lab)
    for i, (r, p) in enumerate(zip(ref, pred)):
        acc = accepted[r]
        if acc is None:
            continue
        ev[i] = True
        ok[i] = p in acc
    per = {
        lab: float(ok[ev & (ref == lab)].mean())
        for lab in accepted
        if accepted[lab] and (ev & (ref == lab)).any()
    }
    return {
        "accuracy": float(ok[ev].mean()) if ev.any() else float("nan"),
        "n_evaluated": int(ev.sum()),
        "n_excluded": int((~ev).sum()),
        "per_label": per,
    }


def _t_subset(label: str) -> str | None:
    s = label.lower()
    if re.search(r"cd8", s):
        return "CD8"
    if re.search(r"cd4|treg|regulatory", s):
        return "CD4"
    return None


def cd8_cd4_accuracy(
    adata: ad.AnnData, *, label_key: str = "reference_label", key: str = "population"
) -> dict[str, Any]:
    """CD8-vs-CD4 agreement among reference T cells.

    Reference labels containing ``CD8`` are CD8, those containing ``CD4``/``Treg`` are CD4.
    A prediction is CD8 when its population starts with ``CD8`` and CD4 for ``CD4 T``/``Treg``.

    Returns
    -------
    dict: ``accuracy`` over reference T cells that the annotation called T cells (the
    CD8/CD4 split), ``accuracy_all`` over all reference CD4/CD8 cells (non-T calls count
    as wrong), and the counts.
    """
    ref = adata.obs[label_key].astype(str).map(_t_subset).to_numpy()
    pop = adata.obs[key].astype(str).to_numpy()
    pred = np.where(
        np.char.startswith(pop.astype(str), "CD8"),
        "CD8",
        np.where(np.isin(pop, ["CD4 T", "Treg"]), "CD4", "other"),
    )
    isref = np.array([r is not None for r in ref])
    called = isref & (pred != "other")
    return {
        "accuracy": float((pred[called] == ref[called]).mean()) if called.any() else float("nan"),
        "accuracy_all": float((pred[isref] == ref[isref]).mean()) if isref.any() else float("nan"),
        "n_reference_t": int(isref.sum()),
        "n_called_t": int(called.sum()),
    }
