"""Set-up said as it happens: every phase a replay starts it finishes, and the op library's first compile
is said (on a terminal above the bars, piped as one plain line on stderr)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from fdoverlap_cli.render import run_tables
from fdoverlap_cli.session import ReplayConfig, ReplaySession
from tests.conftest import REPO

TRACE = REPO / "traces" / "default.json"


def _run(monkeypatch: pytest.MonkeyPatch, *, cold: bool, progress: Any) -> None:
    from fdoverlap_cli import session

    if cold:  # the cache as a first run finds it: nothing there before the build
        real, asked = session.op_library.status, []
        monkeypatch.setattr(session.op_library, "status", lambda: real() if asked.append(1) or len(asked) > 1 else None)
    ReplaySession(ReplayConfig(trace_file=TRACE, device="cpu", warmup_steps=1)).run(progress)


def test_every_phase_started_is_finished(monkeypatch, ops):
    calls: list[tuple[str, int, int, str | None]] = []
    _run(monkeypatch, cold=False, progress=lambda *call: calls.append(call))
    phases = list(dict.fromkeys(phase for phase, *_ in calls))
    assert phases == ["op library", "model", "warm-up", "sync", "overlap"]
    for phase in phases:
        done, total = next((d, t) for p, d, t, _ in reversed(calls) if p == phase)
        assert done == total > 0, phase
    assert all(note is None for *_, note in calls)  # a cached library is loaded without a word


def test_a_first_compile_is_said_when_piped(monkeypatch, ops):
    out = io.StringIO()
    with run_tables.progress(console=Console(file=out, force_terminal=False, width=80)) as progress:
        _run(monkeypatch, cold=True, progress=progress)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("fdoverlap: compiling the op library for these sources, once: later runs load it")
    assert lines[1].startswith("fdoverlap: op library compiled in ") and len(lines) == 2  # no bars when piped


def test_bars_on_a_terminal_end_complete(monkeypatch):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    with run_tables.progress(console=console) as progress:
        progress("op library", 0, 1, "compiling the op library for these sources, once: later runs load it from X")
        progress("op library", 1, 1, None)
        progress("warm-up", 0, 1, None)
        progress("warm-up", 1, 1, None)
        progress("sync", 0, 10, None)
        progress("sync", 10, 10, None)
    final = out.getvalue().rsplit("\x1b[2K", 1)[-1]  # the bars as they stop
    assert "compiling the op library" in out.getvalue()
    for line in ("op library", "warm-up", "sync"):
        assert any(row.strip().startswith(line) and ("1/1" in row or "10/10" in row) for row in final.splitlines()), (
            final
        )
