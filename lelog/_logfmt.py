"""The original system's line format, as a ``logging.Formatter``.

The Go engine logs with logrus' text format: ``time="..." level=info msg="..." key=value``.
``LogfmtFormatter`` writes the same so the service shows Python lines like the engine's own.
It runs on the caller's thread for every record, so the common case (a printable message,
bare values) is a few str method calls and one f-string.
"""

from __future__ import annotations

import logging
from typing import Any, Collection, Mapping, Optional

from ._exceptions import ConfigError
from ._fields import _FRESH_RECORD_SIZE, record_extras, safe_str
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

# Inside quotes: backslash, quote and every control character (Unicode Cc), JSON style, which is
# what logfmt parsers (go-logfmt, logrus) read back.
ESCAPES = {c: f"\\u{c:04x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
ESCAPES.update({ord("\\"): "\\\\", ord('"'): '\\"', ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})

# Extras named like the fixed fields are prefixed, as logrus does, so no key appears twice.
_CLASHING = frozenset({"time", "level", "msg"})


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


# loguru's handler sink sets exc_text to this when it has put the traceback into the message.
_TRACEBACK_IN_MESSAGE = "\n"
_TRACEBACK_HEAD = "\nTraceback (most recent call last):"


def _split_appended_traceback(message: str) -> tuple[str, str]:
    """A loguru message with its traceback appended, as the message and a newline + the
    traceback (without its trailing newlines), so the traceback becomes lines of its own."""
    cut = message.find(_TRACEBACK_HEAD)
    if cut < 0:  # an exception without a traceback: loguru writes just "Type: value"
        cut = message.find("\n")
    if cut < 0:
        return message, ""
    return message[:cut], message[cut:].rstrip("\n")


def _field_names(option: str, names: Collection[str]) -> frozenset[str]:
    """``exclude``/``include`` as a set of names; one string is a mistake (``"ab"`` would
    otherwise mean ``{"a", "b"}``)."""
    if isinstance(names, str):
        raise ConfigError(f"{option} must be a list of field names, not one string: give [{names!r}]")
    return frozenset(names)


class LogfmtFormatter(logging.Formatter):
    """The original system's line format.

    ``time="<RFC 3339>" level=<level> msg="<message>" key=value ...``, as logrus writes it.

    ``extras`` adds the record's ``extra=`` fields whose values are data (str, number, bool,
    None, date/time, UUID, Decimal, enum, or a list/tuple/dict of those, as JSON), except
    presentation-only ones such as uvicorn's ``color_message`` and the names in ``exclude``;
    names in ``include`` are kept whatever they hold.  An exception or stack follows on the
    next lines, as ``logging.Formatter`` writes it.  Every option is a plain value, so
    ``{"()": "lelog.LogfmtFormatter"}`` works in ``logging.config.dictConfig``.
    """

    #: Records with at most this many attributes have no fields: record_extras' own test,
    #: made here to spare the call on almost every record.
    fresh_record_size = _FRESH_RECORD_SIZE

    def __init__(
        self, *, extras: bool = True, exclude: Collection[str] = (), include: Collection[str] = ()
    ) -> None:
        exclude, include = _field_names("exclude", exclude), _field_names("include", include)
        if exclude & include:
            raise ConfigError(
                f"{sorted(exclude & include)} are in both exclude and include: name each field in one of them"
            )
        super().__init__()
        self.extras = bool(extras)
        self.exclude = exclude
        self.include = include

    def fields(self, record: logging.LogRecord) -> dict[Any, str]:
        """The record's fields, as text, in the order they are written."""
        return record_extras(record, self.exclude, self.include)

    def format(self, record: logging.LogRecord) -> str:
        extras = None
        if self.extras and len(record.__dict__) > self.fresh_record_size:
            extras = self.fields(record)
        text = logfmt_text(record.created, record.levelname, record.getMessage(), extras)
        if not (record.exc_info or record.exc_text or record.stack_info):
            return text
        if record.exc_text == _TRACEBACK_IN_MESSAGE and type(record.__dict__.get("extra")) is dict:
            message, traceback = _split_appended_traceback(record.getMessage())  # loguru's
            text = logfmt_text(record.created, record.levelname, message, extras) + traceback
        else:
            if record.exc_info and not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
            if record.exc_text:
                text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text
