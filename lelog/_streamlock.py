"""The stream lock: "a writer on this host holds stream S", one lock type for all of lelog.

A stream is named by its far end, account and key (``StreamName``); its lock is a POSIX
``fcntl`` record lock on ``<runtime dir>/<digest>.lock`` (``_runtime``).  That kind of lock
is what the job needs: the kernel drops it when its process dies however it dies (``kill
-9`` included), a fork child does not inherit it, and processes in other pid namespaces that
share the directory (containers, ``unshare``) see it.

Two traps of POSIX record locks, and what this module does about them:

* They belong to the process, not to a descriptor: closing *any* descriptor of the file in
  the process drops the lock.  So nothing here opens the lock file of a lock this process
  holds: ``holder_of`` answers from the process's table for those.
* A second lock request by the same process on the same file succeeds.  So the process keeps
  a table of the locks it holds (path -> ``StreamLock``) and ``try_acquire`` answers None for
  a stream this process holds already: writers of one process share its stream themselves.

The table is guarded by ``_table_lock``, a leaf: no other lock is taken under it.  It is held
across the few system calls that open, lock, probe or close a lock file (all local, none
waits: ``F_SETLK`` and ``F_GETLK`` never block), because a descriptor opened and closed by
``holder_of`` while another thread of the process takes the lock would drop it.

The holder writes who it is into the file (pid, the pid namespace, the process start time,
the boot id, the host name and what it is doing), for messages; the lock itself is the
kernel's, so a stale file never holds a stream.  A holder removes the file when it lets go,
while still holding it; a process that locked a file just removed finds it gone and tries
again on the new one.

After ``fork`` the child holds none of its parent's locks: ``forget_in_child`` (lelog's
after-fork step) empties its table, without touching the parent's files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import os
import socket
import threading
from typing import Any, Optional
from urllib.parse import urlsplit

import attrs

from . import _lifecycle
from ._client import LogServiceClient
from ._config import LogConfig
from ._filestore import FileStore
from ._host import boot_id, locking_pid, pid_namespace, proc_stat
from ._runtime import runtime_dir

__all__ = ["Holder", "StreamLock", "StreamName", "credential_of", "far_end", "forget_in_child", "holder_of"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: How many times a lock file removed under us (its holder let go) is tried again.
_ATTEMPTS = 64
_MAX_IDENTITY = 4096


def far_end(service: str) -> str:
    """A service as stream names spell it: ``scheme://host:port/path`` with the scheme and
    host in lower case, the default port written out, no user-info, query or trailing ``/``;
    or ``file:`` and the real path of a file store's directory.

    ``service`` is a url, or ``file:<directory>`` as a spool's manifest names a file store.
    """
    if service.startswith("file:"):
        return "file:" + os.path.realpath(service[len("file:") :])
    parts = urlsplit(service)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    netloc = host if port is None else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


@attrs.frozen
class StreamName:
    """What makes two writers, in any processes of the host, write one stream."""

    #: ``far_end`` of the service or of the file store's directory.
    service: str
    #: The account (empty for the file store, whose keys have none).
    account: str
    key: str

    @classmethod
    def of(cls, config: LogConfig, backend: object, key: str) -> StreamName:
        """The stream ``key`` of a writer built on ``config`` and ``backend``.

        The service is named from ``config`` as the spool's manifest names it, so a spool's
        stream and its writer's are one; a file store by its directory.  ``TypeError`` for
        any other backend (a test double is a far end of its own process only).
        """
        if isinstance(backend, FileStore):
            return cls("file:" + os.path.realpath(backend.directory), "", key)
        if isinstance(backend, LogServiceClient):
            return cls(far_end(config.url), config.account_id, key)
        raise TypeError(f"a {type(backend).__name__} has no stream other processes could write")

    @property
    def digest(self) -> str:
        """32 hex digits naming the stream in file names (no key can make them too long)."""
        text = json.dumps([self.service, self.account, self.key], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    def lock_path(self, directory: str) -> str:
        """The lock file below ``directory`` (the runtime directory)."""
        return os.path.join(directory, f"{self.digest}.lock")


@attrs.frozen
class Holder:
    """Who holds a stream lock, as the holder wrote it into the lock file."""

    #: The holder's pid in its own pid namespace.
    pid: int
    #: Its pid as this process sees it (None: not visible from here, another namespace).
    local_pid: Optional[int]
    pid_namespace: Optional[str]
    start_time: Optional[int]
    boot_id: Optional[str]
    hostname: str
    #: What the holder does: ``writer``, ``lelog recover``.
    purpose: str
    #: A fingerprint of the holder's credentials for the stream (``credential_of``), so a
    #: process that would join its stream can tell whether it speaks for the same account.
    credential: str = ""

    def is_this_process(self) -> bool:
        me = _identity(self.purpose)
        return (self.pid, self.pid_namespace, self.start_time, self.boot_id) == (
            me.pid,
            me.pid_namespace,
            me.start_time,
            me.boot_id,
        )

    def describe(self) -> str:
        """``pid 4242``, with its own pid, namespace or host name when they are not ours."""
        if self.local_pid and self.local_pid != self.pid:
            text = f"pid {self.local_pid}, {self.pid} in its pid namespace"
        else:
            text = f"pid {self.pid}"
            if self.local_pid is None and self.pid_namespace != pid_namespace():
                text += " in another pid namespace"
        if self.hostname and self.hostname != socket.gethostname():
            text += f", host name {self.hostname}"
        return text


def credential_of(token: str, name: StreamName) -> str:
    """A fingerprint of ``token`` for stream ``name``: an HMAC keyed by the token, so the
    lock file (private to the user, like the runtime directory) never holds the token nor
    anything that is the same for two streams."""
    if not token:
        return ""
    return hmac.new(token.encode(), name.digest.encode(), hashlib.sha256).hexdigest()[:32]


def _identity(purpose: str, credential: str = "") -> Holder:
    """This process as a holder."""
    pid = os.getpid()
    found = proc_stat(pid)
    return Holder(
        pid=pid,
        local_pid=pid,
        pid_namespace=pid_namespace(),
        start_time=None if found is None else found[1],
        boot_id=boot_id(),
        hostname=socket.gethostname(),
        purpose=purpose,
        credential=credential,
    )


def _identity_bytes(holder: Holder) -> bytes:
    fields = attrs.asdict(holder)
    del fields["local_pid"]  # each reader sees its own
    return json.dumps(fields).encode() + b"\n"


def _parse_identity(data: bytes, local_pid: Optional[int]) -> Holder:
    """The holder from its lock file; only the kernel's pid when the file says nothing
    usable (the holder is writing it, or a file someone else wrote)."""
    try:
        obj: Any = json.loads(data)
        holder = Holder(
            pid=obj["pid"],
            local_pid=local_pid,
            pid_namespace=obj["pid_namespace"],
            start_time=obj["start_time"],
            boot_id=obj["boot_id"],
            hostname=obj["hostname"],
            purpose=obj["purpose"],
            credential=obj.get("credential", ""),
        )
        if (
            type(holder.pid) is int
            and isinstance(holder.hostname, str)
            and isinstance(holder.purpose, str)
            and isinstance(holder.credential, str)
        ):
            return holder
    except (ValueError, TypeError, KeyError, RecursionError):
        pass
    return Holder(local_pid or 0, local_pid, None, None, None, "", "")


def _same_file(fd: int, path: str) -> bool:
    try:
        st, now = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


_OPEN_FLAGS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)

# The locks this process holds, by lock path; see the module docstring.  _table_lock is a
# leaf held across short, non-blocking system calls on lock files only.
_held: dict[str, StreamLock] = {}
_table_lock = threading.Lock()


class StreamLock:
    """A held stream lock; ``release`` lets go (the kernel does at death)."""

    def __init__(
        self, name: StreamName, path: str, fd: int, holder: Holder, previous: Optional[Holder] = None
    ) -> None:
        self.name = name
        self.path = path
        self.holder = holder
        #: Who held the lock before and died holding it (a holder that lets go removes the
        #: file, so one that is still there names a process that ended without letting go).
        self.previous = previous
        self._fd: Optional[int] = fd  # guarded by _table_lock

    def __repr__(self) -> str:
        return f"<StreamLock {self.name.key!r} {self.path!r} held={self.held}>"

    @classmethod
    def try_acquire(
        cls,
        name: StreamName,
        directory: Optional[str] = None,
        *,
        purpose: str = "writer",
        credential: str = "",
    ) -> Optional[StreamLock]:
        """Take the lock of ``name`` without waiting; None when another process holds it,
        or this process does (writers of one process share its stream themselves).

        ``directory`` defaults to the runtime directory (a ``ConfigError`` when it is not
        usable); ``purpose`` says what the holder does, for ``holder_of``'s messages, and
        ``credential`` (``credential_of``) lets a would-be member check it.  An ``OSError``
        when the lock file cannot be made (no space, too many open files).
        """
        path = name.lock_path(directory if directory is not None else runtime_dir())
        with _table_lock:
            if path in _held:
                return None
            holder = _identity(purpose, credential)
            locked = _lock_file(path, _identity_bytes(holder))
            if locked is None:
                return None
            fd, left = locked
            previous = _parse_identity(left, None) if left else None
            lock = cls(
                name, path, fd, holder, previous if previous is not None and previous.purpose else None
            )
            _held[path] = lock
        return lock

    @property
    def held(self) -> bool:
        with _table_lock:
            return self._fd is not None

    def release(self) -> None:
        """Let go; again is a no-op.  The file is removed while still locked, so nobody can
        lock a file that is about to disappear and believe it holds the stream."""
        with _table_lock:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            if _held.get(self.path) is self:
                del _held[self.path]
            with contextlib.suppress(OSError):
                if _same_file(fd, self.path):
                    os.unlink(self.path)
            os.close(fd)


def _lock_file(path: str, identity: bytes) -> Optional[tuple[int, bytes]]:
    """Open and lock ``path``; its descriptor and what a holder that died left in it, or
    None when another process holds it.
    Called under ``_table_lock`` with no lock of this process on ``path``, so closing a
    descriptor of it here drops nothing."""
    for _ in range(_ATTEMPTS):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # F_SETLK: never waits
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return None
            raise
        if not _same_file(fd, path):  # its holder removed it between our open and lock
            os.close(fd)
            continue
        left = b""
        with contextlib.suppress(OSError):  # only for messages: a lock without it still holds
            left = os.pread(fd, _MAX_IDENTITY, 0)
            os.ftruncate(fd, 0)
            os.pwrite(fd, identity, 0)
        return fd, left
    raise OSError(errno.EAGAIN, f"the stream lock {path} kept being replaced")


def holder_of(name: StreamName, directory: Optional[str] = None) -> Optional[Holder]:
    """Who holds the lock of ``name`` (this process included), without taking it; None
    when it is free.  ``directory`` as for ``StreamLock.try_acquire``."""
    path = name.lock_path(directory if directory is not None else runtime_dir())
    with _table_lock:
        mine = _held.get(path)
        if mine is not None:
            return mine.holder  # never open our own lock's file: closing it would drop the lock
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _OPEN_FLAGS)
        except FileNotFoundError:
            return None
        try:
            local_pid = locking_pid(fd)
            data = b"" if local_pid is None else os.pread(fd, _MAX_IDENTITY, 0)
        finally:
            os.close(fd)
    if local_pid is None:
        return None
    return _parse_identity(data, local_pid or None)


def forget_in_child() -> None:
    """In a fork child: it holds none of the parent's locks (the kernel's rule), so its
    table starts empty.  The inherited descriptors are closed, which drops nothing of the
    parent's, and the files stay: they are the parent's."""
    global _table_lock
    _table_lock = threading.Lock()  # a parent thread may have held it at the fork
    for lock in _held.values():
        fd, lock._fd = lock._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    _held.clear()


_lifecycle.after_fork_in_child(forget_in_child)  # lelog's one fork hook runs it
