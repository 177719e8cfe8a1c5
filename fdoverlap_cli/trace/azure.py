"""Import the Azure LLM inference trace (CSV: TIMESTAMP, ContextTokens, GeneratedTokens) as a trace.

Reading (`read_azure_csv`) is apart from shaping (`import_azure`): select a time window and the
first N requests, fit lengths to max_model_len, map arrival times to steps at an assumed step
time (step = floor((t - t_first) / step_ms)), then schedule. The attribution the dataset's
licence asks for (CC-BY 4.0, Patel et al., "Splitwise", ISCA 2024) goes into the trace's meta.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import math
import os
from pathlib import Path

from fdoverlap_cli.errors import InputError, clip
from fdoverlap_cli.fileio import read_input
from fdoverlap_cli.trace.format import MAX_INT, Request, Trace
from fdoverlap_cli.trace.scheduler import MAX_REQUESTS, SchedulerOptions, schedule_trace

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
LONG_POLICIES = ("truncate", "drop")
ATTRIBUTION = {
    "dataset": "Azure LLM inference trace 2023 (Azure Public Dataset)",
    "url": "https://github.com/Azure/AzurePublicDataset",
    "license": "CC-BY 4.0",
    "citation": 'Patel et al., "Splitwise: Efficient generative LLM inference using phase splitting", ISCA 2024',
}


@dataclasses.dataclass(frozen=True, slots=True)
class AzureRow:
    """One request of the CSV: its line, arrival time in seconds (any fixed origin), lengths."""

    line: int
    time_s: float
    prompt_len: int
    output_len: int


@dataclasses.dataclass(frozen=True, slots=True)
class AzureCsv:
    rows: list[AzureRow]  # in arrival order
    bad_rows: int  # malformed rows skipped (only with skip_bad_rows)
    sha256: str


@dataclasses.dataclass(frozen=True, slots=True)
class AzureImportSpec:
    """Everything that determines an imported trace (besides the CSV's content)."""

    csv_path: str
    step_ms: float = 20.0  # assumed duration of one scheduler step
    start_s: float = 0.0  # window start, seconds after the first arrival in the file
    duration_s: float | None = None  # window length; None: to the end
    limit: int | None = None  # the first N requests kept
    long: str = "truncate"  # requests longer than max_model_len: truncate the output, or drop
    skip_bad_rows: bool = False
    scheduler: SchedulerOptions = dataclasses.field(
        default_factory=lambda: SchedulerOptions(max_num_seqs=64, max_model_len=2048)
    )

    def command(self) -> str:
        """The canonical command line (the CSV by file name; every option spelled out)."""
        parts = [
            f"fdoverlap trace import azure {_file_name(self.csv_path)}",
            f"--step-ms {self.step_ms:g}",
            f"--start {self.start_s:g}",
        ]
        if self.duration_s is not None:
            parts.append(f"--duration {self.duration_s:g}")
        if self.limit is not None:
            parts.append(f"--limit {self.limit}")
        parts += [f"--long {self.long}", *self.scheduler.flags()]
        if self.skip_bad_rows:
            parts.append("--skip-bad-rows")
        return " ".join(parts)


@dataclasses.dataclass(frozen=True, slots=True)
class AzureImport:
    """The trace and what the import did to get it."""

    trace: Trace
    rows: int  # well-formed rows in the CSV
    bad_rows: int  # malformed rows skipped
    selected: int  # rows in the window (before --limit)
    truncated: int  # outputs cut to fit max_model_len
    dropped: int  # requests that could not fit max_model_len
    preemptions: int


def _file_name(path: str | os.PathLike[str]) -> str:
    """The CSV's file name as text for the trace's meta (bytes that are not UTF-8 as \\xNN escapes)."""
    return os.fsencode(Path(path).name).decode("utf-8", "backslashreplace")


def _shown(field: str) -> str:
    """A CSV field in a message: quoted, and cut when long (a 5,000-digit count is not a message)."""
    return repr(field) if len(field) <= 60 else f"{clip(field)!r}"


def _parse_time(text: str, days: dict[str, int]) -> float:
    # "2023-11-16 18:15:46.6805900": seconds since 0001-01-01, from the date's ordinal and the clock.
    date, _, clock = text.strip().partition(" ")
    if date not in days:
        days[date] = datetime.date.fromisoformat(date).toordinal()
    hours, minutes, seconds = clock.split(":")
    h, m, s = int(hours), int(minutes), float(seconds)
    if not (0 <= h < 24 and 0 <= m < 60 and 0 <= s < 61 and math.isfinite(s)):
        raise ValueError(text)
    return days[date] * 86400.0 + h * 3600 + m * 60 + s


def _parse_row(fields: list[str], columns: tuple[int, int, int], days: dict[str, int]) -> tuple[float, int, int]:
    # Raises InputError(column, reason) for the first bad field.
    if len(fields) <= max(columns):
        raise InputError("", f"expected {max(columns) + 1} fields, got {len(fields)}")
    raw_time, raw_prompt, raw_output = (fields[c] for c in columns)
    try:
        time_s = _parse_time(raw_time, days)
    except ValueError:
        got = _shown(raw_time)
        raise InputError("TIMESTAMP", f"expected a time like '2023-11-16 18:15:46.6805900', got {got}") from None
    lengths = []
    for name, raw in (("ContextTokens", raw_prompt), ("GeneratedTokens", raw_output)):
        try:
            value = int(raw)
        except ValueError:
            raise InputError(name, f"expected an integer, got {_shown(raw)}") from None
        if value < 1:
            raise InputError(name, f"expected a count of at least 1, got {clip(str(value))}")
        lengths.append(value)
    return time_s, lengths[0], lengths[1]


def read_azure_csv(path: str | os.PathLike[str], *, skip_bad_rows: bool = False) -> AzureCsv:
    """Parse the CSV; a malformed row is an InputError 'FILE:LINE: COLUMN: reason' unless skipped."""
    p = Path(path)
    raw = read_input(p, "CSV file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(str(p), f"is not UTF-8 text (byte {e.start})") from None
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise InputError(f"{p}:1", f"cannot parse the header: {e}") from None
    if header is None:
        raise InputError(f"{p}:1", f"empty file: expected the header {','.join(COLUMNS)}")
    names = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        got = clip(",".join(names), 120)
        raise InputError(
            f"{p}:1", f"header lacks column {', '.join(missing)} (expected {','.join(COLUMNS)}, got {got})"
        )
    columns = (names.index(COLUMNS[0]), names.index(COLUMNS[1]), names.index(COLUMNS[2]))
    days: dict[str, int] = {}
    rows = []
    bad = 0
    while True:
        try:
            fields = next(reader, None)
        except csv.Error as e:  # e.g. a field over csv.field_size_limit() (131,072 characters)
            raise InputError(f"{p}:{reader.line_num}", f"cannot parse the row: {e}") from None
        if fields is None:
            break
        line = reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        try:
            time_s, prompt, output = _parse_row(fields, columns, days)
        except InputError as e:
            if skip_bad_rows:
                bad += 1
                continue
            where = f"{p}:{line}: {e.where}" if e.where else f"{p}:{line}"
            raise InputError(where, e.reason) from None
        rows.append(AzureRow(line, time_s, prompt, output))
    rows.sort(key=lambda r: r.time_s)  # stable: a sorted file stays in file order
    return AzureCsv(rows, bad, hashlib.sha256(raw).hexdigest())


def _check_spec(spec: AzureImportSpec) -> None:
    if not (spec.step_ms > 0 and math.isfinite(spec.step_ms)):
        raise InputError("--step-ms", f"must be a positive number of milliseconds, got {spec.step_ms}")
    if not (spec.start_s >= 0 and math.isfinite(spec.start_s)):
        raise InputError("--start", f"must be a number of seconds >= 0, got {spec.start_s}")
    if spec.duration_s is not None and not (spec.duration_s > 0 and math.isfinite(spec.duration_s)):
        raise InputError("--duration", f"must be a positive number of seconds, got {spec.duration_s}")
    if spec.limit is not None and spec.limit < 1:
        raise InputError("--limit", f"must be at least 1, got {spec.limit}")
    if spec.long not in LONG_POLICIES:
        raise InputError("--long", f"expected one of {', '.join(LONG_POLICIES)}, got {spec.long!r}")


def import_azure(spec: AzureImportSpec) -> AzureImport:
    """Read, select, fit and schedule the Azure CSV of `spec` into a trace."""
    _check_spec(spec)
    table = read_azure_csv(spec.csv_path, skip_bad_rows=spec.skip_bad_rows)
    if not table.rows:
        raise InputError(spec.csv_path, "no requests in the file")
    origin = table.rows[0].time_s + spec.start_s
    end = math.inf if spec.duration_s is None else origin + spec.duration_s
    window = [r for r in table.rows if origin <= r.time_s < end]
    kept: list[AzureRow] = []
    truncated = dropped = 0
    max_len = spec.scheduler.max_model_len or math.inf  # None: the scheduler fits max_model_len to the requests
    for r in window:
        if spec.limit is not None and len(kept) == spec.limit:
            break
        if r.prompt_len + r.output_len > max_len:
            # Truncate as a server would: stop generating at max_model_len; a prompt that leaves no
            # room for one token cannot be served at all.
            if spec.long == "drop" or r.prompt_len >= max_len:
                dropped += 1
                continue
            truncated += 1
            r = dataclasses.replace(r, output_len=int(max_len) - r.prompt_len)
        kept.append(r)
    if not kept:
        raise InputError(spec.csv_path, f"no request left in the window ({len(window)} in it, {dropped} dropped)")
    if len(kept) > MAX_REQUESTS:
        too_many = f"{len(kept):,} requests in the window, more than a trace holds ({MAX_REQUESTS:,})"
        raise InputError(spec.csv_path, f"{too_many}: use --limit or --duration")
    first = kept[0].time_s
    last_step = (kept[-1].time_s - first) * 1000.0 / spec.step_ms  # arrivals are sorted: the latest is the last
    if not last_step <= MAX_INT:
        raise InputError("--step-ms", f"{spec.step_ms:g} ms per step puts the last arrival beyond step 2^62")
    requests = [
        Request(
            id=f"r{i}",
            prompt_len=r.prompt_len,
            output_len=r.output_len,
            arrival_step=math.floor((r.time_s - first) * 1000.0 / spec.step_ms),
        )
        for i, r in enumerate(kept)
    ]
    meta = {
        "generator": "fdoverlap trace import azure",
        "command": spec.command(),
        "source": {**ATTRIBUTION, "file": _file_name(spec.csv_path), "sha256": table.sha256},
        "step_ms": spec.step_ms,
        "import": {
            "rows": len(table.rows),
            "bad_rows_skipped": table.bad_rows,
            "in_window": len(window),
            "truncated": truncated,
            "dropped": dropped,
            "first_line": kept[0].line,
            "last_line": kept[-1].line,
        },
    }
    trace = schedule_trace(requests, spec.scheduler, meta)
    return AzureImport(
        trace=trace,
        rows=len(table.rows),
        bad_rows=table.bad_rows,
        selected=len(window),
        truncated=truncated,
        dropped=dropped,
        preemptions=trace.meta["scheduler"]["preemptions"],
    )
