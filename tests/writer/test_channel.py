"""The children's channel alone: lines and the gaps a full channel left, from raw bytes."""

from __future__ import annotations

from lelog._channel import Inbox, encode_datagram


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
