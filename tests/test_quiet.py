"""lelog's own HTTP records reach no handler anywhere; the program's own still do
(docs/hazards.md#recursion).

httpx logs every request at INFO and httpcore every step of it at DEBUG.  A console handler
on the root logger (celery's, Django's, loguru's InterceptHandler) must see none of those
that lelog's writer causes, and every one the program's own requests cause."""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterator

import httpx
import pytest

import lelog
from lelog._quiet import HTTP_LOGGERS
from tests.helpers import GENEROUS, run_python
from tests.service import FakeLogService

FAST = {"flush_interval": 0.05, "close_timeout": GENEROUS}


class Collecting(logging.Handler):
    """A program's own console handler, reduced to what it received."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def http(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.name == "httpx" or r.name.startswith("httpcore")]


@pytest.fixture
def console() -> Iterator[Collecting]:
    """A collecting handler on the root logger, with root, httpx and httpcore at DEBUG."""
    root = logging.getLogger()
    handler = Collecting()
    saved = {name: logging.getLogger(name).level for name in ("", "httpx", "httpcore")}
    root.addHandler(handler)
    for name in saved:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def _push_lines(handler: lelog.StreamHandler, logger: logging.Logger) -> None:
    for i in range(30):
        logger.info("line %d", i)
        if i % 10 == 9:
            assert handler.flush(GENEROUS)  # a request now, and its records


@pytest.mark.parametrize("lelog_on_root", [False, True], ids=["app-logger", "root"])
def test_the_writers_requests_reach_no_other_handler_and_the_programs_own_do(
    service: FakeLogService, console: Collecting, lelog_on_root: bool
) -> None:
    logger = logging.getLogger("tests.quiet.app")
    handler = lelog.StreamHandler("quiet/k", url=service.url, account_id="acct", token="secret-token", **FAST)
    owner = logging.getLogger() if lelog_on_root else logger
    owner.addHandler(handler)
    try:
        _push_lines(handler, logger)
        with httpx.Client() as own:  # the program's own request, on this thread
            own.get(f"{service.url}/healthz")
        handler.close()
    finally:
        owner.removeHandler(handler)

    assert len(service.requests_for("quiet/k", method="PUT")) >= 3  # lelog did make requests
    stored = [row["out"] for row in service.blob_lines("quiet/k") or []]
    assert len([out for out in stored if 'msg="line ' in out]) == 30
    assert not any("/stream" in out for out in stored)  # on root, it stores the program's requests only
    http = console.http()
    assert all(record.thread == threading.get_ident() for record in http), [
        (r.threadName, r.getMessage()) for r in http
    ]
    messages = [record.getMessage() for record in http]
    assert any(m.startswith("HTTP Request: GET") and "/healthz" in m for m in messages)
    assert any(record.name.startswith("httpcore.") for record in http)  # DEBUG steps flow too
    assert not any("/stream" in m or "secret-token" in m for m in messages)
    # The program's other records are untouched.
    assert [r.getMessage() for r in console.records if r.name == "tests.quiet.app"] == [
        f"line {i}" for i in range(30)
    ]


def test_the_http_loggers_keep_their_levels_and_handlers_and_get_one_filter_each(
    service: FakeLogService,
) -> None:
    loggers = [logging.getLogger(name) for name in HTTP_LOGGERS]
    before = [(lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers]
    clients = [
        lelog.LogServiceClient(lelog.LogConfig(url=service.url, account_id="acct", token="t"))
        for _ in range(3)
    ]
    for client in clients:
        client.close()
    assert [(lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers] == before
    for lg in loggers:
        ours = [f for f in lg.filters if type(f).__module__ == "lelog._quiet"]
        assert len(ours) == 1, lg.name


def _console_script(setup: str) -> str:
    """A child program: ``setup`` configures its console logging, then lelog streams 30 lines
    from the root logger and the program makes one request of its own."""
    return (
        setup
        + """
import logging, httpx, lelog
handler = lelog.StreamHandler("console/k", url={url!r}, account_id="acct", token="secret-token",
                              flush_interval=0.05, close_timeout=30)
logging.getLogger().addHandler(handler)
for i in range(30):
    logging.getLogger("app").info("line %d", i)
    if i % 10 == 9:
        assert handler.flush(30)
httpx.get({url!r} + "/healthz")
handler.close()
print("done")
"""
    )


def _assert_quiet(service: FakeLogService, result: Any, console: str) -> None:
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout
    stored = [row["out"] for row in service.blob_lines("console/k") or []]
    assert len([out for out in stored if 'msg="line ' in out]) == 30
    assert not any("/stream" in out for out in stored)
    http_lines = [
        line for line in console.splitlines() if "httpx" in line or "httpcore" in line or "HTTP" in line
    ]
    assert any("HTTP Request: GET" in line and "/healthz" in line for line in http_lines), console
    assert not any("/stream" in line or "PUT" in line or "secret-token" in line for line in http_lines), (
        http_lines
    )


def test_celerys_console_handler_prints_only_the_programs_own_requests(service: FakeLogService) -> None:
    pytest.importorskip("celery")
    setup = """
from celery import Celery
Celery("quiet").log.setup(loglevel="DEBUG", colorize=False)  # a worker's console handler on stderr
"""
    result = run_python(_console_script(setup).format(url=service.url), timeout=120)
    _assert_quiet(service, result, result.stderr)
    assert "line 29" in result.stderr  # celery's handler prints the program's records


def test_a_loguru_intercept_handler_receives_only_the_programs_own_requests(service: FakeLogService) -> None:
    pytest.importorskip("loguru")
    setup = """
import logging, sys
from loguru import logger

class InterceptHandler(logging.Handler):  # loguru's documented recipe
    def emit(self, record):
        logger.opt(depth=6, exception=record.exc_info).log(record.levelname, record.getMessage())

logger.remove()
logger.add(sys.stderr, level="DEBUG", format="{{level}} {{message}}")
logging.basicConfig(handlers=[InterceptHandler()], level=0, force=True)
"""
    result = run_python(_console_script(setup).format(url=service.url), timeout=120)
    _assert_quiet(service, result, result.stderr)
    assert "DEBUG receive_response_body.complete" in result.stderr  # the program's own httpcore steps
