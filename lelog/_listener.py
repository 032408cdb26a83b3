"""``Listener``: the socket an owning process listens on for the members of its stream
(docs/writer.md#processes-on-one-key).

Bound when the process comes to own the stream.  A Linux abstract name that a killed owner's
socket still holds (the kernel closes a dying process's descriptors one by one, the stream
lock's before its socket's, maybe) is tried again on the owner's rounds for ``BIND_FOR``
seconds; past that, or on any other failure, the stream is this process's alone until it
ends, said once.  Its state changes only here, on the thread that owns the stream's role
(``Sharing``'s role lock, or the owner's worker): no lock of its own.
"""

from __future__ import annotations

import enum
import errno
from typing import Protocol

from . import _channel
from ._claim import Claim
from ._clock import Clock, Deadline

__all__ = ["BIND_FOR", "Listener", "Listening"]

#: How long a new owner tries to bind a name a killed owner's socket still holds.
BIND_FOR = 2.0


class Listening(enum.Enum):
    """Whether an owner's socket is bound, for members to connect to."""

    NOT_YET = "not yet"
    #: The name is still another's: the owner's rounds try again (``Listener.retry``).
    RETRYING = "retrying"
    BOUND = "bound"
    #: It cannot be (said once): the stream is this process's alone until it ends.
    FAILED = "failed"


class ListenedStream(_channel.Receiver, Protocol):
    """What a ``Listener`` uses of its stream (the engine)."""

    key: str
    clock: Clock
    claim: Claim

    def warn(self, kind: str, message: str) -> None: ...


class Listener:
    """One stream's owner socket in this process (see the module docstring)."""

    def __init__(self, stream: ListenedStream) -> None:
        self._stream = stream
        self.state = Listening.NOT_YET
        self._since = 0.0  # when the name was first found taken

    def listen(self) -> None:
        """Bind, once this process owns the stream (a second call does nothing)."""
        if self.state is Listening.NOT_YET:
            self._bind()

    def retry(self) -> None:
        """On an owner's round: bind again while the name is still taken."""
        if self.state is Listening.RETRYING:
            self._bind()

    @property
    def binding(self) -> bool:
        """Still to be bound (the owner's rounds try again)."""
        return self.state is Listening.RETRYING

    def stop(self, deadline: Deadline) -> None:
        """The owner's final sequence begins: what members sent so far is delivered; later
        lines find nobody and wait for whoever takes the stream on."""
        meeting = self._stream.claim.meeting
        if self.state is Listening.BOUND and meeting is not None:
            _channel.stop_listening(self._stream, meeting.address, deadline.remaining() / 5)

    def _bind(self) -> None:
        stream, meeting = self._stream, self._stream.claim.meeting
        if meeting is None:
            return
        try:
            _channel.listen(stream, meeting.address)
        except OSError as exc:
            now = stream.clock.monotonic()
            if exc.errno == errno.EADDRINUSE and self.state is Listening.NOT_YET:
                self.state, self._since = Listening.RETRYING, now
                return
            if exc.errno == errno.EADDRINUSE and now - self._since < BIND_FOR:
                return
            failure: Exception = exc
        except RuntimeError as exc:
            failure = exc
        else:
            self.state = Listening.BOUND
            return
        self.state = Listening.FAILED
        stream.warn("listen", f"stream {stream.key!r}: other processes cannot reach this one ({failure})")
