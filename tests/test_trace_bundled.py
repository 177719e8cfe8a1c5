"""The bundled traces: each validates, is small, canonical, described in traces/README.md, and is
reproduced byte for byte by the command recorded in its meta."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from fdoverlap_cli.resources import traces_dir
from fdoverlap_cli.trace import load_trace
from fdoverlap_cli.trace.format import dumps
from fdoverlap_cli.trace.validate import check_steps
from tests.conftest import run_cli
from tests.test_trace_azure import AZURE_CONV

TRACES = sorted(traces_dir().glob("*.json"))
EXPECTED = {"default", "decode-b64", "decode-b128", "mixed-chunked", "preempt", "azure-conv-slice"}


def test_the_expected_traces_are_bundled() -> None:
    assert {p.stem for p in TRACES} == EXPECTED


def _readme_commands() -> dict[str, list[str]]:
    """File name -> the command line that made it, from traces/README.md's table."""
    commands = {}
    for line in (traces_dir() / "README.md").read_text().splitlines():
        m = re.match(r"\| `([\w.-]+\.json)` \|.*\| `(fdoverlap [^`]+)` \|$", line)
        if m:
            commands[m[1]] = shlex.split(m[2])[1:]
    return commands


@pytest.mark.parametrize("path", TRACES, ids=[p.stem for p in TRACES])
def test_a_bundled_trace_is_valid_small_and_canonical(path: Path) -> None:
    trace = load_trace(path)
    assert path.stat().st_size < 300_000
    assert dumps(trace) == path.read_text()
    assert _readme_commands()[path.name][-2:] == ["-o", f"traces/{path.name}"]


@pytest.mark.parametrize("path", TRACES, ids=[p.stem for p in TRACES])
def test_the_readme_command_makes_the_same_file(path: Path, tmp_path: Path) -> None:
    args = _readme_commands()[path.name][:-2]
    if args[:3] == ["trace", "import", "azure"]:
        if not AZURE_CONV.exists():
            pytest.skip("the Azure conversation trace is not at hand")
        args[3] = str(AZURE_CONV)
    proc = run_cli(*args, "-o", str(tmp_path / path.name))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / path.name).read_bytes() == path.read_bytes()


def _steps_and_load(name: str):
    trace = load_trace(traces_dir() / f"{name}.json")
    return trace, check_steps(trace)


def test_default_is_small_and_decode_heavy() -> None:
    trace, load = _steps_and_load("default")
    assert trace.config.max_num_seqs == 16 and 16 <= len(trace.requests) <= 32
    assert 100 <= len(trace.steps) <= 200
    assert sum(load.decode_tokens) > sum(load.prefill_tokens)


@pytest.mark.parametrize(("name", "slots"), [("decode-b64", 64), ("decode-b128", 128)])
def test_large_batch_traces_keep_the_batch_full(name: str, slots: int) -> None:
    trace, load = _steps_and_load(name)
    assert trace.config.max_num_seqs == slots and trace.config.max_model_len <= 1024
    assert len(trace.steps) < 400
    full = sum(1 for k in range(len(trace.steps)) if load.decode_tokens[k] + load.chunks[k] >= 0.95 * slots)
    assert full > len(trace.steps) / 2


def test_mixed_chunked_splits_long_prompts_and_mixes_decodes() -> None:
    trace, load = _steps_and_load("mixed-chunked")
    assert load.chunked_prefills >= len(trace.requests) // 2
    assert any(load.prefill_tokens[k] and load.decode_tokens[k] for k in range(len(trace.steps)))
    assert len({r.arrival_step for r in trace.requests}) > 1


def test_preempt_preempts_and_resumes() -> None:
    trace, load = _steps_and_load("preempt")
    assert load.preemptions >= 5
    assert max(load.kv_blocks) == trace.config.num_kv_blocks


def test_azure_slice_carries_the_attribution() -> None:
    trace, _ = _steps_and_load("azure-conv-slice")
    source = trace.meta["source"]
    assert source["license"] == "CC-BY 4.0" and re.search(r"Patel et al\..*Splitwise.*ISCA 2024", source["citation"])
    assert 32 <= trace.config.max_num_seqs <= 64
