from __future__ import annotations

import logging
import logging.config
import re
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lelog import ConfigError
from lelog._line import format_time
from lelog._logfmt import LogfmtFormatter, logfmt_value, record_extras

PROPERTY = settings(max_examples=150, deadline=None)

_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}


def parse(line: str) -> list[tuple[str, str]]:
    """A strict logfmt reader: ``key=value`` pairs separated by one space; raises on junk."""
    pairs = []
    i = 0
    while i < len(line):
        eq = line.index("=", i)
        key = line[i:eq]
        assert key and " " not in key and '"' not in key, f"bad key {key!r}"
        i = eq + 1
        if line.startswith('"', i):
            out = []
            i += 1
            while line[i] != '"':
                if line[i] == "\\":
                    code = line[i + 1]
                    if code == "u":
                        out.append(chr(int(line[i + 2 : i + 6], 16)))
                        i += 6
                    else:
                        out.append(_UNESCAPE[code])
                        i += 2
                else:
                    assert line[i].isprintable() or not 0 <= ord(line[i]) < 0x20, "raw control"
                    out.append(line[i])
                    i += 1
            value = "".join(out)
            i += 1
        else:
            end = line.find(" ", i)
            end = len(line) if end < 0 else end
            value = line[i:end]
            assert value and not set(value) & set('"=\\'), f"bad bare value {value!r}"
            i = end
        pairs.append((key, value))
        if i < len(line):
            assert line[i] == " " and i + 1 < len(line), "pairs are separated by one space"
            i += 1
    return pairs


def make_record(
    msg: str, *args: object, level: int = logging.INFO, extra: dict[str, Any] | None = None
) -> logging.LogRecord:
    return logging.getLogger("lelog.test").makeRecord(
        "lelog.test", level, __file__, 1, msg, args, None, extra=extra
    )


RESERVED = {*logging.makeLogRecord({}).__dict__, "message", "asctime", "taskName"}
all_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)


@PROPERTY
@given(value=all_text)
def test_value_round_trips(value: str) -> None:
    rendered = logfmt_value(value)
    assert "\n" not in rendered and "\r" not in rendered
    assert parse(f"k={rendered}") == [("k", value)]


@PROPERTY
@given(value=st.text(st.sampled_from("abcXYZ019-_./:@+é"), min_size=1))
def test_plain_values_stay_bare(value: str) -> None:
    assert logfmt_value(value) == value


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("", '""'),
        ("a b", '"a b"'),
        ("a=b", '"a=b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("C:\\dir", '"C:\\\\dir"'),
        ("l1\nl2\r\tx", '"l1\\nl2\\r\\tx"'),
        ("bell\x07del\x7f", '"bell\\u0007del\\u007f"'),
        ("nbsp\xa0", '"nbsp\xa0"'),
        (3, "3"),
        (None, "None"),
        (["a b"], "\"['a b']\""),
    ],
)
def test_value_examples(value: object, rendered: str) -> None:
    assert logfmt_value(value) == rendered


def test_unprintable_value_does_not_fail() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("nope")

    assert logfmt_value(Broken()) == '"<unprintable Broken>"'


def test_format_matches_the_original_line() -> None:
    record = make_record("hello %s", "world")
    line = LogfmtFormatter().format(record)
    assert line == f'time="{format_time(record.created)}" level=info msg="hello world"'
    assert re.fullmatch(r'time="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z" .*', line)


def test_msg_is_always_quoted_and_level_lower_case() -> None:
    formatter = LogfmtFormatter()
    warning = formatter.format(make_record("hi", level=logging.WARNING))
    assert warning.endswith(' level=warning msg="hi"')
    assert ' level="level 5" ' in formatter.format(make_record("x", level=5))


@PROPERTY
@given(
    msg=all_text,
    extras=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(lambda k: k not in RESERVED),
        st.one_of(all_text, st.integers(), st.booleans(), st.none()),
        max_size=4,
    ),
)
def test_format_round_trips(msg: str, extras: dict[str, object]) -> None:
    record = make_record("%s", msg, extra=extras)
    line = LogfmtFormatter().format(record)
    assert "\n" not in line
    pairs = parse(line)
    expected_extras = [
        (f"fields.{k}" if k in {"time", "level", "msg"} else k, str(v)) for k, v in extras.items()
    ]
    assert pairs == [
        ("time", format_time(record.created)),
        ("level", "info"),
        ("msg", msg),
        *expected_extras,
    ]


def test_record_extras_are_the_extra_fields_in_order() -> None:
    record = make_record("m", extra={"user": "bob", "attempt": 2, "zone": "eu"})
    assert list(record_extras(record).items()) == [("user", "bob"), ("attempt", "2"), ("zone", "eu")]
    assert record_extras(record, exclude={"attempt"}) == {"user": "bob", "zone": "eu"}
    assert record_extras(make_record("m")) == {}


def test_record_extras_ignore_what_other_formatters_add() -> None:
    record = make_record("m", extra={"user": "bob"})
    logging.Formatter("%(asctime)s %(message)s").format(record)
    record.taskName = "t"  # set by asyncio-aware Pythons (3.12+)
    assert record_extras(record) == {"user": "bob"}


def test_formatter_extras_options() -> None:
    record = make_record("m", extra={"user": "bob smith", "secret": "x", "level": "custom", "a key=": "v"})
    assert (
        LogfmtFormatter()
        .format(record)
        .endswith(' msg="m" user="bob smith" secret=x fields.level=custom a_key_=v')
    )
    assert (
        LogfmtFormatter(exclude=["secret"])
        .format(record)
        .endswith(' msg="m" user="bob smith" fields.level=custom a_key_=v')
    )
    assert LogfmtFormatter(extras=False).format(record).endswith(' msg="m"')
    with pytest.raises(ConfigError, match="exclude must be a list of field names"):
        LogfmtFormatter(exclude="secret")


def test_keys_are_made_parseable() -> None:
    record = make_record("m", extra={1: "a", "": "b", 'x\u2028y="\\': "c", "ok.key-1": "d"})
    line = LogfmtFormatter().format(record)
    assert line.endswith(' msg="m" 1=a _=b x_y___=c ok.key-1=d')
    assert [k for k, _ in parse(line)][3:] == ["1", "_", "x_y___", "ok.key-1"]


def test_exception_and_stack_follow_on_new_lines() -> None:
    try:
        1 / 0
    except ZeroDivisionError:
        exc_info = sys.exc_info()
    record = logging.getLogger("lelog.test").makeRecord(
        "lelog.test",
        logging.ERROR,
        __file__,
        1,
        "failed",
        (),
        exc_info,
        sinfo="Stack (most recent call last):\n  here",
    )
    line = LogfmtFormatter().format(record)
    first, *rest = line.split("\n")
    assert first.endswith('level=error msg="failed"')
    assert rest[0] == "Traceback (most recent call last):"
    assert "ZeroDivisionError: division by zero" in rest
    assert rest[-2:] == ["Stack (most recent call last):", "  here"]
    assert record.exc_text is not None and record.exc_text in line  # cached, as Formatter does


def test_cached_exc_text_is_used_without_exc_info() -> None:
    record = make_record("failed")
    record.exc_text = "Traceback: cached"
    assert LogfmtFormatter().format(record).endswith('msg="failed"\nTraceback: cached')


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.mark.parametrize(
    ("options", "suffix"),
    [({}, ' msg="from dictConfig 7" user=ann'), ({"extras": False}, ' msg="from dictConfig 7"')],
)
def test_dict_config(options: dict[str, object], suffix: str) -> None:
    name = "lelog.test.dictconfig"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"logfmt": {"()": "lelog.LogfmtFormatter", **options}},
            "handlers": {"list": {"()": ListHandler, "formatter": "logfmt"}},
            "loggers": {name: {"handlers": ["list"], "level": "INFO", "propagate": False}},
        }
    )
    logger = logging.getLogger(name)
    try:
        logger.info("from dictConfig %d", 7, extra={"user": "ann"})
        (handler,) = logger.handlers
        assert isinstance(handler, ListHandler)
        assert isinstance(handler.formatter, LogfmtFormatter)
        (line,) = handler.lines
        assert line.startswith('time="') and line.endswith(" level=info" + suffix)
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
