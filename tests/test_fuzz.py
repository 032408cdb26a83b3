"""Malformed input for the two parsers that read what others wrote.

* The tail's SSE parser (``lelog._client._iter_sse``) reads whatever the service, or a proxy
  in front of it, sends: it must end or raise ``LogServiceError``, never hang, never raise
  anything else.
* ``LogConfig.from_setup_request`` reads the engine's setup request: it must return a config
  or raise ``ConfigError``.

Bugs this fuzzing found (``RecursionError``, ``OverflowError`` and ``OSError`` escaping the
tail parser and the setup-request parser) have regression tests at the end.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any, Iterator

import attrs
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lelog import ConfigError, Line, LogConfig, LogServiceError
from lelog._client import _iter_sse

FUZZ = settings(max_examples=150, deadline=None)
#: The longest one example may take before it counts as a hang (it takes milliseconds).
HANG = 10.0

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


# ---- the SSE tail parser -----------------------------------------------------------------------


class _Chunks(httpx.SyncByteStream):
    """A response body arriving in the given pieces, optionally cut by a dead connection."""

    def __init__(self, chunks: list[bytes], cut: bool) -> None:
        self._chunks, self._cut = chunks, cut

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks
        if self._cut:
            raise httpx.ReadError("connection reset by peer")


def _consume(chunks: list[bytes], cut: bool) -> tuple[list[Any], BaseException | None]:
    """Run the parser to its end on a thread; fail the example if it does not end in time."""
    response = httpx.Response(200, headers={"Content-Type": "text/event-stream"}, stream=_Chunks(chunks, cut))
    got: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            got.extend(_iter_sse("k", response))
        except BaseException as exc:  # judged by the caller
            error.append(exc)

    thread = threading.Thread(target=run, name="fuzz-sse", daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), f"the SSE parser hung on {b''.join(chunks)[:200]!r}"
    return got, error[0] if error else None


line_objects = st.fixed_dictionaries(
    {},
    optional={
        "level": json_values,
        "pos": json_values,
        "out": json_values,
        "args": json_values,
        "time": json_values
        | st.floats(-1e30, 1e30)
        | st.sampled_from(["2026-11-27T10:00:00Z", "2026-11-27T10:00:00"]),
    },
)
fragments = st.one_of(
    st.binary(max_size=30),
    st.sampled_from(
        [
            b": ping\n",
            b"event: error\n",
            b"data: eof\n",
            b"\n",
            b"\r\n",
            b"\r",
            b"data: ",
            b"event:",
            b"data:",
            b"id: 1\n",
            b"retry: 5\n",
            b"data: {}\n\n",
            b"\xff\xfe",
        ]
    ),
    json_values.map(lambda v: b"data: " + json.dumps(v).encode() + b"\n\n"),
    line_objects.map(lambda v: b"data: " + json.dumps(v).encode() + b"\n\n"),
    st.integers(1, 3000).map(lambda n: b"data: " + b"[" * n + b"\n\n"),
)


@FUZZ
@given(parts=st.lists(fragments, max_size=12), cut=st.booleans(), data=st.data())
def test_the_tail_parser_ends_or_raises_a_log_service_error(
    parts: list[bytes], cut: bool, data: st.DataObject
) -> None:
    body = b"".join(parts)
    points = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=8)))
    chunks = [body[a:b] for a, b in zip([0] + points, points + [len(body)])]
    got, error = _consume(chunks, cut)
    assert all(isinstance(line, Line) for line in got)
    if error is not None:
        assert isinstance(error, LogServiceError), f"{type(error).__name__}: {error}"


def test_the_tail_parser_reads_lines_and_stops_at_the_unterminated_eof() -> None:
    """The fuzz's positive control: well-formed events around the pieces it cuts."""
    event = json.dumps(
        {"level": "info", "pos": 3, "out": "é\n", "time": "2026-11-27T10:00:00Z", "args": None}
    ).encode()
    body = (
        b": ping\n" + b"data: " + event + b"\n\n" + b"event: error\ndata: eof\n" + b"data: " + event + b"\n\n"
    )
    got, error = _consume([body[i : i + 3] for i in range(0, len(body), 3)], cut=False)
    assert error is None
    assert [(line.pos, line.out) for line in got] == [(3, "é\n")]


# ---- the setup request -------------------------------------------------------------------------

_FIELDS = [f.name for f in attrs.fields(LogConfig)]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


field_values = st.one_of(
    json_values,
    st.sampled_from(
        [
            "http://log-service:8080",
            "https://h/prefix/",
            "log-service:8080",
            "ftp://h",
            "http://",
            "http://h?x=1",
            "-----BEGIN CERTIFICATE-----\nx\n",
            ".",
            "/nonexistent",
            "true",
        ]
    ),
    st.binary(max_size=20).map(_b64),
    st.lists(st.text(max_size=6), max_size=3).map(
        lambda p: {"sanitize_patterns_content": _b64("\n".join(p).encode())}
    ),
)
log_configs = st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=6), field_values, max_size=6)
setup_requests = st.one_of(
    json_values,
    log_configs,
    st.fixed_dictionaries(
        {"log_config": log_configs | json_values},
        optional={
            "le_log_key": json_values,
            "secrets": json_values | st.lists(st.text(max_size=6), max_size=3),
            "mtls_config": json_values
            | st.dictionaries(
                st.sampled_from(["client_cert", "client_cert_key", "x"]), field_values, max_size=3
            ),
            "engine": json_values,
        },
    ),
)


@FUZZ
@given(request=setup_requests)
def test_a_setup_request_gives_a_config_or_a_config_error(request: Any) -> None:
    try:
        config = LogConfig.from_setup_request(request)
    except ConfigError:
        return
    assert isinstance(config, LogConfig)
    assert config.url == "" or config.url.startswith(("http://", "https://"))


def test_a_well_formed_setup_request_is_accepted() -> None:
    """The fuzz's positive control: a well-formed setup request (docs/protocol.md#setup-request) gives a config."""
    config = LogConfig.from_setup_request(
        {
            "le_log_key": "stage-123/lite-engine-logs",
            "log_config": {
                "url": "http://log-service:8080",
                "account_id": "account-123",
                "token": "auth-token",
                "indirect_upload": True,
                "trim_new_line_suffix": False,
                "skip_opening_stream": False,
                "skip_closing_stream": False,
            },
        }
    )
    assert (config.url, config.le_log_key, config.indirect_upload) == (
        "http://log-service:8080",
        "stage-123/lite-engine-logs",
        True,
    )


# ---- bugs found by fuzzing -----------------------------------------------------------------------


def _tail_error(body: bytes) -> BaseException | None:
    return _consume([body], cut=False)[1]


def test_deeply_nested_event_data_is_a_clear_error() -> None:
    error = _tail_error(b"data: " + b"[" * 5000 + b"\n\n")
    assert isinstance(error, LogServiceError), repr(error)


@pytest.mark.parametrize("time", [b"1e20", b"-1e300", b"1" + b"0" * 400, b"6.8e16"])
def test_an_out_of_range_event_time_is_a_clear_error(time: bytes) -> None:
    error = _tail_error(b'data: {"out": "x", "time": ' + time + b"}\n\n")
    assert isinstance(error, LogServiceError), repr(error)


@pytest.mark.parametrize("pattern", ["a{4294967296}", "(" * 1000 + ")" * 1000])
def test_a_pathological_sanitize_pattern_is_a_config_error(pattern: str) -> None:
    request = {"log_config": {"sanitize_config": {"sanitize_patterns_content": _b64(pattern.encode())}}}
    with pytest.raises(ConfigError, match="invalid sanitize pattern"):
        LogConfig.from_setup_request(request)
