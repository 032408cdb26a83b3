"""The whole stream's counts, alone (no process, no thread): an owner's own, what it carried
from the owners before it, and the rows a vanished owner stored."""

from __future__ import annotations

import os
from pathlib import Path

from lelog._hostwide import Carried, HistoryFile, load_history
from lelog._stats import Counters, StreamTotals


def counters(accepted: int, sent: int, **dropped: int) -> Counters:
    found = Counters()
    found.accepted, found.sent = accepted, sent
    found.dropped.update(dropped)
    return found


def test_an_owner_from_the_start_counts_what_it_took_and_the_processes_it_took_lines_from() -> None:
    owner = counters(300, 290, overflow=10)
    owner.peers.update({101, 102})
    totals = owner.stream_totals()
    assert (totals.accepted, totals.sent, totals.dropped["overflow"], totals.processes) == (300, 290, 10, 3)
    assert "the whole stream: 300 lines of 3 processes, 290 sent, 10 dropped (overflow 10)" == totals.text()


def test_a_member_that_takes_over_counts_only_its_time_as_owner_and_the_lines_still_waiting() -> None:
    member = counters(50, 40, overflow=2)  # 8 lines still wait here, the rest are its owner's
    before = StreamTotals().plus(200, 200, {}, 2)
    member.take_over(before, {7, 8})
    member.accepted += 10  # its own lines as owner
    member.sent += 18  # the 8 that waited and 10 new
    totals = member.stream_totals()
    assert (totals.accepted, totals.sent, totals.dropped_total) == (218, 218, 0)
    assert totals.processes == 3  # 7, 8 and this one
    assert member.stream_pids() == frozenset({7, 8, os.getpid()})


def test_carried_counts_survive_a_row_and_count_rows_a_vanished_owner_stored() -> None:
    carried = Carried(StreamTotals().plus(100, 90, {"overflow": 10}, 2), frozenset({1, 2}), 120)
    back = Carried.parse(carried.row().rstrip(b"\n"))
    assert back == carried
    later = carried.through(150, frozenset({3}), lost=4)  # 30 rows stored since by pid 3, which vanished
    totals = later.totals
    assert (totals.accepted, totals.sent, totals.processes, later.next_pos) == (134, 120, 3, 150)
    assert totals.dropped["lost_with_owner"] == 4  # lines the new owner had sent it
    assert Carried.parse(b"#totals {not json") is None


def test_the_last_hand_on_stands_through_a_rewrite(tmp_path: Path) -> None:
    history = HistoryFile(str(tmp_path / "h"), budget=1)
    history.start([b'{"pos":0}'])
    history.hand_on(Carried(StreamTotals().plus(1, 1, {}, 1), frozenset({5}), 1))
    history.hand_on(Carried(StreamTotals().plus(2, 2, {}, 2), frozenset({5, 6}), 2))
    history.append([b'{"pos":1}'], lambda: [b'{"pos":0}', b'{"pos":1}'], {})
    history.append([b"x" * (1 << 16)], lambda: [b'{"pos":0}', b'{"pos":1}'], {})  # rewritten
    found = load_history(str(tmp_path / "h"))
    assert found is not None and found.carried is not None
    assert (found.carried.totals.accepted, found.carried.pids) == (2, frozenset({5, 6}))
