"""A record's fields: which attributes are ``extra=`` fields, which values are data, their text.

Frameworks hang objects on their records: Django's ``django.server`` records carry the
request's socket, uvicorn's carry ``color_message`` (the message again, with ANSI colours).
Their reprs are noise in a stored log, can be large, and can hold what should not be stored.
So a field reaches a line's text and its ``args`` only when its value is data: a str, a
number, a bool, None, a date/time, a UUID, a Decimal, an enum member, or a list, tuple or dict
of those (nested at most ``MAX_DEPTH`` deep).  Presentation-only fields (``PRESENTATION_ONLY``)
are left out too.  ``include`` names fields kept whatever they hold; ``exclude`` names fields
always left out (docs/architecture.md#fields).

A field's text is ``str(value)`` for a scalar and compact JSON for a container (``args``
values are strings on the wire, docs/protocol.md#the-line).

Two frameworks carry a record's fields elsewhere, and both places are read:

- loguru: a record made by its handler sink (``logger.add(handler)``) or its
  ``PropagateHandler`` recipe holds the bound fields as one dict attribute, ``extra``;
- structlog: a record made through ``ProcessorFormatter.wrap_for_formatter`` has the event
  dict as its ``msg`` (its ``event`` is the message) and a ``_logger`` attribute.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import logging
import uuid
from typing import Any, Collection, Mapping, Optional

__all__ = ["MAX_DEPTH", "PRESENTATION_ONLY", "data_text", "record_extras", "safe_str"]

#: Fields that only restate the message for a console: uvicorn's ``color_message``.
PRESENTATION_ONLY = frozenset({"color_message"})

#: How deep containers may nest and still be data (a self-containing list is not).
MAX_DEPTH = 8

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

# The exact types of scalar data: one set lookup decides the common value.  Subclasses
# (an IntEnum, a str subclass, a datetime subclass) take the isinstance test after it.
_SCALARS = frozenset(
    {
        str,
        int,
        float,
        bool,
        type(None),
        datetime.datetime,
        datetime.date,
        datetime.time,
        uuid.UUID,
        decimal.Decimal,
    }
)
_SCALAR_BASES = (str, int, float, datetime.date, datetime.time, uuid.UUID, decimal.Decimal, enum.Enum)
_CONTAINERS = (list, tuple, dict)
_JSON_KEYS = (str, int, float)  # and None: what json.dumps takes as an object's key

# The event dict's keys that are not fields: the message, and structlog's instructions.
_STRUCTLOG_NOT_FIELDS = frozenset({"event", "exc_info", "stack_info"})


def safe_str(value: object) -> str:
    """``str(value)``, or a placeholder when its ``__str__`` raises."""
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:  # one broken extra must not cost the whole line
        return f"<unprintable {type(value).__name__}>"


def _is_data(value: object, depth: int) -> bool:
    if type(value) in _SCALARS:
        return True
    if isinstance(value, (list, tuple)):
        return depth < MAX_DEPTH and all(_is_data(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return depth < MAX_DEPTH and all(
            (key is None or isinstance(key, _JSON_KEYS)) and _is_data(item, depth + 1)
            for key, item in value.items()
        )
    return isinstance(value, _SCALAR_BASES)


def _json_text(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=safe_str)
    except Exception:  # an int too long to print, say: the field stays, as a placeholder
        return f"<unprintable {type(value).__name__}>"


def data_text(value: object) -> Optional[str]:
    """The text of a data value (``str`` of a scalar, compact JSON of a container), or None
    when ``value`` is not data and so is left out of a line by default."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[return-value]  # kind is str
    if kind in _SCALARS:
        return safe_str(value)
    try:  # a proxy's isinstance, or a dict subclass's items(), may raise: then it is not data
        if isinstance(value, _CONTAINERS):
            return _json_text(value) if _is_data(value, 0) else None
        return safe_str(value) if isinstance(value, _SCALAR_BASES) else None
    except Exception:
        return None


def _field_text(name: Any, value: object, include: Collection[Any]) -> Optional[str]:
    """A field's text, or None when it is left out: not data, or presentation-only, and not
    named in ``include``."""
    text = data_text(value)
    if name in include:
        return safe_str(value) if text is None else text
    return None if text is None or name in PRESENTATION_ONLY else text


def _add(
    fields: dict[Any, str], values: Mapping[Any, object], exclude: Collection[Any], include: Collection[Any]
) -> None:
    """The fields among ``values`` (a framework's dict of them) into ``fields``, as text."""
    for name, value in values.items():
        if name not in exclude:
            text = _field_text(name, value, include)
            if text is not None:
                fields[name] = text


def record_extras(
    record: logging.LogRecord, exclude: Collection[Any] = (), include: Collection[Any] = ()
) -> dict[Any, str]:
    """The ``extra=`` fields of ``record`` as text, in insertion order (see the module
    docstring for which are kept).

    Names starting with ``_`` are private, not extras: structlog's ``ProcessorFormatter``
    keeps its ``_logger`` and ``_name`` there.  One pass over the record's attributes, with
    the common field (a scalar) decided by two set lookups (benchmarks/: caller-cost row).
    """
    attrs = record.__dict__
    if len(attrs) <= _FRESH_RECORD_SIZE or attrs.keys() <= _RESERVED:  # the common cases
        return {}
    fields: dict[Any, str] = {}
    for name, value in attrs.items():
        if name in _RESERVED or name in exclude:
            continue
        if isinstance(name, str) and name.startswith("_"):
            event = record.msg
            if name == "_logger" and type(event) is dict:  # structlog's event dict is the fields
                _add(
                    fields,
                    {k: v for k, v in event.items() if k not in _STRUCTLOG_NOT_FIELDS},
                    exclude,
                    include,
                )
            continue
        kind = type(value)
        if kind in _SCALARS and name not in PRESENTATION_ONLY:
            fields[name] = value if kind is str else safe_str(value)
        elif kind is dict and name == "extra":  # loguru's bound fields, as its handler sink passes them
            _add(fields, value, exclude, include)
        else:
            text = _field_text(name, value, include)
            if text is not None:
                fields[name] = text
    return fields
