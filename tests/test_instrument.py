"""`fdoverlap instrument`: the spec format, the import hook (in process, with a recording stand-in for nvtx),
and the tool's own engine run with its NVTX switched off and the same ranges put in from outside."""

from __future__ import annotations

import importlib
import json
import os
import sys
import textwrap
import types
from pathlib import Path

import pytest

from fdoverlap_cli.engine.annotate import ENGINE_NVTX_ENV
from fdoverlap_cli.errors import InputError
from fdoverlap_cli.instrument import hook, launch
from fdoverlap_cli.instrument.presets import PRESETS, preset
from fdoverlap_cli.instrument.spec import from_mapping, load
from fdoverlap_cli.measure import schema
from tests.conftest import REPO, run_cli

FAKE_NVTX = Path(__file__).parent / "fake_nvtx"


# --------------------------------------------------------------------------- a recording nvtx, in process


class _Domain:
    def __init__(self, name: str, log: list) -> None:
        self.name, self.log, self.categories = name, log, {}

    def get_category_id(self, name: str) -> int:
        return self.categories.setdefault(name, len(self.categories) + 1)

    def get_event_attributes(self, message=None, color=None, category=None, payload=None):
        return (message, category, payload)

    def push_range(self, attributes) -> None:
        message, category, payload = attributes
        names = {v: k for k, v in self.categories.items()}
        self.log.append(("push", self.name, message, names.get(category), payload))

    def pop_range(self) -> None:
        self.log.append(("pop", self.name))


@pytest.fixture
def nvtx_log(monkeypatch):
    """A fake `nvtx` module in sys.modules; the log of its pushes and pops. Hooks installed are removed after."""
    log: list = []
    domains: dict = {}
    fake = types.SimpleNamespace(get_domain=lambda name: domains.setdefault(name, _Domain(name, log)))
    monkeypatch.setitem(sys.modules, "nvtx", fake)
    monkeypatch.delenv("NVTX_DISABLE", raising=False)
    finders = list(sys.meta_path)
    yield log
    sys.meta_path[:] = finders


@pytest.fixture
def target_module(tmp_path, monkeypatch):
    """A module `serving_loop` on sys.path, not yet imported."""
    (tmp_path / "serving_loop.py").write_text(
        textwrap.dedent(
            """
            class Engine:
                def __init__(self):
                    self.steps = 0
                    self.state = type("State", (), {"batch": 5})()

                def step(self, k, batch=None):
                    self.steps += 1
                    return self.stage(k)

                def stage(self, k):
                    return k * 2

                def outer(self, k):
                    return self.step(k)

                def fails(self, k):
                    raise RuntimeError("boom")

                def run(self, path):
                    return path

                @staticmethod
                def pure(x):
                    return x + 1

                @classmethod
                def make(cls, n):
                    return n

                async def later(self):
                    return 1


            def top(a, b=7):
                return a + b
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "serving_loop", raising=False)
    yield "serving_loop"
    sys.modules.pop("serving_loop", None)


def _install(*ranges: dict, domain: str = "test") -> hook.Instrumenter:
    spec = from_mapping("test spec", {"domain": domain, "range": list(ranges)})
    instrumenter = hook.install(hook.encode(list(spec.rules)))
    assert instrumenter is not None
    return instrumenter


def _pushes(log: list) -> list[tuple]:
    return [e[2:] for e in log if e[0] == "push"]


def test_methods_and_functions_get_ranges_with_payloads(nvtx_log, target_module):
    _install(
        {"target": f"{target_module}:Engine.step", "name": "step", "payload": "arg:k"},
        {"target": f"{target_module}:Engine.stage", "name": "stage", "payload": "attr:state.batch", "category": "s"},
        {"target": f"{target_module}:top", "name": "top", "payload": "arg:b"},
        {"target": f"{target_module}:Engine.pure", "name": "pure", "payload": "arg:0"},
        {"target": f"{target_module}:Engine.make", "name": "make", "payload": "counter"},
    )
    m = importlib.import_module(target_module)
    e = m.Engine()
    assert e.step(3) == 6 and e.step(k=4) == 8 and e.steps == 2  # the functions still work
    assert m.top(1) == 8 and m.top(1, b=2) == 3
    assert m.Engine.pure(4) == 5 and e.pure(1) == 2  # a staticmethod stays one
    assert m.Engine.make(9) == 9 and e.make(9) == 9  # a classmethod too
    assert _pushes(nvtx_log) == [
        ("step", "step", 3),
        ("stage", "s", 5),
        ("step", "step", 4),
        ("stage", "s", 5),
        ("top", "top", 7),  # the default
        ("top", "top", 2),
        ("pure", "pure", 4),
        ("pure", "pure", 1),
        ("make", "make", 0),
        ("make", "make", 1),
    ]
    assert [e[0] for e in nvtx_log].count("pop") == 10
    assert m.Engine.step.__name__ == "step" and m.Engine.step.__wrapped__  # functools.wraps


def test_modules_imported_before_the_hook_are_patched(nvtx_log, target_module):
    m = importlib.import_module(target_module)
    _install({"target": f"{target_module}:Engine.step", "name": "step", "payload": "arg:k"})
    m.Engine().step(1)
    assert _pushes(nvtx_log) == [("step", "step", 1)]
    _install({"target": f"{target_module}:Engine.step", "name": "again"})  # patched once only
    m.Engine().step(2)
    assert _pushes(nvtx_log)[-1] == ("step", "step", 2)


def test_one_range_per_name_on_a_thread_and_pops_on_exceptions(nvtx_log, target_module):
    _install(
        {"target": f"{target_module}:Engine.outer", "name": "step", "payload": "counter:steps"},
        {"target": f"{target_module}:Engine.step", "name": "step", "payload": "counter:steps"},
        {"target": f"{target_module}:Engine.fails", "name": "fails"},
    )
    m = importlib.import_module(target_module)
    e = m.Engine()
    e.outer(1)
    e.step(2)
    with pytest.raises(RuntimeError, match="boom"):
        e.fails(0)
    assert _pushes(nvtx_log) == [("step", "step", 0), ("step", "step", 1), ("fails", "fails", None)]
    assert nvtx_log[-1] == ("pop", "test")  # the failing call's range is closed


def test_names_from_arguments(nvtx_log, target_module):
    _install({"target": f"{target_module}:Engine.run", "name_from": "arg:path"})
    m = importlib.import_module(target_module)
    m.Engine().run("sync")
    m.Engine().run(path="overlap")
    assert _pushes(nvtx_log) == [("sync", "sync", None), ("overlap", "overlap", None)]


def test_missing_targets_and_unreadable_payloads_never_break_the_program(nvtx_log, target_module, capsys):
    _install(
        {"target": f"{target_module}:Engine.nothing", "name": "x"},
        {"target": f"{target_module}:Engine.gone", "name": "y", "optional": True},
        {"target": f"{target_module}:Engine.step", "name": "step", "payload": "arg:batch.size"},
        {"target": f"{target_module}:Engine.later", "name": "later"},
    )
    m = importlib.import_module(target_module)
    e = m.Engine()
    assert e.step(1) == 2 and e.step(2) == 4
    err = capsys.readouterr().err
    assert f"{target_module}:Engine.nothing: nothing not found" in err and "gone" not in err
    assert err.count("cannot read arg:batch.size") == 1  # said once
    assert "Engine.later: not a plain function" in err
    assert _pushes(nvtx_log) == [("step", "step", None), ("step", "step", None)]


def test_nvtx_disable_installs_nothing(nvtx_log, monkeypatch):
    monkeypatch.setenv("NVTX_DISABLE", "1")
    spec = preset("transformers")
    assert hook.install(hook.encode(list(spec.rules))) is None


# --------------------------------------------------------------------------- the spec format


def test_json_and_toml_specs_are_the_same(tmp_path):
    (tmp_path / "s.toml").write_text(
        textwrap.dedent(
            """
            domain = "srv"
            [env]
            SRV_FLAG = 1
            [[range]]
            target = "srv.loop:Loop.step"
            name = "step"
            payload = "arg:0.index"
            [[range]]
            target = "srv.loop:Loop.run"
            name_from = "attr:mode"
            domain = "other"
            optional = true
            """
        )
    )
    (tmp_path / "s.json").write_text(
        json.dumps(
            {
                "domain": "srv",
                "env": {"SRV_FLAG": "1"},
                "range": [
                    {"target": "srv.loop:Loop.step", "name": "step", "payload": "arg:0.index"},
                    {"target": "srv.loop:Loop.run", "name_from": "attr:mode", "domain": "other", "optional": True},
                ],
            }
        )
    )
    toml, js = load(tmp_path / "s.toml"), load(tmp_path / "s.json")
    assert toml == js and toml.env == {"SRV_FLAG": "1"}
    step, run = toml.rules
    assert (step.module, step.qualname, step.domain, str(step.payload)) == (
        "srv.loop",
        "Loop.step",
        "srv",
        "arg:0.index",
    )
    assert (run.domain, str(run.name_from), run.optional) == ("other", "attr:mode", True)
    assert hook.decode(hook.encode(list(toml.rules))) == (list(toml.rules), False)


@pytest.mark.parametrize(
    ("spec", "where", "says"),
    [
        ({"range": [{"target": "nocolon", "name": "x"}]}, "range[0].target", "not module:function"),
        ({"range": [{"target": "a:b", "name": "x", "colour": 1}]}, "range[0].colour", "unknown key"),
        ({"range": [{"target": "a:b"}]}, "range[0]", "give the range a name"),
        ({"range": [{"target": "a:b", "name": "x", "name_from": "arg:p"}]}, "range[0]", "not both"),
        ({"range": [{"target": "a:b", "name": "x", "payload": "arg:"}]}, "range[0].payload", "is not arg:NAME"),
        ({"range": [{"target": "a:b", "name": "x", "payload": "self.x"}]}, "range[0].payload", "is not arg:NAME"),
        ({"range": [{"target": "a:b", "name_from": "counter"}]}, "range[0].name_from", "not a counter"),
        ({"range": [{"target": "a:b", "name": ""}]}, "range[0].name", "non-empty string"),
        ({"range": []}, "range", "a list of ranges"),
        ({"ranges": [{"target": "a:b", "name": "x"}]}, "ranges", "unknown key"),
    ],
)
def test_bad_specs_name_the_file_and_key(tmp_path, spec, where, says):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(InputError) as e:
        load(path)
    assert str(e.value).startswith(f"{path}: {where}") and says in str(e.value)


def test_unreadable_spec_files(tmp_path):
    (tmp_path / "x.toml").write_text("range = [")
    with pytest.raises(InputError, match="not valid TOML"):
        load(tmp_path / "x.toml")
    with pytest.raises(InputError, match="No such file"):
        load(tmp_path / "missing.json")


def test_the_presets(tmp_path):
    assert PRESETS == ("fastdeploy", "fdoverlap", "transformers")
    fd = {r.qualname: r for r in preset("fastdeploy").rules}
    assert {"GPUModelRunner.execute_model", "GPUModelRunner.execute_model_overlap"} <= fd.keys()
    assert {"GPUModelRunner._preprocess_and_execute_model", "GPUModelRunner._preprocess"} <= fd.keys()  # both
    assert fd["GPUModelRunner._execute"].name == schema.PREPROCESS
    assert all(r.optional and r.domain == schema.DOMAIN for r in fd.values())
    tf = preset("transformers")
    assert {r.name for r in tf.rules} >= {"generation_step"} and tf.rules[0].domain == "transformers"
    with pytest.raises(InputError, match="unknown preset 'vllm'"):
        preset("vllm")


def test_the_fdoverlap_preset_names_the_engines_methods_and_ranges():
    """Every target exists, and the range names are the ones the engine itself emits."""
    spec = preset("fdoverlap")
    assert spec.env == {ENGINE_NVTX_ENV: "0"}
    for rule in spec.rules:
        owner = importlib.import_module(rule.module)
        for part in rule.qualname.split("."):
            owner = getattr(owner, part)
        assert callable(owner), rule.target
        assert rule.name is None or rule.name in schema.RANGES
        assert rule.domain == schema.DOMAIN


def test_the_child_environment():
    spec = preset("transformers") + from_mapping("x", {"env": {"A": "1"}, "range": [{"target": "m:f", "name": "f"}]})
    env = launch.child_env(spec, {"PYTHONPATH": "/some/where", "A": "0"})
    assert env["PYTHONPATH"] == f"{launch.BOOT}{os.pathsep}/some/where" and env["A"] == "1"
    assert (launch.BOOT / "sitecustomize.py").is_file()
    rules, verbose = hook.decode(env[hook.ENV])
    assert [r.target for r in rules][-1] == "m:f" and not verbose


# --------------------------------------------------------------------------- the command, in real child processes


def test_the_command_passes_the_exit_status_through(tmp_path):
    r = run_cli("instrument", "--preset", "transformers", "--", sys.executable, "-c", "raise SystemExit(7)")
    assert r.returncode == 7
    r = run_cli("instrument", "--preset", "transformers", "--", "no-such-program-here")
    assert (
        r.returncode == 2
        and r.stderr.strip() == "fdoverlap: error: instrument: no-such-program-here: command not found"
    )
    r = run_cli("instrument", "--preset", "transformers")
    assert r.returncode == 2 and "give the program to run after --" in r.stderr
    r = run_cli("instrument", "--", "true")
    assert r.returncode == 2 and "give --preset NAME or --spec FILE" in r.stderr


def test_a_child_gets_ranges_and_keeps_its_own_sitecustomize(tmp_path):
    """A program run through the command: its module is patched at import, its own sitecustomize still runs."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "loop.py").write_text("def step(k):\n    return k\n")
    (tmp_path / "app" / "sitecustomize.py").write_text("import os\nos.environ['SITE_RAN'] = 'yes'\n")
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps({"domain": "app", "range": [{"target": "loop:step", "name": "step", "payload": "arg:k"}]})
    )
    script = "import os, loop\nfor k in range(3): loop.step(k)\nprint(os.environ.get('SITE_RAN'))\n"
    log = tmp_path / "nvtx.log"
    env = {"PYTHONPATH": os.pathsep.join([str(FAKE_NVTX), str(tmp_path / "app")]), "FAKE_NVTX_LOG": str(log)}
    r = run_cli("instrument", "--spec", str(spec), "--verbose", "--", sys.executable, "-c", script, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "yes"
    assert "loop:step -> range 'step' in domain 'app'" in r.stderr
    pushes = [json.loads(line) for line in log.read_text().splitlines() if '"push"' in line]
    assert [(p["domain"], p["message"], p["payload"]) for p in pushes] == [("app", "step", k) for k in range(3)]


def _ranges(log: Path) -> list[tuple]:
    """(message, category, payload, enclosing range) per pushed range; the engine's `measure` range (the capture
    range around both paths, which no method of the engine encloses exactly) is left out."""
    out, stack = [], []
    for line in log.read_text().splitlines():
        e = json.loads(line)
        if e["op"] == "push":
            if e["message"] != schema.MEASURE:
                out.append((e["message"], e["category"], e["payload"], stack[-1] if stack else None))
            stack.append(e["message"] if e["message"] != schema.MEASURE else (stack[-1] if stack else None))
        else:
            stack.pop()
    return out


@pytest.mark.slow
def test_the_engine_with_its_nvtx_off_gets_the_same_ranges_from_outside(tmp_path):
    """A real `compare --device cpu`: once with the engine's own ranges, once with them off and the fdoverlap preset
    putting them in. The same ranges, names, categories and step payloads; the preset also opens insert_tasks in
    the iterations without inserts (an empty range: the engine opens it only when it inserts)."""
    trace = tmp_path / "tiny.json"
    synth = ["trace", "synth", "-n", "4", "--max-num-seqs", "2", "--prompt-len", "4..8", "--output-len", "3..5"]
    assert run_cli(*synth, "-o", str(trace)).returncode == 0
    replay = ["compare", str(trace), "--device", "cpu", "--warmup", "2", "--json"]
    path = os.pathsep.join([str(FAKE_NVTX), str(REPO)])
    own, injected = tmp_path / "own.log", tmp_path / "injected.log"
    a = run_cli(*replay, env={"PYTHONPATH": path, "FAKE_NVTX_LOG": str(own)})
    instrumented = ["instrument", "--preset", "fdoverlap", "--", sys.executable, "-m", "fdoverlap_cli", *replay]
    b = run_cli(*instrumented, env={"PYTHONPATH": path, "FAKE_NVTX_LOG": str(injected)})
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    assert json.loads(a.stdout)["identity"] == json.loads(b.stdout)["identity"]  # the same tokens, on both paths
    assert json.loads(b.stdout)["identity"]["identical"]
    engine, outside = _ranges(own), _ranges(injected)
    inserts = {(r[2], r[3]) for r in engine if r[0] == schema.INSERT_TASKS}
    extra = [r for r in outside if r[0] == schema.INSERT_TASKS and (r[2], r[3]) not in inserts]
    assert len(extra) > 0 and all(r[3] == schema.STEP for r in extra)
    assert [r for r in outside if r not in extra] == engine
    assert {r[0] for r in engine} == set(schema.RANGES) - {schema.MEASURE, schema.TP_BARRIER}  # the barrier: --tp > 1
