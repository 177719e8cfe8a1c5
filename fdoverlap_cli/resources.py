"""Where the op sources and the bundled traces are, in a source checkout and in an installed wheel."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _data_dir(repo_dir: str, package: str) -> Path:
    # A source checkout (also an editable install) has the folder beside the package;
    # a wheel ships it inside the package under `package`.
    beside = _REPO_ROOT / repo_dir
    if beside.is_dir():
        return beside
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    raise FileNotFoundError(f"cannot find the {repo_dir}/ folder of this installation")


def custom_ops_dir() -> Path:
    """The custom_ops/ source tree."""
    return _data_dir("custom_ops", "fdoverlap_cli._custom_ops")


def traces_dir() -> Path:
    """The folder of bundled traces."""
    return _data_dir("traces", "fdoverlap_cli._traces")
