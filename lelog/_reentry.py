"""The one guard against lelog being entered on a thread that is already inside it.

A thread is inside lelog while it runs one of its entry points: ``StreamHandler.handle``,
``StreamWriter.write``/``write_line``/``write_record``/``flush``/``close``.  It can be entered
again on the same thread before that call returns in three ways, and none of them may wait on
a lock the thread already holds (docs/writer.md#re-entry):

- a signal handler (Python runs it on the main thread between two bytecodes of whatever the
  thread was doing, possibly with a writer's lock held) that logs, writes, flushes or closes;
- a finalizer (``__del__``) that runs on a garbage collection started under a lock;
- a formatter, filter or ``__str__`` that logs while its record is being formatted.

Such a call is deferred: it runs when the outermost entry returns, in order, on the same
thread, holding nothing, with the thread still marked busy.  Calls deferred from a deferred call are allowed ``MAX_DEPTH`` deep
(a formatter that logs every time it formats would otherwise loop); beyond that, or beyond
``MAX_DEFERRED`` waiting, the call's lines are counted (``reentrant``), never lost silently.

lelog's own threads (a writer's worker, the spool's, the fork channel's reader) are marked
for good: a record logged on them is lelog's own (its HTTP client's ``httpx``/``httpcore``
records) and goes to no lelog stream.

Everything here is per thread (a ``threading.local``), so it takes no lock at all.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from typing import Callable, Iterator, Optional

__all__ = [
    "MAX_DEFERRED",
    "MAX_DEPTH",
    "defer",
    "entered",
    "nested",
    "in_own_thread",
    "mark_own_thread",
    "own_io",
    "leave",
    "run_deferred",
    "run_deferred_for",
    "state",
]

#: How deep a chain of calls deferred from deferred calls may go (a signal during a deferred
#: call is depth 2; a formatter that always logs stops there).
MAX_DEPTH = 2
#: How many deferred calls one thread may hold while its outermost entry runs.
MAX_DEFERRED = 10_000

#: A deferred call, what counts its lines when it cannot run, its depth, and the stream it
#: writes to (None: none in particular).
Deferred = tuple[Callable[[], object], Callable[[], None], int, object]


class _ThreadState(threading.local):
    # Class defaults, not getattr(..., default): a miss on a thread-local raises and
    # swallows an AttributeError, 0.3 us per record (benchmarks/: caller-cost row).

    #: Inside a lelog entry point (always, on lelog's own threads).  The entry points read
    #: this one attribute on their fast path.
    busy = False
    #: Doing lelog's own I/O: one of its threads, or a caller's thread while it runs a
    #: stream's rounds or final sequence itself.
    own = False
    #: The depth of the deferred call now running (0 outside deferred calls).
    depth = 0
    #: ``run_deferred`` is running on this thread (a deferred call's own exit leaves the
    #: rest of the queue to it, so the queue is drained in a loop, not by recursion).
    draining = False
    deferred: Optional[deque[Deferred]] = None


state = _ThreadState()


def mark_own_thread() -> None:
    """Mark the calling thread as lelog's own, for its whole life."""
    state.own = True
    state.busy = True


def in_own_thread() -> bool:
    """True on a thread doing lelog's own I/O: records logged there must not be captured."""
    return state.own


@contextlib.contextmanager
def own_io() -> Iterator[None]:
    """Run lelog's own I/O on a caller's thread (a stream's rounds, or its final sequence
    when there is no worker): marked as a lelog thread meanwhile."""
    st = state
    was = st.own, st.busy
    st.own = st.busy = True
    try:
        yield
    finally:
        st.own, st.busy = was


@contextlib.contextmanager
def entered() -> Iterator[None]:
    """Mark a block as inside lelog (an entry point's body); on the way out of the outermost
    one, run what was deferred meanwhile.  The hot entry points inline this."""
    st = state
    was = st.busy
    st.busy = True
    try:
        yield
    finally:
        if was:
            st.busy = True
        else:
            leave(st)


def nested() -> bool:
    """This thread is inside lelog already and is not one of lelog's own I/O threads: an
    entry point called now must not take a lock (it is deferred, or answers at once)."""
    st = state
    return st.busy and not st.own


def defer(call: Callable[[], object], count_lost: Callable[[], None], target: object = None) -> None:
    """Run ``call`` (an entry point's body) when this thread's outermost lelog entry returns; or,
    past the bounds, count its lines with ``count_lost``.  Call with ``state.busy`` set on a
    thread that is not lelog's own."""
    st = state
    queue = st.deferred
    if queue is None:
        queue = st.deferred = deque()
    depth = st.depth + 1
    if depth > MAX_DEPTH or len(queue) >= MAX_DEFERRED:
        count_lost()
        return
    queue.append((call, count_lost, depth, target))


def leave(st: _ThreadState) -> None:
    """The way out of an outermost entry point: replay what was deferred while still busy
    (a signal meanwhile queues behind it), else clear ``busy``, then look once more (a
    signal between the look and the clearing queued a call)."""
    if st.deferred:
        run_deferred()
    else:
        st.busy = False
        if st.deferred:
            run_deferred()


def run_deferred_for(target: object) -> None:
    """Replay now, in order, the deferred calls that write to ``target`` (a close from a
    signal handler takes the lines deferred for its stream first); the others wait."""
    st = state
    queue = st.deferred
    if not queue or st.draining:
        return
    mine = [item for item in queue if item[3] is target]
    if not mine:
        return
    for item in mine:
        queue.remove(item)
    st.draining = True
    outer = st.depth
    try:
        for call, _count_lost, depth, _target in mine:
            st.depth = depth
            call()
    finally:
        st.draining = False
        st.depth = outer


def run_deferred() -> None:
    """Run what was deferred on this thread, in order: an entry point calls it on its way
    out, after clearing ``busy``, when the queue is not empty.

    The thread stays ``busy`` while it replays: a signal meanwhile is deferred behind what
    waits, so order holds.  Each deferred call is an entry point's body, run as the entry
    point would run it; what it defers joins the queue one level deeper.  A signal
    handler's exception (``KeyboardInterrupt``) propagates; what is left waits for the next
    entry's exit."""
    st = state
    queue = st.deferred
    if st.draining:
        return
    while queue:  # checked again once busy is cleared: a signal may have queued a call
        st.draining = True
        st.busy = True
        try:
            while queue:
                call, _count_lost, depth, _target = queue.popleft()
                st.depth = depth
                call()
        finally:
            st.busy = st.draining = False
            st.depth = 0
