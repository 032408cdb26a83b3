"""``Look``: what a live stream is that this host has no trace of, driven call by call
against the fake service on 127.0.0.1 and the file store (no writer, no thread)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

from lelog import FileStore, Line, LogServiceClient
from lelog._clock import Deadline
from lelog._exceptions import LogServiceError
from lelog._line import encode_line, format_time
from lelog._look import Found, Look
from lelog.testing import MemoryBackend
from tests.helpers import ROOT
from tests.service import FakeLogService
from tests.test_client import make_client


def marker(text: str, pos: int, at: Optional[str]) -> bytes:
    return encode_line("warn", pos, "[lelog] " + text, at or format_time(time.time()), None)


@pytest.fixture
def client(service: FakeLogService) -> Iterator[LogServiceClient]:
    with make_client(service) as c:
        yield c


def soon() -> Deadline:
    return Deadline.after(10.0)


def test_a_stream_that_is_not_live_is_to_be_opened(client: LogServiceClient, service: FakeLogService) -> None:
    look = Look(client, "k", time.time(), marker)
    assert look.step(soon()) is Found.NOT_LIVE
    assert service.requests_for(key="k", method="GET") == []  # nothing to look at


def test_a_line_newer_than_the_writers_arrival_is_a_writer_elsewhere_and_nothing_is_stored_or_closed(
    client: LogServiceClient, service: FakeLogService
) -> None:
    client.open_stream("k")
    client.write("k", [Line("before\n", 0, time.time() - 60)])
    since = time.time()
    client.write("k", [Line("after\n", 1, since + 0.001)])
    look = Look(client, "k", since, marker)
    assert look.step(soon()) is Found.WRITER_ELSEWHERE
    assert service.is_open("k") and service.blob("k") is None


def test_a_stream_whose_lines_are_all_older_is_stored_as_the_ended_runs_log_and_closed(
    client: LogServiceClient, service: FakeLogService
) -> None:
    client.open_stream("k")
    old = time.time() - 60
    client.write("k", [Line(f"old {i}\n", i, old + i) for i in range(3)])
    look = Look(client, "k", time.time(), marker)
    assert look.step(soon()) is Found.LEFTOVER and look.held == 3
    rows = service.blob_lines("k") or []
    assert [row["out"] for row in rows[:3]] == ["old 0\n", "old 1\n", "old 2\n"]
    assert [row["pos"] for row in rows] == [0, 1, 2, 3]
    assert rows[3]["out"].startswith("[lelog] the run that wrote this stream elsewhere ended")
    assert rows[3]["time"] == rows[2]["time"]  # at its last line's time: the log is that run's
    assert not service.is_open("k")


def test_an_empty_live_stream_is_a_leftover_too(client: LogServiceClient, service: FakeLogService) -> None:
    client.open_stream("k")
    look = Look(client, "k", time.time(), marker)
    assert look.step(soon()) is Found.LEFTOVER and look.held == 0
    assert [row["pos"] for row in service.blob_lines("k") or []] == [0]
    assert not service.is_open("k")


def test_a_leftover_whose_upload_failed_is_stored_by_the_next_attempt_without_looking_again(
    client: LogServiceClient, service: FakeLogService
) -> None:
    client.open_stream("k")
    client.write("k", [Line("old\n", 0, time.time() - 60)])
    look = Look(client, "k", time.time(), marker)
    service.fail_next(1, status=503, method="POST", path="/blob/link/upload")
    with pytest.raises(LogServiceError):
        look.step(soon())
    assert look.step(soon()) is Found.LEFTOVER
    assert len(service.requests_for(key="k", method="GET", path="/stream")) == 1  # decided once
    assert [row["out"] for row in service.blob_lines("k") or []][0] == "old\n"
    assert not service.is_open("k")


def test_a_leftover_in_the_file_store_is_stored_from_its_live_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.open_stream("k")
    store.write("k", [Line("old\n", 0, time.time() - 60)])
    store.release("k")  # the writer that held it ended
    look = Look(FileStore(tmp_path), "k", time.time(), marker)
    assert look.step(soon()) is Found.LEFTOVER
    rows = [json.loads(row) for row in store.download("k").splitlines()]
    assert [row["out"][:7] for row in rows] == ["old\n", "[lelog]"]
    assert not Path(store.live_path("k")).exists()


def test_a_file_store_key_another_process_holds_is_a_writer_elsewhere_however_old_its_lines(
    tmp_path: Path,
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(home=str(tmp_path))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        look = Look(FileStore(tmp_path), "k", time.time(), marker)
        assert look.step(soon()) is Found.WRITER_ELSEWHERE
        assert FileStore(tmp_path).peek("k")[0].out == "old\n"  # untouched
    finally:
        holder.kill()
        holder.wait()


#: A writer of the file store on key "k" in another process, with a line from long ago.
HOLDER = """
import sys, time, lelog
store = lelog.FileStore({home!r})
store.open_stream("k")
store.write("k", [lelog.Line("old\\n", 0, time.time() - 600)])
print("held", flush=True)
sys.stdin.read()
"""


def test_a_live_stream_on_a_backend_that_cannot_show_its_lines_is_unknown() -> None:
    backend = MemoryBackend()
    assert Look(backend, "k", time.time(), marker).step(soon()) is Found.UNKNOWN
    assert [call for call, _ in backend.calls] == ["write"]  # neither stored nor closed
