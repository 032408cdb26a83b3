"""Where the processes of a host that write one stream meet (docs/writer.md#processes-on-one-key).

A stream has one owner on the host at a time, the holder of its stream lock (``_streamlock``);
every other process on the key is a member and hands its lines to the owner.  Beside the
lock, in the runtime directory (``_runtime``), a stream has:

* ``<digest>.sock``: the owner's listening ``AF_UNIX`` ``SOCK_SEQPACKET`` socket.  Each member
  connects once: a connection of its own keeps message boundaries, is bounded by the
  member's send buffer (not by ``net.unix.max_dgram_qlen``, 10 on many hosts), tells the
  owner the member's user (``SO_PEERCRED``) and tells the member at once when the owner
  is gone (``EPIPE``).  A path too long for ``sun_path`` (108 bytes) is replaced by a
  Linux abstract name made from it.
* ``<digest>.members``: each member holds a shared ``fcntl`` lock on it while it writes the
  stream (``Presence``); the owner asks the kernel, without taking a lock, whether any other
  process holds one.  The kernel drops a member's lock however it ends.
* ``<digest>.history``: the owner's history, the encoded rows in ``pos`` order (``HistoryFile``),
  so a process that takes the stream over, after the owner closed, exited or was killed,
  continues its ``pos`` and uploads the whole log without re-opening the stream.
* ``<digest>.ended``: left by the last process out, which stored the log: its parent process
  and when (``Ended``), so a process of the same parent that starts the key moments later
  (a recycled worker, the next command of a loop) continues that log instead of replacing it.

A leaf below ``_streamlock``: files and sockets only, no writer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
from typing import Callable, Optional, Union

import attrs

from . import _lifecycle
from ._host import boot_id, locking_pid, proc_stat
from ._stats import StreamTotals

__all__ = [
    "CONTINUE_WINDOW",
    "Carried",
    "Identity",
    "PRESENCE",
    "History",
    "HistoryFile",
    "history_joined",
    "joined_path",
    "MEMBERS_KEPT",
    "Meeting",
    "Presence",
    "SocketAddress",
    "load_history",
    "mark_ended",
    "parent_run",
    "parse_rows",
    "take_ended",
    "this_run",
]

#: ``sun_path``'s size on Linux, its terminating NUL included.
_SUN_PATH = 108

SocketAddress = Union[str, bytes]


@attrs.frozen
class Meeting:
    """The files of one stream in the runtime directory (see the module docstring)."""

    directory: str
    digest: str

    def _path(self, suffix: str) -> str:
        return os.path.join(self.directory, self.digest + suffix)

    def members_path(self, credential: str = "") -> str:
        """The presence file of the processes that write with ``credential``."""
        return self._path(f".{credential[:16]}.members" if credential else ".members")

    @property
    def history_path(self) -> str:
        return self._path(".history")

    @property
    def ended_path(self) -> str:
        return self._path(".ended")

    @property
    def socket_path(self) -> str:
        return self._path(".sock")

    @property
    def address(self) -> SocketAddress:
        """Where the owner listens: the socket's path, or an abstract name made from it when
        the path is too long for ``sun_path`` (Linux; elsewhere the path, which then fails
        to bind and the stream is this process's alone, with a warning)."""
        path = self.socket_path
        if len(os.fsencode(path)) < _SUN_PATH or not sys.platform.startswith("linux"):
            return path
        digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:40]
        return f"\0lelog/{digest}".encode()


# -- presence: who else writes the stream -------------------------------------------------------

_OPEN_FLAGS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


class Presence:
    """The members files this process has open, and how many of its streams are members.

    POSIX record locks belong to the process, and closing any descriptor of a file drops
    them all: so this process opens a members file once while at least one of its streams
    is a member, keeps one shared lock on it meanwhile, and asks about others through that
    same descriptor; with no member here, it holds no lock on the file, so a descriptor
    opened just to ask is closed again (and so is the one kept, when the last member leaves).  ``_lock`` guards the table; it is a leaf held across a few non-blocking
    file calls (``F_SETLK``, ``F_GETLK`` never wait).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, tuple[int, int]] = {}  # path -> (descriptor, members here)

    def join(self, path: str) -> None:
        """Say that this process writes the stream as a member (``OSError`` when it cannot)."""
        with self._lock:
            fd, count = self._files.get(path, (-1, 0))
            if fd < 0:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o600)
            if count == 0:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError:
                    if path not in self._files:
                        os.close(fd)
                    raise
            self._files[path] = (fd, count + 1)

    def leave(self, path: str) -> None:
        """One member of this process leaves; the last one lets go of the lock, and of the
        descriptor."""
        with self._lock:
            fd, count = self._files.get(path, (-1, 0))
            if count <= 0:
                return
            if count > 1:
                self._files[path] = (fd, count - 1)
                return
            del self._files[path]
            with contextlib.suppress(OSError):
                os.close(fd)  # drops the lock with it

    def others(self, path: str) -> bool:
        """Whether a process other than this one is a member now."""
        with self._lock:
            fd, _ = self._files.get(path, (-1, 0))
            if fd >= 0:
                return _locked_by_another(fd)
            try:
                fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
            except OSError:
                return False  # no such file: nobody was ever a member
            try:
                return _locked_by_another(fd)
            finally:
                os.close(fd)  # this process holds no lock on it: closing drops nothing

    def forget_in_child(self) -> None:
        """In a fork child: it holds none of the parent's locks; the inherited descriptors
        are closed (which drops nothing of the parent's)."""
        self._lock = threading.Lock()
        for fd, _ in self._files.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._files.clear()


def _locked_by_another(fd: int) -> bool:
    try:
        return locking_pid(fd) is not None
    except OSError:
        return False


PRESENCE = Presence()
_lifecycle.after_fork_in_child(PRESENCE.forget_in_child)


# -- the history a successor continues ------------------------------------------------------------


#: How many members' counts a history file keeps at most (the most recently changed): the
#: live connections and those cut by an owner's end, whose members have yet to compare (a
#: connection its member closed is forgotten).
MEMBERS_KEPT = 8192


class HistoryFile:
    """The owner's copy of its history: appended as the encoder publishes rows, rewritten
    from the history ring when it passes twice the history budget.  Only the encoder (under
    the pipeline's ``encode_lock``) and the final sequence call it.

    Beside the rows, in the same write, a row that begins with ``#`` holds how many lines of
    each member connection (``"<pid>.<connection>"``) the rows account for, stored or marked:
    what changed since the previous write, all of it when the file is rewritten.  A member
    whose owner vanished compares its own count with it, so the lines lost with the owner are
    counted exactly (``Sharing``): rows and counts are one ``write``, so a kill leaves both or
    neither.  Beside it, ``<path>.joined`` says the stream is a writer's elsewhere, which this
    host's processes join and never store or close (``_look``); a member asks for it as it
    leaves, so it is a file of its own rather than a row.  A ``#totals`` row, written by an
    owner that hands the stream on, holds the stream's counts so far (``Carried``)."""

    def __init__(self, path: str, budget: int) -> None:
        self.path = path
        self._limit = max(2 * budget, 1 << 16)
        self._fd: Optional[int] = None
        self._size = 0
        self.members: dict[str, int] = {}
        self._totals = b""
        self.failed: Optional[OSError] = None

    def start(self, rows: list[bytes], members: Optional[dict[str, int]] = None) -> None:
        """Begin the file with ``rows`` and ``members``' counts (what a successor continues
        from); replaces any."""
        if members:
            self._count(members)
        self._rewrite(rows)

    def append(
        self, rows: list[bytes], ring_rows: Callable[[], list[bytes]], members: dict[str, int]
    ) -> None:
        """Add ``rows`` and the members' counts that changed with them; past the limit,
        rewrite the file from ``ring_rows()`` (the history ring's, which hold these rows
        already)."""
        if self._fd is None:
            return
        self._count(members)
        data = b"\n".join(rows) + b"\n" + (_counts_row(members) if members else b"")
        if self._size + len(data) > self._limit:
            self._rewrite(ring_rows())
            return
        self._write(data)

    def hand_on(self, carried: Carried) -> None:
        """The stream's counts so far, for the next owner (kept when the file is rewritten)."""
        if self._fd is None:
            return
        self._totals = carried.row()
        self._write(self._totals)

    def _write(self, data: bytes) -> None:
        """One ``write`` (``O_APPEND``: what it holds is whole in the file, or absent)."""
        assert self._fd is not None
        try:
            os.write(self._fd, data)
        except OSError as exc:
            self._fail(exc)
            return
        self._size += len(data)

    def mark_joined(self) -> None:
        """The stream is a writer's elsewhere (``joined_path``)."""
        try:
            os.close(os.open(joined_path(self.path), os.O_WRONLY | os.O_CREAT | _OPEN_FLAGS, 0o600))
        except OSError as exc:
            self._fail(exc)

    def _count(self, members: dict[str, int]) -> None:
        kept = self.members
        for key, count in members.items():
            kept.pop(key, None)  # the most recently changed last
            if count >= 0:  # a negative count: the member closed the connection
                kept[key] = count
        while len(kept) > MEMBERS_KEPT:
            del kept[next(iter(kept))]

    def _rewrite(self, rows: list[bytes]) -> None:
        temporary = f"{self.path}.{os.getpid()}.tmp"
        data = b"".join(row + b"\n" for row in rows) + (_counts_row(self.members) if self.members else b"")
        data += self._totals
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | _OPEN_FLAGS, 0o600)
            try:
                os.write(fd, data)
                os.replace(temporary, self.path)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            self._fail(exc)
            return
        old, self._fd = self._fd, fd
        if old is not None:
            with contextlib.suppress(OSError):
                os.close(old)
        self._size = len(data)

    def _fail(self, exc: OSError) -> None:
        """A full disk: a successor would continue from a short history, so none is kept
        (a successor then opens the stream afresh); said once by the owner (``failed``)."""
        self.failed = self.failed or exc
        self.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def remove(self) -> None:
        """The stream is finished: nobody is to continue it."""
        self.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.forget_joined()

    def forget_joined(self) -> None:
        """A stream of this host's own, not a writer's elsewhere (a new one, or finished)."""
        with contextlib.suppress(OSError):
            os.unlink(joined_path(self.path))


@attrs.frozen
class History:
    """A history file as a successor reads it."""

    rows: list[bytes]
    #: The ``pos`` the next line takes.
    next_pos: int
    #: When it was last written (``time.time()`` seconds).
    written: float
    #: How many lines of each member connection the rows account for (``HistoryFile``).
    members: dict[str, int] = attrs.field(factory=dict)
    #: The stream is a writer's elsewhere, joined (``HistoryFile.mark_joined``).
    joined: bool = False
    #: The stream's counts as the last owner that handed it on left them.
    carried: Optional[Carried] = None


#: A process as its runs know it: pid, start time (clock ticks since boot), boot id.
Identity = tuple[object, ...]


@attrs.frozen
class Carried:
    """A stream's counts handed from owner to owner (``StreamTotals``), the processes known
    to have written it, the ``pos`` they reach (rows past it were stored by an owner that
    ended without handing on: counted by those rows), and the processes that owned it, so a
    fork child of any of them continues its log (``take_ended``)."""

    totals: StreamTotals
    pids: frozenset[int]
    next_pos: int
    owners: tuple[Identity, ...] = ()

    def to_json(self) -> dict[str, object]:
        totals = self.totals
        return {
            "accepted": totals.accepted,
            "sent": totals.sent,
            "dropped": {k: v for k, v in totals.dropped.items() if v},
            "pids": sorted(self.pids)[-PIDS_KEPT:],
            "pos": self.next_pos,
            "owners": [list(owner) for owner in self.owners[-OWNERS_KEPT:]],
        }

    def row(self) -> bytes:
        return _TOTALS + json.dumps(self.to_json(), separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, data: object) -> Optional[Carried]:
        try:
            assert isinstance(data, dict)
            dropped = {str(k): int(v) for k, v in data["dropped"].items()}
            pids = frozenset(int(pid) for pid in data["pids"])
            totals = StreamTotals().plus(int(data["accepted"]), int(data["sent"]), dropped, len(pids))
            owners = tuple(tuple(owner) for owner in data.get("owners", []))
            return cls(totals, pids, int(data["pos"]), owners)
        except (AssertionError, ValueError, KeyError, TypeError, AttributeError):
            return None

    @classmethod
    def parse(cls, row: bytes) -> Optional[Carried]:
        try:
            data = json.loads(row[len(_TOTALS) :])
        except (ValueError, RecursionError):
            return None
        return cls.from_json(data)

    def through(self, next_pos: int, more_pids: frozenset[int], lost: int = 0) -> Carried:
        """These counts, with the rows up to ``next_pos`` that an owner stored without handing
        on counted as sent lines, ``lost`` lines counted as lost with that owner, and
        ``more_pids``."""
        extra = max(next_pos - self.next_pos, 0)
        pids = self.pids | more_pids
        dropped = {"lost_with_owner": lost} if lost else {}
        return Carried(self.totals.plus(extra + lost, extra, dropped, len(pids)), pids, next_pos, self.owners)


_TOTALS = b"#totals "
#: The most process ids a ``#totals`` row names (a day of recycled workers stays small).
PIDS_KEPT = 4096
#: The most owners (the latest) it names.
OWNERS_KEPT = 64


def _counts_row(members: dict[str, int]) -> bytes:
    return b"#" + json.dumps(members, separators=(",", ":")).encode() + b"\n"


def load_history(path: str) -> Optional[History]:
    """The rows of a history file and the next ``pos``; None when there is none (a row cut
    short by a kill at the end is left out)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
            written = os.fstat(fh.fileno()).st_mtime
    except OSError:
        return None
    rows: list[bytes] = []
    members: dict[str, int] = {}
    carried: Optional[Carried] = None
    found = data.split(b"\n")
    found.pop()  # what follows the last newline: empty, or a row cut short
    for row in found:
        if not row.startswith(b"#"):
            rows.append(row)
            continue
        if row.startswith(_TOTALS):
            carried = Carried.parse(row) or carried
            continue
        try:
            counts = json.loads(row[1:])
        except ValueError:
            continue
        if isinstance(counts, dict):
            members.update((str(k), v) for k, v in counts.items() if type(v) is int)
    for key in [key for key, count in members.items() if count < 0]:
        del members[key]  # its member closed it
    history = parse_rows(rows, written)
    joined = history_joined(path)
    return None if history is None else attrs.evolve(history, members=members, joined=joined, carried=carried)


def joined_path(history_path: str) -> str:
    """The flag beside a history file that says its stream is a writer's elsewhere."""
    return history_path + ".joined"


def history_joined(history_path: str) -> bool:
    """Whether the owner that keeps this history file joined a writer's stream elsewhere."""
    return os.path.exists(joined_path(history_path))


def parse_rows(rows: list[bytes], written: float = 0.0) -> Optional[History]:
    """``rows`` as a history: the next ``pos`` follows the last row that has one (rows
    after it, cut short or not lelog's, are left out); None when no row has one."""
    while rows:
        try:
            pos = json.loads(rows[-1])["pos"]
        except (ValueError, KeyError, TypeError, RecursionError):
            rows.pop()
            continue
        if type(pos) is int:
            return History(rows, pos + 1, written)
        rows.pop()
    return None


#: How soon after a run of the same parent ended a new writer continues its log.
CONTINUE_WINDOW = 10.0


def _identity(pid: int) -> Identity:
    """Process ``pid`` as its runs know it: pid, start time, boot."""
    found = proc_stat(pid)
    return (pid, None if found is None else found[1], boot_id())


def parent_run() -> list[object]:
    """This process's parent, as a run's processes share it (a list: as JSON gives it back)."""
    return list(_identity(os.getppid()))


def this_run() -> Identity:
    """This process, as its fork children know it as their parent."""
    return _identity(os.getpid())


def mark_ended(path: str, carried: Carried) -> None:
    """The last process out stored the log: say so, with itself, its parent, the time and
    the stream's counts and owners (``carried``), for a process that continues the log."""
    data = json.dumps(
        {"process": list(this_run()), "parent": parent_run(), "at": time.time(), "carried": carried.to_json()}
    ).encode()
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _OPEN_FLAGS, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def take_ended(path: str, *, fork_parent: Optional[Identity] = None) -> Optional[Carried]:
    """The stream's counts and owners when this process is to continue the log the last
    process out stored, else None: a run of this process's parent ended moments ago
    (``CONTINUE_WINDOW``: a recycled worker, a loop's next command), or (``fork_parent``: a
    fork child that logs on after its parent's stream ended, its parent as it was at the
    fork) its parent owned that stream, however long ago.  The mark is taken away either
    way."""
    try:
        with open(path, "rb") as fh:
            found = json.loads(fh.read())
        os.unlink(path)
    except (OSError, ValueError, RecursionError):
        return None
    try:
        carried = Carried.from_json(found.get("carried")) or Carried(StreamTotals(), frozenset(), 0)
        owners = {tuple(found["process"]), *carried.owners}
        ours = fork_parent is not None and fork_parent in owners
        recent = found["parent"] == parent_run() and 0 <= time.time() - float(found["at"]) <= CONTINUE_WINDOW
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if not (ours or recent):
        return None
    return attrs.evolve(carried, owners=(*carried.owners, tuple(found["process"])))


def peer_credentials(conn: socket.socket) -> Optional[tuple[int, int]]:
    """The process id and user id at the other end of an ``AF_UNIX`` connection (Linux)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        data = conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, _ = struct.unpack("3i", data)
    return int(pid), int(uid)


def gone(exc: OSError) -> bool:
    """Whether a send failed because nobody listens any more (not because it was full)."""
    return exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN)
