"""Tensor-parallel replay on the CPU: 2 gloo ranks through paddle's launcher against one process.

The shards hold the `--tp 1` weights' own elements; every rank samples the same tokens on both paths as
`--tp 1` does (the row-parallel sums run in another order: identical tokens on these traces, checked
exactly); only rank 0 sends; the barrier is a stage of its own; bad `--tp` values are one line, exit 2;
an interrupted run leaves no rank behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fdoverlap_cli.engine.model import PRESETS
from fdoverlap_cli.engine.parallel import Shard, check_tp
from fdoverlap_cli.errors import OptionError
from fdoverlap_cli.measure.records import Kind
from fdoverlap_cli.results import RunResult
from tests.conftest import REPO, run_cli

TINY = PRESETS["tiny"]  # 4 heads, 2 kv heads, ffn 128


def _synth(tmp_path: Path) -> Path:
    trace = tmp_path / "small.json"
    synth = ["trace", "synth", "-n", "6", "--max-num-seqs", "3", "--prompt-len", "4..12", "--output-len", "3..6"]
    done = run_cli(*synth, "-o", str(trace))
    assert done.returncode == 0, done.stderr
    return trace


# ------------------------------------------------------------------ the shards


def test_fill_random_block_is_the_full_weights_slice(ops):
    import paddle

    full = paddle.empty([6, 10], dtype="float32")
    ops.fill_random_(full, 77, 0.5)
    want = full.numpy()
    shard = paddle.empty([3, 5], dtype="float32")
    ops.fill_(shard, -9.0)
    # rows 3..5; columns 2..4 of the full weight into 0..2, columns 8..9 into 3..4
    ops.fill_random_block_(shard, 77, 0.5, 10, 3, 2, 0, 3)
    ops.fill_random_block_(shard, 77, 0.5, 10, 3, 8, 3, 2)
    got = shard.numpy()
    assert np.array_equal(got[:, :3], want[3:6, 2:5]) and np.array_equal(got[:, 3:], want[3:6, 8:10])
    with pytest.raises(OSError, match="fill_random_block_"):
        ops.fill_random_block_(shard, 77, 0.5, 10, 0, 8, 3, 3)  # past the shard's 5 columns


def test_two_shards_make_the_full_model(ops):
    """Rank 0's and rank 1's column blocks and row blocks put together are the one-rank weights, bit for bit."""
    from fdoverlap_cli.engine.device import Device
    from fdoverlap_cli.engine.model import SyntheticDecoder

    dev = Device.open("cpu")
    one = SyntheticDecoder(TINY, dev, ops)
    a, b = (SyntheticDecoder(TINY, dev, ops, shard=Shard(r, 2), all_reduce=lambda t: None) for r in (0, 1))
    d, q, kv = TINY.head_dim, TINY.num_q_heads // 2, TINY.num_kv_heads // 2
    full, s0, s1 = one.layers[1], a.layers[1], b.layers[1]

    def parts(w, widths):
        out, at = [], 0
        for n in widths:
            out.append(w[:, at : at + n])
            at += n
        return out

    q0, k0, v0 = parts(s0.qkv.numpy(), (q * d, kv * d, kv * d))
    q1, k1, v1 = parts(s1.qkv.numpy(), (q * d, kv * d, kv * d))
    assert np.array_equal(np.concatenate([q0, q1, k0, k1, v0, v1], axis=1), full.qkv.numpy())
    f = TINY.ffn_size // 2
    g0, u0 = parts(s0.gate_up.numpy(), (f, f))
    g1, u1 = parts(s1.gate_up.numpy(), (f, f))
    assert np.array_equal(np.concatenate([g0, g1, u0, u1], axis=1), full.gate_up.numpy())
    assert np.array_equal(np.concatenate([s0.out.numpy(), s1.out.numpy()]), full.out.numpy())
    assert np.array_equal(np.concatenate([s0.down.numpy(), s1.down.numpy()]), full.down.numpy())
    assert np.array_equal(a.lm_head.numpy(), one.lm_head.numpy())
    assert not a.fused_layers  # the all-reduce sits inside the layer


@pytest.mark.parametrize(
    ("tp", "gpus", "says"),
    [
        (3, None, "not a divisor of the model's 4 attention heads"),
        (4, None, "not a divisor of the model's 2 kv heads"),
        (2, 1, "2 ranks need 2 GPUs, this host has 1"),
        (0, None, "must be at least 1"),
    ],
)
def test_bad_tp_values(tp, gpus, says):
    with pytest.raises(OptionError, match=says):
        check_tp(tp, TINY, gpus)


def test_tp_must_divide_the_intermediate_size():
    import dataclasses

    with pytest.raises(OptionError, match="not a divisor of the model's 129 intermediate size"):
        check_tp(2, dataclasses.replace(TINY, ffn_size=129), None)


@pytest.mark.parametrize(("args", "says"), [(["--tp", "3"], "4 attention heads"), (["--tp", "0"], "--tp")])
def test_bad_tp_on_the_command_line_is_one_line(tmp_path, args, says):
    out = tmp_path / "run.json"
    done = run_cli("compare", "--device", "cpu", *args, "-o", str(out))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert not out.exists()


# ------------------------------------------------------------------ two ranks against one


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, ops) -> tuple[RunResult, RunResult]:
    tmp = tmp_path_factory.mktemp("tp")
    trace = _synth(tmp)
    results = []
    for tp in (1, 2):
        out = tmp / f"tp{tp}.json"
        done = run_cli(
            "compare", str(trace), "--device", "cpu", "--warmup", "2", "--tp", str(tp), "--json", "-o", str(out)
        )
        assert done.returncode == 0, done.stderr
        results.append(RunResult.load(out))
    return results[0], results[1]


def test_every_rank_samples_the_one_process_tokens_on_both_paths(runs):
    one, two = runs
    assert one.tensor_parallel is None and two.tensor_parallel is not None
    tp = two.tensor_parallel
    assert tp.size == 2 and tp.backend == "gloo" and [r.rank for r in tp.ranks] == [0, 1]
    assert two.identity is not None and two.identity.identical
    for path in ("sync", "overlap"):
        want = {rid: t["sha256"] for rid, t in one.paths[path].tokens.items()}
        assert {rid: t["sha256"] for rid, t in two.paths[path].tokens.items()} == want
        for rank in tp.ranks:
            assert rank.tokens[path] == want, (rank.rank, path)
        assert {rid: t["sha256"] for rid, t in tp.ranks[1].paths[path].tokens.items()} == want
    assert tp.problems() == []


def test_only_rank_zero_saves(runs):
    _, two = runs
    ranks = two.tensor_parallel.ranks
    for path in ("sync", "overlap"):
        steps = len(two.paths[path].columns["step"])
        assert ranks[0].messages_sent[path] == steps == two.paths[path].reader.messages
        assert ranks[1].messages_sent[path] == 0
        assert ranks[1].paths[path].reader is None
    assert len({r.pid for r in ranks}) == 2


def test_the_barrier_is_a_stage_of_every_iteration(runs):
    one, two = runs
    for path in ("sync", "overlap"):
        for rec in (two.paths[path], two.tensor_parallel.ranks[1].paths[path]):
            c = rec.columns
            assert (c["barrier_start"] >= 0).all() and (c["barrier_end"] >= c["barrier_start"]).all()
            assert (c["barrier_end"] <= c["insert_start"])[c["insert_start"] >= 0].all()
            spans = rec.spans()
            from fdoverlap_cli.measure.records import KIND_CODE

            assert (spans.kind == KIND_CODE[Kind.TP_BARRIER]).sum() == len(c["step"])
        assert (one.paths[path].columns["barrier_start"] == -1).all()  # one rank: no barrier


def test_a_rank_whose_tokens_differ_fails_the_check(runs):
    import copy

    _, two = runs
    tp = copy.deepcopy(two.tensor_parallel)
    rid = next(iter(tp.ranks[1].tokens["overlap"]))
    tp.ranks[1].tokens["overlap"][rid] = "0" * 64
    tp.ranks[1].messages_sent["sync"] = 3
    problems = tp.problems()
    assert any(f"rank 1 overlap: tokens differ from rank 0's for request {rid}" == p for p in problems)
    assert any("rank 1 sent 3 messages" in p for p in problems)


def test_the_tp_record_is_checked_on_load(runs, tmp_path):
    _, two = runs
    doc = two.to_dict()
    doc["tensor_parallel"]["ranks"][1]["pid"] = "x"
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(Exception, match=r"tensor_parallel\.ranks\[1\]\.pid"):
        RunResult.load(f)
    doc = two.to_dict()
    del doc["tensor_parallel"]  # a file from before --tp
    f.write_text(json.dumps(doc))
    assert RunResult.load(f).tensor_parallel is None


def test_one_rank_through_the_launcher(tmp_path, ops):
    """FDOVERLAP_TP_LAUNCH=1: --tp 1 as one rank of paddle's launcher (what the GPU session checks on one GPU)."""
    trace, out = _synth(tmp_path), tmp_path / "run.json"
    args = ["compare", str(trace), "--device", "cpu", "--warmup", "2", "--json", "-o", str(out)]
    done = run_cli(*args, env={"FDOVERLAP_TP_LAUNCH": "1"})
    assert done.returncode == 0, done.stderr
    run = RunResult.load(out)
    assert run.tensor_parallel.size == 1 and len(run.tensor_parallel.ranks) == 1
    assert run.identity.identical and run.tensor_parallel.ranks[0].messages_sent["overlap"] > 0


# ------------------------------------------------------------------ interrupts


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_an_interrupted_tp_run_leaves_no_rank_behind(tmp_path, ops):
    trace = _synth(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "run.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fdoverlap_cli", "compare", str(trace), "--device", "cpu", "--tp", "2", "-o", str(out)],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmp)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    pids: list[int] = []
    while time.monotonic() < deadline and len(pids) < 2:
        pids = [int(p.read_text()) for p in tmp.glob("fdoverlap-tp-*/rank*.pid") if p.read_text()]
        time.sleep(0.1)
    assert len(pids) == 2, "the ranks never started"
    time.sleep(3)  # inside paddle's set-up or the replay
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted by signal 2" in err
    time.sleep(0.5)
    assert [p for p in pids if _alive(p)] == []
