"""Rich rendering of a trace summary (`fdoverlap trace show`)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fdoverlap_cli.trace.summary import Distribution, Peak, TraceSummary

_SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], top: float) -> str:
    """One character per value, ▁ (just above 0) to █ (top); a blank for 0."""
    if top <= 0:
        return " " * len(values)
    marks = []
    for v in values:
        level = min(v / top, 1.0)
        marks.append(" " if v <= 0 else _SPARKS[min(int(level * len(_SPARKS)), len(_SPARKS) - 1)])
    return "".join(marks)


def _dist(d: Distribution) -> str:
    return f"{d.min} / {d.mean:.1f} / {d.p50} / {d.p90} / {d.max}"


def _peak(p: Peak, unit: str) -> str:
    share = f" ({100 * p.peak / p.limit:.0f}%)" if p.limit else ""
    return f"{p.peak} of {p.limit} {unit}{share} at step {p.step}"


def render_trace_summary(summary: TraceSummary, *, title: str = "", console: Console | None = None) -> None:
    """Print the summary: workload, budgets, batch size over time, provenance."""
    console = console or Console()
    c = summary.config
    total = summary.prefill_tokens + summary.decode_tokens
    table = Table(title=escape(title) or None, show_header=False, box=None, pad_edge=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("requests", str(summary.requests))
    table.add_row("steps", str(summary.steps))
    table.add_row("prompt tokens", f"{_dist(summary.prompt_len)}  [dim](min / mean / p50 / p90 / max)[/dim]")
    table.add_row("output tokens", _dist(summary.output_len))
    prefill_share = 100 * summary.prefill_tokens / total if total else 0.0
    table.add_row(
        "token mix",
        f"{summary.prefill_tokens} prefill + {summary.decode_tokens} decode  [dim]({prefill_share:.1f}% prefill)[/dim]",
    )
    table.add_row(
        "prefill chunks",
        f"{summary.chunks} chunks; {summary.chunked_prefills} prefills split in more than one",
    )
    table.add_row("preemptions", str(summary.preemptions))
    table.add_row("batch", f"{_dist(summary.batch)} of {c.max_num_seqs} slots")
    table.add_row("token budget", _peak(summary.token_budget, "tokens"))
    table.add_row("KV blocks", _peak(summary.kv_blocks, f"blocks of {c.block_size} tokens"))
    if summary.batch_bins:
        line = sparkline([b.mean for b in summary.batch_bins], c.max_num_seqs)
        table.add_row(
            "batch over steps",
            f"[cyan]{line}[/cyan]  [dim]steps 0..{summary.batch_bins[-1].last_step}, "
            f"mean per bin, full = {c.max_num_seqs}[/dim]",
        )
    table.add_row(
        "config",
        f"max_num_seqs {c.max_num_seqs}, max_model_len {c.max_model_len}, block_size {c.block_size}, "
        f"num_kv_blocks {c.num_kv_blocks}, max_num_batched_tokens {c.max_num_batched_tokens}",
    )
    command = summary.meta.get("command")
    if isinstance(command, str):
        table.add_row("made by", escape(command))
    source = summary.meta.get("source")
    if isinstance(source, dict) and "citation" in source:
        text = f"{source.get('dataset', '')}; {source.get('license', '')}; {source['citation']}"
        table.add_row("source", escape(text))
    console.print(table)
