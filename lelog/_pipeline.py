"""``Pipeline``: pending lines to numbered wire bytes, published to the history, the live
intake and the crash spool.

A line is encoded once (docs/writer.md#encoding): the encoder takes what the ``Ledger``
holds, merges fork children's lines in by time, renders, masks, trims, truncates, gives
each line its ``pos`` and encodes it (``encode_batch``).  The bytes go to the ``HistoryRing``
(the final upload), the ``Intake`` (the worker moves it into its live queue) and, with a
spool, the spool's queue.  Markers (``[lelog] ...``) take a ``pos`` of their own where lines
were lost, so ``pos`` stays contiguous.

Lock: ``encode_lock`` lets one thread at a time (the worker, or the spool's thread) take,
encode and publish, so ``pos`` order is the order in which lines reach the history, the
intake and the spool; it guards ``next_pos``, the history and the intake.  The ledger's lock
is taken under it (to take lines and to count), never the other way round, and nothing under
it waits on I/O or on another thread: either thread holds the other up for one batch's
encoding at most, and callers, who take only the ledger's lock, never wait for an encoding.
"""

from __future__ import annotations

import heapq
import threading
from collections import deque
from typing import Callable, Optional

from ._buffers import HistoryRing, Intake
from ._clock import Clock
from ._encode import Item, encode_batch
from ._hostwide import HistoryFile
from ._ledger import Ledger
from ._line import encode_line, format_time, ndjson
from ._masking import Masker
from ._stats import Counters

__all__ = ["MARKER_PREFIX", "Pipeline", "RowSink", "Taken"]

MARKER_PREFIX = "[lelog] "

#: Where encoded rows go besides the history and the live view: the crash spool's queue.
RowSink = Callable[[list[bytes]], None]
#: What the intake hands the worker: its batches (encoded, count, first pos, since), and
#: the lines its bound dropped with the pos of the first of them.
Taken = tuple[deque[tuple[list[bytes], int, int, float]], int, int]


class Pipeline:
    """One stream's encoder and the buffers it publishes to (see the module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        clock: Clock,
        *,
        masker: Optional[Masker],
        trim_new_line_suffix: bool,
        history_bytes: int,
        max_lines: int,
        max_bytes: int,
        key: str,
    ) -> None:
        self._ledger = ledger
        self._clock = clock
        self._masker = masker
        self._trim = trim_new_line_suffix
        self._key = key
        self.encode_lock = threading.Lock()
        self.history = HistoryRing(history_bytes)
        self.intake = Intake(max_lines, max_bytes)
        self.next_pos = 0
        self.spool_rows: Optional[RowSink] = None
        #: The owner's history file, when the stream is shared on the host (``_hostwide``).
        self.history_file: Optional[HistoryFile] = None

    def resume(self, rows: list[bytes], next_pos: int, note: Optional[str]) -> None:
        """Continue a stream another process of the host owned: its history, its ``pos``,
        and ``note`` (a marker) when it ended without handing the stream over.  Before the
        first line is encoded (the caller's promise)."""
        with self.encode_lock:
            self.history.extend(rows)
            self.history.evicted = next_pos - len(self.history)
            self.next_pos = next_pos
            if note is not None:
                marker = self.marker(note, next_pos)
                self.history.extend([marker])
                self.intake.put([marker], 0, next_pos, self._clock.monotonic())
                self.next_pos += 1
            if self.history_file is not None:  # a successor's copy starts from all of it
                self.history_file.start(self.history.rows())

    def marker(self, text: str, pos: int, at: Optional[str] = None) -> bytes:
        """A ``[lelog]`` warning line at ``pos``, at time ``at`` (RFC 3339) or now."""
        out = MARKER_PREFIX + text + ("" if self._trim else "\n")
        return encode_line("warn", pos, out, at or format_time(self._clock.time()), None)

    def encode_pending(self) -> Optional[str]:
        """Take, number, encode and publish what callers and fork children handed over.
        Returns what failed, for a warning once the lock is released (a warning writes to
        stderr, which may block)."""
        with self.encode_lock:
            return self._encode_locked()

    def drain(self) -> tuple[Optional[str], Optional[Taken]]:
        """On the worker: ``encode_pending``, then take what the intake holds for the live
        queue, in one hold of ``encode_lock`` (so nothing is published between the two)."""
        with self.encode_lock:
            failure = self._encode_locked()
            taken = self.intake.take() if self.intake else None
        return failure, taken

    def _encode_locked(self) -> Optional[str]:
        now = self._clock.monotonic()
        waiting = self._ledger.take()
        if waiting is None:
            return None
        items, from_children, gap, accounted = waiting
        if from_children:
            # In order of time with the owner's lines, as far as the processes' clocks allow;
            # each side keeps its own order (merge is stable).
            items = deque(heapq.merge(items, from_children, key=_time_of))
        failure = None
        first = pos = self.next_pos
        batches: list[tuple[list[bytes], int]] = []  # (encoded, count: 0 for a marker)
        if gap:
            batches.append(([self.marker(f"{gap:,} lines dropped: buffer full", pos)], 0))
            pos += 1
        unencodable = truncated = 0
        try:
            encoded, truncated = encode_batch(items, pos, self._masker, self._trim)
        except Exception as exc:  # a bug or MemoryError: count the batch, keep the writer
            failure = f"encoding lines for {self._key!r} failed: {exc!r}"
            encoded, unencodable = [], len(items)
        if encoded:
            batches.append((encoded, 1))
        self.next_pos = pos + len(encoded)
        evicted = self._publish_locked(batches, first, now, accounted)

        def update(counters: Counters) -> None:
            counters.dropped["unencodable"] += unencodable
            counters.truncated += truncated
            counters.history_evicted += evicted

        self._ledger.count(update)
        return failure

    def mark(self, text: str) -> None:
        """A ``[lelog]`` marker at the next ``pos``, published as encoded lines are."""
        with self.encode_lock:
            pos = self.next_pos
            self.next_pos += 1
            evicted = self._publish_locked([([self.marker(text, pos)], 0)], pos, self._clock.monotonic(), {})

        def update(counters: Counters) -> None:
            counters.history_evicted += evicted

        self._ledger.count(update)

    def _publish_locked(
        self, batches: list[tuple[list[bytes], int]], first: int, now: float, accounted: dict[str, int]
    ) -> int:
        """Encoded ``batches`` (numbered from ``first``) to the history, the intake, the
        spool and the history file (in one write, with the members' counts they account
        for); how many rows the history's budget evicted."""
        evicted = 0
        spool_rows = self.spool_rows
        for lines, count in batches:
            evicted += self.history.extend(lines)
            self.intake.put(lines, count, first, now)
            if spool_rows is not None:
                spool_rows(lines)
            first += len(lines)
        if self.history_file is not None:
            rows = [row for lines, _ in batches for row in lines]
            self.history_file.append(rows, self.history.rows, accounted)
        return evicted

    def upload_body(self, *, marks_evicted: bool) -> bytes:
        """The stored log: the history, headed by a marker when its budget evicted lines
        (``marks_evicted``: the file store fills the head from the live lines it keeps).

        The marker takes the ``pos`` of the last line left out, so ``pos`` stays contiguous;
        it is not in ``history_lines``.  Call after the final drain.
        """
        with self.encode_lock:
            rows = self.history.rows()
            evicted = self.history.evicted
            first_kept = self.next_pos - len(rows)
        if evicted and marks_evicted:
            text = f"{evicted:,} earlier lines left out of this log (history_bytes budget)"
            rows.insert(0, self.marker(text, first_kept - 1))
        return ndjson(rows)

    @property
    def history_lines(self) -> int:
        return len(self.history)  # one atomic len; the encoder's


def _time_of(item: Item) -> float:
    return item[0]
