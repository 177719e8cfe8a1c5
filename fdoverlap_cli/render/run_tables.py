"""Rich rendering of a replay or comparison (`compare`, `replay`, `report`), its JSON summary, the progress bar.

What is shown is `RunResult.view(window)`'s: every row, key and the header cover the same steps. Rows,
labels and units come from measure/catalog.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fdoverlap_cli.measure import catalog
from fdoverlap_cli.measure.derive import Derived
from fdoverlap_cli.render.cells import comparison_line, metric_rows, not_measurable_line, steps_line, value
from fdoverlap_cli.results import RunResult

NO_TIMESTAMPS = "not measured: the run has no GPU timestamps (--no-timestamps), so no GPU-only number"


@contextlib.contextmanager
def progress(enabled: bool = True, console: Console | None = None) -> Iterator[Any]:
    """A callback(phase, done, total, note) for `ReplaySession.run`, on stderr. On a terminal: a bar per
    phase, each stopped when the phase is done, and the notes above them. Piped: the notes alone, one
    line each (the op library's first compile); no bars."""
    console = console or Console(stderr=True)
    if not enabled:
        yield None
        return
    if not console.is_terminal:

        def note_only(phase: str, done: int, total: int, note: str | None = None) -> None:
            if note:
                console.print(f"fdoverlap: {note}", highlight=False, markup=False, soft_wrap=True)

        yield note_only
        return
    bar = Progress(
        TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int, note: str | None = None) -> None:
        if note:
            bar.console.print(note, highlight=False, markup=False)
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total)
        bar.update(tasks[phase], completed=done, total=total)

    with bar:
        yield update


HAZARD_NOTES = {
    # option -> the note a run with it gets: the hazards the tool reproduces on purpose
    ("snapshot_preempted", False): "--no-snapshot-preempted reproduces a known hazard (fixed in FastDeploy by "
    "#6259): on the overlap path save(k) reads the preemption flags the inserts of step k+1 already set, so a "
    "preempted request's last token goes out as its marker and is lost; output tokens count what was emitted",
}


def hazard_notes(result: RunResult) -> list[str]:
    """One note per option of the run that reproduces a known hazard."""
    runner = result.options.get("runner") or {}
    return [note for (option, value), note in HAZARD_NOTES.items() if runner.get(option, not value) == value]


def _gpu_timed(view: Derived) -> bool:
    return any(m.measurable for m in view.paths.values())


def print_run(result: RunResult, view: Derived, console: Console | None = None) -> None:
    """The side-by-side table (one column per path, and the change when both ran), checks and notes."""
    console = console or Console()
    names = list(result.paths)
    model, env = result.model, result.environment
    gpu = f" ({escape(str((env.get('paddle') or {}).get('gpu_name')))})" if result.on_gpu else ""
    console.print(  # what came from a file is escaped: a name like "[/b]" is text, not markup
        f"[b]{escape(result.trace['file'])}[/b]: {value(result.trace['requests'], 'num')} requests, "
        f"{value(result.trace['steps'], 'num')} steps · model {escape(model['name'])} ({model['num_layers']} layers, "
        f"{escape(model['dtype'])}) · device {escape(str(env.get('device')))}{gpu}"
    )
    graphs = graph_line(result)
    if graphs:
        console.print(graphs)
    console.print(f"[b]{steps_line(view)}[/b]")
    table = Table(show_edge=False, header_style="bold")
    table.add_column("")
    for name in names:
        table.add_column(name + ("" if result.paths[name].complete else " (incomplete)"), justify="right")
    both = view.comparison is not None
    if both:
        table.add_column("change", justify="right")
    docs = {name: {"path": view.paths[name].to_dict(per_step=False)} for name in names}
    rows, notes = metric_rows(
        catalog.rows(catalog.RUN, on_gpu=_gpu_timed(view), sources=("path",)),
        docs,
        view.comparison.changes if view.comparison else None,
    )
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if view.comparison and _gpu_timed(view):
        console.print(comparison_line(view.comparison))
    elif not _gpu_timed(view):
        console.print(not_measurable_line(catalog.RUN) if not result.on_gpu else NO_TIMESTAMPS)
    for name, p in result.paths.items():
        if _gpu_timed(view) and p.clock:
            console.print(
                f"[dim]{name}: GPU clock aligned to the host within ±{value(p.clock.error_ns, 'us')}, "
                f"drift {value(p.clock.drift_ns, 'us')}[/dim]"
            )
    for line in _check_lines(result):
        console.print(line)
    for note in (*notes, *hazard_notes(result), *view.notes, *result.notes):
        console.print(f"[yellow]note:[/yellow] {escape(note)}")


def graph_line(result: RunResult) -> str | None:
    """The decode CUDA graphs the run captured (or that a GPU run had none); None on the CPU."""
    g = result.graphs
    if g is None:
        return "CUDA graphs: off (every forward launched from the host)" if result.on_gpu else None
    sizes = ", ".join(map(str, g.sizes))
    return (
        f"CUDA graphs: decode batch sizes {sizes} captured in {value(g.capture_ns, 'ms')}, "
        f"{value(g.memory_bytes, 'bytes')} (allocator reserved {value(g.reserved_before, 'bytes')} → "
        f"{value(g.reserved_after, 'bytes')}, allocated {value(g.allocated_before, 'bytes')} → "
        f"{value(g.allocated_after, 'bytes')})"
    )


def _check_lines(result: RunResult) -> list[str]:
    lines = []
    identity = result.identity
    if identity is not None:
        if identity.identical:
            lines.append(f"[green]tokens identical[/green]: {identity.tokens:,} tokens of {identity.requests} requests")
        else:
            d = identity.first_difference or {}
            lines.append(
                f"[red]tokens differ[/red]: request {escape(d['request'])}, token {d['token_index']} "
                f"(step {d['step']}): sync {escape(str(d.get('sync')))} vs overlap {escape(str(d.get('overlap')))}"
            )
    for name, p in result.paths.items():
        check = p.reader.output_check if p.reader else None
        if check and not check.ok:
            lines.append(f"[red]{name}: output check failed[/red]: {escape('; '.join(check.problems[:3]))}")
    return lines


def failed_checks(result: RunResult) -> list[str]:
    """One line per failed check (token identity between paths, each path's stream against the trace)."""
    failures = []
    if result.identity is not None and not result.identity.identical:
        d = result.identity.first_difference or {}
        failures.append(f"tokens differ first at request {d['request']}, token {d['token_index']} (step {d['step']})")
    for name, p in result.paths.items():
        check = p.reader.output_check if p.reader else None
        if check and not check.ok:
            failures.append(f"{name}: {check.problems[0]}")
    return failures


def summary_dict(result: RunResult, view: Derived) -> dict[str, Any]:
    """The printed summary as JSON: the steps, each path's metrics (catalog keys), the comparison, checks, notes."""
    derived = view.to_dict()
    return {
        "trace": {k: result.trace[k] for k in ("file", "requests", "steps")},
        "model": result.model["name"],
        "device": result.environment.get("device"),
        "complete": result.complete,
        "cuda_graphs": result.graphs.to_dict() if result.graphs else None,
        "window": derived["window"],
        "steps": derived["steps"],
        "paths": {
            name: {
                "complete": p.complete,
                "metrics": derived["paths"][name],
                "queue_full_waits": p.queue_full_waits,
                "clock": p.clock.__dict__ if p.clock else None,
                "output_check": p.reader.output_check.to_dict() if p.reader else None,
            }
            for name, p in result.paths.items()
        },
        "identity": result.identity.to_dict() if result.identity else None,
        "comparison": derived["comparison"],
        "notes": [*hazard_notes(result), *derived["notes"], *result.notes],
    }
