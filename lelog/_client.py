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

import enum
import os
import ssl
import threading
import time
import weakref
from typing import Any, Callable, Generator, Iterator, Optional, Sequence, Union, cast

import httpx

from . import _process
from ._clock import Deadline
from ._config import LogConfig
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
from ._retry import OnRetry, RetryPolicy, parse_retry_after
from ._version import __version__

__all__ = ["LogServiceClient", "LineLike"]

#: A line as a value, or already encoded as compact JSON bytes (the writer's form).
LineLike = Union[Line, bytes]

_AUTH_MESSAGES = ("no account ID in query params", "no token in header", "operation not permitted")
_TAIL_READ_TIMEOUT = 75.0  # the service pings every 30 s; two missed pings is a dead stream


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


class LogServiceClient:
    """The calls of the log service, each retried per ``RetryPolicy`` within a deadline.

    Thread-safe as ``httpx.Client`` is.  After ``os.fork()`` the child gets a new connection
    pool on its first call (the parent's sockets are left alone, never closed from the child).
    Each call takes ``deadline`` (seconds, all attempts included; the config's default when
    None), ``cancel`` (an Event that interrupts retry waits), ``on_retry`` (a hook called
    before each wait) and ``retry`` (a ``RetryPolicy`` replacing the client's for this call).
    """

    def __init__(
        self,
        config: LogConfig,
        *,
        transport: Optional[httpx.BaseTransport] = None,
        retry: Optional[RetryPolicy] = None,
    ) -> None:
        if not config.url:
            raise ConfigError("LogServiceClient needs a url; without one use lelog.FileStore")
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

        It ends cleanly at the service's end marker (``event: error`` / ``data: eof``, sent
        without the blank line a strict SSE parser waits for), or, on a service that sends
        none (the Redis backend), when an empty ``PUT /stream`` probe made on a quiet
        period's ping answers ``stream: not found``.  Quiet periods of any length keep it
        open: the call deadline bounds connecting, not the tail.  A dropped connection to a
        stream that still lives is re-established within the deadline; lines already
        yielded are skipped by ``pos``, and where lines may be missing a marker line is
        yielded (``pos`` -1, ``args`` ``{"lelog": "gap"}``).  A connection that cannot be
        re-established, or an answer that is not an event stream, raises
        ``LogServiceError`` from the iteration (docs/protocol.md#tail).
        """
        budget = self._budget(opts, self.config.call_deadline)
        policy = self._policy(opts)

        def connect() -> httpx.Response:
            return policy.run(lambda remaining: self._tail_attempt(key, remaining), **budget)

        return _Tail(key, connect(), connect, lambda: self._stream_lives(key, budget["deadline"])).lines()

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
        t = self._timeout
        request = self.http.build_request(
            "GET",
            self.config.url + "/stream",
            params=self._params(key),
            headers=self._auth_headers(),
            # Connecting is bounded by the deadline; reading is not: the service pings a
            # quiet tail every 30 s, and two missed pings mean a dead connection.
            timeout=httpx.Timeout(
                connect=min(t.connect or remaining, remaining),
                read=_TAIL_READ_TIMEOUT,
                write=min(t.write or remaining, remaining),
                pool=min(t.pool or remaining, remaining),
            ),
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
        return response

    def _stream_lives(self, key: str, deadline: float) -> Optional[bool]:
        """Whether the stream is open, by an empty ``PUT /stream`` (which changes nothing):
        204 while it lives, ``400 stream: not found`` once it is gone; None: no answer."""
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
            return False
        except LogServiceError:
            return None
        return True

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


_process.after_fork_in_child(_renew_locks_in_child)  # lelog's one fork hook runs it


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


class _TailEnd(enum.Enum):
    """How one connection of a tail ended."""

    EOF = "the end marker"
    CLOSED = "the stream was closed (an empty write answered 'stream: not found')"
    DROPPED = "the connection dropped"


def _gap(text: str) -> Line:
    return Line(f"lelog: --- {text} ---\n", -1, time.time(), "warn", {"lelog": "gap"})


class _Tail:
    """One tail across reconnections: which lines were yielded, and how it ends.

    Used by the one thread iterating the tail; it holds no lock.
    """

    def __init__(
        self,
        key: str,
        response: httpx.Response,
        reconnect: Callable[[], httpx.Response],
        lives: Callable[[], Optional[bool]],
    ) -> None:
        self._key = key
        self._response = response
        self._reconnect = reconnect
        self._lives = lives
        self._last: Optional[Line] = None  # the last line yielded
        self._resync = False  # after a reconnection: until the stream is found where it was

    def lines(self) -> Iterator[Line]:
        while True:
            reason = ""
            try:
                end = yield from self._events(self._response)
            except httpx.TransportError as exc:
                end, reason = _TailEnd.DROPPED, f"{type(exc).__name__}: {exc}".rstrip(": ")
            finally:
                self._response.close()
            if end is not _TailEnd.DROPPED:
                return
            self._resume(reason or "the service ended the event stream without its end marker")

    def _resume(self, reason: str) -> None:
        what = f"tail {self._key!r}: the connection to the log service dropped ({reason})"
        lives = self._lives()
        if lives is False:
            raise LogServiceError(
                f"{what} and the stream has closed since; its last lines may be missing "
                "(the stored log has them all)",
                call="tail",
            )
        try:
            self._response = self._reconnect()
        except LogServiceError as exc:
            raise LogServiceError(f"{what} and could not be re-established: {exc}", call="tail") from None
        self._resync = True

    def _events(self, response: httpx.Response) -> Generator[Line, None, _TailEnd]:
        event = ""
        first = True
        for raw in response.iter_lines():
            if not raw:
                event = ""  # a blank line ends an event
                continue
            if raw.startswith(":"):
                # A ping after a quiet period, when every line written before it has come:
                # a service that sends no end marker (Redis) is asked whether the stream
                # still lives.  Not the ping that opens the answer: the history follows it.
                if not first and self._lives() is False:
                    return _TailEnd.CLOSED
                first = False
                continue
            first = False
            field, _, value = raw.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                if event == "error":
                    return _TailEnd.EOF  # the service's end marker: "event: error" then "data: eof"
                line = _parse_event_data(self._key, value)
                yield from self._checked(line)
        return _TailEnd.DROPPED

    def _checked(self, line: Line) -> Iterator[Line]:
        """``line`` unless it was yielded before a reconnection, with a gap marker first
        where lines may be missing."""
        last = self._last
        if self._resync and last is not None:
            if line.pos < last.pos:
                return  # history the tail has shown already
            self._resync = False
            if line.pos == last.pos:
                if line.time == last.time:
                    return  # found where it was: go on from the next line
                yield _gap("the stream was re-opened; lines may be missing")
            elif line.pos > last.pos + 1:
                yield _gap(f"{line.pos - last.pos - 1:,} lines may be missing")
        self._last = line
        yield line


def _iter_sse(key: str, response: httpx.Response) -> Iterator[Line]:
    """Lines of one event stream, with no reconnection and no probe: it ends at the end
    marker, and a connection that ends otherwise raises ``LogServiceError``."""

    def cannot_reconnect() -> httpx.Response:
        raise LogServiceError("this tail does not reconnect", call="tail")

    return _Tail(key, response, cannot_reconnect, lambda: None).lines()


def _held_lines(key: str, response: httpx.Response, max_lines: int, deadline: Deadline) -> list[Line]:
    """The lines of one event stream until its end marker, ``max_lines``, ``deadline``, or a
    read timeout (the connection's read timeout is the quiet period ``peek`` waits for)."""
    lines: list[Line] = []
    event = ""
    try:
        for raw in response.iter_lines():
            if not raw:
                event = ""  # a blank line ends an event
                continue
            field, _, value = raw.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                if event == "error":
                    break  # the service's end marker
                lines.append(_parse_event_data(key, value))
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
