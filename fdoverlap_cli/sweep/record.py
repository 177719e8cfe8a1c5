"""A sweep as one record (`sweep.json`): the grid, and per point its status and its whole RunResult.

The file (format `fdoverlap-sweep`, version 1) holds every point of the grid from the start, pending until
it runs; each point's `run` is exactly what `-o run.json` of the same compare would hold, checked the same
way (results_format.check_results) when the file is loaded. `view()` derives what a sweep shows (typed:
`SweepView`, one `SweepRow` a point) from each point's own `RunResult.view`; renderers take the view.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from typing import Any

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.fileio import write_json
from fdoverlap_cli.json_doc import check_file
from fdoverlap_cli.results import RunResult
from fdoverlap_cli.results_format import POINT_STATUSES, check_sweep

SWEEP_FORMAT = "fdoverlap-sweep"
SWEEP_VERSION = 1
DONE, PENDING, INCOMPLETE, FAILED = POINT_STATUSES


@dataclass
class SweepPoint:
    """One point: its axis values, its identity (options and trace bytes), what became of it, its run."""

    id: str
    key: dict[str, Any]
    label: str
    status: str = PENDING  # done, pending, incomplete (interrupted) or failed (an engine error)
    run: RunResult | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "label": self.label,
            "status": self.status,
            "error": self.error,
            "run": self.run.to_dict() if self.run else None,
        }


@dataclass
class SweepResult:
    """A whole sweep: its command, its axes (the first: batch or trace), and its points in grid order."""

    command: list[str]
    axes: list[dict[str, Any]]  # {"name", "values"}
    points: list[SweepPoint] = field(default_factory=list)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    @property
    def complete(self) -> bool:
        return all(p.status == DONE for p in self.points)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SWEEP_FORMAT,
            "version": SWEEP_VERSION,
            "complete": self.complete,
            "created": self.created,
            "command": self.command,
            "axes": self.axes,
            "points": [p.to_dict() for p in self.points],
        }

    def save(self, file: str | os.PathLike[str]) -> None:
        write_json(file, self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, where: str = "sweep.json") -> SweepResult:
        check_file(d, where, SWEEP_FORMAT, SWEEP_VERSION, "sweep", check_sweep)
        points = []
        for i, p in enumerate(d["points"]):
            run = RunResult.from_dict(p["run"], f"{where}: points[{i}].run") if p["run"] is not None else None
            points.append(SweepPoint(p["id"], p["key"], p["label"], p["status"], run, p["error"]))
        return cls(command=d["command"], axes=d["axes"], points=points, created=d["created"])

    @classmethod
    def load(cls, file: str | os.PathLike[str]) -> SweepResult:
        from fdoverlap_cli.trace.format import read_json_file

        return cls.from_dict(read_json_file(file, "sweep file"), str(file))

    def view(self) -> SweepView:
        """What the sweep shows: one row a point, each from its run's own view."""
        return SweepView(tuple(a["name"] for a in self.axes), tuple(_row(p) for p in self.points), self._title())

    def _title(self) -> str:
        """What the sweep ran: the model and the device of its first run, and its grid's size."""
        run = next((p.run for p in self.points if p.run is not None), None)
        grid = " × ".join(f"{len(a['values'])} {a['name']}" for a in self.axes)
        if run is None:
            return f"sweep of {len(self.points)} points ({grid})"
        m, env = run.model, run.environment
        gpu = (env.get("paddle") or {}).get("gpu_name") if run.on_gpu else None
        device = f"{env.get('device')}" + (f" ({gpu})" if gpu else "")
        return f"model {m['name']} ({m['num_layers']} layers, {m['dtype']}) · device {device} · {grid}"


@dataclass(frozen=True)
class SweepRow:
    """One point as shown: its axis values, the comparison's speedup, each path's GPU busy and exposed host
    time per step (None where not measured: the CPU, or no run), and its checks."""

    key: dict[str, Any]
    label: str
    status: str
    batch: int | None  # the trace's slots (max_num_seqs): the x of the figure
    measurable: bool  # the run timed a GPU
    speedup: float | None = None
    gpu_busy: dict[str, float | None] = field(default_factory=dict)
    exposed_ns: dict[str, float | None] = field(default_factory=dict)  # mean bubble per step: Σ exposed categories
    tokens: str = "not run"  # same (both paths, every token), differ, check failed, not compared, not run
    failures: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "status": self.status,
            "batch": self.batch,
            "measurable": self.measurable,
            "speedup": self.speedup,
            "gpu_busy": self.gpu_busy,
            "exposed_ns": self.exposed_ns,
            "tokens": self.tokens,
            "failures": list(self.failures),
        }


@dataclass(frozen=True)
class SweepView:
    """Everything a sweep's table and figure show."""

    axes: tuple[str, ...]  # the first is batch or trace
    rows: tuple[SweepRow, ...]
    title: str = "sweep"  # the model, the device and the grid

    @property
    def measurable(self) -> bool:
        return any(r.measurable for r in self.rows)

    @property
    def complete(self) -> bool:
        return bool(self.rows) and all(r.status == DONE for r in self.rows)

    def series(self) -> dict[str, list[SweepRow]]:
        """The rows by the values of every axis but the first: one line per option in the figure."""
        out: dict[str, list[SweepRow]] = {}
        for r in self.rows:
            name = " ".join(f"{k}={v}" for k, v in list(r.key.items())[1:]) or "compare"
            out.setdefault(name, []).append(r)
        return out

    def failures(self) -> list[str]:
        """One line per point whose token check failed or that could not run."""
        return [f"{r.label}: {f}" for r in self.rows for f in r.failures]

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "axes": list(self.axes),
            "complete": self.complete,
            "rows": [r.to_dict() for r in self.rows],
        }


def _row(p: SweepPoint) -> SweepRow:
    run = p.run
    failures = (p.error,) if p.status == FAILED and p.error else ()
    if run is None or not run.paths:
        return SweepRow(p.key, p.label, p.status, None, False, failures=failures)
    config = run.trace.get("config") or {}
    batch = config.get("max_num_seqs") if isinstance(config.get("max_num_seqs"), int) else None
    try:
        view = run.view(run.window)
    except InputError as e:
        return SweepRow(p.key, p.label, p.status, batch, run.on_gpu, failures=(*failures, str(e)))
    busy = {name: m.gpu_busy for name, m in view.paths.items()}
    exposed = {name: m.bubble_ns.mean if m.bubble_ns else None for name, m in view.paths.items()}
    checks = run.failures()
    if p.status == DONE and run.identity is None:
        checks.append("the paths' tokens were not compared")
    if checks:
        tokens = "differ" if run.identity is not None and not run.identity.identical else "check failed"
    elif run.identity is not None:
        tokens = "same"
    else:
        tokens = "not compared" if p.status == DONE else "not run"
    speedup = view.comparison.speedup if view.comparison else None
    measurable = any(m.measurable for m in view.paths.values())
    return SweepRow(p.key, p.label, p.status, batch, measurable, speedup, busy, exposed, tokens, (*failures, *checks))
