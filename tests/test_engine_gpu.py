"""The replay engine on a GPU with a GPU-sized model: the same identity checks as on the CPU."""

from __future__ import annotations

import pytest

from fdoverlap_cli.engine.device import Device
from fdoverlap_cli.engine.model import model_config
from fdoverlap_cli.engine.replay import Engine
from fdoverlap_cli.engine.runner import RunnerOptions
from fdoverlap_cli.engine.token_check import check_against_trace, compare_streams
from fdoverlap_cli.resources import traces_dir
from fdoverlap_cli.trace import load_trace
from tests import engine_traces

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("ops")]

# A few layers of the 8B-class shapes: realistic GEMMs and attention, a short test.
MODEL = model_config("8b", layers=2)


def _identical(trace, output_ipc: str = "msgqueue", **options) -> None:
    engine = Engine(trace, Device.open("gpu"), MODEL, RunnerOptions(**options), output_ipc=output_ipc)
    sync, overlap = engine.replay("sync"), engine.replay("overlap")
    for run in (sync, overlap):
        assert run.complete
        check = check_against_trace(trace, run.reader.tokens, run.reader.markers)
        assert check.ok, (run.path, check.problems)
    identity = compare_streams(trace, sync.reader.tokens, overlap.reader.tokens, ("sync", "overlap"))
    assert identity.identical, identity.first_difference
    # the model really ran on the GPU: tokens are not all one id (a paddle kernel returning zeros would do that)
    tokens = [t for toks in sync.reader.tokens.values() for t in toks[:-1]]
    assert len(set(tokens)) > 1


# (runner, output path): each runner once with each output path across the tests. Both paths of one runner
# emit the same tokens; across runners they may differ on a GPU with graphs on (develop's upper bound can pick a
# larger graph size, and another M may get another GEMM: docs/architecture.md, "Identity").
RUNNERS = [("develop", "zmq"), ("pr6176", "msgqueue")]
RUNNER_IDS = [f"{d}-{i}" for d, i in RUNNERS]


@pytest.mark.parametrize(("design", "ipc"), RUNNERS, ids=RUNNER_IDS)
@pytest.mark.parametrize("name", sorted(engine_traces.ALL))
def test_paths_identical_on_hazard_traces(name, design, ipc):
    _identical(engine_traces.ALL[name](), ipc, design=design, verify_token_count=True)


@pytest.mark.parametrize(("design", "ipc"), [*RUNNERS, ("develop", "msgqueue")], ids=[*RUNNER_IDS, "develop-msgqueue"])
@pytest.mark.parametrize("trace_name", ["default", "preempt", "mixed-chunked"])
def test_paths_identical_on_bundled_traces(trace_name, design, ipc):
    _identical(load_trace(traces_dir() / f"{trace_name}.json"), ipc, design=design)


@pytest.mark.parametrize(("design", "ipc"), [("develop", "zmq"), ("pr6176", "zmq")], ids=["develop-zmq", "pr6176-zmq"])
@pytest.mark.parametrize("copy_stream", ["compute", "separate"])
@pytest.mark.parametrize("token_count", ["predict", "sync"])
def test_design_options_keep_tokens_identical(copy_stream, token_count, design, ipc):
    _identical(engine_traces.preemption(), ipc, design=design, copy_stream=copy_stream, token_count=token_count)
