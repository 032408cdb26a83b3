"""The children's channel alone: lines and the gaps a full channel left, from raw bytes."""

from __future__ import annotations

import json

import pytest

from lelog._channel import Broken, Inbox, encode_datagram


def test_each_childs_skipped_sequence_numbers_are_the_gap_before_its_next_line() -> None:
    inbox = Inbox()
    batch = [
        encode_datagram(1, 100, 0, 1.0, "info", "a0", None),
        encode_datagram(1, 200, 0, 1.1, "info", "b0", {"k": "v"}),
        encode_datagram(1, 100, 3, 1.2, "info", "a3", None),  # 1 and 2 met a full channel
        encode_datagram(2, 100, 0, 1.3, "warn", "other stream", None),
        b"not ours",
    ]
    assert inbox.sort(batch) == {
        1: [(0, 1.0, "info", "a0", None), (0, 1.1, "info", "b0", {"k": "v"}), (2, 1.2, "info", "a3", None)],
        2: [(0, 1.3, "warn", "other stream", None)],
    }
    # The count goes on across batches; a repeated number is no gap.
    assert inbox.sort([encode_datagram(1, 100, 5, 2.0, "info", "a5", None)]) == {
        1: [(1, 2.0, "info", "a5", None)]
    }
    assert inbox.sort([encode_datagram(1, 100, 5, 2.0, "info", "again", None)])[1][0][0] == 0


def test_the_inbox_accounts_for_each_senders_lines_arrived_or_skipped() -> None:
    inbox = Inbox()
    inbox.sort(
        [
            encode_datagram(9, 100, 0, 1.0, "info", "a0", None),
            encode_datagram(9, 100, 4, 1.1, "info", "a4", None),
        ]
    )
    assert inbox.accounted() == {"100.9": 5}


def test_a_broken_connection_counts_as_lost_what_was_sent_past_what_the_owner_accounted_for() -> None:
    # 10 numbered: 3 and 4 were skipped (counted as dropped already), 7 a marker of an
    # earlier owner's loss (no line of the member's).
    broken = Broken("100.9", 10, ((3, 2), (7, 1)), ((7, 12, 55),), owner_pid=66)
    assert broken.lost(10) == 0
    assert broken.lost(0) == 7
    assert broken.lost(4) == 4  # 5, 6, 8 and 9
    assert broken.lost(8) == 2
    assert broken.unstored(7) == [(12, 55)] and broken.unstored(8) == []


@pytest.mark.parametrize(
    "line",
    [
        (1.5, "info", "plain\n", None),
        (1733450000.123456, "warn", 'quo"te \\ \t\u00e9\u4e2d \ud800 \x00', None),  # a lone surrogate too
        (1e-7, "info", "", None),
        (2.0, "info", "with args", {"k": "v", "n": 1}),
    ],
)
def test_a_message_is_the_compact_json_of_its_fields_and_reads_back_whole(line: tuple) -> None:
    ts, level, out, args = line
    data = encode_datagram(7, 4242, 3, ts, level, out, args)
    assert data == json.dumps([7, 4242, 3, ts, level, out, args], default=str, separators=(",", ":")).encode()
    sorted_ = Inbox().sort([data])
    assert sorted_[7][0][1:4] == (ts, level, out)
