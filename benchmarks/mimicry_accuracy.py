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
  the remaining cells; the fraction of tumour cells called must be at most the FDR level.

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
