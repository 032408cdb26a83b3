"""The history file a successor continues from, alone: rows, the next pos, and how many lines
of each member connection the rows account for."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lelog._hostwide import MEMBERS_KEPT, HistoryFile, joined_path, load_history


def row(pos: int) -> bytes:
    return json.dumps({"level": "info", "pos": pos, "out": f"line {pos}\n"}).encode()


def test_each_write_carries_the_counts_that_changed_and_a_successor_reads_the_latest(tmp_path: Path) -> None:
    history = HistoryFile(str(tmp_path / "h"), budget=1 << 20)
    history.start([row(0)])
    history.append([row(1), row(2)], lambda: [], {"7.1": 2, "8.3": 1})
    history.append([row(3)], lambda: [], {"7.1": 3})
    found = load_history(str(tmp_path / "h"))
    assert found is not None and found.rows == [row(pos) for pos in range(4)] and found.next_pos == 4
    assert found.members == {"7.1": 3, "8.3": 1}


def test_a_connection_its_member_closed_is_forgotten(tmp_path: Path) -> None:
    history = HistoryFile(str(tmp_path / "h"), budget=1 << 20)
    history.start([row(0)], {"5.5": 9})
    history.append([row(1)], lambda: [], {"7.1": 1, "5.5": -1})
    found = load_history(str(tmp_path / "h"))
    assert found is not None and found.members == {"7.1": 1}
    assert history.members == {"7.1": 1}


def test_a_rewrite_keeps_every_count_up_to_the_bound_the_most_recently_changed_last(tmp_path: Path) -> None:
    history = HistoryFile(str(tmp_path / "h"), budget=1)  # every append past 64 KiB rewrites
    history.start([row(0)], {f"1.{n}": n for n in range(MEMBERS_KEPT)})
    history.append([row(1)], lambda: [row(0), row(1)], {"1.0": 5, "2.2": 1})
    assert len(history.members) == MEMBERS_KEPT and "1.1" not in history.members
    assert list(history.members)[-2:] == ["1.0", "2.2"]
    big = b"x" * (1 << 17)
    history.append([big], lambda: [row(0), row(1)], {})  # past the limit: rewritten from the ring
    found = load_history(str(tmp_path / "h"))
    assert found is not None and found.rows == [row(0), row(1)] and found.members == history.members


def test_a_joined_stream_is_said_beside_the_history_until_the_stream_is_finished_or_a_new_one_starts(
    tmp_path: Path,
) -> None:
    history = HistoryFile(str(tmp_path / "h"), budget=1)  # every append past the limit rewrites
    history.start([row(0)])
    found = load_history(str(tmp_path / "h"))
    assert found is not None and not found.joined
    history.mark_joined()
    history.append([row(1)], lambda: [row(0), row(1)], {})
    history.append([b"x" * (1 << 16)], lambda: [row(0), row(1)], {})  # past the limit: rewritten
    found = load_history(str(tmp_path / "h"))
    assert found is not None and found.joined and found.rows == [row(0), row(1)]
    history.forget_joined()  # a new owner's own stream
    assert not load_history(str(tmp_path / "h")).joined  # type: ignore[union-attr]
    history.mark_joined()
    history.remove()
    assert not os.path.exists(joined_path(str(tmp_path / "h")))
