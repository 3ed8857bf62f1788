"""The annotation's tuning constants, in one place (the annotate module docstring explains
each rule they belong to).
"""

from __future__ import annotations

import math

# Scoring constants (documented in the module docstring).
_NEG_WEIGHT = 0.5
_MIN_GENES = 3
# a marker gene detected in fewer cells than this (or than 1% of the cells, whichever is
# fewer) counts as unmeasured, as if a gene filter (scanpy's min_cells=3) had removed it
_MIN_DETECTED_CELLS = 3
_SCALE_QUANTILE = 0.9
_SCALE_FLOOR = math.log1p(1.0)
_BACKGROUND_QUANTILE = 0.25
_MIN_BACKGROUND_CELLS = 50
_LINEAGE_SMOOTH = (0.7, 2)  # (weight of the neighbourhood mean, iterations)
_ROOT_SMOOTH = (0.7, 2)
_STATE_SMOOTH = (0.5, 1)
_CLUSTER_WEIGHT = 0.5
# The lineage cluster term pools a cell with its over-cluster: leiden of the annotation
# graph at a resolution that grows with the number of cells (CellTypist's majority-voting
# ladder: (cells below, resolution), and _OVER_CLUSTER_MAX above the last step).
_OVER_CLUSTER_LADDER = ((5_000, 5), (20_000, 10), (40_000, 15), (100_000, 20), (200_000, 25))
_OVER_CLUSTER_MAX = 30
_OVERRIDE_MARGIN = 0.1
_MIN_LINEAGE_SCORE = 0.1
# Over-cluster vote: a weak cell keeps its best lineage when that is the confident call of
# at least _VOTE_SHARE of its over-cluster and its own best score is >= _VOTE_MIN_SCORE.
_VOTE_SHARE = 0.5
_VOTE_MIN_SCORE = 0.05
_STATE_FLOOR = 0.15
_STATE_MARGIN = 0.2
_STATE_CAP = 0.45
_SUBGRAPH_MIN_CELLS = 50  # a lineage is re-embedded for its roots when it has this many
_SUBGRAPH_HVG = 1000
_SUBGRAPH_PCS = 20
_SUBGRAPH_SMOOTH = (0.7, 2)
_SEED_SCORE = 0.3  # a root seed has this much own evidence for the root ...
_SEED_OTHER = 0.05  # ... and no more than this for any other root of its lineage
_SEED_MIN = 10  # seeds a root needs before the classifier learns it
_SEED_C = 0.1  # inverse L2 strength of the seeded logistic regressions
_STATE_SEED_SCORE = 0.3  # a state seed: own evidence >= this and above the threshold
_STATE_SEED_NONE = 0.01  # a non-state seed: no own evidence and below the threshold
_STATE_SEED_MIN = 20  # states with fewer seeds (or < 5% of the parent) keep the threshold
_STATE_SEED_FRAC = 0.05
# Lineage discriminators (T vs NK; _annotate_discriminate): a side measured by fewer than
# _DISCRIM_MIN_GENES genes is shrunk towards _DISCRIM_PRIOR; both sides >= _NKT_PRESENT
# with r = dA / (dA + dB) within [_NKT_RATIO, 1 - _NKT_RATIO] is the NKT-like outcome.
_DISCRIM_MIN_GENES = 3
_DISCRIM_PRIOR = 0.15
_DISCRIM_NONE = 0.05  # both sides measured and below this: the pair is not split
_NKT_PRESENT = 0.3
_NKT_RATIO = 0.4
# Evidence by absence: a gene's expected detection is learnt from clusters holding at least
# _ABSENCE_MIN_CELLS cells that the pair claims.
_ABSENCE_MIN_CELLS = 20
