"""PDF raster layers: resolution bounded by memory, PNG untouched."""

from __future__ import annotations

import numpy as np

from bonemet.pl._common import new_figure
from bonemet.pl._save import VECTOR_RASTER_BUDGET, save_figures, vector_raster_dpi


def _panels(n: int, width: float, height: float):
    fig = new_figure(width, height)
    rng = np.random.default_rng(0)
    for ax in fig.subplots(n, 1, squeeze=False)[:, 0]:
        xy = rng.normal(size=(200, 2))
        ax.scatter(xy[:, 0], xy[:, 1], s=2, rasterized=True)
        ax.set_title("panel")  # text stays vector
    return fig


def test_small_figures_keep_the_requested_resolution():
    fig = _panels(2, 6, 4)
    assert vector_raster_dpi(fig, 300) == 300


def test_many_large_raster_panels_are_drawn_within_the_memory_budget():
    # the signature UMAPs' shape: 16 rasterized panels on an 11.4 x 19.2 in figure
    fig = _panels(16, 11.4, 19.2)
    dpi = vector_raster_dpi(fig, 300)
    need = 16 * 11.4 * 19.2 * 4
    assert 100 <= dpi < 300
    assert need * dpi**2 <= VECTOR_RASTER_BUDGET
    assert need * (dpi + 1) ** 2 > VECTOR_RASTER_BUDGET  # the largest that fits
    # a figure without raster layers is all vectors: nothing to bound
    assert vector_raster_dpi(new_figure(11.4, 19.2), 300) == 300


def test_saved_png_keeps_its_dpi_and_the_pdf_holds_its_raster_layer(tmp_path, monkeypatch):
    from PIL import Image

    import bonemet.pl._save as S
    from bonemet.pl._save import FigureSpec

    spec = FigureSpec("many_panels", "qc", "t", "c", lambda adata: _panels(16, 11.4, 19.2))
    monkeypatch.setattr(S, "FIGURES", (spec,))
    paths = save_figures(None, tmp_path, formats=("png", "pdf"), dpi=300)
    png = next(p for p in paths if p.suffix == ".png")
    with Image.open(png) as im:
        assert im.size[0] >= 11.4 * 300 - 2  # PNG at the requested dpi
    pdf = next(p for p in paths if p.suffix == ".pdf").read_bytes()
    assert pdf.count(b"/Subtype /Image") >= 16  # one raster image per scatter layer
