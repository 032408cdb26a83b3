"""One stream per far end, account and key in a process: writers whose lifetimes
overlap share one stream, one history and one pos sequence; the last one out finishes it."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from lelog import ConfigError, LogConfig, LogServiceClient, StreamWriter
from lelog._streamlock import StreamName, holder_of
from lelog.testing import ManualClock, MemoryBackend
from tests.helpers import run_python, stream_dictconfig
from tests.service import FakeLogService


def test_two_writers_on_one_key_share_the_stream_and_the_last_one_finishes_it() -> None:
    backend = MemoryBackend()
    first = StreamWriter("k", backend, close_timeout=3)
    second = StreamWriter("k", backend, close_timeout=3)
    first.write_line("one")
    second.write_line("two")
    first.write("three")  # a partial line: delivered when its writer lets go
    stats_first = first.close()
    assert stats_first.handed_on and stats_first.uploaded is None
    assert "handed on to another writer" in stats_first.summary()
    assert ("close_stream", "k") not in backend.calls  # the other writer still uses it
    first.write_line("late")  # this writer let go: counted, not sent
    second.write_line("four")
    stats_second = second.close()
    assert stats_second.uploaded is True and not stats_second.handed_on
    stored = backend.stream("k").uploaded or ()
    assert [line.out for line in stored] == ["one\n", "two\n", "three", "four\n"]
    assert [line.pos for line in stored] == [0, 1, 2, 3]
    names = [name for name, _ in backend.calls]
    assert [names.count(call) for call in ("open_stream", "upload", "close_stream")] == [1, 1, 1]
    assert stats_second.dropped["after_close"] == 1


def test_a_stream_finished_is_a_new_log_for_the_next_writer() -> None:
    backend = MemoryBackend()
    with StreamWriter("k", backend) as writer:
        writer.write_line("first log")
    with StreamWriter("k", backend) as writer:
        writer.write_line("second log")
    names = [name for name, _ in backend.calls]
    assert names.count("open_stream") == 2 and names.count("close_stream") == 2
    assert [line.out for line in backend.stream("k").uploaded or ()] == ["second log\n"]


def test_different_keys_and_different_far_ends_do_not_share() -> None:
    one, other = MemoryBackend(), MemoryBackend()
    writers = [StreamWriter("a", one), StreamWriter("b", one), StreamWriter("a", other)]
    for writer in writers:
        writer.write_line(writer.key)
    for writer in writers:
        assert writer.close().uploaded is True
    assert one.outs("a") == ["a"] and one.outs("b") == ["b"] and other.outs("a") == ["a"]


@pytest.mark.parametrize(
    ("config", "options", "name"),
    [
        ({"skip_opening_stream": True}, {}, "skip_opening_stream"),
        ({"skip_closing_stream": True}, {}, "skip_closing_stream"),
        ({"trim_new_line_suffix": True}, {}, "trim_new_line_suffix"),
        ({"indirect_upload": True}, {}, "indirect_upload"),
        ({}, {"history_bytes": 1000}, "history_bytes"),
    ],
)
def test_conflicting_stream_settings_are_a_config_error(config: dict, options: dict, name: str) -> None:
    backend = MemoryBackend()
    first = StreamWriter("k", backend)
    backend.config = LogConfig(**config)  # the same far end, seen through another config
    with pytest.raises(ConfigError, match=f"{name}=.*the first writer has"):
        StreamWriter("k", backend, **options)
    first.write_line("still fine")
    stats = first.close()
    assert stats.uploaded is True and not stats.handed_on  # the refused writer took no share


def test_a_writer_sharing_a_stream_masks_its_lines_with_its_own_secrets() -> None:
    backend = MemoryBackend(LogConfig(secrets=["first-secret"]))
    first = StreamWriter("k", backend)
    backend.config = LogConfig(secrets=["second-secret"])
    second = StreamWriter("k", backend)
    second.write_line("second-secret and first-secret", args={"second-secret": "v"})
    second.write("partial second-secret")
    second.close()
    first.close()
    outs = [line.out for line in backend.stream("k").uploaded or ()]
    assert outs == ["************** and **************\n", "partial **************"]
    assert b"second-secret" not in json.dumps([line.to_dict() for line in backend.lines("k")]).encode()


def test_shared_writers_driven_by_a_clock() -> None:
    clock = ManualClock()
    backend = MemoryBackend()
    first = StreamWriter("k", backend, clock=clock, threaded=False)
    second = StreamWriter("k", backend, clock=clock, threaded=False)
    first.write_line("a")
    second.write_line("b")
    second.step()
    clock.advance(1.0)
    first.step()
    assert backend.outs("k") == ["a", "b"]
    assert second.close().handed_on
    assert first.close().uploaded is True


DICTCONFIG_TWICE = (
    stream_dictconfig(close_timeout=3)
    + """
first = logging.getLogger().handlers[0]
for i in range(3):
    logging.info("first %d", i)
{second}
second = logging.getLogger().handlers[0]
for i in range(2):
    logging.info("second %d", i)
print(first.stats.handed_on, first.stats.uploaded, flush=True)
"""
)


def stored_messages(service: FakeLogService, key: str = "k") -> list[str]:
    return [row["out"].split('msg="')[1].split('"')[0] for row in service.blob_lines(key) or []]


@pytest.mark.parametrize("how", ["dictConfig", "fileConfig"])
def test_reconfiguring_logging_hands_the_stream_on(service: FakeLogService, how: str, tmp_path: Any) -> None:
    if how == "dictConfig":
        second = "logging.config.dictConfig(CFG)"
    else:
        ini = tmp_path / "logging.ini"
        ini.write_text(
            "[loggers]\nkeys=root\n[handlers]\nkeys=stream\n[formatters]\nkeys=\n"
            "[logger_root]\nlevel=INFO\nhandlers=stream\n"
            "[handler_stream]\nclass=lelog.StreamHandler\n"
            f"args=('k',)\nkwargs={{'url': {service.url!r}, 'account_id': 'acct', "
            "'token': 'secret-token', 'close_timeout': 3}\n"
        )
        second = f"logging.config.fileConfig({str(ini)!r})"
    result = run_python(DICTCONFIG_TWICE.format(url=service.url, second=second), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "None"]  # the first handler handed its stream on
    assert stored_messages(service) == ["first 0", "first 1", "first 2", "second 0", "second 1"]
    assert [row["pos"] for row in service.blob_lines("k") or []] == [0, 1, 2, 3, 4]
    opens = service.requests_for(key="k", method="POST", path="/stream")
    closes = service.requests_for(key="k", method="DELETE", path="/stream")
    assert len(opens) == 1 and len(closes) == 1 and not service.is_open("k")


def test_a_replacement_on_another_key_lets_the_old_stream_finish(service: FakeLogService) -> None:
    second = "CFG['handlers']['stream']['key'] = 'other'\nlogging.config.dictConfig(CFG)"
    result = run_python(DICTCONFIG_TWICE.format(url=service.url, second=second), timeout=60)
    assert result.returncode == 0, result.stderr
    assert stored_messages(service, "k") == ["first 0", "first 1", "first 2"]
    assert stored_messages(service, "other") == ["second 0", "second 1"]
    assert not service.is_open("k") and not service.is_open("other")


OVERLAPPING = """
import logging, lelog
config = dict(url={url!r}, account_id="acct", token="secret-token", close_timeout=3)
root = logging.getLogger()
root.setLevel(logging.INFO)
a = lelog.StreamHandler("k", **config)
root.addHandler(a)
logging.info("a only 0")
b = lelog.StreamHandler("k", **config)
root.addHandler(b)
root.removeHandler(a)
logging.info("b only 1")
a.close()
logging.info("b only 2")
print(a.stats.handed_on, flush=True)
"""


def test_overlapping_handlers_on_one_key_keep_every_line(service: FakeLogService) -> None:
    result = run_python(OVERLAPPING.format(url=service.url), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]
    assert stored_messages(service) == ["a only 0", "b only 1", "b only 2"]
    assert len(service.requests_for(key="k", method="DELETE", path="/stream")) == 1


def test_two_jobs_on_one_key_share_the_stream() -> None:
    import logging

    import lelog

    backend = MemoryBackend()
    log = logging.getLogger("test_streams.jobs")
    with lelog.log_stream("k", backend, logger=log) as outer:
        log.info("outer before")
        with lelog.log_stream("k", backend, logger=log) as inner:
            log.info("inner")
        log.info("outer after")
    assert inner.stats.handed_on and outer.stats.uploaded is True
    stored = [line.out for line in backend.stream("k").uploaded or ()]
    assert [out.split('msg="')[1].split('"')[0] for out in stored] == ["outer before", "inner", "outer after"]
    assert [name for name, _ in backend.calls].count("close_stream") == 1


CONFIG = {"account_id": "acct", "token": "secret-token"}


def messages(service: FakeLogService, key: str = "k") -> list[str]:
    return [row["out"].split('msg="')[1].split('"')[0] for row in service.blob_lines(key) or []]


# -- handed_on only when another writer took the stream --------------------------------------

HANDOFF_NOBODY_TAKES = (
    """
import atexit

def report():  # registered before lelog's exit hook, so it runs after it (atexit is LIFO)
    stats = first.stats
    print(stats.handed_on, stats.uploaded, "handed on" in stats.summary(), flush=True)

atexit.register(report)
"""
    + stream_dictconfig()
    + """
first = logging.getLogger().handlers[0]
logging.info("first line")
CFG["handlers"]["stream"]["key"] = "other"
logging.config.dictConfig(CFG)  # the hand-off waits; nobody on "k" takes it: first finishes it
logging.info("other line")
"""
)


def test_a_hand_off_nobody_took_reports_the_upload_not_handed_on(service: FakeLogService) -> None:
    result = run_python(HANDOFF_NOBODY_TAKES.format(url=service.url), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "False"], result.stdout
    assert messages(service) == ["first line"]


SPAWN_CHILD = """
import multiprocessing, lelog
CONFIG = dict(url={url!r}, account_id="acct", token="secret-token")

def child():
    writer = lelog.StreamWriter("k", lelog.LogConfig(**CONFIG))
    writer.write_line("child line")
    stats = writer.close()
    print("CHILD", stats.handed_on, stats.shared, stats.uploaded, flush=True)
    print("SUMMARY", stats.summary(), flush=True)

if __name__ == "__main__":
    writer = lelog.StreamWriter("k", lelog.LogConfig(**CONFIG))
    writer.write_line("parent line")
    p = multiprocessing.get_context("spawn").Process(target=child)
    p.start()
    p.join()
    stats = writer.close()
    print("PARENT", stats.handed_on, stats.shared, stats.uploaded, flush=True)
"""


def test_a_spawn_child_reports_that_it_handed_its_lines_to_the_owner(
    service: FakeLogService, tmp_path: Any
) -> None:
    script = tmp_path / "spawned.py"
    script.write_text(SPAWN_CHILD.format(url=service.url))
    result = run_python(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')", timeout=90)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert rows["CHILD"] == ["True", "True", "None"]  # handed on; the owner stores the log
    assert rows["PARENT"] == ["False", "True", "True"]
    assert " ".join(rows["SUMMARY"]) == (
        "1 of 1 lines sent, stream shared with 1 other process on this host; handed on"
    )
    assert [row["out"] for row in service.blob_lines("k") or []] == ["parent line\n", "child line\n"]


# -- a replacement with other settings takes the hand-off and keeps every line --------------

REPLACEMENT_WITH_OTHER_SETTINGS = (
    stream_dictconfig()
    + """
first = logging.getLogger().handlers[0]
for i in range(3):
    logging.info("first %d", i)
OTHER = dict(CFG, handlers={{"stream": dict(CFG["handlers"]["stream"], {setting})}})
logging.config.dictConfig(OTHER)  # the old handler lets go; its replacement differs
second = logging.getLogger().handlers[0]
for i in range(2):
    logging.info("second %d", i)
print("FIRST", first.stats.handed_on, flush=True)
logging.shutdown()
print("SECOND", second.stats.uploaded, flush=True)
"""
)


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("history_bytes=1000", "history_bytes=1000 (the first writer has 5242880)"),
        ("trim_new_line_suffix=True", "trim_new_line_suffix=True (the first writer has False)"),
    ],
)
def test_a_replacement_with_other_settings_takes_the_hand_off_and_keeps_every_line(
    service: FakeLogService, setting: str, named: str
) -> None:
    code = REPLACEMENT_WITH_OTHER_SETTINGS.format(url=service.url, setting=setting)
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["FIRST", "True", "SECOND", "True"], result.stdout
    assert messages(service) == ["first 0", "first 1", "first 2", "second 0", "second 1"]
    ends = [r.method for r in service.requests_for(key="k", path="/stream") if r.method in ("POST", "DELETE")]
    assert ends == ["POST", "DELETE"]  # one stream, opened once
    assert "keeps its settings until it ends" in result.stderr
    assert named in result.stderr


# -- a new writer on a key waits for the old one to finish it before opening -----------------


class GatedUploads(MemoryBackend):
    """A far end whose uploads wait for the test to let them through."""

    def __init__(self) -> None:
        super().__init__()
        self.uploading = threading.Event()
        self.let_through = threading.Event()

    def upload(self, key: str, lines: Any, **opts: Any) -> None:
        self.uploading.set()
        assert self.let_through.wait(60)
        super().upload(key, lines, **opts)


def test_a_new_writer_on_a_key_being_finished_opens_only_after_the_old_close() -> None:
    backend = GatedUploads()
    old = StreamWriter("k", backend, close_timeout=30)
    old.write_line("old line")
    old.close(wait=False)  # the worker runs the final sequence: it waits in the upload
    assert backend.uploading.wait(30)
    try:
        new = StreamWriter("k", backend, close_timeout=30)  # the old one is finishing: a new log
        new.write_line("new line")
        # A negative check: the new writer must not open (or push) while the old one is
        # finishing; it has a second to do so wrongly.  The order below is the proof.
        assert new.flush(1.0) is False
    finally:
        backend.let_through.set()
    assert old.close().uploaded is True
    assert new.close().uploaded is True
    assert backend.calls == [
        ("open_stream", "k"),
        ("write", "k"),
        ("upload", "k"),
        ("close_stream", "k"),
        ("open_stream", "k"),
        ("write", "k"),
        ("upload", "k"),
        ("close_stream", "k"),
    ]
    stored = [line.out for line in backend.stream("k").uploaded or ()]
    assert stored == ["new line\n"]  # the second log, as the service does on re-open


def test_a_writer_that_hands_the_stream_on_reports_its_lines_sent() -> None:
    backend = MemoryBackend()
    first = StreamWriter("k", backend)
    second = StreamWriter("k", backend)
    for i in range(9):
        first.write_line(f"line {i}")
    stats = first.close()
    assert stats.handed_on and stats.sent == 9 and stats.pending == 0
    assert stats.summary() == "9 of 9 lines sent, stream handed on to another writer"
    second.close()
    assert backend.outs("k") == [f"line {i}" for i in range(9)]


def _stream_name(service: FakeLogService, key: str) -> StreamName:
    config = LogConfig(url=service.url, account_id="acct", token="secret-token")
    with LogServiceClient(config) as client:
        return StreamName.of(config, client, key)


def test_a_writer_holds_its_streams_host_wide_lock_from_open_to_close(service: FakeLogService) -> None:
    writer = StreamWriter("job/locked", LogConfig(url=service.url, account_id="acct", token="secret-token"))
    name = _stream_name(service, "job/locked")
    assert holder_of(name) is None  # built, not yet streaming: no I/O at construction
    writer.write_line("a line")
    assert writer.flush(timeout=30)
    holder = holder_of(name)
    assert holder is not None and holder.is_this_process() and holder.purpose == "writer"
    assert writer.close().uploaded is True
    assert holder_of(name) is None


SECOND_PROCESS = """
import lelog
writer = lelog.StreamWriter("job/twice", lelog.LogConfig(url={url!r}, account_id="acct", token="secret-token"))
writer.write_line("from the second process")
print(writer.close().summary())
"""


def test_a_second_process_on_a_held_stream_joins_it_without_reopening(service: FakeLogService) -> None:
    writer = StreamWriter("job/twice", LogConfig(url=service.url, account_id="acct", token="secret-token"))
    try:
        writer.write_line("from this process")
        assert writer.flush(timeout=30)
        result = run_python(SECOND_PROCESS.format(url=service.url), timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith("stream shared with 1 other process on this host; handed on")
        assert result.stderr == ""
        writer.write_line("from this process again")
    finally:
        stats = writer.close()
    assert stats.uploaded is True and stats.shared
    outs = [row["out"] for row in service.blob_lines("job/twice") or []]
    assert outs == ["from this process\n", "from the second process\n", "from this process again\n"]
    assert len(service.requests_for(key="job/twice", method="POST", path="/stream")) == 1
