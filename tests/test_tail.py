"""Tails that follow a stream until it really ends and say how it ended.

Against the fake service with short timings: a ping every few tenths of a second stands for
the service's 30 s, so quiet periods longer than the call deadline take seconds.  A
Redis-like fake (``eof_at_close=False``) pings only every 30 s, as the service does: the
tail's own probes on quiet periods (every two seconds) are what ends it there.
"""

from __future__ import annotations

import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest

from lelog import LogConfig, LogServiceClient, LogServiceError
from lelog._line import Line
from tests.helpers import without_lelog_variables
from tests.service import FakeLogService
from tests.test_cli import ROOT, lelog, start, wait_until

KEY = "tail/step"


@pytest.fixture
def env() -> Dict[str, str]:
    return dict(without_lelog_variables(), PYTHONPATH=str(ROOT))


def flags(svc: FakeLogService, timeout: float = 1) -> List[str]:
    return ["--key", KEY, "--url", svc.url, "--account-id", svc.account_id, "--timeout", f"{timeout:g}"]


def client_for(svc: FakeLogService, deadline: float = 1.0) -> LogServiceClient:
    return LogServiceClient(
        LogConfig(url=svc.url, account_id=svc.account_id, token=svc.token, call_deadline=deadline)
    )


def put(client: LogServiceClient, *lines: Line) -> None:
    client.write(KEY, list(lines))


def line(pos: int) -> Line:
    return Line(f"line {pos}\n", pos, time.time())


def probes(svc: FakeLogService) -> int:
    """Empty writes: the tail asking whether the stream still lives."""
    return sum(1 for r in svc.requests if r.method == "PUT" and r.body == b"[]")


class Tail:
    """``lelog tail`` in a subprocess; its stdout lines collected as they come."""

    def __init__(self, svc: FakeLogService, env: Dict[str, str], tmp_path: Path, timeout: float = 1) -> None:
        self.proc = start(lelog("tail", *flags(svc, timeout)), dict(env, LELOG_TOKEN=svc.token), tmp_path)

    def finish(self, timeout: float = 30) -> subprocess.CompletedProcess:
        try:
            out, err = self.proc.communicate(timeout=timeout)  # a tail that never ends fails here
        finally:
            self.proc.kill()
            self.proc.wait()
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)


@pytest.fixture
def quick(service_factory: Callable[..., FakeLogService]) -> FakeLogService:
    return service_factory(keepalive=0.2, tail_tick=0.05)


def test_a_quiet_period_longer_than_the_deadline_keeps_the_tail_open(
    quick: FakeLogService, env: Dict[str, str], tmp_path: Path
) -> None:
    with client_for(quick) as client:
        client.open_stream(KEY)
        put(client, line(0))
        tail = Tail(quick, env, tmp_path)
        # Quiet for many pings and probes, well past the 1 s call deadline: the tail stays.
        assert wait_until(lambda: probes(quick) >= 3, timeout=30)
        assert tail.proc.poll() is None
        put(client, line(1))
        client.close_stream(KEY)
    result = tail.finish()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"line 0\nline 1\n"


def test_a_tail_ends_cleanly_when_a_service_without_eof_closes_the_stream(
    service_factory: Callable[..., FakeLogService], env: Dict[str, str], tmp_path: Path
) -> None:
    redis_like = service_factory(keepalive=0.2, eof_at_close=False)
    with client_for(redis_like) as client:
        client.open_stream(KEY)
        put(client, line(0), line(1))
        tail = Tail(redis_like, env, tmp_path)
        assert wait_until(lambda: redis_like.subscribers(KEY) == 1)
        put(client, line(2))
        client.close_stream(KEY)
    result = tail.finish()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"line 0\nline 1\nline 2\n"


def test_a_tail_whose_service_dies_exits_non_zero_with_one_line(
    quick: FakeLogService, env: Dict[str, str], tmp_path: Path
) -> None:
    with client_for(quick) as client:
        client.open_stream(KEY)
        put(client, line(0))
    tail = Tail(quick, env, tmp_path)
    assert wait_until(lambda: quick.subscribers(KEY) == 1)
    quick.stop()
    result = tail.finish()
    assert result.returncode == 1
    err = result.stderr.decode()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "connection to the log service dropped" in err and "could not be re-established" in err
    assert result.stdout == b"line 0\n"


def test_an_answer_that_is_not_an_event_stream_is_an_error(
    service: FakeLogService, env: Dict[str, str], tmp_path: Path
) -> None:
    service.fail_next(status=200, method="GET", path="/stream", body="<html>proxy login</html>")
    result = Tail(service, env, tmp_path).finish()
    assert result.returncode == 1
    assert "not an event stream" in result.stderr.decode() and len(result.stderr.splitlines()) == 1


def follow(client: LogServiceClient, into: List[str]) -> Iterator[None]:
    for seen in client.tail(KEY):
        into.append(seen.out)
        yield


def test_a_dropped_connection_to_a_live_stream_is_resumed_without_repeats(quick: FakeLogService) -> None:
    with client_for(quick, deadline=10) as client:
        client.open_stream(KEY)
        put(client, line(0), line(1))
        seen: List[str] = []
        steps = follow(client, seen)
        next(steps), next(steps)
        assert quick.drop_tails(KEY) == 1
        put(client, line(2))
        next(steps)
        client.close_stream(KEY)
        assert list(steps) == []
    assert seen == ["line 0\n", "line 1\n", "line 2\n"]
    assert sum(1 for r in quick.requests if r.method == "GET" and r.path == "/stream") == 2


class Follower:
    """Iterates ``client.tail(KEY)`` on a thread (a reconnection happens while it runs)."""

    def __init__(self, client: LogServiceClient) -> None:
        self.seen: List[str] = []
        self.error: Optional[BaseException] = None
        self.grew = threading.Condition()
        self.thread = threading.Thread(target=self._run, args=(client,))
        self.thread.start()

    def _run(self, client: LogServiceClient) -> None:
        try:
            for seen in client.tail(KEY):
                with self.grew:
                    self.seen.append(seen.out)
                    self.grew.notify_all()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def wait_for(self, count: int) -> bool:
        with self.grew:
            return self.grew.wait_for(lambda: len(self.seen) >= count, timeout=30)

    def ended(self) -> List[str]:
        self.thread.join(30)
        assert not self.thread.is_alive() and self.error is None, self.error
        return self.seen


def test_lines_the_service_no_longer_keeps_after_a_reconnection_are_marked(
    service_factory: Callable[..., FakeLogService],
) -> None:
    svc = service_factory(keepalive=0.2, retention=3)
    with client_for(svc, deadline=10) as client:
        client.open_stream(KEY)
        put(client, line(0))
        follower = Follower(client)
        assert follower.wait_for(1)
        svc.stall_next(seconds=3.0, method="GET", path="/stream")
        svc.drop_tails(KEY)
        assert wait_until(lambda: any(r.fault == "stall" for r in svc.requests))
        put(client, *[line(pos) for pos in range(1, 11)])  # the service keeps 8, 9 and 10
        assert follower.wait_for(5)
        client.close_stream(KEY)
        seen = follower.ended()
    assert seen == [
        "line 0\n",
        "lelog: --- 7 lines may be missing ---\n",
        "line 8\n",
        "line 9\n",
        "line 10\n",
    ]


def test_a_stream_re_opened_while_reconnecting_is_marked(quick: FakeLogService) -> None:
    with client_for(quick, deadline=10) as client:
        client.open_stream(KEY)
        put(client, line(0), line(1))
        follower = Follower(client)
        assert follower.wait_for(2)
        quick.stall_next(seconds=3.0, method="GET", path="/stream")
        quick.drop_tails(KEY)
        assert wait_until(lambda: any(r.fault == "stall" for r in quick.requests))
        client.open_stream(KEY)  # pos starts again at 0
        put(client, Line("new 0\n", 0, time.time()), Line("new 1\n", 1, time.time() + 1))
        assert follower.wait_for(4)
        client.close_stream(KEY)
        seen = follower.ended()
    assert seen[2:] == [
        "lelog: --- the stream was re-opened; lines may be missing ---\n",
        "new 0\n",
        "new 1\n",
    ]


def test_a_tail_that_cannot_reconnect_raises_from_the_iteration(quick: FakeLogService) -> None:
    with client_for(quick, deadline=1) as client:
        client.open_stream(KEY)
        put(client, line(0))
        lines = client.tail(KEY)
        assert next(lines).out == "line 0\n"
        quick.restart()  # the stream is forgotten, the connection cut without an eof
        with pytest.raises(LogServiceError, match="the stream has closed since"):
            next(lines)


def test_the_history_is_shown_when_a_stream_without_eof_closes_as_the_tail_connects(
    service_factory: Callable[..., FakeLogService],
) -> None:
    redis_like = service_factory(keepalive=0.2, eof_at_close=False)
    with client_for(redis_like) as client:
        client.open_stream(KEY)
        put(client, line(0), line(1))
        lines = client.tail(KEY)  # connected: the opening ping and the history are on their way
        client.close_stream(KEY)
        assert [seen.out for seen in lines] == ["line 0\n", "line 1\n"]


# -- a Redis-backed service: no end marker, a ping only every 30 s ---------------------------------

#: The marker lines a tail yields (``args`` {"lelog": "gap"}).
REOPENED = "lelog: --- the stream was re-opened; lines may be missing ---\n"


@pytest.fixture
def redis_like(service_factory: Callable[..., FakeLogService]) -> FakeLogService:
    """Pings every 30 s as the service does, and says nothing when a stream closes."""
    return service_factory(eof_at_close=False, tail_tick=0.05)


def test_a_tail_notices_a_close_within_seconds_without_waiting_for_a_ping(
    redis_like: FakeLogService, env: Dict[str, str], tmp_path: Path
) -> None:
    with client_for(redis_like) as client:
        client.open_stream(KEY)
        put(client, line(0))
        tail = Tail(redis_like, env, tmp_path)
        assert wait_until(lambda: redis_like.subscribers(KEY) == 1)
        assert wait_until(lambda: probes(redis_like) >= 2)  # quiet: probed, and still open
        assert tail.proc.poll() is None
        put(client, line(1))
        client.close_stream(KEY)
    result = tail.finish(timeout=15)  # the next ping would come only after 30 s
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"line 0\nline 1\n"
    # A probe writes no line: the stream got exactly the two lines written here.
    assert [row["out"] for row in redis_like.all_written(KEY)] == ["line 0\n", "line 1\n"]
    assert sum(1 for r in redis_like.requests if r.method == "GET" and r.path == "/stream") == 1


def test_a_quiet_tail_with_a_deadline_shorter_than_the_ping_interval_stays_open(
    redis_like: FakeLogService, env: Dict[str, str], tmp_path: Path
) -> None:
    with client_for(redis_like) as client:
        client.open_stream(KEY)
        put(client, line(0))
        tail = Tail(redis_like, env, tmp_path, timeout=0.5)
        # Many deadlines of quiet, with no ping: the probes' answers keep it open, on one connection.
        assert wait_until(lambda: probes(redis_like) >= 8)
        assert tail.proc.poll() is None
        client.close_stream(KEY)
    result = tail.finish(timeout=15)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"line 0\n"
    assert sum(1 for r in redis_like.requests if r.method == "GET" and r.path == "/stream") == 1


def timed_exit(tail: Tail, cut: Callable[[], object]) -> float:
    """Seconds from ``cut()`` returning to the tail's exit (a hang fails through the timeout)."""
    cut()
    started = time.monotonic()
    tail.proc.wait(timeout=30)
    return time.monotonic() - started


@pytest.mark.parametrize("how", ["stopped", "blackholed", "silent"])
def test_a_cut_ends_the_tail_within_its_timeout(
    service_factory: Callable[..., FakeLogService], env: Dict[str, str], tmp_path: Path, how: str
) -> None:
    svc = service_factory(eof_at_close=False, tail_tick=0.05)
    with client_for(svc) as client:
        client.open_stream(KEY)
        put(client, line(0))
    tail = Tail(svc, env, tmp_path, timeout=2)
    assert wait_until(lambda: svc.subscribers(KEY) == 1)
    assert wait_until(lambda: probes(svc) >= 1)  # following, and probing while quiet

    def cut() -> None:
        if how == "stopped":  # the service is gone: connections cut, new ones refused
            svc.stop()
        else:  # requests are never answered; the tail's connection is cut, or just falls silent
            svc.blackhole(True)
            if how == "blackholed":
                svc.drop_tails(KEY)

    elapsed = timed_exit(tail, cut)
    result = tail.finish()
    svc.blackhole(False)
    assert result.returncode == 1
    err = result.stderr.decode()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert result.stdout == b"line 0\n"
    # --timeout 2 is kept to within a second (a bound on the wait, generous for a loaded machine).
    assert elapsed < 3.0, (elapsed, err)


def test_a_stream_re_opened_under_a_tail_that_gets_the_end_marker_resumes_it_with_a_marker(
    quick: FakeLogService,
) -> None:
    with client_for(quick, deadline=10) as client:
        client.open_stream(KEY)
        put(client, line(0), line(1))
        follower = Follower(client)
        assert follower.wait_for(2)
        client.open_stream(KEY)  # the old stream's tails get the end marker; pos starts again at 0
        put(client, *[Line(f"new {pos}\n", pos, time.time()) for pos in range(5)])
        assert follower.wait_for(8)
        client.close_stream(KEY)
        seen = follower.ended()
    assert seen == ["line 0\n", "line 1\n", REOPENED, *[f"new {pos}\n" for pos in range(5)]]


def test_a_stream_re_opened_under_a_tail_whose_service_hands_it_on_is_marked(
    service_factory: Callable[..., FakeLogService],
) -> None:
    follows = service_factory(eof_at_close=False, reopen_follows=True, tail_tick=0.05)
    with client_for(follows, deadline=10) as client:
        client.open_stream(KEY)
        put(client, line(0), line(1))
        follower = Follower(client)
        assert follower.wait_for(2)
        client.open_stream(KEY)  # no end marker: the new stream's lines come on the old connection
        put(client, *[Line(f"new {pos}\n", pos, time.time()) for pos in range(5)])
        assert follower.wait_for(8)
        client.close_stream(KEY)
        seen = follower.ended()
    assert seen == ["line 0\n", "line 1\n", REOPENED, *[f"new {pos}\n" for pos in range(5)]]


def test_a_stream_re_opened_under_a_stranded_tail_ends_it_with_the_stored_log_after_a_marker(
    redis_like: FakeLogService,
) -> None:
    with client_for(redis_like, deadline=10) as client:
        client.open_stream(KEY)
        put(client, line(0), line(1))
        follower = Follower(client)
        assert follower.wait_for(2)
        # Another run's writer re-opens the key (lelog's writer looks first and would join
        # the live stream instead): the old connection gets nothing more, not even an end.
        new = [Line(f"new {pos}\n", pos, time.time()) for pos in range(5)]
        client.open_stream(KEY)
        put(client, *new)
        client.upload(KEY, new)
        client.close_stream(KEY)
        seen = follower.ended()
    assert seen == [
        "line 0\n",
        "line 1\n",
        "lelog: --- the stream was re-opened; its stored log follows ---\n",
        *[f"new {pos}\n" for pos in range(5)],
    ]


def test_lines_that_never_came_live_follow_from_the_stored_log(redis_like: FakeLogService) -> None:
    written = [line(pos) for pos in range(4)]
    with client_for(redis_like, deadline=10) as client:
        client.open_stream(KEY)
        put(client, *written[:2])
        follower = Follower(client)
        assert follower.wait_for(2)
        # Two more lines reach only the stored log (as when the service drops lines written
        # just before a close), then the stream is closed.
        client.upload(KEY, written)
        client.close_stream(KEY)
        seen = follower.ended()
    assert seen == [
        "line 0\n",
        "line 1\n",
        "lelog: --- 2 lines did not come live; from the stored log ---\n",
        "line 2\n",
        "line 3\n",
    ]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_tail_left_mid_stream_stops_reading_at_once(
    service_factory: Callable[..., FakeLogService], tmp_path: Path, scheme: str
) -> None:
    extra: Dict[str, object] = {}
    values: Dict[str, object] = {}
    if scheme == "https":
        trustme = pytest.importorskip("trustme")
        ca = trustme.CA()
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server)
        extra["ssl_context"] = server
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        values["verify"] = str(tmp_path / "ca.pem")
    svc = service_factory(eof_at_close=False, **extra)  # quiet: no ping for 30 s
    config = LogConfig(url=svc.url, account_id=svc.account_id, token=svc.token, **values)
    with LogServiceClient(config) as client:
        client.open_stream(KEY)
        put(client, line(0))
        lines = client.tail(KEY)
        assert next(lines).out == "line 0\n"
        lines.close()  # the reader, blocked on a quiet connection, is woken and ends
        assert wait_until(lambda: svc.subscribers(KEY) == 0, timeout=10)
        readers = [t for t in threading.enumerate() if t.name == "lelog-tail-reader"]
        assert all(not t.is_alive() for t in readers)
