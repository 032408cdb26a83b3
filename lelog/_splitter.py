"""Whole lines out of arbitrarily split writes.

Masking and the service both work on lines, but ``write`` calls arrive in any pieces: a
multi-byte character, a ``\\r\\n`` or a secret may straddle two of them.  The splitter is pure
and deterministic: for any split of the same input, feeding the pieces and then calling
``finish()`` gives exactly the lines that feeding it whole does.
"""

from __future__ import annotations

import codecs
from typing import Union

__all__ = ["DEFAULT_MAX_PARTIAL", "LineSplitter"]

#: The longest partial line kept, in characters: the service's line limit (in bytes).
DEFAULT_MAX_PARTIAL = 71_680

Chunk = Union[str, bytes, bytearray, memoryview]

_new_decoder = codecs.getincrementaldecoder("utf-8")


class LineSplitter:
    """Turns io-style chunks (str or bytes, any split) into whole lines.

    Not thread-safe: the owner holds a lock.

    - Bytes are decoded as UTF-8 incrementally (invalid bytes become U+FFFD), so a character
      split across chunks survives.  A str chunk arriving while the decoder holds an incomplete
      sequence first flushes it (one U+FFFD).
    - ``\\r\\n`` becomes ``\\n``; a lone ``\\r`` is an ordinary character.  A ``\\r`` that ends a
      chunk is held back until the next character shows whether it starts a ``\\r\\n``.
    - The partial line is bounded: once it exceeds ``max_partial`` characters, its first
      ``max_partial`` are emitted as a line of their own *without* a ``\\n``.  The bound applies
      after ``\\r\\n`` folding and never counts the held-back ``\\r``, so a forced break never
      separates a ``\\r`` from its ``\\n`` and the result does not depend on the chunking.  The
      held ``\\r`` and undecodable trailing bytes are only settled by ``finish()``, so its line
      may exceed ``max_partial`` by up to two characters.
    """

    __slots__ = ("_max", "_decoder", "_partial", "_cr")

    def __init__(self, max_partial: int = DEFAULT_MAX_PARTIAL) -> None:
        if isinstance(max_partial, bool) or not isinstance(max_partial, int) or max_partial < 1:
            raise ValueError(f"max_partial must be a positive int, not {max_partial!r}")
        self._max = max_partial
        self._decoder = _new_decoder(errors="replace")
        self._partial = ""
        self._cr = False  # a "\r" ended the input so far; not yet in _partial

    @property
    def pending(self) -> int:
        """Characters currently buffered (the partial line and a held-back ``\\r``)."""
        return len(self._partial) + self._cr

    def feed(self, chunk: Chunk) -> list[str]:
        """Add a chunk; return the lines it completed, each ending in ``\\n`` unless forced."""
        if isinstance(chunk, str):
            text = chunk
            if self._decoder.getstate()[0]:
                text = self._decoder.decode(b"", True) + text  # final: leaves it empty
        else:
            text = self._decoder.decode(chunk)
        if self._cr:
            text = "\r" + text
            self._cr = False
        if not text:
            return []
        if text[-1] == "\r":
            self._cr = True
            text = text[:-1]
        if "\r\n" in text:
            text = text.replace("\r\n", "\n")
        return self._split(text)

    def finish(self) -> str | None:
        """Return the pending partial line (no ``\\n``), or ``None`` if empty; reset all state."""
        # The held "\r" came before any bytes still in the decoder.
        rest = self._partial + "\r" * self._cr + self._decoder.decode(b"", True)
        self._decoder.reset()
        self._partial = ""
        self._cr = False
        return rest or None

    def _split(self, text: str) -> list[str]:
        if "\n" not in text:
            lines, self._partial = self._break(self._partial + text)
            return lines
        parts = text.split("\n")
        tail = parts.pop()
        if self._partial:
            parts[0] = self._partial + parts[0]
        if len(self._partial) + len(text) <= self._max:  # the common case: nothing to break
            lines = [part + "\n" for part in parts]
        else:
            lines = []
            for part in parts:
                forced, part = self._break(part)
                lines.extend(forced)
                lines.append(part + "\n")
            forced, tail = self._break(tail)
            lines.extend(forced)
        self._partial = tail
        return lines

    def _break(self, text: str) -> tuple[list[str], str]:
        """Split ``max``-sized heads off a line without ``\\n`` while it exceeds ``max``."""
        size = self._max
        if len(text) <= size:
            return [], text
        count = (len(text) - 1) // size  # leaves 1..size characters
        return [text[i * size : (i + 1) * size] for i in range(count)], text[count * size :]
