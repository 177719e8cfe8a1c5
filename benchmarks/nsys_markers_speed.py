"""How fast `fdoverlap analyze` reads a large export of a loop without NVTX, and how much memory it takes.

Synthesises the export of a loop that emits no NVTX (tests/foreign_exports.py: per step a host gap,
--kernels forward kernels and a sampler, a pinned DtoH copy, an event record and a wait one step late) and
times, each in a fresh process, best of --repeat:
  analyze   `nsys.analysis.analyze` (every summary, then the steps found with the marker chosen automatically:
            every candidate tried), then its JSON written as `analyze --json` writes it (to /dev/null)
  markers   `nsys.markers.find_steps_in` alone, automatic and with --steps sync:event
Wall and CPU seconds and the process's peak RSS (VmHWM) are printed with the load average before each run
(the machine may be shared: CPU seconds move less than wall seconds under load).
Usage: python benchmarks/nsys_markers_speed.py [--steps 625000] [--kernels 4] [--repeat 2] [--only analyze|markers]
"""

from __future__ import annotations

import argparse
import json
import os
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


def measure(what: str, path: str, spec: str | None) -> None:
    """In the child: one run; print the wall and CPU seconds and the peak RSS as JSON."""
    t, c = time.perf_counter(), time.process_time()
    if what == "analyze":
        from fdoverlap_cli.nsys.analysis import analyze
        from fdoverlap_cli.render import json_stream

        a = analyze(path)
        analyzed, cpu = time.perf_counter() - t, time.process_time() - c
        with open(os.devnull, "w") as sink:
            json_stream.write(a.to_dict(arrays=True), sink)
        r = a.markers
    else:
        from fdoverlap_cli.nsys.markers import find_steps_in

        r = find_steps_in(path, spec)
        analyzed, cpu = time.perf_counter() - t, time.process_time() - c
    print(json.dumps({"seconds": analyzed, "cpu": cpu, "with_json": time.perf_counter() - t,
                      "rss_peak_mib": _peak_rss_mib(), "marker": r.choice.spec, "steps": r.run.steps}))  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=625_000, help="steps of the loop (625,000 x 16 rows = 10M rows)")
    p.add_argument("--kernels", type=int, default=4, help="forward kernels per step")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--only", choices=("analyze", "markers"))
    p.add_argument("--measure", nargs=3, metavar=("WHAT", "EXPORT", "SPEC"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        what, path, spec = args.measure
        measure(what, path, None if spec == "auto" else spec)
        return
    from tests.foreign_exports import LoopShape, write_loop

    print(f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "loop.sqlite"
        t = time.perf_counter()
        write_loop(path, LoopShape(steps=args.steps, kernels=args.kernels, host_ns=50_000, one_step_late=True))
        made = time.perf_counter() - t
        with sqlite3.connect(path) as db:
            rows = sum(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ROW_TABLES)
        print(f"export: {args.steps:,} steps, {args.kernels + 1} kernels each, {rows:,} CUPTI rows, "
              f"{path.stat().st_size / 2**20:.0f} MiB (written in {made:.1f} s)")  # fmt: skip
        runs = [("analyze", "auto"), ("markers", "auto"), ("markers", "sync:event")]
        for what, spec in (r for r in runs if args.only in (None, r[0])):
            results = []
            for _ in range(args.repeat):
                load = os.getloadavg()[0]
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", what, str(path), spec],
                    capture_output=True, text=True, check=True, cwd=ROOT,
                )  # fmt: skip
                results.append({**json.loads(out.stdout), "load": load})
            best = min(results, key=lambda r: r["seconds"])
            label = "analyze (summary + markers)" if what == "analyze" else f"find_steps --steps {spec}"
            extra = f", {best['with_json']:.2f} s with --json" if what == "analyze" else ""
            print(f"{label}: {best['marker']}, {best['steps']:,} steps; best of {args.repeat} {best['seconds']:.2f} s "
                  f"wall ({best['cpu']:.2f} s CPU, load {best['load']:.1f}) = {rows / best['seconds']:,.0f} rows/s"
                  f"{extra}; peak RSS {max(r['rss_peak_mib'] for r in results):.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
