"""How the GPU tests compare a kernel's outputs with a reference (tests/ops/test_gpu_ops.py's docstring says why
these tolerances)."""

from __future__ import annotations

import numpy as np

TOLERANCE = {np.float32: {"rtol": 1e-4, "atol": 1e-5}, np.float16: {"rtol": 2e-3, "atol": 2e-3}}


def assert_same(cpu_out: list[np.ndarray], gpu_out: list[np.ndarray], dtype=None) -> None:
    """Same dtypes and shapes; equal values, or for floats with `dtype` given within TOLERANCE[dtype]."""
    for c, g in zip(cpu_out, gpu_out, strict=True):
        assert c.dtype == g.dtype and c.shape == g.shape
        if dtype is None or c.dtype.kind in "biu":
            np.testing.assert_array_equal(g, c)
        else:
            np.testing.assert_allclose(g.astype(np.float32), c.astype(np.float32), **TOLERANCE[dtype])
