"""Both runners × both output paths on one model per trace: run.json files and one summary table.

    python benchmarks/runners.py --preset 8b --layers 32 --out gpu-out/runners \
        traces/decode-b64.json traces/default.json

Per trace the model, its buffers and its CUDA graphs are built once and every combination (develop and pr6176,
msgqueue and zmq) replays both paths on them (`ReplaySession.run(reuse=...)`), so the phase costs one model
build per trace. Each combination's run.json is written to OUT/<trace>-<runner>-<ipc>.json; the table then
shows, per combination and path: the main thread's save time per step (the send is all the main thread does of
the ZMQ path; the pickling and the send run on the sender thread), the preprocess (launch) host time per step and
the model's own launch time (model_ns, host), the step time, the exposed host time per stage (mean per step) and
GPU busy. The GIL question ("does the sender thread slow the launches?") is answered by the zmq rows' launch and
step times against the msgqueue rows' of the same runner. Exit status 1 if a combination's paths differ, or its
tokens differ from those of the same runner's first combination (the output path must change no token). Across
runners the tokens are compared and reported, not required: develop's upper-bound token count can pad a decode
batch into a larger CUDA-graph size than #6176's exact count, and on a GPU cuBLAS's float16 GEMM rounds a row
differently for another row count (as graphs on vs off do); the line names the steps that replayed another size.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

from fdoverlap_cli.engine.designs import DESIGNS
from fdoverlap_cli.engine.output_ipc import OUTPUT_IPCS
from fdoverlap_cli.engine.runner import RunnerOptions
from fdoverlap_cli.measure.schema import EXPOSED
from fdoverlap_cli.session import ReplayConfig, ReplaySession


def _us(ns: float | None) -> str:
    return "–" if ns is None else f"{ns / 1e3:,.1f}"


def _row(name: str, path: str, m: dict) -> str:
    stages = m.get("host_stages") or {}
    exposed = m.get("exposed") or {}

    def stage(kind: str) -> float | None:
        return (stages.get(kind) or {}).get("mean_ns")

    parts = [
        f"{name:32} {path:8}",
        f"step {_us(m['step_time_ns']['mean']):>9}",
        f"save {_us(stage('save')):>8}",
        f"launch {_us(stage('preprocess')):>8}",
        f"busy {100 * (m.get('gpu_busy') or 0):5.1f}%",
    ]
    exp = " ".join(f"{kind}={_us((exposed.get(kind) or {}).get('mean_ns'))}" for kind, _ in EXPOSED)
    return "  ".join(parts) + "  exposed/step µs: " + exp


def _across_runners(name: str, reference: dict[str, dict], graph_rows: dict[str, dict[int, int]]) -> str:
    """Whether the runners emitted the same tokens, and the steps each replayed at another CUDA-graph size."""
    (a, ta), (b, tb) = list(reference.items())[:2]
    differ = sorted(r for r in ta if ta[r] != tb.get(r))
    ga, gb = graph_rows[a], graph_rows[b]
    other = sorted(k for k in ga.keys() & gb.keys() if ga[k] != gb[k])
    where = f"; steps replayed at another graph size: {len(other)}, the first {other[0]}" if other else ""
    verdict = "the same tokens" if not differ else f"{len(differ)} of {len(ta)} requests' tokens differ"
    return f"{name}: {a} vs {b}: {verdict}{where}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("traces", nargs="+", type=Path)
    parser.add_argument("--preset", default="8b")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    lines, failed = [], False
    for trace in args.traces:
        first: ReplaySession | None = None
        reference: dict[str, dict] = {}  # per runner: its first combination's token digests
        graph_rows: dict[str, dict[int, int]] = {}
        for design in DESIGNS:
            for ipc in OUTPUT_IPCS:
                config = ReplayConfig(
                    trace_file=trace,
                    device=args.device,
                    preset=args.preset,
                    layers=args.layers,
                    runner=RunnerOptions(design=design),
                    output_ipc=ipc,
                    warmup_steps=args.warmup,
                    command=("benchmarks/runners.py", *sys.argv[1:]),
                )
                session = ReplaySession(config)
                session.run(reuse=first)
                first = first or session
                result = session.result()
                name = f"{trace.stem}-{design}-{ipc}"
                result.save(args.out / f"{name}.json")
                digests = {p: {r: t["sha256"] for r, t in rec.tokens.items()} for p, rec in result.paths.items()}
                reference.setdefault(design, digests["sync"])
                steps, rows = (result.paths["sync"].columns[c].tolist() for c in ("step", "graph_rows"))
                graph_rows.setdefault(design, dict(zip(steps, rows, strict=True)))
                same = all(d == reference[design] for d in digests.values())
                failed |= not same or not (result.identity and result.identity.identical)
                view = result.view(None).to_dict()
                for path, m in view["paths"].items():
                    lines.append(_row(name, path, m) + ("" if same else "  TOKENS DIFFER"))
                print(f"wrote {args.out / name}.json", flush=True)
        lines.append(_across_runners(trace.stem, reference, graph_rows))
        first = session = result = None  # the model's memory goes before the next trace's model is built
        gc.collect()
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
