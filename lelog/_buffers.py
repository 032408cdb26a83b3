"""The writer's four buffers, as small pure classes: no locks, no threads, no clock.

``PendingLines`` holds what callers handed over and no encoder has taken yet (the writer
guards it with its ``_lock``).  ``HistoryRing`` holds the encoded lines kept for the final
upload and ``Intake`` those on their way to the live queue (both the encoder's, under the
writer's ``_encode_lock``); ``LiveQueue`` holds encoded lines not yet pushed live (the
worker's alone).  Each is bounded; what a bound pushes out is counted and, where a reader
would otherwise not notice, marked (docs/writer.md#buffers).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from itertools import accumulate, islice, repeat, takewhile
from operator import add
from typing import Any, Callable, Mapping, Optional, Sequence

import attrs

from ._encode import Item

__all__ = ["Batch", "HistoryRing", "Intake", "LiveQueue", "PendingLines", "Run", "item_size"]


def item_size(out: str, args: Optional[Mapping[str, Any]]) -> int:
    """A pending line's weight in the byte budget: its text and its args
    (docs/hazards.md#unbounded-memory)."""
    size = len(out)
    if args:
        for k, v in args.items():
            size += len(k) + (len(v) if type(v) is str else 16)
    return size


class PendingLines:
    """Lines accepted and not yet taken by the worker, within a line and a byte bound.

    Beyond a bound the oldest lines go; ``take`` reports how many went since the last take,
    so the worker can put a marker where they were.
    """

    __slots__ = ("max_lines", "max_bytes", "items", "bytes", "gap")

    def __init__(self, max_lines: int, max_bytes: int) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.items: deque[Item] = deque()
        self.bytes = 0
        self.gap = 0  # lines dropped since the last take

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: Item, size: int) -> int:
        """Append one line of ``size``; returns how many old lines it pushed out."""
        items = self.items
        items.append(item)
        self.bytes += size
        if len(items) <= self.max_lines and self.bytes <= self.max_bytes:
            return 0
        dropped = 0
        while len(items) > self.max_lines or self.bytes > self.max_bytes:
            item = items.popleft()
            self.bytes -= len(item[2]) if item[3] is None else item_size(item[2], item[3])
            dropped += 1
        self.gap += dropped
        return dropped

    def take(self) -> tuple[deque[Item], int]:
        """Everything held, and how many lines were dropped before it since the last take."""
        items, gap = self.items, self.gap
        self.items, self.bytes, self.gap = deque(), 0, 0
        return items, gap


@attrs.frozen
class Batch:
    """The head of the live queue for one PUT: its lines (a gap marker first when lines were
    lost from the live view), how many accepted lines they carry, how many queued lines they
    take (the marker is not one), and the body's size."""

    lines: list[bytes]
    count: int
    taken: int
    #: The PUT body's size: ``[`` lines joined by ``,`` ``]``.
    body_size: int


#: Makes the live gap marker: (lines lost, pos of the first of them) -> encoded line.
LiveMarker = Callable[[int, int], bytes]


@attrs.define
class Run:
    """Consecutive lines the worker queued at once: numbered from ``pos``, each carrying
    ``count`` accepted lines (1, or 0 for markers), ``size`` bytes together."""

    lines: list[bytes]
    count: int
    pos: int
    size: int

    def drop_head(self, n: int) -> int:
        """Forget the first ``n`` lines (fewer than all); returns their bytes."""
        gone = sum(map(len, islice(self.lines, n)))
        del self.lines[:n]
        self.pos += n
        self.size -= gone
        return gone


class LiveQueue:
    """Encoded lines waiting to be pushed live, in ``pos`` order, within two bounds.

    The lines are kept as the runs the worker queued (``entries``, never empty ones): the
    work is per run, and per line only in C (a copy, a sum of lengths) or where a bound or
    a batch cuts a run.  Lines pushed out by a bound, or taken by a push that failed, are
    still in the history; the live view gets one marker in their place, with the ``pos`` of
    the first of them (``lost_pos``, meaningful while ``lost``).
    """

    __slots__ = ("max_lines", "max_bytes", "entries", "lines", "bytes", "lost", "lost_pos", "since")

    def __init__(self, max_lines: int, max_bytes: int) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        # Truthy exactly while a line is queued; callers of the writer test that without its
        # lock (one atomic read under the GIL), so a run is never left empty.
        self.entries: deque[Run] = deque()
        self.lines = 0  # lines queued, markers included
        self.bytes = 0
        self.lost = 0  # accepted lines lost from the live view since the last push
        self.lost_pos = 0  # the pos of the first of them: the marker takes it
        self.since = 0.0  # when the oldest entry started waiting (the worker's clock)

    def __len__(self) -> int:
        return self.lines

    def __bool__(self) -> bool:
        return bool(self.entries) or bool(self.lost)

    def extend(self, encoded: Sequence[bytes], count: int, first_pos: int, now: float) -> int:
        """Queue lines numbered from ``first_pos``; returns how many accepted lines the
        bounds pushed out (they become part of the next marker)."""
        if not self.entries:
            self.since = now
        if not encoded:
            return 0
        size = sum(map(len, encoded))
        self.entries.append(Run(list(encoded), count, first_pos, size))
        self.lines += len(encoded)
        self.bytes += size
        if self.lines <= self.max_lines and self.bytes <= self.max_bytes:
            return 0
        return self._evict()

    def _evict(self) -> int:
        """Drop the oldest lines until both bounds hold, as one line at a time would: whole
        runs, then the head of one run (the fewest of its lines that bring both back)."""
        overflow = 0
        entries = self.entries
        while self.lines > self.max_lines or self.bytes > self.max_bytes:
            head = entries[0]
            n = len(head.lines)
            by_lines = self.lines - self.max_lines
            excess = self.bytes - self.max_bytes
            if by_lines >= n or excess > head.size:
                k = n
            else:
                # The lines the line bound asks for, then more while the byte bound does: a
                # loop over lines that go only (a full queue evicts about a drain's worth).
                k = max(by_lines, 0)
                gone = sum(map(len, islice(head.lines, k)))
                for line in islice(head.lines, k, None):
                    if gone >= excess:
                        break
                    gone += len(line)
                    k += 1
            overflow += self._lose(head.count, head.pos, k)
            self.lines -= k
            if k == n:
                entries.popleft()
                self.bytes -= head.size
            else:
                self.bytes -= head.drop_head(k)
        return overflow

    def _lose(self, count: int, pos: int, n: int) -> int:
        """Count ``n`` lines from ``pos`` as lost from the live view; returns the accepted ones."""
        if count and not self.lost:
            self.lost_pos = pos
        self.lost += count * n
        return count * n

    def due(self, now: float, interval: float, batch_lines: int, batch_bytes: int) -> bool:
        """Whether a push should go now: a full batch, or the oldest line is ``interval`` old."""
        return self.lines >= batch_lines or self.bytes >= batch_bytes or now >= self.due_at(interval)

    def due_at(self, interval: float) -> float:
        """When the oldest entry has waited ``interval``, less a microsecond: a worker that
        waits exactly until then finds it due whatever the float rounding of the clock."""
        return self.since + interval - 1e-6

    def batch(self, max_lines: int, max_bytes: int, marker: LiveMarker) -> Batch:
        """The head of the queue, up to one PUT's lines and body bytes (at least one line):
        whole runs while they fit, then the head of the run that does not."""
        lines: list[bytes] = [marker(self.lost, self.lost_pos)] if self.lost else []
        size = 1 + sum(map(len, lines)) + len(lines)
        count = taken = 0
        for run in self.entries:
            n = len(run.lines)
            if len(lines) + n <= max_lines and size + run.size + n <= max_bytes:
                lines += run.lines
                count += run.count * n
                taken += n
                size += run.size + n
                continue
            # The lines of ``run`` that still fit: a running sum over at most a batch of them.
            room = max_lines - len(lines)
            ends = list(accumulate(map(add, map(len, islice(run.lines, room)), repeat(1))))
            k = bisect_right(ends, max_bytes - size)
            if k == 0 and not taken:  # the first line goes even alone over a cap
                k = 1
                ends = [len(run.lines[0]) + 1]
            if k:
                lines += run.lines[:k]
                count += run.count * k
                taken += k
                size += ends[k - 1]
            break
        return Batch(lines, count, taken, size)

    def pop(self, batch: Batch, *, pushed: bool, now: float) -> None:
        """Remove a batch; one that was not pushed widens the live gap instead."""
        if pushed:
            self.lost = 0
        entries = self.entries
        left = batch.taken
        self.lines -= left
        while left:
            run = entries[0]
            n = len(run.lines)
            if not pushed:
                self._lose(run.count, run.pos, min(n, left))
            if n > left:
                self.bytes -= run.drop_head(left)
                break
            entries.popleft()
            self.bytes -= run.size
            left -= n
        if entries:
            self.since = now

    def clear(self) -> int:
        """Forget every entry; returns how many accepted lines they carried."""
        count = sum(run.count * len(run.lines) for run in self.entries)
        self.entries.clear()
        self.lines = self.bytes = 0
        return count


def drop_oldest(newest_first: list[bytes], excess: int, most: int) -> tuple[int, int]:
    """Remove the fewest oldest lines, at most ``most``, whose NDJSON rows make up ``excess``
    bytes, from a run kept newest first; returns how many went and their bytes.

    They go from the list's end, so the work is per line that goes and in C: a running sum
    that stops at ``excess``, and a ``del`` that moves nothing.
    """
    oldest = len(newest_first[-1]) + 1
    if oldest >= excess:  # the oldest line is enough (as it often is): no running sum
        newest_first.pop()
        return 1, oldest
    rows = map(add, map(len, islice(reversed(newest_first), most)), repeat(1))
    short = list(takewhile(excess.__gt__, accumulate(rows)))  # the sums still below excess
    k = len(short)
    gone = short[-1]  # at least the oldest line's: it is below excess
    if k < most:  # the line that reaches ``excess`` goes too
        gone += len(newest_first[-k - 1]) + 1
        k += 1
    del newest_first[len(newest_first) - k :]
    return k, gone


class HistoryRing:
    """The encoded lines the final upload stores, within a byte budget of NDJSON.

    When the budget is passed the oldest lines go (at least one line is always kept);
    ``evicted`` counts them.  The lines are kept as the runs the encoder handed over, each
    with its bytes, so the work is per run, and per line only in C (a reversed copy, a sum
    of lengths, a running sum over the lines that go).
    """

    __slots__ = ("budget", "entries", "lines", "bytes", "evicted")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        #: (NDJSON bytes, lines newest first) per run, oldest run first; never an empty run.
        self.entries: deque[tuple[int, list[bytes]]] = deque()
        self.lines = 0  # lines held
        self.bytes = 0  # NDJSON bytes held: each row ends in "\n"
        self.evicted = 0

    def __len__(self) -> int:
        return self.lines

    def extend(self, encoded: list[bytes]) -> int:
        """Keep lines (a copy: the caller's list is not held); returns how many old lines the
        budget evicted."""
        n = len(encoded)
        if not n:
            return 0
        size = sum(map(len, encoded)) + n
        self.entries.append((size, encoded[::-1]))
        self.lines += n
        self.bytes += size
        if self.bytes <= self.budget:
            return 0
        return self._evict()

    def _evict(self) -> int:
        """Drop the oldest lines until the budget holds or one line is left, as one line at a
        time would: whole runs, then the fewest oldest lines of one run."""
        entries = self.entries
        evicted = 0
        while self.bytes > self.budget and self.lines > 1:
            size, run = entries[0]
            excess = self.bytes - self.budget
            if excess >= size and len(entries) > 1:
                entries.popleft()
                k, gone = len(run), size
            else:  # the head of the run (of the last run, never its newest line)
                k, gone = drop_oldest(run, excess, len(run) if len(entries) > 1 else len(run) - 1)
                if run:
                    entries[0] = (size - gone, run)
                else:
                    entries.popleft()
            evicted += k
            self.lines -= k
            self.bytes -= gone
        self.evicted += evicted
        return evicted

    def rows(self) -> list[bytes]:
        """The lines held, oldest first: the rows of the final upload."""
        rows: list[bytes] = []
        for _, run in self.entries:
            rows += reversed(run)
        return rows


class Intake:
    """Encoded batches on their way from the encoder to the worker's live queue.

    The encoder may run on the spool's thread while the worker waits on a request
    (docs/writer.md#encoding), so the intake has the pending bounds: beyond them its oldest
    batches go (at least the newest stays), as accepted lines lost from the live view
    (they are in the history), reported by ``take`` for the live queue to mark.
    """

    __slots__ = ("max_lines", "max_bytes", "batches", "lines", "bytes", "lost", "lost_pos")

    def __init__(self, max_lines: int, max_bytes: int) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        #: (encoded lines, count each carries, pos of the first, when they were encoded)
        self.batches: deque[tuple[list[bytes], int, int, float]] = deque()
        self.lines = 0
        self.bytes = 0
        self.lost = 0  # accepted lines dropped since the last take
        self.lost_pos = 0  # the pos of the first of them

    def __bool__(self) -> bool:
        return bool(self.batches) or bool(self.lost)

    def put(self, encoded: list[bytes], count: int, first_pos: int, now: float) -> None:
        """Queue one batch numbered from ``first_pos``; ``count`` is 1 for accepted lines and
        0 for a marker."""
        batches = self.batches
        batches.append((encoded, count, first_pos, now))
        self.lines += len(encoded)
        self.bytes += sum(map(len, encoded))
        while len(batches) > 1 and (self.lines > self.max_lines or self.bytes > self.max_bytes):
            old, n, pos, _ = batches.popleft()
            self.lines -= len(old)
            self.bytes -= sum(map(len, old))
            if n:
                if not self.lost:
                    self.lost_pos = pos
                self.lost += n * len(old)

    def take(self) -> tuple[deque[tuple[list[bytes], int, int, float]], int, int]:
        """Every batch held, oldest first, and the lines lost before them (with the first one's pos)."""
        taken = (self.batches, self.lost, self.lost_pos)
        self.batches = deque()
        self.lines = self.bytes = self.lost = self.lost_pos = 0
        return taken
