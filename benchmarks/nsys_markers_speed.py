"""How fast steps are found without NVTX in a large export, and how much memory it takes.

Synthesises the export of a loop that emits no NVTX (tests/foreign_exports.py: per step a host gap, four
forward kernels and a sampler, a pinned DtoH copy, an event record and a wait one step late) and times
`nsys.markers.find_steps_in` on it in a fresh process, best of --repeat: with the marker chosen
automatically (every candidate tried) and with --steps given. Peak RSS is the analysing process's VmHWM.
Usage: python benchmarks/nsys_markers_speed.py [--steps 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

ROW_TABLES = (
    "CUPTI_ACTIVITY_KIND_RUNTIME",
    "CUPTI_ACTIVITY_KIND_KERNEL",
    "CUPTI_ACTIVITY_KIND_MEMCPY",
    "CUPTI_ACTIVITY_KIND_CUDA_EVENT",
    "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION",
)


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(path: str, spec: str | None) -> None:
    """In the child: find the steps once; print the wall time and peak RSS as JSON."""
    from fdoverlap_cli.nsys.markers import find_steps_in

    t = time.perf_counter()
    r = find_steps_in(path, spec)
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "rss_peak_mib": _peak_rss_mib(), "marker": r.choice.spec,
                      "steps": r.run.steps}))  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--measure", nargs=2, metavar=("EXPORT", "SPEC"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        measure(args.measure[0], None if args.measure[1] == "auto" else args.measure[1])
        return
    from tests.foreign_exports import LoopShape, write_loop

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "loop.sqlite"
        t = time.perf_counter()
        write_loop(path, LoopShape(steps=args.steps, host_ns=50_000, one_step_late=True))
        made = time.perf_counter() - t
        with sqlite3.connect(path) as db:
            rows = sum(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ROW_TABLES)
        print(f"export: {args.steps} steps, {rows:,} CUPTI rows, {path.stat().st_size / 2**20:.0f} MiB "
              f"(written in {made:.1f} s)")  # fmt: skip
        for spec in ("auto", "sync:event"):
            runs = []
            for _ in range(args.repeat):
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", str(path), spec],
                    capture_output=True, text=True, check=True, cwd=ROOT,
                )  # fmt: skip
                runs.append(json.loads(out.stdout))
            best = min(runs, key=lambda r: r["seconds"])
            print(f"--steps {spec}: {best['marker']}, {best['steps']} steps, best of {args.repeat} "
                  f"{best['seconds']:.2f} s = {rows / best['seconds']:,.0f} rows/s, "
                  f"peak RSS {max(r['rss_peak_mib'] for r in runs):.0f} MiB")  # fmt: skip
    print(f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, {platform.machine()}")


if __name__ == "__main__":
    main()
