"""The stream registry alone, with stand-in engines: sharing, letting go, hand-offs."""

from __future__ import annotations

from typing import Optional

import attrs
import pytest

from lelog._registry import Outcome, StreamRegistry

SETTINGS = (("history_bytes", 100), ("spool_dir", None))


@attrs.define(eq=False)
class Engine:
    accepting: bool = True
    elsewhere: bool = False
    predecessor: Optional["Engine"] = None


def build(predecessor: Optional[Engine]) -> Engine:
    return Engine(predecessor=predecessor)


def test_writers_on_one_identity_share_one_engine_and_the_last_one_out_finishes() -> None:
    registry: StreamRegistry[Engine] = StreamRegistry()
    first, one, _ = registry.share("id", SETTINGS, build)
    second, two, _ = registry.share("id", SETTINGS, build)
    assert first is second and one is not None and two is not None
    assert registry.leave("id", first, one, handoff=False) is Outcome.SHARED and one.handed_on
    assert registry.leave("id", first, two, handoff=False) is Outcome.LAST and not two.handed_on


def test_other_settings_are_refused_naming_both_values_and_change_nothing() -> None:
    registry: StreamRegistry[Engine] = StreamRegistry()
    engine, first, _ = registry.share("id", SETTINGS, build)
    _, membership, conflicts = registry.share("id", (("history_bytes", 7), ("spool_dir", None)), build)
    assert membership is None and conflicts == ["history_bytes=7 (the first writer has 100)"]
    # A later writer without a spool asks for nothing; one that asks for a spool the stream
    # does not have is refused.
    assert registry.share("id", SETTINGS, build)[1] is not None
    _, refused, conflicts = registry.share("id", (("history_bytes", 100), ("spool_dir", "/s")), build)
    assert refused is None and conflicts == ["spool_dir='/s' (the first writer has None)"]
    assert first is not None and registry.leave("id", engine, first, handoff=False) is Outcome.SHARED


def test_a_hand_off_is_taken_by_a_successor_or_expires() -> None:
    registry: StreamRegistry[Engine] = StreamRegistry()
    engine, old, _ = registry.share("id", SETTINGS, build)
    assert old is not None
    assert registry.leave("id", engine, old, handoff=True) is Outcome.HANDOFF
    assert registry.handoff_pending("id", engine)
    successor, new, _ = registry.share("id", SETTINGS, build)
    assert successor is engine and old.handed_on and not registry.handoff_pending("id", engine)
    assert new is not None and registry.leave("id", engine, new, handoff=True) is Outcome.HANDOFF
    assert registry.expire_handoff("id", engine) and not new.handed_on
    assert not registry.expire_handoff("id", engine)


def test_a_replacement_with_other_settings_takes_a_pending_hand_off_with_the_streams() -> None:
    registry: StreamRegistry[Engine] = StreamRegistry()
    engine, old, _ = registry.share("id", SETTINGS, build)
    assert old is not None and registry.leave("id", engine, old, handoff=True) is Outcome.HANDOFF
    # A spool the stream does not have cannot be kept: refused, and the hand-off still waits.
    _, refused, _ = registry.share("id", (("history_bytes", 7), ("spool_dir", "/s")), build)
    assert refused is None and registry.handoff_pending("id", engine) and not old.handed_on
    successor, new, conflicts = registry.share("id", (("history_bytes", 7), ("spool_dir", None)), build)
    assert successor is engine and new is not None and old.handed_on
    assert conflicts == ["history_bytes=7 (the first writer has 100)"]  # kept: the caller says so
    assert registry.leave("id", engine, new, handoff=False) is Outcome.LAST


def test_a_finishing_engine_is_the_next_ones_predecessor_until_forgotten() -> None:
    registry: StreamRegistry[Engine] = StreamRegistry()
    old, membership, _ = registry.share("id", SETTINGS, build)
    assert membership is not None and registry.leave("id", old, membership, handoff=False) is Outcome.LAST
    old.accepting = False  # finishing
    new, _, _ = registry.share("id", SETTINGS, build)
    assert new is not old and new.predecessor is old
    assert registry.forget("id", old) is new  # the successor, for the spawn beacon
    assert registry.forget("id", new) is None
    fresh, _, _ = registry.share("id", SETTINGS, build)
    assert fresh is not new and fresh.predecessor is None  # nothing left to wait for


@pytest.mark.parametrize("elsewhere", [True, False])
def test_a_fork_childs_stream_stays_for_a_later_writer_of_the_child(elsewhere: bool) -> None:
    registry: StreamRegistry[Engine] = StreamRegistry()
    engine, membership, _ = registry.share("id", SETTINGS, lambda p: Engine(elsewhere=elsewhere))
    assert membership is not None
    outcome = registry.leave("id", engine, membership, handoff=False)
    assert outcome is (Outcome.ELSEWHERE if elsewhere else Outcome.LAST)
    again, _, _ = registry.share("id", SETTINGS, build)
    assert (again is engine) is elsewhere
