"""Reports to attach to a pull request: `report`/`analyze` --markdown (a GitHub table holding the numbers the
terminal prints), --html (one self-contained page, checked in headless Chromium), --svg; the output rules."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests.conftest import REPO, run_cli
from tests.test_bad_input import fails

pytest.importorskip("matplotlib")

NSYS_FIXTURE = REPO / "tests" / "fixtures" / "nsys" / "fdoverlap-small-2layers.sqlite"
pytestmark = pytest.mark.usefixtures("keep_signal_handlers")


class Tables(HTMLParser):
    """Every table of an HTML text: its class and rows of cell texts; and every element's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append((dict(attrs).get("class") or "", []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> Tables:
    p = Tables()
    p.feed(html)
    return p


def terminal_rows(out: str) -> list[list[str]]:
    """The rows of the first table the terminal printed (piped: `│` between cells, `┃` in the header)."""
    rows = []
    for line in out.splitlines():
        sep = "┃" if "┃" in line else "│" if "│" in line else None
        if sep:
            rows.append([c.strip() for c in line.split(sep)])
        elif rows and not line.startswith("━"):
            break
    return rows


def markdown_tables(text: str) -> list[list[list[str]]]:
    """The tables GitHub-flavoured markdown makes of `text` (markdown-it with tables, as GitHub renders)."""
    html = MarkdownIt("commonmark").enable("table").render(text)
    return [rows for _, rows in parse(html).tables]


@pytest.mark.parametrize("window", [None, "10:19"])
def test_markdown_is_a_github_table_of_the_terminals_numbers(cpu_run, window):
    extra = ["--window", window] if window else []
    shown = run_cli("report", str(cpu_run), *extra)
    md = run_cli("report", str(cpu_run), *extra, "--markdown", "-")
    assert shown.returncode == 0 and md.returncode == 0, md.stderr
    assert md.stderr.startswith(shown.stdout)  # the table went to stderr, standard output holds the markdown
    text = md.stdout
    header, delimiter = text.split("\n\n")[3].splitlines()[:2]
    assert header.count("|") == 5 and delimiter == "|---|---:|---:|---:|"
    (table,) = markdown_tables(text)
    assert len(table) == 1 + 15 and table[0] == ["", "sync", "overlap", "change"]
    assert table == terminal_rows(shown.stdout)  # every label and cell, as the terminal printed them
    assert ("steps 10–19 (window 10:19)" if window else "steps 0–144") in text
    assert "**tokens identical**: 1,518 tokens of 24 requests" in text
    assert "not measurable on the CPU" in text


def test_markdown_escapes_what_markdown_would_read():
    from fdoverlap_cli.render import markdown
    from fdoverlap_cli.render.blocks import BOLD, Column, table, text

    assert markdown.inline(text(("a|b_c*", BOLD), " [x](y) <i>")) == r"**a\|b\_c\*** \[x\](y) \<i\>"
    md = markdown.table(table([Column(""), Column("n", right=True)], [["x|y", "1"]]))
    assert markdown_tables(md) == [[["", "n"], ["x|y", "1"]]]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    setup = subprocess.run(["bash", str(REPO / "tools" / "test-deps.sh")], capture_output=True, text=True)
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = f"headless Chromium is not installed and tools/test-deps.sh could not install it: {setup.stderr[-300:]}"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _browser(page: Path, tmp_path: Path, *how: str) -> subprocess.CompletedProcess:
    """Open `page` in headless Chromium, with no network service it could reach and a profile of its own."""
    argv = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        *how,
        page.as_uri(),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _self_contained(html: str) -> None:
    """Nothing in the page is fetched: no script, stylesheet link, frame or object, no URL in src/href/style."""
    tags = parse(html).tags
    assert not [t for t, _ in tags if t in ("script", "link", "iframe", "object", "embed", "img")]
    for _, attrs in tags:
        for name, v in attrs.items():
            if name in ("src", "href", "xlink:href", "srcset", "action", "poster", "data"):
                assert v is None or v.startswith("#"), f"{name}={v!r}"
    assert not re.search(r"url\(\s*['\"]?(?!#)", html) and "@import" not in html
    assert not re.search(r"https?:", html), re.search(r".{40}https?:.{40}", html)


def test_html_report_opens_offline_in_chromium(cpu_run, tmp_path):
    page = tmp_path / "report.html"
    shown = run_cli("report", str(cpu_run))
    proc = run_cli("report", str(cpu_run), "--html", str(page))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"wrote {page}")
    html = page.read_text()
    _self_contained(html)
    assert "default-src 'none'" in html  # and the browser would refuse any request if there were one

    dom = _browser(page, tmp_path, "--dump-dom").stdout
    rendered = parse(dom)
    svgs = [a for t, a in rendered.tags if t == "svg"]
    assert len(svgs) == 1 and len([t for t, _ in rendered.tags if t == "path"]) > 100  # the figure, drawn
    tables = dict(rendered.tables[:1])
    assert len(tables["summary"]) == 16 and tables["summary"] == terminal_rows(shown.stdout)
    classes = [c for c, _ in rendered.tables]
    assert classes.count("per-step") == 2 and "tokens" in classes and "settings" in classes
    per_step = next(rows for c, rows in rendered.tables if c == "per-step")
    assert per_step[0][:3] == ["step", "step time", "ITL"] and len(per_step) == 1 + 145
    assert "hidden" not in per_step[0]  # a GPU-only series: not measurable on the CPU, so not a column
    for needle in ("tokens identical", "fdoverlap compare --device cpu", "Environment and device", "sha256"):
        assert needle in dom, needle
    _self_contained(dom)

    shot = tmp_path / "shot.png"
    _browser(page, tmp_path, "--window-size=1000,2000", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000  # drawn, not blank


def test_svg_and_png_beside_each_other(cpu_run, tmp_path):
    svg, png = tmp_path / "run.svg", tmp_path / "run.png"
    proc = run_cli("report", str(cpu_run), "--svg", str(svg), "--png", str(png))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2:] == [f"wrote {png}", f"wrote {svg}"]
    text = svg.read_text()
    assert text.startswith("<?xml") and "<svg" in text and "</svg>" in text
    assert "<text" not in text and "<image" not in text  # text drawn as paths: no font needed, no raster inside
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = run_cli("report", str(cpu_run), "--svg", "-")
    assert out.returncode == 0 and out.stdout.startswith("<?xml") and "wrote standard output" in out.stderr


def test_report_outputs_follow_the_rules(capsys, cpu_run, tmp_path):
    run = tmp_path / "run.json"
    shutil.copyfile(cpu_run, run)
    before = run.read_bytes()
    for option in ("--html", "--markdown", "--svg"):
        fails(capsys, ["report", run, option, run], f"{option} {run}: is the same file as the run")
    out = tmp_path / "r.html"
    fails(capsys, ["report", run, "--html", out, "--markdown", out], "each output needs a file of its own")
    fails(capsys, ["report", run, "--html", "-", "--markdown", "-"], "--html already writes to standard output")
    fails(capsys, ["report", run, "--markdown", "-", "--json"], "--json", "--markdown goes there")
    assert run.read_bytes() == before and not out.exists()


def test_analyze_markdown_and_html(capsys, tmp_path):
    page = tmp_path / "nsys.html"
    wide = {"COLUMNS": "200"}  # the per-step table unwrapped
    shown = run_cli("analyze", str(NSYS_FIXTURE), env=wide)
    md = run_cli("analyze", str(NSYS_FIXTURE), "--markdown", "-", "--html", str(page), env=wide)
    assert shown.returncode == 0 and md.returncode == 0, md.stderr
    # the per-step table, then per path where the GPU waited: the nsys stats tables stay in the page
    table, *waited = markdown_tables(md.stdout)
    printed = shown.stdout[shown.stdout.index("per step (fdoverlap)") :]
    assert len(table) > 20 and table[1] == ["measured steps", "26", "26", "same"]
    assert table == terminal_rows(printed.split("\n", 1)[1])
    assert len(waited) == 2
    for name, rows in zip(("sync", "overlap"), waited, strict=True):
        title = f"where the GPU waited, kernels only ({name})"
        assert rows == terminal_rows(shown.stdout[shown.stdout.index(title) :].split("\n", 1)[1])
        assert rows[0][:3] == ["step kind", "stage", "call"] and 1 < len(rows) <= 7
    assert "speedup 1.986×" in md.stdout
    html = page.read_text()
    _self_contained(html)
    rendered = parse(html)
    assert html.count("<svg") == 1
    assert [c for c, _ in rendered.tables] == ["summary", "waited", "waited", "stats", "stats", "stats", "stats"]
    fails(capsys, ["analyze", NSYS_FIXTURE, "--html", NSYS_FIXTURE], "is the same file as the report")


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    command = readme[readme.index("## Test") :].split("\n\n")[1].strip()
    assert command.startswith("bash tools/test-deps.sh && ")
    assert (REPO / ".ci" / "run").read_text().rstrip().splitlines()[-1] == command
