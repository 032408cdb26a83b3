"""``StreamHandler``: ``logging`` records to stream lines.

Built from plain values only, so ``dictConfig`` and ``fileConfig`` can make it; building it
opens no connection and starts no thread (docs/hazards.md#side-effects-at-construction, #dictconfig-traps):
the writer's worker starts on
the first record.  ``emit`` only formats and appends to the writer's bounded buffer.

Recursion (docs/hazards.md#recursion).  A record is dropped, never buffered, when it is emitted on a
writer's I/O thread (the HTTP client's own ``httpx``/``httpcore`` records) or on a thread that
is already inside a ``lelog`` handler (a formatter, filter or ``__str__`` that logs).

Locks (docs/hazards.md#deadlock-under-logging-locks).  ``handle`` never takes the handler lock: the writer is
thread-safe,
and so no thread ever waits on that lock for us.  ``flush`` and ``close`` wait on the writer's
worker only when the calling thread does not hold ``logging``'s module lock: the worker's HTTP
client logs, and ``Logger.isEnabledFor`` takes that lock on a cache miss, so waiting under it
(``dictConfig`` closing old handlers does exactly that) would stall until the deadline.  Under
it, ``close`` lets go of the stream for a replacement on the same key to take on
(docs/writer.md#hand-off).

Shutdown (docs/writer.md#one-deadline).  ``logging.shutdown()`` calls each handler's
``flush`` and ``close`` in turn; the first lelog ``flush`` it calls finishes every lelog
handler in its list in parallel, within one ``close_timeout``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import weakref
from typing import Any, Collection, Mapping, Optional, Union

import attrs

from . import _process
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
from ._line import _MAX_EPOCH
from ._logfmt import _FRESH_RECORD_SIZE, LogfmtFormatter, record_extras, safe_str
from ._writer import Stats, StreamWriter, WriterOptions
from ._writer import _worker_state as _io_thread

__all__ = ["StreamHandler"]

_WRITER_FIELDS = frozenset(f.name for f in attrs.fields(WriterOptions))


class _GuardState(threading.local):
    # A class default, as _writer._WorkerState has: a getattr(..., False) miss costs an
    # AttributeError on every record (benchmarks/: caller-cost row).
    active = False


_guard = _GuardState()


class _Guarded:
    """Marks this thread as inside ``lelog`` for a block: records logged there are dropped."""

    __slots__ = ("_was",)

    def __enter__(self) -> None:
        self._was = _guard.active
        _guard.active = True

    def __exit__(self, *exc_info: object) -> None:
        _guard.active = self._was


_holding_logging_lock = _process.holding_logging_lock


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
        if isinstance(handler, StreamHandler) and handler._owns_writer and not handler.writer.closed:
            if handler.writer._let_go():  # the last writer out finishes its stream
                streams.append(handler.writer._engine)
    _process.finish_together(streams)


def _lines(text: str) -> list[str]:
    """One stream line per text line; a final newline does not make an empty line."""
    lines = text.split("\n")
    if len(lines) > 1 and not lines[-1]:
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
    ``extra=`` fields as ``args`` (unless ``extras_as_args`` is false; names in ``exclude``
    are left out of both the text and ``args``).  The default formatter is
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
        **options: Any,
    ) -> None:
        level = check_level(level)
        if isinstance(exclude, str):
            raise ConfigError("exclude must be a list of attribute names, not one string")
        if not isinstance(extras_as_args, bool):
            raise ConfigError(f"extras_as_args must be true or false, got {extras_as_args!r}")
        config_values, writer_options = _split_options(options)
        explicit = {"url": url, "account_id": account_id, "token": token}
        config_values.update({k: v for k, v in explicit.items() if v is not None})
        if writer is None:
            writer = _build_writer(key, config, config_values, writer_options)
            self._owns_writer = True
        elif key is not None or config is not None or config_values or writer_options:
            raise ConfigError("writer= replaces key, config and writer options: give one or the other")
        else:
            self._owns_writer = False
        # The writer is built before the handler registers with logging: a ConfigError
        # leaves no half-made handler for logging.shutdown() to find.
        super().__init__(level)
        self.writer = writer
        self.extras_as_args = extras_as_args
        # Records go to the writer as captured at call time while this formatter is the
        # handler's (see emit); another formatter runs on the caller, as logging's own do.
        formatter = LogfmtFormatter(exclude=exclude)
        self.exclude = formatter.exclude  # one set for the text and args: emit checks it is kept
        self.setFormatter(formatter)
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
        if _guard.active or _io_thread.active:  # inside lelog already, or a writer's I/O
            return False
        _guard.active = True
        try:
            rv = self.filter(record)
            if rv:
                self.emit(rv if isinstance(rv, logging.LogRecord) else record)
            return rv
        finally:
            _guard.active = False  # it was not active, or we would have returned above

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
                    and 0.0 <= ts < _MAX_EPOCH
                    and type(levelname) is str
                    and not (record.exc_info or record.exc_text or record.stack_info)
                ):
                    if len(record.__dict__) <= _FRESH_RECORD_SIZE:  # no extras: record_extras' own test
                        self.writer.write_record(ts, levelname, record.getMessage(), None, self._record_line)
                        return
                    # The formatter's settings as the handler made them (changed, they are
                    # honoured on the caller); the extras' names str, else two could print alike.
                    extras = record_extras(record, self.exclude)
                    if (
                        formatter.extras
                        and formatter.exclude is self.exclude
                        and all(type(name) is str for name in extras)
                    ):
                        strings = {name: safe_str(value) for name, value in extras.items()}
                        self.writer.write_record(
                            ts, levelname, record.getMessage(), strings or None, self._record_line
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
        write_line = self.writer.write_line
        if "\n" in text:
            for line in _lines(text):
                write_line(line, level, args, time=record.created)
        else:  # the common one-line record skips the split (caller-cost row)
            write_line(text, level, args, time=record.created)
        if self._dual_masker is not None:
            self._dual_log(text, record, args)

    def _args(self, record: logging.LogRecord) -> Optional[dict[str, str]]:
        if not self.extras_as_args:
            return None
        extras = record_extras(record, self.exclude)
        return {safe_str(k): safe_str(v) for k, v in extras.items()} if extras else None

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
        docstring); records logged by this thread meanwhile are dropped.  Called by
        ``logging.shutdown()``, it finishes every lelog handler being shut down at once, in
        parallel, within one deadline (docs/writer.md#one-deadline).
        """
        with _Guarded():
            handlers = _shutting_down(sys._getframe(1))
            if handlers is not None:
                _finish_in_parallel(handlers)
            # The worker never takes this handler's lock (handle() does not), so waiting for
            # it here is safe even under logging.shutdown(), which holds that lock.
            return self.writer.flush(0.0 if _holding_logging_lock() else timeout)

    def close(self, timeout: Optional[float] = None) -> None:
        """Finish the stream (final push, upload, close) within ``timeout`` seconds (default:
        the writer's ``close_timeout``), then detach from ``logging``.

        Under ``logging``'s module lock (``dictConfig`` replacing this handler) it starts the
        close and returns: the worker finishes within the same deadline once the lock is
        free, and the exit hook waits for it.  A writer given with ``writer=`` is not closed.
        """
        try:
            if self._owns_writer:
                with _Guarded():
                    self._close_writer(timeout)
        finally:
            super().close()

    def _close_writer(self, timeout: Optional[float]) -> None:
        # Bounded either way; under logging's module lock the worker may need that lock
        # (httpx logs), so the close is only started and the exit hook waits for it.
        self.writer.close(timeout, wait=not _holding_logging_lock())
