"""Prove the fake log service behaves as docs/protocol.md says, using plain httpx calls."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service import FakeLogService

REPO = Path(__file__).resolve().parent.parent
ACCT = "acct"
TOKEN = "secret-token"
ODD_KEY = "a&b#c+d%e;f g é/h"
# One shared default context: httpx would otherwise load the CA bundle for every client.
TLS = ssl.create_default_context()


def params(key: str = "k", **extra: str) -> Dict[str, str]:
    """Query parameters of a log-service call."""
    return {"accountID": ACCT, "key": key, **extra}


def make_line(pos: int, out: str = "hello\n", **over: Any) -> Dict[str, Any]:
    """A valid wire line."""
    line: Dict[str, Any] = {
        "level": "info",
        "pos": pos,
        "out": out,
        "time": "2026-11-27T10:00:00.123456Z",
        "args": None,
    }
    line.update(over)
    return line


def lines(start: int, n: int) -> List[Dict[str, Any]]:
    """n consecutive valid lines from pos ``start``."""
    return [make_line(i, f"line {i}\n") for i in range(start, start + n)]


def new_client(svc: FakeLogService, **kwargs: Any) -> httpx.Client:
    """An httpx client authenticated for svc."""
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("verify", TLS)
    return httpx.Client(base_url=svc.url, headers={"X-Harness-Token": svc.token}, **kwargs)


@pytest.fixture
def http(service: FakeLogService) -> Iterator[httpx.Client]:
    """An authenticated client for the default ``service``."""
    with new_client(service) as client:
        yield client


def error_msg(resp: httpx.Response) -> str:
    """The error_msg of a JSON error answer (checking it is pretty-printed JSON)."""
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.text.startswith("{\n  ")
    return resp.json()["error_msg"]


class SSE:
    """Incremental reader of a raw SSE body."""

    def __init__(self, resp: httpx.Response) -> None:
        self.chunks = resp.iter_raw()
        self.buf = b""
        self.ended = False

    def until(self, needle: bytes) -> bytes:
        """Read until ``needle`` is in the buffer (the client's read timeout bounds each read)."""
        while needle not in self.buf:
            try:
                self.buf += next(self.chunks)
            except StopIteration:
                self.ended = True
                raise AssertionError(f"body ended before {needle!r}; got {self.buf!r}") from None
        return self.buf

    def to_end(self) -> bytes:
        """Read until the server ends the body."""
        for chunk in self.chunks:
            self.buf += chunk
        self.ended = True
        return self.buf


def sse_data(line: Dict[str, Any]) -> bytes:
    """How the service frames one line in the tail."""
    return b"data: " + json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


# ---- basic routes ---------------------------------------------------------------------------


def test_healthz(service: FakeLogService, http: httpx.Client) -> None:
    resp = http.get("/healthz")
    assert resp.status_code == 200
    assert resp.text == "OK"
    # no auth needed
    assert httpx.get(service.url + "/healthz", verify=TLS).text == "OK"


def test_stream_lifecycle_answers_204_empty(service: FakeLogService, http: httpx.Client) -> None:
    for resp in (
        http.post("/stream", params=params()),
        http.put("/stream", params=params(), json=lines(0, 3)),
        http.delete("/stream", params=params()),
    ):
        assert resp.status_code == 204
        assert resp.content == b""
    assert service.all_written("k") == lines(0, 3)
    assert not service.is_open("k")
    methods = [(r.method, r.path) for r in service.requests]
    assert methods == [("POST", "/stream"), ("PUT", "/stream"), ("DELETE", "/stream")]


def test_recorded_fields(service: FakeLogService, http: httpx.Client) -> None:
    http.post("/stream", params=params("my key"), headers={"X-Extra": "1"})
    http.put("/stream", params=params("my key"), json=lines(0, 1))
    rec = service.requests[1]
    assert rec.method == "PUT" and rec.path == "/stream" and rec.key == "my key"
    assert rec.query == {"accountID": ACCT, "key": "my key"}
    assert rec.headers["x-harness-token"] == TOKEN
    assert rec.json() == lines(0, 1)
    assert rec.fault is None and rec.time >= service.requests[0].time
    assert service.requests[0].headers["x-extra"] == "1"
    assert service.requests_for(key="my key", method="put") == [rec]
    assert service.requests_for(path="/stream", method="POST") == [service.requests[0]]
    # httpx pools connections: keep-alive reuse is visible
    assert service.requests[0].conn == rec.conn


@pytest.mark.parametrize(
    "query,headers,message",
    [
        ({"key": "k"}, {"X-Harness-Token": TOKEN}, "no account ID in query params"),
        ({"accountID": ACCT, "key": "k"}, {}, "no token in header"),
        (
            {"accountID": ACCT, "key": "k"},
            {"X-Harness-Token": "wrong"},
            f"operation not permitted for accountID: {ACCT}",
        ),
        (
            {"accountID": "other", "key": "k"},
            {"X-Harness-Token": TOKEN},
            "operation not permitted for accountID: other",
        ),
    ],
)
@pytest.mark.parametrize(
    "method,path", [("POST", "/stream"), ("PUT", "/stream"), ("GET", "/blob"), ("GET", "/stream/info")]
)
def test_auth_errors_are_400(
    service: FakeLogService,
    query: Dict[str, str],
    headers: Dict[str, str],
    message: str,
    method: str,
    path: str,
) -> None:
    body = [] if method == "PUT" else None
    resp = httpx.request(method, service.url + path, params=query, headers=headers, json=body, verify=TLS)
    assert resp.status_code == 400
    assert error_msg(resp) == message


def test_form_content_type_is_consumed(http: httpx.Client) -> None:
    http.post("/stream", params=params())
    body = json.dumps(lines(0, 1))
    resp = http.put(
        "/stream",
        params=params(),
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 400 and error_msg(resp) == "EOF"
    resp = http.post("/blob", params=params(), data={"a": "b"})  # httpx's form encoding
    assert resp.status_code == 400 and error_msg(resp) == "EOF"


def test_naive_time_rejected(service: FakeLogService, http: httpx.Client) -> None:
    http.post("/stream", params=params())
    resp = http.put("/stream", params=params(), json=[make_line(0, time="2026-11-27T10:00:00")])
    assert resp.status_code == 400
    assert "parsing time" in error_msg(resp)
    for ok in ("2026-11-27T10:00:00Z", "2026-11-27T10:00:00.5+01:00", "2026-11-27T10:00:00.123456789-07:30"):
        assert http.put("/stream", params=params(), json=[make_line(0, time=ok)]).status_code == 204
    assert len(service.all_written("k")) == 3


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b'{"level": "info"}',
        json.dumps([{**make_line(0), "pos": "1"}]).encode(),
        json.dumps([{**make_line(0), "pos": True}]).encode(),
        json.dumps([{**make_line(0), "pos": 1.0}]).encode(),
        json.dumps([make_line(0, out=None)]).encode(),
        json.dumps([make_line(0, level=3)]).encode(),
        json.dumps([make_line(0, args={"a": 1})]).encode(),
        json.dumps([make_line(0, args=["a"])]).encode(),
        json.dumps([make_line(0, time="2026-13-01T00:00:00Z")]).encode(),
        json.dumps([{k: v for k, v in make_line(0).items() if k != "args"}]).encode(),
        json.dumps([make_line(0, extra="x")]).encode(),
        json.dumps([make_line(0), "line"]).encode(),
    ],
)
def test_malformed_put_is_400(service: FakeLogService, http: httpx.Client, body: bytes) -> None:
    http.post("/stream", params=params())
    resp = http.put("/stream", params=params(), content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert error_msg(resp)
    assert service.live_lines("k") == []


def test_valid_args_accepted(service: FakeLogService, http: httpx.Client) -> None:
    http.post("/stream", params=params())
    batch = [make_line(0, args={"a": "b", "é": "ü"}), make_line(1, args={})]
    assert http.put("/stream", params=params(), json=batch).status_code == 204
    assert service.live_lines("k") == batch


def test_reopen_wipes(service: FakeLogService, http: httpx.Client) -> None:
    http.post("/stream", params=params())
    http.put("/stream", params=params(), json=lines(0, 3))
    assert http.post("/stream", params=params()).status_code == 204
    assert service.live_lines("k") == []
    assert service.is_open("k")
    assert service.all_written("k") == lines(0, 3)  # history of accepted lines is kept


def test_write_before_open_and_after_close(service: FakeLogService, http: httpx.Client) -> None:
    resp = http.put("/stream", params=params(), json=lines(0, 1))
    assert resp.status_code == 400 and error_msg(resp) == "stream: not found"
    http.post("/stream", params=params())
    http.delete("/stream", params=params())
    resp = http.put("/stream", params=params(), json=lines(0, 1))
    assert resp.status_code == 400 and error_msg(resp) == "stream: not found"
    assert service.all_written("k") == []


def test_close_missing_is_500(http: httpx.Client) -> None:
    resp = http.delete("/stream", params=params("never"))
    assert resp.status_code == 500 and error_msg(resp) == "stream: not found"
    http.post("/stream", params=params())
    assert http.delete("/stream", params=params()).status_code == 204
    resp = http.delete("/stream", params=params())
    assert resp.status_code == 500 and error_msg(resp) == "stream: not found"


def test_retention_default_5000(service: FakeLogService, http: httpx.Client) -> None:
    http.post("/stream", params=params())
    for start in range(0, 6000, 1000):
        assert http.put("/stream", params=params(), json=lines(start, 1000)).status_code == 204
    live = service.live_lines("k")
    assert len(live) == 5000 and live[0]["pos"] == 1000 and live[-1]["pos"] == 5999
    assert [ln["pos"] for ln in service.all_written("k")] == list(range(6000))
    info = http.get("/stream/info", params={"accountID": ACCT}).json()
    assert info["streams"][f"{ACCT}/k"]["size"] == 5000


def test_small_retention_and_snapshot(service_factory: Callable[..., FakeLogService]) -> None:
    svc = service_factory(retention=3)
    with new_client(svc) as http:
        http.post("/stream", params=params())
        http.put("/stream", params=params(), json=lines(0, 2))
        http.put("/stream", params=params(), json=lines(2, 3))
        assert [ln["pos"] for ln in svc.live_lines("k")] == [2, 3, 4]
        assert http.delete("/stream", params=params(snapshot="true")).status_code == 204
        expected = b"".join(json.dumps(ln, separators=(",", ":")).encode() + b"\n" for ln in lines(2, 3))
        assert svc.blob("k") == expected
        assert svc.blob_lines("k") == lines(2, 3)
        resp = http.get("/blob", params=params())
        assert resp.status_code == 200 and resp.content == expected


def test_snapshot_of_empty_stream_is_empty_blob(service: FakeLogService, http: httpx.Client) -> None:
    http.post("/stream", params=params())
    http.delete("/stream", params=params(snapshot="true"))
    assert service.blob("k") == b""
    # without snapshot nothing is stored
    http.post("/stream", params=params("k2"))
    http.delete("/stream", params=params("k2"))
    assert service.blob("k2") is None


def test_direct_blob(service: FakeLogService, http: httpx.Client) -> None:
    resp = http.get("/blob", params=params())
    assert resp.status_code == 404 and error_msg(resp)
    data = b'{"level":"info"}\n' * 3
    resp = http.post("/blob", params=params(), content=data, headers={"Content-Type": "application/x-ndjson"})
    assert resp.status_code == 204 and resp.content == b""
    assert service.blob("k") == data
    assert http.get("/blob", params=params()).content == data


def test_link_upload(service: FakeLogService, http: httpx.Client) -> None:
    resp = http.post("/blob/link/upload", params=params(ODD_KEY))
    assert resp.status_code == 200
    doc = resp.json()
    assert isinstance(doc["expires"], int) and doc["expires"] == 3600 * 10**9
    link = doc["link"]
    assert link.startswith(service.origin + "/_storage/")
    data = b'{"pos":0}\n'
    # the storage URL is used verbatim, without the token
    up = httpx.put(link, content=data, headers={"Content-Type": "application/x-ndjson"}, verify=TLS)
    assert up.status_code == 200
    assert service.blob(ODD_KEY) == data
    assert service.token_leaks() == []
    assert http.get("/blob", params=params(ODD_KEY)).content == data


def test_link_upload_with_token_is_recorded_and_refused(service: FakeLogService, http: httpx.Client) -> None:
    link = http.post("/blob/link/upload", params=params()).json()["link"]
    resp = httpx.put(link, content=b"x\n", headers={"X-Harness-Token": TOKEN}, verify=TLS)
    assert resp.status_code == 400 and error_msg(resp) == "token sent to storage"
    assert service.blob("k") is None
    leaks = service.token_leaks()
    assert len(leaks) == 1 and leaks[0].method == "PUT"


def test_link_expired_or_mangled(service: FakeLogService, http: httpx.Client) -> None:
    link = http.post("/blob/link/upload", params=params()).json()["link"]
    service.expire_links()
    assert httpx.put(link, content=b"x\n", verify=TLS).status_code == 403
    service.expire_links(False)
    assert httpx.put(link.split("?")[0], content=b"x\n", verify=TLS).status_code == 403  # query dropped
    assert service.blob("k") is None
    assert httpx.put(link, content=b"x\n", verify=TLS).status_code == 200


def test_link_upload_without_object_storage(service_factory: Callable[..., FakeLogService]) -> None:
    svc = service_factory(object_storage=False)
    with new_client(svc) as http:
        resp = http.post("/blob/link/upload", params=params())
        assert resp.status_code == 500 and error_msg(resp) == "not implemented"


def test_odd_key_round_trip(service: FakeLogService, http: httpx.Client) -> None:
    assert http.post("/stream", params=params(ODD_KEY)).status_code == 204
    assert http.put("/stream", params=params(ODD_KEY), json=lines(0, 2)).status_code == 204
    assert service.is_open(ODD_KEY)
    assert service.live_lines(ODD_KEY) == lines(0, 2)
    assert http.delete("/stream", params=params(ODD_KEY, snapshot="true")).status_code == 204
    assert service.blob_lines(ODD_KEY) == lines(0, 2)
    assert {r.key for r in service.requests} == {ODD_KEY}
    # a client that does not escape the key corrupts it (what the Go client does)
    raw = f"/stream?accountID={ACCT}&key={ODD_KEY}"
    httpx.post(service.url + raw, headers={"X-Harness-Token": TOKEN}, verify=TLS)
    assert service.requests[-1].key == "a"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.text(min_size=1, max_size=30))
def test_any_key_round_trips(service: FakeLogService, http: httpx.Client, key: str) -> None:
    assert http.post("/blob", params=params(key), content=b"x").status_code == 204
    assert service.blob(key) == b"x"
    assert service.requests[-1].key == key


def test_stream_info(service: FakeLogService, http: httpx.Client) -> None:
    http.post("/stream", params=params("a"))
    http.put("/stream", params=params("a"), json=lines(0, 4))
    resp = http.get("/stream/info", params={"accountID": ACCT})
    assert resp.status_code == 200
    entry = resp.json()["streams"][f"{ACCT}/a"]
    assert entry["size"] == 4 and entry["subscribers"] == 0
    assert entry["ttl"].startswith("4h59m")


def test_stream_ttl_expiry(service_factory: Callable[..., FakeLogService]) -> None:
    svc = service_factory(ttl=0.2)
    with new_client(svc) as http:
        http.post("/stream", params=params())
        time.sleep(0.3)
        resp = http.put("/stream", params=params(), json=lines(0, 1))
        assert resp.status_code == 400 and error_msg(resp) == "stream: not found"
        http.post("/stream", params=params())
        assert svc.expire_stream("k") and not svc.is_open("k")


def test_unknown_routes(service: FakeLogService, http: httpx.Client) -> None:
    resp = http.get("/nope", params=params())
    assert resp.status_code == 404 and error_msg(resp)
    resp = http.patch("/stream", params=params())
    assert resp.status_code == 405 and error_msg(resp)


def test_chunked_request_body(service: FakeLogService, http: httpx.Client) -> None:
    http.post("/stream", params=params())
    body = json.dumps(lines(0, 50)).encode()

    def gen() -> Iterator[bytes]:
        for i in range(0, len(body), 700):
            yield body[i : i + 700]

    resp = http.put("/stream", params=params(), content=gen(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 204
    assert service.requests[-1].headers.get("transfer-encoding") == "chunked"
    assert service.live_lines("k") == lines(0, 50)


def test_prefix_routing(service_factory: Callable[..., FakeLogService]) -> None:
    svc = service_factory(prefix="/gw/logs/")
    assert svc.url.endswith("/gw/logs")
    with new_client(svc) as http:
        assert http.get("/healthz").text == "OK"
        assert http.post("/stream", params=params()).status_code == 204
        assert svc.requests[-1].path == "/stream"
        assert svc.requests[-1].raw_path.startswith("/gw/logs/stream?")
        link = http.post("/blob/link/upload", params=params()).json()["link"]
        assert "/gw/" not in link  # storage links live outside the prefix
        assert httpx.put(link, content=b"x", verify=TLS).status_code == 200
    # the same route without the prefix is not the log service
    resp = httpx.post(svc.origin + "/stream", params=params(), headers={"X-Harness-Token": TOKEN}, verify=TLS)
    assert resp.status_code == 404


def test_internal_bug_is_loud(
    service: FakeLogService, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(service, "_info", broken)
    resp = http.get("/stream/info", params={"accountID": ACCT})
    assert resp.status_code == 500 and "fake service bug" in error_msg(resp)
    assert len(service.errors) == 1
    service.errors.clear()  # expected here; the fixture fails any test that leaves one


def test_head_has_no_body(service: FakeLogService, http: httpx.Client) -> None:
    resp = http.head("/healthz")
    assert resp.status_code == 405 and resp.content == b""
    assert http.get("/healthz").text == "OK"  # the connection is still in sync


# ---- tail (SSE) -----------------------------------------------------------------------------


def test_tail_framing(service: FakeLogService, http: httpx.Client) -> None:
    http.post("/stream", params=params())
    history = lines(0, 2)
    http.put("/stream", params=params(), json=history)
    with new_client(service) as tail_client, tail_client.stream("GET", "/stream", params=params()) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/event-stream"
        assert "content-length" not in resp.headers
        sse = SSE(resp)
        expected = b": ping\n" + sse_data(history[0]) + sse_data(history[1])
        assert sse.until(sse_data(history[1])) == expected
        assert service.wait_for(lambda: service.subscribers("k") == 1)
        live = make_line(2, "live é\n", args={"a": "b"})
        http.put("/stream", params=params(), json=[live])
        expected += sse_data(live)
        assert sse.until(sse_data(live)) == expected
        assert http.delete("/stream", params=params()).status_code == 204
        assert sse.to_end() == expected + b"event: error\ndata: eof\n"


def test_tail_of_missing_stream(service: FakeLogService, http: httpx.Client) -> None:
    resp = http.get("/stream", params=params("missing"))
    assert resp.status_code == 200
    assert resp.content == b": ping\nevent: error\ndata: eof\n"


def test_tail_keepalive_ping_and_subscriber_count(service_factory: Callable[..., FakeLogService]) -> None:
    svc = service_factory(keepalive=0.2)
    with new_client(svc) as http:
        http.post("/stream", params=params())
        with http.stream("GET", "/stream", params=params()) as resp:
            sse = SSE(resp)
            assert sse.until(b": ping\n: ping\n").startswith(b": ping\n: ping\n")  # only pings, no data
            info = http.get("/stream/info", params={"accountID": ACCT}).json()
            assert info["streams"][f"{ACCT}/k"]["subscribers"] == 1
        # the client went away: the handler notices and unsubscribes
        assert svc.wait_for(lambda: svc.subscribers("k") == 0, timeout=3)


def test_restart_forgets_streams_and_cuts_tails(service: FakeLogService, http: httpx.Client) -> None:
    http.post("/stream", params=params())
    http.post("/blob", params=params(), content=b"kept")
    with new_client(service) as tail_client, tail_client.stream("GET", "/stream", params=params()) as resp:
        sse = SSE(resp)
        sse.until(b": ping\n")
        assert service.wait_for(lambda: service.subscribers("k") == 1)
        service.restart()
        body = sse.to_end()
        assert b"eof" not in body
    assert not service.is_open("k")
    assert service.blob("k") == b"kept"
    resp = http.put("/stream", params=params(), json=lines(0, 1))
    assert resp.status_code == 400 and error_msg(resp) == "stream: not found"


# ---- faults ---------------------------------------------------------------------------------


def test_fail_next_counts_and_matches(service: FakeLogService, http: httpx.Client) -> None:
    service.fail_next(2, 502, method="PUT", error_msg="bad gateway")
    assert http.post("/stream", params=params()).status_code == 204  # POST does not match
    for _ in range(2):
        resp = http.put("/stream", params=params(), json=lines(0, 1))
        assert resp.status_code == 502 and error_msg(resp) == "bad gateway"
    assert http.put("/stream", params=params(), json=lines(0, 1)).status_code == 204
    assert [r.fault for r in service.requests] == [None, "fail", "fail", None]
    assert service.all_written("k") == lines(0, 1)  # failed requests are not applied
    service.fail_next(1, path="/blob")
    assert http.get("/healthz").status_code == 200
    assert http.get("/blob", params=params()).status_code == 503
    assert service.pending_faults() == 0


def test_fail_next_raw_body(service: FakeLogService, http: httpx.Client) -> None:
    service.fail_next(status=502, body="<html>proxy</html>")
    resp = http.get("/healthz")
    assert resp.status_code == 502 and resp.text == "<html>proxy</html>"


def test_throttle_next(service: FakeLogService, http: httpx.Client) -> None:
    service.throttle_next(1, retry_after=2)
    service.throttle_next(1, retry_after=0.25)
    resp = http.get("/healthz")
    assert resp.status_code == 429 and resp.headers["retry-after"] == "2"
    resp = http.get("/healthz")
    assert resp.status_code == 429 and resp.headers["retry-after"] == "0.25"
    assert http.get("/healthz").status_code == 200


def test_reset_next(service: FakeLogService, http: httpx.Client) -> None:
    http.post("/stream", params=params())
    service.reset_next(method="PUT")
    with pytest.raises(httpx.TransportError):
        http.put("/stream", params=params(), json=lines(0, 1))
    assert service.requests[-1].fault == "reset"
    assert service.live_lines("k") == []
    assert http.put("/stream", params=params(), json=lines(0, 1)).status_code == 204


def test_stall_next(service: FakeLogService, http: httpx.Client) -> None:
    service.stall_next(1, 0.3)
    start = time.monotonic()
    assert http.get("/healthz").status_code == 200
    assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    http.get("/healthz")
    assert time.monotonic() - start < 0.25


def test_blackhole(service: FakeLogService, http: httpx.Client) -> None:
    service.blackhole()
    with pytest.raises(httpx.ReadTimeout):
        http.get("/healthz", timeout=httpx.Timeout(5.0, read=0.5))
    assert service.requests[-1].fault == "blackhole"
    service.blackhole(False)
    assert http.get("/healthz").status_code == 200


def test_redirect_next(service: FakeLogService, http: httpx.Client) -> None:
    service.redirect_next(1, "http://127.0.0.1:9/elsewhere")
    resp = http.post("/stream", params=params())
    assert resp.status_code == 307 and resp.headers["location"] == "http://127.0.0.1:9/elsewhere"
    assert not service.is_open("k")


def test_wait_for(service: FakeLogService) -> None:
    def later() -> None:
        time.sleep(0.1)
        httpx.get(service.url + "/healthz", verify=TLS)

    t = threading.Thread(target=later)
    t.start()
    try:
        assert service.wait_for(lambda: len(service.requests) == 1, timeout=3)
        assert not service.wait_for(lambda: len(service.requests) == 2, timeout=0.1)
    finally:
        t.join()


# ---- stop --------------------------------------------------------------------------------------


def test_stop_is_fast_with_requests_in_flight(service_factory: Callable[..., FakeLogService]) -> None:
    svc = service_factory(keepalive=30)
    outcomes: Dict[str, Any] = {}

    def call(name: str, method: str, path: str) -> None:
        with new_client(svc, timeout=30) as client:
            try:
                outcomes[name] = client.request(method, path, params=params()).status_code
            except httpx.TransportError as exc:
                outcomes[name] = exc

    with new_client(svc, timeout=30) as http:
        http.post("/stream", params=params())
        http.get("/healthz")  # leaves an idle keep-alive connection open
        svc.stall_next(1, 30, path="/blob")
        threads = [
            threading.Thread(target=call, args=("tail", "GET", "/stream")),
            threading.Thread(target=call, args=("stalled", "GET", "/blob")),
        ]
        for t in threads:
            t.start()
        assert svc.wait_for(lambda: svc.subscribers("k") == 1 and len(svc.requests_for(path="/blob")) == 1)
        svc.blackhole()
        threads.append(threading.Thread(target=call, args=("blackholed", "GET", "/healthz")))
        threads[-1].start()
        assert svc.wait_for(lambda: svc.requests[-1].fault == "blackhole")
        start = time.monotonic()
        svc.stop()
        assert time.monotonic() - start < 1.5
        for t in threads:
            t.join(5)
            assert not t.is_alive()
    assert [t.name for t in threading.enumerate() if t.name.startswith("fake-service")] == []
    assert outcomes["tail"] == 200  # the SSE body simply ended (cut without eof)
    assert isinstance(outcomes["stalled"], httpx.TransportError)
    assert isinstance(outcomes["blackholed"], httpx.TransportError)


# ---- TLS ----------------------------------------------------------------------------------------


def test_tls_server_cert(service_factory: Callable[..., FakeLogService], tls_ca: Any) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    svc = service_factory(ssl_context=server_ctx)
    assert svc.url.startswith("https://")
    client_ctx = ssl.create_default_context()
    tls_ca.configure_trust(client_ctx)
    with new_client(svc, verify=client_ctx) as http:
        assert http.post("/stream", params=params()).status_code == 204
        link = http.post("/blob/link/upload", params=params()).json()["link"]
        assert link.startswith("https://")
        assert httpx.put(link, content=b"x", verify=client_ctx).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(svc.url + "/healthz", verify=TLS)  # untrusted CA


def test_tls_client_cert_required(service_factory: Callable[..., FakeLogService], tls_ca: Any) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    tls_ca.configure_trust(server_ctx)
    svc = service_factory(ssl_context=server_ctx)
    with_cert = ssl.create_default_context()
    tls_ca.configure_trust(with_cert)
    tls_ca.issue_cert("client@example.com").configure_cert(with_cert)
    assert httpx.get(svc.url + "/healthz", verify=with_cert).text == "OK"
    without_cert = ssl.create_default_context()
    tls_ca.configure_trust(without_cert)
    with pytest.raises(httpx.TransportError):
        httpx.get(svc.url + "/healthz", verify=without_cert, timeout=5)


# ---- as a process -------------------------------------------------------------------------------


def _spawn_cli(*args: str) -> "subprocess.Popen[str]":
    return subprocess.Popen(
        [sys.executable, "-m", "tests.service", "--port", "0", *args],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _read_url(proc: "subprocess.Popen[str]") -> str:
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("URL http://127.0.0.1:"), first
    return first.split(" ", 1)[1].strip()


def test_cli_serves_until_stdin_closes() -> None:
    proc = _spawn_cli("--token", "T", "--account", "A", "--discard")
    try:
        url = _read_url(proc)
        assert httpx.get(url + "/healthz", verify=TLS).text == "OK"
        auth = {"X-Harness-Token": "T"}
        q = {"accountID": "A", "key": "bench"}
        assert httpx.post(url + "/stream", params=q, headers=auth, verify=TLS).status_code == 204
        assert (
            httpx.put(url + "/stream", params=q, headers=auth, json=lines(0, 3), verify=TLS).status_code
            == 204
        )
        stats = httpx.get(url + "/_stats", params={"key": "bench", "accountID": "A"}, verify=TLS).json()
        assert stats["received"] == 3 and stats["last_pos"] == 2 and stats["blob_bytes"] == 0
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(5) == 0
        assert proc.stdout is not None and proc.stdout.read() == ""  # exactly one line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stdin):
            if f is not None:
                f.close()


def test_cli_stops_on_sigterm() -> None:
    proc = _spawn_cli()
    try:
        url = _read_url(proc)
        assert httpx.get(url + "/healthz", verify=TLS).text == "OK"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stdin):
            if f is not None:
                f.close()


def test_discard_mode_counts_only(service_factory: Callable[..., FakeLogService]) -> None:
    svc = service_factory(discard=True, retention=10)
    with new_client(svc) as http:
        http.post("/stream", params=params())
        for start in range(0, 3000, 1000):
            assert http.put("/stream", params=params(), json=lines(start, 1000)).status_code == 204
        stats = http.get(svc.origin + "/_stats", params={"key": "k"}).json()
    assert stats["received"] == 3000 and stats["last_pos"] == 2999
    assert len(svc.live_lines("k")) == 10
    assert svc.requests_for(method="PUT")[0].body == b""
    with pytest.raises(RuntimeError):
        svc.all_written("k")


# ---- the thread-leak check itself -----------------------------------------------------------------


def test_thread_leak_check_fails_leaky_tests(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("LELOG_TEST_THREAD_GRACE", "0.5")  # keeps the two expected failures quick
    pytester.makeconftest('pytest_plugins = ["tests.conftest"]\n')
    pytester.makepyfile(
        test_inner=textwrap.dedent(
            """
            import threading, time
            from tests.service import FakeLogService

            def test_leaks_a_thread():
                threading.Thread(target=time.sleep, args=(30,), name="leaky-thread", daemon=True).start()

            def test_leaks_a_service():
                FakeLogService().start()

            def test_short_thread_within_grace():
                threading.Thread(target=time.sleep, args=(0.1,), name="brief-thread", daemon=True).start()

            def test_uses_service(service):
                import urllib.request
                assert urllib.request.urlopen(service.url + "/healthz").read() == b"OK"
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=60)
    result.assert_outcomes(passed=4, errors=2)
    assert result.ret != 0
    out = result.stdout.str()
    assert "leaky-thread" in out and "fake-service-accept" in out
    assert "brief-thread" not in out


# -- settable timings and the Redis backend's missing eof ---------------------------------------


def test_an_empty_put_tells_a_live_stream_from_a_closed_one(
    service: FakeLogService, http: httpx.Client
) -> None:
    for body in (b"[]", b"null"):
        empty = {"content": body, "headers": {"Content-Type": "application/json"}}
        assert http.put("/stream", params=params("gone"), **empty).status_code == 400
        http.post("/stream", params=params("gone"))
        assert http.put("/stream", params=params("gone"), **empty).status_code == 204
        http.delete("/stream", params=params("gone"))
        answer = http.put("/stream", params=params("gone"), **empty)
        assert (answer.status_code, answer.json()["error_msg"]) == (400, "stream: not found")
    assert service.all_written("gone") == []


def test_without_eof_at_close_a_tail_stays_open_pinging_after_the_close(
    service_factory: Callable[..., FakeLogService],
) -> None:
    svc = service_factory(keepalive=0.2, eof_at_close=False)
    with new_client(svc) as http:
        http.post("/stream", params=params())
        line = make_line(0, "only line\n")
        http.put("/stream", params=params(), json=[line])
        with http.stream("GET", "/stream", params=params()) as resp:
            sse = SSE(resp)
            assert sse_data(line) in sse.until(sse_data(line))
            assert http.delete("/stream", params=params()).status_code == 204
            after = sse.until(b": ping\n: ping\n")  # still open: pings, and never an eof
            assert b"eof" not in after and not svc.is_open("k")


@pytest.mark.parametrize("follows", [False, True])
def test_without_eof_at_close_a_re_open_starts_a_new_stream_and_sends_no_eof(
    service_factory: Callable[..., FakeLogService], follows: bool
) -> None:
    svc = service_factory(keepalive=0.2, eof_at_close=False, reopen_follows=follows)
    with new_client(svc) as http:
        http.post("/stream", params=params())
        old = make_line(0, "old\n")
        http.put("/stream", params=params(), json=[old])
        with http.stream("GET", "/stream", params=params()) as resp:
            sse = SSE(resp)
            sse.until(sse_data(old))
            assert http.post("/stream", params=params()).status_code == 204  # re-open: a new stream
            new = make_line(0, "new\n")
            http.put("/stream", params=params(), json=[new])
            assert svc.live_lines("k") == [new]
            after = sse.until(sse_data(new) if follows else b": ping\n: ping\n")
            assert b"eof" not in after
            assert (sse_data(new) in after) is follows
            assert svc.subscribers("k") == (1 if follows else 0)


def test_answers_can_be_delayed(service_factory: Callable[..., FakeLogService]) -> None:
    svc = service_factory(answer_delay=0.3)
    with new_client(svc) as http:
        started = time.monotonic()
        assert http.post("/stream", params=params()).status_code == 204
        assert time.monotonic() - started >= 0.3  # a lower bound only: never a speed assertion
