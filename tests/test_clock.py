"""Clock alignment against synthetic clocks with a known offset, jitter, drift and timer step."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.measure import clock

HOST_START = 5_000_000_000_000  # CLOCK_MONOTONIC after ~1.4 h of uptime


class SyntheticClock:
    """A device clock: device(h) = h + offset + drift_ppm·1e-6·(h - HOST_START), read in `tick` steps."""

    def __init__(self, offset: int, drift_ppm: float = 0.0, tick: int = 1) -> None:
        self.offset, self.drift_ppm, self.tick = offset, drift_ppm, tick

    def true_device(self, host: np.ndarray) -> np.ndarray:
        h = np.asarray(host, dtype=np.int64)
        return h + self.offset + np.rint((h - HOST_START) * self.drift_ppm * 1e-6).astype(np.int64)

    def true_offset(self, host: np.ndarray) -> np.ndarray:
        return self.true_device(host) - np.asarray(host, dtype=np.int64)

    def ping_pong(self, rng: np.random.Generator, at: int, n: int, max_latency: int) -> np.ndarray:
        """n samples from host time `at`: each leg takes a random latency up to max_latency."""
        gaps = rng.integers(1_000, 20_000, n)
        before = at + np.cumsum(gaps)
        read_at = before + rng.integers(0, max_latency, n)
        after = read_at + rng.integers(0, max_latency, n)
        device = self.true_device(read_at) // self.tick * self.tick
        return np.column_stack([before, device, after])


@settings(max_examples=100)
@given(
    offset=st.integers(-(10**15), 10**15),
    max_latency=st.integers(1, 50_000),
    seed=st.integers(0, 2**32 - 1),
)
def test_offset_is_within_the_reported_error(offset, max_latency, seed):
    rng = np.random.default_rng(seed)
    synthetic = SyntheticClock(offset)
    samples = synthetic.ping_pong(rng, HOST_START, 32, max_latency)
    a = clock.align(samples)
    assert abs(a.offset_ns - offset) <= a.error_ns
    widths = samples[:, 2] - samples[:, 0]
    assert a.error_ns == (int(widths.min()) + 1) // 2
    assert a.samples == 32 and a.drift_ns == 0


def test_tightest_bracket_is_chosen():
    samples = [(100, 1_100, 140), (200, 1_207, 204), (300, 1_320, 360)]
    e = clock.estimate(samples)
    assert (e.offset_ns, e.error_ns, e.device_ns) == (1_207 - 202, 2, 1_207)


@settings(max_examples=50)
@given(
    offset=st.integers(-(10**12), 10**12),
    drift_ppm=st.floats(-50, 50),
    seed=st.integers(0, 2**32 - 1),
)
def test_drift_is_corrected_between_start_and_end(offset, drift_ppm, seed):
    rng = np.random.default_rng(seed)
    synthetic = SyntheticClock(offset, drift_ppm)
    run_ns = 600 * 10**9  # a ten-minute replay
    start = synthetic.ping_pong(rng, HOST_START, 16, 2_000)
    end = synthetic.ping_pong(rng, HOST_START + run_ns, 16, 2_000)
    a = clock.align(start, end)

    true_drift = int(synthetic.true_offset(HOST_START + run_ns) - synthetic.true_offset(HOST_START))
    assert abs(a.drift_ns - true_drift) <= a.start.error_ns + a.end.error_ns + 2

    host = HOST_START + np.sort(rng.integers(0, run_ns, 200))
    host[0], host[-1] = HOST_START - 10**9, HOST_START + run_ns + 10**9  # outside: held, not extrapolated
    device = synthetic.true_device(host)
    inside = (device >= a.start.device_ns) & (device <= a.end.device_ns)
    err = np.abs(a.to_host(device) - host)
    # Linear interpolation of a linear drift: the error stays within the endpoints' errors (+ rounding).
    assert (err[inside] <= a.error_ns + 2).all()
    # Outside the estimates the offset is held: the error grows only by the drift over the overhang.
    assert (err[~inside] <= a.error_ns + 2 + abs(drift_ppm) * 1e-6 * 1.2e9).all()


def test_to_host_keeps_scalars_and_arrays():
    a = clock.Alignment(start=clock.ClockEstimate(offset_ns=1_000, error_ns=5, device_ns=0, samples=1))
    assert a.to_host(5_000) == 4_000 and isinstance(a.to_host(5_000), int)
    assert a.to_host(np.array([1_000, 2_000])).tolist() == [0, 1_000]


def test_timer_resolution_is_seen_when_coarse_and_absent_with_few_samples():
    rng = np.random.default_rng(1)
    coarse = SyntheticClock(offset=123, tick=1_000).ping_pong(rng, HOST_START, 32, 3_000)
    coarse_alignment = clock.align(coarse)
    assert coarse_alignment.resolution_ns == 1_000
    # A coarse timer reads late by up to one step: the bound then includes the resolution.
    assert abs(coarse_alignment.offset_ns - 123) <= coarse_alignment.error_ns + 1_000
    fine = SyntheticClock(offset=123).ping_pong(rng, HOST_START, 32, 3_000)
    assert clock.align(fine).resolution_ns == 1
    assert clock.align(fine[:4]).resolution_ns is None


def test_to_dict_reports_the_alignment():
    start = [(0, 1_010, 20)] * 3
    end = [(10**9, 10**9 + 1_030, 10**9 + 20)]
    d = clock.align(start, end).to_dict()
    assert d == {"offset_ns": 1_000, "error_ns": 10, "drift_ns": 20, "samples": 4, "resolution_ns": None}


@pytest.mark.parametrize(
    "samples, match",
    [([], "shape"), ([(1, 2)], "shape"), ([(10, 5, 9)], "host_after < host_before")],
)
def test_bad_samples_are_input_errors(samples, match):
    with pytest.raises(InputError, match=match):
        clock.align(samples)
