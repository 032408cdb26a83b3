"""``Engine``: one stream's worker thread, its rounds, ``flush`` and the close protocol.

An engine is made of three parts, each with one lock at most (docs/writer.md#locks): the
``Ledger`` (state, counts, pending lines), the ``Pipeline`` (encoding, ``pos``, history,
intake, spool feed) and the ``Delivery`` (live queue, backend calls, retries).  The engine
runs them: a round is ``pipeline.drain()``, ``delivery.take_in()``, ``delivery.step(now)``,
on the worker thread, or on the caller's with ``threaded=False`` (``step()``, for tests
that drive a ``ManualClock``).

The close (docs/writer.md#one-deadline): ``begin_close`` completes the writers' partial
lines and moves the state to CLOSING under one deadline; exactly one thread then runs the
final sequence (``_finish``), the worker, or the closer when there is none, having moved the
state to FINISHING in the same step as it checked CLOSING; ``await_close`` waits for it, and
abandons a worker still in a request at the deadline.

What this process holds on the host for the stream (the host-wide stream lock, the crash
spool, the history file or a member's presence) is its ``Claim`` (``_claim.py``), taken in
``own`` and when the stream starts, let go in ``_finish_and_account`` or ``_abandon``.

Processes of the host on one key share its stream (docs/writer.md#processes-on-one-key):
this process's role in it (owner or member) is its ``Sharing`` (``_sharing.py``).

Threads: the caller's (``accept``, any thread); the worker (``_run``); the spool's thread
(``pipeline.encode_pending``); the fork channel's reader (``accept_from_children``).  Only
the thread running rounds touches the delivery.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from typing import Any, Callable, Collection, Hashable, Mapping, Optional, Protocol, Union

from . import _channel, _lifecycle, _reentry
from ._backend import Backend, Prepares, keeps_every_line, retry_policy
from ._buffers import item_size
from ._channel import MemberLink, Refusal, Sent
from ._claim import Claim, Ending
from ._clock import Clock, Deadline
from ._config import LogConfig
from ._delivery import Delivery
from ._diagnostics import RateLimitedWarnings
from ._encode import Item, ready
from ._ledger import ENDED, IDLE, RUNNING, Ledger, WriterState
from ._line import truncate_out
from ._options import WriterOptions
from ._pipeline import Pipeline
from ._sharing import WAITING_POLL, Sharing, count_shared
from ._spool import SpoolStats
from ._stats import Stats

__all__ = ["Engine", "PartialLines"]

#: Once in this many lines accepted while at least as many wait for the worker, the caller
#: lets go of the GIL for a moment (docs/writer.md#the-gil).
_YIELD_EVERY = 256
#: How long it lets go: anything above zero (sleep(0) does not hand the GIL over on 3.9 and
#: 3.10, where a waiter can even starve); the system's timer slack (~50 us) sets the rest.
_YIELD_SECONDS = 1e-6
#: How often a worker whose stream waits for a hand-off checks that the configuration call
#: (which holds logging's module lock) has returned.
_HANDOFF_POLL = 0.05


class PartialLines(Protocol):
    """A writer on the stream that may hold a partial line, which the close completes."""

    split_lock: threading.Lock

    def take_partial(self) -> Optional[str]:
        """The partial line, masked as the writer masks its lines (under ``split_lock``)."""


class Engine:
    """The shared part of a stream: everything but a writer's own partial line."""

    def __init__(
        self,
        key: str,
        options: WriterOptions,
        config: LogConfig,
        backend: Backend,
        *,
        owns_backend: bool,
        identity: Hashable,
        clock: Clock,
        threaded: bool,
        predecessor: Optional[Engine],
        handoff_pending: Callable[[Engine], bool],
        expire_handoff: Callable[[Engine], bool],
        on_finished: Callable[[Engine], Optional[Engine]],
    ) -> None:
        self.key = key
        self.options = options
        self.config = config
        self.backend = backend
        self._owns_backend = owns_backend
        self.identity = identity
        self.clock = clock
        self._threaded = threaded
        self._predecessor = predecessor
        self._handoff_pending = handoff_pending
        self._expire_handoff = expire_handoff
        self._on_finished = on_finished
        self._retry = retry_policy(backend, config)
        self._warnings = RateLimitedWarnings()
        self._handles: weakref.WeakSet[Any] = weakref.WeakSet()  # PartialLines
        self._slot = _channel.slot_for(self)
        # The stream lock, presence, history file and spool of this process (_claim.py).
        self.claim = Claim(key, config, backend, self.warn)
        # This process's role in the stream the host's processes share (_sharing.py).
        self.sharing = Sharing(self)
        # Where this stream's lines go when they are another process's: a fork child's
        # uplink to its parent, or a member's link to the owner.
        self._outlet: Optional[_channel.Outlet] = None
        # A fork child's copy: the stream is the parent's even when no channel reaches it
        # (the parent could not make one): then it streams live but never opens or closes.
        self._forked = False
        self._build_parts()

    def _build_parts(self) -> None:
        """Fresh parts, locks and events (at construction, and in a fork child)."""
        opts, config = self.options, self.config
        self.ledger = Ledger(opts.max_pending_lines, opts.max_pending_bytes)
        self.pipeline = Pipeline(
            self.ledger,
            self.clock,
            masker=config.masker() or None,
            trim_new_line_suffix=config.trim_new_line_suffix,
            history_bytes=opts.history_bytes,
            max_lines=opts.max_pending_lines,
            max_bytes=opts.max_pending_bytes,
            key=self.key,
        )
        self.delivery = self._new_delivery()
        self._outlive_lock = threading.Lock()  # see _outlive_parent
        self._wake_lines = opts.max_batch_lines  # a full batch pending wakes the worker
        self._wake = threading.Event()
        self._finished = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._worker_awake = False  # in a round (not waiting for work): accept() yields to it
        self._close_deadline: Optional[Deadline] = None
        self._backend_closed = False

    def _new_delivery(self) -> Delivery:
        """The delivery of this stream's ledger and pipeline: one that opens and closes the
        stream unless the config skips that or the stream is a fork's parent's."""
        opts, config, elsewhere = self.options, self.config, self._forked
        return Delivery(
            self.backend,
            self.key,
            config,
            self._retry,
            self.clock,
            self.ledger,
            self.pipeline,
            flush_interval=opts.flush_interval,
            max_batch_lines=opts.max_batch_lines,
            max_batch_bytes=opts.max_batch_bytes,
            max_lines=opts.max_pending_lines,
            max_bytes=opts.max_pending_bytes,
            opens=not (config.skip_opening_stream or elsewhere),
            closes=not (config.skip_closing_stream or elsewhere),
            marks_evicted=not keeps_every_line(self.backend),
            warn=self.warn,
            before_open=self._after_predecessor,
            unseen_since=self.sharing.unseen_since,
            joined=self.sharing.joined,
        )

    def own(self, spool_dir: Optional[str]) -> None:
        """This process may own the stream: its crash spool, its children's channel, and
        the exit hook (registered from the start, so the fork hook renews even an engine
        that was never used, and a writer holding only a partial line is delivered at exit)."""
        self.claim.take(spool_dir, self.options, self._encode_for_spool)
        if self.claim.spool is not None:
            self.pipeline.spool_rows = self.claim.spool.add_rows
        if self._threaded and not self.config.skip_opening_stream:
            self.sharing.arrive()
        _channel.want_channel(self)
        _lifecycle.register(self)

    def add_handle(self, handle: PartialLines) -> None:
        self._handles.add(handle)

    def __repr__(self) -> str:
        return f"<Engine key={self.key!r} backend={self.backend!r} state={self.ledger.state.value}>"

    # -- what the registry and the exit hook ask ---------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self.ledger.accepting

    @property
    def elsewhere(self) -> bool:
        return self._forked

    @property
    def close_timeout(self) -> float:
        return self.options.close_timeout

    @property
    def state(self) -> WriterState:
        return self.ledger.state

    def has_live_worker(self) -> bool:
        worker = self._worker
        return worker is not None and worker.is_alive()

    def wake(self) -> None:
        self._wake.set()

    def warn(self, kind: str, message: str) -> None:
        try:
            self._warnings.warn(kind, self.config.scrub(message))
        except Exception:  # a broken stderr must not break the writer
            pass

    # -- lines in (any thread) ------------------------------------------------------------------

    def accept(self, item: Item, released: bool = False, start: bool = True) -> None:
        """Take one line from any writer on the stream (``released``: that writer let go)."""
        outlet = self._outlet
        if outlet is not None:  # a fork child or a member: the line goes to the owner now
            self._send_up(outlet, item, released)
            return
        args = item[3]
        size = len(item[2]) if args is None else item_size(item[2], args)  # no call for most lines
        waiting = self.ledger.accept(item, size, released)
        if waiting == 1:
            if start and self.ledger.state is IDLE:
                self.start()
            # Wake the worker when the first line starts the age clock of an empty live
            # queue; while lines wait there the worker wakes by itself when the oldest is due
            # and takes these along, so a tight loop wakes it once a batch instead of at every
            # drain (half the GIL hand-offs; benchmarks/: caller-cost row).  Reading the
            # worker's deque is one atomic truthiness test under the GIL.
            if not self.delivery.live.entries:
                self._wake.set()
        elif waiting == self._wake_lines:  # a full batch
            self._wake.set()
            spool = self.claim.spool
            if spool is not None:  # it encodes too when the worker is in a request
                spool.wake()
        if (
            waiting >= _YIELD_EVERY
            and self._worker_awake
            # One line in _YIELD_EVERY accepted (a stale read costs one yield more or less),
            # not a count of waiting lines: a full buffer holds that count still.
            and not self.ledger.counters.accepted % _YIELD_EVERY
        ):
            # Lines pile up while the worker works: it may be waiting for the GIL, which a
            # caller in a tight loop lets go of only every switch interval (5 ms), and a
            # request takes the worker tens of such waits (docs/writer.md#the-gil).
            time.sleep(_YIELD_SECONDS)

    def _send_up(self, outlet: _channel.Outlet, item: Item, released: bool) -> None:
        """In a fork child or a member: one message to the owner (a captured record
        rendered first: the owner takes ready lines).  Counted under the ledger's lock, sent
        outside it.  A member's line goes behind lines that wait here (decided under the
        ledger's lock, so a line never overtakes one that waits)."""
        level, out, args = ready(item)
        out, _ = truncate_out(out)
        args = dict(args) if args else args
        line: Item = (item[0], level, out, args, None)
        admitted = self.ledger.admit(released, behind=line if outlet is self.sharing.link else None)
        if admitted is not True:
            if admitted is False:  # kept behind the waiting lines: the worker sends them
                self.wake()
            return
        sent = outlet.send(item[0], level, out, args)
        if sent is Sent.SENT:
            self.ledger.settle(1)
        elif sent is Sent.DROPPED:
            self.ledger.settle(1, drop=outlet.drop_reason)
        elif isinstance(outlet, _channel.Uplink):  # GONE: the parent's stream has ended
            self._outlive_parent(outlet, line)
        else:  # a member's full connection, or no owner: the line waits here
            self.sharing.line_waits(line, gone=sent is Sent.GONE)

    def _outlive_parent(self, uplink: _channel.Uplink, line: Item) -> None:
        """A fork child's line found its parent's stream ended: the child becomes a process
        of its own on the key, as a member's child is from the start, and the line waits
        here for it.  It continues the log its parent stored (``Claim.run_continues``), or
        joins the process that holds the stream now.  Without a meeting place on the host
        nothing could continue that log: the line is dropped, counted after close.

        ``_outlive_lock`` (a leaf: attributes only) makes the change once when several
        threads find the parent gone together; a line admitted before it goes to the ledger
        either way."""
        if self.claim.meeting is None:
            self.ledger.settle(1, drop="after_close")
            return
        with self._outlive_lock:
            if self._outlet is uplink:
                self.sharing.outlive_parent()
                self._forked = False
                self.delivery = self._new_delivery()  # this process opens and closes now
                self._outlet = None
        self.ledger.keep(line, item_size(line[2], line[3]))
        if self.ledger.state is IDLE:
            self.start()
        else:
            self.wake()

    def route(self, outlet: Optional[Union[MemberLink, Refusal]]) -> None:
        """Where lines go: through a member's link to the stream's owner, nowhere (a
        refusal), or (None) into this process's ledger.  Only ``Sharing`` calls it, when the
        role changes."""
        self._outlet = outlet

    def room_for_members(self) -> int:
        """How many lines of member processes this stream takes now: as many as fit in its
        buffers on their way to the service (the members' connections, then the members,
        hold the rest), so a flood from the host's processes waits instead of being dropped
        here.  Read on the channel's reader without a lock: each count is one attribute
        read, and a stale one costs a batch read early or late."""
        if not self.ledger.accepting:
            return _channel.CHANNEL_BUFFER  # the close reads everything
        ledger = self.ledger
        on_the_way = (
            self.pipeline.intake.lines
            + self.delivery.live.lines
            + len(ledger.pending)
            + len(ledger.from_children)
        )
        room = min(ledger.room_for_others(), self.options.max_pending_lines - on_the_way)
        if room <= 0:
            # Members wait: push what is queued now, whatever its age (as a flush does).
            with ledger.lock:
                self.delivery.push_upto = max(self.delivery.push_upto, ledger.counters.accepted)
            self._wake.set()
        return room

    def accept_from_children(
        self,
        lines: list[_channel.ChildLine],
        *,
        members: Optional[Mapping[str, int]] = None,
        senders: Collection[int] = (),
    ) -> None:
        """On the channel's reader thread: lines fork children (``senders``) or members wrote."""
        if members is not None and not self.ledger.counters.shared:  # read without the lock: set once
            self.ledger.count(count_shared)
        if self.ledger.accept_from_children(lines, accounted=members, senders=senders) and lines:
            self.start()  # a parent that has not logged yet has no worker
        self.sharing.hand_on_kept()  # a member's fork children's lines go on to the owner
        self._wake.set()

    # -- the worker -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start streaming: the worker opens the stream (unless skipped) in the background.

        The stream's host-wide lock is taken first, on this thread and holding no other
        lock (``Claim.hold_stream``, a few local file calls once per stream): on the worker,
        each of those calls would wait for the GIL behind a caller logging flat out, and lines
        would pile up before the first open (benchmarks/: exit row).

        The backend readies itself on this thread too (``Prepares``: a client's pool and TLS
        context): built on the worker, a fork meanwhile would leave the child's copies of
        OpenSSL's and the import system's locks held, and its first request waiting forever.
        Not under ``logging``'s module lock (a record logged inside ``dictConfig``): what it
        imports takes that lock, which another thread importing the same may wait behind.

        The thread is started under the ledger's lock and published only once it runs, so a
        close never sees a thread it cannot join.  Holding the lock here cannot deadlock:
        ``start()`` waits only for the new thread's bootstrap, which takes no lelog lock."""
        if (
            self.ledger.state is IDLE
            and self._threaded
            and not self.elsewhere
            and not self.config.skip_opening_stream
        ):
            self.sharing.take_part()
        with self.ledger.lock:
            if not self.ledger.move(RUNNING, allowed=(IDLE,)) or not self.sharing.needs_worker:
                return
        if self._threaded and isinstance(self.backend, Prepares) and not _lifecycle.holding_logging_lock():
            try:
                with _reentry.own_io():  # what building it logs is lelog's own (the worker's before)
                    self.backend.prepare()
            except Exception:
                pass  # the worker's first request meets the same failure, and reports it
        self.start_worker()

    def start_worker(self) -> None:
        """The worker, once (see ``start``)."""
        with self.ledger.lock:
            if (
                self._worker is not None
                or self.ledger.state is not RUNNING
                or not self._threaded
                or self.elsewhere
            ):
                return
            worker = _lifecycle.start_daemon(self._run, f"lelog-writer[{self.key}]")
            if worker is None:  # interpreter shutdown: close() drains on its own thread
                return
            self._worker = worker

    def step(self) -> Optional[float]:
        """One round on this thread (``threaded=False`` only): seconds until the next is
        due, or None once ``close()`` was asked."""
        if self._threaded:
            raise RuntimeError("step() drives a writer built with threaded=False; this one has a worker")
        with _reentry.own_io():
            return self._round()

    def _run(self) -> None:
        _reentry.mark_own_thread()
        self._worker_awake = True
        while True:
            try:
                wait = self._round()
            except BaseException as exc:  # never die silently, and never before close:
                self.warn("internal", f"the writer's worker failed: {exc!r}")
                if self.ledger.state is not RUNNING:  # lines keep coming until then
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
        if not self.sharing.owns:  # a member's worker: it only waits for an owner
            return self.sharing.waiting_round() if self.ledger.accepting else None
        self._begin_owning()
        handoff = self._handoff_pending(self)
        if handoff and _lifecycle.configuration_over() and self._expire_handoff(self):
            # Nobody took the stream on while the configuration call ran: finish as usual.
            self.begin_close(Deadline.after(self.options.close_timeout, self.clock.monotonic))
        self._drain()
        if not self.ledger.accepting:
            return None
        wait = self.delivery.step(self.clock.monotonic())
        if self.sharing.binding:  # members wait for the socket: the next try soon
            wait = min(wait, WAITING_POLL)
        return min(wait, _HANDOFF_POLL) if handoff else wait

    def _begin_owning(self, *, start_spool: bool = True) -> None:
        """Before an owner encodes a line (its first round, or a member's first after it took
        the stream over): the log to continue, if any, then the spool, which encodes too."""
        self.sharing.owner_round()
        if self.sharing.continuation:
            try:
                self.sharing.continue_run(Deadline.after(self.config.open_deadline, self.clock.monotonic))
            except Exception as exc:  # a bug: the stream goes on as a new log
                self.warn("internal", f"continuing {self.key!r} failed: {exc!r}")
        spool = self.claim.spool
        if spool is not None and start_spool:
            spool.start()  # once (a no-op after)

    def _drain(self) -> None:
        home = _channel.home_of(self)
        if home is not None:
            # What fork children sent before this round goes in with it, in time order; a
            # short wait, so a flood from children cannot stall the worker.
            home.settle(0.01)
        failure, taken = self.pipeline.drain()
        if failure:
            self.warn("internal", failure)
        if taken is not None:
            self.delivery.take_in(taken)

    def _encode_for_spool(self) -> None:
        """The spool's thread encodes too, so a request that holds the worker never holds
        the spool (docs/writer.md#encoding)."""
        failure = self.pipeline.encode_pending()
        if failure:
            self.warn("internal", failure)

    def _after_predecessor(self, deadline: Deadline) -> None:
        """Before opening: wait until the engine that was finishing this stream's identity
        when this one was built has finished, so its close cannot end the stream this one
        opens (docs/writer.md#one-stream-per-key); at most until ``deadline``.  Only the
        thread running rounds waits here: callers never do."""
        predecessor = self._predecessor
        if predecessor is not None:
            predecessor._finished.wait(deadline.remaining())
            self._predecessor = None
        self.sharing.own_late()  # if start() could not take the lock (docs/recover.md#stream-lock)
        self.sharing.store_leftover(deadline)

    # -- flush ------------------------------------------------------------------------------------

    def flush(self, timeout: Optional[float]) -> bool:
        """Push everything accepted so far; True when all of it was sent within ``timeout``
        (see ``StreamWriter.flush``)."""
        ledger = self.ledger
        started = self.clock.monotonic()
        timeout = self.options.close_timeout if timeout is None else timeout
        home = _channel.home_of(self)
        if home is not None:
            home.settle(min(_channel.SETTLE_AT_FLUSH, timeout))  # children's lines too
        deadline = Deadline(started + timeout, self.clock.monotonic)
        shared_budget = Deadline(started + self.options.close_timeout, self.clock.monotonic)
        may_spend = not _lifecycle.holding_logging_lock()
        counters = ledger.counters
        with ledger.lock:
            ledger.fold_reentrant()  # both counts below include the lines tallied so far
            target = counters.accepted
            dropped_before = counters.settled() - counters.sent
            ok_before = ledger.ok_calls
            worker = self._worker
            if worker is None or not worker.is_alive() or worker is threading.current_thread():
                # Nothing to wait for (never started, no thread, finished, or we are the worker).
                return counters.sent == counters.accepted
            # Read by the delivery's _due(): push now, whatever the lines' age.
            self.delivery.push_upto = max(self.delivery.push_upto, target)
        self._wake.set()
        done = ledger.wait_settled(target, deadline)
        with ledger.lock:
            ledger.fold_reentrant()
            dropped_now = counters.settled() - counters.sent
            if not done and may_spend and (ledger.failing or ledger.ok_calls == ok_before):
                # A failing service: the close that follows spends no second budget on it.
                spent = ledger.spent
                ledger.spent = shared_budget if spent is None else spent.earliest(shared_budget)
        return done and dropped_now == dropped_before

    # -- the close --------------------------------------------------------------------------------

    def close_deadline(self, timeout: Optional[float]) -> Deadline:
        """A close's deadline: ``timeout`` from now, but no later than a failed flush's
        budget (no second budget for a failing service)."""
        seconds = self.options.close_timeout if timeout is None else timeout
        deadline = Deadline.after(seconds, self.clock.monotonic)
        with self.ledger.lock:
            spent = self.ledger.spent
        return deadline if spent is None else deadline.earliest(spent)

    def begin_close(self, deadline: Deadline) -> None:
        """Complete every writer's partial line and stop accepting, under one deadline.

        Under the ``split_lock`` of every writer on this stream (taken in one order, by
        ``id``: any two closers take them alike, and a writer holds only its own), so a
        concurrent ``write()`` lands wholly before the close or is wholly counted after it.
        Lock order: a ``split_lock``, then the ledger's lock."""
        home = _channel.home_of(self)
        if home is not None:
            home.settle(deadline.remaining() / 5)  # children's lines sent before the close
        handles = sorted(self._handles, key=id)
        with contextlib.ExitStack() as stack:
            for handle in handles:
                stack.enter_context(handle.split_lock)
            for handle in handles:
                last = handle.take_partial()
                if last:
                    self.accept((self.clock.time(), "info", last, None, None), start=False)
            with self.ledger.lock:
                if not self.ledger.move(WriterState.CLOSING, allowed=(IDLE, RUNNING)):
                    return
                self._close_deadline = deadline
        self._wake.set()

    def await_close(self) -> None:
        """Wait for the final sequence (or run it, with no worker), then let go of the
        backend and the exit hook.  The grace for a worker to notice the deadline is part of
        the same deadline, so N engines finishing together wait 0.1 s past it in all."""
        worker = self._worker
        if worker is threading.current_thread():
            return  # closed from the worker itself (a handler closed in a callback): it ends by itself
        end = self._close_deadline or Deadline(0.0, self.clock.monotonic)
        grace = Deadline(end.end + 0.1, end.now)
        if worker is not None:
            worker.join(grace.remaining())
            if worker.is_alive():
                self._abandon()
        elif self.ledger.moved(WriterState.FINISHING, allowed=(WriterState.CLOSING,)):
            # Decided and claimed in one step under the ledger's lock: a second closer sees
            # FINISHING and waits below instead.
            self._finish_inline()
        else:
            self._finished.wait(grace.remaining())
        with self.ledger.lock:
            close_backend = self._owns_backend and self._finished.is_set() and not self._backend_closed
            self._backend_closed = self._backend_closed or close_backend
        if close_backend:
            try:
                with _reentry.own_io():  # the HTTP client's records on closing are lelog's own
                    self.backend.close()
            except Exception:
                pass
        _lifecycle.unregister(self)
        self._leave_registry()

    def _finish_inline(self) -> None:
        """No worker (interpreter shutdown, ``threaded=False``, or nothing but a partial line
        was written): run the final sequence on this thread, marked as lelog's own I/O."""
        with self.ledger.lock:
            unused = self.ledger.counters.accepted == 0  # nothing to send, no request at all
        if unused and not self.sharing.inherit():  # unless the last of a stream handed on
            with self.ledger.lock:
                self.ledger.move(WriterState.FINISHED, allowed=(WriterState.FINISHING,))
                self._finished.set()
            self.claim.leave()  # it was here for the stream, and is no more
            _channel.release(self)
            return
        with _reentry.own_io():
            self._finish_and_account(claimed=True)

    def _finish_and_account(self, *, claimed: bool = False) -> None:
        """The final sequence, then every line still unsettled counted as not sent, so
        accepted == sent + dropped holds even if something unexpected went wrong.

        Runs on the one thread that moved the state from CLOSING to FINISHING (``claimed``:
        the caller did); any other thread returns at once.  A worker whose close was
        abandoned only says it is done: it makes no request and changes no count."""
        ledger = self.ledger
        with ledger.lock:
            mine = claimed or ledger.move(WriterState.FINISHING, allowed=(WriterState.CLOSING,))
            abandoned = ledger.state is WriterState.ABANDONED
            deadline = self._close_deadline
        if not mine:
            if abandoned:
                self._finished.set()
                _channel.release(self)
            return
        stored = False
        try:
            if deadline is not None:
                sharing = self.sharing
                sharing.settle(deadline)
                if sharing.owns and not sharing.handed_on:
                    self._begin_owning(start_spool=False)
                    sharing.stop_listening(deadline)
                    self._drain()
                    stored = self.delivery.finish(deadline, sharing.last_out)
        except BaseException as exc:
            self.warn("internal", f"closing {self.key!r} failed: {exc!r}")
        finally:
            ledger.settle_the_rest("retries_exhausted")
            ledger.moved(WriterState.FINISHED, allowed=(WriterState.FINISHING,))
            remaining = max(deadline.remaining() if deadline is not None else 0.0, 0.1)
            self.claim.let_go(self._ending(stored), remaining, self.sharing.carried())
            self._finished.set()
            _channel.release(self)
            self._leave_registry()  # a new writer on this key starts a new log

    def _ending(self, stored: bool) -> Ending:
        if stored:
            return Ending.STORED
        if self.sharing.handed_on:
            return Ending.HANDED_ON
        return Ending.STORED_ELSEWHERE if self.delivery.joined else Ending.NOT_STORED

    def _abandon(self) -> None:
        """The deadline passed with the worker stuck in a request (a service that never
        answers): count what it still holds as not sent, and make it stop without another
        request or count.  It is a daemon and its request is bounded by the client's
        timeouts, so it ends soon after."""
        ledger = self.ledger
        with ledger.lock:
            if not ledger.move(WriterState.ABANDONED, allowed=(WriterState.CLOSING, WriterState.FINISHING)):
                return
            counters = ledger.counters
            counters.dropped["retries_exhausted"] += counters.accepted - counters.settled()
            counters.last_error = (
                counters.last_error or "the service did not answer before the close deadline"
            )
        self.claim.abandon()
        self.warn(
            "abandoned",
            f"closing {self.key!r}: the service did not answer in time; lines not yet sent are counted as dropped",
        )

    def finished(self) -> bool:
        return self.ledger.state in ENDED

    def _leave_registry(self) -> None:
        """Finished: leave the registry (a new writer on this key starts a new log)."""
        self._on_finished(self)

    # -- reports ----------------------------------------------------------------------------------

    def stats(self, *, locked: bool = True) -> Stats:
        return self.ledger.snapshot(self.pipeline.history_lines, locked=locked)

    @property
    def spool_stats(self) -> Optional[SpoolStats]:
        spool = self.claim.spool
        return None if spool is None else spool.stats

    # -- fork -------------------------------------------------------------------------------------

    def after_fork_in_child(self) -> None:
        """The child starts clean: its own parts, locks and buffers.  The parent's pending
        lines stay the parent's (never sent twice); the child's lines go to the process that
        owns the stream, and it never opens, uploads or closes it.

        A member's child is a process of the host like any other: it starts undecided, and
        its first line makes it a member (or the owner) of its own."""
        if self.sharing.after_fork_in_child():
            self._outlet = None
            self._predecessor = None
            self.claim.forget_in_child()
            self._build_parts()
            return
        self._forked = True
        if self._outlet is None:
            self._outlet = _channel.uplink_of(self, self._slot)
        elif isinstance(self._outlet, _channel.Uplink):
            self._outlet = _channel.uplink_of(self, self._slot) or self._outlet  # a grandchild
        self._predecessor = None  # the parent's to wait for: this process opens nothing
        self.claim.forget_in_child()  # a fork child's lines are its parent's to spool
        self._build_parts()
