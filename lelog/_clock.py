"""Time as the writer sees it: an injectable clock and one ``Deadline`` value.

The writer reads time only through a ``Clock``, so its tests drive time instead of sleeping
(``lelog.testing.ManualClock``).  A ``Deadline`` is made once, where a budget starts (a
``close()``, one attempt of a push), and handed down as it is, to the retry loop and the HTTP
timeouts: nothing converts between absolute and relative times on the way
(docs/writer.md#one-deadline).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Protocol

import attrs

__all__ = ["Clock", "Deadline", "SystemClock"]


class Clock(Protocol):
    """Where the writer gets the time from, and how it waits without a wake-up event."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    def sleep(self, seconds: float) -> None:
        # Event.wait rather than time.sleep: the same primitive as every other wait.
        threading.Event().wait(max(seconds, 0.0))


SYSTEM_CLOCK = SystemClock()


@attrs.frozen
class Deadline:
    """A point in monotonic time by which something must be done.

    ``now`` is the clock it is read against (a ``Clock.monotonic``); a ``RetryPolicy``'s or a
    writer's, so a test clock moves every deadline derived from it.
    """

    end: float
    now: Callable[[], float] = attrs.field(default=time.monotonic, eq=False, repr=False)

    @classmethod
    def after(cls, seconds: float, now: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(now() + seconds, now)

    def remaining(self) -> float:
        """Seconds left, never below zero."""
        return max(self.end - self.now(), 0.0)

    def expired(self) -> bool:
        return self.now() >= self.end

    def share(self, fraction: float) -> Deadline:
        """An earlier deadline that leaves ``1 - fraction`` of what is left for what follows."""
        start = self.now()
        return Deadline(start + max(self.end - start, 0.0) * fraction, self.now)

    def earliest(self, other: Deadline) -> Deadline:
        return self if self.end <= other.end else other

    def __float__(self) -> float:
        """Seconds left: a backend that takes ``deadline`` as a number of seconds still works."""
        return self.remaining()
