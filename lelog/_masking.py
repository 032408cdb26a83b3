"""Secret and pattern masking of whole lines (docs/protocol.md#masking).

The Go writer masks each ``write`` call, so a secret split across two writes leaks; ``lelog``
masks complete lines.  Masking runs on the worker thread for every line, so the secrets are
compiled once into a single alternation and a line without secrets costs one regex scan.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Iterable, Pattern

__all__ = ["MASK", "Masker", "decode_sanitize_patterns"]

MASK = "**************"

_MIN_PART = 2


def _secret_parts(secrets: Iterable[str]) -> list[str]:
    """The stripped, distinct, long-enough parts of every secret, in listed order."""
    parts: dict[str, None] = {}
    for secret in secrets:
        if not isinstance(secret, str):
            raise TypeError(f"a secret must be a str, not {type(secret).__name__}")
        for part in secret.split("\n"):
            part = part.strip()
            if len(part) >= _MIN_PART:
                parts.setdefault(part)
    return list(parts)


def _compile(pattern: str) -> Pattern[str]:
    try:
        return re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:  # a huge repeat, deep nesting
        raise ValueError(f"invalid sanitize pattern {pattern[:80]!r}: {exc}") from None


def _reject_str(name: str, value: object) -> None:
    # A bare str is an Iterable[str] of characters: masking each one is never what was meant.
    if isinstance(value, str):
        raise TypeError(f"{name} must be a list of strings, not a single str")


class Masker:
    """Masks secrets and patterns in whole lines (docs/protocol.md#masking).

    Secrets go first, as one alternation of their parts in listed order: Python tries the
    alternatives in order at each position and scans left to right without overlap, which is
    exactly the reference rule "earliest-listed wins, matches do not overlap".  Then each
    pattern replaces its matches, in order.  The repr shows counts, never the secrets.
    """

    __slots__ = ("_secrets", "_patterns", "_n_secrets")

    def __init__(self, secrets: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        _reject_str("secrets", secrets)
        _reject_str("patterns", patterns)
        parts = _secret_parts(secrets)
        self._n_secrets = len(parts)
        self._secrets: Pattern[str] | None = re.compile("|".join(map(re.escape, parts))) if parts else None
        self._patterns: tuple[Pattern[str], ...] = tuple(_compile(p) for p in patterns)

    def __bool__(self) -> bool:
        return self._secrets is not None or bool(self._patterns)

    def __repr__(self) -> str:
        return f"Masker(secrets={self._n_secrets}, patterns={len(self._patterns)})"

    def mask(self, text: str) -> str:
        """``text`` with every secret part, then every pattern match, replaced by ``MASK``."""
        if self._secrets is not None:
            text = self._secrets.sub(MASK, text)
        for pattern in self._patterns:
            text = pattern.sub(MASK, text)
        return text


def decode_sanitize_patterns(content_b64: str) -> list[str]:
    """The regex patterns of ``log_config.sanitize_config.sanitize_patterns_content``.

    The content is base64 of newline-separated patterns; each line is stripped (a ``\\r`` from a
    file written on Windows would otherwise end up in the regex), and blank lines and ``#``
    comments are skipped.  Whitespace inside the base64 (line-wrapped output of ``base64``) is
    ignored; anything else that is not strict base64 of UTF-8 text is a ``ValueError``.
    """
    compact = "".join(content_b64.split())
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"sanitize_patterns_content is not valid base64: {exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"sanitize_patterns_content is not UTF-8 text: {exc}") from None
    patterns = []
    for line in text.split("\n"):
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line)
    return patterns
