"""Soak: a replay of 100k+ steps with the tiny model on the CPU, watching the memory of both processes.

Synthesises a long decode trace (`fdoverlap trace synth`, many short requests so the context, and so
the step time, stays small), runs `fdoverlap replay TRACE --device cpu --path overlap -o run.json`, and
samples VmRSS of the replay process and of its output reader from /proc every --interval seconds.

Reported: RSS once warmed up (the first sample --warm seconds after the reader started) and at the end
of the replay (the last sample while the reader lives), growth = end / warm - 1 (target: under 5%),
the peak while the results are assembled and written, wall time, and the size of run.json.

--tracemalloc STEPS instead replays the first STEPS steps in this process under tracemalloc and lists
the lines whose allocations grew the most between 20% and 100% of the replay (what grows, and where).

Usage: python benchmarks/soak.py [--steps 100000] [--interval 2] [--warm 30] [--out DIR]
       python benchmarks/soak.py --tracemalloc 20000
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

SLOTS = 16
SYNTH = ["--prompt-len", "16..64", "--output-len", "32..96", "--max-num-seqs", str(SLOTS), "--seed", "7"]
STEPS_PER_REQUEST = 4.0  # 16 slots, about 64 tokens per request: a request adds about 4 steps
SPARK = "▁▂▃▄▅▆▇█"


def cli(*args: str, **kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fdoverlap_cli", *args], cwd=REPO, **kwargs)


def synth(steps: int, out: Path) -> tuple[list[str], int]:
    """The smallest request count (in 1% steps) whose trace has at least `steps` steps."""
    requests = math.ceil(steps / STEPS_PER_REQUEST)
    while True:
        args = ["trace", "synth", "-n", str(requests), *SYNTH, "-o", str(out), "--json"]
        proc = cli(*args, stdout=subprocess.PIPE, text=True)
        stdout = proc.communicate()[0]
        if proc.returncode != 0:
            raise SystemExit(f"trace synth failed ({proc.returncode})")
        made = json.loads(stdout)["steps"]
        if made >= steps:
            return ["fdoverlap", *args], made
        requests = math.ceil(requests * max(1.01, steps / made))


def rss_kib(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)


def reader_of(pid: int) -> int | None:
    """The output reader child of `pid`, if one runs."""
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = entry.read_text()
            cmd = (entry.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid and b"fdoverlap_cli.engine.reader" in cmd:
            return int(entry.parent.name)
    return None


def soak(trace: Path, run_json: Path, interval: float) -> dict[str, Any]:
    """Replay `trace`, sampling (seconds, replay RSS KiB, reader RSS KiB or None) every `interval`."""
    argv = ["replay", str(trace), "--device", "cpu", "--path", "overlap", "-o", str(run_json), "--json"]
    t0 = time.monotonic()
    proc = cli(*argv, stdout=subprocess.PIPE, text=True)
    samples, reader, reader_seen = [], None, None
    while proc.poll() is None:
        reader = reader if reader and rss_kib(reader) else reader_of(proc.pid)
        if reader and reader_seen is None:
            reader_seen = time.monotonic() - t0
        main = rss_kib(proc.pid)
        if main is not None:
            samples.append((round(time.monotonic() - t0, 1), main, rss_kib(reader) if reader else None))
        time.sleep(interval)
    summary = json.loads(proc.communicate()[0])
    if proc.returncode != 0:
        raise SystemExit(f"replay failed ({proc.returncode})")
    return {
        "command": ["fdoverlap", *argv],
        "wall_s": time.monotonic() - t0,
        "reader_started_s": reader_seen,
        "samples": samples,
        "replay": summary["paths"]["overlap"]["metrics"],
    }


def report(result: dict[str, Any], warm_s: float) -> dict[str, Any]:
    """RSS once warm and at the end of the replay, for both processes; the post-replay peak."""
    samples = result["samples"]
    start = result["reader_started_s"]
    during = [s for s in samples if s[2] is not None]  # the reader lives while the path replays
    warm = next(s for s in during if s[0] >= start + warm_s)
    end = during[-1]
    after = [s[1] for s in samples if s[0] > end[0]]
    rows = {}
    for name, col in (("replay process", 1), ("output reader", 2)):
        rows[name] = {"warm_mib": warm[col] / 1024, "end_mib": end[col] / 1024, "growth": end[col] / warm[col] - 1}
    return {
        "warm_at_s": warm[0],
        "end_at_s": end[0],
        "rows": rows,
        "post_replay_peak_mib": max(after, default=end[1]) / 1024,
    }


def sparkline(values: list[float], width: int = 48) -> str:
    picked = [values[round(i * (len(values) - 1) / max(width - 1, 1))] for i in range(min(width, len(values)))]
    lo, hi = min(picked), max(picked)
    return "".join(SPARK[round((v - lo) / (hi - lo) * (len(SPARK) - 1)) if hi > lo else 0] for v in picked)


def markdown(result: dict[str, Any], summary: dict[str, Any], trace_cmd: list[str], run_json: Path) -> str:
    stats = result["replay"]
    during = [s for s in result["samples"] if s[2] is not None]
    lines = [
        f"Trace: `{' '.join(trace_cmd)}` ({stats['steps']:,} steps).",
        f"Replay: `{' '.join(result['command'])}`.",
        "",
        "| process | RSS warm | RSS at the end | growth |",
        "|---|---:|---:|---:|",
    ]
    for name, row in summary["rows"].items():
        lines.append(f"| {name} | {row['warm_mib']:.1f} MiB | {row['end_mib']:.1f} MiB | {row['growth']:+.2%} |")
    lines += [
        "",
        f"Warm: {summary['warm_at_s']:.0f} s after the start; end: {summary['end_at_s']:.0f} s (last sample while the "
        f"reader lives). Peak while the results are assembled and written: {summary['post_replay_peak_mib']:.1f} MiB.",
        f"Wall time {result['wall_s']:.0f} s (replay {stats['wall_ns'] / 1e9:.0f} s, "
        f"{stats['wall_ns'] / stats['steps'] / 1e6:.2f} ms per step); "
        f"run.json {run_json.stat().st_size / 2**20:.1f} MiB ({run_json.stat().st_size / stats['steps']:.0f} "
        "bytes per step).",
        "",
        "RSS over the replay (one sample in every "
        f"{max(1, len(during) // 48)} of {len(during)}, {during[0][0]:.0f} s to {during[-1][0]:.0f} s):",
        "",
        "| process | min | max | over time |",
        "|---|---:|---:|---|",
    ]
    for name, col in (("replay process", 1), ("output reader", 2)):
        values = [s[col] / 1024 for s in during]
        lines.append(f"| {name} | {min(values):.1f} MiB | {max(values):.1f} MiB | `{sparkline(values)}` |")
    return "\n".join(lines)


def tracemalloc_growth(steps: int, out: Path, top: int = 15) -> None:
    """Replay the first `steps` steps in-process under tracemalloc; print the lines that grew most."""
    import tracemalloc

    from fdoverlap_cli.session import ReplayConfig, ReplaySession

    trace_cmd, made = synth(steps, out / "tracemalloc-trace.json")
    session = ReplaySession(ReplayConfig(out / "tracemalloc-trace.json", ("overlap",), "cpu", "tiny"))
    snapshots: dict[str, Any] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "overlap" and done in (total // 5, total):
            snapshots[f"{done}"] = tracemalloc.take_snapshot()

    tracemalloc.start(8)
    session.run(progress)
    first, last = (snapshots[k] for k in sorted(snapshots, key=int))
    print(f"{' '.join(trace_cmd)}: {made} steps; growth from step {made // 5} to {made}:")
    for stat in last.compare_to(first, "lineno")[:top]:
        print(f"  {stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks  {stat.traceback[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000, help="at least this many steps")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between RSS samples")
    parser.add_argument("--warm", type=float, default=30.0, help="seconds after the reader starts: the warm sample")
    parser.add_argument("--out", type=Path, default=Path("soak"), help="folder for the trace, run.json, soak.json")
    parser.add_argument("--tracemalloc", type=int, metavar="STEPS", help="find what grows in a shorter run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tracemalloc:
        tracemalloc_growth(args.tracemalloc, args.out)
        return
    trace, run_json = args.out / "soak-trace.json", args.out / "run.json"
    trace_cmd, _ = synth(args.steps, trace)
    result = soak(trace, run_json, args.interval)
    summary = report(result, args.warm)
    result.update(summary=summary, trace_command=trace_cmd, run_json_bytes=run_json.stat().st_size)
    result["machine"] = f"{platform.machine()}, {platform.python_version()}"
    (args.out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result, summary, trace_cmd, run_json))


if __name__ == "__main__":
    main()
