"""Which stored log stands: recovery never replaces a newer one unless told to merge or replace."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List

import pytest

import lelog
from lelog._line import Line, format_time, time_seconds
from lelog._recover import merge_logs
from tests.recover.spools import Target, dead_spool, outs, recover, stored, writer
from tests.service import FakeLogService
from tests.test_recover import _spools


@pytest.fixture(params=["service", "file store"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "service":
        service: FakeLogService = request.getfixturevalue("service")
        return service
    return tmp_path / "home"


def _later_run(target: Target, key: str, lines: int = 30) -> None:
    """A run that completes on ``key`` after the killed one: its log is the newer."""
    run = writer(target, key)
    for i in range(lines):
        run.write_line(f"later {i}")
    assert run.close().uploaded is True


def _assert_one_log(rows: List[dict]) -> None:
    assert [row["pos"] for row in rows] == list(range(len(rows)))
    times = [time_seconds(row["time"]) for row in rows]
    assert times == sorted(times)  # type: ignore[type-var]


def test_a_newer_stored_log_is_left_with_the_spool_and_merge_stores_both(
    tmp_path: Path, target: Target
) -> None:
    spool = tmp_path / "spool"
    dead = dead_spool(spool, target, "job/twice", lines=200, text="killed")
    _later_run(target, "job/twice")
    result = recover(spool, target)
    assert result.returncode == 0, result.stderr
    assert (
        "left alone: the stored log is newer (30 of its 30 lines are later than the spool's last"
        in result.stdout
    )
    assert (
        "'lelog recover --key job/twice --merge' stores both in one log, --replace the spool's"
        in result.stdout
    )
    assert outs(target, "job/twice") == [f"later {i}\n" for i in range(30)]
    assert _spools(spool) == [dead]
    result = recover(spool, target, "--key", "job/twice", "--merge")
    assert result.returncode == 0, result.stderr
    assert "merged with the stored log: 230 lines (30 stored, 200 from the spool, 0 in both)" in result.stdout
    rows = stored(target, "job/twice")
    assert rows is not None
    _assert_one_log(rows)
    assert [row["out"] for row in rows] == [f"killed {i}\n" for i in range(200)] + [
        f"later {i}\n" for i in range(30)
    ]
    assert _spools(spool) == []


def test_replace_stores_the_spools_log_over_a_newer_one(tmp_path: Path, target: Target) -> None:
    spool = tmp_path / "spool"
    dead_spool(spool, target, "job/replace", lines=50, text="killed")
    _later_run(target, "job/replace")
    result = recover(spool, target, "--replace")
    assert result.returncode == 0, result.stderr
    assert "50 lines stored over a newer log" in result.stdout
    assert outs(target, "job/replace") == [f"killed {i}\n" for i in range(50)]
    assert _spools(spool) == []


def test_merge_and_replace_exclude_each_other(tmp_path: Path, service: FakeLogService) -> None:
    result = recover(None, service, "--merge", "--replace")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


def test_an_older_stored_log_is_replaced_as_the_writers_close_would_have(
    tmp_path: Path, target: Target
) -> None:
    spool = tmp_path / "spool"
    _later_run(target, "job/older", lines=5)  # stored before the killed run started
    dead_spool(spool, target, "job/older", lines=20)
    result = recover(spool, target)
    assert result.returncode == 0 and "recovered" in result.stdout, result
    assert outs(target, "job/older") == [f"line {i}\n" for i in range(20)]


def test_a_later_run_killed_without_a_spool_keeps_its_lines_in_the_file_store(tmp_path: Path) -> None:
    spool, home = tmp_path / "spool", tmp_path / "home"
    dead_spool(spool, home, "ci/twice", lines=20, text="first")
    # A second run re-opened the key and was killed too, with no spool: its live file is all there is.
    store = lelog.FileStore(home)
    store.open_stream("ci/twice")
    now = time.time()
    store.write("ci/twice", [lelog.Line(f"second {i}\n", i, now + i / 1000) for i in range(10)])
    store.close()  # lets go of the key as a killed process would, leaving the live file
    result = recover(spool, home)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert "its live file held a later run's lines: 10 stored as that run's log" in line
    assert "left alone: the stored log is newer" in line
    assert outs(home, "ci/twice") == [f"second {i}\n" for i in range(10)]
    result = recover(spool, home, "--merge")
    assert result.returncode == 0 and "merged with the stored log: 30 lines" in result.stdout, result
    assert outs(home, "ci/twice") == [f"first {i}\n" for i in range(20)] + [
        f"second {i}\n" for i in range(10)
    ]


def _line(pos: int, out: str, at: float, level: str = "info") -> Line:
    return Line(out, pos, format_time(at), level)


def test_merge_counts_a_line_once_when_time_level_and_text_match() -> None:
    stored = [_line(0, "a\n", 10.0), _line(1, "b\n", 12.0), _line(2, "b\n", 12.0)]
    spooled = [
        _line(0, "a\n", 10.0),
        _line(1, "b\n", 12.0),
        _line(2, "b\n", 12.0, "warn"),
        _line(3, "c\n", 11.0),
    ]
    body, lines, both = merge_logs(stored, spooled)
    rows = [json.loads(row) for row in body.splitlines()]
    assert (lines, both) == (5, 2)
    assert [(r["pos"], r["out"], r["level"]) for r in rows] == [
        (0, "a\n", "info"),
        (1, "c\n", "info"),
        (2, "b\n", "info"),
        (3, "b\n", "info"),  # twice in the stored log, so twice here
        (4, "b\n", "warn"),
    ]
