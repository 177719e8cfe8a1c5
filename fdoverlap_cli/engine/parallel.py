"""Tensor parallelism on a rank: the shard of the model, the collectives, FastDeploy's barrier before each launch.

The synthetic model is sharded the Megatron way: QKV and gate/up column-parallel (each rank holds its heads
and its slice of the intermediate size), the output and down projections row-parallel followed by a sum
all-reduce; the embedding, the norms and the lm_head are replicated, so every rank samples the same tokens.
A shard holds exactly the elements of the `--tp 1` weights it covers (`fill_random_block_`: the same seeded
values), so `--tp N` replays the same model with the sums in another order.

Collectives are paddle's (`paddle.distributed`, initialised by `init_parallel_env` from the variables
`paddle.distributed.launch` sets): NCCL between GPUs, gloo between CPU processes. The barrier before each
iteration is FastDeploy's `_tp_barrier_wait`: on the overlap path a CPU barrier served by the parent process
(FastDeploy's engine-worker queue barrier, #6259: no device work), on the sync path paddle's collective
barrier. The parent side (starting the ranks, serving the barrier) is `engine/tp_launch.py`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fdoverlap_cli.errors import FdoError, OptionError

# What the parent hands every rank (engine/tp_launch.py sets them, RankContext reads them).
BARRIER_ENV = "FDOVERLAP_TP_BARRIER"  # host:port of the parent's CPU barrier
AUTHKEY_ENV = "FDOVERLAP_TP_AUTHKEY"  # its authentication key, hex
BARRIER_TIMEOUT_S = 600.0  # a rank that never arrives breaks the barrier instead of hanging the others


@dataclass(frozen=True)
class Shard:
    """Which part of the model a rank holds: rank `rank` of `world`."""

    rank: int = 0
    world: int = 1

    @property
    def saves(self) -> bool:
        """Only rank 0 sends the step's output (FastDeploy #7172: other ranks sent it twice)."""
        return self.rank == 0

    def heads(self, cfg: Any) -> tuple[int, int, int]:
        """(query heads, kv heads, head_dim) on this rank."""
        return cfg.num_q_heads // self.world, cfg.num_kv_heads // self.world, cfg.head_dim

    def ffn(self, cfg: Any) -> int:
        return cfg.ffn_size // self.world


def check_tp(tp: int, cfg: Any, gpus: int | None) -> None:
    """Refuse a rank count the model cannot be split into, or (on a GPU host: `gpus` not None) more ranks than GPUs."""
    if tp < 1:
        raise OptionError("tp", f"must be at least 1, got {tp}")
    for what, n in (
        ("attention heads (num_q_heads)", cfg.num_q_heads),
        ("kv heads (num_kv_heads)", cfg.num_kv_heads),
        ("intermediate size (ffn_size)", cfg.ffn_size),
    ):
        if n % tp:
            raise OptionError("tp", f"{tp} is not a divisor of the model's {n} {what}")
    if gpus is not None and tp > gpus:
        raise OptionError("tp", f"{tp} ranks need {tp} GPUs, this host has {gpus}")


def shard_weight(ops: Any, w: Any, seed: int, scale: float, full: tuple[int, int], blocks: list[tuple[int, int, int]],
                 row_offset: int = 0) -> Any:  # fmt: skip
    """Fill the shard `w` with its part of the [rows, cols] = `full` weight fill_random_(seed, scale) would make:
    `blocks` are (first column in the full weight, first column in w, columns); rows from `row_offset`."""
    for col_offset, col_start, count in blocks:
        ops.fill_random_block_(w, seed, scale, full[1], row_offset, col_offset, col_start, count)
    return w


class RankContext:
    """This process as one rank of a tensor-parallel replay: its shard, the collectives and the barriers."""

    def __init__(self, shard: Shard, dist: Any, cpu_barrier: Any, local_device: int, backend: str) -> None:
        self.shard = shard
        self._dist = dist
        self._cpu_barrier = cpu_barrier
        self.local_device = local_device  # the GPU this rank runs on (the launcher's FLAGS_selected_gpus)
        self.backend = backend

    @classmethod
    def from_env(cls) -> RankContext:
        """Join the ranks `paddle.distributed.launch` started (collective mode) and the parent's CPU barrier."""
        from multiprocessing.managers import BarrierProxy, BaseManager

        import paddle.distributed as dist

        address, key = os.environ.get(BARRIER_ENV), os.environ.get(AUTHKEY_ENV)
        if not address or not key:
            raise FdoError(f"a tensor-parallel rank needs {BARRIER_ENV} and {AUTHKEY_ENV} (set by fdoverlap's parent)")
        dist.init_parallel_env()
        host, _, port = address.rpartition(":")

        class _Client(BaseManager):
            pass

        _Client.register("tp_barrier", proxytype=BarrierProxy)
        client = _Client(address=(host, int(port)), authkey=bytes.fromhex(key))
        client.connect()
        devices = os.environ.get("FLAGS_selected_gpus", "0")  # noqa: SIM112 (paddle's name).split(",")
        backend = os.environ.get("PADDLE_DISTRI_BACKEND", "nccl")
        shard = Shard(dist.get_rank(), dist.get_world_size())
        return cls(shard, dist, client.tp_barrier(), int(devices[0] or 0), backend)

    def all_reduce(self, tensor: Any) -> None:
        """Sum `tensor` over the ranks, in place (a partial output of a row-parallel GEMM)."""
        self._dist.all_reduce(tensor)

    def barrier(self, overlap: bool) -> None:
        """FastDeploy's `_tp_barrier_wait`: the CPU barrier on the overlap path, the collective one on the sync path."""
        if overlap:
            self._cpu_barrier.wait(BARRIER_TIMEOUT_S)
        else:
            self._dist.barrier()


def reducer(ctx: RankContext | None) -> Callable[[Any], None] | None:
    """The row-parallel all-reduce of a rank, None with one rank (nothing to sum)."""
    return ctx.all_reduce if ctx is not None and ctx.shard.world > 1 else None
