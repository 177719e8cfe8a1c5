"""The steps of an Nsight Systems export found without NVTX, printed and saved as JSON.

    python3 benchmarks/foreign_steps.py EXPORT.sqlite [--steps SPEC] [--against nvtx:NAME@DOMAIN] [--json OUT]

Without --steps the marker that fits best is chosen (and every candidate is listed). --against takes
the steps a named NVTX range gives (e.g. the ones `fdoverlap instrument` put in) as the reference and
prints how the marker's steps agree with them: the share of reference steps found within 50 us, and the
largest per-step differences of kernels-only busy time and bubble, in points of the step's period.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from fdoverlap_cli.nsys.markers import find_steps_in  # noqa: E402
from fdoverlap_cli.nsys.markers.agreement import agree  # noqa: E402


def _us(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1e3:.1f} us"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def summary(r) -> list[str]:
    if r.unavailable:
        return [f"no steps: {r.unavailable}"]
    c, run = r.choice, r.run
    reg = c.regularity
    lines = [
        f"marker {c.spec} ({c.chosen}): {c.events} occurrences, {c.boundaries} boundaries, {run.steps} steps; "
        f"median period {_us(reg.median_period_ns)}, cv {reg.cv:.3f}, robust cv {reg.robust_cv:.3f}; "
        f"sampler-like kernels {c.sampler_like_kernels}",
        f"step time p10/p50/p90 {_us(run.step_time_ns.p10)} / {_us(run.step_time_ns.p50)} / "
        f"{_us(run.step_time_ns.p90)}; host period p50 {_us(run.host_step_time_ns.p50)}; "
        f"{run.long_steps} long steps (> 10x median)",
        f"kernels-only GPU busy {_pct(run.kernel_busy)} of the window, {_pct(run.kernel_busy_steady)} without "
        f"the long steps; per step p50 {_pct(run.kernel_busy_per_step.p50)}",
        f"bubble p50 {_us(run.bubble_ns.p50)}, mean {_us(run.bubble_ns.mean)}; kernels per step p50 "
        f"{run.kernels_per_step.p50}; steps with a pageable DtoH {run.pageable_dtoh_steps}; graph launches "
        f"{run.graph_launches}, graph kernels {run.graph_kernels}",
    ]
    for x in run.repeats:
        size = f", {x.bytes_per_step:.0f} B" if x.bytes_per_step is not None else ""
        lines.append(
            f"  every step: {x.what} {x.name}: {x.count_per_step:.2f} per step{size}, {_us(x.ns_per_step)} "
            f"({x.steps} of {run.steps} steps)"
        )
    for cand in c.candidates:
        score = "-" if cand.score is None else f"{cand.score:.3f}"
        lines.append(f"  candidate {cand.spec}: {cand.events} occurrences, {cand.boundaries} boundaries, fit {score}")
    lines += [f"note: {n}" for n in r.notes]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export")
    p.add_argument("--steps", default=None, help="a --steps spec (default: the marker that fits best)")
    p.add_argument("--against", default=None, help="a spec whose steps are the reference (nvtx:NAME@DOMAIN)")
    p.add_argument("--json", default=None, help="write the result (and the agreement) here")
    args = p.parse_args()
    t = time.perf_counter()
    r = find_steps_in(args.export, args.steps)
    seconds = time.perf_counter() - t
    print(f"{args.export}: {seconds:.2f} s")
    print("\n".join(summary(r)))
    out = {"seconds": seconds, "steps": r.to_dict()}
    if args.against and r.steps is not None:
        ref = find_steps_in(args.export, args.against)
        if ref.steps is None:
            print(f"--against {args.against}: {ref.unavailable}")
        else:
            t = ref.steps
            a = agree(r.steps, t.gpu_end_ns, t.kernel_busy_ns, t.bubble_ns).to_dict()
            out["against"] = {"spec": args.against, "reference": ref.to_dict(), "agreement": a}
            print(
                f"against {args.against}: {a['found']} of {a['reference_steps']} steps found within 50 us "
                f"(largest distance {_us(a['max_boundary_ns'])}); largest per-step difference: kernels-only busy "
                f"{_pct(a['max_busy_points'])} of the period, bubble {_pct(a['max_bubble_points'])}; "
                f"bubble share {_pct(a['bubble_share_points'])}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
