"""Rich rendering of a replay or comparison (`compare`, `replay`, `report`), its JSON summary, the progress bar.

What is shown is `RunResult.view(window)`'s: every row, key and the header cover the same steps. Rows,
labels and units come from measure/catalog.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fdoverlap_cli.measure import catalog
from fdoverlap_cli.measure.derive import Derived
from fdoverlap_cli.render.blocks import BOLD, DIM, FAIL, OK, Block, Column, Table, Text, note, table, text, to_console
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
    to_console(run_blocks(result, view), console)


def header_line(result: RunResult) -> Text:
    """The trace, the model and the device of the run."""
    model, env = result.model, result.environment
    gpu = f" ({(env.get('paddle') or {}).get('gpu_name')})" if result.on_gpu else ""
    return text(
        (str(result.trace["file"]), BOLD),
        f": {value(result.trace['requests'], 'num')} requests, {value(result.trace['steps'], 'num')} steps · model "
        f"{model['name']} ({model['num_layers']} layers, {model['dtype']}) · device {env.get('device')}{gpu} "
        f"· runner {result.runner}, output {result.output_ipc}",
    )


def summary_table(result: RunResult, view: Derived) -> tuple[Table, list[str]]:
    """The side-by-side table of the catalog's run rows, and the notes of its cells shown by construction."""
    names = list(result.paths)
    columns = [Column("")]
    columns += [Column(name + ("" if result.paths[name].complete else " (incomplete)"), right=True) for name in names]
    if view.comparison is not None:
        columns.append(Column("change", right=True))
    docs = {name: {"path": view.paths[name].to_dict(per_step=False)} for name in names}
    rows, notes = metric_rows(
        catalog.rows(catalog.RUN, on_gpu=_gpu_timed(view), sources=("path",)),
        docs,
        view.comparison.changes if view.comparison else None,
    )
    return table(columns, rows, name="summary"), notes


def measured_lines(result: RunResult, view: Derived) -> list[Text]:
    """The speedup and efficiency, or what a run without the GPU's timing cannot say."""
    if view.comparison and _gpu_timed(view):
        return [text(comparison_line(view.comparison))]
    if not _gpu_timed(view):
        return [text(not_measurable_line(catalog.RUN) if not result.on_gpu else NO_TIMESTAMPS)]
    return []


def run_blocks(result: RunResult, view: Derived) -> list[Block]:
    """What `compare`, `replay` and `report` print, as blocks: the header, the table, the checks, the notes."""
    out: list[Block] = [header_line(result)]
    out += [text(line) for line in (graph_line(result), warmup_line(result)) if line]
    out.append(text(steps_line(view), style=BOLD))
    summary, notes = summary_table(result, view)
    out += [summary, *measured_lines(result, view)]
    for name, p in result.paths.items():
        if _gpu_timed(view) and p.clock:
            line = f"{name}: GPU clock aligned to the host within ±{value(p.clock.error_ns, 'us')}, "
            out.append(text(line + f"drift {value(p.clock.drift_ns, 'us')}", style=DIM))
    out += check_lines(result)
    out += [note(n) for n in (*notes, *hazard_notes(result), *view.notes, *result.notes)]
    return out


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


def warmup_line(result: RunResult) -> str | None:
    """The token counts run eagerly once before the paths (cuBLAS's first call of each shape); None if none."""
    w = result.eager_warmup
    if w is None or not w.token_counts:
        return None
    counts = w.token_counts
    spread = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    return (
        f"eager warm-up: {len(counts)} token counts ({spread} tokens) run once before the paths, in "
        f"{value(w.warmup_ns, 'ms')}, so no measured step pays cuBLAS's first call of its GEMM shapes"
    )


def check_lines(result: RunResult) -> list[Text]:
    """The token identity between the paths, and each path's output stream checked against the trace."""
    lines = []
    identity = result.identity
    if identity is not None:
        if identity.identical:
            tokens = f": {identity.tokens:,} tokens of {identity.requests} requests"
            lines.append(text(("tokens identical", OK), tokens))
        else:
            d = identity.first_difference or {}
            lines.append(
                text(
                    ("tokens differ", FAIL),
                    f": request {d['request']}, token {d['token_index']} (step {d['step']}): sync {d.get('sync')} "
                    f"vs overlap {d.get('overlap')}",
                )
            )
    for name, p in result.paths.items():
        check = p.reader.output_check if p.reader else None
        if check and not check.ok:
            lines.append(text((f"{name}: output check failed", FAIL), f": {'; '.join(check.problems[:3])}"))
    return lines


def failed_checks(result: RunResult) -> list[str]:
    """One line per failed check (token identity between paths, each path's stream against the trace)."""
    return result.failures()


def summary_dict(result: RunResult, view: Derived) -> dict[str, Any]:
    """The printed summary as JSON: the steps, each path's metrics (catalog keys), the comparison, checks, notes."""
    derived = view.to_dict()
    return {
        "trace": {k: result.trace[k] for k in ("file", "requests", "steps")},
        "model": result.model["name"],
        "device": result.environment.get("device"),
        "runner": result.runner,
        "output_ipc": result.output_ipc,
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
