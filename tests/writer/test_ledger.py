"""The ledger alone: states, counts and the pending lines' bounds, with no thread."""

from __future__ import annotations

from lelog._ledger import Ledger, WriterState


def line(text: str, ts: float = 1.0) -> tuple[float, str, str, None, None]:
    return (ts, "info", text, None, None)


def test_the_state_changes_only_from_the_states_allowed() -> None:
    ledger = Ledger(10, 1000)
    assert ledger.state is WriterState.IDLE and ledger.accepting
    assert not ledger.moved(WriterState.FINISHING, allowed=(WriterState.CLOSING,))
    assert ledger.moved(WriterState.RUNNING, allowed=(WriterState.IDLE,))
    assert ledger.moved(WriterState.CLOSING, allowed=(WriterState.IDLE, WriterState.RUNNING))
    assert not ledger.accepting
    # Two closers claim the final sequence: only the first move succeeds.
    assert ledger.moved(WriterState.FINISHING, allowed=(WriterState.CLOSING,))
    assert not ledger.moved(WriterState.FINISHING, allowed=(WriterState.CLOSING,))


def test_lines_beyond_a_bound_push_the_oldest_out_counted_and_remembered_for_a_marker() -> None:
    ledger = Ledger(3, 1000)
    waiting = [ledger.accept(line(f"l{i}"), 2, released=False) for i in range(5)]
    assert waiting == [1, 2, 3, 3, 3]
    taken = ledger.take()
    assert taken is not None
    items, children, gap, _ = taken
    assert [item[2] for item in items] == ["l2", "l3", "l4"] and not children and gap == 2
    stats = ledger.snapshot(history_lines=0)
    assert (stats.accepted, stats.dropped["overflow"], stats.pending) == (5, 2, 3)
    assert ledger.take() is None


def test_a_line_larger_than_the_byte_bound_is_counted_too_large() -> None:
    ledger = Ledger(10, 100)
    assert ledger.accept(line("x" * 200), 200, released=False) == 0
    assert ledger.snapshot(0).dropped["too_large"] == 1


def test_lines_after_close_or_from_a_writer_that_let_go_are_counted_after_close() -> None:
    ledger = Ledger(10, 1000)
    assert ledger.accept(line("a"), 1, released=True) == 0
    ledger.moved(WriterState.CLOSING, allowed=(WriterState.IDLE,))
    assert ledger.accept(line("b"), 1, released=False) == 0
    assert not ledger.admit(released=False)
    stats = ledger.snapshot(0)
    assert stats.accepted == 3 and stats.dropped["after_close"] == 3


def test_childrens_gaps_are_overflow_and_starting_lines_say_so() -> None:
    ledger = Ledger(10, 1000)
    assert ledger.accept_from_children([(0, 1.0, "info", "c0", None), (2, 2.0, "info", "c3", None)])
    taken = ledger.take()
    assert taken is not None
    _items, children, gap, _ = taken
    assert [item[2] for item in children] == ["c0", "c3"] and gap == 2
    stats = ledger.snapshot(0)
    assert stats.accepted == 4 and stats.dropped["overflow"] == 2


def test_no_count_changes_once_abandoned() -> None:
    ledger = Ledger(10, 1000)
    ledger.accept(line("a"), 1, released=False)
    ledger.moved(WriterState.ABANDONED, allowed=(WriterState.IDLE,))
    ledger.settle(1)
    ledger.settle_the_rest("retries_exhausted")
    stats = ledger.snapshot(0)
    assert stats.sent == 0 and stats.dropped_total == 0 and stats.pending == 1


def test_a_successful_call_ends_a_failed_flushs_claim_on_the_close_budget() -> None:
    from lelog._clock import Deadline

    ledger = Ledger(10, 1000)
    ledger.call_ended(ok=False)
    ledger.spent = Deadline(5.0, lambda: 0.0)
    assert ledger.failing
    ledger.call_ended(ok=True)
    assert not ledger.failing and ledger.spent is None and ledger.ok_calls == 1


def test_a_members_line_waits_behind_lines_that_wait_and_is_sent_at_once_otherwise() -> None:
    ledger = Ledger(10, 1000)
    assert ledger.admit(released=False, behind=line("first")) is True  # nothing waits: send it
    ledger.keep(line("kept"), 4)  # its connection was full: it waits
    assert ledger.admit(released=False, behind=line("next")) is False  # behind it, in order
    taken = ledger.take()
    assert taken is not None and [item[2] for item in taken[0]] == ["kept", "next"]
    ledger.keep_in_front([line("kept"), line("next")])  # full again: back in front, in order
    ledger.keep(line("later"), 5)
    taken = ledger.take()
    assert taken is not None and [item[2] for item in taken[0]] == ["kept", "next", "later"]
    assert ledger.snapshot(0).accepted == 2  # keep and keep_in_front count nothing twice


def test_room_for_other_processes_lines_is_what_their_buffer_takes_without_pushing_any_out() -> None:
    ledger = Ledger(3, 1000)
    assert ledger.room_for_others() == 3
    ledger.accept_from_children([(0, 1.0, "info", "a", None), (0, 2.0, "info", "b", None)])
    assert ledger.room_for_others() == 1
    ledger.take()
    assert ledger.room_for_others() == 3


def test_members_lines_are_taken_while_the_stream_closes_and_fork_childrens_are_not() -> None:
    ledger = Ledger(10, 1000)
    ledger.moved(WriterState.CLOSING, allowed=(WriterState.IDLE,))
    ledger.accept_from_children([(0, 1.0, "info", "child", None)])
    ledger.accept_from_children([(0, 2.0, "info", "member", None)], accounted={"7.1": 1})
    stats = ledger.snapshot(0)
    assert stats.accepted == 2 and stats.dropped["after_close"] == 1 and stats.pending == 1


def test_each_take_hands_the_members_counts_that_changed_with_the_lines_it_takes() -> None:
    ledger = Ledger(10, 1000)
    ledger.accept_from_children([(0, 1.0, "info", "a0", None)], accounted={"7.1": 1})
    ledger.accept_from_children([(2, 2.0, "info", "a3", None)], accounted={"7.1": 4})
    ledger.accept_from_children([(0, 3.0, "info", "b0", None)], accounted={"8.5": 1})
    waiting = ledger.take()
    assert waiting is not None and waiting.accounted == {"7.1": 4, "8.5": 1} and waiting.dropped == 2
    assert len(waiting.from_children) == 3
    ledger.accept_from_children([(0, 4.0, "info", "child", None)])  # a fork child's: no count
    waiting = ledger.take()
    assert waiting is not None and waiting.accounted == {}


def test_lines_lost_with_the_owner_are_dropped_no_longer_sent() -> None:
    ledger = Ledger(10, 1000)
    for _ in range(5):
        assert ledger.admit(False) is True
    ledger.settle(5)
    ledger.lost_with_owner(3)
    stats = ledger.snapshot(0)
    assert (stats.accepted, stats.sent, stats.dropped["lost_with_owner"], stats.pending) == (5, 2, 3, 0)
