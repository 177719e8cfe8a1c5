"""Tensor parallelism on a GPU host: the shards built on the GPU, one rank through paddle's launcher (NCCL set-up),
and with two or more GPUs `--tp 2` against `--tp 1` (`bash benchmarks/gpu_session.sh tp` runs these).

The tokens of `--tp N` against `--tp 1` on float16 are reported (tp-identity.txt in $OUT), not asserted: the
row-parallel sums run in another order. Within one run, every rank and both paths must agree exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fdoverlap_cli.engine.model import model_config
from fdoverlap_cli.engine.parallel import Shard
from fdoverlap_cli.results import RunResult
from tests.conftest import run_cli

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("ops")]

MODEL = model_config("8b", layers=2)
SMALL = ["--preset", "8b", "--layers", "2"]


def _gpus() -> int:
    import paddle

    return int(paddle.device.cuda.device_count())


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_fill_random_block_on_the_gpu_is_the_cpu_slice(ops, dtype):
    import paddle

    paddle.set_device("gpu:0")
    full = paddle.empty([64, 96], dtype=dtype)
    ops.fill_random_(full, 5, 0.25)
    shard = paddle.empty([32, 40], dtype=dtype)
    ops.fill_random_block_(shard, 5, 0.25, 96, 32, 8, 0, 24)
    ops.fill_random_block_(shard, 5, 0.25, 96, 32, 70, 24, 16)
    want, got = full.numpy(), shard.numpy()
    assert np.array_equal(got[:, :24], want[32:, 8:32]) and np.array_equal(got[:, 24:], want[32:, 70:86])


def test_a_shard_built_on_the_gpu_is_the_one_built_on_the_cpu(ops):
    from fdoverlap_cli.engine.device import Device
    from fdoverlap_cli.engine.model import SyntheticDecoder

    cfg = model_config("tiny", dims="hidden_size=256,ffn_size=512,num_q_heads=8,num_kv_heads=4,head_dim=32")
    cpu = SyntheticDecoder(cfg, Device.open("cpu"), ops, shard=Shard(1, 2), all_reduce=lambda t: None)
    gpu = SyntheticDecoder(cfg, Device.open("gpu"), ops, shard=Shard(1, 2), all_reduce=lambda t: None)
    for name in ("qkv", "out", "gate_up", "down"):
        assert np.array_equal(getattr(cpu.layers[0], name).numpy(), getattr(gpu.layers[0], name).numpy()), name


def _compare(tmp_path: Path, name: str, *args: str, env: dict[str, str] | None = None) -> RunResult:
    out = tmp_path / f"{name}.json"
    done = run_cli("compare", *SMALL, "--json", "-o", str(out), *args, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return RunResult.load(out)


def _digests(run: RunResult, path: str) -> dict[str, str]:
    return {rid: t["sha256"] for rid, t in run.paths[path].tokens.items()}


def test_one_rank_through_the_launcher_is_the_in_process_run(tmp_path):
    """paddle.distributed.launch with one rank on the GPU (init_parallel_env, NCCL set-up, the rank's files)."""
    alone = _compare(tmp_path, "tp1")
    launched = _compare(tmp_path, "tp1-launched", env={"FDOVERLAP_TP_LAUNCH": "1"})
    assert launched.tensor_parallel is not None and launched.tensor_parallel.backend == "nccl"
    for path in ("sync", "overlap"):
        assert _digests(launched, path) == _digests(alone, path)


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_tp_ranks_agree_and_are_reported_against_one_rank(tmp_path, tp):
    if _gpus() < tp:
        pytest.skip(f"--tp {tp} needs {tp} GPUs, this host has {_gpus()}")
    one = _compare(tmp_path, "tp1")
    many = _compare(tmp_path, f"tp{tp}", "--tp", str(tp))
    assert many.tensor_parallel.problems() == []  # every rank sampled rank 0's tokens; rank 0 alone sent
    assert many.identity is not None and many.identity.identical
    report = Path(os.environ.get("OUT", tmp_path)) / "tp-identity.txt"
    with report.open("a") as f:
        for path in ("sync", "overlap"):
            a, b = _digests(one, path), _digests(many, path)
            differ = sorted(rid for rid in a if a[rid] != b.get(rid))
            f.write(f"--tp {tp} {path}: {len(a) - len(differ)}/{len(a)} requests as --tp 1 (first other: "
                    f"{differ[0] if differ else '-'})\n")  # fmt: skip
