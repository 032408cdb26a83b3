"""Keep the records that lelog's own HTTP requests cause away from every handler.

httpx logs each request (``HTTP Request: PUT ...`` at INFO) and httpcore each step of it (at
DEBUG).  The writer makes its requests on its own I/O threads, so with a console handler on the
root logger (celery's, loguru's ``InterceptHandler``, Django's) every push would print a line.
A filter on each of those loggers drops a record created on a lelog I/O thread, the same
mark the handler's re-entry guard reads (docs/writer.md#re-entry), and lets every other
record through: the program's own requests log as before, and the loggers' levels and
handlers are left as the program set them.

A logger's filters are consulted only for records created on that very logger, not for
records propagating from its children, so each logger that httpx and httpcore create gets
the filter (httpcore names one per module: ``httpcore/_sync/*.py``).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

from . import _lifecycle
from ._reentry import in_own_thread

__all__ = ["HTTP_LOGGERS", "quiet_own_http_records"]

#: The loggers httpx and httpcore log on.
HTTP_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


class _NotFromLelogIO(logging.Filter):
    """Passes a record unless it was created on one of lelog's I/O threads."""

    def __init__(self, on_io_thread: Callable[[], bool]) -> None:
        super().__init__()
        self._on_io_thread = on_io_thread

    def filter(self, record: logging.LogRecord) -> bool:
        return not self._on_io_thread()


_lock = threading.Lock()
_filter: Optional[_NotFromLelogIO] = None


def _renew_lock_in_child() -> None:
    """A parent thread may have held ``_lock`` at the fork (building its first client)."""
    global _lock
    _lock = threading.Lock()


_lifecycle.after_fork_in_child(_renew_lock_in_child)  # lelog's one fork hook runs it


def quiet_own_http_records() -> None:
    """Install the filter on the HTTP loggers, once per process (later calls return at once).

    Called when a ``LogServiceClient`` is built, on the thread building it.  ``getLogger``
    takes logging's module lock, which is reentrant: building a client under ``dictConfig``
    is fine.
    """
    global _filter
    if _filter is not None:
        return
    with _lock:
        if _filter is not None:
            return
        quiet = _NotFromLelogIO(in_own_thread)
        for name in HTTP_LOGGERS:
            logging.getLogger(name).addFilter(quiet)
        _filter = quiet
