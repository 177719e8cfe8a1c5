"""The parent side of `fdoverlap instrument`: resolve the spec, then become the program with the hook.

The program's environment gets the spec's variables, the rules as JSON in $FDOVERLAP_INSTRUMENT and
boot/ first on PYTHONPATH, whose sitecustomize installs the hook in every Python process started
with that environment (the program's own children too). The process then execs the program, so the
program's exit status is the command's, signals reach it directly, and nothing is left behind.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from fdoverlap_cli.errors import FdoError, InputError
from fdoverlap_cli.instrument import hook
from fdoverlap_cli.instrument.presets import preset
from fdoverlap_cli.instrument.spec import InstrumentSpec, load

BOOT = Path(__file__).resolve().parent / "boot"


def resolve(presets: Sequence[str] = (), spec_files: Sequence[str | os.PathLike[str]] = ()) -> InstrumentSpec:
    """The presets, then the spec files, in order (a later variable wins)."""
    spec = InstrumentSpec()
    for name in presets:
        spec = spec + preset(name)
    for path in spec_files:
        spec = spec + load(path)
    if not spec.rules:
        raise InputError("instrument", "no ranges to put in: give --preset NAME or --spec FILE")
    return spec


def child_env(spec: InstrumentSpec, base: Mapping[str, str], *, verbose: bool = False) -> dict[str, str]:
    """`base` with the spec's variables, the rules, and boot/ first on PYTHONPATH."""
    env = {**base, **spec.env, hook.ENV: hook.encode(list(spec.rules), verbose=verbose)}
    env["PYTHONPATH"] = os.pathsep.join([str(BOOT), *([base["PYTHONPATH"]] if base.get("PYTHONPATH") else [])])
    return env


def run(command: Sequence[str], spec: InstrumentSpec, *, verbose: bool = False) -> NoReturn:
    """Replace this process with `command`, instrumented by `spec`."""
    if not command:
        raise InputError("instrument", "give the program to run after -- (e.g. -- python serve.py)")
    env = child_env(spec, os.environ, verbose=verbose)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], list(command), env)
    except FileNotFoundError:
        raise FdoError(f"instrument: {command[0]}: command not found") from None
    except OSError as e:
        raise FdoError(f"instrument: cannot run {command[0]}: {e.strerror or e}") from None
