"""log_stream: a job's lifecycle, its exception, routing between concurrent jobs (threads and
asyncio tasks, by context), logger levels, and an async exit that leaves the loop free."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from typing import Any

import pytest

import lelog
from lelog import ConfigError, LogConfig, log_stream
from tests.helpers import GENEROUS
from tests.service import FakeLogService

# close() returns once it is done: a generous close_timeout costs nothing and keeps a loaded
# machine from cutting a close short.
FAST = {"flush_interval": 0.05, "close_timeout": GENEROUS}


def config_for(service: FakeLogService) -> LogConfig:
    return LogConfig(url=service.url, account_id="acct", token="secret-token")


def messages(service: FakeLogService, key: str) -> list[str]:
    """The msg of each logfmt line in the uploaded log, and other lines as they are."""
    result = []
    for row in service.blob_lines(key) or []:
        out = row["out"].rstrip("\n")
        result.append(out.split(" msg=", 1)[1].split('"')[1] if " msg=" in out else out)
    return result


log = logging.getLogger("lelog_tests.job")


def test_a_job_streams_its_logging_and_output_then_closes(service: FakeLogService) -> None:
    root = logging.getLogger()
    level_before, handlers_before = root.level, root.handlers[:]
    with log_stream("job/k", config_for(service), **FAST) as stream:
        assert stream.key == "job/k"
        log.info("building", extra={"target": "all"})
        log.debug("not captured: below the job's level")
        stream.write("compiler output\nprogress 50%")
        stream.write(b" done\n")
        stream.write_line("summary", level="warn", args={"tests": 3})
        assert stream.flush(GENEROUS)
        assert len(service.all_written("job/k")) == 4
    assert messages(service, "job/k") == ["building", "compiler output", "progress 50% done", "summary"]
    rows = service.blob_lines("job/k")
    assert rows[0]["args"] == {"target": "all"} and rows[3] == {
        **rows[3],
        "level": "warn",
        "args": {"tests": "3"},
    }
    assert not service.is_open("job/k")
    assert stream.stats.closed and stream.stats.sent == 4 and stream.stats.uploaded is True
    # Detached and restored: nothing of the job is left on the root logger.
    assert root.handlers == handlers_before and root.level == level_before
    log.info("after the job")
    assert stream.stats.accepted == 4


def test_an_escaping_exception_is_logged_with_its_traceback_then_reraised(service: FakeLogService) -> None:
    def step() -> None:
        raise ValueError("tests failed: 3")

    with pytest.raises(ValueError, match="tests failed"):
        with log_stream("fail/k", config_for(service), **FAST):
            log.info("running tests")
            step()
    rows = service.blob_lines("fail/k")
    assert messages(service, "fail/k")[:2] == ["running tests", "job failed: ValueError"]
    tail = [row["out"] for row in rows[1:]]
    assert tail[1] == "Traceback (most recent call last):\n"
    assert any("in step" in out for out in tail)
    assert tail[-1] == "ValueError: tests failed: 3\n"
    assert {row["level"] for row in rows[1:]} == {"error"}
    assert not service.is_open("fail/k")


@pytest.mark.parametrize(("code", "expected"), [(0, []), (None, []), (3, ["job exited with status 3"])])
def test_system_exit_is_logged_only_when_it_is_a_failure(
    service: FakeLogService, code: Any, expected: list[str]
) -> None:
    with pytest.raises(SystemExit):
        with log_stream("exit/k", config_for(service), **FAST):
            raise SystemExit(code)
    assert messages(service, "exit/k") == expected


def test_concurrent_jobs_in_threads_get_exactly_their_own_lines(service: FakeLogService) -> None:
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def job(n: int) -> None:
        try:
            with log_stream(f"thread/{n}", config_for(service), **FAST):
                barrier.wait(GENEROUS)  # all three jobs are open at once
                for i in range(30):
                    log.info("job %d line %d", n, i)
                    if i % 10 == 0:
                        time.sleep(0)  # let the other jobs' threads interleave
                barrier.wait(GENEROUS)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GENEROUS)
    assert not errors and not any(thread.is_alive() for thread in threads)
    for n in range(3):
        assert messages(service, f"thread/{n}") == [f"job {n} line {i}" for i in range(30)]


def test_concurrent_jobs_in_asyncio_tasks_get_exactly_their_own_lines(service: FakeLogService) -> None:
    async def job(n: int, started: asyncio.Event, both: list[int]) -> None:
        async with log_stream(f"task/{n}", config_for(service), **FAST) as stream:
            both.append(n)
            if len(both) == 2:
                started.set()
            await started.wait()
            for i in range(20):
                log.info("task %d line %d", n, i)
                await asyncio.sleep(0)  # interleave with the other task
            # asyncio.to_thread carries the context, so the thread's records are this job's.
            await asyncio.to_thread(log.info, "task %d from a thread", n)
        assert stream.stats.closed

    async def main() -> None:
        started, both = asyncio.Event(), []
        await asyncio.gather(job(0, started, both), job(1, started, both))

    asyncio.run(main())
    for n in range(2):
        expected = [f"task {n} line {i}" for i in range(20)] + [f"task {n} from a thread"]
        assert messages(service, f"task/{n}") == expected


def test_the_async_exit_leaves_the_event_loop_free(service: FakeLogService) -> None:
    # Long enough that a loaded machine still ticks several times; a blocked loop ticks never.
    stall = 1.5
    service.stall_next(1, seconds=stall, method="DELETE", path="/stream")

    async def main() -> tuple[int, float]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        async with log_stream("async/k", config_for(service), **FAST):
            log.info("async job")
            started = time.monotonic()
            ticks = 0
        took = time.monotonic() - started
        stop.set()
        await task
        return ticks, took

    ticks, took = asyncio.run(main())
    assert took >= stall * 0.9  # the exit waited for the stalled close...
    assert ticks >= 5  # ...while the loop kept running other tasks
    assert messages(service, "async/k") == ["async job"]


def test_a_record_from_no_jobs_context_goes_to_the_only_active_job(service: FakeLogService) -> None:
    with log_stream("single/k", config_for(service), **FAST) as stream:
        # A plain thread does not inherit the job's context.
        thread = threading.Thread(target=log.info, args=("from a plain thread",))
        thread.start()
        thread.join()
    assert messages(service, "single/k") == ["from a plain thread"]
    assert stream.unrouted == 0


def test_with_several_jobs_a_record_from_no_jobs_context_is_dropped_and_counted(
    service: FakeLogService,
) -> None:
    opened = threading.Barrier(3)
    finish = threading.Event()
    streams: dict[int, Any] = {}
    contexts: dict[int, contextvars.Context] = {}

    def job(n: int) -> None:
        with log_stream(f"multi/{n}", config_for(service), **FAST) as stream:
            streams[n] = stream
            contexts[n] = contextvars.copy_context()
            log.info("job %d own line", n)
            opened.wait(GENEROUS)
            finish.wait(GENEROUS)

    threads = [threading.Thread(target=job, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    try:
        opened.wait(GENEROUS)
        log.info("whose is this?")  # the test's own thread: no job's context
        contexts[1].run(log.info, "run in job 1's context")
    finally:
        finish.set()
        for thread in threads:
            thread.join(GENEROUS)
    assert not any(thread.is_alive() for thread in threads)
    assert messages(service, "multi/0") == ["job 0 own line"]
    assert messages(service, "multi/1") == ["job 1 own line", "run in job 1's context"]
    assert streams[0].unrouted == streams[1].unrouted == 1


def test_nested_jobs_capture_in_the_innermost(service: FakeLogService) -> None:
    with log_stream("outer/k", config_for(service), **FAST):
        log.info("outer 1")
        with log_stream("inner/k", config_for(service), **FAST):
            log.info("inner")
        log.info("outer 2")
    assert messages(service, "outer/k") == ["outer 1", "outer 2"]
    assert messages(service, "inner/k") == ["inner"]


def test_a_named_logger_and_levels(service: FakeLogService) -> None:
    app = logging.getLogger("lelog_tests.job.app")
    assert app.level == logging.NOTSET and logging.getLogger().getEffectiveLevel() == logging.WARNING
    with log_stream("named/k", config_for(service), logger="lelog_tests.job.app", level="DEBUG", **FAST):
        assert app.level == logging.DEBUG  # lowered so DEBUG records reach the handler
        app.debug("app debug")
        logging.getLogger("lelog_tests.other").warning("not the job's logger")
    assert app.level == logging.NOTSET
    assert messages(service, "named/k") == ["app debug"]


def test_levels_are_restored_by_the_last_job_unless_the_program_changed_them(service: FakeLogService) -> None:
    app = logging.getLogger("lelog_tests.job.levels")
    app.setLevel(logging.ERROR)
    try:
        first = log_stream("lv/1", config_for(service), logger=app, level="INFO", **FAST)
        second = log_stream("lv/2", config_for(service), logger=app, level="DEBUG", **FAST)
        with first:
            assert app.level == logging.INFO
            with second:
                assert app.level == logging.DEBUG
            assert app.level == logging.INFO
        assert app.level == logging.ERROR
        with log_stream("lv/3", config_for(service), logger=app, **FAST):
            app.setLevel(logging.CRITICAL)  # the program's own choice
        assert app.level == logging.CRITICAL
        with log_stream("lv/4", config_for(service), logger=app, level=None, **FAST):
            assert app.level == logging.CRITICAL  # level=None leaves levels alone
    finally:
        app.setLevel(logging.NOTSET)


def test_a_job_is_entered_once_and_bad_arguments_are_config_errors(service: FakeLogService) -> None:
    stream = log_stream("once/k", config_for(service), **FAST)
    with stream:
        pass
    with pytest.raises(RuntimeError, match="already entered"):
        with stream:
            pass
    with pytest.raises(ConfigError, match="level"):
        log_stream("k", config_for(service), level="LOUD")
    with pytest.raises(ConfigError, match="logger"):
        log_stream("k", config_for(service), logger=[42])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="flush_interval"):
        log_stream("k", config_for(service), flush_interval=0)
    assert isinstance(stream, lelog.LogStream) and repr(stream) == "<LogStream 'once/k'>"


def test_a_custom_formatter(service: FakeLogService) -> None:
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    with log_stream("fmt/k", config_for(service), formatter=formatter, **FAST):
        log.warning("formatted")
    assert [row["out"] for row in service.blob_lines("fmt/k")] == ["WARNING lelog_tests.job: formatted\n"]


def test_a_job_that_lost_lines_says_so_at_the_end() -> None:
    """docs/hazards.md#silent-drops: the job context manager reports its counters when it ends."""
    from lelog.testing import MemoryBackend

    class Capture(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[tuple[int, str]] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append((record.levelno, record.getMessage()))

    capture = Capture()
    diagnostics = logging.getLogger("lelog")  # where lelog's own reports go (documented)
    diagnostics.addHandler(capture)
    old_level = diagnostics.level
    diagnostics.setLevel(logging.INFO)
    try:
        with lelog.log_stream("ok-job", MemoryBackend(), logger="job-report") as stream:
            stream.write_line("fine")
        with lelog.log_stream("lossy-job", MemoryBackend(), logger="job-report", close_timeout=1) as stream:
            stream.writer.close()  # closed early: what follows is dropped after close
            stream.write_line("too late")
    finally:
        diagnostics.removeHandler(capture)
        diagnostics.setLevel(old_level)
    assert (logging.INFO, "lelog: job 'ok-job': 1 of 1 lines sent, log uploaded") in capture.messages
    warnings = [m for level, m in capture.messages if level == logging.WARNING]
    assert warnings == ["lelog: job 'lossy-job': 0 of 1 lines sent, 1 dropped (after close 1), log uploaded"]
