"""lelog in the logging libraries programs already use.

loguru: ``logger.add(lelog.integrations.loguru_sink("stage-1/step-2", url=..., ...))``.  The
sink hands each loguru record to a ``StreamHandler``: its message as written (loguru's
``format=`` is not applied: lelog writes its own line format), its level name, time and
bound ``extra`` fields (one ``args`` key each, as text), its exception as lines of its own.
``logger.add(lelog.StreamHandler(...))`` works too, with loguru's format in the message.

structlog needs no adapter: with ``structlog.stdlib.ProcessorFormatter`` on a
``StreamHandler``, the event dict's keys reach ``args`` (README: frameworks).

Neither library is a dependency of lelog, and this module imports neither.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from ._diagnostics import RateLimitedWarnings
from ._handler import StreamHandler
from ._writer import Stats

__all__ = ["LoguruSink", "loguru_sink"]


def _loguru_record(raw: Any) -> logging.LogRecord:
    """A ``logging`` record from loguru's record dict, shaped as loguru's own handler sink
    shapes it (the bound fields as one dict attribute, ``extra``), with loguru's time and
    thread: with ``enqueue=True`` the sink runs on loguru's thread, not the caller's."""
    level = raw["level"]
    exception = raw["exception"]
    exc_info = None
    if exception is not None and exception.type is not None:
        exc_info = (exception.type, exception.value, exception.traceback)
    record = logging.LogRecord(
        raw["name"] or "loguru",
        level.no,
        raw["file"].path,
        raw["line"],
        raw["message"],
        None,
        exc_info,
        raw["function"],
    )
    created = raw["time"].timestamp()
    record.created = created
    record.msecs = int(created * 1000) % 1000
    record.levelname = level.name
    record.thread, record.threadName = raw["thread"].id, raw["thread"].name
    record.process, record.processName = raw["process"].id, raw["process"].name
    record.extra = dict(raw["extra"])
    return record


class LoguruSink:
    """A loguru sink writing to a log-service stream through ``handler`` (a ``StreamHandler``).

    loguru's ``logger.remove()`` does not close a callable sink: ``close()`` finishes the
    stream (final push, upload, close within ``close_timeout``); if nothing calls it, lelog
    finishes the stream at exit, as it does every stream.
    """

    def __init__(self, handler: StreamHandler) -> None:
        self.handler = handler
        self._warnings = RateLimitedWarnings()

    def __repr__(self) -> str:
        return f"<LoguruSink {self.handler.writer.key!r}>"

    def __call__(self, message: Any) -> None:
        """Write one loguru message (loguru calls this; it never raises)."""
        try:
            record = _loguru_record(message.record)
        except Exception as exc:  # not a loguru message, or a loguru that shapes records otherwise
            self._warnings.warn(
                "loguru", f"a loguru message could not be read, so it was not written: {exc!r}"
            )
            return
        self.handler.handle(record)

    @property
    def stats(self) -> Stats:
        """What the stream's writer did so far."""
        return self.handler.stats

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Push everything so far; True once it was all sent (``StreamHandler.flush``)."""
        return self.handler.flush(timeout)

    def close(self, timeout: Optional[float] = None) -> None:
        """Finish the stream within ``timeout`` (default: ``close_timeout``)."""
        self.handler.close(timeout)


def loguru_sink(key: Optional[str] = None, **options: Any) -> LoguruSink:
    """A loguru sink for stream ``key``: ``logger.add(loguru_sink(key, url=..., ...))``.

    ``options`` are ``StreamHandler``'s (``config=``, ``url=``, ``token=``, ``exclude=``,
    ``include=``, ``trace_context=``, writer options, ...); levels are loguru's to filter
    (``logger.add(sink, level="INFO")``).
    """
    return LoguruSink(StreamHandler(key, **options))
