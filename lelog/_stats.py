"""What a stream did: ``Stats`` (the public snapshot), ``Counters`` (the live counts) and
``StreamTotals`` (a stream's counts over every process of the host that owned it).

Every accepted line ends up sent, dropped for one of ``DROP_REASONS``, or pending.  The
counters belong to a stream's ``Ledger``, which guards them with its lock.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Optional

import attrs

__all__ = [
    "DROP_REASONS",
    "STORED_ELSEWHERE",
    "Counters",
    "Stats",
    "StreamTotals",
    "count_of",
    "drop_reasons",
]

#: Why a line did not reach the live stream ("unencodable": lelog itself failed to encode
#: it, which only a bug or an exhausted machine causes; "reentrant": a call made on a thread
#: already inside lelog that could not be deferred, docs/writer.md#re-entry; "lost_with_owner":
#: a member's lines that the process owning the stream on the host ended without storing,
#: docs/writer.md#processes-on-one-key).
DROP_REASONS = (
    "overflow",
    "too_large",
    "rejected",
    "retries_exhausted",
    "after_close",
    "unencodable",
    "reentrant",
    "lost_with_owner",
)


def _no_drops() -> dict[str, int]:
    return dict.fromkeys(DROP_REASONS, 0)


def drop_reasons(dropped: Mapping[str, int]) -> str:
    """The reasons lines were dropped, for people: ``overflow 3, after close 1``."""
    return ", ".join(f"{reason.replace('_', ' ')} {count:,}" for reason, count in dropped.items() if count)


def count_of(count: int, noun: str, plural: str = "") -> str:
    """``1 line``, ``3,000 lines``; ``plural`` when adding an ``s`` is not it."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


@attrs.frozen
class StreamTotals:
    """A stream shared by processes of the host, counted over all of them: what each owner
    took in its time (its own lines, the lines members handed it, the lines members had to
    drop), handed from owner to owner in the history file (docs/writer.md#whole-stream-counts)."""

    accepted: int = 0
    sent: int = 0
    dropped: Mapping[str, int] = attrs.field(factory=_no_drops)
    #: The processes known to have written it (pids; a reused pid is counted once).
    processes: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def plus(self, accepted: int, sent: int, dropped: Mapping[str, int], processes: int) -> StreamTotals:
        merged = dict(self.dropped)
        for reason, count in dropped.items():
            merged[reason] = merged.get(reason, 0) + count
        return StreamTotals(self.accepted + accepted, self.sent + sent, merged, processes)

    def text(self) -> str:
        """For the summaries: ``the whole stream: 3,000 lines of 3 processes, 3,000 sent``."""
        processes = count_of(self.processes, "process", "processes")
        text = f"the whole stream: {count_of(self.accepted, 'line')} of {processes}, {self.sent:,} sent"
        if self.dropped_total:
            text += f", {self.dropped_total:,} dropped ({drop_reasons(self.dropped)})"
        return text


#: What a writer that joined a stream a writer elsewhere holds says of its log (``Stats.joined``).
STORED_ELSEWHERE = "streamed live into a stream a writer elsewhere holds; the stored log is that writer's"


@attrs.frozen
class Stats:
    """What a writer did.  Every accepted line ends up sent, dropped (by reason) or pending.

    ``dropped`` counts lines that did not reach the live stream; those of them still in the
    history (``rejected``, ``retries_exhausted``, and ``overflow`` of the live queue) are in
    the final upload when it succeeds (``uploaded``).  ``truncated`` lines were sent cut to
    the protocol's line size.
    """

    accepted: int = 0
    sent: int = 0
    pending: int = 0
    dropped: Mapping[str, int] = attrs.field(factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    retries: int = 0
    batches: int = 0
    bytes_sent: int = 0
    truncated: int = 0
    history_lines: int = 0
    history_evicted: int = 0
    uploaded: Optional[bool] = None
    closed: bool = False
    last_error: Optional[str] = None
    #: Another writer took this writer's stream on: it let go while others still used it, or
    #: a replacement took its hand-off.  The last one out uploads and reports ``uploaded``.
    handed_on: bool = False
    #: Other processes of the host wrote this stream too (docs/writer.md#processes-on-one-key):
    #: with ``handed_on``, another process stores the log; without it, this one did, with
    #: their lines.
    shared: bool = False
    #: How many other processes of the host this process knows wrote the stream with it:
    #: for an owner, those whose lines it took; for a member, the owners it handed lines to.
    shared_with: int = 0
    #: The stream was live with a writer this host cannot reach (another host or container):
    #: lines were streamed into it live, and the stored log is that writer's
    #: (docs/writer.md#a-writer-out-of-reach).
    joined: bool = False
    #: Set on the process that stored a stream others of the host wrote too: the whole
    #: stream's counts (``StreamTotals``).  None elsewhere.
    stream: Optional[StreamTotals] = None

    @property
    def sharing(self) -> str:
        """Who else wrote the stream, for the summaries (``shared``)."""
        others = (
            "other processes"
            if not self.shared_with
            else count_of(self.shared_with, "other process", "other processes")
        )
        return f"stream shared with {others} on this host"

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def summary(self) -> str:
        """One line for people: what was sent, what was dropped and why, what was cut."""
        text = f"{self.sent:,} of {self.accepted:,} lines sent"
        if self.dropped_total:
            text += f", {self.dropped_total:,} dropped ({drop_reasons(self.dropped)})"
        if self.pending:
            text += f", {self.pending:,} pending"
        if self.truncated:
            text += f", {self.truncated:,} truncated to the line size limit"
        if self.joined:
            text += f", {STORED_ELSEWHERE}"
        elif self.handed_on and self.shared:
            text += f", {self.sharing}; handed on"
        elif self.handed_on:
            text += ", stream handed on to another writer"
        elif self.uploaded is not None:
            text += ", log uploaded" if self.uploaded else ", upload FAILED"
            if self.shared:
                text += f" ({self.sharing})"
        if self.stream is not None:
            text += f"; {self.stream.text()}"
        if self.last_error:
            text += f"; last error: {self.last_error}"
        return text


class Counters:
    """A stream's mutable counts; guarded by its ``Ledger``'s lock."""

    __slots__ = (
        "accepted",
        "sent",
        "retries",
        "batches",
        "bytes_sent",
        "truncated",
        "history_evicted",
        "uploaded",
        "last_error",
        "dropped",
        "handed_on",
        "shared",
        "peers",
        "joined",
        "carried",
        "carried_pids",
        "baseline",
    )

    def __init__(self) -> None:
        self.accepted = self.sent = self.retries = self.batches = 0
        self.bytes_sent = self.truncated = self.history_evicted = 0
        self.uploaded: Optional[bool] = None
        self.last_error: Optional[str] = None
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.handed_on = self.shared = self.joined = False
        #: The other processes of the host known to write the stream (pids, as seen here).
        self.peers: set[int] = set()
        #: The stream's counts before this process owned it, and its processes then (``take_over``).
        self.carried = StreamTotals()
        self.carried_pids: frozenset[int] = frozenset()
        #: These counts when this process took the stream over: what it counted as a member
        #: is in an earlier owner's counts already (so in ``carried``).
        self.baseline: Optional[tuple[int, int, dict[str, int]]] = None

    def settled(self) -> int:
        return self.sent + sum(self.dropped.values())

    def take_over(self, carried: StreamTotals, pids: Iterable[int]) -> None:
        """This process owns the stream from now on, after others (``carried``, by ``pids``):
        its counts so far are a member's, but for the lines still waiting here."""
        self.carried, self.carried_pids = carried, frozenset(pids)
        pending = self.accepted - self.settled()
        self.baseline = (self.accepted - pending, self.sent, dict(self.dropped))

    def stream_pids(self) -> frozenset[int]:
        """Every process known to have written the stream, this one included."""
        return self.carried_pids | self.peers | {os.getpid()}

    def stream_totals(self) -> StreamTotals:
        """The whole stream's counts: those carried, and this process's since it owned it."""
        accepted, sent, dropped = self.accepted, self.sent, dict(self.dropped)
        if self.baseline is not None:
            base_accepted, base_sent, base_dropped = self.baseline
            accepted -= base_accepted
            sent -= base_sent
            dropped = {reason: count - base_dropped.get(reason, 0) for reason, count in dropped.items()}
        return self.carried.plus(accepted, sent, dropped, len(self.stream_pids()))

    def snapshot(self, *, history_lines: int, closed: bool, reentrant: int = 0) -> Stats:
        """The counts as ``Stats``, with ``reentrant`` lines (accepted and dropped) not yet
        in the counters."""
        dropped = dict(self.dropped)
        dropped["reentrant"] += reentrant
        return Stats(
            accepted=self.accepted + reentrant,
            sent=self.sent,
            pending=self.accepted - self.settled(),
            dropped=dropped,
            retries=self.retries,
            batches=self.batches,
            bytes_sent=self.bytes_sent,
            truncated=self.truncated,
            history_lines=history_lines,
            history_evicted=self.history_evicted,
            uploaded=self.uploaded,
            closed=closed,
            last_error=self.last_error,
            handed_on=self.handed_on,
            shared=self.shared,
            shared_with=len(self.peers),
            joined=self.joined,
            stream=self.stream_totals() if self.shared and self.uploaded is not None else None,
        )
