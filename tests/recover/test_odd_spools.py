"""Rows are checked as they are read: a bad row costs itself, never the good rows after it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from lelog._line import MAX_LINE_BYTES, encode_line, format_time
from lelog._spool import Manifest, read_log
from tests.recover.spools import Target, handmade_spool, outs, recover, row, stored, writer
from tests.service import FakeLogService
from tests.test_recover import _spools


@pytest.fixture(params=["service", "file store"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "service":
        service: FakeLogService = request.getfixturevalue("service")
        return service
    return tmp_path / "home"


def test_a_row_with_a_pos_far_out_of_range_costs_only_itself(tmp_path: Path, target: Target) -> None:
    spool = tmp_path / "spool"
    rows = [row(pos) for pos in range(2000)]
    rows[10] = row(10**12, "planted")
    handmade_spool(spool, target, "job/pos", rows)
    result = recover(spool, target)
    assert result.returncode == 0, result.stderr
    assert "1,999 lines stored, 1 missing (marked), 1 unreadable rows skipped" in result.stdout
    got = stored(target, "job/pos")
    assert got is not None and [r["pos"] for r in got] == list(range(2000))
    assert got[10]["out"].startswith("[lelog] 1 lines missing here")
    assert [r["out"] for r in got[:10] + got[11:]] == [f"line {p}\n" for p in range(2000) if p != 10]
    assert _spools(spool) == []


def test_a_row_over_the_line_limit_is_skipped_and_marked(tmp_path: Path, target: Target) -> None:
    spool = tmp_path / "spool"
    rows = [row(pos) for pos in range(20)]
    rows[5] = row(5, "x" * (MAX_LINE_BYTES * 3))
    handmade_spool(spool, target, "job/long", rows)
    result = recover(spool, target)
    assert result.returncode == 0, result.stderr
    assert "19 lines stored, 1 missing (marked), 1 unreadable rows skipped" in result.stdout
    got = outs(target, "job/long")
    assert got is not None and len(got) == 20 and got[5].startswith("[lelog] 1 lines missing here")
    assert max(len(out.encode()) for out in got) < MAX_LINE_BYTES


def _no_readable_rows(directory: Path, how: str) -> None:
    segment = directory / "0000000000.ndjson"
    if how == "empty":
        segment.write_bytes(b"")
    elif how == "symlinked":
        real = directory.parent.parent / "elsewhere.ndjson"
        real.write_bytes(segment.read_bytes())
        segment.unlink()
        segment.symlink_to(real)
    else:
        segment.unlink()
        os.mkfifo(segment)


@pytest.mark.parametrize("how", ["empty", "symlinked", "fifo"])
def test_a_spool_with_no_readable_rows_sends_nothing_and_stays(
    tmp_path: Path, target: Target, how: str
) -> None:
    spool = tmp_path / "spool"
    before = writer(target, "job/empty")
    before.write_line("the stored log")
    assert before.close().uploaded is True
    directory = handmade_spool(spool, target, "job/empty", [row(pos) for pos in range(5)])
    _no_readable_rows(directory, how)
    result = recover(spool, target)  # a fifo is never waited on: the child's timeout would fail this
    assert result.returncode == 0, result.stderr
    assert (
        "left alone: no readable rows" in result.stdout
        and "nothing was sent, the spool stays" in result.stdout
    )
    if how != "empty":
        assert "1 segment files that are not regular files" in result.stdout
    assert outs(target, "job/empty") == ["the stored log\n"]
    assert _spools(spool) == [directory]


def test_read_log_keeps_the_longest_rising_run_of_rows(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    now = time.time() - 30
    rows = [row(0), row(1), row(7, "early"), row(2), row(3), row(10**15, "late", at=now), row(4)]
    directory = handmade_spool(spool, tmp_path / "home", "k", rows)
    manifest = Manifest.from_json((directory / "manifest.json").read_bytes())
    log = read_log(str(directory), manifest)
    assert [r.pos for r in log.rows] == [0, 1, 2, 3, 4]
    assert (log.lines, log.missing, log.skipped) == (5, 0, 2)


def test_read_log_skips_a_last_row_whose_pos_no_writer_could_reach_in_its_time(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    now = time.time() - 30
    rows = [row(pos, at=now) for pos in range(5)] + [row(10**12, "planted", at=now + 1)]
    directory = handmade_spool(spool, tmp_path / "home", "k", rows)
    manifest = Manifest.from_json((directory / "manifest.json").read_bytes())
    log = read_log(str(directory), manifest)
    assert [r.pos for r in log.rows] == [0, 1, 2, 3, 4] and (log.missing, log.skipped) == (0, 1)


@pytest.mark.parametrize(
    "bad",
    [
        b'{"level":"info","pos":1,"out":"no time\\n","time":null,"args":null}',
        b'{"level":"info","pos":1,"out":"zoneless\\n","time":"2026-01-01T00:00:00","args":null}',
        b'{"level":"info","pos":true,"out":"a bool\\n","time":"2026-01-01T00:00:00Z","args":null}',
        b'{"level":"info","pos":-1,"out":"negative\\n","time":"2026-01-01T00:00:00Z","args":null}',
        b'{"level":"info","pos":1,"out":"args\\n","time":"2026-01-01T00:00:00Z","args":{"a":1}}',
        b"[1, 2, 3]",
        b"\xff\xfe",
    ],
)
def test_read_log_skips_rows_that_are_not_lines_it_wrote(tmp_path: Path, bad: bytes) -> None:
    spool = tmp_path / "spool"
    directory = handmade_spool(spool, tmp_path / "home", "k", [row(0), bad, row(2)])
    manifest = Manifest.from_json((directory / "manifest.json").read_bytes())
    log = read_log(str(directory), manifest)
    assert [r.pos for r in log.rows] == [0, 2] and (log.missing, log.skipped) == (1, 1)
    marker = json.loads(log.body.splitlines()[1])
    assert marker["pos"] == 1 and marker["level"] == "warn"


def test_a_spooled_line_cut_at_the_limit_is_kept(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    cut = "y" * MAX_LINE_BYTES + "... (log line truncated)"
    when = format_time(time.time() - 30)
    directory = handmade_spool(spool, tmp_path / "home", "k", [encode_line("info", 0, cut, when, None)])
    manifest = Manifest.from_json((directory / "manifest.json").read_bytes())
    assert read_log(str(directory), manifest).lines == 1
