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
and percent-decode the rest.  Two limits remain: a segment must fit in a file name once
encoded (255 bytes on most systems, suffix included), and on a case-insensitive file system
keys that differ only in case share files.

Concurrency.  Several threads and processes may use one directory.  Lines are appended with
one ``os.write`` on an ``O_APPEND`` descriptor, so concurrent batches never interleave inside
a row.  Every file that changes as a whole (open, upload, snapshot) is built under a private
name and moved into place with ``os.replace``, so a reader sees the old file or the new one,
never half of one.  No lock is needed, and none is taken.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import time
import uuid
from typing import IO, Any, Callable, Iterator, Optional, Sequence, Union
from urllib.parse import quote

from ._client import LineLike
from ._config import LogConfig
from ._exceptions import BlobNotFound, LogServiceError, StreamNotFound
from ._line import Line, ndjson, parse_line

__all__ = ["DEFAULT_DIRECTORY", "FileStore", "encode_key"]

#: Where logs go when neither ``directory`` nor ``LELOG_HOME`` says otherwise.
DEFAULT_DIRECTORY = ".lelog"

_CHUNK = 1 << 20
_LIVE_SUFFIX = ".live.ndjson"
_LOG_SUFFIX = ".ndjson"
_OPTS = frozenset({"deadline", "cancel", "on_retry", "retry"})
# Failures that waiting can cure; any other file-system error is permanent for the writer.
_TRANSIENT = frozenset({errno.ENOSPC, errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.EIO})


def _encode_segment(segment: str) -> str:
    if not segment:
        return "%"
    return quote(segment, safe="", errors="surrogatepass").replace(".", "%2E")


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


@contextlib.contextmanager
def _store_errors(call: str, key: str) -> Iterator[None]:
    """Report ``OSError`` as a ``LogServiceError``: the writer handles only that tree."""
    try:
        yield
    except OSError as exc:
        raise _StoreError(
            f"{call} {key!r}: file store: {exc.strerror or exc}"
            + (f": {exc.filename}" if exc.filename else ""),
            call=call,
            errno_=exc.errno,
        ) from exc


def _check_opts(opts: dict[str, Any]) -> None:
    """The client's per-call options are accepted and ignored: local calls neither wait nor retry."""
    unknown = set(opts) - _OPTS
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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


def _first_pos(body: bytes) -> Optional[int]:
    end = body.find(b"\n")
    row = body if end < 0 else body[:end]  # no copy of the rest of a 5 MiB body
    try:
        pos = json.loads(row).get("pos")
    except (ValueError, AttributeError):
        return None
    return pos if isinstance(pos, int) else None


def _row_pos(fh: IO[bytes], offset: int) -> tuple[Optional[int], int]:
    """The pos of the row starting at ``offset`` and where the next row starts; a torn or
    malformed row has no pos."""
    fh.seek(offset)
    row = fh.readline()
    end = offset + len(row)
    if not row.endswith(b"\n"):
        return None, end
    try:
        pos = json.loads(row).get("pos")
    except (ValueError, AttributeError):
        return None, end
    return (pos if isinstance(pos, int) else None), end


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


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _same_file(path: str, identity: tuple[int, int]) -> bool:
    """Whether ``path`` is still the file we follow (not closed, not re-opened)."""
    try:
        return _identity(os.stat(path)) == identity
    except FileNotFoundError:
        return False


class FileStore:
    """The calls of ``LogServiceClient`` against a local directory: one NDJSON file per key.

    It keeps the service's semantics where the writer relies on them: re-opening wipes the
    live stream, writing to or closing a stream that is not open raises ``StreamNotFound``,
    ``close_stream(snapshot=True)`` stores what the stream holds, a missing log is
    ``BlobNotFound``.  Unlike the service it keeps every live line (no 5,000-line window).
    ``directory`` defaults to ``$LELOG_HOME``, else ``./.lelog``; nothing is created before
    the first call that writes.
    """

    def __init__(
        self,
        directory: Union[str, os.PathLike[str], None] = None,
        *,
        config: Optional[LogConfig] = None,
        poll_interval: float = 0.05,
    ) -> None:
        if directory is None:
            directory = os.environ.get("LELOG_HOME") or DEFAULT_DIRECTORY
        self.directory = os.path.abspath(os.fspath(directory))
        self.config = config if config is not None else LogConfig()
        #: How often ``tail`` looks for new lines once it has read everything.
        self.poll_interval = poll_interval

    def __repr__(self) -> str:
        return f"<FileStore directory={self.directory!r}>"

    def log_path(self, key: str) -> str:
        """The stored log of ``key`` (written by ``upload`` or a snapshot close)."""
        return os.path.join(self.directory, encode_key(key) + _LOG_SUFFIX)

    def live_path(self, key: str) -> str:
        """The live stream of ``key``: it exists exactly while the stream is open."""
        return os.path.join(self.directory, encode_key(key) + _LIVE_SUFFIX)

    # -- the calls ------------------------------------------------------------------------

    def open_stream(self, key: str, **opts: Any) -> None:
        """Start an empty live stream; re-opening wipes it and ends the tails of the old one."""
        _check_opts(opts)
        live = self.live_path(key)
        with _store_errors("open", key):
            os.makedirs(os.path.dirname(live), exist_ok=True)
            # A new file rather than a truncated one: tails notice the changed identity.
            _replace(live, lambda fh: None)

    def write(self, key: str, lines: Sequence[LineLike], **opts: Any) -> None:
        """Append lines to the live stream; ``StreamNotFound`` when it is not open."""
        _check_opts(opts)
        body = ndjson([line if isinstance(line, bytes) else line.encode() for line in lines])
        with _store_errors("write", key):
            try:
                # No O_CREAT: a missing live file is a stream that is not open.
                fd = os.open(self.live_path(key), os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:
                raise StreamNotFound(
                    f"write {key!r}: stream: not found (not open in {self.directory})",
                    status=400,
                    error_msg="stream: not found",
                    call="write",
                ) from None
            try:
                _write_all(fd, body)  # one write per batch: O_APPEND keeps rows whole
            finally:
                os.close(fd)

    def upload(self, key: str, lines: Union[Sequence[LineLike], bytes], **opts: Any) -> None:
        """Store the complete log, atomically.

        A writer's history is bounded, so its upload may start after line 0.  The live
        file still holds those first lines: they are put in front, so the stored log is
        whole (the service cannot do this; it keeps only the last 5,000 live lines).
        """
        _check_opts(opts)
        body = (
            lines
            if isinstance(lines, bytes)
            else ndjson([line if isinstance(line, bytes) else line.encode() for line in lines])
        )
        path = self.log_path(key)
        first = _first_pos(body) if body else None
        with _store_errors("upload", key):
            os.makedirs(os.path.dirname(path), exist_ok=True)

            def fill(fh: IO[bytes]) -> None:
                if first:
                    self._copy_head(key, first, fh)
                fh.write(body)

            _replace(path, fill)

    def _copy_head(self, key: str, first: int, out: IO[bytes]) -> None:
        """Copy the live rows before pos ``first`` to ``out``.

        The rows are in pos order, so the cut is found by bisection: a few rows are read
        whatever the file's size, and the copy is a plain byte copy.  The writer's close
        budget includes this call, and the file store does not watch deadlines.
        """
        try:
            live = open(self.live_path(key), "rb")
        except FileNotFoundError:
            return
        with live:
            left = _cut(live, first)
            live.seek(0)
            while left:
                data = live.read(min(left, _CHUNK))
                if not data:
                    return
                out.write(data)
                left -= len(data)

    def close_stream(self, key: str, *, snapshot: bool = False, **opts: Any) -> None:
        """End the live stream; with ``snapshot`` what it holds becomes the stored log.

        ``StreamNotFound`` when it is not open.  Of several concurrent closers exactly one
        succeeds: each first moves the live file to a private name, which only one can do.
        """
        _check_opts(opts)
        live = self.live_path(key)
        claimed = os.path.join(os.path.dirname(live), f".{uuid.uuid4().hex}.closing")
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
        stream ends the tail.  Close the iterator to stop early.
        """
        _check_opts(opts)
        fh: Optional[IO[bytes]] = None
        with _store_errors("tail", key):
            try:
                fh = open(self.live_path(key), "rb", buffering=0)
            except FileNotFoundError:
                pass  # not open: an empty tail, as the service answers
        return self._follow(key, fh)

    def _follow(self, key: str, fh: Optional[IO[bytes]]) -> Iterator[Line]:
        if fh is None:
            return
        with fh:
            path = self.live_path(key)
            identity = _identity(os.fstat(fh.fileno()))
            partial = b""
            while True:
                # Checked before reading: every row appended before the close is read below.
                ended = not _same_file(path, identity)
                data = fh.read()
                if data:
                    rows = (partial + data).split(b"\n")
                    partial = rows.pop()  # a row still being appended, or b""
                    for row in rows:
                        if row.strip():
                            yield _parse_row(key, path, row)
                if ended:
                    return  # a torn last row (a writer died mid-append) is not a line
                if not data:
                    time.sleep(self.poll_interval)

    def close(self) -> None:
        """Nothing to release: no file stays open between calls."""

    def __enter__(self) -> FileStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _parse_row(key: str, path: str, row: bytes) -> Line:
    try:
        return parse_line(row)
    except ValueError as exc:
        raise LogServiceError(
            f"tail {key!r}: {path} holds a row that is not a log line ({exc}): {row[:80]!r}",
            call="tail",
        ) from None
