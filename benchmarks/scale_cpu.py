"""Cost growth of a whole run from 2k to 200k generated cells on CPU (JSON).

For each size, in a fresh subprocess (so each size's peak memory is its own), the demo's
data design (``bonemet.cli.demo_design``: samples split between conditions, batches that
cross condition, planted DE) is simulated with one sample per ~2,500 cells (at least 2,
at most 40), then every stage runs through :class:`bonemet.runner.Runner` with a fixed
number of scVI epochs. Recorded per size: wall time and peak resident memory per stage,
the size of ``OUT/`` and of its checkpoints ``OUT/.bonemet/`` against ``bonemet.h5ad``;
and per stage the cost per cell relative to the reference size (20k when measured).

Usage::

    python benchmarks/scale_cpu.py [--sizes 2000 20000 50000 100000 200000] [--epochs 10]
        [--out results/bench_scale] [--json benchmarks/results/scale_cpu.json] [--merge]

``--merge`` keeps the records of the JSON already there for the sizes not run now (each
record carries its own ``date`` and ``code``), so sizes can be measured in separate sittings.

Targets: per-cell time of every stage at 100k within 1.3x of 20k; peak RSS <= 3 GB +
40 KB per cell; ``.bonemet/`` <= 1.5x ``bonemet.h5ad``. Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from demo_cpu import git_rev  # noqa: E402

#: fields every size's record has (the test checks them)
SIZE_FIELDS = (
    "cells",
    "samples",
    "cells_after_qc",
    "wall_s",
    "stage_s",
    "stage_peak_rss_mib",
    "peak_rss_mib",
    "out_mib",
    "checkpoints_mib",
    "h5ad_mib",
    "checkpoint_ratio",
    "rss_target_mib",
)


def _mib(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def samples_for(cells: int) -> int:
    return int(min(40, max(2, round(cells / 2500))))


def one_size(cells: int, *, epochs: int, out: Path, threads: int | None) -> dict:
    """Simulate and run one size in this process; returns its record."""
    from demo_cpu import run_with_peaks

    import bonemet as bm
    from bonemet._utils import write_h5ad
    from bonemet.cli import demo_config, demo_design
    from bonemet.runner import Runner

    bm.set_quiet(True)
    shutil.rmtree(out, ignore_errors=True)
    n_samples = samples_for(cells)
    design = demo_design(n_samples)
    adata = bm.datasets.simulate_bone_metastasis(
        n_cells=cells, n_samples=n_samples, species="mouse", seed=0, **design
    )
    src = write_h5ad(adata, out / "input" / "simulated.h5ad")
    del adata
    cfg = demo_config(
        src,
        out,
        species="mouse",
        integrate={"accelerator": "cpu", "max_epochs": epochs},
        batched="n_batches" in design,
    )
    if threads is not None:
        cfg.threads = threads
    result, wall, peaks = run_with_peaks(Runner(cfg, resume=False))
    prov = json.loads((out / "provenance.json").read_text())
    shutil.rmtree(out / "input", ignore_errors=True)  # the generated input is not a result
    h5ad = _mib(out / "bonemet.h5ad")
    ckpt = _mib(out / ".bonemet")
    return {
        "cells": cells,
        "samples": n_samples,
        "cells_after_qc": int(result.n_obs),
        "wall_s": round(wall, 2),
        "stage_s": prov["timings"],
        "stage_peak_rss_mib": {k: round(v, 1) for k, v in peaks.items()},
        "peak_rss_mib": round(max(peaks.values()), 1),
        "out_mib": round(_mib(out), 1),
        "checkpoints_mib": round(ckpt, 1),
        "h5ad_mib": round(h5ad, 1),
        "checkpoint_ratio": round(ckpt / h5ad, 3) if h5ad else None,
        "rss_target_mib": round((3 * 2**30 + 40 * 1024 * cells) / 2**20, 1),
    }


def merge_records(old: list[dict], new: list[dict]) -> list[dict]:
    """``old``'s records for the sizes ``new`` lacks, then ``new``'s, ordered by size."""
    now = {r["cells"] for r in new}
    return sorted([r for r in old if r["cells"] not in now] + new, key=lambda r: r["cells"])


def per_cell_ratios(records: list[dict], reference: int) -> dict[str, dict[str, float]]:
    """Per stage: (seconds per cell at each size) / (seconds per cell at ``reference``)."""
    ref = next((r for r in records if r["cells"] == reference), None)
    if ref is None:
        return {}
    out: dict[str, dict[str, float]] = {}
    for r in records:
        ratios = {}
        for stage, s in r["stage_s"].items():
            base = ref["stage_s"].get(stage)
            if base:
                ratios[stage] = round((s / r["cells"]) / (base / ref["cells"]), 3)
        out[str(r["cells"])] = ratios
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 50000, 100000, 200000])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="results/bench_scale")
    ap.add_argument("--json", default="benchmarks/results/scale_cpu.json")
    ap.add_argument("--merge", action="store_true", help="keep the JSON's other sizes")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size
    args = ap.parse_args()
    if args.one is not None:
        rec = one_size(
            args.one, epochs=args.epochs, out=Path(args.out) / str(args.one), threads=args.threads
        )
        print("SCALE_RECORD " + json.dumps(rec), flush=True)
        return
    previous: dict = {}
    if args.merge and Path(args.json).is_file():  # checked before hours of runs, not after
        previous = json.loads(Path(args.json).read_text())
        if previous.get("scvi_epochs") != args.epochs:
            sys.exit(
                f"--merge: {args.json} was measured at {previous.get('scvi_epochs')} epochs, "
                f"this run at {args.epochs}; use the same --epochs or another --json"
            )
    records, failed = [], {}
    for cells in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(cells), "--epochs", str(args.epochs),
               "--out", args.out]  # fmt: skip
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        loads, stop = [], threading.Event()

        def _sample(loads=loads, stop=stop) -> None:
            while not stop.wait(10.0):
                loads.append(os.getloadavg()[0])

        sampler = threading.Thread(target=_sample, daemon=True)
        sampler.start()
        res = subprocess.run(cmd, capture_output=True, text=True)
        stop.set()
        sampler.join()
        line = next((x for x in res.stdout.splitlines() if x.startswith("SCALE_RECORD ")), None)
        if res.returncode != 0 or line is None:
            failed[str(cells)] = (res.stderr or res.stdout)[-2000:]
            continue
        rec = json.loads(line[len("SCALE_RECORD ") :])
        # the 1-minute load average every 10 s while this size ran: about the number of
        # threads that wanted a core (this run's own included); above the core count
        # means something else shared the machine
        rec["load_average"] = {
            "mean": round(sum(loads) / len(loads), 2) if loads else None,
            "max": round(max(loads), 2) if loads else None,
        }
        rec["date"], rec["code"] = time.strftime("%Y-%m-%d"), git_rev(dirty=True)
        records.append(rec)
        print(json.dumps(rec), flush=True)
    if previous:
        records = merge_records(previous.get("sizes", []), records)
        failed = {**{k: v for k, v in previous.get("failed", {}).items()
                     if int(k) not in args.sizes}, **failed}  # fmt: skip
    reference = 20000 if any(r["cells"] == 20000 for r in records) else args.sizes[0]
    report = {
        **{k: v for k, v in previous.items() if k not in ("sizes", "failed")},
        "benchmark": "scale_cpu",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_end": round(os.getloadavg()[0], 2),
        "scvi_epochs": args.epochs,
        "reference_cells": reference,
        "sizes": records,
        "per_cell_time_vs_reference": per_cell_ratios(records, reference),
        "failed": failed,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
