"""Interval algebra: laws checked against a brute-force set of covered integers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdoverlap_cli.measure import intervals as iv

pairs = st.tuples(st.integers(-5, 40), st.integers(-5, 40))
interval_sets = st.lists(pairs, max_size=8)


def points(a) -> set[int]:
    """The integers covered by the half-open intervals of `a` (the reference model)."""
    return {x for s, e in a for x in range(s, e)}


def as_set(result: np.ndarray) -> set[int]:
    return points(result.tolist())


def assert_canonical(result: np.ndarray) -> None:
    assert result.dtype == np.int64 and result.ndim == 2 and result.shape[1] == 2
    assert (result[:, 1] > result[:, 0]).all(), "no empty intervals"
    assert (result[1:, 0] > result[:-1, 1]).all(), "sorted, disjoint and not touching"


@given(interval_sets)
def test_merge_matches_reference_and_is_canonical(a):
    m = iv.merge(a)
    assert_canonical(m)
    assert as_set(m) == points(a)
    assert iv.measure(a) == len(points(a))


@given(interval_sets)
def test_merge_is_idempotent(a):
    assert np.array_equal(iv.merge(iv.merge(a)), iv.merge(a))


@given(interval_sets, interval_sets)
def test_subtract_matches_reference(a, b):
    r = iv.subtract(a, b)
    assert_canonical(r)
    assert as_set(r) == points(a) - points(b)
    assert iv.measure(r) + len(points(a) & points(b)) == iv.measure(a)


@given(interval_sets, st.lists(st.integers(-10, 50), max_size=10))
def test_covered_before(a, xs):
    got = iv.covered_before(iv.merge(a), xs)
    assert got.tolist() == [sum(1 for p in points(a) if p < x) for x in xs]


grouped = st.lists(st.tuples(st.integers(0, 3), pairs), max_size=12)


@settings(max_examples=200)
@given(grouped, grouped)
def test_grouped_operations_match_per_group_reference(a, b):
    n = 4
    a_iv = [p for _, p in a]
    b_iv = [p for _, p in b]
    a_g = np.array([g for g, _ in a], dtype=np.int64)
    b_g = np.array([g for g, _ in b], dtype=np.int64)
    per_a = [points([p for g, p in a if g == k]) for k in range(n)]
    per_b = [points([p for g, p in b if g == k]) for k in range(n)]
    assert iv.measure_by_group(a_iv, a_g, n).tolist() == [len(s) for s in per_a]
    got = iv.intersection_measure_by_group(a_iv, a_g, b_iv, b_g, n).tolist()
    assert got == [len(per_a[k] & per_b[k]) for k in range(n)]
    seg, seg_g = iv.merge_by_group(a_iv, a_g)
    for k in range(n):
        part = seg[seg_g == k]
        assert_canonical(part)
        assert as_set(part) == per_a[k]


def test_touching_intervals_merge_and_empty_rows_drop():
    assert iv.merge([(5, 8), (0, 5), (9, 9), (12, 10)]).tolist() == [[0, 8]]
    assert iv.merge([]).shape == (0, 2)
    assert iv.measure([]) == 0


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        iv.as_intervals([1, 2, 3])
    with pytest.raises(ValueError, match="one label per interval"):
        iv.measure_by_group([(0, 1)], np.array([0, 1]), 2)


def test_large_values_keep_ns_precision():
    base = 1_700_000_000_000_000_000  # ns since the epoch: int64, not float
    a = [(base, base + 3), (base + 2, base + 7)]
    assert iv.merge(a).tolist() == [[base, base + 7]]
    assert iv.measure(iv.subtract(a, [(base + 6, base + 100)])) == 6
