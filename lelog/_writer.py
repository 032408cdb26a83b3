"""``StreamWriter``: the handle a caller holds on a stream.

A handle is what is a writer's own: its partial line (``LineSplitter``), its secrets (a
writer that joins another's stream masks its lines itself, on the caller's thread), and
whether it let go.  Everything shared by the writers of one stream is the ``Engine``
(``_engine.py``), found or built through the process's ``StreamRegistry``.

A line from ``emit`` to the PUT (docs/writer.md#a-line-from-emit-to-the-put)::

    StreamHandler.handle ─► Ingress.record / .line ─► Engine.accept ─► Ledger.accept
    (the entry guard)       (this handle's masking)   (wake, yield)     (PendingLines)
                                                                            │ worker round
    PUT /stream ◄─ Delivery.step ◄─ Delivery.take_in ◄─ Pipeline.drain ◄────┘
                   (live queue, retries)               (pos, encode, history, spool)

Every public method is an entry point guarded by ``_reentry`` (docs/writer.md#re-entry): a
call made on a thread already inside lelog (a signal handler, a finalizer, a formatter that
logs) is deferred to the end of the outer call, never waits on a lock its thread holds.

Lock: ``split_lock`` (one per handle) serialises ``write()`` callers over the partial line.
Order: a ``split_lock``, then the engine's ledger lock, never the reverse; a close takes the
``split_lock`` of every handle on its stream, in one order (docs/writer.md#locks).
"""

from __future__ import annotations

import functools
import threading
import weakref
from typing import Any, Callable, Mapping, Optional, Union

import attrs

from . import _lifecycle, _reentry
from ._backend import Backend, make_backend, stream_identity
from ._clock import SYSTEM_CLOCK, Clock
from ._config import LogConfig
from ._encode import Item, RecordLine, ready
from ._engine import Engine
from ._exceptions import ConfigError
from ._ledger import WriterState
from ._line import MAX_EPOCH, is_valid_epoch
from ._logfmt import safe_str
from ._masking import Masker
from ._options import WriterOptions
from ._registry import Outcome, Settings, StreamRegistry
from ._splitter import LineSplitter
from ._spool import Spool, SpoolStats
from ._stats import DROP_REASONS, Stats

__all__ = ["DROP_REASONS", "Ingress", "Stats", "StreamWriter", "WriterOptions", "WriterState"]

#: The streams of this process, one per far end, account and key.
STREAMS: StreamRegistry[Engine] = StreamRegistry()


class Ingress:
    """A handle's way into its engine, for callers already inside lelog's entry guard
    (``StreamWriter``'s own methods, and ``StreamHandler``, whose ``handle`` is the guard).

    It never raises and never waits on I/O.  A writer that joined another's stream masks its
    lines here with its own secrets (the engine's encoder masks with the first writer's)."""

    __slots__ = ("_engine", "_premask", "_clock", "released")

    def __init__(self, engine: Engine, premask: Optional[Masker], clock: Clock) -> None:
        self._engine = engine
        self._premask = premask
        self._clock = clock
        #: This handle let go: its lines are counted after close.
        self.released = False

    def record(
        self, ts: float, levelname: str, message: str, extras: Optional[dict[str, str]], kind: RecordLine
    ) -> None:
        """One ``logging`` record as ``StreamHandler`` captured it at call time (a finite epoch
        float, its level name, its message, its extras as strings or None); the worker
        renders its logfmt line (``_encode``).  No checks: the handler made them."""
        if self._premask is None:
            self._engine.accept((ts, levelname, message, extras, kind), self.released)
        else:
            self.item((ts, levelname, message, extras, kind))

    def line(self, out: Any, level: Any = "info", args: Any = None, ts: Any = None) -> None:
        """One whole line; odd arguments are made usable rather than refused: ``out`` and
        ``level`` become strings, a time that is not a finite number becomes now, ``args``
        that are not a mapping become ``{"args": str(args)}``."""
        if type(out) is not str:
            out = safe_str(out)
        if not out.endswith("\n"):
            out += "\n"
        if type(level) is not str:
            level = safe_str(level)
        if args is not None and type(args) is not dict and not isinstance(args, Mapping):
            args = {"args": safe_str(args)}
        if ts is None:
            ts = self._clock.time()
        elif not (type(ts) is float and 0.0 <= ts < MAX_EPOCH):  # a record's created passes as is
            ts = self._checked_time(ts)
        if self._premask is None:
            self._engine.accept((ts, level, out, args, None), self.released)
        else:
            self.item((ts, level, out, args, None))

    def item(self, item: Item) -> None:
        """One line, masked with this handle's secrets if it shares another's stream
        (rendered first: the engine's encoder masks with the first writer's secrets only)."""
        premask = self._premask
        if premask is not None:
            level, out, args = ready(item)
            out = premask.mask(out)
            if args:
                args = premask.mask_args(args)
            item = (item[0], level, out, args, None)
        self._engine.accept(item, self.released)

    def mask(self, out: str) -> str:
        return out if self._premask is None else self._premask.mask(out)

    def _checked_time(self, value: Any) -> float:
        try:
            ts = float(value)
        except (TypeError, ValueError):
            return self._clock.time()
        return ts if is_valid_epoch(ts) else self._clock.time()


def _stream_settings(config: LogConfig, options: WriterOptions, spool_dir: Optional[str]) -> Settings:
    """What the first writer on a stream decides for every writer on it."""
    return (
        ("skip_opening_stream", config.skip_opening_stream),
        ("skip_closing_stream", config.skip_closing_stream),
        ("trim_new_line_suffix", config.trim_new_line_suffix),
        ("indirect_upload", config.indirect_upload),
        ("history_bytes", options.history_bytes),
        ("spool_dir", spool_dir),  # a later writer without one asks for nothing
    )


class StreamWriter:
    """Stream lines to one log-service stream from any thread, without ever blocking on it.

    ``target`` is a ``LogConfig``, a setup request (or its ``log_config``) as a dict, a
    backend (``LogServiceClient``, ``FileStore``, or anything with the same calls), or None
    for ``LogConfig.from_env()``.  A config without ``url`` writes to the local file store.

    Writers on one stream (far end, account and key) whose lifetimes overlap share it: every
    line of each is in the stored log, in order, and the last one out finishes the stream
    (docs/writer.md#one-stream-per-key).

    ``clock`` replaces the system clock; ``threaded=False`` starts no worker thread: the
    caller runs the worker's rounds with ``step()`` and ``close()`` runs the final sequence
    on its own thread (for tests that drive time, see ``lelog.testing.ManualClock``).
    """

    def __init__(
        self,
        key: str,
        target: Union[LogConfig, Mapping[str, Any], Backend, None] = None,
        *,
        clock: Optional[Clock] = None,
        threaded: bool = True,
        **options: Any,
    ) -> None:
        # An entry point: a finalizer that closes a writer while this one takes the
        # registry's lock is deferred to the end of the construction (docs/writer.md#re-entry).
        with _reentry.entered():
            self._setup(key, target, clock, threaded, options)

    def _setup(
        self,
        key: str,
        target: Union[LogConfig, Mapping[str, Any], Backend, None],
        clock: Optional[Clock],
        threaded: bool,
        options: dict[str, Any],
    ) -> None:
        if not isinstance(key, str) or not key:
            raise ConfigError("key must be a non-empty string: the stream key, e.g. 'stage-1/step-2'")
        self.key = key
        self.options = WriterOptions.from_kwargs(options)
        # Checked before a backend (an HTTP client to close) exists: a ConfigError leaks nothing.
        spool_dir = (
            None if self.options.spool_dir is None else Spool.prepare_directory(self.options.spool_dir)
        )
        backend, owns_backend, self.config = make_backend(target)
        self._clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self._identity = identity = stream_identity(backend, self.config, key)
        built: list[Engine] = []

        def build(predecessor: Optional[Engine]) -> Engine:
            engine = Engine(
                key,
                self.options,
                self.config,
                backend,
                owns_backend=owns_backend,
                identity=identity,
                clock=self._clock,
                threaded=threaded,
                predecessor=predecessor,
                handoff_pending=functools.partial(STREAMS.handoff_pending, identity),
                expire_handoff=functools.partial(STREAMS.expire_handoff, identity),
                on_finished=functools.partial(STREAMS.forget, identity),
            )
            built.append(engine)
            return engine

        settings = _stream_settings(self.config, self.options, spool_dir)
        engine, membership, conflicts = STREAMS.share(identity, settings, build)
        if membership is None:
            if owns_backend:
                backend.close()
            raise ConfigError(
                f"stream {key!r} is already written by another writer in this process, with "
                f"other stream-level settings: {', '.join(conflicts)}; give the same values, or "
                "use another key"
            )
        if conflicts:  # a replacement took on a hand-off: the stream keeps its settings
            engine.warn(
                "settings",
                f"stream {key!r} is taken on from the configuration this one replaces and keeps "
                f"its settings until it ends, so every line stays in one log: {', '.join(conflicts)}; "
                "the new values apply to the next stream on this key",
            )
        self._engine = engine
        self._membership = membership
        self.split_lock = threading.Lock()
        # A forced break never cuts a literal secret in two halves the masker could not see.
        self._splitter = LineSplitter(self.options.max_partial, unbroken=self.config.literal_secrets())
        if built:
            self.ingress = Ingress(engine, None, self._clock)
            engine.own(spool_dir)
        else:
            if owns_backend:  # the engine's backend does the talking
                backend.close()
            self.ingress = Ingress(engine, self.config.masker() or None, self._clock)
        engine.add_handle(self)
        _handles.add(self)

    def __repr__(self) -> str:
        return f"<StreamWriter key={self.key!r} backend={self._engine.backend!r}>"

    # -- lines in: entry points -------------------------------------------------------------------

    def write(self, data: Union[str, bytes]) -> int:
        """Write text or bytes, io-style: partial lines wait for their ``\\n``.  Never raises."""
        entry = _reentry.state
        if entry.busy:
            self._reenter(functools.partial(self._write, data))
            return len(data) if isinstance(data, (str, bytes)) else 0
        entry.busy = True
        try:
            return self._write(data)
        finally:
            _reentry.leave(entry)

    def write_line(
        self,
        out: str,
        level: str = "info",
        args: Optional[Mapping[str, Any]] = None,
        *,
        time: Optional[float] = None,
    ) -> None:
        """Write one whole line (a ``\\n`` is added if missing).  Never raises.

        Odd arguments are made usable rather than refused: ``out`` and ``level`` become
        strings, a ``time`` that is not a finite number becomes now, ``args`` that are not a
        mapping become ``{"args": str(args)}``.
        """
        entry = _reentry.state
        if entry.busy:
            ts = self._clock.time() if time is None else time  # the time it was written
            self._reenter(functools.partial(self._guarded, self.ingress.line, out, level, args, ts))
            return
        entry.busy = True
        try:
            self._guarded(self.ingress.line, out, level, args, time)
        finally:
            _reentry.leave(entry)

    def write_record(
        self,
        ts: float,
        levelname: str,
        message: str,
        extras: Optional[dict[str, str]],
        record: RecordLine,
    ) -> None:
        """Write one ``logging`` record as ``StreamHandler`` captures it (see
        ``Ingress.record``).  Never raises."""
        entry = _reentry.state
        if entry.busy:
            call = functools.partial(
                self._guarded, self.ingress.record, ts, levelname, message, extras, record
            )
            self._reenter(call)
            return
        entry.busy = True
        try:
            self._guarded(self.ingress.record, ts, levelname, message, extras, record)
        finally:
            _reentry.leave(entry)

    def _write(self, data: Union[str, bytes]) -> int:
        try:
            # Split and accept under one lock: a concurrent close() then sees either none
            # or all of this chunk's lines, in order.
            with self.split_lock:
                lines = self._splitter.feed(data if isinstance(data, (str, bytes)) else str(data))
                if self.ingress.released:  # after close: the partial line too is counted, not kept
                    lines.extend(filter(None, [self._splitter.finish()]))
                now = self._clock.time()
                for line in lines:
                    self.ingress.item((now, "info", line, None, None))
            return len(data)
        except Exception as exc:  # the logging path never raises into the application
            self._engine.warn("internal", f"write failed: {exc!r}")
            return 0

    def _guarded(self, call: Callable[..., None], *args: Any) -> None:
        try:
            call(*args)
        except Exception as exc:  # the logging path never raises into the application
            self._engine.warn("internal", f"writing a line failed: {exc!r}")

    def _reenter(self, call: Callable[[], object]) -> None:
        """A call made on a thread already inside lelog: deferred to the end of the outer
        call; on lelog's own threads (a finalizer run there) counted, never waited for."""
        _reentry.defer(call, self.count_reentrant)

    def count_reentrant(self) -> None:
        """Count a line given on a thread already inside lelog that could not be kept
        (docs/writer.md#re-entry): accepted, and dropped as ``reentrant``.  Takes no lock."""
        self._engine.ledger.count_reentrant()

    # -- the stream's life ------------------------------------------------------------------------

    @property
    def stream(self) -> object:
        """What identifies the stream this writer feeds in this process (shared by every
        writer on it)."""
        return self._engine

    def open(self) -> StreamWriter:
        """Start streaming now: the worker opens the stream (unless skipped) in the background."""
        if _reentry.nested():  # a line starts the stream too: on lelog's own threads, nothing
            _reentry.defer(self._engine.start, _nothing)
            return self
        with _reentry.entered():
            self._engine.start()
        return self

    def step(self) -> Optional[float]:
        """Run one round of the worker on this thread: take pending lines, open the stream or
        push a batch when due.  Returns the seconds until a round is due again, or None once
        ``close()`` was asked.  Only for a writer built with ``threaded=False``."""
        with _reentry.entered():
            return self._engine.step()

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Push everything accepted so far; True when all of it was sent within ``timeout``.

        On a stream shared with other writers that is every writer's lines.

        Waits on the worker without holding any lock the worker needs, so it is safe under
        ``logging``'s locks.  ``timeout`` defaults to ``close_timeout``.  A flush that runs
        out of time on a failing service (its last call failed, or none succeeded during the
        flush) shares its budget with a later ``close()``: the close ends by the flush's
        start + ``close_timeout``, unless the service has accepted a call since.  A short
        ``timeout`` on a service that is only slow costs the close nothing, and neither does
        a flush under ``logging``'s module lock (``dictConfig`` flushes with no wait).

        Called on a thread already inside lelog (a signal handler that interrupted a logging
        call), it returns False at once: it cannot wait there.
        """
        if _reentry.nested():
            return False
        with _reentry.entered():
            return self._engine.flush(timeout)

    def close(self, timeout: Optional[float] = None, *, wait: bool = True) -> Stats:
        """Finish the stream within ``timeout`` seconds and return what happened.

        Keeps the last partial line, pushes what is pending, uploads the history and closes
        the stream (per the skip flags).  Later writes are counted as dropped after close.
        Returns within the timeout even if the service never answers.

        ``wait=False`` only starts the close: the worker finishes within the same deadline
        and the exit hook waits for it.  That is for callers holding a lock the worker may
        need, such as ``logging``'s module lock during ``dictConfig`` (httpx's logging calls
        take it).  The stats returned are then a snapshot, not the final ones.

        On a stream that other writers still use, this writer only lets go: the last one out
        finishes the stream, and this one reports ``handed_on``.  Under ``logging``'s module
        lock (a ``dictConfig``/``fileConfig`` replacing this writer's handler), the stream
        waits for that call to return, so a replacement on the same key takes it on.

        Called on a thread already inside lelog (a signal handler that interrupted a logging
        call), the close runs when that call returns (after the lines written before it),
        and this returns the stats as they are, not closed.  On one of lelog's own threads (a
        finalizer run there), the close runs on a thread of its own.
        """
        if _reentry.nested():
            if self.ingress.released and self._engine.finished():
                return self.stats  # closed already: nothing to defer
            if _reentry.resident():  # nothing deferred here would run: this thread never leaves
                _lifecycle.start_daemon(functools.partial(self.close, timeout, wait=wait), "lelog-close")
            else:
                _reentry.defer(functools.partial(self._close, timeout, wait), _nothing)
            return self.stats
        with _reentry.entered():
            self._close(timeout, wait)
        return self.stats

    def _close(self, timeout: Optional[float], wait: bool) -> None:
        engine = self.release()
        if engine is not None:
            engine.begin_close(engine.close_deadline(timeout))
            if wait:
                engine.await_close()
        elif wait and self._membership.outcome is Outcome.SHARED and not _lifecycle.holding_logging_lock():
            # Another writer finishes the stream; this one's lines are pushed before it reports.
            self._engine.flush(timeout)

    def release(self) -> Optional[Engine]:
        """Let go of the stream; the engine when this writer is to finish it (the last one
        out, or one that left a hand-off nobody took), else None.  ``logging.shutdown()``
        finishes the engines of all its lelog handlers together this way.  Call it inside
        lelog's entry guard (``close`` and ``StreamHandler`` do)."""
        membership = self._membership
        with self.split_lock:
            if self.ingress.released:
                return self._engine if self._again() else None
            last = self._splitter.finish()
            if last:
                self.ingress.item((self._clock.time(), "info", last, None, None))
            self.ingress.released = True
        # A configuration call's hand-off needs the worker, which ends it once the call has
        # returned (docs/writer.md#hand-off).
        handoff = _lifecycle.holding_logging_lock() and self._engine.has_live_worker()
        outcome = STREAMS.leave(self._identity, self._engine, membership, handoff=handoff)
        if outcome is Outcome.HANDOFF:
            self._engine.wake()  # the worker watches for the configuration call's end
        return self._engine if outcome is Outcome.LAST else None

    def _again(self) -> bool:
        """A writer that let go closes again: True when it is to finish (or wait for) the
        stream: it was the last out, or it left a hand-off nobody took, which a close
        outside the configuration call ends now."""
        membership = self._membership
        if membership.outcome is Outcome.HANDOFF and not _lifecycle.holding_logging_lock():
            STREAMS.expire_handoff(self._identity, self._engine)
            return not membership.handed_on
        return membership.outcome is Outcome.LAST

    def take_partial(self) -> Optional[str]:
        """The partial line, masked as this writer masks (the close calls it under ``split_lock``)."""
        last = self._splitter.finish()
        return self.ingress.mask(last) if last else None

    def __enter__(self) -> StreamWriter:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reports --------------------------------------------------------------------------------

    @property
    def state(self) -> WriterState:
        """Where the stream this writer feeds is in its life."""
        return self._engine.state

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (lines written now are counted, not sent)."""
        return self.ingress.released or not self._engine.accepting

    @property
    def pending(self) -> int:
        """Lines accepted but not yet sent or dropped; cheap enough to poll for backpressure."""
        ledger = self._engine.ledger
        if _reentry.nested():
            counters = ledger.counters  # read without the lock its thread may hold
            return counters.accepted - counters.settled()
        with _reentry.entered():
            return ledger.unsettled()

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters: the stream's, shared by every writer on it.  A writer
        that let go of a stream others still use reports ``handed_on`` and no upload.
        Read on a thread already inside lelog, the counts are read without the lock."""
        if _reentry.nested():
            stats = self._engine.stats(locked=False)
        else:
            with _reentry.entered():
                stats = self._engine.stats()
        if self._membership.handed_on:
            return attrs.evolve(stats, uploaded=None, handed_on=True)
        return stats

    @property
    def spool_stats(self) -> Optional[SpoolStats]:
        """What the crash spool did: lines written, lines it could not keep (a full disk);
        None without ``spool_dir``."""
        if _reentry.nested():
            return None
        with _reentry.entered():
            return self._engine.spool_stats


def _nothing() -> None:
    """A deferred close has no lines to count."""


# Every handle, for the fork hook: a parent thread may have held a split_lock at the fork.
_handles: weakref.WeakSet[StreamWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    STREAMS.after_fork_in_child()
    for engine in _lifecycle.registered():
        if isinstance(engine, Engine):
            engine.after_fork_in_child()
    for handle in list(_handles):
        handle.split_lock = threading.Lock()


_lifecycle.after_fork_in_child(_after_fork_in_child)
