"""``Claim``: what a process holds on the host for a stream, and lets go of in one place.

Two things say "this process has stream S" to others: the host-wide stream lock
(``_streamlock``: the holder owns the stream, other processes on the key hand it their lines,
and ``lelog recover`` leaves it alone, docs/writer.md#processes-on-one-key) and the crash
spool (its files, for ``lelog recover`` after a kill).  A process that owns a stream shared
on the host also keeps its history in a file (``_hostwide.HistoryFile``) for whoever takes
the stream over; a member holds a shared lock on the stream's members file instead.

Threads: ``take`` runs on the thread building the engine; ``hold_stream`` and ``take_over``
on the thread that starts the stream or takes it over (a caller's, or the worker); the rest
on the thread finishing the stream; ``forget_in_child`` in a fork child.  ``_lock`` makes
taking and letting go of the stream lock one step each: it is held across the few local
file calls that take or release the lock (never across network I/O), and only the lock
table's lock, a leaf, is taken under it.
"""

from __future__ import annotations

import enum
import functools
import threading
from typing import Callable, Optional

from ._backend import Backend
from ._config import LogConfig
from ._exceptions import ConfigError
from ._hostwide import (
    PRESENCE,
    Carried,
    History,
    HistoryFile,
    Identity,
    Meeting,
    history_joined,
    load_history,
    mark_ended,
    take_ended,
)
from ._options import WriterOptions
from ._runtime import runtime_dir
from ._spool import Spool
from ._streamlock import Holder, StreamLock, StreamName, credential_of, holder_of

__all__ = ["Claim", "Ending", "Hold"]


class Hold(enum.Enum):
    """What asking for the stream lock came to."""

    #: This claim holds it: the process owns the stream.
    HELD = "held"
    #: Another process of the host holds it: this one joins as a member.
    OTHER = "other"
    #: Another process of the host holds it with other credentials (another token): this
    #: one may not join its stream, nor open it over it.
    REFUSED = "refused"
    #: An engine of this process still holds it (a predecessor finishing): ask again later.
    HERE = "here"
    #: No lock can be had (a test double's stream, or no usable runtime directory): the
    #: stream is this process's alone.
    NONE = "none"


class Ending(enum.Enum):
    """How the stream ended for this process, and so what of it stays on the host."""

    #: This process stored the log and closed the stream: nothing stays, and a run of the
    #: same parent that follows moments later continues the log (``mark_ended``).
    STORED = "stored"
    #: Another process of the host took the stream on: the history file stays for it.
    HANDED_ON = "handed on"
    #: The stream is a writer's elsewhere, which stores it (``_look``): nothing stays.
    STORED_ELSEWHERE = "stored elsewhere"
    #: Not stored: the spool stays for ``lelog recover``, the history file for a successor.
    NOT_STORED = "not stored"


class Claim:
    """The stream lock, members' presence, history file and spool of one stream."""

    def __init__(
        self, key: str, config: LogConfig, backend: Backend, warn: Callable[[str, str], None]
    ) -> None:
        self._key = key
        self._config = config
        self._backend = backend
        self._warn = warn
        self.spool: Optional[Spool] = None
        self.history: Optional[HistoryFile] = None
        self._stream_lock: Optional[StreamLock] = None
        self._member = False
        self._lock = threading.Lock()  # renewed in a fork child (forget_in_child)

    def take(
        self, spool_dir: Optional[str], options: WriterOptions, encode_pending: Callable[[], None]
    ) -> None:
        """At construction: the spool (no I/O yet)."""
        if spool_dir is not None and not self._config.skip_closing_stream:
            self.spool = Spool.for_stream(
                spool_dir,
                self._key,
                self._config,
                self._backend,
                encode_pending=encode_pending,
                flush_interval=options.flush_interval,
                budget=options.history_bytes,
                max_lines=options.max_pending_lines,
                max_bytes=options.max_pending_bytes,
                wake_lines=options.max_batch_lines,
                fsync_interval=options.spool_fsync_interval,
            )

    # -- the stream lock ---------------------------------------------------------------------------

    def hold_stream(self) -> Hold:
        """Take the stream's host-wide lock before opening it.  Never raises: a lock that
        cannot be had makes the stream this process's alone, with a warning."""
        name = self._name
        if name is None:
            return Hold.NONE  # a test double: its streams are this process's alone
        with self._lock:
            if self._stream_lock is not None:
                return Hold.HELD
            try:
                self._stream_lock = StreamLock.try_acquire(name, credential=self._credential)
                holder = None if self._stream_lock is not None else holder_of(name)
            except (ConfigError, OSError) as exc:
                failure: Optional[Exception] = exc
            else:
                failure = None
        if failure is not None:
            self._warn("stream_lock", f"stream {self._key!r}: its host-wide lock cannot be had ({failure})")
            return Hold.NONE
        if self._stream_lock is not None:
            return Hold.HELD
        if holder is not None and holder.is_this_process():
            return Hold.HERE
        if holder is not None and holder.purpose == "writer" and holder.credential != self._credential:
            self._warn(
                "credential",
                f"stream {self._key!r} is written by another process on this host ({holder.describe()}) "
                "with another token: lines written here are not sent and are counted as rejected; "
                "give this process the same token, or its own key",
            )
            return Hold.REFUSED
        return Hold.OTHER

    @functools.cached_property
    def _name(self) -> Optional[StreamName]:
        """The stream's host-wide name, made once (a file store's is its real path: file
        calls); None for a test double."""
        try:
            return StreamName.of(self._config, self._backend, self._key)
        except TypeError:
            return None

    @functools.cached_property
    def _credential(self) -> str:
        name = self._name
        return "" if name is None else credential_of(self._config.token or "", name)

    @functools.cached_property
    def meeting(self) -> Optional[Meeting]:
        """Where the stream's processes meet; None when they cannot (a test double, no
        usable runtime directory: ``hold_stream`` said so)."""
        name = self._name
        if name is None:
            return None
        try:
            return Meeting(runtime_dir(), name.digest)
        except ConfigError:
            return None

    @property
    def crashed_holder(self) -> Optional[Holder]:
        """The process that held the lock before this claim took it and died holding it."""
        lock = self._stream_lock
        return None if lock is None else lock.previous

    def owned_by(self, pid: int) -> bool:
        """Whether the process ``pid`` (as this process sees it) holds the stream lock; True
        when that cannot be told (a holder in another pid namespace, or no lock applies)."""
        name = self._name
        if name is None:
            return True
        try:
            holder = holder_of(name)
        except (ConfigError, OSError):
            return True
        return holder is not None and holder.local_pid in (pid, None)

    def _release_stream(self) -> None:
        with self._lock:
            lock, self._stream_lock = self._stream_lock, None
        if lock is not None:
            lock.release()

    # -- sharing the stream with the host's other processes ----------------------------------------

    def join(self) -> bool:
        """Say this process writes the stream (a member, or a writer that has not started
        yet); False when it cannot (the caller then keeps the stream to itself)."""
        meeting = self.meeting
        if meeting is None:
            return False
        if self._member:
            return True
        try:
            PRESENCE.join(self._members_path(meeting))
        except OSError as exc:
            self._warn("members", f"stream {self._key!r}: cannot join the processes that write it ({exc})")
            return False
        self._member = True
        return True

    def leave(self) -> None:
        """This process writes the stream as a member (or a writer yet to start) no more."""
        meeting = self.meeting
        if self._member and meeting is not None:
            self._member = False
            PRESENCE.leave(self._members_path(meeting))

    def take_over(self) -> bool:
        """A member takes the stream lock when its owner has gone: True when it now owns the
        stream (and is a member no more)."""
        if self.hold_stream() is not Hold.HELD:
            return False
        self.leave()
        return True

    def others_waiting(self) -> bool:
        """Whether other processes of the host are members of the stream now."""
        meeting = self.meeting
        return meeting is not None and PRESENCE.others(self._members_path(meeting))

    def _members_path(self, meeting: Meeting) -> str:
        """Presence is per credential: a process with another token is never counted as one
        of the stream's, so nobody hands the stream on to a process that may not write it."""
        return meeting.members_path(self._credential)

    def release(self) -> None:
        """Let go of the stream lock, taken for nothing (``Sharing.inherit``)."""
        self._release_stream()

    def run_continues(self, *, fork_parent: Optional[Identity] = None) -> Optional[Carried]:
        """The stream's counts and owners when this new owner continues the log a run of its
        parent stored moments ago, or (``fork_parent``: a fork child whose parent's stream
        ended) a log its parent owned (``_hostwide.take_ended``); else None."""
        meeting = self.meeting
        return None if meeting is None else take_ended(meeting.ended_path, fork_parent=fork_parent)

    def owner_joined(self) -> bool:
        """Whether the stream's owner on this host joined a writer's stream elsewhere."""
        meeting = self.meeting
        return meeting is not None and history_joined(meeting.history_path)

    def history_left(self) -> Optional[History]:
        """What the stream's previous owner on this host left to continue from."""
        meeting = self.meeting
        return None if meeting is None else load_history(meeting.history_path)

    def keep_history(
        self, rows: list[bytes], budget: int, members: Optional[dict[str, int]] = None
    ) -> Optional[HistoryFile]:
        """Begin this owner's history file with ``rows`` and the members' counts a previous
        owner's history held (``_hostwide.HistoryFile``), for a successor."""
        meeting = self.meeting
        if meeting is None:
            return None
        self.history = HistoryFile(meeting.history_path, budget)
        self.history.start(rows, members)
        return self.history

    def last_out(self) -> bool:
        """At the end of the owner's final push: True when no other process writes the
        stream any more and this one is to store and close it; False when it is handed on.

        The lock is let go before the members are asked, and taken again after: a member
        lets go of its presence before it tries the lock, so of a member and an owner
        leaving together, exactly one takes the lock and finishes, whatever the order.  A
        process that takes the lock in between continues from the history file (complete:
        every row was written before)."""
        meeting = self.meeting
        if meeting is None or self._stream_lock is None:
            return True
        self._release_stream()
        if self.others_waiting():
            return False
        hold = self.hold_stream()
        # This process's own spool takes a lock it finds free (its writer's, let go of here
        # for a moment): the stream is this process's all the same.
        return hold is Hold.HELD or (
            hold is Hold.HERE and self.spool is not None and self.spool.holds_stream_lock
        )

    # -- letting go --------------------------------------------------------------------------------

    def let_go(self, ending: Ending, seconds: float, carried: Optional[Carried] = None) -> None:
        """The stream is finished here (``Ending`` says what stays; ``carried``: the stream's
        counts and owners, for a run that continues the stored log); the lock goes last, so
        recovery never finds the spool unlocked while it is still being written."""
        if self.spool is not None:
            if ending is Ending.NOT_STORED:
                self.spool.close(seconds)
            else:
                self.spool.discard(seconds)
        if self.history is not None:
            if ending in (Ending.STORED, Ending.STORED_ELSEWHERE):
                self.history.remove()
            else:
                self.history.close()
        meeting = self.meeting
        if ending is Ending.STORED and meeting is not None and carried is not None:
            mark_ended(meeting.ended_path, carried)
        self.leave()
        self._release_stream()

    def abandon(self) -> None:
        """The close deadline passed with the worker stuck in a request: the spool's queue
        goes to disk and the stream is let go (the worker makes no further request)."""
        if self.spool is not None:
            self.spool.close()
        if self.history is not None:
            self.history.close()
        self.leave()
        self._release_stream()

    def forget_in_child(self) -> None:
        """In a fork child: none of it is the child's.  The spool, the history file and the
        lock are the parent's (the kernel gave the child no lock, ``_streamlock``), and so
        is the parent's presence (``_hostwide``)."""
        self.spool = None
        self.history = None
        self._stream_lock = None
        self._member = False
        self._lock = threading.Lock()  # a parent thread may have held it at the fork
