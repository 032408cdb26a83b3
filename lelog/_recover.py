"""``lelog recover``: finish the streams of writers that died holding a spool.

A spool is taken only when nobody holds its stream: recovery takes the stream lock
(``_streamlock``) itself, without waiting, and holds it while it finishes the spool, so a
writer that starts meanwhile cannot collide with it.  A held lock means a writer runs (in any
pid namespace sharing the runtime directory) and the spool is left alone, naming it.  A spool
written without the lock (an older lelog, or a writer that could not take it: its manifest
says so) is judged as before, by its writer's pid, start time and boot id.

Finishing a spool is what its writer's close would have done, with the spool's rows as the
history: upload them as the stored log (unless ``skip_opening_stream``), close the stream
(with ``snapshot`` when ``skip_opening_stream``), then remove the spool.  Before that:

* the live stream is read back, bounded (``LogServiceClient.peek``; the file store's live
  file): a stream that holds lines that are not the spool's is another writer's (a new run of
  the key, a writer on another host) and is never closed.  In the file store, whose key lock
  recovery holds, such a live file is a later run's that was killed: it is stored first, as
  its writer's close would have (its lines are the newer log);
* the key's stored log is read: when it holds lines later than the spool's last one, a later
  run stored it, and it is never replaced unless asked: ``Newer.MERGE`` stores both in one
  log (ordered by time, a line counted once when its time, level and text match, ``pos``
  renumbered), ``Newer.REPLACE`` the spool's;
* rows are checked as they are read (``read_log``): bad ones are skipped, counted and their
  place marked; a spool with no readable row sends nothing and stays.

What it leaves alone, and says so: a spool of another service or account (the token goes
only where the user pointed it, never where a file says); a spool that is not the user's
own, is not a directory, or has no readable manifest; a spool whose upload or close failed
(it stays for the next try: an upload replaces the stored log, and closing a closed stream
is "already closed").

With the file store (no service configured), recovery then finishes the live files whose
writer is gone, such as a killed ``lelog run`` without a spool: under the stream lock and the
key's writer lock (both taken without waiting; a live writer holds the key lock for as long
as it runs), it closes the stream with a snapshot, as that writer's close would have stored
it: the stored log atomically, the live file removed.

Spools are taken oldest first, so of two dead runs of one key the newer one's log stays.
Two recoveries at once do not both finish a spool: the stream lock keeps them apart, and so
does an exclusive ``flock`` on the manifest (what older recoveries take).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import shlex
import shutil
import stat
from collections import Counter
from typing import IO, Any, Iterator, List, Mapping, Optional, Sequence, Tuple

import attrs

from ._backend import Backend
from ._client import LogServiceClient
from ._config import LogConfig
from ._exceptions import BlobNotFound, ConfigError, LogServiceError, StreamNotFound
from ._filestore import FileStore, KeyInUse
from ._line import Line, encode_line, parse_line, time_seconds
from ._runtime import runtime_dir
from ._spool import (
    MANIFEST,
    SPOOL_DIR_ENV,
    LogBody,
    Manifest,
    ProcessIdentity,
    check_spool_dir,
    is_joined,
    read_log,
    remove_spool,
    service_of,
)
from ._streamlock import Holder, StreamLock, StreamName, far_end, holder_of

__all__ = ["Newer", "Outcome", "Status", "merge_logs", "recover_spools"]

#: How much of a live stream is read back to tell whose it is: what the service keeps live.
LIVE_LINES = 5000
#: Seconds without a new line after which a live stream's lines are taken as all there.
LIVE_QUIET = 1.0
_LIVE_FILE_TAIL = 4 << 20  # bytes of a file store's live file read back


class Status(enum.Enum):
    """What recovery did with one spool."""

    RECOVERED = "recovered"  # stored and closed; the spool is gone
    LEFT = "left"  # left alone on purpose (see the module docstring)
    FAILED = "failed"  # the upload or the close failed; kept for the next try


class Newer(enum.Enum):
    """What recovery does with a spool whose key holds a newer stored log."""

    LEAVE = "leave"  # keep the stored log and the spool, and say so
    MERGE = "merge"  # store the stored log's lines and the spool's in one log
    REPLACE = "replace"  # store the spool's, as if the stored log were older


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
    newer: Newer = Newer.LEAVE,
    key: Optional[str] = None,
) -> List[Outcome]:
    """Recover every spool below ``spool_dir`` (default ``$LELOG_SPOOL_DIR``; for the file
    store none is needed) into ``backend``, only those of ``key`` if given, printing one line
    per spool to ``out``; returns what happened.

    ``ConfigError`` before anything is done for a spool directory that is missing or not one,
    and for a runtime directory that cannot hold the stream locks.
    """
    directory = _spool_dir(spool_dir)
    store = backend if isinstance(backend, FileStore) else None
    if directory is None and store is None:
        raise ConfigError(f"no spool directory: give --spool DIR or set {SPOOL_DIR_ENV}")
    recovery = _Recovery(backend, config, dict(call_options or {}), newer, runtime_dir())
    outcomes: List[Outcome] = []
    kept: set[str] = set()  # keys of this store whose spool stays: their live file waits too
    # Oldest first: of two dead runs of one key, the newer one's log is the one left stored.
    found = sorted(recovery.scan(directory), key=_oldest_first) if directory else []
    for path, manifest in found:
        if key is not None and (manifest is None or manifest.key != key):
            continue
        outcomes.append(recovery.run(path, manifest))
        print(f"lelog recover: {outcomes[-1].message}", file=out, flush=True)  # as it goes
        if outcomes[-1].status is not Status.RECOVERED and manifest and recovery.same_service(manifest):
            kept.add(manifest.key)
    if store is not None:
        for live_key in store.live_keys():
            if key is None or live_key == key:
                outcomes.append(recovery.finish_live_file(store, live_key, kept))
                print(f"lelog recover: {outcomes[-1].message}", file=out, flush=True)
    return outcomes


def _spool_dir(given: Optional[str]) -> Optional[str]:
    """The spool directory to read: given, else ``$LELOG_SPOOL_DIR``, checked as a writer
    checks ``spool_dir``; it must exist (a typo must not read as "nothing to recover")."""
    source = ""
    if given is None:
        given, source = os.environ.get(SPOOL_DIR_ENV), f" ({SPOOL_DIR_ENV})"
    checked = check_spool_dir(given, SPOOL_DIR_ENV if source else "spool_dir")
    if checked is None:
        return None
    path = os.path.abspath(checked)
    if not os.path.isdir(path):
        raise ConfigError(
            f"the spool directory {path}{source} does not exist or is not a directory; give the "
            "directory the writers were given (spool_dir, LELOG_SPOOL_DIR or --spool)"
        )
    return path


_Found = Tuple[str, Optional[Manifest]]


def _oldest_first(found: _Found) -> tuple[bool, float]:
    manifest = found[1]
    return manifest is None, manifest.created if manifest is not None else 0.0


class _Recovery:
    """One ``lelog recover`` run against one configured service."""

    def __init__(
        self, backend: Backend, config: LogConfig, call_options: dict[str, Any], newer: Newer, lock_dir: str
    ) -> None:
        self.backend = backend
        self.config = config
        self.service = service_of(config, backend)
        self.call_options = call_options
        self.newer = newer
        self.lock_dir = lock_dir
        self._far_end = far_end(self.service)
        self._problems: dict[str, str] = {}
        # Spools written without the stream lock whose writer runs: (far end, account, key) -> pid.
        self._unlocked_live: dict[tuple[str, str, str], int] = {}

    def same_service(self, manifest: Manifest) -> bool:
        return far_end(manifest.service) == self._far_end

    def scan(self, spool_dir: str) -> List[_Found]:
        """The spools below ``spool_dir``, with their manifests (None: see ``_problems``)."""
        try:
            names = sorted(os.listdir(spool_dir))
        except FileNotFoundError:
            return []  # removed since it was checked
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
            if manifest is not None and not manifest.stream_locked and manifest.owner.is_alive():
                self._unlocked_live[self._ident(manifest)] = manifest.owner.pid
        return found

    def _ident(self, manifest: Manifest) -> tuple[str, str, str]:
        return far_end(manifest.service), manifest.account_id, manifest.key

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

    def _name(self, key: str) -> StreamName:
        """The stream ``key`` of the configured service (a spool of another one is left
        alone before its name is needed)."""
        account = "" if isinstance(self.backend, FileStore) else self.config.account_id
        return StreamName(self._far_end, account, key)

    def _lock(self, key: str) -> Optional[StreamLock]:
        """The stream lock of ``key`` for this recovery; None when someone holds it."""
        return StreamLock.try_acquire(self._name(key), self.lock_dir, purpose="lelog recover")

    def _held_by(self, key: str, owner: Optional[ProcessIdentity]) -> str:
        holder = holder_of(self._name(key), self.lock_dir)
        if holder is None:
            return "its stream was locked a moment ago; run lelog recover again"
        if holder.purpose == "lelog recover":
            return f"another lelog recover is at it ({holder.describe()})"
        if owner is not None and _is_owner(holder, owner):
            return f"its writer still runs ({holder.describe()})"
        return f"a running writer ({holder.describe()}) holds this key now"

    def run(self, path: str, manifest: Optional[Manifest]) -> Outcome:
        if manifest is None:
            return Outcome(Status.LEFT, path, f"{path}: left alone: {self._problems[path]}")
        who = f"{manifest.key!r} ({os.path.basename(path)})"
        if not self.same_service(manifest):
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
        try:
            lock = self._lock(manifest.key)
            held_by = "" if lock is not None else self._held_by(manifest.key, manifest.owner)
        except OSError as exc:
            return Outcome(Status.FAILED, path, f"{who}: FAILED: its stream lock: {exc}; the spool stays")
        if lock is None:
            return Outcome(Status.LEFT, path, f"{who}: left alone: {held_by}")
        try:  # no writer can start on the stream while the lock is ours
            return self._run_locked(path, who, manifest)
        finally:
            lock.release()

    def _run_locked(self, path: str, who: str, manifest: Manifest) -> Outcome:
        if not manifest.stream_locked:  # its writer took no stream lock: judged by its pid
            if manifest.owner.is_alive():
                return Outcome(
                    Status.LEFT, path, f"{who}: left alone: its writer still runs (pid {manifest.owner.pid})"
                )
            pid = self._unlocked_live.get(self._ident(manifest))
            if pid is not None:
                return Outcome(
                    Status.LEFT, path, f"{who}: left alone: a running writer (pid {pid}) holds this key now"
                )
        with _key_lock(self.backend, manifest.key) as writing:
            if writing:
                return Outcome(Status.LEFT, path, f"{who}: left alone: {writing} holds this key now")
            with _exclusive(path) as mine:
                if not mine:
                    return Outcome(Status.LEFT, path, f"{who}: left alone: another lelog recover is at it")
                try:
                    return self._finish(path, who, manifest)
                except (LogServiceError, OSError) as exc:
                    return Outcome(
                        Status.FAILED, path, f"{who}: FAILED: {exc}; the spool stays for the next try"
                    )

    def _finish(self, path: str, who: str, manifest: Manifest) -> Outcome:
        """Store and close as the writer would have (its skip rules), then remove the spool;
        unless the live stream or the stored log is another run's (module docstring)."""
        if is_joined(path):  # its writer joined a stream a writer elsewhere holds: not its to store
            remove_spool(path)
            return Outcome(
                Status.RECOVERED,
                path,
                f"{who}: nothing to store: its writer streamed into a stream a writer elsewhere "
                "holds, which stores that log; the spool is removed",
            )
        log = read_log(path, manifest)
        if not log.lines:
            return Outcome(
                Status.LEFT,
                path,
                f"{who}: left alone: no readable rows ({_unread(log)}); nothing was sent, the spool stays",
            )
        done: list[str] = []
        foreign = _foreign(self._live_lines(manifest.key), log)
        if foreign:
            if not isinstance(self.backend, FileStore):
                return Outcome(
                    Status.LEFT,
                    path,
                    f"{who}: left alone: its live stream {foreign}: another writer streams to it (or "
                    "did, on another host or until it was killed), and it is that writer's to close",
                )
            # Under the key's lock: the live file's writer is gone, a later run killed without a
            # spool.  Its lines are the newer log: stored first, as its close would have.
            stored_lines = _store_live_file(self.backend, manifest.key)
            done.append(f"its live file held a later run's lines: {stored_lines:,} stored as that run's log")
            try:
                self.backend.claim(manifest.key)  # the close let go of the key's lock
            except KeyInUse as exc:
                done.append(f"left alone: {_holder(exc)} holds this key now")
                return Outcome(Status.LEFT, path, f"{who}: {'; '.join(done)}")
        stored = self._stored_lines(manifest.key)
        last = max(time_seconds(row.time) or 0.0 for row in log.rows)
        later = sum((time_seconds(line.time) or 0.0) > last for line in stored)
        body, merged = log.body, False
        if later and self.newer is Newer.LEAVE:
            done.append(
                f"left alone: the stored log is newer ({later:,} of its {len(stored):,} lines are later "
                f"than the spool's last, {log.rows[-1].time}): a later run stored it; "
                f"'lelog recover --key {shlex.quote(manifest.key)} --merge' stores both in one log, "
                "--replace the spool's"
            )
            return Outcome(Status.LEFT, path, f"{who}: {'; '.join(done)}")
        if later and self.newer is Newer.MERGE:
            spooled = [parse_line(row) for row in log.body.splitlines()]
            body, lines, both = merge_logs(stored, spooled)
            merged = True
            done.append(
                f"merged with the stored log: {lines:,} lines ({len(stored):,} stored, "
                f"{len(spooled) - both:,} from the spool, {both:,} in both)"
            )
        opts = self.call_options
        if merged or not manifest.skip_opening_stream:
            self.backend.upload(manifest.key, body, **opts)
            if not merged:
                done.append(f"{log.lines:,} lines stored" + (" over a newer log" if later else ""))
            if log.missing:
                done.append(f"{log.missing:,} missing (marked)")
            if log.skipped or log.unreadable:
                done.append(f"{_unread(log)} skipped")
        snapshot = manifest.skip_opening_stream and not merged
        try:
            self.backend.close_stream(manifest.key, snapshot=snapshot, **opts)
            done.append("stream closed" + (" with a snapshot" if snapshot else ""))
        except StreamNotFound:
            done.append("stream already closed")
        remove_spool(path)
        return Outcome(Status.RECOVERED, path, f"{who}: recovered into {self.service}: {', '.join(done)}")

    def _live_lines(self, key: str) -> list[Line]:
        """What the key's live stream holds now (bounded); empty when it is not open."""
        if isinstance(self.backend, LogServiceClient):
            return self.backend.peek(key, quiet=LIVE_QUIET, max_lines=LIVE_LINES, **self.call_options)
        if isinstance(self.backend, FileStore):
            return _live_file_lines(self.backend.live_path(key))
        return []

    def _stored_lines(self, key: str) -> list[Line]:
        if not isinstance(self.backend, (LogServiceClient, FileStore)):
            return []  # a test double: nothing stored to read back
        try:
            data = self.backend.download(key, **self.call_options)
        except BlobNotFound:
            return []
        return _lines_of(data)

    def finish_live_file(self, store: FileStore, key: str, kept: set[str]) -> Outcome:
        """Store a dead writer's live file as its key's log, as that writer's close would have."""
        path = store.live_path(key)
        who = f"{key!r} (live file)"
        if key in kept:
            return Outcome(Status.LEFT, path, f"{who}: left alone: its spool stays for the next try")
        try:
            lock = self._lock(key)
            held_by = "" if lock is not None else self._held_by(key, None)
        except OSError as exc:
            return Outcome(Status.FAILED, path, f"{who}: FAILED: its stream lock: {exc}")
        if lock is None:
            return Outcome(Status.LEFT, path, f"{who}: left alone: {held_by}")
        try:
            return self._finish_live_file_locked(store, key, path, who)
        finally:
            lock.release()

    def _finish_live_file_locked(self, store: FileStore, key: str, path: str, who: str) -> Outcome:
        try:
            store.claim(key)  # never waits: a held lock is a KeyInUse at once
        except KeyInUse as exc:
            return Outcome(Status.LEFT, path, f"{who}: left alone: {_holder(exc)} is writing it")
        except LogServiceError as exc:
            return Outcome(Status.FAILED, path, f"{who}: FAILED: {exc}")
        # The key's lock is ours from here: no writer can append, close or re-open the stream.
        try:
            lines = _store_live_file(store, key)
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


def _is_owner(holder: Holder, owner: ProcessIdentity) -> bool:
    """Whether the lock's holder is the process that wrote the spool's manifest (both name
    it by its pid in its own namespace)."""
    return (
        holder.pid == owner.pid
        and (owner.start_time is None or holder.start_time == owner.start_time)
        and (owner.boot_id is None or holder.boot_id == owner.boot_id)
    )


def _unread(log: LogBody) -> str:
    parts = [f"{log.skipped:,} unreadable rows"]
    if log.unreadable:
        parts.append(f"{log.unreadable:,} segment files that are not regular files")
    return ", ".join(parts)


def _foreign(live: Sequence[Line], log: LogBody) -> str:
    """Why the live stream holds lines that are not the spool's writer's; "" when every line
    it shows could be that writer's: the spool's own rows, older lines the spool's budget
    evicted, and lines in its gaps or after its end that it had not written when it died."""
    shown = [line for line in live if not (line.args and line.args.get("lelog") == "dropped")]
    if not shown:
        return ""
    rows = {row.pos: row for row in log.rows}
    first, last = log.rows[0], log.rows[-1]
    if min(line.pos for line in shown) > last.pos + 1:
        return f"holds only lines after the spool's end (from pos {min(line.pos for line in shown):,}), which cannot be told apart"
    first_time = time_seconds(first.time) or 0.0
    for line in shown:
        mine = rows.get(line.pos)
        if mine is not None and (mine.time, mine.level, mine.out) != (line.time, line.level, line.out):
            return f"holds a line {line.pos:,} that is not the spool's"
        if line.pos < first.pos and (time_seconds(line.time) or 0.0) > first_time:
            return f"holds a line {line.pos:,} written after the spool's first line"
    return ""


def _lines_of(data: bytes) -> list[Line]:
    """The lines of a stored log; rows that are not lines are left out."""
    lines = []
    for row in data.splitlines():
        if row.strip():
            with contextlib.suppress(ValueError):
                lines.append(parse_line(row))
    return lines


def _live_file_lines(path: str) -> list[Line]:
    """The last lines of a file store's live file (a bounded read), or none."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return []
    with fh:
        start = max(0, os.fstat(fh.fileno()).st_size - _LIVE_FILE_TAIL)
        fh.seek(start)
        rows = fh.read(_LIVE_FILE_TAIL).split(b"\n")[:-1]  # the last piece is b"" or torn
    if start:
        rows = rows[1:]  # the read began inside a row
    return _lines_of(b"\n".join(rows[-LIVE_LINES:]))


def merge_logs(stored: Sequence[Line], spooled: Sequence[Line]) -> tuple[bytes, int, int]:
    """``stored`` and ``spooled`` in one NDJSON log ordered by time (stable: the stored
    log's lines first at equal times), ``pos`` renumbered from 0.  A spooled line whose time,
    level and text match a stored one not matched yet is counted once.  Returns the body, its
    lines and how many lines were in both."""
    unmatched = Counter((line.time, line.level, line.out) for line in stored)
    merged = list(stored)
    both = 0
    for line in spooled:
        same = (line.time, line.level, line.out)
        if unmatched[same]:
            unmatched[same] -= 1
            both += 1
        else:
            merged.append(line)
    merged.sort(key=lambda line: time_seconds(line.time) or 0.0)  # sort is stable
    body = b"".join(
        encode_line(line.level, pos, line.out, line.time, line.args) + b"\n"
        for pos, line in enumerate(merged)
    )
    return body, len(merged), both


def _store_live_file(store: FileStore, key: str) -> int:
    """Close the stream of a writer that is gone with a snapshot, as its close would have;
    the lines stored.  The caller holds the key's lock, which the close releases."""
    lines = _trim_torn_row(store.live_path(key))
    store.close_stream(key, snapshot=True)
    return lines


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
