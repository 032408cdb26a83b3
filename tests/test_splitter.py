from __future__ import annotations

from typing import Callable, Optional, Union

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lelog._splitter import DEFAULT_MAX_PARTIAL, LineSplitter

PROPERTY = settings(max_examples=200, deadline=None)

Chunk = Union[str, bytes, bytearray, memoryview]


def nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def run(chunks: list[Chunk], max_partial: int) -> tuple[list[str], Optional[str]]:
    splitter = LineSplitter(max_partial)
    lines: list[str] = []
    for chunk in chunks:
        lines += splitter.feed(chunk)
        assert splitter.pending <= max_partial  # a piece and a held-back "\r"
    return lines, splitter.finish()


def pieces(content: str, size: int) -> list[str]:
    """``content`` cut into the longest heads of at most ``size`` bytes (one char at least)."""
    out = []
    while nbytes(content) > size:
        n = 1
        while n < len(content) and nbytes(content[: n + 1]) <= size:
            n += 1
        out.append(content[:n])
        content = content[n:]
    return out + [content]


def model(text: str, max_partial: int) -> list[str]:
    """The expected lines of ``text`` ending in "\\n": fold CRLF, split, cut long lines so that
    each fits in ``max_partial`` bytes with a newline."""
    lines = []
    for content in text.replace("\r\n", "\n").split("\n")[:-1]:
        *forced, last = pieces(content, max_partial - 1)
        lines += forced + [last + "\n"]
    return lines


# Bytes rich in the hard cases: CR/LF pairs, multi-byte characters, truncated and invalid UTF-8.
PIECES = [
    b"a",
    b"bc",
    b"\r",
    b"\n",
    b"\r\n",
    "é".encode(),
    "€".encode(),
    "😀".encode(),
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\x80",
]
data_bytes = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=30).map(b"".join),
    st.binary(max_size=60),
)
sizes = st.integers(min_value=1, max_value=8)
wrappers: list[Callable[[bytes], Chunk]] = [bytes, bytearray, memoryview]


def split_at(data: st.DataObject, whole: bytes) -> list[bytes]:
    cuts = data.draw(st.lists(st.integers(0, len(whole)), max_size=8).map(sorted))
    bounds = [0, *cuts, len(whole)]
    return [whole[a:b] for a, b in zip(bounds, bounds[1:])]


@PROPERTY
@given(whole=data_bytes, size=sizes, data=st.data())
def test_output_does_not_depend_on_chunking(whole: bytes, size: int, data: st.DataObject) -> None:
    chunks = split_at(data, whole)
    wrapped = [data.draw(st.sampled_from(wrappers))(c) for c in chunks]
    assert run(wrapped, size) == run([whole], size)


@PROPERTY
@given(whole=data_bytes, size=sizes)
def test_nothing_is_lost_or_added(whole: bytes, size: int) -> None:
    lines, rest = run([whole], size)
    expected = whole.decode("utf-8", "replace").replace("\r\n", "\n")
    assert "".join(lines) + (rest or "") == expected
    for line in lines:
        assert nbytes(line) <= size or len(line) == 1 or line == line[0] + "\n"
        assert "\n" not in line[:-1]
    assert rest is None or (
        rest != "" and "\n" not in rest and nbytes(rest) <= size + 3
    )  # a piece, "\r", U+FFFD


@PROPERTY
@given(whole=data_bytes, size=sizes, data=st.data())
def test_lines_match_the_model(whole: bytes, size: int, data: st.DataObject) -> None:
    whole += b"\n"  # everything settles before finish()
    lines, rest = run(split_at(data, whole), size)
    assert rest is None
    assert lines == model(whole.decode("utf-8", "replace"), size)


@PROPERTY
@given(text=st.text(st.sampled_from("ab\r\né😀\x85\u2028"), max_size=40), size=sizes, data=st.data())
def test_str_chunks_match_bytes(text: str, size: int, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=6).map(sorted))
    bounds = [0, *cuts, len(text)]
    chunks = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    # Complete characters may come as str or bytes, interchangeably.
    mixed = [c if data.draw(st.booleans()) else c.encode() for c in chunks]
    assert run(mixed, size) == run([text.encode()], size)


def test_common_case_whole_lines() -> None:
    splitter = LineSplitter()
    assert splitter.feed("one\ntwo\n") == ["one\n", "two\n"]
    assert splitter.feed(b"three\r\nfour\n") == ["three\n", "four\n"]
    assert splitter.pending == 0
    assert splitter.finish() is None


def test_partial_lines_are_joined() -> None:
    splitter = LineSplitter()
    assert splitter.feed("par") == []
    assert splitter.pending == 3
    assert splitter.feed(b"tial\nnext") == ["partial\n"]
    assert splitter.finish() == "next"
    assert splitter.pending == 0


def test_multibyte_character_split_across_chunks() -> None:
    splitter = LineSplitter()
    raw = "€😀\n".encode()
    assert [line for b in raw for line in splitter.feed(bytes([b]))] == ["€😀\n"]


def test_crlf_split_across_chunks_and_lone_cr() -> None:
    splitter = LineSplitter()
    assert splitter.feed("a\r") == []
    assert splitter.pending == 2
    assert splitter.feed("\nb\rc\n") == ["a\n", "b\rc\n"]
    assert splitter.feed(b"d\r") == []
    assert splitter.finish() == "d\r"


def test_str_after_incomplete_bytes_flushes_the_decoder() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"ab\xc3") == []
    assert splitter.feed("x\n") == ["ab\ufffdx\n"]
    assert splitter.feed("é\n") == ["é\n"]


def test_partial_is_bounded() -> None:
    splitter = LineSplitter(5)  # pieces of 4 bytes: room for a newline
    assert splitter.feed("x" * 10) == ["xxxx", "xxxx"]
    assert splitter.pending == 2
    assert splitter.feed("yy") == []  # exactly the bound stays buffered
    assert splitter.feed("\n") == ["xxyy\n"]
    lines = splitter.feed("a" * 8 + "\n" + "b" * 9 + "\nc")
    assert lines == ["aaaa", "aaaa\n", "bbbb", "bbbb", "b\n"]
    assert splitter.finish() == "c"


def test_forced_break_never_separates_cr_from_lf() -> None:
    splitter = LineSplitter(4)
    assert splitter.feed("abc\r") == []  # the "\r" is held, not counted
    assert splitter.feed("\n") == ["abc\n"]
    assert splitter.feed("abc\r") == []
    assert splitter.feed("d") == ["abc"]
    assert splitter.finish() == "\rd"


def test_finish_settles_held_cr_and_incomplete_bytes() -> None:
    splitter = LineSplitter(4)
    assert splitter.feed(b"abc\r\xe2\x82") == []
    assert splitter.finish() == "abc\r\ufffd"  # the bound plus two settled characters


def test_finish_resets_everything() -> None:
    splitter = LineSplitter()
    splitter.feed(b"abc\xc3")
    assert splitter.finish() == "abc\ufffd"
    assert splitter.finish() is None
    # A continuation byte alone is invalid: the decoder no longer holds the "\xc3".
    assert splitter.feed(b"\xa9\n") == ["\ufffd\n"]
    splitter.feed("x\r")
    assert splitter.finish() == "x\r"
    assert splitter.feed("\n") == ["\n"]


def test_empty_chunks_change_nothing() -> None:
    splitter = LineSplitter()
    assert splitter.feed("a\r") == []
    assert splitter.feed(b"") == []
    assert splitter.feed("") == []
    assert splitter.feed("\n") == ["a\n"]


def test_default_bound_is_the_service_line_limit() -> None:
    assert DEFAULT_MAX_PARTIAL == 71_680
    splitter = LineSplitter()
    lines = splitter.feed("z" * (DEFAULT_MAX_PARTIAL + 5))
    assert lines == ["z" * (DEFAULT_MAX_PARTIAL - 1)]  # with a newline: the limit exactly
    assert splitter.finish() == "z" * 6
    assert splitter.feed("y" * (DEFAULT_MAX_PARTIAL - 1) + "\n") == ["y" * (DEFAULT_MAX_PARTIAL - 1) + "\n"]


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "10"])
def test_max_partial_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="max_partial"):
        LineSplitter(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    ["日本語" * 40000, "é" * 100000, "x" * 200000, "a€😀" * 30000],
    ids=["cjk", "latin", "ascii", "mixed"],
)
def test_long_lines_are_cut_in_bytes_on_character_boundaries_losing_nothing(text: str) -> None:
    splitter = LineSplitter()
    lines = splitter.feed(text.encode() + b"\n")
    assert "".join(lines) == text + "\n"
    assert all(nbytes(line) <= DEFAULT_MAX_PARTIAL for line in lines)
    # Every piece but the last is as long as the limit allows (no character would fit more).
    for line in lines[:-1]:
        assert DEFAULT_MAX_PARTIAL - 1 - 4 < nbytes(line) <= DEFAULT_MAX_PARTIAL - 1
    assert splitter.finish() is None


def test_a_secret_across_a_forced_break_stays_whole() -> None:
    splitter = LineSplitter(11, unbroken=["SECRET"])
    assert splitter.feed("xxxxxxxSECRETyyyy\n") == ["xxxxxxx", "SECRETyyyy\n"]


def test_the_break_waits_until_it_can_see_a_secret_whole() -> None:
    splitter = LineSplitter(11, unbroken=["SECRET"])
    assert splitter.feed("xxxxxxxSE") == []
    assert splitter.feed("CR") == []  # past the bound, but "SECR" may be the secret's start
    assert splitter.feed("ETyy") == ["xxxxxxx"]
    assert splitter.finish() == "SECRETyy"


def test_a_secret_longer_than_a_piece_is_cut_anyway() -> None:
    splitter = LineSplitter(4, unbroken=["LONGSECRET"])
    assert splitter.feed("LONGSECRET\n") == ["LON", "GSE", "CRE", "T\n"]


def test_finish_lines_keeps_the_last_partial_line_within_the_bound() -> None:
    splitter = LineSplitter(4, unbroken=["abcdef"])
    assert splitter.feed("xyabcdef") == ["xy"]  # "abcdef" waits: it may be the secret
    assert splitter.finish_lines() == ["abc", "def"]  # cut anyway: longer than a piece
    assert splitter.finish_lines() == []


@PROPERTY
@given(
    parts=st.lists(st.sampled_from(["SECRET", "x", "é", "SEC", "\n", "😀", "tok3n"]), max_size=40),
    size=st.integers(min_value=2, max_value=12),
    data=st.data(),
)
def test_secrets_are_never_split_and_chunking_does_not_matter(
    parts: list[str], size: int, data: st.DataObject
) -> None:
    whole = "".join(parts).encode()
    secrets = ["SECRET", "tok3n"]

    def split(chunks: list[bytes]) -> list[str]:
        splitter = LineSplitter(size, unbroken=secrets)
        out = [line for chunk in chunks for line in splitter.feed(chunk)]
        return out + splitter.finish_lines()

    lines = split([whole])
    assert split(split_at(data, whole)) == lines
    assert "".join(lines) == whole.decode()
    text, offset = "".join(lines), 0
    for line in lines[:-1]:
        offset += len(line)
        if line.endswith("\n"):
            continue
        for secret in secrets:
            if len(secret) <= size - 1:  # a piece can hold it: the break must not split it
                start = text.find(secret, max(0, offset - len(secret) + 1))
                assert start == -1 or not start < offset < start + len(secret)
