"""``Look``: what a live stream is that this host has no trace of, before a writer opens it.

A ``POST /stream`` on a live stream wipes it (docs/protocol.md#reopen-wipes).  The host-wide
stream lock keeps the processes of one host from doing that to each other; a writer that
holds the lock and finds no trace of the stream here (no history file, leftover, log to
continue or predecessor, ``Sharing.unseen_since``) asks the service first, on the thread
that opens the stream (docs/writer.md#a-writer-out-of-reach):

* not live (an empty ``PUT`` answers ``stream: not found``): it is opened;
* live, and its newest line is no older than this writer's arrival: a writer on another host
  or in another container writes it now.  The stream is joined: pushed to, never opened,
  stored or closed here (that is the other writer's);
* live, and every line it holds is older (or it holds none): a run that was killed elsewhere
  left it.  What it holds is stored as that run's log, with a marker, and the stream closed,
  as its owner would have; then it is opened for this run;
* live, and what it holds cannot be read (a permanent answer to the tail): it is joined, as
  a writer's elsewhere would be (never wiped on a guess);
* live, and the backend cannot show its lines: it is opened, and the wipe said.

A writer elsewhere that is alive pushes its lines at least every flush interval (1 s by
default), so the look waits for more lines for ``LOOK_QUIET`` (3 s) after what the stream
held: a line newer than this writer's arrival in that time is a live writer's.  The file
store knows its writers: a key whose lock another process holds is a writer's elsewhere.

Each call of ``step`` is one attempt (it raises ``LogServiceError``): a failed attempt is
retried by the caller, and goes on from where it failed.  ``live`` says the stream was found
live even when no attempt got further (the caller then joins it at the close: ``Delivery``).
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Optional, Protocol, runtime_checkable

from ._backend import ONE_ATTEMPT, Backend
from ._clock import Deadline
from ._exceptions import LogServiceError, StreamNotFound
from ._line import Line, ndjson, time_seconds
from ._stats import count_of

__all__ = ["Found", "LiveLines", "Look"]

#: How long a look waits for a line after the last it read: longer than a live writer's
#: flush interval (the service sends what it holds at once when a tail connects; a
#: Redis-backed service never says it has sent them all).
LOOK_QUIET = 3.0
#: The longest a look reads (a writer that trickles lines keeps a tail from going quiet).
LOOK_FOR = 8.0
#: The most lines a live stream holds (docs/protocol.md#retention), a little over.
LOOK_LINES = 5100

#: A leftover marker: (text, pos, time) → an encoded ``[lelog]`` line (``Pipeline.marker``).
Marker = Callable[[str, int, Optional[str]], bytes]


@runtime_checkable
class LiveLines(Protocol):
    """A backend that shows what a live stream holds now (the service, the file store)."""

    def peek(self, key: str, *, quiet: float = ..., max_lines: int = ..., **opts: Any) -> list[Line]: ...


@runtime_checkable
class KnowsWriters(Protocol):
    """A backend that knows whether another process writes a key now (the file store's lock)."""

    def held_elsewhere(self, key: str) -> bool: ...


class Found(enum.Enum):
    """What the look found, and so what the opener does."""

    #: Not live: open it.
    NOT_LIVE = "not live"
    #: Written by a writer elsewhere now: join it, leave storing and closing to that writer.
    WRITER_ELSEWHERE = "writer elsewhere"
    #: A killed run's: stored and closed (by ``step``), then opened.
    LEFTOVER = "leftover"
    #: Live, and what it holds cannot be read: joined, never wiped on a guess.
    UNREADABLE = "unreadable"
    #: Live, lines unknown (the backend cannot show them): opened, the wipe said.
    UNKNOWN = "unknown"


class Look:
    """One look, by the thread that opens the stream; ``found`` once decided."""

    def __init__(self, backend: Backend, key: str, since: float, marker: Marker) -> None:
        self._backend = backend
        self._key = key
        #: When this writer came to the stream (wall seconds): lines since then are a live writer's.
        self._since = since
        self._marker = marker
        self.found: Optional[Found] = None
        #: The leftover's log, until it is stored and its stream closed.
        self._leftover: Optional[bytes] = None
        #: How many lines the leftover stream held.
        self.held = 0
        #: The empty ``PUT`` found the stream live.
        self.live = False
        #: Why what it holds could not be read (``UNREADABLE``).
        self.unreadable: Optional[LogServiceError] = None

    @property
    def settled(self) -> bool:
        """Decided, and a leftover stored and closed: nothing left to do."""
        return self.found is not None and self._leftover is None

    def step(self, deadline: Deadline) -> Found:
        """Decide (once), and store and close a leftover: one attempt of each call left."""
        if self.found is None:
            self.found = self._decide(deadline)
        if self._leftover is not None:
            self._backend.upload(self._key, self._leftover, deadline=deadline, retry=ONE_ATTEMPT)
            try:
                self._backend.close_stream(self._key, deadline=deadline, retry=ONE_ATTEMPT)
            except StreamNotFound:
                pass  # closed meanwhile, by whoever else found it
            self._leftover = None
        return self.found

    def give_up(self, error: LogServiceError) -> None:
        """The close came before the look decided a live stream: not known whose, so it is
        taken as unreadable (joined)."""
        self.unreadable = self.unreadable or error
        self.found = Found.UNREADABLE

    def warning(self, scrub: Callable[[object], str]) -> Optional[tuple[str, str]]:
        """What was found, said once: (kind, text), errors through ``scrub``; None for a
        stream that was not live."""
        key, held = self._key, self.held
        if self.found is Found.WRITER_ELSEWHERE:
            return (
                "joined",
                f"stream {key!r} is being written by a writer this host cannot reach (on another "
                "host or in another container): this writer streams its lines into it live, and "
                "the stored log is that writer's; give each concurrent run its own key",
            )
        if self.found is Found.LEFTOVER:
            return (
                "leftover_elsewhere",
                f"stream {key!r} was left live by a run that ended elsewhere without closing it: "
                f"the {count_of(held, 'line')} it held {'is' if held == 1 else 'are'} stored as that run's "
                "log, and this run opens it again",
            )
        if self.found is Found.UNREADABLE:
            why = f" ({scrub(self.unreadable)})" if self.unreadable is not None else ""
            return (
                "joined",
                f"stream {key!r} is live with no writer of this host on it, and what it holds could "
                f"not be read{why}: this writer streams its lines into it live and leaves storing "
                "it to the writer that opened it; give each concurrent run its own key",
            )
        if self.found is Found.UNKNOWN:
            return (
                "reopened_live",
                f"stream {key!r} was live already, with no writer of this host on it, and this "
                "backend cannot show its lines: opening it again wipes what it held live; give "
                "each concurrent run its own key",
            )
        return None

    def unstored(self) -> tuple[str, str]:
        """A leftover the close came before storing."""
        return (
            "leftover_elsewhere",
            f"stream {self._key!r} was left live by a run that ended elsewhere without closing "
            f"it: the {count_of(self.held, 'line')} it held could not be stored before this writer's close",
        )

    def _decide(self, deadline: Deadline) -> Found:
        try:
            self._backend.write(self._key, [], deadline=deadline, retry=ONE_ATTEMPT)
        except StreamNotFound:
            return Found.NOT_LIVE
        self.live = True
        backend = self._backend
        if isinstance(backend, KnowsWriters) and backend.held_elsewhere(self._key):
            return Found.WRITER_ELSEWHERE
        if not isinstance(backend, LiveLines):
            return Found.UNKNOWN
        try:
            held = backend.peek(
                self._key,
                quiet=LOOK_QUIET,
                max_lines=LOOK_LINES,
                deadline=deadline.earliest(Deadline.after(LOOK_FOR, deadline.now)),
                retry=ONE_ATTEMPT,
            )
        except LogServiceError as exc:
            if exc.retryable:
                raise
            self.unreadable = exc
            return Found.UNREADABLE
        times = [time_seconds(line.time) for line in held]
        if any(t is not None and t >= self._since for t in times):
            return Found.WRITER_ELSEWHERE
        self.held = len(held)
        self._leftover = self._leftover_log(held)
        return Found.LEFTOVER

    def _leftover_log(self, held: list[Line]) -> bytes:
        """What the leftover stream held, in ``pos`` order, and a marker after it, at its
        last line's time (the log is that run's: ``lelog recover`` compares logs by time)."""
        held = sorted(held, key=lambda line: line.pos)
        next_pos = held[-1].pos + 1 if held else 0
        note = (
            f"the run that wrote this stream elsewhere ended without closing it; this log is "
            f"the {len(held):,} lines the live stream still held (the service keeps the last "
            "5,000), and a new run on this key has started"
        )
        at = held[-1].time if held else None
        return ndjson([*(line.encode() for line in held), self._marker(note, next_pos, at)])
