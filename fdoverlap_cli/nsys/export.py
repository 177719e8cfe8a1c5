"""Reading an Nsight Systems SQLite export (`nsys export --type sqlite`): parsing only, streamed.

Written against export schema 3.20 (Nsight Systems 2025.3). Every stream below is a cursor over
the export in time order, fetched in batches, so a large report is never loaded whole; the aggregates
(counts and totals, computed by SQLite) are `statistics`'s. What the rows mean for fdoverlap's steps is
`steps`'s business; this module only turns rows into records.

Tables read: META_DATA_EXPORT (schema version), StringIds (names), NVTX_EVENTS (ranges, domains,
categories), CUPTI_ACTIVITY_KIND_RUNTIME (API calls), CUPTI_ACTIVITY_KIND_KERNEL,
CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_GRAPH_TRACE, ENUM_CUDA_MEMCPY_OPER and ENUM_CUDA_MEM_KIND
(the copy kinds as nsys numbers them), ANALYSIS_DETAILS (the profiled window), TARGET_INFO_GPU (the GPUs' names).

CUDA graphs: a `cudaGraphLaunch` is one API call. Traced per node (`nsys --cuda-graph-trace=node`), each
kernel of the graph is a KERNEL row with the launch's correlationId (and a graphNodeId); traced as a whole
(nsys's default, `--cuda-graph-trace=graph`), the launch is one GRAPH_TRACE row (start, end, streamId,
correlationId, graphId) and its kernels are not in the export. Either way the GPU records join the call
that launched them on correlationId.

Refused on open, each in one line: a file that is not an export of a known schema, and a record that
ends before it starts (naming its table and row: nsys never writes one, and every duration and busy
share read from it would be negative). Text nsys writes as TEXT is read as text even where it is stored
as a BLOB; a BLOB that is not UTF-8 is an unreadable export.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy as np

from fdoverlap_cli.errors import InputError

SCHEMA_MAJOR = 3  # a different major version is refused
SCHEMA_MINOR = 20  # a different minor version is read with a warning
WRITTEN_AGAINST = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR} (Nsight Systems 2025.3)"

# NVTX_EVENTS.eventType (ENUM_NSYS_EVENT_TYPE)
NVTX_CATEGORY = 33
NVTX_PUSH_POP = 59
NVTX_START_END = 60
NVTX_DOMAIN_CREATE = 75

META = "META_DATA_EXPORT"
STRINGS = "StringIds"
NVTX = "NVTX_EVENTS"
RUNTIME = "CUPTI_ACTIVITY_KIND_RUNTIME"
KERNEL = "CUPTI_ACTIVITY_KIND_KERNEL"
MEMCPY = "CUPTI_ACTIVITY_KIND_MEMCPY"
GRAPH_TRACE = "CUPTI_ACTIVITY_KIND_GRAPH_TRACE"  # one row per graph launch traced as a whole
MEMCPY_KINDS = "ENUM_CUDA_MEMCPY_OPER"
MEMORY_KINDS = "ENUM_CUDA_MEM_KIND"
ANALYSIS = "ANALYSIS_DETAILS"
GPUS = "TARGET_INFO_GPU"

_SQLITE_MAGIC = b"SQLite format 3\x00"
_BATCH = 8192
CHUNK = 65536  # rows per list for the readers that turn rows into numpy arrays
_PAYLOAD_COLUMNS = ("int64Value", "uint64Value", "int32Value", "uint32Value")
TID_BITS = 24  # globalTid = globalPid + tid: the low 24 bits are the thread id


def process_id(global_tid: int) -> int:
    """The OS process id inside nsys's globalTid/globalPid (bits 24-47; the top bits are the VM id)."""
    return (global_tid >> TID_BITS) & 0xFFFFFF


class NvtxRange(NamedTuple):
    """One NVTX range [start, end) on thread `tid`; `end` is None for a range never closed."""

    start: int
    end: int | None
    push_pop: bool  # push/pop (nested per thread) rather than start/end
    tid: int
    domain: int  # domainId (0: the default domain)
    category: int | None
    name: str | None  # the message (registered or plain text); None when only a category names it
    payload: int | None  # an integer payload, the step index for fdoverlap's ranges


class Launch(NamedTuple):
    """A CUDA API call on thread `tid`, with the GPU record it triggered (gpu = None when it has none).

    gpu is KERNEL, MEMCPY or GRAPH_TRACE; a call that triggered several (a graph launch traced per node)
    comes once per record.
    """

    start: int
    end: int
    tid: int
    name_id: int  # StringIds id of the API function's name
    correlation_id: int | None
    gpu: str | None
    gpu_start: int | None
    gpu_end: int | None
    stream: int | None
    kernel_name_id: int | None  # StringIds id of the kernel's short name
    copy_kind: int | None  # ENUM_CUDA_MEMCPY_OPER id
    src_kind: int | None  # ENUM_CUDA_MEM_KIND id
    dst_kind: int | None
    bytes: int | None


def int64_rows(rows: list[tuple]) -> np.ndarray:
    """A batch of integer rows as an int64 array (n, width): through one flat iterator, about twice as fast as
    np.array on a list of tuples; a NULL (None) or a text is a TypeError or ValueError, as from np.array."""
    width = len(rows[0]) if rows else 0
    flat = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=len(rows) * width)
    return flat.reshape(len(rows), width)


class NsysExport:
    """An open export: its version, its tables, and cursors over its records (use as a context manager)."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db
        self._strings: dict[int, str] = {}
        self._names: dict[tuple[str, str], dict[int, str]] = {}
        self.warnings: list[str] = []
        self.tables = frozenset(name for (name,) in self.rows("SELECT name FROM sqlite_master WHERE type='table'"))
        if not self.tables:
            raise InputError(str(path), "an empty SQLite database, not an Nsight Systems export")
        if META not in self.tables or STRINGS not in self.tables:
            raise InputError(str(path), f"not an Nsight Systems export (no {META} or {STRINGS} table)")
        self.meta = dict(self.rows(f"SELECT CAST(name AS TEXT), CAST(value AS TEXT) FROM {META}"))
        self.version = self._check_version()
        self._check_order()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | Path) -> NsysExport:
        """Open `path` read-only; anything that is not a readable export of a known version is an InputError."""
        p = Path(path)
        try:
            with p.open("rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as e:
            raise InputError(str(p), e.strerror or str(e)) from None
        if not head:
            raise InputError(str(p), "empty file")
        if head != _SQLITE_MAGIC:
            raise InputError(str(p), "not a SQLite file (expected an `nsys export --type sqlite` output)")
        try:
            db = sqlite3.connect(f"file:{quote(str(p.resolve()))}?mode=ro&immutable=1", uri=True)
        except sqlite3.Error as e:
            raise InputError(str(p), f"cannot open the SQLite file: {e}") from None
        try:
            return cls(p, db)
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> NsysExport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_version(self) -> tuple[int, ...]:
        text = self.meta.get("EXPORT_SCHEMA_VERSION")
        if not text:
            raise InputError(str(self.path), f"no EXPORT_SCHEMA_VERSION in {META}: not an Nsight Systems export")
        try:
            version = tuple(int(part) for part in text.split("."))
        except ValueError:
            raise InputError(str(self.path), f"unreadable export schema version {text!r}") from None
        if version[0] != SCHEMA_MAJOR:
            raise InputError(
                str(self.path),
                f"export schema {text} is not supported (fdoverlap reads schema {WRITTEN_AGAINST}); "
                "export the report with a matching Nsight Systems",
            )
        if len(version) < 2 or version[1] != SCHEMA_MINOR:
            self.warnings.append(
                f"export schema {text} is not the one fdoverlap was written against ({WRITTEN_AGAINST}); "
                "reading it the same way"
            )
        return version

    # ------------------------------------------------------------------ low level

    def _unreadable(self, e: sqlite3.Error) -> InputError:
        if str(e).startswith("Could not decode to UTF-8"):
            return InputError(str(self.path), "cannot read the export: a text value that is not UTF-8")
        return InputError(str(self.path), f"cannot read the export ({e}); is the file truncated or corrupt?")

    def _check_order(self) -> None:
        """Refuse a record with end < start (see the module docstring)."""
        for table in (NVTX, RUNTIME, KERNEL, MEMCPY, GRAPH_TRACE):
            if not {"start", "end"} <= self.columns(table):
                continue
            integers = "typeof(start) = 'integer' AND typeof(end) = 'integer'"  # other values: reading them says so
            sql = f"SELECT rowid, start, end FROM {table} WHERE {integers} AND end < start LIMIT 1"
            for rowid, start, end in self.rows(sql):
                raise InputError(
                    str(self.path), f"{table} row {rowid} ends before it starts (start {start}, end {end})"
                )

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> Iterator[tuple]:
        """The rows of `sql`, fetched in batches; SQLite errors become one InputError."""
        try:
            cursor = self._db.execute(sql, params)
            while rows := cursor.fetchmany(_BATCH):
                yield from rows
        except sqlite3.Error as e:
            raise self._unreadable(e) from None

    def batches(self, sql: str, params: tuple[Any, ...] = (), size: int = _BATCH) -> Iterator[list[tuple]]:
        """The rows of `sql` in lists of up to `size`, for readers that turn rows into arrays; errors as InputError."""
        try:
            cursor = self._db.execute(sql, params)
            while rows := cursor.fetchmany(size):
                yield rows
        except sqlite3.Error as e:
            raise self._unreadable(e) from None

    def columns(self, table: str) -> frozenset[str]:
        """The column names of `table` (empty when the table is missing)."""
        if table not in self.tables:
            return frozenset()
        return frozenset(row[1] for row in self.rows(f"PRAGMA table_info({table})"))

    def string(self, string_id: int | None) -> str | None:
        """The StringIds value of `string_id` (cached; None for None or an unknown id)."""
        if string_id is None:
            return None
        if string_id not in self._strings:
            row = next(self.rows(f"SELECT CAST(value AS TEXT) FROM {STRINGS} WHERE id = ?", (string_id,)), None)
            self._strings[string_id] = row[0] if row else None
        return self._strings[string_id]

    # ------------------------------------------------------------------ small lookups

    @property
    def schema_version(self) -> str:
        return self.meta.get("EXPORT_SCHEMA_VERSION", "?")

    @property
    def product(self) -> str:
        return " ".join(v for v in (self.meta.get("EXPORT_PRODUCT_NAME"), self.meta.get("EXPORT_PRODUCT_VERSION")) if v)

    def domains(self) -> dict[int, str]:
        """NVTX domain id -> name (from the DomainCreate events)."""
        if NVTX not in self.tables:
            return {}
        sql = f"SELECT domainId, CAST(text AS TEXT) FROM {NVTX} WHERE eventType = ? AND domainId IS NOT NULL"
        return {int(d): name for d, name in self.rows(sql, (NVTX_DOMAIN_CREATE,)) if name is not None}

    def categories(self) -> dict[tuple[int, int], str]:
        """(domain id, category id) -> category name (from nvtxDomainNameCategory events)."""
        if NVTX not in self.tables:
            return {}
        sql = f"SELECT domainId, category, CAST(text AS TEXT) FROM {NVTX} WHERE eventType = ? AND category IS NOT NULL"
        return {(int(d or 0), int(c)): name for d, c, name in self.rows(sql, (NVTX_CATEGORY,)) if name is not None}

    def enum(self, table: str) -> dict[int, str]:
        """An ENUM_* table as id -> symbol name (empty when the export lacks it)."""
        if table not in self.tables:
            return {}
        return {int(i): name for i, name in self.rows(f"SELECT id, CAST(name AS TEXT) FROM {table}")}

    def distinct_names(self, table: str, column: str) -> dict[int, str]:
        """StringIds id -> value for every id used in `table.column` (API names, kernel names); read once (the
        export is opened immutable), a copy each call."""
        if table not in self.tables:
            return {}
        if (table, column) not in self._names:
            sql = (  # the distinct ids first, then their names: one lookup per id, not per row
                f"SELECT t.id, CAST(s.value AS TEXT) FROM (SELECT DISTINCT {column} AS id FROM {table}) t "
                f"LEFT JOIN {STRINGS} s ON s.id = t.id"
            )
            found = {int(i): name or f"<string {i}>" for i, name in self.rows(sql) if i is not None}
            self._names[(table, column)] = found
        return dict(self._names[(table, column)])

    def gpu_names(self) -> list[str]:
        """The names of the GPUs the profiled machine had (empty when the export does not say)."""
        if "name" not in self.columns(GPUS):
            return []
        return [name for (name,) in self.rows(f"SELECT DISTINCT CAST(name AS TEXT) FROM {GPUS}") if name]

    def profiled_window(self) -> tuple[int, int] | None:
        """[start, stop) of the whole profiled session in the export's clock, when the export says."""
        if ANALYSIS not in self.tables:
            return None
        row = next(self.rows(f"SELECT min(startTime), max(stopTime) FROM {ANALYSIS}"), None)
        return (int(row[0]), int(row[1])) if row and row[0] is not None and row[1] is not None else None

    # ------------------------------------------------------------------ streams, in time order

    def nvtx_ranges(self) -> Iterator[NvtxRange]:
        """Every push/pop and start/end range, by start time (ties: the outer range first)."""
        if NVTX not in self.tables:
            return iter(())
        payload = [c for c in _PAYLOAD_COLUMNS if c in self.columns(NVTX)]
        payload_sql = f"COALESCE({', '.join(payload)}, NULL)" if payload else "NULL"
        sql = (
            f"SELECT e.start, e.end, e.eventType = {NVTX_PUSH_POP}, e.globalTid, COALESCE(e.domainId, 0), e.category, "
            f"CAST(COALESCE(e.text, s.value) AS TEXT), {payload_sql} "
            f"FROM {NVTX} e LEFT JOIN {STRINGS} s ON s.id = e.textId "
            f"WHERE e.eventType IN ({NVTX_PUSH_POP}, {NVTX_START_END}) ORDER BY e.start, e.end DESC"
        )
        return map(NvtxRange._make, self.rows(sql))

    def launches(self, wait_name_ids: frozenset[int] = frozenset()) -> Iterator[Launch]:
        """API calls that launched GPU work (joined on correlationId within one process), and the calls
        named in `wait_name_ids` (host waits) whether or not they did, by call start time."""
        if RUNTIME not in self.tables:
            return iter(())
        waits = ", ".join(str(int(i)) for i in sorted(wait_name_ids)) or "NULL"
        gpu = []
        if KERNEL in self.tables:
            gpu.append(
                f"SELECT correlationId AS corr, globalPid AS pid, '{KERNEL}' AS what, start, end, streamId, "
                f"shortName AS kname, NULL AS ckind, NULL AS src, NULL AS dst, NULL AS bytes FROM {KERNEL}"
            )
        if MEMCPY in self.tables:
            gpu.append(
                f"SELECT correlationId AS corr, globalPid AS pid, '{MEMCPY}' AS what, start, end, streamId, "
                f"NULL AS kname, copyKind AS ckind, srcKind AS src, dstKind AS dst, bytes FROM {MEMCPY}"
            )
        graph_columns = self.columns(GRAPH_TRACE)
        if {"correlationId", "start", "end"} <= graph_columns:
            pid = "globalPid" if "globalPid" in graph_columns else "NULL"
            stream = "streamId" if "streamId" in graph_columns else "NULL"
            gpu.append(
                f"SELECT correlationId AS corr, {pid} AS pid, '{GRAPH_TRACE}' AS what, start, end, {stream}, "
                f"NULL AS kname, NULL AS ckind, NULL AS src, NULL AS dst, NULL AS bytes FROM {GRAPH_TRACE}"
            )
        if not gpu:  # CUDA traced but no kernel or copy recorded: only the waits
            sql = (
                "SELECT start, end, globalTid, nameId, correlationId, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
                f"NULL, NULL FROM {RUNTIME} WHERE nameId IN ({waits}) ORDER BY start"
            )
            return map(Launch._make, self.rows(sql))
        sql = (
            f"WITH gpu AS ({' UNION ALL '.join(gpu)}) "
            "SELECT r.start, r.end, r.globalTid, r.nameId, r.correlationId, g.what, g.start, g.end, g.streamId, "
            "g.kname, g.ckind, g.src, g.dst, g.bytes "
            f"FROM {RUNTIME} r LEFT JOIN gpu g ON g.corr = r.correlationId "
            f"AND (g.pid IS NULL OR g.pid = (r.globalTid >> {TID_BITS}) << {TID_BITS}) "
            f"WHERE g.corr IS NOT NULL OR r.nameId IN ({waits}) ORDER BY r.start, g.start"
        )
        return map(Launch._make, self.rows(sql))

    def _gpu_intervals_sql(self) -> str | None:
        parts = [f"SELECT start, end FROM {t}" for t in (KERNEL, MEMCPY, GRAPH_TRACE) if t in self.tables]
        return f"{' UNION ALL '.join(parts)} ORDER BY 1" if parts else None

    def gpu_intervals(self) -> Iterator[tuple[int, int]]:
        """(start, end) of every kernel, memory copy and whole-graph record, by start time."""
        sql = self._gpu_intervals_sql()
        return self.rows(sql) if sql else iter(())
