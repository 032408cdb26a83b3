"""Entry points reached on a thread where lelog already holds a lock never wait on it: a
finalizer on the writer's own worker, a finalizer during construction, a signal during the
exit hook or during a close, a signal during a replayed record (docs/writer.md#re-entry).

Each runs in a child process with ``faulthandler`` armed: a hang prints every thread's stack
and fails the test, never the suite.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest

from lelog import StreamHandler, StreamWriter
from lelog.testing import MemoryBackend
from tests.helpers import run_python

ARMED = "import faulthandler; faulthandler.dump_traceback_later(60, exit=True)\n"


def _run(code: str) -> dict:
    result = run_python(ARMED + code, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.splitlines()[-1])


FINALIZER_ON_THE_WORKER = """
import gc, json, sys, threading
from lelog import StreamWriter
from lelog.testing import MemoryBackend

call = sys.argv[1] if len(sys.argv) > 1 else {call!r}
writer = StreamWriter("k", MemoryBackend(), flush_interval=0.01)
on_worker = []

class Job:  # a user's object in a cycle, cleaned up in __del__ by whichever thread collects
    def __init__(self):
        self.me = self
    def __del__(self):
        Job()  # the next collection finds another one
        if threading.current_thread().name.startswith("lelog-writer"):
            on_worker.append(1)
            if call == "stats":
                writer.stats
            elif call == "pending":
                writer.pending
            elif call == "flush":
                writer.flush(1.0)
            else:
                writer.write_line("from a finalizer")

Job()
gc.set_threshold(5)
for i in range(10_000):
    writer.write_line(f"line {{i}}")
gc.set_threshold(700)
stats = writer.close(timeout=10)
print(json.dumps({{"on_worker": len(on_worker), "accepted": stats.accepted, "sent": stats.sent,
                  "dropped": stats.dropped}}))
"""


@pytest.mark.parametrize("call", ["stats", "pending", "flush", "write"])
def test_a_finalizer_run_on_the_worker_never_waits_on_the_workers_locks(call: str) -> None:
    report = _run(FINALIZER_ON_THE_WORKER.format(call=call))
    dropped = {reason: n for reason, n in report["dropped"].items() if n}
    assert set(dropped) <= ({"reentrant"} if call == "write" else set())
    assert report["accepted"] == report["sent"] + sum(dropped.values())
    if call == "write":
        # Nothing can be deferred on lelog's own thread: a finalizer's line there is counted,
        # by reason; one that ran before the worker marked itself as lelog's (in the thread's
        # first steps) is an ordinary line, and sent.
        assert report["sent"] - 10_000 + dropped.get("reentrant", 0) == report["on_worker"]
    else:
        assert report["sent"] == 10_000


FINALIZER_WHILE_BUILDING = """
import gc, json
from lelog import StreamWriter
from lelog.testing import MemoryBackend

backend = MemoryBackend()
closed = []

class Job:  # a cycle holding a writer: its __del__ runs at some later collection
    def __init__(self, writer):
        self.writer = writer
        self.me = self
    def __del__(self):
        closed.append(self.writer.close(timeout=1).accepted)

for i in range(300):
    Job(StreamWriter(f"job-{i}", backend))
    gc.set_threshold(1 + i % 50)  # collections land inside the next constructors
    StreamWriter(f"other-{i}", backend).close()
gc.set_threshold(700)
gc.collect()
print(json.dumps({"closed": len(closed)}))
"""


def test_a_finalizer_that_closes_while_a_writer_is_built_never_hangs() -> None:
    assert _run(FINALIZER_WHILE_BUILDING)["closed"] == 300


SIGNAL_DURING_THE_EXIT_HOOK = """
import atexit, json, signal
# Registered before lelog registers its exit hook (atexit runs last-in first-out): runs after it.
atexit.register(lambda: (signal.setitimer(signal.ITIMER_REAL, 0),
                         print(json.dumps({"fired": len(fired), "stored": len(backend.outs("shared"))}))))
from lelog import StreamWriter
from lelog.testing import MemoryBackend

backend = MemoryBackend()
fired = []
writers = [StreamWriter("shared", backend) for _ in range(500)]
for writer in writers:
    writer.write_line("first")
    writer.write("partial")

def on_alarm(signum, frame):
    fired.append(1)
    writers[len(fired) % 500].write("tick\\n")

signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
"""


def test_a_signal_handler_that_writes_during_the_exit_hook_never_hangs() -> None:
    report = _run(SIGNAL_DURING_THE_EXIT_HOOK)
    assert report["stored"] >= 1000  # every "first" and every partial line, at the least


SIGNAL_CLOSES_WHILE_THE_PROGRAM_CLOSES = """
import json, signal
from lelog import StreamWriter
from lelog.testing import MemoryBackend

backend = MemoryBackend()
pool = [StreamWriter(f"pool-{i}", backend) for i in range(3000)]
mains = [StreamWriter(f"main-{i}", backend) for i in range(3000)]

def on_alarm(signum, frame):
    if pool:
        pool.pop().close(timeout=1)

signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
for writer in mains:
    writer.close(timeout=1)
signal.setitimer(signal.ITIMER_REAL, 0)
print(json.dumps({"left": len(pool)}))
"""


def test_a_signal_handler_that_closes_while_the_program_closes_never_hangs() -> None:
    assert _run(SIGNAL_CLOSES_WHILE_THE_PROGRAM_CLOSES)["left"] < 3000


CLOSE_DURING_THE_FINAL_SEQUENCE = """
import atexit, json, signal, time
# Registered before lelog registers its exit hook (atexit runs last-in first-out): runs after it.
atexit.register(lambda: report())
from lelog import StreamWriter
from lelog.testing import MemoryBackend

class SlowBackend(MemoryBackend):  # 0.2 s a call: the signal lands inside the final sequence
    def open_stream(self, key, **o): time.sleep(0.2); super().open_stream(key, **o)
    def write(self, key, lines, **o): time.sleep(0.2); super().write(key, lines, **o)
    def upload(self, key, lines, **o): time.sleep(0.2); super().upload(key, lines, **o)

def report():
    stats = writer.stats
    print(json.dumps({"uploaded": stats.uploaded, "sent": stats.sent, "outs": backend.outs("k")}))

backend = SlowBackend()
writer = StreamWriter("k", backend, close_timeout=5)
writer.write("the last words, no newline")  # no worker: the exit hook closes on this thread

def arm():  # runs first at exit; the signal comes 0.1 s into lelog's final sequence
    signal.signal(signal.SIGALRM, lambda signum, frame: writer.close())
    signal.setitimer(signal.ITIMER_REAL, 0.1)

atexit.register(arm)
"""


def test_a_close_from_a_signal_handler_during_the_final_sequence_lets_it_finish() -> None:
    report = _run(CLOSE_DURING_THE_FINAL_SEQUENCE)
    assert report == {"uploaded": True, "sent": 1, "outs": ["the last words, no newline"]}


SIGNALS_DURING_REPLAYED_RECORDS = """
import json, logging, signal, time
import lelog
from lelog.testing import MemoryBackend

class SlowFormatter(logging.Formatter):  # 3 ms a record: signals land in replayed records too
    def format(self, record):
        end = time.perf_counter() + 0.003
        while time.perf_counter() < end:
            pass
        return super().format(record)

backend = MemoryBackend()
handler = lelog.StreamHandler(writer=lelog.StreamWriter("k", backend))
handler.setFormatter(SlowFormatter("%(message)s"))
log = logging.getLogger("app")
log.addHandler(handler)
log.setLevel(logging.INFO)
log.propagate = False
fired = []

def on_alarm(signum, frame):
    fired.append(1)
    log.info("signal")

signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
for i in range(100):
    log.info("main %d", i)
signal.setitimer(signal.ITIMER_REAL, 0)
stats = handler.writer.close()
print(json.dumps({"fired": len(fired), "accepted": stats.accepted, "sent": stats.sent,
                  "dropped": stats.dropped, "outs": backend.outs("k")}))
"""


def test_signals_during_replayed_records_are_kept_or_counted_never_waited_for() -> None:
    report = _run(SIGNALS_DURING_REPLAYED_RECORDS)
    dropped = {reason: n for reason, n in report["dropped"].items() if n}
    assert set(dropped) <= {"reentrant"}  # cut at the depth bound: counted by reason
    assert report["accepted"] == 100 + report["fired"] == report["sent"] + sum(dropped.values())
    assert [o for o in report["outs"] if o.startswith("main")] == [f"main {i}" for i in range(100)]


def test_a_deferred_record_whose_filter_fails_costs_only_itself() -> None:
    backend = MemoryBackend()
    handler = StreamHandler(writer=StreamWriter("k", backend, threaded=False))
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("tests.deferred-filter")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)

    def user_filter(record: logging.LogRecord) -> bool:
        if record.getMessage() == "boom":
            raise ValueError("a user's filter fails")
        if record.getMessage() == "outer":  # stands for a signal handler inside handle()
            log.info("boom")
            log.info("kept")
            handler.writer.close()
        return True

    handler.addFilter(user_filter)
    try:
        log.info("outer")  # the deferred records' failure is not this call's
        assert handler.writer.closed
        assert backend.outs("k") == ["outer", "kept"]
    finally:
        log.removeHandler(handler)
        handler.close()


FINALIZERS_CLOSING_AT_EXIT = """
import gc
from lelog import StreamWriter
from lelog.testing import MemoryBackend

backend = MemoryBackend()
writers = [StreamWriter(f"w{i}", backend) for i in range(20)]
for writer in writers:
    writer.write_line("x")

class Job:  # a cycle whose __del__ closes its writer and leaves another Job for the next collection
    def __init__(self, writer):
        self.writer = writer
        self.me = self
    def __del__(self):
        Job(self.writer)
        self.writer.close(timeout=1)

for writer in writers:
    Job(writer)
del writer
gc.set_threshold(1)  # a collection inside the exit hook, while it lists the streams
print('{"exiting": true}', flush=True)
"""


def test_finalizers_that_close_writers_during_the_exit_hook_never_hang_it() -> None:
    assert _run(FINALIZERS_CLOSING_AT_EXIT) == {"exiting": True}


SIGTERM_DURING_A_REPLAY = """
import atexit, json, os, signal, sys
# Registered before lelog registers its exit hook (atexit runs last-in first-out): runs after it.
atexit.register(lambda: print(json.dumps({"stored": backend.outs("k"), "closed_first": closed_first,
                                          "accepted": writer.stats.accepted,
                                          "dropped": writer.stats.dropped_total})))
import logging
from lelog import StreamHandler, StreamWriter
from lelog.testing import MemoryBackend

backend = MemoryBackend()
writer = StreamWriter("k", backend)
handler = StreamHandler(writer=writer)
handler.setFormatter(logging.Formatter("%(message)s"))
log = logging.getLogger("app")
log.addHandler(handler)
log.setLevel(logging.INFO)
log.propagate = False
closed_first = None
atexit.register(lambda: globals().__setitem__("closed_first", writer.closed))  # before lelog's hook

def on_term(signum, frame):  # the usual SIGTERM handler: log, close, leave
    writer.write_line("from the SIGTERM handler")
    writer.close()
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)

class Interrupted(logging.Filter):
    def filter(self, record):
        if record.msg == "outer":
            log.info("inner-1")  # deferred
            log.info("inner-2")  # deferred
        elif record.msg == "inner-1":
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while inner-1 is replayed
        return True

handler.addFilter(Interrupted())
log.info("before")
log.info("outer")
"""


def test_a_sigterm_handler_that_exits_during_a_replay_closes_after_the_lines_before_it() -> None:
    report = _run(SIGTERM_DURING_A_REPLAY)
    # inner-1 was cut by the handler's SystemExit in its own filter; everything else is kept,
    # and the deferred close ran before the exit hook, behind the lines written before it.
    assert report["stored"] == ["before", "outer", "inner-2", "from the SIGTERM handler"]
    assert report["closed_first"] is True and report["accepted"] == 4 and report["dropped"] == 0


def test_a_flush_is_not_failed_by_a_line_counted_reentrant_before_it() -> None:
    writer = StreamWriter("k", MemoryBackend())
    writer.write_line("first")
    assert writer.flush(30)
    writer.count_reentrant()  # a finalizer's line on the worker, counted before this flush
    stop = threading.Event()

    def metrics() -> None:  # a thread reading the counts while the flush waits
        while not stop.is_set():
            _ = writer.stats

    reader = threading.Thread(target=metrics)
    reader.start()
    try:
        for i in range(2000):
            writer.write_line(f"line {i}")
        assert writer.flush(30)
    finally:
        stop.set()
        reader.join()
    stats = writer.close()
    assert stats.sent == 2001 and stats.dropped["reentrant"] == 1 and stats.accepted == 2002
