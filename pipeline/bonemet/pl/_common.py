"""Shared plumbing for the figure functions: style, slot checks, small helpers."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .._errors import InputError
from .._logging import logger
from .._meta import bonemet_uns as _bonemet_uns
from ._palette import (
    CELL_TYPE_COLORS,
    POPULATION_COLORS,
    UNASSIGNED,
    category_colors,
    population_colors,
)

__all__ = ["MissingDataError", "text_overlaps"]

F = TypeVar("F", bound=Callable[..., Figure])

#: Font sizes chosen to stay readable when a figure is shrunk to one journal column.
STYLE: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 10,
    "figure.titlesize": 12,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "pdf.fonttype": 42,  # editable text in Illustrator
    "svg.fonttype": "none",
    "figure.dpi": 100,
    "savefig.dpi": 300,
    "image.cmap": "viridis",
}


class MissingDataError(InputError):
    """A figure needs an AnnData slot (or table) that this object does not have."""


def figure_function(func: F) -> F:
    """Run a figure function under the bonemet style and lay the figure out once."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        import matplotlib as mpl

        with mpl.rc_context(STYLE):
            fig = func(*args, **kwargs)
            fig.draw_without_rendering()  # ticks and layout get the style's fonts
        return fig

    return wrapper  # type: ignore[return-value]


def new_figure(width: float, height: float, **kwargs: Any) -> Figure:
    """A pyplot-free figure on the non-interactive Agg canvas, with constrained layout.

    Figures never enter pyplot's global registry, so nothing has to be closed and the
    global backend is left alone (notebooks keep displaying inline).
    """
    fig = Figure(figsize=(float(width), float(height)), layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(w_pad=0.06, h_pad=0.06, wspace=0.04, hspace=0.04)
    return fig


def require(
    adata: Any,
    *,
    obs: Sequence[str] = (),
    obsm: Sequence[str] = (),
    what: str,
    hint: str = "",
) -> None:
    """Raise :class:`MissingDataError` naming every missing slot."""
    missing = [f'obs["{k}"]' for k in obs if k not in adata.obs.columns]
    missing += [f'obsm["{k}"]' for k in obsm if k not in adata.obsm]
    if missing:
        msg = f"{what} needs {', '.join(missing)}"
        raise MissingDataError(msg + (f": {hint}" if hint else ""))
    if adata.n_obs == 0:
        raise MissingDataError(f"{what} needs at least one cell; this AnnData has none")


def bonemet_uns(adata: Any) -> dict:
    """``uns["bonemet"]`` for reading (figures never write it); see :mod:`bonemet._meta`."""
    return _bonemet_uns(adata, create=False)


def categories(adata: Any, key: str, *, order: Sequence[str] | None = None) -> list[str]:
    """Categories of ``obs[key]`` that have cells, in a stable order.

    Population-like columns follow the vocabulary order (``order``), then any other
    names sorted; other columns use the categorical order, else sorted values.
    ``Unassigned`` always comes last.
    """
    s = adata.obs[key]
    present = set(map(str, pd.unique(s.astype(str))))
    if order is not None:
        out = [c for c in order if c in present]
        out += sorted(present - set(out), key=_natural_key)
    elif isinstance(s.dtype, pd.CategoricalDtype):
        out = [str(c) for c in s.cat.categories if str(c) in present]
    else:
        out = sorted(present, key=_natural_key)
    if UNASSIGNED in out:
        out.remove(UNASSIGNED)
        out.append(UNASSIGNED)
    return out


def _natural_key(s: str) -> tuple:
    import re

    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s))


def is_population_key(key: str) -> bool:
    return key in {"population", "true_population", "reference_label"}


def colors_for(adata: Any, key: str) -> tuple[list[str], dict[str, str]]:
    """Ordered categories of ``obs[key]`` and their colours (population colours fixed)."""
    if is_population_key(key):
        cats = categories(adata, key, order=list(POPULATION_COLORS))
        return cats, population_colors(cats)
    if key == "cell_type":
        cats = categories(adata, key, order=list(CELL_TYPE_COLORS))
        return cats, category_colors(cats, fixed=CELL_TYPE_COLORS)
    cats = categories(adata, key)
    if key == "condition":
        ref = reference_of(adata, cats)
        cats = [ref, *[c for c in cats if c != ref]] if ref else cats
    return cats, category_colors(cats)


def reference_of(adata: Any, levels: Sequence[str]) -> str | None:
    """The baseline condition among ``levels``: the compare stage's reference (set by the
    run's ``compare.reference``, else chosen by compare from the data), else the
    ``compare.reference`` parameter recorded for the run, else the first level. Figures put
    it first and give it the first colour, so every figure colours conditions alike."""
    levels = [str(x) for x in levels]
    if not levels:
        return None
    res = adata.uns.get("bonemet_compare")
    ref = res.get("reference") if isinstance(res, dict) else None
    if ref is not None and str(ref) in levels:
        return str(ref)
    params = _bonemet_uns(adata, create=False).get("parameters", {}).get("compare", {})
    ref = params.get("reference") if hasattr(params, "get") else None
    if ref is not None and str(ref) in levels:
        return str(ref)
    return levels[0]


def point_size(n: int) -> float:
    """Marker area for a scatter of ``n`` cells (scanpy's 120000/n, clipped)."""
    return float(np.clip(120_000 / max(n, 1), 0.3, 40.0))


def legend_columns(n: int) -> int:
    return 1 if n <= 14 else 2 if n <= 36 else 3


def legend_width(labels: Sequence[str], ncol: int, *, fontsize: float = 9.0) -> float:
    """Approximate width in inches of a legend with these labels."""
    longest = max((len(str(x)) for x in labels), default=4)
    return ncol * (0.35 + longest * fontsize * 0.55 / 72)


def species_of(adata: Any) -> str:
    """The run's species, by :func:`bonemet._species.resolve_species`."""
    from .._species import resolve_species

    return str(resolve_species(adata, "auto"))


def dense_column(adata: Any, gene: str) -> np.ndarray:
    x = adata[:, gene].X
    if hasattr(x, "toarray"):
        x = x.toarray()
    return np.asarray(x, dtype=float).ravel()


def note_skip(name: str, reason: str) -> None:
    logger.info("figure %s skipped: %s", name, reason)


def _drawn_texts(fig: Any) -> list[Any]:
    """The visible, non-empty text artists a draw of ``fig`` shows (tick labels only for
    the ticks inside the view)."""
    from matplotlib.legend import Legend
    from matplotlib.text import Text

    out: list[Any] = []
    for ax in fig.get_axes():
        if not ax.get_visible():
            continue
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.get_visible():
                continue
            for tick in axis._update_ticks():  # the ticks a draw shows
                out += [t for t in (tick.label1, tick.label2) if t.get_visible()]
            out.append(axis.label)
        out += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        for leg in ax.findobj(Legend):
            out += [*leg.get_texts(), leg.get_title()]
    for f in [fig, *fig.subfigs] if hasattr(fig, "subfigs") else [fig]:
        out += list(f.texts)
        if getattr(f, "_suptitle", None) is not None:
            out.append(f._suptitle)
        for leg in f.legends:
            out += [*leg.get_texts(), leg.get_title()]
        if f is not fig:
            for sub in f.subfigs:
                out += _drawn_texts(sub) if sub.subfigs else list(sub.texts)
    return [
        t for t in dict.fromkeys(out)
        if isinstance(t, Text) and t.get_visible() and t.get_text().strip()
    ]  # fmt: skip


def text_overlaps(fig: Any, *, tol: float = 1.0) -> list[tuple[str, str]]:
    """Pairs of texts of ``fig`` that overlap when drawn (titles, labels, tick labels, legend
    entries, annotations), as ``(text a, text b)``; empty when none do.

    Axis-aligned extents are compared, shrunk by ``tol`` pixels; two labels rotated by the
    same oblique angle (45° tick labels) are compared along their common normal instead,
    since their axis-aligned boxes overlap without the text doing so.
    """
    import math

    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    texts = _drawn_texts(fig)
    boxes = []
    for t in texts:
        bb = t.get_window_extent(renderer)
        if bb.width <= 0 or bb.height <= 0 or not np.isfinite([bb.x0, bb.y0, bb.x1, bb.y1]).all():
            continue
        boxes.append((t, bb))
    out: list[tuple[str, str]] = []
    for i in range(len(boxes)):
        ti, bi = boxes[i]
        for j in range(i + 1, len(boxes)):
            tj, bj = boxes[j]
            if not (bi.x0 + tol < bj.x1 - tol and bj.x0 + tol < bi.x1 - tol
                    and bi.y0 + tol < bj.y1 - tol and bj.y0 + tol < bi.y1 - tol):  # fmt: skip
                continue
            ri, rj = ti.get_rotation() % 180, tj.get_rotation() % 180
            if ri == rj and ri not in (0, 90):
                th = math.radians(ri)
                pi = np.asarray(ti.get_transform().transform(ti.get_position()))
                pj = np.asarray(tj.get_transform().transform(tj.get_position()))
                normal = np.array([-math.sin(th), math.cos(th)])
                h = min(ti.get_fontsize(), tj.get_fontsize()) * fig.dpi / 72
                if abs(float((pj - pi) @ normal)) >= 0.9 * h:
                    continue
            out.append((ti.get_text(), tj.get_text()))
    return out
