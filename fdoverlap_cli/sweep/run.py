"""Running a sweep: each point one comparison (a ReplaySession), the results file rewritten whole after each.

Resuming: a point the results file already holds as done, with the same identity (every option but the
command, and the trace's bytes), is kept and not run again; a pending, incomplete or failed one runs. A
file holding a done point this grid does not have is another sweep: refused, so nothing measured is lost.
An interruption saves the point it stopped as incomplete (with what it measured) before it goes on up; an
engine error at a point marks it failed and the sweep goes on. Every write is atomic (fileio) with the stop
signals held, so the file is always a whole sweep file.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fdoverlap_cli import stop_signals
from fdoverlap_cli.errors import FdoError, InputError, OptionError
from fdoverlap_cli.session import Progress, ReplaySession
from fdoverlap_cli.sweep.grid import Axis, Point
from fdoverlap_cli.sweep.record import DONE, FAILED, INCOMPLETE, PENDING, SweepPoint, SweepResult

GRID_PHASE = "points"


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep measures: its axes (the first: batch or trace), its points in grid order, its command."""

    axes: Sequence[Axis]
    points: Sequence[Point]
    command: tuple[str, ...] = ()


def prepare(plan: SweepPlan, out: Path, fresh: bool = False) -> tuple[SweepResult, int]:
    """The sweep's record, every point checked (its trace loaded, its model's options) before any runs:
    pending, or done where `out` already holds the same measurement. Returns it and the points kept."""
    ids = [p.identity(ReplaySession(p.config).trace_sha256) for p in plan.points]
    kept: dict[str, SweepPoint] = {}
    if not fresh and os.fspath(out) != "-" and out.is_file() and out.stat().st_size:
        old = SweepResult.load(out)
        kept = {p.id: p for p in old.points if p.status == DONE}
        other = next((p for p in kept.values() if p.id not in ids), None)
        if other is not None:
            raise InputError(
                str(out),
                f"holds point '{other.label}', measured with other options than this sweep's points: give "
                "another -o, or --fresh to measure anew",
            )
    points = [
        kept.get(i) or SweepPoint(i, dict(p.key), p.label, PENDING) for i, p in zip(ids, plan.points, strict=True)
    ]
    for point, p in zip(points, plan.points, strict=True):
        point.key, point.label = dict(p.key), p.label  # the names this grid gives them
    sweep = SweepResult(list(plan.command), [a.to_dict() for a in plan.axes], points)
    return sweep, sum(p.status == DONE for p in points)


def _save(sweep: SweepResult, out: Path) -> None:
    with stop_signals.held():  # a signal must not cut the write short (it is delivered right after)
        sweep.save(out)


def _finish(point: SweepPoint, session: ReplaySession, status: str, error: str | None = None) -> None:
    run = session.result()
    point.run = run if run.paths else None
    point.status = INCOMPLETE if status == DONE and not run.complete else status
    point.error = error


def run_sweep(sweep: SweepResult, plan: SweepPlan, out: Path, progress: Progress | None = None) -> SweepResult:
    """Run every point of `sweep` that is not done, saving `sweep` to `out` before the first and after each."""
    say: Any = progress or (lambda *_: None)
    total = len(sweep.points)
    _save(sweep, out)
    for i, (point, p) in enumerate(zip(sweep.points, plan.points, strict=True)):
        done = sum(q.status == DONE for q in sweep.points)
        if point.status == DONE:
            continue
        say(GRID_PHASE, done, total, f"point {i + 1}/{total}: {point.label}")
        session = ReplaySession(p.config)
        try:
            session.run(progress)
        except (OptionError, InputError):  # the options cannot run here: every point would fail the same way
            _finish(point, session, INCOMPLETE)
            _save(sweep, out)
            raise
        except FdoError as e:  # this point failed (an op, a check of the engine's): the others still run
            _finish(point, session, FAILED, str(e))
        except BaseException:  # an interruption: what the point measured is kept, marked incomplete
            _finish(point, session, INCOMPLETE)
            _save(sweep, out)
            raise
        else:
            _finish(point, session, DONE)
        _save(sweep, out)
        del session
        gc.collect()  # the point's model, caches and graphs go before the next point allocates its own
    say(GRID_PHASE, total, total, None)
    return sweep
