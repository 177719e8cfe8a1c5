"""Cells shared by the renderers: a number in its unit, the change from sync to overlap, the steps shown.

One formatting rule for every number a command prints (tables, lines, legends):

- a time shows in its row's unit (the catalog's: ms for run-long totals, µs for per-step times; where one
  row shows several times, `row_unit` picks one for all of them from the largest), with at most four
  significant digits and never finer than 1 µs in ms or 0.1 µs in µs: the tool's timing is good to a
  microsecond or so (`2,894 ms`, `15.32 ms`, `679.1 µs`);
- a fraction is a percentage with one decimal (`99.8%`), a change of one in percentage points (`+1.2 pt`);
- a count is a whole number, any other number four significant digits (`1.112`);
- every number has thousands separators (`2,580`), and one that rounds to zero is `0` (never `-0.0`).
"""

from __future__ import annotations

from collections.abc import Iterable

from fdoverlap_cli.measure import catalog
from fdoverlap_cli.measure.derive import Change, Comparison, Derived

MISSING = "–"
NOT_MEASURABLE_ON_CPU = "not measurable on the CPU"
WITHIN_NOISE = "within noise"
_DETAIL = ("exposed.", "hidden_per_step.")  # rows a CPU run's one line leaves to their totals
_SCALE = {"ms": 1e6, "us": 1e3}
_SUFFIX = {"ms": " ms", "us": " µs"}
_FINEST = {"ms": 3, "us": 1}  # decimals: 1 µs in ms, 0.1 µs in µs


def _fixed(x: float, decimals: int, sign: str = "") -> str:
    """`x` with `decimals` decimals and thousands separators; 0 where it rounds to zero."""
    text = f"{x:{sign},.{decimals}f}"
    return "0" if float(text.replace(",", "")) == 0 else text


def _significant(x: float, finest: int) -> str:
    """`x` with four significant digits (fewer decimals where it has more digits), at most `finest` decimals."""
    a = abs(x)
    return _fixed(x, min(0 if a >= 1000 else 1 if a >= 100 else 2 if a >= 10 else 3, finest))


def value(x: float | None, unit: str) -> str:
    """`x` in `unit` (ms, us, pct, bytes or num; times in ns, fractions as 0..1) by the rule above; a dash
    when missing."""
    if x is None:
        return MISSING
    if unit in _SCALE:
        return _significant(x / _SCALE[unit], _FINEST[unit]) + _SUFFIX[unit]
    if unit == "pct":
        return _fixed(100 * x, 1) + "%"
    if unit == "bytes":
        return _significant(x / 2**20, 1) + " MiB" if x >= 2**20 else f"{x:,.0f} B"
    if float(x).is_integer():
        return f"{int(x):,}"
    return _significant(x, 3)


def difference(d: float | None, unit: str) -> str:
    """A signed difference by the same rule: a fraction's in percentage points, a time's in `unit` (ms or us),
    `relative` (a fraction of the first value) in percent; a dash when missing."""
    if d is None:
        return MISSING
    if unit == "pct":
        return _fixed(100 * d, 1, "+") + " pt"
    if unit == "relative":
        return _fixed(100 * d, 1, "+") + "%"
    text = value(d, unit)
    return text if text.startswith(("-", "0")) else "+" + text


def row_unit(times_ns: Iterable[float | None]) -> str:
    """The one unit of a row of times: ms when its largest is a millisecond or more, else µs."""
    largest = max((abs(t) for t in times_ns if t is not None), default=0)
    return "ms" if largest >= 1e6 else "us"


def change(c: Change, unit: str) -> str:
    """Overlap against sync: percentage points for a fraction, else relative; `within noise` when the paired
    per-step difference is noise (measure/noise.py); empty when it cannot be said."""
    sync, overlap = c.sync, c.overlap
    if sync is None or overlap is None:
        return ""
    if sync == overlap:
        return "same"
    if c.within_noise:
        return WITHIN_NOISE
    if unit == "pct":
        return difference(overlap - sync, "pct")
    return difference((overlap - sync) / sync, "relative") if sync else ""


def steps_line(view: Derived) -> str:
    """The steps every number covers, and the window asked for."""
    covered = "no measured step" if view.steps is None else f"steps {view.steps[0]}–{view.steps[1]}"
    return covered + (f" (window {view.window[0]}:{view.window[1]})" if view.window else "")


def comparison_line(comparison: Comparison) -> str:
    """Speedup and overlap efficiency, labelled as the catalog names them."""
    c = comparison.to_dict()
    speedup, efficiency = catalog.COMPARISON_METRICS
    noise = f" ({WITHIN_NOISE})" if comparison.speedup_within_noise else ""
    return (
        f"{speedup.label} {value(speedup.value(c), speedup.unit)}×{noise} · {efficiency.label} "
        f"{value(efficiency.value(c), efficiency.unit)} of the limit ({value(c['limit_ns'], 'ms')})"
    )


def not_measurable_line(where: str) -> str:
    """What a CPU run cannot measure, named as the catalog does (the per-stage and per-step rows by their
    total), in one line."""
    shown = [m for m in catalog.not_measurable(where) if not m.per_step and not m.key.startswith(_DETAIL)]
    labels = ", ".join(m.label for m in shown)
    return f"{NOT_MEASURABLE_ON_CPU} (every copy and wait is synchronous there): {labels}; null in the JSON"


def metric_rows(
    rows: Iterable[catalog.Metric],
    docs: dict[str, dict[str, dict]],
    changes: dict[str, Change] | None,
) -> tuple[list[list[str]], list[str]]:
    """The table rows of the catalog `rows`, one cell per path and the change when both paths ran, and the
    notes of the cells shown by construction. `docs`: path -> {source: its to_dict()}; `changes`: the
    comparison's, by key (None with one path). A row the catalog shows only where nonzero is left out
    where every path has 0 or nothing."""
    out, notes = [], []
    for m in rows:
        values = {name: m.value(d.get(m.source, {})) for name, d in docs.items()}
        if not m.shown_when_zero and not any(values.values()):
            continue
        cells = []
        for name, x in values.items():
            flag = m.by_construction
            if flag and x == 0 and docs[name].get(m.source, {}).get(flag[0]):
                cells.append(flag[1])
                note = f"{m.label}: {flag[1]}: {flag[2]}"
                if note not in notes:
                    notes.append(note)
            else:
                cells.append(value(x, m.unit))
        if changes is not None:  # beyond the path's own metrics only exact counts: nothing else says what noise is
            c = changes.get(m.key) if m.source == "path" else None
            if c is None and m.unit == "num":
                c = Change(values.get("sync"), values.get("overlap"))
            cells.append(change(c, m.unit) if c else "")
        out.append([m.label, *cells])
    return out, notes
