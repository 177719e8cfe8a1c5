"""Build, cache and load the op library (custom_ops/) with paddle.utils.cpp_extension.

One build compiles `fdoverlap_ops.cc` (every op family, as one translation unit) and, when the device
facade reports a GPU, `fdoverlap_kernels.cu` (linked with cuBLASLt, for the gemm op) into
`<cache>/ops/<key>/fdoverlap_ops.so`, where <cache> is $FDOVERLAP_CACHE_DIR or ~/.cache/fdoverlap and <key>
hashes everything the binary depends on: the sources' names and contents, the flags, the paddle build and the
GPU arch (or "cpu").
A build runs under a file lock in a temporary folder that is renamed into place when complete, so
processes that build or load at the same time (the engine and its output reader) never see half an
entry. Ops are then the loaded module's functions: `ops.load().get_stop(flag)`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from fdoverlap_cli import resources
from fdoverlap_cli.errors import FdoError
from fdoverlap_cli.platform import probe, require_paddle

LIBRARY_NAME = "fdoverlap_ops"
CPU_SOURCE = "fdoverlap_ops.cc"  # includes every op family
CUDA_SOURCE = "fdoverlap_kernels.cu"  # includes every CUDA kernel file
CPU_SUFFIXES = (".cc", ".h")
CUDA_SUFFIXES = (".cu", ".cuh")
# C++17 (paddle 2.6 would pick C++14); no debug info (a third of the compile time and most of the .so);
# stop at the first error.
CXX_FLAGS = ["-std=c++17", "-g0", "-O2", "-Wfatal-errors"]
CUBLASLT = "cublasLt"
# Bump when the way a build is made changes, so old cache entries are not reused.
RECIPE_VERSION = 1
ERROR_LINES = 20

_module: ModuleType | None = None
_module_lock = threading.Lock()


@dataclass(frozen=True)
class BuildInfo:
    """One build of the op library: where it is and how it was made."""

    path: Path  # the shared library
    key: str
    cuda: bool
    arch: str | None  # sm_90 style, None for a CPU build
    seconds: float  # how long compiling took when it was built
    cached: bool  # True: found in the cache; False: built by this call
    paddle_version: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass(frozen=True)
class _Plan:
    """What a build of the current sources on this machine compiles, and where it is cached."""

    source_dir: Path
    sources: list[Path]
    include_dirs: list[str]
    cxx_flags: list[str]
    cuda_flags: list[str]
    link_args: list[str]
    cuda: bool
    arch: str | None
    paddle_version: str
    key: str

    @property
    def entry(self) -> Path:
        return ops_cache_dir() / self.key

    @property
    def library(self) -> Path:
        return self.entry / f"{LIBRARY_NAME}.so"


def cache_root() -> Path:
    """$FDOVERLAP_CACHE_DIR, or ~/.cache/fdoverlap."""
    configured = os.environ.get("FDOVERLAP_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "fdoverlap"


def ops_cache_dir() -> Path:
    """The folder of cached builds, one subfolder per key."""
    return cache_root() / "ops"


def source_dir() -> Path:
    """The op sources: $FDOVERLAP_OPS_SRC (another source tree, for development and tests) or custom_ops/."""
    configured = os.environ.get("FDOVERLAP_OPS_SRC")
    root = Path(configured).expanduser() if configured else resources.custom_ops_dir()
    if not (root / CPU_SOURCE).is_file():
        raise FdoError(f"{root}: not an op source tree (no {CPU_SOURCE})")
    return root.resolve()


def _cuda_home() -> Path | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        return Path(home)
    nvcc = shutil.which("nvcc")
    return Path(nvcc).resolve().parent.parent if nvcc else None


def _cublaslt(cuda_home: Path | None) -> tuple[list[str], list[str]]:
    """(include dirs, link args) of cuBLASLt, which the gemm op needs and paddle's CUDAExtension does not link:
    CUDA_HOME's library dir, else an nvidia-cublas wheel's; with an rpath, so that it loads as built."""
    roots = [cuda_home] if cuda_home else []
    spec = importlib.util.find_spec("nvidia")
    for location in (spec.submodule_search_locations or []) if spec else []:
        roots += sorted(p for p in Path(location).iterdir() if (p / "include" / "cublasLt.h").is_file())
    for root in roots:
        for lib in (root / d for d in ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib")):
            found = sorted(lib.glob(f"lib{CUBLASLT}.so*"))  # the unversioned name sorts first
            if found:
                name = f"-l{CUBLASLT}" if found[0].name == f"lib{CUBLASLT}.so" else f"-l:{found[0].name}"
                includes = [] if root == cuda_home else [str(root / "include")]
                return includes, [f"-L{lib}", f"-Wl,-rpath,{lib}", name]
    raise FdoError(
        f"no lib{CUBLASLT}.so under CUDA_HOME ({cuda_home or 'unset, and no nvcc on PATH'}) nor in an nvidia-cublas "
        "wheel: the gemm op links cuBLASLt (set CUDA_HOME to a CUDA toolkit that has it)"
    )


def _hash_sources(root: Path, suffixes: tuple[str, ...]) -> tuple[list[str], str]:
    """The relative names of the source files with these suffixes, and a sha256 of names and contents."""
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix in suffixes)
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    return names, digest.hexdigest()


def _arch_flags(major: int, minor: int) -> list[str]:
    """nvcc's target for the GPU; Hopper gets sm_90a, whose warpgroup MMA the prefill attention uses (FDO_WGMMA)."""
    if (major, minor) == (9, 0):
        return ["-gencode=arch=compute_90a,code=sm_90a", "-DFDO_WGMMA"]
    return [f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}"]


def _plan() -> _Plan:
    info = probe()
    root = source_dir()
    cuda = info.has_gpu
    suffixes = CPU_SUFFIXES + CUDA_SUFFIXES if cuda else CPU_SUFFIXES
    _, sources_digest = _hash_sources(root, suffixes)
    sources = [root / CPU_SOURCE]
    include_dirs: list[str] = []
    cuda_flags: list[str] = []
    link_args: list[str] = []
    if cuda:
        if not (root / CUDA_SOURCE).is_file():
            raise FdoError(f"{root}: no {CUDA_SOURCE}, needed for a CUDA build")
        sources.append(root / CUDA_SOURCE)
        major, minor = info.capability or (0, 0)
        cuda_flags = ["-std=c++17", *_arch_flags(major, minor)]
        # CUDA 13 keeps thrust/cub under include/cccl; paddle's headers include thrust from .cc files too.
        cuda_home = _cuda_home()
        if cuda_home and (cuda_home / "include" / "cccl").is_dir():
            include_dirs.append(str(cuda_home / "include" / "cccl"))
        cublas_includes, link_args = _cublaslt(cuda_home)
        include_dirs += cublas_includes
    recipe = {
        "recipe": RECIPE_VERSION,
        "sources": sources_digest,
        "cxx_flags": CXX_FLAGS,
        "cuda_flags": cuda_flags,
        "link_args": link_args,
        "include_dirs": include_dirs,
        "paddle": [info.paddle_version, info.paddle_commit],
        "target": info.arch if cuda else "cpu",
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    return _Plan(
        source_dir=root,
        sources=sources,
        include_dirs=include_dirs,
        cxx_flags=list(CXX_FLAGS),
        cuda_flags=cuda_flags,
        link_args=link_args,
        cuda=cuda,
        arch=info.arch if cuda else None,
        paddle_version=info.paddle_version,
        key=key,
    )


def cache_key() -> str:
    """The cache key of the current sources on this machine (builds nothing)."""
    return _plan().key


@contextlib.contextmanager
def _cache_errors() -> Iterator[None]:
    """An OSError of the cache folder (a file in its place, read-only, full) as one line naming it."""
    try:
        yield
    except OSError as e:
        configured = os.environ.get("FDOVERLAP_CACHE_DIR")
        where = (
            f"FDOVERLAP_CACHE_DIR={configured}" if configured else f"{cache_root()} (FDOVERLAP_CACHE_DIR picks another)"
        )
        detail = f" ({e.filename})" if e.filename and os.fspath(e.filename) != configured else ""
        raise FdoError(f"the op library's cache {where} is not usable: {e.strerror or e}{detail}") from None


@contextlib.contextmanager
def _locked(key: str) -> Iterator[None]:
    """Hold an exclusive lock on one cache entry (across processes) for the block."""
    ops_cache_dir().mkdir(parents=True, exist_ok=True)
    with open(ops_cache_dir() / f"{key}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _read_entry(plan: _Plan) -> BuildInfo | None:
    try:
        meta = json.loads((plan.entry / "build.json").read_text())
    except (OSError, ValueError):
        return None
    if not plan.library.is_file():
        return None
    return BuildInfo(
        path=plan.library,
        key=plan.key,
        cuda=plan.cuda,
        arch=plan.arch,
        seconds=float(meta.get("seconds", 0.0)),
        cached=True,
        paddle_version=plan.paddle_version,
    )


def status() -> BuildInfo | None:
    """The cached build for the current sources on this machine, or None; builds nothing."""
    return _read_entry(_plan())


_SETUP_TEMPLATE = """\
# Generated by fdoverlap: compiles the op library with paddle's extension builder.
from paddle.utils.cpp_extension import BuildExtension, {extension}, setup

setup(
    name={name!r},
    ext_modules=[
        {extension}(
            sources={sources!r},
            include_dirs={include_dirs!r},
            extra_compile_args={{"cxx": {cxx_flags!r}, "nvcc": {cuda_flags!r}}},
            extra_link_args={link_args!r},
        )
    ],
    cmdclass={{"build_ext": BuildExtension.with_options(output_dir={output_dir!r}, no_python_abi_suffix=True)}},
)
"""

# Lines of a failed build's log that are the build system talking, not the compiler.
_NOISE = re.compile(
    r"^(Traceback|\s+File |\s+raise |subprocess\.|RuntimeError|distutils|setuptools|error: command|running |"
    r"building |creating |Compiling |\S*(gcc|g\+\+|c\+\+|nvcc)\S* .* -c )"
)


def compiler_errors(log: str, limit: int = ERROR_LINES) -> list[str]:
    """The lines of a build log that matter: from the first compiler error on, build-system noise left out."""
    lines = [line.rstrip() for line in log.splitlines() if line.strip() and not _NOISE.match(line)]
    first = next((i for i, line in enumerate(lines) if re.search(r"\berror\b", line, re.IGNORECASE)), None)
    if first is None:
        return lines[-limit:]
    # gcc names the include chain just before the error line.
    while first > 0 and re.match(r"^(In file included from|\s+from )", lines[first - 1]):
        first -= 1
    return lines[first : first + limit]


def _run_build(setup_dir: Path, verbose: bool) -> tuple[int, str]:
    """Run the generated setup.py; return its exit code and its whole output (echoed live when verbose)."""
    command = [sys.executable, "setup.py", "build"]
    if not verbose:
        done = subprocess.run(command, cwd=setup_dir, capture_output=True, text=True, errors="replace")
        return done.returncode, done.stdout + done.stderr
    output: list[str] = []
    with subprocess.Popen(
        command, cwd=setup_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        try:
            assert process.stdout is not None
            for line in process.stdout:
                sys.stderr.write(line)
                output.append(line)
        except BaseException:
            process.kill()
            raise
    return process.returncode, "".join(output)


def _compile(plan: _Plan, verbose: bool) -> BuildInfo:
    """Compile into a temporary folder and rename it into place (the caller holds the entry's lock)."""
    root = ops_cache_dir()
    work = Path(tempfile.mkdtemp(prefix=f".build-{plan.key}-", dir=root))
    try:
        out = work / "out"
        setup = _SETUP_TEMPLATE.format(
            extension="CUDAExtension" if plan.cuda else "CppExtension",
            name=LIBRARY_NAME,
            sources=[str(s) for s in plan.sources],
            include_dirs=plan.include_dirs,
            cxx_flags=plan.cxx_flags,
            cuda_flags=plan.cuda_flags,
            link_args=plan.link_args,
            output_dir=str(out),
        )
        (work / "setup.py").write_text(setup)
        started = time.perf_counter()
        returncode, log = _run_build(work, verbose)
        seconds = time.perf_counter() - started
        (work / "build.log").write_text(log)
        built = out / f"{LIBRARY_NAME}.so"
        if returncode != 0 or not built.is_file():
            raise _build_failed(plan, work, returncode, log)
        entry = work / "entry"
        entry.mkdir()
        built.rename(entry / built.name)
        (work / "build.log").rename(entry / "build.log")
        meta = {"key": plan.key, "seconds": round(seconds, 3), "cuda": plan.cuda, "arch": plan.arch}
        meta.update(paddle=plan.paddle_version, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        (entry / "build.json").write_text(json.dumps(meta, indent=1) + "\n")
        if plan.entry.exists():  # a forced rebuild: swap the old entry out
            old = work / "old"
            plan.entry.rename(old)
        entry.rename(plan.entry)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuildInfo(
        path=plan.library,
        key=plan.key,
        cuda=plan.cuda,
        arch=plan.arch,
        seconds=seconds,
        cached=False,
        paddle_version=plan.paddle_version,
    )


def _build_failed(plan: _Plan, work: Path, returncode: int, log: str) -> FdoError:
    """Keep the failed build's folder for a look, and say what the compiler said."""
    kept = ops_cache_dir() / f"failed-{plan.key}"
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(work, kept, ignore=shutil.ignore_patterns("out"))
    errors = "\n".join(f"  {line}" for line in compiler_errors(log))
    return FdoError(
        f"building the op library failed (exit code {returncode}):\n{errors}\n"
        f"full log: {kept / 'build.log'}\n"
        f"reproduce: fdoverlap ops build --verbose   (or: cd {kept} && {sys.executable} setup.py build)"
    )


def build(*, force: bool = False, verbose: bool = False) -> BuildInfo:
    """The op library for the current sources: from the cache, or compiled now (`force`: always compile)."""
    plan = _plan()
    with _cache_errors(), _locked(plan.key):
        cached = None if force else _read_entry(plan)
        return cached if cached is not None else _compile(plan, verbose)


@contextlib.contextmanager
def _quiet_paddle_logs(verbose: bool) -> Iterator[None]:
    logger = logging.getLogger("utils.cpp_extension")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _import_library(info: BuildInfo, verbose: bool) -> ModuleType:
    from paddle.utils.cpp_extension.extension_utils import _import_module_from_library

    # Paddle writes a generated Python file beside the library while importing it; the lock keeps two
    # processes from writing it at the same time.
    with _cache_errors(), _locked(info.key), _quiet_paddle_logs(verbose):
        try:
            return _import_module_from_library(LIBRARY_NAME, str(info.path.parent), verbose)
        except Exception as e:
            raise FdoError(
                f"loading the op library {info.path} failed: {type(e).__name__}: {e}; "
                "rebuild it with: fdoverlap ops build --force"
            ) from None


def load(*, verbose: bool = False) -> ModuleType:
    """The op library module: built if needed, loaded once per process (later calls return the same module)."""
    global _module
    with _module_lock:
        if _module is None:
            require_paddle()
            _module = _import_library(build(verbose=verbose), verbose)
        return _module
