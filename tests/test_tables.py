"""The table registry: every table of a run from one place, per-sample tables with the design."""

from __future__ import annotations

import pandas as pd
from builders import make_annotated  # tests/builders.py

import bonemet as bm
from bonemet.report import TABLES, build_tables, table_section, write_tables


def test_registry_names_are_unique_and_sectioned() -> None:
    names = [t.name for t in TABLES]
    assert len(names) == len(set(names))
    assert all(table_section(n) != "other" for n in names)
    assert table_section("a_table_of_mine") == "other"


def test_per_sample_tables_carry_condition_and_subject(tmp_path) -> None:
    a = make_annotated(600, 4, species="mouse", seed=3)
    a.obs["donor"] = a.obs["sample"].map(
        {s: f"d{i % 2}" for i, s in enumerate(a.obs["sample"].cat.categories)}
    )
    cfg = bm.load_config(
        {"compare": {"subject_key": "donor"}, "report": {"integration_metrics": "sklearn-fallback"}}
    )
    tables = build_tables(a, cfg)
    qc = tables["qc_summary"]
    assert qc.index.name == "sample" and {"condition", "subject"} <= set(qc.columns)
    truth = a.obs.groupby("sample", observed=True)["condition"].first().astype(str)
    assert (qc["condition"] == truth.reindex(qc.index)).all()
    mim = tables["erythroid_mimicry"]
    assert "sample" in mim.columns and mim["subject"].isin(["d0", "d1"]).all()
    # wide tables (samples as columns) are left as they are
    assert "condition" not in tables["population_counts"].index
    paths = write_tables(a, cfg, tmp_path)
    back = pd.read_csv(paths["qc_summary"], index_col="sample")
    assert list(back.columns) == list(qc.columns)
