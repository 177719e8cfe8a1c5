"""The exposed host time's acceptance on a GPU host, from the JSON that `gpu_session.sh exposed` writes.

Usage: python benchmarks/exposed_check.py --compare NAME=report.json ... [--analyze analyze.json]

- each `--compare` is `fdoverlap report run.json --json` of a comparison: per path the exposed host time by
  stage (mean per step), its sum against the bubble (target: within 5%), and its share of the wall time
  (target on the overlap path with the default options: at most 1%);
- `--analyze` is `fdoverlap analyze report.sqlite --against run.json --json` of the sync path under nsys: the
  same sum from nsys, and each stage from the tool and from nsys side by side (target: within 10% or 20 µs).
Prints one line per check, PASS or FAIL, and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SUM_TARGET = 0.05
SHARE_TARGET = 0.01


def _stages(metrics: dict) -> dict[str, float]:
    return {k: v["mean_ns"] / 1e3 for k, v in (metrics.get("exposed") or {}).items() if v["total_ns"]}


def _sum_check(where: str, metrics: dict) -> bool:
    exposed = sum(v["total_ns"] for v in (metrics.get("exposed") or {}).values())
    bubble = metrics.get("bubble_total_ns") or 0
    ok = bubble > 0 and abs(exposed - bubble) <= SUM_TARGET * bubble
    print(f"{'PASS' if ok else 'FAIL'} {where}: Σ exposed {exposed / 1e6:.3f} ms vs bubble {bubble / 1e6:.3f} ms")
    return ok


def compare(name: str, doc: dict) -> bool:
    ok = True
    for path, p in doc["paths"].items():
        m = p["metrics"]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in _stages(m).items())
        share = m.get("exposed_share")
        print(f"  {name} {path}: exposed µs/step: {stages or 'none'}; exposed / wall {100 * (share or 0):.2f}%")
        ok &= _sum_check(f"{name} {path}", m)
        if path == "overlap" and name == "default":
            good = share is not None and share <= SHARE_TARGET
            print(f"{'PASS' if good else 'FAIL'} {name} overlap: exposed host time {100 * (share or 0):.2f}% of wall")
            ok &= good
    return ok


def analyze(doc: dict) -> bool:
    ok = True
    for path, p in doc["paths"].items():
        ok &= _sum_check(f"nsys {path}", p["metrics"])
    rows = [r for r in (doc.get("against") or {}).get("rows", []) if r["quantity"].startswith("exposed.")]
    if not rows:
        print("FAIL nsys: no exposed rows against the tool's run.json")
        return False
    for r in rows:
        stage = r["quantity"].split(".")[1]
        good = bool(r["agrees"])
        print(
            f"{'PASS' if good else 'FAIL'} {r['path']} {stage}: tool {r['tool'] / 1e3:.1f} µs, "
            f"nsys {r['nsys'] / 1e3:.1f} µs, difference {r['difference'] / 1e3:+.1f} µs (10% or 20 µs)"
        )
        ok &= good
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=FILE")
    parser.add_argument("--analyze", type=Path)
    args = parser.parse_args()
    ok = True
    for item in args.compare:
        name, _, file = item.partition("=")
        ok &= compare(name, json.loads(Path(file).read_text()))
    if args.analyze:
        ok &= analyze(json.loads(args.analyze.read_text()))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
