"""Strip the capturing machine's environment, working directory, host and user from nsys SQLite exports.

    python tools/scrub_nsys_exports.py                     # every export under tests/fixtures/nsys/, in place
    python tools/scrub_nsys_exports.py a.sqlite b.sqlite   # these, in place

Each file is replaced whole once its scrubbed copy is complete (fdoverlap_cli.nsys.scrub); run it on an
export before committing it or attaching it to a bug report.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fdoverlap_cli.errors import FdoError  # noqa: E402
from fdoverlap_cli.nsys.scrub import scrub_export  # noqa: E402


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((REPO / "tests" / "fixtures" / "nsys").glob("*.sqlite"))
    for path in paths:
        try:
            done = scrub_export(path, in_place=True)
        except FdoError as e:
            print(f"scrub_nsys_exports: {e}", file=sys.stderr)
            return 2
        print(
            f"{path}: {done.environment_rows} environment rows, {done.paths_rewritten} paths, "
            f"{done.system_rows} host/user/environment values removed"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
