"""A record captured at call time and rendered by the worker gives the very bytes of the same
record formatted on the caller (``LogfmtFormatter`` then the ready-line encoder), for any
time, level name, message, extras, masking and trimming; and through a real handler and
service, the stored lines of both paths are the same."""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lelog import LogfmtFormatter, StreamHandler
from lelog._encode import Item, RecordLine, encode_batch, ready
from lelog._masking import Masker
from tests.helpers import GENEROUS
from tests.test_handler import plain
from tests.test_logfmt_identity import _record, epochs, levels, messages

PROPERTY = settings(max_examples=300, deadline=None)

extras = st.dictionaries(
    st.one_of(
        st.sampled_from(["time", "level", "msg", "user id", 'q"k', "ok", "x=y", "tab\t"]),
        st.text(min_size=1, max_size=6),
    ).filter(lambda k: k not in logging.LogRecord("", 0, "", 0, "", (), None).__dict__ and k[0] != "_"),
    st.one_of(st.text(max_size=10), st.sampled_from(["", "a b", 'say "hi"', "line\nbreak", "se cret"])),
    max_size=4,
)


def _message(msg: str) -> str:
    record = _record(0.0, "INFO", msg, None, {})
    try:
        return record.getMessage()
    except Exception:  # "%d" % None: logging reports it either way; not a case here
        assume(False)
        raise


def caller_item(ts: float, levelname: str, msg: str, extra: dict[str, str], kind: RecordLine) -> Item:
    """The line ``StreamHandler`` made before the capture path: the formatter's text on the
    caller, a newline, the lower-case level, the extras as args unless text-only."""
    record = _record(ts, levelname, msg, None, extra)
    text = LogfmtFormatter().format(record) + "\n"
    args = extra or None if kind is RecordLine.EXTRAS_AS_ARGS else None
    return (ts, levelname.lower(), text, args, None)


@PROPERTY
@given(
    st.lists(
        st.tuples(epochs, levels, messages, extras, st.sampled_from(RecordLine)), min_size=1, max_size=6
    ),
    st.integers(0, 10**6),
    st.booleans(),
    st.booleans(),
)
def test_a_captured_record_encodes_to_the_bytes_of_the_formatted_one(
    cases: list[tuple[Any, ...]], first: int, mask: bool, trim: bool
) -> None:
    masker = Masker(secrets=["cret", "hunter22"], patterns=[r"\d{4}\n?"]) if mask else None
    captured: list[Item] = [(ts, lv, _message(msg), ex or None, kind) for ts, lv, msg, ex, kind in cases]
    formatted = [caller_item(*case) for case in cases]
    # One batch through several seconds and levels, mixed with ready lines: the caches change.
    mixed = [item for pair in zip(captured, formatted) for item in pair]
    expected = [item for pair in zip(formatted, formatted) for item in pair]
    assert encode_batch(mixed, first, masker, trim) == encode_batch(expected, first, masker, trim)
    for item, ready_item in zip(captured, formatted):
        assert ready(item) == ready_item[1:4]


def test_a_captured_record_longer_than_the_limit_is_truncated_and_counted_alike() -> None:
    long = "é" * 40_000
    item: Item = (1.5, "INFO", long, {"k": "v"}, RecordLine.EXTRAS_AS_ARGS)
    assert encode_batch([item], 0, None, False) == encode_batch(
        [caller_item(1.5, "INFO", long, {"k": "v"}, RecordLine.EXTRAS_AS_ARGS)], 0, None, False
    )
    assert encode_batch([item], 0, None, False)[1] == 1


# -- through the handler: the capture path against the caller's formatting ----------------------


class _Odd:
    def __str__(self) -> str:
        return "odd value"


class _Broken:
    def __str__(self) -> str:
        raise RuntimeError("no str")


def _log_everything(logger: logging.Logger) -> None:
    logger.info("handled request %d: %s", 7, "200 OK")
    logger.warning('quote " backslash \\ tab \t newline \n end')
    logger.error(
        "extras",
        extra={
            "user": "ann",
            "time": "clash",
            "odd": _Odd(),
            "broken": _Broken(),
            "conn": _Odd(),
            "tags": ["a", 1],
        },
    )
    logger.info("secret hunter22 in the text", extra={"hunter22": "hunter22"})
    logger.log(5, "a custom level")
    logger.critical("unicode: é ✓ \U0001f600 and a lone surrogate \udc80")
    logger.info("hidden extra", extra={"hidden": "no", "shown": "yes"})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("with a traceback")  # formatted on the caller either way
    logger.info("stack", stack_info=True)
    logger.info("x" * 80_000)  # truncated


def _lines_by_path(service: Any, handlers: dict[str, StreamHandler]) -> dict[str, list[dict[str, Any]]]:
    for handler in handlers.values():
        handler.close()
    out = {}
    for name, handler in handlers.items():
        lines = service.blob_lines(handler.writer.key)
        assert lines is not None, name
        out[name] = [{k: v for k, v in line.items() if k != "pos"} for line in lines]
    return out


def test_through_a_handler_the_captured_path_stores_what_the_caller_path_stores(service: Any) -> None:
    fields = {"exclude": ["hidden"], "include": ["odd", "broken"]}  # "conn" is no data: left out
    values = dict(plain(service), secrets=["hunter22"], **fields)
    captured = StreamHandler("paths/captured", **values)  # its own formatter: the capture path
    on_caller = StreamHandler("paths/caller", **values)
    on_caller.setFormatter(LogfmtFormatter(**fields))  # another instance: formatted here
    text_only = [StreamHandler(f"paths/text-only-{i}", extras_as_args=False, **values) for i in range(2)]
    text_only[1].setFormatter(LogfmtFormatter(**fields))
    formatted_here: list[str] = []  # records the captured handler formats on the caller
    own = captured.formatter
    assert own is not None
    original_format = own.format
    own.format = lambda record: formatted_here.append(record.getMessage()) or original_format(record)  # type: ignore[method-assign]
    logger = logging.getLogger("tests.encode.paths")
    logger.propagate, logger.level = False, 1
    for handler in (captured, on_caller, *text_only):
        logger.addHandler(handler)
    try:
        _log_everything(logger)
        # From a second thread too: the encoder's caches are per batch, the formatter's shared.
        thread = threading.Thread(target=_log_everything, args=(logger,))
        thread.start()
        thread.join(GENEROUS)
    finally:
        for handler in (captured, on_caller, *text_only):
            logger.removeHandler(handler)
    stored = _lines_by_path(
        service, {"captured": captured, "caller": on_caller, "t0": text_only[0], "t1": text_only[1]}
    )
    assert stored["captured"] == stored["caller"] and len(stored["captured"]) > 20
    assert formatted_here == ["with a traceback", "stack"] * 2  # the rest were captured
    assert stored["t0"] == stored["t1"]
    assert all(line["args"] is None for line in stored["t0"])
    outs = "".join(line["out"] for line in stored["captured"])
    assert "hunter22" not in outs and "hidden=no" not in outs and "shown=yes" in outs
    assert 'odd="odd value"' in outs and "broken=<unprintable" in outs.replace('broken="<', "broken=<")
    assert "conn=" not in outs and 'tags="[\\"a\\",1]"' in outs
    assert captured.stats.dropped_total == 0 and captured.stats.truncated == 2


def test_a_record_whose_filter_makes_it_odd_is_formatted_on_the_caller(service: Any) -> None:
    handler = StreamHandler("paths/odd", **plain(service))

    def odd(record: logging.LogRecord) -> bool:
        record.created = int(record.created)  # type: ignore[assignment]  # an int, not a float
        record.__dict__[3] = "a non-str extra name"
        return True

    handler.addFilter(odd)
    logger = logging.getLogger("tests.encode.odd")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("still delivered")
    finally:
        logger.removeHandler(handler)
    handler.close()
    lines: Optional[list[dict[str, Any]]] = service.blob_lines("paths/odd")
    assert lines is not None and len(lines) == 1
    assert 'msg="still delivered" 3="a non-str extra name"' in lines[0]["out"]
    assert lines[0]["args"] == {"3": "a non-str extra name"} and handler.stats.sent == 1


class _Prefixed(StreamHandler):
    def format(self, record: logging.LogRecord) -> str:
        return "[svc] " + super().format(record)


def _one_line(service: Any, handler: StreamHandler, **extra: Any) -> str:
    logger = logging.getLogger(f"tests.encode.one.{handler.writer.key}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("hello", extra=extra or None)
    finally:
        logger.removeHandler(handler)
    handler.close()
    lines = service.blob_lines(handler.writer.key)
    assert lines is not None and len(lines) == 1
    return str(lines[0]["out"])


def test_a_subclass_that_formats_its_own_way_is_formatted_on_the_caller(service: Any) -> None:
    out = _one_line(service, _Prefixed("paths/subclass", **plain(service)))
    assert out.startswith('[svc] time="') and out.endswith('level=warning msg="hello"\n')


def test_changes_to_the_handlers_formatter_are_honoured(service: Any) -> None:
    no_extras = StreamHandler("paths/no-extras", **plain(service))
    assert isinstance(no_extras.formatter, LogfmtFormatter)
    no_extras.formatter.extras = False
    assert _one_line(service, no_extras, user="bob").endswith('msg="hello"\n')
    excluding = StreamHandler("paths/excluding", **plain(service))
    assert isinstance(excluding.formatter, LogfmtFormatter)
    excluding.formatter.exclude = frozenset({"user"})
    out = _one_line(service, excluding, user="bob", job="7")
    assert out.endswith('msg="hello" job=7\n')
