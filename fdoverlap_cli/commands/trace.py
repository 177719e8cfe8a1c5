"""CLI commands: trace validate | show | synth | import azure."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from fdoverlap_cli.errors import InputError

trace_app = typer.Typer(
    name="trace",
    help="Make, import, check and inspect traces (the recorded batches a replay runs).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
import_app = typer.Typer(
    name="import", help="Turn a public workload trace into a trace.", no_args_is_help=True, rich_markup_mode=None
)
trace_app.add_typer(import_app)

TracePath = Annotated[str, typer.Argument(help="A trace file (JSON).", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
Out = Annotated[str, typer.Option("-o", "--out", help="Where to write the trace ('-': standard output).")]


def _scheduler_option(text: str, *, minimum: int = 1, derived: bool = False) -> Any:
    """An option of the scheduler the trace is made with; a derived one (default None) shows no default."""
    return typer.Option(min=minimum, help=text, show_default=not derived)


MaxNumSeqs = Annotated[int, _scheduler_option("Slots in the batch.")]
BlockSize = Annotated[int, _scheduler_option("Tokens per KV block.")]
NumKvBlocks = Annotated[
    int | None,
    _scheduler_option(
        "KV blocks in all (small values force preemption). Default: room for every slot at max-model-len.",
        derived=True,
    ),
]
MaxBatchedTokens = Annotated[int, _scheduler_option("Tokens per step, at most (prefill chunks + decodes).")]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(trace_app)


@trace_app.command("validate")
def validate_command(path: TracePath, as_json: Json = False) -> None:
    """Check a trace against every rule the replay relies on.

    Prints 'ok: N requests, M steps' and exits 0; or one line naming the file, the JSON path and the rule,
    and exits 2 (with --json also {"ok": false, "where": ..., "reason": ...} on stdout).

    \b
    Example: fdoverlap trace validate traces/default.json
    """
    from fdoverlap_cli.trace import load_trace

    try:
        trace = load_trace(path)
    except InputError as e:
        if as_json:  # the verdict as JSON too; the line on stderr and exit 2 as for any bad input
            typer.echo(json.dumps({"ok": False, "where": e.where, "reason": e.reason, "error": str(e)}))
        raise
    if as_json:
        typer.echo(json.dumps({"ok": True, "requests": len(trace.requests), "steps": len(trace.steps)}))
    else:
        typer.echo(f"ok: {len(trace.requests)} requests, {len(trace.steps)} steps")


@trace_app.command("show")
def show_command(path: TracePath, as_json: Json = False) -> None:
    """Summarise a trace: lengths, batch size over time, token mix, chunking, preemptions, budget peaks.

    \b
    Example: fdoverlap trace show traces/mixed-chunked.json
    """
    from fdoverlap_cli.trace import load_trace
    from fdoverlap_cli.trace.summary import summarize

    summary = summarize(load_trace(path))
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        from fdoverlap_cli.render.trace_summary import render_trace_summary

        render_trace_summary(summary, title=path)


@trace_app.command("synth")
def synth_command(
    requests: Annotated[int, typer.Option("-n", "--requests", min=1, help="Number of requests.")] = 24,
    prompt_len: Annotated[
        str,
        typer.Option(help="Prompt lengths: N, LO..HI (uniform), normal:MEAN,STD,LO..HI or lognormal:MEAN,STD,LO..HI."),
    ] = "16..64",
    output_len: Annotated[str, typer.Option(help="Output lengths, same forms as --prompt-len.")] = "32..96",
    arrival_rate: Annotated[
        float, typer.Option(min=0.0, help="Poisson arrivals, requests per step; 0: all arrive at step 0.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(min=0, help="Seeds the draws (and the trace's prompt token ids).")] = 0,
    max_num_seqs: MaxNumSeqs = 16,
    max_model_len: Annotated[
        int | None,
        _scheduler_option(
            "Prompt + output tokens per request, at most. Default: the longest request, rounded up to a block.",
            minimum=2,
            derived=True,
        ),
    ] = None,
    block_size: BlockSize = 16,
    num_kv_blocks: NumKvBlocks = None,
    max_num_batched_tokens: MaxBatchedTokens = 2048,
    out: Out = "trace.json",
    as_json: Json = False,
) -> None:
    """Generate a synthetic workload and schedule it into a trace.

    With no options: 24 requests, prompts of 16-64 tokens, outputs of 32-96, all arriving at once, 16 slots.

    The same options give the same file, byte for byte (the command is recorded in the trace's meta).

    \b
    Example: fdoverlap trace synth -n 48 --prompt-len 512..2000 --max-num-batched-tokens 512 -o mixed.json
    """
    from fdoverlap_cli.trace.scheduler import SchedulerOptions
    from fdoverlap_cli.trace.synth import SynthSpec, parse_lengths, synth_trace

    _check_out(out, as_json)
    spec = SynthSpec(
        requests=requests,
        prompt_len=parse_lengths(prompt_len, "--prompt-len"),
        output_len=parse_lengths(output_len, "--output-len"),
        arrival_rate=arrival_rate,
        seed=seed,
        scheduler=SchedulerOptions(max_num_seqs, max_model_len, block_size, num_kv_blocks, max_num_batched_tokens),
    )
    trace = synth_trace(spec)
    _write(trace, out)
    preemptions = trace.meta["scheduler"]["preemptions"]
    _report(
        out,
        as_json,
        {"requests": len(trace.requests), "steps": len(trace.steps), "preemptions": preemptions},
        f"{len(trace.requests)} requests, {len(trace.steps)} steps, {preemptions} preemptions",
    )


@import_app.command("azure")
def import_azure_command(
    csv_path: Annotated[
        str,
        typer.Argument(
            metavar="CSV",
            help="The Azure LLM inference trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens).",
            show_default=False,
        ),
    ],
    step_ms: Annotated[
        float, typer.Option(help="Assumed duration of one step: arrival times map to steps with it.")
    ] = 20.0,
    start: Annotated[float, typer.Option(help="Window start, seconds after the file's first arrival.")] = 0.0,
    duration: Annotated[
        float | None, typer.Option(help="Window length in seconds. Default: to the end.", show_default=False)
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Keep the first N requests of the window.", show_default=False)
    ] = None,
    long: Annotated[
        str, typer.Option(help="Requests longer than max-model-len: 'truncate' their output, or 'drop' them.")
    ] = "truncate",
    skip_bad_rows: Annotated[
        bool, typer.Option(help="Skip malformed rows (and count them) instead of failing.")
    ] = False,
    max_num_seqs: MaxNumSeqs = 64,
    max_model_len: Annotated[int, _scheduler_option("Prompt + output tokens per request, at most.", minimum=2)] = 2048,
    block_size: BlockSize = 16,
    num_kv_blocks: NumKvBlocks = None,
    max_num_batched_tokens: MaxBatchedTokens = 2048,
    out: Out = "trace.json",
    as_json: Json = False,
) -> None:
    """Import the Azure LLM inference trace (Patel et al., "Splitwise", ISCA 2024; CC-BY 4.0) and schedule it.

    Arrival times become steps at --step-ms per step; the attribution goes into the trace's meta.

    \b
    Example: fdoverlap trace import azure AzureLLMInferenceTrace_conv.csv --limit 128 -o azure.json
    """
    from fdoverlap_cli.trace.azure import AzureImportSpec, import_azure
    from fdoverlap_cli.trace.scheduler import SchedulerOptions

    _check_out(out, as_json, inputs={"the CSV": csv_path})
    result = import_azure(
        AzureImportSpec(
            csv_path=csv_path,
            step_ms=step_ms,
            start_s=start,
            duration_s=duration,
            limit=limit,
            long=long,
            skip_bad_rows=skip_bad_rows,
            scheduler=SchedulerOptions(max_num_seqs, max_model_len, block_size, num_kv_blocks, max_num_batched_tokens),
        )
    )
    trace = result.trace
    _write(trace, out)
    counts = {
        "rows": result.rows,
        "bad_rows_skipped": result.bad_rows,
        "in_window": result.selected,
        "truncated": result.truncated,
        "dropped": result.dropped,
        "requests": len(trace.requests),
        "steps": len(trace.steps),
        "preemptions": result.preemptions,
    }
    line = (
        f"{len(trace.requests)} requests, {len(trace.steps)} steps, {result.preemptions} preemptions "
        f"({result.rows} rows, {result.selected} in the window; {result.truncated} truncated and "
        f"{result.dropped} dropped to fit max_model_len {max_model_len}; {result.bad_rows} bad rows skipped)"
    )
    _report(out, as_json, counts, line)


def _check_out(out: str, as_json: bool, inputs: dict[str, str] | None = None) -> None:
    """Refuse an output the command could not write, or that is one of its inputs, before the work."""
    from fdoverlap_cli.fileio import check_writable, refuse_overwriting_inputs

    if out == "-":
        if as_json:
            raise InputError("--json", "cannot print the summary to standard output when the trace goes there (-o -)")
        return
    refuse_overwriting_inputs({"-o": out}, inputs)
    check_writable(out)


def _write(trace: Any, out: str) -> None:
    from fdoverlap_cli.trace import save_trace
    from fdoverlap_cli.trace.format import dumps

    if out == "-":
        sys.stdout.write(dumps(trace))
        return
    save_trace(trace, out)


def _report(out: str, as_json: bool, counts: dict[str, int], line: str) -> None:
    if as_json:
        typer.echo(json.dumps({"out": out, **counts}))
    else:
        typer.echo(f"wrote {'standard output' if out == '-' else out}: {line}", err=out == "-")
