"""Properties of the writer end to end, through an in-memory backend, and of key escaping.

The pure parts have their own properties (test_splitter, test_masking, test_line); these
check that the writer keeps them whatever the calls look like: how a byte stream is cut into
``write`` calls, where a secret falls, how lines are batched, how long a line is.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence, Union
from urllib.parse import parse_qsl

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from lelog import Line, LogConfig, LogServiceClient, StreamWriter
from lelog._line import MAX_LINE_BYTES, TRUNCATION_SUFFIX, json_array, ndjson
from lelog._masking import MASK, Masker
from lelog._splitter import LineSplitter
from tests.helpers import GENEROUS

PROPERTY = settings(max_examples=60, deadline=None)


class Recorder:
    """An in-memory backend: keeps every PUT batch and the uploaded history, never fails."""

    def __init__(self, config: Optional[LogConfig] = None) -> None:
        self.config = config or LogConfig()
        self.batches: list[list[bytes]] = []
        self.uploaded: Optional[bytes] = None

    def open_stream(self, key: str, **opts: Any) -> None:
        pass

    def write(self, key: str, lines: Sequence[bytes], **opts: Any) -> None:
        self.batches.append(list(lines))

    def upload(self, key: str, lines: Union[Sequence[bytes], bytes], **opts: Any) -> None:
        assert isinstance(lines, bytes)
        self.uploaded = lines

    def close_stream(self, key: str, **opts: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def pushed(self) -> list[bytes]:
        return [line for batch in self.batches for line in batch]


def _outs(encoded: Sequence[bytes]) -> list[str]:
    return [json.loads(line)["out"] for line in encoded]


def _reference(whole: bytes, max_partial: int) -> list[str]:
    splitter = LineSplitter(max_partial)
    lines = splitter.feed(whole)
    last = splitter.finish()
    return lines + ([last] if last else [])


def _cut(whole: bytes, cuts: list[int]) -> list[bytes]:
    points = [0] + sorted(cuts) + [len(whole)]
    return [whole[a:b] for a, b in zip(points, points[1:])]


def _write_and_close(backend: Recorder, chunks: list[bytes], **options: Any) -> Any:
    writer = StreamWriter("k", backend, close_timeout=GENEROUS, **options)
    for chunk in chunks:
        writer.write(chunk)
    return writer.close()


# Bytes that make splitting hard: multi-byte characters, CRLF, lone CR, invalid UTF-8.
_pieces = st.sampled_from(
    [
        b"a",
        b"b",
        b" ",
        b"\n",
        b"\r",
        b"\r\n",
        "é".encode(),
        "€".encode(),
        "😀".encode(),
        b"\xff",
        "😀".encode()[:2],
    ]
)
byte_streams = st.lists(_pieces, max_size=60).map(b"".join)


@PROPERTY
@given(whole=byte_streams, max_partial=st.sampled_from([3, 8, 1000]), data=st.data())
def test_any_split_of_a_byte_stream_gives_the_same_lines(
    whole: bytes, max_partial: int, data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(whole)), max_size=12))
    backend = Recorder()
    stats = _write_and_close(
        backend, _cut(whole, cuts), max_partial=max_partial, flush_interval=0.001, max_batch_lines=3
    )
    expected = _reference(whole, max_partial)
    pushed = backend.pushed()
    assert _outs(pushed) == expected
    assert [json.loads(line)["pos"] for line in pushed] == list(range(len(expected)))
    # The history is the same lines, same bytes (a writer never given a line opens nothing).
    assert backend.uploaded == (ndjson(pushed) if expected else None)
    assert stats.accepted == stats.sent == len(expected) and stats.dropped_total == 0


_secret_chars = st.sampled_from("abcxyz0é😀-")


@PROPERTY
@given(
    secret=st.text(_secret_chars, min_size=2, max_size=10),
    fillers=st.lists(st.text(st.sampled_from("abcxyz é\n"), max_size=8), min_size=2, max_size=5),
    data=st.data(),
)
def test_a_secret_is_masked_wherever_the_chunks_cut_it(
    secret: str, fillers: list[str], data: st.DataObject
) -> None:
    whole = secret.join(fillers).encode()
    cuts = data.draw(st.lists(st.integers(0, len(whole)), max_size=12))
    backend = Recorder(LogConfig(secrets=[secret]))
    _write_and_close(backend, _cut(whole, cuts))
    masker = Masker([secret])
    expected = [masker.mask(line) for line in _reference(whole, 71_680)]
    for encoded in (backend.pushed(), (backend.uploaded or b"").splitlines()):
        outs = _outs(encoded)
        assert outs == expected
        assert not any(secret in out for out in outs)
    assert any(MASK in out for out in expected)  # the secret was there to be masked


@PROPERTY
@given(
    sizes=st.lists(st.integers(0, 120), min_size=1, max_size=40),
    max_lines=st.integers(1, 6),
    max_bytes=st.integers(1, 600),
)
def test_every_put_is_within_the_caps_and_the_batches_make_the_stream(
    sizes: list[int], max_lines: int, max_bytes: int
) -> None:
    backend = Recorder()
    writer = StreamWriter(
        "k", backend, max_batch_lines=max_lines, max_batch_bytes=max_bytes, close_timeout=GENEROUS
    )
    texts = [f"{i}:" + "é" * n for i, n in enumerate(sizes)]  # 2 bytes per é: bytes != chars
    for text in texts:
        writer.write_line(text)
    writer.close()
    for batch in backend.batches:
        assert 1 <= len(batch) <= max_lines
        # A line longer than the cap goes alone; otherwise the lines and their commas fit.
        assert len(batch) == 1 or len(json_array(batch)) - 2 <= max_bytes
    pushed = backend.pushed()
    assert _outs(pushed) == [text + "\n" for text in texts]
    assert [json.loads(line)["pos"] for line in pushed] == list(range(len(texts)))
    assert backend.uploaded == ndjson(pushed)


@PROPERTY
@given(
    char=st.sampled_from(["x", "é", "€", "😀"]),
    offset=st.integers(-3, 3),
    tail=st.text(st.sampled_from("aé€😀"), max_size=4),
)
def test_a_long_line_is_cut_to_the_limit_on_a_character_boundary(char: str, offset: int, tail: str) -> None:
    text = char * (MAX_LINE_BYTES // len(char.encode()) + offset) + tail
    full = text + "\n"
    backend = Recorder()
    writer = StreamWriter("k", backend, close_timeout=GENEROUS)
    writer.write_line(text)
    stats = writer.close()
    (out,) = _outs(backend.pushed())
    if len(full.encode()) <= MAX_LINE_BYTES:
        assert out == full and stats.truncated == 0
    else:
        # The longest prefix within the limit, then the suffix: a character is never split.
        keep = max(k for k in range(len(full) - 8, len(full) + 1) if len(full[:k].encode()) <= MAX_LINE_BYTES)
        assert out == full[:keep] + TRUNCATION_SUFFIX
        assert stats.truncated == 1


def _as_the_service_decodes(request: httpx.Request) -> dict[str, str]:
    """The query as tests/service.py reads it: the raw target, ``parse_qsl``, first wins."""
    raw = request.url.raw_path.decode("ascii")  # percent-encoded, so always ASCII
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw.partition("?")[2], keep_blank_values=True):
        query.setdefault(name, value)
    return query


@settings(max_examples=150, deadline=None)
@given(key=st.text(min_size=1, max_size=30), account=st.text(min_size=1, max_size=12))
def test_any_key_and_account_round_trip_through_the_query(key: str, account: str) -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((f"{request.method} {request.url.path}", _as_the_service_decodes(request)))
        return httpx.Response(204)

    config = LogConfig(
        url="http://log-service:8080/gateway", account_id=account, token="t", indirect_upload=True
    )
    with LogServiceClient(config, transport=httpx.MockTransport(answer)) as client:
        client.open_stream(key)
        client.write(key, [Line(out="x\n", pos=0, time=0.0)])
        client.upload(key, b"")
        client.close_stream(key, snapshot=True)
    assert [call for call, _ in seen] == [
        "POST /gateway/stream",
        "PUT /gateway/stream",
        "POST /gateway/blob",
        "DELETE /gateway/stream",
    ]
    for _, query in seen:
        assert query["key"] == key and query["accountID"] == account
    assert seen[-1][1]["snapshot"] == "true"


def test_the_caps_property_sees_batches_split_by_bytes() -> None:
    """Guards the property above against vacuity: the byte cap really splits batches."""
    backend = Recorder()
    writer = StreamWriter("k", backend, max_batch_lines=100, max_batch_bytes=200, close_timeout=GENEROUS)
    for i in range(10):
        writer.write_line(f"{i}:" + "é" * 40)
    writer.close()
    assert len(backend.batches) >= 5
    assert all(len(json_array(batch)) - 2 <= 200 for batch in backend.batches)
