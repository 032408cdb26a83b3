"""``StreamRegistry``: one stream per far end, account and key in a process, shared by the
writers whose lifetimes overlap (docs/writer.md#one-stream-per-key).

``share`` gives a new writer the engine of a live stream on its identity (one more user,
ending a pending hand-off), or builds the stream's engine.  ``leave`` counts writers out;
the last one out finishes the stream, unless it lets go under ``logging``'s module lock:
then the stream waits for the configuration call to return, so a replacement built by the
same call takes it on (docs/writer.md#hand-off).  A finished engine stays registered until
``forget``: a new engine on its identity gets it as its predecessor, to wait for.

The registry owns its entries: each writer's ``Membership`` (whether it handed the stream
on) and each stream's users and pending hand-off are here, not in the engines.  Generic over
the engine (``Member``), so it is tested with stand-ins.

Lock: ``_lock`` guards the entries; it is held for dict and list operations and the
pure comparison of two settings tuples, and ``build`` (which only makes objects, no I/O and
no lelog lock); nothing else is called under it, and it is never taken under an engine's
lock, so it cannot deadlock.
"""

from __future__ import annotations

import enum
import threading
import weakref
from typing import Callable, Generic, Hashable, Optional, Protocol, TypeVar

import attrs

__all__ = ["Member", "Membership", "Outcome", "Settings", "StreamRegistry"]

#: A stream's settings that its first writer decides for every writer on it, by name; a later
#: writer's None asks for nothing (it matches any value).
Settings = tuple[tuple[str, object], ...]


class Member(Protocol):
    """What the registry asks of an engine."""

    @property
    def accepting(self) -> bool:
        """It takes lines (it is not closing or finished)."""

    @property
    def elsewhere(self) -> bool:
        """Its stream is another process's (a fork child's parent holds it)."""


E = TypeVar("E", bound=Member)


class Outcome(enum.Enum):
    """What a writer letting go of its stream came to."""

    #: Other writers still use the stream.
    SHARED = "shared"
    #: The last writer left under a configuration call: the stream waits for a successor.
    HANDOFF = "handoff"
    #: The last writer left: it finishes the stream.
    LAST = "last"
    #: The stream is another process's: nothing to finish here, and nothing handed on.
    ELSEWHERE = "elsewhere"


@attrs.define(eq=False)
class Membership:
    """One writer's hold on a stream."""

    #: Another writer took the stream on: it let go while others still used it, or a
    #: successor took its hand-off.  Set under the registry's lock.
    handed_on: bool = False
    #: What letting go came to (None while it holds the stream).
    outcome: Optional[Outcome] = None


@attrs.define(eq=False)
class _Entry:
    settings: Settings
    users: int = 1
    handoff: list[Membership] = attrs.Factory(list)


class StreamRegistry(Generic[E]):
    """The streams of this process by identity (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Weakly, both ways: an engine nobody holds and no worker runs for is gone, and a
        # new writer on its key starts a new stream.
        self._engines: weakref.WeakValueDictionary[Hashable, E] = weakref.WeakValueDictionary()
        self._entries: weakref.WeakKeyDictionary[E, _Entry] = weakref.WeakKeyDictionary()

    def share(
        self, identity: Hashable, settings: Settings, build: Callable[[Optional[E]], E]
    ) -> tuple[E, Optional[Membership], list[str]]:
        """The engine a new writer with ``settings`` is to use, its membership, and the
        settings that differ from the stream's, naming both values: a live stream's engine,
        or one made by ``build(predecessor)``, ``predecessor`` being the engine still
        finishing this identity's previous stream.

        A writer that differs from a stream other writers use is refused: the membership is
        None and nothing has changed.  A replacement taking on a pending hand-off (every
        writer let go inside a configuration call) takes it on with the stream's settings,
        so the lines of the configuration it replaces stay in the same log; the caller says
        so.  Only a spool it asks for that the stream does not have refuses it: that cannot
        be kept."""
        with self._lock:
            live = self._engines.get(identity)
            entry = None if live is None else self._entries.get(live)
            if live is not None and entry is not None and self._joinable(live, entry):
                differing = [
                    (name, f"{name}={mine!r} (the first writer has {theirs!r})")
                    for (name, mine), (_, theirs) in zip(settings, entry.settings)
                    if mine is not None and mine != theirs
                ]
                conflicts = [text for _, text in differing]
                replacing = entry.users == 0 and bool(entry.handoff)
                if conflicts and (not replacing or any(name == "spool_dir" for name, _ in differing)):
                    return live, None, conflicts
                entry.users += 1
                for handed in entry.handoff:  # the pending hand-off is taken: they handed on
                    handed.handed_on = True
                entry.handoff = []
                return live, Membership(), conflicts
            engine = build(live)
            self._engines[identity] = engine
            self._entries[engine] = _Entry(settings)
            return engine, Membership(), []

    @staticmethod
    def _joinable(engine: E, entry: _Entry) -> bool:
        return engine.accepting and (entry.users > 0 or bool(entry.handoff) or engine.elsewhere)

    def leave(self, identity: Hashable, engine: E, membership: Membership, *, handoff: bool) -> Outcome:
        """A writer lets go of ``engine``; ``handoff``: it does so inside a configuration call.

        A writer that leaves others on the stream has handed it on; one that leaves a
        hand-off pending has handed it on only once a successor takes it (``share``)."""
        with self._lock:
            entry = self._entry(identity, engine)
            if entry is None:  # already forgotten: it finished
                outcome = Outcome.LAST
            else:
                entry.users -= 1
                if entry.users > 0:
                    membership.handed_on = True
                    outcome = Outcome.SHARED
                elif engine.elsewhere:
                    outcome = Outcome.ELSEWHERE  # stays registered for a later writer of this child
                elif handoff:
                    entry.handoff.append(membership)
                    outcome = Outcome.HANDOFF
                else:
                    outcome = Outcome.LAST  # registered, not joinable, until forget()
            membership.outcome = outcome
            return outcome

    def handoff_pending(self, identity: Hashable, engine: E) -> bool:
        with self._lock:
            entry = self._entry(identity, engine)
            return entry is not None and bool(entry.handoff)

    def expire_handoff(self, identity: Hashable, engine: E) -> bool:
        """End a pending hand-off nobody took; True when the caller is to finish the stream."""
        with self._lock:
            entry = self._entry(identity, engine)
            if entry is None or not entry.handoff or entry.users:
                return False
            entry.handoff = []  # their writers handed nothing on: the stream finishes as theirs
            return True

    def forget(self, identity: Hashable, engine: E) -> Optional[E]:
        """A finished engine leaves the registry: a new writer on its key starts a new log,
        without waiting for it.  Returns the engine now registered for ``identity`` (a
        successor built while this one was finishing), if any."""
        with self._lock:
            current = self._engines.get(identity)
            if current is engine:
                del self._engines[identity]
                return None
            return current

    def after_fork_in_child(self) -> None:
        """A fresh lock (a parent thread may have held it); a hand-off the parent was
        waiting for is the child's to finish as a child does."""
        self._lock = threading.Lock()
        for entry in self._entries.values():
            entry.handoff = []

    def _entry(self, identity: Hashable, engine: E) -> Optional[_Entry]:
        """``engine``'s entry while it is the one registered for ``identity``."""
        return self._entries.get(engine) if self._engines.get(identity) is engine else None
