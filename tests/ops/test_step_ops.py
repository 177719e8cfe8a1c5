"""The step ops (flags, padding, token updates, inserts) against the NumPy reference, on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ops import reference as ref
from tests.ops.inputs import random_step_state, random_tasks
from tests.ops.tensors import cpu, host

SEEDS = st.integers(0, 2**32 - 1)
FAST = settings(max_examples=40, deadline=None)
# Slot buffers have bsz = max_num_seqs >= 1 rows; paddle 2.6 cannot pass a zero-size tensor in place.
SLOTS = st.integers(1, 12)

# The ops' arguments in order (names of the state's arrays) and which of them each op changes in place.
SET_VALUE_ARGS = ("pre_ids_all", "input_ids", "seq_lens_this_time", "seq_lens_encoder", "seq_lens_decoder")
SET_VALUE_ARGS += ("step_idx", "stop_flags")
STOP_ARGS = ("sampled_token_ids", "stop_flags", "seq_lens_this_time", "seq_lens_decoder", "prompt_lens", "step_idx")
STOP_ARGS += ("max_dec_len", "end_ids", "next_tokens")
STOP_CHANGES = ("sampled_token_ids", "stop_flags", "step_idx", "next_tokens")
UPDATE_ARGS = ("stop_flags", "not_need_stop", "seq_lens_this_time", "seq_lens_encoder", "seq_lens_decoder")
UPDATE_ARGS += ("prompt_lens", "sampled_token_ids", "input_ids", "next_tokens")
UPDATE_CHANGES = tuple(name for name in UPDATE_ARGS if name not in ("prompt_lens", "next_tokens"))
INSERT_CHANGES = ("input_ids", "pre_ids", "seq_lens_this_time", "seq_lens_encoder", "seq_lens_decoder")
INSERT_CHANGES += ("prompt_lens", "step_idx", "max_dec_len", "stop_flags")
INSERT_ARGS = (*INSERT_CHANGES, "task_meta", "task_tokens", "preempt_slots")


def run_in_place(op, state: dict[str, np.ndarray], args: tuple[str, ...], changes: tuple[str, ...]):
    """Call op on CPU tensors of state[arg] for each arg; check that the buffers it changes kept their
    memory (the caller's tensors see the change); return those buffers as NumPy arrays."""
    tensors = {name: cpu(state[name]) for name in args}
    pointers = {name: tensors[name].data_ptr() for name in changes}
    op(*tensors.values())
    assert {name: tensors[name].data_ptr() for name in changes} == pointers
    return {name: host(tensors[name]) for name in changes}


def assert_arrays_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


# ------------------------------------------------------------------------------------------- flags


def test_get_stop_reads_and_set_stop_writes_the_callers_flag(ops):
    flag = cpu(np.array([False]))
    pointer = flag.data_ptr()
    assert not bool(host(ops.get_stop(flag))[0])
    ops.set_stop(flag, True)
    assert flag.data_ptr() == pointer
    assert bool(host(flag)[0])
    assert bool(host(ops.get_stop(flag))[0])
    ops.set_stop(flag, False)
    assert not bool(host(flag)[0])


def test_get_stop_returns_a_cpu_tensor(ops):
    value = ops.get_stop(cpu(np.array([True])))
    assert value.place.is_cpu_place()
    assert value.shape == [1]


# ------------------------------------------------------------------------------------------- padding


@FAST
@given(seed=SEEDS, bsz=st.integers(0, 9), width=st.integers(1, 7), extra=st.integers(-4, 4))
def test_get_padding_offset_matches_reference(ops, seed, bsz, width, extra):
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(0, 100, (bsz, width)).astype(np.int64)
    lens = rng.integers(0, width + 1, bsz).astype(np.int32)
    token_num = max(0, int(lens.sum()) + extra)  # below the real total drops tokens, above it pads
    outs = ops.get_padding_offset(cpu(input_ids), cpu(lens), token_num)
    want = ref.get_padding_offset(input_ids, lens, token_num)
    for got, expected in zip(outs, want, strict=True):
        np.testing.assert_array_equal(host(got), expected)


def test_get_padding_offset_padding_rows_and_empty_batch(ops):
    ids, batch, cu_q, cu_k = ops.get_padding_offset(
        cpu(np.array([[7, 8, 9], [4, 5, 6]], np.int64)), cpu(np.array([2, 0], np.int32)), 4
    )
    assert host(ids).tolist() == [7, 8, 2, 2]  # padding rows: id 2 (FastDeploy's), batch -1
    assert host(batch).tolist() == [0, 0, -1, -1]
    assert host(cu_q).tolist() == host(cu_k).tolist() == [0, 2, 2]
    ids, batch, cu_q, _ = ops.get_padding_offset(cpu(np.zeros((0, 5), np.int64)), cpu(np.zeros(0, np.int32)), 0)
    assert host(ids).shape == (0,) and host(batch).shape == (0,)
    assert host(cu_q).tolist() == [0]


@FAST
@given(seed=SEEDS, bsz=st.integers(0, 8), dtype=st.sampled_from([np.float32, np.float16]))
def test_rebuild_padding_matches_reference(ops, seed, bsz, dtype):
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, 4, bsz).astype(np.int32)
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    rows = int(cu[-1]) + int(rng.integers(0, 3))  # trailing padding rows
    hidden = rng.standard_normal((rows, 5)).astype(dtype)
    got = host(ops.rebuild_padding(cpu(hidden), cpu(cu), cpu(lens)))
    np.testing.assert_array_equal(got, ref.rebuild_padding(hidden, cu, lens))
    assert not got[lens == 0].any()  # slots with no tokens get zeros


# ------------------------------------------------------------------------------------------- token updates


@FAST
@given(seed=SEEDS, bsz=SLOTS)
def test_set_value_by_flags_and_idx_matches_reference(ops, seed, bsz):
    rng = np.random.default_rng(seed)
    s = random_step_state(rng, bsz, width=4)
    pre_ids = rng.integers(-1, 50, (bsz, 6)).astype(np.int64)
    s["step_idx"] = rng.integers(-1, 8, bsz).astype(np.int64)  # some outside (0, 6): left alone
    s["pre_ids_all"] = pre_ids
    got = run_in_place(ops.set_value_by_flags_and_idx, s, SET_VALUE_ARGS, ("pre_ids_all",))
    np.testing.assert_array_equal(got["pre_ids_all"], ref.set_value_by_flags_and_idx(*[s[k] for k in SET_VALUE_ARGS]))


def set_value(ops, **values) -> list[int]:
    """set_value_by_flags_and_idx on one slot (input_ids [10, 11, 12], pre_ids all -1); its pre_ids row."""
    s = {k: v for k, v in one_slot(**values).items() if k in SET_VALUE_ARGS}
    s["input_ids"] = np.array([[10, 11, 12]], np.int64)
    s["pre_ids_all"] = np.full((1, 5), -1, np.int64)
    return run_in_place(ops.set_value_by_flags_and_idx, s, SET_VALUE_ARGS, ("pre_ids_all",))["pre_ids_all"][0].tolist()


def test_set_value_writes_only_where_step_idx_is_positive(ops):
    # A prompt's first step (step_idx 0) writes nothing; a resumed prompt (step_idx 2) its last chunk token.
    assert set_value(ops, seq_lens_this_time=3, seq_lens_encoder=3, seq_lens_decoder=0, step_idx=0) == [-1] * 5
    assert set_value(ops, seq_lens_this_time=3, seq_lens_encoder=3, seq_lens_decoder=0, step_idx=2) == [
        -1,
        -1,
        12,
        -1,
        -1,
    ]
    assert set_value(ops, seq_lens_encoder=0, seq_lens_decoder=7, step_idx=3) == [-1, -1, -1, 10, -1]  # decode
    assert set_value(ops, seq_lens_encoder=0, seq_lens_decoder=7, step_idx=5) == [-1] * 5  # past the row


def test_set_value_ignores_seq_lens_this_time_and_skips_stopped_or_empty_slots(ops):
    assert set_value(ops, seq_lens_this_time=0, seq_lens_encoder=0, seq_lens_decoder=7, step_idx=1)[1] == 10
    assert set_value(ops, stop_flags=True, seq_lens_decoder=7, step_idx=1) == [-1] * 5
    assert set_value(ops, seq_lens_encoder=0, seq_lens_decoder=0, step_idx=1) == [-1] * 5


def run_set_stop_value_multi_ends(ops, s: dict[str, np.ndarray], end_ids: np.ndarray) -> dict[str, np.ndarray]:
    return run_in_place(ops.set_stop_value_multi_ends, {**s, "end_ids": end_ids}, STOP_ARGS, STOP_CHANGES)


def reference_set_stop_value_multi_ends(s: dict[str, np.ndarray], end_ids: np.ndarray) -> dict[str, np.ndarray]:
    state = {**s, "end_ids": end_ids}
    return dict(zip(STOP_CHANGES, ref.set_stop_value_multi_ends(*[state[k] for k in STOP_ARGS]), strict=True))


@FAST
@given(seed=SEEDS, bsz=SLOTS, n_end=st.integers(1, 3))
def test_set_stop_value_multi_ends_matches_reference(ops, seed, bsz, n_end):
    rng = np.random.default_rng(seed)
    s = random_step_state(rng, bsz, width=4)
    end_ids = rng.choice(6, n_end, replace=False).astype(np.int64)
    assert_arrays_equal(run_set_stop_value_multi_ends(ops, s, end_ids), reference_set_stop_value_multi_ends(s, end_ids))


def one_slot(**values) -> dict[str, np.ndarray]:
    """A one-slot state with the given values (scalars) for set_stop_value_multi_ends / update_inputs."""
    base = {
        "sampled_token_ids": 5,
        "stop_flags": False,
        "seq_lens_this_time": 1,
        "seq_lens_encoder": 0,
        "seq_lens_decoder": 10,
        "prompt_lens": 8,
        "step_idx": 2,
        "max_dec_len": 10,
        "next_tokens": 0,
        "input_ids": 0,
    }
    base.update(values)
    dtypes = {"stop_flags": np.bool_, "seq_lens_this_time": np.int32, "seq_lens_encoder": np.int32}
    dtypes["seq_lens_decoder"] = np.int32
    out = {k: np.array([v], dtypes.get(k, np.int64)) for k, v in base.items()}
    for column in ("sampled_token_ids", "next_tokens", "input_ids"):
        out[column] = out[column].reshape(1, 1)
    return out


def test_max_dec_len_and_eos_on_the_same_step(ops):
    s = one_slot(sampled_token_ids=2, step_idx=9, max_dec_len=10)
    got = run_set_stop_value_multi_ends(ops, s, np.array([2, 3], np.int64))
    assert got["step_idx"].tolist() == [10]
    assert got["stop_flags"].tolist() == [True]
    assert got["sampled_token_ids"].tolist() == [[2]] and got["next_tokens"].tolist() == [[2]]


def test_max_dec_len_replaces_the_token_with_the_first_end_id(ops):
    s = one_slot(sampled_token_ids=7, step_idx=9, max_dec_len=10)
    got = run_set_stop_value_multi_ends(ops, s, np.array([2, 3], np.int64))
    assert got["stop_flags"].tolist() == [True]
    assert got["sampled_token_ids"].tolist() == [[2]]


def test_second_end_id_stops_and_becomes_the_first(ops):
    got = run_set_stop_value_multi_ends(ops, one_slot(sampled_token_ids=3), np.array([2, 3], np.int64))
    assert got["stop_flags"].tolist() == [True]
    assert got["sampled_token_ids"].tolist() == [[2]] and got["next_tokens"].tolist() == [[2]]
    assert got["step_idx"].tolist() == [3]


def test_stopped_slot_that_ran_nothing_gets_minus_one(ops):
    s = one_slot(stop_flags=True, seq_lens_this_time=0, sampled_token_ids=4, next_tokens=11)
    got = run_set_stop_value_multi_ends(ops, s, np.array([2], np.int64))
    assert got["sampled_token_ids"].tolist() == [[-1]]
    assert got["next_tokens"].tolist() == [[11]]
    assert got["step_idx"].tolist() == [2]  # a stopped slot does not advance


def test_non_final_chunk_produces_no_token_and_ignores_end_ids(ops):
    # 4 of a 20-token prompt done, this chunk of 6 does not finish it: no step, an end id does not stop it.
    s = one_slot(seq_lens_this_time=6, seq_lens_decoder=4, prompt_lens=20, sampled_token_ids=2, step_idx=0)
    got = run_set_stop_value_multi_ends(ops, s, np.array([2], np.int64))
    assert got["step_idx"].tolist() == [0]
    assert got["stop_flags"].tolist() == [False]


def test_prompt_finishing_exactly_at_the_chunk_end_produces_a_token(ops):
    s = one_slot(seq_lens_this_time=6, seq_lens_encoder=6, seq_lens_decoder=14, prompt_lens=20, step_idx=0)
    s["sampled_token_ids"][:] = 42
    got = run_set_stop_value_multi_ends(ops, s, np.array([2], np.int64))
    assert got["step_idx"].tolist() == [1]
    assert got["next_tokens"].tolist() == [[42]]
    s.update(got)
    out = run_update_inputs(ops, s)
    assert out["seq_lens_decoder"].tolist() == [20]
    assert out["seq_lens_this_time"].tolist() == [1]
    assert out["seq_lens_encoder"].tolist() == [0]
    assert out["input_ids"][0, 0] == 42
    assert out["not_need_stop"].tolist() == [True]


def run_update_inputs(ops, s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return run_in_place(ops.update_inputs, {**s, "not_need_stop": np.array([True])}, UPDATE_ARGS, UPDATE_CHANGES)


@FAST
@given(seed=SEEDS, bsz=SLOTS, width=st.integers(1, 4))
def test_update_inputs_matches_reference(ops, seed, bsz, width):
    rng = np.random.default_rng(seed)
    s = random_step_state(rng, bsz, width)
    reference_args = [s[k] for k in UPDATE_ARGS if k != "not_need_stop"]
    want = dict(zip(UPDATE_CHANGES, ref.update_inputs(*reference_args), strict=True))
    assert_arrays_equal(run_update_inputs(ops, s), want)


def test_update_inputs_not_need_stop(ops):
    running = {k: np.repeat(v, 3, axis=0) for k, v in one_slot().items()}
    assert run_update_inputs(ops, running)["not_need_stop"].tolist() == [True]  # all slots full and running
    stopped = {**running, "stop_flags": np.array([True, True, True])}
    assert run_update_inputs(ops, stopped)["not_need_stop"].tolist() == [False]
    one_left = {**running, "stop_flags": np.array([True, False, True])}
    assert run_update_inputs(ops, one_left)["not_need_stop"].tolist() == [True]


def test_update_inputs_stops_an_unfinished_chunk(ops):
    s = one_slot(seq_lens_this_time=6, seq_lens_encoder=6, seq_lens_decoder=4, prompt_lens=20)
    out = run_update_inputs(ops, s)
    assert out["stop_flags"].tolist() == [True]
    assert out["sampled_token_ids"].tolist() == [[-1]]
    assert out["seq_lens_this_time"].tolist() == out["seq_lens_decoder"].tolist() == [0]


# ------------------------------------------------------------------------------------------- inserts


def run_insert_tasks(ops, state: dict[str, np.ndarray], meta, tokens, preempt) -> dict[str, np.ndarray]:
    tasks = {"task_meta": meta, "task_tokens": tokens, "preempt_slots": preempt}
    return run_in_place(ops.insert_tasks, {**state, **tasks}, INSERT_ARGS, INSERT_CHANGES)


@FAST
@given(seed=SEEDS, bsz=SLOTS, width=st.integers(1, 6))
def test_insert_tasks_matches_reference(ops, seed, bsz, width):
    rng = np.random.default_rng(seed)
    state = random_step_state(rng, bsz, width)
    meta, tokens, preempt = random_tasks(rng, bsz, width)
    got = run_insert_tasks(ops, state, meta, tokens, preempt)
    assert_arrays_equal(got, ref.insert_tasks({k: state[k] for k in INSERT_CHANGES}, meta, tokens, preempt))


def test_insert_into_a_preempted_slot_wins(ops):
    state = random_step_state(np.random.default_rng(1), 3, 4)
    meta = np.array([[1, 0, 2, 2, 0, 9]], np.int64)
    got = run_insert_tasks(ops, state, meta, np.array([5, 6], np.int64), np.array([1, 2], np.int32))
    assert got["stop_flags"].tolist()[1:] == [False, True]
    assert got["input_ids"][1, :2].tolist() == [5, 6]
    assert got["seq_lens_this_time"][2] == 0


def test_insert_resets_the_pre_ids_row_of_each_inserted_slot_only(ops):
    state = random_step_state(np.random.default_rng(4), 3, 4)
    state["pre_ids"] = np.arange(3 * 6, dtype=np.int64).reshape(3, 6)
    meta = np.array([[0, 0, 2, 5, 0, 9], [2, 4, 1, 5, 3, 9]], np.int64)  # a first chunk and a later one
    got = run_insert_tasks(ops, state, meta, np.array([5, 6, 7], np.int64), np.array([1], np.int32))
    assert got["pre_ids"][0].tolist() == got["pre_ids"][2].tolist() == [-1] * 6
    assert got["pre_ids"][1].tolist() == state["pre_ids"][1].tolist()  # preempted, not inserted: kept


def test_insert_nothing_changes_nothing(ops):
    state = random_step_state(np.random.default_rng(2), 4, 3)
    got = run_insert_tasks(ops, state, np.zeros((0, 6), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32))
    assert_arrays_equal(got, {k: state[k] for k in INSERT_CHANGES})


@pytest.mark.parametrize(
    ("meta", "tokens", "match"),
    [
        ([[4, 0, 1, 1, 0, 9]], [1], "task_meta row 0: slot 4 is outside"),
        ([[0, 0, 1, 1, 0, 9], [0, 0, 1, 1, 0, 9]], [1, 2], "slot 0 is inserted twice"),
        ([[0, 0, 9, 9, 0, 9]], [1] * 9, "len 9 is outside"),
        ([[0, 0, 2, 2, 0, 9]], [1], "task_tokens' must hold the 2 tokens"),
    ],
)
def test_insert_tasks_rejects_bad_task_rows(ops, meta, tokens, match):
    state = random_step_state(np.random.default_rng(3), 2, 4)
    with pytest.raises(OSError, match=f"insert_tasks: .*{match}"):
        run_insert_tasks(ops, state, np.array(meta, np.int64), np.array(tokens, np.int64), np.zeros(0, np.int32))


def test_insert_tasks_rejects_a_pre_ids_buffer_of_other_slots(ops):
    state = random_step_state(np.random.default_rng(5), 2, 4)
    state["pre_ids"] = np.zeros((3, 8), np.int64)
    none = (np.zeros((0, 6), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32))
    with pytest.raises(OSError, match=r"insert_tasks: input 'pre_ids' must have shape \[2, -1\]"):
        run_insert_tasks(ops, state, *none)
