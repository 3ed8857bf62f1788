"""Erythroid-mimicry calls against the generated truth.

Runs the pipeline's own stages (``bonemet._stages``: qc per sample -> merge (normalize +
HVG) -> integrate (``method="pca"`` by default, fast) -> cluster -> annotate -> score) on
``bm.datasets.simulate_bone_metastasis(cells, samples, seed)`` and compares
``obs["erythroid_mimicry_call"]`` with ``obs["true_erythroid_mimicry"]``:

* recall: called among the true mimicry tumour cells (singlets, primary population
  ``Tumour epithelial``) that QC kept; also against all true mimicry cells before QC;
* precision: true mimicry singlet tumour cells among the calls (a called simulated doublet
  counts as a false call);
* doublets among the calls, and their ``doublet_score``;
* the mimicry fraction per condition (pooled calls / called-eligible tumour cells, and the
  mean of the per-sample fractions), which must be higher in ``bone_met``;
* the per-sample table of :func:`bonemet.tl.erythroid_mimicry`;
* recall by detectability: each true mimic's own globin UMIs over the ambient globin UMIs
  expected in its droplet (``obs["true_globin_own"] / obs["true_globin_ambient"]``, the
  simulator's expected values before counting noise), overall and above the stated
  detection limit (own >= ``DETECTION_LIMIT`` x ambient), with a curve by fold bin;
* a null check: the true mimics removed from the scored object, the read-out re-run on
  the remaining cells; the fraction of tumour cells called must be at most the FDR level;
* oracle ceilings: the best recall at precision >= 0.90 / 0.95 that callers reading a
  cell's globin counts reach when told the simulator's truth (which cells are tumour
  singlets, the threshold) and more or less of the null: each droplet's exact ambient
  globin, or only each sample's ambient rate (all a per-sample null can know), or DecontX's
  per-cell contamination estimate; and a classifier trained on the truth.

Prints JSON and writes ``benchmarks/results/mimicry_accuracy.json`` (``--out`` to change).

Usage::

    python benchmarks/mimicry_accuracy.py [--cells 20000] [--samples 4] [--seed 0]
        [--integrate pca|scvi] [--label after]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import bonemet as bm
from bonemet import _stages as stages
from bonemet._meta import MIMICRY_KEY, bonemet_uns
from bonemet.config import Config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from demo_cpu import git_rev  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "mimicry_accuracy.json"
TUMOUR = "Tumour epithelial"
#: own globin >= this x the droplet's expected ambient globin: a mimic a test can see
DETECTION_LIMIT = 2.0
FOLD_BINS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, np.inf)


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def run(cells: int, n_samples: int, seed: int, integrate: str, save: Path | None = None) -> dict:
    t0 = time.perf_counter()
    raw = bm.datasets.simulate_bone_metastasis(cells, n_samples, seed=seed)
    truth_pre = raw.obs.copy()
    cfg = Config.model_validate(
        {
            "seed": seed,
            "integrate": {"method": integrate, "max_epochs": 10, "accelerator": "cpu"},
            "cluster": {"resolutions": [1.0]},
        }
    )
    timings = {}
    t = time.perf_counter()
    per_sample = {
        str(s): stages.qc(raw[raw.obs["sample"] == s].copy(), cfg)
        for s in raw.obs["sample"].cat.categories
    }
    timings["qc"] = time.perf_counter() - t
    t = time.perf_counter()
    adata = stages.merge(per_sample, cfg)
    timings["merge"] = time.perf_counter() - t
    for name in ("integrate", "cluster", "annotate", "score"):
        t = time.perf_counter()
        adata = getattr(stages, name)(adata, cfg)
        timings[name] = time.perf_counter() - t

    if save is not None:
        adata.write_h5ad(save)
    res = evaluate(adata, truth_pre, timings, t0)
    if "decontaminated" in adata.layers:
        # the same cells and labels, calls made on the raw counts instead
        b = adata.copy()
        b.uns[MIMICRY_KEY] = bm.tl.erythroid_mimicry(b, layer="counts")
        raw = evaluate(b, truth_pre, {}, time.perf_counter())
        res["null_check"] = null_check(adata)
        res["oracle_ceiling"] = oracle_ceiling(adata)
        res["on_raw_counts"] = {
            k: raw[k]
            for k in ("n_called", "n_true_positive", "recall", "precision", "n_called_doublets",
                      "planted_direction_ok", "per_condition", "detectability")
        }  # fmt: skip
    return res


def null_check(adata) -> dict:
    """The read-out on the same cells without the true mimics (tumour cells all null)."""
    keep = ~adata.obs["true_erythroid_mimicry"].to_numpy(dtype=bool)
    b = adata[keep].copy()
    tab = bm.tl.erythroid_mimicry(b)
    tum = (b.obs["population"].astype(str) == TUMOUR).to_numpy()
    call = b.obs["erythroid_mimicry_call"].to_numpy(dtype=bool)
    fdr = bonemet_uns(b)["parameters"]["erythroid_mimicry"]["fdr"]
    single = ~b.obs["true_doublet"].to_numpy(dtype=bool)
    return {
        "what": "true mimics removed; tumour cells are all non-mimics",
        "fdr": fdr,
        "n_tumour_annotated": int(tum.sum()),
        "n_called": int(call.sum()),
        "n_called_singlets": int((call & single).sum()),
        "fraction_called": float(call[tum].mean()) if tum.any() else None,
        "fraction_called_singlets": float(call[tum & single].mean()) if tum.any() else None,
        "at_most_fdr": bool(call[tum & single].mean() <= fdr) if tum.any() else None,
        "null_source": tab["null_source"].tolist(),
        "null_weight": [round(float(x), 3) for x in tab["null_weight"]],
    }


#: precision levels at which the oracle's best recall is reported
ORACLE_PRECISION = (0.90, 0.95)


def oracle_ceiling(adata) -> dict:
    """Best recall of globin-count callers that are told the simulator's truth.

    Among the true tumour singlets QC kept, each cell's raw globin UMIs ``k`` (of its
    ``n``) are ranked and the threshold with the highest recall at each precision level is
    picked on the truth (no caller without labels can choose it better). The callers differ
    in what they know of the null, the globin a non-mimic cell's droplet holds:

    * ``exact_droplet_ambient``: each droplet's expected ambient globin
      (``true_globin_ambient``, which carries the droplet's own contamination fraction) plus
      the tumour's baseline own globin; ranked by the Poisson upper tail ``P(K >= k)``;
    * ``sample_ambient_rate``: only each sample's median ambient globin per UMI (from the
      truth), times ``n``: what a per-sample null can know at best;
    * ``decontx_contamination``: the sample's rate per contaminating UMI times DecontX's
      estimated contamination of the cell (``obs["ambient_contamination"]``) times ``n``;
    * ``globin_share``: ``k / n`` alone;
    * ``supervised_cv_globins`` / ``supervised_cv_programme``: a logistic regression trained
      on the truth (5-fold cross-validated) on the log counts of each globin gene (or of
      every gene the simulator's mimicry programme moves: globins, erythroid genes, haem
      enzymes), ``log n`` and the sample. It can learn what a caller built from biology
      should not: the simulator's own globin-gene ratios and the erythroid genes it plants
      in mimics.
    """
    from scipy.stats import poisson

    from bonemet._signatures import load_gene_sets, match_genes

    obs = adata.obs
    if "true_globin_own" not in obs or "counts" not in adata.layers:
        return {}
    core = load_gene_sets("programme")["erythroid_mimicry_core"].genes("mouse")
    idx = adata.var_names.get_indexer(match_genes(core, adata.var_names)[0])
    C = adata.layers["counts"]
    k_all = np.asarray(C[:, idx].sum(1)).ravel()
    n_all = np.asarray(C.sum(1)).ravel()
    single = ~obs["true_doublet"].to_numpy(dtype=bool)
    tum = (obs["true_population"].astype(str) == TUMOUR).to_numpy() & single
    mim = obs["true_erythroid_mimicry"].to_numpy(dtype=bool)
    own = obs["true_globin_own"].to_numpy(dtype=float)
    amb = obs["true_globin_ambient"].to_numpy(dtype=float)
    sample = obs["sample"].astype(str).to_numpy()
    null = tum & ~mim
    base_rate = float(np.median(own[null] / np.maximum(n_all[null], 1)))
    own0 = np.where(mim, n_all * base_rate, own)
    lam = {"exact_droplet_ambient": amb + own0}
    rate = np.zeros(len(k_all))
    per_contam = np.zeros(len(k_all))
    cont = obs["ambient_contamination"].to_numpy(dtype=float) if "ambient_contamination" in obs \
        else None  # fmt: skip
    for s in np.unique(sample):
        m = sample == s
        rate[m] = np.median(amb[m & null] / np.maximum(n_all[m & null], 1))
        if cont is not None:
            per_contam[m] = np.median(amb[m & null] / np.maximum(cont * n_all, 1e-9)[m & null])
    lam["sample_ambient_rate"] = n_all * (rate + base_rate)
    if cont is not None:
        lam["decontx_contamination"] = n_all * (per_contam * cont + base_rate)
    k, n, y = k_all[tum], n_all[tum], mim[tum]
    stats = {name: -poisson.logsf(k - 1, v[tum]) for name, v in lam.items()}
    stats["globin_share"] = k / np.maximum(n, 1)
    from bonemet.datasets import _simulate as sim

    programme = [*sim._HB, *sim._SIGNATURES["mimicry_erythroid"], *sim._HAEM]
    stats["supervised_cv_globins"] = _supervised_cv_score(adata, tum, y, sample[tum], sim._HB)
    stats["supervised_cv_programme"] = _supervised_cv_score(adata, tum, y, sample[tum], programme)
    res: dict = {
        "what": "best recall at each precision of globin-count callers told the truth "
        "(tumour singlets, the threshold) and, by caller, more or less of the null",
        "n_tumour_singlets": int(len(y)),
        "n_true_mimics": int(y.sum()),
        "baseline_own_globin_per_umi": base_rate,
    }
    for name, st in stats.items():
        order = np.argsort(-st, kind="stable")
        tp = np.cumsum(y[order])
        prec, rec = tp / np.arange(1, len(order) + 1), tp / max(int(y.sum()), 1)
        res[name] = {
            f"recall_at_precision_{p:.2f}": float(rec[prec >= p].max()) if (prec >= p).any()
            else 0.0
            for p in ORACLE_PRECISION
        }  # fmt: skip
    if cont is not None:
        from scipy.stats import spearmanr

        res["decontx_contamination_vs_true_ambient_share_spearman"] = float(
            spearmanr(cont[tum], amb[tum] / np.maximum(n, 1))[0]
        )
    return res


def _supervised_cv_score(
    adata, tum: np.ndarray, y: np.ndarray, sample: np.ndarray, tokens: list[str]
) -> np.ndarray:
    """Out-of-fold mimicry probability of each tumour singlet (``tum``; ``y`` and ``sample``
    are already restricted to them) from a classifier trained on the truth with the log
    counts of the simulator's genes ``tokens``, library size and the sample."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from bonemet.datasets import _simulate as sim

    genes = [g for g in dict.fromkeys(sim._parse_token(t, "mouse")[0] for t in tokens)
             if g in adata.var_names]  # fmt: skip
    C = adata.layers["counts"][tum]
    sub = C[:, adata.var_names.get_indexer(genes)]
    G = np.log1p(sub.toarray() if hasattr(sub, "toarray") else np.asarray(sub))
    tot = np.asarray(C.sum(1)).ravel()
    onehot = (sample[:, None] == np.unique(sample)[None, :]).astype(float)
    X = np.c_[G, np.log(np.maximum(tot, 1)), onehot]
    out = np.zeros(len(y))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    for train, test in folds.split(X, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        clf.fit(X[train], y[train])
        out[test] = clf.predict_proba(X[test])[:, 1]
    return out


def detectability(obs: pd.DataFrame, call: np.ndarray, pos: np.ndarray) -> dict:
    """Recall of the true mimics by own / ambient expected globin UMIs."""
    if "true_globin_own" not in obs:
        return {}
    own = obs["true_globin_own"].to_numpy(dtype=float)
    amb = obs["true_globin_ambient"].to_numpy(dtype=float)
    fold = np.divide(own, amb, out=np.full_like(own, np.inf), where=amb > 0)
    det = pos & (fold >= DETECTION_LIMIT)
    curve = []
    for lo, hi in zip(FOLD_BINS[:-1], FOLD_BINS[1:]):
        m = pos & (fold >= lo) & (fold < hi)
        curve.append({"fold_from": lo, "fold_to": None if np.isinf(hi) else hi,
                      "n_true": int(m.sum()), "n_called": int((call & m).sum()),
                      "recall": float((call & m).sum() / m.sum()) if m.any() else None})  # fmt: skip
    return {
        "definition": "own globin UMIs / ambient globin UMIs expected in the droplet "
        "(simulator truth, before counting noise)",
        "detection_limit_fold": DETECTION_LIMIT,
        "n_true_above_limit": int(det.sum()),
        "fraction_of_true_above_limit": float(det.sum() / pos.sum()) if pos.any() else None,
        "recall_above_limit": float((call & det).sum() / det.sum()) if det.any() else None,
        "recall_below_limit": float((call & pos & ~det).sum() / (pos & ~det).sum())
        if (pos & ~det).any()
        else None,
        "fold_quantiles_true_mimics": {
            str(q): float(np.quantile(fold[pos], q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)
        }
        if pos.any()
        else {},
        "recall_by_fold": curve,
    }


def evaluate(adata, truth_pre: pd.DataFrame, timings: dict, t0: float) -> dict:
    """Calls of a scored object against the generated truth (``truth_pre``: obs before QC)."""
    obs = adata.obs
    call = obs["erythroid_mimicry_call"].to_numpy(dtype=bool)
    true_mim = obs["true_erythroid_mimicry"].to_numpy(dtype=bool)
    dbl = obs["true_doublet"].to_numpy(dtype=bool)
    tum = (obs["true_population"].astype(str) == TUMOUR).to_numpy()
    pos = true_mim & tum & ~dbl
    tp = int((call & pos).sum())
    n_call = int(call.sum())
    pre = truth_pre
    pos_pre = (
        pre["true_erythroid_mimicry"].to_numpy(bool)
        & (pre["true_population"].astype(str) == TUMOUR).to_numpy()
        & ~pre["true_doublet"].to_numpy(bool)
    )
    res: dict = {
        "n_cells_before_qc": int(len(truth_pre)),
        "n_cells_after_qc": int(adata.n_obs),
        "n_true_mimicry_before_qc": int(pos_pre.sum()),
        "n_true_mimicry_after_qc": int(pos.sum()),
        "n_called": n_call,
        "n_true_positive": tp,
        "recall": tp / pos.sum() if pos.sum() else float("nan"),
        "recall_vs_before_qc": tp / pos_pre.sum() if pos_pre.sum() else float("nan"),
        "precision": tp / n_call if n_call else float("nan"),
        "n_called_doublets": int((call & dbl).sum()),
        "n_called_not_tumour": int((call & ~tum & ~dbl).sum()),
        "n_called_tumour_not_mimicry": int((call & tum & ~dbl & ~true_mim).sum()),
        "n_missed_annotated_tumour": int(
            (pos & ~call & (obs["population"].astype(str) == TUMOUR).to_numpy()).sum()
        ),
        "n_missed_not_annotated_tumour": int(
            (pos & (obs["population"].astype(str) != TUMOUR).to_numpy()).sum()
        ),
    }
    res["detectability"] = detectability(obs, call, pos)
    if "doublet_score" in obs:
        ds = obs["doublet_score"].to_numpy(dtype=float)
        res["doublet_score_called_median"] = float(np.median(ds[call])) if n_call else None
        res["doublet_score_called_doublets"] = [round(float(x), 4) for x in ds[call & dbl]]
    # per condition: truth and calls
    cond = obs["condition"].astype(str).to_numpy()
    pop = obs["population"].astype(str).to_numpy()
    per_cond = {}
    for c in sorted(set(cond)):
        m = cond == c
        tum_c = m & (pop == TUMOUR)
        per_cond[c] = {
            "n_tumour_annotated": int(tum_c.sum()),
            "n_called": int((call & m).sum()),
            "called_fraction": float((call & m).sum() / tum_c.sum()) if tum_c.any() else None,
            "true_fraction_in_true_tumour": float(
                (pos & m).sum() / max(int((m & tum & ~dbl).sum()), 1)
            ),
        }
    table = adata.uns.get(MIMICRY_KEY)
    if isinstance(table, pd.DataFrame):
        design = obs.groupby("sample", observed=True)["condition"].first().astype(str)
        table = table.copy()
        table["condition"] = table["sample"].astype(str).map(design)
        for c, g in table.groupby("condition"):
            per_cond[c]["mean_sample_fraction"] = float(g["fraction_called"].mean())
        res["per_sample"] = table.to_dict(orient="records")
    res["per_condition"] = per_cond
    fr = {c: v["called_fraction"] for c, v in per_cond.items()}
    res["planted_direction_ok"] = bool(
        fr.get("bone_met") is not None
        and fr.get("control") is not None
        and fr["bone_met"] > fr["control"]
    )
    params = bonemet_uns(adata).get("parameters", {}).get("erythroid_mimicry", {})
    res["parameters"] = dict(params)
    res["counts_source"] = params.get("counts_source", "counts (before the corrected layer)")
    res["decontaminated_layer"] = "decontaminated" in adata.layers
    if "erythroid_mimicry_class" in obs:
        tum = (obs["population"].astype(str) == TUMOUR).to_numpy()
        res["classes_in_annotated_tumour"] = {
            str(k): int(v)
            for k, v in obs.loc[tum, "erythroid_mimicry_class"].value_counts().items()
        }
    res["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    res["total_s"] = round(time.perf_counter() - t0, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=20000)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--integrate", choices=["pca", "scvi", "none"], default="pca")
    ap.add_argument("--label", default="", help="a name for this measurement (kept in the JSON)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--save", type=Path, default=None, help="also write the scored .h5ad here")
    args = ap.parse_args()
    res = run(args.cells, args.samples, args.seed, args.integrate, save=args.save)
    doc = {
        "benchmark": "mimicry_accuracy",
        "label": args.label,
        "git": git_rev() or "unknown",
        "data": f"simulate_bone_metastasis({args.cells}, {args.samples}, seed={args.seed})",
        "path": f"stages qc -> merge -> integrate({args.integrate}) -> cluster -> annotate -> score",
        "targets": {"recall": 0.80, "precision": 0.90},
        **res,
    }
    doc = _jsonable(doc)
    text = json.dumps(doc, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
