"""How other processes hand their lines to the process that owns a stream
(docs/writer.md#fork-children, docs/writer.md#processes-on-one-key).

- ``Inbox``: messages to lines by stream, counting the lines a full channel cost from each
  sender's sequence numbers.  Pure: tested from raw bytes, without sockets or threads.
- ``Channel``: the process's one reader thread and its sockets: an ``AF_UNIX`` datagram
  socket pair its fork children write to (made before its first fork, a
  ``_lifecycle.before_fork`` step), and the listening socket of each stream it owns on the
  host, with one ``SOCK_SEQPACKET`` connection per member process (``listen``).
- ``Uplink``: a fork child's end: one datagram per line by a non-blocking ``send``.
- ``MemberLink``: a member process's end: one message per line on its own connection.

Which stream owns which channel is kept here (``home_of``, ``uplink_of``), not in the
streams: the streams register as ``Receiver`` s and ask.

Locks: ``_lock`` guards the module's tables (dict and set operations only; nothing is called
while it is held).  ``Channel._cond`` guards the reader's busy/closed state and the requests
for it.  ``Uplink._lock`` and ``MemberLink._lock`` keep one sender's sequence numbers in send
order; each is held across one non-blocking ``send`` or ``connect`` and nothing else.  All
are leaves: none is held while another is taken.
"""

from __future__ import annotations

import array
import contextlib
import enum
import fcntl
import itertools
import json
import os
import secrets
import select
import socket
import termios
import threading
import time
import weakref
from typing import Any, Callable, Collection, Mapping, Optional, Protocol, Union

import attrs

from . import _hostwide, _lifecycle, _reentry
from ._clock import Deadline

__all__ = [
    "CHANNEL_BUFFER",
    "FORGET",
    "SETTLE_AT_FLUSH",
    "Broken",
    "Channel",
    "ChildLine",
    "Inbox",
    "MemberLink",
    "REFUSAL",
    "Refusal",
    "Receiver",
    "Sent",
    "Uplink",
    "home_of",
    "listen",
    "release",
    "slot_for",
    "stop_listening",
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
SETTLE_AT_FLUSH = 0.5
#: How long the reader waits when a stream has no room for its members' lines, before it
#: looks again (the encoder frees room a batch at a time).
_STALL_WAIT = 0.005
#: How long closing the channel waits for its reader to close the sockets.
_CLOSE_WAIT = 1.0

#: A member connection's count that says it ended by the member's close (``Inbox.accounted``).
FORGET = -1

#: A line as a child sent it: (lines lost before it, time, level, out, args).
ChildLine = tuple[int, float, str, str, Any]


class Receiver(Protocol):
    """A stream that takes its fork children's lines."""

    def accept_from_children(
        self,
        lines: list[ChildLine],
        *,
        members: Optional[Mapping[str, int]] = None,
        senders: Collection[int] = (),
    ) -> None:
        """Lines of fork children (``senders``: their pids), or of a member process: then
        ``members`` says how many of its connection's lines these and the lines before them
        account for (``Inbox.accounted``)."""

    def room_for_members(self) -> int:
        """How many member lines it takes now; 0 leaves them in their connections (the
        members' sends then find them full, and their lines wait in the members)."""


class Inbox:
    """Datagrams ``[slot, pid, seq, time, level, out, args]`` to lines by slot.

    Each child numbers its lines on each stream from 0; a number skipped is a line the
    channel had no room for, counted as the gap before the next line that arrives."""

    def __init__(self) -> None:
        self._expected: dict[tuple[int, int], int] = {}  # (pid, slot) -> next sequence number
        #: The pids whose lines the last ``sort`` found, by slot.
        self.senders: dict[int, set[int]] = {}

    def sort(self, batch: list[bytes]) -> dict[int, list[ChildLine]]:
        by_slot: dict[int, list[ChildLine]] = {}
        senders: dict[int, set[int]] = {}
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
            senders.setdefault(slot, set()).add(pid)
        self.senders = senders
        return by_slot

    def accounted(self) -> dict[str, int]:
        """For each sender (``"<pid>.<slot>"``; a member's slot names its connection), how
        many of its lines the messages sorted so far account for: arrived, or a gap."""
        return {f"{pid}.{slot}": count for (pid, slot), count in self._expected.items()}


def encode_datagram(slot: int, pid: int, seq: int, ts: float, level: str, out: str, args: Any) -> bytes:
    """One line as a message: compact JSON ``[slot, pid, seq, ts, level, out, args]``.  On
    the caller's thread of every fork child's and member's line, so a line without ``args``
    is written with ``json``'s C string encoder alone, the same bytes at a third of the cost
    (benchmarks/: members row)."""
    if args is None and type(ts) is float and type(level) is str and type(out) is str:
        return f"[{slot},{pid},{seq},{ts!r},{_json_string(level)},{_json_string(out)},null]".encode()
    return json.dumps([slot, pid, seq, ts, level, out, args], default=str, separators=(",", ":")).encode()


#: ``json.dumps``'s own string encoder (non-ASCII and lone surrogates escaped, as it does).
_json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii


class Channel:
    """This process's one reader of lines other processes hand over (see the module docstring):
    the socket pair its fork children write to, and the listening sockets of the streams it
    owns on the host, with a connection per member process.

    A sender's ``send`` is atomic however many write at once and never waits on this
    process (a full channel is a counted drop).  The reader is the only reader of every
    socket (so sequence numbers arrive in order), and the only thread that adds, accepts or
    closes one: other threads ask it (``listen``, ``stop_listening``) and wake it.  It takes
    no lock but the streams' ledgers' and ``_cond``, so neither a stuck request nor another
    process can stop it.
    """

    def __init__(self) -> None:
        self.receiver, self.sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHANNEL_BUFFER)
        except OSError:
            pass  # the system's default size then
        self.sender.setblocking(False)
        self._inbox = Inbox()
        # _busy: the reader is taking lines out of its sockets; _closed: close() was asked
        # (the reader then ends and closes every socket); _asked: listening sockets to add
        # or stop, for the reader.  Notified when the reader is done with a batch, for settle().
        self._cond = threading.Condition(threading.Lock())
        self._busy = False
        self._closed = False
        self._asked: list[tuple[Receiver, Optional[socket.socket], threading.Event]] = []
        # The reader's own tables (no lock: only the reader thread touches them).
        self._listeners: dict[int, tuple[socket.socket, Receiver]] = {}
        self._members: dict[int, tuple[socket.socket, Receiver, Inbox]] = {}
        self._stalled = False  # a member's lines were left for want of room (the reader's)
        self._reader = threading.Thread(target=self._read, name="lelog-channel", daemon=True)
        self._reader.start()

    def close(self) -> None:
        """Stop the reader: it ends at its next wake-up, which an empty datagram brings now,
        and closes every socket; waited for (at most ``_CLOSE_WAIT``), so a child that sends
        once its parent's streams have ended meets a closed channel, and counts its lines as
        dropped, never as sent to a reader that would discard them.  The waiting thread
        holds no lock the reader takes (``release`` is called with none held)."""
        with self._cond:
            self._closed = True
        self._wake()
        if threading.current_thread() is not self._reader:
            self._reader.join(_CLOSE_WAIT)

    def forget_in_child(self) -> None:
        """In a fork child: close its copies of the listening sockets, the members'
        connections and the socket pair's reading end (a copy left open would keep a socket
        the parent closed open, with nobody reading: a child's lines would then seem sent
        after its parent's stream ended).  The sending end stays: the child sends to it."""
        with contextlib.suppress(OSError):
            self.receiver.close()
        for sock, _ in list(self._listeners.values()):
            sock.close()
        for conn, _, _ in list(self._members.values()):
            conn.close()
        for _, listener, _ in self._asked:
            if listener is not None:
                listener.close()

    def _wake(self) -> None:
        try:
            self.sender.send(b"")  # not a line (the inbox skips it); a full socket wakes it anyway
        except OSError:
            pass

    def listen(self, listener: socket.socket, receiver: Receiver) -> None:
        """Take lines for ``receiver`` from the member processes that connect to ``listener``
        (bound and listening, handed over to the reader)."""
        with self._cond:
            self._asked.append((receiver, listener, threading.Event()))
        self._wake()

    def stop_listening(self, receiver: Receiver, timeout: float) -> bool:
        """Close ``receiver``'s listening socket and end its members' connections for
        reading, so each member's next send fails at once (``EPIPE``: it takes the stream
        over or waits for it); what they sent before is delivered first.  True once done,
        within ``timeout``.  Always done by the reader and waited for: a member may connect
        until the reader shuts the listener (an abstract name cannot be removed first)."""
        done = threading.Event()
        with self._cond:
            if self._closed:
                return True
            self._asked.append((receiver, None, done))
        self._wake()
        return done.wait(timeout)

    def settle(self, timeout: float) -> None:
        """Wait at most ``timeout`` until every line already in the channel is delivered.

        Correct without a race: the reader only takes lines out while ``_busy``, so either
        a socket still holds them or ``_busy`` says they are being delivered.
        """
        deadline = Deadline.after(timeout)
        with self._cond:
            while not self._closed and (self._busy or self._queued()):
                if deadline.expired():
                    return
                self._cond.wait(deadline.remaining())

    def _queued(self) -> int:
        """Bytes waiting in the sockets, or 1 when a member's connection waits to be
        accepted (it may hold lines already)."""
        listeners = [sock for sock, _ in list(self._listeners.values())]
        try:
            if listeners and select.select(listeners, [], [], 0)[0]:
                return 1
        except (OSError, ValueError):
            pass  # closed by the reader meanwhile
        total = 0
        size = array.array("i", [0])
        for sock in [self.receiver, *(conn for conn, _, _ in list(self._members.values()))]:
            try:
                fcntl.ioctl(sock.fileno(), termios.FIONREAD, size)
            except (OSError, ValueError):
                continue  # closed by the reader meanwhile
            total += size[0]
        return total

    def _read(self) -> None:
        _reentry.mark_own_thread()
        poller = select.poll()
        poller.register(self.receiver, select.POLLIN)
        try:
            self._read_until_closed(poller)
        finally:
            with self._cond:
                self._closed = True
                asked, self._asked = self._asked, []
                for sock in [self.receiver, self.sender, *(s for s, _ in self._listeners.values())]:
                    sock.close()
                for conn, _, _ in self._members.values():
                    conn.close()
                self._listeners.clear()
                self._members.clear()
                self._cond.notify_all()
            for _, listener, done in asked:
                if listener is not None:
                    listener.close()
                done.set()

    def _read_until_closed(self, poller: select.poll) -> None:
        while not self._closed:
            ready = poller.poll()  # waits with no lock held
            with self._cond:
                self._busy = True
                asked, self._asked = self._asked, []
            try:
                for fd, _ in ready:
                    if fd == self.receiver.fileno():
                        self._read_children()
                    elif fd in self._listeners:
                        self._accept(poller, fd)
                    elif fd in self._members:
                        self._read_member(poller, fd)
                for receiver, listener, done in asked:
                    if listener is not None:
                        listener.setblocking(False)
                        self._listeners[listener.fileno()] = (listener, receiver)
                        poller.register(listener, select.POLLIN)
                    else:
                        self._stop(poller, receiver)
                    done.set()
            except OSError:
                return
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            if self._stalled:  # lines left in a connection: back after the encoder takes some
                self._stalled = False
                time.sleep(_STALL_WAIT)

    def _read_children(self) -> None:
        more = True
        while more:  # in batches: one lock per stream per batch, not per line
            batch, more = _recv_batch(self.receiver)
            for slot, lines in self._inbox.sort(batch).items():
                receiver = _slots.get(slot)
                if receiver is not None:
                    receiver.accept_from_children(lines, senders=self._inbox.senders.get(slot, ()))

    def _accept(self, poller: select.poll, fd: int) -> None:
        """New members: only processes of this user (checked by the kernel's credentials)."""
        listener, receiver = self._listeners[fd]
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            peer = _hostwide.peer_credentials(conn)
            if peer is not None and peer[1] != os.geteuid():
                conn.close()
                continue
            conn.setblocking(False)
            self._members[conn.fileno()] = (conn, receiver, Inbox())
            poller.register(conn, select.POLLIN)

    def _read_member(self, poller: select.poll, fd: int, *, to_the_end: bool = False) -> bool:
        """A member's lines, to its stream, as many as it has room for (``to_the_end``: all,
        at the close); True when the member is gone (its connection is then closed)."""
        conn, receiver, inbox = self._members[fd]
        more = True
        while more:
            room = _BATCH if to_the_end else min(receiver.room_for_members(), _BATCH)
            if room <= 0:
                self._stalled = True
                return False
            try:
                batch, more = _recv_batch(conn, room)
            except OSError:
                batch, more = [], False
                ended = True
            else:
                ended = bool(batch) and batch[-1] == b""
                if ended:
                    batch.pop()
                    more = False
            lines = [line for by_slot in inbox.sort(batch).values() for line in by_slot]
            if lines:
                receiver.accept_from_children(lines, members=inbox.accounted())
            if ended:
                if not to_the_end:  # the member closed it: it asks for no count any more
                    receiver.accept_from_children([], members=dict.fromkeys(inbox.accounted(), FORGET))
                poller.unregister(fd)
                del self._members[fd]
                conn.close()
                return True
        return False

    def _stop(self, poller: select.poll, receiver: Receiver) -> None:
        for fd, (listener, owner) in list(self._listeners.items()):
            if owner is receiver:
                # Nobody connects from now on (Linux refuses a connect to a listening
                # AF_UNIX socket shut for reading, an abstract name too); those who did are
                # in its backlog, and have sent lines they count as sent: accepted, and read.
                with contextlib.suppress(OSError):
                    listener.shutdown(socket.SHUT_RD)
                self._accept(poller, fd)
                poller.unregister(fd)
                del self._listeners[fd]
                listener.close()
        for fd, (conn, owner, _) in list(self._members.items()):
            if owner is receiver:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RD)  # the member's next send fails: EPIPE
                while not self._read_member(poller, fd, to_the_end=True):
                    pass  # what it sent before the shutdown, to the last line


def _recv_batch(sock: socket.socket, most: int = _BATCH) -> tuple[list[bytes], bool]:
    """Up to ``most`` messages without waiting, and whether more may wait.  An empty
    message from a connection is its end, and ends the batch."""
    batch: list[bytes] = []
    for _ in range(most):
        try:
            data = sock.recv(_MAX_DATAGRAM, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return batch, False
        batch.append(data)
        if not data and sock.type == socket.SOCK_SEQPACKET:
            return batch, False
    return batch, True


class Sent(enum.Enum):
    """What became of a line handed to another process."""

    SENT = "sent"
    #: Not sent, and not to be: counted as dropped for the outlet's ``drop_reason`` (a fork
    #: child's full or closed channel, a refusal, a line no message can hold).
    DROPPED = "dropped"
    #: A member's connection is full: the line is still the sender's, to keep until the
    #: owner has read some (its number is not used, so no gap is seen).
    FULL = "full"
    #: Nobody listens any more: the stream's owner left; the line is still the sender's.
    GONE = "gone"


class Uplink:
    """A fork child's way to its parent's stream: one datagram per line, in sequence order."""

    #: How a line the channel had no room for is counted.
    drop_reason = "overflow"

    def __init__(self, channel: Channel, slot: int) -> None:
        self._channel = channel
        self._slot = slot
        self._seq = 0
        self._lock = threading.Lock()  # a leaf, held across one non-blocking send

    def send(self, ts: float, level: str, out: str, args: Any) -> Sent:
        """Hand one line over; DROPPED when the channel is full or the line too long for
        one datagram, GONE once the parent's end is closed (its streams have ended: nobody
        reads the channel again).  Never waits."""
        with self._lock:
            seq = self._seq
            self._seq += 1
            data = encode_datagram(self._slot, os.getpid(), seq, ts, level, out, args)
            try:
                self._channel.sender.send(data)
            except OSError as exc:
                return Sent.GONE if _hostwide.gone(exc) else Sent.DROPPED
            return Sent.SENT


class Refusal:
    """Where a writer's lines go when the process that holds its stream on the host has
    other credentials: nowhere, each counted as rejected (docs/writer.md#processes-on-one-key)."""

    drop_reason = "rejected"

    def send(self, ts: float, level: str, out: str, args: Any) -> Sent:
        return Sent.DROPPED


REFUSAL = Refusal()


class MemberLink:
    """A member process's connection to the process that owns the stream on the host
    (docs/writer.md#processes-on-one-key): one message per line, sent by the caller, so a
    line is with the owner when ``emit`` returns, even if this process then leaves by
    ``os._exit``.  A full connection sends nothing (the sender keeps the line until the
    owner has read some).  Numbered from 0 on each connection, which a random number
    names (the datagram's slot); a number skipped is a line the sender dropped, which the
    owner marks in its place.  A connection the owner's end left is kept as ``broken``,
    for the member to count what was lost with it.

    ``owns(pid)`` tells whether the process ``pid`` holds the stream lock (True when it
    cannot be told): a connection is kept only to the owner, never to a listener whose
    process is dying (the kernel closes a dying process's descriptors one by one, so its
    socket may outlive its lock for a moment)."""

    drop_reason = "overflow"

    def __init__(self, address: _hostwide.SocketAddress, owns: Callable[[int], bool]) -> None:
        self._address = address
        self._owns = owns
        self._sock: Optional[socket.socket] = None
        self._seq = 0
        self._connection = 0
        self._owner_pid = 0
        self._skipped: list[tuple[int, int]] = []  # (first seq, count) numbered but not lines
        self._markers: list[tuple[int, int, int]] = []  # (seq, lines lost, owner pid) sent
        #: The connections whose owner left, until ``take_broken``.
        self._broken: list[Broken] = []
        #: The processes this link reached as the stream's owner (pids, as seen here).
        self.owners: set[int] = set()
        self._lock = threading.Lock()  # a leaf, held across one non-blocking connect or send

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> bool:
        """Connect to the owner if not connected; False when nobody listens."""
        with self._lock:
            return self._connect_locked()

    def _connect_locked(self) -> bool:
        if self._sock is not None:
            return True
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHANNEL_BUFFER)
        except OSError:
            pass  # the system's default size then
        sock.setblocking(False)
        try:
            sock.connect(self._address)
        except OSError:  # no socket, nobody listening, or its backlog full
            sock.close()
            return False
        peer = _hostwide.peer_credentials(sock)
        # A name another user took first, or a dying owner's socket.
        if peer is not None and (peer[1] != os.geteuid() or not self._owns(peer[0])):
            sock.close()
            return False
        self._sock = sock
        self._seq = 0
        self._connection = secrets.randbits(31)
        self._owner_pid = 0 if peer is None else peer[0]
        if self._owner_pid:
            self.owners.add(self._owner_pid)
        self._skipped, self._markers = [], []
        return True

    def send(self, ts: float, level: str, out: str, args: Any) -> Sent:
        """Hand one line to the owner (never waits)."""
        with self._lock:
            return self._send_locked(ts, level, out, args)

    def _send_locked(self, ts: float, level: str, out: str, args: Any) -> Sent:
        if not self._connect_locked():
            return Sent.GONE
        sock = self._sock
        assert sock is not None
        seq = self._seq
        data = encode_datagram(self._connection, os.getpid(), seq, ts, level, out, args)
        try:
            sock.send(data)
        except BlockingIOError:
            return Sent.FULL
        except OSError as exc:
            if _hostwide.gone(exc):
                self._break_locked()
                return Sent.GONE
            self._skip_locked(1)  # a line too long for one message: a gap the owner marks
            return Sent.DROPPED
        self._seq += 1
        return Sent.SENT

    def send_marker(self, ts: float, out: str, lost: int, owner_pid: int) -> Sent:
        """Hand the owner a marker of ``lost`` lines lost with ``owner_pid``: numbered, but no
        line of the member's; kept with the connection in case it breaks before the owner
        stored it (``Broken.unstored``)."""
        with self._lock:
            seq = self._seq
            sent = self._send_locked(ts, "warn", out, None)
            if sent is Sent.SENT:
                self._skipped.append((seq, 1))
                self._markers.append((seq, lost, owner_pid))
            return sent

    def skip(self, count: int) -> None:
        """``count`` lines the sender dropped before its next: the owner sees the gap and
        marks it in their place."""
        with self._lock:
            self._skip_locked(count)

    def _skip_locked(self, count: int) -> None:
        self._skipped.append((self._seq, count))
        self._seq += count

    def _break_locked(self) -> None:
        if self._seq:
            key = f"{os.getpid()}.{self._connection}"
            self._broken.append(
                Broken(key, self._seq, tuple(self._skipped), tuple(self._markers), self._owner_pid)
            )
        self._disconnect_locked()

    def check_owner(self) -> None:
        """A connection whose far end no longer holds the stream lock (its owner was killed,
        or this process took the stream over) is broken, sent on since or not.  The owner
        is asked without the link's lock held (file calls)."""
        sock, owner_pid = self._sock, self._owner_pid
        if sock is None or not owner_pid or self._owns(owner_pid):
            return
        with self._lock:
            if self._sock is sock:
                self._break_locked()

    @property
    def has_broken(self) -> bool:
        return bool(self._broken)

    def take_broken(self) -> list[Broken]:
        """The connections whose owner left since the last call."""
        with self._lock:
            broken, self._broken = self._broken, []
            return broken

    def close(self) -> None:
        with self._lock:
            self._disconnect_locked()

    def _disconnect_locked(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def forget_in_child(self) -> None:
        """In a fork child: the parent's connection is the parent's; the child makes its own
        (closing the inherited copy leaves the parent's connection open)."""
        self._lock = threading.Lock()
        self._broken = []
        self._disconnect_locked()


@attrs.frozen
class Broken:
    """A member's connection whose owner's end went away: what the member had sent on it."""

    #: The connection's name in the owner's counts (``Inbox.accounted``).
    key: str
    #: Lines numbered on it: sent, or skipped (``skipped``: counted as dropped already, or
    #: markers, no lines of the member's).
    numbered: int
    skipped: tuple[tuple[int, int], ...]
    #: Markers of lines lost with an earlier owner: (seq, lines lost, that owner's pid).
    markers: tuple[tuple[int, int, int], ...]
    #: The process that owned the stream at the other end (0: not known).
    owner_pid: int

    def lost(self, accounted: int) -> int:
        """Lines sent that the owner's history does not account for (it accounts for the
        first ``accounted``): lost with the owner, unless they were skipped."""
        lost = max(self.numbered - accounted, 0)
        for first, count in self.skipped:
            lost -= max(min(first + count, self.numbered) - max(first, accounted), 0)
        return lost

    def unstored(self, accounted: int) -> list[tuple[int, int]]:
        """The markers the owner's history does not hold, as (lines lost, owner pid): to be
        sent again."""
        return [(lost, pid) for seq, lost, pid in self.markers if seq >= accounted]


Outlet = Union[Uplink, MemberLink, Refusal]

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


def listen(receiver: Receiver, address: _hostwide.SocketAddress) -> None:
    """``receiver`` owns its stream on the host: member processes connect to ``address``.
    Binds on the caller's thread, so a failure is the caller's (``OSError``, or
    ``RuntimeError`` when no thread can be started).  Call it holding the stream lock: a
    socket file left at ``address`` by an owner that died is replaced."""
    global _channel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        if isinstance(address, str):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)
        listener.bind(address)
        listener.listen(socket.SOMAXCONN)
        with _lock:
            if _channel is None:
                _channel = Channel()
            channel = _channel
            _homes[receiver] = channel
    except BaseException:
        listener.close()
        raise
    channel.listen(listener, receiver)


def stop_listening(receiver: Receiver, address: _hostwide.SocketAddress, timeout: float) -> bool:
    """No more members for ``receiver``: its socket is removed, and what its members sent is
    delivered (``Channel.stop_listening``).  Call it holding the stream lock."""
    if isinstance(address, str):
        with contextlib.suppress(OSError):
            os.unlink(address)  # new members find nobody at once
    channel = _homes.get(receiver)
    return channel is None or channel.stop_listening(receiver, timeout)


def release(receiver: Receiver) -> None:
    """A finished stream lets go of its channel; the last one out closes it, so its reader
    thread and sockets do not outlive the streams (the next fork makes a new one)."""
    global _channel
    with _lock:
        _owners.discard(receiver)
        channel = _homes.pop(receiver, None)
        if channel is None:
            return
        if channel in _homes.values():
            channel.stop_listening(receiver, 0.0)  # its members, if any, find nobody now
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
    if _channel is not None:
        _channel.forget_in_child()
    for receiver, channel in list(_homes.items()):
        _uplinks[receiver] = channel
    _homes.clear()
    _owners.clear()
    _channel = None


_lifecycle.before_fork(_before_fork)
_lifecycle.after_fork_in_child(_after_fork_in_child)
