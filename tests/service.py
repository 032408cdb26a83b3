"""A faithful fake of the Harness-style log service (docs/protocol.md), for tests and benchmarks.

It is a real HTTP/1.1 server on 127.0.0.1 built on the standard library only, so the
client under test goes through real sockets, keep-alive, chunked bodies, TLS and SSE
framing. It reproduces the service's odd answers (400 for auth failures, 500 for closing a
missing stream, an unterminated SSE eof, the form-body "EOF" trap), records every request,
and injects faults on demand (errors, 429, TCP resets, stalls, a blackhole, redirects,
expired upload links).  Its timings are settable (``keepalive``: the ping interval;
``answer_delay``; ``tail_tick``), so a quiet-tail test takes seconds, and
``eof_at_close=False`` mimics the Redis backend, which sends no eof when a stream closes or
is re-opened: a re-open starts a new stream, and the old one's tails either get nothing
more (``reopen_follows=False``, what a tail was seen to do) or go on with the new stream's
lines, ``pos`` starting again at 0 (``reopen_follows=True``, a tail reading the key).

Threads: one acceptor and one thread per TCP connection, all named ``fake-service-*``;
``stop()`` unblocks and joins every one of them.

Locking (why nothing here can deadlock):

* ``FakeLogService._lock`` guards all state. ``FakeLogService._cond`` is a Condition on that
  same lock. Code holding it never does socket I/O, never joins a thread, never sleeps and
  never waits on anything except ``_cond`` itself (which releases the lock while waiting).
* A ``_Subscriber``'s condition is a *leaf* lock: it may be taken while ``_lock`` is held
  (to push lines), but code holding it takes no other lock. The order is therefore always
  ``_lock`` -> subscriber lock, never the reverse.
* ``_stop_event`` is an Event waited on (by stalls) with no lock held.

Run it as a process for benchmarks: ``python -m tests.service --port 0`` prints
``URL <url>`` and serves until SIGTERM/SIGINT or stdin closes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import selectors
import signal
import socket
import socketserver
import ssl
import stat
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, quote

__all__ = ["FakeLogService", "Recorded", "THREAD_PREFIX", "main"]

#: Every thread the fake starts has a name starting with this (the leak check relies on it).
THREAD_PREFIX = "fake-service"

_SSE_PING = b": ping\n"
_SSE_EOF = b"event: error\ndata: eof\n"  # deliberately NOT followed by a blank line (docs/protocol.md#tail)
_LINE_FIELDS = ("level", "pos", "out", "time", "args")
_LINE_FIELD_SET = frozenset(_LINE_FIELDS)
# Field ranges live in the regex so the common case costs one match; only days 29-31 need
# the calendar (see _check_time).
_TIME_RE = re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(?:\.\d+)?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)\Z"
)
_TIME_NO_ZONE_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?")
_GO_RFC3339 = "2006-01-02T15:04:05Z07:00"
_FORM_TYPE = "application/x-www-form-urlencoded"
_STREAM_TTL = 5 * 3600.0
# Known log-service routes (path below the prefix) and the methods each accepts.
_ROUTES: Dict[str, Tuple[str, ...]] = {
    "/stream": ("POST", "PUT", "DELETE", "GET"),
    "/stream/info": ("GET",),
    "/blob": ("POST", "GET"),
    "/blob/link/upload": ("POST",),
    "/healthz": ("GET",),
}
_STORAGE_PREFIX = "/_storage/"
_STATS_PATH = "/_stats"
_TRUE_VALUES = frozenset(("1", "t", "T", "TRUE", "true", "True"))  # Go strconv.ParseBool


@dataclass(frozen=True)
class Recorded:
    """One request as the fake saw it, so tests can assert on exactly what went over the wire."""

    method: str
    path: str  # below the prefix, without the query (raw, not percent-decoded)
    query: Dict[str, str]  # percent-decoded; the first value wins for a repeated name
    headers: Dict[str, str]  # lower-case names
    body: bytes
    time: float  # time.monotonic() when the request was fully read
    key: Optional[str]  # decoded ``key`` query parameter
    fault: Optional[str] = None  # the injected fault applied to it ("fail", "blackhole", ...)
    raw_path: str = ""  # the request target exactly as sent (prefix and query included)
    conn: int = 0  # sequence number of the TCP connection (keep-alive reuse is visible)

    def json(self) -> Any:
        """Decode the body as JSON (convenience for assertions)."""
        return json.loads(self.body)


class _Abort(Exception):
    """The connection must be dropped without an answer (client gone, reset, blackhole)."""


class _BadRequest(Exception):
    """The request framing itself is broken (bad Content-Length, bad chunk)."""


class _Marker:
    """A sentinel pushed to tail subscribers."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_EOF = _Marker("eof")  # the stream closed: send the eof event, then end the body
_DROP = _Marker("drop")  # the service "restarted" or stops: cut the connection, no eof


class _Subscriber:
    """The queue between a stream and one SSE tail handler."""

    def __init__(self) -> None:
        # Leaf lock: holders never take another lock, so pushing under the service lock is safe.
        self.cond = threading.Condition(threading.Lock())
        self.items: Deque[Any] = deque()

    def push(self, item: Any) -> None:
        """Queue a batch of lines or a marker (called with the service lock held)."""
        with self.cond:  # leaf lock, see class docstring: cannot deadlock
            self.items.append(item)
            self.cond.notify()

    def take(self, timeout: float) -> List[Any]:
        """Wait up to ``timeout`` for queued items and return them all."""
        with self.cond:  # leaf lock; wait() releases it, pushers never block on us for long
            if not self.items and timeout > 0:
                self.cond.wait(timeout)
            out = list(self.items)
            self.items.clear()
            return out


class _Stream:
    """A live stream: the retained lines, its tail subscribers, and when it was opened."""

    __slots__ = ("lines", "subs", "opened")

    def __init__(self, retention: int) -> None:
        self.lines: Deque[dict] = deque(maxlen=max(0, retention))
        self.subs: set = set()
        self.opened = time.monotonic()


@dataclass
class _Fault:
    """A pending injected fault, applied to the next ``remaining`` matching requests."""

    kind: str
    remaining: int
    method: Optional[str]
    path: Optional[str]
    params: Dict[str, Any]

    def matches(self, method: str, path: str, body: bytes = b"") -> bool:
        """Match on method (case-insensitive) and path (exact, or prefix when ending in '*').
        A fault on ``PUT`` is one on pushes of lines: an empty write (``[]`` or ``null``, a
        writer's look at whether the stream is live) is matched only by a fault on any
        method, or with ``probes=True``."""
        if self.method is not None and self.method.upper() != method:
            return False
        if method == "PUT" and self.method is not None and not self.params.get("probes"):
            if body.strip() in (b"[]", b"null"):
                return False
        if self.path is None:
            return True
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path


@dataclass
class _Link:
    """An issued upload link (like a presigned URL: path and query must come back verbatim)."""

    full_key: str
    path: str
    query: Dict[str, str]
    deadline: float


def _json_type(value: Any) -> str:
    """Name a JSON value's type the way Go's decoder errors do."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _check_time(value: str) -> Optional[str]:
    """Validate an RFC 3339 timestamp WITH a zone, as Go's time.Time decoder does."""
    if _TIME_RE.match(value) is None:
        base = _TIME_NO_ZONE_RE.match(value)
        if base is not None and _TIME_RE.match(value[: base.end()] + "Z") is not None:
            rest = value[base.end() :]  # the date and clock are fine: the zone is missing or bad
            return f'parsing time "{value}" as "{_GO_RFC3339}": cannot parse "{rest}" as "Z07:00"'
        return f'parsing time "{value}" as "{_GO_RFC3339}": month, day or clock out of range or malformed'
    if value[8:10] > "28":  # only these days can be past the end of their month
        try:
            datetime(int(value[0:4]), int(value[5:7]), int(value[8:10]))
        except ValueError:
            return f'parsing time "{value}": day out of range'
    return None


def _field_type_error(line: dict, i: int) -> str:
    """Go's message for the first of level/pos/out with the wrong JSON type."""
    for name, want, gotype in (("level", str, "string"), ("pos", int, "int"), ("out", str, "string")):
        if type(line[name]) is not want:
            return (
                f"json: cannot unmarshal {_json_type(line[name])} into Go struct field "
                f"Line.{name} of type {gotype} (line {i})"
            )
    raise AssertionError("no bad field")


def _validate_lines(data: List[Any]) -> Optional[str]:
    """Return an error message for the first bad line, or None (one pass, no copies)."""
    for i, line in enumerate(data):
        if type(line) is not dict:
            return f"json: cannot unmarshal {_json_type(line)} into Go value of type stream.Line (line {i})"
        if line.keys() != _LINE_FIELD_SET:
            missing = [f for f in _LINE_FIELDS if f not in line]
            if missing:
                return f"line {i}: missing field(s): {', '.join(missing)}"
            extra = sorted(k for k in line if k not in _LINE_FIELD_SET)
            return f"line {i}: unknown field(s): {', '.join(extra)}"
        # Inlined checks: this loop runs for every line of every benchmark batch.
        stamp = line["time"]
        if type(line["level"]) is not str or type(line["pos"]) is not int or type(line["out"]) is not str:
            return _field_type_error(line, i)
        if type(stamp) is not str:
            return f"json: cannot unmarshal {_json_type(stamp)} into Go struct field Line.time of type time.Time (line {i})"
        if _TIME_RE.match(stamp) is None or stamp[8:10] > "28":
            err = _check_time(stamp)
            if err is not None:
                return err
        args = line["args"]
        if args is not None:
            if type(args) is not dict:
                return f"json: cannot unmarshal {_json_type(args)} into Go struct field Line.args of type map[string]string (line {i})"
            for value in args.values():
                if type(value) is not str:
                    return (
                        f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                        f"Line.args of type string (line {i})"
                    )
    return None


def _compact(line: dict) -> bytes:
    """Serialise one line compactly, UTF-8, like Go's json.Marshal (minus HTML escaping)."""
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _sse_event(line: dict) -> bytes:
    """Frame one line as an SSE data event."""
    return b"data: " + _compact(line) + b"\n\n"


def _error_body(msg: str) -> bytes:
    """The service's pretty-printed error document (Go encoder with indent, trailing newline)."""
    return (json.dumps({"error_msg": msg}, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _go_duration(seconds: float) -> str:
    """Format a duration like Go's time.Duration.String() (h/m/s form)."""
    if seconds <= 0:
        return "0s"
    ns = int(seconds * 1e9)
    hours, rem = divmod(ns, 3600 * 10**9)
    minutes, rem = divmod(rem, 60 * 10**9)
    secs = f"{rem / 1e9:.9f}".rstrip("0").rstrip(".")
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return f"{out}{secs}s"


def _phrase(status: int) -> str:
    """The reason phrase for a status line."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _format_retry_after(value: float | str) -> str:
    """Render a Retry-After value; fractional seconds are allowed to keep tests fast."""
    if isinstance(value, str):
        return value
    if float(value).is_integer():
        return str(int(value))
    return f"{value:g}"


def _hard_shutdown(sock: socket.socket) -> None:
    """Shut a connection down at the TCP level so any thread blocked on it wakes up.

    The base-class method is called on purpose: SSLSocket.shutdown() would also drop the
    SSL object under the feet of the thread still using it.
    """
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass


class _Server(socketserver.TCPServer):
    """TCPServer that hands each connection to the service's own named, tracked threads."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, service: FakeLogService, address: Tuple[str, int]) -> None:
        self.service = service
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection on a new tracked thread (never inline on the acceptor)."""
        self.service._spawn(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: a fake that prints tracebacks for dropped clients is noise in tests."""


class _Handler(BaseHTTPRequestHandler):
    """One TCP connection: parses HTTP/1.1 requests and hands them to the service."""

    protocol_version = "HTTP/1.1"
    server_version = "fake-log-service/1"
    sys_version = ""
    disable_nagle_algorithm = True  # small SSE events and responses must go out at once

    def __init__(self, request: Any, client_address: Any, server: _Server, conn_id: int) -> None:
        self.conn_id = conn_id
        self.service: FakeLogService = server.service
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        """Do the TLS handshake here, on the connection thread, never on the acceptor."""
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(self.service.handshake_timeout)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    def handle_one_request(self) -> None:
        """Read one request and dispatch it; any socket trouble ends the connection."""
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline) > 65536:
                self.requestline = ""
                self.request_version = ""
                self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self.service._handle(self)
        except (_Abort, OSError, ValueError, ssl.SSLError):
            self.close_connection = True
        except Exception as exc:  # a bug in the fake: make it loud, never a silent disconnect
            self.service.errors.append(exc)
            self.close_connection = True
            try:
                self.error(500, f"fake service bug: {exc!r}")
            except (OSError, ValueError):
                pass

    def finish(self) -> None:
        """Close the stream wrappers, ignoring errors from an already-dead socket."""
        try:
            super().finish()
        except (OSError, ValueError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging."""

    # ---- I/O helpers used by the service -------------------------------------------------

    def read_body(self) -> bytes:
        """Read the request body by Content-Length or chunked transfer coding."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise _BadRequest("bad Content-Length") from None
        if n < 0:
            raise _BadRequest("bad Content-Length")
        data = self.rfile.read(n) if n else b""
        if len(data) < n:
            raise _Abort("client closed mid-body")
        return data

    def _read_chunked(self) -> bytes:
        """Decode a chunked body, ignoring extensions and trailers."""
        chunks: List[bytes] = []
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise _Abort("client closed mid-body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest("bad chunk size") from None
            if size == 0:
                while True:  # trailers, up to the blank line
                    trailer = self.rfile.readline(65537)
                    if trailer in (b"\r\n", b"\n", b""):
                        return b"".join(chunks)
            data = self.rfile.read(size)
            if len(data) < size:
                raise _Abort("client closed mid-body")
            chunks.append(data)
            self.rfile.readline(65537)  # the CRLF after the chunk data

    def respond(
        self,
        status: int,
        body: bytes = b"",
        content_type: Optional[str] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> None:
        """Send a complete response in one write (Content-Length always, except for 204)."""
        parts = [
            f"HTTP/1.1 {status} {_phrase(status)}\r\n",
            f"Server: {self.server_version}\r\n",
            f"Date: {self.date_time_string()}\r\n",
        ]
        if content_type:
            parts.append(f"Content-Type: {content_type}\r\n")
        for name, value in (headers or {}).items():
            parts.append(f"{name}: {value}\r\n")
        if status != 204 and status != 304 and status >= 200:
            parts.append(f"Content-Length: {len(body)}\r\n")
        if self.close_connection:
            parts.append("Connection: close\r\n")
        parts.append("\r\n")
        if self.command == "HEAD":
            body = b""  # the headers describe the body, but a HEAD answer never carries it
        self.wfile.write("".join(parts).encode("latin-1") + body)

    def error(self, status: int, msg: str) -> None:
        """Send the service's JSON error document."""
        self.respond(status, _error_body(msg), "application/json")

    def start_sse(self) -> None:
        """Send the headers of an SSE response: no Content-Length, the body ends at close."""
        self.close_connection = True
        self.wfile.write(
            (
                "HTTP/1.1 200 OK\r\n"
                f"Server: {self.server_version}\r\n"
                f"Date: {self.date_time_string()}\r\n"
                "Content-Type: text/event-stream\r\n"
                "Cache-Control: no-cache\r\n"
                "X-Accel-Buffering: no\r\n"
                "Connection: close\r\n\r\n"
            ).encode("latin-1")
        )

    def send_raw(self, data: bytes) -> None:
        """Write bytes straight to the socket (sendall: nothing stays buffered)."""
        self.wfile.write(data)

    def reset(self) -> None:
        """Close the connection with an RST (SO_LINGER 0) and without answering."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.rfile.close()  # drops the makefile reference so close() really closes the fd
        except (OSError, ValueError):
            pass
        try:
            sock.close()
        except OSError:
            pass


class FakeLogService:
    """An in-process HTTP/1.1 fake of the log service that records requests and injects faults."""

    def __init__(
        self,
        *,
        account_id: str = "acct",
        token: str = "secret-token",
        prefix: str = "",
        retention: int = 5000,
        object_storage: bool = True,
        keepalive: float = 30.0,
        eof_at_close: bool = True,
        reopen_follows: bool = False,
        answer_delay: float = 0.0,
        tail_tick: float = 0.2,
        ssl_context: Optional[ssl.SSLContext] = None,
        discard: bool = False,
        port: int = 0,
        ttl: float = _STREAM_TTL,
        link_ttl: float = 3600.0,
        handshake_timeout: float = 5.0,
    ) -> None:
        prefix = prefix.rstrip("/")
        if prefix and not prefix.startswith("/"):
            prefix = "/" + prefix
        self.account_id = account_id
        self.token = token
        self.prefix = prefix
        self.retention = retention
        self.object_storage = object_storage
        #: Seconds of quiet after which a tail gets a ``: ping`` (the service's 30 s).
        self.keepalive = keepalive
        #: False mimics the Redis backend (docs/protocol.md#tail): closing or expiring a stream sends
        #: its tails no eof, and their connections stay open, pinging, until the client leaves.
        self.eof_at_close = eof_at_close
        #: Without ``eof_at_close``: whether the tails of a re-opened stream go on with the new
        #: stream's lines (True) or are left with pings only (False).
        self.reopen_follows = reopen_follows
        #: Seconds every log-service request waits before it is answered (a slow service).
        self.answer_delay = answer_delay
        #: How often a tail handler looks for new lines, pings and a departed client.
        self.tail_tick = tail_tick
        self.ssl_context = ssl_context
        self.discard = discard
        self.port = port
        self.ttl = ttl
        self.link_ttl = link_ttl
        self.handshake_timeout = handshake_timeout

        #: Every request in arrival order (appended under ``_lock``; read it freely).
        self.requests: List[Recorded] = []

        # All state below is guarded by _lock (see the module docstring for the lock order).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # same lock: blackhole holds and wait_for
        self._stop_event = threading.Event()  # wakes stalled handlers at stop()
        self._streams: Dict[str, _Stream] = {}
        self._orphans: set = set()  # tails of streams closed without an eof (eof_at_close=False)
        self._written: Dict[str, List[dict]] = {}
        self._received: Dict[str, int] = {}
        self._last_pos: Dict[str, int] = {}
        self._blobs: Dict[str, bytes] = {}
        self._links: Dict[str, _Link] = {}
        self._faults: List[_Fault] = []
        self._blackholed = False
        self._links_expired = False
        self._generation = 0
        self._conn_seq = 0
        self._conns: Dict[int, Tuple[threading.Thread, Any]] = {}
        self._server: Optional[_Server] = None
        self._acceptor: Optional[threading.Thread] = None
        self._origin = ""
        self._started = False
        self._stopping = False
        self._stopped = False
        #: Unexpected exceptions inside the fake (its own bugs); the fixtures fail a test on any.
        self.errors: List[BaseException] = []

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL clients should use: scheme, host, port and prefix."""
        if not self._origin:
            raise RuntimeError("FakeLogService is not started")
        return self._origin + self.prefix

    @property
    def origin(self) -> str:
        """Scheme, host and port, without the prefix (where upload links live)."""
        if not self._origin:
            raise RuntimeError("FakeLogService is not started")
        return self._origin

    def start(self) -> FakeLogService:
        """Bind, listen and start the acceptor thread; returns self for chaining."""
        if self._started:
            raise RuntimeError("FakeLogService already started")
        server = _Server(self, ("127.0.0.1", self.port))
        if self.ssl_context is not None:
            # Handshakes happen on the connection threads (see _Handler.setup), so a silent
            # or broken TLS client can never block the acceptor.
            server.socket = self.ssl_context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        scheme = "https" if self.ssl_context is not None else "http"
        self._origin = f"{scheme}://127.0.0.1:{server.server_address[1]}"
        self._server = server
        self._acceptor = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{THREAD_PREFIX}-accept",
            daemon=True,
        )
        self._started = True
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Unblock everything, close every socket and join every thread (well under 2 s)."""
        with self._lock:  # never waits while held; pushes take only leaf subscriber locks
            if not self._started or self._stopped:
                return
            self._stopping = True
            for stream in self._streams.values():
                for sub in stream.subs:
                    sub.push(_DROP)
            for sub in self._orphans:
                sub.push(_DROP)
            self._cond.notify_all()  # releases blackholed handlers
        self._stop_event.set()  # releases stalled handlers
        assert self._server is not None and self._acceptor is not None
        self._server.shutdown()  # returns within poll_interval; serve_forever is running
        self._server.server_close()
        self._acceptor.join(2.0)
        with self._lock:  # snapshot only; no waiting under the lock
            conns = list(self._conns.values())
        for _, sock in conns:
            _hard_shutdown(sock)  # wakes reads, writes and TLS handshakes blocked on it
        deadline = time.monotonic() + 2.0
        for thread, _ in conns:
            thread.join(max(0.0, deadline - time.monotonic()))  # no lock held while joining
        self._stopped = True

    def __enter__(self) -> FakeLogService:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self._origin + self.prefix if self._origin else "not started"
        return f"<FakeLogService {where}>"

    def _spawn(self, request: Any, client_address: Any) -> None:
        """Start a named, tracked thread for one accepted connection (acceptor thread)."""
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            # Thread.start() only waits for the new thread to signal it is running; the new
            # thread takes _lock only when it ends, so starting it under the lock is safe.
            if self._stopping:
                _hard_shutdown(request)
                request.close()
                return
            self._conn_seq += 1
            conn_id = self._conn_seq
            thread = threading.Thread(
                target=self._serve_connection,
                args=(request, client_address, conn_id),
                name=f"{THREAD_PREFIX}-conn-{conn_id}",
                daemon=True,
            )
            self._conns[conn_id] = (thread, request)
            thread.start()

    def _serve_connection(self, request: Any, client_address: Any, conn_id: int) -> None:
        """Connection thread body: serve requests until the connection ends."""
        assert self._server is not None
        try:
            _Handler(request, client_address, self._server, conn_id)
        except Exception as exc:  # handshake failures, resets: the connection just ends
            if not isinstance(exc, (OSError, ssl.SSLError, _Abort)):
                self.errors.append(exc)
        finally:
            self._server.shutdown_request(request)
            with self._lock:  # short critical section, nothing waited on inside
                self._conns.pop(conn_id, None)

    # ---- what happened ---------------------------------------------------------------------

    def _full(self, key: str, account: Optional[str]) -> str:
        """The storage key: accountID + "/" + key."""
        return f"{self.account_id if account is None else account}/{key}"

    def requests_for(
        self, key: Optional[str] = None, method: Optional[str] = None, path: Optional[str] = None
    ) -> List[Recorded]:
        """Recorded requests filtered by key, method and path (None = any)."""
        with self._lock:  # snapshot only
            recs = list(self.requests)
        return [
            r
            for r in recs
            if (key is None or r.key == key)
            and (method is None or r.method == method.upper())
            and (path is None or r.path == path)
        ]

    def clear_requests(self) -> None:
        """Forget the recorded requests (state and faults are kept)."""
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            self.requests.clear()

    def token_leaks(self) -> List[Recorded]:
        """Storage-link requests that carried the X-Harness-Token header (must be empty)."""
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            recs = list(self.requests)
        return [r for r in recs if r.raw_path.startswith(_STORAGE_PREFIX) and "x-harness-token" in r.headers]

    def live_lines(self, key: str, *, account: Optional[str] = None) -> List[dict]:
        """Lines the live stream holds now (after retention); [] when it is not open."""
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            stream = self._live(self._full(key, account))
            return list(stream.lines) if stream is not None else []

    def all_written(self, key: str, *, account: Optional[str] = None) -> List[dict]:
        """Every line ever accepted by PUT for key, in order (not available in discard mode)."""
        if self.discard:
            raise RuntimeError("all_written() is not kept in discard mode; use stats()")
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            return list(self._written.get(self._full(key, account), ()))

    def blob(self, key: str, *, account: Optional[str] = None) -> Optional[bytes]:
        """The stored blob (direct upload, link upload or snapshot), or None."""
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            return self._blobs.get(self._full(key, account))

    def blob_lines(self, key: str, *, account: Optional[str] = None) -> Optional[List[dict]]:
        """The stored blob parsed as NDJSON, or None when there is no blob."""
        data = self.blob(key, account=account)
        if data is None:
            return None
        return [json.loads(line) for line in data.splitlines() if line]

    def is_open(self, key: str, *, account: Optional[str] = None) -> bool:
        """Whether the stream for key is open (opened, not closed, not expired)."""
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            return self._live(self._full(key, account)) is not None

    def subscribers(self, key: str, *, account: Optional[str] = None) -> int:
        """How many SSE tails are attached to the stream right now."""
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            stream = self._live(self._full(key, account))
            return len(stream.subs) if stream is not None else 0

    def stats(self, key: str, *, account: Optional[str] = None) -> Dict[str, Any]:
        """Counters for key, as served by ``GET /_stats``."""
        full = self._full(key, account)
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            stream = self._live(full)
            return {
                "received": self._received.get(full, 0),
                "last_pos": self._last_pos.get(full),
                "blob_bytes": len(self._blobs.get(full, b"")),
                "open": stream is not None,
                "live": len(stream.lines) if stream is not None else 0,
            }

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until predicate() is true (re-checked after every request); False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
                seen = self._generation
            if predicate():  # called with no lock held: it may use any accessor above
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._cond:  # wait() releases _lock; a 50 ms cap also covers non-request changes
                if self._generation == seen:
                    self._cond.wait(min(remaining, 0.05))

    def _bump(self) -> None:
        """Signal wait_for() that something changed."""
        with self._cond:  # notify only; nothing is waited on while it is held here
            self._generation += 1
            self._cond.notify_all()

    # ---- faults -------------------------------------------------------------------------------

    def _add_fault(
        self, kind: str, n: int, method: Optional[str], path: Optional[str], **params: Any
    ) -> None:
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            self._faults.append(_Fault(kind, n, method, path, params))

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        *,
        method: Optional[str] = None,
        path: Optional[str] = None,
        error_msg: str = "injected failure",
        body: Optional[bytes | str] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> None:
        """Answer the next n matching requests with ``status`` (JSON error, or a raw ``body``)."""
        self._add_fault(
            "fail", n, method, path, status=status, error_msg=error_msg, body=body, headers=headers
        )

    def throttle_next(
        self,
        n: int = 1,
        retry_after: float | str = 1,
        *,
        method: Optional[str] = None,
        path: Optional[str] = None,
    ) -> None:
        """Answer the next n matching requests 429 with a Retry-After header."""
        self._add_fault("throttle", n, method, path, retry_after=_format_retry_after(retry_after))

    def reset_next(self, n: int = 1, *, method: Optional[str] = None, path: Optional[str] = None) -> None:
        """Read the next n matching requests, then reset the TCP connection without answering."""
        self._add_fault("reset", n, method, path)

    def stall_next(
        self, n: int = 1, seconds: float = 5.0, *, method: Optional[str] = None, path: Optional[str] = None
    ) -> None:
        """Wait ``seconds`` before handling the next n matching requests (then answer normally)."""
        self._add_fault("stall", n, method, path, seconds=seconds)

    def redirect_next(
        self,
        n: int = 1,
        location: Optional[str] = None,
        *,
        status: int = 307,
        method: Optional[str] = None,
        path: Optional[str] = None,
    ) -> None:
        """Answer the next n matching requests with a redirect (the client must not follow it)."""
        self._add_fault("redirect", n, method, path, location=location, status=status)

    def clear_faults(self) -> None:
        """Drop every pending fault (the blackhole and expired links are separate switches)."""
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            self._faults.clear()

    def pending_faults(self) -> int:
        """How many fault applications are still pending."""
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            return sum(f.remaining for f in self._faults)

    def blackhole(self, on: bool = True) -> None:
        """While on, read requests and never answer; held requests are dropped unanswered
        (connection closed) when it is switched off, and are never processed."""
        with self._cond:  # flips the flag and wakes holders; nothing waits while holding it
            self._blackholed = on
            self._cond.notify_all()

    def restart(self) -> None:
        """Forget every live stream, like a restarted in-memory service; blobs and links stay.

        Tail connections are cut without an eof, as a dying process would.
        """
        with self._lock:  # pushes take only leaf subscriber locks
            for stream in self._streams.values():
                for sub in stream.subs:
                    sub.push(_DROP)
            for sub in self._orphans:
                sub.push(_DROP)
            self._streams.clear()
        self._bump()

    def drop_tails(self, key: str, *, account: Optional[str] = None) -> int:
        """Cut the tail connections of one live stream without an eof (a proxy timing out
        idle connections); the stream lives on.  Returns how many were cut."""
        with self._lock:  # pushes take only leaf subscriber locks
            stream = self._streams.get(self._full(key, account))
            subs = list(stream.subs) if stream is not None else []
            for sub in subs:
                sub.push(_DROP)
        self._bump()
        return len(subs)

    def expire_links(self, on: bool = True) -> None:
        """While on, PUTs to upload links answer 403 (an expired presigned URL)."""
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            self._links_expired = on

    def expire_stream(self, key: str, *, account: Optional[str] = None) -> bool:
        """Expire one live stream now (like its Redis TTL ran out); tails get the eof unless
        ``eof_at_close`` is off."""
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            stream = self._streams.pop(self._full(key, account), None)
            if stream is not None:
                self._end_tails(stream)
        self._bump()
        return stream is not None

    # ---- request handling ---------------------------------------------------------------------

    def _live(self, full: str) -> Optional[_Stream]:
        """The open stream for full key, expiring it first if its TTL ran out (lock held)."""
        stream = self._streams.get(full)
        if stream is not None and time.monotonic() - stream.opened >= self.ttl:
            del self._streams[full]
            self._end_tails(stream)
            return None
        return stream

    def _end_tails(self, stream: _Stream) -> None:
        """A stream ended: its tails get the eof, or (Redis) nothing at all (lock held)."""
        if self.eof_at_close:
            for sub in stream.subs:
                sub.push(_EOF)
        else:
            self._orphans.update(stream.subs)

    def _route(self, path_only: str) -> Tuple[str, bool]:
        """Strip the prefix; returns (path below it, whether the request was under it)."""
        if not self.prefix:
            return path_only, True
        if path_only == self.prefix or path_only.startswith(self.prefix + "/"):
            return path_only[len(self.prefix) :] or "/", True
        return path_only, False

    def _handle(self, h: _Handler) -> None:
        """Handle one parsed request: read it, record it, apply faults, then route it."""
        method = h.command.upper()
        raw_path = h.path
        path_only, _, query_string = raw_path.partition("?")
        query: Dict[str, str] = {}
        for name, value in parse_qsl(query_string, keep_blank_values=True):
            query.setdefault(name, value)
        headers = {name.lower(): value for name, value in h.headers.items()}
        try:
            body = h.read_body()
        except _BadRequest as exc:
            h.close_connection = True
            h.error(400, str(exc))
            return
        route, under_prefix = self._route(path_only)
        control = path_only == _STATS_PATH
        kept_body = b"" if (self.discard and method == "PUT" and route == "/stream") else body

        fault: Optional[_Fault] = None
        with self._lock:  # pick the fault and record atomically, so records show what happened
            blackholed = self._blackholed and not control
            if not blackholed and not control:
                for candidate in self._faults:
                    if candidate.matches(method, route, body):
                        fault = candidate
                        candidate.remaining -= 1
                        if candidate.remaining <= 0:
                            self._faults.remove(candidate)
                        break
            kind = "blackhole" if blackholed else (fault.kind if fault is not None else None)
            self.requests.append(
                Recorded(
                    method=method,
                    path=route,
                    query=query,
                    headers=headers,
                    body=kept_body,
                    time=time.monotonic(),
                    key=query.get("key"),
                    fault=kind,
                    raw_path=raw_path,
                    conn=h.conn_id,
                )
            )
        self._bump()
        try:
            if blackholed:
                self._hold()
                raise _Abort("blackholed")
            if fault is not None and self._apply_fault(h, fault):
                return
            if self.answer_delay > 0 and not control and self._stop_event.wait(self.answer_delay):
                raise _Abort("stopping")  # no lock held while waiting; stop() sets the event
            self._dispatch(h, method, route, under_prefix, path_only, query, headers, body)
        finally:
            self._bump()

    def _hold(self) -> None:
        """Block a blackholed request until the blackhole is switched off or stop()."""
        with self._cond:  # wait() releases _lock; blackhole(False) and stop() notify under it
            while self._blackholed and not self._stopping:
                self._cond.wait()

    def _apply_fault(self, h: _Handler, fault: _Fault) -> bool:
        """Apply a fault; True when the request was answered (or dropped) by it."""
        p = fault.params
        if fault.kind == "fail":
            body = p["body"]
            if body is None:
                payload, ctype = _error_body(p["error_msg"]), "application/json"
            else:
                payload = body.encode("utf-8") if isinstance(body, str) else body
                ctype = "text/plain; charset=utf-8"
            h.respond(p["status"], payload, ctype, p["headers"])
            return True
        if fault.kind == "throttle":
            h.respond(
                429, _error_body("too many requests"), "application/json", {"Retry-After": p["retry_after"]}
            )
            return True
        if fault.kind == "reset":
            h.reset()
            raise _Abort("reset")
        if fault.kind == "stall":
            if self._stop_event.wait(p["seconds"]):  # no lock held; stop() sets it
                raise _Abort("stopping")
            return False
        if fault.kind == "redirect":
            location = p["location"] or f"{self._origin}{self.prefix}/redirected"
            h.respond(p["status"], b"", None, {"Location": location})
            return True
        raise AssertionError(f"unknown fault {fault.kind}")

    def _dispatch(
        self,
        h: _Handler,
        method: str,
        route: str,
        under_prefix: bool,
        path_only: str,
        query: Dict[str, str],
        headers: Dict[str, str],
        body: bytes,
    ) -> None:
        """Route a request that no fault answered."""
        if path_only.startswith(_STORAGE_PREFIX):
            self._storage_put(h, method, path_only, query, headers, body)
            return
        if path_only == _STATS_PATH:
            key = query.get("key", "")
            h.respond(
                200, json.dumps(self.stats(key, account=query.get("accountID"))).encode(), "application/json"
            )
            return
        methods = _ROUTES.get(route) if under_prefix else None
        if methods is None:
            h.error(404, "404 page not found")
            return
        if method not in methods:
            h.error(405, "method not allowed")
            return
        if route == "/healthz":
            h.respond(200, b"OK", "text/plain; charset=utf-8")
            return

        # Auth, in the service's order: account, token, then the token/account match.
        account = query.get("accountID", "")
        if not account:
            h.error(400, "no account ID in query params")
            return
        token = headers.get("x-harness-token", "")
        if not token:
            h.error(400, "no token in header")
            return
        if token != self.token or account != self.account_id:
            h.error(400, f"operation not permitted for accountID: {account}")
            return
        # The service parses a form body for its query lookups, leaving the handler nothing.
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype == _FORM_TYPE and body:
            h.error(400, "EOF")
            return

        full = f"{account}/{query.get('key', '')}"
        if route == "/stream":
            if method == "POST":
                self._open(h, full)
            elif method == "PUT":
                self._write(h, full, body)
            elif method == "DELETE":
                self._close(h, full, query.get("snapshot", "") in _TRUE_VALUES)
            else:
                self._tail(h, full)
        elif route == "/stream/info":
            self._info(h, account)
        elif route == "/blob":
            if method == "POST":
                with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
                    self._blobs[full] = body
                h.respond(204)
            else:
                with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
                    data = self._blobs.get(full)
                if data is None:
                    h.error(404, "blob: not found")
                else:
                    h.respond(200, data, "application/octet-stream")
        else:  # /blob/link/upload
            self._issue_link(h, full)

    def _open(self, h: _Handler, full: str) -> None:
        """POST /stream: (re)create the stream; re-opening wipes it.  Its old tails get the eof,
        or, without ``eof_at_close``, nothing more or the new stream's lines (``reopen_follows``)."""
        with self._lock:  # pushes take only leaf subscriber locks
            old = self._live(full)
            new = self._streams[full] = _Stream(self.retention)
            if old is not None:
                if self.eof_at_close:
                    for sub in old.subs:
                        sub.push(_EOF)
                elif self.reopen_follows:
                    new.subs.update(old.subs)
                else:
                    self._orphans.update(old.subs)
        h.respond(204)

    def _write(self, h: _Handler, full: str, body: bytes) -> None:
        """PUT /stream: validate a JSON array of lines and append it."""
        try:
            data = json.loads(body) if body else None
        except ValueError as exc:
            h.error(400, f"invalid character in JSON body: {exc}")
            return
        if data is None and not body:
            h.error(400, "EOF")
            return
        if data is None:
            data = []  # Go decodes a JSON null into a nil slice: an empty write
        if not isinstance(data, list):
            h.error(400, f"json: cannot unmarshal {_json_type(data)} into Go value of type []*stream.Line")
            return
        err = _validate_lines(data)
        if err is not None:
            h.error(400, err)
            return
        with self._lock:  # pushes take only leaf subscriber locks
            stream = self._live(full)
            if stream is None:
                missing = True
            else:
                missing = False
                stream.lines.extend(data)
                if not self.discard:
                    self._written.setdefault(full, []).extend(data)
                if data:
                    self._received[full] = self._received.get(full, 0) + len(data)
                    self._last_pos[full] = data[-1]["pos"]
                for sub in stream.subs:
                    sub.push(data)
        if missing:
            h.error(400, "stream: not found")
        else:
            h.respond(204)

    def _close(self, h: _Handler, full: str, snapshot: bool) -> None:
        """DELETE /stream: optionally snapshot the live lines as NDJSON, close, eof to tails."""
        with self._lock:  # pushes take only leaf subscriber locks
            stream = self._live(full)
            if stream is not None:
                if snapshot:
                    self._blobs[full] = b"".join(_compact(line) + b"\n" for line in stream.lines)
                del self._streams[full]
                self._end_tails(stream)
        if stream is None:
            h.error(500, "stream: not found")
        else:
            h.respond(204)

    def _info(self, h: _Handler, account: str) -> None:
        """GET /stream/info: the account's open streams with size, subscribers and TTL."""
        now = time.monotonic()
        streams: Dict[str, Dict[str, Any]] = {}
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            for full in list(self._streams):
                stream = self._live(full)
                if stream is not None and full.startswith(account + "/"):
                    streams[full] = {
                        "size": len(stream.lines),
                        "subscribers": len(stream.subs),
                        "ttl": _go_duration(self.ttl - (now - stream.opened)),
                    }
        body = json.dumps({"streams": streams}, indent=2, ensure_ascii=False) + "\n"
        h.respond(200, body.encode("utf-8"), "application/json")

    def _issue_link(self, h: _Handler, full: str) -> None:
        """POST /blob/link/upload: hand out a presigned-URL-like link on this server."""
        if not self.object_storage:
            h.error(500, "not implemented")
            return
        token = secrets.token_hex(12)
        path = f"{_STORAGE_PREFIX}{token}/{quote(full, safe='')}"
        query = {"X-Amz-Expires": str(int(self.link_ttl)), "X-Amz-Signature": secrets.token_hex(16)}
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            self._links[token] = _Link(full, path, query, time.monotonic() + self.link_ttl)
        link = f"{self._origin}{path}?X-Amz-Expires={query['X-Amz-Expires']}&X-Amz-Signature={query['X-Amz-Signature']}"
        body = json.dumps({"link": link, "expires": int(self.link_ttl * 1e9)}, indent=2) + "\n"
        h.respond(200, body.encode("utf-8"), "application/json")

    def _storage_put(
        self,
        h: _Handler,
        method: str,
        path_only: str,
        query: Dict[str, str],
        headers: Dict[str, str],
        body: bytes,
    ) -> None:
        """PUT <link>: object storage; a leaked token is refused loudly, expiry is 403."""
        if "x-harness-token" in headers:
            h.error(400, "token sent to storage")
            return
        if method != "PUT":
            h.respond(405, b"<Error><Code>MethodNotAllowed</Code></Error>", "application/xml")
            return
        token = path_only[len(_STORAGE_PREFIX) :].split("/", 1)[0]
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            link = self._links.get(token)
            expired = self._links_expired or (link is not None and time.monotonic() > link.deadline)
        if link is None:
            h.respond(404, b"<Error><Code>NoSuchUpload</Code></Error>", "application/xml")
            return
        if expired:
            h.respond(
                403,
                b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                "application/xml",
            )
            return
        if path_only != link.path or query != link.query:
            h.respond(403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>", "application/xml")
            return
        with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
            self._blobs[link.full_key] = body
        h.respond(200, b"", None, {"ETag": f'"{secrets.token_hex(16)}"'})

    def _tail(self, h: _Handler, full: str) -> None:
        """GET /stream: SSE tail; ping, history, live lines, pings, then the unterminated eof."""
        sub = _Subscriber()
        with self._lock:  # registration and history snapshot together: no line lost or doubled
            stream = self._live(full)
            history = list(stream.lines) if stream is not None else []
            if stream is not None:
                if self._stopping:
                    sub.push(_DROP)
                stream.subs.add(sub)
        h.start_sse()
        if stream is None:
            h.send_raw(_SSE_PING + _SSE_EOF)
            return
        selector = selectors.DefaultSelector()
        try:
            h.send_raw(_SSE_PING + b"".join(_sse_event(line) for line in history))
            selector.register(h.connection, selectors.EVENT_READ)
            last = time.monotonic()
            while True:
                wait = min(self.tail_tick, max(0.0, last + self.keepalive - time.monotonic()))
                out: List[bytes] = []
                for item in sub.take(wait):  # leaf lock only, released before any I/O
                    if item is _EOF:
                        h.send_raw(b"".join(out) + _SSE_EOF)
                        return
                    if item is _DROP:
                        if out:
                            h.send_raw(b"".join(out))
                        raise _Abort("tail dropped")
                    out.extend(_sse_event(line) for line in item)
                now = time.monotonic()
                if out:
                    h.send_raw(b"".join(out))
                    last = now
                elif now - last >= self.keepalive:
                    h.send_raw(_SSE_PING)
                    last = now
                if selector.select(0):  # the client closed (or sent bytes it should not)
                    raise _Abort("tail client gone")
        finally:
            selector.close()
            with self._lock:  # short critical section: no I/O, no waiting, no other lock taken
                stream.subs.discard(sub)
                followed = self._streams.get(full)  # the stream a re-open handed this tail on to
                if followed is not None:
                    followed.subs.discard(sub)
                self._orphans.discard(sub)
            self._bump()


# ---- command line ----------------------------------------------------------------------------


def _stdin_watchable() -> bool:
    """Whether stdin can signal "parent gone" by closing (not /dev/null, not missing)."""
    try:
        fd = sys.stdin.fileno()
        st = os.fstat(fd)
    except (AttributeError, OSError, ValueError):
        return False
    try:
        null = os.stat(os.devnull)
    except OSError:
        return True
    return not (stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev)


def _watch_stdin(done: threading.Event) -> None:
    """Set ``done`` when stdin reaches EOF (the parent closed it or died)."""
    fd = sys.stdin.fileno()
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass
    done.set()  # Event.set takes only the event's own lock: cannot deadlock


def main(argv: Optional[List[str]] = None) -> int:
    """Serve a FakeLogService in the foreground (for benchmarks run against a separate process)."""
    parser = argparse.ArgumentParser(prog="python -m tests.service", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="secret-token")
    parser.add_argument("--account", default="acct")
    parser.add_argument("--prefix", default="")
    parser.add_argument("--retention", type=int, default=5000)
    parser.add_argument("--keepalive", type=float, default=30.0, help="seconds of quiet before a ping")
    parser.add_argument("--no-eof", action="store_true", help="as the Redis backend: no eof at close")
    parser.add_argument(
        "--reopen-follows",
        action="store_true",
        help="with --no-eof: the tails of a re-opened stream go on with the new stream's lines",
    )
    parser.add_argument("--answer-delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--no-object-storage", action="store_true")
    parser.add_argument(
        "--discard", action="store_true", help="validate and count PUT lines, keep only counters"
    )
    parser.add_argument("--ignore-stdin", action="store_true", help="do not stop when stdin closes")
    args = parser.parse_args(argv)

    service = FakeLogService(
        account_id=args.account,
        token=args.token,
        prefix=args.prefix,
        retention=args.retention,
        object_storage=not args.no_object_storage,
        keepalive=args.keepalive,
        eof_at_close=not args.no_eof,
        reopen_follows=args.reopen_follows,
        answer_delay=args.answer_delay,
        discard=args.discard,
        port=args.port,
    ).start()
    stdin_closed = threading.Event()
    signalled: List[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        # Only appends to a list: taking a lock in a signal handler could deadlock the main thread.
        signalled.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not args.ignore_stdin and _stdin_watchable():
        threading.Thread(
            target=_watch_stdin, args=(stdin_closed,), name=f"{THREAD_PREFIX}-stdin", daemon=True
        ).start()
    print(f"URL {service.url}", flush=True)
    try:
        # Short waits so a signal (which only appends to a list) is noticed promptly.
        while not signalled and not stdin_closed.wait(0.1):
            pass
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
