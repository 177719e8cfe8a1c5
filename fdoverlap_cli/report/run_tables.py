"""Rich rendering of replay and compare results, their JSON summary, and the progress bar."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fdoverlap_cli.report.cells import change, value
from fdoverlap_cli.results import PathResult, RunResult

STAGES = ("insert", "preprocess", "postprocess", "save")


@contextlib.contextmanager
def progress(enabled: bool = True) -> Iterator[Any]:
    """A callback(phase, done, total) drawing a progress bar on stderr (only on a terminal)."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total)
        bar.update(tasks[phase], completed=done, total=total)

    with bar:
        yield update


# --------------------------------------------------------------------------- formatting helpers


def _rows(p: PathResult, on_gpu: bool) -> dict[str, tuple[float | None, str]]:
    """Headline numbers of one path: name -> (value, kind of value); overlap metrics only from a GPU run."""
    m = p.metrics or {}
    stages = m.get("host_stages", {})
    rows: dict[str, tuple[float | None, str]] = {
        "executed steps": (p.stats.get("executed_steps"), "num"),
        "batch tokens": (p.stats.get("batch_tokens"), "num"),
        "output tokens": (m.get("tokens"), "num"),
        "wall time": (p.stats.get("wall_ns"), "ms"),
        "output tokens/s": (m.get("tokens_per_s"), "num"),
        "step time (mean)": ((m.get("step_time_ns") or {}).get("mean"), "us"),
        "TPOT (mean)": ((m.get("tpot_ns") or {}).get("mean"), "us"),
    }
    rows["host harness / decode step"] = (p.stats.get("harness_ns_per_decode_step"), "us")
    for stage in STAGES:
        st = stages.get(stage)
        rows[f"host {stage} / step"] = (st["total_ns"] / st["count"] if st and st["count"] else None, "us")
    if on_gpu and p.clock:
        rows.update(
            {
                "hidden (copy ∪ save)": (m.get("hidden"), "pct"),
                "hidden p50 / step": ((m.get("hidden_per_step") or {}).get("p50"), "pct"),
                "hidden p10 / step": ((m.get("hidden_per_step") or {}).get("p10"), "pct"),
                "hidden min / step": ((m.get("hidden_per_step") or {}).get("min"), "pct"),
                "host work hidden": (m.get("hidden_work"), "pct"),
                "bubble (mean)": ((m.get("bubble_ns") or {}).get("mean"), "us"),
                "GPU busy": (m.get("gpu_busy"), "pct"),
                "limit Σ max(G, B)": (m.get("limit_ns"), "ms"),
            }
        )
    return rows


# --------------------------------------------------------------------------- console


def print_run(result: RunResult, console: Console | None = None) -> None:
    """The side-by-side table (one column per path, and the change when both ran), checks and notes."""
    console = console or Console()
    names = list(result.paths)
    model = result.model
    console.print(
        f"[b]{result.trace['path']}[/b]: {result.trace['requests']} requests, {result.trace['steps']} steps · "
        f"model {model['name']} ({model['num_layers']} layers, {model['dtype']}) · "
        f"device {result.environment.get('device')}"
        + (f" ({result.environment['paddle'].get('gpu_name')})" if result.environment.get("device") == "gpu" else "")
    )
    table = Table(show_edge=False, header_style="bold")
    table.add_column("")
    for name in names:
        table.add_column(name + ("" if result.paths[name].complete else " (incomplete)"), justify="right")
    both = {"sync", "overlap"} <= set(names)
    if both:
        table.add_column("change", justify="right")
    on_gpu = result.environment.get("device") == "gpu"
    rows = {name: _rows(p, on_gpu) for name, p in result.paths.items()}
    for label in rows[names[0]] if names else ():
        kind = rows[names[0]][label][1]
        cells = [value(rows[n].get(label, (None, kind))[0], kind, digits=0) for n in names]
        if both:
            cells.append(change(rows["sync"][label][0], rows["overlap"].get(label, (None, kind))[0], kind))
        table.add_row(label, *cells)
    console.print(table)
    cmp = result.comparison
    if cmp and on_gpu:
        console.print(
            f"speedup {value(cmp.get('speedup'), 'num', 3)}× · "
            f"overlap efficiency {value(cmp.get('overlap_efficiency'), 'pct')} "
            f"of the limit ({value(cmp.get('limit_ns'), 'ms')})"
        )
    for name, p in result.paths.items():
        if on_gpu and p.clock:
            console.print(
                f"[dim]{name}: GPU clock aligned to the host within ±{value(p.clock.get('error_ns'), 'us')}, "
                f"drift {value(p.clock.get('drift_ns'), 'us')}[/dim]"
            )
    for line in _check_lines(result):
        console.print(line)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def _check_lines(result: RunResult) -> list[str]:
    lines = []
    check = result.check
    if check is not None:
        if check["identical"]:
            lines.append(f"[green]tokens identical[/green]: {check['tokens']:,} tokens of {check['requests']} requests")
        else:
            d = check["first_difference"]
            lines.append(
                f"[red]tokens differ[/red]: request {d['request']}, token {d['token_index']} (step {d['step']}): "
                f"sync {d.get('sync')} vs overlap {d.get('overlap')}"
            )
    for name, p in result.paths.items():
        rc = p.reader.get("check") if p.reader else None
        if rc and not rc["ok"]:
            lines.append(f"[red]{name}: output check failed[/red]: {'; '.join(rc['problems'][:3])}")
    return lines


def failed_checks(result: RunResult) -> list[str]:
    """One line per failed check (token identity between paths, each path's stream against the trace)."""
    failures = []
    if result.check is not None and not result.check["identical"]:
        d = result.check["first_difference"]
        failures.append(f"tokens differ first at request {d['request']}, token {d['token_index']} (step {d['step']})")
    for name, p in result.paths.items():
        rc = p.reader.get("check") if p.reader else None
        if rc and not rc["ok"]:
            failures.append(f"{name}: {rc['problems'][0]}")
    return failures


def summary_dict(result: RunResult) -> dict[str, Any]:
    """The printed summary as JSON: headline numbers per path, the comparison, checks and notes."""
    return {
        "trace": {k: result.trace[k] for k in ("path", "requests", "steps")},
        "model": result.model["name"],
        "device": result.environment.get("device"),
        "complete": result.complete,
        "paths": {
            name: {
                "complete": p.complete,
                "stats": p.stats,
                "clock": p.clock,
                "metrics": {k: v for k, v in (p.metrics or {}).items() if k != "per_step"},
                "output_check": (p.reader or {}).get("check"),
            }
            for name, p in result.paths.items()
        },
        "check": result.check,
        "comparison": result.comparison,
        "notes": result.notes,
    }
