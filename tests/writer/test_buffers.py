"""The writer's buffers and its batch encoder, tested alone: no threads, no clock, no sleeps."""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from lelog._buffers import HistoryRing, LiveQueue, PendingLines, item_size
from lelog._encode import encode_batch
from lelog._line import encode_line, format_time, truncate_out
from lelog._masking import MASK, Masker

texts = st.text(max_size=40)
args_st = st.one_of(st.none(), st.dictionaries(st.text(max_size=8), texts, max_size=3))
items = st.tuples(
    st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False),
    st.sampled_from(["info", "warn", "error", 'od"d']),
    texts,
    args_st,
    st.none(),  # a ready line (tests/test_encode.py: captured records)
)


def marker(lost: int, pos: int) -> bytes:
    return json.dumps({"marker": lost, "pos": pos}).encode()


def positions(queue: LiveQueue) -> list[int]:
    return [run.pos + i for run in queue.entries for i in range(len(run.lines))]


# -- PendingLines ---------------------------------------------------------------------------------


@given(st.lists(st.tuples(texts, args_st), max_size=60), st.integers(1, 20), st.integers(1, 400))
def test_pending_lines_keep_the_newest_within_both_bounds(
    lines: list[tuple[str, Optional[dict[str, str]]]], max_lines: int, max_bytes: int
) -> None:
    pending = PendingLines(max_lines, max_bytes)
    kept_sizes = []
    dropped = 0
    for i, (out, args) in enumerate(lines):
        size = item_size(out, args)
        if size > max_bytes:
            continue  # the writer refuses these as too large before they get here
        dropped += pending.add((float(i), "info", out, args, None), size)
        kept_sizes.append(size)
        assert len(pending) <= max_lines and pending.bytes <= max_bytes
    taken, gap = pending.take()
    assert gap == dropped and len(taken) + dropped == len(kept_sizes)
    assert [item[0] for item in taken] == sorted(item[0] for item in taken)  # order kept
    assert pending.bytes == 0 and len(pending) == 0 and pending.take()[1] == 0


# -- LiveQueue ------------------------------------------------------------------------------------


@given(st.lists(st.integers(1, 30), max_size=80), st.integers(1, 25), st.integers(40, 600))
def test_live_queue_bounds_count_every_lost_line_and_mark_its_pos(
    sizes: list[int], max_lines: int, max_bytes: int
) -> None:
    queue = LiveQueue(max_lines, max_bytes)
    encoded = [b"x" * n for n in sizes]
    overflow = queue.extend(encoded, 1, 100, now=0.0)
    assert len(queue) <= max_lines and queue.bytes <= max_bytes
    assert overflow == queue.lost == len(encoded) - len(queue)
    if overflow:
        assert queue.lost_pos == 100  # the first line lost: the marker takes its pos
        assert positions(queue) == list(range(100 + overflow, 100 + len(encoded)))


@settings(max_examples=200)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=60), st.integers(1, 10), st.integers(2, 300))
def test_batches_respect_their_caps_and_take_everything_in_order(
    sizes: list[int], batch_lines: int, batch_bytes: int
) -> None:
    queue = LiveQueue(1000, 1 << 20)
    queue.extend([str(i).encode() + b"x" * n for i, n in enumerate(sizes)], 1, 0, now=0.0)
    seen: list[bytes] = []
    while queue.entries:
        batch = queue.batch(batch_lines, batch_bytes, marker)
        assert batch.taken >= 1 and batch.count == batch.taken
        assert batch.taken == 1 or (len(batch.lines) <= batch_lines and batch.body_size <= batch_bytes)
        seen.extend(batch.lines)
        queue.pop(batch, pushed=True, now=1.0)
    assert seen == [str(i).encode() + b"x" * n for i, n in enumerate(sizes)]
    assert queue.bytes == 0 and not queue


def test_a_failed_push_becomes_one_marker_at_the_head_of_the_next_batch() -> None:
    queue = LiveQueue(100, 1 << 20)
    queue.extend([b"a", b"b", b"c"], 1, 7, now=0.0)
    first = queue.batch(2, 1 << 20, marker)
    queue.pop(first, pushed=False, now=1.0)
    assert queue.lost == 2 and queue.lost_pos == 7
    second = queue.batch(10, 1 << 20, marker)
    assert second.lines == [marker(2, 7), b"c"] and second.count == 1
    queue.pop(second, pushed=True, now=2.0)
    assert queue.lost == 0 and not queue


class LineByLine:
    """The live queue's reference model: one entry per line, one line at a time."""

    def __init__(self, max_lines: int, max_bytes: int) -> None:
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.entries: deque[tuple[bytes, int, int]] = deque()  # (line, count, pos)
        self.lost = self.lost_pos = 0
        self.since = 0.0

    @property
    def bytes(self) -> int:
        return sum(len(line) for line, _, _ in self.entries)

    def lose(self, count: int, pos: int) -> None:
        if count and not self.lost:
            self.lost_pos = pos
        self.lost += count

    def extend(self, encoded: list[bytes], count: int, first_pos: int, now: float) -> int:
        if not self.entries:
            self.since = now
        self.entries.extend((line, count, first_pos + i) for i, line in enumerate(encoded))
        overflow = 0
        while len(self.entries) > self.max_lines or self.bytes > self.max_bytes:
            _, n, pos = self.entries.popleft()
            self.lose(n, pos)
            overflow += n
        return overflow

    def batch(self, max_lines: int, max_bytes: int) -> tuple[list[bytes], int, int]:
        """(lines, count, taken): each line taken while it fits, the first one always."""
        lines = [marker(self.lost, self.lost_pos)] if self.lost else []
        count = taken = 0
        for line, n, _ in self.entries:
            if taken and (
                len(lines) >= max_lines or len(b"[" + b",".join([*lines, line]) + b"]") > max_bytes
            ):
                break
            lines.append(line)
            count += n
            taken += 1
        return lines, count, taken

    def pop(self, taken: int, pushed: bool, now: float) -> None:
        if pushed:
            self.lost = 0
        for _ in range(taken):
            _, n, pos = self.entries.popleft()
            if not pushed:
                self.lose(n, pos)
        if self.entries:
            self.since = now

    def clear(self) -> int:
        count = sum(n for _, n, _ in self.entries)
        self.entries.clear()
        return count


live_ops = st.lists(
    st.one_of(
        st.tuples(st.just("extend"), st.lists(st.integers(0, 12), max_size=25), st.sampled_from([1, 1, 0])),
        st.tuples(st.just("push"), st.integers(1, 12), st.integers(1, 80), st.booleans()),
        st.tuples(st.just("clear")),
    ),
    max_size=30,
)


@settings(max_examples=400)
@given(live_ops, st.integers(1, 40), st.integers(1, 150))
def test_the_live_queue_by_runs_matches_a_line_by_line_model(
    ops: list[tuple[Any, ...]], max_lines: int, max_bytes: int
) -> None:
    queue, model = LiveQueue(max_lines, max_bytes), LineByLine(max_lines, max_bytes)
    pos = 0
    for step, op in enumerate(ops):
        now = float(step)
        if op[0] == "extend":
            # Lines of any length, empty ones too; each told apart by its pos where it has room.
            encoded = [(b"%d:" % (pos + i) + b"x" * n)[:n] for i, n in enumerate(op[1])]
            assert queue.extend(encoded, op[2], pos, now) == model.extend(encoded, op[2], pos, now)
            pos += len(encoded)
        elif op[0] == "push":
            _, batch_lines, batch_bytes, pushed = op
            if not queue.entries:
                continue  # the writer pushes only while lines are queued
            batch = queue.batch(batch_lines, batch_bytes, marker)
            assert (batch.lines, batch.count, batch.taken) == model.batch(batch_lines, batch_bytes)
            assert batch.body_size == len(b"[" + b",".join(batch.lines) + b"]")
            queue.pop(batch, pushed=pushed, now=now)
            model.pop(batch.taken, pushed, now)
        else:
            assert queue.clear() == model.clear()
        assert positions(queue) == [p for _, _, p in model.entries]
        assert [line for run in queue.entries for line in run.lines] == [line for line, _, _ in model.entries]
        assert len(queue) == len(model.entries) and queue.bytes == model.bytes
        assert bool(queue.entries) == bool(model.entries) and bool(queue) == bool(model.entries or model.lost)
        assert queue.lost == model.lost and queue.since == model.since
        if model.lost:
            assert queue.lost_pos == model.lost_pos
        assert all(run.lines and run.size == sum(map(len, run.lines)) for run in queue.entries)


def test_a_queue_is_due_by_age_by_lines_or_by_bytes() -> None:
    queue = LiveQueue(100, 1 << 20)
    queue.extend([b"abc"], 1, 0, now=10.0)
    assert not queue.due(10.5, 1.0, 5, 100)
    assert queue.due(11.0, 1.0, 5, 100)  # a second old
    assert queue.due(10.0, 1.0, 1, 100)  # a full batch by lines
    assert queue.due(10.0, 1.0, 5, 3)  # and by bytes
    assert queue.due(queue.due_at(1.0), 1.0, 5, 100)  # waiting until due_at is enough


# -- HistoryRing ----------------------------------------------------------------------------------


@given(st.lists(st.lists(st.integers(0, 40), max_size=10), max_size=20), st.integers(1, 300))
def test_history_keeps_the_newest_within_its_budget_and_counts_evictions(
    chunks: list[list[int]], budget: int
) -> None:
    ring = HistoryRing(budget)
    everything: list[bytes] = []
    for chunk in chunks:
        lines = [str(len(everything) + i).encode() + b"x" * n for i, n in enumerate(chunk)]
        everything.extend(lines)
        ring.extend(lines)
        assert ring.bytes <= budget or len(ring) == 1  # one line is always kept
        assert ring.bytes == sum(len(line) + 1 for line in ring.rows())
    assert ring.evicted + len(ring) == len(everything)
    assert ring.rows() == everything[ring.evicted :]


class LineByLineHistory:
    """The reference: the history as a deque of lines, evicting one line at a time."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.lines: deque[bytes] = deque()
        self.bytes = 0
        self.evicted = 0

    def extend(self, encoded: list[bytes]) -> int:
        self.lines.extend(encoded)
        self.bytes += sum(len(line) + 1 for line in encoded)
        evicted = 0
        while self.bytes > self.budget and len(self.lines) > 1:
            self.bytes -= len(self.lines.popleft()) + 1
            evicted += 1
        self.evicted += evicted
        return evicted


# Budgets from below one row to a few dozen; lines from empty to larger than most budgets.
budgets = st.one_of(st.integers(1, 12), st.integers(1, 400))
batches = st.lists(st.lists(st.integers(0, 60), max_size=25), max_size=30)


@settings(max_examples=500)
@given(batches, budgets)
def test_history_evicts_as_one_line_at_a_time_would(chunks: list[list[int]], budget: int) -> None:
    ring, model = HistoryRing(budget), LineByLineHistory(budget)
    n = 0
    for chunk in chunks:
        lines = [str(n + i).encode() + b"x" * size for i, size in enumerate(chunk)]
        n += len(lines)
        assert ring.extend(lines) == model.extend(lines)
        assert ring.rows() == list(model.lines)
        assert (ring.bytes, ring.evicted, len(ring)) == (model.bytes, model.evicted, len(model.lines))
        # Evicted lines are let go at once: the runs hold exactly the lines counted, and
        # never an empty run.
        assert all(run and size == sum(len(line) + 1 for line in run) for size, run in ring.entries)
        held = [line for _, run in ring.entries for line in run]
        assert (len(held), sum(map(len, held))) == (len(ring), ring.bytes - len(ring))


def test_history_keeps_a_copy_of_what_it_is_given() -> None:
    ring = HistoryRing(100)
    lines = [b"a", b"b"]
    ring.extend(lines)
    lines[0] = b"changed"
    lines.append(b"more")
    assert ring.rows() == [b"a", b"b"]
    assert (ring.bytes, len(ring)) == (4, 2)


def test_history_keeps_the_newest_line_even_alone_over_its_budget() -> None:
    ring = HistoryRing(5)
    assert ring.extend([b"abc", b"0123456789"]) == 1
    assert ring.rows() == [b"0123456789"]
    assert (ring.bytes, ring.evicted, len(ring)) == (11, 1, 1)
    assert ring.extend([b"d"]) == 1  # the next line takes its place
    assert ring.rows() == [b"d"]
    assert (ring.bytes, ring.evicted) == (2, 2)


# -- the batch encoder ----------------------------------------------------------------------------


def reference(item: Any, pos: int, masker: Optional[Masker], trim: bool) -> bytes:
    ts, level, out, args, _ = item
    if masker is not None:
        out = masker.mask(out)
        args = masker.mask_args(args) if args else args
    if trim and out.endswith("\n"):
        out = out[:-1]
    out, _ = truncate_out(out)
    return encode_line(level, pos, out, format_time(ts), args)


@settings(max_examples=300)
@given(st.lists(items, max_size=20), st.integers(0, 10**9), st.booleans(), st.booleans())
def test_encode_batch_gives_the_bytes_of_encode_line(
    batch: list[Any], first: int, mask: bool, trim: bool
) -> None:
    masker = Masker(secrets=["se", "cret"]) if mask else None
    encoded, truncated = encode_batch(batch, first, masker, trim)
    assert encoded == [reference(item, first + i, masker, trim) for i, item in enumerate(batch)]
    assert truncated == 0


def test_encode_batch_truncates_and_counts_like_encode_line() -> None:
    long = "é" * 50_000
    encoded, truncated = encode_batch([(1.5, "info", long, None, None)], 3, None, False)
    assert truncated == 1 and encoded == [reference((1.5, "info", long, None, None), 3, None, False)]


def test_args_are_masked_in_keys_and_values() -> None:
    masker = Masker(secrets=["hunter2"])
    encoded, _ = encode_batch([(0.0, "info", "x", {"hunter2": "hunter2", "n": 7}, None)], 0, masker, False)  # type: ignore[dict-item]
    assert json.loads(encoded[0])["args"] == {MASK: MASK, "n": "7"}
