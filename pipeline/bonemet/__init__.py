"""bonemet: single-cell RNA-seq analysis for bone-metastasis research.

``import bonemet as bm`` gives the namespaces ``bm.io``, ``bm.pp``, ``bm.tl``,
``bm.pl``, ``bm.datasets`` and ``bm.run(config)`` for the whole pipeline.
"""

from __future__ import annotations

from . import datasets, io, pl, pp, report, tl
from ._errors import (
    BonemetError,
    ConfigError,
    DownloadError,
    InputError,
    NotCountsError,
    StageError,
)
from ._logging import set_quiet
from ._signatures import GeneSet, load_gene_set_file, load_gene_sets, match_genes
from ._version import __version__
from .config import Config, load_config
from .runner import run

__all__ = [
    "__version__",
    "BonemetError",
    "Config",
    "GeneSet",
    "ConfigError",
    "DownloadError",
    "InputError",
    "NotCountsError",
    "StageError",
    "datasets",
    "io",
    "load_config",
    "load_gene_set_file",
    "load_gene_sets",
    "match_genes",
    "pl",
    "pp",
    "report",
    "run",
    "set_quiet",
    "tl",
]
