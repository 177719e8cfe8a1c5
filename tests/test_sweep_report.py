"""`report sweep.json` --markdown (the sweep's table, cell for cell as the terminal prints it, and each point's
token check) and --html (one self-contained page: the table, the figure inline as SVG, each point, checked in
headless Chromium), built from the typed SweepView's blocks; the output rules; the figure of a GPU sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fdoverlap_cli.sweep.record import SweepRow, SweepView
from tests.conftest import run_cli
from tests.test_bad_input import fails
from tests.test_report_outputs import _browser, _self_contained, markdown_tables, parse, terminal_rows
from tests.test_sweep import GRID, SMALL

pytest.importorskip("matplotlib")
pytestmark = pytest.mark.usefixtures("keep_signal_handlers")


@pytest.fixture(scope="module")
def swept(tmp_path_factory, ops) -> Path:
    """A real CPU sweep of two points (batch 2 × copy stream on the compute stream or its own)."""
    out = tmp_path_factory.mktemp("sweep-report") / "sweep.json"
    proc = run_cli("sweep", *SMALL, *GRID, "-o", str(out))  # a process of its own: its command line is recorded
    assert proc.returncode == 0, proc.stderr
    return out


def _printed_table(out: str) -> tuple[list[str], list[list[str]]]:
    """The terminal's sweep table: its header (two lines joined per column) and its rows."""
    rows = terminal_rows(out)
    top, bottom, *body = rows
    return [f"{a} {b}".strip() for a, b in zip(top, bottom, strict=True)], body


def test_markdown_holds_the_terminals_table_and_every_token_check(swept):
    shown = run_cli("report", str(swept))
    md = run_cli("report", str(swept), "--markdown", "-")
    assert shown.returncode == 0 and md.returncode == 0, md.stderr
    assert md.stderr.startswith(shown.stdout)  # the table went to stderr, standard output holds the markdown
    header, body = _printed_table(shown.stdout)
    assert header == [
        "batch",
        "copy_stream",
        "speedup",
        "GPU busy sync → overlap",
        "exposed / step sync → overlap",
        "tokens",
    ]
    (table,) = markdown_tables(md.stdout)
    assert table == [header, *body] and [r[1] for r in body] == ["compute", "separate"]
    assert md.stdout.startswith("### sweep: model tiny (2 layers, float32) · device cpu")
    for point in ("batch=2 copy\\_stream=compute", "batch=2 copy\\_stream=separate"):
        assert f"**{point}**: **tokens identical**: " in md.stdout, point
    assert "not measurable on the CPU" in md.stdout


def test_html_report_of_a_sweep_opens_offline_in_chromium(swept, tmp_path):
    page = tmp_path / "sweep.html"
    shown = run_cli("report", str(swept))
    proc = run_cli("report", str(swept), "--html", str(page))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"wrote {page}")
    html = page.read_text()
    _self_contained(html)
    assert "default-src 'none'" in html

    dom = _browser(page, tmp_path, "--dump-dom").stdout
    rendered = parse(dom)
    assert len([t for t, _ in rendered.tags if t == "svg"]) == 1  # the sweep's figure, inline
    assert len([t for t, _ in rendered.tags if t == "path"]) > 40 and "<text" not in html  # text drawn as paths
    classes = [c for c, _ in rendered.tables]
    assert classes[:5] == ["sweep", "point", "tokens", "point", "tokens"] and "settings" in classes
    header, body = _printed_table(shown.stdout)
    sweep_table = [[" ".join(c.split()) for c in row] for row in rendered.tables[0][1]]
    assert sweep_table == [header, *body]  # the terminal's cells (its headers of two lines too)
    assert '<th class="num">GPU busy<br>\nsync → overlap</th>' in html
    points = [rows for c, rows in rendered.tables if c == "point"]
    assert [p[1:] for p in points] == [[row] for row in body]  # each point's row of the same table
    tokens = next(rows for c, rows in rendered.tables if c == "tokens")
    assert [r[0] for r in tokens[1:]] == ["sync", "overlap"] and tokens[1][3] == "as the trace says"
    for needle in ("Point batch=2 copy_stream=separate", "tokens identical", "fdoverlap sweep --device cpu"):
        assert needle in dom, needle
    assert "Environment and device" in dom and "compute, separate" in dom  # the grid's axes
    _self_contained(dom)


def test_a_failed_point_is_in_both_reports_and_exits_1(swept, tmp_path):
    doc = json.loads(swept.read_text())
    doc["points"][1].update(status="failed", error="the op library failed: boom", run=None)
    failed = tmp_path / "failed.json"
    failed.write_text(json.dumps(doc))
    page, md = tmp_path / "f.html", tmp_path / "f.md"
    proc = run_cli("report", str(failed), "--html", str(page), "--markdown", str(md))
    assert proc.returncode == 1, proc.stderr
    assert "1 point(s) failed" in proc.stderr and f"wrote {page}" in proc.stdout
    text = md.read_text()
    (table,) = markdown_tables(text)
    assert table[2][-1] == "not run (failed)"
    assert "**batch=2 copy\\_stream=separate**: **failed**: the op library failed: boom" in text
    assert "**failed:** batch=2 copy\\_stream=separate: the op library failed: boom" in text
    rendered = parse(page.read_text())
    assert [c for c, _ in rendered.tables][:4] == ["sweep", "point", "tokens", "point"]  # no run, no tokens table


def test_sweep_reports_follow_the_output_rules(capsys, swept, tmp_path):
    before = swept.read_bytes()
    for option in ("--html", "--markdown"):
        fails(capsys, ["report", swept, option, swept], f"{option} {swept}: is the same file as the run")
    out = tmp_path / "r.html"
    fails(capsys, ["report", swept, "--html", out, "--markdown", out], "each output needs a file of its own")
    fails(capsys, ["report", swept, "--markdown", "-", "--json"], "--json", "--markdown goes there")
    fails(capsys, ["report", swept, "--html", out, "--window", "1:2"], "--window", "sweep")
    assert swept.read_bytes() == before and not out.exists()


def _gpu_view() -> SweepView:
    """A measured sweep (as a GPU's would be): batch 4, 8 × copy stream."""
    rows = []
    for i, (batch, stream) in enumerate([(4, "compute"), (8, "compute"), (4, "separate"), (8, "separate")]):
        busy = {"sync": 0.7 + 0.01 * i, "overlap": 0.9 + 0.01 * i}
        exposed = {"sync": 300e3 + 1e3 * i, "overlap": 40e3 + 1e3 * i}
        key = {"batch": batch, "copy_stream": stream}
        label = f"batch={batch} copy_stream={stream}"
        rows.append(SweepRow(key, label, "done", batch, True, 1.2 + 0.05 * i, busy, exposed, "same"))
    return SweepView(("batch", "copy_stream"), tuple(rows), "model 8b (2 layers, bfloat16) · device gpu")


def test_a_measured_sweeps_cells_and_figure():
    from fdoverlap_cli.render import figures, markdown
    from fdoverlap_cli.render.sweep_figures import draw_sweep
    from fdoverlap_cli.render.sweep_tables import sweep_blocks

    view = _gpu_view()
    blocks = sweep_blocks(view)
    assert len(blocks) == 1  # measured, nothing failed: the table alone
    (table,) = markdown_tables(markdown.blocks(blocks))
    assert table[1] == ["4", "compute", "1.200×", "70.0% → 90.0%", "300.0 µs → 40.0 µs", "same"]
    assert table[4][2:4] == ["1.350×", "73.0% → 93.0%"]
    fig = draw_sweep(view)
    speedup, busy, exposed = fig.axes
    assert len(speedup.lines) == 2 + 1 and len(busy.lines) == len(exposed.lines) == 4  # + the line at 1×
    assert [t.get_text() for t in busy.get_legend().get_texts()][:2] == [
        "copy_stream=compute · overlap",
        "copy_stream=compute · sync",
    ]
    svg = figures.svg_of(fig)
    assert "<text" not in svg and svg.count("<path") > 100
