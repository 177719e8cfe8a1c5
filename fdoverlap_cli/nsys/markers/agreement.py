"""How well the steps found from a marker agree with reference steps (NVTX ranges of the same run).

A reference step is found when a boundary lies within `tolerance_ns` of its GPU end; for the found
ones, with P the found step's GPU period:
  busy_points    |kernel_busy - reference kernel_busy| / P
  bubble_points  |bubble - reference bubble| / P   (where the reference's bubble is defined)
  bubble_share   |sum bubble - sum reference bubble| / sum P over the steps where both are defined
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fdoverlap_cli.nsys.markers.result import StepTable

BOUNDARY_NS = 50_000


@dataclass(frozen=True)
class StepAgreement:
    reference_steps: int
    found: int
    max_boundary_ns: float | None
    busy_points: np.ndarray  # per found step
    bubble_points: np.ndarray  # per found step, NaN where the reference has no bubble
    bubble_share: float | None

    @property
    def found_share(self) -> float | None:
        return self.found / self.reference_steps if self.reference_steps else None

    def to_dict(self) -> dict:
        def worst(a: np.ndarray) -> float | None:
            return float(np.nanmax(a)) if len(a) and not np.isnan(a).all() else None

        return {
            "reference_steps": self.reference_steps,
            "found": self.found,
            "found_share": self.found_share,
            "max_boundary_ns": self.max_boundary_ns,
            "max_busy_points": worst(self.busy_points),
            "max_bubble_points": worst(self.bubble_points),
            "bubble_share_points": self.bubble_share,
        }


def agree(
    steps: StepTable,
    ends: np.ndarray,
    kernel_busy: np.ndarray,
    bubble: np.ndarray,
    tolerance_ns: int = BOUNDARY_NS,
) -> StepAgreement:
    """Match each reference step (GPU end, kernels-only busy, bubble: arrays in step order) to the nearest
    step found, and measure the differences (module docstring)."""
    ends, found_ends = np.asarray(ends, dtype=np.float64), steps.gpu_end_ns.astype(np.float64)
    if len(found_ends) == 0 or len(ends) == 0:
        empty = np.empty(0)
        return StepAgreement(len(ends), 0, None, empty, empty, None)
    right = np.clip(np.searchsorted(found_ends, ends), 0, len(found_ends) - 1)
    left = np.maximum(right - 1, 0)
    nearest = np.where(np.abs(found_ends[left] - ends) <= np.abs(found_ends[right] - ends), left, right)
    distance = np.abs(found_ends[nearest] - ends)
    hit = distance <= tolerance_ns
    i = nearest[hit]
    period = steps.gpu_period_ns[i]
    busy = np.abs(steps.kernel_busy_ns[i] - np.asarray(kernel_busy)[hit]) / period
    ref_bubble = np.asarray(bubble, dtype=np.float64)[hit]
    points = np.abs(steps.bubble_ns[i] - ref_bubble) / period
    both = ~np.isnan(ref_bubble) & ~np.isnan(steps.bubble_ns[i]) & ~np.isnan(period)
    share = None
    if both.any():
        share = float(abs(steps.bubble_ns[i][both].sum() - ref_bubble[both].sum()) / period[both].sum())
    return StepAgreement(
        len(ends), int(hit.sum()), float(distance[hit].max()) if hit.any() else None, busy, points, share
    )
