"""``WriterOptions``: how a writer batches, what it may hold, and its crash spool."""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping, Optional

import attrs

from ._config import MAX_SECONDS, check_positive, reject_unknown, writer_options_from_env
from ._line import MAX_LINE_BYTES
from ._spool import DEFAULT_FSYNC_INTERVAL, SPOOL_DIR_ENV, check_spool_dir

__all__ = ["WriterOptions"]


def _positive(kind: type) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        # The one positive-number check; seconds are bounded so no wait overflows at exit.
        check_positive(
            attribute.name, value, whole=kind is int, maximum=MAX_SECONDS if kind is float else math.inf
        )

    return check


def _spool_dir_from_env() -> Optional[str]:
    """``$LELOG_SPOOL_DIR``, checked as an explicit value is: set but empty is a mistake."""
    value = os.environ.get(SPOOL_DIR_ENV)
    return None if value is None else check_spool_dir(value, SPOOL_DIR_ENV)


@attrs.frozen(kw_only=True)
class WriterOptions:
    """How the writer batches and what it may hold; plain values, checked when built."""

    #: A pending line is pushed at most this many seconds after it was written.
    flush_interval: float = attrs.field(default=1.0, validator=_positive(float))
    #: One PUT carries at most this many lines and bytes (proxies limit request sizes).
    #: 5000 matches what the service keeps live; fewer lines per PUT cost the worker
    #: about 1.5 us more per line (benchmarks/: caller-cost and throughput rows).
    max_batch_lines: int = attrs.field(default=5000, validator=_positive(int))
    max_batch_bytes: int = attrs.field(default=1 << 20, validator=_positive(int))
    #: Lines not yet sent that the writer holds, by count and by bytes; beyond, the oldest go.
    max_pending_lines: int = attrs.field(default=50_000, validator=_positive(int))
    max_pending_bytes: int = attrs.field(default=16 << 20, validator=_positive(int))
    #: The history kept for the final upload, in bytes of NDJSON; the oldest lines go first.
    history_bytes: int = attrs.field(default=5 << 20, validator=_positive(int))
    #: close() runs the final push, the upload and the close within this many seconds.
    close_timeout: float = attrs.field(default=5.0, validator=_positive(float))
    #: A partial line longer than this many characters is cut into a line of its own.
    max_partial: int = attrs.field(default=MAX_LINE_BYTES, validator=_positive(int))
    #: Also append every accepted line to a crash spool here, for ``lelog recover`` after a
    #: kill (default ``$LELOG_SPOOL_DIR``; None: no spool).  A writer option, not a
    #: ``LogConfig`` field: it is a path on this machine, not a setting of the service.
    spool_dir: Optional[str] = attrs.field(factory=_spool_dir_from_env, converter=check_spool_dir)
    #: How often the spool is synced to disk (only a machine crash loses what is not).
    spool_fsync_interval: float = attrs.field(default=DEFAULT_FSYNC_INTERVAL, validator=_positive(float))

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> WriterOptions:
        """Build from keyword arguments, naming any unknown one; options not given come from
        their ``LELOG_<OPTION>`` variables where set (``writer_options_from_env``)."""
        reject_unknown(options, {f.name for f in attrs.fields(cls)}, "StreamWriter")
        return cls(**{**writer_options_from_env(), **options})
