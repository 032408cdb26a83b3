"""lelog.testing: the in-memory backend and capture_stream, as a user's test suite uses them."""

from __future__ import annotations

import logging
import logging.config
import threading

import pytest

import lelog
import lelog.testing
from lelog import ConfigError, LogConfig, LogServiceClient, StreamWriter, log_stream
from lelog._backend import make_backend
from lelog.testing import MemoryBackend, capture_stream
from tests.helpers import dead_url

FAST = {"flush_interval": 0.05, "close_timeout": 2.0}
log = logging.getLogger("lelog_tests.testing")


def unreachable() -> LogConfig:
    """A config whose service does not exist: any request would fail and be counted."""
    return LogConfig(url=dead_url(), account_id="acct", token="t")


def test_memory_backend_records_a_writers_calls_and_lines() -> None:
    backend = MemoryBackend()
    writer = StreamWriter("mem/k", backend, **FAST).open()
    writer.write("one\ntwo\n")
    writer.write_line("three", level="error", args={"n": 3})
    assert writer.flush(2.0)
    assert backend.outs("mem/k") == ["one", "two", "three"]
    stats = writer.close()

    assert stats.sent == 3 and stats.uploaded is True
    calls = backend.calls
    assert calls[0] == ("open_stream", "mem/k")
    assert calls[-2:] == [("upload", "mem/k"), ("close_stream", "mem/k")]
    assert {call for call, _ in calls[1:-2]} == {"write"}
    stream = backend.stream("mem/k")
    assert stream.opened and stream.closed and not stream.snapshot
    assert [line.pos for line in stream.lines] == [0, 1, 2]
    assert stream.lines[2].level == "error" and stream.lines[2].args == {"n": "3"}
    assert stream.uploaded == stream.lines
    assert backend.keys == ["mem/k"]
    backend.clear()
    assert backend.calls == [] and backend.lines() == []


def test_capture_stream_records_what_a_job_logged_without_network() -> None:
    with capture_stream() as captured:
        with log_stream("cap/k", unreachable(), **FAST) as stream:
            log.info("building", extra={"target": "all"})
            stream.write("make: done\n")
    assert stream.stats.last_error is None and stream.stats.uploaded is True
    outs = captured.outs("cap/k")
    assert outs[0].endswith('level=info msg="building" target=all') and outs[1] == "make: done"
    assert captured.lines("cap/k")[0].args == {"target": "all"}
    assert captured.stream("cap/k").closed
    # No network: the unreachable service was never asked, and the capture did not leak.
    backend, owned, _config = make_backend(unreachable())
    try:
        assert isinstance(backend, LogServiceClient) and owned
    finally:
        backend.close()


def test_capture_stream_captures_a_dictconfig_handler_and_writers_built_in_threads() -> None:
    name = "lelog_tests.testing.dict"
    with capture_stream() as captured:
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {
                    "s": {
                        "class": "lelog.StreamHandler",
                        "key": "dict/k",
                        "url": "http://log-service:8080",
                        "account_id": "acct",
                        "token": "t",
                        **FAST,
                    }
                },
                "loggers": {name: {"level": "INFO", "handlers": ["s"], "propagate": False}},
            }
        )
        logger = logging.getLogger(name)
        logger.warning("from dictConfig")
        (handler,) = logger.handlers
        logger.removeHandler(handler)
        handler.close()

        def in_thread() -> None:
            with StreamWriter("thread/k", LogConfig(), **FAST) as writer:
                writer.write_line("from a thread")

        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join(5)
    assert captured.outs("dict/k")[0].endswith('level=warning msg="from dictConfig"')
    assert captured.outs("thread/k") == ["from a thread"]
    assert captured.keys == ["dict/k", "thread/k"]
    assert [line.out for line in captured.lines()] == [
        line.out for key in captured.keys for line in captured.lines(key)
    ]


def test_the_configuration_still_applies_under_capture() -> None:
    with capture_stream() as captured:
        with pytest.raises(ConfigError, match="url"):
            log_stream("bad/k", {"log_config": {"url": "log-service:8080"}})
        config = LogConfig(secrets=["hunter2"], trim_new_line_suffix=True)
        with log_stream("mask/k", config, **FAST):
            log.warning("password hunter2")
    (line,) = captured.lines("mask/k")
    assert line.out.endswith('msg="password **************"')  # masked and trimmed


def test_nested_captures_and_an_explicit_backend() -> None:
    explicit = MemoryBackend()
    with capture_stream() as outer:
        with capture_stream() as inner:
            with StreamWriter("inner/k", LogConfig(), **FAST) as writer:
                writer.write_line("inner")
        with StreamWriter("outer/k", LogConfig(), **FAST) as writer:
            writer.write_line("outer")
        with log_stream("explicit/k", explicit, **FAST):
            log.info("explicit backend kept")
    assert inner.keys == ["inner/k"] and outer.keys == ["outer/k"]
    assert explicit.outs("explicit/k")[0].endswith('msg="explicit backend kept"')
    # A backend given explicitly belongs to the caller: the writer does not close it.
    assert explicit.calls[-1] == ("close_stream", "explicit/k") and ("close", "") not in explicit.calls


def test_testing_is_reachable_from_the_package() -> None:
    assert lelog.testing.capture_stream is capture_stream
    assert isinstance(MemoryBackend(), lelog._backend.Backend)
    assert "MemoryBackend" in repr(MemoryBackend())
