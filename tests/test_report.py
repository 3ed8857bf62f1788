"""The report's generated text: Methods from the run's parameters, the sample table and
one results paragraph per hypothesis from the compare tables (no browser; a small
blank PNG stands in for the drawn figures)."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import make_annotated
from PIL import Image

import bonemet as bm
from bonemet import _stages
from bonemet.config import load_config
from bonemet.report._narrative import results_html, sample_table


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """4 samples (2 vs 2), the run's parameters recorded as the stages record them."""
    a = make_annotated(n_cells=1200, n_samples=4, seed=3)
    del a.uns["bonemet"]["parameters"]  # recorded below, as the stages record them
    cfg = load_config(
        {"qc": {"min_counts": 321, "nmads_mito": 2.5}, "integrate": {"max_epochs": 7},
         "cluster": {"resolution": 0.8}, "compare": {"de": False, "min_cells": 5}}
    )  # fmt: skip
    for stage, section in (("qc", "qc"), ("integrate", "integrate"), ("cluster", "cluster"),
                           ("normalize", "normalize"), ("annotate", "annotate")):  # fmt: skip
        _stages._record(a, stage, cfg.section_dict(section), 0.0)
    a.uns["bonemet"]["integrate"] = {"method": "scvi", "epochs": 7, "device": "cpu"}
    bm.tl.compare(a, de=False, min_cells=5)
    _stages._record(a, "compare", cfg.section_dict("compare"), 0.0)
    provenance = {
        "wall_seconds": 90.0,
        "timings": {"qc": 21.25, "integrate": 40.5},
        "warnings": list(a.uns["bonemet"]["warnings"]),
        "packages": {"bonemet": bm.__version__, "scvi-tools": "9.9.9"},
    }
    # one small figure and no tables: this tests the generated text (drawing every figure
    # and building the table registry is slow)
    out_dir = tmp_path_factory.mktemp("rep")
    png = out_dir / "review_axes.png"
    Image.new("RGB", (60, 40), "white").save(png, dpi=(100, 100))
    out = bm.report.write_report(
        a, out_dir, tables={"axes": bm.tl.axes_table(a)}, figures={"review_axes": png},
        config=cfg.to_dict(),
        provenance=provenance,
    )  # fmt: skip
    return a, cfg, out.read_text(encoding="utf-8")


def _section(html: str, key: str) -> str:
    m = re.search(rf'<section id="{key}">(.*?)</section>', html, re.S)
    assert m, f"no section {key}"
    return m.group(1)


def test_methods_name_the_runs_scvi_epochs_and_qc_thresholds(run) -> None:
    a, _, html = run
    methods = _section(html, "methods")
    assert "scVI (scvi-tools 9.9.9)" in methods  # version from the run's provenance
    assert "7 epochs" in methods and "max_epochs 7" in methods
    assert "at least 321 UMIs" in methods and "2.5 MADs on % mitochondrial" in methods
    # the per-sample thresholds actually applied (from the QC records)
    assert "maximum % mito 15" in methods
    assert "resolution 0.8" in methods
    assert "Lopez et al. 2018" in methods and "Benjamini" in methods


def test_sample_table_has_one_row_per_sample_with_condition(run) -> None:
    a, cfg, html = run
    df = sample_table(a, cfg.to_dict())
    samples = sorted(a.obs["sample"].astype(str).unique())
    assert sorted(df["sample"]) == samples and len(df) == len(samples)
    by_sample = a.obs.groupby("sample", observed=True)["condition"].first().astype(str)
    assert (df.set_index("sample")["condition"] == by_sample.reindex(df["sample"])).all()
    qc = a.uns["bonemet"]["qc"]
    assert list(df["cells before QC"]) == [qc[s]["n_before"] for s in df["sample"]]
    table = _section(html, "samples")
    assert table.count("<tr>") == len(samples) + 1 and "bone_metastasis" in table


def test_chi3l3_result_states_n_per_group_ci_and_small_design(run) -> None:
    a, cfg, html = run
    res = _section(html, "results")
    para = next(p for p in res.split("<div class='result'") if "CHI3L3+ immature" in p)
    row = (
        a.uns["bonemet_compare"]["differential_abundance"]
        .set_index("test")
        .loc["CHI3L3+ immature / neutrophils"]
    )
    assert f"{int(row['n_test'])} bone_metastasis vs {int(row['n_ref'])} control samples" in para
    assert f"95% CI {row['ci_low']:.2f} to {row['ci_high']:.2f}" in para
    assert "Not testable: 2 vs 2 samples" in para  # 2 per group: p-values unreliable
    # the paragraph refers to the numbered figure of the axes
    assert "<b>Figure 1. The review" in html and "href='#fig-review_axes'>Figure 1</a>" in para
    for head in ("Tpex / (Tpex + Tex)", "M-MDSC within", "PMN-MDSC within", "Iron-recycling",
                 "Osteoclast abundance", "Tumour erythroid mimicry"):  # fmt: skip
        assert head in res
    assert results_html(a, cfg.to_dict(), figure_numbers={"review_axes": 1}) in html
    # every other tested population, in a closing paragraph
    n_pops = int((a.uns["bonemet_compare"]["differential_abundance"]["kind"] == "population").sum())
    assert f"{n_pops} populations were tested for differential abundance" in res
    assert "no reliable p-value (at most 2 vs 2 samples); largest estimated changes" in res
    # one paragraph per axis of the review, its fractions with the compare test
    opn = next(p for p in res.split("<div class='result axis'>") if p.startswith("<p><b>OPN"))
    assert "CD8 Tpex / (Tpex + Tex): bone_metastasis" in opn and "compare (" in opn


def test_timings_and_warnings_come_from_one_source(run) -> None:
    a, _, html = run
    summary = _section(html, "summary")
    assert "21.2 s" in summary and "1.5 s" not in summary  # provenance, not uns timings
    warnings = a.uns["bonemet"]["warnings"]
    assert any("gene set 'erythroid_mimicry'" in w for w in warnings)
    for w in warnings:  # not repeated by the provenance table
        assert html.count(escape(w)) == 1, w
    # the low coverage of that set is said once (merged with the stage's warning)
    assert html.count("low gene-set coverage: erythroid_mimicry") == 1


def test_report_without_compare_says_so(tmp_path: Path) -> None:
    a = make_annotated(n_cells=300, n_samples=2, condition=False)
    html = bm.report.write_report(a, tmp_path, tables={}, figures=[]).read_text(encoding="utf-8")
    assert "no hypothesis was tested" in _section(html, "results")
    assert _section(html, "samples").count("<tr>") == 3


def test_one_haemoglobin_warning_per_sample() -> None:
    """QC's high-ambient-Hb flag and a stage's Hb warning about the same sample: one line."""
    a = make_annotated(n_cells=200, n_samples=2)  # sample S1 is flagged by QC
    stage_msg = "erythroid mimicry: sample 'S1': globin share of T/B/NK counts is 1.26%"
    a.uns["bonemet"]["warnings"] = [stage_msg]
    warns = bm.report.collect_warnings(a)
    s1 = [w for w in warns if "S1" in w]
    assert len(s1) == 1 and s1[0].startswith("high ambient haemoglobin in sample S1")
    assert stage_msg in s1[0]


def test_raw_count_haemoglobin_flag_reports_the_graded_read_out_when_it_ran() -> None:
    """QC's 1% flag reads raw counts; once the mimicry read-out graded the sample on the
    counts it used, the warning says that grade instead of doubting the mimicry scores."""
    from bonemet._meta import MIMICRY_KEY

    a = make_annotated(n_cells=200, n_samples=2)  # sample S1 is flagged by QC
    plain = next(w for w in bm.report.collect_warnings(a) if "S1" in w)
    assert "erythroid-mimicry scores may reflect ambient RNA" in plain
    a.uns[MIMICRY_KEY] = pd.DataFrame(
        {"sample": ["S1", "S2"], "ambient_grade": ["moderate", "low"],
         "background_hb_fraction": [0.0042, 0.001],
         "counts_source": ["decontaminated", "decontaminated"]}
    )  # fmt: skip
    s1 = next(w for w in bm.report.collect_warnings(a) if "S1" in w)
    assert "before correction" in s1 and "graded moderate" in s1 and "0.42%" in s1
    assert "may reflect ambient RNA" not in s1


def test_a_failing_text_section_is_reported_not_fatal(tmp_path: Path, monkeypatch) -> None:
    from bonemet.report import _html

    def broken(*args, **kwargs):
        raise ValueError("bad table")

    monkeypatch.setattr(_html, "results_html", broken)
    a = make_annotated(n_cells=200, n_samples=2)
    html = bm.report.write_report(a, tmp_path, tables={}, figures=[]).read_text(encoding="utf-8")
    assert "The results could not be generated: bad table" in _section(html, "results")
    assert "report: the results could not be generated (ValueError: bad table)" in html
    assert "<h3>Quality control and ambient RNA</h3>" in _section(html, "methods")


def test_hypotheses_name_tests_the_compare_stage_runs() -> None:
    from bonemet._vocab import CALLED_FRACTIONS, POPULATIONS
    from bonemet.report._narrative import HYPOTHESES
    from bonemet.tl._compare import LINEAGE_FRACTIONS

    for _, kind, test, pop in HYPOTHESES:
        if kind == "da":
            assert test in LINEAGE_FRACTIONS or test in POPULATIONS or test in CALLED_FRACTIONS
        else:
            assert pop in POPULATIONS, pop


def test_figure_titles_and_report_headings_come_from_one_table(run) -> None:
    from bonemet import _vocab
    from bonemet.pl import COMPARISONS
    from bonemet.report._narrative import HYPOTHESES

    table = _vocab.HYPOTHESES
    assert HYPOTHESES == tuple((h.heading, h.kind, h.test, h.population) for h in table)
    assert COMPARISONS == tuple((h.title, h.kind, h.test, h.population) for h in table)
    # the review's order: iron / mimicry, OPN / Tpex, DKK1 / CHI3L3+, MDSC, osteoclast,
    # ferroptosis; ferroptosis (KEGG) in neither the figure nor the report
    keys = [h.key for h in table]
    order = ["erythroid_mimicry", "tpex", "chi3l3_neutrophil", "m_mdsc", "osteoclast",
             "ferroptosis_driver"]  # fmt: skip
    assert [keys.index(k) for k in order] == sorted(keys.index(k) for k in order)
    assert all("kegg" not in h.test for h in table)
    assert _vocab.hypothesis("erythroid_mimicry").kind == "da"
    assert _vocab.hypothesis("erythroid_mimicry").test == _vocab.MIMICRY_CALLED_FRACTION
    # the report's paragraphs follow the table, each under its heading
    a, _, html = run
    res = _section(html, "results")
    heads = re.findall(r"<div class='result' id='result-[^']*'><p><b>(.*?)\.</b>", res)
    shown = [h.heading for h in table if escape(h.heading) in heads]
    assert [escape(x) for x in shown] == heads[: len(shown)] and len(shown) >= 8
    assert "ferroptosis (KEGG)" not in res.split("All tested populations")[0]
    # the figure's panels follow the same table
    fig = bm.pl.condition_comparisons(a)
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes]
    assert titles == [h.title for h in table if h.title in titles] and len(titles) >= 8


def test_mimicry_paragraph_reads_the_called_fraction_or_says_not_tested(run) -> None:
    from bonemet._vocab import MIMICRY_CALL_KEY, MIMICRY_CALLED_FRACTION, TUMOUR

    a, cfg, html = run
    head = "Tumour erythroid mimicry: called fraction of tumour cells."

    def para(b) -> str:
        res = results_html(b, cfg.to_dict())
        return next(p for p in res.split("<div class='result'") if head in p)

    # no per-cell calls in this object: not tested, and why
    p = para(a)
    assert "<b>Not tested</b>" in p and f"obs['{MIMICRY_CALL_KEY}'] is absent" in p
    # calls made, but a compare result older than the called-fraction test: not tested
    b = a.copy()
    b.obs[MIMICRY_CALL_KEY] = (b.obs["population"] == TUMOUR).to_numpy() & (
        np.arange(b.n_obs) % 3 == 0
    )
    da = b.uns["bonemet_compare"]["differential_abundance"]
    assert MIMICRY_CALLED_FRACTION not in set(da["test"])
    p = para(b)
    assert "<b>Not tested</b>" in p and "rerun compare" in p
    # with the compare row: the GLM sentence of the called fraction, its numbers
    row = da[da["test"] == "Osteoclast"].copy()
    row["test"], row["kind"] = MIMICRY_CALLED_FRACTION, "called fraction"
    row["log2fc"], row["ci_low"], row["ci_high"] = 1.25, 0.5, 2.0
    row["model"] = "Williams"
    b.uns["bonemet_compare"] = dict(
        b.uns["bonemet_compare"], differential_abundance=pd.concat([da, row])
    )
    p = para(b)
    assert "called fraction of the assessed tumour epithelial cells" in p and "Not tested" not in p
    assert "log2 fold change 1.25 (95% CI 0.50 to 2.00)" in p
    assert "GLM with beta-binomial-type (Williams) variance of the called fraction" in p
    # it refers to the figures that show the calls, not to the composition plot
    nums = {"condition_comparisons": 1, "composition_condition": 2, "signature_umaps": 3}
    res = results_html(b, cfg.to_dict(), figure_numbers=nums)
    p = next(x for x in res.split("<div class='result'") if head in x)
    assert "#fig-signature_umaps'>Figure 3" in p and "#fig-composition_condition" not in p
    osteo = next(x for x in res.split("<div class='result'") if "Osteoclast abundance" in x)
    assert "#fig-composition_condition'>Figure 2" in osteo


def test_methods_describe_the_mimicry_call_and_the_models_compare_used(run) -> None:
    from bonemet._vocab import MIMICRY_CALLED_FRACTION
    from bonemet.report._narrative import methods_html

    a, cfg, _ = run
    b = a.copy()
    _stages._record(b, "score", cfg.section_dict("score"), 0.0)
    bm.tl.erythroid_mimicry(b)  # records its parameters as the score stage does
    fdr = b.uns["bonemet"]["parameters"]["erythroid_mimicry"]["fdr"]
    bm.tl.compare(b, de=False, min_cells=5)
    da = b.uns["bonemet_compare"]["differential_abundance"]
    assert MIMICRY_CALLED_FRACTION in set(da["test"])  # the calls made the unit testable
    text = methods_html(b, cfg.to_dict(), {})
    assert "Erythroid-mimicry calls, per sample" in text
    assert f"FDR {fdr:g}" in text and "beta-binomial per sample" in text
    assert "quantile of background cells" not in text  # the old rule's sentence
    # the called fraction's own model is named, from the table's model column
    assert re.search(
        re.escape(escape(MIMICRY_CALLED_FRACTION)) + r"[^.]*: the same log-link GLM", text
    )
    assert "Williams 1982" in text
    lim = b.uns["bonemet_compare"]["denominator_spread_limit"]["limit"]
    assert f"varies {lim:g}-fold or more" in text
    # how the reference was chosen ("control" is a control-like level name here)
    ref = b.uns["bonemet_compare"]["reference"]
    src = b.uns["bonemet_compare"]["reference_source"]
    assert f"reference {escape(str(ref))} ({escape(str(src))})" in text
    # no Williams rows: no Williams sentence
    c = b.copy()
    c.uns["bonemet_compare"] = dict(
        c.uns["bonemet_compare"], differential_abundance=da[da["model"] != "Williams"]
    )
    assert "the same log-link GLM" not in methods_html(c, cfg.to_dict(), {})


def test_embedded_figures_are_downscaled_opaque_pngs_that_decode() -> None:
    import base64
    import io

    from bonemet.report._html import _png_bytes_to_data_uri

    buf = io.BytesIO()
    im = Image.new("RGBA", (3000, 1500), (255, 255, 255, 255))
    im.paste((200, 30, 30, 255), (100, 100, 2900, 1400))
    im.save(buf, format="PNG", dpi=(300, 300))
    uri, w, h = _png_bytes_to_data_uri(buf.getvalue())
    assert (w, h) == (1000, 500)  # 10 x 5 inches shown at ~100 CSS px per inch
    assert uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as out:
        assert out.size == (2000, 1000) and out.mode == "RGB"  # 2x for dense screens
        assert out.getpixel((1000, 500)) == (200, 30, 30)
    # a figure with transparency keeps its alpha channel
    buf = io.BytesIO()
    Image.new("RGBA", (3000, 1500), (255, 255, 255, 0)).save(buf, format="PNG", dpi=(300, 300))
    uri, _, _ = _png_bytes_to_data_uri(buf.getvalue())
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as out:
        assert out.mode == "RGBA"


def test_methods_say_which_fractions_got_the_shrunk_rho_model() -> None:
    """The Methods sentence on wide denominators names the model they were tested with and
    how many rows; a result from before that model keeps the older wording."""
    from bonemet._vocab import WILLIAMS_SHRUNK
    from bonemet.report._narrative import _da_sentence, _spread_methods

    text = _spread_methods({"denominator_spread_limit": {"limit": 2.5, "rows_williams": 2}})
    assert "2.5-fold" in text and "beta-binomial" in text and "2 row(s)" in text
    old = _spread_methods({"denominator_spread_limit": {"limit": 3.0, "rows_marked": 1}})
    assert "marked unreliable" in old and "1 row(s)" in old
    row = {"test": "Tpex / (Tpex + Tex)", "kind": "lineage fraction", "model": WILLIAMS_SHRUNK,
           "n_ref": 3, "n_test": 3, "log2fc": 0.5, "prop_ref": 0.2, "prop_test": 0.28,
           "ci_low": -0.4, "ci_high": 1.4, "p": 0.2, "padj": 0.5, "p_reliable": True,
           "note": ""}  # fmt: skip
    assert "shrunk" in _da_sentence(row, "control", "bone_met", 3)


def test_a_p_marked_unreliable_for_denominator_spread_says_so_not_too_few_samples() -> None:
    from bonemet.report._narrative import _verdict

    row = {"p": 0.01, "padj": 0.04, "p_reliable": False,
           "note": "denominator spread 7.0x between samples (>= 3x): the quasi-Poisson p is "
                   "anti-conservative there (null FPR at 0.05 up to 0.082 at this spread)"}  # fmt: skip
    text = _verdict(row, "control", "bone_met", 4, 4, 3)
    assert "not reliable" in text and "denominator spread 7.0x" in text
    assert "Not testable" not in text and "significant" not in text
    # too few samples stays the reason when it is one
    assert "Not testable: 2 vs 2 samples" in _verdict(row, "control", "bone_met", 2, 2, 3)
    # no note: the small-design wording as before
    assert "fewer than 3 per group" in _verdict({**row, "note": ""}, "c", "b", 2, 2, 3)
