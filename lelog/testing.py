"""Test doubles: assert what your job logged, with no log service and no network.

::

    import lelog.testing

    def test_build_reports_success():
        with lelog.testing.capture_stream() as captured:
            run_build()                       # uses lelog.log_stream / StreamHandler inside
        assert any('msg="build ok"' in out for out in captured.outs("stage-1/build"))
        assert captured.stream("stage-1/build").closed

``capture_stream()`` swaps the backend of every writer built while it is active (in any
thread) for one ``MemoryBackend``; the configuration is still read and checked, so a bad
configuration fails the test as it would fail the job.  A ``MemoryBackend`` can also be
passed directly wherever a config goes: ``lelog.log_stream(key, MemoryBackend())``.

``ManualClock`` with ``StreamWriter(..., clock=clock, threaded=False)`` runs a writer with no
thread: ``writer.step()`` does one round of its worker and ``clock.advance()`` moves time, so
a test of batching or retries neither sleeps nor races::

    clock = lelog.testing.ManualClock()
    writer = lelog.StreamWriter("k", backend, clock=clock, threaded=False, flush_interval=1)
    writer.write_line("x"); writer.step()      # not due yet: nothing pushed
    clock.advance(1.0); writer.step()          # a second old: pushed
"""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any, Iterator, Optional, Sequence, Union

import attrs

from . import _backend
from ._config import LogConfig
from ._line import Line, parse_ndjson

__all__ = ["ManualClock", "MemoryBackend", "MemoryStream", "capture_stream"]


class ManualClock:
    """A clock that moves only when told: by ``advance()``, or by a writer's retry wait
    (``sleep`` advances it instead of waiting).  Safe to read from any thread."""

    def __init__(self, start: float = 1_000.0, epoch: float = 1_700_000_000.0) -> None:
        self._lock = threading.Lock()  # a leaf lock: guards _now only
        self._now = start
        self._epoch = epoch - start

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def time(self) -> float:
        with self._lock:
            return self._epoch + self._now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        with self._lock:
            self._now += seconds


@attrs.frozen
class MemoryStream:
    """What one stream received, as a snapshot.

    ``lines`` are the lines pushed live, in order; ``uploaded`` the history uploaded at
    close (None when nothing was uploaded).
    """

    key: str
    opened: bool = False
    lines: tuple[Line, ...] = ()
    uploaded: Optional[tuple[Line, ...]] = None
    closed: bool = False
    snapshot: bool = False


def _decode(lines: Union[Sequence[Union[Line, bytes]], bytes]) -> list[Line]:
    if isinstance(lines, bytes):
        return list(parse_ndjson(lines))
    return [line if isinstance(line, Line) else Line.from_dict(json.loads(line)) for line in lines]


def _text(line: Line) -> str:
    return line.out[:-1] if line.out.endswith("\n") else line.out


class MemoryBackend:
    """A backend that records every call in memory, for tests.

    Implements the calls a writer makes (``open_stream``, ``write``, ``upload``,
    ``close_stream``, ``close``), never fails, and is safe to use from any thread.
    ``calls`` lists ``(call, key)`` pairs in the order they happened.
    """

    def __init__(self, config: Optional[LogConfig] = None) -> None:
        #: The config a writer built on this backend uses (masking, trimming, skip flags).
        self.config = config if config is not None else LogConfig()
        # Guards the fields below; held for list and dict updates only and nothing is called
        # while it is held, so it cannot take part in a deadlock.
        self._lock = threading.Lock()
        self._calls: list[tuple[str, str]] = []
        self._streams: dict[str, MemoryStream] = {}
        self._order: list[tuple[str, Line]] = []

    def __repr__(self) -> str:
        return f"<MemoryBackend streams={self.keys}>"

    def _record(self, call: str, key: str, **changes: Any) -> None:
        with self._lock:
            self._calls.append((call, key))
            if key:
                stream = self._streams.get(key) or MemoryStream(key)
                self._streams[key] = attrs.evolve(stream, **changes) if changes else stream

    # -- the Backend calls ----------------------------------------------------------------------

    def open_stream(self, key: str, **opts: Any) -> None:
        self._record("open_stream", key, opened=True, closed=False)

    def write(self, key: str, lines: Sequence[Union[Line, bytes]], **opts: Any) -> None:
        decoded = _decode(lines)
        with self._lock:
            self._calls.append(("write", key))
            stream = self._streams.get(key) or MemoryStream(key)
            self._streams[key] = attrs.evolve(stream, lines=stream.lines + tuple(decoded))
            self._order.extend((key, line) for line in decoded)

    def upload(self, key: str, lines: Union[Sequence[Union[Line, bytes]], bytes], **opts: Any) -> None:
        self._record("upload", key, uploaded=tuple(_decode(lines)))

    def close_stream(self, key: str, *, snapshot: bool = False, **opts: Any) -> None:
        self._record("close_stream", key, closed=True, snapshot=snapshot)

    def close(self) -> None:
        self._record("close", "")

    # -- what happened --------------------------------------------------------------------------

    @property
    def calls(self) -> list[tuple[str, str]]:
        """``(call, key)`` for every call so far, in order (``("close", "")`` for ``close``)."""
        with self._lock:
            return list(self._calls)

    @property
    def keys(self) -> list[str]:
        """The keys of every stream used, in first-use order."""
        with self._lock:
            return list(self._streams)

    def stream(self, key: str) -> MemoryStream:
        """What stream ``key`` received; ``KeyError`` when it was never used."""
        with self._lock:
            return self._streams[key]

    def lines(self, key: Optional[str] = None) -> list[Line]:
        """The lines pushed live to ``key`` (every stream's, in arrival order, when None)."""
        with self._lock:
            return [line for k, line in self._order if key is None or k == key]

    def outs(self, key: Optional[str] = None) -> list[str]:
        """The text of ``lines(key)``, without the trailing newline: handy in asserts."""
        return [_text(line) for line in self.lines(key)]

    def clear(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self._calls.clear()
            self._streams.clear()
            self._order.clear()


@contextlib.contextmanager
def capture_stream(backend: Optional[MemoryBackend] = None) -> Iterator[MemoryBackend]:
    """Make every writer built inside the block, in any thread, use one ``MemoryBackend``.

    Writers given a backend object explicitly keep it.  Nested captures restore the outer
    one on exit.  Close your writers (leave ``log_stream`` blocks) before asserting: lines
    reach the backend from the writer's worker thread, like they reach the service.
    """
    captured = backend if backend is not None else MemoryBackend()
    previous = _backend.override
    _backend.override = lambda _config: captured
    try:
        yield captured
    finally:
        _backend.override = previous
