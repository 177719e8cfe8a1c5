"""The op library's model kernels on a GPU, against limits measured in the same run.

Measures, with the project's own GPU timestamps (record_timestamp: the GPU's global timer):
  hbm      HBM bandwidth: a 2 GiB device-to-device copy, (read + write bytes) / time: the bandwidth limit
  gemm     paddle.matmul (cuBLAS) float16 8192^3: the tensor-core limit, 2 n^3 / time
  decode   attention alone at 8B-class heads (32 q heads, 8 KV heads, head_dim 128, float16), one row per
           slot, batch 16/64/128 x context 512/2048: (K + V bytes read + q read + out written) / time vs hbm
  norm     fdo_rms_norm, add_rms_norm (hidden 4096) and silu_mul (ffn 14336) at 16/64/128 decode rows:
           bytes / time vs hbm (their inputs rotate over 32 copies but may sit in the L2 cache, as they do
           after the GEMM that writes them in a forward)
  prefill  attention over one 2048- and one 4096-token chunk from position 0: causal FLOP/s
           (4 Hq D sum_t (t + 1)) against gemm (target >= 40%); --prefill-configs all (or a comma list)
           times every tensor-core prefill configuration (FDOVERLAP_PREFILL_TC) and marks the best
  gemm     the 8B-class layer's float16 GEMMs (qkv, o, gate_up, down; w stored [K, N]) at 16/64/128 decode rows,
           and gate_up followed by silu_mul, through paddle.matmul, the op library's tuned cuBLASLt gemm op
           (tuned in its warm-up calls) and its decode GEMM (gemm_decode; silu_mul fused into gate_up): weight
           bytes / time vs hbm (the weights rotate over copies that exceed the L2 cache)
Each figure is the mean over back-to-back calls on the compute stream between two GPU timestamps, taken while
float16 GEMMs hold the stream so that the host has queued every call before the first timestamp runs (checked
against the host clock): paddle's per-call dispatch cost is not in it, the GPU's gaps between kernels are.
The decode caches rotate over enough copies that every call reads HBM, not the L2 cache.

Usage: python benchmarks/kernels.py [-o PATH] [--only decode,norm,prefill,gemm] [--prefill-configs all|A,B]
(hbm and gemm always run)
Writes JSON to PATH (default $OUT/kernels.json, else ./kernels.json) and prints a table. Needs a CUDA GPU.
Reusable pieces: open_gpu(), GpuTimer(device).time_ns(fn, iters), hbm_bandwidth(timer), gemm_tflops(timer).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from fdoverlap_cli import kernel_choices
from fdoverlap_cli import ops as op_library
from fdoverlap_cli.engine.device import Device
from fdoverlap_cli.errors import FdoError
from fdoverlap_cli.measure import clock

HEADS = (32, 8, 128)  # (q heads, KV heads, head_dim) of an 8B-class layer
HIDDEN, FFN = 4096, 14336
L2_DEFEAT_BYTES = 256 << 20  # inputs rotate over at least this many bytes (the H200's L2 holds 50 MB)
GEMM_N = 8192
SECTIONS = ("decode", "norm", "prefill", "gemm")
GLU_GEMM = "gate_up+silu"
CHOICES = kernel_choices.GEMM_MODES
PREFILL_CONFIGS = kernel_choices.PREFILL_TC_CONFIGS
DECODE_GEMMS = {"qkv": (HIDDEN, 6144), "o": (HIDDEN, HIDDEN), "gate_up": (HIDDEN, 2 * FFN), "down": (FFN, HIDDEN)}


def open_gpu() -> Device:
    """The GPU device with the op library attached (an error on a machine without one)."""
    device = Device.open("gpu")
    device.ops = op_library.load()
    return device


def filled(device: Device, shape: list[int], dtype: str, seed: int) -> Any:
    """A device tensor of seeded uniform values in [-1, 1) (the project's fill, so no paddle kernel runs)."""
    t = device.empty(shape, dtype)
    device.ops.fill_random_(t, seed, 1.0)
    return t


class GpuTimer:
    """Times callables on the compute stream between two GPU timestamps.

    time_ns(fn, iters) first queues float16 GEMMs that keep the stream busy for about twice as long as
    the host takes to queue `iters` calls of fn, then the first timestamp, the calls and the second
    timestamp. When the first timestamp's time (on the host clock, through the clock samples) falls after
    the host finished queueing, the GPU never waited for the host and (t1 - t0) / iters is the GPU's
    time per call; otherwise the blocker grows and the measurement repeats.
    """

    def __init__(self, device: Device) -> None:
        self.device = device
        self.matmul = device.paddle.matmul
        self.stamps = device.empty([2], "int64")
        self.offset_ns = clock.estimate(device.clock_samples(64)).offset_ns  # device - host
        self.gemm_inputs = [filled(device, [GEMM_N, GEMM_N], "float16", seed) for seed in (1, 2)]
        self.gemm_ns = self._stamped(lambda i: self.matmul(*self.gemm_inputs), 3)[0]  # first estimate

    def _stamped(self, fn: Callable[[int], Any], iters: int) -> tuple[float, int, int]:
        """(ns per call between the stamps, the first stamp on the host clock, host ns when queued)."""
        self.device.timestamp(self.stamps, 0)
        for i in range(iters):
            fn(i)
        queued = time.monotonic_ns()
        self.device.timestamp(self.stamps, 1)
        self.device.synchronize()
        t0, t1 = (int(v) for v in np.asarray(self.stamps.numpy()))
        return (t1 - t0) / iters, t0 - self.offset_ns, queued

    def time_ns(self, fn: Callable[[int], Any], iters: int, warmup: int = 2) -> float:
        """Mean GPU ns per call of fn(i), i = 0..iters-1, back to back on the compute stream."""
        for i in range(warmup):
            fn(i)
        self.device.synchronize()
        started = time.monotonic_ns()
        for i in range(iters):
            fn(i)
        host_ns = time.monotonic_ns() - started
        self.device.synchronize()
        for _ in range(5):
            for _ in range(max(1, math.ceil(2 * host_ns / self.gemm_ns))):
                self.matmul(*self.gemm_inputs)
            per_call, first_stamp, queued = self._stamped(fn, iters)
            if first_stamp > queued:
                return per_call
            host_ns *= 4
        raise RuntimeError("the host could not queue the calls before the GPU reached them")


def hbm_bandwidth(timer: GpuTimer, nbytes: int = 2 << 30) -> float:
    """Bytes/s of a device-to-device copy of nbytes, counting the bytes read and the bytes written."""
    src = timer.device.empty([nbytes // 2], "float16")
    dst = timer.device.empty([nbytes // 2], "float16")
    ns = timer.time_ns(lambda i: dst.copy_(src, False), 5)
    return 2 * nbytes / (ns * 1e-9)


def gemm_tflops(timer: GpuTimer) -> float:
    """paddle.matmul float16 GEMM rate, 2 n^3 / time at n = 8192."""
    timer.gemm_ns = timer.time_ns(lambda i: timer.matmul(*timer.gemm_inputs), 5)
    return 2 * GEMM_N**3 / (timer.gemm_ns * 1e-9) / 1e12


def decode_attention(timer: GpuTimer, bsz: int, context: int, hbm: float) -> dict[str, Any]:
    """One decode row per slot at `context` positions (the row's own included)."""
    device, ops = timer.device, timer.device.ops
    hq, hkv, d = HEADS
    kv_bytes = 2 * bsz * context * hkv * d * 2
    sets = max(1, math.ceil(L2_DEFEAT_BYTES / kv_bytes))
    caches = [[filled(device, [bsz, context, hkv, d], "float16", 100 + 2 * s + k) for k in (0, 1)] for s in range(sets)]
    qkv = filled(device, [bsz, (hq + 2 * hkv) * d], "float16", 7)
    meta = [device.to_device(np.arange(bsz, dtype=np.int32)), device.to_device(np.arange(bsz + 1, dtype=np.int32))]
    meta.append(device.to_device(np.full(bsz, context - 1, np.int32)))
    ns = timer.time_ns(lambda i: ops.attention(qkv, *caches[i % sets], *meta, hq, hkv, d, d**-0.5), max(24, 2 * sets))
    moved = kv_bytes + 2 * bsz * hq * d * 2
    return {
        "bsz": bsz,
        "context": context,
        "us": ns / 1e3,
        "bytes": moved,
        "GBps": moved / ns,
        "of_hbm": moved / ns * 1e9 / hbm,
    }


def elementwise(timer: GpuTimer, rows: int, hbm: float) -> list[dict[str, Any]]:
    """The norms and silu_mul at `rows` decode rows; bytes = inputs read + outputs written (+ the weight)."""
    device, ops = timer.device, timer.device.ops
    sets = 32
    xs = [filled(device, [rows, HIDDEN], "float16", 200 + s) for s in range(sets)]
    rs = [filled(device, [rows, HIDDEN], "float16", 300 + s) for s in range(sets)]
    gate_up = [filled(device, [rows, 2 * FFN], "float16", 400 + s) for s in range(sets)]
    weight = filled(device, [HIDDEN], "float16", 9)
    cases = {
        "fdo_rms_norm": (lambda i: ops.fdo_rms_norm(xs[i % sets], weight, 1e-5), (2 * rows + 1) * HIDDEN * 2),
        "add_rms_norm": (
            lambda i: ops.add_rms_norm(xs[i % sets], rs[i % sets], weight, 1e-5),
            (4 * rows + 1) * HIDDEN * 2,
        ),
        "silu_mul": (lambda i: ops.silu_mul(gate_up[i % sets]), 3 * rows * FFN * 2),
    }
    out = []
    for name, (fn, moved) in cases.items():
        ns = timer.time_ns(fn, 2 * sets)
        out.append(
            {
                "op": name,
                "rows": rows,
                "us": ns / 1e3,
                "bytes": moved,
                "GBps": moved / ns,
                "of_hbm": moved / ns * 1e9 / hbm,
            }
        )
    return out


def prefill_attention(timer: GpuTimer, tokens: int, gemm: float, config: str | None = None) -> dict[str, Any]:
    """One chunk of `tokens` rows from position 0: causal, each row over its prefix; `config` names the
    prefill configuration (FDOVERLAP_PREFILL_TC; None: the kernel's default)."""
    previous = os.environ.pop(kernel_choices.PREFILL_TC_ENV, None)
    if config is not None:
        os.environ[kernel_choices.PREFILL_TC_ENV] = config
    try:
        row = _prefill_attention(timer, tokens, gemm)
    finally:
        os.environ.pop(kernel_choices.PREFILL_TC_ENV, None)
        if previous is not None:
            os.environ[kernel_choices.PREFILL_TC_ENV] = previous
    return {"config": config or "default", **row}


def _prefill_attention(timer: GpuTimer, tokens: int, gemm: float) -> dict[str, Any]:
    device, ops = timer.device, timer.device.ops
    hq, hkv, d = HEADS
    qkv = filled(device, [tokens, (hq + 2 * hkv) * d], "float16", 11)
    keys, values = (device.empty([1, tokens, hkv, d], "float16") for _ in range(2))
    meta = [device.to_device(np.zeros(tokens, np.int32)), device.to_device(np.array([0, tokens], np.int32))]
    meta.append(device.to_device(np.zeros(1, np.int32)))
    ops.write_kv_cache(qkv, keys, values, *meta, hq, hkv, d)
    ns = timer.time_ns(lambda i: ops.attention(qkv, keys, values, *meta, hq, hkv, d, d**-0.5), 6)
    tflops = 4 * hq * d * tokens * (tokens + 1) / 2 / ns / 1e3
    return {"tokens": tokens, "us": ns / 1e3, "TFLOPs": tflops, "of_gemm": tflops / gemm}


def decode_gemm(timer: GpuTimer, name: str, rows: int, hbm: float) -> dict[str, Any]:
    """y[rows, N] = x[rows, K] @ w[K, N] of one of DECODE_GEMMS (or gate_up then silu_mul, "gate_up+silu")
    through paddle.matmul, the gemm op and the gemm_decode op."""
    device, ops = timer.device, timer.device.ops
    glu = name == GLU_GEMM
    k, n = DECODE_GEMMS["gate_up" if glu else name]
    weight_bytes = k * n * 2
    sets = max(1, math.ceil(L2_DEFEAT_BYTES / weight_bytes))
    weights = [filled(device, [k, n], "float16", 500 + s) for s in range(sets)]
    x = filled(device, [rows, k], "float16", 499)
    row: dict[str, Any] = {"gemm": name, "rows": rows, "k": k, "n": n, "weight_bytes": weight_bytes}
    then = ops.silu_mul if glu else (lambda y: y)  # gemm_decode fuses it
    choices: dict[str, Callable[[Any, Any], Any]] = {  # kernel_choices.GEMM_MODES
        "paddle": lambda a, b: then(timer.matmul(a, b)),
        "tuned": lambda a, b: then(ops.gemm(a, b)),
        "decode": lambda a, b: ops.gemm_decode(a, b, glu),
    }
    for label, matmul in choices.items():
        ns = timer.time_ns(lambda i, mm=matmul: mm(x, weights[i % sets]), max(24, 2 * sets))
        row[f"{label}_us"] = ns / 1e3
        row[f"{label}_of_hbm"] = weight_bytes / ns * 1e9 / hbm
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(os.environ["OUT"]) / "kernels.json" if os.environ.get("OUT") else Path("kernels.json")
    parser.add_argument("-o", "--output", type=Path, default=default_out)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument(
        "--prefill-configs",
        default="",
        help=f"prefill: 'all' or a comma list of {','.join(PREFILL_CONFIGS)} (default: the default one)",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    if not only <= set(SECTIONS):
        parser.error(f"--only: unknown section(s) {', '.join(sorted(only - set(SECTIONS)))}")
    configs: list[str | None] = [None]
    if args.prefill_configs == "all":
        configs = list(PREFILL_CONFIGS)
    elif args.prefill_configs:
        configs = args.prefill_configs.split(",")
        unknown = sorted(set(configs) - set(PREFILL_CONFIGS))
        if unknown:
            parser.error(f"--prefill-configs: unknown configuration(s) {', '.join(unknown)}")
    try:
        device = open_gpu()
    except FdoError as e:
        print(f"kernels.py needs a CUDA GPU: {e}", file=sys.stderr)
        sys.exit(2)
    timer = GpuTimer(device)
    result: dict[str, Any] = {
        "device": device.name,
        "paddle": device.paddle.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "heads": dict(zip(("q", "kv", "head_dim"), HEADS, strict=True)),
    }
    # The limits are always measured: every ratio below is against this run's own.
    hbm = result["hbm_GBps"] = hbm_bandwidth(timer) / 1e9
    gemm = result["gemm_fp16_TFLOPs"] = gemm_tflops(timer)
    print(f"{device.name}, paddle {result['paddle']}")
    print(f"{'hbm':8} device-to-device copy 2 GiB        {hbm:8.0f} GB/s (read + write)")
    print(f"{'gemm':8} paddle.matmul float16 {GEMM_N}^3      {gemm:8.0f} TFLOP/s")
    hbm *= 1e9
    if "decode" in only:
        result["decode"] = []
        for bsz in (16, 64, 128):
            for context in (512, 2048):
                row = decode_attention(timer, bsz, context, hbm)
                result["decode"].append(row)
                print(f"{'decode':8} attention b{bsz:<3} ctx {context:<5}        {row['us']:8.2f} us "
                      f"{row['GBps']:6.0f} GB/s = {100 * row['of_hbm']:3.0f}% of hbm")  # fmt: skip
    if "norm" in only:
        result["elementwise"] = []
        for rows in (16, 64, 128):
            for row in elementwise(timer, rows, hbm):
                result["elementwise"].append(row)
                print(f"{'norm':8} {row['op']:12} rows {rows:<4}          {row['us']:8.2f} us "
                      f"{row['GBps']:6.0f} GB/s = {100 * row['of_hbm']:3.0f}% of hbm")  # fmt: skip
    if "prefill" in only:
        result["prefill"] = []
        for config in configs:
            for tokens in (2048, 4096):
                row = prefill_attention(timer, tokens, gemm, config)
                result["prefill"].append(row)
                print(f"{'prefill':8} attention {tokens} tokens {row['config']:10} {row['us']:8.1f} us "
                      f"{row['TFLOPs']:6.0f} TFLOP/s = {100 * row['of_gemm']:3.0f}% of gemm (target 40%)")  # fmt: skip
        if len(configs) > 1:
            # The best configuration: the highest lowest ratio over the chunk sizes.
            worst = {c: min(r["of_gemm"] for r in result["prefill"] if r["config"] == c) for c in configs}
            best = max(worst, key=worst.get)
            result["prefill_best"] = {"config": best, "min_of_gemm": worst[best]}
            print(
                f"{'prefill':8} best: {best} (worst of 2k/4k {100 * worst[best]:.0f}% of gemm); "
                "make it the default: kPrefillTcDefault in custom_ops/model/attention.h"
            )
    if "gemm" in only:
        result["gemms"] = []
        for rows in (16, 64, 128):
            for name in (*DECODE_GEMMS, GLU_GEMM):
                row = decode_gemm(timer, name, rows, hbm)
                result["gemms"].append(row)
                times = ", ".join(f"{c} {row[c + '_us']:7.1f} us = {100 * row[c + '_of_hbm']:3.0f}%" for c in CHOICES)
                shape = f"rows {rows:<4} K {row['k']:<5} N {row['n']:<5}"
                print(f"{'gemm':8} {name:12} {shape} {times} (weight bytes / hbm)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
