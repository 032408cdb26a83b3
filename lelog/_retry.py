"""The retry policy: which failures are tried again, and how long to wait.

Waits come from the ``backoff`` package's exponential generator with its full jitter.  The
loop itself is ours because ``backoff``'s decorators wait with ``time.sleep``: a close could
not interrupt them (docs/hazards.md#hang-at-exit).  Here every wait is ``Event.wait``, bounded by the call's
deadline, and a set cancel event ends it at once.
"""

from __future__ import annotations

import email.utils
import threading
import time
from typing import Callable, Optional, TypeVar, Union

import attrs
import backoff

from ._clock import Deadline
from ._exceptions import Cancelled, LogServiceError

__all__ = ["Attempts", "RetryPolicy", "parse_retry_after"]

T = TypeVar("T")

#: Called before each wait with the error that caused it and the wait in seconds.
OnRetry = Callable[[LogServiceError, float], None]


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@attrs.frozen
class RetryPolicy:
    """Capped, jittered exponential backoff with an attempt cap and a total deadline.

    The first wait averages ``first_wait / 2`` (full jitter), each later one grows by
    ``multiplier``, never past ``max_wait``.
    """

    max_attempts: int = 10
    first_wait: float = 1.0
    multiplier: float = 1.5
    max_wait: float = 30.0
    jitter: Callable[[float], float] = backoff.full_jitter
    clock: Callable[[], float] = time.monotonic

    def begin(self, deadline: Union[float, Deadline]) -> Attempts:
        """The retry state of one call that must end by ``deadline`` (a ``Deadline``, or
        seconds from now on this policy's clock)."""
        if not isinstance(deadline, Deadline):
            deadline = Deadline.after(float(deadline), self.clock)
        return Attempts(self, deadline)

    def run(
        self,
        attempt: Callable[[float], T],
        *,
        deadline: Union[float, Deadline],
        cancel: Optional[threading.Event] = None,
        on_retry: Optional[OnRetry] = None,
    ) -> T:
        """Call ``attempt(remaining_seconds)`` until it returns, within ``deadline``.

        ``attempt`` raises ``LogServiceError``; when ``Attempts.next_wait`` says to give up,
        the last error is re-raised.
        """
        attempts = self.begin(deadline)
        sleeper = cancel if cancel is not None else threading.Event()
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled before the call could be made", attempts=attempts.number)
            try:
                return attempt(attempts.remaining())
            except LogServiceError as exc:
                wait = attempts.next_wait(exc)
                if wait is None:
                    raise
                if on_retry is not None:
                    on_retry(exc, wait)
                # Event.wait, not time.sleep: a close sets ``cancel`` and we return at once.
                if sleeper.wait(wait):
                    raise Cancelled(
                        f"cancelled while waiting to retry after: {exc}",
                        status=exc.status,
                        error_msg=exc.error_msg,
                        call=exc.call,
                        attempts=attempts.number,
                    ) from exc


class Attempts:
    """How far one call has got: attempts made, the next wait, the time left.

    ``RetryPolicy.run`` loops over it; the writer's worker keeps one per batch instead, so it
    can go on accepting lines between attempts rather than sleeping in a retry loop.
    """

    __slots__ = ("_policy", "deadline", "_waits", "number")

    def __init__(self, policy: RetryPolicy, deadline: Deadline) -> None:
        self._policy = policy
        self.deadline = deadline
        self._waits = backoff.expo(
            base=policy.multiplier, factor=policy.first_wait, max_value=policy.max_wait
        )
        next(self._waits)  # backoff's generators are primed with one next()
        self.number = 0

    def remaining(self) -> float:
        """Seconds left before the deadline (a small positive floor, so a last try is bounded)."""
        return max(self.deadline.remaining(), 0.001)

    def next_wait(self, exc: LogServiceError) -> Optional[float]:
        """Record a failed attempt; the seconds to wait before the next, or None to give up.

        Gives up on a permanent error, at the attempt cap, and when the wait would pass the
        deadline.  A ``Retry-After`` from the service replaces the computed wait, uncapped.
        """
        self.number += 1
        exc.attempts = self.number
        policy = self._policy
        if not exc.retryable or self.number >= policy.max_attempts:
            return None
        if exc.retry_after is not None:
            wait = exc.retry_after  # never sooner than the service asked; the deadline caps it
        else:
            wait = policy.jitter(next(self._waits))
        if wait >= self.deadline.remaining():
            return None
        return wait
