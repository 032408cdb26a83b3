"""Fork children belong to their parent's log, tested from child processes.

Each script's parent logs through a handler on the root logger, starts fork children that
log and return, and exits; the stored log must hold every line once, ``pos`` contiguous,
with one open and one close of the stream, all by the parent.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from tests.helpers import dead_url, run_python, stream_dictconfig
from tests.service import FakeLogService

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

HEADER = """
import logging, multiprocessing, os, sys, lelog
root = logging.getLogger()
root.setLevel(logging.INFO)
handler = lelog.StreamHandler("k", url={url!r}, account_id="acct", token="secret-token", close_timeout=5)
root.addHandler(handler)
logging.info("parent before")

def work(n):
    for i in range(5):
        logging.info("child %d line %d", n, i)
    return n
"""

CHILDREN = {
    "Process": """
ctx = multiprocessing.get_context("fork")
procs = [ctx.Process(target=work, args=(n,)) for n in range(3)]
for p in procs:
    p.start()
for p in procs:
    p.join()
""",
    "Pool": """
with multiprocessing.get_context("fork").Pool(3) as pool:
    assert sorted(pool.map(work, range(3))) == [0, 1, 2]
""",
    "ProcessPoolExecutor": """
from concurrent.futures import ProcessPoolExecutor
with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("fork")) as pool:
    assert sorted(pool.map(work, range(3))) == [0, 1, 2]
""",
    "os.fork": """
for n in range(3):
    pid = os.fork()
    if pid == 0:
        work(n)
        os._exit(0)
    os.waitpid(pid, 0)
""",
}

FOOTER = """
logging.info("parent after")
handler.flush()  # lines the children sent are delivered and counted
stats = handler.stats
print(stats.accepted, stats.dropped_total, flush=True)
"""


def outs(rows: list[dict] | None) -> list[str]:
    return [row["out"] for row in rows or []]


def messages(service: FakeLogService, key: str = "k") -> list[str]:
    return [row["out"].split('msg="')[1].split('"')[0] for row in service.blob_lines(key) or []]


@pytest.mark.parametrize("how", sorted(CHILDREN))
def test_lines_of_fork_children_reach_the_parents_stored_log(service: FakeLogService, how: str) -> None:
    code = HEADER.format(url=service.url) + CHILDREN[how] + FOOTER
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr
    accepted, dropped = map(int, result.stdout.split())
    assert (accepted, dropped) == (2 + 15, 0)  # the children's lines counted by the parent
    stored = messages(service)
    children = [f"child {n} line {i}" for n in range(3) for i in range(5)]
    assert stored[0] == "parent before" and stored[-1] == "parent after"
    assert sorted(stored[1:-1]) == sorted(children)
    for n in range(3):  # each child's lines in its order
        mine = [m for m in stored if m.startswith(f"child {n} ")]
        assert mine == [f"child {n} line {i}" for i in range(5)]
    assert [row["pos"] for row in service.blob_lines("k") or []] == list(range(len(stored)))
    live = [row["out"] for row in service.all_written("k")]
    assert len(live) == len(stored)  # live once each, too
    assert len(service.requests_for(key="k", method="POST", path="/stream")) == 1
    assert len(service.requests_for(key="k", method="DELETE", path="/stream")) == 1


CONFIGURED_IN_CHILD = (
    stream_dictconfig()
    + """
import os
logging.info("parent before")
pid = os.fork()
if pid == 0:
    logging.config.dictConfig(CFG)  # as Celery's worker_process_init or gunicorn's post_fork
    logging.info("child line")
    os._exit(0)
os.waitpid(pid, 0)
logging.info("parent after")
"""
)


def test_a_writer_built_in_a_fork_child_on_a_held_key_joins_the_parent(service: FakeLogService) -> None:
    result = run_python(CONFIGURED_IN_CHILD.format(url=service.url), timeout=60)
    assert result.returncode == 0, result.stderr
    assert messages(service) == ["parent before", "child line", "parent after"]
    assert len(service.requests_for(key="k", method="POST", path="/stream")) == 1
    assert len(service.requests_for(key="k", method="DELETE", path="/stream")) == 1


FULL_CHANNEL = """
import os, lelog
from lelog.testing import MemoryBackend
backend = MemoryBackend()
writer = lelog.StreamWriter("k", backend, close_timeout=5, history_bytes=200 << 20)
writer.write_line("parent")
pid = os.fork()
if pid == 0:
    written = 0
    for i in range(200_000):  # far more than the channel holds while the parent is busy
        writer.write_line("x" * 200)
        written += 1
    # Drops at the very end are learned from the next line's sequence number: write one
    # more until the channel takes it (a child that ends on a full channel: see the docs).
    sent = writer.stats.sent
    while writer.stats.sent == sent:
        writer.write_line("last")
        written += 1
    print(written, writer.stats.sent, writer.stats.dropped["overflow"], flush=True)
    os._exit(0)
os.waitpid(pid, 0)
stats = writer.close()
stored = [line.out for line in backend.stream("k").uploaded or ()]
markers = sum(1 for out in stored if out.startswith("[lelog] ") and "dropped" in out)
print(stats.accepted, stats.sent, stats.dropped["overflow"], markers, stored[-1].strip())
"""


def test_a_full_channel_never_blocks_the_child_and_its_drops_are_counted_by_the_parent() -> None:
    result = run_python(FULL_CHANNEL, timeout=120)
    assert result.returncode == 0, result.stderr
    child_line, parent_line = result.stdout.splitlines()
    written, child_sent, child_dropped = map(int, child_line.split())
    accepted, sent, overflow, markers, last = parent_line.split()
    assert child_sent + child_dropped == written
    assert int(accepted) == 1 + written  # every line the child wrote is counted by the parent
    assert int(overflow) >= child_dropped and int(sent) + int(overflow) <= int(accepted)
    assert last == "last"
    assert child_dropped == 0 or int(markers) > 0  # the parent marked where lines are missing


SPAWN_ON_A_HELD_KEY = """
import logging, multiprocessing, sys, lelog
CONFIG = dict(url={url!r}, account_id="acct", token="secret-token", close_timeout=5)

def child(key):
    handler = lelog.StreamHandler(key, **CONFIG)
    logger = logging.getLogger("child")
    logger.addHandler(handler)
    for i in range(3):
        logger.warning("child line %d", i)
    handler.close()
    stats = handler.stats
    print("CHILD", key, stats.accepted, stats.sent, stats.dropped["rejected"], flush=True)

if __name__ == "__main__":
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handler = lelog.StreamHandler("k", **CONFIG)
    root.addHandler(handler)
    logging.info("parent before")
    ctx = multiprocessing.get_context({method!r})
    for key in ("k", "own"):
        p = ctx.Process(target=child, args=(key,))
        p.start()
        p.join()
    logging.info("parent after")
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_spawn_child_on_its_parents_key_joins_the_parents_stream(
    service: FakeLogService, tmp_path: Any, method: str
) -> None:
    script = tmp_path / "spawning.py"
    script.write_text(SPAWN_ON_A_HELD_KEY.format(url=service.url, method=method))
    result = run_python(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')", timeout=90)
    assert result.returncode == 0, result.stderr
    lines = sorted(line.split()[1:] for line in result.stdout.splitlines() if line.startswith("CHILD"))
    assert lines == [
        ["k", "3", "3", "0"],
        ["own", "3", "3", "0"],
    ]  # handed to the parent; its own key as usual
    assert "is held" not in result.stderr, result.stderr
    assert messages(service) == ["parent before", *(f"child line {i}" for i in range(3)), "parent after"]
    assert len(service.requests_for(key="k", method="POST", path="/stream")) == 1  # never re-opened


CONFIG = {"account_id": "acct", "token": "secret-token"}


# -- children's lines stream live even before the parent logs --------------------------------

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


# -- a grandchild (a fork inside a fork child) sends to the same owner -----------------------

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


# -- a long-lived fork child does not keep its parent's claim on a finished stream -----------

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


# -- the fork channel's reader ends with the last stream that uses it ------------------------

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
    readers = [t for t in threading.enumerate() if t.name == "lelog-channel"]
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


# -- lelog's own locks held at the fork, and a child that writes -------------------------------

FORK_WITH_LOCKS_HELD = """
import os, signal, threading, time, lelog
from lelog.testing import MemoryBackend

# No public effect shows a lock held at the fork: the script takes lelog's private locks
# itself (the stream's ledger, the writer's partial line, its warnings', the jobs' registry), on threads that hold them until
# the child has ended.  This is the one test that reaches into them; it needs to.
held = threading.Semaphore(0)
done_with_child = threading.Event()

def hold(lock):
    def run():
        with lock:
            held.release()
            done_with_child.wait()
    threading.Thread(target=run, daemon=True).start()

writer = lelog.StreamWriter("k", lelog.LogConfig(url={url!r}, account_id="a", token="t"), close_timeout=1)
hold(writer._engine.ledger.lock)
hold(writer.split_lock)
hold(writer._engine._warnings._lock)
import lelog._job as job
hold(job._registry_lock)
for _ in range(4):
    held.acquire()
pid = os.fork()
if pid == 0:
    signal.alarm(20)  # the hang bound: a child stuck on a lock is killed (exit code -14)
    writer.write_line("child")
    writer.close(timeout=1)
    with lelog.log_stream("child-job", MemoryBackend()):
        pass
    os._exit(0)
start = time.monotonic()
_, status = os.waitpid(pid, 0)
print("CHILD", os.waitstatus_to_exitcode(status), round(time.monotonic() - start, 1))
done_with_child.set()
"""


def test_fork_while_lelog_locks_are_held_does_not_hang_the_child() -> None:
    result = run_python(FORK_WITH_LOCKS_HELD.format(url=dead_url()), timeout=40)
    assert result.returncode == 0, result.stderr
    tag, code, _elapsed = result.stdout.split()
    assert (tag, code) == ("CHILD", "0")


FORK_SCRIPT = """
import os, lelog
config = lelog.LogConfig(url={url!r}, account_id="acct", token="secret-token")
writer = lelog.StreamWriter("k", config, flush_interval=0.05, close_timeout=3)
writer.write_line("parent before fork")
assert writer.flush(3)
writer.write_line("parent pending at fork")
pid = os.fork()
if pid == 0:
    writer.write_line("child line")
    ok = writer.flush(3)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
writer.write_line("parent after fork")
stats = writer.close()
print(os.waitstatus_to_exitcode(status), stats.sent)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_hands_its_lines_to_the_parent_and_nothing_is_sent_twice(service: FakeLogService) -> None:
    """The parent's pending lines stay the parent's; the child's line goes to the parent's
    stream through the fork-child channel (tests/test_fork.py has the multiprocessing cases)."""
    result = run_python(FORK_SCRIPT.format(url=service.url), timeout=30)
    assert result.returncode == 0, result.stderr
    child_code, parent_sent = map(int, result.stdout.split())
    assert child_code == 0 and parent_sent == 4
    expected = ["parent before fork\n", "parent pending at fork\n", "child line\n", "parent after fork\n"]
    assert outs(service.all_written("k")) == expected
    assert outs(service.blob_lines("k")) == expected
    assert len(service.requests_for(key="k", method="POST", path="/stream")) == 1


AFTER_THE_PARENT = """
import os, lelog
from lelog.testing import MemoryBackend
backend = MemoryBackend()
writer = lelog.StreamWriter("k", backend, close_timeout=5)
writer.write_line("parent")
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.read(read, 1)  # the parent's stream has ended
    for i in range(50):
        writer.write_line(f"child {i}")
    stats = writer.close()
    print(stats.sent, stats.dropped["after_close"], flush=True)
    os._exit(0)
writer.close()
os.write(write, b"x")
os.waitpid(pid, 0)
print(len(backend.stream("k").uploaded or ()))
"""


def test_a_fork_child_logging_after_its_parents_stream_on_a_backend_of_its_own_counts_lines_dropped() -> None:
    """A backend object of the process (no meeting place on the host): nothing can continue
    the parent's log, so the lines are counted as dropped after close, never as sent (with a
    service or the file store the child continues the log: tests/test_processes_on_one_key.py)."""
    result = run_python(AFTER_THE_PARENT, timeout=60)
    assert result.returncode == 0, result.stderr
    child, parent = result.stdout.split("\n")[:2]
    assert child.split() == ["0", "50"]
    assert parent == "1"


FORKS_WHILE_THE_STREAM_STARTS = """
import os, signal, sys, time
import lelog
hung = 0
for trial in range(20):
    os.environ["LELOG_RUNTIME_DIR"] = os.path.join({runtime!r}, str(trial))
    writer = lelog.StreamWriter(f"k{{trial}}", lelog.LogConfig(url={url!r}, account_id="acct", token="secret-token"))
    kids = []
    if (pid := os.fork()) == 0:  # its lines make the parent's channel reader start the stream
        for i in range(20):
            writer.write_line(f"a {{i}}")
        writer.close()
        os._exit(0)
    kids.append(pid)
    for n in range(6):  # as a server forks its workers, meanwhile
        time.sleep(0.002 * n)
        if (pid := os.fork()) == 0:
            import httpcore, certifi  # what the stream's start imports, in the parent
            writer.write_line(f"worker {{n}}")
            os._exit(0)
        kids.append(pid)
    deadline = time.monotonic() + 15
    for kid in kids:
        while not os.waitpid(kid, os.WNOHANG)[0]:
            if time.monotonic() > deadline:
                hung += 1
                os.kill(kid, signal.SIGKILL)
                os.waitpid(kid, 0)
                break
            time.sleep(0.01)
    writer.close()
print("hung", hung, flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_children_forked_while_the_parents_stream_starts_never_hang(
    service: FakeLogService, tmp_path: Any
) -> None:
    """A parent's stream starts on its channel reader (a child's first line) while its main
    thread forks more children: a child made while the parent imported httpcore or built
    its TLS context would wait forever on the copied locks; the fork waits for them instead."""
    code = FORKS_WHILE_THE_STREAM_STARTS.format(url=service.url, runtime=str(tmp_path / "runtime"))
    result = run_python(code, timeout=240)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hung", "0"], result.stderr
