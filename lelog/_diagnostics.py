"""lelog's own warnings: rate-limited, and never through the handler they are about.

They go to the ``lelog`` logger, which does not propagate: a ``StreamHandler`` on the root
logger never sees them (docs/hazards.md#recursion).  With no handler of its own configured, Python's
last-resort handler prints them to stderr.  Each distinct failure is reported at most once
per window, with a count of the repeats that were held back (docs/hazards.md#noisy-diagnostics).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Callable

from . import _lifecycle

__all__ = ["RateLimitedWarnings", "logger"]

logger = logging.getLogger("lelog")
logger.propagate = False


class RateLimitedWarnings:
    """One warning per kind per ``window`` seconds; repeats are counted, not printed."""

    def __init__(self, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        # Guards the two dicts only; logging happens after it is released.  Renewed in a
        # forked child, where a parent thread may have held it at the fork.
        self._lock = threading.Lock()
        _instances.add(self)

    def warn(self, kind: str, message: str) -> bool:
        """Log ``message`` unless ``kind`` was logged within the window; True when logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.window:
                self._held[kind] = self._held.get(kind, 0) + 1
                return False
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        if held:
            message += f" ({held} similar warning{'s' if held != 1 else ''} held back)"
        # dictConfig's disable_existing_loggers (on by default) disables every logger that
        # existed before the call, this one included.  These warnings are how a user learns
        # that lines were lost, so that side effect does not silence them; the logger's
        # level and handlers are the user's to set.
        logger.disabled = False
        logger.warning("lelog: %s", message)
        return True


_instances: weakref.WeakSet[RateLimitedWarnings] = weakref.WeakSet()


def _renew_locks_in_child() -> None:
    for warnings in list(_instances):
        warnings._lock = threading.Lock()


_lifecycle.after_fork_in_child(_renew_locks_in_child)
