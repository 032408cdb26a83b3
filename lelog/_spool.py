"""The crash spool: every accepted line of a stream, masked, in a local file that survives a kill.

A writer's lines live in memory until they are sent and the stored log is uploaded at close.
When the process is killed (OOM killer, a CI timeout's ``kill -9``), that memory is gone.
With ``spool_dir`` set, each stream also appends its lines to a spool on disk, and ``lelog
recover`` (``_recover.py``) later uploads what a dead process left there.

The writer's interface (all of it; nothing else of this module is the writer's business)::

    spool = Spool.for_stream(options.spool_dir, key, config, backend,
                             encode_pending=..., flush_interval=..., budget=...,
                             max_lines=..., max_bytes=..., wake_lines=...,
                             fsync_interval=...)  # no I/O
    spool.start()                         # with the writer's worker
    spool.add_rows(encoded)               # per encoded batch, in pos order (the writer's
                                          # encoding step); never blocks on I/O, never raises
    spool.wake()                          # many lines are pending: encode and write them now
    spool.discard()                       # the stored log is uploaded and the stream closed:
                                          # nothing to recover, the spool goes
    spool.close(timeout)                  # the writer is done otherwise: stop, keep the files,
                                          # let go of the stream lock: recover may take them

``Spool.prepare_directory(path)`` checks ``spool_dir`` when the writer is built (a
``ConfigError`` naming it; ``check_spool_dir`` is the check of the value alone, for every
place a spool directory comes in).  Rows come from the writer's encoder, masked and
numbered: they are the bytes the service gets, encoded once for both.

Whose a spool is.  While it is open, a spool holds its stream's lock (``_streamlock``; taken
before its directory is made, released by ``close`` and, after the files are gone, by
``discard``), so ``lelog recover`` leaves it alone for as long as its writer has it, in any
pid namespace, and may take it as soon as the writer closed or died.  When this process holds
the stream already (its writer took the lock), that lock covers the spool, which takes the
lock itself once it is free.  When another process holds it, or the lock cannot be had, the
manifest says so (``stream_locked`` false) and recovery judges the spool by its writer's pid.

Why the spool's thread calls ``encode_pending`` itself: the writer's worker encodes between
HTTP requests, and a request to a blackholed service holds it for many seconds.  The writer's
encoding step can run on either thread (one at a time, in ``pos`` order), so the spool's
thread encodes what is pending and writes it every ``flush_interval / 2`` whatever the
service does; whichever thread encodes a line, it is encoded once (docs/writer.md#encoding).

Layout, per stream, below ``spool_dir`` (directories 0700, files 0600)::

    <pid>-<random>/manifest.json       who wrote it and for which service (never the token)
    <pid>-<random>/0000000000.ndjson   rows in the file store's NDJSON format, in pos order;
    <pid>-<random>/0000000001.ndjson   a new segment every budget/4 bytes, the oldest removed
                                       while the spool is over its byte budget

Rows carry the stream's ``pos``, so a line the spool lost (evicted by the budget, a full
disk, its queue overflowing) leaves a gap, which ``read_log`` turns into a counted marker.  Rows are appended with ``os.write`` on an ``O_APPEND`` descriptor; a kill mid-write
leaves at most a torn last row, which has no ``\\n`` and is ignored.

fsync.  A killed process loses nothing the spool has written: the data is in the kernel's page
cache.  Only an operating-system crash or power loss loses what was not yet synced, so the
current segment is ``fdatasync``-ed at most every ``fsync_interval`` seconds (default 5: the
last 5 s of a machine crash are lost, for one ~1 ms sync per stream every 5 s; README).
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
from collections import deque
from itertools import chain
from typing import Any, Callable, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

import attrs

from . import _reentry
from ._config import LogConfig
from ._diagnostics import RateLimitedWarnings
from ._exceptions import ConfigError
from ._filestore import FileStore
from ._host import boot_id as _boot_id
from ._host import proc_stat as _proc_stat
from ._lifecycle import start_daemon
from ._line import MAX_LINE_BYTES, TRUNCATION_SUFFIX, Line, encode_line, time_seconds
from ._runtime import runtime_dir
from ._streamlock import StreamLock, StreamName, holder_of

__all__ = [
    "DEFAULT_FSYNC_INTERVAL",
    "MANIFEST",
    "SPOOL_DIR_ENV",
    "LogBody",
    "Manifest",
    "ProcessIdentity",
    "Segments",
    "Spool",
    "SpoolStats",
    "check_spool_dir",
    "read_log",
    "redact_url",
    "remove_spool",
    "service_of",
]

#: The environment variable that turns the spool on for every writer of a process.
SPOOL_DIR_ENV = "LELOG_SPOOL_DIR"
#: Seconds between two syncs of a spool to the disk (only a machine crash needs them).
DEFAULT_FSYNC_INTERVAL = 5.0

MANIFEST = "manifest.json"
_SEGMENT_RE = re.compile(r"\A(\d{10})\.ndjson\Z")
_MANIFEST_VERSION = 1
_MARKER = (
    "[lelog] {count:,} lines missing here: the spool could not keep them (byte budget, full disk "
    "or overload) or they were unreadable"
)
#: The longest ``out`` a line of lelog's can have: the service's limit and the cut's suffix.
_MAX_OUT_BYTES = MAX_LINE_BYTES + len(TRUNCATION_SUFFIX.encode())
#: Rows longer than this are not even decoded: no line lelog writes comes near it.
_MAX_ROW_BYTES = 8 << 20


def check_spool_dir(value: object, name: str = "spool_dir") -> Optional[str]:
    """A spool directory as given (a string or ``os.PathLike``), as a ``str``; None for None
    (no spool).  ``ConfigError`` naming ``name`` for what cannot be one: empty or blank (a
    blank value would be a directory named " "), a NUL byte, anything but a path."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ConfigError(
            f"{name} must be a directory path (a str or os.PathLike), not {type(value).__name__}"
        )
    if not value.strip():
        raise ConfigError(f"{name} is empty: give a directory, or leave {name} unset for no spool")
    if "\0" in value:
        raise ConfigError(f"{name} holds a NUL byte ({value!r}): give a directory path")
    return value


# -- who wrote a spool ---------------------------------------------------------------------------


@attrs.frozen
class ProcessIdentity:
    """A process, told apart from a later one that reuses its pid: pid, start time, boot id.

    Start time and boot id come from Linux's ``/proc``; elsewhere they are None and only the
    pid is compared, so a reused pid looks alive and its spool waits (never the reverse).
    """

    pid: int
    start_time: Optional[int]
    boot_id: Optional[str]

    @classmethod
    def current(cls) -> ProcessIdentity:
        pid = os.getpid()
        found = _proc_stat(pid)
        return cls(pid, None if found is None else found[1], _boot_id())

    def is_alive(self) -> bool:
        """Whether this very process still runs (not merely some process with its pid)."""
        boot = _boot_id()
        if self.boot_id is not None and boot is not None and boot != self.boot_id:
            return False  # the machine restarted since
        found = _proc_stat(self.pid)
        if found is not None and self.start_time is not None:
            state, started = found
            return started == self.start_time and state not in ("Z", "X")  # not a zombie
        if self.start_time is not None and os.path.isdir("/proc/self"):
            return False  # /proc works and has no such process
        if os.name == "nt":
            return True  # os.kill(pid, 0) would terminate it there: assume alive, never wrong
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # another user's process holds the pid
        return True


# -- the manifest -------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` without user-info, scheme and host in lower case: how a service is named."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))


def service_of(config: LogConfig, backend: object) -> str:
    """The service a writer's lines go to: ``file:<directory>`` for the file store, else the
    url without user-info.  Recovery uploads a spool only to the same service."""
    if isinstance(backend, FileStore):
        return "file:" + backend.directory
    return redact_url(config.url)


@attrs.frozen(kw_only=True)
class Manifest:
    """What recovery needs to finish a stream as its writer would have; never the token."""

    key: str
    account_id: str
    service: str
    owner: ProcessIdentity
    skip_opening_stream: bool
    trim_new_line_suffix: bool
    created: float
    #: The spool's writer holds (or waits for) the stream lock while the spool is open, so
    #: ``lelog recover`` judges it by the lock; False (and in older manifests): by the pid.
    stream_locked: bool = False

    def to_json(self) -> bytes:
        obj = {"version": _MANIFEST_VERSION, **attrs.asdict(self)}
        return json.dumps(obj, ensure_ascii=False, indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse a manifest; ``ValueError`` for anything else (files in a spool directory are
        read from disk, and another local user may have planted them)."""
        try:
            obj = json.loads(data)
            if obj.get("version") != _MANIFEST_VERSION:
                raise ValueError(f"unknown manifest version {obj.get('version')!r}")
            owner = obj["owner"]
            manifest = cls(
                key=obj["key"],
                account_id=obj["account_id"],
                service=obj["service"],
                owner=ProcessIdentity(owner["pid"], owner["start_time"], owner["boot_id"]),
                skip_opening_stream=obj["skip_opening_stream"],
                trim_new_line_suffix=obj["trim_new_line_suffix"],
                created=obj["created"],
                stream_locked=obj.get("stream_locked", False),
            )
        except (AttributeError, KeyError, TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"not a spool manifest ({type(exc).__name__}: {exc})") from None
        for name in ("key", "account_id", "service"):
            if not isinstance(getattr(manifest, name), str):
                raise ValueError(f"not a spool manifest: {name} is not a string")
        for name in ("skip_opening_stream", "trim_new_line_suffix", "stream_locked"):
            if not isinstance(getattr(manifest, name), bool):
                raise ValueError(f"not a spool manifest: {name} is not true or false")
        if isinstance(manifest.created, bool) or not isinstance(manifest.created, (int, float)):
            raise ValueError("not a spool manifest: created is not a time")
        owner = manifest.owner
        if not manifest.key or type(owner.pid) is not int or owner.pid <= 0:
            raise ValueError("not a spool manifest: no key or no pid")
        if not (owner.start_time is None or type(owner.start_time) is int) or not (
            owner.boot_id is None or isinstance(owner.boot_id, str)
        ):
            raise ValueError("not a spool manifest: a malformed owner")
        return manifest


# -- the segments: the spool's files, without threads ---------------------------------------------


class Segments:
    """Appends rows to a spool directory's segment files within a byte budget.

    Owned by one thread (the spool's); no locking.  A new segment starts every ``budget // 4``
    bytes and the oldest ones are removed while the total is over ``budget``, so the spool
    keeps the newest ``3/4 budget`` to ``budget`` bytes (more only for one batch larger than
    that) and never copies a byte to do so.
    """

    def __init__(self, directory: str, budget: int) -> None:
        self.directory = directory
        self.budget = budget
        self._segment_bytes = max(budget // 4, 1)
        # (index, size) of each segment, oldest first; the last one is open for appending.
        self._sizes: deque[list[int]] = deque()
        self._fd: Optional[int] = None
        self.dirty = False  # written since the last sync

    @property
    def total(self) -> int:
        return sum(size for _, size in self._sizes)

    def append(self, data: bytes) -> None:
        """Append whole rows (``\n``-terminated), starting a new segment whenever one is full,
        so even a batch larger than the budget can be trimmed to it by ``evict``.

        On ``OSError`` (a full disk) the segment is cut back to its last whole row, so a
        failed write never leaves a torn row in front of later ones.
        """
        view = memoryview(data)
        start = 0
        while start < len(data):
            if self._fd is None or self._sizes[-1][1] >= self._segment_bytes:
                self._next_segment()
            limit = start + self._segment_bytes - self._sizes[-1][1]
            end = len(data)
            if limit < end:  # up to the last row that fits; at least one row
                end = data.rfind(b"\n", start, limit) + 1
                if end <= start:
                    end = data.find(b"\n", limit) + 1 or len(data)
            self._write(view[start:end])
            start = end

    def _write(self, piece: memoryview) -> None:
        assert self._fd is not None
        current = self._sizes[-1]
        try:
            left = piece
            while left:
                left = left[os.write(self._fd, left) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, current[1])
            raise
        current[1] += len(piece)
        self.dirty = True

    def evict(self) -> int:
        """Remove the oldest segments while over the budget; returns the bytes removed."""
        removed = 0
        while len(self._sizes) > 1 and self.total > self.budget:
            index, size = self._sizes[0]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(index))
            self._sizes.popleft()
            removed += size
        return removed

    def sync(self) -> None:
        if self._fd is not None and self.dirty:
            self.dirty = False
            (getattr(os, "fdatasync", None) or os.fsync)(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _path(self, index: int) -> str:
        return os.path.join(self.directory, f"{index:010d}.ndjson")

    def _next_segment(self) -> None:
        index = self._sizes[-1][0] + 1 if self._sizes else 0
        if self._fd is not None:
            self.sync()  # a finished segment is synced once, whatever the interval
            self.close()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
        self._fd = os.open(self._path(index), flags, 0o600)
        self._sizes.append([index, 0])


def _write_manifest(directory: str, manifest: Manifest) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(manifest.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(directory, MANIFEST))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- the spool: a thread that writes what the writer accepted ----------------------------------


@attrs.frozen
class SpoolStats:
    """What a spool did: lines written, lines it could not keep, and why the last time."""

    written: int = 0
    lost: int = 0
    evicted_bytes: int = 0
    errors: int = 0
    last_error: Optional[str] = None


class Spool:
    """One stream's spool; see the module docstring for the interface and the layout.

    Locks.  ``_lock`` guards the pending queue, its counts, the counters and ``_closed``.  It
    is held for a few operations only, never across I/O or a call out, and no other lock is
    taken under it, so it is a leaf and cannot take part in a deadlock (the writer calls
    ``add_rows`` under its ``_encode_lock`` and ``start`` under its ``_lock``; the spool's
    thread calls the writer's ``encode_pending`` holding no lock; ``add_rows`` sets the wake
    event, itself a leaf, after letting go of it).  The spool's thread owns ``_segments``
    and the directory outright; ``close`` touches them only once that thread
    has ended (or when it never started).
    """

    def __init__(
        self,
        directory: str,
        manifest: Manifest,
        *,
        encode_pending: Callable[[], None],
        flush_interval: float,
        budget: int,
        max_lines: int,
        max_bytes: int,
        wake_lines: int,
        fsync_interval: float = DEFAULT_FSYNC_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        stream: Optional[StreamName] = None,
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        # The stream whose lock covers the spool while it is open (None: a backend of this
        # process only); see _take_stream_lock.  The three fields below are the spool's
        # thread's, except that close() takes _stream_lock (under _lock) once it is done.
        self._stream = stream
        self._stream_lock: Optional[StreamLock] = None
        self._lock_dir: Optional[str] = None
        self._lock_wanted = False  # this process held the stream: take it when it is free
        self._let_go = False  # close() released the lock: a late one is released at once
        # The writer's encoding step: it hands its rows to add_rows (see the module docstring).
        self._encode_pending = encode_pending
        # Half the writer's interval: a line is on disk within flush_interval even when a
        # write, a sync or the scheduler is slow for a while.
        self._interval = flush_interval / 2
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._wake_lines = wake_lines
        self._fsync_interval = fsync_interval
        self._clock = clock
        self._warnings = RateLimitedWarnings()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending: deque[Sequence[bytes]] = deque()  # batches of encoded rows
        self._pending_lines = 0
        self._pending_bytes = 0
        self._overflow = 0  # lines refused since the last write
        self._written = self._lost = self._evicted = self._errors = 0
        self._last_error: Optional[str] = None
        self._closed = False
        self._discarded = False  # the log is stored: the directory must not be (re)created
        self._joined = False  # mark_joined: its lines are a writer's elsewhere to store
        self._thread: Optional[threading.Thread] = None
        # Owned by the spool's thread (see the class docstring).
        self._segments: Optional[Segments] = None
        self._budget = budget
        self._synced_at = clock()

    @classmethod
    def for_stream(
        cls,
        spool_dir: str,
        key: str,
        config: LogConfig,
        backend: object,
        **options: Any,
    ) -> Spool:
        """The spool of one writer below ``spool_dir``; nothing is created before ``start``."""
        owner = ProcessIdentity.current()
        manifest = Manifest(
            key=key,
            account_id=config.account_id,
            service=service_of(config, backend),
            owner=owner,
            skip_opening_stream=config.skip_opening_stream,
            trim_new_line_suffix=config.trim_new_line_suffix,
            created=time.time(),
        )
        name = f"{owner.pid}-{secrets.token_hex(4)}"
        try:
            stream: Optional[StreamName] = StreamName.of(config, backend, key)
        except TypeError:
            stream = None  # a test double: no other process can write its stream
        return cls(os.path.join(os.path.abspath(spool_dir), name), manifest, stream=stream, **options)

    @staticmethod
    def prepare_directory(value: object) -> str:
        """Check ``spool_dir`` (``check_spool_dir``), create it (0700) if needed and check it
        is usable; its absolute path.  The runtime directory, where the spool's stream lock
        lives, is checked too: a ``ConfigError`` now, not a spool without its lock later."""
        checked = check_spool_dir(value)
        if checked is None:
            raise ConfigError("spool_dir must be a directory path, not None")
        runtime_dir()
        path = os.path.abspath(checked)
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"spool_dir {path!r} cannot be created ({exc.strerror or exc}); "
                f"give a writable directory, or unset {SPOOL_DIR_ENV}"
            ) from None
        if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(
                f"spool_dir {path!r} is not a writable directory; give a writable one, or unset {SPOOL_DIR_ENV}"
            )
        return path

    def __repr__(self) -> str:
        return f"<Spool {self.directory!r} key={self.manifest.key!r}>"

    # -- any thread ----------------------------------------------------------------------------

    def add_rows(self, rows: Sequence[bytes]) -> None:
        """Queue encoded rows for the spool's thread, in ``pos`` order.

        Never blocks on I/O, never raises; a full queue (the spool's thread is stuck on the
        disk) refuses the rows and counts them: their ``pos`` stay a gap, marked on recovery.
        """
        size = sum(map(len, rows))
        with self._lock:
            if self._closed:
                return
            if self._pending_lines >= self._max_lines or self._pending_bytes >= self._max_bytes:
                self._overflow += len(rows)
                return
            self._pending.append(rows)
            self._pending_lines += len(rows)
            self._pending_bytes += size
            full = self._pending_lines >= self._wake_lines
        if full:  # a batch is queued: write it now rather than let the queue fill up
            self._wake.set()

    def wake(self) -> None:
        """Encode and write now, not at the next interval (a burst is pending)."""
        self._wake.set()

    @property
    def stats(self) -> SpoolStats:
        with self._lock:
            return SpoolStats(self._written, self._lost, self._evicted, self._errors, self._last_error)

    def start(self) -> None:
        """Start the spool's thread (the writer starts it with its worker, never from
        ``__init__``).  Starting a thread under ``_lock`` cannot deadlock: ``start()`` waits
        only for the new thread's bootstrap, which takes no lelog lock."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            # None at interpreter shutdown: close() then writes on its own thread.
            self._thread = start_daemon(self._run, f"lelog-spool[{self.manifest.key}]")

    def close(self, timeout: float = 1.0) -> None:
        """Write what is queued, sync, and stop; the files stay for ``lelog recover``, which
        may take them from now on: the stream lock is released.

        Waits at most ``timeout`` for the spool's thread (a hung disk must not hang the
        writer's close); without a thread the writing happens here.
        """
        self._stop_writing(timeout)
        self._release_stream_lock()

    def _stop_writing(self, timeout: float) -> None:
        with self._lock:
            if self._closed:
                return
        self._encode_now()  # the writer's last lines first: add_rows ignores rows once closed
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._stop.set()
        self._wake.set()
        if thread is None:
            self._finish()
        elif thread is not threading.current_thread():
            thread.join(timeout)

    def discard(self, timeout: float = 1.0) -> None:
        """The stored log is complete: stop and remove the spool.

        Removed even if the spool's thread is stuck on the disk past ``timeout``: it can no
        longer create the directory, and what it still writes goes to unlinked files, so
        recovery never replaces the stored log with an older copy.
        """
        with self._lock:
            self._discarded = True
        self._stop_writing(timeout)
        remove_spool(self.directory)  # before the lock goes: recovery never sees it half gone
        self._release_stream_lock()

    def mark_joined(self) -> None:
        """The stream is a writer's elsewhere, which stores it: ``lelog recover`` removes
        this spool instead of storing it (``JOINED``, in its directory).  Set before the
        directory is looked for, and ``_create`` looks after making it: one of the two
        writes the flag whichever runs first."""
        self._joined = True
        if os.path.isdir(self.directory):
            _write_joined(self.directory)

    def _release_stream_lock(self) -> None:
        with self._lock:
            self._let_go = True
            lock, self._stream_lock = self._stream_lock, None
        if lock is not None:
            lock.release()

    # -- the spool's thread ----------------------------------------------------------------------

    def _run(self) -> None:
        _reentry.mark_own_thread()  # lelog's own: what is logged here goes to no lelog stream
        while True:
            stopping = self._stop.is_set()
            try:
                self._write_pending()
            except Exception as exc:  # a bug: warned, and the spool goes on
                self._failed(0, "running", exc, "lines may be missing from it")
            if stopping:
                break
            self._wake.wait(self._interval)
            self._wake.clear()
        self._finish()

    def _finish(self) -> None:
        self._write_pending()
        segments = self._segments
        if segments is not None:
            try:
                segments.sync()
            except OSError as exc:
                self._failed(0, "syncing", exc)
            with contextlib.suppress(OSError):
                segments.close()

    def _encode_now(self) -> None:
        try:
            self._encode_pending()
        except Exception as exc:  # the writer's own step counts its failures; this is a bug
            self._failed(0, "encoding lines for", exc, "lines may be missing from it")

    def _write_pending(self) -> None:
        """Have the writer encode what is pending, then append the rows queued; a failure
        loses these lines, counted."""
        self._encode_now()
        with self._lock:
            batches, self._pending = self._pending, deque()
            lines, self._pending_lines, self._pending_bytes = self._pending_lines, 0, 0
            overflow, self._overflow = self._overflow, 0
        if overflow:
            self._failed(overflow, "queueing lines for", None)
        if self._segments is None:
            with self._lock:
                discarded = self._discarded
            if discarded:
                return
            try:
                self._create()
            except OSError as exc:
                self._failed(lines, "creating", exc)
                return
        elif self._lock_wanted:
            self._retake_stream_lock()
        if not lines:
            self._maybe_sync()
            return
        try:
            rows = list(chain.from_iterable(batches))
            rows.append(b"")  # the last row's newline, without copying the data once more
            data = b"\n".join(rows)
        except MemoryError as exc:  # counted, and the thread goes on
            self._failed(lines, "joining lines for", exc)
            return
        assert self._segments is not None
        try:
            self._segments.append(data)
        except OSError as exc:
            self._failed(lines, "writing to", exc)
            return
        with self._lock:
            self._written += lines
        try:
            evicted = self._segments.evict()
        except OSError as exc:
            self._failed(0, "trimming", exc, "it may grow past its byte budget")
        else:
            with self._lock:
                self._evicted += evicted
        self._maybe_sync()

    def _maybe_sync(self) -> None:
        segments = self._segments
        now = self._clock()
        if segments is None or not segments.dirty or now - self._synced_at < self._fsync_interval:
            return
        self._synced_at = now
        try:
            segments.sync()
        except OSError as exc:
            self._failed(0, "syncing", exc)

    def _create(self) -> None:
        # The lock first: recovery never finds this spool's directory without it.
        if self._take_stream_lock():
            self.manifest = attrs.evolve(self.manifest, stream_locked=True)
        os.mkdir(self.directory, 0o700)
        try:
            _write_manifest(self.directory, self.manifest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.rmdir(self.directory)
            raise
        self._segments = Segments(self.directory, self._budget)
        if self._joined:
            _write_joined(self.directory)

    @property
    def holds_stream_lock(self) -> bool:
        """Whether this spool holds its stream's lock itself."""
        with self._lock:
            return self._stream_lock is not None

    def _take_stream_lock(self) -> bool:
        """Whether the stream's lock covers this spool while it is open: taken here, or held
        by this process already (its writer's, or a finishing predecessor's: then taken as
        soon as it is free).  Not when another process holds the stream, or the lock cannot
        be had: ``lelog recover`` then judges the spool by its writer's pid, as before."""
        if self._stream is None:
            return False
        try:
            self._lock_dir = runtime_dir()
            if self._retake_stream_lock():
                return True
            holder = holder_of(self._stream, self._lock_dir)
        except (ConfigError, OSError) as exc:
            self._failed(0, "locking the stream of", exc, "lelog recover will judge it by its pid")
            return False
        self._lock_wanted = holder is not None and holder.is_this_process()
        return self._lock_wanted

    def _retake_stream_lock(self) -> bool:
        """Try the stream lock once (never waits); True once the spool holds it."""
        assert self._stream is not None
        try:
            lock = StreamLock.try_acquire(self._stream, self._lock_dir)
        except (ConfigError, OSError) as exc:
            self._failed(0, "locking the stream of", exc, "lelog recover will judge it by its pid")
            lock = None
        if lock is None:
            return False
        self._lock_wanted = False
        with self._lock:
            late = self._let_go
            if not late:
                self._stream_lock = lock
        if late:  # close() is over: the writer let go of the stream
            lock.release()
        return True

    def _failed(
        self,
        lines: int,
        doing: str,
        exc: Optional[BaseException],
        consequence: str = "the last lines may not survive a machine crash",
    ) -> None:
        """Count and warn (rate-limited): the spool never raises into the writer."""
        if exc is None:
            why = "its queue is full (max_pending_lines or max_pending_bytes: the disk or the spool's thread fell behind)"
        elif isinstance(exc, OSError):
            why = exc.strerror or repr(exc)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                why += " (the disk is full)"
        else:
            why = repr(exc)
        with self._lock:
            self._lost += lines
            self._errors += exc is not None
            self._last_error = why
        what = f"{lines:,} lines not spooled" if lines else consequence
        self._warnings.warn(
            f"spool:{doing}:{type(exc).__name__}",
            f"{doing} the spool {self.directory} of {self.manifest.key!r} failed: {why}; {what} "
            "(live streaming goes on)",
        )


#: A spool's flag: its stream was a writer's elsewhere (``Spool.mark_joined``).
JOINED = "joined"


def _write_joined(directory: str) -> None:
    with contextlib.suppress(OSError):
        os.close(os.open(os.path.join(directory, JOINED), os.O_WRONLY | os.O_CREAT, 0o600))


def is_joined(directory: str) -> bool:
    """Whether a spool's stream was a writer's elsewhere (nothing for ``lelog recover`` to store)."""
    return os.path.exists(os.path.join(directory, JOINED))


def remove_spool(directory: str) -> None:
    """Remove a spool in a way an interruption cannot half-do: first renamed to a hidden name
    (which recovery ignores, and removes when it meets one), then deleted."""
    parent, name = os.path.split(directory)
    doomed = os.path.join(parent, f".{name}.removing")
    try:
        os.rename(directory, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


# -- reading a spool back ------------------------------------------------------------------------

#: More lines a second than any writer numbers: a gap in ``pos`` wider than this allows for
#: the time between its two rows is a row out of range, not lines the spool lost.
_MAX_LINES_PER_SECOND = 10_000_000


@attrs.frozen
class LogBody:
    """A spool's rows as a stored log: NDJSON, a marker row in front of every gap.

    ``lines`` counts the spooled lines (not the markers), ``missing`` the lines in gaps,
    ``skipped`` the rows that were there but not usable (torn, malformed, a ``pos`` out of
    range or order, an ``out`` over the line limit), ``unreadable`` the segment files that
    are not regular files (a link, a fifo); ``rows`` are the spooled lines, in ``pos`` order.
    """

    body: bytes
    lines: int
    missing: int
    skipped: int = 0
    unreadable: int = 0
    rows: tuple[Line, ...] = ()


def read_log(directory: str, manifest: Manifest) -> LogBody:
    """The rows of a spool, in pos order, with a counted marker where lines are missing.

    Every row is checked as it is read (see ``LogBody``); a bad row is skipped and counted,
    and its ``pos``, if the rows around it have theirs, is inside a marked gap.  The rows kept
    are the most that rise in ``pos`` in the order they were written, so one row with a
    ``pos`` far out of range costs that row, never the good rows after it.
    """
    names = sorted(name for name in os.listdir(directory) if _SEGMENT_RE.match(name))
    found: list[tuple[Line, bytes]] = []
    seen: set[int] = set()
    skipped = unreadable = 0
    for name in names:
        data = _read_segment(os.path.join(directory, name))
        if data is None:
            unreadable += 1
            continue
        pieces = data.split(b"\n")
        skipped += bool(pieces[-1])  # a row torn by a kill mid-write
        for row in pieces[:-1]:
            line = _spool_row(row)
            if line is None or line.pos in seen:
                skipped += 1
                continue
            seen.add(line.pos)
            found.append((line, row))
    kept = _rising(found)
    skipped += len(found) - len(kept)
    body: list[bytes] = []
    rows: list[Line] = []
    expected = missing = 0
    previous = manifest.created
    for line, row in kept:
        when = time_seconds(line.time) or 0.0
        gap = line.pos - expected
        if gap > _MAX_LINES_PER_SECOND * max(when - previous, 1.0):
            skipped += 1  # out of range: no writer numbered that many lines in that time
            continue
        if gap:
            out = _MARKER.format(count=gap)
            if not manifest.trim_new_line_suffix:
                out += "\n"
            body.append(encode_line("warn", expected, out, line.time, None))
            missing += gap
        body.append(row)
        rows.append(line)
        expected, previous = line.pos + 1, when
    data = b"\n".join(body) + b"\n" if body else b""
    return LogBody(data, len(rows), missing, skipped, unreadable, tuple(rows))


def _read_segment(path: str) -> Optional[bytes]:
    """A segment's bytes; None when it is not a regular file (a link or a fifo someone put
    there: never followed, never waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    except OSError:
        return None
    finally:
        os.close(fd)


def _spool_row(row: bytes) -> Optional[Line]:
    """One spool row as a line; None unless it is one lelog could have written."""
    if len(row) > _MAX_ROW_BYTES:
        return None
    try:
        obj = json.loads(row)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    pos, out, when, level, args = (obj.get(name) for name in ("pos", "out", "time", "level", "args"))
    if type(pos) is not int or pos < 0 or not isinstance(out, str) or not isinstance(level, str):
        return None
    if not isinstance(when, str) or time_seconds(when) is None:
        return None
    if args is not None and not (isinstance(args, dict) and all(isinstance(v, str) for v in args.values())):
        return None
    if len(out) > _MAX_OUT_BYTES // 4 and len(out.encode("utf-8", "surrogatepass")) > _MAX_OUT_BYTES:
        return None  # over the service's line limit: lelog cuts every line to it
    return Line(out, pos, when, level, args)


def _rising(found: list[tuple[Line, bytes]]) -> list[tuple[Line, bytes]]:
    """The longest run of rows rising in ``pos``, in the order given (patience sorting)."""
    ends: list[int] = []  # ends[k]: the smallest last pos of a rising run of k + 1 rows
    last: list[int] = []  # ...and the index of that row in ``found``
    back = [-1] * len(found)  # the row before each one in its best run
    for i, (line, _) in enumerate(found):
        k = bisect.bisect_left(ends, line.pos)
        back[i] = last[k - 1] if k else -1
        if k == len(ends):
            ends.append(line.pos)
            last.append(i)
        else:
            ends[k] = line.pos
            last[k] = i
    chosen: list[tuple[Line, bytes]] = []
    i = last[-1] if last else -1
    while i != -1:
        chosen.append(found[i])
        i = back[i]
    return chosen[::-1]
