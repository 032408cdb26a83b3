"""The process's life as lelog sees it: the one fork hook, the exit hook, daemon threads, and
whether this thread holds ``logging``'s module lock.

A leaf: it knows no writer.  What the exit hook finishes is anything that can be finished
(``Finishable``); engines register themselves (docs/writer.md#process).

One ``os.register_at_fork`` registration runs every after-fork step lelog needs, in the order
they were added; no other module registers a hook of its own.  The exit hook finishes every
registered stream in parallel within one deadline, the largest ``close_timeout`` among them
(docs/writer.md#one-deadline).

Lock: ``_lock`` guards the set of registered streams, for set operations only; nothing is
called while it is held, so it cannot take part in a deadlock.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import weakref
from typing import Any, Callable, Iterable, Optional, Protocol

from . import _reentry
from ._clock import Deadline

__all__ = [
    "Finishable",
    "after_fork_in_child",
    "before_fork",
    "configuration_over",
    "finish_together",
    "holding_logging_lock",
    "register",
    "registered",
    "start_daemon",
    "unregister",
]


class Finishable(Protocol):
    """A stream the exit hook can finish: start its close, then wait for it."""

    @property
    def close_timeout(self) -> float: ...

    def begin_close(self, deadline: Deadline) -> None: ...

    def await_close(self) -> None: ...


_lock = threading.Lock()
_open: weakref.WeakSet[Any] = weakref.WeakSet()  # Finishable; WeakSet is not generic over a Protocol
_fork_steps: list[Callable[[], None]] = []
_before_fork_steps: list[Callable[[], None]] = []


def register(stream: Finishable) -> None:
    """Finish ``stream`` at exit unless it is unregistered first."""
    with _lock:
        _open.add(stream)
    _hook_pool_exits()


def _hook_pool_exits() -> None:
    """Celery's prefork pool children leave by ``os._exit``, skipping the exit hook; the
    last thing they run is the ``worker_process_shutdown`` signal, so in a process where
    celery is loaded the exit hook is connected to it too (celery is never imported here)."""
    signals = sys.modules.get("celery.signals")
    shutdown = getattr(signals, "worker_process_shutdown", None)
    if shutdown is None:
        return
    try:
        shutdown.connect(_close_at_pool_exit, weak=False, dispatch_uid="lelog.close_all")
    except Exception:  # another celery than this was written for: the exit hook as before
        pass


def _close_at_pool_exit(**_: Any) -> None:
    close_all()


def unregister(stream: Finishable) -> None:
    with _lock:
        _open.discard(stream)


def registered() -> list[Finishable]:
    with _lock:
        return list(_open)


def finish_together(
    streams: Iterable[Finishable], budget: Optional[float] = None, *, wait: bool = True
) -> None:
    """Close ``streams`` in parallel within one deadline: the largest ``close_timeout`` among
    them unless ``budget`` is given.

    Every close is started before any is waited for, so N streams take one budget, not N.
    ``wait=False`` only starts them (a caller under ``logging``'s module lock).  An entry
    point (docs/writer.md#re-entry): a signal handler that writes meanwhile is deferred.
    """
    streams = list(streams)
    if not streams:
        return
    seconds = budget if budget is not None else max(s.close_timeout for s in streams)
    deadline = Deadline.after(seconds)
    with _reentry.entered():
        for stream in streams:
            stream.begin_close(deadline)
        if wait:
            for stream in streams:
                stream.await_close()


def close_all(timeout: Optional[float] = None) -> None:
    """The exit hook: finish every registered stream within one shared deadline.  An entry
    point as a whole (docs/writer.md#re-entry): a finalizer that closes a writer while the
    registered streams are listed is deferred, never waits on the lock held to list them."""
    with _reentry.entered():
        finish_together(registered(), timeout)


def start_daemon(target: Callable[[], object], name: str) -> Optional[threading.Thread]:
    """Start a daemon thread, or return None where Python no longer starts threads (at
    interpreter shutdown, docs/hazards.md#no-thread-at-shutdown): its owner then does the
    work on its own thread.  Safe under the owner's lock: ``start()`` waits only for the new
    thread's bootstrap, which takes no lelog lock."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    try:
        if sys.is_finalizing():
            raise RuntimeError("interpreter shutdown")
        thread.start()
    except RuntimeError:  # "can't create new thread at interpreter shutdown"
        return None
    return thread


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


def after_fork_in_child(step: Callable[[], None]) -> None:
    """Run ``step`` in every forked child, after the steps added before it."""
    _fork_steps.append(step)


def before_fork(step: Callable[[], None]) -> None:
    """Run ``step`` in a process about to fork (the fork children's channel is made there)."""
    _before_fork_steps.append(step)


def _run_before_fork() -> None:
    for step in _before_fork_steps:
        step()


def _run_fork_steps() -> None:
    global _lock
    _lock = threading.Lock()  # a parent thread may have held it at the fork
    for step in _fork_steps:
        step()


atexit.register(close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_run_before_fork, after_in_child=_run_fork_steps)
