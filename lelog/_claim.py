"""``Claim``: what a process holds on the host for a stream it owns, and lets go of in one place.

Three things say "this process has stream S" to others: the spawn children's beacon (a
named socket a spawn child finds, docs/writer.md#spawn-children), the host-wide stream lock
(``_streamlock``: ``lelog recover`` leaves a held stream alone, docs/recover.md#stream-lock)
and the crash spool (its files, for ``lelog recover`` after a kill).  An engine that owns its
stream takes them; a fork child's copy holds none of them.

Threads: ``take`` runs on the thread building the engine; ``hold_stream`` on the thread
that starts the stream (a caller's, any of them) and again on the thread running its rounds
before the first open; ``let_go`` and ``abandon`` on the thread finishing the stream;
``forget_in_child`` in a fork child.  ``_lock`` makes taking and letting go of the stream
lock one step each: it is held across the few local file calls that take the lock (never
across network I/O), and only the lock table's lock, a leaf, is taken under it.
"""

from __future__ import annotations

import functools
import socket
import threading
from typing import Callable, Hashable, Optional

from . import _channel
from ._backend import Backend
from ._config import LogConfig
from ._exceptions import ConfigError
from ._options import WriterOptions
from ._spool import Spool
from ._streamlock import StreamLock, StreamName, holder_of

__all__ = ["Claim"]


class Claim:
    """The beacon, the stream lock and the spool of one stream this process owns."""

    def __init__(
        self, key: str, config: LogConfig, backend: Backend, warn: Callable[[str, str], None]
    ) -> None:
        self._key = key
        self._config = config
        self._backend = backend
        self._warn = warn
        self.beacon: Optional[socket.socket] = None
        self.spool: Optional[Spool] = None
        self._stream_lock: Optional[StreamLock] = None
        self._lock = threading.Lock()  # renewed in a fork child (forget_in_child)

    def take(
        self,
        identity: Hashable,
        spool_dir: Optional[str],
        options: WriterOptions,
        encode_pending: Callable[[], None],
    ) -> None:
        """At construction: the spawn beacon (unless a predecessor still has the name and
        hands it over when it finishes: ``adopt_beacon``) and the spool (no I/O yet)."""
        self.beacon = self.beacon or _channel.beacon(identity)
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

    def hold_stream(self) -> None:
        """Take the stream's host-wide lock before opening it.  When another process holds
        it, say so: two processes that each open one key wipe each other's live stream, and
        the later upload replaces the other's stored log.  Never raises: a lock that cannot
        be had costs recovery its certainty, not the stream."""
        name = self._name
        if name is None:
            return  # a test double: its streams are this process's alone
        with self._lock:
            if self._stream_lock is not None:
                return
            try:
                self._stream_lock = StreamLock.try_acquire(name)
                holder = None if self._stream_lock is not None else holder_of(name)
            except (ConfigError, OSError) as exc:
                failure: Optional[Exception] = exc
            else:
                failure = None
        if failure is not None:
            self._warn("stream_lock", f"stream {self._key!r}: its host-wide lock cannot be had ({failure})")
            return
        if holder is not None and not holder.is_this_process():
            self._warn(
                "shared",
                f"stream {self._key!r} is held by another process on this host ({holder.describe()}, "
                f"{holder.purpose}); two processes that each open one key wipe each other's live "
                "stream and the later upload replaces the stored log: give each process its own "
                "key, or build the handler in the parent before it forks",
            )

    @functools.cached_property
    def _name(self) -> Optional[StreamName]:
        """The stream's host-wide name, made once (a file store's is its real path: file
        calls); None for a test double."""
        try:
            return StreamName.of(self._config, self._backend, self._key)
        except TypeError:
            return None

    def let_go(self, *, stored: bool, seconds: float) -> None:
        """The stream is finished: the spool goes when the log is stored and the stream
        closed, else it is kept for ``lelog recover``; then the lock, so recovery never finds
        the spool unlocked while it is still being written."""
        if self.spool is not None:
            if stored:
                self.spool.discard(seconds)
            else:
                self.spool.close(seconds)
        self._release_stream()

    def abandon(self) -> None:
        """The close deadline passed with the worker stuck in a request: the spool's queue
        goes to disk and the stream is let go (the worker makes no further request)."""
        if self.spool is not None:
            self.spool.close()
        self._release_stream()

    def give_beacon(self) -> Optional[socket.socket]:
        """The beacon, for a successor on the key (or to close): this claim has it no more."""
        held, self.beacon = self.beacon, None
        return held

    def adopt_beacon(self, held: socket.socket) -> bool:
        """Take a predecessor's beacon when this claim could not bind the name itself."""
        if self.beacon is not None:
            return False
        self.beacon = held
        return True

    def forget_in_child(self) -> None:
        """In a fork child: none of it is the child's.  The beacon's copy is closed (kept
        open, a long-lived child would say the parent holds the stream after the parent
        finished it); the spool and the lock are the parent's (the kernel gave the child no
        lock, ``_streamlock``)."""
        if self.beacon is not None:
            self.beacon.close()
            self.beacon = None
        self.spool = None
        self._stream_lock = None
        self._lock = threading.Lock()  # a parent thread may have held it at the fork

    def _release_stream(self) -> None:
        with self._lock:
            lock, self._stream_lock = self._stream_lock, None
        if lock is not None:
            lock.release()
