"""Regression tests for the writer's races and edge cases.

Each test names the hazard.  Races are provoked with a tiny switch interval and many rounds;
anything that could hang runs in a subprocess with a timeout.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from typing import Any, Iterator, Mapping

import pytest

from lelog import LogConfig, StreamWriter
from lelog._clock import SystemClock
from lelog._reentry import in_own_thread as in_worker_thread
from lelog.testing import MemoryBackend
from tests.helpers import dead_url, run_python, writer_threads_refused
from tests.service import FakeLogService


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def outs(backend: MemoryBackend) -> list[str]:
    """Exactly what went live, newlines included."""
    return [line.out for line in backend.lines("k")]


def accounted(stats: Any) -> bool:
    return stats.accepted == stats.sent + stats.dropped_total and stats.pending == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"level": None},
        {"level": 40},
        {"time": "now"},
        {"time": float("nan")},
        {"time": float("inf")},
        {"time": 1e20},
        {"args": ["not", "a", "mapping"]},
        {"out": 12345},
    ],
)
def test_odd_write_line_arguments_are_made_usable_not_fatal(bad: dict) -> None:
    backend = MemoryBackend()
    writer = StreamWriter("k", backend, close_timeout=2)
    writer.write_line("before")
    writer.write_line(**{"out": "odd", **bad})
    writer.write_line("after")
    stats = writer.close()
    assert stats.sent == 3 and accounted(stats)
    sent = outs(backend)
    assert sent[0] == "before\n" and sent[2] == "after\n"
    assert [name for name, _ in backend.calls][-2:] == ["upload", "close_stream"]


class ExhaustedOnTheWorker(Mapping[str, str]):
    """Args that the caller can weigh but that fail when the worker encodes them, as an
    exhausted machine would."""

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[str]:
        return iter(["k"])

    def __getitem__(self, key: str) -> str:
        if in_worker_thread():
            raise MemoryError("simulated")
        return "v"


def test_a_failure_to_encode_is_counted_and_the_stream_still_closes() -> None:
    backend = MemoryBackend()
    writer = StreamWriter("k", backend, close_timeout=2, flush_interval=0.01)
    for i in range(5):
        writer.write_line(f"{i}", args=ExhaustedOnTheWorker())
    stats = writer.close()
    assert accounted(stats) and stats.dropped["unencodable"] == 5
    assert stats.closed
    assert [name for name, _ in backend.calls][-1] == "close_stream"  # the stream is still closed


def test_close_racing_the_first_write_never_raises(tiny_switch_interval: None) -> None:
    errors = []
    for _ in range(300):
        writer = StreamWriter("k", MemoryBackend(), close_timeout=1)
        go = threading.Barrier(2)
        delay = random.random() * 2e-4

        def first_write() -> None:
            go.wait()
            writer.write_line("first")

        def closer() -> None:
            go.wait()
            end = time.perf_counter() + delay
            while time.perf_counter() < end:
                pass
            try:
                writer.close()
            except Exception as exc:  # the bug: "cannot join thread before it is started"
                errors.append(exc)

        threads = [threading.Thread(target=first_write), threading.Thread(target=closer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        writer.close()
        assert accounted(writer.stats)
    assert errors == []


def test_two_closers_without_a_worker_run_the_final_sequence_once() -> None:
    backend = MemoryBackend()
    with writer_threads_refused():
        writer = StreamWriter("k", backend, close_timeout=3)
        for i in range(3):
            writer.write_line(f"line {i}")
    closers = [threading.Thread(target=writer.close) for _ in range(4)]
    for t in closers:
        t.start()
    for t in closers:
        t.join()
    names = [name for name, _ in backend.calls]
    assert names == ["open_stream", "write", "upload", "close_stream"]
    assert outs(backend) == ["line 0\n", "line 1\n", "line 2\n"]
    assert accounted(writer.stats) and writer.stats.sent == 3


def test_a_write_racing_close_lands_wholly_before_or_wholly_after(tiny_switch_interval: None) -> None:
    for _ in range(200):
        backend = MemoryBackend()
        writer = StreamWriter("k", backend, close_timeout=1)
        writer.write_line("start")
        go = threading.Barrier(2)

        def writer_thread() -> None:
            go.wait()
            writer.write("a\nb")

        def closer() -> None:
            go.wait()
            writer.close()

        threads = [threading.Thread(target=writer_thread), threading.Thread(target=closer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent = outs(backend)
        assert sent in (["start\n"], ["start\n", "a\n", "b"]), sent
        assert accounted(writer.stats)


def test_flush_after_close_is_false_when_lines_were_not_sent() -> None:
    writer = StreamWriter("k", MemoryBackend(), close_timeout=1)
    writer.write_line("sent")
    writer.close()
    assert writer.flush() is True
    writer.write_line("after close")
    assert writer.flush() is False
    config = LogConfig(url=dead_url(), account_id="a", token="t")
    dead = StreamWriter("k", config, close_timeout=0.5)
    dead.write_line("lost")
    dead.close()
    assert dead.flush() is False


def test_args_count_against_the_byte_budget() -> None:
    # No worker: the pending lines only fill up.
    writer = StreamWriter("k", MemoryBackend(), threaded=False, max_pending_bytes=100_000, close_timeout=1)
    big = {"blob": "x" * 50_000}
    for _ in range(10):
        writer.write_line("small", args=big)
    stats = writer.stats
    assert stats.dropped["overflow"] == 9 and stats.pending == 1  # two would pass 100,000 bytes
    writer.close()


PARTIAL_AT_EXIT = """
import lelog
writer = lelog.StreamWriter("k", lelog.LogConfig(url={url!r}, account_id="acct", token="secret-token"))
writer.write("only a partial line")
"""


def test_a_writer_holding_only_a_partial_line_is_delivered_at_exit(service: FakeLogService) -> None:
    result = run_python(PARTIAL_AT_EXIT.format(url=service.url), timeout=30)
    assert result.returncode == 0, result.stderr
    assert [row["out"] for row in service.blob_lines("k")] == ["only a partial line"]


def test_a_worker_that_hits_a_bug_keeps_going_until_close() -> None:
    """An unexpected error in the worker loop is reported and the loop restarts: lines
    written after it are still sent, and nothing is finished before close() asks."""
    backend = MemoryBackend()
    failed = threading.Event()

    class BrokenOnceOnTheWorker(SystemClock):
        def monotonic(self) -> float:  # type: ignore[override]
            if in_worker_thread() and not failed.is_set():
                failed.set()
                raise RuntimeError("a bug in the worker loop")
            return time.monotonic()

    writer = StreamWriter("k", backend, clock=BrokenOnceOnTheWorker(), close_timeout=3, flush_interval=0.01)
    writer.write_line("before the bug")
    assert failed.wait(10)
    writer.write_line("after the bug")  # wakes the worker from its pause after the failure
    assert writer.flush(10)
    stats = writer.close()
    assert accounted(stats) and stats.sent == 2
    assert outs(backend) == ["before the bug\n", "after the bug\n"]
