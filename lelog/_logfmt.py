"""The original system's line format, as a ``logging.Formatter``.

The Go engine logs with logrus' text format: ``time="..." level=info msg="..." key=value``.
``LogfmtFormatter`` writes the same so the service shows Python lines like the engine's own.
It runs on the caller's thread for every record, so the common case (a printable message,
bare values) is a few str method calls and one f-string.
"""

from __future__ import annotations

import logging
from typing import Any, Collection, Mapping, Optional

from ._line import second_text

__all__ = [
    "ESCAPES",
    "LogfmtFormatter",
    "escape_message",
    "extras_text",
    "level_part",
    "logfmt_text",
    "logfmt_value",
    "record_extras",
    "safe_str",
]

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
ESCAPES = {c: f"\\u{c:04x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
ESCAPES.update({ord("\\"): "\\\\", ord('"'): '\\"', ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})

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
    return f'"{text.translate(ESCAPES)}"'


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


def escape_message(msg: str) -> str:
    """The message as it goes between ``msg="`` and ``"``: control characters, quotes and
    backslashes escaped (the common printable message is returned as it is)."""
    if not msg.isprintable() or '"' in msg or "\\" in msg:
        return msg.translate(ESCAPES)
    return msg


def extras_text(extras: Mapping[Any, object]) -> str:
    """`` key=value`` for each extra, in order (keys shaped, values quoted as needed)."""
    return "".join([f" {_logfmt_key(key)}={logfmt_value(value)}" for key, value in extras.items()])


def level_part(levelname: str) -> str:
    """``Z" level=<level> msg=``: what follows the time's digits, for one level name."""
    return f'Z" level={logfmt_value(levelname.lower())} msg='


# The last second logfmt_text saw, as [first, past) and ``time="<date>T<h:m:s>.``, one tuple
# swapped whole: threads read a consistent triple and at worst build it twice.  Level names
# map to their level_part (few distinct names ever reach it; the dict only gains equal values).
_second: tuple[int, int, str] = (0, 0, "")  # matches no time
_levels: dict[str, str] = {}


def logfmt_text(ts: float, levelname: str, msg: str, extras: Optional[Mapping[Any, object]]) -> str:
    """One record's logfmt line (``LogfmtFormatter`` without the exception text).

    The writer's batch encoder (``_encode.encode_batch``) renders captured records inline
    with the same parts; a test holds the two byte-equal.
    """
    global _second
    first, past, head = _second
    if not first <= ts < past:  # also false for nan, which int() then refuses
        first = int(ts // 1)
        past, head = first + 1, f'time="{second_text(first)}.'
        _second = (first, past, head)  # read back from the locals: another thread may swap
    level = _levels.get(levelname)
    if level is None:
        level = _levels[levelname] = level_part(levelname)
    # %d truncates the float as int() does: the microseconds, zero-padded (format_time).
    text = f'{head}{"%06d" % ((ts - first) * 1_000_000)}{level}"{escape_message(msg)}"'
    return text + extras_text(extras) if extras else text


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

    def format(self, record: logging.LogRecord) -> str:
        extras = None
        if self.extras and len(record.__dict__) > _FRESH_RECORD_SIZE:  # record_extras' own test, inline
            extras = record_extras(record, self.exclude)
        text = logfmt_text(record.created, record.levelname, record.getMessage(), extras)
        if not (record.exc_info or record.exc_text or record.stack_info):
            return text
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text
