"""Two exports' steps found without NVTX side by side (`analyze A --vs B`): every catalog row of the
marker table on both, and whether the change is noise.

The change of a row with a per-step series (catalog `series`) follows measure/noise.py, step i of A
paired with step i of B (two runs of the same workload: the same batches in the same order, as far as
the two loops schedule alike); a row without a series (a count, a whole-run share) is what it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fdoverlap_cli.measure import catalog, noise
from fdoverlap_cli.nsys.markers.result import MarkerSteps


@dataclass(frozen=True)
class RowChange:
    """One catalog row on both exports; within_noise None where no per-step series says (or nothing to pair)."""

    a: float | None
    b: float | None
    within_noise: bool | None = None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "delta": self.delta, "within_noise": self.within_noise}


@dataclass(frozen=True)
class MarkerComparison:
    """The marker table of A and B, by catalog key; `unavailable` says why there is none."""

    changes: dict[str, RowChange]
    unavailable: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": self.unavailable is None,
            "reason": self.unavailable,
            "pairing": "step i of A with step i of B",
            "changes": {k: c.to_dict() for k, c in self.changes.items()},
        }


def rows() -> tuple[catalog.Metric, ...]:
    """The catalog's rows of the marker table."""
    return catalog.rows(catalog.MARKERS, sources=(catalog.MARKERS,))


def compare(a: MarkerSteps, b: MarkerSteps, a_name: str = "A", b_name: str = "B") -> MarkerComparison:
    """Every row of the marker table on both (module docstring)."""
    missing = [f"{name}: {m.unavailable}" for name, m in ((a_name, a), (b_name, b)) if m.unavailable is not None]
    if missing or a.run is None or b.run is None or a.steps is None or b.steps is None:
        return MarkerComparison({}, "; ".join(missing) or "no steps")
    da, db = a.run.to_dict(), b.run.to_dict()
    changes = {}
    for m in rows():
        x, y = m.value(da), m.value(db)
        quiet = None
        if m.series is not None and x is not None and y is not None:
            sa, sb = a.steps.series(m.series), b.steps.series(m.series)
            quiet = noise.within_noise(np.arange(len(sa)), sa, np.arange(len(sb)), sb)
        changes[m.key] = RowChange(x, y, quiet)
    return MarkerComparison(changes)
