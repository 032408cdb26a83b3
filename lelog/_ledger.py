"""``Ledger``: a stream's state, counts and pending lines, under one lock.

The ledger is where a line is accepted and where it is settled (sent, or dropped with a
reason), so ``accepted == sent + dropped + pending`` is kept in one place.  It also holds the
stream's ``WriterState`` (changed only by ``move``) and the record of the backend calls that
lets a close share a failed flush's budget (docs/writer.md#one-deadline).

Lock (docs/writer.md#locks): ``lock`` guards everything here but ``count_reentrant``'s
tally.  It is held for a few list and counter operations, never across I/O, and nothing
outside this module is called while it is held (``count``'s update is lelog's own and only
adds numbers), so callers wait on it for microseconds at most and it takes part in no
deadlock.  ``progress`` is a ``Condition`` of it, notified as lines settle and when the
stream ends.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from typing import Any, Callable, Collection, Mapping, NamedTuple, Optional

from ._buffers import PendingLines, item_size
from ._clock import Deadline
from ._encode import Item
from ._stats import Counters, Stats, StreamTotals

__all__ = ["Ledger", "Waiting", "WriterState"]


class WriterState(enum.Enum):
    """Where a stream is in its life; changed only by ``Ledger.move``, under its lock."""

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


IDLE, RUNNING = WriterState.IDLE, WriterState.RUNNING
ENDED = (WriterState.FINISHED, WriterState.ABANDONED)


class Waiting(NamedTuple):
    """What ``Ledger.take`` hands the encoder."""

    items: deque[Item]
    #: Fork children's and members' lines, merged in by time.
    from_children: deque[Item]
    #: Lines the bounds dropped before these (marked in their place).
    dropped: int
    #: How many lines of each member connection these and the lines before them account for,
    #: where it changed since the last take (``_channel.Inbox.accounted``).
    accounted: dict[str, int]


class Ledger:
    """A stream's state, counters, and the lines callers and fork children handed over that
    no encoder has taken yet (bounded: beyond a bound the oldest go, counted as overflow)."""

    def __init__(self, max_lines: int, max_bytes: int) -> None:
        self.lock = threading.Lock()
        self.progress = threading.Condition(self.lock)
        self.state = WriterState.IDLE
        self.counters = Counters()
        self.pending = PendingLines(max_lines, max_bytes)
        # Lines fork children sent, kept apart so the encoder merges them in by time.
        self.from_children = PendingLines(max_lines, max_bytes)
        # Members' counts that changed with the lines in ``from_children`` (``Waiting``).
        self._accounted: dict[str, int] = {}
        # The record of backend calls (docs/writer.md#one-deadline): the last call failed;
        # calls that succeeded; a flush that ran out of time on a failing service, whose
        # budget a close then shares (cleared by a successful call).
        self.failing = False
        self.ok_calls = 0
        self.spent: Optional[Deadline] = None
        # Lines counted where no lock may be taken (count_reentrant): one list.append each,
        # atomic under the GIL, so safe on a thread that holds ``lock`` (a signal handler
        # interrupted it); folded into the counters under ``lock``.
        self._reentrant: list[int] = []

    # -- the state ------------------------------------------------------------------------------

    def move(self, to: WriterState, *, allowed: tuple[WriterState, ...]) -> bool:
        """Change state if it is one of ``allowed``; the one place the state changes.
        Call with ``lock`` held."""
        if self.state not in allowed:
            return False
        self.state = to
        if to in ENDED:
            self.progress.notify_all()
        return True

    def moved(self, to: WriterState, *, allowed: tuple[WriterState, ...]) -> bool:
        """``move`` under the lock."""
        with self.lock:
            return self.move(to, allowed=allowed)

    @property
    def accepting(self) -> bool:
        state = self.state
        return state is RUNNING or state is IDLE

    # -- lines in -------------------------------------------------------------------------------

    def accept(self, item: Item, size: int, released: bool) -> int:
        """Take one line from a caller (``released``: its writer let go); how many lines now
        wait for the encoder, or 0 when this one was counted as dropped."""
        lock = self.lock
        lock.acquire()  # not ``with``: 0.1 us less a line on 3.11-3.13 (benchmarks/: enqueue stage)
        try:
            counters = self.counters
            counters.accepted += 1
            state = self.state
            if released or (state is not RUNNING and state is not IDLE):
                counters.dropped["after_close"] += 1
                return 0
            pending = self.pending
            if size > pending.max_bytes:
                counters.dropped["too_large"] += 1
                return 0
            dropped = pending.add(item, size)
            if dropped:
                counters.dropped["overflow"] += dropped
            return len(pending.items)
        finally:
            lock.release()

    def admit(self, released: bool, *, behind: Optional[Item] = None) -> Optional[bool]:
        """Count one line that goes elsewhere (a fork child's or a member's, to the owner):
        True to send it now (settle it with ``settle``); None when it was counted as
        dropped after close; False when it was kept here instead (``behind``: a member's
        line, which waits behind lines that wait already)."""
        with self.lock:
            self.counters.accepted += 1
            if released or not self.accepting:
                self.counters.dropped["after_close"] += 1
                return None
            if behind is not None and self.pending.items:
                dropped = self.pending.add(behind, item_size(behind[2], behind[3]))
                self.counters.dropped["overflow"] += dropped
                return False
            return True

    def keep(self, item: Item, size: int) -> None:
        """A line ``admit`` counted that could not go elsewhere (the stream's owner on the
        host left): it waits here with the others, for this process's encoder or for the
        next owner."""
        with self.lock:
            dropped = self.pending.add(item, size)
            if dropped:
                self.counters.dropped["overflow"] += dropped

    def accept_from_children(
        self,
        lines: list[tuple[int, float, str, str, Any]],
        *,
        accounted: Optional[Mapping[str, int]] = None,
        senders: Collection[int] = (),
    ) -> bool:
        """Lines fork children wrote, each as (gap, time, level, out, args), ``gap`` being the
        lines before it that the channel had no room for (overflow, marked in their place).
        ``accounted``: a member process's lines, with its connection's counts; they are taken
        while the stream closes too (the close reads the connections to the end before its
        final drain; the members counted the lines as sent).  True when the stream had not
        started (its worker is to be started)."""
        until_finished = accounted is not None
        sized = [(gap, ts, level, out, args, item_size(out, args)) for gap, ts, level, out, args in lines]
        with self.lock:
            counters = self.counters
            children = self.from_children
            closing = until_finished and self.state in (WriterState.CLOSING, WriterState.FINISHING)
            open_ = self.accepting or closing
            for gap, ts, level, out, args, size in sized:
                counters.accepted += gap + 1
                counters.dropped["overflow"] += gap
                children.gap += gap
                if not open_:
                    counters.dropped["after_close"] += 1
                elif size > children.max_bytes:
                    counters.dropped["too_large"] += 1
                elif closing:  # what members' connections held at the close: no bound pushes it out
                    children.items.append((ts, level, out, args, None))
                    children.bytes += size
                else:
                    counters.dropped["overflow"] += children.add((ts, level, out, args, None), size)
            if accounted:
                self._accounted.update(accounted)
                counters.peers.update(int(key.partition(".")[0]) for key in accounted)
            counters.peers.update(senders)  # fork children
            return self.state is IDLE

    def keep_in_front(self, items: list[Item]) -> None:
        """Lines taken to be sent elsewhere that could not go: back in front of the pending
        lines, in order (counted already; the bound applies as to any line)."""
        with self.lock:
            pending = self.pending
            for item in reversed(items):
                pending.items.appendleft(item)
                pending.bytes += item_size(item[2], item[3])
            while len(pending.items) > pending.max_lines or pending.bytes > pending.max_bytes:
                old = pending.items.popleft()
                pending.bytes -= item_size(old[2], old[3])
                pending.gap += 1
                self.counters.dropped["overflow"] += 1

    def room_for_others(self) -> int:
        """How many lines of other processes the buffer takes now without pushing any out
        (read without the lock: a stale answer costs one batch read early or late)."""
        children = self.from_children
        if children.bytes >= children.max_bytes:
            return 0
        return max(children.max_lines - len(children.items), 0)

    def take(self) -> Optional[Waiting]:
        """For the encoder: what waits (``Waiting``); None when nothing does."""
        with self.lock:
            if not self.pending.items and not self.from_children.items:
                return None
            items, gap = self.pending.take()
            from_children, child_gap = self.from_children.take()
            accounted, self._accounted = self._accounted, {}
        return Waiting(items, from_children, gap + child_gap, accounted)

    def take_over(self, carried: StreamTotals, pids: frozenset[int]) -> None:
        """This process owns the stream from now on, after others whose counts are
        ``carried`` (``Counters.take_over``)."""
        with self.lock:
            self.counters.take_over(carried, pids)

    def lost_with_owner(self, count: int) -> None:
        """``count`` lines this member counted as sent were lost with the process that owned
        the stream (it ended before storing them): dropped, not sent."""
        with self.lock:
            if self.state is not WriterState.ABANDONED:
                self.counters.sent -= count
                self.counters.dropped["lost_with_owner"] += count
                self.progress.notify_all()

    # -- lines settled --------------------------------------------------------------------------

    def settle(self, count: int, batches: int = 0, size: int = 0, *, drop: str = "") -> None:
        """``count`` lines sent (in ``batches`` requests of ``size`` bytes), or dropped for
        ``drop``.  No count changes once the stream was abandoned."""
        with self.lock:
            if self.state is WriterState.ABANDONED:
                return
            counters = self.counters
            if drop:
                counters.dropped[drop] += count
            else:
                counters.sent += count
                counters.batches += batches
                counters.bytes_sent += size
            self.progress.notify_all()

    def count(self, update: Callable[[Counters], None]) -> None:
        """Apply ``update`` to the counters (unless abandoned) and wake those waiting on
        progress.  ``update`` is lelog's own and only adds numbers."""
        with self.lock:
            if self.state is not WriterState.ABANDONED:
                update(self.counters)
                self.progress.notify_all()

    def count_reentrant(self) -> None:
        """One line accepted and dropped as ``reentrant`` (docs/writer.md#re-entry), counted
        without the lock: the caller is on a thread inside lelog that may hold it."""
        self._reentrant.append(1)

    def fold_reentrant(self) -> None:
        """Move ``count_reentrant``'s tally into the counters (``lock`` held).  ``pop`` is
        atomic too: a line tallied meanwhile is folded now or by the next call."""
        tally, counters = self._reentrant, self.counters
        while tally:
            tally.pop()
            counters.accepted += 1
            counters.dropped["reentrant"] += 1

    def unsettled(self) -> int:
        with self.lock:
            return self.counters.accepted - self.counters.settled()

    def settle_the_rest(self, reason: str) -> None:
        """Count every line not yet settled as dropped for ``reason`` (the end of a stream)."""
        with self.lock:
            self.fold_reentrant()
            counters = self.counters
            left = counters.accepted - counters.settled()
            if left > 0 and self.state is not WriterState.ABANDONED:
                counters.dropped[reason] += left
                self.progress.notify_all()

    def wait_settled(self, target: int, deadline: Deadline) -> bool:
        """Wait until ``target`` lines are settled, at most until ``deadline``."""
        counters = self.counters
        with self.lock:
            return self.progress.wait_for(lambda: counters.settled() >= target, deadline.remaining())

    # -- the record of backend calls ------------------------------------------------------------

    def call_ended(self, ok: bool) -> None:
        """A backend call succeeded (a close then gets its own budget again) or failed."""
        with self.lock:
            self.failing = not ok
            if ok:
                self.ok_calls += 1
                self.spent = None

    def snapshot(self, history_lines: int, *, locked: bool = True) -> Stats:
        """The counts now; ``locked=False`` reads them without the lock (a caller that may
        hold it already: a signal handler interrupting its own thread), possibly mid-update."""
        if not locked:
            return self.counters.snapshot(
                history_lines=history_lines, closed=self.state in ENDED, reentrant=len(self._reentrant)
            )
        with self.lock:
            self.fold_reentrant()
            return self.counters.snapshot(history_lines=history_lines, closed=self.state in ENDED)
