"""``StreamWriter``: the thread-backed batching writer.

Data path (docs/architecture.md)::

    caller threads                        the worker thread (one per writer, daemon, lazy)
    write()/write_line(): append a        drain ingress: mask, trim, truncate, give each line
    pending tuple to the bounded     ──►  its pos and encode it once; the bytes go to
    ingress deque; never blocks on        ├─ history: a ring with a byte budget, the final upload
    I/O, never raises; overflow drops     └─ unsent: the live queue (bounded); one PUT in flight,
    the oldest, counted and marked           batched by count, bytes and age; a failed PUT is
                                             retried from the worker loop, not a sleeping loop,
                                             so lines keep being accepted meanwhile

Locks.  ``_lock`` guards the ingress deque, its byte count and the counters.  It is held
only for a few list operations, never across I/O, and nothing is called while holding it, so
a caller can wait on it for microseconds at most and it cannot take part in a deadlock.
``_split_lock`` serialises ``write()`` callers over the partial-line buffer; it is taken
before ``_lock`` and never the other way round.  The worker owns the unsent queue, the
history ring and ``pos`` outright: no other thread touches them while it runs.
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import threading
import time
import weakref
from collections import deque
from itertools import repeat
from typing import Any, Callable, Iterable, Mapping, Optional, Tuple, Union

import attrs

from ._backend import Backend, make_backend
from ._config import LogConfig
from ._diagnostics import RateLimitedWarnings
from ._exceptions import AuthError, Cancelled, ConfigError, LogServiceError, StreamNotFound
from ._line import (
    _MAX_EPOCH,
    MAX_LINE_BYTES,
    _encode_args,
    _quote,
    encode_line,
    format_time,
    is_valid_epoch,
    ndjson,
    truncate_out,
)
from ._logfmt import safe_str
from ._masking import Masker
from ._retry import Attempts, RetryPolicy
from ._splitter import LineSplitter

__all__ = ["DROP_REASONS", "Stats", "StreamWriter", "WriterOptions", "in_worker_thread"]

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

_ONE_ATTEMPT = RetryPolicy(max_attempts=1)
_MARKER_PREFIX = "[lelog] "


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
        ok = isinstance(value, (int, float) if kind is float else int)
        if isinstance(value, bool) or not ok or not 0 < value < math.inf:
            what = "a positive number of seconds" if kind is float else "a whole number > 0"
            raise ConfigError(f"{attribute.name} must be {what}, got {value!r}")

    return check


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

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> WriterOptions:
        """Build from keyword arguments, naming any unknown one."""
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"unknown writer option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
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
        if self.uploaded is not None:
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


# Writers that may still hold lines: drained at exit, re-initialised in a forked child.
_open_writers: weakref.WeakSet[StreamWriter] = weakref.WeakSet()
_registry_lock = threading.Lock()


class StreamWriter:
    """Stream lines to one log-service stream from any thread, without ever blocking on it.

    ``target`` is a ``LogConfig``, a setup request (or its ``log_config``) as a dict, a
    backend (``LogServiceClient``, ``FileStore``, or anything with the same calls), or None
    for ``LogConfig.from_env()``.  A config without ``url`` writes to the local file store.
    """

    def __init__(
        self,
        key: str,
        target: Union[LogConfig, Mapping[str, Any], Backend, None] = None,
        **options: Any,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise ConfigError("key must be a non-empty string: the stream key, e.g. 'stage-1/step-2'")
        self.key = key
        self.options = WriterOptions.from_kwargs(options)
        self._backend, self._owns_backend, self.config = make_backend(target)
        self._masker = self.config.masker() or None
        self._warnings = RateLimitedWarnings()
        self._forked_child = False
        self._next_pos = 0
        self._reset_state()
        # Registered from the start, so the fork hook re-initialises even a writer that was
        # never used, and the exit hook delivers a writer that only holds a partial line.
        _register(self)

    def _reset_state(self) -> None:
        """Fresh locks, buffers and counters (at construction, and in a forked child)."""
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)  # the worker notifies as lines settle
        self._split_lock = threading.Lock()
        self._wake = threading.Event()
        self._finished = threading.Event()
        self._splitter = LineSplitter(self.options.max_partial)
        self._ingress: deque[tuple[float, str, str, Optional[Mapping[str, Any]]]] = deque()
        self._ingress_bytes = 0
        self._gap = 0  # lines lost from ingress since the last marker
        self._counters = _Counters()
        # Worker-owned state (see the module docstring).
        # (encoded line, 1 or 0 for a marker, pos); lines in it are also in the history.
        self._unsent: deque[tuple[bytes, int, int]] = deque()
        self._unsent_bytes = 0
        self._live_lost = 0  # lines lost from the live queue since the last pushed marker
        self._live_gap_pos = 0  # the pos of the first of them: the marker takes it
        self._unsent_since = 0.0
        self._history: deque[bytes] = deque()
        self._history_bytes = 0
        self._retry_at = 0.0
        self._attempts: Optional[Attempts] = None
        self._opened = self.config.skip_opening_stream or self._forked_child
        # Whether close() uploads the history (so lines missing live are not lost).
        self._uploads = not (
            self.config.skip_opening_stream or self.config.skip_closing_stream or self._forked_child
        )
        self._live = True
        self._flush_upto = 0  # flush(): push without waiting for age until this many settle
        self._closing = False
        self._abandoned = False  # close() gave up waiting: the worker must not count any more
        self._close_end = 0.0
        self._worker: Optional[threading.Thread] = None
        self._no_thread = False  # starting the worker failed: close() drains inline
        self._inline_claimed = False  # one closer drains inline when there is no worker
        self._backend_closed = False
        self._used = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<StreamWriter key={self.key!r} backend={self._backend!r}>"

    # -- ingress (any thread) -----------------------------------------------------------------

    def write(self, data: Union[str, bytes]) -> int:
        """Write text or bytes, io-style: partial lines wait for their ``\\n``.  Never raises."""
        try:
            # Split and accept under one lock: a concurrent close() then sees either none
            # or all of this chunk's lines, in order.
            with self._split_lock:
                lines = self._splitter.feed(data if isinstance(data, (str, bytes)) else str(data))
                now = time.time()
                for line in lines:
                    self._accept(now, "info", line, None)
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
                ts = _now()
            elif type(time) is float and 0.0 <= time < _MAX_EPOCH:
                ts = time  # a handler's record.created: no float() and no call (caller-cost row)
            else:
                ts = _checked_time(time)
            self._accept(ts, level, out, args)
        except Exception as exc:
            self._warn("internal", f"write_line failed: {exc!r}")

    def _accept(
        self,
        ts: float,
        level: str,
        out: str,
        args: Optional[Mapping[str, Any]],
        start: bool = True,
    ) -> None:
        size = len(out) if args is None else _size(out, args)  # no call for most lines
        opts = self.options
        with self._lock:
            counters = self._counters
            counters.accepted += 1
            if self._closed:
                counters.dropped["after_close"] += 1
                return
            if size > opts.max_pending_bytes:
                counters.dropped["too_large"] += 1
                return
            ingress = self._ingress
            ingress.append((ts, level, out, args))
            self._ingress_bytes += size
            pending = len(ingress)
            if pending > opts.max_pending_lines or self._ingress_bytes > opts.max_pending_bytes:
                self._drop_oldest_locked()
                pending = len(ingress)
        if self._worker is None and start:
            self._start_worker()
        # Wake the worker when a batch is full, and when the first line starts the age clock
        # of an empty live queue.  While lines wait there the worker wakes by itself when the
        # oldest is due and takes these along, so a tight loop wakes it once a batch instead
        # of at every drain (half the GIL hand-offs; benchmarks/: caller-cost row).  Reading
        # the worker's deque is one atomic truthiness test under the GIL.
        if pending == opts.max_batch_lines or (pending == 1 and not self._unsent):
            self._wake.set()

    def _drop_oldest_locked(self) -> None:
        opts, ingress = self.options, self._ingress
        while len(ingress) > opts.max_pending_lines or self._ingress_bytes > opts.max_pending_bytes:
            _ts, _level, out, args = ingress.popleft()
            self._ingress_bytes -= _size(out, args)
            self._counters.dropped["overflow"] += 1
            self._gap += 1

    # -- the worker's life ----------------------------------------------------------------------

    def open(self) -> StreamWriter:
        """Start streaming now: the worker opens the stream (unless skipped) in the background."""
        self._start_worker()
        return self

    def _start_worker(self) -> None:
        # The thread is started under _lock and published only once it runs, so close()
        # never sees a thread it cannot join.  Holding _lock here cannot deadlock: start()
        # waits only for the new thread's bootstrap, which takes no lelog lock.
        with self._lock:
            if self._worker is not None or self._closed or self._no_thread:
                return
            self._used = True
            worker = threading.Thread(target=self._run, name=f"lelog-writer[{self.key}]", daemon=True)
            try:
                if sys.is_finalizing():
                    raise RuntimeError("interpreter shutdown")
                worker.start()
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                # docs/hazards.md#no-thread-at-shutdown: close() drains on its own thread
                self._no_thread = True
                return
            self._worker = worker

    def _run(self) -> None:
        _worker_state.active = True
        while True:
            try:
                self._loop()
                break
            except BaseException as exc:  # never die silently, and never before close:
                self._warn("internal", f"the writer's worker failed: {exc!r}")
                if self._closing:  # lines keep coming until then, and need a worker
                    break
                self._wake.wait(1.0)  # no busy loop if the failure persists
        self._finish_and_account()

    def _finish_and_account(self) -> None:
        """The final sequence, then every line still unsettled counted as not sent, so
        accepted == sent + dropped holds even if something unexpected went wrong."""
        try:
            self._finish()
        except BaseException as exc:
            self._warn("internal", f"closing {self.key!r} failed: {exc!r}")
        finally:
            self._drop_unsettled("retries_exhausted")
            self._finished.set()

    def _drop_unsettled(self, reason: str) -> int:
        with self._lock:
            counters = self._counters
            left = counters.accepted - counters.settled()
            if left > 0 and not self._abandoned:
                counters.dropped[reason] += left
            self._progress.notify_all()
            return left

    def _loop(self) -> None:
        while True:
            self._drain_ingress()
            if self._closing:
                return
            now = time.monotonic()
            if now >= self._retry_at:
                if not self._opened and self._live:
                    self._try_open()
                    continue
                if self._unsent and self._live and self._due(now):
                    self._try_push()
                    continue
            self._wake.wait(self._sleep_time(now))
            # Cleared before the next drain: a line appended after this sets it again.
            self._wake.clear()

    def _due(self, now: float) -> bool:
        opts = self.options
        return (
            self._flush_upto > self._counters.settled()
            or len(self._unsent) >= opts.max_batch_lines
            or self._unsent_bytes >= opts.max_batch_bytes
            or now - self._unsent_since >= opts.flush_interval
        )

    def _sleep_time(self, now: float) -> float:
        waits = [max(self.options.flush_interval, 1.0)]
        if self._retry_at > now:
            waits.append(self._retry_at - now)
        elif self._unsent and self._live:
            waits.append(self._unsent_since + self.options.flush_interval - now)
        return max(min(waits), 0.0)

    # -- the worker's work ----------------------------------------------------------------------

    def _drain_ingress(self) -> None:
        with self._lock:
            if not self._ingress:
                return
            items, self._ingress = self._ingress, deque()
            self._ingress_bytes = 0
            gap, self._gap = self._gap, 0
        lost = [0, 0, 0]  # overflow, rejected, evicted
        if gap:
            marker = self._encode_marker(f"{gap:,} lines dropped: buffer full", self._next_pos)
            self._keep([marker], self._next_pos, 0, lost)
            self._next_pos += 1
        unencodable = 0
        try:
            encoded, truncated = _encode_items(
                items, self._next_pos, self._masker, self.config.trim_new_line_suffix
            )
        except Exception as exc:  # a bug or MemoryError: count the batch, keep the worker
            self._warn("internal", f"encoding lines for {self.key!r} failed: {exc!r}")
            encoded, truncated, unencodable = [], 0, len(items)
        self._keep(encoded, self._next_pos, 1, lost)
        self._next_pos += len(encoded)
        overflow, rejected, evicted = lost
        with self._lock:
            if self._abandoned:
                return
            counters = self._counters
            counters.dropped["unencodable"] += unencodable
            counters.truncated += truncated
            counters.dropped["overflow"] += overflow
            counters.dropped["rejected"] += rejected
            counters.history_evicted += evicted
            self._progress.notify_all()

    def _encode_marker(self, text: str, pos: int) -> bytes:
        out = _MARKER_PREFIX + text + ("" if self.config.trim_new_line_suffix else "\n")
        return encode_line("warn", pos, out, format_time(_now()), None)

    def _keep(self, encoded: list[bytes], first_pos: int, count: int, lost: list[int]) -> None:
        """Keep encoded lines in the history ring, and in the live queue while live.

        ``count`` is 1 for accepted lines and 0 for markers; ``lost`` accumulates the lines
        that overflowed the live queue, were refused because the live push stopped, and
        were evicted from the history.
        """
        size = sum(map(len, encoded))
        history = self._history
        history.extend(encoded)
        self._history_bytes += size + len(encoded)
        budget = self.options.history_bytes
        while self._history_bytes > budget and len(history) > 1:
            self._history_bytes -= len(history.popleft()) + 1
            lost[2] += 1
        if not self._live:
            lost[1] += count * len(encoded)
            return
        unsent = self._unsent
        if not unsent:
            self._unsent_since = time.monotonic()
        unsent.extend(zip(encoded, repeat(count), range(first_pos, first_pos + len(encoded))))
        self._unsent_bytes += size
        opts = self.options
        while len(unsent) > opts.max_pending_lines or self._unsent_bytes > opts.max_pending_bytes:
            # Still in the history: the upload has these lines; the live view gets a marker.
            old, old_count, old_pos = unsent.popleft()
            self._unsent_bytes -= len(old)
            if not self._live_lost:
                self._live_gap_pos = old_pos
            self._live_lost += old_count
            lost[0] += old_count

    def _batch(self) -> tuple[list[bytes], int, int]:
        """The head of the live queue, up to one PUT's lines and bytes (at least one line).

        Returns the encoded lines (a gap marker first, if lines were lost from the live
        queue), how many accepted lines they carry, and how many queue entries they take.
        """
        opts = self.options
        lines: list[bytes] = []
        if self._live_lost:
            where = "; they are in the uploaded log" if self._uploads else ""
            lines.append(
                self._encode_marker(
                    f"{self._live_lost:,} lines not streamed live (service too slow or down){where}",
                    self._live_gap_pos,
                )
            )
        count = taken = 0
        size = 1 + sum(len(line) + 1 for line in lines)  # the body: "[" line "," line ... "]"
        for data, n, _pos in self._unsent:
            if taken and (len(lines) >= opts.max_batch_lines or size + len(data) + 1 > opts.max_batch_bytes):
                break
            lines.append(data)
            count += n
            taken += 1
            size += len(data) + 1
        return lines, count, taken

    def _pop_batch(self, taken: int, *, pushed: bool) -> None:
        """Remove a batch from the live queue; one that was not pushed widens the live gap."""
        if pushed:
            self._live_lost = 0
        for _ in range(taken):
            data, count, pos = self._unsent.popleft()
            self._unsent_bytes -= len(data)
            if not pushed:
                if not self._live_lost:
                    self._live_gap_pos = pos
                self._live_lost += count
        if self._unsent:
            self._unsent_since = time.monotonic()

    def _try_open(self) -> None:
        ok, exc = self._one_attempt("open_stream", self.config.open_deadline)
        if ok:
            self._opened = True
        elif exc is not None:
            # Opening is retried for as long as the writer lives (with a fresh budget after
            # each deadline) unless the service's answer is permanent.
            if exc.retryable:
                self._retry_at = time.monotonic() + self.config.max_retry_wait
            else:
                self._stop_live(exc)

    def _try_push(self) -> None:
        lines, count, taken = self._batch()
        ok, exc = self._one_attempt("write", self.config.call_deadline, lines)
        if ok:
            self._pushed(lines, count, taken)
        elif exc is not None:
            self._not_pushed(exc, count, taken)

    def _pushed(self, lines: list[bytes], count: int, taken: int) -> None:
        self._pop_batch(taken, pushed=True)
        self._settle(count, 1, sum(map(len, lines)) + len(lines) + 1)

    def _not_pushed(self, exc: LogServiceError, count: int, taken: int) -> None:
        self._pop_batch(taken, pushed=False)
        self._settle(count, 0, 0, drop="retries_exhausted" if exc.retryable else "rejected")
        if isinstance(exc, (StreamNotFound, AuthError)):
            self._stop_live(exc)

    def _call(self, name: str, *args: Any, **opts: Any) -> None:
        """Call the backend; any failure comes out as a ``LogServiceError``, so a broken
        backend (a full disk under the file store, a bug in a custom one) cannot kill the
        worker: it is retried or counted like a failing service."""
        if self._abandoned:  # close() gave up on us: no request after its deadline
            raise Cancelled(f"{name} {self.key!r}: the close deadline has passed", call=name)
        try:
            getattr(self._backend, name)(self.key, *args, **opts)
        except LogServiceError:
            raise
        except Exception as exc:
            raise LogServiceError(f"{name} {self.key!r}: {exc!r}", call=name) from exc

    def _one_attempt(self, name: str, deadline: float, *args: Any) -> tuple[bool, Optional[LogServiceError]]:
        """One attempt of a retried call; (True, None) on success, (False, None) when a retry
        is scheduled, (False, error) when the call gave up."""
        if self._attempts is None:
            self._attempts = self._backend_retry().begin(deadline)
        attempts = self._attempts
        try:
            self._call(name, *args, deadline=attempts.remaining(), retry=_ONE_ATTEMPT)
        except LogServiceError as exc:
            self._record_error(exc)
            wait = attempts.next_wait(exc)
            if wait is not None:
                self._retry_at = time.monotonic() + wait
                self._count_retry(exc, wait)
                return False, None
            self._attempts = None
            return False, exc
        self._attempts = None
        return True, None

    def _count_retry(self, _exc: LogServiceError, _wait: float) -> None:
        with self._lock:
            self._counters.retries += 1

    def _backend_retry(self) -> RetryPolicy:
        return getattr(self._backend, "retry", None) or RetryPolicy(
            max_attempts=self.config.max_attempts, max_wait=self.config.max_retry_wait
        )

    def _stop_live(self, exc: LogServiceError) -> None:
        """A permanent answer: stop the live push; the history still goes up at close."""
        self._live = False
        dropped = sum(n for _, n, _ in self._unsent)
        self._unsent.clear()
        self._unsent_bytes = 0
        self._settle(dropped, 0, 0, drop="rejected")
        self._warn(
            f"live:{type(exc).__name__}",
            f"stopped streaming {self.key!r} live: {exc}; lines are kept for the final upload",
        )

    def _settle(self, count: int, batches: int, size: int, *, drop: str = "") -> None:
        with self._lock:
            if self._abandoned:
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
            self._counters.last_error = str(exc)
        self._warn(f"{exc.call}:{exc.status}:{type(exc).__name__}", str(exc))

    def _warn(self, kind: str, message: str) -> None:
        try:
            self._warnings.warn(kind, message)
        except Exception:  # a broken stderr must not break the writer
            pass

    # -- the end ------------------------------------------------------------------------------

    def _finish(self) -> None:
        """Final push, history upload and close, all before ``_close_end``."""
        self._drain_ingress()
        end = self._close_end
        start = time.monotonic()
        push_end = start + (end - start) * 0.5
        upload_end = start + (end - start) * 0.8

        def left(until: float) -> float:
            return max(until - time.monotonic(), 0.001)

        if not self._opened and self._live:
            try:
                self._call("open_stream", deadline=left(push_end), on_retry=self._count_retry)
                self._opened = True
            except LogServiceError as exc:
                self._record_error(exc)
                if not exc.retryable:
                    self._stop_live(exc)
        if self._opened:
            self._final_push(lambda: left(push_end))
        dropped = sum(n for _, n, _ in self._unsent)
        if dropped:
            self._unsent.clear()
            self._settle(dropped, 0, 0, drop="retries_exhausted")
        if self.config.skip_closing_stream or self._forked_child:
            return
        if self._uploads:
            body = ndjson(list(self._history))
            try:
                self._call("upload", body, deadline=left(upload_end), on_retry=self._count_retry)
                uploaded = True
            except LogServiceError as exc:
                self._record_error(exc)
                uploaded = False
            with self._lock:
                self._counters.uploaded = uploaded
        try:
            self._call(
                "close_stream",
                snapshot=self.config.skip_opening_stream,
                deadline=left(end),
                on_retry=self._count_retry,
            )
        except StreamNotFound:
            pass  # already closed: the service's permanent "500 stream: not found"
        except LogServiceError as exc:
            self._record_error(exc)

    def _final_push(self, left: Callable[[], float]) -> None:
        while (self._unsent or self._live_lost) and self._live:
            lines, count, taken = self._batch()
            try:
                self._call("write", lines, deadline=left(), on_retry=self._count_retry)
            except LogServiceError as exc:
                self._record_error(exc)
                self._not_pushed(exc, count, taken)
                return  # what is left is counted as not sent by _finish
            self._pushed(lines, count, taken)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Push everything accepted so far; True when all of it was sent within ``timeout``.

        Waits on the worker without holding any lock the worker needs, so it is safe under
        ``logging``'s locks.  ``timeout`` defaults to ``close_timeout``.
        """
        timeout = self.options.close_timeout if timeout is None else timeout
        with self._lock:
            counters = self._counters
            target = counters.accepted
            dropped_before = counters.settled() - counters.sent
            worker = self._worker
            if worker is None or not worker.is_alive() or in_worker_thread():
                # Nothing to wait for (never started, finished, or we are the worker).
                return counters.sent == counters.accepted
            # Read by the worker's _due(): push now, whatever the lines' age.
            self._flush_upto = max(self._flush_upto, target)
        self._wake.set()
        with self._lock:
            done = self._progress.wait_for(lambda: counters.settled() >= target, timeout)
            dropped_now = counters.settled() - counters.sent
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
        """
        timeout = self.options.close_timeout if timeout is None else timeout
        self._begin_close(time.monotonic() + timeout)
        if wait:
            self._await_close()
        return self.stats

    def _begin_close(self, end: float) -> None:
        # Under _split_lock, so a concurrent write() lands wholly before the close or is
        # wholly counted after it (lock order: _split_lock, then _lock).
        with self._split_lock:
            last = self._splitter.finish()
            if last:
                self._accept(time.time(), "info", last, None, start=False)
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                self._close_end = end
                self._closing = True
        self._wake.set()

    def _await_close(self) -> None:
        worker = self._worker
        if worker is threading.current_thread():
            return  # closed from the worker itself (a handler closed in a callback): it ends by itself
        if worker is not None:
            worker.join(max(self._close_end - time.monotonic(), 0.0) + 0.1)
            if worker.is_alive():
                self._abandon()
        else:
            with self._lock:  # exactly one closer drains inline; the others wait for it
                mine, self._inline_claimed = not self._inline_claimed, True
            if mine:
                self._finish_inline()
            else:
                self._finished.wait(max(self._close_end - time.monotonic(), 0.0) + 0.1)
        with self._lock:
            close_backend = self._owns_backend and self._finished.is_set() and not self._backend_closed
            self._backend_closed = self._backend_closed or close_backend
        if close_backend:
            try:
                self._backend.close()
            except Exception:
                pass
        _unregister(self)

    def _finish_inline(self) -> None:
        """The worker never ran (interpreter shutdown, or nothing but a partial line was
        written): run the final sequence on this thread, marked as lelog's own I/O."""
        if not (self._used or self._ingress):
            self._finished.set()  # never used: nothing to send, no request at all
            return
        was, _worker_state.active = in_worker_thread(), True
        try:
            self._finish_and_account()
        finally:
            _worker_state.active = was

    def _abandon(self) -> None:
        """The deadline passed with the worker stuck in a request (a service that never
        answers): count what it still holds as not sent, and make it stop without another
        request or count.  It is a daemon and its request is bounded by the client's
        timeouts, so it ends soon after."""
        with self._lock:
            counters = self._counters
            counters.dropped["retries_exhausted"] += counters.accepted - counters.settled()
            counters.last_error = (
                counters.last_error or "the service did not answer before the close deadline"
            )
            self._abandoned = True
            self._progress.notify_all()
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
        return self._closed

    @property
    def pending(self) -> int:
        """Lines accepted but not yet sent or dropped; cheap enough to poll for backpressure."""
        with self._lock:
            return self._counters.accepted - self._counters.settled()

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters."""
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
                history_lines=len(self._history),
                history_evicted=c.history_evicted,
                uploaded=c.uploaded,
                closed=self._closed and (self._finished.is_set() or self._abandoned),
                last_error=c.last_error,
            )

    # -- fork -----------------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """The child starts clean: its own locks and buffers, a lazily started worker.

        The parent's pending lines stay the parent's (never sent twice); the child only
        streams its own lines live and leaves opening, uploading and closing to the parent.
        """
        self._forked_child = True
        self._reset_state()


def _now() -> float:
    return time.time()


def _size(out: str, args: Optional[Mapping[str, Any]]) -> int:
    """A pending line's weight in the byte budget: its text and its args (docs/hazards.md#unbounded-memory)."""
    size = len(out)
    if args:
        for k, v in args.items():
            size += len(k) + (len(v) if type(v) is str else 16)
    return size


def _checked_time(value: Any) -> float:
    """A caller's timestamp as a finite epoch float; anything else means now."""
    try:
        ts = float(value)
    except (TypeError, ValueError):
        return time.time()
    return ts if is_valid_epoch(ts) else time.time()


_Item = Tuple[float, str, str, Optional[Mapping[str, Any]]]
_SHORT = MAX_LINE_BYTES // 4  # a string this short cannot exceed the byte limit


def _encode_items(
    items: Iterable[_Item], first_pos: int, masker: Optional[Masker], trim: bool
) -> tuple[list[bytes], int]:
    """Mask, trim, truncate and encode pending lines, numbering them from ``first_pos``.

    The worker's hot loop (benchmarks/: the caller-cost and throughput rows; about 15 % less
    CPU than calling ``encode_line``).  The bytes are ``encode_line``'s, made by one f-string
    per line: the ``{"level":...,"pos":`` head is quoted once per level, the time needs no
    escaping (digits and ``-T:.Z``), and its date part is formatted once per second.
    """
    encoded: list[bytes] = []
    append = encoded.append
    heads: dict[str, str] = {}
    truncated = 0
    pos = first_pos
    last_sec, date = -1, ""
    for ts, level, out, args in items:
        if masker is not None:
            out = masker.mask(out)
            if args:
                args = {k: masker.mask(v if isinstance(v, str) else str(v)) for k, v in args.items()}
        if trim and out[-1:] == "\n":
            out = out[:-1]
        if len(out) > _SHORT:
            out, cut = truncate_out(out)
            truncated += cut
        sec = int(ts // 1)
        if sec != last_sec:
            last_sec, date = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        micros = 1_000_000 + int((ts - sec) * 1_000_000)  # [1:] pads it, as format_time does
        head = heads.get(level)
        if head is None:
            head = heads[level] = f'{{"level":{_quote(level)},"pos":'
        text = (
            f'{head}{pos},"out":{_quote(out)},"time":"{date}.{str(micros)[1:]}Z",'
            f'"args":{"null" if args is None else _encode_args(args)}}}'
        )
        try:
            append(text.encode())
        except UnicodeEncodeError:  # a lone surrogate, as encode_line handles it
            append(text.encode("utf-8", "replace"))
        pos += 1
    return encoded, truncated


def _register(writer: StreamWriter) -> None:
    with _registry_lock:
        _open_writers.add(writer)


def _unregister(writer: StreamWriter) -> None:
    with _registry_lock:
        _open_writers.discard(writer)


def close_all(timeout: Optional[float] = None) -> None:
    """Close every open writer within one shared deadline (the exit hook)."""
    with _registry_lock:
        writers = list(_open_writers)
    if not writers:
        return
    budget = timeout if timeout is not None else max(w.options.close_timeout for w in writers)
    end = time.monotonic() + budget
    for writer in writers:  # signal all first, so they finish in parallel
        writer._begin_close(end)
    for writer in writers:
        writer._await_close()


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for writer in list(_open_writers):
        writer._after_fork_in_child()


atexit.register(close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
