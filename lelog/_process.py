"""The process-wide part of lelog: the streams and their writers, the exit hook, the fork hook.

One stream per far end, account and key in a process (docs/writer.md#one-stream-per-key):
``share`` gives a new writer the engine of a live stream on its identity, ``leave`` counts
writers out, and the last one out finishes the stream, unless it lets go under
``logging``'s module lock: then the stream waits for the configuration call to return, so
a replacement handler built by the same call takes it on (a hand-off).

One ``os.register_at_fork`` registration runs every after-fork step lelog needs, in the order
they were added (docs/writer.md#process).  The exit hook finishes every open writer in
parallel within one deadline, the largest ``close_timeout`` among them
(docs/writer.md#one-deadline).
"""

from __future__ import annotations

import atexit
import enum
import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Optional

from ._clock import Deadline

if TYPE_CHECKING:
    from ._writer import StreamWriter

__all__ = [
    "Outcome",
    "after_fork_in_child",
    "close_all",
    "configuration_over",
    "expire_handoff",
    "finish_together",
    "forget",
    "holding_logging_lock",
    "leave",
    "open_writers",
    "register",
    "share",
    "unregister",
]

# Engines that may still hold lines: finished at exit, re-initialised in a forked child;
# and the engine of each live stream, by identity, with its writers' count (engine._users)
# and hand-off flag (engine._handoff).  _lock guards all of these; it is held for dict and
# set operations only and nothing is called while it is held, so it cannot deadlock.
_open: weakref.WeakSet[StreamWriter] = weakref.WeakSet()
_streams: dict[Hashable, StreamWriter] = {}
_lock = threading.Lock()
_fork_steps: list[Callable[[], None]] = []


class Outcome(enum.Enum):
    """What ``leave`` made of a writer letting go of its stream."""

    #: Other writers still use the stream.
    SHARED = "shared"
    #: The last writer left under a configuration call: the stream waits for a successor.
    HANDOFF = "handoff"
    #: The last writer left: it finishes the stream.
    LAST = "last"


def share(identity: Hashable, writer: StreamWriter) -> StreamWriter:
    """The engine ``writer`` is to use: that of a live stream on ``identity`` (one more user,
    ending a pending hand-off), else ``writer`` itself, now the stream's engine."""
    with _lock:
        engine = _streams.get(identity)
        if engine is not None and not engine.closed_engine():
            engine._users += 1
            engine._handoff = False
            return engine
        _streams[identity] = writer
        writer._users = 1
        return writer


def leave(identity: Hashable, engine: StreamWriter, *, handoff: bool) -> Outcome:
    """One writer of ``engine`` lets go; ``handoff``: it does so inside a configuration call."""
    with _lock:
        engine._users -= 1
        if engine._users > 0:
            return Outcome.SHARED
        if handoff:
            engine._handoff = True
            return Outcome.HANDOFF
        if _streams.get(identity) is engine:
            del _streams[identity]
        return Outcome.LAST


def expire_handoff(identity: Hashable, engine: StreamWriter) -> bool:
    """End a pending hand-off nobody took; True when the caller is to finish the stream."""
    with _lock:
        if not engine._handoff or engine._users:
            return False
        engine._handoff = False
        if _streams.get(identity) is engine:
            del _streams[identity]
        return True


def forget(identity: Hashable, engine: StreamWriter) -> None:
    """A finished engine leaves the registry (a new writer on its key starts a new log)."""
    with _lock:
        if _streams.get(identity) is engine:
            del _streams[identity]


def holding_logging_lock() -> bool:
    """Whether this thread holds ``logging``'s module lock (``dictConfig``, ``fileConfig``)."""
    is_owned = getattr(getattr(logging, "_lock", None), "_is_owned", None)
    return bool(is_owned is not None and is_owned())


def configuration_over() -> bool:
    """Whether no thread holds ``logging``'s module lock right now (never waits for it)."""
    lock: Any = getattr(logging, "_lock", None)
    if lock is None or not lock.acquire(blocking=False):
        return lock is None
    lock.release()
    return True


def register(writer: StreamWriter) -> None:
    with _lock:
        _open.add(writer)


def unregister(writer: StreamWriter) -> None:
    with _lock:
        _open.discard(writer)


def open_writers() -> list[StreamWriter]:
    with _lock:
        return list(_open)


def finish_together(
    writers: Iterable[StreamWriter], budget: Optional[float] = None, *, wait: bool = True
) -> None:
    """Close ``writers`` in parallel within one deadline: the largest ``close_timeout``
    among them unless ``budget`` is given.

    Every close is started before any is waited for, so N writers take one budget, not N.
    ``wait=False`` only starts them (a caller under ``logging``'s module lock).
    """
    writers = list(writers)
    if not writers:
        return
    seconds = budget if budget is not None else max(w.options.close_timeout for w in writers)
    deadline = Deadline.after(seconds)
    for writer in writers:
        writer._begin_close(deadline)
    if wait:
        for writer in writers:
            writer._await_close()


def close_all(timeout: Optional[float] = None) -> None:
    """Close every open writer within one shared deadline (the exit hook)."""
    finish_together(open_writers(), timeout)


def after_fork_in_child(step: Callable[[], None]) -> None:
    """Run ``step`` in every forked child, after the steps added before it."""
    _fork_steps.append(step)


def _run_fork_steps() -> None:
    global _lock
    _lock = threading.Lock()  # a parent thread may have held it at the fork
    for step in _fork_steps:
        step()


def _writers_after_fork() -> None:
    for writer in list(_open):
        writer._after_fork_in_child()
    # An engine the parent was handing off is the child's to finish as a child does.
    for engine in list(_streams.values()):
        engine._handoff = False


after_fork_in_child(_writers_after_fork)
atexit.register(close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_run_fork_steps)
