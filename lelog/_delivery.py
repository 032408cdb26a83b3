"""``Delivery``: the live queue and every backend call, with their retries.

Driven by one thread at a time, the worker (``step``) or, at the end, the thread that runs
the final sequence (``finish``), which is the worker or the closer when there is none: so the
live queue, the live state and the retry state need no lock of their own.  Counts go to the
``Ledger``; encoded lines come from the ``Pipeline``.

The backend is called with ordinary method calls, one attempt each (``retry=ONE_ATTEMPT``):
the delivery owns every retry, the live pushes (one attempt per round, so lines keep being
accepted between attempts) and the final sequence alike (docs/writer.md#backend).  Any
exception from a backend becomes a ``LogServiceError``, retried or counted like a failing
service, so a broken backend cannot kill the worker.
"""

from __future__ import annotations

import enum
import functools
from typing import Callable, Optional

from ._backend import ONE_ATTEMPT, Backend, StoredLogs
from ._buffers import Batch, LiveQueue
from ._clock import Clock, Deadline
from ._config import LogConfig
from ._exceptions import AuthError, BlobNotFound, Cancelled, LogServiceError, StreamNotFound, TLSError
from ._ledger import Ledger, WriterState
from ._look import Found, Look
from ._pipeline import Pipeline, Taken
from ._retry import Attempts, RetryPolicy
from ._stats import Counters

__all__ = ["Delivery", "LiveState", "Warn", "count_joined"]

#: lelog's own warnings: (kind for rate limiting, message).
Warn = Callable[[str, str], None]


class LiveState(enum.Enum):
    """The live stream as the delivery sees it."""

    #: Still to be opened.
    UNOPENED = "unopened"
    #: Open (by this writer, or by someone else: ``skip_opening_stream``, a fork's parent).
    OPEN = "open"
    #: The service answered permanently (auth, stream not found, ...): nothing more goes
    #: live; the history is still uploaded at close.
    STOPPED = "stopped"
    #: A joined stream its writer elsewhere closed: nothing more goes live or is stored.
    ENDED = "ended"


class Delivery:
    """What goes live and what is stored, for one stream (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        key: str,
        config: LogConfig,
        retry: RetryPolicy,
        clock: Clock,
        ledger: Ledger,
        pipeline: Pipeline,
        *,
        flush_interval: float,
        max_batch_lines: int,
        max_batch_bytes: int,
        max_lines: int,
        max_bytes: int,
        opens: bool,
        closes: bool,
        marks_evicted: bool,
        warn: Warn,
        before_open: Callable[[Deadline], None],
        unseen_since: Callable[[], Optional[float]] = lambda: None,
        joined: Callable[[], None] = lambda: None,
    ) -> None:
        self._backend = backend
        self._key = key
        self._config = config
        self._retry = retry
        self._clock = clock
        self._ledger = ledger
        self._pipeline = pipeline
        self._flush_interval = flush_interval
        self._batch_lines = max_batch_lines
        self._batch_bytes = max_batch_bytes
        self._warn = warn
        self._before_open = before_open
        #: When this writer came to a stream this host has no trace of (then it looks
        #: before it opens: ``_look``); None otherwise.  Asked at the first open.
        self._unseen_since = unseen_since
        self._look: Optional[Look] = None
        self._asked = False
        self._said = False  # what the look found (``_say_found``), once
        #: Called once the stream is joined (a writer elsewhere holds it): for a successor.
        self._on_join = joined
        #: The stream is a writer's elsewhere: pushed to, never stored or closed here.
        self.joined = False
        self._marks_evicted = marks_evicted
        #: What the final sequence does: close the stream (not with ``skip_closing_stream``,
        #: not in a fork child), and upload the history (only when it also opened it).
        self.closes = closes
        self.uploads = closes and opens
        self.live = LiveQueue(max_lines, max_bytes)
        self.live_state = LiveState.UNOPENED if opens else LiveState.OPEN
        self.retry_at = 0.0
        self._attempts: Optional[Attempts] = None
        #: ``flush()``: push without waiting for age until this many lines are settled.
        self.push_upto = 0
        #: The stream was taken over from another process, not opened here: a service that
        #: no longer knows it (``stream: not found``) has it opened afresh, once.
        self._resumed = False

    def resume(self, *, joined: bool = False) -> None:
        """Continue a stream another process of the host opened: no open, and the upload
        and close at the end as if this delivery had opened it (before the first step);
        ``joined``: that process had joined a writer's elsewhere, and so does this one."""
        self.live_state = LiveState.OPEN
        if joined:
            self._join()
            return
        self.uploads = self.closes
        self._resumed = True

    def _join(self) -> None:
        """Push to a stream a writer elsewhere holds: its storing and closing are that
        writer's (docs/writer.md#a-writer-out-of-reach)."""
        self.joined = True
        self.closes = self.uploads = False
        self._ledger.count(count_joined)

    # -- the live view ----------------------------------------------------------------------------

    def take_in(self, taken: Taken) -> None:
        """Move what the pipeline's intake handed over into the live queue, in ``pos``
        order; lines that a bound pushes out are counted, and marked in their place."""
        batches, lost, lost_pos = taken
        overflow = rejected = 0
        stopped = self.live_state in (LiveState.STOPPED, LiveState.ENDED)
        refused = "after_close" if self.live_state is LiveState.ENDED else "rejected"
        if lost:  # the intake's bound: lines that never reached the live queue
            if stopped:
                rejected += lost
            else:  # marked where they were: after what the queue holds, before the rest
                since = batches[0][3] if batches else self._clock.monotonic()
                marker = self._live_loss_marker(lost, lost_pos)
                overflow += lost + self.live.extend([marker], 0, lost_pos, since)
        for encoded, count, first_pos, since in batches:
            if stopped:
                rejected += count * len(encoded)
            else:
                overflow += self.live.extend(encoded, count, first_pos, since)
        if overflow or rejected:

            def update(counters: Counters) -> None:
                counters.dropped["overflow"] += overflow
                counters.dropped[refused] += rejected

            self._ledger.count(update)

    def step(self, now: float) -> float:
        """Open the stream or push one batch, when due: one attempt.  Returns the seconds
        until the next step is due (0: at once)."""
        if now >= self.retry_at - 1e-6:  # as LiveQueue.due_at: immune to float rounding
            if self.live_state is LiveState.UNOPENED:
                self._try_open()
                return 0.0
            if self.live.entries and self.live_state is LiveState.OPEN and self._due(now):
                self._try_push()
                return 0.0
        waits = [max(self._flush_interval, 1.0)]
        if self.retry_at > now:
            waits.append(self.retry_at - now)
        elif self.live.entries and self.live_state is LiveState.OPEN:
            waits.append(self.live.due_at(self._flush_interval) - now)
        return max(min(waits), 0.0)

    def _due(self, now: float) -> bool:
        return self.push_upto > self._ledger.counters.settled() or self.live.due(
            now, self._flush_interval, self._batch_lines, self._batch_bytes
        )

    def _batch(self) -> Batch:
        return self.live.batch(self._batch_lines, self._batch_bytes, self._live_loss_marker)

    def _live_loss_marker(self, lost: int, pos: int) -> bytes:
        where = "; they are in the uploaded log" if self.uploads else ""
        return self._pipeline.marker(
            f"{lost:,} lines not streamed live (service too slow or down){where}", pos
        )

    def _try_open(self) -> None:
        self._before_open(Deadline.after(self._config.open_deadline, self._clock.monotonic))
        ok, exc = self._one_attempt("open_stream", self._open_stream, self._config.open_deadline)
        if ok:
            self.live_state = LiveState.OPEN
        elif exc is not None:
            # Opening is retried for as long as the writer lives (with a fresh budget after
            # each deadline) unless the service's answer is permanent.
            if exc.retryable:
                self.retry_at = self._clock.monotonic() + self._config.max_retry_wait
            else:
                self._stop_live(exc)

    def _try_push(self) -> None:
        batch = self._batch()
        ok, exc = self._one_attempt(
            "write", functools.partial(self._write, batch.lines), self._config.call_deadline
        )
        if ok:
            self._pushed(batch)
        elif exc is not None:
            self._not_pushed(exc, batch)

    def _pushed(self, batch: Batch) -> None:
        self.live.pop(batch, pushed=True, now=self._clock.monotonic())
        self._ledger.settle(batch.count, 1, batch.body_size)

    def _not_pushed(self, exc: LogServiceError, batch: Batch) -> None:
        self.live.pop(batch, pushed=False, now=self._clock.monotonic())
        if isinstance(exc, StreamNotFound) and self.joined:
            self._ended_elsewhere(batch.count)
            return
        self._ledger.settle(batch.count, drop="retries_exhausted" if exc.retryable else "rejected")
        if isinstance(exc, StreamNotFound) and self._resumed:
            self._resumed = False  # its owner's run ended long ago: a stream of its own
            self.live_state = LiveState.UNOPENED
        elif isinstance(exc, (StreamNotFound, AuthError, TLSError)):
            self._stop_live(exc)

    def _ended_elsewhere(self, count: int) -> None:
        """The writer elsewhere closed the stream this one joined: nothing more can be
        streamed or stored, so what is left is dropped as logged after the close."""
        self.live_state = LiveState.ENDED
        self._ledger.settle(count + self.live.clear(), drop="after_close")
        self._warn(
            "joined:ended",
            f"stream {self._key!r} was closed by the writer elsewhere that holds it; lines logged "
            "after that are not stored (counted as dropped, after close)",
        )

    def _stop_live(self, exc: LogServiceError) -> None:
        """A permanent answer: stop the live push; the history still goes up at close."""
        self.live_state = LiveState.STOPPED
        self._ledger.settle(self.live.clear(), drop="rejected")
        self._warn(
            f"live:{type(exc).__name__}",
            f"stopped streaming {self._key!r} live: {exc}; lines are kept for the final upload",
        )

    # -- the final sequence -----------------------------------------------------------------------

    def finish(self, deadline: Deadline, last_out: Callable[[], bool]) -> bool:
        """Final push, history upload and close, all by ``deadline`` (the pipeline's final
        drain has run).  True when the log is stored and the stream closed.  After the push,
        ``last_out()`` says whether this process stores and closes the stream, or hands it
        on to another process of the host (then False: neither is done here)."""
        # Shares of what is left: the push may not starve the upload that stores the log, and
        # open + one PUT fit in the push's share on a slow service (0.5 s a request at 2 s).
        push_by = deadline.share(0.6)
        upload_by = deadline.share(0.85)
        if self.live_state is LiveState.UNOPENED:
            self._before_open(push_by)
            exc = self._retrying("open_stream", self._open_stream, push_by)
            if exc is None:
                self.live_state = LiveState.OPEN
            elif self._look is not None and self._look.live and self._look.found is None:
                # Live, and still not known whose: never stored or closed over on a guess.
                self._record_error(exc)
                self._look.give_up(exc)
                self._say_found(self._look)
                self._join_found()
                self.live_state = LiveState.OPEN
            else:
                self._record_error(exc)
                if self._look is not None and self._look.found is Found.LEFTOVER and not self._look.settled:
                    self._warn(*self._look.unstored())
                if not exc.retryable:
                    self._stop_live(exc)
        if self.live_state is LiveState.OPEN:
            self._final_push(push_by)
        left = self.live.clear()
        if left:
            self._ledger.settle(left, drop="retries_exhausted")
        if self.joined:  # storing and closing are the writer's elsewhere; a member here may go on
            last_out()
            return False
        if not self.closes or not last_out():
            return False
        uploaded = True
        if self.uploads:
            body = self._pipeline.upload_body(marks_evicted=self._marks_evicted)
            exc = self._retrying("upload", functools.partial(self._upload, body), upload_by)
            if exc is not None:
                self._record_error(exc)
            uploaded = exc is None
            self._ledger.count(functools.partial(_set_uploaded, uploaded))
        exc = self._retrying("close_stream", self._close_stream, deadline)
        if exc is not None and not isinstance(exc, StreamNotFound):
            self._record_error(exc)  # not found: already closed, the service's permanent 500
            return False
        return uploaded

    def stored_log(self, deadline: Deadline) -> Optional[bytes]:
        """The key's stored log (one download, retried within ``deadline``); None when
        there is none or the backend keeps none it can give back."""
        backend = self._backend
        if not isinstance(backend, StoredLogs):
            return None
        found: list[bytes] = []

        def download(deadline: Deadline) -> None:
            found.append(backend.download(self._key, deadline=deadline, retry=ONE_ATTEMPT))

        exc = self._retrying("download", download, deadline)
        if exc is not None and not isinstance(exc, BlobNotFound):
            self._record_error(exc)
        return found[0] if found else None

    def store_leftover(self, body: bytes, deadline: Deadline) -> bool:
        """Store ``body`` as the stream's log and close the stream, before this delivery
        opens it: what a killed run on this key left (``Sharing.store_leftover``).  True
        when both were done within ``deadline``."""
        exc = self._retrying("upload", functools.partial(self._upload, body), deadline.share(0.5))
        if exc is None:
            exc = self._retrying("close_stream", self._close_stream, deadline)
        if exc is not None and not isinstance(exc, StreamNotFound):
            self._record_error(exc)
            return False
        return True

    def _final_push(self, deadline: Deadline) -> None:
        while self.live.entries and self.live_state is LiveState.OPEN:
            batch = self._batch()
            exc = self._retrying("write", functools.partial(self._write, batch.lines), deadline)
            if exc is not None:
                self._record_error(exc)
                self._not_pushed(exc, batch)
                return  # what is left is counted as not sent by the engine
            self._pushed(batch)

    # -- the backend calls: ordinary method calls, one attempt each -------------------------------

    def _open_stream(self, deadline: Deadline) -> None:
        """Open the stream; first, by a writer this host has no trace of it for, look at
        what a live one is (``_look``): joined, it is not opened."""
        if not self._asked:
            self._asked = True
            since = self._unseen_since()
            if since is not None:
                self._look = Look(self._backend, self._key, since, self._pipeline.marker)
        look = self._look
        if look is not None:
            try:
                found = look.step(deadline)  # one attempt of each call it has left; may raise
            finally:  # said once: when decided, or a leftover once stored
                if look.settled:
                    self._say_found(look)
            if found in (Found.WRITER_ELSEWHERE, Found.UNREADABLE):
                self._join_found()
                return
        self._backend.open_stream(self._key, deadline=deadline, retry=ONE_ATTEMPT)

    def _join_found(self) -> None:
        """Join the stream the look found to be a writer's elsewhere (once)."""
        if not self.joined:
            self._join()
            self._on_join()

    def _say_found(self, look: Look) -> None:
        """What the look found, once (``Look.warning``)."""
        if not self._said:
            self._said = True
            warning = look.warning(self._config.scrub)
            if warning is not None:
                self._warn(*warning)

    def _write(self, lines: list[bytes], deadline: Deadline) -> None:
        self._backend.write(self._key, lines, deadline=deadline, retry=ONE_ATTEMPT)

    def _upload(self, body: bytes, deadline: Deadline) -> None:
        self._backend.upload(self._key, body, deadline=deadline, retry=ONE_ATTEMPT)

    def _close_stream(self, deadline: Deadline) -> None:
        snapshot = self._config.skip_opening_stream
        self._backend.close_stream(self._key, snapshot=snapshot, deadline=deadline, retry=ONE_ATTEMPT)

    def _call(self, name: str, request: Callable[[Deadline], None], deadline: Deadline) -> None:
        """One attempt of a backend call; any failure comes out as a ``LogServiceError``."""
        if self._ledger.state is WriterState.ABANDONED:  # close() gave up on us: no more requests
            raise Cancelled(f"{name} {self._key!r}: the close deadline has passed", call=name)
        try:
            try:
                request(deadline)
            except LogServiceError:
                raise
            except Exception as exc:
                raise LogServiceError(f"{name} {self._key!r}: {exc!r}", call=name) from exc
        except LogServiceError:
            self._ledger.call_ended(ok=False)
            raise
        self._ledger.call_ended(ok=True)

    def _one_attempt(
        self, name: str, request: Callable[[Deadline], None], budget: float
    ) -> tuple[bool, Optional[LogServiceError]]:
        """One attempt of a live call, its retry state kept across rounds: (True, None) on
        success, (False, None) when a retry is scheduled, (False, error) when it gave up."""
        if self._attempts is None:
            self._attempts = self._retry.begin(Deadline.after(budget, self._clock.monotonic))
        attempts = self._attempts
        try:
            self._call(name, request, attempts.deadline)
        except LogServiceError as exc:
            self._record_error(exc)
            wait = attempts.next_wait(exc)
            if wait is not None:
                self.retry_at = self._clock.monotonic() + wait
                self._ledger.count(_count_retry)
                return False, None
            self._attempts = None
            return False, exc
        self._attempts = None
        return True, None

    def _retrying(
        self, name: str, request: Callable[[Deadline], None], deadline: Deadline
    ) -> Optional[LogServiceError]:
        """A call of the final sequence, retried within ``deadline``; the error it ended with.
        The same policy as the live calls; its waits are the clock's, bounded by the deadline."""
        if deadline.expired():
            return Cancelled(f"{name} {self._key!r}: no time left before the close deadline", call=name)
        attempts = self._retry.begin(deadline)
        while True:
            try:
                self._call(name, request, deadline)
                return None
            except LogServiceError as exc:
                wait = attempts.next_wait(exc)
                if wait is None:
                    return exc
                self._ledger.count(_count_retry)
                self._clock.sleep(wait)

    def _record_error(self, exc: LogServiceError) -> None:
        text = self._config.scrub(exc)
        self._ledger.count(functools.partial(_set_last_error, text))
        self._warn(f"{exc.call}:{exc.status}:{type(exc).__name__}", str(exc))


def count_joined(counters: Counters) -> None:
    """This process's lines went live into a stream a writer elsewhere holds."""
    counters.joined = True


def _count_retry(counters: Counters) -> None:
    counters.retries += 1


def _set_uploaded(uploaded: bool, counters: Counters) -> None:
    counters.uploaded = uploaded


def _set_last_error(text: str, counters: Counters) -> None:
    counters.last_error = text
