#!/usr/bin/env bash
# Everything fdoverlap measures on a GPU host, in phases, for one command per phase:
#   bash benchmarks/gpu_session.sh check      doctor, op build, GPU tests (but the graphs phase's), a short compare
#   bash benchmarks/gpu_session.sh graphs     decode CUDA graphs: their GPU tests (identity, capture report) and
#                                             benchmarks/decode_roofline.py (forward vs roofline, host cost per step)
#   bash benchmarks/gpu_session.sh kernels    benchmarks/kernels.py (every section, every prefill configuration),
#                                             decode attention's one-warp path (FDOVERLAP_DECODE_TC=rows), and the
#                                             decode forward against the roofline with each GEMM choice
#                                             (FDOVERLAP_GEMM=paddle, tuned, decode)
#   bash benchmarks/gpu_session.sh bench      the compare matrix of docs/BENCHMARKS.md (8B-class preset), CUDA
#                                             graphs on and off
#   bash benchmarks/gpu_session.sh overhead   the same replay with and without the GPU timestamps
#   bash benchmarks/gpu_session.sh nsys       nsys profiles of both paths, analyze --against, fixtures
#   bash benchmarks/gpu_session.sh nsys-graphs  decode-b64's overlap path with CUDA graphs under nsys, graphs traced
#                                             as a whole and per node, analyzed (GPU busy, kernels only)
#   bash benchmarks/gpu_session.sh pair       the committed fixture pair: a real run.json and the nsys export of
#                                             the same run, in $OUT/fixture-pair/ (copy both to tests/fixtures/nsys/)
#   bash benchmarks/gpu_session.sh sanitizer  compute-sanitizer memcheck/racecheck on the op tests and a replay
#   bash benchmarks/gpu_session.sh runners    both runners (develop, pr6176) × both output paths (msgqueue, zmq) on
#                                             decode-b64 and default (8B-class, $LAYERS layers, graphs on): run.json
#                                             files and the main thread's save, launch, step and exposed host time
#   bash benchmarks/gpu_session.sh exposed    the exposed host time on decode-b64 (8B-class, default and
#                                             --token-count sync; their figures) and its nsys cross-check
#                                             on the sync path; prints the acceptance, PASS/FAIL per check
#   bash benchmarks/gpu_session.sh tp         tensor parallelism: its GPU tests (shards built on the GPU, one rank
#                                             through paddle's launcher), compare --tp 1 in process and launched,
#                                             and --tp 2/4/8 where the host has the GPUs (skipped with a message)
#   bash benchmarks/gpu_session.sh report     a report to attach of a GPU run (decode-b64, 8B-class): report
#                                             --html/--markdown/--svg/--png, and analyze --html/--markdown of its
#                                             nsys profile, in $OUT/report/ (look at the figures and the page)
#   bash benchmarks/gpu_session.sh sweep      fdoverlap sweep: batch 16,32,64,128 x copy stream compute/separate
#                                             (8B-class, $LAYERS layers, graphs auto), then host work 0/500/2000 us
#                                             in preprocess at batch 64; sweep json, table, PNG and SVG figures,
#                                             the sweep's --html page and --markdown
# Needs paddlepaddle-gpu importable (PYTHONPATH), nvcc for the op build (CUDA_HOME or PATH) and, for the nsys
# phases, Nsight Systems ($NSYS or nsys on PATH); on a host without a package registry, set those up first
# (an offline bundle's environment script, e.g. `source /tmp/fdo/tools/env.sh`). GLOG_minloglevel=2 keeps
# paddle's log lines out of the output. Run from the repository root; the op library is cached in
# $FDOVERLAP_CACHE_DIR (default here /tmp/fdoverlap-cache). Logs and results go to $OUT (default ./gpu-out).
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export FDOVERLAP_CACHE_DIR=${FDOVERLAP_CACHE_DIR:-/tmp/fdoverlap-cache}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
FDO="python -m fdoverlap_cli"
LAYERS=${LAYERS:-32}

banner() { printf '\n===== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
timed() {  # run a phase and say how long it took (the wall time each phase states is an estimate until then)
    local start=$SECONDS
    "$@"
    printf '===== phase %s took %d s\n' "$1" $((SECONDS - start))
}

check() {
    banner environment
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
    python -c "import paddle, sys; print('python', sys.version.split()[0], 'paddle', paddle.__version__)"
    banner doctor
    $FDO doctor
    banner "ops build"
    $FDO ops build --verbose 2>&1 | tail -15
    banner "GPU tests"
    timeout 420 python -m pytest -q -m gpu -rf -p no:cacheprovider --ignore=tests/test_graphs_gpu.py tests \
        > "$OUT/gpu-tests.log" 2>&1
    tail -25 "$OUT/gpu-tests.log"
    banner "short compare (8b, 2 layers, default trace)"
    timeout 300 $FDO compare --sync --overlap --preset 8b --layers 2 -o "$OUT/check-compare.json"
}

bench_one() {  # name trace [extra options]
    local name=$1 trace=$2
    shift 2
    banner "compare $name: $trace $*"
    timeout 560 $FDO compare --sync --overlap "$trace" --preset 8b --layers "$LAYERS" -o "$OUT/bench-$name.json" "$@"
}

graphs() {  # about 4 min on an H200 (estimate): 14 GPU tests at 2 layers, then the roofline benchmark at $LAYERS
    banner "GPU tests of the decode CUDA graphs (8b, 2 layers)"
    rm -f "$OUT/graph-identity.txt"
    timeout 500 python -m pytest -q -m gpu -rf -p no:cacheprovider tests/test_graphs_gpu.py \
        > "$OUT/graphs-tests.log" 2>&1
    tail -8 "$OUT/graphs-tests.log"
    banner "graph vs eager, per trace (graphs on vs the same padded batches must be identical)"
    cat "$OUT/graph-identity.txt"
    banner "decode forward against the HBM roofline, host cost per decode step (8b, $LAYERS layers)"
    timeout 500 python benchmarks/decode_roofline.py --layers "$LAYERS"
}

kernels() {  # about 2 min on an H200 (estimate)
    banner "model kernels against the copy's bandwidth and the GEMM rate, every prefill configuration"
    timeout 300 python benchmarks/kernels.py --prefill-configs all -o "$OUT/kernels.json"
    banner "decode attention, FDOVERLAP_DECODE_TC=rows (one-warp blocks, splits merged by a second kernel)"
    FDOVERLAP_DECODE_TC=rows timeout 120 python benchmarks/kernels.py --only decode -o "$OUT/kernels-decode-rows.json"
    local gemm
    for gemm in paddle tuned decode; do
        banner "decode forward against the HBM roofline, FDOVERLAP_GEMM=$gemm (8b, $LAYERS layers)"
        FDOVERLAP_GEMM=$gemm timeout 200 python benchmarks/decode_roofline.py --layers "$LAYERS" --only roofline \
            -o "$OUT/roofline-$gemm.json"
    done
}

bench_summary() {  # one line per compare: the speedup, each path's wall time and GPU busy, the steps that replayed
    python - "$OUT"/bench-*.json <<'PY'
import json, sys
for f in sys.argv[1:]:
    d = json.load(open(f))
    v, c = d["derived"], d["derived"]["comparison"] or {}
    paths = " · ".join(
        f"{n} {m['wall_ns'] / 1e6:,.0f} ms, GPU busy {100 * (m['gpu_busy'] or 0):.1f}%, "
        f"graph/eager steps {m['graph_steps']}/{m['eager_steps']}"
        for n, m in v["paths"].items()
    )
    speedup = f"{c['speedup']:.3f}" if c.get("speedup") else "–"
    print(f"{f.rsplit('/', 1)[-1]:28} speedup {speedup}  {paths}")
PY
}

bench() {  # about 4 min on an H200 (estimate; 10 compares of 145-324 steps a path)
    for graphs in on off; do
        bench_one b16-graphs-$graphs traces/default.json --cuda-graph $graphs
        bench_one b64-graphs-$graphs traces/decode-b64.json --cuda-graph $graphs
        bench_one b128-graphs-$graphs traces/decode-b128.json --cuda-graph $graphs
        bench_one mixed-graphs-$graphs traces/mixed-chunked.json --cuda-graph $graphs
    done
    # the overlap design's options, with graphs (as FastDeploy runs decode)
    bench_one b64-copystream-graphs-on traces/decode-b64.json --copy-stream separate --cuda-graph on
    bench_one b64-hostsync-graphs-on traces/decode-b64.json --token-count sync --cuda-graph on
    banner "compare matrix"
    bench_summary
}

overhead() {  # the same replay with and without GPU timestamps, alternating, decode-heavy and long steps
    banner "instrumentation overhead: decode-b64, overlap path"
    for ts in --no-timestamps --timestamps --no-timestamps --timestamps; do
        timeout 300 $FDO replay traces/decode-b64.json --path overlap --preset 8b --layers "$LAYERS" $ts --json \
            | python -c "import json,sys; m=json.load(sys.stdin)['paths']['overlap']['metrics']; s=m['step_time_ns']; print('$ts', 'wall_ns', m['wall_ns'], 'step p50', s['p50'], 'mean', s['mean'])"
    done
}

nsys_profiles() {
    local small=/tmp/fdo-small-trace.json
    $FDO trace synth -n 6 --max-num-seqs 4 --prompt-len 8..16 --output-len 10..14 -o $small
    banner "nsys: a small fixture (whole run captured)"
    timeout 300 $FDO profile --scrub --capture all -o /tmp/fdoverlap-small -- \
        compare --sync --overlap $small --preset 8b --layers 2 -o /tmp/fdoverlap-small-run.json 2>&1 | tail -40
    cp /tmp/fdoverlap-small.sqlite "$OUT/fdoverlap-small-2layers.sqlite"
    banner "nsys: capture range measure@fdoverlap"
    timeout 300 $FDO profile --capture measure -o /tmp/fdoverlap-capture -- \
        compare --sync --overlap $small --preset 8b --layers 2 2>&1 | tail -12
    banner "nsys: cross-check, default trace, 8b with $LAYERS layers"
    timeout 500 $FDO profile -o /tmp/fdoverlap-b16 -- \
        compare --sync --overlap traces/default.json --preset 8b --layers "$LAYERS" -o "$OUT/nsys-b16-run.json" 2>&1 | tail -70
}

nsys_graphs() {  # about 2 min on an H200 (estimate): two profiles of one path of 321 steps at $LAYERS layers
    local name
    for traced in graph node; do
        name=/tmp/fdoverlap-b64-graphs-$traced
        banner "nsys: decode-b64, overlap path, CUDA graphs, --cuda-graph-trace=$traced"
        timeout 400 $FDO profile --cuda-graph-trace $traced -o $name -- \
            replay traces/decode-b64.json --path overlap --preset 8b --layers "$LAYERS" --cuda-graph on \
            -o "$OUT/nsys-b64-graphs-$traced-run.json" 2>&1 | tail -45
        $FDO analyze $name.sqlite --json > "$OUT/nsys-b64-graphs-$traced.json"
        python - "$OUT/nsys-b64-graphs-$traced.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["paths"]["overlap"]
print(f"overlap: GPU busy, kernels only {100 * p['kernel_busy']:.2f}% (target >= 99%), GPU busy "
      f"{100 * p['metrics']['gpu_busy']:.2f}%, {p['work']['graph_launches']['count']} graph launches, "
      f"{p['work']['compute_kernels']['count']} kernels and {p['work']['graph_records']['count']} whole-graph "
      f"records in C_k; graphs traced: {d['cuda_graphs']['traced']}")
for kind in ("graph", "eager"):
    k = p["kernel_idle"][f"{kind}_steps"]
    busy = f"{100 * k['kernel_busy']:.2f}%" if k["kernel_busy"] is not None else "-"
    print(f"  {kind} steps: {k['steps']}, GPU busy, kernels only {busy}")
for w in p["kernel_idle"]["waited_for"][:4]:
    print(f"  waited for {w['call']} ({w['step_kind']} steps, {w['stage']}): {w['count']} gaps, "
          f"{w['idle_ns'] / 1e6:.1f} ms, {100 * w['share']:.1f}% of the window")
PY
    done
}

pair() {  # tests/test_nsys_real_pair.py's fixtures: the tool's run.json and nsys's export of the same run
    local dir="$OUT/fixture-pair" trace=/tmp/fdo-pair-trace.json name=fdoverlap-pair-8b-2layers
    mkdir -p "$dir"
    $FDO trace synth -n 6 --max-num-seqs 4 --prompt-len 8..16 --output-len 10..14 -o $trace
    banner "fixture pair: compare, 8b with 2 layers, whole run captured"
    timeout 300 $FDO profile --scrub --capture all -o /tmp/$name -- \
        compare --sync --overlap $trace --preset 8b --layers 2 -o "$dir/$name.results.json" 2>&1 | tail -45
    cp /tmp/$name.sqlite "$dir/$name.sqlite"
    ls -l "$dir"
}

sanitizer() {
    banner "compute-sanitizer memcheck: GPU op tests"
    timeout 400 compute-sanitizer --tool memcheck --error-exitcode 9 python -m pytest -q -m gpu -x tests/ops 2>&1 | tail -8
    banner "compute-sanitizer racecheck: GPU op tests"
    timeout 400 compute-sanitizer --tool racecheck --error-exitcode 9 python -m pytest -q -m gpu -x tests/ops 2>&1 | tail -8
    for path in sync overlap; do
        banner "compute-sanitizer memcheck: replay --path $path"
        timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 $FDO replay traces/preempt.json --path $path \
            --preset 8b --layers 1 --warmup 2 2>&1 | tail -6
    done
}

exposed() {  # ~4 min on an H200: two comparisons, one profiled replay of the sync path
    local trace=traces/decode-b64.json
    for run in default hostsync; do
        local extra=()
        [ "$run" = hostsync ] && extra=(--token-count sync)
        banner "exposed: compare decode-b64 ($run) ${extra[*]}"
        timeout 300 $FDO compare --sync --overlap $trace --preset 8b --layers "$LAYERS" "${extra[@]}" \
            -o "$OUT/exposed-$run.json" | tail -50
        $FDO report "$OUT/exposed-$run.json" --png "$OUT/exposed-$run.png" | tail -1
        $FDO report "$OUT/exposed-$run.json" --json > "$OUT/exposed-$run.report.json"
    done
    banner "exposed: nsys profile of the sync path, against its run.json"
    timeout 420 $FDO profile -o /tmp/fdoverlap-exposed --json -- \
        replay $trace --path sync --preset 8b --layers "$LAYERS" -o "$OUT/exposed-nsys-run.json" \
        > "$OUT/exposed-nsys.analyze.json" 2> "$OUT/exposed-nsys.log"
    tail -5 "$OUT/exposed-nsys.log"
    banner "exposed: acceptance"
    python benchmarks/exposed_check.py --compare default="$OUT/exposed-default.report.json" \
        --compare hostsync="$OUT/exposed-hostsync.report.json" --analyze "$OUT/exposed-nsys.analyze.json"
}

report_phase() {  # ~3 min on an H200 (estimate): one compare, one profiled compare at 2 layers
    local dir="$OUT/report" trace=traces/decode-b64.json
    mkdir -p "$dir"
    banner "report: compare decode-b64 (8b, $LAYERS layers), then report --html --markdown --svg --png"
    timeout 400 $FDO compare --sync --overlap $trace --preset 8b --layers "$LAYERS" -o "$dir/run.json" | tail -3
    $FDO report "$dir/run.json" --html "$dir/run.html" --markdown "$dir/run.md" --svg "$dir/run.svg" \
        --png "$dir/run.png" 2>&1 | tail -4
    cat "$dir/run.md"
    banner "report: analyze --html --markdown of an nsys profile (8b, 2 layers)"
    timeout 420 $FDO profile -o "$dir/prof" -- compare --sync --overlap $trace --preset 8b --layers 2 \
        -o "$dir/prof-run.json" > "$dir/profile.log" 2>&1
    tail -3 "$dir/profile.log"
    $FDO analyze "$dir/prof.sqlite" --against "$dir/prof-run.json" --html "$dir/nsys.html" --markdown "$dir/nsys.md" \
        2>&1 | tail -3
    grep -c "<svg" "$dir/run.html" "$dir/nsys.html"
    ls -la "$dir"
}

sweep_phase() {  # about 2 min on an H200 (estimate): 8 + 3 compares of ~70 steps a path (1 wave, short prompts)
    local dir="$OUT/sweep"
    mkdir -p "$dir"
    banner "sweep: batch 16,32,64,128 x copy_stream compute,separate (8b, $LAYERS layers, graphs auto)"
    timeout 400 $FDO sweep --batch 16,32,64,128 --axis copy_stream=compute,separate --preset 8b \
        --layers "$LAYERS" --waves 1 --prompt-len 64..128 --output-len 48..64 --fresh \
        -o "$dir/sweep.json" --png "$dir/sweep.png" --svg "$dir/sweep.svg" 2>&1 | tail -25
    banner "sweep: host work 0,500,2000 us in preprocess at batch 64"
    timeout 300 $FDO sweep --batch 64 --axis host_work_us=0,500,2000 --host-work-stage preprocess --preset 8b \
        --layers "$LAYERS" --waves 1 --prompt-len 64..128 --output-len 48..64 --fresh \
        -o "$dir/sweep-hostwork.json" --png "$dir/sweep-hostwork.png" --svg "$dir/sweep-hostwork.svg" 2>&1 | tail -15
    $FDO report "$dir/sweep.json" --json > "$dir/sweep.report.json"
    $FDO report "$dir/sweep.json" --html "$dir/sweep.html" --markdown "$dir/sweep.md" > /dev/null  # to attach
    $FDO report "$dir/sweep-hostwork.json" --json > "$dir/sweep-hostwork.report.json"
    ls -l "$dir"
}

tp_phase() {  # about 3 min on one H200 (estimate): 2-layer GPU tests, then compares at $LAYERS layers
    banner "tensor-parallel GPU tests (8b, 2 layers)"
    rm -f "$OUT/tp-identity.txt"
    timeout 500 python -m pytest -q -m gpu -rf -p no:cacheprovider tests/test_tensor_parallel_gpu.py \
        > "$OUT/tp-tests.log" 2>&1
    tail -8 "$OUT/tp-tests.log"
    [ -f "$OUT/tp-identity.txt" ] && cat "$OUT/tp-identity.txt"
    local gpus n
    gpus=$(nvidia-smi -L | wc -l)
    banner "compare --tp 1 in process, and as one rank of paddle.distributed.launch (8b, $LAYERS layers)"
    timeout 500 $FDO compare --sync --overlap traces/decode-b64.json --preset 8b --layers "$LAYERS" \
        -o "$OUT/tp-1.json" | tail -3
    FDOVERLAP_TP_LAUNCH=1 timeout 500 $FDO compare --sync --overlap traces/decode-b64.json --preset 8b \
        --layers "$LAYERS" -o "$OUT/tp-1-launched.json" | tail -3
    for n in 2 4 8; do
        if [ "$n" -gt "$gpus" ]; then
            echo "skip --tp $n: this host has $gpus GPU(s)"
            continue
        fi
        banner "compare --tp $n (8b, $LAYERS layers)"
        timeout 560 $FDO compare --sync --overlap traces/decode-b64.json --preset 8b --layers "$LAYERS" --tp "$n" \
            -o "$OUT/tp-$n.json" | tail -3
    done
    banner "tensor parallel: speedup, barrier wait per step, tokens against --tp 1"
    python - "$OUT"/tp-*.json <<'PY'
import json, sys
runs = {f.rsplit('/', 1)[-1]: json.load(open(f)) for f in sys.argv[1:]}
one = runs.get("tp-1.json")
for name, d in runs.items():
    c = d["derived"]["comparison"] or {}
    tp = d.get("tensor_parallel") or {"size": 1, "ranks": []}
    parts = []
    for p, rec in d["paths"].items():
        cols = rec["columns"]
        waits = [e - s for s, e in zip(cols["barrier_start"], cols["barrier_end"]) if s is not None and e is not None]
        exposed = ((d["derived"]["paths"][p].get("exposed") or {}).get("tp_barrier") or {}).get("mean_ns")
        same = one and {r: t["sha256"] for r, t in rec["tokens"].items()} == {
            r: t["sha256"] for r, t in one["paths"][p]["tokens"].items()}
        wait = f"{sum(waits) / len(waits) / 1e3:,.1f} us" if waits else "-"
        parts.append(f"{p}: barrier {wait}/step, exposed {exposed}, tokens as tp-1 {same}")
    speedup = f"{c['speedup']:.3f}" if c.get("speedup") else "-"
    print(f"{name:20} tp {tp['size']} speedup {speedup}  " + " · ".join(parts))
PY
}

runners() {  # ~100 s on an H200 (estimate): one model per trace, 4 combinations × 2 paths on it
    banner "runners × output paths: decode-b64 and default (8b, $LAYERS layers, CUDA graphs on)"
    timeout 420 python benchmarks/runners.py --preset 8b --layers "$LAYERS" --out "$OUT/runners" \
        traces/decode-b64.json traces/default.json 2>&1 | grep -v '^wrote '
    echo "runners: exit status ${PIPESTATUS[0]} (1: a combination's tokens differ)"
}

for phase in "${@:-check}"; do
    case $phase in
        check) timed check ;;
        graphs) timed graphs ;;
        kernels) timed kernels ;;
        bench) timed bench ;;
        overhead) timed overhead ;;
        nsys) timed nsys_profiles ;;
        nsys-graphs) timed nsys_graphs ;;
        pair) timed pair ;;
        sanitizer) timed sanitizer ;;
        exposed) timed exposed ;;
        report) timed report_phase ;;
        sweep) timed sweep_phase ;;
        tp) timed tp_phase ;;
        runners) timed runners ;;
        *) echo "unknown phase $phase" >&2; exit 2 ;;
    esac
done 2>&1 | tee -a "$OUT/gpu-session.log"
