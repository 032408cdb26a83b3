"""Re-entry: a signal handler, a finalizer or a formatter that writes, logs, flushes or closes
on a thread already inside lelog never waits on a lock its own thread holds; its lines are
kept, after the call it interrupted, or counted (docs/writer.md#re-entry).

Signals run in child processes with a hard timeout: a hang fails the test, never the suite.
"""

from __future__ import annotations

import gc
import json
import signal
import subprocess
import sys
import threading

import pytest

from lelog import StreamWriter, _reentry
from lelog.testing import MemoryBackend
from tests.helpers import wait_until
from tests.service import FakeLogService

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")

# A main thread writing flat out while SIGALRM fires every millisecond, its handler writing
# too: through the writer itself, a job's stream, or logging with lelog's handler.
SIGNALS_WHILE_WRITING = """
import itertools, json, logging, signal, sys, time
import lelog
from lelog.testing import MemoryBackend

mode = sys.argv[1]
backend = MemoryBackend()
options = dict(close_timeout=10, max_pending_lines=1_000_000, max_pending_bytes=1 << 30)
if mode == "job":
    job = lelog.log_stream("k", backend, logger=[], **options)
    job.__enter__()
    write = lambda text: job.write(text + "\\n")
elif mode == "logging":
    handler = lelog.StreamHandler(writer=lelog.StreamWriter("k", backend, **options))
    logger = logging.getLogger("app")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    write = logger.info
else:
    writer = lelog.StreamWriter("k", backend, **options)
    write = writer.write_line if mode == "write_line" else (lambda text: writer.write(text + "\\n"))

# A handler may be interrupted by the next signal at any bytecode, so each takes its number
# from a C-level counter and notes it with one C call (both atomic with respect to signals),
# never by `fired += 1`, which a nested handler can make two handlers read alike.
numbers = itertools.count(1)
started = []
def on_alarm(signum, frame):
    number = next(numbers)
    started.append(number)
    write(f"signal {number}")

signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
written = 0
deadline = time.monotonic() + 20
while (len(started) < 300 or written < 20_000) and time.monotonic() < deadline:
    write(f"main {written}")
    written += 1
signal.setitimer(signal.ITIMER_REAL, 0, 0)
# A signal already delivered runs its handler at the next check, which may fall inside the
# close below; a write that interrupts the close itself is counted as dropped (re-entry), not
# what this test measures, so no handler runs from here on.
signal.signal(signal.SIGALRM, signal.SIG_IGN)
if mode == "job":
    job.__exit__(None, None, None)
    stats = job.stats
elif mode == "logging":
    stats = handler.writer.close()
else:
    stats = writer.close()
fired = len(started)
outs = [line.rstrip("\\n").rsplit("msg=", 1)[-1].strip('"') for line in backend.outs("k")]
print(json.dumps({"written": written, "fired": fired, "outs": outs, "accepted": stats.accepted,
                  "sent": stats.sent, "dropped": stats.dropped_total}))
"""


@pytest.mark.parametrize("mode", ["write_line", "write", "job", "logging"])
def test_a_signal_handler_that_writes_while_the_program_writes_keeps_every_line(mode: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SIGNALS_WHILE_WRITING, mode],
        capture_output=True,
        text=True,
        timeout=90,  # a hang (the old failure) ends the test here
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    written, fired, outs = report["written"], report["fired"], report["outs"]
    assert fired >= 1
    assert report["accepted"] == report["sent"] == written + fired and report["dropped"] == 0
    # Every line once; the program's in its order.  (Signal handlers may themselves be
    # interrupted by the next signal before they write, so theirs are compared as a set.)
    assert [o for o in outs if o.startswith("main ")] == [f"main {i}" for i in range(written)]
    signal_lines = [o for o in outs if o.startswith("signal ")]
    assert sorted(signal_lines, key=lambda o: int(o.split()[1])) == [
        f"signal {i}" for i in range(1, fired + 1)
    ]


SIGTERM_CLOSES = """
import logging, signal, sys
import lelog

handler = lelog.StreamHandler("k", url={url!r}, account_id="acct", token="secret-token", close_timeout=20, history_bytes=1 << 30,
    max_pending_lines=5_000_000, max_pending_bytes=1 << 31)
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)

def on_term(signum, frame):  # the usual SIGTERM handler: log, close, leave
    logging.getLogger("app").warning("terminating")
    handler.close()
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
print("READY", flush=True)
i = 0
while True:
    logging.getLogger("app").info("line %d", i)
    i += 1
"""


def test_a_sigterm_handler_that_closes_while_the_program_logs_stores_every_line(
    service: FakeLogService,
) -> None:
    """The signal lands inside a logging call, often with a lock held: the close either runs
    there (nothing held) or when the interrupted call returns, as ``sys.exit`` unwinds it;
    either way every line is stored once, in order, the handler's last."""
    for attempt in range(5):  # the signal lands at a different point of a logging call each time
        key = f"k{attempt}"
        child = subprocess.Popen(
            [sys.executable, "-c", SIGTERM_CLOSES.replace('"k"', repr(key)).format(url=service.url)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "READY"
            assert wait_until(lambda: len(service.all_written(key)) > 1000)  # well inside its loop
            child.send_signal(signal.SIGTERM)
            _out, err = child.communicate(timeout=60)  # a hang fails here
        finally:
            child.kill()
        assert child.returncode == 0, err
        outs = [row["out"].rsplit("msg=", 1)[-1].strip() for row in service.blob_lines(key)]
        assert outs[-1] == '"terminating"'
        assert outs[:-1] == [f'"line {i}"' for i in range(len(outs) - 1)]


def test_a_flush_from_a_signal_handler_inside_a_logging_call_answers_at_once() -> None:
    """A flush cannot wait on a thread that is inside lelog: it says it did not flush."""
    backend = MemoryBackend()
    writer = StreamWriter("k", backend, threaded=False)
    answers = []

    class Interrupting:
        def __str__(self) -> str:  # runs inside write_line, as a signal handler would
            answers.append(writer.flush(5))
            writer.write_line("from inside")
            return "outer"

    writer.write_line(Interrupting())  # type: ignore[arg-type]
    assert answers == [False]
    writer.close()
    assert backend.outs("k") == ["outer", "from inside"]


def test_a_finalizer_that_logs_during_a_write_is_kept_after_it() -> None:
    backend = MemoryBackend()
    writer = StreamWriter("k", backend, threaded=False)

    class LogsWhenCollected:
        def __del__(self) -> None:
            writer.write_line("finalizer")

    class Collecting:
        def __str__(self) -> str:
            LogsWhenCollected()  # collected at once, inside the outer write
            gc.collect()
            return "outer"

    writer.write_line(Collecting())  # type: ignore[arg-type]
    writer.close()
    assert backend.outs("k") == ["outer", "finalizer"]


def test_calls_deferred_past_the_bound_are_counted() -> None:
    backend = MemoryBackend()
    writer = StreamWriter("k", backend, threaded=False)

    class Flood:
        def __str__(self) -> str:
            for i in range(_reentry.MAX_DEFERRED + 5):
                writer.write_line(f"nested {i}")
            return "outer"

    writer.write_line(Flood())  # type: ignore[arg-type]
    stats = writer.close()
    assert stats.dropped["reentrant"] == 5
    assert stats.accepted == stats.sent + stats.dropped_total == _reentry.MAX_DEFERRED + 6
    assert backend.outs("k")[:2] == ["outer", "nested 0"]


def test_a_close_from_inside_a_write_runs_when_the_write_returns_after_its_line() -> None:
    """A close made inside a call (a SIGTERM handler that closes while the program formats a
    record) takes no lock there: it runs when that call returns, after the call's line."""
    backend = MemoryBackend()
    writer = StreamWriter("k", backend, threaded=False)
    writer.write_line("before")
    seen = []

    class Closing:
        def __str__(self) -> str:
            seen.append(writer.close().closed)
            return "outer"

    writer.write_line(Closing())  # type: ignore[arg-type]
    assert seen == [False]  # deferred: it returned the stats as they were
    stats = writer.stats
    assert stats.closed and backend.outs("k") == ["before", "outer"] and stats.dropped_total == 0


def test_a_close_from_inside_a_write_that_holds_its_lock_runs_when_the_write_returns() -> None:
    backend = MemoryBackend()
    writer = StreamWriter("k", backend, threaded=False)
    seen = []

    class ClosingUnderTheLock:
        def __str__(self) -> str:  # a raw write's str() runs under the writer's split_lock
            seen.append(writer.close().closed)
            return "outer\n"

        def __len__(self) -> int:
            return 6

    writer.write(ClosingUnderTheLock())  # type: ignore[arg-type]
    assert seen == [False]  # deferred: it could not close there
    assert writer.stats.closed and backend.outs("k") == ["outer"]


def test_a_record_logged_on_lelogs_own_thread_by_the_program_is_counted() -> None:
    """On lelog's own threads only its own records (httpx, httpcore, lelog) go nowhere
    uncounted; anything else logged there (a finalizer run on the worker) is counted, as
    nothing can be deferred on a thread that never leaves lelog."""
    import logging

    from lelog import StreamHandler

    backend = MemoryBackend()
    handler = StreamHandler(writer=StreamWriter("k", backend, threaded=False))

    def on_a_lelog_thread() -> None:
        _reentry.mark_own_thread()
        handler.handle(logging.LogRecord("httpx", logging.INFO, __file__, 1, "HTTP Request", None, None))
        handler.handle(logging.LogRecord("app", logging.INFO, __file__, 1, "from a finalizer", None, None))

    thread = threading.Thread(target=on_a_lelog_thread)
    thread.start()
    thread.join()
    stats = handler.writer.close()
    assert stats.dropped["reentrant"] == 1 and stats.accepted == 1 and backend.outs("k") == []


def test_a_record_logged_during_lelogs_io_on_a_callers_thread_is_kept_after_it() -> None:
    import logging

    from lelog import StreamHandler

    backend = MemoryBackend()
    handler = StreamHandler(writer=StreamWriter("k", backend, threaded=False))
    handler.setFormatter(logging.Formatter("%(message)s"))
    with _reentry.own_io():  # a close's final sequence run on the caller's thread
        handler.handle(logging.LogRecord("httpx", logging.INFO, __file__, 1, "HTTP Request", None, None))
        handler.handle(logging.LogRecord("app", logging.INFO, __file__, 1, "from a finalizer", None, None))
        assert backend.outs("k") == [] and handler.writer.stats.accepted == 0
    stats = handler.writer.close()
    assert backend.outs("k") == ["from a finalizer"] and stats.accepted == 1 and stats.dropped_total == 0
