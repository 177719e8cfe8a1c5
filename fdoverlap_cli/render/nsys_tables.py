"""Rich rendering of an Nsight Systems analysis (`fdoverlap analyze`, `fdoverlap profile`), and its JSON summary."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fdoverlap_cli.measure import catalog
from fdoverlap_cli.nsys.analysis import NsysAnalysis, NsysPath
from fdoverlap_cli.nsys.crosscheck import Agreement, CrossCheck
from fdoverlap_cli.nsys.summary import TOP_KERNELS, Stats
from fdoverlap_cli.render.cells import comparison_line, difference, metric_rows, steps_line, value

TOP_RANGES = 20
# How nsys stats names each copy kind.
COPY_OPERATIONS = {
    "htod": "[CUDA memcpy Host-to-Device]",
    "dtoh": "[CUDA memcpy Device-to-Host]",
    "dtod": "[CUDA memcpy Device-to-Device]",
    "htoh": "[CUDA memcpy Host-to-Host]",
    "peer": "[CUDA memcpy Peer-to-Peer]",
}


def _header(a: NsysAnalysis, console: Console) -> None:
    console.print(f"[b]{a.file}[/b]: {a.product or 'Nsight Systems'} · export schema {a.schema_version}")
    for line in a.warnings:
        console.print(f"[yellow]warning:[/yellow] {line}")


# The columns of `nsys stats`'s summaries, times in ns as it prints them (sizes in MB of 10^6 bytes).
STATS_COLUMNS = ("Total", "Instances", "Avg", "Med", "Min", "Max", "StdDev")


def _stats_table(title: str, unit: str, name: str, *, share: bool, count: str = "Instances") -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
    if share:
        table.add_column("Time (%)", justify="right")
    for column in STATS_COLUMNS:
        table.add_column(count if column == "Instances" else f"{column} ({unit})", justify="right")
    table.add_column(name, overflow="ellipsis", max_width=80)
    return table


def _stats_cells(st: Stats, whole: int | None, *, scale: float = 1.0, digits: int = 0) -> list[str]:
    """Time (%) of `whole` (None: no share column), then total, count, mean, median, min, max, stddev: as
    nsys stats prints them, in units of `scale` with `digits` decimals (ns: mean, median, stddev with one)."""
    share = [] if whole is None else [f"{100 * st.total / whole:.1f}" if whole else "–"]

    def number(x: float, extra: int) -> str:
        return f"{x / scale:,.{digits + extra}f}"

    exact = [number(v, 0) for v in (st.total, st.min, st.max)]
    derived = [number(v, 1 if scale == 1.0 else 0) for v in (st.mean, st.median, st.stddev)]
    return [*share, exact[0], f"{st.count:,}", derived[0], derived[1], exact[1], exact[2], derived[2]]


def _print_whole(console: Console, table: Table) -> None:
    """A statistics table at its natural width, wider than the console if need be (nsys stats prints it so):
    a number is never cut to fit."""
    natural = console.measure(table, options=console.options.update_width(1000)).maximum
    if natural <= console.width:
        console.print(table)
        return
    wide = Console(
        file=console.file,
        width=natural,
        color_system=console.color_system,  # type: ignore[arg-type]
        force_terminal=console.is_terminal,
        no_color=console.no_color,
    )
    wide.print(table)


def _ranges(a: NsysAnalysis, console: Console) -> None:
    if not a.ranges:
        console.print("NVTX ranges: none")
        return
    whole = sum(r.total_ns for r in a.ranges)
    table = _stats_table("NVTX ranges (nvtx_sum)", "ns", "Range", share=True)
    for r in a.ranges[:TOP_RANGES]:
        table.add_row(*_stats_cells(r.time, whole), escape(f"{r.domain}:{r.name}"))
    _print_whole(console, table)
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
    graphs = a.graphs
    if graphs.records:
        console.print(
            f"[b]CUDA graphs[/b]: {graphs.records:,} launches traced as a whole ({value(graphs.records_ns, 'ms')}): "
            "their kernels are not in the export (nsys --cuda-graph-trace=node shows them)"
        )
    elif graphs.node_kernels:
        console.print(f"[b]CUDA graphs[/b]: {graphs.node_kernels:,} of the kernels ran inside graphs (traced per node)")
    if k.top:
        longest = f", the {TOP_KERNELS} longest" if len(k.top) == TOP_KERNELS else ""
        table = _stats_table(f"kernels (cuda_gpu_kern_sum{longest})", "ns", "Name", share=True)
        for name, stats in k.top:
            table.add_row(*_stats_cells(stats, k.total_ns), escape(name))
        _print_whole(console, table)
    if c.kinds:
        time = _stats_table("memory copies (cuda_gpu_mem_time_sum)", "ns", "Operation", share=True, count="Count")
        size = _stats_table("memory copies (cuda_gpu_mem_size_sum)", "MB", "Operation", share=False, count="Count")
        whole = sum(kind.time.total for kind in c.kinds)
        for kind in c.kinds:
            operation = COPY_OPERATIONS.get(kind.kind, kind.kind)
            time.add_row(*_stats_cells(kind.time, whole), operation)
            size.add_row(*_stats_cells(kind.size, None, scale=1e6, digits=3), operation)
        _print_whole(console, time)
        _print_whole(console, size)
    by_dst = " · ".join(f"{dst} {n:,}" for dst, n in c.by_destination().items())
    console.print(f"[b]memory copies[/b] by destination: {by_dst}")
    pageable = c.pageable_dtoh()
    if pageable["count"]:
        console.print(
            f"[yellow]{pageable['count']:,} device-to-host copies into pageable memory[/yellow] "
            f"({value(pageable['bytes'], 'bytes')}, {value(pageable['total_ns'], 'ms')}): CUDA completes them "
            "before returning, so they block the host and cannot overlap; copy into pinned buffers"
        )


def _paths(a: NsysAnalysis, console: Console) -> None:
    if a.unavailable is not None or a.derived is None:
        console.print(f"[b]per-step metrics[/b]: not available: {a.unavailable}")
        return
    names = list(a.paths)
    both = a.derived.comparison is not None
    title = f"per step (fdoverlap), {steps_line(a.derived)}"
    table = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    if both:
        table.add_column("change", justify="right")
    docs = {name: {"nsys": (d := p.to_dict()), "path": d["metrics"]} for name, p in a.paths.items()}
    rows, notes = metric_rows(catalog.rows(catalog.NSYS), docs, a.derived.comparison.changes if both else None)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if a.derived.comparison:
        console.print(comparison_line(a.derived.comparison))
    for name, p in a.paths.items():
        _path_work(name, p, console)


def _path_work(name: str, p: NsysPath, console: Console) -> None:
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


def _against(against: CrossCheck | None, console: Console) -> None:
    if not against:
        return
    table = Table(
        title=f"nsys against the tool's own timing ({against.file})",
        title_justify="left",
        show_edge=False,
        header_style="bold",
    )
    table.add_column("path")
    table.add_column("quantity")
    for column in ("tool", "nsys", "difference", "target", ""):
        table.add_column(column, justify="right")
    for r in against.rows:
        metric = catalog.path_metric(r.quantity)
        unit = metric.unit
        if r.measure == "points":
            diff = difference(r.difference, "pct")
            target = "" if r.target is None else f"±{100 * r.target:.0f} pt"
        elif r.measure == "time":
            diff = difference(r.difference, unit)
            target = f"±{100 * r.target:.0f}% or {value(r.floor_ns, unit)}"
        else:
            diff = difference(r.difference, "relative")
            target = "" if r.target is None else f"±{100 * r.target:.0f}%"
        table.add_row(
            r.path,
            metric.label,
            value(r.tool, unit),
            value(r.nsys, unit),
            diff,
            target,
            _verdict(r),
        )
    console.print(table)


def print_analysis(analysis: NsysAnalysis, against: CrossCheck | None = None, console: Console | None = None) -> None:
    """The whole analysis: source, NVTX ranges, GPU and copies, per-step metrics, the cross-check, notes."""
    console = console or Console()
    _header(analysis, console)
    _ranges(analysis, console)
    _gpu(analysis, console)
    _paths(analysis, console)
    _against(against, console)
    for note in analysis.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def print_warnings(analysis: NsysAnalysis) -> None:
    """The warnings alone, on stderr (with --json, where stdout holds the JSON)."""
    console = Console(stderr=True)
    for line in analysis.warnings:
        console.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
