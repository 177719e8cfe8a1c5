"""How long the metrics take on a long replay: simulated sync and overlap runs of N steps (default 100k).

Times the conversion of Spans to columns (SpanTable.from_spans), path_metrics on the table, and
compare; best of --repeat runs. Usage: python benchmarks/metrics_speed.py [--steps 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from fdoverlap_cli.measure.derive import compare
from fdoverlap_cli.measure.metrics import StepFacts, path_metrics
from fdoverlap_cli.measure.records import SpanTable
from tests.loop_model import StepCosts
from tests.loop_model import spans as simulate


def best_of(repeat: int, fn):
    """(best wall time in s, the last result)."""
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n = args.steps
    costs = StepCosts(  # jittered durations, so steps differ
        forward=rng.integers(150_000, 450_000, n).tolist(),
        preprocess=rng.integers(40_000, 120_000, n).tolist(),
        save=rng.integers(20_000, 90_000, n).tolist(),
    )
    facts = StepFacts.of(np.arange(n), np.full(n, 64))
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    results = {}
    for path in ("sync", "overlap"):
        spans = simulate(path, n, costs, start_ns=10**12)
        t_table, table = best_of(args.repeat, lambda spans=spans: SpanTable.from_spans(spans))
        t_metrics, results[path] = best_of(args.repeat, lambda table=table: path_metrics(table, facts))
        print(
            f"{path:8s} {n:,} steps, {len(spans):,} spans: from_spans {t_table:.3f} s, "
            f"path_metrics {t_metrics:.3f} s, total {t_table + t_metrics:.3f} s"
        )
    t_compare, _ = best_of(args.repeat, lambda: compare(results["sync"], results["overlap"]))
    print(f"compare {t_compare * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
