#!/usr/bin/env bash
# Steps without NVTX on a serving loop that is not fdoverlap's, and NVTX ranges put in from outside.
#
#   source /tmp/fdo/tools/env.sh && bash benchmarks/gpu_foreign.sh [transformers|self|all]
#
# transformers (~3 min): benchmarks/foreign_loop.py (transformers' continuous batching, random Llama-3-8B
#   shapes with 16 layers, 32 requests, 64 new tokens) under `nsys profile -t cuda,nvtx -s none
#   --cpuctxsw=none`, sync and async (use_async_batching), each as it is and under
#   `fdoverlap instrument --preset transformers`; each report exported to SQLite, its steps found from
#   CUDA activity (benchmarks/foreign_steps.py), and, for the instrumented ones, compared with the
#   steps the injected `generation_step` ranges give. `fdoverlap analyze` of each export, text and JSON
#   (NAME-analyze.txt/.json; the instrumented ones also with --steps nvtx:generation_step@transformers:
#   NAME-analyze-ranges.txt/.json), and `analyze tf-sync-plain --vs tf-async-plain`
#   (tf-sync-vs-async-analyze.txt/.json). `nsys stats` of the copies and API calls of each export is the
#   independent look.
# self (~1.5 min): the tool's own compare profiled twice, with its own NVTX and with it switched off and
#   the same ranges put in by `fdoverlap instrument --preset fdoverlap`; `analyze` of both.
#
# transformers and torch run WITHOUT the paddle bundle's PYTHONPATH (it carries numpy 1.26); nsys and the
# analysis use the bundle's environment (env.sh). Logs, JSON and the small exports go to $OUT/foreign.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$PWD/gpu-out}
DIR=$OUT/foreign
mkdir -p "$DIR"
TMP=${TMPDIR:-/tmp}/fdo-foreign
mkdir -p "$TMP"
NSYS=${NSYS:-nsys}
BUNDLE_PYTHONPATH=${PYTHONPATH:-}
export FDOVERLAP_CACHE_DIR=${FDOVERLAP_CACHE_DIR:-/tmp/fdoverlap-cache}
TRACE=(-t cuda,nvtx -s none --cpuctxsw=none --force-overwrite=true)
STEP_RANGE=nvtx:generation_step@transformers  # the transformers preset's step range (instrument/presets.py)

banner() { printf '\n===== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
analysis() { PYTHONPATH=$REPO${BUNDLE_PYTHONPATH:+:$BUNDLE_PYTHONPATH} python3 "$@"; }

# The torch side: no bundle on the path, but fdoverlap_cli and nvtx (for instrument's hook).
torch_path() {
    if env -u PYTHONPATH python3 -c 'import nvtx' 2>/dev/null; then
        echo "$REPO"
        return
    fi
    local nvtx_dir
    nvtx_dir=$(analysis -c 'import nvtx, os; print(os.path.dirname(nvtx.__file__))') || return 1
    mkdir -p "$TMP/nvtx-only"
    ln -sfn "$nvtx_dir" "$TMP/nvtx-only/nvtx"  # only nvtx, not the bundle's numpy
    echo "$REPO:$TMP/nvtx-only"
}

export_sqlite() {  # name
    "$NSYS" export --type sqlite --force-overwrite=true -o "$TMP/$1.sqlite" "$TMP/$1.nsys-rep" > /dev/null \
        && cp "$TMP/$1.sqlite" "$TMP/$1.nsys-rep" "$DIR/"
}

independent_look() {  # name
    "$NSYS" stats -r cuda_gpu_mem_size_sum,cuda_api_sum --format csv -o "$DIR/$1" "$TMP/$1.sqlite" \
        > "$DIR/$1-stats.log" 2>&1 || echo "nsys stats failed for $1 (see $1-stats.log)"
    ls "$DIR/$1"_*.csv 2> /dev/null | sed 's/^/  stats: /'
}

analyze_export() {  # name [suffix --steps SPEC]: `fdoverlap analyze` of the export, text and JSON, timed
    local name=$1 suffix=${2:+-$2}
    shift $(($# > 1 ? 2 : 1))
    local t0=$SECONDS
    COLUMNS=200 analysis -m fdoverlap_cli analyze "$TMP/$name.sqlite" "$@" > "$DIR/$name-analyze$suffix.txt" 2>&1
    echo "analyze $name $*: exit $? in $((SECONDS - t0)) s (text: $name-analyze$suffix.txt)"
    analysis -m fdoverlap_cli analyze "$TMP/$name.sqlite" "$@" --json > "$DIR/$name-analyze$suffix.json" \
        2> "$DIR/$name-analyze$suffix.err"
    echo "analyze $name $* --json: exit $? (JSON: $name-analyze$suffix.json)"
    grep -E '^steps found without NVTX|^ (steps found|step time p50|GPU time, kernels only / step|bubble \(mean\)|GPU busy, kernels only) ' \
        "$DIR/$name-analyze$suffix.txt"
}

transformers_runs() {
    banner "environment"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$NSYS" --version
    local tp
    tp=$(torch_path) || { echo "no nvtx module for the torch side"; return 1; }
    env -u PYTHONPATH PYTHONPATH="$tp" python3 -c \
        'import torch, transformers, nvtx; print("torch", torch.__version__, "transformers", transformers.__version__)'
    for mode in sync async; do
        for how in plain instrumented; do
            local name=tf-$mode-$how
            local cmd=(python3 "$REPO/benchmarks/foreign_loop.py" --mode "$mode")
            [ "$how" = instrumented ] && cmd=(python3 -m fdoverlap_cli instrument --preset transformers -- "${cmd[@]}")
            banner "$name: nsys profile ${cmd[*]}"
            timeout 170 "$NSYS" profile "${TRACE[@]}" -o "$TMP/$name" \
                env -u PYTHONPATH PYTHONPATH="$tp" "${cmd[@]}" > "$DIR/$name.log" 2>&1
            echo "exit $?"
            grep '^{' "$DIR/$name.log" | tail -1
            export_sqlite "$name" || { echo "no export for $name"; continue; }
            local against=()
            [ "$how" = instrumented ] && against=(--against "$STEP_RANGE")
            analysis "$REPO/benchmarks/foreign_steps.py" "$TMP/$name.sqlite" "${against[@]}" --json "$DIR/$name-steps.json" \
                2>&1 | tee "$DIR/$name-steps.txt"
            if [ "$how" = instrumented ]; then
                analysis "$REPO/benchmarks/foreign_steps.py" "$TMP/$name.sqlite" --steps "$STEP_RANGE" \
                    --json "$DIR/$name-ranges.json" 2>&1 | head -4
            fi
            analyze_export "$name"
            [ "$how" = instrumented ] && analyze_export "$name" ranges --steps "$STEP_RANGE"
            independent_look "$name"
        done
    done
    banner "sync against async: fdoverlap analyze tf-sync-plain.sqlite --vs tf-async-plain.sqlite"
    if [ -f "$TMP/tf-sync-plain.sqlite" ] && [ -f "$TMP/tf-async-plain.sqlite" ]; then
        COLUMNS=200 analysis -m fdoverlap_cli analyze "$TMP/tf-sync-plain.sqlite" --vs "$TMP/tf-async-plain.sqlite" \
            > "$DIR/tf-sync-vs-async-analyze.txt" 2>&1
        echo "exit $? (text: $DIR/tf-sync-vs-async-analyze.txt)"
        analysis -m fdoverlap_cli analyze "$TMP/tf-sync-plain.sqlite" --vs "$TMP/tf-async-plain.sqlite" --json \
            > "$DIR/tf-sync-vs-async-analyze.json" 2> "$DIR/tf-sync-vs-async-analyze.err"
        echo "exit $? (JSON: $DIR/tf-sync-vs-async-analyze.json)"
        sed -n '/A against B/,$p' "$DIR/tf-sync-vs-async-analyze.txt" | head -40
    fi
}

self_runs() {
    banner "the tool's own engine: its NVTX, then the same ranges from outside"
    local small=$TMP/self-trace.json
    analysis -m fdoverlap_cli ops build 2>&1 | tail -2
    analysis -m fdoverlap_cli trace synth -n 6 --max-num-seqs 4 --prompt-len 8..16 --output-len 10..14 -o "$small"
    local run=(compare --sync --overlap "$small" ${SELF_MODEL:---preset 8b --layers 2})
    (cd "$REPO" && analysis -m fdoverlap_cli profile --capture all -o "$TMP/self-own" --json -- "${run[@]}" \
        > "$DIR/self-own.json" 2> "$DIR/self-own.log")
    echo "own ranges: exit $?"
    (cd "$REPO" && analysis -m fdoverlap_cli profile --capture all -o "$TMP/self-injected" --json -- \
        instrument --preset fdoverlap -- python3 -m fdoverlap_cli "${run[@]}" \
        > "$DIR/self-injected.json" 2> "$DIR/self-injected.log")
    echo "injected ranges: exit $?"
    cp "$TMP/self-own.sqlite" "$TMP/self-injected.sqlite" "$DIR/" 2> /dev/null
    analysis - "$DIR/self-own.json" "$DIR/self-injected.json" << 'EOF'
import json, sys
rows = ("steps", "hidden", "hidden_save_work", "gpu_busy", "gpu_window_ns", "wall_ns")
runs = [json.load(open(p)) for p in sys.argv[1:]]
for path in ("sync", "overlap"):
    ms = [r.get("paths", {}).get(path, {}).get("metrics", {}) for r in runs]
    print(path, "  own ranges | injected ranges")
    for k in rows:
        print(f"  {k:14s} {ms[0].get(k)!s:>22} | {ms[1].get(k)!s:>22}")
    print(f"  {'bubble mean':14s} {ms[0].get('bubble_ns', {}).get('mean')!s:>22} | {ms[1].get('bubble_ns', {}).get('mean')!s:>22}")
    print(f"  {'step time p50':14s} {ms[0].get('step_time_ns', {}).get('p50')!s:>22} | {ms[1].get('step_time_ns', {}).get('p50')!s:>22}")
for r, name in zip(runs, ("own", "injected")):
    print(name, "per-step metrics:", "available" if r.get("per_step", {}).get("available") else r.get("per_step"))
EOF
    for name in self-own self-injected; do
        analysis "$REPO/benchmarks/foreign_steps.py" "$TMP/$name.sqlite" --against nvtx:step@fdoverlap 2>&1 \
            | grep -E '^(marker|against|kernels-only)'
    done
}

case "${1:-all}" in
    transformers) transformers_runs ;;
    self) self_runs ;;
    all) transformers_runs; self_runs ;;
    *) echo "usage: $0 [transformers|self|all]"; exit 2 ;;
esac
ls -la "$DIR"
