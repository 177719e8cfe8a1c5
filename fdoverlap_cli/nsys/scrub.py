"""A copy of an Nsight Systems SQLite export without what it gives away about the machine that took it.

nsys stores the profiled process's whole environment and its working directory in the export:
META_DATA_CAPTURE (rows `PROCESS_n:ENVIRONMENT_VARIABLE`, `PROCESS_n:WORKING_DIR`),
TARGET_INFO_SYSTEM_ENV (`DeviceEnvironment`: `NAME=value;…`, and `Hostname`), META_DATA_EXPORT (the
host, the user, absolute paths) and StringIds, one row per process holding its environment as
NUL-separated `NAME=value` entries (no table refers to those rows). `scrub_export` empties all of these,
writes '.' for the working directory and '~' for the home directory wherever else these metadata tables
name them, and rewrites the file (VACUUM) so that the old text is not left in its free pages. What the
analysis reads (kernels, copies, API calls, NVTX ranges and their strings) is not touched.

An .nsys-rep report holds the same and cannot be scrubbed: share the scrubbed .sqlite instead.
"""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.fileio import atomic_path, refuse_overwriting_inputs

CAPTURE = "META_DATA_CAPTURE"
EXPORT = "META_DATA_EXPORT"
SYSTEM = "TARGET_INFO_SYSTEM_ENV"
STRINGS = "StringIds"
_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=", re.ASCII)
_SYSTEM_ROWS = ("DeviceEnvironment", "Hostname")
_EXPORT_ROWS = ("EXPORT_HOST", "EXPORT_USER")
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Scrubbed:
    """What one scrub removed."""

    out: Path
    environment_rows: int  # META_DATA_CAPTURE environment variables and StringIds environment blocks
    paths_rewritten: int  # metadata values that named the working or the home directory
    system_rows: int  # TARGET_INFO_SYSTEM_ENV and META_DATA_EXPORT rows emptied (environment, host, user)


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _recorded_environment(db: sqlite3.Connection, tables: set[str]) -> dict[str, set[str]]:
    """Variable name -> the values the export recorded for it (from the capture's and the target's rows)."""
    found: dict[str, set[str]] = {}
    entries: list[str] = []
    if CAPTURE in tables:
        rows = db.execute(f"SELECT value FROM {CAPTURE} WHERE name LIKE '%:ENVIRONMENT_VARIABLE'")
        entries += [value for (value,) in rows if value]
    if SYSTEM in tables:
        rows = db.execute(f"SELECT value FROM {SYSTEM} WHERE name = 'DeviceEnvironment'")
        entries += [entry for (value,) in rows for entry in (value or "").split(";")]
    if STRINGS in tables:
        for (value,) in db.execute(f"SELECT value FROM {STRINGS} WHERE instr(value, char(0)) > 0"):
            entries += value.split("\0")
    for entry in entries:
        name, sep, value = entry.partition("=")
        if sep and _ENTRY.match(entry):
            found.setdefault(name, set()).add(value.strip('"'))
    return found


def _environment_strings(db: sqlite3.Connection, names: set[str]) -> list[int]:
    """StringIds ids of environment rows: NUL-separated NAME=value blocks, or one recorded NAME=value."""
    ids = []
    for string_id, value in db.execute(f"SELECT id, value FROM {STRINGS} WHERE instr(value, '=') > 0"):
        entries = [e for e in str(value).split("\0") if e]
        if not entries or not all(_ENTRY.match(e) for e in entries):
            continue
        if len(entries) > 1 or entries[0].partition("=")[0] in names:
            ids.append(string_id)
    return ids


def _directories(db: sqlite3.Connection, tables: set[str], environment: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(directory, what it becomes) for the working and the home directory, longest first."""
    working = set(environment.get("PWD", ()))
    if CAPTURE in tables:
        working |= {v for (v,) in db.execute(f"SELECT value FROM {CAPTURE} WHERE name LIKE '%:WORKING_DIR'") if v}
    pairs = {d.rstrip("/"): "." for d in working} | {d.rstrip("/"): "~" for d in environment.get("HOME", ())}
    return sorted(((d, r) for d, r in pairs.items() if d), key=lambda p: -len(p[0]))


def _rewrite(text: str, directories: list[tuple[str, str]]) -> str:
    for directory, replacement in directories:
        text = re.sub(rf"{re.escape(directory)}(?=/|$|[\s\"';:,])", replacement, text)
    return text


def _scrub(db: sqlite3.Connection) -> tuple[int, int, int]:
    tables = _tables(db)
    if EXPORT not in tables:
        raise ValueError(f"not an Nsight Systems export (no {EXPORT} table)")
    environment = _recorded_environment(db, tables)
    directories = _directories(db, tables, environment)
    env_rows = system_rows = rewritten = 0
    if CAPTURE in tables:
        env_rows += db.execute(f"DELETE FROM {CAPTURE} WHERE name LIKE '%:ENVIRONMENT_VARIABLE'").rowcount
        db.execute(f"UPDATE {CAPTURE} SET value = '' WHERE name LIKE '%:WORKING_DIR'")
    if STRINGS in tables:
        ids = _environment_strings(db, set(environment))
        db.executemany(f"UPDATE {STRINGS} SET value = '' WHERE id = ?", [(i,) for i in ids])
        env_rows += len(ids)
    for table, names in ((SYSTEM, _SYSTEM_ROWS), (EXPORT, _EXPORT_ROWS)):
        if table in tables:
            marks = ",".join("?" * len(names))
            query = f"UPDATE {table} SET value = '' WHERE name IN ({marks}) AND value != ''"
            system_rows += db.execute(query, names).rowcount
    for table in (CAPTURE, EXPORT, SYSTEM):
        if table not in tables or not directories:
            continue
        for rowid, value in db.execute(f"SELECT rowid, value FROM {table} WHERE value LIKE '%/%'").fetchall():
            new = _rewrite(value, directories)
            if new != value:
                db.execute(f"UPDATE {table} SET value = ? WHERE rowid = ?", (new, rowid))
                rewritten += 1
    return env_rows, rewritten, system_rows


def scrub_export(
    source: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *, in_place: bool = False
) -> Scrubbed:
    """Write a copy of the nsys SQLite export `source` to `out` without the capturing machine's environment,
    working directory, host and user name (see the module docstring). The input is never modified unless
    `in_place` (then `out` is left out, and `source` is replaced whole, atomically, once the copy is done)."""
    src = Path(source)
    if in_place == (out is not None):
        raise ValueError("give either out or in_place=True")
    dest = src if in_place else Path(out)  # type: ignore[arg-type]
    if not in_place:
        refuse_overwriting_inputs({"the scrubbed export": dest}, {"the export": src})
    try:
        with open(src, "rb") as f:
            magic = f.read(len(_SQLITE_MAGIC))
    except OSError as e:
        raise InputError(str(src), f"cannot read: {e.strerror or e}") from None
    if magic != _SQLITE_MAGIC:
        raise InputError(str(src), "not a SQLite file (an nsys export is `nsys export --type sqlite`)")
    with atomic_path(dest) as tmp:
        reader = sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True)
        writer = sqlite3.connect(tmp)
        try:
            reader.backup(writer)
            writer.execute("PRAGMA journal_mode = MEMORY")  # no journal file beside the temporary one
            with writer:
                counts = _scrub(writer)
            writer.execute("VACUUM")  # the text taken out must not stay behind in free pages
        except (sqlite3.DatabaseError, ValueError) as e:
            raise InputError(str(src), f"cannot scrub the export: {e}") from None
        finally:
            writer.close()
            reader.close()
    return Scrubbed(dest, *counts)
