"""The original system's line format, as a ``logging.Formatter``.

The Go engine logs with logrus' text format: ``time="..." level=info msg="..." key=value``.
``LogfmtFormatter`` writes the same so the service shows Python lines like the engine's own.
It runs on the caller's thread for every record, so the common case (a printable message,
bare values) is a few str method calls and one f-string.
"""

from __future__ import annotations

import logging
from typing import Collection

from ._line import second_text

__all__ = ["LogfmtFormatter", "logfmt_value", "record_extras", "safe_str"]

# Attributes every LogRecord has, so anything else came from ``extra=`` (or a filter).
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

# Records only gain attributes after __init__ (extra=, filters, record factories), so a record
# with no more attributes than a fresh one has no extras.  That length test spares the subset
# test's ~20 hash lookups on almost every record, twice per record in StreamHandler
# (benchmarks/: caller-cost row).
_FRESH_RECORD_SIZE = len(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)

# Inside quotes: backslash, quote and every control character (Unicode Cc), JSON style, which is
# what logfmt parsers (go-logfmt, logrus) read back.
_ESCAPES = {c: f"\\u{c:04x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({ord("\\"): "\\\\", ord('"'): '\\"', ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})

# Extras named like the fixed fields are prefixed, as logrus does, so no key appears twice.
_CLASHING = frozenset({"time", "level", "msg"})


def record_extras(record: logging.LogRecord, exclude: Collection[str] = ()) -> dict[str, object]:
    """The ``extra=`` fields of ``record``, in insertion order, minus ``exclude``.

    Names starting with ``_`` are private, not extras: structlog's ``ProcessorFormatter``
    keeps its ``_logger`` and ``_name`` there.
    """
    attrs = record.__dict__
    if len(attrs) <= _FRESH_RECORD_SIZE or attrs.keys() <= _RESERVED:  # the common cases
        return {}
    return {
        k: v
        for k, v in attrs.items()
        if k not in _RESERVED and k not in exclude and not (isinstance(k, str) and k.startswith("_"))
    }


def _is_bare(text: str) -> bool:
    # isprintable() is False for control characters and also for other separators (e.g. NBSP,
    # U+2028) that a reader would take for whitespace: quoting those too is safer.
    return (
        text != ""
        and text.isprintable()
        and " " not in text
        and '"' not in text
        and "=" not in text
        and "\\" not in text
    )


def _quote(text: str) -> str:
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return f'"{text.translate(_ESCAPES)}"'


def safe_str(value: object) -> str:
    """``str(value)``, or a placeholder when its ``__str__`` raises."""
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:  # one broken extra must not cost the whole line
        return f"<unprintable {type(value).__name__}>"


def logfmt_value(value: object) -> str:
    """``value`` as a logfmt value: bare when that parses back unchanged, else quoted."""
    text = safe_str(value)
    return text if _is_bare(text) else _quote(text)


def _render_key(key: str) -> str:
    if key in _CLASHING:
        return f"fields.{key}"
    if _is_bare(key):
        return key
    # Keys cannot be quoted in logfmt, so what would need quoting becomes "_" (a rare path).
    return "".join([c if c.isprintable() and c not in ' ="\\' else "_" for c in key]) or "_"


_keys: dict[str, str] = {}
_MAX_CACHED_KEYS = 1024


def _logfmt_key(key: object) -> str:
    # A program uses a few dozen extra names; cache them, but never grow without bound.
    if not isinstance(key, str):  # extra={1: ...} is accepted by logging
        key = safe_str(key)
    rendered = _keys.get(key)
    if rendered is None:
        rendered = _render_key(key)
        if len(_keys) < _MAX_CACHED_KEYS:
            _keys[key] = rendered
    return rendered


class LogfmtFormatter(logging.Formatter):
    """The original system's line format.

    ``time="<RFC 3339>" level=<level> msg="<message>" key=value ...``, as logrus writes it.

    ``extras`` adds the record's ``extra=`` fields, except the names in ``exclude``.  An
    exception or stack follows on the next lines, as ``logging.Formatter`` writes it.  Every
    option is a plain value, so ``{"()": "lelog._logfmt.LogfmtFormatter"}`` works in
    ``logging.config.dictConfig``.
    """

    def __init__(self, *, extras: bool = True, exclude: Collection[str] = ()) -> None:
        if isinstance(exclude, str):
            raise TypeError("exclude must be a collection of attribute names, not a single str")
        super().__init__()
        self.extras = bool(extras)
        self.exclude = frozenset(exclude)
        # The text around the microseconds, made once: 'time="<date>T<h:m:s>.' per second
        # (as [first, past) seconds, so the common case is one chained comparison and no
        # int()), and 'Z" level=<level> msg=' per level name.  The second is one tuple
        # swapped whole, so threads sharing this formatter read a consistent triple and at
        # worst build it twice; the level dict only ever gains equal values.
        self._second: tuple[int, int, str] = (0, 0, "")  # matches no time
        self._levels: dict[str, str] = {}

    def _time_head(self, ts: float) -> tuple[int, int, str]:
        sec = int(ts // 1)
        second = (sec, sec + 1, f'time="{second_text(sec)}.')
        # Returned from the local, never re-read: another thread may swap in its own second.
        self._second = second
        return second

    def _level_part(self, levelname: str) -> str:
        # Few distinct names ever reach a formatter; a custom one may hold a space ("Level 5").
        part = self._levels[levelname] = f'Z" level={logfmt_value(levelname.lower())} msg='
        return part

    def format(self, record: logging.LogRecord) -> str:
        # The caller's thread runs this for every record (benchmarks/README.md: the
        # formatter stage): the common case is cached parts, two str tests and one f-string.
        ts = record.created
        first, past, head = self._second
        if not first <= ts < past:  # also false for nan, which _time_head refuses as before
            first, past, head = self._time_head(ts)
        level = self._levels.get(record.levelname) or self._level_part(record.levelname)
        msg = record.getMessage()
        if not msg.isprintable() or '"' in msg or "\\" in msg:
            msg = msg.translate(_ESCAPES)
        # %d truncates the float as int() does: the microseconds, zero-padded (format_time).
        text = f'{head}{"%06d" % ((ts - first) * 1_000_000)}{level}"{msg}"'
        if self.extras and len(record.__dict__) > _FRESH_RECORD_SIZE:  # record_extras' own test, inline
            extras = record_extras(record, self.exclude)
            if extras:
                text += "".join(
                    [f" {_logfmt_key(key)}={logfmt_value(value)}" for key, value in extras.items()]
                )
        if not (record.exc_info or record.exc_text or record.stack_info):
            return text
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text
