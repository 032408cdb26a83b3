"""``Losses``: a member's lines lost with an owner that ended before storing them
(docs/writer.md#lines-lost-with-an-owner), from its broken connections and the counts the
owner's history holds, until a marker of each loss is in the log.

Pure: no I/O and no thread of its own.  Its one user, a ``Sharing``, calls it on the thread
that reaches the next owner or takes the stream over (under the sharing's hand-off lock, or
its role lock), and says where a marker goes (``mark``'s ``place``).
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import attrs

from ._channel import Broken
from ._hostwide import History

__all__ = ["Loss", "Losses"]


@attrs.frozen
class Loss:
    """Lines of this process an owner ended without storing."""

    lines: int
    #: The owner (0: not known).
    owner_pid: int

    def text(self) -> str:
        owner = f"process {self.owner_pid}" if self.owner_pid else "the process that owned the stream"
        return (
            f"{self.lines:,} lines lost: {owner} ended without storing them (lines of process {os.getpid()})"
        )


class Losses:
    """The losses whose marker no owner has taken yet, in the order they were found."""

    def __init__(self) -> None:
        self._unmarked: list[Loss] = []

    @property
    def pending(self) -> bool:
        return bool(self._unmarked)

    def count(self, broken: list[Broken], history: Optional[History]) -> int:
        """The lines of ``broken`` connections that ``history`` (the owner's, as it ended)
        does not account for; each connection's loss, and its markers the owner did not
        store, wait for a marker.  No history: the owner stored the log, having read every
        line, so nothing was lost."""
        lost_now = 0
        if history is None:
            return lost_now
        for connection in broken:
            accounted = history.members.get(connection.key, 0)
            self._unmarked.extend(Loss(lines, pid) for lines, pid in connection.unstored(accounted))
            lost = connection.lost(accounted)
            if lost > 0:
                lost_now += lost
                self._unmarked.append(Loss(lost, connection.owner_pid))
        return lost_now

    def mark(self, place: Callable[[Loss], bool]) -> None:
        """Put each waiting loss's marker in the stream, in order, by ``place`` (False: it
        could not; that one and the rest wait for the next owner)."""
        while self._unmarked and place(self._unmarked[0]):
            self._unmarked.pop(0)

    def take(self) -> list[Loss]:
        """The losses still unmarked (the member leaves: they are said instead)."""
        unmarked, self._unmarked = self._unmarked, []
        return unmarked
