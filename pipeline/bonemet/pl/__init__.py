"""Figures. Every function takes an AnnData and returns a matplotlib Figure.

``save_figures`` writes all figures a run supports; the ``*_table`` helpers return the
DataFrames some figures are drawn from.
"""

from __future__ import annotations

from . import _common, _compare, _conditions, _figures, _gene_sets, _metrics, _palette, _save
from ._common import *  # noqa: F401,F403
from ._compare import *  # noqa: F401,F403
from ._conditions import *  # noqa: F401,F403
from ._figures import *  # noqa: F401,F403
from ._gene_sets import *  # noqa: F401,F403
from ._metrics import *  # noqa: F401,F403
from ._palette import *  # noqa: F401,F403
from ._save import *  # noqa: F401,F403

__all__ = [
    *_common.__all__,
    *_compare.__all__,
    *_conditions.__all__,
    *_figures.__all__,
    *_gene_sets.__all__,
    *_metrics.__all__,
    *_palette.__all__,
    *_save.__all__,
]
