"""LogServiceClient against the fake service: every call, error mapping and retry rule."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import trustme

from lelog import (
    AuthError,
    BlobNotFound,
    Cancelled,
    ConfigError,
    Line,
    LogConfig,
    LogServiceClient,
    LogServiceError,
    RetryPolicy,
    StreamNotFound,
    TLSError,
    TransportError,
)
from tests.helpers import run_python
from tests.service import FakeLogService

FAST = RetryPolicy(first_wait=0.02, max_wait=0.05, max_attempts=10)
ODD_KEYS = ["a&b#c+d%e;f g é/h", "plain", "spaces  and\ttabs", "q?x=1&key=other", "%2F/../x"]


def make_client(service: FakeLogService, retry: RetryPolicy = FAST, **values: object) -> LogServiceClient:
    config = LogConfig(url=service.url, account_id="acct", token="secret-token", **values)
    return LogServiceClient(config, retry=retry)


@pytest.fixture
def client(service: FakeLogService) -> Iterator[LogServiceClient]:
    with make_client(service) as c:
        yield c


def lines(*texts: str, start: int = 0) -> list[Line]:
    return [Line(text + "\n", start + i, time.time()) for i, text in enumerate(texts)]


# -- each call ------------------------------------------------------------------------------


def test_open_write_download_close(client: LogServiceClient, service: FakeLogService) -> None:
    client.open_stream("k")
    client.write("k", lines("one", "two"))
    client.write("k", [Line("three\n", 2, time.time()).encode()])  # pre-encoded lines too
    assert [line["out"] for line in service.live_lines("k")] == ["one\n", "two\n", "three\n"]
    client.upload("k", lines("one", "two", "three"))
    client.close_stream("k")
    assert not service.is_open("k")
    stored = client.download("k")
    assert [json.loads(row)["out"] for row in stored.splitlines()] == ["one\n", "two\n", "three\n"]
    put = service.requests_for(key="k", method="PUT", path="/stream")[0]
    assert put.headers["content-type"] == "application/json"
    assert put.headers["x-harness-token"] == "secret-token"
    assert put.query == {"accountID": "acct", "key": "k"}


def test_no_request_carries_a_form_content_type(client: LogServiceClient, service: FakeLogService) -> None:
    client.open_stream("k")
    client.write("k", lines("x"))
    client.upload("k", lines("x"))
    client.close_stream("k")
    for request in service.requests:
        assert "form" not in request.headers.get("content-type", "")


def test_upload_via_link_never_sends_the_token(client: LogServiceClient, service: FakeLogService) -> None:
    client.upload("k", lines("a", "b"))
    link_puts = [r for r in service.requests if r.path.startswith("/_storage")]
    assert len(link_puts) == 1
    assert "x-harness-token" not in link_puts[0].headers
    assert service.token_leaks() == []
    assert service.blob("k") == b"".join(
        line.encode() + b"\n" for line in lines("a", "b")[:0]
    ) or service.blob_lines("k")
    assert [row["out"] for row in service.blob_lines("k")] == ["a\n", "b\n"]


def test_direct_upload_when_indirect_upload(service: FakeLogService) -> None:
    with make_client(service, indirect_upload=True) as c:
        c.upload("k", lines("a"))
    assert [r.path for r in service.requests] == ["/blob"]
    assert service.requests[0].headers["content-type"] == "application/x-ndjson"


def test_upload_falls_back_to_direct_without_object_storage(service_factory) -> None:
    svc = service_factory(object_storage=False)
    with make_client(svc) as c:
        c.upload("k", lines("a"))
    assert [(r.method, r.path) for r in svc.requests] == [("POST", "/blob/link/upload"), ("POST", "/blob")]
    assert [row["out"] for row in svc.blob_lines("k")] == ["a\n"]


def test_empty_history_uploads_an_empty_body(client: LogServiceClient, service: FakeLogService) -> None:
    client.upload("k", [])
    assert service.blob("k") == b""


def test_close_with_snapshot_stores_what_the_stream_holds(
    client: LogServiceClient, service: FakeLogService
) -> None:
    client.open_stream("k")
    client.write("k", lines("a", "b"))
    client.close_stream("k", snapshot=True)
    assert service.requests[-1].query.get("snapshot") == "true"
    assert [row["out"] for row in service.blob_lines("k")] == ["a\n", "b\n"]


@pytest.mark.parametrize("key", ODD_KEYS)
def test_any_key_round_trips(client: LogServiceClient, service: FakeLogService, key: str) -> None:
    client.open_stream(key)
    client.write(key, lines("x"))
    client.upload(key, lines("x"))
    client.close_stream(key)
    assert {r.key for r in service.requests if r.key is not None} == {key}
    assert [row["out"] for row in service.blob_lines(key)] == ["x\n"]
    assert json.loads(client.download(key).decode())["out"] == "x\n"


@pytest.mark.parametrize("shape", ["log_config", "setup request"])
def test_a_client_takes_a_config_dict_as_a_writer_does(
    service: FakeLogService, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    monkeypatch.setenv("LELOG_TOKEN", service.token)  # what the dict leaves out comes from here
    values = {"url": service.url, "account_id": "acct"}
    with LogServiceClient(values if shape == "log_config" else {"log_config": values}) as client:
        assert client.config.token == service.token
        client.open_stream("k")
        client.write("k", lines("from a dict"))
    assert [line["out"] for line in service.live_lines("k")] == ["from a dict\n"]


def test_a_client_given_something_else_says_what_to_pass() -> None:
    with pytest.raises(ConfigError, match="config must be a LogConfig, a setup request or its log_config"):
        LogServiceClient(["http://log-service:8080"])  # type: ignore[arg-type]


def test_tail_follows_history_then_live_then_ends_at_close(
    client: LogServiceClient, service: FakeLogService
) -> None:
    client.open_stream("k")
    client.write("k", lines("old"))
    seen: list[str] = []
    done = threading.Event()

    def follow() -> None:
        for line in client.tail("k"):
            seen.append(line.out)
        done.set()

    thread = threading.Thread(target=follow)
    thread.start()
    assert service.wait_for(lambda: service.subscribers("k") == 1)
    client.write("k", lines("new", start=1))
    assert service.wait_for(lambda: seen == ["old\n", "new\n"])
    assert not done.is_set()
    client.close_stream("k")
    thread.join(5)
    assert done.is_set() and seen == ["old\n", "new\n"]


def test_tail_of_a_missing_stream_ends_at_once(client: LogServiceClient) -> None:
    assert list(client.tail("nothing-here")) == []


def test_info_and_health(client: LogServiceClient, service: FakeLogService) -> None:
    client.open_stream("k")
    client.write("k", lines("a", "b"))
    info = client.info()
    assert info["streams"]["acct/k"]["size"] == 2
    assert client.health() is True


def test_path_prefix_is_kept(service_factory) -> None:
    svc = service_factory(prefix="/gateway/log-service")
    with make_client(svc) as c:
        c.open_stream("k")
    assert svc.requests[0].raw_path.startswith("/gateway/log-service/stream?")


# -- errors ---------------------------------------------------------------------------------


def test_auth_errors_are_recognisable_and_not_retried(service: FakeLogService) -> None:
    config = LogConfig(url=service.url, account_id="acct", token="wrong")
    with LogServiceClient(config, retry=FAST) as c, pytest.raises(AuthError) as info:
        c.open_stream("k")
    assert info.value.status == 400
    assert info.value.error_msg == "operation not permitted for accountID: acct"
    assert "check account_id and token" in str(info.value)
    assert len(service.requests) == 1
    assert "wrong" not in str(info.value)


def test_a_write_of_lines_encoded_or_not_sends_the_same_body(
    client: LogServiceClient, service: FakeLogService
) -> None:
    client.open_stream("k")
    given = lines("a", "b", "c")
    encoded = [line.encode() for line in given]
    client.write("k", encoded)
    client.write("k", given)
    client.write("k", [encoded[0], given[1], encoded[2]])  # mixed: Line objects are encoded
    client.write("k", [given[0]])
    bodies = [put.body for put in service.requests_for(key="k", method="PUT", path="/stream")]
    assert bodies == [b"[" + b",".join(encoded) + b"]"] * 3 + [b"[" + encoded[0] + b"]"]


def test_write_to_missing_stream_is_permanent(client: LogServiceClient, service: FakeLogService) -> None:
    with pytest.raises(StreamNotFound) as info:
        client.write("never-opened", lines("x"))
    assert info.value.status == 400 and info.value.error_msg == "stream: not found"
    assert len(service.requests) == 1


def test_close_of_missing_stream_500_is_permanent(client: LogServiceClient, service: FakeLogService) -> None:
    with pytest.raises(StreamNotFound) as info:
        client.close_stream("never-opened")
    assert info.value.status == 500
    assert len(service.requests) == 1


def test_download_missing_is_blob_not_found(client: LogServiceClient) -> None:
    with pytest.raises(BlobNotFound):
        client.download("nothing")


def test_redirect_is_not_followed(client: LogServiceClient, service: FakeLogService) -> None:
    service.redirect_next(1, location=service.url + "/elsewhere")
    with pytest.raises(LogServiceError, match="redirect, which lelog does not follow") as info:
        client.open_stream("k")
    assert info.value.status == 307
    assert len(service.requests) == 1


def test_other_4xx_is_not_retried(client: LogServiceClient, service: FakeLogService) -> None:
    service.fail_next(1, status=413, error_msg="too large")
    with pytest.raises(LogServiceError) as info:
        client.open_stream("k")
    assert (info.value.status, info.value.error_msg, info.value.attempts) == (413, "too large", 1)
    assert len(service.requests) == 1


# -- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_transient_statuses_are_retried(
    client: LogServiceClient, service: FakeLogService, status: int
) -> None:
    client.open_stream("k")
    service.fail_next(3, status=status, method="PUT")
    retries: list[float] = []
    client.write("k", lines("x"), on_retry=lambda exc, wait: retries.append(wait))
    assert len(retries) == 3
    assert len(service.requests_for(method="PUT")) == 4
    assert [row["out"] for row in service.live_lines("k")] == ["x\n"]


def test_429_honours_retry_after(client: LogServiceClient, service: FakeLogService) -> None:
    client.open_stream("k")
    service.throttle_next(1, retry_after=0.4, method="PUT")
    waits: list[float] = []
    client.write("k", lines("x"), on_retry=lambda exc, wait: waits.append(wait))
    puts = service.requests_for(method="PUT")
    assert waits == [0.4]
    assert puts[1].time - puts[0].time >= 0.38


def test_retry_after_beyond_the_deadline_gives_up_at_once(
    client: LogServiceClient, service: FakeLogService
) -> None:
    service.throttle_next(1, retry_after=30, method="POST")
    start = time.monotonic()
    with pytest.raises(LogServiceError) as info:
        client.open_stream("k", deadline=2)
    assert info.value.status == 429 and info.value.retry_after == 30
    assert time.monotonic() - start < 1


def test_connection_reset_is_retried(client: LogServiceClient, service: FakeLogService) -> None:
    service.reset_next(2, method="POST")
    client.open_stream("k")
    assert service.is_open("k")
    assert len(service.requests_for(method="POST")) == 3


def test_retried_upload_resends_the_full_body(client: LogServiceClient, service: FakeLogService) -> None:
    service.fail_next(2, status=503, path="/blob")
    with make_client(service, indirect_upload=True) as c:
        c.upload("k", lines("a", "b", "c"))
    bodies = [r.body for r in service.requests_for(path="/blob")]
    assert len(bodies) == 3 and bodies[0] and len(set(bodies)) == 1
    assert [row["out"] for row in service.blob_lines("k")] == ["a\n", "b\n", "c\n"]


def test_retried_link_upload_resends_the_full_body(client: LogServiceClient, service: FakeLogService) -> None:
    service.fail_next(2, status=502, method="PUT")
    client.upload("k", lines("a", "b"))
    bodies = [r.body for r in service.requests if r.path.startswith("/_storage")]
    assert len(bodies) == 3 and bodies[0] and len(set(bodies)) == 1
    assert service.token_leaks() == []


def test_expired_link_is_an_error_not_a_silent_success(
    client: LogServiceClient, service: FakeLogService
) -> None:
    service.expire_links(True)
    with pytest.raises(LogServiceError) as info:
        client.upload("k", lines("a"))
    assert info.value.status == 403
    assert service.blob("k") is None


def test_attempt_cap(service: FakeLogService) -> None:
    service.fail_next(10, status=503)
    with make_client(service, retry=RetryPolicy(first_wait=0.01, max_wait=0.01, max_attempts=3)) as c:
        with pytest.raises(LogServiceError) as info:
            c.open_stream("k")
    assert info.value.attempts == 3
    assert len(service.requests) == 3


def test_nothing_listening_fails_within_the_deadline() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here now
    config = LogConfig(url=f"http://127.0.0.1:{port}", account_id="a", token="t")
    start = time.monotonic()
    with LogServiceClient(config, retry=FAST) as c, pytest.raises(TransportError) as info:
        c.open_stream("k", deadline=0.5)
    elapsed = time.monotonic() - start
    assert info.value.status is None and info.value.attempts > 1
    assert elapsed < 2


def test_blackhole_is_bounded_by_the_deadline(client: LogServiceClient, service: FakeLogService) -> None:
    service.blackhole(True)
    start = time.monotonic()
    with pytest.raises(TransportError):
        client.open_stream("k", deadline=0.6)
    assert time.monotonic() - start < 2.5
    service.blackhole(False)


def test_stall_within_read_timeout_succeeds(client: LogServiceClient, service: FakeLogService) -> None:
    service.stall_next(1, seconds=0.3)
    client.open_stream("k")
    assert service.is_open("k")


def test_cancel_interrupts_a_retry_wait(service: FakeLogService) -> None:
    service.fail_next(100, status=503)
    cancel = threading.Event()
    slow = RetryPolicy(first_wait=20, max_wait=20)
    threading.Timer(0.3, cancel.set).start()
    start = time.monotonic()
    with make_client(service, retry=slow) as c, pytest.raises(Cancelled):
        c.open_stream("k", deadline=60, cancel=cancel)
    assert time.monotonic() - start < 5


def test_unknown_call_option_is_a_type_error(client: LogServiceClient) -> None:
    with pytest.raises(TypeError):
        client.open_stream("k", deadlin=3)  # type: ignore[call-arg]


def test_client_needs_a_url() -> None:
    with pytest.raises(ConfigError, match="needs a url"):
        LogServiceClient(LogConfig())


def test_repr_hides_the_token(client: LogServiceClient) -> None:
    assert "secret-token" not in repr(client)


# -- the retry policy's waits, with an injected clock ------------------------------------------


def test_policy_waits_grow_are_capped_and_stop_at_the_deadline() -> None:
    now = [0.0]
    policy = RetryPolicy(
        first_wait=1.0,
        multiplier=2.0,
        max_wait=5.0,
        max_attempts=100,
        jitter=lambda v: v,
        clock=lambda: now[0],
    )
    attempts = policy.begin(deadline=20.0)
    waits = []
    while True:
        wait = attempts.next_wait(LogServiceError("x", status=503))
        if wait is None:
            break
        waits.append(wait)
        now[0] += wait
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]  # the next 5 s would pass the 20 s deadline


def test_policy_honours_retry_after_and_gives_up_on_permanent() -> None:
    policy = RetryPolicy(jitter=lambda v: v, clock=lambda: 0.0)
    attempts = policy.begin(deadline=60)
    assert attempts.next_wait(LogServiceError("x", status=429, retry_after=7)) == 7
    assert attempts.next_wait(StreamNotFound("gone", status=400)) is None


def test_policy_jitter_is_full_jitter_by_default() -> None:
    policy = RetryPolicy(first_wait=1.0, clock=lambda: 0.0)
    waits = [policy.begin(deadline=60).next_wait(LogServiceError("x", status=503)) for _ in range(50)]
    assert all(0 <= w <= 1.0 for w in waits)
    assert len(set(waits)) > 40


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_tls_with_a_custom_ca(service_factory, ca: trustme.CA, tmp_path: Path) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    svc = service_factory(ssl_context=server_ctx)
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    with make_client(svc, verify=str(ca_path)) as c:
        c.open_stream("k")
    assert svc.is_open("k")
    # Verified by default: the system store does not know this CA.  Permanent: one attempt,
    # however long the deadline.
    svc.clear_requests()
    with make_client(svc) as c, pytest.raises(TLSError) as info:
        c.open_stream("k2", deadline=30)
    assert str(info.value).startswith("open 'k2': the log service's certificate was not trusted: ")
    assert isinstance(info.value, TransportError) and not info.value.retryable
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_tls_with_a_client_certificate(service_factory, ca: trustme.CA, tmp_path: Path) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    svc = service_factory(ssl_context=server_ctx)
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    client_cert = ca.issue_cert("lelog-client")
    with make_client(
        svc,
        verify=str(ca_path),
        client_cert=_b64(client_cert.cert_chain_pems[0].bytes()),
        client_cert_key=_b64(client_cert.private_key_pem.bytes()),
    ) as c:
        c.open_stream("k")
    assert svc.is_open("k")
    with make_client(svc, verify=str(ca_path)) as c, pytest.raises(TransportError):
        c.open_stream("k2", deadline=0.5)
    assert not svc.is_open("k2")


def test_mismatched_client_key_is_a_config_error(ca: trustme.CA) -> None:
    one, other = ca.issue_cert("a"), ca.issue_cert("b")
    with pytest.raises(ConfigError, match="could not be loaded") as info:  # when the config is built
        LogConfig(
            url="https://127.0.0.1:1",
            account_id="a",
            token="t",
            client_cert=_b64(one.cert_chain_pems[0].bytes()),
            client_cert_key=_b64(other.private_key_pem.bytes()),
        )
    assert "KEY_VALUES_MISMATCH" in str(info.value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_its_own_pool_even_if_the_lock_was_held_at_the_fork() -> None:
    code = """
        import os
        import signal
        import lelog
        from tests.service import FakeLogService

        svc = FakeLogService().start()
        client = lelog.LogServiceClient(
            lelog.LogConfig(url=svc.url, account_id="acct", token="secret-token")
        )
        client._lock.acquire()  # as if another thread were making the pool at the fork
        pid = os.fork()
        if pid == 0:
            signal.alarm(30)  # a hung child ends itself: nothing outlives the test
            client.open_stream("child")  # would wait forever on the inherited, held lock
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        client._lock.release()
        assert svc.is_open("child")
        svc.stop()
        print("exit", os.waitstatus_to_exitcode(status))
    """
    done = run_python(code, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["exit", "0"]
