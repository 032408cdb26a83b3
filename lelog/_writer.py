"""``StreamWriter``: the thread-backed batching writer.

How a line travels (docs/writer.md#a-line-from-emit-to-the-put)::

    caller threads                        the worker thread (one per writer, daemon, lazy)
    write()/write_line()/write_record():  _drain(): _encode_pending() renders, masks, trims,
    append to PendingLines (bounded);     truncates, numbers (pos) and encodes each line once
    never blocks on I/O, never raises; ──► (encode_batch); the bytes go to
    overflow drops the oldest,            ├─ HistoryRing: the final upload's lines (byte budget)
    counted and marked                    ├─ the spool's queue (with spool_dir)
                                          └─ Intake, then LiveQueue: not yet pushed (bounded);
                                             one PUT in flight, batched by count, bytes and
                                             age; a failed PUT is retried from the worker
                                             loop, so lines keep being accepted meanwhile

With a spool, its thread runs ``_encode_pending()`` too, so a request that holds the worker
never holds the spool (docs/writer.md#encoding).

The writer's life is one ``WriterState``, changed only by ``_move`` under ``_lock``
(docs/writer.md#states).  Time comes from an injectable ``Clock``; ``threaded=False`` builds a
writer without a worker, driven by ``step()``, so tests drive time instead of sleeping.

Locks (docs/writer.md#locks).  ``_lock`` guards the pending lines, the counters and the
state.  It is held only for a few list operations, never across I/O, and nothing is called
while holding it, so a caller waits on it for microseconds at most and it cannot take part
in a deadlock.  ``_split_lock`` serialises ``write()`` callers over the partial-line buffer;
it is taken before ``_lock`` and never the other way round.  ``_encode_lock`` makes one
thread at a time encode, and guards ``pos``, the history and the intake; it is taken before
``_lock``, and nothing under it waits.  The thread that runs the worker's rounds (the
worker, or a closer when there is none) owns the live queue and the live state outright.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import heapq
import math
import os
import socket
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, Mapping, Optional, Union

import attrs

from . import _process
from ._backend import ONE_ATTEMPT, Backend, keeps_every_line, make_backend, retry_policy, stream_identity
from ._buffers import Batch, HistoryRing, Intake, LiveQueue, PendingLines, item_size
from ._clock import SYSTEM_CLOCK, Clock, Deadline
from ._config import MAX_SECONDS, LogConfig, check_positive, reject_unknown
from ._diagnostics import RateLimitedWarnings
from ._encode import Item, RecordLine, encode_batch, ready
from ._exceptions import AuthError, Cancelled, ConfigError, LogServiceError, StreamNotFound, TLSError
from ._line import (
    _MAX_EPOCH,
    MAX_LINE_BYTES,
    encode_line,
    format_time,
    is_valid_epoch,
    ndjson,
    truncate_out,
)
from ._logfmt import safe_str
from ._masking import Masker
from ._retry import Attempts
from ._splitter import LineSplitter
from ._spool import DEFAULT_FSYNC_INTERVAL, SPOOL_DIR_ENV, Spool, SpoolStats

__all__ = [
    "DROP_REASONS",
    "LiveState",
    "Stats",
    "StreamWriter",
    "WriterOptions",
    "WriterState",
    "in_worker_thread",
]

#: Why a line did not reach the live stream ("unencodable": lelog itself failed to encode
#: it, which only a bug or an exhausted machine causes; counted rather than lost).
DROP_REASONS = (
    "overflow",
    "too_large",
    "rejected",
    "retries_exhausted",
    "after_close",
    "unencodable",
)

_MARKER_PREFIX = "[lelog] "
#: What the first writer on a stream decides for every writer on it.
_STREAM_SETTINGS = (
    "skip_opening_stream",
    "skip_closing_stream",
    "trim_new_line_suffix",
    "indirect_upload",
    "history_bytes",
)
#: Once in this many lines accepted while at least as many wait for the worker, the caller
#: lets go of the GIL for a moment.
_YIELD_EVERY = 256
#: How long it lets go: anything above zero (sleep(0) does not hand the GIL over on 3.9 and
#: 3.10, where a waiter can even starve); the system's timer slack (~50 us) sets the rest.
_YIELD_SECONDS = 1e-6
#: How often a worker whose stream waits for a hand-off checks that the configuration call
#: (which holds logging's module lock) has returned.
_HANDOFF_POLL = 0.05


class _WorkerState(threading.local):
    # A class default, not getattr(..., False): on every other thread the attribute is
    # missing, and getattr would raise and swallow an AttributeError for every record
    # (0.3 us of the handler's ~4 us; benchmarks/ caller-cost row).
    active = False


_worker_state = _WorkerState()


def in_worker_thread() -> bool:
    """True on a thread doing a writer's I/O: records logged there must not be captured."""
    return _worker_state.active


def _positive(kind: type) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        # The one positive-number check; seconds are bounded so no wait overflows at exit.
        check_positive(
            attribute.name, value, whole=kind is int, maximum=MAX_SECONDS if kind is float else math.inf
        )

    return check


def _path_or_none(value: Any) -> Any:
    """A ``PathLike`` as its ``str``; anything else as it is (checked when the spool is made)."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


@attrs.frozen(kw_only=True)
class WriterOptions:
    """How the writer batches and what it may hold; plain values, checked when built."""

    #: A pending line is pushed at most this many seconds after it was written.
    flush_interval: float = attrs.field(default=1.0, validator=_positive(float))
    #: One PUT carries at most this many lines and bytes (proxies limit request sizes).
    #: 5000 matches what the service keeps live; fewer lines per PUT cost the worker
    #: about 1.5 us more per line (benchmarks/: caller-cost and throughput rows).
    max_batch_lines: int = attrs.field(default=5000, validator=_positive(int))
    max_batch_bytes: int = attrs.field(default=1 << 20, validator=_positive(int))
    #: Lines not yet sent that the writer holds, by count and by bytes; beyond, the oldest go.
    max_pending_lines: int = attrs.field(default=50_000, validator=_positive(int))
    max_pending_bytes: int = attrs.field(default=16 << 20, validator=_positive(int))
    #: The history kept for the final upload, in bytes of NDJSON; the oldest lines go first.
    history_bytes: int = attrs.field(default=5 << 20, validator=_positive(int))
    #: close() runs the final push, the upload and the close within this many seconds.
    close_timeout: float = attrs.field(default=5.0, validator=_positive(float))
    #: A partial line longer than this many characters is cut into a line of its own.
    max_partial: int = attrs.field(default=MAX_LINE_BYTES, validator=_positive(int))
    #: Also append every accepted line to a crash spool here, for ``lelog recover`` after a
    #: kill (default ``$LELOG_SPOOL_DIR``; None: no spool).  A writer option, not a
    #: ``LogConfig`` field: it is a path on this machine, not a setting of the service.
    spool_dir: Optional[str] = attrs.field(
        factory=lambda: os.environ.get(SPOOL_DIR_ENV) or None,
        converter=_path_or_none,
    )
    #: How often the spool is synced to disk (only a machine crash loses what is not).
    spool_fsync_interval: float = attrs.field(default=DEFAULT_FSYNC_INTERVAL, validator=_positive(float))

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> WriterOptions:
        """Build from keyword arguments, naming any unknown one."""
        reject_unknown(options, {f.name for f in attrs.fields(cls)}, "StreamWriter")
        return cls(**options)


@attrs.frozen
class Stats:
    """What a writer did.  Every accepted line ends up sent, dropped (by reason) or pending.

    ``dropped`` counts lines that did not reach the live stream; those of them still in the
    history (``rejected``, ``retries_exhausted``, and ``overflow`` of the live queue) are in
    the final upload when it succeeds (``uploaded``).
    """

    accepted: int = 0
    sent: int = 0
    pending: int = 0
    dropped: Mapping[str, int] = attrs.field(factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    retries: int = 0
    batches: int = 0
    bytes_sent: int = 0
    truncated: int = 0
    history_lines: int = 0
    history_evicted: int = 0
    uploaded: Optional[bool] = None
    closed: bool = False
    last_error: Optional[str] = None
    #: Another writer took this writer's stream on: it let go while others still used it, or
    #: a replacement took its hand-off.  The last one out uploads and reports ``uploaded``.
    handed_on: bool = False

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def summary(self) -> str:
        """One line for people: what was sent, what was dropped and why."""
        text = f"{self.sent:,} of {self.accepted:,} lines sent"
        if self.dropped_total:
            reasons = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in self.dropped.items() if v)
            text += f", {self.dropped_total:,} dropped ({reasons})"
        if self.pending:
            text += f", {self.pending:,} pending"
        if self.handed_on:
            text += ", stream handed on to another writer"
        elif self.uploaded is not None:
            text += ", log uploaded" if self.uploaded else ", upload FAILED"
        if self.last_error:
            text += f"; last error: {self.last_error}"
        return text


class _Counters:
    """The writer's mutable counts; guarded by the writer's ``_lock``."""

    __slots__ = (
        "accepted",
        "sent",
        "retries",
        "batches",
        "bytes_sent",
        "truncated",
        "history_evicted",
        "uploaded",
        "last_error",
        "dropped",
    )

    def __init__(self) -> None:
        self.accepted = self.sent = self.retries = self.batches = 0
        self.bytes_sent = self.truncated = self.history_evicted = 0
        self.uploaded: Optional[bool] = None
        self.last_error: Optional[str] = None
        self.dropped = dict.fromkeys(DROP_REASONS, 0)

    def settled(self) -> int:
        return self.sent + sum(self.dropped.values())


class WriterState(enum.Enum):
    """Where a writer is in its life; changed only by ``StreamWriter._move``, under ``_lock``."""

    #: Built; no worker yet and nothing sent.  The first line (or ``open()``) starts it.
    IDLE = "idle"
    #: Lines are accepted; the worker opens the stream (unless skipped) and pushes batches.
    RUNNING = "running"
    #: ``close()`` was called: no more lines are accepted; the final sequence is to run.
    CLOSING = "closing"
    #: One thread (the worker, or the closer when there is no worker) runs the final push,
    #: the upload and the close, within the close deadline.
    FINISHING = "finishing"
    #: The final sequence ended: every accepted line is counted as sent or dropped.
    FINISHED = "finished"
    #: The close deadline passed with a request outstanding: what was not settled is counted
    #: as dropped, and the worker makes no further request and changes no count.
    ABANDONED = "abandoned"


_IDLE, _RUNNING = WriterState.IDLE, WriterState.RUNNING
_ENDED = (WriterState.FINISHED, WriterState.ABANDONED)


class LiveState(enum.Enum):
    """The live stream as the worker sees it (the worker's alone, no lock)."""

    #: Still to be opened by the worker.
    UNOPENED = "unopened"
    #: Open (by the worker, or by someone else: ``skip_opening_stream``, a fork's parent).
    OPEN = "open"
    #: The service answered permanently (auth, stream not found, ...): nothing more goes
    #: live; the history is still uploaded at close.
    STOPPED = "stopped"


class StreamWriter:
    """Stream lines to one log-service stream from any thread, without ever blocking on it.

    ``target`` is a ``LogConfig``, a setup request (or its ``log_config``) as a dict, a
    backend (``LogServiceClient``, ``FileStore``, or anything with the same calls), or None
    for ``LogConfig.from_env()``.  A config without ``url`` writes to the local file store.

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
        if not isinstance(key, str) or not key:
            raise ConfigError("key must be a non-empty string: the stream key, e.g. 'stage-1/step-2'")
        self.key = key
        self.options = WriterOptions.from_kwargs(options)
        # Checked before a backend (an HTTP client to close) exists: a ConfigError leaks nothing.
        spool_dir = (
            None if self.options.spool_dir is None else Spool.prepare_directory(self.options.spool_dir)
        )
        self._backend, self._owns_backend, self.config = make_backend(target)
        self._retry = retry_policy(self._backend, self.config)
        self._masker = self.config.masker() or None
        self._clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self._threaded = threaded
        self._warnings = RateLimitedWarnings()
        self._forked_child = False
        # The fork-child channel (docs/writer.md#fork-children): _home is the channel of the
        # process that owns this stream, set before that process forks; _to_parent is set in
        # a fork child, whose lines then go there instead of to a worker of its own.
        self._home: Optional[_process.Channel] = None
        self._to_parent: Union[_process.Channel, _process.Refusal, None] = None
        self._beacon: Optional[socket.socket] = None
        self._slot = _process.slot_for(self)
        self._up_seq = 0
        self._reset_state()
        # This writer is a handle on a stream: its own partial line, and whether it let go.
        self._split_lock = threading.Lock()
        self._splitter = LineSplitter(self.options.max_partial)
        self._released = False
        # Another writer took this one's stream on (set under _process's lock); what letting
        # go came to, for a second close().
        self._handed_on = False
        self._outcome: Optional[_process.Outcome] = None
        # Writers on one stream whose lifetimes overlap share one engine: the first writer's
        # buffers, worker and pos (docs/writer.md#one-stream-per-key).  _users and _handoff
        # are the engine's, guarded by _process's lock.
        self._users = 0
        self._handoff: list[StreamWriter] = []
        self._handles: weakref.WeakSet[StreamWriter] = weakref.WeakSet()
        # The engine still finishing this identity's previous stream when this one was made
        # (set by _process.share); the worker waits for it before opening.
        self._predecessor: Optional[StreamWriter] = None
        self._identity = stream_identity(self._backend, self.config, key)
        self._engine, conflicts = _process.share(self._identity, self)
        if conflicts:
            if self._owns_backend:
                self._backend.close()
            raise ConfigError(
                f"stream {key!r} is already written by another writer in this process, with "
                f"other stream-level settings: {', '.join(conflicts)}; give the same values, or "
                "use another key"
            )
        # Lines of a writer sharing another's engine are masked with its own secrets here,
        # on the caller's thread: the engine's encoder masks with the first writer's only.
        self._premask: Optional[Masker] = None
        if self._engine is not self:
            self._join(self._engine)
            return
        parent = _process.parent_holds(self._identity)
        if parent is not None:
            self._refuse(parent)
        else:
            self._beacon = _process.beacon(self._identity)
            self._spool = self._make_spool(spool_dir)  # the stream's: its engine has it
        # Registered from the start, so the fork hook re-initialises even a writer that was
        # never used, and the exit hook delivers a writer that only holds a partial line.
        _process.register(self)

    def _refuse(self, parent: int) -> None:
        """A spawn or forkserver child on a stream its parent holds: re-opening would wipe
        it, and this child has no channel to the parent, so its lines are counted as
        rejected, with one warning (docs/writer.md#spawn-children)."""
        self._forked_child = True  # never opens, uploads or closes the stream
        self._to_parent = _process.REFUSAL
        self._reset_state()
        self._warn(
            "refused",
            f"stream {self.key!r} is held by the parent process (pid {parent}); a spawn or "
            "forkserver child cannot join it and must not re-open it (that would wipe it), so "
            "lines written here are dropped and counted as rejected; give this child its own key "
            "or use the fork context",
        )

    def conflicts_with(self, engine: StreamWriter) -> list[str]:
        """This writer's stream-level settings that differ from those of ``engine``'s stream,
        each naming both values (pure: ``_process.share`` calls it under its lock)."""
        return [
            f"{name}={mine!r} (the first writer has {theirs!r})"
            for name, mine, theirs in zip(
                _STREAM_SETTINGS, self._stream_settings(), engine._stream_settings()
            )
            if mine != theirs
        ]

    def _join(self, engine: StreamWriter) -> None:
        self._premask = self._masker
        if self._owns_backend:  # the engine's backend does the talking
            self._backend.close()
        with engine._lock:
            engine._handles.add(self)

    def _stream_settings(self) -> tuple[object, ...]:
        config = self.config
        return (
            config.skip_opening_stream,
            config.skip_closing_stream,
            config.trim_new_line_suffix,
            config.indirect_upload,
            self.options.history_bytes,
        )

    def _reset_state(self) -> None:
        """Fresh locks, buffers and counters (at construction, and in a forked child)."""
        opts, config = self.options, self.config
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)  # notified as lines settle
        self._wake = threading.Event()
        self._finished = threading.Event()
        self._state = WriterState.IDLE
        self._pending = PendingLines(opts.max_pending_lines, opts.max_pending_bytes)
        self._wake_lines = opts.max_batch_lines  # a full batch pending wakes the worker
        # Lines fork children sent, kept apart so the worker merges them in by time.
        self._from_children = PendingLines(opts.max_pending_lines, opts.max_pending_bytes)
        self._counters = _Counters()
        # The worker's (see the module docstring).
        self._live = LiveQueue(opts.max_pending_lines, opts.max_pending_bytes)
        # The encoder's (the worker, or the spool's thread; see _encode_locked): _next_pos,
        # the history and the intake, under _encode_lock.
        self._encode_lock = threading.Lock()
        self._history = HistoryRing(opts.history_bytes)
        self._intake = Intake(opts.max_pending_lines, opts.max_pending_bytes)
        self._next_pos = 0
        self._live_state = (
            LiveState.OPEN if config.skip_opening_stream or self._forked_child else LiveState.UNOPENED
        )
        self._retry_at = 0.0
        self._attempts: Optional[Attempts] = None
        # What the final sequence does, fixed by the config and by being a forked child.
        self._closes = not (config.skip_closing_stream or self._forked_child)
        self._uploads = self._closes and not config.skip_opening_stream
        self._flush_upto = 0  # flush(): push without waiting for age until this many settle
        # A flush that ran out of time on a failing service (its last call failed, or none
        # succeeded during the flush), with no call succeeding since: close() spends no second
        # budget on it and ends by the flush's start + close_timeout
        # (docs/writer.md#one-deadline).  Set by flush() and cleared by a successful call;
        # _failing and _ok_calls are the worker's record of its calls.  All under _lock.
        self._spent: Optional[Deadline] = None
        self._failing = False
        self._ok_calls = 0
        self._close_deadline: Optional[Deadline] = None
        self._worker: Optional[threading.Thread] = None
        self._worker_awake = False  # the worker runs a round (not waiting for work): _accept yields to it
        self._backend_closed = False
        self._spool = None  # a forked child's lines are its parent's to spool

    def _make_spool(self, spool_dir: Optional[str]) -> Optional[Spool]:
        """The crash spool, if ``spool_dir`` is set and the writer closes the stream (with
        ``skip_closing_stream`` there is nothing for ``lelog recover`` to finish)."""
        opts = self.options
        if spool_dir is None or self.config.skip_closing_stream:
            return None
        return Spool.for_stream(
            spool_dir,
            self.key,
            self.config,
            self._backend,
            encode_pending=self._encode_pending,
            flush_interval=opts.flush_interval,
            budget=opts.history_bytes,
            max_lines=opts.max_pending_lines,
            max_bytes=opts.max_pending_bytes,
            wake_lines=opts.max_batch_lines,
            fsync_interval=opts.spool_fsync_interval,
        )

    def __repr__(self) -> str:
        return f"<StreamWriter key={self.key!r} backend={self._backend!r}>"

    # -- the state machine ------------------------------------------------------------------------

    def _move(self, to: WriterState, *, allowed: tuple[WriterState, ...]) -> bool:
        """Change state if it is one of ``allowed``; the one place the state changes.
        Call with ``_lock`` held."""
        if self._state not in allowed:
            return False
        self._state = to
        if to in _ENDED:
            self._progress.notify_all()
        return True

    def joinable(self) -> bool:
        """Whether a new writer may share this engine's stream: it is not finishing, and a
        writer still uses it, or it waits for a hand-off, or it is a fork child's parent's.
        Call under ``_process``'s lock, which guards ``_users`` and ``_handoff``."""
        state = self._state
        if state is not _RUNNING and state is not _IDLE:
            return False
        return self._users > 0 or bool(self._handoff) or self._to_parent is not None

    def _after_predecessor(self, deadline: Deadline) -> None:
        """On the worker, before opening: wait until the engine that was finishing this
        stream's identity when this one was built has finished, so its close cannot end the
        stream this one opens (docs/writer.md#one-stream-per-key); at most until
        ``deadline``.  Only this thread waits: callers never do."""
        predecessor = self._predecessor
        if predecessor is not None:
            predecessor._finished.wait(deadline.remaining())
            self._predecessor = None

    @property
    def state(self) -> WriterState:
        """Where the stream this writer feeds is in its life."""
        return self._engine._state

    # -- ingress (any thread) -----------------------------------------------------------------

    def write(self, data: Union[str, bytes]) -> int:
        """Write text or bytes, io-style: partial lines wait for their ``\\n``.  Never raises."""
        try:
            # Split and accept under one lock: a concurrent close() then sees either none
            # or all of this chunk's lines, in order.
            with self._split_lock:
                lines = self._splitter.feed(data if isinstance(data, (str, bytes)) else str(data))
                if self._released:  # after close: the partial line too is counted, not kept
                    lines.extend(filter(None, [self._splitter.finish()]))
                now = self._clock.time()
                for line in lines:
                    self._hand_over((now, "info", line, None, None))
            return len(data)
        except Exception as exc:  # the logging path never raises into the application
            self._warn("internal", f"write failed: {exc!r}")
            return 0

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
        try:
            if type(out) is not str:
                out = safe_str(out)
            if not out.endswith("\n"):
                out += "\n"
            if type(level) is not str:
                level = safe_str(level)
            if args is not None and type(args) is not dict and not isinstance(args, Mapping):
                args = {"args": safe_str(args)}
            if time is None:
                ts = self._clock.time()
            elif type(time) is float and 0.0 <= time < _MAX_EPOCH:
                ts = time  # a handler's record.created: no float() and no call (caller-cost row)
            else:
                ts = self._checked_time(time)
            if self._premask is None:
                self._engine._accept((ts, level, out, args, None), self._released)
            else:
                self._hand_over((ts, level, out, args, None))
        except Exception as exc:
            self._warn("internal", f"write_line failed: {exc!r}")

    def write_record(
        self,
        ts: float,
        levelname: str,
        message: str,
        extras: Optional[dict[str, str]],
        record: RecordLine,
    ) -> None:
        """Write one ``logging`` record as ``StreamHandler`` captured it at call time (its
        creation time, a finite epoch float; its level name; its message; its extras as
        strings, with str names, or None); the worker renders its logfmt line (``_encode``).
        The handler's fast path: no checks here, the handler made them.  Never raises."""
        try:
            if self._premask is None:
                self._engine._accept((ts, levelname, message, extras, record), self._released)
            else:
                self._hand_over((ts, levelname, message, extras, record))
        except Exception as exc:
            self._warn("internal", f"write_record failed: {exc!r}")

    def _hand_over(self, item: Item) -> None:
        """Give one line to the engine, masked with this writer's secrets if it shares one
        (rendered first: the engine's encoder masks with the first writer's secrets only)."""
        premask = self._premask
        if premask is not None:
            level, out, args = ready(item)
            out = premask.mask(out)
            if args:
                args = premask.mask_args(args)
            item = (item[0], level, out, args, None)
        self._engine._accept(item, self._released)

    def _accept(self, item: Item, released: bool = False, start: bool = True) -> None:
        """The engine takes one line from any of its writers (``released``: that writer let go)."""
        args = item[3]
        size = len(item[2]) if args is None else item_size(item[2], args)  # no call for most lines
        lock = self._lock
        lock.acquire()  # not ``with``: 0.1 us less a line on 3.11-3.13 (benchmarks/: enqueue stage)
        try:
            counters = self._counters
            counters.accepted += 1
            state = self._state
            if released or (state is not _RUNNING and state is not _IDLE):
                counters.dropped["after_close"] += 1
                return
            if self._to_parent is not None:  # a fork child: the line goes to the owner now
                self._send_up(item)
                return
            pending = self._pending
            if size > pending.max_bytes:
                counters.dropped["too_large"] += 1
                return
            dropped = pending.add(item, size)
            if dropped:
                counters.dropped["overflow"] += dropped
            waiting = len(pending.items)
            # One line in _YIELD_EVERY accepted, not a count of waiting lines: a full buffer
            # holds that count still, and would yield on every line.
            turn = not counters.accepted % _YIELD_EVERY
        finally:
            lock.release()
        if state is _IDLE and start:
            self._start_worker()
        # Wake the worker when a batch is full, and when the first line starts the age clock
        # of an empty live queue.  While lines wait there the worker wakes by itself when the
        # oldest is due and takes these along, so a tight loop wakes it once a batch instead
        # of at every drain (half the GIL hand-offs; benchmarks/: caller-cost row).  Reading
        # the worker's deque is one atomic truthiness test under the GIL.
        if waiting == self._wake_lines:
            self._wake.set()
            if self._spool is not None:  # it encodes too when the worker is in a request
                self._spool.wake()
        elif waiting == 1 and not self._live.entries:
            self._wake.set()
        if turn and waiting >= _YIELD_EVERY and self._worker_awake:
            # Lines pile up while the worker works: it may be waiting for the GIL, which a
            # caller in a tight loop lets go of only every switch interval (5 ms), and a
            # request takes the worker tens of such waits (docs/writer.md#the-gil).  A
            # sleep lets go now, long enough for the waiting worker to take it.
            time.sleep(_YIELD_SECONDS)

    def _send_up(self, item: Item) -> None:
        """In a fork child, under ``_lock``: one datagram to the owner, in sequence order
        (a captured record rendered first: the owner takes ready lines).

        The send never blocks (a full channel is a counted drop the owner marks), so holding
        this leaf lock across it cannot stall other threads for longer than a system call.
        """
        channel = self._to_parent
        assert channel is not None
        ts = item[0]
        level, out, args = ready(item)
        out, _ = truncate_out(out)
        seq, self._up_seq = self._up_seq, self._up_seq + 1
        if channel.send(self._slot, seq, ts, level, out, dict(args) if args else args):
            self._counters.sent += 1
        else:
            self._counters.dropped[channel.drop_reason] += 1
        self._progress.notify_all()

    def _from_children_lines(self, lines: list[tuple[int, float, str, str, Any]]) -> None:
        """On the channel's reader thread: lines fork children wrote, each as (gap, time,
        level, out, args), ``gap`` being the lines before it that the channel had no room
        for (counted as overflow, and marked in their place)."""
        sized = [(gap, ts, level, out, args, item_size(out, args)) for gap, ts, level, out, args in lines]
        with self._lock:
            counters = self._counters
            children = self._from_children
            state = self._state
            open_ = state is _RUNNING or state is _IDLE
            for gap, ts, level, out, args, size in sized:
                counters.accepted += gap + 1
                counters.dropped["overflow"] += gap
                children.gap += gap
                if not open_:
                    counters.dropped["after_close"] += 1
                elif size > children.max_bytes:
                    counters.dropped["too_large"] += 1
                else:
                    counters.dropped["overflow"] += children.add((ts, level, out, args, None), size)
        if state is _IDLE:
            # A parent that has not logged yet has no worker: start it, as _accept does,
            # after releasing _lock (_start_worker takes it).
            self._start_worker()
        self._wake.set()

    def _checked_time(self, value: Any) -> float:
        """A caller's timestamp as a finite epoch float; anything else means now."""
        try:
            ts = float(value)
        except (TypeError, ValueError):
            return self._clock.time()
        return ts if is_valid_epoch(ts) else self._clock.time()

    # -- the worker's life ----------------------------------------------------------------------

    def open(self) -> StreamWriter:
        """Start streaming now: the worker opens the stream (unless skipped) in the background."""
        self._engine._start_worker()
        return self

    def _start_worker(self) -> None:
        # The thread is started under _lock and published only once it runs, so close()
        # never sees a thread it cannot join.  Holding _lock here cannot deadlock: start()
        # waits only for the new thread's bootstrap, which takes no lelog lock.
        with self._lock:
            if (
                not self._move(_RUNNING, allowed=(_IDLE,))
                or not self._threaded
                or self._to_parent is not None
            ):
                return
            worker = _process.start_daemon(self._run, f"lelog-writer[{self.key}]")
            if worker is None:  # interpreter shutdown: close() drains on its own thread
                return
            self._worker = worker
            if self._spool is not None:
                self._spool.start()

    def step(self) -> Optional[float]:
        """Run one round of the worker on this thread: take pending lines, open the stream or
        push a batch when due.  Returns the seconds until a round is due again, or None once
        ``close()`` was asked.  Only for a writer built with ``threaded=False``."""
        engine = self._engine
        if engine._threaded:
            raise RuntimeError("step() drives a writer built with threaded=False; this one has a worker")
        was, _worker_state.active = _worker_state.active, True
        try:
            return engine._round()
        finally:
            _worker_state.active = was

    def _run(self) -> None:
        _worker_state.active = True
        self._worker_awake = True
        while True:
            try:
                wait = self._round()
            except BaseException as exc:  # never die silently, and never before close:
                self._warn("internal", f"the writer's worker failed: {exc!r}")
                if self._state is not _RUNNING:  # lines keep coming until then, and need a worker
                    break
                wait = 1.0  # no busy loop if the failure persists; a new line wakes it
            if wait is None:
                break
            if wait > 0:
                # Read by callers without a lock (a stale value costs one yield, or one miss).
                self._worker_awake = False
                self._wake.wait(wait)
                self._worker_awake = True
            # Cleared before the next drain: a line appended after this sets it again.
            self._wake.clear()
        self._finish_and_account()

    def _round(self) -> Optional[float]:
        if self._handoff and _process.configuration_over() and _process.expire_handoff(self._identity, self):
            # Nobody took the stream on while the configuration call ran: finish as usual.
            self._begin_close(Deadline.after(self.options.close_timeout, self._clock.monotonic))
        self._drain()
        if self._state is not _RUNNING and self._state is not _IDLE:
            return None
        now = self._clock.monotonic()
        if now >= self._retry_at - 1e-6:  # as LiveQueue.due_at: immune to float rounding
            if self._live_state is LiveState.UNOPENED:
                self._try_open()
                return 0.0
            if self._live.entries and self._live_state is LiveState.OPEN and self._due(now):
                self._try_push()
                return 0.0
        return self._sleep_time(now)

    def _due(self, now: float) -> bool:
        opts = self.options
        return self._flush_upto > self._counters.settled() or self._live.due(
            now, opts.flush_interval, opts.max_batch_lines, opts.max_batch_bytes
        )

    def _sleep_time(self, now: float) -> float:
        waits = [max(self.options.flush_interval, 1.0)]
        if self._handoff:
            waits.append(_HANDOFF_POLL)
        if self._retry_at > now:
            waits.append(self._retry_at - now)
        elif self._live.entries and self._live_state is LiveState.OPEN:
            waits.append(self._live.due_at(self.options.flush_interval) - now)
        return max(min(waits), 0.0)

    # -- the worker's work ----------------------------------------------------------------------

    def _encode_pending(self) -> None:
        """Take what callers and fork children handed over, number and encode it once, and
        publish it: to the history, to the worker's intake and to the spool.

        The worker runs this every round, and so does the spool's thread, so that a request
        to a blackholed service never stops the spool (docs/writer.md#encoding).
        """
        with self._encode_lock:
            failure = self._encode_locked()
        if failure:
            self._warn("internal", failure)

    def _encode_locked(self) -> Optional[str]:
        """``_encode_pending`` under ``_encode_lock``, which makes it one thread at a time (so
        ``pos`` order is publication order) and guards ``pos``, the history and the intake.
        ``_lock`` is taken under it only to take the pending lines and to count, never the
        other way round; nothing under it waits on I/O, so either thread holds the other up
        for one batch's encoding at most, and callers, who take only ``_lock``, never wait
        for an encoding or for the history's evictions.  Returns what failed, for a warning
        once the lock is released (a warning writes to stderr, which may block)."""
        now = self._clock.monotonic()
        failure = None
        with self._lock:
            if not self._pending.items and not self._from_children.items:
                return None
            items, gap = self._pending.take()
            from_children, child_gap = self._from_children.take()
        gap += child_gap
        if from_children:
            # In order of time with the owner's lines, as far as the processes' clocks allow;
            # each side keeps its own order (merge is stable).
            items = deque(heapq.merge(items, from_children, key=_time_of))
        first = pos = self._next_pos
        batches: list[tuple[list[bytes], int]] = []  # (encoded, count: 0 for a marker)
        if gap:
            batches.append(([self._marker(f"{gap:,} lines dropped: buffer full", pos)], 0))
            pos += 1
        unencodable = truncated = 0
        try:
            encoded, truncated = encode_batch(items, pos, self._masker, self.config.trim_new_line_suffix)
        except Exception as exc:  # a bug or MemoryError: count the batch, keep the writer
            failure = f"encoding lines for {self.key!r} failed: {exc!r}"
            encoded, unencodable = [], len(items)
        if encoded:
            batches.append((encoded, 1))
        self._next_pos = pos + len(encoded)
        evicted = 0
        for lines, count in batches:
            evicted += self._history.extend(lines)
            self._intake.put(lines, count, first, now)
            if self._spool is not None:
                self._spool.add_rows(lines)
            first += len(lines)
        with self._lock:
            if self._state is not WriterState.ABANDONED:  # no count changes once abandoned
                counters = self._counters
                counters.dropped["unencodable"] += unencodable
                counters.truncated += truncated
                counters.history_evicted += evicted
                self._progress.notify_all()
        return failure

    def _drain(self) -> None:
        """On the worker: encode what is pending, then move the intake into the live queue."""
        if self._home is not None:
            # What fork children sent before this round goes in with it, in time order; a
            # short wait, so a flood from children cannot stall the worker.
            self._home.settle(0.01)
        with self._encode_lock:
            failure = self._encode_locked()
            taken = self._intake.take() if self._intake else None
        if failure:
            self._warn("internal", failure)
        if taken is None:
            return
        batches, lost, lost_pos = taken
        overflow = rejected = 0
        stopped = self._live_state is LiveState.STOPPED
        if lost:  # the intake's bound: lines that never reached the live queue
            if stopped:
                rejected += lost
            else:  # marked where they were: after what the queue holds, before the rest
                since = batches[0][3] if batches else self._clock.monotonic()
                marker = self._live_loss_marker(lost, lost_pos)
                overflow += lost + self._live.extend([marker], 0, lost_pos, since)
        for encoded, count, first_pos, since in batches:
            if stopped:
                rejected += count * len(encoded)
            else:
                overflow += self._live.extend(encoded, count, first_pos, since)
        if overflow or rejected:
            with self._lock:
                if self._state is WriterState.ABANDONED:
                    return
                self._counters.dropped["overflow"] += overflow
                self._counters.dropped["rejected"] += rejected
                self._progress.notify_all()

    def _marker(self, text: str, pos: int) -> bytes:
        out = _MARKER_PREFIX + text + ("" if self.config.trim_new_line_suffix else "\n")
        return encode_line("warn", pos, out, format_time(self._clock.time()), None)

    def _batch(self) -> Batch:
        opts = self.options
        return self._live.batch(opts.max_batch_lines, opts.max_batch_bytes, self._live_loss_marker)

    def _live_loss_marker(self, lost: int, pos: int) -> bytes:
        where = "; they are in the uploaded log" if self._uploads else ""
        return self._marker(f"{lost:,} lines not streamed live (service too slow or down){where}", pos)

    def _try_open(self) -> None:
        self._after_predecessor(Deadline.after(self.config.open_deadline, self._clock.monotonic))
        ok, exc = self._one_attempt("open_stream", self._open_stream, self.config.open_deadline)
        if ok:
            self._live_state = LiveState.OPEN
        elif exc is not None:
            # Opening is retried for as long as the writer lives (with a fresh budget after
            # each deadline) unless the service's answer is permanent.
            if exc.retryable:
                self._retry_at = self._clock.monotonic() + self.config.max_retry_wait
            else:
                self._stop_live(exc)

    def _try_push(self) -> None:
        batch = self._batch()
        ok, exc = self._one_attempt(
            "write", lambda deadline: self._write(batch.lines, deadline), self.config.call_deadline
        )
        if ok:
            self._pushed(batch)
        elif exc is not None:
            self._not_pushed(exc, batch)

    def _pushed(self, batch: Batch) -> None:
        self._live.pop(batch, pushed=True, now=self._clock.monotonic())
        self._settle(batch.count, 1, batch.body_size)

    def _not_pushed(self, exc: LogServiceError, batch: Batch) -> None:
        self._live.pop(batch, pushed=False, now=self._clock.monotonic())
        self._settle(batch.count, 0, 0, drop="retries_exhausted" if exc.retryable else "rejected")
        if isinstance(exc, (StreamNotFound, AuthError, TLSError)):
            self._stop_live(exc)

    # -- the backend calls: ordinary method calls, one attempt each; the writer owns retries --

    def _open_stream(self, deadline: Deadline) -> None:
        self._backend.open_stream(self.key, deadline=deadline, retry=ONE_ATTEMPT)

    def _write(self, lines: list[bytes], deadline: Deadline) -> None:
        self._backend.write(self.key, lines, deadline=deadline, retry=ONE_ATTEMPT)

    def _upload(self, body: bytes, deadline: Deadline) -> None:
        self._backend.upload(self.key, body, deadline=deadline, retry=ONE_ATTEMPT)

    def _close_stream(self, deadline: Deadline) -> None:
        snapshot = self.config.skip_opening_stream
        self._backend.close_stream(self.key, snapshot=snapshot, deadline=deadline, retry=ONE_ATTEMPT)

    def _call(self, name: str, request: Callable[[Deadline], None], deadline: Deadline) -> None:
        """One attempt of a backend call; any failure comes out as a ``LogServiceError``, so
        a broken backend (a full disk under the file store, a bug in a custom one) cannot
        kill the worker: it is retried or counted like a failing service."""
        if self._state is WriterState.ABANDONED:  # close() gave up on us: no more requests
            raise Cancelled(f"{name} {self.key!r}: the close deadline has passed", call=name)
        try:
            try:
                request(deadline)
            except LogServiceError:
                raise
            except Exception as exc:
                raise LogServiceError(f"{name} {self.key!r}: {exc!r}", call=name) from exc
        except LogServiceError:
            with self._lock:
                self._failing = True
            raise
        with self._lock:  # the service answers again: a close gets its own budget
            self._failing = False
            self._ok_calls += 1
            self._spent = None

    def _one_attempt(
        self, name: str, request: Callable[[Deadline], None], budget: float
    ) -> tuple[bool, Optional[LogServiceError]]:
        """One attempt of a live call, its retry state kept across rounds so lines keep being
        accepted between attempts: (True, None) on success, (False, None) when a retry is
        scheduled, (False, error) when the call gave up."""
        if self._attempts is None:
            self._attempts = self._retry.begin(Deadline.after(budget, self._clock.monotonic))
        attempts = self._attempts
        try:
            self._call(name, request, attempts.deadline)
        except LogServiceError as exc:
            self._record_error(exc)
            wait = attempts.next_wait(exc)
            if wait is not None:
                self._retry_at = self._clock.monotonic() + wait
                self._count_retry()
                return False, None
            self._attempts = None
            return False, exc
        self._attempts = None
        return True, None

    def _retrying(
        self, name: str, request: Callable[[Deadline], None], deadline: Deadline
    ) -> Optional[LogServiceError]:
        """A call of the final sequence, retried within ``deadline``; the error it ended with.

        The same policy as the live calls; its waits are the clock's, bounded by the deadline.
        """
        if deadline.expired():
            return Cancelled(f"{name} {self.key!r}: no time left before the close deadline", call=name)
        attempts = self._retry.begin(deadline)
        while True:
            try:
                self._call(name, request, deadline)
                return None
            except LogServiceError as exc:
                wait = attempts.next_wait(exc)
                if wait is None:
                    return exc
                self._count_retry()
                self._clock.sleep(wait)

    def _count_retry(self) -> None:
        with self._lock:
            self._counters.retries += 1

    def _stop_live(self, exc: LogServiceError) -> None:
        """A permanent answer: stop the live push; the history still goes up at close."""
        self._live_state = LiveState.STOPPED
        self._settle(self._live.clear(), 0, 0, drop="rejected")
        self._warn(
            f"live:{type(exc).__name__}",
            f"stopped streaming {self.key!r} live: {exc}; lines are kept for the final upload",
        )

    def _settle(self, count: int, batches: int, size: int, *, drop: str = "") -> None:
        with self._lock:
            if self._state is WriterState.ABANDONED:
                return
            counters = self._counters
            if drop:
                counters.dropped[drop] += count
            else:
                counters.sent += count
                counters.batches += batches
                counters.bytes_sent += size
            self._progress.notify_all()

    def _record_error(self, exc: LogServiceError) -> None:
        with self._lock:
            self._counters.last_error = self.config.scrub(exc)
        self._warn(f"{exc.call}:{exc.status}:{type(exc).__name__}", str(exc))

    def _warn(self, kind: str, message: str) -> None:
        try:
            self._warnings.warn(kind, self.config.scrub(message))
        except Exception:  # a broken stderr must not break the writer
            pass

    # -- the end ------------------------------------------------------------------------------

    def _finish_and_account(self, *, claimed: bool = False) -> None:
        """The final sequence, then every line still unsettled counted as not sent, so
        accepted == sent + dropped holds even if something unexpected went wrong.

        Runs on the one thread that moved the state from CLOSING to FINISHING (``claimed``:
        the caller did); any other thread returns at once.  A worker whose close was
        abandoned only says it is done: it makes no request and changes no count."""
        with self._lock:
            mine = claimed or self._move(WriterState.FINISHING, allowed=(WriterState.CLOSING,))
            abandoned = self._state is WriterState.ABANDONED
            deadline = self._close_deadline
        if not mine:
            if abandoned:
                self._finished.set()
                _process.release_channel(self)
            return
        try:
            if deadline is not None:
                self._finish(deadline)
        except BaseException as exc:
            self._warn("internal", f"closing {self.key!r} failed: {exc!r}")
        finally:
            with self._lock:
                counters = self._counters
                left = counters.accepted - counters.settled()
                if left > 0 and self._state is not WriterState.ABANDONED:
                    counters.dropped["retries_exhausted"] += left
                self._move(WriterState.FINISHED, allowed=(WriterState.FINISHING,))
                self._progress.notify_all()
            if self._spool is not None:  # kept for lelog recover unless _finish discarded it
                remaining = deadline.remaining() if deadline is not None else 0.0
                self._spool.close(max(remaining, 0.1))
            self._finished.set()
            _process.release_channel(self)
            _process.forget(self._identity, self)  # a new writer on this key starts a new log

    def _finish(self, deadline: Deadline) -> None:
        """Final push, history upload and close, all by ``deadline``."""
        self._drain()
        # Shares of what is left: the push may not starve the upload that stores the log, and
        # open + one PUT fit in the push's share on a slow service (0.5 s a request at 2 s).
        push_by = deadline.share(0.6)
        upload_by = deadline.share(0.85)
        if self._live_state is LiveState.UNOPENED:
            self._after_predecessor(push_by)
            exc = self._retrying("open_stream", self._open_stream, push_by)
            if exc is None:
                self._live_state = LiveState.OPEN
            else:
                self._record_error(exc)
                if not exc.retryable:
                    self._stop_live(exc)
        if self._live_state is LiveState.OPEN:
            self._final_push(push_by)
        left = self._live.clear()
        if left:
            self._settle(left, 0, 0, drop="retries_exhausted")
        if not self._closes:
            return
        uploaded = True
        if self._uploads:
            body = self._upload_body()
            exc = self._retrying("upload", lambda d: self._upload(body, d), upload_by)
            if exc is not None:
                self._record_error(exc)
            with self._lock:
                self._counters.uploaded = uploaded = exc is None
        exc = self._retrying("close_stream", self._close_stream, deadline)
        if exc is not None and not isinstance(exc, StreamNotFound):
            self._record_error(exc)  # not found: already closed, the service's permanent 500
            return
        if self._spool is not None and uploaded:  # stored and closed: nothing to recover
            self._spool.discard(max(deadline.remaining(), 0.1))

    def _final_push(self, deadline: Deadline) -> None:
        while self._live.entries and self._live_state is LiveState.OPEN:
            batch = self._batch()
            exc = self._retrying("write", functools.partial(self._write, batch.lines), deadline)
            if exc is not None:
                self._record_error(exc)
                self._not_pushed(exc, batch)
                return  # what is left is counted as not sent by _finish
            self._pushed(batch)

    def _upload_body(self) -> bytes:
        """The stored log: the history, headed by a marker when its budget evicted lines.

        The marker takes the ``pos`` of the last line left out, so ``pos`` stays contiguous;
        it is not in ``history_lines``.  The file store leaves nothing out: it fills the head
        from the live lines it keeps.
        """
        with self._encode_lock:  # the final drain has run: nothing is encoded after it
            rows = self._history.rows()
            evicted = self._history.evicted
        if evicted and not keeps_every_line(self._backend):
            first_kept = self._next_pos - len(rows)
            text = f"{evicted:,} earlier lines left out of this log (history_bytes budget)"
            rows.insert(0, self._marker(text, first_kept - 1))
        return ndjson(rows)

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
        """
        if self._engine is not self:
            return self._engine.flush(timeout)
        started = self._clock.monotonic()
        timeout = self.options.close_timeout if timeout is None else timeout
        if self._home is not None:
            self._home.settle(min(_process.SETTLE_AT_FLUSH, timeout))  # children's lines too
        deadline = Deadline(started + timeout, self._clock.monotonic)
        shared_budget = Deadline(started + self.options.close_timeout, self._clock.monotonic)
        may_spend = not _process.holding_logging_lock()
        with self._lock:
            counters = self._counters
            target = counters.accepted
            dropped_before = counters.settled() - counters.sent
            ok_before = self._ok_calls
            worker = self._worker
            if worker is None or not worker.is_alive() or in_worker_thread():
                # Nothing to wait for (never started, no thread, finished, or we are the worker).
                return counters.sent == counters.accepted
            # Read by the worker's _due(): push now, whatever the lines' age.
            self._flush_upto = max(self._flush_upto, target)
        self._wake.set()
        with self._lock:
            done = self._progress.wait_for(lambda: counters.settled() >= target, deadline.remaining())
            dropped_now = counters.settled() - counters.sent
            if not done and may_spend and (self._failing or self._ok_calls == ok_before):
                # A failing service: the close that follows spends no second budget on it.
                spent = self._spent
                self._spent = shared_budget if spent is None else spent.earliest(shared_budget)
        return done and dropped_now == dropped_before

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
        """
        if not self._let_go():
            return self.stats
        engine = self._engine
        timeout = self.options.close_timeout if timeout is None else timeout
        deadline = Deadline.after(timeout, engine._clock.monotonic)
        with engine._lock:
            if engine._spent is not None:
                deadline = deadline.earliest(engine._spent)  # no second budget for a failing service
        engine._begin_close(deadline)
        if wait:
            engine._await_close()
        return self.stats

    def _let_go(self) -> bool:
        """Release this writer's hold on its stream; True when the caller is to finish it."""
        engine = self._engine
        with self._split_lock:
            if self._released:
                return self._again()
            last = self._splitter.finish()
            if last:
                self._hand_over((self._clock.time(), "info", last, None, None))
            self._released = True
        worker = engine._worker
        # A fork child's stream is its parent's: it stays there for any later writer of the
        # child to join (nothing to finish here).  Otherwise a configuration call's hand-off
        # needs the worker, which ends it once the call has returned.
        handoff = _process.holding_logging_lock() and worker is not None and worker.is_alive()
        self._outcome = outcome = _process.leave(self._identity, self, handoff=handoff)
        if outcome is _process.Outcome.HANDOFF:
            engine._wake.set()  # the worker watches for the configuration call's end
        return outcome is _process.Outcome.LAST

    def _again(self) -> bool:
        """A writer that let go closes again: True when the caller is to finish (or wait for)
        the stream: it was the last out, or it left a hand-off nobody took, which a close
        outside the configuration call ends now."""
        outcome = self._outcome
        if outcome is _process.Outcome.HANDOFF and not _process.holding_logging_lock():
            _process.expire_handoff(self._identity, self._engine)
            return not self._handed_on
        return outcome is _process.Outcome.LAST

    def _begin_close(self, deadline: Deadline) -> None:
        # Under the _split_lock of every writer on this stream (taken in one order: any two
        # closers take them alike, and a writer holds only its own), so a concurrent write()
        # lands wholly before the close or is wholly counted after it; lock order: a
        # _split_lock, then the engine's _lock.  Their partial lines go in first.
        if self._home is not None:
            self._home.settle(deadline.remaining() / 5)  # children's lines sent before the close
        with self._lock:
            handles = sorted({self, *self._handles}, key=id)
        with contextlib.ExitStack() as stack:
            for handle in handles:
                stack.enter_context(handle._split_lock)
            for handle in handles:
                last = handle._splitter.finish()
                if last:
                    out = handle._premask.mask(last) if handle._premask is not None else last
                    self._accept((self._clock.time(), "info", out, None, None), start=False)
            with self._lock:
                if not self._move(WriterState.CLOSING, allowed=(_IDLE, _RUNNING)):
                    return
                self._close_deadline = deadline
        self._wake.set()

    def _await_close(self) -> None:
        worker = self._worker
        if worker is threading.current_thread():
            return  # closed from the worker itself (a handler closed in a callback): it ends by itself
        # The grace for a worker to notice the deadline is part of the same deadline, so N
        # writers finishing together wait 0.1 s past it in all, not 0.1 s each.
        end = self._close_deadline or Deadline(0.0, self._clock.monotonic)
        grace = Deadline(end.end + 0.1, end.now)
        if worker is not None:
            worker.join(grace.remaining())
            if worker.is_alive():
                self._abandon()
        else:
            with self._lock:  # exactly one closer runs the final sequence; the others wait for it
                # Decided and claimed in one step under _lock: a second closer sees FINISHING.
                mine = self._move(WriterState.FINISHING, allowed=(WriterState.CLOSING,))
            if mine:
                self._finish_inline()
            else:
                self._finished.wait(grace.remaining())
        with self._lock:
            close_backend = self._owns_backend and self._finished.is_set() and not self._backend_closed
            self._backend_closed = self._backend_closed or close_backend
        if close_backend:
            try:
                self._backend.close()
            except Exception:
                pass
        _process.unregister(self)
        _process.forget(self._identity, self)

    def _finish_inline(self) -> None:
        """No worker (interpreter shutdown, ``threaded=False``, or nothing but a partial line
        was written): run the final sequence on this thread, marked as lelog's own I/O.
        The caller has moved the state to FINISHING: this thread alone runs it."""
        with self._lock:
            unused = self._counters.accepted == 0  # nothing to send, no request at all
            if unused:
                self._move(WriterState.FINISHED, allowed=(WriterState.FINISHING,))
                self._finished.set()
        if unused:
            _process.release_channel(self)
            return
        was, _worker_state.active = in_worker_thread(), True
        try:
            self._finish_and_account(claimed=True)
        finally:
            _worker_state.active = was

    def _abandon(self) -> None:
        """The deadline passed with the worker stuck in a request (a service that never
        answers): count what it still holds as not sent, and make it stop without another
        request or count.  It is a daemon and its request is bounded by the client's
        timeouts, so it ends soon after."""
        with self._lock:
            if not self._move(WriterState.ABANDONED, allowed=(WriterState.CLOSING, WriterState.FINISHING)):
                return
            counters = self._counters
            counters.dropped["retries_exhausted"] += counters.accepted - counters.settled()
            counters.last_error = (
                counters.last_error or "the service did not answer before the close deadline"
            )
        if self._spool is not None:  # the worker is stuck: get the spool's queue on disk
            self._spool.close()
        self._warn(
            "abandoned",
            f"closing {self.key!r}: the service did not answer in time; "
            "lines not yet sent are counted as dropped",
        )

    def __enter__(self) -> StreamWriter:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (lines written now are counted, not sent)."""
        state = self._engine._state
        return self._released or (state is not _RUNNING and state is not _IDLE)

    @property
    def pending(self) -> int:
        """Lines accepted but not yet sent or dropped; cheap enough to poll for backpressure."""
        engine = self._engine
        with engine._lock:
            return engine._counters.accepted - engine._counters.settled()

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters: the stream's, shared by every writer on it.  A writer
        that let go of a stream others still use reports ``handed_on`` and no upload."""
        if self._handed_on:
            return attrs.evolve(self._engine._stream_stats(), uploaded=None, handed_on=True)
        return self._engine._stream_stats()

    def _stream_stats(self) -> Stats:
        with self._lock:
            c = self._counters
            pending = c.accepted - c.settled()
            return Stats(
                accepted=c.accepted,
                sent=c.sent,
                pending=pending,
                dropped=dict(c.dropped),
                retries=c.retries,
                batches=c.batches,
                bytes_sent=c.bytes_sent,
                truncated=c.truncated,
                history_lines=len(self._history),  # the encoder's; one atomic len
                history_evicted=c.history_evicted,
                uploaded=c.uploaded,
                closed=self._state in _ENDED,
                last_error=c.last_error,
            )

    @property
    def spool_stats(self) -> Optional[SpoolStats]:
        """What the crash spool did: lines written, lines it could not keep (a full disk);
        None without ``spool_dir``."""
        spool = self._engine._spool
        return None if spool is None else spool.stats

    # -- fork -----------------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """The child starts clean: its own locks and buffers, a lazily started worker.

        The parent's pending lines stay the parent's (never sent twice); the child only
        streams its own lines live and leaves opening, uploading and closing to the parent.
        """
        self._forked_child = True
        # The channel of the process that owns the stream: the parent's, or, in a grandchild
        # (a fork inside a fork child, whose _home is None), the one its parent sent to.
        self._to_parent = self._home if self._home is not None else self._to_parent
        self._home = None
        self._predecessor = None  # the parent's to wait for: this process opens nothing
        if self._beacon is not None:
            # The child's copy of the parent's claim: kept open, a long-lived child (a pool
            # worker) would say the parent holds the stream after the parent finished it.
            self._beacon.close()
            self._beacon = None
        self._up_seq = 0
        self._reset_state()
        for handle in (self, *self._handles):
            handle._split_lock = threading.Lock()  # a parent thread may have held it


def _time_of(item: Item) -> float:
    return item[0]
