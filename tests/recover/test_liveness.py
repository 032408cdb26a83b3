"""Whose a stream is: recovery goes by the stream lock and by what the live stream holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List

import pytest

import lelog
from lelog._spool import MANIFEST
from lelog._streamlock import StreamLock, StreamName, holder_of
from tests.helpers import ROOT, dead_url, wait_until
from tests.recover.spools import dead_spool, live_rows, outs, recover, target_code, writer
from tests.service import FakeLogService
from tests.test_recover import TOKEN, _env, _spooled, _spools
from tests.test_streamlock import _end, _start_holder, _unshare_works


def test_a_writer_with_a_spool_holds_its_stream_lock_until_it_closes(
    tmp_path: Path, service: FakeLogService
) -> None:
    spool = tmp_path / "spool"
    w = writer(service, "job/held", spool_dir=str(spool))
    w.write_line("a line")
    assert wait_until(lambda: _spooled(spool) == 1)
    (directory,) = _spools(spool)
    assert json.loads((directory / MANIFEST).read_bytes())["stream_locked"] is True
    config = lelog.LogConfig(url=service.url, account_id="acct", token=TOKEN)
    with lelog.LogServiceClient(config) as client:
        name = StreamName.of(config, client, "job/held")
    holder = holder_of(name)
    assert holder is not None and holder.is_this_process() and holder.purpose == "writer"
    assert w.close().uploaded is True
    assert holder_of(name) is None


_NAMESPACED_WRITER = """
import os, time
import lelog
writer = lelog.StreamWriter({key!r}, {target}, spool_dir={spool!r}, flush_interval=0.2)
writer.open()
for i in range(20):
    writer.write_line(f"line {{i}}")
while writer.spool_stats.written < 20:
    time.sleep(0.02)
writer.flush(10)
print("pid", os.getpid(), flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not _unshare_works(), reason="no pid namespaces here (unshare --pid)")
def test_a_writer_in_another_pid_namespace_is_left_alone_until_it_dies(
    tmp_path: Path, service: FakeLogService
) -> None:
    spool = tmp_path / "spool"
    code = _NAMESPACED_WRITER.format(key="job/ns", target=target_code(service), spool=str(spool))
    child = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=str(ROOT),
        start_new_session=True,  # its own process group: killed whole below
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "pid 1\n"
        (directory,) = _spools(spool)
        assert json.loads((directory / MANIFEST).read_bytes())["owner"]["pid"] == 1
        result = recover(spool, service)
        assert result.returncode == 0, result.stderr
        assert "left alone: its writer still runs (pid " in result.stdout
        assert ", 1 in its pid namespace)" in result.stdout
        assert service.is_open("job/ns") and _spools(spool) == [directory]
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(60)
        assert child.stdout is not None
        child.stdout.close()
    result = recover(spool, service)
    assert result.returncode == 0, result.stderr
    assert "recovered" in result.stdout and "stream closed" in result.stdout
    assert outs(service, "job/ns") == [f"line {i}\n" for i in range(20)]


def test_a_new_run_without_a_spool_holds_the_stream_lock_and_keeps_its_live_stream(
    tmp_path: Path, service: FakeLogService
) -> None:
    spool = tmp_path / "spool"
    dead = dead_spool(spool, service, "job/rerun")
    new = writer(service, "job/rerun")  # no spool: the writer itself holds the stream lock
    for i in range(20):
        new.write_line(f"new {i}")
    assert new.flush(timeout=30)
    result = recover(spool, service)
    assert result.returncode == 0, result.stderr
    assert f"left alone: a running writer (pid {os.getpid()}) holds this key now" in result.stdout
    assert service.is_open("job/rerun") and _spools(spool) == [dead]
    new.write_line("new 20")
    stats = new.close()
    assert stats.uploaded is True and stats.dropped_total == 0 and stats.last_error is None
    assert outs(service, "job/rerun") == [f"new {i}\n" for i in range(21)]


def test_a_live_stream_written_from_elsewhere_is_left_alone_by_its_lines(
    tmp_path: Path, service: FakeLogService
) -> None:
    spool = tmp_path / "spool"
    dead = dead_spool(spool, service, "job/elsewhere")
    # A writer on another host holds no lock here: only the stream's own lines tell.
    config = lelog.LogConfig(url=service.url, account_id="acct", token=TOKEN)
    with lelog.LogServiceClient(config) as client:
        client.open_stream("job/elsewhere")
        client.write(
            "job/elsewhere", [lelog.Line(out=f"other {i}\n", pos=i, time=time.time()) for i in range(5)]
        )
        result = recover(spool, service)
        assert result.returncode == 0, result.stderr
        assert "left alone: its live stream holds a line 0 that is not the spool's" in result.stdout
        assert service.is_open("job/elsewhere") and _spools(spool) == [dead]
        assert live_rows(service, "job/elsewhere") == [f"other {i}\n" for i in range(5)]


def test_a_crashed_writers_own_live_stream_is_finished(tmp_path: Path, service: FakeLogService) -> None:
    spool = tmp_path / "spool"
    dead_spool(spool, service, "job/own")
    assert live_rows(service, "job/own") == [f"line {i}\n" for i in range(20)]  # its lines only
    result = recover(spool, service)
    assert result.returncode == 0, result.stderr
    assert "20 lines stored, stream closed" in result.stdout
    assert not service.is_open("job/own")


def test_a_closed_writers_spool_is_recovered_while_its_process_lives(
    tmp_path: Path, service_factory: Callable[..., FakeLogService]
) -> None:
    spool = tmp_path / "spool"
    url = dead_url()
    config = lelog.LogConfig(url=url, account_id="acct", token=TOKEN, max_attempts=1)
    w = lelog.StreamWriter("job/closed", config, spool_dir=str(spool), flush_interval=0.05, close_timeout=1)
    for i in range(30):
        w.write_line(f"line {i}")
    stats = w.close()
    assert stats.uploaded is False  # the service was down: the spool stays, its lock does not
    assert _spooled(spool) == 30
    service = service_factory(port=int(url.rsplit(":", 1)[1]))
    result = recover(spool, service)
    assert result.returncode == 0, result.stderr
    assert "recovered" in result.stdout and "30 lines stored" in result.stdout
    assert outs(service, "job/closed") == [f"line {i}\n" for i in range(30)]
    assert _spools(spool) == []


def test_a_spool_written_without_the_stream_lock_is_judged_by_its_writers_pid(
    tmp_path: Path, service: FakeLogService
) -> None:
    spool = tmp_path / "spool"
    dead = dead_spool(spool, service, "job/old")
    manifest = json.loads((dead / MANIFEST).read_bytes())
    me = lelog._spool.ProcessIdentity.current()
    manifest.update(
        stream_locked=False, owner={"pid": me.pid, "start_time": me.start_time, "boot_id": me.boot_id}
    )
    (dead / MANIFEST).write_text(json.dumps(manifest))
    result = recover(spool, service)
    assert result.returncode == 0, result.stderr
    assert f"left alone: its writer still runs (pid {os.getpid()})" in result.stdout
    del manifest["stream_locked"]  # as an older lelog wrote it, for a writer that is gone
    manifest["owner"]["start_time"] = me.start_time - 1 if me.start_time else None
    (dead / MANIFEST).write_text(json.dumps(manifest))
    if me.start_time is None:
        pytest.skip("no /proc: start times are unknown here")
    result = recover(spool, service)
    assert result.returncode == 0 and "recovered" in result.stdout, result


def test_recover_holds_the_stream_lock_while_it_finishes_a_spool(
    tmp_path: Path, service: FakeLogService
) -> None:
    spool = tmp_path / "spool"
    dead_spool(spool, service, "job/busy")
    for path in ("/blob/link/upload", "/blob"):
        service.fail_next(100_000, 503, method="POST", path=path)
    env = _env(LELOG_TOKEN=TOKEN, LELOG_MAX_ATTEMPTS="1000000", LELOG_MAX_RETRY_WAIT="0.1")
    args = ["--spool", str(spool), "--url", service.url, "--account-id", "acct", "--timeout", "300"]
    run = subprocess.Popen(
        [sys.executable, "-m", "lelog", "recover", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(ROOT),
    )
    output: List[str] = []
    reader = threading.Thread(target=lambda: output.extend(run.communicate(timeout=120)))
    reader.start()
    try:
        config = lelog.LogConfig(url=service.url, account_id="acct", token=TOKEN)
        with lelog.LogServiceClient(config) as client:
            name = StreamName.of(config, client, "job/busy")
        assert wait_until(lambda: service.requests_for("job/busy", path="/blob/link/upload") != [])
        holder = holder_of(name)
        assert holder is not None and holder.purpose == "lelog recover" and holder.local_pid == run.pid
        assert StreamLock.try_acquire(name) is None  # a writer starting now would find it held
    finally:
        service.clear_faults()
        reader.join(120)
    assert run.returncode == 0, output
    assert "recovered" in output[0]
    assert holder_of(name) is None
    assert outs(service, "job/busy") == [f"line {i}\n" for i in range(20)]


def test_a_writer_waits_while_a_process_that_takes_no_lines_holds_its_stream(
    tmp_path: Path,
    service: FakeLogService,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The holder is not a writer (as ``lelog recover`` finishing an old run): the writer
    neither opens over it nor spools; its lines wait, and it takes the stream once free."""
    spool = tmp_path / "spool"
    config = lelog.LogConfig(url=service.url, account_id="acct", token=TOKEN)
    with lelog.LogServiceClient(config) as client:
        name = StreamName.of(config, client, "job/shared")
    code = f"""
import sys
from lelog._streamlock import StreamLock, StreamName
lock = StreamLock.try_acquire(StreamName({name.service!r}, "acct", "job/shared"), purpose="lelog recover")
print("held", flush=True)
sys.stdin.read()
"""
    holder = _start_holder([sys.executable, "-c", code])
    w = writer(service, "job/shared", spool_dir=str(spool))
    try:
        for i in range(5):
            w.write_line(f"mine {i}")
        said: list[str] = []

        def warned() -> bool:  # on the lelog logger: captured, or on stderr where nothing handles it
            said.append(capfd.readouterr().err)
            return "takes no lines" in caplog.text + "".join(said)

        assert wait_until(warned, timeout=30)
        assert not service.requests and _spooled(spool) == 0 and w.pending == 5
        _end(holder)
        assert w.flush(timeout=30)
    finally:
        _end(holder)
        stats = w.close()
    assert stats.uploaded is True and stats.dropped_total == 0
    assert outs(service, "job/shared") == [f"mine {i}\n" for i in range(5)]


@pytest.mark.parametrize("eof_at_close", [True, False])
def test_peek_reads_what_a_live_stream_holds_without_following_it(
    service_factory: Callable[..., FakeLogService], eof_at_close: bool
) -> None:
    service = service_factory(eof_at_close=eof_at_close)
    config = lelog.LogConfig(url=service.url, account_id="acct", token=TOKEN)
    with lelog.LogServiceClient(config) as client:
        assert client.peek("k", quiet=0.2) == []  # not open: at once, or after the quiet period
        client.open_stream("k")
        client.write("k", [lelog.Line(f"line {i}\n", i, 1.0 + i) for i in range(10)])
        assert [line.out for line in client.peek("k", quiet=0.2)] == [f"line {i}\n" for i in range(10)]
        assert [line.pos for line in client.peek("k", quiet=0.2, max_lines=3)] == [0, 1, 2]
        assert service.is_open("k")  # only read
