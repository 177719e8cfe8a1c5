"""The output reader's view of the tool's death (engine/parent_death.py): alive, gone, and gone while waiting."""

from __future__ import annotations

import os
import subprocess
import sys

from fdoverlap_cli.engine import parent_death

_ASK = "from fdoverlap_cli.engine.parent_death import parent_gone; print(parent_gone({parent}, {wait}))"


def _ask_from_a_child(parent: str, wait: float, shell_after: str = "") -> str:
    """parent_gone(parent, wait) as a child of a shell sees it; the shell runs `shell_after` once it started it."""
    child = f'{sys.executable} -c "{_ASK.format(parent=parent, wait=wait)}"'  # $$ expands: the shell's pid
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    script = f"{child} & {shell_after or 'wait'}"
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120).stdout


def test_a_living_parent_is_not_gone_even_after_waiting():
    assert not parent_death.parent_gone(os.getppid())
    assert _ask_from_a_child("$$", 0.2).strip() == "False"  # the shell waits for it


def test_a_parent_that_exits_while_the_child_waits_is_gone():
    # The shell exits 0.2 s after starting the child, which waits up to 60 s to see it gone; the pipe stays open
    # until the orphaned child has printed, so its answer still comes back.
    assert _ask_from_a_child("$$", 60.0, shell_after="sleep 0.2; exit 0").strip() == "True"
