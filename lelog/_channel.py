"""How child processes reach the stream their parent owns (docs/writer.md#fork-children).

- ``Inbox``: datagrams to lines by stream, counting the lines a full channel cost from each
  child's sequence numbers.  Pure: tested from raw bytes, without sockets or threads.
- ``Channel``: one ``AF_UNIX`` datagram socket pair per owning process, made before its
  first fork (a ``_lifecycle.before_fork`` step), read by one thread of its own.
- ``Uplink``: a fork child's end: one datagram per line by a non-blocking ``send``.
- ``Refusal``: where a refused spawn child's lines go (nowhere, counted as rejected), and
  the spawn ``beacon`` a parent binds so its spawn children can tell (docs/writer.md#spawn-children).

Which stream owns which channel is kept here (``home_of``, ``uplink_of``), not in the
streams: the streams register as ``Receiver`` s and ask.

Locks: ``_lock`` guards the module's tables (dict and set operations only; nothing is called
while it is held).  ``Channel._cond`` guards the reader's busy/closed state.  ``Uplink._lock``
keeps one child's sequence numbers in send order; it is held across one non-blocking
``send`` and nothing else.  All three are leaves: none is held while another is taken.
"""

from __future__ import annotations

import array
import errno
import fcntl
import hashlib
import itertools
import json
import os
import select
import socket
import sys
import termios
import threading
import weakref
from typing import Any, Hashable, Optional, Protocol, Union

from . import _lifecycle, _reentry
from ._clock import Deadline

__all__ = [
    "CHANNEL_BUFFER",
    "REFUSAL",
    "SETTLE_AT_FLUSH",
    "Channel",
    "ChildLine",
    "Inbox",
    "Receiver",
    "Refusal",
    "Uplink",
    "beacon",
    "home_of",
    "parent_holds",
    "release",
    "slot_for",
    "uplink_of",
    "want_channel",
]

#: Bytes the kernel may hold for the fork-child channel (asked for; Linux doubles it, capped by
#: net.core.wmem_max): about 10,000 lines of 100 bytes, a datagram costing ~700 bytes more.
CHANNEL_BUFFER = 4 << 20
_MAX_DATAGRAM = 1 << 20
_BATCH = 256
#: How long a flush waits at most for the lines already in the channel to be delivered; a
#: close waits up to a fifth of its budget.
SETTLE_AT_FLUSH = 0.25

#: A line as a child sent it: (lines lost before it, time, level, out, args).
ChildLine = tuple[int, float, str, str, Any]


class Receiver(Protocol):
    """A stream that takes its fork children's lines."""

    def accept_from_children(self, lines: list[ChildLine]) -> None: ...


class Inbox:
    """Datagrams ``[slot, pid, seq, time, level, out, args]`` to lines by slot.

    Each child numbers its lines on each stream from 0; a number skipped is a line the
    channel had no room for, counted as the gap before the next line that arrives."""

    def __init__(self) -> None:
        self._expected: dict[tuple[int, int], int] = {}  # (pid, slot) -> next sequence number

    def sort(self, batch: list[bytes]) -> dict[int, list[ChildLine]]:
        by_slot: dict[int, list[ChildLine]] = {}
        expected = self._expected
        for data in batch:
            try:
                slot, pid, seq, ts, level, out, args = json.loads(data)
                ts = float(ts)
            except (ValueError, TypeError):
                continue  # not ours: nothing else writes here, so never expected
            key = (pid, slot)
            gap = max(seq - expected.get(key, 0), 0)
            expected[key] = seq + 1
            by_slot.setdefault(slot, []).append((gap, ts, str(level), str(out), args))
        return by_slot


def encode_datagram(slot: int, pid: int, seq: int, ts: float, level: str, out: str, args: Any) -> bytes:
    return json.dumps([slot, pid, seq, ts, level, out, args], default=str).encode()


class Channel:
    """The socket pair fork children write to, and its reader thread (see the module docstring).

    A child's ``send`` is atomic however many children write at once and never waits on the
    parent (a full channel is a counted drop).  The reader is the channel's only reader (so
    sequence numbers arrive in order); it takes no lock but the streams' ledgers' and
    ``_cond``, so neither a stuck request nor a child can stop it.
    """

    def __init__(self) -> None:
        self.receiver, self.sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHANNEL_BUFFER)
        except OSError:
            pass  # the system's default size then
        self.sender.setblocking(False)
        self._inbox = Inbox()
        # _busy: the reader is taking datagrams out of the socket; _closed: close() was asked
        # (the reader then ends and closes both sockets).  Notified when the reader is done
        # with a batch, for settle().
        self._cond = threading.Condition(threading.Lock())
        self._busy = False
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="lelog-fork-channel", daemon=True)
        self._reader.start()

    def close(self) -> None:
        """Stop the reader: it ends at its next wake-up, which an empty datagram brings now,
        and closes both sockets.  A child still sending then meets a closed channel: its
        lines are counted as dropped there."""
        with self._cond:
            self._closed = True
        try:
            self.sender.send(b"")  # wakes the reader; a full socket wakes it anyway
        except OSError:
            pass

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

    def _read(self) -> None:
        _reentry.mark_own_thread()
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
                    for slot, lines in self._inbox.sort(batch).items():
                        receiver = _slots.get(slot)
                        if receiver is not None:
                            receiver.accept_from_children(lines)
            except OSError:
                return
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


class Uplink:
    """A fork child's way to its parent's stream: one datagram per line, in sequence order."""

    #: How a line the channel had no room for is counted.
    drop_reason = "overflow"

    def __init__(self, channel: Channel, slot: int) -> None:
        self._channel = channel
        self._slot = slot
        self._seq = 0
        self._lock = threading.Lock()  # a leaf, held across one non-blocking send

    def send(self, ts: float, level: str, out: str, args: Any) -> bool:
        """Hand one line over; False when the channel is full or closed (never waits)."""
        with self._lock:
            seq = self._seq
            self._seq += 1
            data = encode_datagram(self._slot, os.getpid(), seq, ts, level, out, args)
            try:
                self._channel.sender.send(data)
            except OSError:  # full (EAGAIN), closed, or a line too long for one datagram
                return False
            return True


class Refusal:
    """Where the lines of a spawn or forkserver child go when its parent holds the stream:
    nowhere, each counted as rejected (docs/writer.md#spawn-children)."""

    drop_reason = "rejected"

    def send(self, ts: float, level: str, out: str, args: Any) -> bool:
        return False


REFUSAL = Refusal()
Outlet = Union[Uplink, Refusal]

# -- which stream uses which channel ---------------------------------------------------------------

_lock = threading.Lock()
_slot_numbers = itertools.count(1)
# Streams by slot number, for the reader; the streams that own a stream in this process
# (want a channel before a fork); the channel each one's children write to; in a fork
# child, the channel each inherited stream sends to.
_slots: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
_owners: weakref.WeakSet[Any] = weakref.WeakSet()
_homes: weakref.WeakKeyDictionary[Any, Channel] = weakref.WeakKeyDictionary()
_uplinks: weakref.WeakKeyDictionary[Any, Channel] = weakref.WeakKeyDictionary()
_channel: Optional[Channel] = None


def slot_for(receiver: Receiver) -> int:
    """A number that names ``receiver`` in the datagrams of fork children."""
    number = next(_slot_numbers)
    _slots[number] = receiver
    return number


def want_channel(receiver: Receiver) -> None:
    """``receiver`` owns its stream: its fork children are to reach it."""
    with _lock:
        _owners.add(receiver)


def home_of(receiver: Receiver) -> Optional[Channel]:
    """The channel ``receiver``'s fork children write to, if it has forked."""
    return _homes.get(receiver)


def uplink_of(receiver: Receiver, slot: int) -> Optional[Uplink]:
    """In a fork child: the way to the process that owns ``receiver``'s stream."""
    channel = _uplinks.get(receiver)
    return None if channel is None else Uplink(channel, slot)


def release(receiver: Receiver) -> None:
    """A finished stream lets go of its channel; the last one out closes it, so its reader
    thread and sockets do not outlive the streams (the next fork makes a new one)."""
    global _channel
    with _lock:
        _owners.discard(receiver)
        channel = _homes.pop(receiver, None)
        if channel is None or channel in _homes.values():
            return
        if _channel is channel:
            _channel = None
    channel.close()  # outside _lock: it sends (never blocking) and takes the channel's _cond


def _before_fork() -> None:
    """In a process about to fork: the channel its streams' children will write to."""
    global _channel
    with _lock:
        owners = list(_owners)
        if not owners:
            return
        if _channel is None:
            try:
                _channel = Channel()
            except (OSError, RuntimeError):  # no socket or no thread: children stream as before
                return
        for owner in owners:
            _homes[owner] = _channel


def _after_fork_in_child() -> None:
    """The child's inherited streams send to the channel of the process that owns them: the
    parent's, or in a grandchild the one its parent sent to.  It owns nothing yet."""
    global _lock, _channel
    _lock = threading.Lock()
    for receiver, channel in list(_homes.items()):
        _uplinks[receiver] = channel
    _homes.clear()
    _owners.clear()
    _channel = None


_lifecycle.before_fork(_before_fork)
_lifecycle.after_fork_in_child(_after_fork_in_child)

# -- spawn children ----------------------------------------------------------------------------------


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
