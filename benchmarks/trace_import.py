"""How long the trace tools take on the whole Azure conversation trace (19,366 requests).

Times, best of --repeat runs: importing the CSV (read, window, fit, schedule) and writing the trace;
validating the Trace object; loading the written file (parse, decode, validate); and the CLI end to
end (`fdoverlap trace import azure`, `fdoverlap trace validate`, each a fresh process). Prints a
Markdown table for docs/BENCHMARKS.md. Targets: import + write < 5 s, validate < 2 s.
Usage: python benchmarks/trace_import.py [CSV] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from metrics_speed import best_of  # noqa: E402  (this folder is on sys.path when run as a script)

from fdoverlap_cli.trace import load_trace, save_trace, validate  # noqa: E402
from fdoverlap_cli.trace.azure import AzureImportSpec, import_azure  # noqa: E402
from fdoverlap_cli.trace.scheduler import SchedulerOptions  # noqa: E402

DEFAULT_CSV = REPO.parent / "shared" / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "fdoverlap_cli", *args], check=True, capture_output=True, cwd=REPO)


def measure(csv: str, max_model_len: int, repeat: int, tmp: Path) -> dict[str, Any]:
    """Every timing of one import configuration."""
    out = tmp / f"azure-conv-{max_model_len}.json"
    spec = AzureImportSpec(csv, scheduler=SchedulerOptions(max_num_seqs=64, max_model_len=max_model_len))
    mml = str(max_model_len)
    t_import, result = best_of(repeat, lambda: import_azure(spec))
    t_write, _ = best_of(repeat, lambda: save_trace(result.trace, out))
    return {
        "result": result,
        "size": out.stat().st_size,
        "import": t_import,
        "write": t_write,
        "validate": best_of(repeat, lambda: validate(result.trace))[0],
        "load": best_of(repeat, lambda: load_trace(out))[0],
        "cli import": best_of(
            repeat, lambda: cli("trace", "import", "azure", csv, "--max-model-len", mml, "-o", str(out))
        )[0],
        "cli validate": best_of(repeat, lambda: cli("trace", "validate", str(out)))[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", default=str(DEFAULT_CSV), help="AzureLLMInferenceTrace_conv.csv")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--max-model-len", type=int, nargs="+", default=[2048, 16384], help="one column per value (16384 keeps all)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        runs = {m: measure(args.csv, m, args.repeat, Path(tmp)) for m in args.max_model_len}

    print(f"python {platform.python_version()}, {platform.machine()}, best of {args.repeat}\n")
    print("| | " + " | ".join(f"max_model_len {m}" for m in runs) + " | target |")
    print("|---|" + "---:|" * (len(runs) + 1))

    def row(name: str, cell: Callable[[dict[str, Any]], str], target: str = "") -> None:
        print(f"| {name} | " + " | ".join(cell(r) for r in runs.values()) + f" | {target} |")

    row("requests (of the rows)", lambda r: f"{len(r['result'].trace.requests):,} of {r['result'].rows:,}")
    row("dropped / truncated", lambda r: f"{r['result'].dropped:,} / {r['result'].truncated:,}")
    row("steps", lambda r: f"{len(r['result'].trace.steps):,}")
    row("preemptions", lambda r: f"{r['result'].preemptions:,}")
    row("file size", lambda r: f"{r['size'] / 1e6:.1f} MB")
    row("import (read CSV, fit, schedule)", lambda r: f"{r['import']:.2f} s")
    row("write the trace", lambda r: f"{r['write']:.2f} s")
    row("import + write", lambda r: f"{r['import'] + r['write']:.2f} s", "< 5 s")
    row("validate (Trace object)", lambda r: f"{r['validate']:.2f} s", "< 2 s")
    row("load the file (parse, decode, validate)", lambda r: f"{r['load']:.2f} s")
    row("`fdoverlap trace import azure` (fresh process)", lambda r: f"{r['cli import']:.2f} s", "< 5 s")
    row("`fdoverlap trace validate` (fresh process)", lambda r: f"{r['cli validate']:.2f} s")


if __name__ == "__main__":
    main()
