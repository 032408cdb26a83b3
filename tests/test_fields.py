"""Which ``extra=`` fields reach a line: data values as text, everything else left out unless
``include`` names it (docs/architecture.md#fields)."""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import logging
import logging.config
import socket
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lelog import ConfigError, LogfmtFormatter, StreamHandler
from lelog._fields import MAX_DEPTH, data_text, record_extras
from tests.helpers import GENEROUS
from tests.service import FakeLogService


class Color(enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 3


class Name(str):
    pass


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque object at 0x1234>"


class _Broken:
    def __str__(self) -> str:
        raise RuntimeError("no str")


def make_record(**extra: Any) -> logging.LogRecord:
    return logging.getLogger("tests.fields").makeRecord(
        "tests.fields", logging.INFO, "f.py", 1, "m", (), None, extra=extra
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("text", "text"),
        (42, "42"),
        (1.5, "1.5"),
        (True, "True"),
        (None, "None"),
        (datetime.datetime(2026, 1, 2, 3, 4, 5), "2026-01-02 03:04:05"),
        (datetime.date(2026, 1, 2), "2026-01-02"),
        (datetime.time(3, 4), "03:04:00"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (decimal.Decimal("1.10"), "1.10"),
        (Color.RED, "Color.RED"),
        (Size.BIG, str(Size.BIG)),
        (Name("sub"), "sub"),
        (["a", 1, None], '["a",1,null]'),
        (("a", 2.5), '["a",2.5]'),
        (
            {"user": "ann", "ids": [1, 2], "at": datetime.date(2026, 1, 2)},
            '{"user":"ann","ids":[1,2],"at":"2026-01-02"}',
        ),
        ({1: "one", None: "none"}, '{"1":"one","null":"none"}'),
        ({"é": "✓"}, '{"é":"✓"}'),
    ],
)
def test_data_values_are_kept_as_text_and_containers_as_json(value: object, text: str) -> None:
    assert data_text(value) == text


@pytest.mark.parametrize(
    "value",
    [
        _Opaque(),
        b"bytes",
        {"a", "b"},
        print,
        logging.getLogger("x"),
        ["fine", _Opaque()],
        {"fine": {"deeper": _Opaque()}},
        {("tuple", "key"): 1},
    ],
    ids=["object", "bytes", "set", "function", "logger", "list-holding-object", "nested-object", "tuple-key"],
)
def test_anything_else_is_not_data(value: object) -> None:
    assert data_text(value) is None


def test_containers_nest_only_so_deep_and_a_list_holding_itself_is_not_data() -> None:
    nested: Any = "leaf"
    for _ in range(MAX_DEPTH):
        nested = [nested]
    assert data_text(nested) is not None
    assert data_text([nested]) is None
    looping: list[Any] = []
    looping.append(looping)
    assert data_text(looping) is None


def test_a_socket_is_left_out_of_the_text_and_the_args_by_default(service: FakeLogService) -> None:
    logger = logging.getLogger("tests.fields.socket")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = StreamHandler(
        "fields/socket",
        url=service.url,
        account_id="acct",
        token="secret-token",
        flush_interval=0.05,
        close_timeout=GENEROUS,
    )
    included = StreamHandler(
        "fields/included",
        url=service.url,
        account_id="acct",
        token="secret-token",
        include=["request"],
        flush_interval=0.05,
        close_timeout=GENEROUS,
    )
    logger.addHandler(handler)
    logger.addHandler(included)
    with socket.socket() as sock:
        try:
            logger.info(
                '"GET / HTTP/1.1" 200',
                extra={
                    "request": sock,
                    "status_code": 200,
                    "tags": ["a", "b"],
                    "color_message": "\x1b[32m200\x1b[0m",
                },
            )
        finally:
            logger.removeHandler(handler)
            logger.removeHandler(included)
            handler.close()
            included.close()
    (row,) = service.blob_lines("fields/socket") or []
    assert row["args"] == {"status_code": "200", "tags": '["a","b"]'}
    assert row["out"].endswith('msg="\\"GET / HTTP/1.1\\" 200" status_code=200 tags="[\\"a\\",\\"b\\"]"\n')
    (kept,) = service.blob_lines("fields/included") or []
    assert kept["args"]["request"].startswith("<socket.socket") and "color_message" not in kept["args"]


def test_include_keeps_presentation_fields_and_objects_as_their_text() -> None:
    record = make_record(color_message="\x1b[1mhi\x1b[0m", obj=_Opaque(), broken=_Broken(), n=1)
    assert record_extras(record) == {"n": "1"}
    assert record_extras(record, include={"color_message", "obj", "broken"}) == {
        "color_message": "\x1b[1mhi\x1b[0m",
        "obj": "<opaque object at 0x1234>",
        "broken": "<unprintable _Broken>",
        "n": "1",
    }
    assert record_extras(record, exclude={"n"}, include={"obj"}) == {"obj": "<opaque object at 0x1234>"}
    line = LogfmtFormatter(include=["obj"]).format(record)
    assert line.endswith(' msg="m" obj="<opaque object at 0x1234>" n=1')


def test_include_and_exclude_are_lists_of_names_and_never_name_the_same_field(
    service: FakeLogService,
) -> None:
    values = {"url": service.url, "account_id": "acct", "token": "secret-token"}
    with pytest.raises(ConfigError, match=r"include must be a list of field names.*\['request'\]"):
        StreamHandler("k", include="request", **values)
    with pytest.raises(ConfigError, match=r"\['user'\] are in both exclude and include"):
        LogfmtFormatter(exclude=["user", "a"], include=["user"])
    with pytest.raises(ConfigError, match="in both exclude and include"):
        StreamHandler("k", exclude=["user"], include=["user"], **values)


def test_a_handler_configured_by_dictconfig_takes_include(service: FakeLogService) -> None:
    logger = logging.getLogger("tests.fields.dictconfig")
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "stream": {
                    "class": "lelog.StreamHandler",
                    "key": "fields/dict",
                    "url": service.url,
                    "account_id": "acct",
                    "token": "secret-token",
                    "include": ["conn"],
                    "exclude": ["user"],
                    "close_timeout": GENEROUS,
                }
            },
            "loggers": {logger.name: {"level": "INFO", "handlers": ["stream"], "propagate": False}},
        }
    )
    (handler,) = logger.handlers
    try:
        logger.info("x", extra={"conn": _Opaque(), "user": "ann", "other": _Opaque()})
    finally:
        logger.removeHandler(handler)
        handler.close()
    (row,) = service.blob_lines("fields/dict") or []
    assert row["args"] == {"conn": "<opaque object at 0x1234>"}


_JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_JSON_VALUES.filter(lambda v: isinstance(v, (list, dict))))
def test_a_container_of_data_reads_back_as_itself(value: Any) -> None:
    text = data_text(value)
    assert text is not None
    assert json.loads(text) == value
