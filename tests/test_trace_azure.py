"""The Azure LLM inference trace import: parsing, errors with line numbers, selection, fitting, meta."""

from __future__ import annotations

from pathlib import Path

import pytest

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.trace import validate
from fdoverlap_cli.trace.azure import AzureImportSpec, import_azure, read_azure_csv
from fdoverlap_cli.trace.format import dumps
from fdoverlap_cli.trace.scheduler import SchedulerOptions

REPO = Path(__file__).resolve().parent.parent
AZURE_CONV = REPO.parent / "shared" / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"

ROWS = [
    "2023-11-16 18:15:46.6805900,374,44",
    "2023-11-16 18:15:46.7105900,100,10",  # +30 ms: step 1 at 20 ms per step
    "2023-11-16 18:15:47.6805900,1000,200",  # +1 s: step 50
    "2023-11-16 18:15:49.6805900,3000,10",  # prompt alone too long for 2048
    "2023-11-16 18:15:50.0000000,2000,100",  # output cut to 48
]


def _csv(tmp_path: Path, rows: list[str], header: str = "TIMESTAMP,ContextTokens,GeneratedTokens") -> Path:
    path = tmp_path / "trace.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_rows_parse_in_arrival_order(tmp_path: Path) -> None:
    table = read_azure_csv(_csv(tmp_path, [ROWS[2], ROWS[0], ROWS[1]]))
    assert [(r.line, r.prompt_len, r.output_len) for r in table.rows] == [(3, 374, 44), (4, 100, 10), (2, 1000, 200)]
    assert table.rows[2].time_s - table.rows[0].time_s == pytest.approx(1.0)


def test_arrivals_map_to_steps_and_long_requests_are_fitted(tmp_path: Path) -> None:
    result = import_azure(AzureImportSpec(str(_csv(tmp_path, ROWS)), step_ms=20))
    trace = result.trace
    validate(trace)
    assert [(r.prompt_len, r.output_len) for r in trace.requests] == [(374, 44), (100, 10), (1000, 200), (2000, 48)]
    # The third arrives at step 50, but steps 44..49 are idle (the first finishes at 43): cut out.
    assert [r.arrival_step for r in trace.requests][:3] == [0, 1, 44]
    assert trace.meta["scheduler"]["idle_steps_cut"] > 0
    assert (result.truncated, result.dropped, result.rows) == (1, 1, 5)
    dropped = import_azure(AzureImportSpec(str(_csv(tmp_path, ROWS)), long="drop"))
    assert (dropped.truncated, dropped.dropped, len(dropped.trace.requests)) == (0, 2, 3)


def test_window_and_limit_select_requests(tmp_path: Path) -> None:
    path = str(_csv(tmp_path, ROWS))
    window = import_azure(AzureImportSpec(path, start_s=0.5, duration_s=2.0))  # [t0 + 0.5 s, t0 + 2.5 s)
    assert [r.prompt_len for r in window.trace.requests] == [1000]
    assert window.selected == 1 and window.trace.requests[0].arrival_step == 0
    later = import_azure(AzureImportSpec(path, start_s=0.5, duration_s=3.0))  # 3000 is dropped
    assert [r.prompt_len for r in later.trace.requests] == [1000, 2000] and later.dropped == 1
    first_two = import_azure(AzureImportSpec(path, limit=2))
    assert [r.prompt_len for r in first_two.trace.requests] == [374, 100]
    with pytest.raises(InputError, match="no request left in the window"):
        import_azure(AzureImportSpec(path, start_s=100))


def test_import_is_deterministic_and_carries_the_attribution(tmp_path: Path) -> None:
    options = SchedulerOptions(max_num_seqs=2, max_model_len=2048, num_kv_blocks=300)
    spec = AzureImportSpec(str(_csv(tmp_path, ROWS)), step_ms=25, scheduler=options)
    text = dumps(import_azure(spec).trace)
    assert text == dumps(import_azure(spec).trace)
    meta = import_azure(spec).trace.meta
    assert meta["source"]["license"] == "CC-BY 4.0"
    assert "Splitwise" in meta["source"]["citation"] and "Patel" in meta["source"]["citation"]
    assert meta["step_ms"] == 25 and len(meta["source"]["sha256"]) == 64
    assert meta["command"].startswith("fdoverlap trace import azure trace.csv --step-ms 25 ")
    assert meta["import"] == {
        "rows": 5, "bad_rows_skipped": 0, "in_window": 5, "truncated": 1, "dropped": 1, "first_line": 2, "last_line": 6,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2023-11-16 18:15:47.0,12,abc", ":3: GeneratedTokens: expected an integer, got 'abc'"),
        ("2023-11-16 18:15:47.0,x1,5", ":3: ContextTokens: expected an integer, got 'x1'"),
        ("2023-11-16 18:15:47.0,0,5", ":3: ContextTokens: expected a count of at least 1, got 0"),
        ("yesterday,12,5", ":3: TIMESTAMP: expected a time like '2023-11-16 18:15:46.6805900', got 'yesterday'"),
        ("2023-11-16 25:15:47.0,12,5", ":3: TIMESTAMP: expected a time like"),
        ("2023-11-16 18:15:47.0,12", ":3: expected 3 fields, got 2"),
    ],
)
def test_a_malformed_row_names_its_line(tmp_path: Path, row: str, message: str) -> None:
    path = _csv(tmp_path, [ROWS[0], row, ROWS[1]])
    with pytest.raises(InputError) as e:
        read_azure_csv(path)
    assert str(e.value).startswith(f"{path}{message}")
    table = read_azure_csv(path, skip_bad_rows=True)
    assert table.bad_rows == 1 and len(table.rows) == 2


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("TIMESTAMP,ContextTokens", ":1: header lacks column GeneratedTokens"),
        ("", ":1: header lacks column TIMESTAMP, ContextTokens, GeneratedTokens"),
    ],
)
def test_the_header_is_checked(tmp_path: Path, header: str, message: str) -> None:
    path = _csv(tmp_path, ROWS, header=header)
    with pytest.raises(InputError, match=message):
        read_azure_csv(path)


def test_an_empty_or_missing_file_is_an_input_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty file"):
        read_azure_csv(empty)
    with pytest.raises(InputError, match="no such CSV file"):
        read_azure_csv(tmp_path / "missing.csv")


def test_columns_may_come_in_any_order(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["44,2023-11-16 18:15:46.6805900,374"], header="GeneratedTokens,TIMESTAMP,ContextTokens")
    (row,) = read_azure_csv(path).rows
    assert (row.prompt_len, row.output_len) == (374, 44)


@pytest.mark.skipif(not AZURE_CONV.exists(), reason="the Azure conversation trace is not at hand")
def test_the_whole_conversation_trace_imports_and_validates() -> None:
    result = import_azure(AzureImportSpec(str(AZURE_CONV)))
    validate(result.trace)
    assert result.rows == len(result.trace.requests) + result.dropped
    assert result.bad_rows == 0
