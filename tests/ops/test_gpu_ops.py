"""Every op's CUDA kernel against its CPU kernel, and the GPU-only behaviour of the flag and timing ops.

Integers, copies and fill_random_ must match exactly. Float kernels may differ by summation order
and by CUDA's expf/exp2f/sqrtf rounding: float32 results within rtol 1e-4 (attention sums up to a
few thousand exponentials, merged across blocks), float16 results within 2e-3 (one float16 ulp at
|x| ~ 1; the tensor-core attention also rounds the softmax weights to float16 before P·V, which
stays below 1.3e-3 here).
Only paddle allocation, copies and .numpy() touch GPU tensors here: paddle's own kernels do not run
on every GPU (paddlepaddle-gpu 2.6 on Hopper).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fdoverlap_cli.kernel_choices import (
    DECODE_TC_CONFIGS,
    DECODE_TC_ENV,
    PREFILL_TC_CONFIGS,
    PREFILL_TC_ENV,
    PREFILL_TC_FIRST_WG,
)
from fdoverlap_cli.platform import probe
from tests.ops.compare import assert_same
from tests.ops.inputs import (
    DECODE_GEMMS,
    gemm_inputs,
    packed_attention_batch,
    random_attention_batch,
    random_step_state,
    random_tasks,
)
from tests.ops.tensors import cpu, gpu, host, refill

pytestmark = pytest.mark.gpu

SEEDS = [0, 1, 2]


def on_both(call, arrays: list[np.ndarray], inplace: tuple[int, ...] = ()):
    """Run call(*tensors) with the arrays on the CPU and on the GPU; returns (cpu, gpu) lists of NumPy
    arrays: the op's outputs, or for an in-place op the buffers at the `inplace` positions."""
    results = []
    for place in (cpu, gpu):
        tensors = [place(a) for a in arrays]
        outs = call(*tensors)
        if inplace:
            results.append([host(tensors[i]) for i in inplace])
        else:
            results.append([host(o) for o in (outs if isinstance(outs, list | tuple) else [outs])])
    return results


# ------------------------------------------------------------------------------------------- step ops


@pytest.mark.parametrize("seed", SEEDS)
def test_padding_ops(ops, seed):
    rng = np.random.default_rng(seed)
    bsz, width = 300, 40  # more rows than one block of threads
    input_ids = rng.integers(0, 32000, (bsz, width)).astype(np.int64)
    lens = rng.integers(0, width + 1, bsz).astype(np.int32)
    for token_num in (0, int(lens.sum()) - 5, int(lens.sum()) + 7):
        assert_same(*on_both(lambda i, s, n=token_num: ops.get_padding_offset(i, s, n), [input_ids, lens]))
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    for dtype in (np.float32, np.float16):
        hidden = rng.standard_normal((int(cu[-1]) + 3, 64)).astype(dtype)
        assert_same(*on_both(ops.rebuild_padding, [hidden, cu, lens]))


@pytest.mark.parametrize("seed", SEEDS)
def test_token_update_ops(ops, seed):
    rng = np.random.default_rng(seed)
    s = random_step_state(rng, 1500, 4)  # update_inputs: more slots than its one block has threads
    pre_ids = rng.integers(-1, 50, (1500, 16)).astype(np.int64)
    lens = [s[k] for k in ("seq_lens_this_time", "seq_lens_encoder", "seq_lens_decoder")]
    assert_same(
        *on_both(ops.set_value_by_flags_and_idx, [pre_ids, s["input_ids"], *lens, s["step_idx"], s["stop_flags"]], (0,))
    )
    stop_args = [s[k] for k in ("sampled_token_ids", "stop_flags", "seq_lens_this_time", "seq_lens_decoder")]
    stop_args += [s["prompt_lens"], s["step_idx"], s["max_dec_len"], np.array([2, 3], np.int64), s["next_tokens"]]
    assert_same(*on_both(ops.set_stop_value_multi_ends, stop_args, (0, 1, 5, 8)))
    update_args = [s["stop_flags"], np.array([True]), *lens, s["prompt_lens"], s["sampled_token_ids"]]
    update_args += [s["input_ids"], s["next_tokens"]]
    assert_same(*on_both(ops.update_inputs, update_args, (0, 1, 2, 3, 4, 6, 7)))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("tasks_on", ["cpu", "gpu"])
def test_insert_tasks(ops, seed, tasks_on):
    rng = np.random.default_rng(seed)
    names = ("input_ids", "pre_ids", "seq_lens_this_time", "seq_lens_encoder", "seq_lens_decoder", "prompt_lens")
    names += ("step_idx", "max_dec_len", "stop_flags")
    s = random_step_state(rng, 64, 300)  # pre_ids rows of 602: more than one block of threads
    meta, tokens, preempt = random_tasks(rng, 64, 300)
    results = []
    for place in (cpu, gpu):
        buffers = [place(s[k]) for k in names]
        task_place = cpu if place is cpu or tasks_on == "cpu" else gpu
        ops.insert_tasks(*buffers, task_place(meta), task_place(tokens), task_place(preempt))
        results.append([host(b) for b in buffers])
    assert_same(*results)


def test_insert_nothing_on_the_gpu(ops):
    s = random_step_state(np.random.default_rng(5), 8, 4)
    buffers = [gpu(s[k]) for k in ("input_ids", "pre_ids", "seq_lens_this_time", "seq_lens_encoder")]
    buffers += [gpu(s["seq_lens_decoder"])]
    buffers += [gpu(s[k]) for k in ("prompt_lens", "step_idx", "max_dec_len", "stop_flags")]
    ops.insert_tasks(*buffers, cpu(np.zeros((0, 6), np.int64)), cpu(np.zeros(0, np.int64)), cpu(np.zeros(0, np.int32)))
    np.testing.assert_array_equal(host(buffers[0]), s["input_ids"])
    np.testing.assert_array_equal(host(buffers[1]), s["pre_ids"])


# ------------------------------------------------------------------------------------------- model kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_model_kernels(ops, dtype):
    rng = np.random.default_rng(3)
    table = rng.standard_normal((1000, 256)).astype(dtype)
    ids = rng.integers(-1, 1001, 700).astype(np.int64)
    assert_same(*on_both(ops.embedding, [ids, table]))
    # decode rows of an 8B-class layer, a wide row, rows too wide for the registers or for 16-byte vectors
    for rows, hidden in ((16, 4096), (70, 4096), (128, 8192), (3, 40000), (5, 4100), (2, 13)):
        x, residual = (rng.standard_normal((rows, hidden)).astype(dtype) for _ in range(2))
        weight = rng.standard_normal(hidden).astype(dtype)
        assert_same(*on_both(lambda a, w: ops.fdo_rms_norm(a, w, 1e-6), [x, weight]), dtype)
        cpu_out, gpu_out = on_both(lambda a, r, w: ops.add_rms_norm(a, r, w, 1e-6), [x, residual, weight])
        np.testing.assert_array_equal(gpu_out[1], cpu_out[1])  # residual_out: one rounded add, exact
        assert_same(cpu_out, gpu_out, dtype)
    for rows, half in ((70, 1000), (16, 14336), (3, 1001)):  # 1001: not a whole number of 16-byte vectors
        assert_same(*on_both(ops.silu_mul, [(4 * rng.standard_normal((rows, 2 * half))).astype(dtype)]), dtype)


def check_attention(ops, dtype, hq, hkv, d, batch_arrays, windows=None) -> None:
    """write_kv_cache then attention on both places: the caches exactly, the outputs within tolerance.

    windows: row ranges [start, stop), each within one slot, where the CPU kernel recomputes the rows
    (for long chunks, whose every row would cost the CPU kernel seconds); None: every row.
    """
    qkv, keys, values, batch, cu, dec = batch_arrays
    meta = [batch, cu, dec]
    cpu_caches, gpu_caches = on_both(
        lambda q, k, v, b, c, s: ops.write_kv_cache(q, k, v, b, c, s, hq, hkv, d), [qkv, keys, values, *meta], (1, 2)
    )
    for c, g in zip(cpu_caches, gpu_caches, strict=True):
        np.testing.assert_array_equal(g.view(np.uint8), c.view(np.uint8))  # NaN tails included
    caches = [gpu(c) for c in cpu_caches]
    got = host(ops.attention(gpu(qkv), *caches, *(gpu(a) for a in meta), hq, hkv, d, d**-0.5))
    assert not got[batch < 0].any()  # padding rows are zero
    for start, stop in windows or [(0, len(batch))]:
        rows = slice(start, stop)
        win_cu, win_dec = cu, dec
        if windows:
            b = int(batch[start])
            assert (batch[rows] == b).all()
            win_cu, win_dec = cu.copy(), dec.copy()
            win_cu[b], win_cu[b + 1], win_dec[b] = 0, stop - start, dec[b] + start - cu[b]
        want = host(
            ops.attention(
                *(cpu(a) for a in (qkv[rows], *cpu_caches, batch[rows], win_cu, win_dec)), hq, hkv, d, d**-0.5
            )
        )
        assert np.isfinite(want).all()
        assert_same([want], [got[rows]], dtype)


HEADS = [(32, 8, 128), (8, 2, 64), (4, 4, 64), (3, 1, 40), (2, 1, 36), (64, 2, 128), (2, 1, 256)]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("hq", "hkv", "d"), [(8, 2, 128), (4, 4, 64), (3, 1, 40)])
def test_attention_kernels(ops, dtype, hq, hkv, d):
    rng = np.random.default_rng(4)
    check_attention(ops, dtype, hq, hkv, d, random_attention_batch(rng, dtype, hq, hkv, d, bsz=6, max_len=300))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("hq", "hkv", "d"), HEADS)
def test_attention_decode_rows(ops, dtype, hq, hkv, d):
    """At most one row per slot (the kernel that splits each row's keys across blocks): long and short
    contexts (short ones leave splits empty), idle slots, padding rows, a row past the cache."""
    rng = np.random.default_rng(hq * 1000 + d)
    ctx = [int(c) for c in rng.integers(0, 2500, 12)] + [0, 5, 31, 2599]
    lens = [1] * 14 + [0, 1]
    batch_arrays = packed_attention_batch(rng, dtype, hq, hkv, d, lens, ctx, 2600, padding=1, poison_tail=True)
    check_attention(ops, dtype, hq, hkv, d, batch_arrays)
    few = packed_attention_batch(rng, dtype, hq, hkv, d, [1, 1, 0, 1], [8190, 17, 0, 9000], 8192, poison_tail=False)
    check_attention(ops, dtype, hq, hkv, d, few)


@pytest.mark.parametrize("config", DECODE_TC_CONFIGS)
@pytest.mark.parametrize(("bsz", "max_len"), [(16, 600), (3, 4100), (40, 300)])
def test_attention_decode_configs(ops, monkeypatch, config, bsz, max_len):
    """Every decode configuration of the tensor-core kernel (FDOVERLAP_DECODE_TC) at 8B-class heads: splits
    within blocks only (16 slots), across blocks too (3), one-warp blocks (40); a padding row, an idle slot."""
    monkeypatch.setenv(DECODE_TC_ENV, config)
    rng = np.random.default_rng(bsz)
    ctx = [int(c) for c in rng.integers(0, max_len, bsz - 2)] + [0, max_len - 1]
    lens = [1] * (bsz - 2) + [0, 1]
    batch_arrays = packed_attention_batch(rng, np.float16, 32, 8, 128, lens, ctx, max_len, padding=1, poison_tail=True)
    check_attention(ops, np.float16, 32, 8, 128, batch_arrays)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("hq", "hkv", "d"), [(8, 2, 128), (8, 2, 64), (3, 1, 40)])
def test_attention_mixed_batch(ops, dtype, hq, hkv, d):
    """Prefill chunks (fresh and continued), decode rows and padding in one batch: more rows than slots."""
    rng = np.random.default_rng(11)
    lens, dec = [300, 1, 1, 150, 1, 65, 1, 1], [0, 900, 17, 700, 2500, 3, 0, 129]
    check_attention(ops, dtype, hq, hkv, d, packed_attention_batch(rng, dtype, hq, hkv, d, lens, dec, 2600, 5, True))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_attention_rows_out_of_slot_order(ops, dtype):
    """Batch ids that do not follow cu_seqlens_q: the per-row contract still holds (the prefill kernel's
    pass over the rows no tile owns)."""
    rng = np.random.default_rng(12)
    qkv, keys, values, batch, cu, dec = packed_attention_batch(
        rng, dtype, 8, 2, 128, [40, 30, 50, 7], [3, 0, 100, 60], 200, padding=9
    )
    check_attention(ops, dtype, 8, 2, 128, (qkv, keys, values, rng.permutation(batch), cu, dec))


@pytest.mark.parametrize(
    ("dtype", "rows", "heads"),
    [(np.float16, 4096, (2, 1, 128)), (np.float16, 2048, (8, 2, 64)), (np.float32, 2048, (4, 2, 128))],
)
def test_attention_long_prefill(ops, dtype, rows, heads):
    """One long prompt chunk from position 0 (the tiled kernel's main loop and causal diagonal), and a
    chunk continuing a cached prefix."""
    hq, hkv, d = heads
    rng = np.random.default_rng(rows)
    windows = [(0, 32), (rows // 2 - 17, rows // 2 + 15), (rows - 64, rows)]
    whole = packed_attention_batch(rng, dtype, hq, hkv, d, [rows], [0], rows, 0, True)
    check_attention(ops, dtype, hq, hkv, d, whole, windows)
    half = rows // 2
    chunked = packed_attention_batch(rng, dtype, hq, hkv, d, [half, 3], [half + 7, 40], rows + 8, 2, True)
    check_attention(ops, dtype, hq, hkv, d, chunked, [(0, 32), (half - 64, half), (half, half + 3)])


@pytest.mark.parametrize("config", PREFILL_TC_CONFIGS)
def test_attention_prefill_configs(ops, monkeypatch, config):
    """Every prefill tile configuration of the tensor-core kernel (FDOVERLAP_PREFILL_TC) against the CPU
    kernel: a long chunk from position 0 at 8B-class heads, a mixed batch, a head dim below the tile's."""
    monkeypatch.setenv(PREFILL_TC_ENV, config)
    if PREFILL_TC_CONFIGS.index(config) >= PREFILL_TC_FIRST_WG and probe().capability != (9, 0):
        qkv, keys, values, batch, cu, dec = packed_attention_batch(
            np.random.default_rng(0), np.float16, 8, 2, 128, [40], [0], 64, 0, False
        )
        with pytest.raises(Exception, match=f"{PREFILL_TC_ENV}={config} needs the warpgroup-MMA kernels"):
            ops.attention(*(gpu(a) for a in (qkv, keys, values, batch, cu, dec)), 8, 2, 128, 128**-0.5)
        return
    rng = np.random.default_rng(21)
    rows = 1024
    whole = packed_attention_batch(rng, np.float16, 32, 8, 128, [rows], [0], rows, 0, True)
    check_attention(ops, np.float16, 32, 8, 128, whole, [(0, 40), (rows // 2 - 9, rows // 2 + 23), (rows - 48, rows)])
    lens, dec = [300, 1, 1, 150, 1, 65], [0, 900, 17, 700, 2500, 3]
    for hq, hkv, d in ((8, 2, 128), (8, 2, 64), (3, 1, 40)):
        mixed = packed_attention_batch(rng, np.float16, hq, hkv, d, lens, dec, 2600, 5, True)
        check_attention(ops, np.float16, hq, hkv, d, mixed)


def test_attention_unknown_prefill_config(ops, monkeypatch):
    monkeypatch.setenv(PREFILL_TC_ENV, "nope")
    qkv, keys, values, batch, cu, dec = packed_attention_batch(
        np.random.default_rng(0), np.float16, 8, 2, 128, [40], [0], 64, 0, False
    )
    with pytest.raises(Exception, match="FDOVERLAP_PREFILL_TC=nope is not a prefill configuration"):
        ops.attention(*(gpu(a) for a in (qkv, keys, values, batch, cu, dec)), 8, 2, 128, 128**-0.5)


def test_attention_unknown_decode_config(ops, monkeypatch):
    monkeypatch.setenv(DECODE_TC_ENV, "nope")
    qkv, keys, values, batch, cu, dec = packed_attention_batch(
        np.random.default_rng(0), np.float16, 8, 2, 128, [1, 1], [10, 20], 64, 0, False
    )
    with pytest.raises(Exception, match="FDOVERLAP_DECODE_TC=nope is not a decode configuration"):
        ops.attention(*(gpu(a) for a in (qkv, keys, values, batch, cu, dec)), 8, 2, 128, 128**-0.5)


def check_gemm(ops, m: int, k: int, n: int, dtype, seed: int = 0):
    """float16: the gemm op against paddle.matmul (cuBLAS). float32: against the float64 product within
    float32 rounding of K terms (|x| < 1, |w| < 1/sqrt(K)); paddle's own float32 matmul runs in TF32 on this
    GPU (paddle's allow_tf32_cublas), some 1000 times coarser, so it is no reference."""
    import paddle

    xs, ws = gemm_inputs(np.random.default_rng(seed), m, k, n, dtype)
    x, w = gpu(xs), gpu(ws)
    got = host(ops.gemm(x, w))
    assert got.shape == (m, n)
    if dtype == np.float32:
        exact = xs.astype(np.float64) @ ws.astype(np.float64)
        assert np.max(np.abs(got - exact)) <= 16 * np.sqrt(k) * np.finfo(np.float32).eps
    else:
        assert_same([host(paddle.matmul(x, w))], [got], dtype)


@pytest.mark.parametrize("m", [16, 64, 128])
@pytest.mark.parametrize(("k", "n"), DECODE_GEMMS)
def test_gemm_decode_shapes(ops, m, k, n):
    check_gemm(ops, m, k, n, np.float16, seed=m + k + n)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("m", [1, 3, 17, 200])
@pytest.mark.parametrize(("k", "n"), [(72, 40), (1000, 328), (4104, 1032), (37, 13)])
def test_gemm_odd_shapes(ops, dtype, m, k, n):
    """Dimensions that are multiples of 8 but not of 64, and (37, 13) of neither (2-byte aligned rows)."""
    check_gemm(ops, m, k, n, dtype, seed=m * k + n)


def test_gemm_in_a_cuda_graph(ops):
    """Captured: a shape tuned eagerly before (its cached algorithm) and one first seen in the capture (the
    heuristic's first, never timed while capturing). Replays recompute from the inputs' new values, and an
    eager call after the capture runs the replay's algorithm (bitwise the same)."""
    import paddle

    from fdoverlap_cli.engine.device import Device

    device = Device.open("gpu")
    rng = np.random.default_rng(31)
    shapes = [(16, 4096, 6144), (40, 776, 264)]  # (M, K, N); the second runs nowhere else in these tests

    def inputs():
        return [gemm_inputs(rng, m, k, n, np.float16) for m, k, n in shapes]

    tensors = [(gpu(x), gpu(w)) for x, w in inputs()]
    ops.gemm(*tensors[0])
    graph, outs = device.capture_graph(lambda: [ops.gemm(x, w) for x, w in tensors])
    try:
        for _ in range(2):
            refill(tensors, inputs())
            graph.replay()
            device.synchronize()
            for (x, w), out in zip(tensors, outs, strict=True):
                replayed = host(out)
                assert_same([host(paddle.matmul(x, w))], [replayed], np.float16)
                np.testing.assert_array_equal(host(ops.gemm(x, w)), replayed)
    finally:
        graph.reset()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_sample_greedy(ops, dtype):
    rng = np.random.default_rng(6)
    logits = rng.integers(-20, 20, (64, 50000)).astype(dtype)  # many ties for the maximum
    logits[rng.random(logits.shape) < 0.01] = np.nan
    logits[5] = np.nan
    for banned in (-1, 0, 17):
        assert_same(*on_both(lambda t, b=banned: ops.sample_greedy(t, b), [logits]))


@pytest.mark.parametrize("dtype", [np.bool_, np.int32, np.int64, np.float16, np.float32])
def test_fill(ops, dtype):
    assert_same(*on_both(lambda t: ops.fill_(t, -3.0), [np.zeros((100, 1000), dtype)], (0,)))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_fill_random_is_bit_identical(ops, dtype):
    cpu_out, gpu_out = on_both(lambda t: ops.fill_random_(t, -12345, 0.02), [np.zeros((3000, 1000), dtype)], (0,))
    np.testing.assert_array_equal(gpu_out[0].view(np.uint8), cpu_out[0].view(np.uint8))


# ------------------------------------------------------------------------------------------- flags and output


def test_pinned_flag_stays_on_the_host(ops):
    flag = cpu(np.array([True])).pin_memory()
    assert flag.place.is_cuda_pinned_place()
    ops.set_stop(flag, False)
    assert flag.place.is_cuda_pinned_place()
    assert not bool(host(flag)[0])
    value = ops.get_stop(flag)
    assert value.place.is_cpu_place() and not bool(host(value)[0])
    ops.set_stop(flag, True)
    assert bool(host(ops.get_stop(flag))[0])


def test_flag_in_device_memory_is_rejected():
    """In a subprocess: a GPU flag read through a host pointer must be an error, not a crash of the caller."""
    code = (
        "from fdoverlap_cli import ops; m = ops.load(); import paddle; flag = paddle.empty([1], dtype='bool')\n"
        "try:\n    m.get_stop(flag)\nexcept Exception as e:\n    print(type(e).__name__, e)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "get_stop: input 'flag' must be a CPU or pinned host tensor" in proc.stdout


def test_save_output_reads_pinned_buffers(ops):
    from fdoverlap_cli.engine.msg_queue import MessageQueue

    tokens = cpu(np.array([[5], [6]], np.int64)).pin_memory()
    with MessageQueue() as queue:
        not_need_stop = cpu(np.array([True])).pin_memory()
        status = ops.save_output(tokens, not_need_stop, cpu(np.array([0, 1], np.int32)), queue.msqid, 4)
        assert int(host(status)[0]) == 0
        out = cpu(np.zeros(8, np.int32))
        assert int(host(ops.get_output(out, queue.msqid, False))[0]) == 4
        assert host(out)[:4].tolist() == [4, 2, 5, -9]


# ------------------------------------------------------------------------------------------- timing


def test_record_timestamp_increases_along_a_stream(ops):
    import paddle

    buf = gpu(np.zeros(8, np.int64))
    work = gpu(np.zeros((4000, 4000), np.float32))
    for i in range(8):
        ops.record_timestamp(buf, i, 0)
        ops.fill_random_(work, i, 1.0)  # ~16M elements between two stamps
    side = paddle.device.cuda.Stream()
    side_buf = gpu(np.zeros(2, np.int64))
    ops.record_timestamp(side_buf, 0, int(side.cuda_stream))
    ops.record_timestamp(side_buf, 1, int(side.cuda_stream))
    side.synchronize()
    stamps = host(buf)
    assert (stamps > 0).all()
    assert (np.diff(stamps) > 0).all()
    side_stamps = host(side_buf)
    assert 0 < side_stamps[0] <= side_stamps[1]


def test_clock_samples_brackets(ops):
    rows = host(ops.clock_samples(gpu(np.zeros(1, np.int64)), 64))
    assert rows.shape == (64, 3)
    host_before, device, host_after = rows.T
    assert (host_before <= host_after).all()
    assert (host_before > 0).all() and (device > 0).all()
    assert (np.diff(device) >= 0).all() and device[-1] > device[0]  # the global timer ticks in ~1 us steps
    assert (np.diff(host_before) >= 0).all()
