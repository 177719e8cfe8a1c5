"""Rich rendering of an Nsight Systems analysis (`fdoverlap analyze`, `fdoverlap profile`), and its JSON summary."""

from __future__ import annotations

from rich.console import Console

from fdoverlap_cli.measure import catalog
from fdoverlap_cli.nsys.analysis import NsysAnalysis, NsysPath
from fdoverlap_cli.nsys.crosscheck import Agreement, CrossCheck
from fdoverlap_cli.nsys.summary import TOP_KERNELS, Stats
from fdoverlap_cli.render.blocks import (
    BOLD,
    DIM,
    FAIL,
    OK,
    WARN,
    Block,
    Column,
    Table,
    Text,
    note,
    table,
    text,
    to_console,
    warning,
)
from fdoverlap_cli.render.cells import comparison_line, difference, metric_rows, steps_line, value
from fdoverlap_cli.render.marker_tables import marker_blocks

TOP_RANGES = 20
# How nsys stats names each copy kind.
COPY_OPERATIONS = {
    "htod": "[CUDA memcpy Host-to-Device]",
    "dtoh": "[CUDA memcpy Device-to-Host]",
    "dtod": "[CUDA memcpy Device-to-Device]",
    "htoh": "[CUDA memcpy Host-to-Host]",
    "peer": "[CUDA memcpy Peer-to-Peer]",
}


def _header(a: NsysAnalysis) -> list[Block]:
    head = text((a.file, BOLD), f": {a.product or 'Nsight Systems'} · export schema {a.schema_version}")
    return [head, *(warning(line) for line in a.warnings)]


# The columns of `nsys stats`'s summaries, times in ns as it prints them (sizes in MB of 10^6 bytes).
STATS_COLUMNS = ("Total", "Instances", "Avg", "Med", "Min", "Max", "StdDev")


def _stats_table(
    title: str, unit: str, name: str, rows: list[list[str]], *, share: bool, count: str = "Instances", note: str = ""
) -> Table:
    columns = [Column("Time (%)", right=True)] if share else []
    columns += [Column(count if c == "Instances" else f"{c} ({unit})", right=True) for c in STATS_COLUMNS]
    columns.append(Column(name, max_width=80))
    return table(columns, rows, title=title, whole=True, rows_note=note, name="stats")


def _stats_cells(st: Stats, whole: int | None, *, scale: float = 1.0, digits: int = 0) -> list[str]:
    """Time (%) of `whole` (None: no share column), then total, count, mean, median, min, max, stddev: as
    nsys stats prints them, in units of `scale` with `digits` decimals (ns: mean, median, stddev with one)."""
    share = [] if whole is None else [f"{100 * st.total / whole:.1f}" if whole else "–"]

    def number(x: float, extra: int) -> str:
        return f"{x / scale:,.{digits + extra}f}"

    exact = [number(v, 0) for v in (st.total, st.min, st.max)]
    derived = [number(v, 1 if scale == 1.0 else 0) for v in (st.mean, st.median, st.stddev)]
    return [*share, exact[0], f"{st.count:,}", derived[0], derived[1], exact[1], exact[2], derived[2]]


def _ranges(a: NsysAnalysis) -> list[Block]:
    if not a.ranges:
        return [text("NVTX ranges: none")]
    whole = sum(r.total_ns for r in a.ranges)
    rows = [[*_stats_cells(r.time, whole), f"{r.domain}:{r.name}"] for r in a.ranges[:TOP_RANGES]]
    more = len(a.ranges) - TOP_RANGES
    note = f"… and {more} more (all of them in --json)" if more > 0 else ""
    return [_stats_table("NVTX ranges (nvtx_sum)", "ns", "Range", rows, share=True, note=note)]


def _gpu(a: NsysAnalysis) -> list[Block]:
    k, g, c = a.kernels, a.gpu, a.copies
    out: list[Block] = [
        text(
            ("GPU", BOLD),
            f": {k.count:,} kernels ({value(k.total_ns, 'ms')}"
            + (f", {k.instrumentation:,} of them the engine's timing kernels" if k.instrumentation else "")
            + f") · busy {value(g.busy, 'pct')} of the {g.window} ({value(g.window_ns, 'ms')}), "
            f"{value(g.busy_while_active, 'pct')} from its first to its last record",
        )
    ]
    graphs = a.graphs
    if graphs.records:
        out.append(
            text(
                ("CUDA graphs", BOLD),
                f": {graphs.records:,} launches traced as a whole ({value(graphs.records_ns, 'ms')}): "
                "their kernels are not in the export (nsys --cuda-graph-trace=node shows them)",
            )
        )
    elif graphs.node_kernels:
        out.append(
            text(("CUDA graphs", BOLD), f": {graphs.node_kernels:,} of the kernels ran inside graphs (traced per node)")
        )
    if k.top:
        longest = f", the {TOP_KERNELS} longest" if len(k.top) == TOP_KERNELS else ""
        rows = [[*_stats_cells(stats, k.total_ns), name] for name, stats in k.top]
        out.append(_stats_table(f"kernels (cuda_gpu_kern_sum{longest})", "ns", "Name", rows, share=True))
    if c.kinds:
        whole = sum(kind.time.total for kind in c.kinds)
        operations = [COPY_OPERATIONS.get(kind.kind, kind.kind) for kind in c.kinds]
        times = [[*_stats_cells(kind.time, whole), op] for kind, op in zip(c.kinds, operations, strict=True)]
        sizes = [
            [*_stats_cells(kind.size, None, scale=1e6, digits=3), op]
            for kind, op in zip(c.kinds, operations, strict=True)
        ]
        out.append(
            _stats_table("memory copies (cuda_gpu_mem_time_sum)", "ns", "Operation", times, share=True, count="Count")
        )
        out.append(
            _stats_table("memory copies (cuda_gpu_mem_size_sum)", "MB", "Operation", sizes, share=False, count="Count")
        )
    by_dst = " · ".join(f"{dst} {n:,}" for dst, n in c.by_destination().items())
    out.append(text(("memory copies", BOLD), f" by destination: {by_dst}"))
    pageable = c.pageable_dtoh()
    if pageable["count"]:
        out.append(
            text(
                (f"{pageable['count']:,} device-to-host copies into pageable memory", WARN),
                f" ({value(pageable['bytes'], 'bytes')}, {value(pageable['total_ns'], 'ms')}): CUDA completes them "
                "before returning, so they block the host and cannot overlap; copy into pinned buffers",
            )
        )
    return out


def per_step_table(a: NsysAnalysis) -> tuple[Table, list[str]] | None:
    """The paths' per-step metrics side by side (the catalog's nsys rows), and the notes of its cells; None
    when the export has none."""
    if a.unavailable is not None or a.derived is None:
        return None
    both = a.derived.comparison is not None
    columns = [Column(""), *(Column(name, right=True) for name in a.paths)]
    if both:
        columns.append(Column("change", right=True))
    docs = {name: {"nsys": (d := p.to_dict()), "path": d["metrics"]} for name, p in a.paths.items()}
    rows, notes = metric_rows(catalog.rows(catalog.NSYS), docs, a.derived.comparison.changes if both else None)
    title = f"per step (fdoverlap), {steps_line(a.derived)}"
    return table(columns, rows, title=title, name="summary"), notes


def _paths(a: NsysAnalysis) -> list[Block]:
    shown = per_step_table(a)
    if shown is None:
        found = "; the steps found from the CUDA activity follow" if a.markers is not None else ""
        return [text(("per-step metrics", BOLD), f": not available: {a.unavailable}{found}")]
    summary, notes = shown
    out: list[Block] = [summary, *(note(n) for n in notes)]
    if a.derived is not None and a.derived.comparison:
        out.append(text(comparison_line(a.derived.comparison)))
    for name, p in a.paths.items():
        out += _path_work(name, p)
    return out


def _path_work(name: str, p: NsysPath) -> list[Block]:
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
    out: list[Block] = [text(f"{name}: not in C_k or D_k: {', '.join(extra)}", style=DIM)] if extra else []
    return out + _waited_for(name, p)


TOP_WAITS = 6  # rows of the "where the GPU waited" table (the JSON has kernel_idle.TOP_WAITED_FOR)
WHOLE_GRAPH_IDLE = (
    "traced as a whole (--cuda-graph-trace=graph), a graph replay is one record: a graph step's idle is only what "
    "lies outside its graph records (--cuda-graph-trace=node shows the gaps between a graph's kernels)"
)


def _waited_for(name: str, p: NsysPath) -> list[Block]:
    """The gaps of the kernels-only union by the call that ended them (nsys/kernel_idle.py), the longest first."""
    waits = p.kernel_idle.get("waited_for", [])[:TOP_WAITS]
    if not waits:
        return []
    rows = [
        [
            w["step_kind"],
            w["stage"],
            w["call"],
            f"{w['count']:,}",
            value(w["idle_ns"], "ms"),
            value(w["mean_ns"], "us"),
            value(w["share"], "pct"),
        ]
        for w in waits
    ]
    columns = [
        Column("step kind"),
        Column("stage"),
        Column("call"),
        *(Column(c, right=True) for c in ("gaps", "idle", "mean", "share of window")),
    ]
    whole_graphs = p.work["graph_records"]["count"] > 0
    return [
        table(
            columns,
            rows,
            title=f"where the GPU waited, kernels only ({name})",
            rows_note=WHOLE_GRAPH_IDLE if whole_graphs else "",
            whole=True,
            name="waited",
        )
    ]


def _verdict(row: Agreement) -> Text:
    if row.agrees is None:
        return text(("no target" if row.target is None else "–", DIM))
    return text(("agrees", OK)) if row.agrees else text(("differs", FAIL))


def against_table(against: CrossCheck) -> Table:
    """nsys against the tool's own timing of the same run, one row per path and quantity."""
    rows = []
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
        rows.append([r.path, metric.label, value(r.tool, unit), value(r.nsys, unit), diff, target, _verdict(r)])
    columns = [
        Column("path"),
        Column("quantity"),
        *(Column(c, right=True) for c in ("tool", "nsys", "difference", "target", "")),
    ]
    return table(columns, rows, title=f"nsys against the tool's own timing ({against.file})", name="against")


HEADER, RANGES, GPU, PATHS, MARKERS, AGAINST, NOTES = "header", "ranges", "gpu", "paths", "markers", "against", "notes"
PARTS = (HEADER, RANGES, GPU, PATHS, MARKERS, AGAINST, NOTES)


def analysis_parts(analysis: NsysAnalysis, against: CrossCheck | None = None) -> dict[str, list[Block]]:
    """What `analyze` shows, by part: the source, the NVTX ranges, the GPU and its copies, the per-step
    metrics, the steps found without NVTX, the cross-check, the notes."""
    return {
        HEADER: _header(analysis),
        RANGES: _ranges(analysis),
        GPU: _gpu(analysis),
        PATHS: _paths(analysis),
        MARKERS: marker_blocks(analysis.markers) if analysis.markers is not None else [],
        AGAINST: [against_table(against)] if against else [],
        NOTES: [note(n) for n in analysis.notes],
    }


def print_analysis(analysis: NsysAnalysis, against: CrossCheck | None = None, console: Console | None = None) -> None:
    """The whole analysis: source, NVTX ranges, GPU and copies, per-step metrics, the cross-check, notes."""
    parts = analysis_parts(analysis, against)
    to_console([b for part in PARTS for b in parts[part]], console)


def print_warnings(analysis: NsysAnalysis) -> None:
    """The warnings alone, on stderr (with --json, where stdout holds the JSON)."""
    to_console([warning(line) for line in analysis.warnings], Console(stderr=True))
