"""Whole lines out of arbitrarily split writes.

Masking and the service both work on lines, but ``write`` calls arrive in any pieces: a
multi-byte character, a ``\\r\\n`` or a secret may straddle two of them.  The splitter is pure
and deterministic: for any split of the same input, feeding the pieces and then calling
``finish()`` gives exactly the lines that feeding it whole does.
"""

from __future__ import annotations

import codecs
from typing import Iterable, Optional, Union

__all__ = ["DEFAULT_MAX_PARTIAL", "LineSplitter"]

#: The longest line, in UTF-8 bytes with its newline: the service's line limit.
DEFAULT_MAX_PARTIAL = 71_680

Chunk = Union[str, bytes, bytearray, memoryview]

_new_decoder = codecs.getincrementaldecoder("utf-8")


def _utf8_len(text: str) -> int:
    # surrogatepass: a lone surrogate from a str chunk counts as the 3 bytes it may become.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _is_continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


class LineSplitter:
    """Turns io-style chunks (str or bytes, any split) into whole lines of bounded size.

    Not thread-safe: the owner holds a lock.

    - Bytes are decoded as UTF-8 incrementally (invalid bytes become U+FFFD), so a character
      split across chunks survives.  A str chunk arriving while the decoder holds an incomplete
      sequence first flushes it (one U+FFFD).
    - ``\\r\\n`` becomes ``\\n``; a lone ``\\r`` is an ordinary character.  A ``\\r`` that ends a
      chunk is held back until the next character shows whether it starts a ``\\r\\n``.
    - Sizes are UTF-8 bytes.  Every line returned fits in ``max_partial`` bytes with its
      newline: a line that would not is broken on character boundaries into pieces of at most
      ``max_partial - 1`` bytes (so a piece still fits once a consumer adds a newline), each
      returned *without* a ``\\n``, and nothing is lost.  A piece holds at least one character.
    - ``unbroken`` strings (the literal secrets a masker will look for) are never split by a
      forced break: the break moves back to where the string starts, so the masker sees it
      whole.  To judge a break the splitter waits until it has seen the longest such string's
      length past it (or the line's end), so the buffer may exceed the bound by that much.
    - A held ``\\r`` and undecodable trailing bytes are settled only by ``finish()``.
    """

    __slots__ = ("_max", "_piece", "_literals", "_reach", "_decoder", "_partial", "_partial_bytes", "_cr")

    def __init__(self, max_partial: int = DEFAULT_MAX_PARTIAL, *, unbroken: Iterable[str] = ()) -> None:
        if isinstance(max_partial, bool) or not isinstance(max_partial, int) or max_partial < 1:
            raise ValueError(f"max_partial must be a positive int, not {max_partial!r}")
        self._max = max_partial
        self._piece = max_partial - 1  # room for the newline a consumer may add
        literals = {s.encode("utf-8", "surrogatepass") for s in unbroken if len(s) >= 2}
        self._literals = tuple(sorted(literals))
        #: Bytes past a break needed to see every literal that could straddle it.
        self._reach = max((len(b) for b in self._literals), default=1) - 1
        self._decoder = _new_decoder(errors="replace")
        self._partial = ""
        self._partial_bytes = 0
        self._cr = False  # a "\r" ended the input so far; not yet in _partial

    @property
    def pending(self) -> int:
        """Bytes currently buffered (the partial line and a held-back ``\\r``)."""
        return self._partial_bytes + self._cr

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

    def finish(self) -> Optional[str]:
        """Return the pending partial line (no ``\\n``), or ``None`` if empty; reset all state.

        The text is returned whole, so it may exceed the bound by the held ``\\r``, settled
        bytes and the ``unbroken`` look-ahead; ``finish_lines()`` returns it in pieces.
        """
        # The held "\r" came before any bytes still in the decoder.
        rest = self._partial + "\r" * self._cr + self._decoder.decode(b"", True)
        self._decoder.reset()
        self._partial = ""
        self._partial_bytes = 0
        self._cr = False
        return rest or None

    def finish_lines(self) -> list[str]:
        """``finish()`` broken into pieces within the bound, none ending in ``\\n``."""
        rest = self.finish()
        if rest is None:
            return []
        pieces, last = self._break(rest, final=True)
        return pieces + [last] if last else pieces

    def _split(self, text: str) -> list[str]:
        if "\n" not in text:
            self._partial += text
            self._partial_bytes += _utf8_len(text)
            if self._partial_bytes <= self._piece:
                return []
            lines, self._partial = self._break(self._partial, final=False)
            self._partial_bytes = _utf8_len(self._partial)
            return lines
        parts = text.split("\n")
        tail = parts.pop()
        if self._partial:
            parts[0] = self._partial + parts[0]
        # The common case: no line can be too long (4 bytes a character at most: most
        # writes are judged without encoding them).
        room = self._max - self._partial_bytes
        if 4 * len(text) <= room or _utf8_len(text) <= room:
            lines = [part + "\n" for part in parts]
            self._partial = tail
            self._partial_bytes = _utf8_len(tail) if tail else 0
            return lines
        lines = []
        for part in parts:
            forced, part = self._break(part, final=True)
            lines.extend(forced)
            lines.append(part + "\n")
        forced, tail = self._break(tail, final=False)
        lines.extend(forced)
        self._partial = tail
        self._partial_bytes = _utf8_len(tail)
        return lines

    def _break(self, text: str, *, final: bool) -> tuple[list[str], str]:
        """Split pieces off ``text`` (no ``\\n`` in it) while it exceeds a piece.

        ``final``: the text is the whole rest of its line, so nothing past it can straddle.
        """
        if len(text) <= self._piece // 4:  # cannot exceed the bound in bytes
            return [], text
        raw = text.encode("utf-8", "surrogatepass")
        pieces: list[str] = []
        start = 0
        while len(raw) - start > self._piece:
            cut = start + max(self._piece, 1)
            if not final and len(raw) - cut < self._reach:
                break  # a literal may straddle the cut with bytes not seen yet
            cut = self._cut(raw, start, cut)
            pieces.append(raw[start:cut].decode("utf-8", "surrogatepass"))
            start = cut
        return pieces, raw[start:].decode("utf-8", "surrogatepass")

    def _cut(self, raw: bytes, start: int, cut: int) -> int:
        """The break at or before ``cut``: a character boundary outside every literal."""
        while start < cut < len(raw) and _is_continuation(raw[cut]):
            cut -= 1
        if cut == start:  # one character wider than a piece: it goes whole
            cut = start + 1
            while cut < len(raw) and _is_continuation(raw[cut]):
                cut += 1
            return cut
        moved = True
        while moved:
            moved = False
            for literal in self._literals:
                # Any occurrence inside this window straddles the cut.
                found = raw.find(literal, max(start + 1, cut - len(literal) + 1), cut + len(literal) - 1)
                if found != -1:
                    cut, moved = found, True  # UTF-8: a literal starts on a character boundary
        return cut
