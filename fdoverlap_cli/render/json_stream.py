"""JSON written as it is encoded, for documents that hold long per-step arrays (analyze of a long run).

`write(doc)` prints what `json.dumps(doc, indent=2)` would (for the same values) without building the whole
text or Python lists of the arrays: a numpy array in the document is written on one line, CHUNK values at a
time, NaN as null. Everything else goes through `json.dumps`.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

CHUNK = 65536


def _array(a: np.ndarray, out: IO[str]) -> None:
    out.write("[")
    for at in range(0, len(a), CHUNK):
        part = a[at : at + CHUNK].tolist()
        if a.dtype.kind == "f":
            part = [None if math.isnan(x) else x for x in part]
        out.write(("" if at == 0 else ", ") + json.dumps(part, allow_nan=False)[1:-1])
    out.write("]")


def _write(v: Any, out: IO[str], depth: int) -> None:
    if isinstance(v, np.ndarray):
        _array(v.reshape(-1), out)
    elif isinstance(v, Mapping):
        if not v:
            out.write("{}")
            return
        pad = "  " * (depth + 1)
        out.write("{")
        for i, (k, x) in enumerate(v.items()):
            out.write(("," if i else "") + "\n" + pad + json.dumps(str(k)) + ": ")
            _write(x, out, depth + 1)
        out.write("\n" + "  " * depth + "}")
    elif isinstance(v, list | tuple) and any(isinstance(x, Mapping | np.ndarray | list | tuple) for x in v):
        if not v:
            out.write("[]")
            return
        pad = "  " * (depth + 1)
        out.write("[")
        for i, x in enumerate(v):
            out.write(("," if i else "") + "\n" + pad)
            _write(x, out, depth + 1)
        out.write("\n" + "  " * depth + "]")
    else:
        text = json.dumps(v, indent=2)
        out.write(text.replace("\n", "\n" + "  " * depth) if "\n" in text else text)


def write(doc: Any, out: IO[str] | None = None) -> None:
    """`doc` as indented JSON on `out` (standard output), its numpy arrays one line each; then a newline."""
    out = out or sys.stdout
    _write(doc, out, 0)
    out.write("\n")
    out.flush()
