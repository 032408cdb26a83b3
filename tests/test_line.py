"""The wire form of a line (docs/protocol.md#the-line)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lelog import Line
from lelog._line import (
    MAX_LINE_BYTES,
    TRUNCATION_SUFFIX,
    encode_line,
    format_time,
    json_array,
    ndjson,
    parse_ndjson,
    truncate_out,
)


def test_fields_in_wire_order_and_compact() -> None:
    line = Line("hello\n", 3, 1_795_000_000.25, level="warn", args={"n": 1})
    data = line.encode()
    assert data == (
        b'{"level":"warn","pos":3,"out":"hello\\n","time":"2026-11-18T11:06:40.250000Z","args":{"n":"1"}}'
    )
    assert list(json.loads(data)) == ["level", "pos", "out", "time", "args"]


def test_args_null_when_absent_and_values_are_strings() -> None:
    assert json.loads(Line("x", 0, 0.0).encode())["args"] is None
    assert Line("x", 0, 0.0, args={"a": 1, "b": None}).args == {"a": "1", "b": "None"}


def test_time_always_has_a_zone() -> None:
    assert format_time(0.5) == "1970-01-01T00:00:00.500000Z"
    aware = Line("x", 0, dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)).time
    assert aware == "2026-01-02T03:04:05.000000+00:00"
    naive = Line("x", 0, dt.datetime(2026, 1, 2, 3, 4, 5)).time
    assert naive[-6] in "+-" and naive[-3] == ":"
    with pytest.raises(ValueError, match="zone"):
        Line("x", 0, "2026-11-27T10:00:00")


def test_non_ascii_is_utf8_and_lone_surrogates_do_not_break_encoding() -> None:
    data = Line("héllo ✓", 0, 0.0).encode()
    assert "héllo ✓".encode() in data
    broken = encode_line("info", 0, "bad \udc80 char", "t", None)
    assert json.loads(broken)["out"] == "bad ? char"


def test_truncation_keeps_utf8_whole() -> None:
    text = "é" * MAX_LINE_BYTES  # 2 bytes each: twice the limit
    out, cut = truncate_out(text)
    assert cut
    assert out.endswith(TRUNCATION_SUFFIX)
    head = out[: -len(TRUNCATION_SUFFIX)].encode()
    assert len(head) <= MAX_LINE_BYTES and len(head) >= MAX_LINE_BYTES - 1
    assert truncate_out("a" * MAX_LINE_BYTES) == ("a" * MAX_LINE_BYTES, False)
    out, cut = truncate_out("a" * (MAX_LINE_BYTES + 1))
    assert cut and out == "a" * MAX_LINE_BYTES + TRUNCATION_SUFFIX


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=40), st.integers(min_value=1, max_value=60))
def test_truncation_never_splits_a_character(text: str, limit: int) -> None:
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    out, cut = truncate_out(text, limit)
    if not cut:
        assert out == text and len(text.encode()) <= limit
    else:
        head = out[: -len(TRUNCATION_SUFFIX)]
        assert text.startswith(head)
        assert len(head.encode()) <= limit < len(head.encode()) + 4 + len(text.encode()) - len(head.encode())


def test_bodies() -> None:
    a, b = Line("a", 0, 0.0).encode(), Line("b", 1, 0.0).encode()
    assert json.loads(json_array([a, b]))[1]["out"] == "b"
    assert json_array([]) == b"[]"
    assert ndjson([a, b]) == a + b"\n" + b + b"\n"
    assert ndjson([]) == b""
    assert [line.out for line in parse_ndjson(ndjson([a, b]))] == ["a", "b"]


@given(st.lists(st.binary(max_size=20), max_size=8))
def test_the_put_body_is_the_lines_in_brackets_joined_by_commas(encoded: list[bytes]) -> None:
    given = list(encoded)
    assert json_array(encoded) == b"[" + b",".join(given) + b"]"
    assert encoded == given  # the caller's list is left as it was


def test_from_dict_rejects_malformed() -> None:
    with pytest.raises(ValueError, match="malformed log line"):
        Line.from_dict({"out": 3, "pos": 0, "time": "2026-01-01T00:00:00Z"})
    with pytest.raises(ValueError, match="JSON object"):
        Line.from_dict([1, 2])  # type: ignore[arg-type]
