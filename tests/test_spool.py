"""The crash spool: files, bounds, masking and failures, without and with a writer."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, List

import pytest

import lelog
from lelog import ConfigError, LogConfig, StreamWriter
from lelog._line import encode_line, format_time
from lelog._spool import (
    MANIFEST,
    Manifest,
    ProcessIdentity,
    Segments,
    Spool,
    _proc_stat,
    read_log,
    redact_url,
    service_of,
)
from lelog.testing import MemoryBackend
from tests.helpers import GENEROUS, run_python, wait_until
from tests.service import FakeLogService


def _row(pos: int, out: str = "") -> bytes:
    return lelog.Line(out or f"line {pos}\n", pos, 1_700_000_000.0).encode()


def _manifest(**changes: Any) -> Manifest:
    values: dict[str, Any] = dict(
        key="k",
        account_id="acct",
        service="http://svc",
        owner=ProcessIdentity.current(),
        skip_opening_stream=False,
        trim_new_line_suffix=False,
        created=0.0,
    )
    values.update(changes)
    return Manifest(**values)


def _spool_dirs(root: Path) -> List[Path]:
    return [p for p in root.iterdir() if not p.name.startswith(".")] if root.exists() else []


def _spooled_outs(root: Path) -> List[str]:
    """The ``out`` of every row spooled below ``root`` so far (all streams, in pos order)."""
    outs: List[str] = []
    for directory in _spool_dirs(root):
        for segment in sorted(directory.glob("*.ndjson")):
            for row in segment.read_bytes().split(b"\n")[:-1]:
                outs.append(json.loads(row)["out"])
    return outs


def _config(service: FakeLogService, **changes: Any) -> LogConfig:
    return LogConfig(url=service.url, account_id="acct", token="secret-token", **changes)


def _fail_uploads(service: FakeLogService) -> None:
    """Make every upload fail, direct or through a link."""
    service.fail_next(100, 500, method="POST", path="/blob")
    service.fail_next(100, 500, method="POST", path="/blob/link/upload")


# -- pure parts: segments, reading back, manifest ---------------------------------------------


def test_segments_keep_the_newest_rows_within_the_budget(tmp_path: Path) -> None:
    segments = Segments(str(tmp_path), budget=4000)
    rows = [_row(pos) for pos in range(400)]
    removed = 0
    for row in rows:
        segments.append(row + b"\n")
        removed += segments.evict()
    segments.close()
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("*.ndjson"))
    assert on_disk <= 4000 and removed > 0
    assert on_disk >= 3000 - len(rows[0]) - 1  # 3/4 of the budget at least
    log = read_log(str(tmp_path), _manifest())
    parsed = [json.loads(r) for r in log.body.splitlines()]
    first_kept = parsed[1]["pos"]
    assert parsed[0]["pos"] == 0 and parsed[0]["level"] == "warn"
    assert parsed[0]["out"].startswith(f"[lelog] {first_kept:,} lines missing here")
    assert [p["pos"] for p in parsed[1:]] == list(range(first_kept, 400))
    assert log.missing == first_kept and log.lines == 400 - first_kept


def test_one_batch_larger_than_the_budget_is_trimmed_to_it(tmp_path: Path) -> None:
    segments = Segments(str(tmp_path), budget=4000)
    rows = [_row(pos) for pos in range(400)]
    segments.append(b"".join(row + b"\n" for row in rows))  # about 40 kB at once
    segments.evict()
    segments.close()
    assert sum(p.stat().st_size for p in tmp_path.glob("*.ndjson")) <= 4000
    log = read_log(str(tmp_path), _manifest())
    parsed = [json.loads(r) for r in log.body.splitlines()]
    assert log.missing == parsed[1]["pos"] > 0
    assert [p["pos"] for p in parsed[1:]] == list(range(log.missing, 400))


def test_read_log_marks_gaps_and_skips_torn_malformed_and_repeated_rows(tmp_path: Path) -> None:
    body = b"\n".join([_row(0), _row(1), b"not json", _row(1), _row(5), _row(6)]) + b"\n"
    (tmp_path / "0000000000.ndjson").write_bytes(body + _row(7)[:20])  # killed mid-write
    log = read_log(str(tmp_path), _manifest(trim_new_line_suffix=True))
    parsed = [json.loads(r) for r in log.body.splitlines()]
    assert [(p["pos"], p["out"]) for p in parsed] == [
        (0, "line 0\n"),
        (1, "line 1\n"),
        (2, parsed[2]["out"]),
        (5, "line 5\n"),
        (6, "line 6\n"),
    ]
    assert parsed[2]["out"].startswith("[lelog] 3 lines missing here") and not parsed[2]["out"].endswith("\n")
    assert (log.lines, log.missing) == (4, 3)


def test_read_log_of_an_empty_spool_is_an_empty_log(tmp_path: Path) -> None:
    log = read_log(str(tmp_path), _manifest())
    assert (log.body, log.lines, log.missing) == (b"", 0, 0)


def test_manifest_round_trips_and_rejects_what_is_not_one() -> None:
    manifest = _manifest(key="a/ b&c#d", skip_opening_stream=True)
    assert Manifest.from_json(manifest.to_json()) == manifest
    good = json.loads(manifest.to_json())
    for broken in (
        b"[]",
        b"{",
        json.dumps({**good, "version": 2}).encode(),
        json.dumps({**good, "key": 5}).encode(),
        json.dumps({**good, "key": ""}).encode(),
        json.dumps({**good, "owner": {"pid": "1", "start_time": 1, "boot_id": "b"}}).encode(),
        json.dumps({**good, "skip_opening_stream": "yes"}).encode(),
        json.dumps({**good, "created": "yesterday"}).encode(),
        json.dumps({k: v for k, v in good.items() if k != "service"}).encode(),
    ):
        with pytest.raises(ValueError, match="manifest"):
            Manifest.from_json(broken)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://user:pw@Log-Service:8080/prefix/", "http://log-service:8080/prefix"),
        ("HTTPS://token@host", "https://host"),
        ("http://[::1]:99/x", "http://[::1]:99/x"),
        ("", ""),
    ],
)
def test_a_service_is_named_without_user_info(url: str, named: str) -> None:
    assert redact_url(url) == named


def test_the_file_store_is_named_by_its_directory(tmp_path: Path) -> None:
    store = lelog.FileStore(tmp_path)
    assert service_of(LogConfig(), store) == f"file:{tmp_path}"


def test_process_identity_tells_a_reused_pid_and_another_boot_apart() -> None:
    me = ProcessIdentity.current()
    if me.start_time is None:
        pytest.skip("no /proc: only the pid is compared here")
    assert me.is_alive()
    assert not ProcessIdentity(me.pid, me.start_time + 1, me.boot_id).is_alive()
    assert not ProcessIdentity(me.pid, me.start_time, "another-boot").is_alive()


def test_a_zombie_and_a_reaped_process_are_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # It exits at once and stays a zombie until it is reaped.
        assert wait_until(lambda: (_proc_stat(child.pid) or ("Z", 0))[0] == "Z")
        found = _proc_stat(child.pid)
        if found is not None:
            assert not ProcessIdentity(child.pid, found[1], ProcessIdentity.current().boot_id).is_alive()
    finally:
        child.wait()
    assert not ProcessIdentity(child.pid, 1, None).is_alive()


# -- the spool without a writer ---------------------------------------------------------------


def _spool(tmp_path: Path, **options: Any) -> Spool:
    values: dict[str, Any] = dict(
        encode_pending=lambda: None,  # no writer: rows are handed over directly
        flush_interval=0.2,
        budget=1 << 20,
        max_lines=1000,
        max_bytes=1 << 20,
        wake_lines=500,
    )
    values.update(options)
    return Spool.for_stream(str(tmp_path), "k", LogConfig(), lelog.FileStore(tmp_path / "store"), **values)


def _add(spool: Spool, pos: int, out: str) -> None:
    spool.add_rows([encode_line("info", pos, out, format_time(1.0), None)])


def test_a_full_queue_refuses_lines_and_counts_them(tmp_path: Path) -> None:
    spool = _spool(tmp_path, max_lines=3)
    for i in range(5):
        _add(spool, i, f"line {i}\n")
    spool.close()  # never started: the queue is written here
    assert spool.stats.written == 3 and spool.stats.lost == 2
    assert _spooled_outs(tmp_path) == ["line 0\n", "line 1\n", "line 2\n"]


def test_lines_after_close_are_ignored_and_discard_removes_everything(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.start()
    _add(spool, 0, "kept\n")
    spool.close()
    _add(spool, 1, "late\n")
    assert _spooled_outs(tmp_path) == ["kept\n"]
    spool.discard()
    assert _spool_dirs(tmp_path) == [] and not any(p.name.endswith(".removing") for p in tmp_path.iterdir())


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        spool = _spool(tmp_path / "spool")
        Spool.prepare_directory(str(tmp_path / "spool"))
        _add(spool, 0, "x\n")
        spool.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    (directory,) = _spool_dirs(tmp_path / "spool")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = list(directory.iterdir())
    assert {p.name for p in files} == {MANIFEST, "0000000000.ndjson"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)


def test_a_bad_spool_dir_is_a_config_error_naming_it(tmp_path: Path) -> None:
    plain = tmp_path / "file"
    plain.write_text("")
    with pytest.raises(ConfigError, match="spool_dir"):
        StreamWriter("k", lelog.FileStore(tmp_path), spool_dir=str(plain))
    with pytest.raises(ConfigError, match="spool_dir"):
        StreamWriter("k", lelog.FileStore(tmp_path), spool_dir=str(plain / "below"))
    with pytest.raises(ConfigError, match="spool_dir"):
        StreamWriter("k", lelog.FileStore(tmp_path), spool_dir=5)
    with pytest.raises(ConfigError, match="spool_fsync_interval"):
        StreamWriter("k", lelog.FileStore(tmp_path), spool_dir=str(tmp_path), spool_fsync_interval=0)


# -- the spool with a writer --------------------------------------------------------------------


def test_lines_are_spooled_masked_and_a_clean_close_removes_the_spool(
    tmp_path: Path, service: FakeLogService
) -> None:
    spool_dir = tmp_path / "spool"
    config = _config(service, secrets=["hush-hush"])
    writer = StreamWriter("job/1", config, spool_dir=spool_dir, flush_interval=0.2)
    for i in range(50):
        writer.write_line(f"line {i} hush-hush")
    assert wait_until(lambda: len(_spooled_outs(spool_dir)) == 50)
    outs = _spooled_outs(spool_dir)
    assert outs == [f"line {i} **************\n" for i in range(50)]
    (directory,) = _spool_dirs(spool_dir)
    manifest_text = (directory / MANIFEST).read_text()
    assert "secret-token" not in manifest_text and "hush" not in manifest_text
    manifest = Manifest.from_json((directory / MANIFEST).read_bytes())
    assert (manifest.key, manifest.account_id, manifest.service) == ("job/1", "acct", service.url)
    assert manifest.owner == ProcessIdentity.current()
    stats = writer.close()
    assert stats.uploaded is True
    assert _spool_dirs(spool_dir) == []


def test_the_spool_keeps_writing_while_the_service_is_blackholed(
    tmp_path: Path, service: FakeLogService
) -> None:
    spool_dir = tmp_path / "spool"
    service.blackhole()
    writer = StreamWriter(
        "job/bh", _config(service), spool_dir=spool_dir, flush_interval=0.2, close_timeout=1.0
    )
    writer.open()
    assert service.wait_for(lambda: len(service.requests) >= 1, timeout=20)  # the open hangs
    for i in range(30):
        writer.write_line(f"line {i}")
    assert wait_until(lambda: len(_spooled_outs(spool_dir)) == 30)
    for i in range(30, 40):
        writer.write_line(f"line {i}")
    stats = writer.close()  # abandoned: the service never answers
    assert stats.uploaded is not True
    assert _spooled_outs(spool_dir) == [f"line {i}\n" for i in range(40)]  # kept for recover
    service.blackhole(False)


def test_the_spool_keeps_every_line_of_a_healthy_run(tmp_path: Path, service: FakeLogService) -> None:
    # Regression: the worker encodes each round and queues its rows for the spool; with a long
    # flush_interval the spool's thread must still be woken by a full batch in its queue, or
    # the queue fills and refuses lines the service took long before any kill.
    writer = StreamWriter(
        "job/healthy",
        _config(service),
        spool_dir=tmp_path,
        flush_interval=20.0,
        max_pending_lines=1000,
        max_batch_lines=100,
        close_timeout=60,
    )
    for group in range(30):
        for i in range(50):
            writer.write_line(f"line {group * 50 + i}")
        assert writer.flush(60)
    writer.close()
    final = writer.spool_stats
    assert final is not None and final.lost == 0 and final.written == 1500, final


class _Gated(MemoryBackend):
    """Holds the first ``open_stream`` and the first ``write`` until the test opens the gate,
    as a slow service would, and says when the worker is waiting there."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()
        self.gate = threading.Event()
        self._held: set[str] = set()

    def _hold(self, call: str) -> None:
        if call not in self._held:
            self._held.add(call)
            self.waiting.set()
            assert self.gate.wait(GENEROUS)
            self.gate.clear()

    def open_stream(self, key: str, **opts: Any) -> None:
        self._hold("open_stream")
        super().open_stream(key, **opts)

    def write(self, key: str, lines: Any, **opts: Any) -> None:
        self._hold("write")
        super().write(key, lines, **opts)


def _release(backend: _Gated) -> None:
    backend.waiting.clear()
    backend.gate.set()


def test_lines_the_spool_encoded_during_a_held_push_go_live_in_pos_order(tmp_path: Path) -> None:
    # While the worker waits on a request the spool's thread encodes what comes in; beyond the
    # pending bound the oldest of those go from the live view (they are in the log), behind
    # one marker that follows what the live queue already held: live lines keep pos order.
    backend = _Gated()
    writer = StreamWriter(
        "job/held", backend, spool_dir=tmp_path, flush_interval=0.2, max_pending_lines=20,
        max_batch_lines=5, close_timeout=60,
    )  # fmt: skip
    try:
        for i in range(12):
            writer.write_line(f"early {i}")
        assert backend.waiting.wait(GENEROUS)  # the worker opens the stream: held
        assert wait_until(lambda: writer.spool_stats.written == 12)  # type: ignore[union-attr]
        _release(backend)
        assert backend.waiting.wait(GENEROUS)  # the first PUT (5 lines) is held; 7 wait behind it
        for first, last in ((0, 12), (12, 24), (24, 30)):  # the spool's thread encodes them
            for i in range(first, last):
                writer.write_line(f"late {i}")
            assert wait_until(lambda: writer.spool_stats.written == 12 + last)  # type: ignore[union-attr]
    finally:
        _release(backend)
    stats = writer.close()
    live = [(line.pos, line.out) for line in backend.lines("job/held")]
    positions = [pos for pos, _ in live]
    assert positions == sorted(set(positions)), live
    assert [out for _, out in live[:5]] == [f"early {i}\n" for i in range(5)]  # the held PUT
    assert any("lines not streamed live" in out for _, out in live) and live[-1][1] == "late 29\n"
    assert stats.dropped["overflow"] > 0 and stats.accepted == stats.sent + stats.dropped_total
    stored = backend.stream("job/held").uploaded
    assert [line.out for line in stored] == [f"early {i}\n" for i in range(12)] + [
        f"late {i}\n" for i in range(30)
    ]


def test_a_failed_upload_at_close_keeps_the_spool(tmp_path: Path, service: FakeLogService) -> None:
    spool_dir = tmp_path / "spool"
    _fail_uploads(service)
    config = _config(service, max_attempts=1)
    writer = StreamWriter("job/up", config, spool_dir=spool_dir, close_timeout=2.0)
    writer.write_line("kept for lelog recover")
    assert writer.close().uploaded is False
    assert _spooled_outs(spool_dir) == ["kept for lelog recover\n"]


def test_skip_closing_stream_has_no_spool(tmp_path: Path, service: FakeLogService) -> None:
    spool_dir = tmp_path / "spool"
    writer = StreamWriter("job/sc", _config(service, skip_closing_stream=True), spool_dir=spool_dir)
    writer.write_line("x")
    writer.close()
    assert _spool_dirs(spool_dir) == []


def test_the_history_budget_bounds_the_spool(tmp_path: Path, service: FakeLogService) -> None:
    spool_dir = tmp_path / "spool"
    _fail_uploads(service)
    writer = StreamWriter(
        "job/big",
        _config(service, max_attempts=1),
        spool_dir=spool_dir,
        history_bytes=20_000,
        flush_interval=0.2,
        close_timeout=2.0,
    )
    for i in range(2000):
        writer.write_line(f"line {i:05d} " + "x" * 40)
    writer.close()
    (directory,) = _spool_dirs(spool_dir)
    on_disk = sum(p.stat().st_size for p in directory.glob("*.ndjson"))
    assert on_disk <= 20_000
    log = read_log(str(directory), Manifest.from_json((directory / MANIFEST).read_bytes()))
    parsed = [json.loads(r) for r in log.body.splitlines()]
    assert parsed[0]["out"].startswith(f"[lelog] {log.missing:,} lines missing")
    assert log.missing + log.lines == 2000 and log.missing > 0
    assert [p["out"][:10] for p in parsed[1:]] == [f"line {i:05d}" for i in range(log.missing, 2000)]


def test_spool_dir_comes_from_the_environment_and_dictconfig_takes_it(
    tmp_path: Path, service: FakeLogService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LELOG_SPOOL_DIR", str(tmp_path / "env"))
    assert StreamWriter("k", lelog.FileStore(tmp_path)).options.spool_dir == str(tmp_path / "env")
    monkeypatch.delenv("LELOG_SPOOL_DIR")
    assert StreamWriter("k", lelog.FileStore(tmp_path)).options.spool_dir is None
    handler = lelog.StreamHandler(
        "job/h", url=service.url, account_id="acct", token="secret-token", spool_dir=str(tmp_path / "h")
    )
    handler.writer.write_line("via the handler")
    assert wait_until(lambda: _spooled_outs(tmp_path / "h") == ["via the handler\n"])
    handler.close()
    assert _spool_dirs(tmp_path / "h") == []


def test_a_full_disk_is_counted_and_live_streaming_goes_on(tmp_path: Path, service: FakeLogService) -> None:
    # RLIMIT_FSIZE makes every write past 4 KiB fail with EFBIG, as a full disk fails them.
    result = run_python(
        f"""
        import json, resource, signal, time
        import lelog
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        config = lelog.LogConfig(url={service.url!r}, account_id="acct", token="secret-token")
        writer = lelog.StreamWriter("job/full", config, spool_dir={str(tmp_path / "spool")!r},
                                    flush_interval=0.2, close_timeout=20)
        def settled():  # every line so far written to the spool or counted as lost
            stats = writer.spool_stats
            return stats.written + stats.lost

        for i in range(3000):
            writer.write_line(f"line {{i}}")
            if i % 500 == 0:  # several spool writes, most of them refused: wait for each
                deadline = time.monotonic() + 60
                while settled() <= i and time.monotonic() < deadline:
                    time.sleep(0.01)
        writer.close()
        spooled = writer.spool_stats
        print(json.dumps({{"lost": spooled.lost, "errors": spooled.errors,
                          "written": spooled.written, "sent": writer.stats.sent}}))
        """,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.splitlines()[-1])
    assert figures["sent"] == 3000
    assert figures["lost"] > 0 and figures["errors"] > 0
    assert figures["lost"] + figures["written"] == 3000
    assert "the disk is full" in result.stderr and "live streaming goes on" in result.stderr
    assert [line["out"] for line in service.all_written("job/full")] == [f"line {i}\n" for i in range(3000)]
    # What the spool kept has no torn row: each row parses, in order.
    for directory in _spool_dirs(tmp_path / "spool"):
        for segment in directory.glob("*.ndjson"):
            data = segment.read_bytes()
            assert data == b"" or data.endswith(b"\n")
            for row in data.splitlines():
                json.loads(row)


def test_a_forked_childs_lines_are_spooled_by_the_parent_not_the_child(
    tmp_path: Path, service: FakeLogService
) -> None:
    result = run_python(
        f"""
        import os
        import lelog
        config = lelog.LogConfig(url={service.url!r}, account_id="acct", token="secret-token")
        writer = lelog.StreamWriter("job/fork", config, spool_dir={str(tmp_path / "spool")!r})
        writer.write_line("parent")
        pid = os.fork()
        if pid == 0:
            writer.write_line("child")
            print("child spool", writer.spool_stats)
            writer.flush(5)
            os._exit(0)
        os.waitpid(pid, 0)
        print(writer.close().uploaded)
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "child spool None" in result.stdout and result.stdout.splitlines()[-1] == "True"
    assert _spool_dirs(tmp_path / "spool") == []
