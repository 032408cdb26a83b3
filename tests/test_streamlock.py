"""The stream lock: one writer process per stream on a host, seen by every process, dropped at death."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

import lelog
from lelog._streamlock import StreamLock, StreamName, far_end, holder_of
from lelog.testing import MemoryBackend
from tests.helpers import ROOT, run_python

NAME = StreamName("http://127.0.0.1:8080", "acct", "ci/step")

_HOLDER = """
import sys
from lelog._streamlock import StreamLock, StreamName
lock = StreamLock.try_acquire(StreamName("http://127.0.0.1:8080", "acct", "ci/step"), {directory!r})
print("held" if lock is not None else "refused", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def directory(tmp_path: Path) -> str:
    return str(tmp_path)


@pytest.fixture
def holder(directory: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding NAME's lock until its stdin closes."""
    child = _start_holder([sys.executable, "-c", _HOLDER.format(directory=directory)])
    try:
        yield child
    finally:
        _end(child)


def _start_holder(command: list[str]) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "held\n"
    return child


def _end(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.communicate("", timeout=60)
    else:
        child.wait(60)
    for pipe in (child.stdin, child.stdout):
        if pipe is not None and not pipe.closed:
            pipe.close()


def _other_process_sees(directory: str) -> str:
    """What a fresh process finds: ``free`` (it took the lock, then let go) or ``held by <pid>``."""
    result = run_python(
        f"""
        from lelog._streamlock import StreamLock, StreamName, holder_of
        name = StreamName("http://127.0.0.1:8080", "acct", "ci/step")
        lock = StreamLock.try_acquire(name, {directory!r})
        if lock is None:
            print("held by", holder_of(name, {directory!r}).pid)
        else:
            lock.release()
            print("free")
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://LOG-Service:8080/", "http://log-service:8080"),
        ("https://user:pw@gw.example/log-service/?x=1#f", "https://gw.example:443/log-service"),
        ("http://gw.example", "http://gw.example:80"),
        ("http://[::1]:8080/p", "http://[::1]:8080/p"),
    ],
)
def test_a_service_is_named_by_scheme_host_port_and_path(url: str, named: str) -> None:
    assert far_end(url) == named


def test_one_stream_has_one_name_and_a_short_lock_path(tmp_path: Path) -> None:
    config = lelog.LogConfig(url="http://Log-Service/", account_id="acct", token="t")
    with lelog.LogServiceClient(config) as client:
        name = StreamName.of(config, client, "a/" + "very long key " * 200)
    assert name.service == "http://log-service:80" and name.account == "acct"
    other = StreamName.of(
        lelog.LogConfig(url="http://log-service:80", account_id="acct", token="t"), client, name.key
    )
    assert other == name and other.digest == name.digest
    assert StreamName(name.service, "another account", name.key).digest != name.digest
    assert len(name.lock_path("/run/user/1000/lelog").encode()) < 108
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "store", target_is_directory=True)
    via_link = StreamName.of(lelog.LogConfig(), lelog.FileStore(link), "k")
    assert via_link == StreamName("file:" + str((tmp_path / "store").resolve()), "", "k")
    with pytest.raises(TypeError, match="MemoryBackend"):
        StreamName.of(lelog.LogConfig(), MemoryBackend(), "k")


# -- one process ---------------------------------------------------------------------------------


def test_the_holding_process_is_refused_a_second_time_and_sees_itself(directory: str) -> None:
    lock = StreamLock.try_acquire(NAME, directory, purpose="writer")
    assert lock is not None and lock.held
    try:
        assert StreamLock.try_acquire(NAME, directory) is None  # its writers share the stream
        holder = holder_of(NAME, directory)
        assert holder is not None and holder.is_this_process() and holder.purpose == "writer"
        assert holder.pid == os.getpid()
    finally:
        lock.release()
    assert not lock.held and holder_of(NAME, directory) is None


def test_asking_who_holds_it_never_drops_this_processs_lock(directory: str) -> None:
    lock = StreamLock.try_acquire(NAME, directory)
    assert lock is not None
    try:
        for _ in range(3):
            assert holder_of(NAME, directory) is not None
        assert _other_process_sees(directory) == f"held by {os.getpid()}"
    finally:
        lock.release()


def test_release_is_idempotent_removes_the_file_and_frees_the_stream(directory: str) -> None:
    lock = StreamLock.try_acquire(NAME, directory)
    assert lock is not None and os.path.exists(NAME.lock_path(directory))
    lock.release()
    lock.release()
    assert not os.path.exists(NAME.lock_path(directory))
    assert _other_process_sees(directory) == "free"


def test_a_lock_file_nobody_holds_is_free(directory: str) -> None:
    Path(NAME.lock_path(directory)).write_text('{"pid": 1, "purpose": "writer"}')  # a killed holder's
    assert holder_of(NAME, directory) is None
    lock = StreamLock.try_acquire(NAME, directory)
    assert lock is not None
    lock.release()


# -- other processes -----------------------------------------------------------------------------


def test_another_process_sees_the_lock_held_and_who_holds_it(
    directory: str, holder: subprocess.Popen[str]
) -> None:
    assert StreamLock.try_acquire(NAME, directory) is None
    found = holder_of(NAME, directory)
    assert found is not None and not found.is_this_process()
    assert (found.pid, found.local_pid, found.purpose) == (holder.pid, holder.pid, "writer")
    assert found.describe() == f"pid {holder.pid}"
    _end(holder)  # a clean exit lets go
    assert holder_of(NAME, directory) is None
    lock = StreamLock.try_acquire(NAME, directory)
    assert lock is not None
    lock.release()


def test_a_killed_holder_releases_the_lock(directory: str, holder: subprocess.Popen[str]) -> None:
    assert _other_process_sees(directory) == f"held by {holder.pid}"
    holder.send_signal(signal.SIGKILL)
    holder.wait(60)
    assert os.path.exists(NAME.lock_path(directory))  # a killed holder leaves its file...
    assert holder_of(NAME, directory) is None  # ...which holds nothing
    assert _other_process_sees(directory) == "free"


def test_a_fork_child_does_not_hold_its_parents_lock(directory: str) -> None:
    result = run_python(
        f"""
        import os
        from lelog._streamlock import StreamLock, StreamName, holder_of
        name = StreamName("http://127.0.0.1:8080", "acct", "ci/step")
        lock = StreamLock.try_acquire(name, {directory!r})
        pid = os.fork()
        if pid == 0:
            found = holder_of(name, {directory!r})
            print("child holds:", lock.held, "| holder is the parent:", found.pid == os.getppid(),
                  "| child may take it:", StreamLock.try_acquire(name, {directory!r}) is not None,
                  flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        # The child closed its copy of the descriptor: the parent's lock is still the kernel's.
        print("parent holds:", lock.held, holder_of(name, {directory!r}).is_this_process())
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "child holds: False | holder is the parent: True | child may take it: False"
    assert lines[1] == "parent holds: True True"


def test_the_parents_lock_survives_its_fork_childs_exit(directory: str) -> None:
    code = f"""
        import os, sys
        from lelog._streamlock import StreamLock, StreamName
        lock = StreamLock.try_acquire(StreamName("http://127.0.0.1:8080", "acct", "ci/step"), {directory!r})
        pid = os.fork()
        if pid == 0:
            os._exit(0)  # the child's after-fork step closed its copy of the descriptor
        os.waitpid(pid, 0)
        print("held", flush=True)
        sys.stdin.read()
        """
    parent = _start_holder([sys.executable, "-c", textwrap.dedent(code)])
    try:
        assert _other_process_sees(directory) == f"held by {parent.pid}"
    finally:
        _end(parent)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="no pid namespaces here (unshare --pid)")
def test_a_holder_in_another_pid_namespace_is_seen(directory: str) -> None:
    code = _HOLDER.format(directory=directory)
    holder = _start_holder(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code])
    try:
        found = holder_of(NAME, directory)
        assert found is not None and found.pid == 1  # pid 1 of its own namespace
        assert found.local_pid not in (None, 1) and not found.is_this_process()
        assert "1 in its pid namespace" in found.describe()
        assert StreamLock.try_acquire(NAME, directory) is None
    finally:
        _end(holder)
    assert _other_process_sees(directory) == "free"
