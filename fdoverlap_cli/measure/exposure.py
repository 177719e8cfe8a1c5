"""Exposed host time: each step's bubble split by what the host was doing while the GPU idled.

bubble_k = [end of step k's device work (C_k ∪ D_k), start of C_{k+1}), empty when C_{k+1} starts first.

The attribution rule: each instant of a bubble goes to the innermost host span covering it, and
"innermost" is the covering span that started last (for nested spans, the one nested deepest); a tie
goes to the span that ends first, then to a wait over a stage over the iteration. So a wait inside a
stage takes its own time out of the stage's ("waits split out"), and a stage inside the iteration out
of the iteration's. The category of a span is its kind (schema.EXPOSED, with schema.EXPOSED_AS folding
the iteration into OTHER); an instant no host span covers is OTHER. Every instant of a bubble goes to
exactly one category, so per step the categories sum to the bubble exactly.

Host spans of any step label count (save(k−1) runs inside iteration k on the overlap path): the host
is one thread, and the rule asks what it was doing, not for which step.
"""

from __future__ import annotations

import numpy as np

from fdoverlap_cli.measure.records import KIND_CODE, Kind, SpanTable
from fdoverlap_cli.measure.schema import EXPOSED, EXPOSED_AS, OTHER

CATEGORIES = tuple(category for category, _ in EXPOSED)
_OTHER = CATEGORIES.index(OTHER)
# span kind code -> category index (a host kind EXPOSED does not name is OTHER)
_CATEGORY_OF_KIND = np.full(len(Kind.ALL), _OTHER, dtype=np.int64)
for _kind in Kind.HOST:
    _category = EXPOSED_AS.get(_kind, _kind)
    _CATEGORY_OF_KIND[KIND_CODE[_kind]] = CATEGORIES.index(_category) if _category in CATEGORIES else _OTHER
# tie-break between spans with the same start and end: a wait, then a stage, then the iteration
_DEPTH = np.ones(len(Kind.ALL), dtype=np.int64)
_DEPTH[[KIND_CODE[k] for k in Kind.WAITS]] = 0
_DEPTH[KIND_CODE[Kind.ITERATION]] = 2


def exposed_by_category(bubbles: np.ndarray, host: SpanTable) -> np.ndarray:
    """(len(bubbles), len(CATEGORIES)) int64: the ns of each bubble each category covers (the rule above).

    `bubbles` is an (n, 2) int64 array of [start, end) intervals, disjoint (rows with end <= start are empty
    bubbles); `host` the path's host spans. Each row sums to its bubble's length.
    """
    n = len(bubbles)
    out = np.zeros((n, len(CATEGORIES)), dtype=np.int64)
    b_start, b_end = bubbles[:, 0], bubbles[:, 1]
    real = np.flatnonzero(b_end > b_start)
    if len(real) == 0:
        return out
    order = real[np.argsort(b_start[real], kind="stable")]
    bs, be = b_start[order], b_end[order]

    # The pieces of each host span inside each bubble it meets: span j meets bubbles i0[j]..i1[j]-1.
    s, e, kind = host.start_ns, host.end_ns, host.kind
    i0 = np.searchsorted(be, s, side="right")
    i1 = np.searchsorted(bs, e, side="left")
    count = np.maximum(i1 - i0, 0)
    span = np.repeat(np.arange(len(s)), count)
    bubble = np.repeat(i0, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    p_start, p_end = np.maximum(s[span], bs[bubble]), np.minimum(e[span], be[bubble])
    keep = p_end > p_start
    span, bubble, p_start, p_end = span[keep], bubble[keep], p_start[keep], p_end[keep]

    # Elementary segments between every boundary; each inside a bubble goes to its winning piece.
    points = np.sort(np.concatenate([bs, be, p_start, p_end]))
    points = points[np.concatenate([[True], points[1:] != points[:-1]])]
    seg_start, seg_end = points[:-1], points[1:]
    seg_bubble = np.searchsorted(bs, seg_start, side="right") - 1
    inside = (seg_bubble >= 0) & (seg_end <= be[np.maximum(seg_bubble, 0)])
    # Rank the pieces by the rule: a later start wins, then an earlier end, then the lesser depth.
    rank = np.empty(len(span), dtype=np.int64)
    rank[np.lexsort((-_DEPTH[kind[span]], -e[span], s[span]))] = np.arange(len(span))
    lo, hi = np.searchsorted(points, p_start), np.searchsorted(points, p_end)
    width = hi - lo
    covered = np.repeat(lo, width) + (np.arange(width.sum()) - np.repeat(np.cumsum(width) - width, width))
    best = np.full(len(seg_start), -1, dtype=np.int64)
    np.maximum.at(best, covered, np.repeat(rank, width))
    category_by_rank = np.empty(len(span) + 1, dtype=np.int64)
    category_by_rank[rank] = _CATEGORY_OF_KIND[kind[span]]
    category_by_rank[-1] = _OTHER  # best = -1: no host span covers the segment
    category = category_by_rank[best]

    rows = order[seg_bubble[inside]]
    np.add.at(out, (rows, category[inside]), (seg_end - seg_start)[inside])
    return out
