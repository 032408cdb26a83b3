"""Regression tests for the second review of the rewritten writer: each test names the bug.

Whatever is about fork, exit, shutdown or reconfiguration runs in a child process with a
hang bound; nothing here sleeps for the worker: tests wait on conditions.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import pytest

from lelog import StreamWriter
from lelog.testing import MemoryBackend
from tests.helpers import run_python, stream_dictconfig
from tests.service import FakeLogService

CONFIG = {"account_id": "acct", "token": "secret-token"}


def messages(service: FakeLogService, key: str = "k") -> list[str]:
    return [row["out"].split('msg="')[1].split('"')[0] for row in service.blob_lines(key) or []]


# -- 1. a flush that runs out of time on a healthy (slow) service leaves close() its budget --


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


# -- 8. two threads closing a writer that has no worker run the final sequence once -----------


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


# -- 3. children's lines stream live even before the parent logs --------------------------------

CHILD_FIRST = """
import os, lelog
from lelog.testing import MemoryBackend
backend = MemoryBackend()
writer = lelog.StreamWriter("k", backend, close_timeout=5)  # built, nothing written yet
pid = os.fork()
if pid == 0:
    writer.write_line("child line")
    os._exit(0)
os.waitpid(pid, 0)
print(writer.flush(20), backend.outs("k"), flush=True)
writer.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_lines_of_fork_children_stream_live_before_the_parent_has_logged() -> None:
    result = run_python(CHILD_FIRST, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True ['child line']", result.stdout


# -- 2. a grandchild (a fork inside a fork child) sends to the same owner -----------------------

GRANDCHILD = """
import os, lelog
from lelog.testing import MemoryBackend
backend = MemoryBackend()
writer = lelog.StreamWriter("k", backend, close_timeout=5)
writer.write_line("parent before")
pid = os.fork()
if pid == 0:
    writer.write_line("child line")
    grandchild = os.fork()
    if grandchild == 0:
        writer.write_line("grandchild line")
        os._exit(0)
    os.waitpid(grandchild, 0)
    os._exit(0)
os.waitpid(pid, 0)
writer.write_line("parent after")
stats = writer.close()
print([line.out.strip() for line in backend.stream("k").uploaded or ()], stats.accepted, flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_lines_of_a_grandchild_reach_the_owners_stored_log() -> None:
    result = run_python(GRANDCHILD, timeout=60)
    assert result.returncode == 0, result.stderr
    expected = ["parent before", "child line", "grandchild line", "parent after"]
    assert result.stdout.strip() == f"{expected} 4", result.stdout


# -- 7. a long-lived fork child does not keep its parent's claim on a finished stream -----------

STALE_BEACON = """
import multiprocessing, os, lelog
CONFIG = dict(url={url!r}, account_id="acct", token="secret-token")

def child():
    writer = lelog.StreamWriter("k", lelog.LogConfig(**CONFIG))
    writer.write_line("spawn child line")
    stats = writer.close()
    print("CHILD", stats.sent, stats.dropped["rejected"], flush=True)

if __name__ == "__main__":
    writer = lelog.StreamWriter("k", lelog.LogConfig(**CONFIG))
    writer.write_line("parent line")
    release_r, release_w = os.pipe()
    pool_worker = os.fork()
    if pool_worker == 0:  # a long-lived fork child, as a pool worker is
        os.close(release_w)
        os.read(release_r, 1)
        os._exit(0)
    os.close(release_r)
    writer.close()  # the parent's stream is finished: the key is free again
    p = multiprocessing.get_context("spawn").Process(target=child)
    p.start()
    p.join()
    os.close(release_w)
    os.waitpid(pool_worker, 0)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(os, "fork"),
    reason="the guard uses Linux's abstract socket names; needs fork",
)
def test_a_fork_child_does_not_keep_the_parents_claim_on_a_finished_stream(
    service: FakeLogService, tmp_path: Any
) -> None:
    script = tmp_path / "stale.py"
    script.write_text(STALE_BEACON.format(url=service.url))
    result = run_python(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')", timeout=90)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["CHILD", "1", "0"], (result.stdout, result.stderr)
    assert "is held by the parent process" not in result.stderr
    assert [row["out"] for row in service.blob_lines("k") or []] == ["spawn child line\n"]


# -- 6. handed_on only when another writer took the stream --------------------------------------

HANDOFF_NOBODY_TAKES = (
    """
import atexit

def report():  # registered before lelog's exit hook, so it runs after it (atexit is LIFO)
    stats = first.stats
    print(stats.handed_on, stats.uploaded, "handed on" in stats.summary(), flush=True)

atexit.register(report)
"""
    + stream_dictconfig()
    + """
first = logging.getLogger().handlers[0]
logging.info("first line")
CFG["handlers"]["stream"]["key"] = "other"
logging.config.dictConfig(CFG)  # the hand-off waits; nobody on "k" takes it: first finishes it
logging.info("other line")
"""
)


def test_a_hand_off_nobody_took_reports_the_upload_not_handed_on(service: FakeLogService) -> None:
    result = run_python(HANDOFF_NOBODY_TAKES.format(url=service.url), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "False"], result.stdout
    assert messages(service) == ["first line"]


REFUSED_SPAWN_CHILD = """
import multiprocessing, lelog
CONFIG = dict(url={url!r}, account_id="acct", token="secret-token")

def child():
    writer = lelog.StreamWriter("k", lelog.LogConfig(**CONFIG))
    writer.write_line("refused")
    stats = writer.close()
    print("CHILD", stats.handed_on, stats.dropped["rejected"], "handed on" in stats.summary(), flush=True)

if __name__ == "__main__":
    writer = lelog.StreamWriter("k", lelog.LogConfig(**CONFIG))
    writer.write_line("parent line")
    p = multiprocessing.get_context("spawn").Process(target=child)
    p.start()
    p.join()
    writer.close()
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the guard uses Linux's abstract socket names"
)
def test_a_refused_spawn_child_does_not_report_handed_on(service: FakeLogService, tmp_path: Any) -> None:
    script = tmp_path / "refused.py"
    script.write_text(REFUSED_SPAWN_CHILD.format(url=service.url))
    result = run_python(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')", timeout=90)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["CHILD", "False", "1", "False"], (result.stdout, result.stderr)
    assert result.stderr.count("is held by the parent process") == 1


# -- 5. a conflicting replacement leaves the pending hand-off as it was -------------------------

CONFLICTING_REPLACEMENT = (
    stream_dictconfig()
    + """
first = logging.getLogger().handlers[0]
for i in range(3):
    logging.info("first %d", i)
BAD = dict(CFG, handlers={{"stream": dict(CFG["handlers"]["stream"], history_bytes=1000)}})
try:
    logging.config.dictConfig(BAD)  # the old handler lets go; its replacement conflicts
except ValueError as exc:
    print("REFUSED", "history_bytes=1000" in str(exc.__cause__), flush=True)
first.close()  # outside the configuration call: finishes the stream nobody took on
print("FIRST", first.stats.handed_on, first.stats.uploaded, flush=True)
logging.config.dictConfig(CFG)  # corrected: a new log on the finished key
for i in range(2):
    logging.info("second %d", i)
"""
)


def test_a_conflicting_replacement_leaves_the_hand_off_to_finish(service: FakeLogService) -> None:
    result = run_python(CONFLICTING_REPLACEMENT.format(url=service.url), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["REFUSED", "True", "FIRST", "False", "True"], result.stdout
    assert messages(service) == ["second 0", "second 1"]  # the second log, after the first ended
    ends = [r.method for r in service.requests_for(key="k", path="/stream") if r.method in ("POST", "DELETE")]
    assert ends == ["POST", "DELETE", "POST", "DELETE"]  # one stream at a time, never overlapping


# -- 9. the fork channel's reader ends with the last stream that uses it ------------------------

CHANNEL_ENDS = """
import os, threading, lelog
from lelog.testing import MemoryBackend

def fork_a_child_on(key):
    backend = MemoryBackend()
    writer = lelog.StreamWriter(key, backend, close_timeout=5)
    writer.write_line("parent")
    pid = os.fork()
    if pid == 0:
        writer.write_line("child")
        os._exit(0)
    os.waitpid(pid, 0)
    readers = [t for t in threading.enumerate() if t.name == "lelog-fork-channel"]
    writer.close()
    for t in readers:
        t.join(20)  # a condition with a hang bound, not a pause
    outs = [line.out.strip() for line in backend.stream(key).uploaded or ()]
    print(key, len(readers), sum(t.is_alive() for t in readers), outs, flush=True)

fork_a_child_on("k")
fork_a_child_on("k2")  # the next fork makes a new channel
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_the_fork_channel_reader_ends_when_its_last_stream_finishes() -> None:
    result = run_python(CHANNEL_ENDS, timeout=90)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "k 1 0 ['parent', 'child']",
        "k2 1 0 ['parent', 'child']",
    ], result.stdout


# -- 4. a new writer on a key waits for the old one to finish it before opening -----------------


class GatedUploads(MemoryBackend):
    """A far end whose uploads wait for the test to let them through."""

    def __init__(self) -> None:
        super().__init__()
        self.uploading = threading.Event()
        self.let_through = threading.Event()

    def upload(self, key: str, lines: Any, **opts: Any) -> None:
        self.uploading.set()
        assert self.let_through.wait(60)
        super().upload(key, lines, **opts)


def test_a_new_writer_on_a_key_being_finished_opens_only_after_the_old_close() -> None:
    backend = GatedUploads()
    old = StreamWriter("k", backend, close_timeout=30)
    old.write_line("old line")
    old.close(wait=False)  # the worker runs the final sequence: it waits in the upload
    assert backend.uploading.wait(30)
    try:
        new = StreamWriter("k", backend, close_timeout=30)  # the old one is finishing: a new log
        new.write_line("new line")
        # A negative check: the new writer must not open (or push) while the old one is
        # finishing; it has a second to do so wrongly.  The order below is the proof.
        assert new.flush(1.0) is False
    finally:
        backend.let_through.set()
    assert old.close().uploaded is True
    assert new.close().uploaded is True
    assert backend.calls == [
        ("open_stream", "k"),
        ("write", "k"),
        ("upload", "k"),
        ("close_stream", "k"),
        ("open_stream", "k"),
        ("write", "k"),
        ("upload", "k"),
        ("close_stream", "k"),
    ]
    stored = [line.out for line in backend.stream("k").uploaded or ()]
    assert stored == ["new line\n"]  # the second log, as the service does on re-open


# -- one os.register_at_fork registration for the whole library ---------------------------------

ONE_FORK_HOOK = """
import os
registered = []
original = os.register_at_fork

def counting(**hooks):
    if any(getattr(hook, "__module__", "").startswith("lelog") for hook in hooks.values()):
        registered.append(sorted(hooks))  # lelog's, not the standard library's or httpx's
    original(**hooks)

os.register_at_fork = counting
import lelog, lelog.testing, lelog._cli  # every module, the client and the CLI included
os.register_at_fork = original
print(registered, flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="needs os.register_at_fork")
def test_lelog_registers_one_fork_hook() -> None:
    result = run_python(ONE_FORK_HOOK, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[['after_in_child', 'before']]", result.stdout
