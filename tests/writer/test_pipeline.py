"""The pipeline alone: pos, markers, the history, the intake and the spool's feed."""

from __future__ import annotations

import json

from lelog._ledger import Ledger
from lelog._pipeline import Pipeline
from lelog.testing import ManualClock


def make(max_lines: int = 100, history_bytes: int = 1 << 20) -> tuple[Ledger, Pipeline, list[bytes]]:
    ledger = Ledger(max_lines, 1 << 20)
    pipeline = Pipeline(
        ledger,
        ManualClock(),
        masker=None,
        trim_new_line_suffix=False,
        history_bytes=history_bytes,
        max_lines=max_lines,
        max_bytes=1 << 20,
        key="k",
    )
    spooled: list[bytes] = []
    pipeline.spool_rows = spooled.extend
    return ledger, pipeline, spooled


def rows(encoded: list[bytes]) -> list[tuple[int, str]]:
    return [(row["pos"], row["out"]) for row in map(json.loads, encoded)]


def test_each_line_gets_the_next_pos_and_reaches_history_intake_and_spool_as_the_same_bytes() -> None:
    ledger, pipeline, spooled = make()
    for i in range(3):
        ledger.accept((1.0 + i, "info", f"l{i}\n", None, None), 3, released=False)
    failure, taken = pipeline.drain()
    assert failure is None and taken is not None
    batches, lost, _ = taken
    live = [row for encoded, _count, _first, _since in batches for row in encoded]
    assert rows(live) == [(0, "l0\n"), (1, "l1\n"), (2, "l2\n")]
    assert pipeline.history.rows() == live == spooled
    ledger.accept((9.0, "info", "l3\n", None, None), 3, released=False)
    pipeline.encode_pending()
    assert rows(pipeline.history.rows())[-1] == (3, "l3\n") and pipeline.next_pos == 4


def test_lines_the_bound_dropped_are_marked_with_a_pos_of_their_own() -> None:
    ledger, pipeline, _ = make(max_lines=2)
    for i in range(5):
        ledger.accept((1.0, "info", f"l{i}\n", None, None), 3, released=False)
    pipeline.encode_pending()
    assert rows(pipeline.history.rows()) == [
        (0, "[lelog] 3 lines dropped: buffer full\n"),
        (1, "l3\n"),
        (2, "l4\n"),
    ]


def test_childrens_lines_are_merged_in_by_time() -> None:
    ledger, pipeline, _ = make()
    ledger.accept((1.0, "info", "parent 1\n", None, None), 9, released=False)
    ledger.accept((3.0, "info", "parent 3\n", None, None), 9, released=False)
    ledger.accept_from_children([(0, 2.0, "info", "child 2\n", None)])
    pipeline.encode_pending()
    assert [out for _, out in rows(pipeline.history.rows())] == ["parent 1\n", "child 2\n", "parent 3\n"]


def test_the_stored_log_is_headed_by_a_marker_at_the_pos_of_the_last_line_left_out() -> None:
    ledger, pipeline, _ = make(history_bytes=300)
    for i in range(10):
        ledger.accept((1.0, "info", f"line {i}\n", None, None), 8, released=False)
    pipeline.encode_pending()
    body = [json.loads(row) for row in pipeline.upload_body(marks_evicted=True).splitlines()]
    first_kept = body[1]["pos"]
    assert body[0]["pos"] == first_kept - 1 and "earlier lines left out" in body[0]["out"]
    assert [row["pos"] for row in body] == list(range(first_kept - 1, 10))
    unmarked = pipeline.upload_body(marks_evicted=False).splitlines()
    assert json.loads(unmarked[0])["pos"] == first_kept
