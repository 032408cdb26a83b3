"""Trace correlation: the active OpenTelemetry span's ids on each record's line (opt-in).

``StreamHandler(trace_context=True)`` (or ``LELOG_TRACE_CONTEXT=true``) adds ``trace_id`` and
``span_id`` to the fields of a record emitted inside an active, valid span: lower-case hex, 32
and 16 characters, as OpenTelemetry's own logging integration writes them.  They are read
when the record is emitted, on the thread that logs: the span lives in that thread's (or
task's) context, and the writer's worker has none.

OpenTelemetry is no dependency of lelog: ``opentelemetry.trace`` is imported only when the
option is on, and a handler asked for it without the package installed is refused when it
is built.  Off, nothing is imported and records pay nothing (docs/architecture.md#fields).
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, Callable, Mapping, Optional, Tuple

from ._config import _parse_bool
from ._exceptions import ConfigError
from ._fields import record_extras
from ._logfmt import LogfmtFormatter

__all__ = ["TRACE_CONTEXT_ENV", "SpanIds", "SpanLogfmtFormatter", "span_ids_reader", "with_span_ids"]

TRACE_CONTEXT_ENV = "LELOG_TRACE_CONTEXT"

#: Returns the active span's (trace id, span id) as hex, or None outside a valid span.
SpanIds = Callable[[], Optional[Tuple[str, str]]]


def _enabled(trace_context: object, environ: Mapping[str, str]) -> bool:
    """The explicit value, else ``LELOG_TRACE_CONTEXT``, else off."""
    if trace_context is None:
        raw = environ.get(TRACE_CONTEXT_ENV)
        return False if raw is None else _parse_bool("trace_context", raw)
    if not isinstance(trace_context, bool):
        raise ConfigError(f"trace_context must be true or false, got {trace_context!r}")
    return trace_context


def span_ids_reader(trace_context: object, environ: Optional[Mapping[str, str]] = None) -> Optional[SpanIds]:
    """What reads the active span's ids when trace correlation is on; None when it is off."""
    if not _enabled(trace_context, os.environ if environ is None else environ):
        return None
    try:
        trace: Any = importlib.import_module("opentelemetry.trace")
    except ImportError:
        raise ConfigError(
            "trace_context needs OpenTelemetry: install opentelemetry-api "
            f"(pip install opentelemetry-api), or turn trace_context off (unset {TRACE_CONTEXT_ENV})"
        ) from None
    get_current_span = trace.get_current_span

    def span_ids() -> Optional[tuple[str, str]]:
        try:
            context = get_current_span().get_span_context()
            if not context.is_valid:
                return None
            return format(context.trace_id, "032x"), format(context.span_id, "016x")
        except Exception:  # a broken tracer costs the ids, never the record
            return None

    return span_ids


def with_span_ids(fields: dict[Any, str], span_ids: SpanIds) -> dict[Any, str]:
    """``fields`` with the active span's ids added; a field the program set itself wins."""
    ids = span_ids()
    if ids is not None:
        fields.setdefault("trace_id", ids[0])
        fields.setdefault("span_id", ids[1])
    return fields


class SpanLogfmtFormatter(LogfmtFormatter):
    """``LogfmtFormatter`` whose records' fields carry the active span's ids: the formatter
    of a ``StreamHandler`` with ``trace_context``, so a line's text and its ``args`` agree."""

    fresh_record_size = -1  # every record has fields to look at: the span's ids

    def __init__(self, span_ids: SpanIds, **options: Any) -> None:
        super().__init__(**options)
        self._span_ids = span_ids

    def fields(self, record: logging.LogRecord) -> dict[Any, str]:
        return with_span_ids(record_extras(record, self.exclude, self.include), self._span_ids)
