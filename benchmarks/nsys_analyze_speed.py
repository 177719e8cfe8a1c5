"""How fast `fdoverlap analyze` reads a large Nsight Systems export, and how much memory it takes.

Synthesises an export of a simulated engine run (sync and overlap paths, N steps each, the real
export's table definitions copied from tests/fixtures/nsys) and times `nsys.analysis.analyze`
on it: every summary, the attribution to steps and the metrics of both paths. The analysis runs in a
fresh process so its peak RSS is its own. Target: 1M NVTX+CUPTI rows in 10 s on a 2-core machine.
Usage: python benchmarks/nsys_analyze_speed.py [--steps 5000] [--forward-kernels 40] [--kernel-ns 40000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

FIXTURE = ROOT / "tests" / "fixtures" / "nsys" / "paddle-h100-nvtx-dtoh.sqlite"
ROW_TABLES = ("NVTX_EVENTS", "CUPTI_ACTIVITY_KIND_RUNTIME", "CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_MEMCPY")


def _peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM: getrusage's maxrss would include the parent's, kept across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(path: str) -> None:
    """In the child: analyze `path` once; print the wall time and peak RSS as JSON."""
    from fdoverlap_cli.nsys.analysis import analyze

    before = _peak_rss_mib()
    t = time.perf_counter()
    a = analyze(path)
    seconds = time.perf_counter() - t
    hidden = {name: p.metrics.hidden for name, p in a.paths.items()}
    print(json.dumps({"seconds": seconds, "rss_before_mib": before, "rss_peak_mib": _peak_rss_mib(), "hidden": hidden}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="steps per path")
    parser.add_argument("--forward-kernels", type=int, default=40, help="kernels launched in each forward")
    parser.add_argument("--kernel-ns", type=int, default=40_000, help="forward kernel ns (under 4000: launch-bound)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return

    import dataclasses

    from tests.loop_model import ENGINE, write_export

    with tempfile.TemporaryDirectory(prefix="nsys-bench-") as tmp:
        export = Path(tmp) / "large.sqlite"
        t = time.perf_counter()
        k = args.forward_kernels
        costs = dataclasses.replace(ENGINE, forward=k * args.kernel_ns, forward_kernels=k)
        write_export(export, args.steps, costs, schema_from=FIXTURE)
        made = time.perf_counter() - t
        with sqlite3.connect(export) as db:
            counts = {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ROW_TABLES}
        rows = sum(counts.values())
        per_table = ", ".join(f"{table.rsplit('_', 1)[-1].lower()} {n:,}" for table, n in counts.items())
        print(f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, {platform.machine()}")
        print(
            f"export: {args.steps:,} steps per path, {rows:,} NVTX+CUPTI rows "
            f"({per_table}), "
            f"{export.stat().st_size / 2**20:,.0f} MiB, made in {made:.1f} s"
        )
        runs = []
        for _ in range(args.repeat):
            child = subprocess.run(
                [sys.executable, __file__, "--measure", str(export)], capture_output=True, text=True, check=True
            )
            runs.append(json.loads(child.stdout))
        best = min(runs, key=lambda r: r["seconds"])
        print(
            f"analyze: best of {args.repeat} {best['seconds']:.2f} s = {rows / best['seconds']:,.0f} rows/s "
            f"(1M rows in {1e6 / rows * best['seconds']:.1f} s); peak RSS {best['rss_peak_mib']:.0f} MiB "
            f"({best['rss_before_mib']:.0f} MiB after imports); hidden {best['hidden']}"
        )


if __name__ == "__main__":
    main()
