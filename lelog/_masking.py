"""Secret and pattern masking of whole lines (docs/protocol.md#masking), and of error texts.

The Go writer masks each ``write`` call, so a secret split across two writes leaks; ``lelog``
masks complete lines.  Masking runs on the worker thread for every line, so the secrets are
compiled once into a single alternation and a line without secrets costs one regex scan.

The configuration's credentials (the token, key material) are secrets of every stream without
the user listing them.  A credential shorter than ``SHORT_CREDENTIAL`` characters would mask
ordinary words, so it is masked only where it stands as a whole word (not inside a longer run
of letters, digits and ``_``).  Every secret and credential is also masked in the forms an
error text or a line quotes it in: ``repr``, JSON and percent-encoding.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from typing import Any, Callable, Iterable, Mapping, Pattern
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "SHORT_CREDENTIAL", "Masker", "decode_sanitize_patterns", "quoted_forms"]

MASK = "**************"

#: Credentials shorter than this are masked only as whole words (see the module docstring).
SHORT_CREDENTIAL = 8

_MIN_PART = 2


def _as_logfmt_key(text: str) -> str:
    # How LogfmtFormatter writes an extra's name that would need quoting (keys cannot be quoted).
    return "".join([c if c.isprintable() and c not in ' ="\\' else "_" for c in text])


def quoted_forms(text: str) -> list[str]:
    """``text`` and the ways a ``repr``, a JSON dump, a URL or a logfmt key quote it, once and
    then inside a logfmt or JSON string (the JSON of a token in a logged message), without
    duplicates."""
    raw = text.encode("utf-8", "surrogatepass")  # a lone surrogate is text too
    once = [
        text,
        repr(text)[1:-1],
        repr(raw)[2:-1],
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        quote(raw, safe=""),
        quote_plus(raw, safe=""),
        _as_logfmt_key(text),
    ]
    twice = [json.dumps(form, ensure_ascii=False)[1:-1] for form in once]
    return list(dict.fromkeys(once + twice))


def _credential_regexes(credentials: Iterable[str]) -> list[str]:
    """Regex alternatives for every form of every credential, longest first, so that no
    shorter form can claim the start of a longer one and leave its rest in clear."""
    forms: dict[str, None] = {}
    for credential in credentials:
        if not isinstance(credential, str):
            raise TypeError(f"a credential must be a str, not {type(credential).__name__}")
        for part in {credential.strip(), *(line.strip() for line in credential.split("\n"))}:
            if len(part) >= _MIN_PART:
                forms.update(dict.fromkeys(quoted_forms(part)))
    alternatives = []
    for form in sorted(forms, key=len, reverse=True):
        escaped = re.escape(form)
        short = len(form) < SHORT_CREDENTIAL
        alternatives.append(rf"(?<!\w){escaped}(?!\w)" if short else escaped)
    return alternatives


def _secret_parts(secrets: Iterable[str]) -> list[str]:
    """The stripped, distinct, long-enough parts of every secret, in listed order, then their
    quoted forms (which only add matches: a part's own occurrences are masked as before)."""
    parts: dict[str, None] = {}
    for secret in secrets:
        if not isinstance(secret, str):
            raise TypeError(f"a secret must be a str, not {type(secret).__name__}")
        for part in secret.split("\n"):
            part = part.strip()
            if len(part) >= _MIN_PART:
                parts.setdefault(part)
    quoted = {form: None for part in parts for form in quoted_forms(part)}
    return list({**parts, **quoted})


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
    """Masks credentials, secrets and patterns in whole lines (docs/protocol.md#masking) and error texts.

    Credentials and secrets go first, as one alternation: the credentials' forms (longest
    first), then the secrets' parts in listed order.  Python tries the alternatives in order at
    each position and scans left to right without overlap, which is exactly the reference
    rule "earliest-listed wins, matches do not overlap".  Then each pattern replaces its
    matches, in order.  The repr shows counts, never the secrets.
    """

    __slots__ = ("_secrets", "_patterns", "_n_secrets")

    def __init__(
        self, secrets: Iterable[str] = (), patterns: Iterable[str] = (), *, credentials: Iterable[str] = ()
    ) -> None:
        _reject_str("secrets", secrets)
        _reject_str("patterns", patterns)
        _reject_str("credentials", credentials)
        alternatives = _credential_regexes(credentials) + list(map(re.escape, _secret_parts(secrets)))
        self._n_secrets = len(alternatives)
        self._secrets: Pattern[str] | None = re.compile("|".join(alternatives)) if alternatives else None
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

    def line_masker(self) -> Callable[[str], str]:
        """``mask`` as one callable for a batch of lines: with secrets and no patterns (the
        usual case: the token) the compiled pattern's own ``sub``, without a method call per
        line (benchmarks/: the worker's encoding)."""
        if self._secrets is not None and not self._patterns:
            return functools.partial(self._secrets.sub, MASK)
        return self.mask

    def scrub(self, error: object) -> str:
        """The text of ``error`` (an exception or a message) fit to show or store: every
        credential, secret and pattern masked.  The one function for every error text lelog
        shows or keeps (exceptions, warnings, ``Stats.last_error``, CLI output); never raises."""
        try:
            text = error if isinstance(error, str) else str(error)
        except Exception:
            text = f"<{type(error).__name__} with an unprintable message>"
        return self.mask(text)

    def mask_args(self, args: Mapping[Any, Any]) -> dict[str, str]:
        """``args`` as strings with every key and value masked: a secret can be a key too."""
        mask = self.mask
        return {
            mask(k if isinstance(k, str) else str(k)): mask(v if isinstance(v, str) else str(v))
            for k, v in args.items()
        }


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
