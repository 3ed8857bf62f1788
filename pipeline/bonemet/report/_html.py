"""One self-contained HTML report of a bonemet run.

``OUT/report.html`` holds everything inline: CSS in a ``<style>`` element, figures as
base64 PNG data URIs, tables as HTML (the first rows) with the whole table as a CSV
download from a ``data:`` URI link. It loads no script, font, stylesheet or image from
anywhere (a Content-Security-Policy forbids it), so it can be mailed or archived as one
file. Every string that comes from the data or the user is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._logging import logger
from .._meta import bonemet_uns
from .._utils import atomic_path
from ._narrative import axes_html, methods_html, results_html, sample_table_html
from ._tables import build_tables, table_section

__all__ = ["write_report", "collect_warnings"]

SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Run summary"),
    ("warnings", "Warnings"),
    ("samples", "Samples"),
    ("methods", "Methods"),
    ("results", "Results per hypothesis"),
    ("qc", "Quality control"),
    ("integration", "Integration"),
    ("populations", "Populations"),
    ("signatures", "Signatures"),
    ("axes", "The review's axes"),
    ("compare", "Conditions compared (samples as replicates)"),
    ("other", "Other figures and tables"),
    ("parameters", "Parameters and versions"),
)

_VERSION_PACKAGES = (
    "bonemet", "scanpy", "anndata", "scvi-tools", "torch", "numpy", "scipy", "pandas",
    "scikit-learn", "matplotlib", "decoupler", "gseapy", "harmonypy", "leidenalg", "igraph",
    "pynndescent", "umap-learn", "decontx-scanpy",
)  # fmt: skip
_MAX_ROWS = 60
#: tables up to this much CSV are embedded in the report as a download link
_MAX_EMBED_BYTES = 2_000_000
_MAX_IMAGE_WIDTH = 1400
_REPORT_DPI = 110

_CSS = """
:root { --ink:#1d232a; --muted:#5b6573; --line:#d9dee5; --accent:#0b5cad; --warn:#8a4b00;
        --warnbg:#fff6e5; --bg:#ffffff; --panel:#f6f8fa; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
       Arial, sans-serif; color:var(--ink); background:var(--bg); }
header { padding:24px 32px 12px; border-bottom:1px solid var(--line); }
header h1 { margin:0 0 4px; font-size:26px; }
header p { margin:0; color:var(--muted); }
nav { position:sticky; top:0; background:#fff; border-bottom:1px solid var(--line);
      padding:8px 32px; z-index:2; }
nav a { color:var(--accent); text-decoration:none; margin-right:16px; font-size:14px;
        display:inline-block; white-space:nowrap; }
main { padding:8px 32px 48px; max-width:1500px; }
section { margin-top:28px; }
h2 { font-size:21px; border-bottom:2px solid var(--line); padding-bottom:4px; }
h3 { font-size:17px; margin:22px 0 6px; }
figure { margin:12px 0 24px; padding:12px; background:var(--panel); border-radius:6px; }
figure img { display:block; max-width:100%; height:auto; background:#fff; }
figcaption { color:var(--muted); font-size:13.5px; margin-top:6px; }
table { border-collapse:collapse; font-size:13px; margin:6px 0 14px; }
th, td { border:1px solid var(--line); padding:3px 8px; text-align:right; vertical-align:top; }
th { background:var(--panel); text-align:left; }
td.text, th.text { text-align:left; }
.tablewrap { overflow-x:auto; max-width:100%; }
.kv th { width:260px; }
.note { color:var(--muted); font-size:13px; }
ul.warnings { background:var(--warnbg); border-left:4px solid var(--warn); padding:10px 10px 10px 32px; }
ul.warnings li { color:var(--warn); margin:3px 0; }
.ok { color:#1a7f37; }
p.download { margin:4px 0; font-size:13.5px; }
p.download a { color:var(--accent); }
pre { background:var(--panel); padding:10px; overflow-x:auto; font-size:12.5px; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:10px 0; }
.card { background:var(--panel); border-radius:6px; padding:10px 16px; min-width:150px; }
.card b { display:block; font-size:20px; }
.card span { color:var(--muted); font-size:13px; }
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist() if v.size <= 20 else f"array of {v.size} values"
    return v


# ------------------------------------------------------------------------ figures


def _png_bytes_to_data_uri(data: bytes) -> tuple[str, int, int]:
    """A data URI for PNG bytes and the display size in CSS pixels.

    The figure is shown at its physical size (from the PNG's dpi, ~100 CSS px per inch)
    and embedded with at most twice that many pixels (sharp on high-density screens,
    without carrying a 300-dpi print file into the report).
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        dpi = float((im.info.get("dpi") or (_REPORT_DPI, _REPORT_DPI))[0]) or _REPORT_DPI
        disp_w = max(1, round(w / dpi * 100))
        disp_w = min(disp_w, _MAX_IMAGE_WIDTH)
        disp_h = max(1, round(h * disp_w / w))
        target = min(w, 2 * disp_w)
        if target < w:
            nh = max(1, round(h * target / w))
            im = im.convert("RGBA").resize((target, nh), Image.Resampling.LANCZOS)
            if im.getchannel("A").getextrema() == (255, 255):
                im = im.convert("RGB")  # opaque: no alpha channel to carry
            buf = io.BytesIO()
            # zlib's default level, not PIL's optimize (which tries every filter): on the
            # demo's 20 figures 4x faster for 0.6% more bytes; RGB cuts another 10%
            im.save(buf, format="PNG", compress_level=6)
            data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), disp_w, disp_h


def _figure_entries(
    adata: Any, figures: Sequence[str | os.PathLike] | Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """Figures to embed: (section, title, caption, PNG bytes), in report order."""
    from ..pl._save import FIGURES, iter_figures

    specs = {s.name: s for s in FIGURES}
    entries: list[dict[str, Any]] = []
    if figures is None:
        import matplotlib as mpl

        from ..pl._common import STYLE

        for spec, fig in iter_figures(adata):
            buf = io.BytesIO()
            with mpl.rc_context(STYLE):
                fig.savefig(buf, format="png", dpi=_REPORT_DPI)
            entries.append(
                {"name": spec.name, "section": spec.section, "title": spec.title,
                 "caption": spec.caption, "png": buf.getvalue()}
            )  # fmt: skip
        return entries
    items = figures.items() if isinstance(figures, Mapping) else ((None, p) for p in figures)
    for name, p in items:
        path = Path(p)
        if path.suffix.lower() != ".png":
            continue
        if not path.is_file():
            logger.warning("report: figure %s does not exist; left out", path)
            continue
        stem = name or path.stem
        spec = specs.get(stem)
        entries.append(
            {
                "name": stem,
                "section": spec.section if spec else "other",
                "title": spec.title if spec else stem.replace("_", " "),
                "caption": spec.caption if spec else "",
                "png": path.read_bytes(),
            }
        )
    order = {s.name: i for i, s in enumerate(FIGURES)}
    entries.sort(key=lambda e: order.get(e["name"], len(order)))
    return entries


def _figure_html(entry: Mapping[str, Any], number: int | None = None) -> str:
    try:
        uri, w, h = _png_bytes_to_data_uri(entry["png"])
    except Exception as e:  # not a readable PNG
        logger.warning("report: figure %s is not a readable PNG (%s); left out", entry["name"], e)
        return ""
    return (
        f'<figure id="fig-{_e(entry["name"])}"><img src="{uri}" width="{w}" height="{h}" '
        f'alt="{_e(entry["title"])}"><figcaption><b>{f"Figure {number}. " if number else ""}'
        f"{_e(entry['title'])}.</b> "
        f'{_e(entry["caption"])} <span class="note">(file: figures/{_e(entry["name"])}.png)'
        "</span></figcaption></figure>"
    )


# ------------------------------------------------------------------------- tables


def _load_tables(tables: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """DataFrames as given; CSV paths (e.g. from the runner's ``OUT/tables``) are read."""
    out: dict[str, pd.DataFrame] = {}
    for name, v in tables.items():
        if isinstance(v, pd.DataFrame):
            out[str(name)] = v
        elif isinstance(v, str | os.PathLike):
            try:
                out[str(name)] = pd.read_csv(v)
            except (OSError, ValueError, pd.errors.ParserError) as e:
                logger.warning("report: table %s (%s) cannot be read: %s", name, v, e)
        elif v is not None:
            logger.warning("report: table %s is a %s, not a DataFrame or a CSV path", name, type(v))
    return out


def _csv_link(name: str, df: pd.DataFrame) -> str:
    """A link that downloads the whole table as CSV from a data: URI inside the page (no
    file beside the report is needed); a table above :data:`_MAX_EMBED_BYTES` of CSV is
    named by its path instead."""
    from ._tables import _keep_index

    data = df.to_csv(index=_keep_index(df)).encode("utf-8")
    if len(data) > _MAX_EMBED_BYTES:
        return (
            f"<p class='note'>The whole table ({len(df):,} rows, {len(data) / 1e6:.1f} MB of CSV) "
            f"is in tables/{_e(name)}.csv (too large to embed).</p>"
        )
    uri = "data:text/csv;charset=utf-8;base64," + base64.b64encode(data).decode("ascii")
    size = f"{len(data) / 1024:.0f} KB" if len(data) >= 1024 else f"{len(data)} bytes"
    return (
        f'<p class="download"><a href="{uri}" download="{_e(name)}.csv" '
        f'type="text/csv">Download {_e(name)}.csv</a> <span class="note">(all {len(df):,} rows, '
        f"{size}; also in tables/{_e(name)}.csv)</span></p>"
    )


def _table_html(name: str, df: pd.DataFrame) -> str:
    n = len(df)
    shown = df.head(_MAX_ROWS)

    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            if not np.isfinite(v):
                return "–"
            return f"{v:.4g}"
        return str(v)

    body = shown.to_html(
        escape=True,
        border=0,
        na_rep="–",
        float_format=lambda v: fmt(v),
        classes="data",
        index=not isinstance(shown.index, pd.RangeIndex),
    )
    note = f'<p class="note">First {_MAX_ROWS} of {n:,} rows shown.</p>' if n > _MAX_ROWS else ""
    return (
        f'<h3 id="table-{_e(name)}">Table: {_e(name.replace("_", " "))}</h3>'
        f"{_csv_link(name, df)}"
        f'<div class="tablewrap">{body}</div>{note}'
    )


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    cells = "".join(
        f'<tr><th class="text">{_e(k)}</th><td class="text">{_e(v)}</td></tr>' for k, v in rows
    )
    return f'<table class="kv">{cells}</table>'


# ----------------------------------------------------------------------- warnings


def _mimicry_grade(adata: Any, sample: str) -> str:
    """What the erythroid-mimicry read-out made of a sample's ambient globin, read from its
    per-sample table (the graded guard on the counts the calls used), or ``""``."""
    from .._meta import MIMICRY_KEY

    t = getattr(adata, "uns", {}).get(MIMICRY_KEY)
    if not isinstance(t, pd.DataFrame) or "ambient_grade" not in t or "sample" not in t:
        return ""
    row = t[t["sample"].astype(str) == sample]
    if row.empty or not str(row["ambient_grade"].iloc[0]):
        return ""
    r = row.iloc[0]
    share = r.get("background_hb_fraction", np.nan)
    src = str(r.get("counts_source", "") or "the counts used")
    return (
        f"in the counts the mimicry calls used ({src}), the T/B/NK globin share is "
        + (f"{float(share):.2%}, " if np.isfinite(float(share)) else "")
        + f"graded {r['ambient_grade']} (tables/erythroid_mimicry.csv), and each call is "
        "tested against a null fitted to the sample's own tumour cells"
    )


def collect_warnings(
    adata: Any,
    *,
    tables: Mapping[str, pd.DataFrame] | None = None,
    min_coverage: float = 0.5,
) -> list[str]:
    """Every warning of the run, de-duplicated, in a stable order.

    ``uns["bonemet"]["warnings"]`` first, then what the records show: gene sets below
    ``min_coverage``, samples flagged for high ambient haemoglobin, non-count input.
    """
    u = bonemet_uns(adata, create=False)
    out: list[str] = []
    w = u.get("warnings", [])
    if isinstance(w, str):
        w = [w]
    out.extend(str(x) for x in (w if w is not None else []))
    gs = u.get("gene_sets", {})
    if isinstance(gs, Mapping):
        for name, info in gs.items():
            if not isinstance(info, Mapping) or "coverage" not in info:
                continue
            try:
                cov = float(np.asarray(info["coverage"]).item())
            except (TypeError, ValueError):
                continue
            if cov < min_coverage:
                # said once: a stage's own warning about this set is merged into this one
                said = [i for i, x in enumerate(out) if "gene set" in x and repr(str(name)) in x]
                if said:
                    for i in said:
                        out[i] = f"low gene-set coverage: {name} — {out[i]}"
                    continue
                out.append(
                    f"low gene-set coverage: {name} has {cov:.0%} of its genes in the data "
                    f"(< {min_coverage:.0%})"
                )
    qc = u.get("qc", {})
    if isinstance(qc, Mapping):
        for s, rec in qc.items():
            if isinstance(rec, Mapping) and bool(
                np.asarray(rec.get("high_ambient_hb", False)).item()
            ):
                med = rec.get("median_pct_hb")
                extra = (
                    f" (median {float(np.asarray(med).item()):.2f}% Hb reads)"
                    if med is not None
                    else ""
                )
                amb = str(np.asarray(rec.get("ambient", "")).item())
                advice = (
                    "DecontX ran in QC (layers['decontaminated'], obs['ambient_contamination']); "
                    "its cluster-mixture model removes only part of a Hb-rich soup"
                    if amb.startswith("decontx")
                    else "set qc.ambient: decontx, or correct with SoupX/CellBender"
                )
                graded = _mimicry_grade(adata, str(s))
                msg = f"high ambient haemoglobin in sample {s}{extra}: " + (
                    f"before correction (QC's flag reads the raw counts); {graded}; {advice}"
                    if graded
                    else f"erythroid-mimicry scores may reflect ambient RNA; {advice}"
                )
                # said once per sample: a stage's own haemoglobin warning about it joins this one
                same = [
                    i for i, x in enumerate(out)
                    if repr(str(s)) in x and any(k in x for k in ("Hb", "haemoglobin", "globin"))
                ]  # fmt: skip
                for i in same:
                    msg += f"; also: {out[i]}"
                out = [x for i, x in enumerate(out) if i not in same]
                out.append(msg)
    for name, df in (tables or {}).items():
        if isinstance(df, pd.DataFrame) and "high_ambient_hb" in df.columns:
            flagged = df.index[df["high_ambient_hb"].astype(bool)].astype(str).tolist()
            if "sample" in df.columns:
                flagged = df.loc[df["high_ambient_hb"].astype(bool), "sample"].astype(str).tolist()
            for s in flagged:
                if not any(f"sample {s}" in x and "haemoglobin" in x for x in out):
                    out.append(f"high ambient haemoglobin in sample {s} (table {name})")
    is_counts = u.get("is_counts")
    if is_counts is not None and not bool(np.asarray(is_counts).item()):
        method = (
            u.get("integrate", {}).get("method")
            if isinstance(u.get("integrate"), Mapping)
            else None
        )
        out.append(
            "non-count input: the data are not raw integer counts, so scVI and count-based QC "
            "were skipped" + (f" (integration fell back to {method})" if method else "")
        )
    seen: set[str] = set()
    return [x for x in out if not (x in seen or seen.add(x))]


# ------------------------------------------------------------------------ summary


def _versions(provenance: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """The run's versions (its provenance) where given, else this environment's."""
    prov = provenance or {}
    packages = prov.get("packages")
    if isinstance(packages, Mapping) and packages:
        rows = [("python", str(prov.get("python", platform.python_version()))),
                ("platform", str(prov.get("platform", platform.platform())))]  # fmt: skip
        return rows + [(str(k), str(v)) for k, v in packages.items()]
    rows = [("python", platform.python_version()), ("platform", platform.platform())]
    for pkg in _VERSION_PACKAGES:
        try:
            rows.append((pkg, metadata.version(pkg)))
        except metadata.PackageNotFoundError:
            continue
    return rows


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, Mapping):
        out: list[tuple[str, Any]] = []
        for k, v in d.items():
            out.extend(_flatten(v, f"{prefix}{k}."))
        return out
    v = _scalar(d)
    if isinstance(v, list | tuple):
        v = ", ".join(map(str, v))
    return [(prefix.rstrip("."), v)]


def _config_dict(config: Any) -> dict | None:
    if config is None:
        return None
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    if isinstance(config, Mapping):
        return dict(config)
    return {"config": str(config)}


def _timings(u: Mapping[str, Any], provenance: Mapping[str, Any] | None) -> dict[str, Any]:
    """Seconds per stage from one source: the provenance's (the runner's wall time of each
    stage) where given, else the object's records (a per-sample stage records one sample's)."""
    prov = (provenance or {}).get("timings")
    if isinstance(prov, Mapping) and prov:
        return dict(prov)
    t = u.get("timings", {})
    return dict(t) if isinstance(t, Mapping) else {}


def _summary_html(adata: Any, provenance: Mapping[str, Any] | None) -> str:
    u = bonemet_uns(adata, create=False)
    qc = u.get("qc", {}) if isinstance(u.get("qc"), Mapping) else {}

    def total(key: str) -> int | None:
        vals = [rec.get(key) for rec in qc.values() if isinstance(rec, Mapping) and key in rec]
        return int(sum(float(np.asarray(v).item()) for v in vals)) if vals else None

    n_before, n_after = total("n_before"), total("n_after")
    samples = (
        list(map(str, pd.unique(adata.obs["sample"].astype(str))))
        if "sample" in adata.obs.columns
        else []
    )
    timings = _timings(u, provenance)
    t_total = sum(float(np.asarray(v).item()) for v in timings.values()) if timings else None
    if provenance and "wall_seconds" in provenance:
        t_total = float(provenance["wall_seconds"])
    cards = [
        (f"{n_before:,}" if n_before is not None else "–", "cells before QC"),
        (f"{adata.n_obs:,}", "cells after QC"),
        (f"{len(samples)}", "samples"),
        (f"{adata.n_vars:,}", "genes"),
        (str(u.get("species", "–")), "species"),
        (str(u.get("device", (provenance or {}).get("device", "–"))), "device"),
        (
            f"{t_total / 60:.1f} min" if t_total is not None else "–",
            "wall time (provenance)"
            if provenance and "wall_seconds" in provenance
            else "run time (sum of stages)",
        ),
    ]
    if "population" in adata.obs.columns:
        pops = adata.obs["population"].astype(str)
        cards.insert(4, (f"{pops[pops != 'Unassigned'].nunique()}", "populations found"))
    html_cards = "".join(
        f"<div class='card'><b>{_e(v)}</b><span>{_e(k)}</span></div>" for v, k in cards
    )
    parts = [f"<div class='cards'>{html_cards}</div>"]
    inputs = u.get("inputs", {})
    if isinstance(inputs, Mapping) and inputs:
        rows = []
        for s, info in inputs.items():
            info = info if isinstance(info, Mapping) else {"path": info}
            sha = str(info.get("sha256", ""))
            rows.append(
                "<tr>" + "".join(
                    f'<td class="text">{_e(x)}</td>'
                    for x in (s, info.get("path", ""), info.get("format", ""), sha[:16])
                ) + "</tr>"
            )  # fmt: skip
        parts.append(
            "<h3>Inputs</h3><div class='tablewrap'><table><tr><th>sample</th><th>path</th>"
            "<th>format</th><th>sha256 (first 16)</th></tr>" + "".join(rows) + "</table></div>"
            "<p class='note'>Cells before and after QC per sample: see Samples.</p>"
        )
    elif n_after is not None:
        parts.append(f"<p>{len(qc)} samples passed QC with {n_after:,} cells.</p>")
    if timings:
        src = (
            "the runner's wall time of each stage (provenance)"
            if provenance and isinstance(provenance.get("timings"), Mapping)
            else "as recorded by each stage in the object"
        )
        parts.append(
            "<h3>Time per stage</h3>"
            + _kv_table([(k, f"{float(np.asarray(v).item()):.1f} s") for k, v in timings.items()])
            + f"<p class='note'>Seconds per stage, {_e(src)}.</p>"
        )
    return "".join(parts)


# ------------------------------------------------------------------------- report


def write_report(
    adata: Any,
    out_dir: str | os.PathLike,
    *,
    tables: Mapping[str, pd.DataFrame | str | os.PathLike] | None = None,
    figures: Sequence[str | os.PathLike] | Mapping[str, Any] | None = None,
    config: Any = None,
    provenance: Mapping[str, Any] | None = None,
    title: str = "bonemet report",
) -> Path:
    """Write ``out_dir/report.html``: one self-contained file (atomic write).

    Sections: run summary (inputs, species, cells, device, time per stage from the
    provenance), warnings (each once), samples (condition, subject, batch, cells before and
    after QC), Methods generated from the run's parameters (tools, versions, citations),
    results per hypothesis and per axis from ``uns["bonemet_compare"]`` and the axes table
    (test, n per group, effect with 95% CI, adjusted p, or why it is not testable), QC,
    integration, populations, signatures, the review's axes, the compare tables,
    parameters and versions. Figures are numbered in that order. Figures are embedded as base64 PNG; the page loads nothing from elsewhere.

    Parameters
    ----------
    adata
        The annotated AnnData.
    out_dir
        Output folder; the report is ``out_dir/report.html``.
    tables
        Named DataFrames or CSV paths to show (e.g. the runner's ``OUT/tables``), plus
        the run's tables; default: the tables of :data:`bonemet.report.TABLES` built from
        ``adata``.
    figures
        PNG paths (e.g. from :func:`bonemet.pl.save_figures`; other formats are ignored)
        or ``{name: path}``; default: the figures are drawn in memory.
    config
        The run's :class:`bonemet.Config` (or a dict), shown under parameters.
    provenance
        Extra run facts (the runner's provenance: start time, wall_seconds, device, ...), shown as given.

    Returns
    -------
    The path of the report.
    """
    out = Path(out_dir) / "report.html"
    cfg = _config_dict(config)
    min_cov = 0.5
    if cfg and isinstance(cfg.get("score"), Mapping):
        min_cov = float(cfg["score"].get("min_coverage", 0.5))
    # the run's tables (OUT/tables/*.csv), or the table registry's when none are given
    all_tables = build_tables(adata, None) if tables is None else _load_tables(tables)
    figs = _figure_entries(adata, figures)  # first: a figure that fails adds a warning
    warns = collect_warnings(adata, tables=all_tables, min_coverage=min_cov)

    body: dict[str, list[str]] = {k: [] for k, _ in SECTIONS}
    body["summary"].append(_summary_html(adata, provenance))
    failed: list[str] = []

    def text(what: str, build: Any, *args: Any, **kwargs: Any) -> str:
        # a generated text section that fails says so in the report instead of stopping it
        try:
            return str(build(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - any failure of one section
            logger.warning("report: the %s could not be generated: %r", what, e)
            failed.append(f"report: the {what} could not be generated ({type(e).__name__}: {e})")
            return f"<p class='note'>The {_e(what)} could not be generated: {_e(e)}</p>"

    body["samples"].append(text("sample table", sample_table_html, adata, cfg))
    body["methods"].append(text("Methods", methods_html, adata, cfg, provenance))
    # figures numbered in the order the report shows them; the results refer to them
    order = {k: i for i, (k, _) in enumerate(SECTIONS)}
    figs.sort(key=lambda e: order.get(e["section"] if e["section"] in body else "other", 0))
    fig_numbers: dict[str, int] = {}
    for entry in figs:
        key = entry["section"] if entry["section"] in body else "other"
        fig_html = _figure_html(entry, len(fig_numbers) + 1)
        if fig_html:
            fig_numbers[entry["name"]] = len(fig_numbers) + 1
            body[key].append(fig_html)
    # the results' text comes before the results' figures
    body["results"][:0] = [
        text("results", results_html, adata, cfg, figure_numbers=fig_numbers),
        text("axes paragraphs", axes_html, all_tables.get("axes"), adata, cfg),
    ]
    warns = [*warns, *failed]
    body["samples"] = [x for x in body["samples"] if x]
    body["results"] = [x for x in body["results"] if x]
    if warns:
        body["warnings"].append(
            "<ul class='warnings'>" + "".join(f"<li>{_e(w)}</li>" for w in warns) + "</ul>"
        )
    else:
        body["warnings"].append("<p class='ok'>No warnings.</p>")
    for name, df in all_tables.items():
        body[table_section(name)].append(_table_html(name, df))

    params: list[str] = []
    if cfg:
        params.append("<h3>Configuration</h3>" + _kv_table(_flatten(cfg)))
    u = bonemet_uns(adata, create=False)
    if isinstance(u.get("parameters"), Mapping) and u["parameters"]:
        params.append(
            "<h3>Parameters recorded by each stage</h3>" + _kv_table(_flatten(u["parameters"]))
        )
    if provenance:
        # shown once: warnings, timings, config and versions have their own places
        shown = {k: v for k, v in provenance.items()
                 if k not in ("warnings", "timings", "config", "packages", "python", "platform")}  # fmt: skip
        params.append("<h3>Provenance</h3>" + _kv_table(_flatten(shown)))
    params.append("<h3>Software versions</h3>" + _kv_table(_versions(provenance)))
    body["parameters"].extend(params)

    empty = {
        "qc": "No QC records in this object (run bm.pp.qc).",
        "integration": "No integration results in this object.",
        "populations": "No populations in this object (run bm.tl.annotate).",
        "signatures": "No signature scores in this object (run bm.tl.score).",
        "axes": "The populations the axes need are absent.",
        "samples": "No sample column in this object.",
        "results": "No condition comparison, so no hypothesis was tested (one condition, no "
        "condition column, or the compare stage was not run).",
        "compare": "No condition comparison (one condition, no condition column, or the "
        "compare stage was not run).",
    }
    nav, sections = [], []
    for key, heading in SECTIONS:
        content = body[key]
        if not content:
            if key == "other":
                continue
            content = [f"<p class='note'>{_e(empty.get(key, 'Nothing to show.'))}</p>"]
        nav.append(f'<a href="#{key}">{_e(heading)}</a>')
        sections.append(f'<section id="{key}"><h2>{_e(heading)}</h2>{"".join(content)}</section>')

    version = str(u.get("version", ""))
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    doc = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>bonemet {_e(version)} · {adata.n_obs:,} cells · "
        f"generated {_e(now)}</p></header>"
        f"<nav>{''.join(nav)}</nav><main>{''.join(sections)}</main></body></html>\n"
    )
    with atomic_path(out) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    try:
        os.chmod(out, 0o644)
    except OSError:
        pass
    logger.info("report written to %s (%d figures, %d tables)", out, len(figs), len(all_tables))
    return out
