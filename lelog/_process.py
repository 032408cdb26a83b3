"""The process-wide part of lelog: the writers that are open, the exit hook, the fork hook.

One ``os.register_at_fork`` registration runs every after-fork step lelog needs, in the order
they were added (docs/writer.md#process).  The exit hook finishes every open writer in
parallel within one deadline, the largest ``close_timeout`` among them
(docs/writer.md#one-deadline).
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from ._clock import Deadline

if TYPE_CHECKING:
    from ._writer import StreamWriter

__all__ = ["after_fork_in_child", "close_all", "finish_together", "open_writers", "register", "unregister"]

# Writers that may still hold lines: finished at exit, re-initialised in a forked child.
# _lock guards the set only; nothing is called while it is held, so it cannot deadlock.
_open: weakref.WeakSet[StreamWriter] = weakref.WeakSet()
_lock = threading.Lock()
_fork_steps: list[Callable[[], None]] = []


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


after_fork_in_child(_writers_after_fork)
atexit.register(close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_run_fork_steps)
