"""The output reader's stream rebuilding and the files it hands back, without a queue or a process."""

from __future__ import annotations

from pathlib import Path

from fdoverlap_cli.engine.reader import PREEMPTED, ReaderResult, TokenStreams


def _plan() -> dict:
    # slot 0: r0 (2 tokens) then r2 (1 token); slot 1: r1 (3 tokens), preempted after its first, then r1 again
    return {"bsz": 2, "ids": ["r0", "r1", "r2"], "output_len": [2, 3, 1], "occupants": [[0, 2], [1, 1]]}


def test_streams_follow_slot_occupants_and_preemption_markers(tmp_path: Path) -> None:
    streams = TokenStreams(_plan())
    for message in ([1, 2, 10, 20], [1, 2, 11, PREEMPTED], [1, 2, 30, 21], [-1, 2, -1, 22]):
        streams.add(message)
    summary = tmp_path / "result.json"
    streams.write(summary)
    result = ReaderResult.load(summary)
    assert result.tokens == {"r0": [10, 11], "r1": [20, 21, 22], "r2": [30]}
    assert result.markers == [(1, 1, "r1")]
    assert (result.messages, result.stop_messages, result.anomaly_count) == (4, 1, 0)


def test_a_token_with_no_occupant_is_an_anomaly_not_a_crash(tmp_path: Path) -> None:
    streams = TokenStreams(_plan())
    streams.add([1, 2, 10, 20])
    streams.add([1, 2, 11, 21])
    streams.add([1, 2, 30, 22])
    streams.add([1, 2, 31, -1])  # slot 0 has had all its occupants
    streams.add([1, 5, 1])  # bsz and length disagree
    summary = tmp_path / "result.json"
    streams.write(summary)
    result = ReaderResult.load(summary)
    assert result.anomaly_count == 2
    assert "slot 0, which has no more occupants" in result.anomalies[0]
    assert result.tokens["r2"] == [30] and result.tokens["r1"] == [20, 21, 22]
