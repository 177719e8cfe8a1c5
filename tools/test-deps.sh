#!/usr/bin/env bash
# The tests' system dependencies: headless Chromium (Debian's package), for the test that opens the
# HTML report in a real browser. A no-op when chromium is on PATH; installs it with apt-get otherwise
# (as root, or through sudo where there is one). Run before the test suite (README, .ci/run).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "tools/test-deps.sh: no apt-get here: install Chromium by hand (the HTML report's browser test needs it)" >&2
    exit 1
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    as_root=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends chromium
