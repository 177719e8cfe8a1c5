"""A synthetic workload: requests with drawn prompt/output lengths and arrivals, then scheduled.

Lengths are given as a small spec language (`parse_lengths`): a fixed value, a uniform integer
range, or a normal/lognormal with a mean and standard deviation, rounded and clipped to a range.
Arrivals are all at step 0, or a Poisson process with a rate in requests per step. The same
spec always gives the same trace, byte for byte: one seeded `random.Random` draws everything in
a fixed order, and `meta` holds the canonical command and parameters (no timestamps).
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from typing import Any

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.trace.format import MAX_INT, Request, Trace
from fdoverlap_cli.trace.scheduler import MAX_REQUESTS, SchedulerOptions, schedule_trace

_RANGE = r"(\d+)\.\.(\d+)"
_NUMBER = r"(\d+(?:\.\d+)?)"


@dataclasses.dataclass(frozen=True, slots=True)
class LengthDist:
    """A distribution of token counts; `sample` always returns an int in [lo, hi]."""

    kind: str  # "fixed", "uniform", "normal" or "lognormal"
    lo: int
    hi: int
    mean: float = 0.0  # normal/lognormal: of the lengths themselves
    std: float = 0.0

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return self.lo
        if self.kind == "uniform":
            return rng.randint(self.lo, self.hi)
        if self.kind == "normal":
            x = rng.gauss(self.mean, self.std)
        else:
            # A lognormal with mean m and std s of the values: sigma² = ln(1 + s²/m²), mu = ln m - sigma²/2.
            sigma2 = math.log1p((self.std / self.mean) ** 2)
            x = rng.lognormvariate(math.log(self.mean) - sigma2 / 2, math.sqrt(sigma2))
        return min(max(round(x), self.lo), self.hi)

    def __str__(self) -> str:
        if self.kind == "fixed":
            return str(self.lo)
        if self.kind == "uniform":
            return f"{self.lo}..{self.hi}"
        return f"{self.kind}:{self.mean:g},{self.std:g},{self.lo}..{self.hi}"


def parse_lengths(text: str, option: str) -> LengthDist:
    """Parse N | LO..HI | normal:MEAN,STD,LO..HI | lognormal:MEAN,STD,LO..HI (draws clipped to LO..HI)."""
    spec = text.strip()
    if re.fullmatch(r"\d+", spec):
        dist = LengthDist("fixed", int(spec), int(spec))
    elif m := re.fullmatch(_RANGE, spec):
        dist = LengthDist("uniform", int(m[1]), int(m[2]))
    elif m := re.fullmatch(rf"(normal|lognormal):{_NUMBER},{_NUMBER},{_RANGE}", spec):
        dist = LengthDist(m[1], int(m[4]), int(m[5]), float(m[2]), float(m[3]))
        if m[1] == "lognormal" and dist.mean <= 0:
            raise InputError(option, f"lognormal needs a mean above 0, got {text!r}")
    else:
        raise InputError(
            option, f"expected N, LO..HI, normal:MEAN,STD,LO..HI or lognormal:MEAN,STD,LO..HI, got {text!r}"
        )
    if dist.lo < 1 or dist.hi < dist.lo:
        raise InputError(option, f"lengths must be a range of at least 1 with LO <= HI, got {text!r}")
    return dist


@dataclasses.dataclass(frozen=True, slots=True)
class SynthSpec:
    """Everything that determines a synthetic trace."""

    requests: int = 24
    prompt_len: LengthDist = LengthDist("uniform", 16, 64)
    output_len: LengthDist = LengthDist("uniform", 32, 96)
    arrival_rate: float = 0.0  # requests per step (Poisson); 0: all arrive at step 0
    seed: int = 0
    scheduler: SchedulerOptions = dataclasses.field(default_factory=SchedulerOptions)

    def command(self) -> str:
        """The canonical command line that makes this trace (every option spelled out)."""
        return " ".join(
            [
                "fdoverlap trace synth",
                f"--requests {self.requests}",
                f"--prompt-len {self.prompt_len}",
                f"--output-len {self.output_len}",
                f"--arrival-rate {self.arrival_rate:g}",
                f"--seed {self.seed}",
                *self.scheduler.flags(),
            ]
        )

    def parameters(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "prompt_len": str(self.prompt_len),
            "output_len": str(self.output_len),
            "arrival_rate": self.arrival_rate,
            "seed": self.seed,
            **self.scheduler.parameters(),
        }


def draw_requests(spec: SynthSpec) -> list[Request]:
    """The requests of `spec`: per request, in order, the arrival gap, the prompt and the output length."""
    if spec.requests < 1:
        raise InputError("--requests", f"must be at least 1, got {spec.requests}")
    if spec.arrival_rate < 0 or not math.isfinite(spec.arrival_rate):
        raise InputError("--arrival-rate", f"must be a finite rate >= 0, got {spec.arrival_rate}")
    if not 0 <= spec.seed <= MAX_INT:
        raise InputError("--seed", f"must be in [0, 2^62], got {spec.seed}")
    if spec.requests > MAX_REQUESTS:  # before the work: drawing 10^8 requests alone takes minutes and GBs
        raise InputError("--requests", f"at most {MAX_REQUESTS:,} (the most a trace holds), got {spec.requests:,}")
    rng = random.Random(spec.seed)
    t = 0.0
    requests = []
    for i in range(spec.requests):
        if spec.arrival_rate > 0:
            t += rng.expovariate(spec.arrival_rate)
            if not math.isfinite(t):
                raise InputError("--arrival-rate", f"{spec.arrival_rate:g} is too small: the arrival steps overflow")
        prompt = spec.prompt_len.sample(rng)
        output = spec.output_len.sample(rng)
        requests.append(Request(id=f"r{i}", prompt_len=prompt, output_len=output, arrival_step=math.floor(t)))
    return requests


def synth_trace(spec: SynthSpec) -> Trace:
    """Draw the requests of `spec` and schedule them into a trace."""
    meta = {"generator": "fdoverlap trace synth", "command": spec.command(), "parameters": spec.parameters()}
    return schedule_trace(draw_requests(spec), spec.scheduler, meta, seed=spec.seed)
