"""How long the op library takes to build and to load: the numbers behind the one-translation-unit layout.

Measures, on this machine: the compile of each op family's .cc on its own and of the unity file that
includes them all (g++ with the flags the build uses, no link); a fresh build end to end
(`ops.build()` into an empty cache: paddle's setup, compile, link); and the cached load in a fresh
process (`ops.load()` of a cached build), best of --repeat.
Usage: python benchmarks/ops_build.py [--repeat 3] [--skip-families]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from fdoverlap_cli import ops

LOAD_IN_CHILD = (  # prints the seconds of `import paddle`, then of ops.load() of the cached build
    "import time; t0 = time.perf_counter(); from fdoverlap_cli import ops; import paddle; "
    "t1 = time.perf_counter(); ops.load(); print(t1 - t0, time.perf_counter() - t1)"
)


def compile_seconds(source: Path) -> float:
    """Wall time of compiling one .cc to an object file the way the build does (CPU, no link)."""
    import paddle

    include = Path(paddle.sysconfig.get_include())
    command = ["g++", *ops.CXX_FLAGS, "-fPIC", "-w", "-DPADDLE_WITH_CUSTOM_KERNEL", "-D_GLIBCXX_USE_CXX11_ABI=1"]
    command += [f"-I{include}", f"-I{include / 'third_party'}", f"-I{sysconfig.get_paths()['include']}"]
    started = time.perf_counter()
    subprocess.run([*command, "-c", str(source), "-o", os.devnull], check=True, cwd=source.parent)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-families", action="store_true", help="Only the unity file, the build and the load.")
    args = parser.parse_args()
    import paddle

    root = ops.source_dir()
    print(f"python {platform.python_version()}, paddle {paddle.__version__}, {os.cpu_count()} CPUs")
    if not args.skip_families:
        families = sorted(p for p in root.rglob("*.cc") if p.name != ops.CPU_SOURCE)
        total = 0.0
        for family in families:
            seconds = compile_seconds(family)
            total += seconds
            print(f"compile {family.relative_to(root)}: {seconds:.1f} s")
        print(f"compile the {len(families)} families one by one: {total:.1f} s in all")
    print(f"compile {ops.CPU_SOURCE} (every family, one TU): {compile_seconds(root / ops.CPU_SOURCE):.1f} s")

    fresh = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["FDOVERLAP_CACHE_DIR"] = cache
            info = ops.build()
            assert not info.cached
            fresh.append(info.seconds)
    print(f"fresh build (ops.build, empty cache): best {min(fresh):.1f} s of {[round(s, 1) for s in fresh]}")

    os.environ.pop("FDOVERLAP_CACHE_DIR")
    ops.build()  # make sure the default cache holds this build
    loads = []
    for _ in range(args.repeat):
        child = subprocess.run(
            [sys.executable, "-c", LOAD_IN_CHILD], capture_output=True, text=True, check=True, cwd=root.parent
        )
        loads.append([float(x) for x in child.stdout.split()[-2:]])
    imports, load = min(t[0] for t in loads), min(t[1] for t in loads)
    print(f"cached load in a fresh process: import paddle {imports:.2f} s, then ops.load() {load * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
