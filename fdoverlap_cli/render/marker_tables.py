"""The steps found without NVTX as blocks (`analyze` of another engine's export, `--steps`, `--vs`).

The table's rows are the catalog's `markers` rows (measure/marker_catalog.py), in its order; the change
column of `--vs` follows render/cells.change (percentage points for a share, else relative; `within
noise` by measure/noise.py). Every output (terminal, markdown, HTML) draws these blocks.
"""

from __future__ import annotations

from rich.console import Console

from fdoverlap_cli.measure.derive import Change
from fdoverlap_cli.nsys.analysis import NsysVersus
from fdoverlap_cli.nsys.markers import MarkerSteps
from fdoverlap_cli.nsys.markers.candidates import TIE
from fdoverlap_cli.nsys.markers.versus import MarkerComparison, rows
from fdoverlap_cli.render.blocks import BOLD, DIM, Block, Column, Table, note, table, text, to_console, warning
from fdoverlap_cli.render.cells import change, value

TOP_CANDIDATES = 6


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def choice_line(m: MarkerSteps, prefix: str = "") -> Block:
    """Which marker made the steps, how it was chosen, and how regular they are."""
    c = m.choice
    if c is None:
        return text(prefix, ("steps without NVTX", BOLD), f": not found: {m.unavailable}")
    r = c.regularity
    how = "chosen automatically" if c.chosen == "automatic" else "given with --steps"
    steps = f"{m.run.steps:,} steps" if m.run else "no step"
    return text(
        prefix,
        "steps found without NVTX: marker ",
        (c.spec, BOLD),
        f" ({how}): {c.events:,} occurrences, {c.boundaries:,} boundaries, {steps} (process {c.process}); "
        f"regularity: median period {value(r.median_period_ns, 'us')}, cv {_ratio(r.cv)}, robust cv "
        f"{_ratio(r.robust_cv)}"
        + (f"; {c.sampler_like_kernels:,} sampler-like kernels" if c.sampler_like_kernels else ""),
    )


def _candidates(m: MarkerSteps) -> list[Block]:
    if m.choice is None or not m.choice.candidates:
        return []
    tried = [x for x in m.choice.candidates if x.tried]
    shown = [
        f"{x.spec} ({x.boundaries:,} boundaries, fit {'–' if x.score is None else f'{x.score:.3f}'})"
        for x in tried[:TOP_CANDIDATES]
    ]
    more = len(tried) - TOP_CANDIDATES
    tail = f"; {more} more" if more > 0 else ""
    out = [text("candidates, best first: " + "; ".join(shown) + tail, style=DIM)]
    skipped = [x.spec for x in m.choice.candidates if not x.tried]
    if skipped:
        out.append(text(f"not tried (the copy fits within {TIE} of a perfect fit): " + ", ".join(skipped), style=DIM))
    return out


def marker_rows(docs: list[dict], changes: MarkerComparison | None = None) -> list[list[str]]:
    """One row per catalog row of the marker table: a cell per export (its RunSummary.to_dict()), then the change
    when there are two. A row shown only where nonzero is left out where every export has 0 or nothing."""
    out = []
    for m in rows():
        values = [m.value(d) for d in docs]
        if not m.shown_when_zero and not any(values):
            continue
        cells = [value(x, m.unit) for x in values]
        if changes is not None:
            c = changes.changes.get(m.key)
            cells.append(change(Change(c.a, c.b, c.within_noise), m.unit) if c else "")
        out.append([m.label, *cells])
    return out


def _repeats(m: MarkerSteps, prefix: str = "") -> list[Block]:
    out: list[Block] = []
    for x in m.run.repeats if m.run else ():
        size = f", {value(x.bytes_per_step, 'bytes')}" if x.bytes_per_step is not None else ""
        out.append(
            text(
                f"{prefix}every step: {x.what} {x.name}: {x.count_per_step:.2f} per step{size}, "
                f"{value(x.ns_per_step, 'us')} ({x.steps:,} of {m.run.steps:,} steps)"
            )
        )
    return out


def marker_table(m: MarkerSteps) -> Table | None:
    """The per-step table of one export's steps found without NVTX; None without steps."""
    if m.run is None:
        return None
    columns = [Column(""), Column("value", right=True)]
    return table(columns, marker_rows([m.run.to_dict()]), title="per step, steps found without NVTX", name="markers")


def marker_blocks(m: MarkerSteps) -> list[Block]:
    """The marker chosen, the per-step table (over all steps found), what repeats every step, the notes."""
    shown = marker_table(m)
    out = [choice_line(m), *_candidates(m)]
    if shown is None:
        return out
    return [*out, shown, *_repeats(m), *(note(n) for n in m.notes)]


def versus_blocks(v: NsysVersus) -> list[Block]:
    """`analyze A --vs B`: each export's marker line, the marker table side by side with the change, the notes."""
    pair = (("A", v.a), ("B", v.b))
    out: list[Block] = []
    for name, a in pair:
        out.append(text((name, BOLD), f": {a.file}"))
        out += [warning(f"{name}: {line}") for line in a.warnings]
        out.append(choice_line(a.markers, "  "))
    if v.comparison.unavailable is not None:
        return [*out, text(("per step, A against B", BOLD), f": not available: {v.comparison.unavailable}")]
    columns = [Column(""), *(Column(c, right=True) for c in ("A", "B", "change"))]
    docs = [a.markers.run.to_dict() for _, a in pair]
    title = "per step, steps found without NVTX: A against B"
    out.append(table(columns, marker_rows(docs, v.comparison), title=title, name="markers-versus"))
    out.append(
        text(
            "change: B against A, points for a share; 'within noise' where step i of A against step i of B "
            "cannot tell them apart (measure/noise.py)",
            style=DIM,
        )
    )
    for name, a in pair:
        out += _repeats(a.markers, f"{name}: ")
        out += [note(f"{name}: {n}") for n in a.markers.notes]
    return out


def print_versus(v: NsysVersus, console: Console | None = None) -> None:
    """`analyze A --vs B` on a terminal."""
    to_console(versus_blocks(v), console)
