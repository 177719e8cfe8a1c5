"""One self-contained HTML page of the blocks a command shows (render/blocks.py), its figures inline as SVG.

Nothing in the page is fetched: no script, stylesheet, font or image outside it (the style sheet is inline,
the fonts the reader's own, the figures SVG with their text drawn as paths), and its Content-Security-Policy
forbids any request, so it opens offline and shows the same wherever it is attached.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

from fdoverlap_cli import __version__
from fdoverlap_cli.render.blocks import Block, Cell, Section, Table, Text

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif;
       color: #1f2328; margin: 2em auto; max-width: 72em; padding: 0 1.5em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.2em; border-bottom: 1px solid #d0d7de;
     padding-bottom: .2em; margin-top: 1.8em; }
p { margin: .35em 0; } .sub { color: #59636e; }
table { border-collapse: collapse; margin: .6em 0 1em; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding: .3em 0; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; vertical-align: top; }
th { background: #f6f8fa; } td.num, th.num { text-align: right; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fbfcfd; }
.ok { color: #1a7f37; font-weight: 600; } .fail { color: #cf222e; font-weight: 600; }
.warn { color: #9a6700; font-weight: 600; } .dim { color: #59636e; } .accent { color: #0969da; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
details > summary { cursor: pointer; font-weight: 600; margin: .6em 0; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .92em; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; white-space: pre-wrap; }
footer { margin-top: 3em; color: #59636e; font-size: .85em; }
"""
_CLASS = {"bold": "", "dim": "dim", "ok": "ok", "fail": "fail", "warn": "warn", "accent": "accent", "": ""}
_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)  # the XML declaration and the DOCTYPE (an external DTD)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)  # RDF naming its vocabularies by URL
_XMLNS = re.compile(r'\s+xmlns(:xlink)?="[^"]*"')  # HTML puts <svg> in its namespace without them


def inline_svg(svg: str) -> str:
    """A matplotlib SVG file as an element of an HTML page: no prolog, no metadata, no namespace URLs."""
    return _XMLNS.sub("", _METADATA.sub("", _PROLOG.sub("", svg, count=1)), count=2)


def _styled(inner: str, style: str) -> str:
    """Escaped HTML `inner` in `style`: bold, or a span of its class."""
    if style == "bold":
        return f"<b>{inner}</b>"
    return f'<span class="{_CLASS[style]}">{inner}</span>' if _CLASS.get(style) else inner


def cell(c: Cell) -> str:
    """A line or cell's HTML."""
    if isinstance(c, str):
        return html.escape(c, quote=False)
    return _styled("".join(_styled(html.escape(p, quote=False), s) for p, s in c.pieces), c.style)


def _lines(header: str) -> str:
    """A header of several lines (as the terminal prints it): a line break between them."""
    return "<br>\n".join(html.escape(line) for line in header.split("\n"))


def table(t: Table) -> str:
    """An HTML table: the title its caption, the numbers' columns right-aligned."""
    klass = f' class="{html.escape(t.name)}"' if t.name else ""
    num = [' class="num"' if c.right else "" for c in t.columns]
    out = [f"<table{klass}>"]
    if t.title:
        out.append(f"<caption>{html.escape(t.title)}</caption>")
    out.append(
        "<thead><tr>"
        + "".join(f"<th{n}>{_lines(c.header)}</th>" for c, n in zip(t.columns, num, strict=True))
        + "</tr></thead>"
    )
    out.append("<tbody>")
    for row in t.rows:
        out.append("<tr>" + "".join(f"<td{n}>{cell(c)}</td>" for c, n in zip(row, num, strict=True)) + "</tr>")
    out.append("</tbody></table>")
    if t.rows_note:
        out.append(f'<p class="dim">{html.escape(t.rows_note)}</p>')
    return "\n".join(out)


def blocks(items: Iterable[Block]) -> str:
    return "\n".join(f"<p>{cell(b)}</p>" if isinstance(b, Text) else table(b) for b in items)


def _section(s: Section) -> str:
    body = []
    if s.svg:
        body.append(f"<figure>{inline_svg(s.svg)}</figure>")
    body.append(blocks(s.blocks))
    inner = "\n".join(body)
    heading = html.escape(s.heading)
    if s.collapsed:
        return f"<section>\n<details><summary>{heading}</summary>\n{inner}\n</details>\n</section>"
    return f"<section>\n<h2>{heading}</h2>\n{inner}\n</section>"


def document(title: str, subtitle: str, sections: Iterable[Section]) -> str:
    """The whole page: the title, a line under it, every section."""
    body = "\n".join(_section(s) for s in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        + (f'<p class="sub">{html.escape(subtitle)}</p>\n' if subtitle else "")
        + f"{body}\n<footer>written by fdoverlap {html.escape(__version__)}</footer>\n</body>\n</html>\n"
    )
