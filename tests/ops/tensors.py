"""Moving test data between NumPy and paddle tensors on an explicit place."""

from __future__ import annotations

import numpy as np


def cpu(array: np.ndarray):
    """A CPU tensor holding a copy of `array` (CPU even on a CUDA build)."""
    import paddle

    return paddle.to_tensor(np.ascontiguousarray(array), place=paddle.CPUPlace())


def gpu(array: np.ndarray):
    """A GPU tensor holding a copy of `array`."""
    import paddle

    return paddle.to_tensor(np.ascontiguousarray(array), place=paddle.CUDAPlace(0))


def host(tensor) -> np.ndarray:
    """The tensor's values as a NumPy array (copied back from the GPU if needed)."""
    return np.asarray(tensor.numpy())


def refill(pairs, values) -> None:
    """Copies new (x, w) arrays into GPU tensor pairs in place (a captured graph reads the same memory)."""
    for (x, w), (new_x, new_w) in zip(pairs, values, strict=True):
        x.copy_(gpu(new_x), False)
        w.copy_(gpu(new_w), False)
