"""``FileStore``: the service's semantics on a local directory, safe keys, concurrent writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Iterator, List
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lelog import BlobNotFound, LogConfig, LogServiceError, StreamNotFound
from lelog._backend import make_backend
from lelog._filestore import FileStore, _cut, encode_key
from lelog._line import Line, ndjson
from lelog._writer import StreamWriter

ROOT = Path(__file__).resolve().parent.parent
ODD_KEYS = [
    "stage-123/lite-engine-logs",
    "a&b#c+d%e;f g é/h",
    "../escape",
    "/absolute",
    "a//b",
    "a/",
    ".",
    "..",
    "a/./b",
    "x\x00y",
    "a.live",
    "a",
    "A.b",
    "a%2Eb",
    "%",
    "",
    "~/.ssh/id",
    "日本/語",
]


def lines(start: int, n: int) -> List[bytes]:
    return [Line(f"line {i}\n", i, 1_700_000_000.0 + i).encode() for i in range(start, start + n)]


def outs(data: bytes) -> List[str]:
    return [json.loads(row)["out"] for row in data.splitlines() if row]


def decode(relative: str) -> str:
    """The inverse of ``encode_key``, as the module docstring states it."""
    return "/".join(
        "" if name == "%" else unquote(name, errors="surrogatepass") for name in relative.split("/")
    )


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "logs", poll_interval=0.01)


# -- the lifecycle -----------------------------------------------------------------------------


def test_a_stream_lives_in_the_live_file_and_is_stored_by_upload(store: FileStore) -> None:
    assert not os.path.exists(store.directory)  # nothing is created before the first call
    store.open_stream("job/step")
    assert os.path.exists(store.live_path("job/step"))
    store.write("job/step", lines(0, 2))
    store.write("job/step", [Line("third\n", 2, 1_700_000_002.0)])  # values work too
    with open(store.live_path("job/step"), "rb") as fh:
        assert outs(fh.read()) == ["line 0\n", "line 1\n", "third\n"]
    store.upload("job/step", ndjson(lines(0, 3)))
    store.close_stream("job/step")
    assert not os.path.exists(store.live_path("job/step"))
    assert outs(store.download("job/step")) == ["line 0\n", "line 1\n", "line 2\n"]
    assert store.log_path("job/step") == os.path.join(store.directory, "job", "step.ndjson")
    leftovers = [n for n in os.listdir(os.path.join(store.directory, "job")) if n.startswith(".")]
    assert leftovers == []  # no temporary or claimed files stay behind


def test_the_service_answers_for_streams_that_are_not_open(store: FileStore) -> None:
    with pytest.raises(StreamNotFound) as write_err:
        store.write("k", lines(0, 1))
    assert write_err.value.status == 400 and not write_err.value.retryable
    with pytest.raises(StreamNotFound) as close_err:
        store.close_stream("k")
    assert close_err.value.status == 500 and not close_err.value.retryable
    with pytest.raises(BlobNotFound):
        store.download("k")
    store.open_stream("k")
    store.close_stream("k")
    with pytest.raises(StreamNotFound):  # closed streams are gone, as on the service
        store.write("k", lines(0, 1))


def test_reopening_wipes_the_live_stream(store: FileStore) -> None:
    store.open_stream("k")
    store.write("k", lines(0, 3))
    store.open_stream("k")
    store.write("k", lines(0, 1))
    store.close_stream("k", snapshot=True)
    assert outs(store.download("k")) == ["line 0\n"]


def test_a_snapshot_close_stores_what_the_live_stream_holds(store: FileStore) -> None:
    store.open_stream("k")
    store.write("k", lines(0, 7000))  # all of it: no 5,000-line window here
    store.close_stream("k", snapshot=True)
    assert len(outs(store.download("k"))) == 7000


def test_upload_replaces_the_stored_log_whole(store: FileStore) -> None:
    store.upload("k", lines(0, 3))  # no stream needed, as POST /blob
    store.upload("k", b"")
    assert store.download("k") == b""


def test_upload_completes_a_history_that_lost_its_head_from_the_live_file(store: FileStore) -> None:
    store.open_stream("k")
    store.write("k", lines(0, 10))
    store.upload("k", ndjson(lines(6, 4)))  # the writer's bounded history kept only 6..9
    assert [json.loads(r)["pos"] for r in store.download("k").splitlines()] == list(range(10))


def test_per_call_options_are_accepted_and_unknown_ones_refused(store: FileStore) -> None:
    event = threading.Event()
    store.open_stream("k", deadline=1.0, cancel=event, on_retry=None, retry=None)
    store.write("k", lines(0, 1), deadline=0.5)
    with pytest.raises(TypeError, match="deadlin"):
        store.write("k", lines(1, 1), deadlin=0.5)
    store.close_stream("k", deadline=1.0)


def test_file_system_failures_are_service_errors_the_writer_can_judge(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = FileStore(blocker)
    with pytest.raises(LogServiceError) as err:
        store.open_stream("k")
    assert "file store" in str(err.value) and not err.value.retryable


def test_directory_defaults_to_lelog_home_then_dot_lelog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LELOG_HOME", raising=False)
    assert FileStore().directory == str(tmp_path / ".lelog")
    monkeypatch.setenv("LELOG_HOME", str(tmp_path / "home"))
    assert FileStore().directory == str(tmp_path / "home")
    assert FileStore().config == LogConfig()


# -- keys ---------------------------------------------------------------------------------------


def _check_safe(store: FileStore, key: str) -> None:
    relative = encode_key(key)
    for name in relative.split("/"):
        assert name and name not in (".", "..") and not name.startswith(".")
        assert set(name) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-~%")
    for path in (store.log_path(key), store.live_path(key)):
        assert os.path.commonpath([store.directory, path]) == store.directory
    assert decode(relative) == key


@given(st.text(st.characters(blacklist_categories=()), max_size=40))
@settings(max_examples=300, deadline=None)
def test_every_key_maps_to_a_safe_path_that_decodes_back(key: str) -> None:
    _check_safe(FileStore("/store"), key)


@pytest.mark.parametrize("key", ODD_KEYS)
def test_odd_keys_round_trip_and_never_share_files(store: FileStore, key: str) -> None:
    _check_safe(store, key)
    store.open_stream(key)
    store.write(key, [Line(f"key {key!r}\n", 0, 1.0)])
    store.close_stream(key, snapshot=True)
    assert outs(store.download(key)) == [f"key {key!r}\n"]


def test_distinct_keys_get_distinct_files(store: FileStore) -> None:
    paths = {store.log_path(k) for k in ODD_KEYS} | {store.live_path(k) for k in ODD_KEYS}
    assert len(paths) == 2 * len(ODD_KEYS)


# -- concurrency ----------------------------------------------------------------------------------


def test_threads_appending_at_once_never_split_a_row(store: FileStore) -> None:
    store.open_stream("k")

    def append(worker: int) -> None:  # rows longer than PIPE_BUF, batches of 50 KB
        for batch in range(50):
            store.write("k", [Line(f"w{worker} b{batch} {'x' * 5000}\n", i, 1.0) for i in range(10)])

    threads = [threading.Thread(target=append, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(store.live_path("k"), "rb") as fh:
        assert len(outs(fh.read())) == 4 * 50 * 10  # each row parses: none was interleaved


def test_processes_appending_at_once_never_split_a_row(store: FileStore) -> None:
    store.open_stream("k")
    code = textwrap.dedent(f"""
        import sys
        from lelog._filestore import FileStore
        from lelog._line import Line
        store = FileStore({store.directory!r})
        for batch in range(100):
            store.write("k", [Line(f"p{{sys.argv[1]}} {{batch}} " + "y" * 5000 + "\\n", i, 1.0)
                              for i in range(10)])
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)], env=env) for n in range(2)]
    assert [p.wait(timeout=30) for p in procs] == [0, 0]
    with open(store.live_path("k"), "rb") as fh:
        assert len(outs(fh.read())) == 2 * 100 * 10


# -- tail ----------------------------------------------------------------------------------------


class Follower:
    """Runs ``store.tail(key)`` on a thread, collecting what it yields."""

    def __init__(self, store: FileStore, key: str) -> None:
        self.seen: List[str] = []
        self.grew = threading.Condition()
        lines_iter = store.tail(key)
        self.thread = threading.Thread(target=self._follow, args=(lines_iter,))
        self.thread.start()

    def _follow(self, lines_iter: Iterator[Line]) -> None:
        for line in lines_iter:
            with self.grew:
                self.seen.append(line.out)
                self.grew.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        with self.grew:
            return self.grew.wait_for(lambda: len(self.seen) >= count, timeout=timeout)

    def ended(self) -> bool:
        self.thread.join(5)
        return not self.thread.is_alive()


def test_tail_follows_a_live_stream_and_ends_when_it_is_closed(store: FileStore) -> None:
    store.open_stream("k")
    store.write("k", lines(0, 2))
    follower = Follower(store, "k")
    assert follower.wait_for(2)
    store.write("k", lines(2, 1))
    assert follower.wait_for(3)
    # A row appended in two pieces is yielded once, whole.
    row = lines(3, 1)[0] + b"\n"
    with open(store.live_path("k"), "ab") as fh:
        fh.write(row[:10])
        fh.flush()
        assert not follower.wait_for(4, timeout=0.2)
        fh.write(row[10:])
    assert follower.wait_for(4)
    store.write("k", lines(4, 1))
    store.upload("k", ndjson(lines(0, 5)))
    store.close_stream("k")
    assert follower.ended()
    assert follower.seen == [f"line {i}\n" for i in range(5)]


def test_tail_sees_a_half_written_row_only_once_it_is_whole(store: FileStore) -> None:
    store.open_stream("k")
    row = lines(0, 1)[0] + b"\n"
    with open(store.live_path("k"), "ab") as fh:
        fh.write(row[:25])
    follower = Follower(store, "k")
    assert not follower.wait_for(1, timeout=0.2)
    with open(store.live_path("k"), "ab") as fh:
        fh.write(row[25:])
    assert follower.wait_for(1)
    store.close_stream("k")
    assert follower.ended() and follower.seen == ["line 0\n"]


def test_tail_of_a_stream_that_is_not_open_ends_at_once(store: FileStore) -> None:
    assert list(store.tail("missing")) == []
    store.open_stream("k")
    store.close_stream("k", snapshot=True)
    assert list(store.tail("k")) == []  # closed: the stored log is download's, not tail's


def test_reopening_ends_the_tails_of_the_old_stream(store: FileStore) -> None:
    store.open_stream("k")
    store.write("k", lines(0, 1))
    follower = Follower(store, "k")
    assert follower.wait_for(1)
    store.open_stream("k")
    assert follower.ended()
    store.close_stream("k")


# -- as the writer's backend ----------------------------------------------------------------------


def test_the_writer_streams_to_the_file_store(store: FileStore) -> None:
    writer = StreamWriter("ci/step", store, flush_interval=0.05).open()
    writer.write("one\ntwo\nthree without newline")
    assert writer.flush(timeout=5)
    with open(store.live_path("ci/step"), "rb") as fh:
        assert outs(fh.read()) == ["one\n", "two\n"]  # live while the writer runs
    stats = writer.close(timeout=5)
    assert stats.sent == 3 and stats.uploaded is True and stats.dropped_total == 0
    assert outs(store.download("ci/step")) == ["one\n", "two\n", "three without newline"]
    assert not os.path.exists(store.live_path("ci/step"))


def test_a_config_without_url_means_the_file_store_in_lelog_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LELOG_HOME", str(tmp_path))
    backend, owned, config = make_backend(LogConfig())
    assert isinstance(backend, FileStore) and owned and backend.directory == str(tmp_path)
    assert backend.config is config


@given(st.lists(st.integers(0, 300), max_size=40), st.integers(0, 45), st.booleans())
@settings(max_examples=300, deadline=None)
def test_the_head_before_any_pos_is_found_whatever_the_row_sizes(
    sizes: List[int], first: int, torn: bool
) -> None:
    rows = [Line("x" * size + "\n", pos, 1.0).encode() + b"\n" for pos, size in enumerate(sizes)]
    data = b"".join(rows) + (b'{"level":"info","po' if torn else b"")
    with tempfile.TemporaryFile() as fh:
        fh.write(data)
        fh.flush()
        assert _cut(fh, first) == len(b"".join(rows[:first]))
