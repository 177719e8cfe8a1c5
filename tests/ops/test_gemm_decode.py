"""The decode GEMM op, gemm_decode(x, w, glu): x @ w, or with glu silu_mul(x @ w).

On the CPU, for float32, and for shapes its kernel's plan does not take (anything but float16 with 65 .. 128
rows, N >= 16,896 a multiple of 256, K a multiple of 64) it is paddle.matmul (then silu_mul). On a GPU in float16
at the shapes the plan takes its kernel runs (the CUDA graph of a call names it), within float16 rounding of the
exact product; its fused silu_mul is bitwise silu_mul of its product, and a CUDA graph of it replays bitwise what
an eager call computes.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdoverlap_cli.platform import probe
from tests.ops.compare import assert_same
from tests.ops.inputs import gemm_inputs
from tests.ops.tensors import cpu, gpu, host, refill

# Row counts the plan takes: its two edges and a decode batch between.
ROWS = [65, 100, 128]
# (K, N) the plan takes at those rows: gate_up of the 8B class, its narrowest N (128 x 132) and a wider one.
WIDE_GEMMS = [(4096, 28672), (256, 16896), (512, 17408)]
# (dtype, M, K, N) the plan leaves to paddle.matmul: one row too few or too many; the 8B class's narrow GEMMs
# (qkv, o, down) at its rows; N below 16,896, or not a multiple of 256; K not a multiple of 64; float32.
FALLBACKS = [
    (np.float16, 64, 4096, 28672),
    (np.float16, 129, 4096, 28672),
    (np.float16, 64, 256, 16896),
    (np.float16, 129, 512, 17408),
    (np.float16, 1, 256, 16896),
    (np.float16, 128, 4096, 6144),
    (np.float16, 100, 4096, 4096),
    (np.float16, 128, 14336, 4096),
    (np.float16, 128, 256, 16640),
    (np.float16, 100, 256, 17024),
    (np.float16, 128, 1000, 16896),
    (np.float32, 128, 256, 16896),
]
MOST_ROWS = max(m for _, m, _, _ in FALLBACKS)
KERNEL = "DecodeGemmKernel"  # its name in a CUDA graph's kernel nodes (gemm_decode.cuh)


def _product(ops, x, w, glu: bool = False) -> np.ndarray:
    return host(ops.gemm_decode(x, w, glu))


# ------------------------------------------------------------------------------------------- CPU


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), glu=st.booleans())
def test_gemm_decode_is_paddle_matmul_on_the_cpu(ops, seed, glu):
    """float32 on the CPU: paddle.matmul, and with glu silu_mul of it, bit for bit."""
    import paddle

    rng = np.random.default_rng(seed)
    m, k, n = (int(v) for v in rng.integers(1, 40, 3))
    n += n % 2 if glu else 0
    x, w = (rng.standard_normal(shape).astype(np.float32) for shape in ((m, k), (k, n)))
    want = paddle.matmul(cpu(x), cpu(w))
    want = host(ops.silu_mul(want) if glu else want)
    got = _product(ops, cpu(x), cpu(w), glu)
    assert got.shape == (m, n // 2 if glu else n)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("glu", [False, True])
def test_gemm_decode_on_the_cpu_at_a_shape_the_kernel_covers(ops, glu):
    """A shape the GPU kernel's plan takes (in float16) is paddle.matmul on the CPU all the same."""
    import paddle

    xs, ws = gemm_inputs(np.random.default_rng(2), 100, 256, 16896, np.float32)
    want = paddle.matmul(cpu(xs), cpu(ws))
    want = host(ops.silu_mul(want) if glu else want)
    np.testing.assert_array_equal(_product(ops, cpu(xs), cpu(ws), glu), want)


# ------------------------------------------------------------------------------------------- GPU


@functools.cache
def _inputs(k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """float16 x of MOST_ROWS rows (a test takes its first m) and w, generated once per shape: the 8B-class weights take
    seconds to draw (read only; host arrays, so nothing of the GPU outlives a test)."""
    xs, ws = gemm_inputs(np.random.default_rng(k + n), MOST_ROWS, k, n, np.float16)
    xs.flags.writeable = ws.flags.writeable = False
    return xs, ws


def rounding_bound(exact: np.ndarray, magnitude: np.ndarray, k: int) -> np.ndarray:
    """How far a float16 x @ w summed in float32 may be from the exact product; magnitude is |x| @ |w|.

    Products of float16 are exact in float32. Each of the K products enters the sum through additions off by at
    most 2^-23 of what they add (tensor cores truncate, and align an MMA's products to the largest), which is at
    most S = magnitude; with the MMA steps' accumulator additions (K / 16) the float32 sum is within
    E = (K + K / 16) 2^-23 S <= 1.07 K 2^-23 S. Rounding it to float16 adds at most half an ulp at |exact| + E:
    <= ulp(|exact|) + 2^-10 E. Both within 2 ulp(|exact|) + 2 K 2^-23 S.
    """
    ulp = np.spacing(np.abs(exact).astype(np.float16)).astype(np.float64)
    return 2 * ulp + 2 * k * 2.0**-23 * magnitude


def _graph_text(work, tmp_path) -> str:
    """The DOT text of a CUDA graph of work() (cudaGraphDebugDotPrint): the kernels it launches, by name, which
    no coincidence of rounding can fake. work() runs eagerly first (the launcher's and cuBLAS's set-up)."""
    import paddle
    from paddle.device.cuda.graphs import CUDAGraph

    work()
    graph = CUDAGraph(paddle.CUDAPlace(0), mode="thread_local")
    graph.capture_begin()
    try:
        work()
    except BaseException:
        with contextlib.suppress(Exception):
            graph.capture_end()
        raise
    graph.capture_end()
    try:
        graph.print_to_dot_files(str(tmp_path))
        return "".join(path.read_text() for path in sorted(tmp_path.glob("*.dot")))
    finally:
        graph.reset()


@pytest.mark.gpu
def test_gemm_decode_runs_its_kernel_exactly_where_the_plan_takes_the_shape(ops, tmp_path):
    """The kernel is a node of the captured call's graph at every shape of ROWS x WIDE_GEMMS (with and without
    glu) and at none of FALLBACKS': the other tests' shapes are the kernel's and paddle.matmul's as they say."""
    if probe().capability != (9, 0):
        pytest.skip("the decode kernel is sm_90a code (an H100 / H200)")
    covered = [(np.float16, m, k, n) for m in ROWS for k, n in WIDE_GEMMS]
    for i, (dtype, m, k, n) in enumerate(covered + FALLBACKS):
        x, w = gpu(np.zeros((m, k), dtype)), gpu(np.zeros((k, n), dtype))
        for glu in (False, True):
            text = _graph_text(lambda x=x, w=w, glu=glu: ops.gemm_decode(x, w, glu), tmp_path / f"{i}-{glu}")
            assert (KERNEL in text) == (i < len(covered)), f"{np.dtype(dtype).name} {m}x{k}x{n} glu={glu}"


@pytest.mark.gpu
@pytest.mark.parametrize(("k", "n"), WIDE_GEMMS)
def test_gemm_decode_is_the_exact_product_within_rounding(ops, k, n):
    """float16 x @ w at each of ROWS within rounding_bound of the float64 product, within the GPU tests' float16
    tolerance of paddle.matmul (cuBLAS), and the same bits on a second call."""
    import paddle

    xs, ws = _inputs(k, n)
    m_most = max(ROWS)
    x64, w64 = xs[:m_most].astype(np.float64), ws.astype(np.float64)
    exact, magnitude = x64 @ w64, np.abs(x64) @ np.abs(w64)
    del w64
    w = gpu(ws)
    for m in ROWS:
        x = gpu(xs[:m])
        got = _product(ops, x, w)
        assert got.dtype == np.float16 and got.shape == (m, n), m
        error = np.abs(got.astype(np.float64) - exact[:m])
        bound = rounding_bound(exact[:m], magnitude[:m], k)
        assert (error <= bound).all(), f"m={m}: error up to {np.nanmax(error / bound):.3g} of the bound"
        assert_same([host(paddle.matmul(x, w))], [got], np.float16)
        np.testing.assert_array_equal(_product(ops, x, w), got, err_msg=f"m={m}: a second call differs")


@pytest.mark.gpu
@pytest.mark.parametrize(("k", "n"), WIDE_GEMMS)
def test_gemm_decode_glu_is_silu_mul_of_its_product(ops, k, n):
    """The fused epilogue rounds gate and up to float16 and computes silu_mul's expression: bitwise
    silu_mul(gemm_decode(x, w, False))."""
    xs, ws = _inputs(k, n)
    w = gpu(ws)
    for m in ROWS:
        x = gpu(xs[:m])
        fused = _product(ops, x, w, True)
        assert fused.dtype == np.float16 and fused.shape == (m, n // 2), m
        separate = host(ops.silu_mul(ops.gemm_decode(x, w, False)))
        np.testing.assert_array_equal(fused, separate, err_msg=f"m={m}")


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("dtype", "m", "k", "n"), FALLBACKS, ids=[f"{np.dtype(d).name}-{m}x{k}x{n}" for d, m, k, n in FALLBACKS]
)
def test_gemm_decode_elsewhere_is_paddle_matmul(ops, dtype, m, k, n):
    """Where the plan does not take the shape or the dtype: paddle.matmul, and with glu silu_mul of it, bit for
    bit."""
    import paddle

    xs, ws = _inputs(k, n)
    x, w = gpu(xs[:m].astype(dtype)), gpu(ws.astype(dtype))
    want = paddle.matmul(x, w)
    np.testing.assert_array_equal(_product(ops, x, w), host(want))
    np.testing.assert_array_equal(_product(ops, x, w, True), host(ops.silu_mul(want)))


@pytest.mark.gpu
def test_gemm_decode_in_a_cuda_graph(ops):
    """Captured calls the plan takes, with and without glu, and one it leaves to paddle.matmul: replays recompute
    from the inputs' new values, bitwise what eager calls compute from them."""
    import paddle

    from fdoverlap_cli.engine.device import Device

    device = Device.open("gpu")
    rng = np.random.default_rng(37)
    # (M, K, N, glu): the plan's edges with glu, a decode batch between without; 64 rows: paddle.matmul.
    cases = [(128, 256, 16896, True), (65, 512, 17408, True), (100, 512, 16896, False), (64, 256, 16896, True)]

    def inputs():
        return [gemm_inputs(rng, m, k, n, np.float16) for m, k, n, _ in cases]

    tensors = [(gpu(x), gpu(w)) for x, w in inputs()]

    def work():
        return [ops.gemm_decode(x, w, glu) for (x, w), (*_, glu) in zip(tensors, cases, strict=True)]

    work()  # eagerly first, as the model runs before it captures (the launcher's one-time set-up)
    graph, outs = device.capture_graph(work)
    try:
        for _ in range(2):
            refill(tensors, inputs())
            graph.replay()
            device.synchronize()
            eager = [host(t) for t in work()]
            for (x, w), (m, _, n, glu), out, want in zip(tensors, cases, outs, eager, strict=True):
                replayed = host(out)
                assert replayed.shape == (m, n // 2 if glu else n)
                np.testing.assert_array_equal(replayed, want, err_msg=f"{(m, n, glu)}")
                if not glu:
                    assert_same([host(paddle.matmul(x, w))], [replayed], np.float16)
    finally:
        graph.reset()
