"""``LogServiceClient``: the log-service calls of docs/protocol.md#endpoints over one ``httpx.Client``.

Every call is bounded: explicit connect/read/write/pool timeouts per attempt, and a total
deadline over all attempts (``RetryPolicy``).  The token goes only to the log service, as a
per-request header, so the upload-link ``PUT`` to object storage never carries it.

Building a client is cheap: the ``httpx.Client`` (its connection pool) is made on the first
call, with the TLS context shared by every client of the same TLS settings (``_tls``).  Every
error text it raises is scrubbed of the token and the secrets (``LogConfig.scrub``), also
the text of errors raised inside httpx, httpcore or ssl, which are not chained (a traceback
would print them).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import math
import os
import queue
import re
import socket
import ssl
import threading
import time
import weakref
from typing import Any, Callable, Generator, Iterator, Mapping, Optional, Sequence, Union, cast

import attrs
import httpx

from . import _lifecycle
from ._clock import Deadline
from ._config import LogConfig, resolve_config
from ._exceptions import (
    AuthError,
    BlobNotFound,
    ConfigError,
    LogServiceError,
    StreamNotFound,
    TLSError,
    TransportError,
    UploadLinkUnsupported,
)
from ._line import Line, json_array, ndjson, parse_line
from ._quiet import quiet_own_http_records
from ._retry import OnRetry, RetryPolicy, parse_retry_after
from ._version import __version__

__all__ = ["LogServiceClient", "LineLike"]

#: A line as a value, or already encoded as compact JSON bytes (the writer's form).
LineLike = Union[Line, bytes]

_AUTH_MESSAGES = ("no account ID in query params", "no token in header", "operation not permitted")
#: A tail connection's read timeout: a backstop only, as the tail notices silence itself (the
#: service pings every 30 s without lines).
_TAIL_READ_TIMEOUT = 75.0
#: A tail that got no line for this long asks whether its stream still lives: a Redis-backed
#: service never says that it closed (docs/protocol.md#tail-redis).
_TAIL_QUIET = 2.0
#: Once the stream is found gone, lines still on their way are read until none came for this long.
_TAIL_DRAIN = 0.5
#: How many of the lines shown a tail remembers, to tell its stream from a re-opened one after
#: a reconnection (the service keeps about 5,000).
_TAIL_REMEMBER = 8192
#: Items a tail's reader may hold ahead of the iterating thread; beyond, it waits (TCP holds
#: the rest).
_TAIL_READ_AHEAD = 10_000
#: How long stopping a tail's reader waits for its thread (it ends at once: its socket is
#: shut down).
_TAIL_STOP_WAIT = 5.0


def _encoded(lines: Sequence[LineLike]) -> list[bytes]:
    return [line if isinstance(line, bytes) else line.encode() for line in lines]


def _error_msg(response: httpx.Response, scrub: Callable[[str], str]) -> str:
    """The service's error text, scrubbed before it is cut short (a cut could keep half a token)."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return scrub(response.text)[:200].strip()
    message = body.get("error_msg") if isinstance(body, dict) else None
    if isinstance(message, str):
        return scrub(message)
    return scrub(response.text)[:200].strip()


def _untrusted_certificate(exc: BaseException) -> Optional[str]:
    """Why the service's certificate was refused, if that is what ``exc`` comes from."""
    seen: set[int] = set()
    cause: Optional[BaseException] = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return str(cause.verify_message or cause.reason or "certificate verify failed")
        cause = cause.__cause__ or cause.__context__
    return None


def _import_what_requests_need() -> None:
    """Import what httpx imports on its first request (certifi, httpcore, h11, the idna
    codec), on the thread that starts a stream.  On the writer's worker those imports could
    be under way when another thread forks, and the child's copy of that module's import lock
    would stay held: its first request would wait forever.  Free once done."""
    import codecs
    import importlib.resources  # noqa: F401  (certifi.where() imports it)

    import certifi
    import h11  # noqa: F401
    import httpcore  # noqa: F401

    certifi.where()
    codecs.lookup("idna")


class LogServiceClient:
    """The calls of the log service, each retried per ``RetryPolicy`` within a deadline.

    ``config`` is what ``StreamWriter`` takes as a configuration: a ``LogConfig``, a setup
    request or its ``log_config`` as a dict (``LELOG_*`` variables fill what it does not
    give), or None for the ``LELOG_*`` environment alone.  It must name a ``url``.

    Thread-safe as ``httpx.Client`` is.  After ``os.fork()`` the child gets a new connection
    pool on its first call (the parent's sockets are left alone, never closed from the child).
    Each call takes ``deadline`` (seconds, all attempts included; the config's default when
    None), ``cancel`` (an Event that interrupts retry waits), ``on_retry`` (a hook called
    before each wait) and ``retry`` (a ``RetryPolicy`` replacing the client's for this call).
    """

    def __init__(
        self,
        config: Union[LogConfig, Mapping[str, Any], None],
        *,
        transport: Optional[httpx.BaseTransport] = None,
        retry: Optional[RetryPolicy] = None,
    ) -> None:
        # What a StreamWriter takes as its target, but a backend: a LogConfig, a setup
        # request or its log_config (the LELOG_* environment fills what it leaves out), or
        # None for the environment alone.
        config = resolve_config(config)
        if not config.url:
            raise ConfigError("LogServiceClient needs a url; without one use lelog.FileStore")
        quiet_own_http_records()  # this client's requests must reach no handler (_quiet.py)
        self.config = config
        self.retry = retry or RetryPolicy(max_attempts=config.max_attempts, max_wait=config.max_retry_wait)
        self._scrub = config.scrub
        self._transport = transport
        self._timeout = httpx.Timeout(
            connect=config.connect_timeout,
            read=config.read_timeout,
            write=config.write_timeout,
            pool=config.pool_timeout,
        )
        # Guards making the pool (on first use, and anew in a forked child).  Held only while
        # httpx.Client() is built: no I/O, no other lock of ours, and a record httpx might log
        # meanwhile goes to handlers that never call this client on the logging thread (the
        # writer's worker does its I/O on its own thread), so it cannot deadlock.
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._http: Optional[httpx.Client] = None
        self._closed = False
        _clients.add(self)  # for a new _lock in a forked child

    def __repr__(self) -> str:
        return f"<LogServiceClient url={self.config.url!r} account_id={self.config.account_id!r}>"

    def _new_http(self) -> httpx.Client:
        # A context even for http://: an upload link may be https (object storage).  Shared
        # by every client with these TLS settings, so this costs one build per process.
        return httpx.Client(
            verify=self.config.tls_context(),
            transport=self._transport,
            timeout=self._timeout,
            follow_redirects=False,
            trust_env=self.config.trust_env,  # HTTP(S)_PROXY, NO_PROXY, SSL_CERT_FILE
            headers={"User-Agent": f"lelog/{__version__}"},
        )

    @property
    def http(self) -> httpx.Client:
        """The connection pool of this process, made on first use (a forked child gets its
        own; the parent's sockets are left alone).  After ``close()`` calls fail as httpx's do."""
        http = self._http
        if http is None or self._pid != os.getpid():
            with self._lock:
                if self._http is None or self._pid != os.getpid():
                    self._http = self._new_http()
                    self._pid = os.getpid()
                    if self._closed:
                        self._http.close()
                http = self._http
        return http

    def prepare(self) -> None:
        """Make this process's connection pool and TLS context now, and import what a first
        request imports, on this thread (see ``Engine.start``; never under ``logging``'s
        module lock: httpcore's modules take it as they are imported).  A config whose TLS
        material is bad raises ``ConfigError``."""
        _import_what_requests_need()
        _ = self.http

    def close(self) -> None:
        """Close the connection pool (if one was ever made)."""
        with self._lock:
            self._closed = True
            http = self._http
        if http is not None:
            http.close()

    def __enter__(self) -> LogServiceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the calls --------------------------------------------------------------------------

    def open_stream(self, key: str, **opts: Any) -> None:
        """``POST /stream``.  Re-opening wipes a stream: call it once per key."""
        self._call("open", "POST", "/stream", key, deadline_default=self.config.open_deadline, **opts)

    def write(self, key: str, lines: Sequence[LineLike], **opts: Any) -> None:
        """``PUT /stream`` with one JSON array of lines; raises ``StreamNotFound`` if closed."""
        try:
            body = json_array(cast("Sequence[bytes]", lines))  # already encoded: the writer's case
        except TypeError:  # some are Line objects, which json_array cannot join
            body = json_array(_encoded(lines))
        self._call(
            "write",
            "PUT",
            "/stream",
            key,
            content=body,
            headers={"Content-Type": "application/json"},
            **opts,
        )

    def upload(self, key: str, lines: Union[Sequence[LineLike], bytes], **opts: Any) -> None:
        """Store the complete log: ``POST /blob`` when ``indirect_upload``, else via a link.

        ``lines`` may be the NDJSON body itself.  A service without object storage answers
        the link request with ``not implemented``; the upload then goes through ``POST /blob``.
        """
        body = lines if isinstance(lines, bytes) else ndjson(_encoded(lines))
        deadline = opts.pop("deadline", None)
        if not isinstance(deadline, Deadline):  # one deadline over every request of the upload
            deadline = Deadline.after(self.config.upload_deadline if deadline is None else deadline)
        if not self.config.indirect_upload:
            try:
                self._upload_via_link(key, body, deadline, **opts)
                return
            except UploadLinkUnsupported:
                pass
        self._call(
            "upload",
            "POST",
            "/blob",
            key,
            content=body,
            headers={"Content-Type": "application/x-ndjson"},
            deadline=deadline,
            **opts,
        )

    def _upload_via_link(self, key: str, body: bytes, deadline: Deadline, **opts: Any) -> None:
        answer = self._call("upload link", "POST", "/blob/link/upload", key, deadline=deadline, **opts).json()
        link = answer.get("link") if isinstance(answer, dict) else None
        if not isinstance(link, str) or not link.startswith(("http://", "https://")):
            raise LogServiceError(self._scrub(f"upload link {key!r}: the service answered no usable link"))

        def put(timeout: float) -> httpx.Response:
            # No token here: the link is object storage, not the log service.
            return self._send(
                "upload to link",
                key,
                self.http.build_request(
                    "PUT",
                    link,
                    content=body,
                    headers={"Content-Type": "application/octet-stream"},
                    timeout=self._within(timeout),
                ),
            )

        self._policy(opts).run(put, **self._budget({**opts, "deadline": deadline}, 0.0))

    def close_stream(self, key: str, *, snapshot: bool = False, **opts: Any) -> None:
        """``DELETE /stream``; ``snapshot=True`` makes the service store what it still holds.

        Raises ``StreamNotFound`` (never retried) when the stream is already gone.
        """
        params = {"snapshot": "true"} if snapshot else None
        self._call("close", "DELETE", "/stream", key, params=params, **opts)

    def download(self, key: str, **opts: Any) -> bytes:
        """``GET /blob``: the stored log as NDJSON bytes; ``BlobNotFound`` if there is none."""
        return self._call("download", "GET", "/blob", key, **opts).content

    def tail(self, key: str, **opts: Any) -> Iterator[Line]:
        """Follow a live stream (server-sent events): history first, then lines as they come.

        It ends at the service's end marker (``event: error`` / ``data: eof``, sent without
        the blank line a strict SSE parser waits for).  A service that sends none (the Redis
        backend) is asked: after two seconds without a line, an empty ``PUT /stream`` (which
        writes nothing) answers ``stream: not found`` once the stream is gone; lines still on
        their way are read, and lines the stored log has but the tail never got (a stream
        re-opened under it, lines written as it closed) follow a marker line.  Quiet periods
        of any length keep it open.

        ``deadline`` (the config's ``call_deadline`` by default) is how long the tail keeps
        trying to reach the service: connecting, re-establishing a dropped connection (the
        probe and every attempt within one deadline), and hearing nothing at all (no line,
        ping or answer to a probe) while it follows.  Past it, ``LogServiceError`` is raised
        from the iteration.  Lines already yielded are skipped by ``pos`` after a
        reconnection; a marker line (``pos`` -1, ``args`` ``{"lelog": "gap"}``) stands where
        lines may be missing or the stream was re-opened (docs/protocol.md#tail).  An answer
        that is not an event stream raises ``LogServiceError``.
        """
        budget = self._budget(opts, self.config.call_deadline)
        policy = self._policy(opts)
        patience = float(budget["deadline"])  # a Deadline converts to the seconds it has left

        def connect(deadline: Deadline) -> httpx.Response:
            return policy.run(
                lambda remaining: self._tail_attempt(key, remaining),
                deadline=deadline,
                cancel=budget["cancel"],
                on_retry=budget["on_retry"],
            )

        def stored(deadline: Deadline) -> Optional[bytes]:
            try:
                return self.download(key, deadline=deadline)
            except LogServiceError:
                return None

        first = connect(Deadline.after(patience))  # a failure to connect raises here, at the call
        tail = _Tail(key, connect, patience, lives=lambda d: self._stream_lives(key, d), stored=stored)
        return tail.lines(first)

    def peek(self, key: str, *, quiet: float = 1.0, max_lines: int = 5000, **opts: Any) -> list[Line]:
        """The lines the live stream holds now, without following it: a tail read until the
        service ends it, ``max_lines`` came, or nothing came for ``quiet`` seconds (the
        history arrives at once when a tail connects).  Empty for a stream that is not open.
        Bounded by the call's deadline as every call is: what came by then is the answer.
        """
        budget = self._budget(opts, self.config.call_deadline)
        deadline = budget["deadline"]
        deadline = deadline if isinstance(deadline, Deadline) else Deadline.after(deadline)
        budget["deadline"] = deadline

        def attempt(remaining: float) -> list[Line]:
            t = self._timeout
            request = self.http.build_request(
                "GET",
                self.config.url + "/stream",
                params=self._params(key),
                headers=self._auth_headers(),
                timeout=httpx.Timeout(
                    connect=min(t.connect or remaining, remaining),
                    read=min(quiet, remaining),
                    write=min(t.write or remaining, remaining),
                    pool=min(t.pool or remaining, remaining),
                ),
            )
            response = self._send("peek", key, request, stream=True)
            try:
                kind = response.headers.get("content-type", "")
                if not kind.startswith("text/event-stream"):
                    raise LogServiceError(
                        f"peek {key!r}: the answer is not an event stream (Content-Type: {kind or 'none'})",
                        status=response.status_code,
                        call="peek",
                    )
                return _held_lines(key, response, max_lines, deadline)
            finally:
                response.close()

        return self._policy(opts).run(attempt, **budget)

    def _tail_attempt(self, key: str, remaining: float) -> httpx.Response:
        request = self.http.build_request(
            "GET",
            self.config.url + "/stream",
            params=self._params(key),
            headers=self._auth_headers(),
            timeout=self._within(remaining),  # the answer's headers come within the deadline
        )
        response = self._send("tail", key, request, stream=True)
        kind = response.headers.get("content-type", "")
        if not kind.startswith("text/event-stream"):
            response.close()
            raise LogServiceError(
                f"tail {key!r}: the answer is not an event stream (Content-Type: {kind or 'none'}); "
                "check that the url is the log service's",
                status=response.status_code,
                call="tail",
            )
        # The body is the tail, quiet for as long as the stream is: its reads get a long
        # timeout, a backstop only (the tail notices silence itself).  httpcore reads the
        # request's timeouts when the body starts being read, so this applies to the body.
        timeouts = response.request.extensions.get("timeout")
        if isinstance(timeouts, dict):
            timeouts["read"] = _TAIL_READ_TIMEOUT
        return response

    def _stream_lives(self, key: str, deadline: Deadline) -> _Liveness:
        """Whether the stream is open, by an empty ``PUT /stream`` (which writes no line): 204
        while it lives, ``400 stream: not found`` once it is gone."""
        try:
            self._call(
                "write",
                "PUT",
                "/stream",
                key,
                content=b"[]",
                headers={"Content-Type": "application/json"},
                deadline=deadline,
            )
        except StreamNotFound:
            return _Liveness.GONE
        except TransportError:
            return _Liveness.SILENT
        except LogServiceError:
            return _Liveness.ANSWERED  # the service is there, but did not say (a 403, a 5xx)
        return _Liveness.LIVES

    def info(self, **opts: Any) -> dict[str, Any]:
        """``GET /stream/info``: the account's open streams and their sizes."""
        result = self._call("info", "GET", "/stream/info", None, **opts).json()
        return result if isinstance(result, dict) else {}

    def health(self, *, timeout: float = 5.0) -> bool:
        """``GET /healthz`` once, no retry: True when the service answers 200."""
        try:
            response = self.http.get(self.config.url + "/healthz", timeout=self._within(timeout))
        except (httpx.HTTPError, ssl.SSLError, OSError, ValueError):
            return False
        return response.status_code == 200

    # -- machinery --------------------------------------------------------------------------

    def _params(self, key: Optional[str]) -> dict[str, str]:
        # httpx percent-encodes query values, so any key round-trips (the Go client's did not).
        params = {"accountID": self.config.account_id}
        if key is not None:
            params["key"] = key
        return params

    def _auth_headers(self) -> dict[str, str]:
        return {"X-Harness-Token": self.config.token}

    def _within(self, remaining: float, *, read: Optional[float] = None) -> httpx.Timeout:
        """Per-attempt timeouts, none longer than what is left of the call's deadline."""
        t = self._timeout
        return httpx.Timeout(
            connect=min(t.connect or remaining, remaining),
            read=min(read or t.read or remaining, remaining),
            write=min(t.write or remaining, remaining),
            pool=min(t.pool or remaining, remaining),
        )

    def _budget(self, opts: dict[str, Any], default_deadline: float) -> dict[str, Any]:
        unknown = set(opts) - {"deadline", "cancel", "on_retry", "retry"}
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
        deadline = opts.get("deadline")
        return {
            "deadline": default_deadline if deadline is None else deadline,
            "cancel": opts.get("cancel"),
            "on_retry": opts.get("on_retry"),
        }

    def _policy(self, opts: dict[str, Any]) -> RetryPolicy:
        return opts.get("retry") or self.retry

    def _call(
        self,
        call: str,
        method: str,
        path: str,
        key: Optional[str],
        *,
        content: Optional[bytes] = None,
        headers: Optional[dict[str, str]] = None,
        params: Optional[dict[str, str]] = None,
        deadline_default: Optional[float] = None,
        deadline: Union[float, Deadline, None] = None,
        cancel: Optional[threading.Event] = None,
        on_retry: Optional[OnRetry] = None,
        retry: Optional[RetryPolicy] = None,
    ) -> httpx.Response:
        query = self._params(key)
        if params:
            query.update(params)
        all_headers = self._auth_headers()
        if headers:
            all_headers.update(headers)
        url = self.config.url + path

        def attempt(remaining: float) -> httpx.Response:
            # The body is bytes, so every attempt re-sends all of it (the Go client re-sent a
            # drained reader, storing an empty log as a success).
            request = self.http.build_request(
                method,
                url,
                params=query,
                content=content,
                headers=all_headers,
                timeout=self._within(remaining),
            )
            return self._send(call, key, request)

        if deadline is None:
            deadline = deadline_default if deadline_default is not None else self.config.call_deadline
        policy = retry or self.retry
        return policy.run(attempt, deadline=deadline, cancel=cancel, on_retry=on_retry)

    def _send(
        self, call: str, key: Optional[str], request: httpx.Request, *, stream: bool = False
    ) -> httpx.Response:
        """One attempt: the answer on 2xx, else the ``LogServiceError`` that describes it."""
        what = f"{call} {key!r}" if key is not None else call
        try:
            response = self.http.send(request, stream=stream)
        except (httpx.TransportError, ssl.SSLError, OSError, ValueError) as exc:
            # Not chained (``from None``): the cause's text and traceback are httpx's, unscrubbed.
            raise self._transport_error(what, call, exc) from None
        if response.is_success:
            return response
        if stream:
            response.read()
            response.close()
        raise _error_for(what, call, response, self._scrub)

    def _transport_error(self, what: str, call: str, exc: BaseException) -> TransportError:
        reason = _untrusted_certificate(exc)
        if reason is not None:
            return TLSError(
                self._scrub(f"{what}: the log service's certificate was not trusted: {reason}"), call=call
            )
        return TransportError(
            self._scrub(f"{what}: no answer from the log service ({type(exc).__name__}: {exc})"), call=call
        )


_clients: weakref.WeakSet[LogServiceClient] = weakref.WeakSet()


def _renew_locks_in_child() -> None:
    # A parent thread may have held a client's lock at the fork; the child needs free ones.
    for client in list(_clients):
        client._lock = threading.Lock()


def _ready_before_fork() -> None:
    """On the thread about to fork: what a client imports and builds on its first use (the
    modules of a first request, the TLS context) is imported and built now.  Another thread
    of this process doing it at the moment of the fork (a writer's worker, or the children's
    channel reader starting a stream) would leave the child's copies of the import system's
    and OpenSSL's locks held for good; here the fork waits for that thread instead.  Not the
    pool (``prepare`` makes it too): its lock is the client's own, renewed in the child.  Not
    under ``logging``'s module lock (httpcore's imports take it)."""
    clients = list(_clients)
    if not clients or _lifecycle.holding_logging_lock():
        return
    try:
        _import_what_requests_need()
        for client in clients:
            client.config.tls_context()  # built once per process and settings, then cached
    except Exception:
        pass  # the client's first request meets the same failure, and reports it


_lifecycle.before_fork(_ready_before_fork)
_lifecycle.after_fork_in_child(_renew_locks_in_child)  # lelog's one fork hook runs it


def _error_for(
    what: str, call: str, response: httpx.Response, scrub: Callable[[str], str]
) -> LogServiceError:
    status = response.status_code
    msg = _error_msg(response, scrub)
    what = scrub(what)
    kwargs: dict[str, Any] = {"status": status, "error_msg": msg, "call": call}
    text = f"{what}: {status} {msg}".rstrip()
    if response.is_redirect:
        return LogServiceError(
            f"{what}: the service answered a {status} redirect, which lelog does not follow; "
            "check the url's scheme, host and path prefix",
            **kwargs,
        )
    if "stream: not found" in msg and call in ("write", "close"):
        return StreamNotFound(text, **kwargs)
    if status == 400 and msg.startswith(_AUTH_MESSAGES):
        return AuthError(f"{text} (check account_id and token)", **kwargs)
    if status in (401, 403) and call != "upload to link":
        return AuthError(f"{text} (check account_id and token)", **kwargs)
    if status == 404 and call == "download":
        return BlobNotFound(text, **kwargs)
    if status == 500 and call == "upload link" and "not implemented" in msg:
        return UploadLinkUnsupported(text, **kwargs)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return LogServiceError(text, retry_after=retry_after, **kwargs)


class _Liveness(enum.Enum):
    """What a probe of a stream found."""

    LIVES = "lives"
    GONE = "gone"
    ANSWERED = "answered"  # the service answered, but not whether the stream lives
    SILENT = "silent"  # no answer from the service


class _Event(enum.Enum):
    """What a tail connection says besides lines."""

    PING = "ping"
    EOF = "eof"


class _Ending(enum.Enum):
    """How following one connection of a tail ended."""

    EOF = "the end marker"
    CLOSED = "the stream was found gone"


@attrs.frozen
class _Dropped:
    """The connection ended without the end marker."""

    reason: str


_Item = Union[Line, _Event, _Dropped, BaseException]


def _gap(text: str) -> Line:
    return Line(f"lelog: --- {text} ---\n", -1, time.time(), "warn", {"lelog": "gap"})


def _sse_items(key: str, response: httpx.Response) -> Iterator[Union[Line, _Event]]:
    """The lines and pings of one event stream, up to its end marker."""
    event = ""
    for raw in response.iter_lines():
        if not raw:
            event = ""  # a blank line ends an event
            continue
        if raw.startswith(":"):
            yield _Event.PING
            continue
        field, _, value = raw.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            if event == "error":  # the service's end marker: "event: error" then "data: eof"
                yield _Event.EOF
                return
            yield _parse_event_data(key, value)


class _Reader:
    """Reads one connection of a tail on a thread of its own, into a queue: the iterating
    thread then waits with a timeout, and notices a quiet period whatever the service sends.

    Only this thread uses the response (httpx objects are not shared between threads).
    ``stop`` wakes a read blocked on the socket by shutting the socket down, which is safe
    from any thread; ``_lock`` keeps that apart from the reader closing the socket, whose
    number could otherwise be reused by another connection in between.
    """

    def __init__(self, key: str, response: httpx.Response) -> None:
        self._key = key
        self._response = response
        self._items: queue.Queue[_Item] = queue.Queue(_TAIL_READ_AHEAD)
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="lelog-tail-reader", daemon=True)
        self._thread.start()

    def get(self, timeout: Optional[float]) -> Optional[_Item]:
        """The next item, or None when none came within ``timeout`` seconds (None: wait)."""
        try:
            return self._items.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        """End the reading and wait (briefly) for the thread; what was not read is dropped."""
        self._stopped.set()
        with self._lock:  # held for one shutdown call, which does not block
            if not self._closed:
                stream = self._response.extensions.get("network_stream")
                sock = stream.get_extra_info("socket") if stream is not None else None
                if isinstance(sock, socket.socket):
                    with contextlib.suppress(OSError):
                        # The base class's shutdown: an SSLSocket's own would drop its SSL
                        # object under the reading thread.
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
        if self._thread is not threading.current_thread():
            self._thread.join(_TAIL_STOP_WAIT)

    def _run(self) -> None:
        try:
            for item in _sse_items(self._key, self._response):
                if not self._put(item):
                    return
            self._put(_Dropped("the service ended the event stream without its end marker"))
        except (httpx.TransportError, httpx.StreamError, ssl.SSLError, OSError) as exc:
            self._put(_Dropped(f"{type(exc).__name__}: {exc}".rstrip(": ")))
        except BaseException as exc:  # an event that is not a line, or a bug: raised by the iterator
            self._put(exc)
        finally:
            with self._lock:
                self._closed = True
                self._response.close()

    def _put(self, item: _Item) -> bool:
        """Queue ``item``, waiting while the iterating thread is behind; False once stopped."""
        while not self._stopped.is_set():
            try:
                self._items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


class _Tail:
    """One tail across reconnections: which lines were shown, when to probe, how it ends.

    Used by the one thread iterating the tail (its connections are read by ``_Reader``s);
    it holds no lock.  ``patience`` is how long it keeps trying to reach the service.
    ``lives`` probes the stream and ``stored`` fetches its stored log; without them (a
    parser on its own) the tail ends at the end marker and never probes.
    """

    def __init__(
        self,
        key: str,
        reconnect: Callable[[Deadline], httpx.Response],
        patience: float,
        *,
        lives: Optional[Callable[[Deadline], _Liveness]] = None,
        stored: Optional[Callable[[Deadline], Optional[bytes]]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = key
        self._reconnect = reconnect
        self._patience = patience
        self._lives = lives
        self._stored = stored
        self._clock = clock
        self._last: Optional[Line] = None  # the last line yielded
        # pos -> (time, hash of out) of the last lines yielded: after a reconnection, whether
        # the stream is the one the tail showed, or a re-opened one (pos starts again at 0).
        self._shown: collections.OrderedDict[int, tuple[str, int]] = collections.OrderedDict()
        self._resync = False  # after a reconnection: until its first line says where it is
        self._skipping = False  # the same stream: history shown before the reconnection

    def lines(self, response: httpx.Response) -> Iterator[Line]:
        reader = _Reader(self._key, response)
        try:
            while True:
                ending = yield from self._follow(reader)
                reader.stop()
                if ending is _Ending.CLOSED:
                    yield from self._from_stored_log()
                    return
                resumed = self._resume(ending)
                if resumed is None:
                    return
                reader = _Reader(self._key, resumed)
        finally:
            reader.stop()

    def _follow(self, reader: _Reader) -> Generator[Line, None, Union[_Ending, _Dropped]]:
        """Yield the lines of one connection until it ends; probe the stream when quiet."""
        # Probes come often enough for two of them to fit the patience: a healthy quiet tail
        # hears an answer in time with a deadline shorter than the probe interval (but never
        # more than ten probes a second, whatever deadline it was given).
        quiet = min(_TAIL_QUIET, max(self._patience / 2, 0.1))
        heard = quiet_since = self._clock()  # the service last heard from; the last line (or probe)
        while True:
            wait = None if self._lives is None else max(0.0, quiet_since + quiet - self._clock())
            item = reader.get(wait)
            now = self._clock()
            if item is None:  # no line for a while: does the stream still live?
                assert self._lives is not None
                found = self._lives(Deadline.after(max(heard + self._patience - now, 0.001)))
                now = self._clock()
                if found is _Liveness.GONE:
                    yield from self._drain(reader)
                    return _Ending.CLOSED
                if found is not _Liveness.SILENT:
                    heard = now
                elif now - heard >= self._patience:
                    raise LogServiceError(
                        f"tail {self._key!r}: no answer from the log service for "
                        f"{self._patience:g} s (no line, ping or answer to a probe)",
                        call="tail",
                    )
                quiet_since = now
                continue
            heard = now
            if isinstance(item, Line):
                quiet_since = now
                yield from self._checked(item)
            elif item is _Event.EOF:
                return _Ending.EOF
            elif isinstance(item, _Dropped):
                return item
            elif isinstance(item, BaseException):
                raise item  # from the reader: an event that is not a log line

    def _drain(self, reader: _Reader) -> Iterator[Line]:
        """Lines written just before the close may still be on their way: read until none
        came for ``_TAIL_DRAIN`` (pings do not count: a Redis-backed service keeps pinging)."""
        until = self._clock() + _TAIL_DRAIN
        while True:
            item = reader.get(max(until - self._clock(), 0.0))
            if isinstance(item, Line):
                yield from self._checked(item)
                until = self._clock() + _TAIL_DRAIN
            elif item is not _Event.PING:
                return

    def _resume(self, ending: Union[_Ending, _Dropped]) -> Optional[httpx.Response]:
        """A new connection, or None when the tail is over; the probe and the connection
        attempts share one deadline."""
        deadline = Deadline.after(self._patience)
        lives = self._lives(deadline) if self._lives is not None else None
        if isinstance(ending, _Dropped):
            what = f"tail {self._key!r}: the connection to the log service dropped ({ending.reason})"
            if lives is _Liveness.GONE:
                raise LogServiceError(
                    f"{what} and the stream has closed since; its last lines may be missing "
                    "(the stored log has them all)",
                    call="tail",
                )
        elif lives is _Liveness.LIVES:
            # The stream lives on after its end marker: it was re-opened (a memory-backed
            # service ends its tails then), or the service ended a long tail.  Follow it on.
            what = f"tail {self._key!r}: the stream lives on after its end marker"
        else:
            return None
        try:
            response = self._reconnect(deadline)
        except LogServiceError as exc:
            raise LogServiceError(f"{what} and could not be re-established: {exc}", call="tail") from None
        self._resync = True
        return response

    def _checked(self, line: Line) -> Iterator[Line]:
        """``line`` unless it was yielded before a reconnection, with a marker first where
        lines may be missing or the stream was re-opened."""
        last = self._last
        if last is not None:
            if self._resync:
                self._resync = False
                if line.pos <= last.pos:
                    if self._shown.get(line.pos) == _mark(line):
                        self._skipping = True  # the same stream: skip what was shown
                        return
                    yield from self._reopened()
                elif line.pos > last.pos + 1:
                    yield _gap(f"{line.pos - last.pos - 1:,} lines may be missing")
            elif self._skipping:
                if line.pos <= last.pos:
                    return
                self._skipping = False
                if line.pos > last.pos + 1:
                    yield _gap(f"{line.pos - last.pos - 1:,} lines may be missing")
            elif line.pos <= last.pos:
                # On one connection pos only grows: a stream re-opened under the tail (whose
                # service hands it the new stream) starts again at 0.
                yield from self._reopened()
        self._remember(line)
        yield line

    def _reopened(self) -> Iterator[Line]:
        self._shown.clear()
        self._skipping = False
        yield _gap("the stream was re-opened; lines may be missing")

    def _remember(self, line: Line) -> None:
        self._last = line
        self._shown[line.pos] = _mark(line)
        self._shown.move_to_end(line.pos)
        if len(self._shown) > _TAIL_REMEMBER:
            self._shown.popitem(last=False)

    def _from_stored_log(self) -> Iterator[Line]:
        """After a close found by a probe: the lines of the stored log the tail never got.

        A service that sends no end marker may also never send a re-opened stream's lines
        to a tail of the old one, nor lines written as the stream closed; its stored log
        (uploaded before the close) has them.  Nothing is yielded when the tail showed the
        stored log's last line, or when there is no stored log to read.
        """
        data = self._stored(Deadline.after(self._patience)) if self._stored is not None else None
        rows: list[Line] = []
        for row in (data or b"").splitlines():
            with contextlib.suppress(ValueError):
                rows.append(parse_line(row))
        last = self._last
        if not rows or (last is not None and _same(rows[-1], last)):
            return
        start = 0
        if last is not None:
            found = next((i for i in range(len(rows) - 1, -1, -1) if _same(rows[i], last)), None)
            if found is None:  # the tail's lines are not in it: another stream's log
                yield _gap("the stream was re-opened; its stored log follows")
                yield from rows
                return
            start = found + 1
        yield _gap(f"{len(rows) - start:,} lines did not come live; from the stored log")
        yield from rows[start:]


#: An RFC 3339 time: up to the seconds, the fraction, the zone.
_RFC3339 = re.compile(r"(.*?)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)\Z")


def _instant(text: str) -> str:
    """One spelling of an RFC 3339 time: the service re-encodes live lines' times (Go drops
    a fraction's trailing zeros), while the stored log keeps them as they were written."""
    match = _RFC3339.match(text)
    if match is None:
        return text
    seconds, fraction, zone = match.groups()
    fraction = (fraction or "").rstrip("0")
    zone = "Z" if zone in ("Z", "z", "+00:00", "-00:00") else zone
    return f"{seconds}.{fraction}{zone}" if fraction else seconds + zone


def _mark(line: Line) -> tuple[str, int]:
    """What tells two lines of one ``pos`` apart: their time and text."""
    return (_instant(line.time), hash(line.out))


def _same(a: Line, b: Line) -> bool:
    return a.pos == b.pos and _mark(a) == _mark(b)


def _iter_sse(key: str, response: httpx.Response) -> Iterator[Line]:
    """Lines of one event stream, with no reconnection and no probe: it ends at the end
    marker, and a connection that ends otherwise raises ``LogServiceError``."""

    def cannot_reconnect(_deadline: Deadline) -> httpx.Response:
        raise LogServiceError("this tail does not reconnect", call="tail")

    return _Tail(key, cannot_reconnect, math.inf).lines(response)


def _held_lines(key: str, response: httpx.Response, max_lines: int, deadline: Deadline) -> list[Line]:
    """The lines of one event stream until its end marker, ``max_lines``, ``deadline``, or a
    read timeout (the connection's read timeout is the quiet period ``peek`` waits for)."""
    lines: list[Line] = []
    try:
        for item in _sse_items(key, response):
            if isinstance(item, Line):
                lines.append(item)
                if len(lines) >= max_lines:
                    break
            if deadline.expired():
                break
    except httpx.ReadTimeout:
        pass  # quiet: the stream held no more
    return lines


def _parse_event_data(key: str, data: str) -> Line:
    try:
        return parse_line(data)
    except ValueError as exc:
        raise LogServiceError(
            f"tail {key!r}: the service sent an event that is not a log line ({exc}): {data[:80]!r}",
            call="tail",
        ) from None
