"""Rich rendering of an Nsight Systems analysis (`fdoverlap analyze`, `fdoverlap profile`), and its JSON summary."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from fdoverlap_cli.measure.nsys_analysis import Agreement, NsysAnalysis, PathReport
from fdoverlap_cli.report.cells import change, value

TOP_RANGES = 20


def _header(a: NsysAnalysis, console: Console) -> None:
    console.print(f"[b]{a.file}[/b]: {a.product or 'Nsight Systems'} · export schema {a.schema_version}")
    for line in a.warnings:
        console.print(f"[yellow]warning:[/yellow] {line}")


def _ranges(a: NsysAnalysis, console: Console) -> None:
    if not a.ranges:
        console.print("NVTX ranges: none")
        return
    table = Table(title="NVTX ranges", title_justify="left", show_edge=False, header_style="bold")
    for column in ("domain", "range"):
        table.add_column(column)
    for column in ("count", "total", "mean"):
        table.add_column(column, justify="right")
    for r in a.ranges[:TOP_RANGES]:
        table.add_row(
            r.domain, r.name, value(r.count, "num"), value(r.total_ns, "ms"), value(r.total_ns / r.count, "us")
        )
    console.print(table)
    if len(a.ranges) > TOP_RANGES:
        console.print(f"[dim]… and {len(a.ranges) - TOP_RANGES} more (all of them in --json)[/dim]")


def _gpu(a: NsysAnalysis, console: Console) -> None:
    k, g, c = a.kernels, a.gpu, a.copies
    console.print(
        f"[b]GPU[/b]: {k.count:,} kernels ({value(k.total_ns, 'ms')}"
        + (f", {k.instrumentation:,} of them the engine's timing kernels" if k.instrumentation else "")
        + f") · busy {value(g.busy, 'pct')} of the {g.window} ({value(g.window_ns, 'ms')}), "
        f"{value(g.busy_while_active, 'pct')} from its first to its last record"
    )
    if k.top:
        table = Table(title="top kernels", title_justify="left", show_edge=False, header_style="bold")
        table.add_column("kernel", overflow="ellipsis", max_width=80)
        for column in ("count", "total", "mean"):
            table.add_column(column, justify="right")
        for name, count, total in k.top:
            table.add_row(name, value(count, "num"), value(total, "ms"), value(total / count, "us"))
        console.print(table)
    by_kind = " · ".join(f"{kind} {n:,}" for kind, n in c.by_kind().items())
    by_dst = " · ".join(f"{dst} {n:,}" for dst, n in c.by_destination().items())
    console.print(f"[b]memory copies[/b] by kind: {by_kind}; by destination: {by_dst}")
    pageable = c.pageable_dtoh()
    if pageable["count"]:
        console.print(
            f"[yellow]{pageable['count']:,} device-to-host copies into pageable memory[/yellow] "
            f"({value(pageable['bytes'], 'bytes')}, {value(pageable['total_ns'], 'ms')}): CUDA completes them "
            "before returning, so they block the host and cannot overlap; copy into pinned buffers"
        )


_PATH_ROWS = (  # label, how to read it from a PathReport, unit
    ("measured steps", lambda p: p.metrics.steps, "num"),
    ("wall time", lambda p: p.metrics.wall_ns, "ms"),
    ("hidden (copy ∪ save)", lambda p: p.metrics.hidden, "pct"),
    ("hidden p50 / step", lambda p: p.metrics.hidden_per_step.p50, "pct"),
    ("hidden p10 / step", lambda p: p.metrics.hidden_per_step.p10, "pct"),
    ("hidden min / step", lambda p: p.metrics.hidden_per_step.min, "pct"),
    ("hidden work (waits out of S_k)", lambda p: p.metrics.hidden_work, "pct"),
    ("bubble (mean)", lambda p: p.metrics.bubble_ns.mean, "us"),
    ("GPU busy", lambda p: p.metrics.gpu_busy, "pct"),
    ("GPU busy, kernels only", lambda p: p.kernel_busy, "pct"),
    ("compute |C_k| (mean)", lambda p: p.compute_mean_ns, "us"),
    ("step time (mean)", lambda p: p.metrics.step_time_ns.mean, "us"),
    ("TPOT (mean)", lambda p: p.metrics.tpot_ns.mean, "us"),
    ("limit Σ max(G, B)", lambda p: p.metrics.limit_ns, "ms"),
    ("kernels in C_k", lambda p: p.work["compute_kernels"]["count"], "num"),
    ("DtoH copies in D_k", lambda p: p.work["dtoh_copies"]["count"], "num"),
    ("host waits", lambda p: p.work["waits"]["count"], "num"),
)


def _paths(a: NsysAnalysis, console: Console) -> None:
    if a.unavailable is not None:
        console.print(f"[b]per-step metrics[/b]: not available: {a.unavailable}")
        return
    names = list(a.paths)
    both = {"sync", "overlap"} <= set(names)
    table = Table(title="per step (fdoverlap)", title_justify="left", show_edge=False, header_style="bold")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    if both:
        table.add_column("change", justify="right")
    for label, read, unit in _PATH_ROWS:
        values = [read(a.paths[n]) for n in names]
        cells = [value(v, unit) for v in values]
        if both:
            cells.append("" if unit == "num" else change(read(a.paths["sync"]), read(a.paths["overlap"]), unit))
        table.add_row(label, *cells)
    console.print(table)
    if a.comparison:
        c = a.comparison
        console.print(
            f"speedup {value(c.speedup, 'num')}× · overlap efficiency {value(c.overlap_efficiency, 'pct')} "
            f"of the limit ({value(c.limit_ns, 'ms')})"
        )
    for name, p in a.paths.items():
        _path_work(name, p, console)


def _path_work(name: str, p: PathReport, console: Console) -> None:
    w = p.work
    extra = [
        f"{w[key]['count']:,} {label}"
        for key, label in (
            ("instrumentation_kernels", "timing kernels"),
            ("insert_work", "GPU records in insert_tasks"),
            ("other_gpu_work", "other GPU records"),
        )
        if w[key]["count"]
    ]
    if w["idle_iterations"]:
        extra.append(f"{w['idle_iterations']:,} idle iterations")
    if extra:
        console.print(f"[dim]{name}: not in C_k or D_k: {', '.join(extra)}[/dim]")


def _verdict(row: Agreement) -> str:
    if row.agrees is None:
        return "[dim]no target[/dim]" if row.target is None else "[dim]–[/dim]"
    return "[green]agrees[/green]" if row.agrees else "[red]differs[/red]"


_AGREEMENT_UNITS = {"hidden": "pct", "compute_mean_ns": "us", "bubble_mean_ns": "us", "gpu_busy": "pct"}
_AGREEMENT_LABELS = {
    "hidden": "hidden fraction",
    "compute_mean_ns": "compute |C_k| (mean)",
    "bubble_mean_ns": "bubble (mean)",
    "gpu_busy": "GPU busy",
}


def _against(a: NsysAnalysis, console: Console) -> None:
    if not a.against:
        return
    table = Table(
        title=f"nsys against the tool's own timing ({a.against_file})",
        title_justify="left",
        show_edge=False,
        header_style="bold",
    )
    table.add_column("path")
    table.add_column("quantity")
    for column in ("tool", "nsys", "difference", "target", ""):
        table.add_column(column, justify="right")
    for r in a.against:
        unit = _AGREEMENT_UNITS[r.quantity]
        if r.measure == "points":
            diff = "–" if r.difference is None else f"{100 * r.difference:+.2f} pt"
            target = "" if r.target is None else f"±{100 * r.target:.0f} pt"
        else:
            diff = "–" if r.difference is None else f"{100 * r.difference:+.1f}%"
            target = "" if r.target is None else f"±{100 * r.target:.0f}%"
        table.add_row(
            r.path,
            _AGREEMENT_LABELS[r.quantity],
            value(r.tool, unit),
            value(r.nsys, unit),
            diff,
            target,
            _verdict(r),
        )
    console.print(table)


def print_analysis(analysis: NsysAnalysis, console: Console | None = None) -> None:
    """The whole report: source, NVTX ranges, GPU and copies, per-step metrics, the agreement, notes."""
    console = console or Console()
    _header(analysis, console)
    _ranges(analysis, console)
    _gpu(analysis, console)
    _paths(analysis, console)
    _against(analysis, console)
    for note in analysis.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def print_warnings(analysis: NsysAnalysis) -> None:
    """The warnings alone, on stderr (with --json, where stdout holds the JSON)."""
    console = Console(stderr=True)
    for line in analysis.warnings:
        console.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
