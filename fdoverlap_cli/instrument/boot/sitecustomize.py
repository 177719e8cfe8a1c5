"""Run at the child's start-up (the folder is first on its PYTHONPATH): install fdoverlap's NVTX hook
(../hook.py, loaded by path so that the child needs nothing of fdoverlap's on its path), then run the
sitecustomize this one hides, if there is one further along the path."""

import importlib.util
import os
import sys


def _load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _install() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        _load("_fdoverlap_instrument_hook", os.path.join(os.path.dirname(here), "hook.py")).install()
    except Exception as e:  # never keep the program from running
        sys.stderr.write(f"fdoverlap instrument: the NVTX hook did not install ({type(e).__name__}: {e})\n")
    from importlib.machinery import PathFinder

    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    hidden = PathFinder.find_spec("sitecustomize", rest)
    if hidden is not None and hidden.origin and os.path.abspath(hidden.origin) != os.path.abspath(__file__):
        _load("sitecustomize", hidden.origin)


_install()
