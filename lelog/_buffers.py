"""The writer's three buffers, as small pure classes: no locks, no threads, no clock.

``PendingLines`` holds what callers handed over and the worker has not taken yet (the caller
side; the writer guards it with its lock).  ``LiveQueue`` holds encoded lines not yet pushed
live, ``HistoryRing`` the encoded lines kept for the final upload (both the worker's alone).
Each is bounded; what a bound pushes out is counted and, where a reader would otherwise not
notice, marked (docs/writer.md#buffers).
"""

from __future__ import annotations

from collections import deque
from itertools import repeat
from typing import Any, Callable, Mapping, Optional, Sequence

import attrs

from ._encode import Item

__all__ = ["Batch", "HistoryRing", "Intake", "LiveQueue", "PendingLines", "item_size"]


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
    lost from the live view), how many accepted lines they carry, how many entries they take."""

    lines: list[bytes]
    count: int
    taken: int

    @property
    def body_size(self) -> int:
        """The PUT body's size: ``[`` lines joined by ``,`` ``]``."""
        return sum(map(len, self.lines)) + len(self.lines) + 1


#: Makes the live gap marker: (lines lost, pos of the first of them) -> encoded line.
LiveMarker = Callable[[int, int], bytes]


class LiveQueue:
    """Encoded lines waiting to be pushed live, in ``pos`` order, within two bounds.

    Each entry carries how many accepted lines it is (1, or 0 for a marker) and its ``pos``.
    Lines pushed out by a bound, or taken by a push that failed, are still in the history;
    the live view gets one marker in their place, with the ``pos`` of the first of them.
    """

    __slots__ = ("max_lines", "max_bytes", "entries", "bytes", "lost", "lost_pos", "since")

    def __init__(self, max_lines: int, max_bytes: int) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.entries: deque[tuple[bytes, int, int]] = deque()
        self.bytes = 0
        self.lost = 0  # accepted lines lost from the live view since the last push
        self.lost_pos = 0  # the pos of the first of them: the marker takes it
        self.since = 0.0  # when the oldest entry started waiting (the worker's clock)

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries) or bool(self.lost)

    def extend(self, encoded: Sequence[bytes], count: int, first_pos: int, now: float) -> int:
        """Queue lines numbered from ``first_pos``; returns how many accepted lines the
        bounds pushed out (they become part of the next marker)."""
        entries = self.entries
        if not entries:
            self.since = now
        entries.extend(zip(encoded, repeat(count), range(first_pos, first_pos + len(encoded))))
        self.bytes += sum(map(len, encoded))
        overflow = 0
        while len(entries) > self.max_lines or self.bytes > self.max_bytes:
            data, n, pos = entries.popleft()
            self.bytes -= len(data)
            self._lose(n, pos)
            overflow += n
        return overflow

    def lose(self, count: int, pos: int) -> None:
        """Lines numbered from ``pos`` that never reached the queue: the next batch's marker
        counts them too."""
        self._lose(count, pos)

    def _lose(self, count: int, pos: int) -> None:
        if not self.lost:
            self.lost_pos = pos
        self.lost += count

    def due(self, now: float, interval: float, batch_lines: int, batch_bytes: int) -> bool:
        """Whether a push should go now: a full batch, or the oldest line is ``interval`` old."""
        return len(self.entries) >= batch_lines or self.bytes >= batch_bytes or now >= self.due_at(interval)

    def due_at(self, interval: float) -> float:
        """When the oldest entry has waited ``interval``, less a microsecond: a worker that
        waits exactly until then finds it due whatever the float rounding of the clock."""
        return self.since + interval - 1e-6

    def batch(self, max_lines: int, max_bytes: int, marker: LiveMarker) -> Batch:
        """The head of the queue, up to one PUT's lines and body bytes (at least one entry)."""
        lines: list[bytes] = [marker(self.lost, self.lost_pos)] if self.lost else []
        count = taken = 0
        size = 1 + sum(len(line) + 1 for line in lines)
        for data, n, _pos in self.entries:
            if taken and (len(lines) >= max_lines or size + len(data) + 1 > max_bytes):
                break
            lines.append(data)
            count += n
            taken += 1
            size += len(data) + 1
        return Batch(lines, count, taken)

    def pop(self, batch: Batch, *, pushed: bool, now: float) -> None:
        """Remove a batch; one that was not pushed widens the live gap instead."""
        if pushed:
            self.lost = 0
        for _ in range(batch.taken):
            data, count, pos = self.entries.popleft()
            self.bytes -= len(data)
            if not pushed:
                self._lose(count, pos)
        if self.entries:
            self.since = now

    def clear(self) -> int:
        """Forget every entry; returns how many accepted lines they carried."""
        count = sum(n for _, n, _ in self.entries)
        self.entries.clear()
        self.bytes = 0
        return count


class HistoryRing:
    """The encoded lines the final upload stores, within a byte budget of NDJSON.

    When the budget is passed the oldest lines go (at least one line is always kept);
    ``evicted`` counts them and ``first_pos`` is the ``pos`` of the first line kept.
    """

    __slots__ = ("budget", "lines", "bytes", "evicted")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.lines: deque[bytes] = deque()
        self.bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.lines)

    def extend(self, encoded: Sequence[bytes]) -> int:
        """Keep lines; returns how many old lines the budget evicted."""
        lines = self.lines
        lines.extend(encoded)
        self.bytes += sum(map(len, encoded)) + len(encoded)  # each row ends in "\n"
        evicted = 0
        while self.bytes > self.budget and len(lines) > 1:
            self.bytes -= len(lines.popleft()) + 1
            evicted += 1
        self.evicted += evicted
        return evicted


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
