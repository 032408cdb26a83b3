"""A member's losses with an owner that ended, alone: counted from broken connections and the
owner's history, marked in order, kept while no owner takes a marker."""

from __future__ import annotations

import os

from lelog._channel import Broken
from lelog._hostwide import History
from lelog._losses import Loss, Losses


def history(**members: int) -> History:
    return History([], 0, 0.0, {key.replace("_", "."): count for key, count in members.items()})


def test_what_the_owners_history_does_not_account_for_is_lost_and_waits_for_a_marker() -> None:
    losses = Losses()
    # 10 lines on "1.1", the history holds 6; on "1.2" a marker (seq 3) of an earlier loss
    # was sent and the history holds only 2 of its 5 numbers.
    broken = [
        Broken("1.1", 10, (), (), owner_pid=50),
        Broken("1.2", 5, ((3, 1),), ((3, 7, 40),), owner_pid=50),
    ]
    assert losses.count(broken, history(**{"1_1": 6, "1_2": 2})) == 4 + 2
    placed: list[Loss] = []
    losses.mark(lambda loss: placed.append(loss) is None)
    assert placed == [Loss(4, 50), Loss(7, 40), Loss(2, 50)] and not losses.pending
    assert (
        placed[0].text()
        == f"4 lines lost: process 50 ended without storing them (lines of process {os.getpid()})"
    )


def test_no_history_left_means_the_owner_stored_everything() -> None:
    losses = Losses()
    assert losses.count([Broken("1.1", 10, (), (), owner_pid=50)], None) == 0 and not losses.pending


def test_a_marker_no_owner_takes_waits_in_order_and_is_handed_back_when_the_member_leaves() -> None:
    losses = Losses()
    losses.count([Broken("1.1", 3, (), (), owner_pid=0), Broken("1.2", 2, (), (), owner_pid=9)], history())
    losses.mark(lambda loss: False)
    assert losses.pending
    assert Loss(3, 0).text().startswith("3 lines lost: the process that owned the stream ended")
    assert losses.take() == [Loss(3, 0), Loss(2, 9)] and not losses.pending
