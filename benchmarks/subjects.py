"""The handlers compared, each built the way its documentation shows, plus how to tell when
what it was given has arrived at the far end.

Each subject is built inside a fresh measurement process (``benchmarks.child``); a peer that
is not installed is reported as skipped, never installed on the fly.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import queue
import shutil
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from logging.handlers import QueueHandler, QueueListener
from typing import Any, Callable, Optional

__all__ = ["FORMATTERS", "SUBJECTS", "Subject", "Unavailable", "build", "formatter"]

#: In the order of the tables: the floor, the stdlib baselines, lelog, then the peers.
SUBJECTS = (
    "floor",
    "stdlib-queue",
    "stdlib-queue-stream",
    "lelog",
    "lelog-spool",
    "watchtower",
    "logstash-async",
    "fluent-async",
    "otel-batch",
    "prototype",
)
#: Who needs which far end (the stdlib rows deliver to an in-process handler).
SINK_KIND = {
    "lelog": "service",
    "lelog-spool": "service",
    "watchtower": "cloudwatch",
    "prototype": "service",
    "logstash-async": "logstash",
    "fluent-async": "fluent",
    "otel-batch": "otlp",
}
#: The formatter shared by the stdlib queue row and the lelog row.
FORMATTERS = ("logfmt", "stdlib")
#: What a stream or file handler is typically given: a time, the level, the logger, the message.
STREAM_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
ACCOUNT, TOKEN = "acct", "secret-token"  # tests/service.py's defaults


class Unavailable(Exception):
    """The subject's library is not installed (``pip install -e '.[bench]'``)."""


def formatter(name: str) -> logging.Formatter:
    if name == "logfmt":
        from lelog import LogfmtFormatter

        return LogfmtFormatter()
    return logging.Formatter(STREAM_FORMAT)


class StatsPoller:
    """``GET``s a sink's (or the log service's) counters over one kept-alive connection."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self._conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        self._path = parts.path + (f"?{parts.query}" if parts.query else "")

    def received(self) -> int:
        try:
            self._conn.request("GET", self._path)
            return int(json.loads(self._conn.getresponse().read())["received"])
        except (OSError, http.client.HTTPException):
            self._conn.close()  # reconnects on the next request
            return -1

    def close(self) -> None:
        self._conn.close()


class _Discard(logging.Handler):
    """The stdlib row's far end: counts what the listener hands it, keeps nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


class _CountingStream(logging.StreamHandler):  # type: ignore[type-arg]
    """The stdlib stream row's far end: formats each record with a time and writes it, as a
    file or stream handler does, to ``os.devnull``, and counts it."""

    def __init__(self) -> None:
        super().__init__(open(os.devnull, "w"))  # closed with the process
        self.setFormatter(logging.Formatter(STREAM_FORMAT))
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        self.count += 1


class _Floor(logging.Handler):
    """The floor: what ``logging`` costs before any handler does anything."""

    def emit(self, record: logging.LogRecord) -> None:
        pass


@dataclass
class Subject:
    """A handler and the means to wait for what it was given to arrive."""

    handler: logging.Handler
    #: Lines the far end has received so far; None for the synchronous floor.
    received: Optional[Callable[[], int]] = None
    #: Lines the library itself says it dropped (None: it does not say).
    dropped: Callable[[], Optional[int]] = lambda: None
    #: Shut the library down (its own documented way), for runs that end cleanly.
    close: Callable[[], None] = field(default=lambda: None)
    #: Remove the files the subject made; called even when the run ends without ``close``.
    cleanup: Callable[[], None] = field(default=lambda: None)
    info: dict[str, Any] = field(default_factory=dict)


def build(name: str, target: dict[str, Any], options: dict[str, Any]) -> Subject:
    """Build subject ``name`` sending to ``target`` (``addr``/``url``, ``stats``, ``key``).

    ``options`` are per-row settings: ``formatter`` for the stdlib and lelog rows,
    ``buffer_lines`` when a row needs the library's queue to hold a whole burst.
    """
    try:
        return _BUILDERS[name](target, options)
    except ImportError as exc:
        raise Unavailable(f"{name}: {exc}") from None


def _floor(target: dict[str, Any], options: dict[str, Any]) -> Subject:
    return Subject(_Floor())


def _stdlib_queue(target: dict[str, Any], options: dict[str, Any]) -> Subject:
    # SimpleQueue is the faster of the two stdlib queues: the stricter baseline.
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    handler = QueueHandler(q)
    handler.setFormatter(formatter(options.get("formatter", "logfmt")))
    sink = _Discard()
    listener = QueueListener(q, sink)
    listener.start()
    return Subject(handler, received=lambda: sink.count, close=listener.stop, info={"queue": "SimpleQueue"})


def _stdlib_queue_stream(target: dict[str, Any], options: dict[str, Any]) -> Subject:
    # What a user of the standard library gets for "log without waiting": the queue pair,
    # with the formatting (a time included) done by the listener's stream handler.  The
    # QueueHandler keeps its default formatter: prepare() merges the message and arguments.
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    handler = QueueHandler(q)
    sink = _CountingStream()
    listener = QueueListener(q, sink)
    listener.start()
    return Subject(handler, received=lambda: sink.count, close=listener.stop, info={"queue": "SimpleQueue"})


def _lelog(target: dict[str, Any], options: dict[str, Any]) -> Subject:
    import lelog

    writer_options = dict(options.get("lelog", {}))
    handler = lelog.StreamHandler(
        target["key"], url=target["url"], account_id=ACCOUNT, token=TOKEN, **writer_options
    )
    if options.get("formatter", "logfmt") != "logfmt":  # else its own: it captures records
        handler.setFormatter(formatter(options["formatter"]))
    poller = StatsPoller(target["stats"]) if target.get("stats") else None
    return Subject(
        handler,
        received=poller.received if poller else None,
        dropped=lambda: handler.stats.dropped_total,
        close=handler.close,
        info={"options": writer_options},
    )


def _lelog_spool(target: dict[str, Any], options: dict[str, Any]) -> Subject:
    """lelog with the crash spool on (its cost is held to 1.2x lelog without it), spooling
    into a directory of its own for this run."""
    spool_dir = tempfile.mkdtemp(prefix="lelog-bench-spool-")
    subject = _lelog(target, {**options, "lelog": {**options.get("lelog", {}), "spool_dir": spool_dir}})
    subject.cleanup = lambda: shutil.rmtree(spool_dir, ignore_errors=True)
    return subject


def _prototype(target: dict[str, Any], options: dict[str, Any]) -> Subject:
    from .prototype import PrototypeHandler

    handler = PrototypeHandler(target["key"], target["url"], ACCOUNT, TOKEN)
    poller = StatsPoller(target["stats"]) if target.get("stats") else None
    return Subject(handler, received=poller.received if poller else None, close=handler.close)


def _host_port(target: dict[str, Any]) -> tuple[str, int]:
    host, _, port = target["addr"].rpartition(":")
    return host, int(port)


def _watchtower(target: dict[str, Any], options: dict[str, Any]) -> Subject:
    import boto3
    import watchtower

    # A local moto server (benchmarks.sinks cloudwatch) stands in for CloudWatch Logs.
    client = boto3.client(
        "logs",
        endpoint_url=target["url"],
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    handler = watchtower.CloudWatchLogHandler(
        log_group_name="bench", log_stream_name=target["key"], boto3_client=client
    )
    poller = StatsPoller(target["stats"]) if target.get("stats") else None
    return Subject(handler, received=poller.received if poller else None, close=handler.close)


def _logstash(target: dict[str, Any], options: dict[str, Any]) -> Subject:
    from logstash_async.handler import AsynchronousLogstashHandler

    host, port = _host_port(target)
    # database_path=None: the in-memory queue (no SQLite file).
    handler = AsynchronousLogstashHandler(host, port, database_path=None)
    poller = StatsPoller(target["stats"]) if target.get("stats") else None
    return Subject(handler, received=poller.received if poller else None, close=handler.close)


def _fluent(target: dict[str, Any], options: dict[str, Any]) -> Subject:
    from fluent import asynchandler
    from fluent import handler as fluent_handler

    host, port = _host_port(target)
    kwargs: dict[str, Any] = {}
    if options.get("buffer_lines"):
        kwargs["queue_maxsize"] = options["buffer_lines"]
    handler = asynchandler.FluentHandler("bench.app", host=host, port=port, **kwargs)
    handler.setFormatter(fluent_handler.FluentRecordFormatter())
    poller = StatsPoller(target["stats"]) if target.get("stats") else None
    return Subject(
        handler,
        received=poller.received if poller else None,
        close=handler.close,
        info={"queue_maxsize": kwargs.get("queue_maxsize", 100)},
    )


def _otel(target: dict[str, Any], options: dict[str, Any]) -> Subject:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider()
    kwargs: dict[str, Any] = {}
    if options.get("buffer_lines"):
        kwargs["max_queue_size"] = options["buffer_lines"]
    processor = BatchLogRecordProcessor(
        OTLPLogExporter(endpoint=f"http://{target['addr']}/v1/logs"), **kwargs
    )
    provider.add_log_record_processor(processor)
    handler = LoggingHandler(level=logging.NOTSET, logger_provider=provider)
    poller = StatsPoller(target["stats"]) if target.get("stats") else None
    return Subject(
        handler,
        received=poller.received if poller else None,
        close=provider.shutdown,
        info={"max_queue_size": kwargs.get("max_queue_size", 2048)},
    )


_BUILDERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], Subject]] = {
    "floor": _floor,
    "stdlib-queue": _stdlib_queue,
    "stdlib-queue-stream": _stdlib_queue_stream,
    "lelog": _lelog,
    "lelog-spool": _lelog_spool,
    "watchtower": _watchtower,
    "logstash-async": _logstash,
    "fluent-async": _fluent,
    "otel-batch": _otel,
    "prototype": _prototype,
}


def wait_received(subject: Subject, expected: int, timeout: float) -> tuple[float, int]:
    """Poll until the far end has ``expected`` lines; returns (perf_counter at that, count)."""
    if subject.received is None:
        return time.perf_counter(), expected
    end = time.perf_counter() + timeout
    count = subject.received()
    while count < expected and time.perf_counter() < end:
        time.sleep(0.005)
        count = subject.received()
    return time.perf_counter(), count
