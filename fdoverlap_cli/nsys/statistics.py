"""Aggregates of an Nsight Systems export, computed by SQLite: what `nsys stats` tables are made of.

Counts and totals by kernel name and by copy kind, the CUDA graphs' records, and the per-record durations the
statistics (median, standard deviation) need, streamed in chunks. Reading rows is `export`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from fdoverlap_cli.nsys.export import (
    CHUNK,
    GRAPH_TRACE,
    KERNEL,
    MEMCPY,
    NVTX,
    NVTX_PUSH_POP,
    NVTX_START_END,
    STRINGS,
    NsysExport,
)


class GraphTotals(NamedTuple):
    """CUDA graph work in an export: whole-graph records (traced as a whole) and kernels traced per node."""

    records: int  # GRAPH_TRACE rows: graph launches traced as a whole
    records_ns: int
    node_kernels: int  # KERNEL rows with a graphNodeId: kernels of graphs traced per node


class KernelTotal(NamedTuple):
    name_id: int
    count: int
    total_ns: int


class CopyTotal(NamedTuple):
    copy_kind: int
    src_kind: int | None
    dst_kind: int | None
    count: int
    bytes: int
    total_ns: int


def kernel_totals(export: NsysExport) -> Iterator[KernelTotal]:
    """Kernels grouped by short name, the longest total first."""
    if KERNEL not in export.tables:
        return iter(())
    sql = f"SELECT shortName, count(*), sum(end - start) FROM {KERNEL} GROUP BY shortName ORDER BY 3 DESC"
    return map(KernelTotal._make, export.rows(sql))


def graph_totals(export: NsysExport) -> GraphTotals:
    """Whole-graph records and per-node graph kernels (zeros where the export has neither)."""
    records = records_ns = node_kernels = 0
    if GRAPH_TRACE in export.tables:
        row = next(export.rows(f"SELECT count(*), sum(end - start) FROM {GRAPH_TRACE}"), None)
        records, records_ns = (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)
    if "graphNodeId" in export.columns(KERNEL):
        row = next(export.rows(f"SELECT count(*) FROM {KERNEL} WHERE graphNodeId IS NOT NULL"), None)
        node_kernels = int(row[0] or 0) if row else 0
    return GraphTotals(records, records_ns, node_kernels)


def copy_totals(export: NsysExport) -> Iterator[CopyTotal]:
    """Memory copies grouped by (copy kind, source memory, destination memory)."""
    if MEMCPY not in export.tables:
        return iter(())
    sql = f"SELECT copyKind, srcKind, dstKind, count(*), sum(bytes), sum(end - start) FROM {MEMCPY} GROUP BY 1, 2, 3"
    return map(CopyTotal._make, export.rows(sql))


def range_durations(export: NsysExport) -> Iterator[tuple[int, int | None, str | None, int]]:
    """(domain, category, message, end - start) of every closed range."""
    if NVTX not in export.tables:
        return iter(())
    sql = (
        f"SELECT COALESCE(e.domainId, 0), e.category, CAST(COALESCE(e.text, s.value) AS TEXT), e.end - e.start "
        f"FROM {NVTX} e LEFT JOIN {STRINGS} s ON s.id = e.textId "
        f"WHERE e.eventType IN ({NVTX_PUSH_POP}, {NVTX_START_END}) AND e.end IS NOT NULL"
    )
    return export.rows(sql)


def copy_records(export: NsysExport) -> Iterator[list[tuple[int, int, int]]]:
    """(copy kind, end - start, bytes) of every memory copy (-1 for a kind that is NULL), in lists of CHUNK rows."""
    if MEMCPY not in export.tables:
        return iter(())
    sql = f"SELECT COALESCE(copyKind, -1), end - start, COALESCE(bytes, 0) FROM {MEMCPY}"
    return export.batches(sql, (), CHUNK)


def kernel_records(export: NsysExport) -> Iterator[list[tuple[int, int, int]]]:
    """(start, end, shortName id) of every kernel and (start, end, -1) of every whole-graph record, by start
    time, in lists of CHUNK rows."""
    parts = [f"SELECT start, end, shortName FROM {KERNEL}"] if KERNEL in export.tables else []
    if GRAPH_TRACE in export.tables:
        parts.append(f"SELECT start, end, -1 FROM {GRAPH_TRACE}")
    return export.batches(f"{' UNION ALL '.join(parts)} ORDER BY 1", (), CHUNK) if parts else iter(())


def copy_intervals(export: NsysExport) -> Iterator[list[tuple[int, int]]]:
    """(start, end) of every memory copy, by start time, in lists of CHUNK rows."""
    if MEMCPY not in export.tables:
        return iter(())
    return export.batches(f"SELECT start, end FROM {MEMCPY} ORDER BY 1", (), CHUNK)
