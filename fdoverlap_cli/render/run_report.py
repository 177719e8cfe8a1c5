"""A run as a report to attach to a pull request: GitHub markdown (the summary table and the token check, to
paste) and one self-contained HTML page (that, the figure inline as SVG, the per-step tables, the trace, the
environment, the options and the command line).

Both are drawn from the blocks the terminal prints (`run_tables.run_blocks`) and the run's derived view:
the same rows, labels and cells as `compare` and `report` show for the same run and window.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from fdoverlap_cli.measure import catalog
from fdoverlap_cli.measure.derive import Derived
from fdoverlap_cli.measure.metrics import PathMetrics
from fdoverlap_cli.measure.schema import EXPOSED
from fdoverlap_cli.render import html, markdown
from fdoverlap_cli.render.blocks import Block, Column, Section, Table, table, text
from fdoverlap_cli.render.cells import MISSING, NOT_MEASURABLE_ON_CPU, comparison_line, steps_line, value
from fdoverlap_cli.render.run_tables import check_lines, header_line, run_blocks
from fdoverlap_cli.results import RunResult


def figure_title(result: RunResult, view: Derived) -> str:
    """Two lines: the trace, the model and the device; the steps and the speedup (or why there is none)."""
    model, env = result.model, result.environment
    device = f"GPU {(env.get('paddle') or {}).get('gpu_name')}" if result.on_gpu else f"device {env.get('device')}"
    first = (
        f"{PurePath(str(result.trace['file'])).name}: {value(result.trace['requests'], 'num')} requests · model "
        f"{model['name']} ({model['num_layers']} layers, {model['dtype']}) · {device}"
    )
    measurable = any(m.measurable for m in view.paths.values())
    if view.comparison is not None and measurable:
        second = comparison_line(view.comparison)
    elif view.comparison is not None:
        second = f"speedup {NOT_MEASURABLE_ON_CPU}" if not result.on_gpu else "speedup not measured (no GPU timestamps)"
    else:
        second = ", ".join(result.paths)
    return f"{first}\n{steps_line(view)} · {second}"


def drawable(result: RunResult, view: Derived) -> dict[str, tuple[PathMetrics, Any]]:
    """The paths with measured steps, each with its metrics and spans: what the figure draws."""
    return {name: (m, result.paths[name].spans()) for name, m in view.paths.items() if m.steps}


def markdown_report(result: RunResult, view: Derived) -> str:
    """The summary table, the speedup (or what cannot be measured), the token check and the notes."""
    return markdown.document(
        " · ".join(figure_title(result, view).split("\n")), [Section("", run_blocks(result, view))]
    )


def _cell(x: float | None, unit: str) -> str:
    return MISSING if x is None or (isinstance(x, float) and math.isnan(x)) else value(x, unit)


def per_step_table(name: str, m: PathMetrics) -> Table:
    """One row per measured step of the path: the catalog's per-step series (the GPU's only where measured),
    the exposed host time by category where any step has some."""
    shown = [x for x in catalog.METRICS if catalog.STEPS in x.where and (m.measurable or not x.gpu)]
    columns, series = [Column("step", right=True)], []
    for metric in shown:
        column = metric.key.removeprefix("per_step.")
        if column == "exposed_ns":
            for category, label in EXPOSED:
                values = m.per_step.exposed_ns.get(category)
                if values is not None and (values > 0).any():
                    columns.append(Column(f"exposed: {label}", right=True))
                    series.append((values, metric.unit))
            continue
        columns.append(Column(metric.label, right=True))
        series.append((m.per_step.series(column), metric.unit))
    rows = [
        [str(int(step)), *(_cell(float(values[i]), unit) for values, unit in series)]
        for i, step in enumerate(m.per_step.step)
    ]
    return table(columns, rows, title=f"{name}: {m.steps:,} steps", name="per-step")


def _flat(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, v in d.items():
        if isinstance(v, Mapping):
            out += _flat(v, f"{prefix}{key}.")
        else:
            out.append((prefix + key, MISSING if v is None else shlex.join(v) if _words(v) else str(v)))
    return out


def _words(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v) and bool(v)


def settings_table(d: Mapping[str, Any], title: str) -> Table:
    """A mapping as rows of `key.sub` and value (a list of words as one command line)."""
    return table(["", "value"], _flat(d), title=title, name="settings")


def token_check(result: RunResult) -> list[Block]:
    """The token identity between the paths, and each path's output stream against the trace, as a table."""
    lines: list[Block] = list(check_lines(result))
    if result.identity is None:
        lines.append(text("tokens: one path ran, nothing to compare"))
    rows = []
    for name, p in result.paths.items():
        check = p.reader.output_check if p.reader else None
        verdict = "–" if check is None else "as the trace says" if check.ok else "; ".join(check.problems[:3])
        tokens = sum(int(t.get("count", 0)) for t in p.tokens.values())
        rows.append([name, value(tokens, "num"), value(len(p.tokens), "num"), verdict])
    headers = [Column("path"), Column("tokens", right=True), Column("requests", right=True), Column("output stream")]
    lines.append(table(headers, rows, title="each path's output against the trace", name="tokens"))
    return lines


def html_report(result: RunResult, view: Derived, figure_svg: str = "") -> str:
    """The whole page: the summary, the figure, the token check, each path's per-step table, the trace, the
    environment, the options and the command line."""
    title, _, subtitle = figure_title(result, view).partition("\n")
    sections = [Section("Summary", run_blocks(result, view))]
    if figure_svg:
        sections.append(Section("Figure", svg=figure_svg))
    sections.append(Section("Token check", token_check(result)))
    for name, m in view.paths.items():
        if m.steps:
            sections.append(
                Section(f"Per step: {name} ({steps_line(view)})", [per_step_table(name, m)], collapsed=True)
            )
    trace = {k: v for k, v in result.trace.items() if k != "meta"}
    trace_blocks: list[Block] = [settings_table(trace, "trace")]
    if result.trace.get("meta"):
        trace_blocks.append(settings_table(result.trace["meta"], "how the trace was made"))
    sections.append(Section("Trace", trace_blocks))
    sections.append(
        Section(
            "Environment and device",
            [
                header_line(result),
                settings_table(result.environment, "environment"),
                settings_table(result.model, "model"),
            ],
        )
    )
    sections.append(Section("Options", [settings_table(result.options, "the replay's options")]))
    sections.append(Section("Command line", [text(shlex.join(result.command)), text(f"run recorded {result.created}")]))
    return html.document(title, subtitle, sections)
