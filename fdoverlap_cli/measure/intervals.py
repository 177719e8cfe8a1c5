"""Interval algebra on half-open integer intervals [start, end) in ns, vectorised with numpy.

An interval set is an int64 array of shape (n, 2), one row per interval; any sequence of
(start, end) pairs is accepted as input. Rows with end <= start are empty sets and drop out.
Results are *canonical*: sorted, disjoint, and not touching ([0, 5) and [5, 8) become [0, 8)).

Every set operation is one sweep over the sorted boundaries of its operands: each start adds
1 to its operand's coverage count, each end subtracts 1, and the elementary segments between
consecutive boundaries are kept or dropped by a predicate on (covered by A, covered by B).
The grouped variants run the same sweep over many small sets at once (one per step), so a
replay of 100k steps costs a few array passes instead of 100k Python calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

IntervalsLike = np.ndarray | Sequence[tuple[int, int]] | Sequence[Sequence[int]]
Keep = Callable[[np.ndarray, np.ndarray], np.ndarray]

_EMPTY = np.empty((0, 2), dtype=np.int64)


def as_intervals(intervals: IntervalsLike) -> np.ndarray:
    """`intervals` as an int64 (n, 2) array (not merged); empty input gives shape (0, 2)."""
    a = np.asarray(intervals, dtype=np.int64)
    if a.size == 0:
        return _EMPTY.copy()
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"intervals must have shape (n, 2), got {a.shape}")
    return a


def _group_labels(groups: np.ndarray | None, n: int) -> np.ndarray:
    if groups is None:
        return np.zeros(n, dtype=np.int64)
    g = np.asarray(groups, dtype=np.int64)
    if g.shape != (n,):
        raise ValueError(f"groups must have one label per interval ({n}), got shape {g.shape}")
    return g


def _sweep(
    a: np.ndarray,
    ga: np.ndarray | None,
    b: np.ndarray,
    gb: np.ndarray | None,
    keep: Keep,
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical segments (per group) where `keep(covered_by_a, covered_by_b)` holds.

    Returns (segments (m, 2), their group labels (m,)), sorted by (group, start).
    Coverage counts are running sums over boundaries sorted by (group, position); each
    group's +1/-1 sum to zero, so a count never leaks from one group into the next.
    """
    a, b = as_intervals(a), as_intervals(b)
    ga, gb = _group_labels(ga, len(a)), _group_labels(gb, len(b))
    a_ok, b_ok = a[:, 1] > a[:, 0], b[:, 1] > b[:, 0]
    a, ga, b, gb = a[a_ok], ga[a_ok], b[b_ok], gb[b_ok]
    na, nb = len(a), len(b)
    if na + nb == 0:
        return _EMPTY.copy(), np.empty(0, dtype=np.int64)

    pos = np.concatenate([a[:, 0], a[:, 1], b[:, 0], b[:, 1]])
    grp = np.concatenate([ga, ga, gb, gb])
    step_a = np.concatenate([np.ones(na, np.int64), -np.ones(na, np.int64), np.zeros(2 * nb, np.int64)])
    step_b = np.concatenate([np.zeros(2 * na, np.int64), np.ones(nb, np.int64), -np.ones(nb, np.int64)])
    order = np.lexsort((pos, grp))
    pos, grp = pos[order], grp[order]
    cover_a, cover_b = np.cumsum(step_a[order]), np.cumsum(step_b[order])

    # Elementary segment i is [pos[i], pos[i+1]) with the coverage after boundary i.
    seg_start, seg_end, seg_grp = pos[:-1], pos[1:], grp[:-1]
    kept = keep(cover_a[:-1] > 0, cover_b[:-1] > 0) & (seg_end > seg_start) & (grp[1:] == seg_grp)
    seg_start, seg_end, seg_grp = seg_start[kept], seg_end[kept], seg_grp[kept]
    if len(seg_start) == 0:
        return _EMPTY.copy(), np.empty(0, dtype=np.int64)

    # Coalesce kept segments that touch inside one group.
    new_run = np.ones(len(seg_start), dtype=bool)
    new_run[1:] = (seg_start[1:] != seg_end[:-1]) | (seg_grp[1:] != seg_grp[:-1])
    first = np.flatnonzero(new_run)
    last = np.append(first[1:] - 1, len(seg_start) - 1)
    return np.column_stack([seg_start[first], seg_end[last]]), seg_grp[first]


def _either(in_a: np.ndarray, in_b: np.ndarray) -> np.ndarray:
    return in_a | in_b


def _both(in_a: np.ndarray, in_b: np.ndarray) -> np.ndarray:
    return in_a & in_b


def _a_only(in_a: np.ndarray, in_b: np.ndarray) -> np.ndarray:
    return in_a & ~in_b


def merge(a: IntervalsLike) -> np.ndarray:
    """The union of `a` as canonical intervals (sorted, disjoint, empty rows dropped)."""
    return _sweep(a, None, _EMPTY, None, _either)[0]


def subtract(a: IntervalsLike, b: IntervalsLike) -> np.ndarray:
    """A \\ B (the points of A not in B), canonical."""
    return _sweep(a, None, b, None, _a_only)[0]


def measure(a: IntervalsLike) -> int:
    """|A|: the total length of the union of A in ns (overlaps counted once)."""
    merged = merge(a)
    return int((merged[:, 1] - merged[:, 0]).sum())


def covered_before(merged: np.ndarray, points: np.ndarray | Sequence[int]) -> np.ndarray:
    """|merged ∩ (-inf, x)| for each x in `points`; `merged` must be canonical (from `merge`).

    So |merged ∩ [s, e)| = covered_before(merged, e) - covered_before(merged, s) for any s <= e,
    which measures many single intervals against one set with two binary searches each.
    """
    x = np.asarray(points, dtype=np.int64)
    starts, ends = merged[:, 0], merged[:, 1]
    done = np.concatenate([[0], np.cumsum(ends - starts)])  # length of the first i intervals
    i = np.searchsorted(ends, x, side="right")  # intervals ending at or before x are all covered
    partial = np.zeros_like(x)
    inside = i < len(merged)
    j = i[inside]
    partial[inside] = np.clip(x[inside] - starts[j], 0, None)
    return done[i] + partial


def _sum_by_group(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    out = np.zeros(n_groups, dtype=np.int64)
    np.add.at(out, groups, values)
    return out


def merge_by_group(a: IntervalsLike, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of each group's intervals: (canonical segments, their group labels)."""
    return _sweep(a, groups, _EMPTY, None, _either)


def measure_by_group(a: IntervalsLike, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """|∪ A_g| for g in 0..n_groups-1 (int64); labels must lie in that range."""
    seg, seg_grp = merge_by_group(a, groups)
    return _sum_by_group(seg[:, 1] - seg[:, 0], seg_grp, n_groups)


def intersection_measure_by_group(
    a: IntervalsLike, a_groups: np.ndarray, b: IntervalsLike, b_groups: np.ndarray, n_groups: int
) -> np.ndarray:
    """|∪ A_g ∩ ∪ B_g| for g in 0..n_groups-1 (int64): only intervals of the same group meet."""
    seg, seg_grp = _sweep(a, a_groups, b, b_groups, _both)
    return _sum_by_group(seg[:, 1] - seg[:, 0], seg_grp, n_groups)
