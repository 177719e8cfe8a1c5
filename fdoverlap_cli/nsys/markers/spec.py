"""The `--steps` grammar: which CUDA activity (or NVTX range) marks one decode step, as a typed spec.

    copy:DIR[,FILTER]...     a memory copy per step. DIR: dtoh | htod | dtod. FILTER: pinned | pageable
                             (the host side's memory), or a size bound <=N, <N, >=N, >N, =N, where N is
                             an integer with a unit B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (of
                             1024); the first bound may follow DIR directly: copy:dtoh<=64KiB
    sync[:KIND[,KIND]...]    a host synchronisation per step. KIND: event (cudaEventSynchronize), stream
                             (cudaStreamSynchronize), device (cudaDeviceSynchronize), memcpy (a blocking
                             copy: cudaMemcpy, or a cudaMemcpyAsync into pageable memory); default: all
    kernel:REGEX             a kernel per step whose short or demangled name REGEX matches (re.search)
    nvtx:NAME[@DOMAIN]       an NVTX range per step with message (or category) NAME, in the domain named
                             DOMAIN ("default": the default domain); without @DOMAIN, in any domain

Examples: copy:dtoh<=64KiB   copy:dtoh,pinned   sync:event   kernel:(?i)sampl   nvtx:step@fdoverlap
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fdoverlap_cli.errors import InputError

OPTION = "--steps"
DIRECTIONS = ("dtoh", "htod", "dtod")
HOST_MEMORY = ("pinned", "pageable")
SYNC_KINDS = ("event", "stream", "device", "memcpy")
DEFAULT_DOMAIN = "default"
SMALL_COPY_BYTES = 64 * 1024  # the automatic choice looks for copies of the sampled tokens at most this big

_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
_BOUND = re.compile(r"^(<=|>=|<|>|=)\s*(\d+)\s*([A-Za-z]*)$")
_DIRECTION_AND_BOUND = re.compile(r"^(dtoh|htod|dtod)\s*((?:<=|>=|<|>|=).*)$")


@dataclass(frozen=True)
class CopyMarker:
    """Copies of one direction, optionally of one host memory kind and within a size range (bytes, inclusive)."""

    direction: str
    memory: str | None = None
    min_bytes: int = 0
    max_bytes: int | None = None

    def __str__(self) -> str:
        parts = [f"copy:{self.direction}"]
        if self.memory:
            parts.append(self.memory)
        if self.min_bytes == self.max_bytes:
            parts.append(f"={_size(self.min_bytes)}")
        else:
            if self.min_bytes:
                parts.append(f">={_size(self.min_bytes)}")
            if self.max_bytes is not None:
                parts.append(f"<={_size(self.max_bytes)}")
        return ",".join(parts)


@dataclass(frozen=True)
class SyncMarker:
    """Host synchronisation calls of the given kinds."""

    kinds: tuple[str, ...] = SYNC_KINDS

    def __str__(self) -> str:
        return "sync" if set(self.kinds) == set(SYNC_KINDS) else f"sync:{','.join(self.kinds)}"


@dataclass(frozen=True)
class KernelMarker:
    """Kernels whose short or demangled name the pattern matches."""

    pattern: str

    def __str__(self) -> str:
        return f"kernel:{self.pattern}"


@dataclass(frozen=True)
class NvtxMarker:
    """NVTX ranges named `name` in the domain `domain` (None: any domain)."""

    name: str
    domain: str | None = None

    def __str__(self) -> str:
        return f"nvtx:{self.name}" + (f"@{self.domain}" if self.domain is not None else "")


StepSpec = CopyMarker | SyncMarker | KernelMarker | NvtxMarker


def _size(n: int) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        if n and n % _UNITS[unit.upper()] == 0:
            return f"{n // _UNITS[unit.upper()]}{unit}"
    return f"{n}B"


def _bad(text: str, reason: str) -> InputError:
    return InputError(OPTION, f"'{text}': {reason}")


def _bound(text: str, part: str) -> tuple[int, int | None]:
    """A size bound as an inclusive (min, max) byte range."""
    m = _BOUND.match(part.strip())
    if not m:
        raise _bad(text, f"'{part}' is not a size bound (e.g. <=64KiB, >1MB, =128B)")
    op, number, unit = m.group(1), int(m.group(2)), (m.group(3) or "B").upper()
    if unit not in _UNITS:
        raise _bad(text, f"unknown size unit '{m.group(3)}' (B, KB, MB, GB, KiB, MiB, GiB)")
    n = number * _UNITS[unit]
    return {"<=": (0, n), "<": (0, n - 1), ">=": (n, None), ">": (n + 1, None), "=": (n, n)}[op]


def _copy(text: str, body: str) -> CopyMarker:
    parts = [p.strip() for p in body.split(",")]
    m = _DIRECTION_AND_BOUND.match(parts[0])
    if m:
        parts = [m.group(1), m.group(2), *parts[1:]]
    direction = parts[0]
    if direction not in DIRECTIONS:
        raise _bad(text, f"copy direction '{direction}' is not one of {', '.join(DIRECTIONS)}")
    memory, low, high = None, 0, None
    for part in parts[1:]:
        if part in HOST_MEMORY:
            if direction == "dtod":
                raise _bad(text, f"a device-to-device copy has no host memory to be {part}")
            if memory is not None and memory != part:
                raise _bad(text, "a copy cannot be both pinned and pageable")
            memory = part
        elif part:
            lo, hi = _bound(text, part)
            low = max(low, lo)
            high = hi if high is None else (high if hi is None else min(high, hi))
        else:
            raise _bad(text, "an empty filter between commas")
    if high is not None and low > high:
        raise _bad(text, "the size bounds leave no copy size")
    return CopyMarker(direction, memory, low, high)


def _sync(text: str, body: str | None) -> SyncMarker:
    if body is None:
        return SyncMarker()
    kinds = tuple(dict.fromkeys(k.strip() for k in body.split(",")))
    unknown = [k for k in kinds if k not in SYNC_KINDS]
    if unknown or not kinds:
        raise _bad(text, f"sync kind '{unknown[0] if unknown else ''}' is not one of {', '.join(SYNC_KINDS)}")
    return SyncMarker(tuple(k for k in SYNC_KINDS if k in kinds))


def _kernel(text: str, body: str) -> KernelMarker:
    if not body:
        raise _bad(text, "kernel: needs a regular expression (e.g. kernel:(?i)sampl)")
    try:
        re.compile(body)
    except re.error as e:
        raise _bad(text, f"not a regular expression: {e}") from None
    return KernelMarker(body)


def _nvtx(text: str, body: str) -> NvtxMarker:
    name, at, domain = body.rpartition("@") if "@" in body else (body, "", "")
    if not name:
        raise _bad(text, "nvtx: needs a range name (e.g. nvtx:step@fdoverlap)")
    if at and not domain:
        raise _bad(text, "an empty domain after @ (use @default for the default domain)")
    return NvtxMarker(name, domain if at else None)


def parse_steps(text: str) -> StepSpec:
    """Parse a `--steps` value (grammar in the module docstring); a bad one is an InputError naming it."""
    raw = text.strip()
    kind, colon, body = raw.partition(":")
    kind = kind.strip().lower()
    if kind == "copy" and colon:
        return _copy(text, body.strip())
    if kind == "sync":
        return _sync(text, body.strip() if colon else None)
    if kind == "kernel" and colon:
        return _kernel(text, body.strip())
    if kind == "nvtx" and colon:
        return _nvtx(text, body.strip())
    raise _bad(text, "expected copy:DIR[,FILTER...], sync[:KIND,...], kernel:REGEX or nvtx:NAME[@DOMAIN]")
