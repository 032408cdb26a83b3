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

from lelog import BlobNotFound, ConfigError, LogConfig, LogServiceError, StreamNotFound
from lelog._backend import make_backend
from lelog._filestore import MAX_SEGMENT, FileStore, KeyInUse, _cut, encode_key
from lelog._line import Line, ndjson
from lelog._writer import StreamWriter
from tests.helpers import run_python

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
    "日本語" * 10 + "/" + "語" * 30,
    "x" * 300,
    "é" * 100 + "/a",
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
        assert len(name) <= MAX_SEGMENT + 3 and len(name + ".live.ndjson") <= 255
    for path in (store.log_path(key), store.live_path(key)):
        assert os.path.commonpath([store.directory, path]) == store.directory
    if "%~" not in relative:  # a shortened name records its key in <name>.key instead
        assert decode(relative) == key


@given(st.text(st.characters(blacklist_categories=()), max_size=120))
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


def test_live_keys_names_every_open_stream_and_nothing_else(store: FileStore) -> None:
    long_key = "deep/" + "é" * 300  # shortened: found by its <name>.key
    keys = [*ODD_KEYS, long_key]
    for key in keys:
        store.open_stream(key)
    store.close_stream("a", snapshot=True)  # stored: no longer live
    store.close_stream("a//b")
    # Files no store wrote: a name that does not decode back, a hidden one, a stored log.
    for name in ("a.b.live.ndjson", ".tmp.live.ndjson", "other.ndjson"):
        Path(store.directory, name).write_bytes(b"")
    assert store.live_keys() == sorted(set(keys) - {"a", "a//b"})


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


# -- long keys ------------------------------------------------------------------------------------


def test_a_segment_too_long_for_a_file_name_is_shortened_stably_and_its_key_recorded(
    store: FileStore,
) -> None:
    key = "stage/" + "日本語" * 10 + "ビルド" * 10  # 60 CJK characters: 540 bytes encoded
    other = "stage/" + "日本語" * 10 + "ビルド" * 9 + "ビルx"  # the same long prefix
    name = encode_key(key).split("/")[1]
    assert name.startswith("%E6%97%A5%E6%9C%AC") and "%~" in name and name == encode_key(key).split("/")[1]
    assert encode_key(other) != encode_key(key)
    for k in (key, other):
        store.open_stream(k)
        store.write(k, [Line(f"{k}\n", 0, 1.0)])
        store.close_stream(k, snapshot=True)
        assert outs(store.download(k)) == [f"{k}\n"]
        recorded = Path(store.directory, encode_key(k) + ".key").read_text(encoding="utf-8")
        assert recorded == k


def test_no_key_is_mistaken_for_a_shortened_name() -> None:
    long_key = "x" * 300
    shortened = encode_key(long_key)
    assert encode_key(shortened) != shortened  # its "%" is escaped: "%~" never comes out of encoding


# -- one writer per key ------------------------------------------------------------------------------


def test_a_second_writer_on_a_key_is_refused_naming_the_holder_pid(store: FileStore) -> None:
    store.open_stream("k")
    other = FileStore(store.directory)
    with pytest.raises(KeyInUse) as err:
        other.open_stream("k")
    assert f"process {os.getpid()}" in str(err.value) and "'k'" in str(err.value)
    assert not err.value.retryable
    other.open_stream("another key")  # other keys are free
    other.close_stream("another key")
    store.close_stream("k")
    other.open_stream("k")  # released at close
    other.close_stream("k")


def test_a_second_process_on_a_key_joins_the_holders_stream(store: FileStore) -> None:
    """In one process, writers on a key share its stream; across processes, they do too."""
    holder = StreamWriter("k", store, flush_interval=0.05).open()
    holder.write("mine\n")
    assert holder.flush(timeout=5)
    other = run_python(
        f"""
        from lelog._filestore import FileStore
        from lelog._writer import StreamWriter
        other = StreamWriter("k", FileStore({str(store.directory)!r}), flush_interval=0.05).open()
        other.write("theirs\\n")
        stats = other.close(timeout=5)
        print(stats.sent, stats.uploaded, stats.handed_on, stats.shared)
        """,
        timeout=60,
    )
    assert other.returncode == 0, other.stderr
    assert other.stdout.split() == ["1", "None", "True", "True"]  # handed to the holder, not stored
    holder.write("mine too\n")
    stats = holder.close(timeout=5)
    assert stats.uploaded is True and stats.shared and not stats.handed_on
    assert outs(store.download("k")) == ["mine\n", "theirs\n", "mine too\n"]


def test_the_lock_holds_across_processes_and_names_the_holder(store: FileStore) -> None:
    code = textwrap.dedent(f"""
        import sys
        from lelog._filestore import FileStore
        store = FileStore({store.directory!r})
        store.claim("k")
        print("held", flush=True)
        sys.stdin.read()
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    holder = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(KeyInUse, match=f"process {holder.pid}"):
            store.open_stream("k")
    finally:
        holder.communicate("", timeout=30)
    store.open_stream("k")  # the lock died with its holder
    store.close_stream("k")


def test_the_lock_is_not_inherited_across_fork(tmp_path: Path) -> None:
    result = run_python(
        f"""
        import os
        from lelog._filestore import FileStore
        store = FileStore({str(tmp_path)!r})
        store.claim("k")
        wait, release = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child lives until the parent has tried; it must not hold the key
            os.close(release)
            os.read(wait, 1)
            os._exit(0)
        store.close()
        again = FileStore({str(tmp_path)!r})
        again.claim("k")  # raises KeyInUse if the child had inherited the lock
        print("claimed while the child lives:", os.waitpid(pid, os.WNOHANG) == (0, 0))
        os.close(release)
        os.waitpid(pid, 0)
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "claimed while the child lives: True" in result.stdout


# -- a full disk -----------------------------------------------------------------------------------


def _whole_unique_rows(data: bytes) -> List[int]:
    assert data == b"" or data.endswith(b"\n")
    positions = [json.loads(row)["pos"] for row in data.splitlines()]
    assert len(positions) == len(set(positions))
    return positions


def test_a_write_cut_short_by_the_file_size_limit_is_rolled_back_not_torn(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes write() stop part-way, then fail, as a full disk does (SIGXFSZ ignored).
    result = run_python(
        f"""
        import resource, signal
        from lelog._filestore import FileStore
        from lelog._line import Line
        from lelog._exceptions import LogServiceError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        store = FileStore({str(tmp_path)!r})
        store.open_stream("k")
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, resource.RLIM_INFINITY))
        pos, failures = 0, 0
        while failures < 3:
            batch = [Line("x" * 3000 + "\\n", pos + i, 1.0) for i in range(7)]
            try:
                store.write("k", batch)
                pos += len(batch)
            except LogServiceError as exc:
                failures += 1  # the same batch is tried again, as the writer does
                error = exc
        print(pos, error.retryable, error)
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    written, *_ = result.stdout.split()
    data = Path(FileStore(tmp_path).live_path("k")).read_bytes()
    assert _whole_unique_rows(data) == list(range(int(written)))
    assert "File too large" in result.stdout


def test_a_tail_never_sees_a_rolled_back_row_and_each_line_once(store: FileStore) -> None:
    store.open_stream("k")
    store.write("k", lines(0, 2))
    follower = Follower(store, "k")
    assert follower.wait_for(2)
    batch = ndjson(lines(2, 3))
    path = store.live_path("k")
    size = os.path.getsize(path)
    with open(path, "ab") as fh:  # what a write cut short leaves: two whole rows and a torn one
        fh.write(batch[: batch.index(b"\n", batch.index(b"\n") + 1) + 20])
    assert follower.wait_for(4)
    os.truncate(path, size)  # the rollback
    store.write("k", lines(2, 3))  # the batch again
    store.write("k", lines(5, 1))
    assert follower.wait_for(6)
    store.close_stream("k")
    assert follower.ended()
    assert follower.seen == [f"line {i}\n" for i in range(6)]


def mount_tmpfs(path: Path, size: str) -> None:
    """Mount a tmpfs of ``size`` on ``path`` (a new directory), or skip the test saying why."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the RLIMIT_FSIZE test covers the same path")
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the RLIMIT_FSIZE test covers it"
        )


def test_a_full_disk_never_tears_or_duplicates_rows(tmp_path: Path) -> None:
    home = tmp_path / "small"
    mount_tmpfs(home, "64k")
    try:
        store = FileStore(home)
        store.open_stream("k")
        pos, errors = 0, []
        while len(errors) < 3:
            try:
                store.write("k", lines(pos, 7))
                pos += 7
            except LogServiceError as exc:
                errors.append(exc)
        assert "the disk is full" in str(errors[0]) and errors[0].retryable
        assert _whole_unique_rows(Path(store.live_path("k")).read_bytes()) == list(range(pos))
        # No room for a second copy: what was streamed becomes the stored log, by a rename.
        store.upload("k", ndjson(lines(0, pos + 7)))
        store.close_stream("k")
        assert _whole_unique_rows(store.download("k")) == list(range(pos))
    finally:
        subprocess.run(["umount", str(home)], check=False)


# -- the bound -------------------------------------------------------------------------------------


def test_a_key_is_bounded_oldest_lines_dropped_counted_and_marked(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_bytes=8192, poll_interval=0.01)
    store.open_stream("k")
    follower = Follower(store, "k")
    for start in range(0, 500, 5):
        store.write("k", lines(start, 5))
        assert os.path.getsize(store.live_path("k")) <= 8192
        # The tail keeps up, and so follows the live file across its replacements.
        assert follower.wait_for(start + 5)
    live = Path(store.live_path("k")).read_bytes().splitlines()
    marker = json.loads(live[0])
    dropped = int(marker["args"]["dropped"])
    assert marker["args"]["lelog"] == "dropped" and f"{dropped:,} oldest lines" in marker["out"]
    kept = [json.loads(row)["pos"] for row in live[1:]]
    assert kept == list(range(dropped, 500)) and store.dropped("k") == dropped
    late = store.tail("k")  # a tail that comes after the drop starts with the marker
    assert next(late).out == marker["out"] and next(late).pos == dropped
    late.close()
    store.upload("k", ndjson(lines(0, 500)))  # a writer's whole history: more than the bound
    store.close_stream("k")
    assert follower.ended()
    assert follower.seen == [f"line {i}\n" for i in range(500)]
    stored = store.download("k")
    assert len(stored) <= 8192
    rows = [json.loads(row) for row in stored.splitlines()]
    assert int(rows[0]["args"]["dropped"]) + len(rows) - 1 == 500
    assert [row["pos"] for row in rows[1:]] == list(range(500 - len(rows) + 1, 500))


def test_the_bound_must_be_sensible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LELOG_STORE_MAX_BYTES", "lots")
    with pytest.raises(ConfigError, match="LELOG_STORE_MAX_BYTES"):
        FileStore(tmp_path)
    monkeypatch.setenv("LELOG_STORE_MAX_BYTES", "1000000")
    assert FileStore(tmp_path).max_bytes == 1_000_000
    with pytest.raises(ConfigError, match="max_bytes"):
        FileStore(tmp_path, max_bytes=10)
