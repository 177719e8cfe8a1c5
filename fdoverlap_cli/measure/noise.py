"""When a change between the two paths is run-to-run noise: the rule the comparison's change column follows.

Both paths replay the same trace, so step k is the same batch on both: a metric's per-step series
(catalog `series`: step time for the wall time, tokens/s and the speedup; the bubble for the exposed
share; the inter-token latency for ITL and TPOT) is paired step by step, d_k = overlap_k − sync_k over the steps where
both define it. Neighbouring steps share slow spells (a busy host, a clock change), so the pairs are
not independent: they are cut into BLOCKS consecutive blocks and the block means tested (the method of
batch means). The change is real when a two-sided t-test of the block means rejects "no difference"
at 95% (|mean| / (sd / √B) ≥ t(0.975, B − 1)); otherwise the change column says "within noise". With
one block, or nothing to pair, it is noise (nothing can tell it apart); a difference with no spread at
all (every block the same, nonzero) is a change. An exact count (tokens, steps) has no series: its
change is what it is.

What it cannot see: a drift between the two runs (the machine slower while one path ran) looks like a
change. Run `compare` twice to see that spread.
"""

from __future__ import annotations

import math

import numpy as np

from fdoverlap_cli.measure.quantities import PathMetrics

BLOCKS = 10
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262)  # t(0.975, df) for df = 1..9


def within_noise(a_steps: np.ndarray, a: np.ndarray, b_steps: np.ndarray, b: np.ndarray) -> bool:
    """Whether b − a, paired on the steps, is noise by the rule above."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.array_equal(a_steps, b_steps):
        _, ia, ib = np.intersect1d(a_steps, b_steps, assume_unique=True, return_indices=True)
        x, y = x[ia], y[ib]
    d = (y - x)[~np.isnan(x) & ~np.isnan(y)]
    blocks = min(BLOCKS, len(d))
    if blocks < 2:
        return True
    means = np.array([block.mean() for block in np.array_split(d, blocks)])
    mean, sd = float(means.mean()), float(means.std(ddof=1))
    if sd == 0:
        return mean == 0
    return abs(mean) / (sd / math.sqrt(blocks)) < _T975[blocks - 2]


def paired(sync: PathMetrics, overlap: PathMetrics, series: str) -> bool | None:
    """`within_noise` of the per-step series `per_step.<column>` of both paths; None when either path has none
    of it (nothing measured)."""
    column = series.removeprefix("per_step.")
    x, y = sync.per_step.series(column), overlap.per_step.series(column)
    if np.isnan(x).all() or np.isnan(y).all():
        return None
    return within_noise(sync.per_step.step, x, overlap.per_step.step, y)
