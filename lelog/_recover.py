"""``lelog recover``: finish the streams of processes that died holding a spool.

For each spool below the spool directory whose writer is gone (pid, start time and boot id
together: a reused pid is not the writer), recovery does what the writer's close would have
done, with the spool's rows as the history: upload them as the stored log (unless
``skip_opening_stream``), close the stream (with ``snapshot`` when ``skip_opening_stream``),
then remove the spool.  One line per spool says what happened.

What it leaves alone, and says so:

* a spool whose writer still runs, or whose key a live writer of the same spool directory
  holds now, or (in the file store) a live writer with or without a spool (a new run of the
  same key: its close will store that key's log);
* a spool whose manifest names another service or account than the one configured for this
  command: the token goes only where the user pointed it, never where a file says, so a
  planted manifest cannot draw it elsewhere;
* a spool that is not the user's own, is not a directory, or has no readable manifest;
* a spool whose upload or close failed: it stays, for the next try (both calls may be
  repeated: an upload replaces the stored log, and closing a closed stream is "already closed").

With the file store (no service configured), recovery then finishes the live files whose
writer is gone, such as a killed ``lelog run`` without a spool: it takes the key's writer
lock without waiting (a live writer holds it for as long as it runs, and the lock dies with
it), and closes the stream with a snapshot, as that writer's close would have stored it (the
live file holds every line it streamed): the stored log atomically, the live file removed.

Spools are taken oldest first, so of two dead runs of one key the newer one's log stays stored.

Two recoveries running at once do not both upload a spool: each takes an exclusive ``flock``
on the manifest first and leaves a spool that another holds.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import stat
from typing import IO, Any, Iterator, List, Mapping, Optional, Tuple

import attrs

from ._backend import Backend
from ._config import LogConfig
from ._exceptions import ConfigError, LogServiceError, StreamNotFound
from ._filestore import FileStore, KeyInUse
from ._spool import MANIFEST, SPOOL_DIR_ENV, Manifest, read_log, remove_spool, service_of

__all__ = ["Outcome", "Status", "recover_spools"]


class Status(enum.Enum):
    """What recovery did with one spool."""

    RECOVERED = "recovered"  # stored and closed; the spool is gone
    LEFT = "left"  # left alone on purpose (see the module docstring)
    FAILED = "failed"  # the upload or the close failed; kept for the next try


@attrs.frozen
class Outcome:
    """One spool's line of the report."""

    status: Status
    directory: str
    message: str


def recover_spools(
    spool_dir: Optional[str],
    backend: Backend,
    config: LogConfig,
    *,
    out: IO[str],
    call_options: Optional[Mapping[str, Any]] = None,
) -> List[Outcome]:
    """Recover every spool below ``spool_dir`` (default ``$LELOG_SPOOL_DIR``) into
    ``backend``, printing one line per spool to ``out``; returns what happened."""
    spool_dir = spool_dir or os.environ.get(SPOOL_DIR_ENV) or ""
    store = backend if isinstance(backend, FileStore) else None
    if not spool_dir and store is None:
        raise ConfigError(f"no spool directory: give --spool DIR or set {SPOOL_DIR_ENV}")
    recovery = _Recovery(backend, config, dict(call_options or {}))
    outcomes: List[Outcome] = []
    kept: set[str] = set()  # keys of this store whose spool stays: their live file waits too
    # Oldest first: of two dead runs of one key, the newer one's log is the one left stored.
    found = sorted(recovery.scan(os.path.abspath(spool_dir)), key=_oldest_first) if spool_dir else []
    for directory, manifest in found:
        outcomes.append(recovery.run(directory, manifest))
        print(f"lelog recover: {outcomes[-1].message}", file=out, flush=True)  # as it goes
        if outcomes[-1].status is not Status.RECOVERED and manifest and manifest.service == recovery.service:
            kept.add(manifest.key)
    if store is not None:
        for key in store.live_keys():
            outcomes.append(_finish_live_file(store, key, kept))
            print(f"lelog recover: {outcomes[-1].message}", file=out, flush=True)
    return outcomes


def _finish_live_file(store: FileStore, key: str, kept: set[str]) -> Outcome:
    """Store a dead writer's live file as its key's log, as that writer's close would have."""
    path = store.live_path(key)
    who = f"{key!r} (live file)"
    if key in kept:
        return Outcome(Status.LEFT, path, f"{who}: left alone: its spool stays for the next try")
    try:
        store.claim(key)  # never waits: a held lock is a KeyInUse at once
    except KeyInUse as exc:
        return Outcome(Status.LEFT, path, f"{who}: left alone: {_holder(exc)} is writing it")
    except LogServiceError as exc:
        return Outcome(Status.FAILED, path, f"{who}: FAILED: {exc}")
    # The key's lock is ours from here: no writer can append, close or re-open the stream.
    # close_stream releases it whatever happens.
    try:
        lines = _trim_torn_row(path)
        store.close_stream(key, snapshot=True)
    except StreamNotFound:
        return Outcome(Status.LEFT, path, f"{who}: left alone: its writer closed it meanwhile")
    except (LogServiceError, OSError) as exc:
        store.release(key)  # if close_stream was not reached
        return Outcome(Status.FAILED, path, f"{who}: FAILED: {exc}; the live file stays for the next try")
    return Outcome(
        Status.RECOVERED,
        path,
        f"{who}: its writer is gone; recovered into file:{store.directory}: "
        f"{lines:,} lines stored, live file removed",
    )


def _trim_torn_row(path: str) -> int:
    """Cut a row the writer was killed in the middle of appending; returns the rows kept.

    ``StreamNotFound`` when the live file is gone (its writer closed it).
    """
    rows = end = offset = 0
    try:
        fh = open(path, "r+b")
    except FileNotFoundError:
        raise StreamNotFound("the live file is gone", call="close") from None
    with fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            rows += chunk.count(b"\n")
            last = chunk.rfind(b"\n")
            if last != -1:
                end = offset + last + 1
            offset += len(chunk)
        if end != offset:
            fh.truncate(end)
    return rows


_Found = Tuple[str, Optional[Manifest]]


def _oldest_first(found: _Found) -> tuple[bool, float]:
    manifest = found[1]
    return manifest is None, manifest.created if manifest is not None else 0.0


class _Recovery:
    """One ``lelog recover`` run against one configured service."""

    def __init__(self, backend: Backend, config: LogConfig, call_options: dict[str, Any]) -> None:
        self.backend = backend
        self.config = config
        self.service = service_of(config, backend)
        self.call_options = call_options
        self._problems: dict[str, str] = {}
        self._live: dict[tuple[str, str, str], int] = {}  # (service, account, key) -> pid

    def scan(self, spool_dir: str) -> List[_Found]:
        """The spools below ``spool_dir``, with their manifests (None: see ``_problems``)."""
        try:
            names = sorted(os.listdir(spool_dir))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigError(f"cannot read the spool directory {spool_dir}: {exc.strerror}") from None
        found: List[_Found] = []
        for name in names:
            path = os.path.join(spool_dir, name)
            if name.startswith("."):
                if name.endswith(".removing"):  # an interrupted removal: finish it
                    shutil.rmtree(path, ignore_errors=True)
                continue
            manifest = self._manifest(path)
            found.append((path, manifest))
            if manifest is not None and manifest.owner.is_alive():
                self._live[(manifest.service, manifest.account_id, manifest.key)] = manifest.owner.pid
        return found

    def _manifest(self, path: str) -> Optional[Manifest]:
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                self._problems[path] = "not a spool (not a directory)"
                return None
            if st.st_uid != os.getuid():
                self._problems[path] = "not a spool of yours (another user owns it)"
                return None
            with _open_regular(os.path.join(path, MANIFEST)) as fh:
                return Manifest.from_json(fh.read(1 << 20))
        except FileNotFoundError:
            self._problems[path] = "no manifest (a writer that is starting, or not a spool)"
        except (OSError, ValueError) as exc:
            self._problems[path] = f"unreadable manifest: {exc}"
        return None

    def run(self, path: str, manifest: Optional[Manifest]) -> Outcome:
        if manifest is None:
            return Outcome(Status.LEFT, path, f"{path}: left alone: {self._problems[path]}")
        who = f"{manifest.key!r} ({os.path.basename(path)})"
        if manifest.owner.is_alive():
            return Outcome(
                Status.LEFT, path, f"{who}: left alone: its writer still runs (pid {manifest.owner.pid})"
            )
        if manifest.service != self.service:
            return Outcome(
                Status.LEFT,
                path,
                f"{who}: left alone: written for {manifest.service or 'an unnamed backend'}, "
                f"not for {self.service}; run lelog recover configured for that service",
            )
        if self.config.url and manifest.account_id != self.config.account_id:
            return Outcome(
                Status.LEFT,
                path,
                f"{who}: left alone: written for account {manifest.account_id!r}, "
                f"not {self.config.account_id!r}",
            )
        holder = self._live.get((manifest.service, manifest.account_id, manifest.key))
        if holder is not None:
            return Outcome(
                Status.LEFT, path, f"{who}: left alone: a running writer (pid {holder}) holds this key now"
            )
        with _key_lock(self.backend, manifest.key) as writing:
            if writing:
                return Outcome(Status.LEFT, path, f"{who}: left alone: {writing} holds this key now")
            with _exclusive(path) as mine:
                if not mine:
                    return Outcome(Status.LEFT, path, f"{who}: left alone: another lelog recover is at it")
                return self._finish(path, who, manifest)

    def _finish(self, path: str, who: str, manifest: Manifest) -> Outcome:
        """Store and close as the writer would have (its skip rules), then remove the spool."""
        log = read_log(path, manifest)
        opts = self.call_options
        done: list[str] = []
        try:
            if not manifest.skip_opening_stream:
                self.backend.upload(manifest.key, log.body, **opts)
                done.append(f"{log.lines:,} lines stored")
                if log.missing:
                    done.append(f"{log.missing:,} missing (marked)")
            try:
                self.backend.close_stream(manifest.key, snapshot=manifest.skip_opening_stream, **opts)
                done.append("stream closed" + (" with a snapshot" if manifest.skip_opening_stream else ""))
            except StreamNotFound:
                done.append("stream already closed")
        except LogServiceError as exc:
            return Outcome(Status.FAILED, path, f"{who}: FAILED: {exc}; the spool stays for the next try")
        remove_spool(path)
        return Outcome(Status.RECOVERED, path, f"{who}: recovered into {self.service}: {', '.join(done)}")


@contextlib.contextmanager
def _open_regular(path: str) -> Iterator[IO[bytes]]:
    """Open a file that must be a regular file (not a link someone planted)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        yield fh


@contextlib.contextmanager
def _key_lock(backend: Backend, key: str) -> Iterator[str]:
    """In the file store, hold the key's writer lock while a spool is finished into it, so
    that a live writer of the key (a new run, with or without a spool) keeps its stream;
    yields who holds it instead ("" when the lock is ours, or there is no file store)."""
    if not isinstance(backend, FileStore):
        yield ""
        return
    try:
        backend.claim(key)  # never waits: a held lock is a KeyInUse at once
    except KeyInUse as exc:
        yield _holder(exc)
        return
    try:
        yield ""
    finally:
        backend.release(key)  # already released when the stream was closed


def _holder(exc: KeyInUse) -> str:
    return f"process {exc.pid}" if exc.pid else "another process"


@contextlib.contextmanager
def _exclusive(path: str) -> Iterator[bool]:
    """Hold an exclusive lock on a spool's manifest; yields False when another process holds
    it, or the spool is gone (another recovery just finished it)."""
    import fcntl  # POSIX only, like lelog run; imported here so the rest loads anywhere

    try:
        fd = os.open(os.path.join(path, MANIFEST), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield os.path.exists(os.path.join(path, MANIFEST))
    finally:
        os.close(fd)
