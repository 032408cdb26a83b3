"""``LogServiceClient``: the log-service calls of docs/protocol.md#endpoints over one ``httpx.Client``.

Every call is bounded: explicit connect/read/write/pool timeouts per attempt, and a total
deadline over all attempts (``RetryPolicy``).  The token goes only to the log service, as a
per-request header, so the upload-link ``PUT`` to object storage never carries it.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
import time
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import httpx

from ._config import LogConfig
from ._exceptions import (
    AuthError,
    BlobNotFound,
    ConfigError,
    LogServiceError,
    StreamNotFound,
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


def _error_msg(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text[:200].strip()
    message = body.get("error_msg") if isinstance(body, dict) else None
    if isinstance(message, str):
        return message
    return response.text[:200].strip()


def _ssl_context(config: LogConfig) -> Union[bool, ssl.SSLContext]:
    """The TLS settings for httpx; a context only when a CA path or client cert needs one."""
    cert, key = config.client_cert_pem, config.client_cert_key_pem
    if isinstance(config.verify, bool) and cert is None:
        return config.verify
    if isinstance(config.verify, str):
        if os.path.isdir(config.verify):
            ctx = ssl.create_default_context(capath=config.verify)
        else:
            ctx = ssl.create_default_context(cafile=config.verify)
    else:
        ctx = httpx.create_ssl_context(verify=config.verify)
    if cert is not None and key is not None:
        _load_client_cert(ctx, cert, key)
    return ctx


def _load_client_cert(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl loads certificates only from files: write them to private files, load, remove.
    paths = []
    try:
        for pem in (cert, key):
            fd, path = tempfile.mkstemp(prefix="lelog-", suffix=".pem")  # mode 0600
            paths.append(path)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
        ctx.load_cert_chain(certfile=paths[0], keyfile=paths[1])
    except ssl.SSLError as exc:
        raise ConfigError(
            f"client_cert/client_cert_key could not be loaded ({exc.reason or exc}); "
            "check that the key matches the certificate and both are PEM"
        ) from None
    finally:
        for path in paths:
            os.unlink(path)


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
        self._verify = _ssl_context(config)
        self._transport = transport
        self._timeout = httpx.Timeout(
            connect=config.connect_timeout,
            read=config.read_timeout,
            write=config.write_timeout,
            pool=config.pool_timeout,
        )
        self._lock = threading.Lock()  # guards replacing the pool after a fork; never held across I/O
        self._pid = os.getpid()
        self._http = self._new_http()

    def __repr__(self) -> str:
        return f"<LogServiceClient url={self.config.url!r} account_id={self.config.account_id!r}>"

    def _new_http(self) -> httpx.Client:
        return httpx.Client(
            verify=self._verify,
            transport=self._transport,
            timeout=self._timeout,
            follow_redirects=False,
            trust_env=self.config.trust_env,  # HTTP(S)_PROXY, NO_PROXY, SSL_CERT_FILE
            headers={"User-Agent": f"lelog/{__version__}"},
        )

    @property
    def http(self) -> httpx.Client:
        """The connection pool of this process (a forked child gets its own)."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._http = self._new_http()
                    self._pid = os.getpid()
        return self._http

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

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
        end = time.monotonic() + (self.config.upload_deadline if deadline is None else deadline)

        def left() -> float:  # one deadline over every request of the upload
            return max(end - time.monotonic(), 0.001)

        if not self.config.indirect_upload:
            try:
                self._upload_via_link(key, body, left, **opts)
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
            deadline=left(),
            **opts,
        )

    def _upload_via_link(self, key: str, body: bytes, left: Callable[[], float], **opts: Any) -> None:
        answer = self._call("upload link", "POST", "/blob/link/upload", key, deadline=left(), **opts).json()
        link = answer.get("link") if isinstance(answer, dict) else None
        if not isinstance(link, str) or not link.startswith(("http://", "https://")):
            raise LogServiceError(f"upload link {key!r}: the service answered no usable link")

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

        self._policy(opts).run(put, **self._budget(opts, left()))

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

        Ends at the service's end marker (``event: error`` / ``data: eof``, which the service
        sends without the blank line a strict SSE parser waits for) or when the body ends.
        """

        def connect(timeout: float) -> httpx.Response:
            request = self.http.build_request(
                "GET",
                self.config.url + "/stream",
                params=self._params(key),
                headers=self._auth_headers(),
                timeout=self._within(timeout, read=_TAIL_READ_TIMEOUT),
            )
            return self._send("tail", key, request, stream=True)

        response = self._policy(opts).run(connect, **self._budget(opts, self.config.call_deadline))
        return _iter_sse(key, response)

    def info(self, **opts: Any) -> dict[str, Any]:
        """``GET /stream/info``: the account's open streams and their sizes."""
        result = self._call("info", "GET", "/stream/info", None, **opts).json()
        return result if isinstance(result, dict) else {}

    def health(self, *, timeout: float = 5.0) -> bool:
        """``GET /healthz`` once, no retry: True when the service answers 200."""
        try:
            response = self.http.get(self.config.url + "/healthz", timeout=self._within(timeout))
        except httpx.HTTPError:
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
        deadline: Optional[float] = None,
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
        except httpx.TransportError as exc:
            raise TransportError(
                f"{what}: no answer from the log service ({type(exc).__name__}: {exc})", call=call
            ) from exc
        if response.is_success:
            return response
        if stream:
            response.read()
            response.close()
        raise _error_for(what, call, response)


def _error_for(what: str, call: str, response: httpx.Response) -> LogServiceError:
    status = response.status_code
    msg = _error_msg(response)
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


def _iter_sse(key: str, response: httpx.Response) -> Iterator[Line]:
    """Lines from a tail's event stream; closes the response however the loop ends."""
    event = ""
    try:
        for raw in response.iter_lines():
            if not raw:
                event = ""  # a blank line ends an event
                continue
            if raw.startswith(":"):
                continue  # a comment: the service's keep-alive ping
            field, _, value = raw.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                if event == "error":
                    return  # the service's end marker: "event: error" then "data: eof"
                yield _parse_event_data(key, value)
    except httpx.TransportError:
        return  # the connection ended: so did the stream
    finally:
        response.close()


def _parse_event_data(key: str, data: str) -> Line:
    try:
        return parse_line(data)
    except ValueError as exc:
        raise LogServiceError(
            f"tail {key!r}: the service sent an event that is not a log line ({exc}): {data[:80]!r}",
            call="tail",
        ) from None
