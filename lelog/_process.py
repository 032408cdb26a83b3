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

import array
import atexit
import enum
import errno
import fcntl
import hashlib
import itertools
import json
import logging
import os
import select
import socket
import sys
import termios
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Optional

from ._clock import Deadline

if TYPE_CHECKING:
    from ._writer import StreamWriter

__all__ = [
    "Channel",
    "Outcome",
    "REFUSAL",
    "Refusal",
    "beacon",
    "parent_holds",
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
    "release_channel",
    "share",
    "start_daemon",
    "unregister",
]

# Engines that may still hold lines: finished at exit, re-initialised in a forked child;
# and the engine of each live stream, by identity (weakly, as _open: an engine nobody holds and
# no worker runs for is gone, as before streams were shared), with its writers' count (engine._users)
# and pending hand-off (engine._handoff: the writers that let go under a configuration call,
# each marked handed_on if a successor takes the stream; empty when none is pending), and each
# writer's _handed_on.  _lock guards all of these; it is held for dict and
# set operations only and nothing is called while it is held, so it cannot deadlock.
_open: weakref.WeakSet[StreamWriter] = weakref.WeakSet()
_streams: weakref.WeakValueDictionary[Hashable, StreamWriter] = weakref.WeakValueDictionary()
_lock = threading.Lock()
_fork_steps: list[Callable[[], None]] = []


#: Bytes the kernel may hold for the fork-child channel (asked for; Linux doubles it, capped by
#: net.core.wmem_max): about 10,000 lines of 100 bytes, a datagram costing ~700 bytes more.
CHANNEL_BUFFER = 4 << 20
_MAX_DATAGRAM = 1 << 20
_BATCH = 256
#: How long a flush waits at most for the lines already in the channel to be delivered; a
#: close waits up to a fifth of its budget.
SETTLE_AT_FLUSH = 0.25
_slot_numbers = itertools.count(1)
# Engines by slot number, for the lines fork children send: the reader thread looks them up.
_slots: weakref.WeakValueDictionary[int, StreamWriter] = weakref.WeakValueDictionary()


class Channel:
    """How fork children give their lines to the process that owns the stream
    (docs/writer.md#fork-children).

    One ``AF_UNIX`` datagram socket pair per owning process, made before its first fork and
    closed, reader thread and all, when the last stream using it finishes (``release_channel``).
    A child sends each line as one datagram from inside ``emit``: a non-blocking ``send``,
    atomic however many children write at once, never waiting on the parent (a full channel
    is a counted drop).  Each datagram carries the child's pid and its sequence number on
    that stream, so the owner counts and marks the lines a full channel cost.

    The owner reads on a thread of its own, the channel's only reader (so sequence numbers
    arrive in order), which takes no lock but the engines' leaf locks and ``_cond``, so
    neither a stuck request nor a child can stop it, and it cannot deadlock.
    """

    #: How a line the channel had no room for is counted.
    drop_reason = "overflow"

    def __init__(self) -> None:
        self.receiver, self.sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHANNEL_BUFFER)
        except OSError:
            pass  # the system's default size then
        self.sender.setblocking(False)
        self._expected: dict[tuple[int, int], int] = {}  # (pid, slot) -> next sequence number
        # _busy: the reader is taking datagrams out of the socket; _closed: close() was asked
        # (the reader then ends and closes both sockets).  Guarded by _cond, which is
        # notified when the reader is done with a batch, for settle().
        self._cond = threading.Condition(threading.Lock())
        self._busy = False
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="lelog-fork-channel", daemon=True)
        self._reader.start()

    def send(self, slot: int, seq: int, ts: float, level: str, out: str, args: Any) -> bool:
        """In a child: hand one line over; False when the channel is full (never waits)."""
        data = json.dumps([slot, _pid, seq, ts, level, out, args], default=str).encode()
        try:
            self.sender.send(data)
        except OSError:  # full (EAGAIN), or a line too long for one datagram
            return False
        return True

    def close(self) -> None:
        """Stop the reader (the last stream using this channel has finished): it ends at its
        next wake-up, which an empty datagram brings now, and closes both sockets.  A child
        still sending then meets a closed channel: its lines are counted as dropped there."""
        with self._cond:
            self._closed = True
        try:
            self.sender.send(b"")  # wakes the reader; a full socket wakes it anyway
        except OSError:
            pass

    def _read(self) -> None:
        poller = select.poll()
        poller.register(self.receiver, select.POLLIN)
        try:
            self._read_until_closed(poller)
        finally:
            with self._cond:
                self._closed = True
                self.receiver.close()
                self.sender.close()
                self._cond.notify_all()

    def _read_until_closed(self, poller: select.poll) -> None:
        while not self._closed:
            poller.poll()  # waits with no lock held
            with self._cond:
                self._busy = True
            try:
                more = True
                while more:  # in batches: one lock per stream per batch, not per line
                    batch = []
                    for _ in range(_BATCH):
                        try:
                            batch.append(self.receiver.recv(_MAX_DATAGRAM, socket.MSG_DONTWAIT))
                        except BlockingIOError:
                            more = False
                            break
                    self._deliver(batch)
            except OSError:
                return
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def settle(self, timeout: float) -> None:
        """Wait at most ``timeout`` until every line already in the channel is delivered.

        Correct without a race: the reader only takes datagrams out while ``_busy``, so
        either the socket still holds them or ``_busy`` says they are being delivered.
        """
        deadline = Deadline.after(timeout)
        with self._cond:
            while not self._closed and (self._busy or self._queued()):
                if deadline.expired():
                    return
                self._cond.wait(deadline.remaining())

    def _queued(self) -> int:
        size = array.array("i", [0])
        fcntl.ioctl(self.receiver.fileno(), termios.FIONREAD, size)
        return size[0]

    def _deliver(self, batch: list[bytes]) -> None:
        by_slot: dict[int, list[tuple[int, float, str, str, Any]]] = {}
        expected = self._expected
        for data in batch:
            try:
                slot, pid, seq, ts, level, out, args = json.loads(data)
            except (ValueError, TypeError):
                continue  # not ours: nothing else writes here, so never expected
            key = (pid, slot)
            gap = max(seq - expected.get(key, 0), 0)
            expected[key] = seq + 1
            by_slot.setdefault(slot, []).append((gap, float(ts), str(level), str(out), args))
        for slot, lines in by_slot.items():
            engine = _slots.get(slot)
            if engine is not None:
                engine._from_children_lines(lines)


class Refusal:
    """Where the lines of a spawn or forkserver child go when its parent holds the stream:
    nowhere, each counted as rejected (docs/writer.md#spawn-children)."""

    drop_reason = "rejected"

    def send(self, slot: int, seq: int, ts: float, level: str, out: str, args: Any) -> bool:
        return False


REFUSAL = Refusal()


def _beacon_name(pid: int, identity: Hashable) -> Optional[bytes]:
    if not isinstance(identity, tuple) or identity[0] == "object" or not sys.platform.startswith("linux"):
        return None  # an object is a far end of this process only; abstract names are Linux's
    digest = hashlib.sha256(repr(identity).encode()).hexdigest()[:32]
    return f"\0lelog/{pid}/{digest}".encode()


def beacon(identity: Hashable) -> Optional[socket.socket]:
    """Say, while the returned socket is open, that this process holds the stream: an
    abstract ``AF_UNIX`` name its spawn and forkserver children can probe (Linux)."""
    name = _beacon_name(os.getpid(), identity)
    if name is None:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(name)
    except OSError:
        sock.close()
        return None
    return sock


def parent_holds(identity: Hashable) -> Optional[int]:
    """In a multiprocessing spawn or forkserver child: the parent's pid if it holds the
    stream (its beacon is bound), else None."""
    mp = sys.modules.get("multiprocessing")
    parent = mp.parent_process() if mp is not None else None
    pid = parent.pid if parent is not None else None
    name = _beacon_name(pid, identity) if pid is not None else None
    if pid is None or name is None:
        return None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.bind(name)
    except OSError as exc:
        return pid if exc.errno == errno.EADDRINUSE else None
    finally:
        probe.close()
    return None


_channel: Optional[Channel] = None
_pid = os.getpid()


def slot_for(engine: StreamWriter) -> int:
    """A number that names ``engine`` in the datagrams of fork children."""
    number = next(_slot_numbers)
    _slots[number] = engine
    return number


def _channel_before_fork() -> None:
    """In a process about to fork: the channel its streams' children will write to."""
    global _channel
    with _lock:  # the streams' engines (not the writers that joined one): they read _home
        engines = [e for e in _open if e._to_parent is None and e._engine is e]
    if not engines:
        return
    if _channel is None:
        try:
            _channel = Channel()
        except (OSError, RuntimeError):  # no socket or no thread: children stream as before
            return
    for engine in engines:
        engine._home = _channel


def release_channel(engine: StreamWriter) -> None:
    """A finished engine lets go of its fork channel; the last one out closes it, so its
    reader thread and sockets do not outlive the streams (the next fork makes a new one)."""
    global _channel
    with _lock:
        channel, engine._home = engine._home, None
        if channel is None or any(other._home is channel for other in _open):
            return
        if _channel is channel:
            _channel = None
    channel.close()  # outside _lock: it sends (never blocking) and takes the channel's _cond


class Outcome(enum.Enum):
    """What ``leave`` made of a writer letting go of its stream."""

    #: Other writers still use the stream.
    SHARED = "shared"
    #: The last writer left under a configuration call: the stream waits for a successor.
    HANDOFF = "handoff"
    #: The last writer left: it finishes the stream.
    LAST = "last"
    #: The stream is another process's (a fork child's parent holds it, or a spawn child was
    #: refused it): nothing to finish here, and nothing handed on.
    ELSEWHERE = "elsewhere"


def share(identity: Hashable, writer: StreamWriter) -> tuple[StreamWriter, list[str]]:
    """The engine ``writer`` is to use: that of a live stream on ``identity`` (one more user,
    ending a pending hand-off), else ``writer`` itself, now the stream's engine.  An engine
    whose last writer has left stays registered until it has finished (``forget``): a new
    engine on its identity records it as its predecessor, and waits for it before opening.

    With the stream-level settings that conflict with the live stream's (then nothing has
    changed: a pending hand-off still waits, and still expires and finishes the stream)."""
    with _lock:
        engine = _streams.get(identity)
        if engine is not None and engine.joinable():
            conflicts = writer.conflicts_with(engine)  # compares two tuples: calls out to nothing
            if conflicts:
                return engine, conflicts
            engine._users += 1
            for handed in engine._handoff:  # the pending hand-off is taken: they handed on
                handed._handed_on = True
            engine._handoff = []
            return engine, []
        writer._predecessor = engine  # None, or still finishing the stream on this identity
        _streams[identity] = writer
        writer._users = 1
        return writer, []


def leave(identity: Hashable, writer: StreamWriter, *, handoff: bool) -> Outcome:
    """``writer`` lets go of its engine; ``handoff``: it does so inside a configuration call.

    A writer that leaves others on the stream has handed it on; one that leaves a hand-off
    pending has handed it on only once a successor takes it (``share``)."""
    engine = writer._engine
    with _lock:
        engine._users -= 1
        if engine._users > 0:
            writer._handed_on = True
            return Outcome.SHARED
        if engine._to_parent is not None:
            return Outcome.ELSEWHERE  # stays registered for a later writer of this child
        if handoff:
            engine._handoff.append(writer)
            return Outcome.HANDOFF
        return Outcome.LAST  # registered, not joinable, until forget()


def expire_handoff(identity: Hashable, engine: StreamWriter) -> bool:
    """End a pending hand-off nobody took; True when the caller is to finish the stream."""
    with _lock:
        if not engine._handoff or engine._users:
            return False
        engine._handoff = []  # their writers handed nothing on: the stream finishes as theirs
        return True  # registered, not joinable, until forget()


def forget(identity: Hashable, engine: StreamWriter) -> None:
    """A finished engine leaves the registry (a new writer on its key starts a new log,
    without waiting for it)."""
    with _lock:
        successor = _streams.get(identity)
        if successor is engine:
            del _streams[identity]
        held, engine._beacon = engine._beacon, None
        if (
            held is not None
            and successor is not None
            and successor is not engine
            and successor._beacon is None
        ):
            # The successor could not bind the name while this engine held it: it takes it on.
            successor._beacon, held = held, None
    if held is not None:
        held.close()


def start_daemon(target: Callable[[], None], name: str) -> Optional[threading.Thread]:
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
    """Close every open writer within one shared deadline (the exit hook); each close takes
    the lines fork children left in the channel first."""
    finish_together(open_writers(), timeout)


def after_fork_in_child(step: Callable[[], None]) -> None:
    """Run ``step`` in every forked child, after the steps added before it."""
    _fork_steps.append(step)


def _run_fork_steps() -> None:
    global _lock, _channel, _pid
    _lock = threading.Lock()  # a parent thread may have held it at the fork
    _channel = None  # the parent's; this process makes its own before its own first fork
    _pid = os.getpid()
    for step in _fork_steps:
        step()


def _writers_after_fork() -> None:
    for writer in list(_open):
        writer._after_fork_in_child()
    # An engine the parent was handing off is the child's to finish as a child does.
    for engine in list(_streams.values()):
        engine._handoff = []


after_fork_in_child(_writers_after_fork)
atexit.register(close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_channel_before_fork, after_in_child=_run_fork_steps)
