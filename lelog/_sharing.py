"""``Sharing``: this process's part in a stream the host's processes share
(docs/writer.md#processes-on-one-key).

The process that holds the stream lock owns the stream (``Role.OWN``): it opens, numbers,
pushes and stores it, keeps its history in a file for a successor, and listens for the
others.  Every other process on the key is a member (``Role.MEMBER``): each line goes to the
owner as it is written, over the member's own connection.  A member whose owner has left
(``Role.WAITING``) keeps its lines until it reaches the next owner or takes the stream over
itself, continuing the history and ``pos`` the owner left, without opening the stream again.
The last process out stores and closes the stream (``Claim.last_out``).

A ``Sharing`` acts on its stream's parts through ``SharedStream`` (the engine), and the role
changes only in ``_become``, under ``_role_lock``: a leaf held for a few local file and
socket calls (the stream lock, the history file, binding a socket), never across a request
or another lelog lock but the pipeline's encode lock and the ledger's, which it takes in
their order (docs/writer.md#locks).
"""

from __future__ import annotations

import enum
import json
import threading
import time
from typing import Collection, Mapping, Optional, Protocol, Union

from ._buffers import item_size
from ._channel import REFUSAL, Broken, ChildLine, MemberLink, Refusal, Sent
from ._claim import Claim, Hold
from ._clock import Clock, Deadline
from ._delivery import Delivery, count_joined
from ._encode import Item, ready
from ._hostwide import Carried, History, Identity, parent_run, parse_rows, this_run
from ._ledger import Ledger
from ._line import ndjson, truncate_out
from ._listener import Listener
from ._losses import Loss, Losses
from ._options import WriterOptions
from ._pipeline import MARKER_PREFIX, Pipeline
from ._stats import Counters, StreamTotals
from ._streamlock import Holder

__all__ = ["WAITING_POLL", "Role", "SharedStream", "Sharing", "count_shared"]

#: How often a member whose owner left tries to reach the next owner or take the stream over.
WAITING_POLL = 0.02
#: How often a member whose connection is full tries again (the owner reads in batches).
_FULL_POLL = 0.005
#: How long a member waits for an owner before it says so.
_STUCK_AFTER = 2.0


class Role(enum.Enum):
    """What this process does for the stream on the host."""

    #: Opens, pushes, numbers and stores the stream (it holds the stream lock, or no lock
    #: applies: a test double's stream is this process's alone).  The role before a start.
    OWN = "own"
    #: Hands each line to the process that owns the stream, over its connection.
    MEMBER = "member"
    #: A member whose owner left: its lines wait in its ledger until it reaches the next
    #: owner or takes the stream over (its worker tries both).
    WAITING = "waiting"
    #: The process that holds the stream has other credentials: lines are counted as
    #: rejected, and this process neither joins nor opens the stream.
    REFUSED = "refused"


class SharedStream(Protocol):
    """What a ``Sharing`` uses of its stream (the engine)."""

    key: str
    options: WriterOptions
    clock: Clock
    claim: Claim
    ledger: Ledger
    pipeline: Pipeline
    delivery: Delivery

    def warn(self, kind: str, message: str) -> None: ...

    def wake(self) -> None: ...

    def start_worker(self) -> None:
        """Start the worker, if the stream has none and may have one."""

    def route(self, outlet: Optional[Union[MemberLink, Refusal]]) -> None:
        """Send each line through ``outlet`` (a member's link, or a refusal), or keep it
        here (None)."""

    def accept_from_children(
        self,
        lines: list[ChildLine],
        *,
        members: Optional[Mapping[str, int]] = None,
        senders: Collection[int] = (),
    ) -> None: ...

    def room_for_members(self) -> int: ...


class Sharing:
    """The role of one stream in this process, and the moves between roles."""

    def __init__(self, stream: SharedStream) -> None:
        self._stream = stream
        self.role = Role.OWN
        self._role_lock = threading.Lock()
        self._link: Optional[MemberLink] = None
        self._listener = Listener(stream)  # an owner's socket for members (anew after a fork)
        self._hand_lock = threading.Lock()  # see hand_on_kept
        #: Another process of the host stores the stream: this one did not upload or close it.
        self.handed_on = False
        self._waiting_since: Optional[float] = None  # for _warn_if_stuck, on the worker
        #: The history of a run on this key that ended by a kill (nobody waits on it): its
        #: stream is stored and closed before this one opens it again (``store_leftover``).
        self._leftover: Optional[tuple[History, str]] = None
        self._arrived = time.time()  # when this writer came to the stream (``arrive``)
        #: A run of this process's parent stored the key's log moments ago (a recycled worker,
        #: a loop's next command, a fork child that outlived its parent's stream): this
        #: writer continues it (``continue_run``), with the counts and owners it carried.
        self._continuation: Optional[Carried] = None
        self._history_failed = False  # said so (owner_round)
        #: A fork child of an owner whose parent's stream ended before it logged on: it
        #: continues the log its parent (as it was at the fork) owned, however long ago.
        self._outlived = False
        self._fork_parent: Optional[Identity] = None
        #: The processes that owned the stream before this one (``Carried.owners``).
        self._owners: tuple[Identity, ...] = ()
        #: This host has a trace of the stream (see ``unseen_since``).
        self._traced = False
        #: Lines lost with an owner whose marker no owner took yet.
        self._losses = Losses()

    def arrive(self) -> None:
        """At construction: this process is here for the stream, before its first line, so
        an owner that leaves hands the stream on instead of storing it (a worker whose
        handler is built but has not logged yet is one of the run)."""
        self._arrived = time.time()
        self._stream.claim.join()

    def _become(self, role: Role) -> None:
        """The one place the role changes (``_role_lock`` held): a member's lines go out
        through its link, anyone else's into this process's ledger."""
        self.role = role
        if role is Role.REFUSED:
            self._stream.route(REFUSAL)
        else:
            self._stream.route(self._link if role is Role.MEMBER else None)

    # -- taking part -----------------------------------------------------------------------------

    def take_part(self) -> None:
        """At the start: own the stream (the stream lock is this process's) or join the
        process that does.  On the thread that starts the stream, before the worker exists.
        ``Hold.HERE`` (a predecessor of this process still has the lock): the worker asks
        again before it opens (``own_late``)."""
        claim = self._stream.claim
        hold = claim.hold_stream()
        meeting = claim.meeting
        self._traced = hold is Hold.HERE  # a predecessor in this process: its stream
        if hold is Hold.HELD:
            with self._role_lock:
                self._as_owner(listen=True, member=False)
        elif hold is Hold.OTHER and meeting is not None and claim.join():
            with self._role_lock:
                self._link = MemberLink(meeting.address, claim.owned_by)
                self._become(Role.MEMBER)
            self._stream.ledger.count(count_shared)
            self.hand_on_kept()  # the line that started the stream, and any beside it
        elif hold is Hold.REFUSED:
            claim.leave()
            with self._role_lock:
                self._become(Role.REFUSED)
            waiting = self._stream.ledger.take()  # the line that started the stream
            if waiting is not None:
                self._stream.ledger.settle(len(waiting[0]) + len(waiting[1]), drop=REFUSAL.drop_reason)

    def own_late(self) -> None:
        """Before the first open, when ``take_part`` could not take the lock: taken now, the
        stream is this process's (a member would have joined before its first line)."""
        if self._stream.claim.hold_stream() is Hold.HELD and self._stream.pipeline.history_file is None:
            with self._role_lock:
                self._as_owner(listen=True, member=False)

    def _as_owner(self, *, listen: bool, member: bool = True) -> bool:
        """Own the stream (``_role_lock`` held, stream lock taken): continue the history a
        previous owner of the host left (then without opening), keep a history file for the
        next, and listen for members.  True when it continues a previous owner's stream.

        A member continues it; so does a new writer that finds members of it waiting.  A
        history nobody waits for is a run that ended by a kill: the new writer stores and
        closes that run's stream as its owner would have, before it opens its own, a new log
        as a re-run's always is (``store_leftover``)."""
        stream, claim = self._stream, self._stream.claim
        pipeline = stream.pipeline
        history = claim.history_left()
        continues = history is not None and (member or self._continues(history))
        if history is not None and history.joined and not continues:
            history = None  # a killed joiner's: the stream is a writer's elsewhere, to look at afresh
        self._traced = self._traced or history is not None
        resumed = history is not None and continues and pipeline.next_pos == 0
        if history is not None and resumed:
            crashed = claim.crashed_holder
            note = None
            if crashed is not None:
                note = (
                    f"the process that wrote this stream ({crashed.describe()}) ended without "
                    "handing it over; lines it had not stored yet are lost"
                )
            pipeline.resume(history.rows, history.next_pos, note)
            stream.delivery.resume(joined=history.joined)
            stream.ledger.count(count_shared)
        elif history is not None and not continues and pipeline.next_pos == 0:
            crashed = claim.crashed_holder
            who = "" if crashed is None else f" ({crashed.describe()})"
            self._leftover = (history, who)
        elif history is None:  # a run of this parent may have just stored it (members too)
            self._continuation = claim.run_continues(
                fork_parent=self._fork_parent if self._outlived else None
            )
            self._traced = self._traced or self._continuation is not None
        members = history.members if history is not None and resumed else None
        with pipeline.encode_lock:
            pipeline.history_file = claim.keep_history(
                pipeline.history.rows(), stream.options.history_bytes, members
            )
            if pipeline.history_file is not None and stream.delivery.joined:
                pipeline.history_file.mark_joined()
            elif pipeline.history_file is not None:
                pipeline.history_file.forget_joined()
        claim.leave()  # an owner is no member: it asks about the others (Claim.last_out)
        broken: list[Broken] = []
        if self._link is not None:  # a member that took over: its connection is done with
            self._link.check_owner()  # broken: the owner it reached no longer holds the stream
            broken = self._link.take_broken()
            self._link.close()
            self._count_owners(self._link)
        if listen:
            self._listener.listen()
        self._become(Role.OWN)
        lost = self._count_lost(broken, history)
        if history is not None and resumed:  # after the losses: they were counted as a member's
            self._take_counts_over(history, claim.crashed_holder, lost)
        return resumed

    def _take_counts_over(self, history: History, crashed: Optional[Holder], lost: int) -> None:
        """The stream's counts so far (docs/writer.md#whole-stream-counts): as the last owner
        that handed it on left them, with rows stored since by an owner that did not and the
        lines this process lost with it; kept in this owner's history file for the next."""
        carried = history.carried or Carried(StreamTotals(), frozenset(), 0)
        seen = None if crashed is None else crashed.local_pid
        more = frozenset() if seen is None else frozenset({seen})
        self._carry(carried.through(history.next_pos, more, lost))

    def _carry(self, carried: Carried) -> None:
        """Own the stream after the owners ``carried`` names, with their counts."""
        stream = self._stream
        self._owners = carried.owners
        stream.ledger.take_over(carried.totals, carried.pids)
        self._keep_counts(carried)  # for a successor, should this process vanish

    def carried(self) -> Carried:
        """The stream's counts, its processes and owners, this one included: for the next
        owner (``last_out``), or the next run (``Claim.let_go``)."""
        stream = self._stream
        with stream.ledger.lock:
            counters = stream.ledger.counters
            totals, pids = counters.stream_totals(), counters.stream_pids()
        return Carried(totals, pids, stream.pipeline.next_pos, (*self._owners, this_run()))

    def _keep_counts(self, carried: Carried) -> None:
        """``carried`` in the history file, for the next owner (under the encoder's lock:
        the history file's writers hold it)."""
        pipeline = self._stream.pipeline
        with pipeline.encode_lock:
            history_file = pipeline.history_file
            if history_file is not None:
                history_file.hand_on(carried)

    @property
    def binding(self) -> bool:
        """The owner's socket is still to be bound (``owner_round`` tries again)."""
        return self._listener.binding

    def owner_round(self) -> None:
        """On an owner's worker, each round: bind the socket if its name was taken, and say
        once when the history file could not be written (a full disk: a successor would open
        the stream afresh)."""
        self._listener.retry()
        history_file = self._stream.pipeline.history_file
        if history_file is not None and history_file.failed is not None and not self._history_failed:
            self._history_failed = True
            self._stream.warn(
                "history",
                f"stream {self._stream.key!r}: its history file cannot be written ({history_file.failed}); "
                "if this process ends before the others on the key, the stream starts afresh",
            )

    def _continues(self, history: History) -> bool:
        """Whether a history found by a writer that was not a member is its run's: handed
        over by an owner that let go (a killed owner's lock file names it), or other
        processes wait on it, or it was written since this writer arrived."""
        claim = self._stream.claim
        return claim.crashed_holder is None or claim.others_waiting() or history.written >= self._arrived

    def inherit(self) -> bool:
        """At the close of a writer that never started: True when it is the last process
        of a stream another handed on (it then owns it, to store and close it)."""
        claim = self._stream.claim
        claim.leave()  # before the lock, and others asked before it is taken: see Claim.last_out
        if claim.others_waiting() or not claim.take_over():
            return False
        history = claim.history_left()
        if history is None or not self._continues(history):
            claim.release()
            return False
        with self._role_lock:
            self._as_owner(listen=False)
        return True

    @property
    def continuation(self) -> bool:
        """A log to read back and continue before the first line is encoded."""
        return self._continuation is not None

    def continue_run(self, deadline: Deadline) -> None:
        """On the worker, before its first round: the log a run of this process's parent
        stored moments ago is read back (one download) and continued, ``pos`` and all; the
        stream itself was closed, so it is opened again."""
        carried, self._continuation = self._continuation, None
        if carried is None:
            return
        stream = self._stream
        body = stream.delivery.stored_log(deadline)
        rows = [row for row in (body or b"").split(b"\n") if row]
        history = parse_rows(rows)
        if history is not None and stream.pipeline.next_pos == 0:
            stream.pipeline.resume(history.rows, history.next_pos, None)
            stream.ledger.count(count_shared)
            self._carry(carried.through(history.next_pos, frozenset()))

    def store_leftover(self, deadline: Deadline) -> None:
        """Before the first open: a killed run's stream, found in its history file, is
        stored from that history and closed, once, with a marker saying so (on the thread
        running rounds, within ``deadline``)."""
        leftover, self._leftover = self._leftover, None
        if leftover is None:
            return
        (history, who), stream = leftover, self._stream
        note = (
            f"the run that wrote this stream{who} ended without closing it; this log is what it "
            "had stored, and a new run on this key has started"
        )
        # At the killed run's last line's time: the log is that run's (``lelog recover``
        # compares stored logs by time).
        rows = [*history.rows, stream.pipeline.marker(note, history.next_pos, _time_of(history.rows[-1]))]
        if not stream.delivery.store_leftover(ndjson(rows), deadline):
            stream.warn("leftover", f"stream {stream.key!r}: a killed run's log could not be stored")

    # -- a member whose owner left ---------------------------------------------------------------

    def line_waits(self, item: Item, *, gone: bool) -> None:
        """A member's line found its connection full, or no owner (``gone``): it waits
        here, and so do the lines after it (``Role.WAITING``), until the owner reads or this
        process takes the stream over: at once if it can, else its worker keeps trying
        (``waiting_round``)."""
        self._stream.ledger.keep(item, item_size(item[2], item[3]))
        with self._role_lock:
            if self.role is Role.MEMBER:
                self._become(Role.WAITING)
        if gone:
            self._reach_owner()
        if self.role is Role.WAITING:
            self._stream.start_worker()
            self._stream.wake()

    def waiting_round(self) -> float:
        """A round of a member's worker: seconds until the next (0 once it owns the stream)."""
        if self.role is Role.MEMBER:
            self.hand_on_kept()  # a line that came in as it stopped waiting
        if not self._reach_owner():
            link = self._link
            if link is not None and link.connected:
                return _FULL_POLL  # the owner reads: room comes soon
            self._warn_if_stuck()
            return WAITING_POLL
        return 0.0 if self.owns else 1.0  # an owner now: rounds at once; a member idles

    @property
    def link(self) -> Optional[MemberLink]:
        """A member's connection to the owner."""
        return self._link

    @property
    def owns(self) -> bool:
        return self.role is Role.OWN

    @property
    def needs_worker(self) -> bool:
        """An owner's worker does its rounds; a waiting member's tries to reach an owner."""
        return self.role is Role.OWN or self.role is Role.WAITING

    def _reach_owner(self) -> bool:
        """A waiting member: hand what it kept to the owner, or take the stream over, or
        reach the next owner.  True when it is no longer waiting."""
        if self.role is not Role.WAITING:
            return True
        link = self._link
        if link is not None and link.connected:
            self.hand_on_kept()
            if self.role is not Role.WAITING or link.connected:
                return self.role is not Role.WAITING
        stream = self._stream
        if stream.claim.take_over():
            with self._role_lock:
                if self.role is Role.WAITING:
                    self._as_owner(listen=True)
            stream.start_worker()
            stream.wake()
            return True
        if link is not None and link.connect():
            self.hand_on_kept()
            return self.role is not Role.WAITING
        return False

    def _warn_if_stuck(self) -> None:
        """Once, when a member has waited a while: the holder takes no lines (``lelog
        recover`` finishing an old run, or a process that is not a writer)."""
        now = self._stream.clock.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        elif now - self._waiting_since >= _STUCK_AFTER:
            self._waiting_since = float("inf")  # said once
            self._stream.warn(
                "waiting",
                f"stream {self._stream.key!r} is held by another process on this host that takes "
                "no lines (lelog recover, or a process that is not a writer); lines wait here, up "
                "to max_pending_lines, until it lets go of the stream",
            )

    def hand_on_kept(self) -> None:
        """A member, or a member whose lines wait: what its ledger holds (kept while the
        connection was full or had no owner, or from its own fork children) goes to the
        owner, in order; then new lines go straight to it again.  ``_hand_lock`` keeps two
        threads (the worker, the channel's reader, a caller) from sending at once."""
        link = self._link
        if link is None or self.role not in (Role.MEMBER, Role.WAITING):
            return
        ledger = self._stream.ledger
        with self._hand_lock:
            if (link.has_broken or self._losses.pending) and link.connect():  # the first the new owner hears
                self._count_lost(link.take_broken(), self._stream.claim.history_left())
            if self.role is Role.MEMBER and len(ledger.pending):
                with self._role_lock:  # new lines queue behind these while they go
                    if self.role is Role.MEMBER:
                        self._become(Role.WAITING)
            while True:
                waiting = ledger.take()
                if waiting is None:
                    if link.connected:
                        with self._role_lock:
                            if self.role is Role.WAITING:
                                self._become(Role.MEMBER)
                    return
                items, from_children, dropped, _ = waiting  # a member's ledger has no members' counts
                if dropped:
                    link.skip(dropped)  # counted here as they went; marked by the owner
                kept = [*items, *from_children]
                sent = self._send_kept(link, kept)
                if sent < len(kept):
                    return

    def _count_lost(self, broken: list[Broken], history: Optional[History]) -> int:
        """A member whose owner left, now owner or reaching the next: the lines it sent that
        the owner's ``history`` does not account for were lost with the owner.  They are
        counted as dropped, no longer as sent, and marked in the log where the owner's part
        ends (``Losses``).  How many."""
        lost = self._losses.count(broken, history)
        if lost:
            self._stream.ledger.lost_with_owner(lost)
        self._losses.mark(self._place_marker)
        return lost

    def _place_marker(self, loss: Loss) -> bool:
        """A loss's marker: this process's next line when it owns the stream, else the first
        thing it sends the new owner; False when no owner took it."""
        stream = self._stream
        if self.role is Role.OWN:
            stream.pipeline.mark(loss.text())
            return True
        link, out = self._link, MARKER_PREFIX + loss.text() + "\n"
        return link is not None and (
            link.send_marker(stream.clock.time(), out, loss.lines, loss.owner_pid) is Sent.SENT
        )

    def _send_kept(self, link: MemberLink, kept: list[Item]) -> int:
        """Send ``kept`` in order; how many went (the rest wait here again, in front)."""
        ledger = self._stream.ledger
        done = dropped = 0
        for item in kept:
            level, out, args = ready(item)
            out, _ = truncate_out(out)
            sent = link.send(item[0], level, out, args)
            if sent is Sent.FULL or sent is Sent.GONE:
                break
            done += 1
            dropped += sent is Sent.DROPPED
        if done - dropped:
            ledger.settle(done - dropped)
        if dropped:
            ledger.settle(dropped, drop=link.drop_reason)
        if done < len(kept):
            with self._role_lock:  # first: a new line then queues behind these
                if self.role is Role.MEMBER:
                    self._become(Role.WAITING)
            ledger.keep_in_front(kept[done:])
            self._stream.start_worker()  # it keeps trying (a no-op before the start)
        return done

    # -- leaving ---------------------------------------------------------------------------------

    def settle(self, deadline: Deadline) -> None:
        """At the close, before the final sequence: a waiting member reaches the next owner
        or takes over, within ``deadline``; a member then leaves, and finishes the stream
        itself when it finds it was the last process on it (it takes the lock)."""
        stream = self._stream
        self.hand_on_kept()  # a member's last lines, if any wait here
        while self.role is Role.WAITING and not deadline.expired():
            if not self._reach_owner():
                stream.clock.sleep(min(WAITING_POLL, max(deadline.remaining(), 0.0)))
        if self.role is Role.REFUSED:
            return
        if self.role is not Role.OWN:
            stream.claim.leave()  # before the lock: see Claim.last_out
            if self.role is Role.MEMBER and stream.claim.take_over():
                with self._role_lock:
                    resumed = self._as_owner(listen=False)
                if not resumed and not self._continuation and not stream.ledger.unsettled():
                    self._hand_on()  # the stream was stored and closed: nothing to open
            else:
                self._hand_on()
                if stream.claim.owner_joined():  # its lines went to a writer's stream elsewhere
                    stream.ledger.count(count_joined)
        self._close_link()

    def _close_link(self) -> None:
        """A member leaves: lines it sent to an owner that then vanished are counted (its
        connection may have broken with no send since), then the connection closes."""
        link = self._link
        if link is not None:
            link.check_owner()
            broken = link.take_broken()
            if broken:
                self._count_lost(broken, self._stream.claim.history_left())
            for loss in self._losses.take():  # no owner took their markers: said instead
                self._stream.warn("lost", f"stream {self._stream.key!r}: {loss.text()}")
            self._link = None
            link.close()
            self._count_owners(link)

    def _count_owners(self, link: MemberLink) -> None:
        owners = set(link.owners)
        self._stream.ledger.count(lambda counters: counters.peers.update(owners))

    def stop_listening(self, deadline: Deadline) -> None:
        """The owner's final sequence begins: what members sent so far is delivered; later
        lines find nobody and wait for whoever takes the stream on."""
        self._listener.stop(deadline)

    def last_out(self) -> bool:
        """The owner's final push is done: True to store and close, False when the stream
        is handed on to another process."""
        if self._stream.pipeline.history_file is not None:
            self._keep_counts(self.carried())  # the ledger's lock, then the encoder's, in turn
        if self._stream.claim.last_out():
            return True
        self._hand_on()
        return False

    def unseen_since(self) -> Optional[float]:
        """When this writer came to the stream, if the opener is to look at what a live one
        is first (``Delivery``, ``_look``): it owns the stream by the host-wide lock, and
        this host has no trace of it (no history, a killed run's leftover, a run's stored
        log to continue, a predecessor in this process), so a live stream is a writer's this
        host cannot reach, or a run's that ended elsewhere.  None otherwise."""
        if self.role is Role.OWN and not self._traced and self._stream.claim.meeting is not None:
            return self._arrived
        return None

    def joined(self) -> None:
        """The opener joined a writer's stream elsewhere: a successor on this host joins it
        too, instead of storing and closing it (the history file says so), and ``lelog
        recover`` leaves the spool's lines alone (they are not this host's to store)."""
        stream = self._stream
        with stream.pipeline.encode_lock:  # the history file's writers hold it
            history_file = stream.pipeline.history_file
            if history_file is not None:
                history_file.mark_joined()
        spool = stream.claim.spool
        if spool is not None:
            spool.mark_joined()

    def _hand_on(self) -> None:
        self.handed_on = True
        self._stream.ledger.count(_count_handed_on)

    def outlive_parent(self) -> None:
        """This fork child logs on after its parent's stream ended (``Engine``): a process
        of its own on the key from now on, which continues its parent's log."""
        self._outlived = True

    def after_fork_in_child(self) -> bool:
        """In a fork child: True when the parent was a member (the child then starts as a
        process of its own, undecided), False when the stream is the parent's."""
        member = self.role is not Role.OWN
        self.role = Role.OWN
        self._role_lock = threading.Lock()  # a parent thread may have held it at the fork
        self._hand_lock = threading.Lock()
        self._listener = Listener(self._stream)
        self.handed_on = False
        self._outlived = False
        self._fork_parent = tuple(parent_run())  # as it is now: it may be gone when asked
        self._owners = ()
        self._waiting_since = None
        self._losses = Losses()  # the parent's to mark
        if self._link is not None:
            self._link.forget_in_child()
            self._link = None
        return member


def _time_of(row: bytes) -> Optional[str]:
    try:
        found = json.loads(row)["time"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return found if isinstance(found, str) else None


def count_shared(counters: Counters) -> None:
    """Lines of other processes of the host are in this stream."""
    counters.shared = True


def _count_handed_on(counters: Counters) -> None:
    counters.handed_on = counters.shared = True
