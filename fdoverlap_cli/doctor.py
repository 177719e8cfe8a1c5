"""What `fdoverlap doctor` checks: paddle and its build, the GPU, nvcc and nsys, the op library, NVTX.

The tool can run when paddle imports and the op library builds and loads; everything else is
information (a CPU machine has no GPU rows to fill, and that is fine).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any

from fdoverlap_cli import __version__, ops
from fdoverlap_cli.errors import FdoError

# paddle's own kernels on the GPU, in a child process: some paddle builds abort the process on a GPU
# they have no kernels for, others silently compute zeros (paddlepaddle-gpu 2.6 on Hopper).
KERNEL_SMOKE_TEST = "import paddle; paddle.set_device('gpu:0'); print(paddle.full([4], 7.0).numpy().tolist())"
SMOKE_TEST_TIMEOUT_S = 180


@dataclass(frozen=True)
class Check:
    """One row of the diagnosis. ok: True fine, False the tool cannot run, None for information;
    warning: the tool runs, but a feature is missing (the value says which, and what still works)."""

    name: str
    value: str
    ok: bool | None = None
    warning: bool = False


@dataclass(frozen=True)
class Diagnosis:
    checks: list[Check]

    @property
    def can_run(self) -> bool:
        """paddle imports and the op library builds and loads."""
        return not any(check.ok is False for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"can_run": self.can_run, "checks": [asdict(check) for check in self.checks]}


def _version_line(command: list[str], pattern: str) -> str | None:
    """The first match of `pattern` in the command's output, or None when it does not run."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(pattern, done.stdout + done.stderr)
    return match.group(1) if match else None


def _tool(name: str, env_var: str | None = None) -> str | None:
    configured = os.environ.get(env_var) if env_var else None
    return configured if configured and os.path.isfile(configured) else shutil.which(name)


def check_nvcc() -> Check:
    path = _tool("nvcc")
    if path is None:
        cuda_home = os.environ.get("CUDA_HOME")
        candidate = os.path.join(cuda_home, "bin", "nvcc") if cuda_home else ""
        path = candidate if candidate and os.path.isfile(candidate) else None
    if path is None:
        return Check("nvcc", "not found (needed to build the CUDA kernels)")
    version = _version_line([path, "--version"], r"release ([\d.]+)")
    return Check("nvcc", f"{version or 'unknown version'} ({path})")


def check_nsys() -> Check:
    path = _tool("nsys", "NSYS")
    if path is None:
        return Check(
            "nsys",
            "not found: `fdoverlap profile` and reading an .nsys-rep need it (put nsys on PATH or set $NSYS); "
            "`fdoverlap analyze` of an exported .sqlite works without it",
            warning=True,
        )
    version = _version_line([path, "--version"], r"version ([\w.\-]+)")
    return Check("nsys", f"{version or 'unknown version'} ({path})")


def check_nvtx() -> Check:
    try:
        import importlib.metadata

        import nvtx
    except ImportError:
        return Check("NVTX", "the nvtx module is not installed: NVTX ranges are off", ok=None)
    version = importlib.metadata.version("nvtx")
    disabled = os.environ.get("NVTX_DISABLE")
    handle = nvtx.start_range("fdoverlap doctor")
    attached = handle is not None
    if attached:
        nvtx.end_range(handle)
    state = f"NVTX_DISABLE={disabled}" if disabled else "enabled"
    return Check("NVTX", f"nvtx {version}, {state}, profiler {'attached' if attached else 'not attached'}")


def check_paddle_kernels_on_gpu() -> Check:
    """Whether paddle's own kernels compute on this GPU (decides nothing: fdoverlap uses its own ops)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", KERNEL_SMOKE_TEST], capture_output=True, text=True, timeout=SMOKE_TEST_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return Check("paddle kernels on GPU", f"no answer in {SMOKE_TEST_TIMEOUT_S} s")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return Check(
            "paddle kernels on GPU", f"no: the test aborts (exit code {done.returncode}); fdoverlap uses its own ops"
        )
    if lines[-1] == str([7.0] * 4):
        return Check("paddle kernels on GPU", "yes")
    return Check("paddle kernels on GPU", f"no: paddle.full(7) gave {lines[-1]}; fdoverlap uses its own ops")


def check_op_library() -> Check:
    """Build the op library if needed and load it: the proof that the tool can run here."""
    try:
        info = ops.build()
        ops.load()
    except FdoError as e:
        lines = str(e).splitlines()  # a build error's second line is the compiler's first error
        return Check("op library", f"build error: {lines[1].strip() if len(lines) > 1 else lines[0]}", ok=False)
    how = "cached" if info.cached else f"built now in {info.seconds:.1f} s"
    target = f"CUDA {info.arch}" if info.cuda else "CPU"
    return Check("op library", f"{how}, {target} ({info.path})", ok=True)


def diagnose() -> Diagnosis:
    """Gather every check (building the op library if it is not cached yet)."""
    checks = [Check("fdoverlap", __version__), Check("python", sys.version.split()[0] + f" ({sys.executable})")]
    try:
        from fdoverlap_cli.platform import probe

        info = probe()
    except FdoError as e:
        checks += [Check("paddle", str(e), ok=False), check_nvcc(), check_nsys(), check_nvtx()]
        return Diagnosis(checks)
    build = f"CUDA {info.paddle_cuda_version} build" if info.compiled_with_cuda else "CPU build"
    checks.append(Check("paddle", f"{info.paddle_version} ({build}, commit {info.paddle_commit[:10]})", ok=True))
    if info.has_gpu:
        memory = f", {info.total_memory_bytes / 2**30:.0f} GiB" if info.total_memory_bytes else ""
        checks.append(Check("GPU", f"{info.gpu_name} ({info.arch}{memory}), {info.gpu_count} visible"))
        checks.append(Check("driver", info.driver_version or "unknown"))
        checks.append(check_paddle_kernels_on_gpu())
    else:
        reason = "paddle is a CPU build" if not info.compiled_with_cuda else "no GPU visible"
        checks.append(Check("GPU", f"none ({reason}); replays run on the CPU"))
        checks.append(Check("driver", "none"))
        checks.append(Check("paddle kernels on GPU", "n/a (no GPU)"))
    checks += [check_nvcc(), check_nsys(), check_op_library(), check_nvtx()]
    return Diagnosis(checks)
