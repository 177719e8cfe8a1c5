"""One reported number's catalog row (measure/catalog.py lists them all): key, label, unit, definition."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Where a metric shows: a replay's table, an nsys analysis', a figure, the per-step tables of a report.
RUN, NSYS, FIGURE, STEPS = "run", "nsys", "figure", "steps"


@dataclass(frozen=True)
class Metric:
    """One reported number."""

    key: str  # its name in JSON, dotted into its source's to_dict()
    label: str  # its name in tables and figures
    unit: str  # num, ms, us (times in ns), pct (a fraction 0..1) or bytes
    definition: str  # one line: what it is, in the notation of docs/architecture.md
    # path: PathMetrics; comparison: Comparison; nsys: the nsys path (its GPU work); markers: the RunSummary of
    # the steps found without NVTX (nsys.markers)
    source: str = "path"
    where: tuple[str, ...] = (RUN, NSYS)
    gpu: bool = False  # needs the GPU's timing (a GPU run's timestamps, or nsys): not measurable on the CPU
    # The per-step series the comparison pairs to tell a change from noise (measure/noise.py): `per_step.<column>`
    # (a PerStep column; `per_step.stage_ns.save` one of its dicts'); None for an exact count.
    series: str | None = None
    # (a boolean key of the same source, the cell shown instead of the value where it is true, the note that
    # says why): a value that is what it is by construction, said so instead of a bare number.
    by_construction: tuple[str, str, str] | None = None
    shown_when_zero: bool = True  # False: a table leaves the row out where every path has 0 (or none)

    @property
    def per_step(self) -> bool:
        """A series with one value per step (a figure's line), not one number."""
        return self.key.startswith("per_step.")

    def value(self, doc: Mapping[str, Any]) -> float | None:
        """The value in `doc`, the to_dict() of its source; None where missing."""
        v: Any = doc
        for part in self.key.split("."):
            if not isinstance(v, Mapping) or part not in v:
                return None
            v = v[part]
        return v
