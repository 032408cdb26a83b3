"""The cached fast paths of ``LogfmtFormatter.format`` and ``format_time`` write the very
bytes of the plain code they replaced (kept here as the reference), for any time, level,
message, arguments and extras, in any order of seconds, and from threads sharing one
formatter."""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lelog._line import format_time
from lelog._logfmt import ESCAPES, LogfmtFormatter, _logfmt_key, logfmt_value, record_extras

PROPERTY = settings(max_examples=300, deadline=None)


def reference_format_time(ts: float) -> str:
    """``format_time`` computed plainly, nothing cached."""
    sec = int(ts // 1)
    micros = int((ts - sec) * 1_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(sec))}.{micros:06d}Z"


def _reference_quote(text: str) -> str:
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return f'"{text.translate(ESCAPES)}"'


def reference_format(formatter: LogfmtFormatter, record: logging.LogRecord) -> str:
    """``LogfmtFormatter.format`` as it was before its cached parts."""
    text = (
        f'time="{reference_format_time(record.created)}" '
        f"level={logfmt_value(record.levelname.lower())} msg={_reference_quote(record.getMessage())}"
    )
    if formatter.extras:
        extras = record_extras(record, formatter.exclude)
        if extras:
            text += "".join([f" {_logfmt_key(key)}={logfmt_value(value)}" for key, value in extras.items()])
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        text += "\n" + record.exc_text
    if record.stack_info:
        text += "\n" + formatter.formatStack(record.stack_info)
    return text


# 1970 to 2999, whole seconds and their neighbours included (the cache's edges).
epochs = st.one_of(
    st.floats(min_value=0.0, max_value=32_503_679_999.0, allow_nan=False),
    st.integers(min_value=0, max_value=32_503_679_999).map(float),
    st.integers(min_value=1, max_value=4_000_000_000).map(lambda s: s - 1e-6),
    st.floats(min_value=1.7e9, max_value=1.7e9 + 3, allow_nan=False),  # runs within a second
)
levels = st.one_of(
    st.sampled_from(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "Level 5", "NOTICE"]),
    st.text(max_size=8),
)
messages = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["handled request %d: 200 OK", 'a "quoted" %s', "back\\slash %r", "tab\t%s\n"]),
)
arg_values = st.one_of(st.integers(), st.text(max_size=10), st.floats(allow_nan=False))
extra_values = st.dictionaries(
    st.text(min_size=1, max_size=6).filter(
        lambda k: k not in logging.LogRecord("", 0, "", 0, "", (), None).__dict__
    ),
    st.one_of(st.text(max_size=10), st.integers(), st.none()),
    max_size=3,
)


def _record(ts: float, levelname: str, msg: str, arg: Any, extras: dict[str, Any]) -> logging.LogRecord:
    args = (arg,) if msg.count("%") == 1 and "%%" not in msg else ()
    record = logging.LogRecord("app", logging.INFO, "app.py", 1, msg, args, None)
    record.created = ts
    record.levelname = levelname
    record.__dict__.update(extras)
    return record


@PROPERTY
@given(st.lists(epochs, min_size=1, max_size=6))
def test_format_time_writes_the_reference_bytes_in_any_order_of_seconds(times: list[float]) -> None:
    for ts in times:
        assert format_time(ts) == reference_format_time(ts)


@PROPERTY
@given(epochs)
def test_format_time_agrees_with_datetime(ts: float) -> None:
    expected = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=int(ts // 1))
    text = format_time(ts)
    assert text[:19] == expected.strftime("%Y-%m-%dT%H:%M:%S") and text.endswith("Z") and len(text) == 27


@PROPERTY
@given(
    st.lists(st.tuples(epochs, levels, messages, arg_values, extra_values), min_size=1, max_size=5),
    st.booleans(),
)
def test_the_formatter_writes_the_reference_bytes(cases: list[tuple[Any, ...]], extras: bool) -> None:
    formatter = LogfmtFormatter(extras=extras, exclude={"skip"})
    for case in cases:  # one formatter through several seconds and levels: its caches change
        # A message that does not take its argument ("%d" % "x", "%d" % inf) raises the same
        # error either way (logging's handleError reports it).
        try:
            expected = reference_format(formatter, _record(*case))
        except Exception as exc:
            expected = repr(type(exc))
        try:
            got = formatter.format(_record(*case))
        except Exception as exc:
            got = repr(type(exc))
        assert got == expected


def test_exceptions_and_stacks_follow_as_before() -> None:
    formatter = LogfmtFormatter()
    try:
        1 / 0
    except ZeroDivisionError:
        exc_info = sys.exc_info()
    for info in (exc_info, None):
        record = logging.LogRecord("app", logging.ERROR, "app.py", 1, "failed %s", ("x",), info)
        record.stack_info = "Stack (most recent call last):\n  here" if info is None else None
        twin = logging.LogRecord("app", logging.ERROR, "app.py", 1, "failed %s", ("x",), info)
        twin.created, twin.stack_info = record.created, record.stack_info
        assert formatter.format(record) == reference_format(formatter, twin)


def test_threads_sharing_a_formatter_each_get_their_own_seconds() -> None:
    formatter = LogfmtFormatter()
    mismatches: list[tuple[float, str]] = []

    def work(base: float) -> None:
        for i in range(3000):
            record = _record(base + i * 0.37, "INFO", "n=%d", i, {})
            if formatter.format(record) != reference_format(
                formatter, _record(base + i * 0.37, "INFO", "n=%d", i, {})
            ):
                mismatches.append((record.created, formatter.format(record)))

    threads = [threading.Thread(target=work, args=(1.7e9 + k * 100_000.5,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mismatches == []
