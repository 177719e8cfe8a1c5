"""The trace commands end to end: exit codes, one-line errors with no traceback, JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fdoverlap_cli.trace import load_trace
from tests.conftest import run_cli
from tests.test_trace_validate import BASE


def _write(tmp_path: Path, doc: dict, name: str = "t.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def _one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("fdoverlap: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_validate_ok_and_json(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE)
    proc = run_cli("trace", "validate", str(path))
    assert proc.returncode == 0 and proc.stdout == "ok: 2 requests, 4 steps\n"
    proc = run_cli("trace", "validate", str(path), "--json")
    assert json.loads(proc.stdout) == {"ok": True, "requests": 2, "steps": 4}


def test_validate_a_broken_trace_is_one_line_and_exit_2(tmp_path: Path) -> None:
    doc = json.loads(json.dumps(BASE))
    doc["steps"][1]["insert"][0]["slot"] = 0
    path = _write(tmp_path, doc)
    _one_line_error(
        run_cli("trace", "validate", str(path)), f"{path}: steps[1].insert[0].slot: slot 0 still holds request r0"
    )
    _one_line_error(run_cli("trace", "validate", str(tmp_path / "nope.json")), "no such trace file")
    (tmp_path / "bad.json").write_text("{")
    _one_line_error(run_cli("trace", "show", str(tmp_path / "bad.json")), "invalid JSON")


def test_show_renders_and_prints_json(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE)
    proc = run_cli("trace", "show", str(path))
    assert proc.returncode == 0 and "token budget" in proc.stdout and "KV blocks" in proc.stdout
    summary = json.loads(run_cli("trace", "show", str(path), "--json").stdout)
    assert summary["requests"] == 2 and summary["steps"] == 4
    assert summary["prefill_tokens"] == 16 and summary["decode_tokens"] == 3
    assert summary["chunked_prefills"] == 1 and summary["preemptions"] == 0
    assert summary["token_budget"] == {"limit": 16, "peak": 9, "step": 1}


def test_synth_writes_the_same_file_twice(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    proc = run_cli("trace", "synth", "-n", "6", "--arrival-rate", "0.5", "-o", str(a))
    assert proc.returncode == 0 and proc.stdout.startswith(f"wrote {a}: 6 requests")
    proc = run_cli("trace", "synth", "--requests", "6", "--arrival-rate", "0.5", "--out", str(b), "--json")
    assert json.loads(proc.stdout)["requests"] == 6
    assert a.read_bytes() == b.read_bytes()
    assert len(load_trace(a).requests) == 6
    stdout = run_cli("trace", "synth", "-n", "6", "--arrival-rate", "0.5", "-o", "-")
    assert stdout.stdout.encode() == a.read_bytes()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--prompt-len", "big"], "--prompt-len: expected N, LO..HI"),
        (["--max-model-len", "40"], "exceed max_model_len 40"),
        (["--max-num-batched-tokens", "8"], "max_num_batched_tokens 8 is below max_num_seqs 16"),
        (["--num-kv-blocks", "2"], "alone needs"),
        (["-o", "-", "--json"], "--json: cannot print the summary"),
    ],
)
def test_synth_rejects_bad_options_in_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    _one_line_error(run_cli("trace", "synth", "-o", str(tmp_path / "x.json"), *args), fragment)
    assert not (tmp_path / "x.json").exists()


def test_a_usage_error_exits_2() -> None:
    proc = run_cli("trace", "synth", "--requests", "0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_import_azure_reports_bad_rows(tmp_path: Path) -> None:
    csv = tmp_path / "az.csv"
    csv.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:47.0000000,12,abc\n"
        "2023-11-16 18:15:48.0000000,100,10\n"
    )
    out = tmp_path / "az.json"
    _one_line_error(
        run_cli("trace", "import", "azure", str(csv), "-o", str(out)),
        f"{csv}:3: GeneratedTokens: expected an integer, got 'abc'",
    )
    proc = run_cli("trace", "import", "azure", str(csv), "--skip-bad-rows", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout)
    assert counts["bad_rows_skipped"] == 1 and counts["requests"] == 2 and counts["rows"] == 2
    assert load_trace(out).meta["source"]["license"] == "CC-BY 4.0"
    _one_line_error(run_cli("trace", "import", "azure", str(csv), "--long", "clip"), "--long: expected one of")


@pytest.mark.parametrize(
    "command", [["trace", "validate"], ["trace", "show"], ["trace", "synth"], ["trace", "import", "azure"]]
)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    proc = run_cli(*command, "--help")
    assert proc.returncode == 0 and "Example: fdoverlap " + " ".join(command) in proc.stdout
