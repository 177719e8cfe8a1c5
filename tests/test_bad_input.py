"""Bad input of every kind: exit code 2 and exactly one line on stderr naming the problem and where it is.

Each case runs `fdoverlap_cli.cli.main` in-process and checks: exit code 2, one stderr line starting
`fdoverlap: error: `, the fragments that name the problem and its place (file, JSON path, CSV line,
option), and no traceback anywhere. Small files live in tests/fixtures/bad/; the rest are made here.
"""

from __future__ import annotations

import copy
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fdoverlap_cli.cli import main
from fdoverlap_cli.results import RESULTS_VERSION
from tests.conftest import REPO
from tests.test_trace_validate import BASE, _set

BAD = Path(__file__).parent / "fixtures" / "bad"
NSYS_EXPORT = Path(__file__).parent / "fixtures" / "nsys" / "paddle-h100-nvtx-dtoh.sqlite"
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
AZURE_ROWS = "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n"


@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    """main() installs its SIGINT/SIGTERM handlers; give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def fails(capsys: pytest.CaptureFixture[str], args: list[str], *fragments: str) -> str:
    """Run the CLI; assert exit 2 and one error line holding every fragment; return the line."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    assert code == 2, f"exit {code}: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("fdoverlap: error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def _trace(tmp_path: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    doc = copy.deepcopy(BASE)
    change(doc)
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(doc))
    return path


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        del node[last]

    return change


# --------------------------------------------------------------------------- trace files


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("trace-truncated.json", ["trace-truncated.json:", "invalid JSON"]),
        ("trace-not-utf8.json", ["trace-not-utf8.json", "is not UTF-8 text (byte"]),
        ("trace-nan.json", ["trace-nan.json", "config.max_num_seqs", "got a number NaN"]),
        ("trace-infinity.json", ["trace-infinity.json", "requests[0].output_len", "Infinity"]),
        ("trace-array.json", ["trace-array.json", "$: expected an object, got an array"]),
        ("trace-whitespace.json", ["trace-whitespace.json", "is empty"]),
    ],
)
def test_broken_trace_files(capsys, name, fragments):
    fails(capsys, ["trace", "validate", BAD / name], *fragments)


def test_empty_trace_file(capsys, tmp_path):
    (tmp_path / "empty.json").write_bytes(b"")
    fails(capsys, ["trace", "validate", tmp_path / "empty.json"], "empty.json", "is empty")


def test_a_directory_instead_of_a_trace(capsys, tmp_path):
    fails(capsys, ["trace", "show", tmp_path], str(tmp_path), "is a directory, not a trace file")


def test_a_missing_trace(capsys, tmp_path):
    fails(capsys, ["trace", "validate", tmp_path / "nope.json"], "nope.json", "no such trace file")


def test_json_nested_too_deeply(capsys, tmp_path):
    (tmp_path / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    fails(capsys, ["trace", "validate", tmp_path / "deep.json"], "deep.json", "nested too deeply")


def _bounded_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The CLI in a child with 4 GiB of address space and a time limit: a reader that does not cap what it
    reads, or a command that does the work before checking its limits, fails here instead of eating the
    machine."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    return subprocess.run(
        [sys.executable, "-m", "fdoverlap_cli", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
    )


def _one_error_line(done: subprocess.CompletedProcess, *fragments: str) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fdoverlap: error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["trace", "validate", "/dev/zero"],
        ["trace", "show", "/dev/zero"],
        ["trace", "import", "azure", "/dev/zero", "-o", "-"],
        ["report", "/dev/zero"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_an_endless_input_is_cut_short(args):
    _one_error_line(_bounded_cli(*args), "/dev/zero: is not UTF-8 text (a NUL byte at byte 0)")


def test_inputs_are_read_up_to_a_documented_cap(capsys, tmp_path, monkeypatch):
    from fdoverlap_cli import fileio

    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:
        f.truncate(fileio.MAX_INPUT_BYTES + 1)  # sparse: nothing is written or read
    fails(
        capsys, ["trace", "validate", huge], "huge.json: is larger than 1 GiB, the most fdoverlap reads as a trace file"
    )
    monkeypatch.setattr(fileio, "MAX_INPUT_BYTES", 4096)
    stream = tmp_path / "stream"  # a pipe has no size: the cap applies as it is read
    os.mkfifo(stream)
    writer = threading.Thread(target=lambda: stream.write_bytes(b" " * 10_000), daemon=True)
    writer.start()
    fails(capsys, ["trace", "show", stream], "stream: is larger than 4,096 bytes")


def test_a_symlink_loop_is_not_a_missing_file(capsys, tmp_path):
    (tmp_path / "a.json").symlink_to("b.json")
    (tmp_path / "b.json").symlink_to("a.json")
    fails(capsys, ["trace", "validate", tmp_path / "a.json"], "a.json: cannot read: a loop of symbolic links")
    (tmp_path / "gone.json").symlink_to("nowhere.json")
    fails(capsys, ["trace", "show", tmp_path / "gone.json"], "is a symbolic link to nowhere.json, which does not exist")


def _text_trace(tmp_path: Path, old: str, new: str) -> Path:
    path = tmp_path / "trace.json"
    text = json.dumps(BASE)
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def test_an_integer_python_will_not_read(capsys, tmp_path):
    seed = '"max_num_batched_tokens": 16'
    path = _text_trace(tmp_path, seed, f"{seed}, " + '"seed": ' + "7" * 5000)
    line = fails(capsys, ["trace", "validate", path], "trace.json:1:", "an integer of 5,000 digits (at most 4,300)")
    assert len(line) < len(str(path)) + 120
    path = _text_trace(tmp_path, seed, f"{seed}, " + '"seed": ' + "7" * 4000)  # read, and refused in a short line
    line = fails(capsys, ["trace", "validate", path], "config.seed", "is too large", "(4,000 characters)")
    assert len(line) < len(str(path)) + 150


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ('"id": "r1"', '"id": "r\\ud800"', "requests[1].id"),
        ('"requests": [', '"meta": {"note": ["ok", "\\udfff"]}, "requests": [', "meta.note[1]"),
        ('"requests": [', '"meta": {"k\\ud83d": 1}, "requests": [', "meta"),
    ],
    ids=["request id", "meta value", "meta key"],
)
def test_a_lone_surrogate_is_not_text(capsys, tmp_path, old, new, where):
    """Read whole by validate and show, it used to fail replay later (UnicodeEncodeError, an empty run.json)."""
    path = _text_trace(tmp_path, old, new)
    for command in ("validate", "show"):
        fails(capsys, ["trace", command, path], f"{path}: {where}", "holds a lone UTF-16 surrogate")
    pair = _text_trace(tmp_path, '"requests": [', '"meta": {"smile": "\\ud83d\\ude00"}, "requests": [')  # one character
    assert main(["trace", "validate", str(pair)]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_meta_holds_json_numbers_only(capsys, tmp_path, number):
    """NaN and Infinity (Python reads them; 1e999 reads as one) would be written back as bare NaN: not JSON."""
    path = _text_trace(tmp_path, '"requests": [', f'"meta": {{"x": {{"y": [1, {number}]}}}}, "requests": [')
    shown = "Infinity" if number == "1e999" else number
    fails(capsys, ["trace", "validate", path], f"{path}: meta.x.y[1]: {shown} is not a JSON number")


TRACE_CASES = [
    ("wrong format", _set("format", "fdoverlap-run"), "format: expected 'fdoverlap-trace', got a string"),
    ("unknown version", _set("version", 2), "version: unknown version 2"),
    ("version as a string", _set("version", "1"), "version: expected an integer, got a string"),
    ("missing config", _drop("config"), "$: missing required field 'config'"),
    ("missing requests", _drop("requests"), "$: missing required field 'requests'"),
    ("missing steps", _drop("steps"), "$: missing required field 'steps'"),
    ("unknown top-level field", _set("extra", 1), "extra: unknown field"),
    ("config not an object", _set("config", [2]), "config: expected an object, got an array"),
    ("config count as a string", _set("config.max_num_seqs", "2"), "config.max_num_seqs: expected an integer"),
    ("config count as a float", _set("config.block_size", 4.0), "config.block_size: expected an integer"),
    ("config missing a field", _drop("config.num_kv_blocks"), "config: missing required field 'num_kv_blocks'"),
    ("negative count", _set("config.block_size", -4), "config.block_size: must be at least 1, got -4"),
    ("huge count", _set("config.num_kv_blocks", 2**70), "config.num_kv_blocks: 1180591620717411303424 is too large"),
    (
        "size beyond int32",
        _set("config.max_model_len", 2**31),
        "config.max_model_len: 2147483648 is too large (at most 2147483647",
    ),
    ("boolean count", _set("config.max_num_seqs", True), "config.max_num_seqs: expected an integer, got true"),
    ("negative eos", _set("config.eos_token_id", -1), "config.eos_token_id: must be at least 0"),
    ("requests not an array", _set("requests", {"r0": {}}), "requests: expected an array, got an object"),
    ("request not an object", _set("requests.0", "r0"), "requests[0]: expected an object, got a string"),
    ("request id not a string", _set("requests.0.id", 0), "requests[0].id: expected a string"),
    ("request id empty", _set("requests.0.id", ""), "requests[0].id: must not be empty"),
    ("prompt_len as a float", _set("requests.0.prompt_len", 6.5), "requests[0].prompt_len: expected an integer"),
    ("output_len zero", _set("requests.0.output_len", 0), "requests[0].output_len: must be at least 1"),
    ("arrival boolean", _set("requests.1.arrival_step", False), "requests[1].arrival_step: expected an integer"),
    ("token ids too few", _set("requests.0.prompt_token_ids", [1, 2]), "requests[0].prompt_token_ids: has 2 ids"),
    ("token id huge", _set("requests.0.prompt_token_ids", [2**63] * 6), "requests[0].prompt_token_ids[0]"),
    ("steps not an array", _set("steps", {}), "steps: expected an array, got an object"),
    ("step not an object", _set("steps.1", []), "steps[1]: expected an object, got an array"),
    ("insert not an array", _set("steps.0.insert", "r0"), "steps[0].insert: expected an array"),
    ("insert slot as a string", _set("steps.0.insert.0.slot", "0"), "steps[0].insert[0].slot: expected an integer"),
    ("insert len zero", _set("steps.0.insert.0.len", 0), "steps[0].insert[0].len: must be at least 1"),
    ("insert without request", _drop("steps.0.insert.0.request"), "missing required field 'request'"),
    ("preempt not a slot", _set("steps.3.preempt", ["1"]), "steps[3].preempt[0]: expected a slot (integer)"),
    ("meta not an object", _set("meta", []), "meta: expected an object, got an array"),
    ("slot out of range", _set("steps.1.insert.0.slot", 5), "steps[1].insert[0].slot: slot 5 out of range [0, 2)"),
    ("slot double-booked", _set("steps.1.insert.0.slot", 0), "steps[1].insert[0].slot: slot 0 still holds request r0"),
    ("chunk discontinuity", _set("steps.2.insert.0.start", 7), "steps[2].insert[0].start: chunk of r1 starts at 7"),
    ("never finishes", lambda d: d["steps"].pop(), "requests[1]: request r1 never finishes"),
    ("token budget", _set("config.max_num_batched_tokens", 8), "steps[1]: 9 tokens exceed max_num_batched_tokens 8"),
    ("KV budget", _set("config.num_kv_blocks", 4), "steps[2]: KV blocks 5 exceed num_kv_blocks 4"),
    ("duplicate ids", _set("requests.1.id", "r0"), "requests[1].id: duplicate id 'r0'"),
    ("unknown request", _set("steps.1.insert.0.request", "rx"), "steps[1].insert[0].request: unknown request 'rx'"),
    ("before arrival", _set("requests.1.arrival_step", 2), "steps[1].insert[0].request: r1 arrives at step 2"),
    ("preempt an empty slot", _set("steps.3.preempt", [0]), "steps[3].preempt[0]: slot 0 is empty"),
    ("request past max_model_len", _set("requests.0.prompt_len", 30), "requests[0]: prompt_len 30 + output_len 3"),
    ("no requests", lambda d: d.update(requests=[], steps=[]), "requests: a trace needs at least one request"),
]


@pytest.mark.parametrize(("case", "change", "fragment"), TRACE_CASES, ids=[c[0] for c in TRACE_CASES])
def test_broken_traces(capsys, tmp_path, case, change, fragment):
    path = _trace(tmp_path, change)
    fails(capsys, ["trace", "validate", path], f"{path}: ", fragment)


def test_a_broken_trace_given_to_replay_and_compare(capsys, tmp_path):
    path = _trace(tmp_path, _set("steps.1.insert.0.slot", 0))
    fails(capsys, ["replay", path, "--device", "cpu"], f"{path}: steps[1].insert[0].slot")
    fails(capsys, ["compare", path, "--device", "cpu"], f"{path}: steps[1].insert[0].slot")


# --------------------------------------------------------------------------- Azure CSV imports


def _import(csv: Path, tmp_path: Path, *extra: str) -> list[Any]:
    return ["trace", "import", "azure", csv, "-o", tmp_path / "out.json", *extra]


@pytest.mark.parametrize("skip", [False, True], ids=["strict", "skip-bad-rows"])
@pytest.mark.parametrize(
    ("name", "text", "fragments"),
    [
        ("bad-header", "time,prompt,output\n" + AZURE_ROWS, [":1: header lacks column TIMESTAMP"]),
        ("missing-column", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6,3\n", [":1: header lacks column Generated"]),
        ("empty", "", [":1: empty file"]),
        ("header-only", AZURE_HEADER, [": no requests in the file"]),
    ],
)
def test_azure_files_without_usable_rows(capsys, tmp_path, name, text, fragments, skip):
    csv = tmp_path / f"{name}.csv"
    csv.write_text(text)
    fails(capsys, _import(csv, tmp_path, *(["--skip-bad-rows"] if skip else [])), str(csv), *fragments)
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize(
    ("name", "row", "fragment"),
    [
        ("non-numeric", "2023-11-16 18:15:51.0,abc,44", ":4: ContextTokens: expected an integer, got 'abc'"),
        ("negative", "2023-11-16 18:15:51.0,12,-3", ":4: GeneratedTokens: expected a count of at least 1, got -3"),
        ("too-few-fields", "2023-11-16 18:15:51.0,12", ":4: expected 3 fields, got 2"),
        ("bad-time", "yesterday,12,3", ":4: TIMESTAMP: expected a time like"),
    ],
)
def test_azure_bad_rows_fail_or_are_skipped(capsys, tmp_path, name, row, fragment):
    csv = tmp_path / f"{name}.csv"
    csv.write_text(AZURE_HEADER + AZURE_ROWS + row + "\n")
    fails(capsys, _import(csv, tmp_path), f"{csv}{fragment}")
    assert main([str(a) for a in _import(csv, tmp_path, "--skip-bad-rows", "--json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bad_rows_skipped"] == 1 and out["requests"] == 2


def test_azure_field_over_the_csv_limit_names_its_line(capsys, tmp_path):
    csv = tmp_path / "long.csv"
    csv.write_text(AZURE_HEADER + AZURE_ROWS + "2023-11-16 18:15:51.0," + "1" * 200_000 + ",3\n")
    fails(capsys, _import(csv, tmp_path), f"{csv}:4: cannot parse the row: field larger than field limit")


def test_azure_long_values_are_cut_in_messages(capsys, tmp_path):
    csv = tmp_path / "digits.csv"
    csv.write_text(AZURE_HEADER + AZURE_ROWS + "2023-11-16 18:15:51.0," + "9" * 5000 + ",3\n")
    line = fails(capsys, _import(csv, tmp_path), f"{csv}:4: ContextTokens: expected an integer", "(5,000 characters)")
    assert len(line) < len(str(csv)) + 150
    csv.write_text(AZURE_HEADER + AZURE_ROWS + "x" * 5000 + ",12,3\n")
    assert len(fails(capsys, _import(csv, tmp_path), f"{csv}:4: TIMESTAMP")) < len(str(csv)) + 200


def test_azure_file_name_that_is_not_utf8(capsys, tmp_path):
    """The name goes into the trace's meta: as text, so that the trace reads back."""
    csv = os.fsdecode(bytes(tmp_path) + b"/\xff.csv")
    Path(csv).write_text(AZURE_HEADER + AZURE_ROWS)
    out = tmp_path / "out.json"
    assert main(["trace", "import", "azure", csv, "-o", str(out)]) == 0
    assert main(["trace", "validate", str(out)]) == 0
    assert json.loads(out.read_text())["meta"]["source"]["file"] == "\\xff.csv"
    capsys.readouterr()


def test_azure_corpus_files(capsys, tmp_path):
    fails(capsys, _import(BAD / "azure-bad-header.csv", tmp_path), "azure-bad-header.csv:1: header lacks column")
    fails(capsys, _import(BAD / "azure-few-fields.csv", tmp_path), "azure-few-fields.csv:3: expected 3 fields, got 2")
    for skip in ([], ["--skip-bad-rows"]):
        fails(capsys, _import(BAD / "azure-not-utf8.csv", tmp_path, *skip), "azure-not-utf8.csv: is not UTF-8 text")


def test_azure_path_and_options(capsys, tmp_path):
    csv = tmp_path / "ok.csv"
    csv.write_text(AZURE_HEADER + AZURE_ROWS)
    fails(capsys, _import(tmp_path / "nope.csv", tmp_path), "nope.csv: no such CSV file")
    fails(capsys, _import(tmp_path, tmp_path), f"{tmp_path}: is a directory")
    fails(capsys, _import(csv, tmp_path, "--step-ms", "0"), "--step-ms: must be a positive number")
    fails(capsys, _import(csv, tmp_path, "--step-ms", "nan"), "--step-ms: must be a positive number")
    fails(capsys, _import(csv, tmp_path, "--long", "keep"), "--long: expected one of truncate, drop")
    far = tmp_path / "far.csv"
    far.write_text(AZURE_HEADER + "0001-01-01 00:00:00.0,5,5\n9999-12-31 23:59:59.0,5,5\n")
    fails(capsys, _import(far, tmp_path, "--step-ms", "1e-300"), "--step-ms: 1e-300 ms per step")
    fails(capsys, ["trace", "import", "azure", csv, "-o", tmp_path], f"{tmp_path}: cannot write")


# --------------------------------------------------------------------------- nsys exports (analyze)


def _export_copy(tmp_path: Path, name: str, *sql: str) -> Path:
    path = tmp_path / name
    shutil.copyfile(NSYS_EXPORT, path)
    with sqlite3.connect(path) as db:
        for statement in sql:
            db.execute(statement)
    return path


def test_analyze_files_that_are_not_exports(capsys, tmp_path):
    fails(capsys, ["analyze", BAD / "nsys-not-sqlite.sqlite"], "nsys-not-sqlite.sqlite: not a SQLite file")
    (tmp_path / "empty.sqlite").write_bytes(b"")
    fails(capsys, ["analyze", tmp_path / "empty.sqlite"], "empty.sqlite: empty file")
    data = NSYS_EXPORT.read_bytes()
    (tmp_path / "cut.sqlite").write_bytes(data[: len(data) // 3])
    fails(capsys, ["analyze", tmp_path / "cut.sqlite"], "cut.sqlite: cannot read the export", "truncated or corrupt")
    fails(capsys, ["analyze", tmp_path / "none.sqlite"], "none.sqlite", "No such file")
    fails(capsys, ["analyze", tmp_path / "none.nsys-rep"], "none.nsys-rep: no such file")


def test_analyze_sqlite_files_with_the_wrong_content(capsys, tmp_path):
    with sqlite3.connect(tmp_path / "other.sqlite") as db:
        db.execute("CREATE TABLE results (x INTEGER)")
    fails(capsys, ["analyze", tmp_path / "other.sqlite"], "other.sqlite: not an Nsight Systems export")
    no_strings = _export_copy(tmp_path, "nostrings.sqlite", "DROP TABLE StringIds")
    fails(capsys, ["analyze", no_strings], "nostrings.sqlite: not an Nsight Systems export (no META_DATA_EXPORT")
    v4 = _export_copy(
        tmp_path, "v4.sqlite", "UPDATE META_DATA_EXPORT SET value = '4.0.1' WHERE name = 'EXPORT_SCHEMA_VERSION'"
    )
    fails(capsys, ["analyze", v4], "v4.sqlite: export schema 4.0.1 is not supported")
    renamed = _export_copy(tmp_path, "renamed.sqlite", "ALTER TABLE NVTX_EVENTS RENAME COLUMN start TO begin")
    fails(capsys, ["analyze", renamed], "renamed.sqlite: cannot read the export (no such column")
    text = _export_copy(tmp_path, "text.sqlite", "UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET start = 'soon'")
    fails(capsys, ["analyze", text], "text.sqlite: unexpected values in the export")


def test_an_export_without_a_kernel_table_still_reads(capsys, tmp_path):
    copies_only = _export_copy(tmp_path, "copies.sqlite", "DROP TABLE CUPTI_ACTIVITY_KIND_KERNEL")
    assert main(["analyze", str(copies_only), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["copies"]


def test_analyze_against_bad_results(capsys, tmp_path):
    args = ["analyze", NSYS_EXPORT, "--against"]
    fails(capsys, [*args, BAD / "nsys-not-sqlite.sqlite"], "nsys-not-sqlite.sqlite:1:1: invalid JSON")
    fails(capsys, [*args, BAD / "run-wrong-format.json"], "run-wrong-format.json: not an fdoverlap results file")
    (tmp_path / "v9.json").write_text('{"format": "fdoverlap-run", "version": 9}')
    fails(capsys, [*args, tmp_path / "v9.json"], "v9.json: version: unknown results version 9")
    (tmp_path / "partial.json").write_text(json.dumps({"format": "fdoverlap-run", "version": RESULTS_VERSION}))
    fails(capsys, [*args, tmp_path / "partial.json"], "partial.json: missing required field 'complete'")
    fails(capsys, [*args, tmp_path / "none.json"], "none.json: no such results file")


def _results(tmp_path: Path, cpu_run: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    doc = json.loads(cpu_run.read_text())
    change(doc)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(doc))
    return path


RESULTS_CASES = [
    ("no trace", _drop("trace"), "missing required field 'trace'"),
    ("trace not an object", _set("trace", [1]), "trace: expected an object, got an array"),
    ("trace file a number", _set("trace.file", 3), "trace.file: expected a string, got an integer 3"),
    ("empty model", _set("model", {}), "model: missing required field 'name'"),
    ("layers as text", _set("model.num_layers", "2"), 'model.num_layers: expected an integer, got a string "2"'),
    ("no environment device", _drop("environment.device"), "environment: missing required field 'device'"),
    ("command not strings", _set("command", [1]), "command[0]: expected a string"),
    ("null output check", _set("paths.sync.reader.output_check", None), "output_check: expected an object, got null"),
    ("null identity count", _set("identity.tokens", None), "identity.tokens: expected an integer, got null"),
    ("differing without where", _set("identity.identical", False), "identity.first_difference: the paths' tokens"),
    ("a column of 2^70", _set("paths.sync.columns.tokens.0", 2**70), "columns.tokens[0]: 1180591620717411303424 is"),
    ("a column of Infinity", _set("paths.sync.columns.tokens.0", float("inf")), "got a number Infinity"),
    ("a huge time base", _set("paths.sync.time_base_ns", 2**63), "time_base_ns: 9223372036854775808 is too large"),
    ("a time past 2^62", _set("paths.sync.time_base_ns", 2**62), "is outside [0, 2^62]"),
    ("no step column", _drop("paths.sync.columns.step"), "paths.sync.columns: missing required column 'step'"),
    ("half a span", _drop("paths.sync.columns.iter_end"), "has column 'iter_start' but not 'iter_end'"),
    ("a short column", _set("paths.sync.columns.tokens", [1]), "columns.tokens: has 1 rows, 'step' has"),
    ("steps out of order", _set("paths.sync.columns.step.1", 0), "columns.step[1]: steps must increase"),
    ("pre_start missing", _set("paths.sync.columns.pre_start.0", None), "[0]: a time relative to pre_start, which"),
    ("an unknown path", _set("paths.turbo", {}), "paths.turbo: unknown path"),
    ("a path of another name", _set("paths.sync.name", "overlap"), "paths.sync.name: expected 'sync'"),
    ("copy track", _set("paths.sync.copy_track", "gpu:9"), "copy_track: expected gpu:compute or gpu:copy"),
    ("a bad window", _set("window", [9, 3]), "window: FIRST 9 is after LAST 3"),
    ("a window of text", _set("window", "all"), 'window: expected null or [FIRST, LAST], got a string "all"'),
    ("token digests", _set("paths.sync.tokens.r0", {"count": 3}), "tokens.r0: missing required field 'sha256'"),
    ("clock", _set("paths.sync.clock", {"offset_ns": 0.5}), "clock.offset_ns: expected an integer, got a number"),
]


@pytest.mark.parametrize(("case", "change", "fragment"), RESULTS_CASES, ids=[c[0] for c in RESULTS_CASES])
def test_broken_results_files(capsys, tmp_path, cpu_run, case, change, fragment):
    """A run.json given to report or to analyze --against: one line naming the file and the JSON path."""
    path = _results(tmp_path, cpu_run, change)
    fails(capsys, ["report", path], f"{path}: ", fragment)
    fails(capsys, ["analyze", NSYS_EXPORT, "--against", path], f"{path}: ", fragment)


def test_names_from_a_results_file_are_text_not_markup(capsys, tmp_path, cpu_run):
    path = _results(tmp_path, cpu_run, _set("trace.file", "[/b]"))
    assert main(["report", str(path)]) == 0
    assert "[/b]" in capsys.readouterr().out


def test_analyze_text_stored_as_a_blob(capsys, tmp_path):
    """nsys writes NVTX text as TEXT; stored as a BLOB it reads as the same text, and a BLOB that is not
    UTF-8 is one line."""
    blob = _export_copy(tmp_path, "blob.sqlite", "UPDATE NVTX_EVENTS SET text = CAST(text AS BLOB)")
    assert main(["analyze", str(blob)]) == 0
    assert "fdoverlap:step" in capsys.readouterr().out
    broken = _export_copy(
        tmp_path,
        "broken.sqlite",
        "UPDATE NVTX_EVENTS SET text = X'66ff00' WHERE rowid = (SELECT max(rowid) FROM "
        "NVTX_EVENTS WHERE text IS NOT NULL)",
    )
    fails(capsys, ["analyze", broken], f"{broken}: cannot read the export: a text value that is not UTF-8")


@pytest.mark.parametrize("table", ["NVTX_EVENTS", "CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_MEMCPY"])
def test_analyze_a_record_that_ends_before_it_starts(capsys, tmp_path, table):
    row = f"(SELECT min(rowid) FROM {table} WHERE end IS NOT NULL)"
    export = _export_copy(tmp_path, "reversed.sqlite", f"UPDATE {table} SET end = start - 5 WHERE rowid = {row}")
    fails(capsys, ["analyze", export], f"{export}: {table} row ", "ends before it starts")


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["replay", "--preset", "huge"], ["--preset: unknown preset 'huge'"]),
        (["compare", "--device", "bogus"], ["--device: expected auto, cpu or gpu, got 'bogus'"]),
        (["replay", "--device", "cpu", "--window", "5:2"], ["--window: expected FIRST:LAST", "'5:2'"]),
        (["compare", "--device", "cpu", "--window", "garbage"], ["--window", "'garbage'"]),
        (["replay", "--device", "cpu", "--window", "500:600"], ["--window: starts at step 500, past the trace's"]),
        (["analyze", NSYS_EXPORT, "--window", "-1:3"], ["--window", "'-1:3'"]),
        (["replay", "--layers", "0"], ["Invalid value for '--layers'", "fdoverlap replay --help"]),
        (["replay", "--layers", "many"], ["Invalid value for '--layers'"]),
        (["replay", "--dims", "width=3"], ["--dims: expected key=value with key in", "'width=3'"]),
        (["replay", "--dims", "hidden_size=big"], ["--dims: hidden_size expects int, got 'big'"]),
        (["replay", "--dims", "rms_eps=nan"], ["model: rms_eps must be a finite number"]),
        (["replay", "--dims", "vocab_size=1"], ["model: vocab_size must be at least 2"]),
        (["compare", "--dims", "num_q_heads=3"], ["model: num_q_heads (3) must be a multiple"]),
        (["replay", "--path", "bogus"], ["--path: expected sync or overlap, got 'bogus'"]),
        (["replay", "--token-count", "bogus"], ["--token-count: expected sync or predict, got 'bogus'"]),
        (["replay", "--copy-stream", "bogus"], ["--copy-stream: expected compute or separate"]),
        (["replay", "--cuda-graph", "maybe"], ["--cuda-graph: expected auto, on or off, got 'maybe'"]),
        (["compare", "--device", "cpu", "--cuda-graph", "on"], ["--cuda-graph: on needs a GPU", "no CUDA graphs"]),
        (["replay", "--warmup", "-1"], ["Invalid value for '--warmup'"]),
        (["replay", "--bogus"], ["No such option: --bogus"]),
        (["replay", "a.json", "b.json"], ["unexpected extra argument"]),
        (["bogus"], ["No such command 'bogus'"]),
        (["trace", "synth", "--max-num-batched-tokens", "8"], ["max_num_batched_tokens 8 is below max_num_seqs 16"]),
        (["trace", "synth", "--num-kv-blocks", "2"], ["alone needs", "num_kv_blocks is 2"]),
        (["trace", "synth", "--max-model-len", "40"], ["exceed max_model_len 40"]),
        (["trace", "synth", "--max-model-len", str(2**31)], ["max_model_len: 2147483648 is too large"]),
        (["trace", "synth", "--prompt-len", "64..16"], ["--prompt-len: lengths must be a range"]),
        (["trace", "synth", "--output-len", "lognormal:0,1,1..9"], ["--output-len: lognormal needs a mean above 0"]),
        (["trace", "synth", "--prompt-len", "2000000000"], ["need at least", "a trace holds at most 10,000,000"]),
        (["trace", "synth", "--prompt-len", "10000000000000"], ["max_model_len: 10000000000096 is too large"]),
        (["trace", "synth", "--arrival-rate", "5e-324"], ["--arrival-rate", "the arrival steps overflow"]),
        (["trace", "synth", "--seed", str(2**70)], ["--seed: must be in [0, 2^62]"]),
        (["trace", "synth", "-n", "0"], ["Invalid value for '-n' / '--requests'"]),
        (["trace", "synth", "-o", "-", "--json"], ["--json: cannot print the summary"]),
        (["profile", "--capture", "sometimes", "--nsys", "/bin/true", "--", "compare"], ["--capture"]),
        (["profile", "--nsys", "/nonexistent/nsys", "--", "compare"], ["--nsys /nonexistent/nsys: not an executable"]),
    ],
)
def test_bad_options(capsys, tmp_path, monkeypatch, args, fragments):
    monkeypatch.chdir(tmp_path)  # nothing a refused command might write lands in the repository
    fails(capsys, args, *fragments)
    assert not list(tmp_path.iterdir())


def test_a_missing_trace_argument(capsys, tmp_path):
    for command in ("replay", "compare"):
        fails(capsys, [command, tmp_path / "nope.json", "--device", "cpu"], "nope.json: no such trace file")


def test_a_trace_the_model_cannot_replay(capsys, tmp_path):
    eos = _trace(tmp_path, _set("config.eos_token_id", 10**6))
    fails(capsys, ["replay", eos, "--device", "cpu"], f"{eos}: config.eos_token_id: 1000000 is not below vocab_size")


def test_a_trace_too_large_for_the_host(capsys, tmp_path):
    path = _trace(tmp_path, _set("config.max_num_seqs", 10**9))
    fails(capsys, ["replay", path, "--device", "cpu", "-o", tmp_path / "run.json"], "the host has", "GiB")
    assert not (tmp_path / "run.json").exists()


def test_memory_beyond_weights_and_kv_is_counted(capsys, tmp_path, monkeypatch):
    """Weights and KV cache fit; the logits of 2,000 slots over a vocabulary of 8,192 do not: refused before
    the model is built, naming them (and not --layers, which would not help)."""
    from fdoverlap_cli.engine import replay

    path = tmp_path / "wide.json"
    synth = ["trace", "synth", "-n", "2", "--prompt-len", "2", "--output-len", "2", "--max-model-len", "4"]
    assert main([*synth, "--max-num-seqs", "2000", "--max-num-batched-tokens", "2000", "-o", str(path)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(replay, "_host_memory_bytes", lambda: 64 * 2**20)
    line = fails(
        capsys,
        ["replay", path, "--device", "cpu", "--dims", "vocab_size=8192", "-o", tmp_path / "run.json"],
        "the host has 64 MiB",
        "most of it is the logits, set by max_num_seqs 2,000 × vocab_size 8,192",
    )
    assert "--layers" not in line
    assert not (tmp_path / "run.json").exists()


@pytest.mark.parametrize("preset", ["1b", "8b"])
def test_float16_on_the_cpu_is_refused_before_allocating(preset):
    """Within 4 GiB of address space: the 1b weights alone are 3.2 GB, the 8b ones 15 GiB."""
    for command in ("replay", "compare"):
        done = _bounded_cli(command, "--device", "cpu", "--preset", preset)
        _one_error_line(done, f"--preset: model '{preset}' is float16, which runs on a GPU only")


# --------------------------------------------------------------------------- limits checked before the work


def test_synth_checks_the_request_count_before_drawing(tmp_path):
    done = _bounded_cli("trace", "synth", "-n", "100000000", "-o", str(tmp_path / "t.json"))
    _one_error_line(done, "--requests: at most 1,000,000 (the most a trace holds), got 100,000,000")
    assert not (tmp_path / "t.json").exists()


def test_a_batch_too_wide_for_the_hosts_message_queue(capsys, tmp_path):
    """max_num_seqs past what one SysV message holds (kernel.msgmax) passes validation, as it should (the
    trace is fine elsewhere), and is refused before the model is built, naming the limit."""
    from fdoverlap_cli.engine.msg_queue import _kernel_limit

    msgmax = _kernel_limit("msgmax")
    if msgmax is None or msgmax // 4 > 2**31 - 1:
        pytest.skip("no msgmax here, or one no int32 batch reaches")
    slots = msgmax // 4 - 1  # (slots + 2) * 4 bytes: just over the limit
    path = _trace(tmp_path, _set("config.max_num_seqs", slots))
    assert main(["trace", "validate", str(path)]) == 0
    capsys.readouterr()
    line = fails(capsys, ["replay", path, "--device", "cpu", "-o", tmp_path / "run.json"], "kernel.msgmax")
    assert f"max_num_seqs {slots:,}" in line and f"use max_num_seqs {slots - 1:,} or fewer" in line
    assert not (tmp_path / "run.json").exists()


# --------------------------------------------------------------------------- environment


def test_a_cache_dir_that_is_a_file(tmp_path):
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    done = _bounded_cli("ops", "build", env={"FDOVERLAP_CACHE_DIR": str(cache)})
    _one_error_line(done, f"FDOVERLAP_CACHE_DIR={cache} is not usable: Not a directory")


@pytest.mark.parametrize(("errno_", "where"), [(30, "mkdir"), (28, "mkdtemp")], ids=["read-only", "full"])
def test_a_cache_dir_that_cannot_be_written(tmp_path, monkeypatch, errno_, where):
    """A read-only or full cache folder (made so here: as root every folder is writable): one line naming
    the variable and the folder."""
    import pathlib
    import tempfile

    from fdoverlap_cli import ops
    from fdoverlap_cli.errors import FdoError

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno_, os.strerror(errno_))

    cache = tmp_path / "cache"
    if where == "mkdir":
        monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
    else:
        monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    monkeypatch.setenv("FDOVERLAP_CACHE_DIR", str(cache))
    with pytest.raises(FdoError, match=rf"FDOVERLAP_CACHE_DIR={cache} is not usable: {os.strerror(errno_)}"):
        ops.build(force=True)
