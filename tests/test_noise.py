"""The change column's noise rule (measure/noise.py): paired per-step differences, 10 block means, a t-test at 95%."""

from __future__ import annotations

import numpy as np
import pytest

from fdoverlap_cli.measure.derive import Change, compare
from fdoverlap_cli.measure.metrics import path_metrics
from fdoverlap_cli.measure.noise import within_noise
from fdoverlap_cli.render.cells import WITHIN_NOISE, change
from tests.loop_model import StepCosts
from tests.loop_model import spans as simulate

STEPS = np.arange(400)


def _noisy(seed: int, mean: float, spread: float) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, spread, len(STEPS))


def test_the_same_series_is_noise():
    x = _noisy(1, 1000, 100)
    assert within_noise(STEPS, x, STEPS, x)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_two_draws_of_the_same_distribution_are_noise(seed):
    """Three runs of the same step times whose means differ by a few percent: the change column must not show it."""
    a, b = _noisy(seed, 1000, 300), _noisy(seed + 100, 1000, 300)
    assert abs(b.mean() / a.mean() - 1) > 0.001  # the means differ, as three runs of one command did
    assert within_noise(STEPS, a, STEPS, b)


def test_a_shift_larger_than_the_spread_of_the_means_is_a_change():
    a = _noisy(5, 1000, 100)
    b = a * 0.9 + np.random.default_rng(6).normal(0, 20, len(STEPS))  # 10% faster on every step
    assert not within_noise(STEPS, a, STEPS, b)


def test_a_small_shift_under_heavy_noise_is_noise():
    a = _noisy(7, 1000, 400)
    b = _noisy(8, 1000, 400) * 0.99
    assert within_noise(STEPS, a, STEPS, b)


def test_a_constant_difference_is_a_change_and_too_few_pairs_are_noise():
    a = np.full(len(STEPS), 100.0)
    assert not within_noise(STEPS, a, STEPS, a + 1)
    assert within_noise(STEPS[:1], a[:1], STEPS[:1], a[:1] + 50)  # one pair: nothing tells it from noise


def test_only_steps_both_define_are_paired():
    a = np.array([100.0, np.nan, 100.0, 100.0])
    b = np.array([110.0, 5.0, np.nan, 110.0, 110.0])
    assert not within_noise(np.arange(4), a, np.arange(5), b)  # steps 0 and 3: +10 each, no spread


def test_compare_marks_noise_and_real_changes():
    sync = path_metrics(simulate("sync", 50))
    overlap = path_metrics(simulate("overlap", 50))
    c = compare(sync, overlap)
    assert c.changes["wall_ns"].within_noise is False and c.speedup_within_noise is False
    assert c.changes["steps"].within_noise is None  # an exact count: no test
    same = compare(sync, sync)
    assert same.changes["wall_ns"].within_noise is True and same.speedup_within_noise is True


def test_the_change_cell_says_within_noise():
    assert change(Change(100.0, 90.0, within_noise=True), "ms") == WITHIN_NOISE
    assert change(Change(100.0, 90.0, within_noise=False), "ms") == "-10.0%"
    assert change(Change(0.5, 0.52, within_noise=False), "pct") == "+2.0 pt"
    assert change(Change(3.0, 3.0), "num") == "same"
    assert change(Change(None, 3.0), "num") == ""


def test_jittered_steps_of_one_design_are_noise():
    """The loop model with random per-step durations, run twice with other draws: the same design, within noise."""
    rng = np.random.default_rng(9)

    def run():
        forward, save = rng.integers(100_000, 500_000, 200).tolist(), rng.integers(10_000, 90_000, 200).tolist()
        costs = StepCosts(forward=forward, save=save)
        return path_metrics(simulate("overlap", 200, costs))

    a, b = run(), run()
    c = compare(a, b)
    assert c.changes["wall_ns"].delta != 0 and c.changes["wall_ns"].within_noise is True
