"""record_timestamp and clock_samples on the CPU: CLOCK_MONOTONIC, the clock time.monotonic_ns reads."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.ops.tensors import cpu, host


def test_record_timestamp_writes_the_host_clock_in_place(ops):
    buf = cpu(np.zeros(4, np.int64))
    pointer = buf.data_ptr()
    before = time.monotonic_ns()
    ops.record_timestamp(buf, 1, 0)
    ops.record_timestamp(buf, 3, 0)
    after = time.monotonic_ns()
    values = host(buf)
    assert buf.data_ptr() == pointer
    assert values[0] == values[2] == 0
    assert before <= values[1] <= values[3] <= after


def test_record_timestamp_rejects_an_index_outside_the_buffer(ops):
    with pytest.raises(OSError, match=r"record_timestamp: index 4 is outside buf \[0, 4\)"):
        ops.record_timestamp(cpu(np.zeros(4, np.int64)), 4, 0)


def test_clock_samples_rows_are_ordered_host_times(ops):
    before = time.monotonic_ns()
    rows = ops.clock_samples(cpu(np.zeros(1, np.int64)), 16)
    after = time.monotonic_ns()
    values = host(rows)
    assert rows.place.is_cpu_place()
    assert values.shape == (16, 3) and values.dtype == np.int64
    assert (values[:, 0] <= values[:, 1]).all() and (values[:, 1] <= values[:, 2]).all()
    assert (np.diff(values[:, 0]) >= 0).all()
    assert before <= values.min() and values.max() <= after
