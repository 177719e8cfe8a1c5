"""An Nsight Systems analysis as a report to attach: GitHub markdown (the per-step table and the cross-check
against the tool's own timing, to paste) and one self-contained HTML page (everything `analyze` prints, and
the figure of the paths it attributed, inline as SVG).

Both are drawn from the blocks the terminal prints (`nsys_tables.analysis_parts`): the same rows and cells.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from fdoverlap_cli.measure.metrics import PathMetrics
from fdoverlap_cli.nsys.analysis import NsysAnalysis
from fdoverlap_cli.nsys.crosscheck import CrossCheck
from fdoverlap_cli.render import html, markdown
from fdoverlap_cli.render.blocks import Section
from fdoverlap_cli.render.cells import comparison_line, steps_line
from fdoverlap_cli.render.nsys_tables import AGAINST, GPU, HEADER, MARKERS, NOTES, PATHS, RANGES, analysis_parts

SHORT = (HEADER, PATHS, MARKERS, AGAINST, NOTES)  # what the markdown holds


def figure_title(a: NsysAnalysis) -> str:
    """Two lines: the export and its GPUs; the steps and the speedup."""
    gpus = f" · GPU {', '.join(a.gpu_names)}" if a.gpu_names else ""
    first = f"{PurePath(a.file).name}: {a.product or 'Nsight Systems'}{gpus}"
    if a.derived is None:
        return first
    second = comparison_line(a.derived.comparison) if a.derived.comparison else ", ".join(a.derived.paths)
    return f"{first}\n{steps_line(a.derived)} · {second}"


def drawable(a: NsysAnalysis) -> dict[str, tuple[PathMetrics, Any]]:
    """The attributed paths with measured steps, each with its metrics and spans: what the figure draws."""
    if a.derived is None:
        return {}
    spans, _ = a.timeline()
    return {name: (m, spans[name]) for name, m in a.derived.paths.items() if m.steps and name in spans}


def markdown_report(a: NsysAnalysis, against: CrossCheck | None = None) -> str:
    """The source, the per-step metrics side by side, the cross-check, the notes."""
    parts = analysis_parts(a, against)
    return markdown.document(
        " · ".join(figure_title(a).split("\n")), [Section("", [b for p in SHORT for b in parts[p]])]
    )


def html_report(a: NsysAnalysis, against: CrossCheck | None = None, figure_svg: str = "") -> str:
    """Everything analyze prints, by section, and the figure."""
    parts = analysis_parts(a, against)
    title, _, subtitle = figure_title(a).partition("\n")
    sections = [Section("Source", parts[HEADER]), Section("Per step", parts[PATHS])]
    if parts[MARKERS]:
        sections.append(Section("Steps found without NVTX", parts[MARKERS]))
    if figure_svg:
        sections.append(Section("Figure", svg=figure_svg))
    if parts[AGAINST]:
        sections.append(Section("Against the tool's own timing", parts[AGAINST]))
    sections += [Section("GPU, kernels and copies", parts[GPU]), Section("NVTX ranges", parts[RANGES])]
    if parts[NOTES]:
        sections.append(Section("Notes", parts[NOTES]))
    return html.document(title, subtitle, sections)
