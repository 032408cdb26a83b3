"""``StreamHandler``: ``logging`` records to stream lines.

Built from plain values only, so ``dictConfig`` and ``fileConfig`` can make it; building it
opens no connection and starts no thread (docs/hazards.md#side-effects-at-construction, #dictconfig-traps):
the writer's worker starts on the first record.  ``emit`` only formats and appends to the
writer's bounded buffer.

Re-entry (docs/writer.md#re-entry).  ``handle`` is one of lelog's entry points: a record
logged on a thread already inside lelog (a signal handler or a finalizer that interrupted a
logging call, a formatter that logs) is deferred until the outer call returns, never
dropped uncounted; a record logged on lelog's own I/O threads (its HTTP client's) goes to no
lelog stream.

Locks (docs/hazards.md#deadlock-under-logging-locks).  ``handle`` never takes the handler
lock: the writer is thread-safe, and so no thread ever waits on that lock for us.  ``flush``
and ``close`` wait on the writer's worker only when the calling thread does not hold
``logging``'s module lock: the worker's HTTP client logs, and ``Logger.isEnabledFor`` takes
that lock on a cache miss, so waiting under it (``dictConfig`` closing old handlers does
exactly that) would stall until the deadline.  Under it, ``close`` lets go of the stream for
a replacement on the same key to take on (docs/writer.md#hand-off).

Shutdown (docs/writer.md#one-deadline).  ``logging.shutdown()`` calls each handler's
``flush`` and ``close`` in turn; the first lelog ``flush`` it calls finishes every lelog
handler in its list in parallel, within one ``close_timeout``.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import weakref
from typing import Any, Collection, Mapping, Optional, Union

import attrs

from . import _lifecycle, _reentry
from ._backend import Backend
from ._config import (
    CONFIG_FIELDS,
    LogConfig,
    check_level,
    reject_unknown,
    resolve_config,
)
from ._encode import RecordLine
from ._exceptions import ConfigError
from ._fields import record_extras, safe_str
from ._line import MAX_EPOCH
from ._logfmt import LogfmtFormatter
from ._trace import SpanIds, SpanLogfmtFormatter, span_ids_reader, with_span_ids
from ._writer import Stats, StreamWriter, WriterOptions

__all__ = ["StreamHandler"]

_WRITER_FIELDS = frozenset(f.name for f in attrs.fields(WriterOptions))


_holding_logging_lock = _lifecycle.holding_logging_lock
#: Loggers of lelog's own work: their records on lelog's threads are not a user's.
_OWN_LOGGERS = ("lelog", "httpx", "httpcore")


_SHUTDOWN_CODE = logging.shutdown.__code__


def _shutting_down(caller: Any) -> Optional[list[Any]]:
    """The handlers ``logging.shutdown()`` is going through, when ``caller`` is its frame.

    ``shutdown`` calls each handler's ``flush()`` then ``close()`` in turn; recognising its
    code object (not patching ``logging``) lets the first lelog handler it reaches finish all
    of them in parallel, so N handlers take one ``close_timeout``, not 2 x N.
    """
    if caller is None or caller.f_code is not _SHUTDOWN_CODE:
        return None
    handlers = caller.f_locals.get("handlerList")
    return list(handlers) if isinstance(handlers, (list, tuple)) else None


def _finish_in_parallel(handlers: list[Any]) -> None:
    if _holding_logging_lock():
        # dictConfig/fileConfig replacing its handlers: each close lets go of its stream for
        # a replacement to take on (docs/writer.md#hand-off); nothing to wait for here.
        return
    streams = []
    for item in handlers:
        handler = item() if isinstance(item, weakref.ref) else item
        if isinstance(handler, StreamHandler) and handler.owns_writer and not handler.writer.closed:
            engine = handler.writer.release()
            if engine is not None:  # the last writer out finishes its stream
                streams.append(engine)
    _lifecycle.finish_together(streams)


def _lines(text: str) -> list[str]:
    """One stream line per text line; final newlines make no empty lines (a formatter that
    appends ``exc_text`` to a loguru message, which ends in one, adds another)."""
    lines = text.split("\n")
    while len(lines) > 1 and not lines[-1]:
        lines.pop()
    return lines


def _split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword options into ``LogConfig`` fields and writer options; unknown names fail."""
    reject_unknown(options, CONFIG_FIELDS | _WRITER_FIELDS, "StreamHandler")
    config_values = {k: v for k, v in options.items() if k in CONFIG_FIELDS}
    writer_options = {k: v for k, v in options.items() if k in _WRITER_FIELDS}
    return config_values, writer_options


def _build_writer(
    key: Optional[str],
    config: Union[Mapping[str, Any], LogConfig, Backend, None],
    config_values: dict[str, Any],
    writer_options: dict[str, Any],
) -> StreamWriter:
    """The writer for plain values: explicit values, then ``config``, then ``LELOG_*``;
    or for a backend given as ``config``, as ``StreamWriter`` takes one."""
    target: Union[LogConfig, Backend]
    if isinstance(config, Backend):
        if config_values:
            raise ConfigError(
                f"config= is a {type(config).__name__}, which has its own configuration: give "
                f"{', '.join(sorted(config_values))} to it, not to StreamHandler"
            )
        target = config
        own = getattr(config, "config", None)
        log_config = own if isinstance(own, LogConfig) else LogConfig()
    else:
        target = log_config = resolve_config(config, **config_values)
    key = key or log_config.le_log_key
    if not isinstance(key, str) or not key:
        raise ConfigError(
            "key: give the stream key (e.g. 'stage-1/step-2'), or le_log_key in the setup "
            "request, or LELOG_KEY in the environment"
        )
    return StreamWriter(key, target, **writer_options)


class StreamHandler(logging.Handler):
    """Send ``logging`` records to a log-service stream, live, without ever blocking.

    ``StreamHandler(key, url=..., account_id=..., token=..., **options)`` or
    ``StreamHandler(key, config={...})`` with a setup request or its ``log_config``; values
    not given come from ``LELOG_*`` variables.  ``config`` may also be a ``LogConfig``, or
    a backend (``FileStore``, ``LogServiceClient``, ...) as ``StreamWriter`` takes it, which
    its owner closes.  ``options`` are any other ``LogConfig`` field
    and the writer's options (``flush_interval``, ``close_timeout``, ...).  ``writer=`` feeds
    an existing ``StreamWriter`` instead, which its owner closes.

    Each record becomes one stream line per line of its formatted text (a traceback follows
    its message), with the record's level in lower case, its creation time, and its
    ``extra=`` fields whose values are data as ``args`` (unless ``extras_as_args`` is false;
    names in ``exclude`` are left out of both the text and ``args``, names in ``include`` are
    kept whatever they hold; see ``LogfmtFormatter``).  loguru's bound fields and structlog's
    event dict count as extras.  ``trace_context=True`` (or ``LELOG_TRACE_CONTEXT``) adds the
    active OpenTelemetry span's ``trace_id`` and ``span_id``.  The default formatter is
    ``LogfmtFormatter``: ``time="..." level=info msg="..." key=value``.
    """

    def __init__(
        self,
        key: Optional[str] = None,
        *,
        config: Union[Mapping[str, Any], LogConfig, Backend, None] = None,
        url: Optional[str] = None,
        account_id: Optional[str] = None,
        token: Optional[str] = None,
        writer: Optional[StreamWriter] = None,
        level: Union[int, str] = logging.NOTSET,
        extras_as_args: bool = True,
        exclude: Collection[str] = (),
        include: Collection[str] = (),
        trace_context: Optional[bool] = None,
        **options: Any,
    ) -> None:
        level = check_level(level)
        # Checked before the writer is built, as every option: a mistake builds nothing.
        span_ids = span_ids_reader(trace_context)
        formatter = (
            LogfmtFormatter(exclude=exclude, include=include)
            if span_ids is None
            else SpanLogfmtFormatter(span_ids, exclude=exclude, include=include)
        )
        if not isinstance(extras_as_args, bool):
            raise ConfigError(f"extras_as_args must be true or false, got {extras_as_args!r}")
        config_values, writer_options = _split_options(options)
        explicit = {"url": url, "account_id": account_id, "token": token}
        config_values.update({k: v for k, v in explicit.items() if v is not None})
        if writer is None:
            writer = _build_writer(key, config, config_values, writer_options)
            self.owns_writer = True
        elif key is not None or config is not None or config_values or writer_options:
            raise ConfigError("writer= replaces key, config and writer options: give one or the other")
        else:
            self.owns_writer = False
        # The writer is built before the handler registers with logging: a ConfigError
        # leaves no half-made handler for logging.shutdown() to find.
        super().__init__(level)
        self.writer = writer
        self._ingress = writer.ingress
        self.extras_as_args = extras_as_args
        # Records go to the writer as captured at call time while this formatter is the
        # handler's (see emit); another formatter runs on the caller, as logging's own do.
        # One set each for the text and args: emit checks they are kept.
        self.exclude, self.include = formatter.exclude, formatter.include
        self.setFormatter(formatter)
        self._span_ids: Optional[SpanIds] = span_ids
        # Records with no more attributes than a fresh one have no extras and take emit's
        # shortest path; with trace_context every record takes the fields path, which adds
        # the span's ids (a size no record has: no cost per record when it is off).
        self.fresh_record_size = formatter.fresh_record_size
        self._record_line = RecordLine.EXTRAS_AS_ARGS if extras_as_args else RecordLine.TEXT_ONLY
        self._dual_masker = writer.config.masker() if writer.config.dual_logging_enabled else None
        # The formatter whose records are captured as they are (see emit): the handler's
        # own, unless dual logging needs each record's text here or a subclass formats
        # records its own way.
        own_format = type(self).format is logging.Handler.format
        self._captures_with = formatter if own_format and self._dual_masker is None else None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.writer.key!r} ({logging.getLevelName(self.level)})>"

    @property
    def stats(self) -> Stats:
        """What the writer did so far (sent, dropped by reason, retries, bytes)."""
        return self.writer.stats

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter and emit, like ``logging.Handler.handle`` but without the handler lock.

        Returns what the filters returned: a (possibly replaced) record on Python 3.12+.
        """
        entry = _reentry.state
        if entry.busy:
            return self._reenter(record)
        entry.busy = True
        try:
            rv = self.filter(record)
            if rv:
                self.emit(rv if isinstance(rv, logging.LogRecord) else record)
            return rv
        finally:
            # _reentry.leave(entry), inlined: this is every record's path.
            if entry.deferred:
                _reentry.run_deferred()
            else:
                entry.busy = False
                if entry.deferred:
                    _reentry.run_deferred()

    def _filter_and_emit(self, record: logging.LogRecord) -> Any:
        """``handle``'s body, for a record deferred until its thread left lelog."""
        rv = self.filter(record)
        if rv:
            self.emit(rv if isinstance(rv, logging.LogRecord) else record)
        return rv

    def _reenter(self, record: logging.LogRecord) -> bool:
        """A record logged on a thread already inside lelog: deferred until the outer call
        returns.  Records of lelog's own I/O (its HTTP client's) go nowhere; anything else
        logged on lelog's own threads (a finalizer run there) is counted."""
        if _reentry.state.own and record.name.startswith(_OWN_LOGGERS):
            return False
        _reentry.defer(functools.partial(self._filter_and_emit, record), self._count_reentrant)
        return True

    def _count_reentrant(self) -> None:
        self.writer.count_reentrant()

    def emit(self, record: logging.LogRecord) -> None:
        """Append the record's lines to the writer's buffer; never blocks on I/O or raises.

        With the handler's own ``LogfmtFormatter``, the common record (no exception or
        stack, a float time, a str level name, extras with str names) is captured as it is
        now: its time, level name, message and extras as strings.  The writer's worker
        renders the same logfmt line from them, with the JSON, in one pass per batch
        (benchmarks/README.md: the caller pays for the capture only).  Anything else is
        formatted here, on the caller's thread.
        """
        try:
            formatter = self._captures_with
            if formatter is not None and self.formatter is formatter:
                ts, levelname = record.created, record.levelname
                if (
                    type(ts) is float
                    and 0.0 <= ts < MAX_EPOCH
                    and type(levelname) is str
                    and not (record.exc_info or record.exc_text or record.stack_info)
                ):
                    if len(record.__dict__) <= self.fresh_record_size:  # no extras: record_extras' own test
                        self._ingress.record(ts, levelname, record.getMessage(), None, self._record_line)
                        return
                    # The formatter's settings as the handler made them (changed, they are
                    # honoured on the caller); the extras' names str, else two could print alike.
                    fields = self._fields(record)
                    if (
                        formatter.extras
                        and formatter.exclude is self.exclude
                        and formatter.include is self.include
                        and all(type(name) is str for name in fields)
                    ):
                        self._ingress.record(
                            ts, levelname, record.getMessage(), fields or None, self._record_line
                        )
                        return
            self._emit_formatted(record)
        except Exception:
            self.handleError(record)

    def _emit_formatted(self, record: logging.LogRecord) -> None:
        """The record formatted on this thread, one stream line per line of its text."""
        text = self.format(record)
        level = record.levelname.lower()
        args = self._args(record)
        line = self._ingress.line
        if "\n" in text:
            for part in _lines(text):
                line(part, level, args, record.created)
        else:  # the common one-line record skips the split (caller-cost row)
            line(text, level, args, record.created)
        if self._dual_masker is not None:
            self._dual_log(text, record, args)

    def _fields(self, record: logging.LogRecord) -> dict[Any, str]:
        """The record's fields as text, and the active span's ids with ``trace_context``:
        read here, on the caller's thread, the one whose context holds the span."""
        fields = record_extras(record, self.exclude, self.include)
        return fields if self._span_ids is None else with_span_ids(fields, self._span_ids)

    def _args(self, record: logging.LogRecord) -> Optional[dict[str, str]]:
        if not self.extras_as_args:
            return None
        fields = self._fields(record)
        return {safe_str(k): v for k, v in fields.items()} if fields else None

    def _dual_log(self, text: str, record: logging.LogRecord, args: Optional[dict[str, str]]) -> None:
        """The record as one flat JSON object on stdout, masked like the stream's lines (the
        extras' names too: a secret can be a key as well as a value)."""
        mask = self._dual_masker.mask  # type: ignore[union-attr]
        payload: dict[str, Any] = {
            "timestamp": record.created,
            "level": record.levelname.upper(),
            "message": mask(text),
            "key": self.writer.key,
        }
        for name, value in (args or {}).items():
            payload.setdefault(mask(name), mask(value))  # the fixed fields win over extras
        stream = sys.stdout
        if stream is not None:  # pythonw and some daemons have no stdout
            stream.write(json.dumps(payload, ensure_ascii=False) + "\n")
            stream.flush()

    def flush(self, timeout: Optional[float] = None) -> bool:  # type: ignore[override]
        """Push everything accepted so far; True when it was all sent within ``timeout``
        (default: the writer's ``close_timeout``).

        Under ``logging``'s module lock it only asks for a push and returns (see the module
        docstring).  Called by ``logging.shutdown()``, it finishes every lelog handler being
        shut down at once, in parallel, within one deadline (docs/writer.md#one-deadline).
        On a thread already inside lelog (a signal handler) it returns False at once.
        """
        if _reentry.nested():
            return False
        handlers = _shutting_down(sys._getframe(1))
        if handlers is not None:
            with _reentry.entered():
                _finish_in_parallel(handlers)
        # The worker never takes this handler's lock (handle() does not), so waiting for it
        # here is safe even under logging.shutdown(), which holds that lock.
        return self.writer.flush(0.0 if _holding_logging_lock() else timeout)

    def close(self, timeout: Optional[float] = None) -> None:
        """Finish the stream (final push, upload, close) within ``timeout`` seconds (default:
        the writer's ``close_timeout``), then detach from ``logging``.

        Under ``logging``'s module lock (``dictConfig`` replacing this handler) it starts the
        close and returns: the worker finishes within the same deadline once the lock is
        free, and the exit hook waits for it.  A writer given with ``writer=`` is not closed.
        On a thread already inside lelog (a signal handler), the close runs when the call
        it interrupted returns.
        """
        try:
            if self.owns_writer:
                # Bounded either way; under logging's module lock the worker may need that
                # lock (httpx logs), so the close is only started and the exit hook waits.
                self.writer.close(timeout, wait=not _holding_logging_lock())
        finally:
            super().close()
