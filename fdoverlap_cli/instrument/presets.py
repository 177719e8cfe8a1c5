"""Built-in instrument specs for serving loops that emit no NVTX of their own.

fdoverlap     the tool's own engine under the ranges it emits itself (engine/schema.py), with its
              own annotation switched off: the injected ranges stand in for it
fastdeploy    GPUModelRunner (fastdeploy/worker/gpu_model_runner.py) under the engine's range names:
              execute_model and execute_model_overlap are the step; the stages are named as in
              PR #6176 (_preprocess_and_execute_model, _postprocess, _save_model_output) and as on
              develop, where stage 1 is _preprocess then _execute (both get the stage-1 range) and
              execute_model calls execute_model_normal or execute_model_overlap (the step range is not
              opened twice). FastDeploy passes no step index: each stage's payload counts its own calls
              (the overlap path's first save is step 0's), the step's counts execute_model calls.
transformers  continuous batching (transformers 5.x, generation/continuous_batching/continuous_api.py):
              one generation step (ContinuousBatchProcessor._generation_step, or the manager's method of
              that name around it), and the host work around it (prepare_next_batch, update_batch), in the
              domain `transformers`; its steps: `--steps nvtx:generation_step@transformers`.
"""

from __future__ import annotations

from fdoverlap_cli.engine.annotate import ENGINE_NVTX_ENV
from fdoverlap_cli.errors import InputError
from fdoverlap_cli.instrument.spec import InstrumentSpec, from_mapping
from fdoverlap_cli.measure import schema

TRANSFORMERS_DOMAIN = "transformers"
TRANSFORMERS_STEP = "generation_step"

_RUNNER = "fdoverlap_cli.engine.runner:ModelRunner"
_FASTDEPLOY = "fastdeploy.worker.gpu_model_runner:GPUModelRunner"
_CB = "transformers.generation.continuous_batching.continuous_api"

_SPECS = {
    "fdoverlap": {
        "domain": schema.DOMAIN,
        "env": {ENGINE_NVTX_ENV: "0"},
        "range": [
            {"target": f"{_RUNNER}.iteration", "name": schema.STEP, "payload": "arg:k"},
            {"target": f"{_RUNNER}.insert_tasks", "name": schema.INSERT_TASKS, "payload": "arg:k"},
            {"target": f"{_RUNNER}.preprocess_and_execute_model", "name": schema.PREPROCESS, "payload": "arg:k"},
            {"target": f"{_RUNNER}.postprocess", "name": schema.POSTPROCESS, "payload": "arg:fwd.plan.step"},
            {"target": f"{_RUNNER}.save_model_output", "name": schema.SAVE, "payload": "arg:p.plan.step"},
            {
                "target": "fdoverlap_cli.engine.designs:Develop.token_num_stage",
                "name": schema.TOKEN_NUM_EVENT,
                "payload": "arg:k",
            },
            {
                "target": "fdoverlap_cli.engine.replay:Engine.replay",
                "name_from": "arg:path",
                "payload": "attr:trace_id",
            },
        ],
    },
    "fastdeploy": {
        "domain": schema.DOMAIN,
        "range": [
            {"target": f"{_FASTDEPLOY}.{method}", "name": name, "payload": payload, "optional": True}
            for method, name, payload in (
                ("execute_model", schema.STEP, "counter:step"),
                ("execute_model_overlap", schema.STEP, "counter:step"),
                ("_preprocess_and_execute_model", schema.PREPROCESS, "counter"),  # PR #6176
                ("_preprocess", schema.PREPROCESS, "counter"),  # develop: stage 1 is _preprocess ...
                ("_execute", schema.PREPROCESS, "counter"),  # ... then _execute
                ("_postprocess", schema.POSTPROCESS, "counter"),
                ("_save_model_output", schema.SAVE, "counter"),
            )
        ],
    },
    "transformers": {
        "domain": TRANSFORMERS_DOMAIN,
        "range": [
            {"target": f"{_CB}:{owner}.{method}", "name": name, "payload": payload, "optional": True}
            for owner, method, name, payload in (
                ("ContinuousBatchingManager", "_generation_step", TRANSFORMERS_STEP, "counter:step"),
                ("ContinuousBatchProcessor", "_generation_step", TRANSFORMERS_STEP, "counter:step"),
                ("ContinuousBatchProcessor", "prepare_next_batch", "prepare_next_batch", "counter"),
                ("ContinuousBatchProcessor", "update_batch", "update_batch", "counter"),
            )
        ],
    },
}
PRESETS = tuple(sorted(_SPECS))


def preset(name: str) -> InstrumentSpec:
    """The built-in spec `name`; an unknown name is an InputError."""
    if name not in _SPECS:
        raise InputError("--preset", f"unknown preset '{name}' (expected one of {', '.join(PRESETS)})")
    return from_mapping(f"preset {name}", _SPECS[name])
