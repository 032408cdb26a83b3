"""The one guard against lelog being entered on a thread that is already inside it.

A thread is inside lelog while it runs one of its entry points: ``StreamHandler.handle``,
``flush`` and ``close``; ``StreamWriter``'s construction, ``write``/``write_line``/
``write_record``, ``open``, ``step``, ``flush``, ``close``, ``stats`` and ``pending``; the
exit hook.  It can be entered again on the same thread before that call returns in three
ways, and none of them may wait on a lock the thread already holds (docs/writer.md#re-entry):

- a signal handler (Python runs it on the main thread between two bytecodes of whatever the
  thread was doing, possibly with a writer's lock held) that logs, writes, flushes or closes;
- a finalizer (``__del__``) that runs on a garbage collection started under a lock;
- a formatter, filter or ``__str__`` that logs while its record is being formatted.

Such a call takes no lock.  Lines and closes are deferred: they run when the outermost entry
returns, in order, on the same thread, holding nothing, with the thread still marked busy.
A flush answers False at once, and counts are read without the lock.  Calls deferred from
a deferred call are allowed ``MAX_DEPTH`` deep (a formatter that logs every time it formats
would otherwise loop); beyond that, or beyond ``MAX_DEFERRED`` waiting, a call's lines are
counted (``reentrant``, without a lock: ``Ledger.count_reentrant``), never lost silently.

lelog's own threads (a writer's worker, the spool's, the fork channel's reader) are marked
for good: they are always busy and never leave, so nothing can be deferred there.  A record
logged on them is lelog's own (its HTTP client's ``httpx``/``httpcore`` records) and goes
to no lelog stream; a line a finalizer writes there is counted, and a close it makes runs
on a thread of its own.

Everything here is per thread (a ``threading.local``), so it takes no lock at all.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from typing import Callable, Iterator, Optional

__all__ = [
    "MAX_DEFERRED",
    "MAX_DEPTH",
    "defer",
    "entered",
    "in_own_thread",
    "leave",
    "mark_own_thread",
    "nested",
    "own_io",
    "resident",
    "run_deferred",
    "state",
]

#: How deep a chain of calls deferred from deferred calls may go (a signal during a deferred
#: call is depth 2; a formatter that always logs stops there).
MAX_DEPTH = 2
#: How many deferred calls one thread may hold while its outermost entry runs.
MAX_DEFERRED = 10_000

#: A deferred call, what counts its lines when it cannot run, and its depth.
Deferred = tuple[Callable[[], object], Callable[[], None], int]


class _ThreadState(threading.local):
    # Class defaults, not getattr(..., default): a miss on a thread-local raises and
    # swallows an AttributeError, 0.3 us per record (benchmarks/: caller-cost row).

    #: Inside a lelog entry point (always, on lelog's own threads).  The entry points read
    #: this one attribute on their fast path.
    busy = False
    #: Doing lelog's own I/O: one of its threads, or a caller's thread while it runs a
    #: stream's rounds or final sequence itself.
    own = False
    #: One of lelog's own threads, for its whole life: it never leaves lelog, so a call
    #: deferred there would never run.
    resident = False
    #: The depth of the deferred call now running (0 outside deferred calls).
    depth = 0
    #: ``run_deferred`` is running on this thread (a deferred call's own exit leaves the
    #: rest of the queue to it, so the queue is drained in a loop, not by recursion).
    draining = False
    deferred: Optional[deque[Deferred]] = None


state = _ThreadState()


def mark_own_thread() -> None:
    """Mark the calling thread as lelog's own, for its whole life."""
    state.own = state.busy = state.resident = True


def resident() -> bool:
    """True on one of lelog's own threads (nothing deferred there could ever run)."""
    return state.resident


def in_own_thread() -> bool:
    """True on a thread doing lelog's own I/O: records logged there must not be captured."""
    return state.own


@contextlib.contextmanager
def own_io() -> Iterator[None]:
    """Run lelog's own I/O on a caller's thread (a stream's rounds, or its final sequence
    when there is no worker): marked as lelog's own meanwhile, and inside lelog (what a
    finalizer defers there runs when the block's outermost entry returns)."""
    st = state
    was = st.own
    with entered():
        st.own = True
        try:
            yield
        finally:
            st.own = was


@contextlib.contextmanager
def entered() -> Iterator[None]:
    """Mark a block as inside lelog (an entry point's body); on the way out of the outermost
    one, run what was deferred meanwhile.  Calls left over from a replay that an exception
    cut short (``run_deferred``) run first, so a close or the exit hook comes after them.
    The hot entry points inline this, without the look at leftovers."""
    st = state
    was = st.busy
    if not was and st.deferred:
        run_deferred()
    st.busy = True
    try:
        yield
    finally:
        if was:
            st.busy = True
        else:
            leave(st)


def nested() -> bool:
    """This thread is inside lelog already (lelog's own threads always are): an entry point
    called now must not take a lock (it is deferred, or answers at once)."""
    return state.busy


def defer(call: Callable[[], object], count_lost: Callable[[], None]) -> None:
    """Run ``call`` (an entry point's body) when this thread's outermost lelog entry returns;
    on lelog's own threads, or past the bounds, count its lines with ``count_lost`` (which
    takes no lock) instead.  Call with ``state.busy`` set."""
    st = state
    queue = st.deferred
    if queue is None:
        queue = st.deferred = deque()
    depth = st.depth + 1
    if st.resident or depth > MAX_DEPTH or len(queue) >= MAX_DEFERRED:
        count_lost()
        return
    queue.append((call, count_lost, depth))


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


def run_deferred() -> None:
    """Run what was deferred on this thread, in order: an entry point calls it on its way
    out, after clearing ``busy``, when the queue is not empty.

    The thread stays ``busy`` while it replays: a signal meanwhile is deferred behind what
    waits, so order holds.  Each deferred call is an entry point's body, run as the entry
    point would run it; what it defers joins the queue one level deeper.  A call that
    raises (a user's filter) is reported on the ``lelog`` logger and the rest still run: it
    is not the exception of the call returning now.  A signal handler's ``SystemExit`` or
    ``KeyboardInterrupt`` is raised once the queue is empty (a handler that closes, then
    calls ``sys.exit``, has its close run behind the lines before it)."""
    st = state
    queue = st.deferred
    if st.draining:
        return
    raised: Optional[BaseException] = None
    while queue:  # checked again once busy is cleared: a signal may have queued a call
        st.draining = True
        st.busy = True
        try:
            while queue:
                call, _count_lost, depth = queue.popleft()
                st.depth = depth
                try:
                    call()
                except Exception as exc:
                    _report(exc)
                except BaseException as exc:  # SystemExit, KeyboardInterrupt: after the rest
                    raised = raised or exc
        finally:
            st.busy = st.draining = False
            st.depth = 0
    if raised is not None:
        raise raised


def _report(exc: Exception) -> None:
    """A deferred call failed: say so on lelog's own logger (it reaches no lelog stream)."""
    try:
        logging.getLogger("lelog").warning(
            "lelog: a call deferred until its thread left lelog failed: %r", exc
        )
    except Exception:  # a broken stderr must not break the caller
        pass
