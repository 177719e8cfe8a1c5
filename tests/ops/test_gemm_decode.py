"""The decode GEMM op, gemm_decode(x, w, glu): x @ w, or with glu silu_mul(x @ w).

On the CPU, for float32, and for shapes its kernel's plan does not cover it is paddle.matmul (then silu_mul).
On a GPU in float16 its kernel is within float16 rounding of the exact product, its fused silu_mul is bitwise
silu_mul of its product, and a CUDA graph of it replays bitwise what an eager call computes.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdoverlap_cli.platform import probe
from tests.ops.compare import assert_same
from tests.ops.inputs import DECODE_GEMMS, gemm_inputs
from tests.ops.tensors import cpu, gpu, host

# Row counts of the kernel's four row buckets (16, 32, 64, 128 rows), their edges and a row of one.
ROWS = [1, 7, 16, 17, 33, 64, 100, 128]
# (K, N) the plan covers besides the 8B-class ones: one 64-row chunk of K and one column tile; four tiles, K split
# four ways (a chunk each); eight tiles, K split eight ways.
SMALL_GEMMS = [(64, 128), (256, 512), (1024, 1024)]
# (K, N) of the glu tests: gate_up of the 8B class (the wide plan, K whole) and a narrow one (K split).
GLU_GEMMS = [(4096, 28672), (256, 512)]
# 8B-class (K, N) whose plan splits K three ways (21 / 21 / 22 and 74 / 75 / 75 chunks of 64).
SPLIT_THREE_WAYS = [(4096, 4096), (14336, 4096)]


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
    """A decode shape of the GPU kernel's plan takes paddle.matmul on the CPU all the same."""
    import paddle

    xs, ws = gemm_inputs(np.random.default_rng(2), 16, 256, 512, np.float32)
    want = paddle.matmul(cpu(xs), cpu(ws))
    want = host(ops.silu_mul(want) if glu else want)
    np.testing.assert_array_equal(_product(ops, cpu(xs), cpu(ws), glu), want)


# ------------------------------------------------------------------------------------------- GPU


@functools.cache
def _inputs(k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """float16 x of the kernel's most rows (a test takes its first m) and w, generated once per shape: the 8B-class
    weights take seconds to draw (read only; host arrays, so nothing of the GPU outlives a test)."""
    xs, ws = gemm_inputs(np.random.default_rng(k + n), max(ROWS), k, n, np.float16)
    xs.flags.writeable = ws.flags.writeable = False
    return xs, ws


def rounding_bound(exact: np.ndarray, magnitude: np.ndarray, k: int) -> np.ndarray:
    """How far a float16 x @ w summed in float32 may be from the exact product; magnitude is |x| @ |w|.

    Products of float16 are exact in float32. Each of the K products enters the sum through additions off by at
    most 2^-23 of what they add (tensor cores truncate, and align an MMA's products to the largest), which is at
    most S = magnitude; with the MMA steps' accumulator additions (K / 16) and the split sums (<= 8), the float32
    sum is within E = (K + K / 16 + 8) 2^-23 S <= 1.07 K 2^-23 S. Rounding it to float16 adds at most half an ulp
    at |exact| + E: <= ulp(|exact|) + 2^-10 E. Both within 2 ulp(|exact|) + 2 K 2^-23 S.
    """
    ulp = np.spacing(np.abs(exact).astype(np.float16)).astype(np.float64)
    return 2 * ulp + 2 * k * 2.0**-23 * magnitude


@pytest.mark.gpu
@pytest.mark.parametrize(("k", "n"), [*DECODE_GEMMS, *SMALL_GEMMS])
def test_gemm_decode_is_the_exact_product_within_rounding(ops, k, n):
    """float16 x @ w for each row bucket within rounding_bound of the float64 product, within the GPU tests'
    float16 tolerance of paddle.matmul (cuBLAS), and the same bits on a second call."""
    import paddle

    xs, ws = _inputs(k, n)
    x64, w64 = xs.astype(np.float64), ws.astype(np.float64)
    exact, magnitude = x64 @ w64, np.abs(x64) @ np.abs(w64)
    del w64
    w = gpu(ws)
    differs_from_cublas = False
    for m in ROWS:
        x = gpu(xs[:m])
        got = _product(ops, x, w)
        assert got.dtype == np.float16 and got.shape == (m, n), m
        error = np.abs(got.astype(np.float64) - exact[:m])
        bound = rounding_bound(exact[:m], magnitude[:m], k)
        assert (error <= bound).all(), f"m={m}: error up to {np.nanmax(error / bound):.3g} of the bound"
        cublas = host(paddle.matmul(x, w))
        assert_same([cublas], [got], np.float16)
        differs_from_cublas |= not np.array_equal(got, cublas)
        np.testing.assert_array_equal(_product(ops, x, w), got, err_msg=f"m={m}: a second call differs")
    if (k, n) in SPLIT_THREE_WAYS and probe().capability == (9, 0):
        # K in three unequal parts summed at the end: another float32 summation order than cuBLAS's at every m,
        # which rounds some of the 1.5 x 10^6 outputs differently. cuBLAS's bits at every m would mean that
        # paddle.matmul ran (the op's fallback), not the kernel of an sm_90a build.
        assert differs_from_cublas, "bitwise paddle.matmul at every m: the decode kernel did not run"


@pytest.mark.gpu
@pytest.mark.parametrize(("k", "n"), GLU_GEMMS)
def test_gemm_decode_glu_is_silu_mul_of_its_product(ops, k, n):
    """The fused epilogue rounds gate and up to float16 and computes silu_mul's expression: bitwise
    silu_mul(gemm_decode(x, w, False))."""
    xs, ws = _inputs(k, n)
    w = gpu(ws)
    for m in (1, 16, 17, 64, 100, 128):
        x = gpu(xs[:m])
        fused = _product(ops, x, w, True)
        assert fused.dtype == np.float16 and fused.shape == (m, n // 2), m
        separate = host(ops.silu_mul(ops.gemm_decode(x, w, False)))
        np.testing.assert_array_equal(fused, separate, err_msg=f"m={m}")


# (dtype, M, K, N) the kernel leaves to paddle.matmul: more than 128 rows, K not a multiple of 64, columns not a
# whole number of tiles; float32 at shapes it covers in float16.
FALLBACKS = [
    (np.float16, 129, 256, 512),
    (np.float16, 200, 4096, 4096),
    (np.float16, 16, 1000, 1024),
    (np.float16, 16, 1024, 328),
    (np.float16, 1, 64, 328),
    (np.float32, 16, 256, 512),
    (np.float32, 128, 4096, 4096),
]


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("dtype", "m", "k", "n"), FALLBACKS, ids=[f"{np.dtype(d).name}-{m}x{k}x{n}" for d, m, k, n in FALLBACKS]
)
def test_gemm_decode_elsewhere_is_paddle_matmul(ops, dtype, m, k, n):
    """Where the plan does not cover the shape or the dtype: paddle.matmul, and with glu silu_mul of it, bit for
    bit."""
    import paddle

    xs, ws = gemm_inputs(np.random.default_rng(m * k + n), m, k, n, dtype)
    x, w = gpu(xs), gpu(ws)
    want = paddle.matmul(x, w)
    np.testing.assert_array_equal(_product(ops, x, w), host(want))
    np.testing.assert_array_equal(_product(ops, x, w, True), host(ops.silu_mul(want)))


@pytest.mark.gpu
def test_gemm_decode_in_a_cuda_graph(ops):
    """Captured narrow and wide plans, with and without glu: replays recompute from the inputs' new values,
    bitwise what eager calls compute from them."""
    import paddle

    from fdoverlap_cli.engine.device import Device

    device = Device.open("gpu")
    rng = np.random.default_rng(37)
    # (M, K, N, glu): K split eight ways for one row; split three ways unevenly (64 chunks); narrow with glu;
    # the wide plan (N >= 128 x 132) with and without glu.
    cases = [(1, 1024, 1024, False), (16, 4096, 4096, False), (33, 256, 512, True), (128, 256, 16896, True)]
    cases += [(100, 512, 16896, False)]

    def inputs():
        return [gemm_inputs(rng, m, k, n, np.float16) for m, k, n, _ in cases]

    tensors = [(gpu(x), gpu(w)) for x, w in inputs()]

    def work():
        return [ops.gemm_decode(x, w, glu) for (x, w), (*_, glu) in zip(tensors, cases, strict=True)]

    work()  # eagerly first, as the model runs before it captures (the launcher's one-time set-up)
    graph, outs = device.capture_graph(work)
    try:
        for _ in range(2):
            for (x, w), (new_x, new_w) in zip(tensors, inputs(), strict=True):
                x.copy_(gpu(new_x), False)
                w.copy_(gpu(new_w), False)
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
