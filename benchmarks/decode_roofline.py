"""The decode forward as the replay runs it (a CUDA graph replay) against the HBM roofline, and the host's cost
of a decode step with graphs, call by call.

roofline  For batch 16/64/128 x context 512/2048 (the 8B-class preset, 32 layers by default, float16): the
          decode forward (embedding through the final norm, one row per slot, every row attending to
          `context` cached positions) captured as a CUDA graph by the engine's own graphs.ModelForward, its
          replay timed on the GPU with the project's timestamps (benchmarks/kernels.py's GpuTimer), against
              roofline = (weight bytes read + KV bytes read) / HBM bandwidth
          weights: every layer's GEMM weights and norms, the final norm and the batch's embedding rows (the
          lm_head is outside the forward); KV: 2 x layers x batch x context x kv_heads x head_dim x 2 bytes; the
          bandwidth: a 2 GiB device-to-device copy in the same run, (read + write) / time. Target: <= 1.25x.
          `step` is the whole device work of stage 1 (get_padding_offset, the copies into the graph's static
          buffers, the replay), timed the same way.
host      The overlap path over decode-b64 (the same preset) with graphs: every host call of a decode-only
          step's loop iteration, timed on the host (op calls, the device facade's copies/events/replay, the
          output send, the bookkeeping), per step; what is left of the iteration's busy time (B_k = the
          iteration without its waits) is Python between the calls. The wrappers' own cost is measured and shown.

Usage: python benchmarks/decode_roofline.py [-o PATH] [--layers N] [--only roofline|host]
Writes JSON to PATH (default $OUT/decode_roofline.json, else ./decode_roofline.json) and prints two tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from benchmarks.kernels import GpuTimer, hbm_bandwidth, open_gpu
from fdoverlap_cli.engine.buffers import ShareInputs
from fdoverlap_cli.engine.device import DeviceGraph
from fdoverlap_cli.engine.graphs import ModelForward
from fdoverlap_cli.engine.model import ModelConfig, SyntheticDecoder, model_config
from fdoverlap_cli.engine.reader import OutputSender
from fdoverlap_cli.engine.replay import Engine
from fdoverlap_cli.engine.runner import RunnerOptions
from fdoverlap_cli.errors import FdoError
from fdoverlap_cli.trace import TraceConfig, load_trace

BATCHES = (16, 64, 128)
CONTEXTS = (512, 2048)
TARGET = 1.25
SECTIONS = ("roofline", "host")
HOST_TRACE = Path(__file__).resolve().parent.parent / "traces" / "decode-b64.json"


# --------------------------------------------------------------------------- the forward against the roofline


def forward_bytes(cfg: ModelConfig, bsz: int, context: int) -> tuple[int, int]:
    """(weight bytes, KV bytes) one decode forward of `bsz` rows at `context` positions reads."""
    h, f, b = cfg.hidden_size, cfg.ffn_size, cfg.dtype_bytes
    per_layer = h * cfg.qkv_size + cfg.num_q_heads * cfg.head_dim * h + h * 2 * f + f * h + 2 * h
    weights = (cfg.num_layers * per_layer + h + bsz * h) * b
    kv = 2 * cfg.num_layers * bsz * context * cfg.num_kv_heads * cfg.head_dim * b
    return weights, kv


def decode_state(device: Any, model: SyntheticDecoder, bsz: int, context: int) -> ShareInputs:
    """Every slot decoding its token at position context - 1 (so it attends to `context` positions), over a
    KV cache of seeded values."""
    ops = device.ops
    config = TraceConfig(
        max_num_seqs=bsz, max_model_len=context, block_size=16, num_kv_blocks=1, max_num_batched_tokens=bsz
    )
    kv = model.new_kv_cache(bsz, context)
    for i, (k, v) in enumerate(kv):
        ops.fill_random_(k, 7_000 + 2 * i, 1.0)
        ops.fill_random_(v, 7_001 + 2 * i, 1.0)
    share = ShareInputs(device, ops, config, kv)
    ops.fill_(share.input_ids, 5)
    ops.fill_(share.seq_lens_this_time, 1)
    ops.fill_(share.seq_lens_decoder, context - 1)
    return share


def roofline(timer: GpuTimer, cfg: ModelConfig, hbm: float) -> list[dict[str, Any]]:
    device = timer.device
    model = SyntheticDecoder(cfg, device, device.ops)
    rows = []
    for context in CONTEXTS:
        for bsz in BATCHES:
            share = decode_state(device, model, bsz, context)
            forward = ModelForward(device, model, share, "on")
            forward.graphs[bsz] = graph = forward.capture_size(bsz)  # the one size this batch replays
            forward.run(bsz, True)  # the step's path once: the copies and the replay
            device.synchronize()
            replay_ns = timer.time_ns(lambda i, g=graph: g.launch(), 10)
            step_ns = timer.time_ns(lambda i, f=forward, n=bsz: f.run(n, True), 10)
            weights, kv = forward_bytes(cfg, bsz, context)
            limit_ns = (weights + kv) / hbm * 1e9
            rows.append(
                {
                    "bsz": bsz,
                    "context": context,
                    "replay_us": replay_ns / 1e3,
                    "step_us": step_ns / 1e3,
                    "weight_bytes": weights,
                    "kv_bytes": kv,
                    "roofline_us": limit_ns / 1e3,
                    "ratio": replay_ns / limit_ns,
                    "meets_target": replay_ns / limit_ns <= TARGET,
                }
            )
            r = rows[-1]
            print(
                f"  b{bsz:<4} ctx {context:<5} {r['replay_us']:9.1f} {r['step_us']:9.1f} {r['roofline_us']:9.1f}"
                f"  {r['ratio']:5.2f}x {'ok' if r['meets_target'] else 'MISSED'}"
            )
            del forward, graph, share
    return rows


# --------------------------------------------------------------------------- the host's decode step


class CallLog:
    """Host times of wrapped calls; only the outermost of nested calls counts (a send's save_output op is
    inside the send)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.depth = 0

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.depth += 1
            t0 = time.monotonic_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                t1 = time.monotonic_ns()
                self.depth -= 1
                if self.depth == 0:
                    self.calls.append((name, t0, t1))

        return timed


class TimedOps:
    """The op library with every op call logged."""

    def __init__(self, ops: Any, log: CallLog) -> None:
        self._ops, self._log = ops, log

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._ops, name)
        if not callable(fn):
            return fn
        timed = self._log.wrap(f"op {name}", fn)
        setattr(self, name, timed)
        return timed


def host_step(device: Any, layers: int) -> dict[str, Any]:
    log = CallLog()
    device.ops = TimedOps(device.ops, log)
    for method in ("copy", "copy_to_host", "new_event", "record_event", "wait_event"):
        setattr(device, method, log.wrap(f"device.{method}", getattr(device, method)))
    DeviceGraph.replay = log.wrap("graph replay", DeviceGraph.replay)
    OutputSender.send = log.wrap("output send (save_output)", OutputSender.send)
    trace = load_trace(HOST_TRACE)
    engine = Engine(trace, device, model_config("8b", layers), RunnerOptions(), cuda_graph="on")
    engine.model.matmul = log.wrap("paddle.matmul (lm_head)", engine.model.matmul)
    for method in ("launch", "apply_step", "record_tokens"):
        setattr(engine.book, method, log.wrap(f"bookkeeping.{method}", getattr(engine.book, method)))
    engine.warm_up(8)
    empty = log.wrap("empty", lambda: None)
    t0 = time.monotonic_ns()
    for _ in range(10_000):
        empty()
    wrapper_ns = (time.monotonic_ns() - t0) / 10_000
    log.calls.clear()
    run = engine.replay("overlap")
    h = run.host
    decode = np.flatnonzero((h["graph_rows"] > 0) & (h["prefill_tokens"] == 0))
    calls = np.array([(s, e) for _, s, e in log.calls], dtype=np.int64).reshape(-1, 2)
    names = np.array([n for n, _, _ in log.calls])
    per_name: dict[str, list[int]] = {}
    busy, model, other, waited = [], [], [], []
    for row in decode:
        a, b = h["iter_start"][row], h["iter_end"][row]
        inside = (calls[:, 0] >= a) & (calls[:, 1] <= b)
        w = h["wait_step"] == h["step"][row]
        wait_ns = int((h["wait_end"][w] - h["wait_start"][w]).sum())
        step_busy = int(b - a) - wait_ns
        called = 0
        for name in np.unique(names[inside]):
            mask = inside & (names == name)
            d = calls[mask, 1] - calls[mask, 0]
            # a call that contains a wait (the send's back-pressure) counts its waiting apart
            per_name.setdefault(str(name), []).extend(d.tolist())
            called += int(d.sum())
        busy.append(step_busy)
        waited.append(wait_ns)
        model.append(int(h["model_ns"][row]))
        other.append(step_busy - called)
    steps = len(decode)
    table = sorted(
        (
            {
                "call": name,
                "calls_per_step": len(d) / steps,
                "us_per_call": float(np.mean(d)) / 1e3,
                "us_per_step": float(np.sum(d)) / steps / 1e3,
            }
            for name, d in per_name.items()
        ),
        key=lambda r: -r["us_per_step"],
    )
    return {
        "trace": str(HOST_TRACE.name),
        "layers": layers,
        "decode_steps": steps,
        "busy_us_per_step": float(np.mean(busy)) / 1e3,
        "waits_us_per_step": float(np.mean(waited)) / 1e3,
        "model_launch_us_per_step": float(np.mean(model)) / 1e3,
        "harness_us_per_step": float(np.mean(np.array(busy) - np.array(model))) / 1e3,
        "python_between_calls_us_per_step": float(np.mean(other)) / 1e3,
        "wrapper_ns_per_call": wrapper_ns,
        "calls": table,
    }


def print_host(h: dict[str, Any]) -> None:
    print(
        f"host, overlap path, {h['trace']} ({h['layers']} layers), {h['decode_steps']} decode steps: "
        f"busy B_k {h['busy_us_per_step']:.1f} us/step (waits {h['waits_us_per_step']:.1f} us apart), "
        f"model launch {h['model_launch_us_per_step']:.1f} us, harness (B_k - model) {h['harness_us_per_step']:.1f} us"
    )
    print(f"  {'call':36} {'calls/step':>10} {'us/call':>9} {'us/step':>9}")
    for r in h["calls"]:
        print(f"  {r['call']:36} {r['calls_per_step']:10.2f} {r['us_per_call']:9.2f} {r['us_per_step']:9.1f}")
    print(f"  {'Python between the calls':36} {'':10} {'':9} {h['python_between_calls_us_per_step']:9.1f}")
    print(f"  (each wrapped call costs the wrapper about {h['wrapper_ns_per_call']:.0f} ns; included above)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    out = Path(os.environ.get("OUT", ".")) / "decode_roofline.json"
    parser.add_argument("-o", "--output", type=Path, default=out, help="the JSON (default $OUT/decode_roofline.json)")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--only", choices=SECTIONS, help="one section (default: both)")
    args = parser.parse_args()
    sections = (args.only,) if args.only else SECTIONS
    try:
        device = open_gpu()
    except FdoError as e:
        sys.exit(f"decode_roofline.py needs a CUDA GPU: {e}")
    cfg = model_config("8b", args.layers)
    result: dict[str, Any] = {
        "device": device.name,
        "paddle": device.paddle.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "model": cfg.to_dict(),
        "target_ratio": TARGET,
    }
    if "roofline" in sections:
        timer = GpuTimer(device)
        hbm = hbm_bandwidth(timer)
        result["hbm_GBps"] = hbm / 1e9
        print(f"{device.name}, paddle {result['paddle']}: HBM {hbm / 1e9:.0f} GB/s (2 GiB device-to-device copy)")
        print(f"decode forward, 8b x {args.layers} layers, {cfg.dtype}: GPU time per forward (us)")
        print(f"  {'batch':5} {'context':9} {'replay':>9} {'step':>9} {'roofline':>9}  ratio (target <= {TARGET}x)")
        result["roofline"] = roofline(timer, cfg, hbm)
        del timer
    if "host" in sections:
        result["host"] = host_step(device, args.layers)
        print_host(result["host"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
