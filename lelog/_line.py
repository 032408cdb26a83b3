"""One log line and its wire encoding (docs/protocol.md#the-line).

A line is encoded exactly once, by the writer's worker thread, into compact JSON bytes with the
fields in the order the service's own clients use: ``level, pos, out, time, args``.  The PUT
body is those bytes joined into a JSON array and the history upload is the same bytes joined
as NDJSON, so nothing is ever re-encoded.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import time as _time
from json.encoder import encode_basestring
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import attrs

__all__ = [
    "args_json",
    "MAX_EPOCH",
    "MAX_LINE_BYTES",
    "TRUNCATION_SUFFIX",
    "Line",
    "encode_line",
    "format_time",
    "json_array",
    "ndjson",
    "parse_line",
    "parse_ndjson",
    "second_text",
    "time_seconds",
    "truncate_out",
]

#: The longest ``out`` the service's reference client sends, in UTF-8 bytes.
MAX_LINE_BYTES = 71_680
TRUNCATION_SUFFIX = "... (log line truncated)"

# C-accelerated JSON string quoting; keeps non-ASCII as UTF-8 (smaller than \\u escapes).
_quote = encode_basestring
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

TimeLike = Union[float, int, str, _dt.datetime]
MAX_EPOCH = 32_503_680_000.0  # 3000-01-01: beyond it time.gmtime overflows on some platforms


def is_valid_epoch(ts: float) -> bool:
    """Whether ``ts`` is a time lelog can format: 1970 to 3000 (so not nan or inf either)."""
    return 0.0 <= ts < MAX_EPOCH


def truncate_out(out: str, limit: int = MAX_LINE_BYTES) -> tuple[str, bool]:
    """Cut ``out`` to ``limit`` UTF-8 bytes plus the suffix, never splitting a character.

    Returns the text and whether it was cut.  The cheap length test comes first: a string of
    at most ``limit // 4`` characters cannot exceed ``limit`` bytes.
    """
    if len(out) <= limit // 4:
        return out, False
    raw = out.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return out, False
    # Dropping a partial character at the cut is what "ignore" does on a prefix.
    head = raw[:limit].decode("utf-8", "ignore")
    return head + TRUNCATION_SUFFIX, True


def second_text(sec: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` in UTC for a whole epoch second: RFC 3339 up to the fraction."""
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(sec))


# The last second format_time saw, as [first, past) and its text up to the ".": one tuple
# swapped whole, so concurrent callers read a consistent triple and at worst format it twice.
_second_cache: tuple[int, int, str] = (0, 0, "")  # matches no time


def format_time(ts: float) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z`` zone, as the service requires.

    The date part is cached per second: many lines share a second.  The cached case is one
    chained comparison (no ``int()``), false for nan, which then fails in ``int()`` as before.
    """
    global _second_cache
    first, past, prefix = _second_cache
    if not first <= ts < past:
        first = int(ts // 1)
        prefix = second_text(first) + "."
        past = first + 1
        _second_cache = (first, past, prefix)
    # %d truncates the float as int() does: the microseconds, zero-padded, with no int()
    # call (0.16 us against 0.2-0.3 us for str(10**6 + int(...))[1:], Python 3.9-3.13).
    return f"{prefix}{'%06d' % ((ts - first) * 1_000_000)}Z"


def _has_zone(text: str) -> bool:
    if text.endswith(("Z", "z")):
        return True
    tail = text[-6:]
    return len(tail) == 6 and tail[0] in "+-" and tail[3] == ":"


def _to_time(value: TimeLike) -> str:
    if isinstance(value, str):
        if "T" not in value or not _has_zone(value):
            raise ValueError(
                f"time {value!r} is not RFC 3339 with a zone; the service rejects zone-less "
                "times: pass a float epoch, an aware datetime, or e.g. '2026-11-27T10:00:00Z'"
            )
        return value
    if isinstance(value, _dt.datetime):
        # A naive datetime is taken as local time, which is what datetime.now() means.
        aware = value if value.tzinfo is not None else value.astimezone()
        return aware.isoformat(timespec="microseconds")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            ts = float(value)
        except OverflowError:
            ts = math.inf
        if not is_valid_epoch(ts):
            raise ValueError(f"time {value!r} is not an epoch in seconds between 1970 and 3000")
        return format_time(ts)
    raise TypeError(f"time must be a float epoch, a datetime or an RFC 3339 string, not {value!r}")


_FRACTION = re.compile(r"\.(\d+)")


def time_seconds(text: str) -> Optional[float]:
    """The epoch seconds of an RFC 3339 time with a zone (as lines carry it); None for
    anything else.  Python 3.9's ``fromisoformat`` takes neither ``Z`` nor a fraction other
    than 3 or 6 digits, so both are rewritten first (nanoseconds are cut to microseconds)."""
    if not isinstance(text, str) or "T" not in text or not _has_zone(text):
        return None
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    try:
        return _dt.datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError):
        return None


def _to_args(value: Optional[Mapping[str, Any]]) -> Optional[dict[str, str]]:
    if value is None:
        return None
    return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()}


def args_json(args: Optional[Mapping[str, Any]]) -> str:
    """``args`` as compact JSON: an object of strings (the service rejects other values), or null."""
    if args is None:
        return "null"
    if not all(type(v) is str and type(k) is str for k, v in args.items()):
        args = _to_args(args)  # the service rejects non-string values
    return _compact(args)


def encode_line(level: str, pos: int, out: str, time: str, args: Optional[Mapping[str, Any]]) -> bytes:
    """Compact JSON for one line, fields in wire order; ``out`` must already be truncated."""
    text = (
        f'{{"level":{_quote(level)},"pos":{pos},"out":{_quote(out)},'
        f'"time":{_quote(time)},"args":{args_json(args)}}}'
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from the caller: keep the line, lose the char
        return text.encode("utf-8", "replace")


@attrs.frozen(slots=True)
class Line:
    """A log line as the service stores it.

    ``time`` accepts a float epoch, an aware (or local naive) datetime, or an RFC 3339 string
    with a zone, and is kept as the RFC 3339 string.  ``args`` values are turned into strings.
    """

    out: str = attrs.field(validator=attrs.validators.instance_of(str))
    pos: int = attrs.field(validator=attrs.validators.instance_of(int))
    time: str = attrs.field(converter=_to_time)
    level: str = attrs.field(default="info", validator=attrs.validators.instance_of(str))
    args: Optional[dict[str, str]] = attrs.field(default=None, converter=_to_args)

    def encode(self) -> bytes:
        """The line as compact JSON, ``out`` truncated to the service's limit."""
        out, _ = truncate_out(self.out)
        return encode_line(self.level, self.pos, out, self.time, self.args)

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "pos": self.pos, "out": self.out, "time": self.time, "args": self.args}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Line:
        """Build a line from its decoded JSON, as the service and the file store return it."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"a log line must be a JSON object, not {type(obj).__name__}")
        try:
            return cls(
                out=obj.get("out", ""),
                pos=obj.get("pos", 0),
                time=obj.get("time") or format_time(0.0),
                level=obj.get("level") or "info",
                args=obj.get("args"),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed log line {dict(obj)!r}: {exc}") from None


def json_array(encoded: Sequence[bytes]) -> bytes:
    """The ``PUT /stream`` body: a JSON array of already encoded lines.

    The lines are copied once: the brackets go on copies of the first and the last line,
    which the join then takes as it takes the others.  ``b"[" + b",".join(...) + b"]"``
    copies a burst's ~0.8 MB body twice more, several times the join's own cost.
    """
    if len(encoded) < 2:
        return b"[" + b"".join(encoded) + b"]"
    parts = list(encoded)  # a list of references, not of bytes
    parts[0] = b"[" + parts[0]
    parts[-1] += b"]"
    return b",".join(parts)


def ndjson(encoded: Sequence[bytes]) -> bytes:
    """A blob body: one encoded line per row, each ending in ``\\n``; empty history, empty body."""
    if not encoded:
        return b""
    return b"\n".join(encoded) + b"\n"


def parse_line(data: Union[str, bytes]) -> Line:
    """One line from its JSON text; ``ValueError`` for anything that is not a log line,
    including JSON nested too deep to decode (read from others: a service, a file)."""
    try:
        obj = json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return Line.from_dict(obj)


def parse_ndjson(data: bytes) -> Iterable[Line]:
    """Decode an NDJSON blob into lines, skipping blank rows."""
    for row in data.splitlines():
        if row.strip():
            yield parse_line(row)
