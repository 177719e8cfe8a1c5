"""Aligning GPU timestamps to the host clock from ping-pong samples.

A sample is (host_before, device_time, host_after), int64 ns, host = CLOCK_MONOTONIC: the host
stamps, the device reads its timer, the host stamps again. The device read happened at some host
time inside [host_before, host_after].

Estimator (per batch of samples, taken at the start and at the end of a replay):
  pick the sample with the tightest bracket (smallest host_after - host_before);
  midpoint = host_before + (host_after - host_before) // 2
  offset   = device_time - midpoint            so  host_time = device_time - offset
  error    = ceil((host_after - host_before) / 2)   the half-width of that bracket: the true
           offset lies within offset ± error (plus the device timer's resolution).
With a start and an end estimate, the offset is interpolated linearly in device time between
them (a clock drift correction) and held constant outside them, so an error never grows by
extrapolation: between the two estimates the offset's error is at most max(error_start, error_end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fdoverlap_cli.errors import InputError

MIN_DIFFS_FOR_RESOLUTION = 8  # fewer positive differences could share a factor by chance


@dataclass(frozen=True)
class ClockEstimate:
    """One offset estimate from one batch of samples."""

    offset_ns: int  # device_time - host_time
    error_ns: int  # half-width of the tightest bracket
    device_ns: int  # the device time of the sample used
    samples: int


@dataclass(frozen=True)
class Alignment:
    """Maps device timestamps to the host clock: host = device - offset(device)."""

    start: ClockEstimate
    end: ClockEstimate | None = None
    resolution_ns: int | None = None  # the device timer's step, when the samples show it

    @property
    def offset_ns(self) -> int:
        """The offset at the start of the run."""
        return self.start.offset_ns

    @property
    def error_ns(self) -> int:
        """Bound on the offset error anywhere in the run: the larger of the two brackets."""
        return max(self.start.error_ns, self.end.error_ns if self.end else 0)

    @property
    def drift_ns(self) -> int:
        """How far the offset moved between the start and the end estimates (0 with one estimate)."""
        return self.end.offset_ns - self.start.offset_ns if self.end else 0

    @property
    def samples(self) -> int:
        return self.start.samples + (self.end.samples if self.end else 0)

    def offset_at(self, device_ns: np.ndarray | int) -> np.ndarray:
        """offset(t): linear between the start and end estimates in device time, constant outside."""
        t = np.asarray(device_ns, dtype=np.int64)
        if self.end is None or self.end.device_ns == self.start.device_ns:
            return np.full(t.shape, self.start.offset_ns, dtype=np.int64)
        t0, t1 = self.start.device_ns, self.end.device_ns
        fraction = np.clip((t - t0).astype(np.float64) / (t1 - t0), 0.0, 1.0)
        return self.start.offset_ns + np.rint(fraction * self.drift_ns).astype(np.int64)

    def to_host(self, device_ns: np.ndarray | int) -> np.ndarray | int:
        """Device timestamps on the host clock (int64; an int for an int)."""
        t = np.asarray(device_ns, dtype=np.int64)
        host = t - self.offset_at(t)
        return int(host) if host.ndim == 0 else host

    def to_dict(self) -> dict[str, Any]:
        return {
            "offset_ns": self.offset_ns,
            "error_ns": self.error_ns,
            "drift_ns": self.drift_ns,
            "samples": self.samples,
            "resolution_ns": self.resolution_ns,
        }


def _as_samples(samples: Any, where: str) -> np.ndarray:
    s = np.asarray(samples, dtype=np.int64)
    if s.ndim != 2 or s.shape[1] != 3 or len(s) == 0:
        raise InputError(where, f"need rows (host_before, device_time, host_after), got shape {s.shape}")
    if (s[:, 2] < s[:, 0]).any():
        raise InputError(where, "a sample has host_after < host_before")
    return s


def estimate(samples: Any, where: str = "clock samples") -> ClockEstimate:
    """The offset from the sample with the tightest bracket (see the module docstring)."""
    s = _as_samples(samples, where)
    host_before, device, host_after = (int(v) for v in s[int(np.argmin(s[:, 2] - s[:, 0]))])
    width = host_after - host_before
    midpoint = host_before + width // 2
    return ClockEstimate(offset_ns=device - midpoint, error_ns=(width + 1) // 2, device_ns=device, samples=len(s))


def timer_resolution(device_times: np.ndarray) -> int | None:
    """The device timer's step: the gcd of the positive differences between sorted readings.

    A timer that ticks every r ns makes every difference a multiple of r; with at least
    MIN_DIFFS_FOR_RESOLUTION differences a common factor by chance is unlikely. None otherwise.
    """
    diffs = np.diff(np.sort(np.asarray(device_times, dtype=np.int64)))
    diffs = diffs[diffs > 0]
    if len(diffs) < MIN_DIFFS_FOR_RESOLUTION:
        return None
    return int(np.gcd.reduce(diffs))


def align(start_samples: Any, end_samples: Any | None = None) -> Alignment:
    """The alignment from the samples taken at the start and (optionally) the end of a run."""
    batches = {"clock samples (start)": start_samples}
    if end_samples is not None:
        batches["clock samples (end)"] = end_samples
    checked = [_as_samples(samples, where) for where, samples in batches.items()]
    estimates = [estimate(s) for s in checked]
    resolutions = [r for r in (timer_resolution(s[:, 1]) for s in checked) if r is not None]
    return Alignment(
        start=estimates[0],
        end=estimates[1] if len(estimates) > 1 else None,
        resolution_ns=math.gcd(*resolutions) if resolutions else None,
    )
