"""The Gantt chart of a few steps of a path, for the run's figure (render/figures.py): the iterations, the host
stages with their waits hatched over them, and the GPU's work on each stream; and the legend of every colour."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fdoverlap_cli.measure.records import Kind, Span, SpanTable, Track

WIDTH_IN = 8.0  # the figure's width (inches): labels go into bars they fit in at that width
HOST_ROW_KINDS = (Kind.INSERT, Kind.PREPROCESS, Kind.SAVE, Kind.POSTPROCESS)
COLORS = {
    Kind.INSERT: "#9e9e9e",
    Kind.PREPROCESS: "#4caf50",
    Kind.SAVE: "#e53935",
    Kind.POSTPROCESS: "#8e24aa",
    Kind.COMPUTE: ("#1e88e5", "#64b5f6"),  # alternating by step, so neighbouring steps stay apart
    Kind.COPY: "#fb8c00",
    Kind.ITERATION: ("#cfd8dc", "#eceff1"),
}
ITERATION_ROW, HOST_ROW = "iteration", "host stages"
WAIT_EDGE = "#5d4037"


def _time_unit(width_ns: float) -> tuple[str, float]:
    return ("ms", 1e6) if width_ns > 20e6 else ("µs", 1e3)


def gantt_spans(spans: Sequence[Span] | SpanTable, steps: tuple[int, int]) -> tuple[list[Span], int, int]:
    """(spans, t0, t1): the spans overlapping [t0, t1), the time the chosen steps take (so save(k-1) shows
    inside iteration k)."""
    table = spans if isinstance(spans, SpanTable) else SpanTable.from_spans(spans)
    chosen = (table.step >= steps[0]) & (table.step <= steps[1])
    if not chosen.any():
        return [], 0, 0
    t0, t1 = int(table.start_ns[chosen].min()), int(table.end_ns[chosen].max())
    return table.select((table.end_ns > t0) & (table.start_ns < t1)).to_spans(), t0, t1


def rows_of(spans: Sequence[Span]) -> list[str]:
    """The chart's rows: the iterations, the host stages, then each GPU stream (the compute stream first)."""
    gpu = sorted({s.track for s in spans if s.kind in Kind.GPU}, key=lambda t: (t != Track.COMPUTE_STREAM, t))
    return [ITERATION_ROW, HOST_ROW, *gpu]


def _row_of(s: Span) -> str | None:
    if s.kind == Kind.ITERATION:
        return ITERATION_ROW
    if s.kind in HOST_ROW_KINDS:
        return HOST_ROW
    return s.track if s.kind in Kind.GPU else None


def _fits(label: str, width_ns: float, chart_ns: float, fontsize: float) -> bool:
    """Whether `label` fits in a bar `width_ns` wide of a chart `chart_ns` wide (the plot ~6.6 in of 8)."""
    bar_pt = width_ns / chart_ns * (WIDTH_IN - 1.4) * 72
    return len(label) * fontsize * 0.62 + 4 <= bar_pt


def gantt(
    ax: Any, name: str, shown: Sequence[Span], t0: int, steps: tuple[int, int], width_ns: int, note: str = ""
) -> None:
    """One path's chart of the steps `steps` on `ax`: `shown` its spans, from `t0`, `width_ns` wide."""
    end = t0 + width_ns
    unit, scale = _time_unit(width_ns)
    rows = rows_of(shown)
    y = {row: len(rows) - 1 - i for i, row in enumerate(rows)}
    for s in shown:
        row = _row_of(s)
        if row is None:
            continue
        color = COLORS[s.kind]
        if isinstance(color, tuple):
            color = color[s.step % 2]
        a, b = max(s.start_ns, t0), min(s.end_ns, end)  # clipped to the chart, so labels stay inside
        left, width = (a - t0) / scale, (b - a) / scale
        height = 0.55 if row == ITERATION_ROW else 0.75
        ax.barh(y[row], width, left=left, height=height, color=color, edgecolor="white", linewidth=0.5)
        labels = [f"iteration {s.step}", str(s.step)] if row == ITERATION_ROW else [str(s.step)]
        label = next((t for t in labels if _fits(t, b - a, width_ns, 8)), None)
        if label:
            dark = s.kind in (Kind.COMPUTE, Kind.SAVE, Kind.POSTPROCESS, Kind.PREPROCESS) and s.step % 2 == 0
            ax.text(
                left + width / 2,
                y[row],
                label,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
    for s in shown:  # waits on top of the host stages they interrupt
        if s.kind in Kind.WAITS:
            a, b = max(s.start_ns, t0), min(s.end_ns, end)
            ax.barh(
                y[HOST_ROW],
                (b - a) / scale,
                left=(a - t0) / scale,
                height=0.75,
                fill=False,
                hatch="////",
                edgecolor=WAIT_EDGE,
                lw=0,
            )
    ax.set_yticks([y[r] for r in rows], rows)
    ax.set_xlim(0, width_ns / scale)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(f"time since the first span of step {steps[0]} ({unit})")
    ax.set_title(f"{name}: steps {steps[0]}–{steps[1]} (labels: step number){note}", loc="left")
    ax.grid(axis="x", alpha=0.3)
    if not shown:
        ax.text(0.5, 0.5, "no spans in these steps", transform=ax.transAxes, ha="center", va="center")


def legend() -> tuple[list[Any], list[str]]:
    """Every colour of the Gantt charts: the host stages, the waits, the GPU work, the iterations (two shades:
    neighbouring steps)."""
    from matplotlib.patches import Patch

    handles: list[Any] = [Patch(color=COLORS[k]) for k in HOST_ROW_KINDS]
    labels = [str(k) for k in HOST_ROW_KINDS]
    handles.append(Patch(facecolor="white", edgecolor=WAIT_EDGE, hatch="////"))
    labels.append("wait (host blocked on the GPU)")
    for kind, label in ((Kind.COMPUTE, "compute C_k"), (Kind.ITERATION, "iteration")):
        handles.append(tuple(Patch(color=c) for c in COLORS[kind]))
        labels.append(f"{label} (two shades: alternate steps)")
    handles.append(Patch(color=COLORS[Kind.COPY]))
    labels.append("DtoH copy D_k")
    return handles, labels
