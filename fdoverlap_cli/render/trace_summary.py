"""Rich rendering of a trace summary (`fdoverlap trace show`)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fdoverlap_cli.render.cells import value
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
    return (
        f"{value(d.min, 'num')} / {d.mean:,.1f} / {value(d.p50, 'num')} / {value(d.p90, 'num')} / {value(d.max, 'num')}"
    )


def _peak(p: Peak, unit: str) -> str:
    share = f" ({value(p.peak / p.limit, 'pct')})" if p.limit else ""
    return f"{value(p.peak, 'num')} of {value(p.limit, 'num')} {unit}{share} at step {value(p.step, 'num')}"


def render_trace_summary(summary: TraceSummary, *, title: str = "", console: Console | None = None) -> None:
    """Print the summary: workload, budgets, batch size over time, provenance."""
    console = console or Console()
    c = summary.config
    total = summary.prefill_tokens + summary.decode_tokens
    table = Table(title=escape(title) or None, show_header=False, box=None, pad_edge=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("requests", value(summary.requests, "num"))
    table.add_row("steps", value(summary.steps, "num"))
    table.add_row("prompt tokens", f"{_dist(summary.prompt_len)}  [dim](min / mean / p50 / p90 / max)[/dim]")
    table.add_row("output tokens", _dist(summary.output_len))
    prefill_share = 100 * summary.prefill_tokens / total if total else 0.0
    table.add_row(
        "token mix",
        f"{value(summary.prefill_tokens, 'num')} prefill + {value(summary.decode_tokens, 'num')} decode  "
        f"[dim]({prefill_share:.1f}% prefill)[/dim]",
    )
    table.add_row(
        "prefill chunks",
        f"{value(summary.chunks, 'num')} chunks; "
        f"{value(summary.chunked_prefills, 'num')} prefills split in more than one",
    )
    table.add_row("preemptions", value(summary.preemptions, "num"))
    table.add_row("batch", f"{_dist(summary.batch)} of {value(c.max_num_seqs, 'num')} slots")
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
