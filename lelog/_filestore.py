"""``FileStore``: the log service's calls against a local directory, used when no url is set.

Layout.  A key is split on ``/``; every segment but the last is a directory, the last names
two files::

    <directory>/<seg>/.../<last>.live.ndjson   the open stream: exists exactly while it is
                                               open, lines appended as they are pushed
    <directory>/<seg>/.../<last>.ndjson        the stored log: written whole, atomically

Key encoding.  Each segment is percent-encoded as UTF-8 with nothing kept but ``A-Z a-z 0-9
_ - ~``; a ``.`` becomes ``%2E`` and an empty segment becomes ``%`` (which percent-encoding
never produces).  So a name holds no ``/``, NUL, ``.`` or ``..``, is never empty or hidden,
can never be mistaken for another key's file or for a temporary file (those start with
``.``), and decodes back to the key: split the relative path on ``/``, read ``%`` as ``""``
and percent-decode the rest.  A segment longer than ``MAX_SEGMENT`` bytes once encoded (a
file name holds 255) is shortened to a readable prefix, ``%~`` (which encoding never
produces, so no other key's name can be the same) and a hash of the segment; the key of a
shortened name is recorded next to it in ``<name>.key``.  On a case-insensitive file system
keys that differ only in case share files.

One writer per key.  ``open_stream`` (or ``claim``) takes an ``fcntl`` lock on
``<name>.lock`` and holds it until the stream is closed: a second writer, in this process or
another, is refused with the holder's pid.  The lock dies with its process and is not
inherited by a forked child or a command lelog runs.

Appends.  Lines are appended with ``os.write`` on an ``O_APPEND`` descriptor, one batch per
call, so concurrent batches never interleave inside a row.  A write that fails part-way (a
full disk) is rolled back to the size before it, so a retried batch never lands on top of a
torn copy of itself; a tail that read rows of the rolled-back batch skips them by ``pos``
when they come again.

Bound.  A key's live file and stored log stay under ``max_bytes`` (``LELOG_STORE_MAX_BYTES``,
default 256 MiB): past it the oldest rows are dropped, counted, and replaced by one marker
row (``args`` ``{"lelog": "dropped", "dropped": "<n>"}``) at the start of the file.  When
the disk is too full to write the stored log, the live file (every line streamed) is
renamed into its place.

Atomic files.  Every file that changes as a whole (open, upload, snapshot, a bounded live
file) is built under a private name and moved into place with ``os.replace``, so a reader
sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import threading
import time
import uuid
from typing import IO, Any, Callable, Iterator, Optional, Sequence, Union
from urllib.parse import quote, unquote

from . import _lifecycle
from ._client import LineLike
from ._config import LogConfig
from ._exceptions import BlobNotFound, ConfigError, LogServiceError, StreamNotFound
from ._host import locking_pid
from ._line import Line, encode_line, format_time, ndjson, parse_line

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: one writer per key is not enforced
    fcntl = None  # type: ignore[assignment]

__all__ = ["DEFAULT_DIRECTORY", "DEFAULT_MAX_BYTES", "MAX_SEGMENT", "FileStore", "KeyInUse", "encode_key"]

#: Where logs go when neither ``directory`` nor ``LELOG_HOME`` says otherwise.
DEFAULT_DIRECTORY = ".lelog"
#: The most a key's live file or stored log holds, in bytes, unless configured.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: The longest encoded segment kept as it is: a file name holds 255 bytes, suffix included.
MAX_SEGMENT = 200

_CHUNK = 1 << 20
_LIVE_SUFFIX = ".live.ndjson"
_LOG_SUFFIX = ".ndjson"
_LOCK_SUFFIX = ".lock"
_KEY_SUFFIX = ".key"
_SHORT_PREFIX = 120  # characters of the encoded segment kept readable in a shortened name
_OPTS = frozenset({"deadline", "cancel", "on_retry", "retry"})
# Failures that waiting can cure; any other file-system error is permanent for the writer.
_DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})  # no EDQUOT on Windows
_TRANSIENT = _DISK_FULL | {errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.EIO}
_MARKER_TAG = "dropped"
_MARKER_ROOM = 400  # bytes kept free for the drop marker row

# Locks held by this process: lock path -> (pid, the FileStore holding it).  POSIX locks do
# not conflict within one process, so this refuses a second writer here.  Guarded by
# _HELD_LOCK, which is held only around dict updates (no I/O): it cannot deadlock.
_HELD: dict[str, tuple[int, int]] = {}
_HELD_LOCK = threading.Lock()


def _renew_lock_in_child() -> None:
    """A parent thread may have held ``_HELD_LOCK`` at the fork; the child's locks are none
    of the parent's (POSIX locks are not inherited), so the table starts empty."""
    global _HELD_LOCK
    _HELD_LOCK = threading.Lock()
    _HELD.clear()


_lifecycle.after_fork_in_child(_renew_lock_in_child)  # lelog's one fork hook runs it


def _encode_segment(segment: str) -> str:
    if not segment:
        return "%"
    name = quote(segment, safe="", errors="surrogatepass").replace(".", "%2E")
    if len(name) <= MAX_SEGMENT:
        return name
    prefix = name[:_SHORT_PREFIX]
    cut = prefix.rfind("%", len(prefix) - 2)
    if cut != -1:
        prefix = prefix[:cut]  # never half of a %XX escape
    digest = hashlib.sha256(segment.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{prefix}%~{digest}"


def encode_key(key: str) -> str:
    """The path of ``key`` below the store's directory, without suffix (see the module doc)."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    return "/".join(_encode_segment(segment) for segment in key.split("/"))


class _StoreError(LogServiceError):
    """A file-system call failed; the writer retries it only when waiting may help."""

    def __init__(self, message: str, *, call: str, errno_: Optional[int]) -> None:
        super().__init__(message, call=call)
        self.errno = errno_

    @property
    def retryable(self) -> bool:
        return self.errno in _TRANSIENT


class KeyInUse(LogServiceError):
    """Another live writer (this process or another) holds the key in the file store."""

    permanent = True

    def __init__(self, key: str, pid: Optional[int]) -> None:
        holder = f"process {pid}" if pid else "another process"
        super().__init__(
            f"the key {key!r} is being written by {holder} (the file store takes one writer "
            "per key); wait for it to end or choose another key",
            call="open",
        )
        self.pid = pid


@contextlib.contextmanager
def _store_errors(call: str, key: str) -> Iterator[None]:
    """Report ``OSError`` as a ``LogServiceError``: the writer handles only that tree."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno in _DISK_FULL:
            reason = f"the disk is full ({reason})"
        raise _StoreError(
            f"{call} {key!r}: file store: {reason}" + (f": {exc.filename}" if exc.filename else ""),
            call=call,
            errno_=exc.errno,
        ) from exc


def _check_opts(opts: dict[str, Any]) -> None:
    """The client's per-call options are accepted and ignored: local calls neither wait nor retry."""
    unknown = set(opts) - _OPTS
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")


def _max_bytes_from_env() -> int:
    text = os.environ.get("LELOG_STORE_MAX_BYTES", "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 4096:
        raise ConfigError(
            f"LELOG_STORE_MAX_BYTES must be a whole number of bytes, at least 4096, not {text!r}"
        )
    return value


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _append(fd: int, data: bytes) -> None:
    """Append ``data`` whole or not at all: a failed write is cut back to the size before it."""
    size = os.fstat(fd).st_size
    try:
        _write_all(fd, data)
    except OSError:
        os.ftruncate(fd, size)  # raises too when the file cannot be repaired: never retried blind
        raise


def _replace(path: str, fill: Callable[[IO[bytes]], None]) -> None:
    """Write a file under a private name, sync it, and move it to ``path`` in one step."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())  # the rename must never publish a file whose data is not on disk
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _pos_of(row: bytes) -> Optional[int]:
    """The pos of one NDJSON row; None for a malformed row."""
    try:
        pos = json.loads(row).get("pos")
    except (ValueError, AttributeError):
        return None
    return pos if isinstance(pos, int) else None


def _first_pos(body: bytes) -> Optional[int]:
    end = body.find(b"\n")
    return _pos_of(body if end < 0 else body[:end])  # no copy of the rest of a 5 MiB body


def _row_pos(fh: IO[bytes], offset: int) -> tuple[Optional[int], int]:
    """The pos of the row starting at ``offset`` and where the next row starts; a torn or
    malformed row has no pos."""
    fh.seek(offset)
    row = fh.readline()
    end = offset + len(row)
    return (_pos_of(row) if row.endswith(b"\n") else None), end


def _cut(fh: IO[bytes], first: int) -> int:
    """The size of the leading rows whose pos is below ``first``, in a file in pos order."""
    low, high = 0, os.fstat(fh.fileno()).st_size
    # Invariant: ``low`` is a row start; rows before it are below ``first``, rows from
    # ``high`` on are not; the rows starting in [low, high) are still to be judged.
    while low < high:
        middle = (low + high) // 2
        start = low
        if middle > low:
            fh.seek(middle - 1)
            fh.readline()  # to the end of the row holding byte middle - 1
            start = fh.tell()  # the first row start at or after middle
            if start >= high:
                start = low  # no row starts in [middle, high): judge the one at low
        pos, end = _row_pos(fh, start)
        if pos is not None and pos < first:
            low = end
        else:
            high = start
    return low


def _next_row(fh: IO[bytes], offset: int) -> int:
    """The first row start at or after ``offset``."""
    if offset <= 0:
        return 0
    fh.seek(offset - 1)
    fh.readline()
    return fh.tell()


def _count_rows(fh: IO[bytes], start: int, end: int) -> int:
    fh.seek(start)
    count, left = 0, end - start
    while left > 0:
        data = fh.read(min(left, _CHUNK))
        if not data:
            break
        count += data.count(b"\n")
        left -= len(data)
    return count


def _copy(fh: IO[bytes], start: int, end: int, out: IO[bytes]) -> None:
    fh.seek(start)
    left = end - start
    while left > 0:
        data = fh.read(min(left, _CHUNK))
        if not data:
            return
        out.write(data)
        left -= len(data)


def _dropped_before(row: bytes) -> int:
    """How many rows a leading drop marker says were dropped before it (0: not a marker)."""
    try:
        args = json.loads(row).get("args")
    except (ValueError, AttributeError):
        return 0
    if not isinstance(args, dict) or args.get("lelog") != _MARKER_TAG:
        return 0
    try:
        return int(args.get("dropped", "0"))
    except ValueError:
        return 0


def _marker(dropped: int, pos: int, max_bytes: int) -> bytes:
    text = (
        f"lelog: the {dropped:,} oldest lines were dropped: the file store keeps at most "
        f"{max_bytes:,} bytes per key (LELOG_STORE_MAX_BYTES)\n"
    )
    args = {"lelog": _MARKER_TAG, "dropped": str(dropped)}
    return encode_line("warn", pos, text, format_time(time.time()), args) + b"\n"


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _same_file(path: str, identity: tuple[int, int]) -> bool:
    """Whether ``path`` is still the file we follow (not closed, not re-opened)."""
    try:
        return _identity(os.stat(path)) == identity
    except FileNotFoundError:
        return False


class _Rows:
    """Whole rows of a file that grows by appends and may be cut back (a rolled-back write).

    ``start`` is where the next unread row starts.  Every read first makes sure ``start`` is
    a row start of the file as it is now, so a row is never read in part or glued to the
    rest of a rolled-back one.
    """

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.start = 0

    def read(self) -> list[bytes]:
        fd = self.fh.fileno()
        size = os.fstat(fd).st_size
        if self.start > size or (self.start and os.pread(fd, 1, self.start - 1) != b"\n"):
            self.start = self._row_start(min(self.start, size))
        want = _CHUNK
        while True:
            data = os.pread(fd, min(size - self.start, want), self.start)
            end = data.rfind(b"\n")
            if end >= 0 or len(data) < want:
                break
            want *= 2  # one row longer than a chunk
        if end < 0:
            return []
        self.start += end + 1
        return [row for row in data[:end].split(b"\n") if row.strip()]

    def _row_start(self, offset: int) -> int:
        """The last row start at or before ``offset`` (``offset`` itself after a newline)."""
        fd = self.fh.fileno()
        while offset > 0:
            low = max(0, offset - _CHUNK)
            found = os.pread(fd, offset - low, low).rfind(b"\n")
            if found >= 0:
                return low + found + 1
            offset = low
        return 0


class _KeyLock:
    """An ``fcntl`` lock on ``<name>.lock``; holds the holder's pid for the refusal message."""

    def __init__(self, path: str, key: str) -> None:
        self.path = path
        self.key = key
        self.fd: Optional[int] = None

    def acquire(self, owner: int) -> None:
        pid = os.getpid()
        with _HELD_LOCK:  # dict updates only
            held = _HELD.get(self.path)
            if held is not None and held[0] == pid and held[1] != owner:
                raise KeyInUse(self.key, pid)
            _HELD[self.path] = (pid, owner)
        try:
            self._lock()
        except BaseException:
            with _HELD_LOCK:
                _HELD.pop(self.path, None)
            raise

    def _lock(self) -> None:
        # O_CLOEXEC (Python's default): a command lelog runs never holds it.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno in (errno.EACCES, errno.EAGAIN):
                    raise KeyInUse(self.key, holder) from None
                raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)  # closing it drops the lock
            self.fd = None
        with _HELD_LOCK:
            held = _HELD.get(self.path)
            if held is not None and held[0] == os.getpid():
                del _HELD[self.path]


def _read_pid(fd: int) -> Optional[int]:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip() or "0") or None
    except (OSError, ValueError, UnicodeDecodeError):
        return None


class FileStore:
    """The calls of ``LogServiceClient`` against a local directory: one NDJSON file per key.

    It keeps the service's semantics where the writer relies on them: re-opening wipes the
    live stream, writing to or closing a stream that is not open raises ``StreamNotFound``,
    ``close_stream(snapshot=True)`` stores what the stream holds, a missing log is
    ``BlobNotFound``.  Unlike the service it keeps every live line (no 5,000-line window),
    up to ``max_bytes`` per key.  ``directory`` defaults to ``$LELOG_HOME``, else
    ``./.lelog``; nothing is created before the first call that writes.
    """

    def __init__(
        self,
        directory: Union[str, os.PathLike[str], None] = None,
        *,
        config: Optional[LogConfig] = None,
        poll_interval: float = 0.05,
        max_bytes: Optional[int] = None,
    ) -> None:
        if directory is None:
            directory = os.environ.get("LELOG_HOME") or DEFAULT_DIRECTORY
        self.directory = os.path.abspath(os.fspath(directory))
        self.config = config if config is not None else LogConfig()
        #: How often ``tail`` looks for new lines once it has read everything.
        self.poll_interval = poll_interval
        if max_bytes is None:
            max_bytes = _max_bytes_from_env()
        elif isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 4096:
            raise ConfigError(f"max_bytes must be an int of at least 4096, not {max_bytes!r}")
        #: The most a key's live file or stored log holds; past it the oldest rows go.
        self.max_bytes = max_bytes
        # Serialises this store's appends, so a rollback cuts only its own batch (other
        # processes are kept off the key by its lock).  Held around file I/O but never while
        # taking another lock.
        self._append_lock = threading.Lock()
        # The dicts below are changed by the thread that opens or closes a key (the CLI's
        # main thread, a writer's worker); each change is one dict operation under the GIL.
        self._locks: dict[str, _KeyLock] = {}
        # Keys another writer held when this store tried to open them: every later call on
        # them is refused, so a refused writer never appends to, stores or closes the
        # other's stream.
        self._refused: dict[str, KeyInUse] = {}
        self._dropped: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<FileStore directory={self.directory!r}>"

    def log_path(self, key: str) -> str:
        """The stored log of ``key`` (written by ``upload`` or a snapshot close)."""
        return os.path.join(self.directory, encode_key(key) + _LOG_SUFFIX)

    def live_path(self, key: str) -> str:
        """The live stream of ``key``: it exists exactly while it is open."""
        return os.path.join(self.directory, encode_key(key) + _LIVE_SUFFIX)

    def live_keys(self) -> list[str]:
        """The keys that have a live file: open streams, and those of writers that died.

        Names are decoded as the module doc says; a shortened one by its ``<name>.key``.
        A name that decodes to no key (not written by a store) is skipped.
        """
        keys = []
        for root, dirs, files in os.walk(self.directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith(".") or not name.endswith(_LIVE_SUFFIX):
                    continue
                relative = os.path.relpath(os.path.join(root, name[: -len(_LIVE_SUFFIX)]), self.directory)
                key = self._decode(relative.replace(os.sep, "/"))
                if key is not None:
                    keys.append(key)
        return sorted(keys)

    def _decode(self, relative: str) -> Optional[str]:
        if "%~" in relative:  # shortened: the key was recorded next to it
            try:
                with open(os.path.join(self.directory, relative + _KEY_SUFFIX), "rb") as fh:
                    key = fh.read().decode("utf-8", "surrogatepass")
            except (OSError, UnicodeDecodeError):
                return None
        else:
            segments = relative.split("/")
            key = "/".join("" if s == "%" else unquote(s, errors="surrogatepass") for s in segments)
        return key if encode_key(key) == relative else None

    def dropped(self, key: str) -> int:
        """Rows of ``key`` this store dropped to keep within ``max_bytes``."""
        return self._dropped.get(key, 0)

    # -- one writer per key ------------------------------------------------------------------

    def claim(self, key: str) -> None:
        """Take the key's writer lock until ``close_stream`` or ``close``.

        ``KeyInUse`` names the holder's pid when another writer has it: a writer that
        does not share the host's stream lock with it (another runtime directory), whose
        ``open_stream`` would wipe the live file.
        """
        if key in self._locks:
            return
        self.prepare(key)
        with _store_errors("open", key):
            lock = _KeyLock(self._lock_path(key), key)
            try:
                lock.acquire(id(self))
            except KeyInUse as exc:
                self._refused[key] = exc
                raise
        self._refused.pop(key, None)
        self._locks[key] = lock

    def prepare(self, key: str) -> None:
        """Make the key's directory and record a shortened name's key: a key whose files
        cannot be made fails here, before anything is written."""
        with _store_errors("open", key):
            os.makedirs(os.path.dirname(self._lock_path(key)), exist_ok=True)
            self._record_key(key)

    def _lock_path(self, key: str) -> str:
        return os.path.join(self.directory, encode_key(key)) + _LOCK_SUFFIX

    def held_elsewhere(self, key: str) -> bool:
        """Whether another process holds the key's writer lock now (a writer this host's
        runtime directory does not reach: ``_look``)."""
        if fcntl is None:
            return False
        try:
            fd = os.open(self._lock_path(key), os.O_RDONLY)
        except OSError:
            return False
        try:
            return locking_pid(fd) is not None
        except OSError:
            return False
        finally:
            os.close(fd)

    def _check_refused(self, key: str) -> None:
        refused = self._refused.get(key)
        if refused is not None:
            raise KeyInUse(key, refused.pid)

    def release(self, key: str) -> None:
        """Give up the key's writer lock without closing its stream (``lelog recover``,
        when it could not finish a dead writer's stream)."""
        self._release(key)

    def _release(self, key: str) -> None:
        lock = self._locks.pop(key, None)
        if lock is not None:
            lock.release()

    def _record_key(self, key: str) -> None:
        """Record the key of a shortened name in ``<name>.key`` (its name cannot be decoded)."""
        relative = encode_key(key)
        if "%~" not in relative:
            return
        path = os.path.join(self.directory, relative + _KEY_SUFFIX)
        if not os.path.exists(path):

            def fill(fh: IO[bytes]) -> None:
                fh.write(key.encode("utf-8", "surrogatepass"))

            _replace(path, fill)

    # -- the calls ------------------------------------------------------------------------

    def open_stream(self, key: str, **opts: Any) -> None:
        """Start an empty live stream; re-opening wipes it and ends the tails of the old one."""
        _check_opts(opts)
        self.claim(key)
        live = self.live_path(key)
        with _store_errors("open", key):
            # A new file rather than a truncated one: tails notice the changed identity.
            _replace(live, lambda fh: None)

    def write(self, key: str, lines: Sequence[LineLike], **opts: Any) -> None:
        """Append lines to the live stream; ``StreamNotFound`` when it is not open."""
        _check_opts(opts)
        self._check_refused(key)
        body = ndjson([line if isinstance(line, bytes) else line.encode() for line in lines])
        path = self.live_path(key)
        with _store_errors("write", key):
            try:
                # No O_CREAT: a missing live file is a stream that is not open.
                fd = os.open(path, os.O_RDWR | os.O_APPEND)
            except FileNotFoundError:
                raise StreamNotFound(
                    f"write {key!r}: stream: not found (not open in {self.directory})",
                    status=400,
                    error_msg="stream: not found",
                    call="write",
                ) from None
            try:
                with self._append_lock:  # file I/O under it, no other lock taken: no deadlock
                    if os.fstat(fd).st_size + len(body) > self.max_bytes:
                        self._bound_live(key, path, fd, body)
                    else:
                        _append(fd, body)  # one write per batch: O_APPEND keeps rows whole
            finally:
                os.close(fd)

    def _bound_live(self, key: str, path: str, fd: int, body: bytes) -> None:
        """Replace the live file by a marker, its newest rows and ``body``, within half the
        bound (so this copy happens once per half bound written, not on every batch)."""
        with os.fdopen(os.dup(fd), "rb") as old:
            self._replace_bounded(key, path, old, os.fstat(fd).st_size, body, self.max_bytes // 2)

    def _replace_bounded(
        self, key: str, path: str, head: Optional[IO[bytes]], head_end: int, body: bytes, budget: int
    ) -> None:
        """Write ``head[:head_end] + body`` to ``path`` with its oldest rows dropped, and
        counted in a leading marker, until it fits in ``budget`` bytes."""
        if head is None:
            head_end = 0
        previous = skip = 0
        if head is not None and head_end:
            head.seek(0)
            first = head.readline()
            previous = _dropped_before(first)
            if previous:
                skip = len(first)  # the old marker gives way to the new one
        start = skip + max(0, head_end + len(body) + _MARKER_ROOM - budget)
        last: Optional[int] = None
        body_cut = 0
        if head is not None and start <= head_end:
            cut = min(_next_row(head, start), head_end)
        else:
            cut = head_end
            over = start - head_end
            body_cut = body.find(b"\n", over - 1) + 1
            if body_cut == 0:  # the last row alone is too long: keep it anyway
                body_cut = body.rfind(b"\n", 0, len(body) - 1) + 1
            if body_cut:
                last = _first_pos(body[body.rfind(b"\n", 0, body_cut - 1) + 1 : body_cut])
        dropped = body.count(b"\n", 0, body_cut)
        if head is not None and cut > skip:
            dropped += _count_rows(head, skip, cut)
            if last is None:
                last = _row_pos(head, _row_start_before(head, cut))[0]
        total = previous + dropped
        self._dropped[key] = total

        def fill(fh: IO[bytes]) -> None:
            fh.write(_marker(total, last if last is not None else 0, self.max_bytes))
            if head is not None:
                _copy(head, cut, head_end, fh)
            fh.write(body[body_cut:])

        _replace(path, fill)

    def upload(self, key: str, lines: Union[Sequence[LineLike], bytes], **opts: Any) -> None:
        """Store the complete log, atomically, within ``max_bytes``.

        A writer's history is bounded, so its upload may start after line 0.  The live
        file still holds those first lines: they are put in front, so the stored log is
        whole (the service cannot do this; it keeps only the last 5,000 live lines).
        """
        _check_opts(opts)
        self._check_refused(key)
        body = (
            lines
            if isinstance(lines, bytes)
            else ndjson([line if isinstance(line, bytes) else line.encode() for line in lines])
        )
        path = self.log_path(key)
        first = _first_pos(body) if body else None
        with _store_errors("upload", key):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._record_key(key)
            live: Optional[IO[bytes]] = None
            if first:
                with contextlib.suppress(FileNotFoundError):
                    live = open(self.live_path(key), "rb")
            with live if live is not None else contextlib.nullcontext():
                head_end = _cut(live, first) if live is not None and first else 0
                if head_end + len(body) > self.max_bytes:
                    self._replace_bounded(key, path, live, head_end, body, self.max_bytes)
                    return

                def fill(fh: IO[bytes]) -> None:
                    if live is not None:
                        _copy(live, 0, head_end, fh)
                    fh.write(body)

                try:
                    _replace(path, fill)
                except OSError as exc:
                    if exc.errno not in _DISK_FULL or not self._store_live(key, path):
                        raise

    def _store_live(self, key: str, path: str) -> bool:
        """On a disk too full for a second copy, the live file (every line streamed) becomes
        the stored log: a rename needs no space.  An empty live file stays for the close."""
        live = self.live_path(key)
        with self._append_lock:  # no append can land in the file being moved
            try:
                os.replace(live, path)
            except FileNotFoundError:
                return False
            with contextlib.suppress(OSError):
                os.close(os.open(live, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        return True

    def close_stream(self, key: str, *, snapshot: bool = False, **opts: Any) -> None:
        """End the live stream; with ``snapshot`` what it holds becomes the stored log.

        ``StreamNotFound`` when it is not open.  Of several concurrent closers exactly one
        succeeds: each first moves the live file to a private name, which only one can do.
        The key's writer lock is released either way.
        """
        _check_opts(opts)
        self._check_refused(key)
        live = self.live_path(key)
        claimed = os.path.join(os.path.dirname(live), f".{uuid.uuid4().hex}.closing")
        try:
            with _store_errors("close", key):
                try:
                    os.replace(live, claimed)
                except FileNotFoundError:
                    raise StreamNotFound(
                        f"close {key!r}: stream: not found (not open in {self.directory})",
                        status=500,
                        error_msg="stream: not found",
                        call="close",
                    ) from None
                if snapshot:
                    with open(claimed, "rb") as fh:
                        os.fsync(fh.fileno())
                    os.replace(claimed, self.log_path(key))
                else:
                    os.unlink(claimed)
        finally:
            self._release(key)

    def download(self, key: str, **opts: Any) -> bytes:
        """The stored log as NDJSON bytes; ``BlobNotFound`` when there is none."""
        _check_opts(opts)
        path = self.log_path(key)
        with _store_errors("download", key):
            try:
                with open(path, "rb") as fh:
                    return fh.read()
            except FileNotFoundError:
                raise BlobNotFound(
                    f"download {key!r}: no stored log at {path}", status=404, call="download"
                ) from None

    def tail(self, key: str, **opts: Any) -> Iterator[Line]:
        """Follow the live stream: the lines it holds, then new ones, until it is closed.

        Like the service, a stream that is not open yields nothing, and re-opening the
        stream ends the tail.  A live file replaced to keep within the bound is followed
        on.  Only whole rows are yielded, each pos once.  Close the iterator to stop early.
        """
        _check_opts(opts)
        fh: Optional[IO[bytes]] = None
        with _store_errors("tail", key):
            try:
                fh = open(self.live_path(key), "rb", buffering=0)
            except FileNotFoundError:
                pass  # not open: an empty tail, as the service answers
        return self._follow(key, fh)

    def peek(self, key: str, *, quiet: float = 0.0, max_lines: int = 5000, **opts: Any) -> list[Line]:
        """The last ``max_lines`` whole lines the live stream holds now, without following
        it (``quiet`` is the service's: a file is read at once); empty when it is not open."""
        _check_opts(opts)
        path = self.live_path(key)
        with _store_errors("peek", key):
            try:
                with open(path, "rb") as fh:
                    rows = _Rows(fh).read()
            except FileNotFoundError:
                return []
        return [_parse_row(key, path, row) for row in rows[-max_lines:]] if max_lines > 0 else []

    def _follow(self, key: str, fh: Optional[IO[bytes]]) -> Iterator[Line]:
        path = self.live_path(key)
        last_pos = -1
        while fh is not None:
            with fh:
                identity = _identity(os.fstat(fh.fileno()))
                rows = _Rows(fh)
                while True:
                    # Checked before reading: every row appended before the close is read below.
                    ended = not _same_file(path, identity)
                    fresh = rows.read()
                    for row in fresh:
                        line = _parse_row(key, path, row)
                        if line.pos <= last_pos:
                            continue  # a rolled-back batch written again, or an old marker
                        last_pos = line.pos
                        yield line
                    if ended:
                        break  # a torn last row (a writer died mid-append) is not a line
                    if not fresh:
                        time.sleep(self.poll_interval)
            fh = _successor(path)

    def close(self) -> None:
        """Release the writer locks this store still holds."""
        for key in list(self._locks):
            self._release(key)

    def __enter__(self) -> FileStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _row_start_before(fh: IO[bytes], offset: int) -> int:
    """The start of the row that ends at ``offset`` (a row start)."""
    low = max(0, offset - _CHUNK)
    fh.seek(low)
    data = fh.read(offset - low)
    return low + data.rfind(b"\n", 0, len(data) - 1) + 1


def _successor(path: str) -> Optional[IO[bytes]]:
    """The live file that replaced the one a tail followed, if it was replaced to keep the
    bound (it starts with a drop marker); None when the stream was closed or re-opened."""
    try:
        fh = open(path, "rb", buffering=0)
    except FileNotFoundError:
        return None
    first = fh.readline()
    if _dropped_before(first):
        fh.seek(0)
        return fh
    fh.close()
    return None


def _parse_row(key: str, path: str, row: bytes) -> Line:
    try:
        return parse_line(row)
    except ValueError as exc:
        raise LogServiceError(
            f"tail {key!r}: {path} holds a row that is not a log line ({exc}): {row[:80]!r}",
            call="tail",
        ) from None
