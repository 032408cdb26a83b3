"""``log_stream``: a job's stream, open for exactly the job's duration.

Routing.  Each job attaches its own handler to its loggers, and a ``ContextVar`` holds the
job that the running code belongs to: set on enter, reset on exit, inherited by asyncio tasks
and ``asyncio.to_thread``.  A record goes to the job of the context it was emitted in, and
only to it.  A record emitted in no job's context (in a thread the job started without
copying its context) goes to the job when exactly one job is active; with several active
nobody can tell whose it is, so it is dropped and counted in ``unrouted`` of each job that
saw it, rather than copied into streams it may not belong to (one job's secrets are masked
by its own config only).

Levels.  A record must pass its logger before any handler sees it, so entering a job lowers
a logger whose level would hide the job's ``level`` (the root logger's default, WARNING,
hides INFO) and the last job to leave restores it, unless the program changed it meanwhile.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from types import TracebackType
from typing import Any, Collection, Mapping, Optional, Sequence, Union

import attrs

from . import _lifecycle
from ._backend import Backend
from ._config import LogConfig, check_level
from ._diagnostics import RateLimitedWarnings
from ._diagnostics import logger as diagnostics
from ._exceptions import ConfigError
from ._handler import StreamHandler
from ._writer import Stats, StreamWriter

__all__ = ["LogStream", "log_stream"]

LoggerLike = Union[str, logging.Logger]

_current: contextvars.ContextVar[Optional[LogStream]] = contextvars.ContextVar("lelog_job", default=None)
# Jobs between enter and exit, and the logger levels they lowered.  _registry_lock guards
# both; it is taken only on enter and exit, and inside it only Logger.setLevel is called
# (which takes logging's module lock, never the other way round), so it cannot deadlock.
# _active is replaced, never mutated, so handlers read it without the lock.
_registry_lock = threading.Lock()
_active: tuple[LogStream, ...] = ()
_warnings = RateLimitedWarnings()


@attrs.define
class _Lease:
    """A logger level lowered for jobs: what it was, what we set, what each job wants."""

    original: int
    applied: int
    wanted: dict[LogStream, int] = attrs.field(factory=dict)


_leases: dict[logging.Logger, _Lease] = {}


def _apply(logger: logging.Logger, lease: _Lease) -> None:
    if logger.level != lease.applied:
        return  # the program set this level itself meanwhile: its choice stands
    parent = logger.parent
    floor = lease.original or (parent.getEffectiveLevel() if parent else logging.NOTSET)
    wanted = min(lease.wanted.values(), default=floor)
    level = wanted if wanted < floor else lease.original
    if level != logger.level:
        logger.setLevel(level)
    lease.applied = level


def _lower_level(logger: logging.Logger, job: LogStream, level: int) -> None:
    lease = _leases.get(logger)
    if lease is None:
        lease = _leases[logger] = _Lease(logger.level, logger.level)
    lease.wanted[job] = level
    _apply(logger, lease)


def _restore_level(logger: logging.Logger, job: LogStream) -> None:
    lease = _leases.get(logger)
    if lease is None or lease.wanted.pop(job, None) is None:
        return
    _apply(logger, lease)
    if not lease.wanted:
        del _leases[logger]


def _check_level(level: Union[int, str, None]) -> Optional[int]:
    return None if level is None else check_level(level)


def _check_loggers(logger: Union[LoggerLike, Sequence[LoggerLike], None]) -> tuple[logging.Logger, ...]:
    items: Sequence[Any] = (
        [None]
        if logger is None
        else ([logger] if isinstance(logger, (str, logging.Logger)) else list(logger))
    )
    loggers = []
    for item in items:
        if item is None or isinstance(item, str):
            loggers.append(logging.getLogger(item or None))
        elif isinstance(item, logging.Logger):
            loggers.append(item)
        else:
            raise ConfigError(f"logger must be a logger, a logger name or a list of them, got {item!r}")
    return tuple(dict.fromkeys(loggers))


class _JobHandler(StreamHandler):
    """The handler a job attaches: it takes only the records that belong to its job."""

    def __init__(self, job: LogStream, **options: Any) -> None:
        super().__init__(writer=job.writer, **options)
        self._job = job

    def filter(self, record: logging.LogRecord) -> Any:
        return self._job._claims(record) and super().filter(record)


class LogStream:
    """A job's stream, as a context manager entered once (``with`` or ``async with``).

    On enter: open the stream (in the background) and attach a handler to ``logger`` (the
    root logger by default; a name, a logger, or a list of them), taking the records of
    ``level`` and above that are emitted in this job's context.  On exit: log an escaping
    exception with its traceback, detach, and close the stream (final push, upload, close)
    within ``close_timeout``; the async form does the close off the event loop.

    ``config`` is a ``LogConfig``, a setup request or its ``log_config``, a backend, or None
    for the ``LELOG_*`` environment; ``options`` are the writer's.  ``level=None`` leaves
    logger levels alone and takes whatever passes them.

    ``write()`` takes command output (partial lines wait for their newline), ``write_line()``
    one whole line; ``stats`` says what was sent and dropped, also after exit; ``unrouted``
    counts records this job saw but could not claim (see the module docstring).
    """

    def __init__(
        self,
        key: str,
        config: Union[LogConfig, Mapping[str, Any], Backend, None] = None,
        *,
        logger: Union[LoggerLike, Sequence[LoggerLike], None] = None,
        level: Union[int, str, None] = logging.INFO,
        formatter: Optional[logging.Formatter] = None,
        extras_as_args: bool = True,
        exclude: Collection[str] = (),
        **options: Any,
    ) -> None:
        self._level = _check_level(level)
        self._loggers = _check_loggers(logger)
        self.writer = StreamWriter(key, config, **options)
        self._handler = _JobHandler(
            self, level=self._level or logging.NOTSET, extras_as_args=extras_as_args, exclude=exclude
        )
        if formatter is not None:
            self._handler.setFormatter(formatter)
        self._unrouted = 0
        self._count_lock = threading.Lock()  # a leaf lock: guards _unrouted only
        self._token: Optional[contextvars.Token[Optional[LogStream]]] = None
        self._entered = False

    def __repr__(self) -> str:
        return f"<LogStream {self.key!r}>"

    @property
    def key(self) -> str:
        return self.writer.key

    @property
    def stats(self) -> Stats:
        """What the stream's writer did so far: sent, dropped by reason, retries, bytes."""
        return self.writer.stats

    @property
    def unrouted(self) -> int:
        """Records logged in no job's context while other jobs were active too: not captured."""
        with self._count_lock:
            return self._unrouted

    def write(self, data: Union[str, bytes]) -> int:
        """Command output, io-style: partial lines wait for their newline.  Never raises."""
        return self.writer.write(data)

    def write_line(
        self,
        out: str,
        level: str = "info",
        args: Optional[Mapping[str, Any]] = None,
        *,
        time: Optional[float] = None,
    ) -> None:
        """One whole line with its level, ``args`` and time (default: now).  Never raises."""
        self.writer.write_line(out, level, args, time=time)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Push everything written so far; True when all of it was sent within ``timeout``."""
        return self.writer.flush(timeout)

    # -- routing --------------------------------------------------------------------------------

    def _claims(self, record: logging.LogRecord) -> bool:
        owner = _current.get()
        if owner is not None:
            return owner is self
        active = _active
        if active == (self,):
            return True
        if self in active:  # not when the record raced this job's exit
            with self._count_lock:
                self._unrouted += 1
            _warnings.warn(
                "unrouted",
                f"a record logged outside any job's context while {len(active)} jobs were "
                "active was not captured; run that code in its job's context "
                "(contextvars.copy_context().run, asyncio.to_thread)",
            )
        return False

    # -- the job's life -------------------------------------------------------------------------

    def __enter__(self) -> LogStream:
        global _active
        if self._entered:
            raise RuntimeError(f"{self!r} was already entered; call log_stream() once per job")
        self._entered = True
        self.writer.open()
        with _registry_lock:
            _active = (*_active, self)
            if self._level is not None:
                for logger in self._loggers:
                    _lower_level(logger, self, self._level)
        for logger in self._loggers:
            logger.addHandler(self._handler)
        self._token = _current.set(self)
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        try:
            self._end(exc_type, exc, tb)
        finally:
            self._report(self.writer.close())

    async def __aenter__(self) -> LogStream:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        try:
            self._end(exc_type, exc, tb)
        finally:
            # The close waits on the network (bounded by close_timeout): not on the loop.
            self._report(await asyncio.to_thread(self.writer.close))

    def _report(self, stats: Stats) -> None:
        """Say what happened when the job ends (docs/hazards.md#silent-drops): a warning on stderr when
        lines were lost or the log was not stored, otherwise an info record."""
        level = logging.WARNING if stats.dropped_total or stats.uploaded is False else logging.INFO
        diagnostics.log(level, "lelog: job %r: %s", self.key, stats.summary())

    def _end(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        """Log an escaping exception, then detach: what the close logs is not captured."""
        global _active
        try:
            if exc_type is not None:
                self._log_failure(exc_type, exc, tb)
        finally:
            for logger in self._loggers:
                logger.removeHandler(self._handler)
            self._handler.close()
            with _registry_lock:
                _active = tuple(job for job in _active if job is not self)
                for logger in self._loggers:
                    _restore_level(logger, self)
            if self._token is not None:
                _current.reset(self._token)

    def _log_failure(
        self, exc_type: type[BaseException], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if isinstance(exc, SystemExit):
            if exc.code in (None, 0):
                return
            msg, args, exc_info = "job exited with status %s", (exc.code,), None
        else:
            msg, args, exc_info = "job failed: %s", (exc_type.__name__,), (exc_type, exc, tb)
        record = logging.LogRecord("lelog", logging.ERROR, "", 0, msg, args, exc_info)  # type: ignore[arg-type]
        self._handler.handle(record)


#: ``with lelog.log_stream(key, config) as stream:`` reads as what it does; the class is it.
log_stream = LogStream


def _renew_lock_in_child() -> None:
    # A parent thread may have held it at the fork; the child's jobs need a free one.
    global _registry_lock
    _registry_lock = threading.Lock()


_lifecycle.after_fork_in_child(_renew_lock_in_child)
