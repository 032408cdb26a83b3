"""Pending lines to wire bytes, one pass per batch (docs/writer.md#encoding).

A pending line is what a caller handed the writer: ``(time, level, out, args, record)``.
``record`` is None for a ready line (``out`` is its text, ``level`` its wire level).  For a
``logging`` record captured by ``StreamHandler`` with its default formatter it is a
``RecordLine``: ``out`` is the record's message, ``level`` its level name and ``args`` its
extras as strings, all fixed at call time; the worker renders the logfmt text
(``_logfmt.logfmt_text``) and the JSON line together, so the caller pays only for the capture
(benchmarks/README.md#where-the-time-goes, steps 1 and 2).
"""

from __future__ import annotations

import enum
import time as _time
from json.encoder import encode_basestring as _quote
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Tuple

from ._line import MAX_LINE_BYTES, args_json, truncate_out
from ._logfmt import ESCAPES, extras_text, level_part, logfmt_text

if TYPE_CHECKING:
    from ._masking import Masker

__all__ = ["Item", "RecordLine", "encode_batch", "ready"]


class RecordLine(enum.Enum):
    """How a captured ``logging`` record becomes its line (a pending line's ``record``)."""

    #: The extras in the logfmt text and, as strings, in the line's ``args``.
    EXTRAS_AS_ARGS = "extras-as-args"
    #: The extras in the text only (``StreamHandler(extras_as_args=False)``).
    TEXT_ONLY = "text-only"


#: A pending line: (epoch time, level, out, args, record); see the module docstring.
Item = Tuple[float, str, str, Optional[Mapping[str, Any]], Optional[RecordLine]]

_SHORT = MAX_LINE_BYTES // 4  # a string this short cannot exceed the byte limit


def ready(item: Item) -> tuple[str, str, Optional[Mapping[str, Any]]]:
    """A pending line as ``(level, out, args)``: a captured record rendered as
    ``LogfmtFormatter`` and ``StreamHandler`` would have made it on the caller's thread."""
    ts, level, out, args, record = item
    if record is None:
        return level, out, args
    text = logfmt_text(ts, level, out, args) + "\n"
    return level.lower(), text, args if record is RecordLine.EXTRAS_AS_ARGS else None


def encode_batch(
    items: Iterable[Item], first_pos: int, masker: Optional[Masker], trim: bool
) -> tuple[list[bytes], int]:
    """Render, mask, trim, truncate and encode pending lines, numbering them from
    ``first_pos``; returns the encoded lines and how many were truncated.

    The worker's hot loop (benchmarks/: caller-cost, sustained and throughput rows).  The
    bytes are those of ``ready`` then ``_line.encode_line`` (tests hold them equal): one
    f-string per line, the time text made once per second and shared by the logfmt text and
    the JSON, the JSON head and the logfmt level part once per level.
    """
    encoded: list[bytes] = []
    append = encoded.append
    heads: dict[str, str] = {}  # wire level -> '{"level":"<level>","pos":'
    records: dict[str, tuple[str, str]] = {}  # level name -> (JSON head, logfmt level part)
    truncated = 0
    pos = first_pos
    first = past = 0
    logfmt_time = json_time = ""  # 'time="<date>.' and ',"time":"<date>.' for the second
    mask = None if masker is None else masker.line_masker()
    for ts, level, out, args, record in items:
        if not first <= ts < past:
            first = int(ts // 1)
            date = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(first))
            past, logfmt_time, json_time = first + 1, f'time="{date}.', f',"time":"{date}.'
        # %d truncates the float as int() does: the microseconds, zero-padded (format_time).
        micros = "%06d" % ((ts - first) * 1_000_000)
        if record is None:
            head = heads.get(level)
            if head is None:
                head = heads[level] = f'{{"level":{_quote(level)},"pos":'
        else:
            parts = records.get(level)
            if parts is None:
                parts = records[level] = (f'{{"level":{_quote(level.lower())},"pos":', level_part(level))
            head = parts[0]
            if args:
                tail = extras_text(args) + "\n"
                if record is not RecordLine.EXTRAS_AS_ARGS:
                    args = None
            else:
                tail, args = "\n", None
            if not out.isprintable() or '"' in out or "\\" in out:  # escape_message, inline
                out = out.translate(ESCAPES)
            out = f'{logfmt_time}{micros}{parts[1]}"{out}"{tail}'
        if mask is not None:
            out = mask(out)
            if args and masker is not None:
                args = masker.mask_args(args)
        if trim and out[-1:] == "\n":
            out = out[:-1]
        if len(out) > _SHORT:
            out, cut = truncate_out(out)
            truncated += cut
        text = (
            f'{head}{pos},"out":{_quote(out)}{json_time}{micros}Z",'
            f'"args":{"null" if args is None else args_json(args)}}}'
        )
        try:
            append(text.encode())
        except UnicodeEncodeError:  # a lone surrogate from the caller: keep the line, lose the char
            append(text.encode("utf-8", "replace"))
        pos += 1
    return encoded, truncated
