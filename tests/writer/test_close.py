"""Closing: deadlines a flush leaves a close, and closers racing for the final sequence.

Whatever is about exit or reconfiguration runs in a child process with a hang bound;
nothing here sleeps for the worker: tests wait on conditions.
"""

from __future__ import annotations

import threading
from typing import Any

from lelog import StreamWriter
from lelog.testing import MemoryBackend
from tests.helpers import run_python, stream_dictconfig
from tests.service import FakeLogService

CONFIG = {"account_id": "acct", "token": "secret-token"}


def messages(service: FakeLogService, key: str = "k") -> list[str]:
    return [row["out"].split('msg="')[1].split('"')[0] for row in service.blob_lines(key) or []]


# -- a flush that runs out of time on a healthy (slow) service leaves close() its budget --


def test_a_short_flush_on_a_slow_service_leaves_close_its_own_budget(service_factory: Any) -> None:
    service = service_factory(answer_delay=0.5)
    writer = StreamWriter("k", dict(url=service.url, **CONFIG), close_timeout=5)
    for i in range(20):
        writer.write_line(f"line {i}")
    assert writer.flush(0.2) is False  # the service is slow, not failing
    stats = writer.close()
    assert (stats.sent, stats.dropped_total, stats.uploaded) == (20, 0, True), stats.summary()
    assert [row["out"] for row in service.blob_lines("k") or []] == [f"line {i}\n" for i in range(20)]


RECONFIGURED_THEN_CLOSED = (
    stream_dictconfig()
    + """
for i in range(3):
    logging.info("first %d", i)
logging.config.dictConfig(CFG)  # logging.shutdown(handlers) under the module lock: flush(0.0)
h = logging.getLogger().handlers[0]
for i in range(2):
    logging.info("second %d", i)
h.close()
print(h.stats.sent, h.stats.dropped_total, h.stats.uploaded, flush=True)
"""
)


def test_a_close_after_reconfiguring_is_not_starved_by_the_flush_under_the_module_lock(
    service: FakeLogService,
) -> None:
    result = run_python(RECONFIGURED_THEN_CLOSED.format(url=service.url), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["5", "0", "True"], result.stdout
    assert messages(service) == ["first 0", "first 1", "first 2", "second 0", "second 1"]


# -- two threads closing a writer that has no worker run the final sequence once -----------


def test_two_closers_of_a_writer_without_a_worker_run_the_final_sequence_once() -> None:
    """Closers of a stream with no worker claim the final sequence by one state change under
    the ledger's lock (CLOSING to FINISHING): one runs it, the other waits for it."""
    for _ in range(20):
        backend = MemoryBackend()
        writer = StreamWriter("k", backend, threaded=False, close_timeout=5)
        for i in range(3):
            writer.write_line(f"line {i}")
        start = threading.Barrier(2, timeout=30)

        def closer() -> None:
            start.wait()
            writer.close()

        threads = [threading.Thread(target=closer) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [name for name, _ in backend.calls] == ["open_stream", "write", "upload", "close_stream"]
        assert writer.stats.sent == 3 and writer.stats.closed
