"""``lelog recover``: killed writers' spools become their stored logs, and only there."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import pytest

import lelog
from lelog._spool import MANIFEST
from tests.helpers import ROOT, dead_url, run_python, wait_until, without_lelog_variables
from tests.service import FakeLogService

TOKEN = "secret-token"


def _env(**extra: str) -> dict[str, str]:
    env = without_lelog_variables()
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def _lelog(*args: str, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    """Run the ``lelog`` command in a child process (a hang fails through the timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "lelog", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env if env is not None else _env(LELOG_TOKEN=TOKEN),
        cwd=str(ROOT),
    )


def _recover(
    spool: Path, service: Optional[FakeLogService] = None, url: str = ""
) -> subprocess.CompletedProcess[str]:
    url = url or (service.url if service is not None else "")
    return _lelog("recover", "--spool", str(spool), "--url", url, "--account-id", "acct")


def _spools(root: Path) -> List[Path]:
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


def _outs(service: FakeLogService, key: str) -> Optional[List[str]]:
    lines = service.blob_lines(key)
    return None if lines is None else [line["out"] for line in lines]


# -- the proof: SIGKILL mid-stream, then recover ---------------------------------------------------

_STREAMING_CHILD = """
import sys, time
import lelog
config = lelog.LogConfig(url={url!r}, account_id="acct", token={token!r})
writer = lelog.StreamWriter({key!r}, config, spool_dir={spool!r}, flush_interval={interval!r})
writer.open()
i = 0
while True:
    writer.write_line(f"line {{i}}")
    print(i, time.monotonic(), flush=True)  # after the line was handed to lelog
    i += 1
    time.sleep(0.002)
"""


def _kill_mid_stream(
    spool: Path, url: str, key: str, *, interval: float = 2.0, run_for: float = 4.0
) -> Tuple[List[int], List[int]]:
    """Run a child that streams numbered lines, SIGKILL it after ``run_for`` seconds of it.

    Returns the lines it handed to lelog, and those it handed at least ``interval`` before
    the kill (time.monotonic is one clock for every process of the machine).  The spool
    writes every ``interval / 2``: a 2 s interval leaves a loaded machine 1 s of slack.
    """
    code = _STREAMING_CHILD.format(url=url, token=TOKEN, key=key, spool=str(spool), interval=interval)
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_env(), cwd=str(ROOT)
    )
    handed: List[Tuple[int, float]] = []
    assert child.stdout is not None
    stdout = child.stdout

    def read() -> None:
        for row in stdout:
            if not row.endswith("\n"):  # the kill cut the last print short: not handed yet
                break
            number, when = row.split()
            handed.append((int(number), float(when)))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert wait_until(lambda: len(handed) > 1 and handed[-1][1] - handed[0][1] >= run_for, timeout=60), (
            "child too slow"
        )
    finally:
        killed_at = time.monotonic()
        child.send_signal(signal.SIGKILL)
        child.wait(60)
        reader.join(60)
        stdout.close()
    assert child.returncode == -signal.SIGKILL
    numbers = [number for number, _ in handed]
    assert numbers == list(range(len(numbers)))
    return numbers, [number for number, when in handed if when <= killed_at - interval]


def _assert_recovered(outs: Optional[List[str]], handed: List[int], expected: List[int]) -> None:
    """Every expected line, in order, nothing duplicated, nothing that was not handed (the
    line being handed at the kill may be there before its number was printed)."""
    assert outs is not None, "no stored log"
    assert len(expected) > 100
    assert outs == [f"line {i}\n" for i in range(len(outs))]
    assert len(expected) <= len(outs) <= len(handed) + 1


def test_a_killed_writers_log_is_recovered_whole(tmp_path: Path, service: FakeLogService) -> None:
    spool = tmp_path / "spool"
    handed, expected = _kill_mid_stream(spool, service.url, "job/killed")
    assert service.is_open("job/killed")  # the kill left it open
    result = _recover(spool, service)
    assert result.returncode == 0, result.stderr
    assert (
        "'job/killed'" in result.stdout and "recovered" in result.stdout and "stream closed" in result.stdout
    )
    _assert_recovered(_outs(service, "job/killed"), handed, expected)
    assert not service.is_open("job/killed")
    assert _spools(spool) == []
    assert service.token_leaks() == []


def test_a_killed_writers_log_is_recovered_when_the_service_was_down_all_along(
    tmp_path: Path, service_factory: Callable[..., FakeLogService]
) -> None:
    spool = tmp_path / "spool"
    url = dead_url()
    handed, expected = _kill_mid_stream(spool, url, "job/down")
    service = service_factory(port=int(url.rsplit(":", 1)[1]))
    assert service.url == url
    result = _recover(spool, service)
    assert result.returncode == 0, result.stderr
    assert "stream already closed" in result.stdout  # it was never opened
    _assert_recovered(_outs(service, "job/down"), handed, expected)
    assert _spools(spool) == []


def test_a_killed_writers_log_is_recovered_after_a_blackholed_run(
    tmp_path: Path, service: FakeLogService
) -> None:
    spool = tmp_path / "spool"
    service.blackhole()
    handed, expected = _kill_mid_stream(spool, service.url, "job/bh")
    service.blackhole(False)
    result = _recover(spool, service)
    assert result.returncode == 0, result.stderr
    _assert_recovered(_outs(service, "job/bh"), handed, expected)
    assert _spools(spool) == []


@pytest.mark.parametrize("trouble", ["down", "blackholed"])
def test_a_normal_exit_that_could_not_store_the_log_keeps_every_line_for_recovery(
    tmp_path: Path, service_factory: Callable[..., FakeLogService], trouble: str
) -> None:
    spool = tmp_path / "spool"
    if trouble == "down":
        url = dead_url()
        service = None
    else:
        service = service_factory()
        service.blackhole()
        url = service.url
    code = f"""
        import time
        import lelog
        config = lelog.LogConfig(url={url!r}, account_id="acct", token={TOKEN!r})
        writer = lelog.StreamWriter("job/exit", config, spool_dir={str(spool)!r}, close_timeout=1.0,
                                    flush_interval=60)  # only the close can spool them in time
        writer.write_line("line 0")
        while writer.spool_stats.written < 1:  # the spool's first write; the next is 30 s away
            time.sleep(0.01)
        for i in range(1, 500):
            writer.write_line(f"line {{i}}")
        # returns at once: the exit hook closes the writer, which cannot store the log
        """
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr
    if service is None:
        service = service_factory(port=int(url.rsplit(":", 1)[1]))
    else:
        service.blackhole(False)
    result = _recover(spool, service)
    assert result.returncode == 0, result.stderr
    assert _outs(service, "job/exit") == [f"line {i}\n" for i in range(500)]  # the last ones too


# -- what recovery leaves alone ----------------------------------------------------------------------

_DYING_CHILD = """
import json, os, signal, time
import lelog
config = lelog.LogConfig(url={url!r}, account_id="acct", token={token!r}, **{config!r})
writer = lelog.StreamWriter({key!r}, config, spool_dir={spool!r}, flush_interval=0.2)
writer.open()
for i in range({lines}):
    writer.write_line(f"{text} {{i}}")
while writer.spool_stats.written < {lines}:
    time.sleep(0.02)
writer.flush(10)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _dead_spool(
    spool: Path, url: str, key: str, *, lines: int = 20, text: str = "line", **config: Any
) -> Path:
    """A spool left by a writer killed once its lines were spooled (and pushed, if it could)."""
    before = set(_spools(spool))
    code = _DYING_CHILD.format(
        url=url, token=TOKEN, key=key, spool=str(spool), lines=lines, text=text, config=config
    )
    result = run_python(code, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    (made,) = set(_spools(spool)) - before
    return made


def test_a_spool_of_another_service_is_left_alone_and_the_token_goes_nowhere(
    tmp_path: Path, service_factory: Callable[..., FakeLogService]
) -> None:
    spool = tmp_path / "spool"
    mine, other = service_factory(), service_factory()
    _dead_spool(spool, other.url, "job/other")
    planted = spool / "999-planted"
    planted.mkdir(mode=0o700)
    manifest = lelog._spool.Manifest(
        key="job/planted",
        account_id="acct",
        service="http://attacker.invalid",
        owner=lelog._spool.ProcessIdentity(999_999, 1, "gone"),
        skip_opening_stream=False,
        trim_new_line_suffix=False,
        created=0.0,
    )
    (planted / MANIFEST).write_bytes(manifest.to_json())
    mine.clear_requests()
    result = _recover(spool, mine)
    assert result.returncode == 0, result.stderr
    assert f"written for {other.url}, not for {mine.url}" in result.stdout
    assert "written for http://attacker.invalid" in result.stdout
    assert len(result.stdout.splitlines()) == 2  # one line per spool
    assert mine.requests == []
    assert len(_spools(spool)) == 2
    # The service it names takes it.
    result = _recover(spool, other)
    assert result.returncode == 0, result.stderr
    assert _outs(other, "job/other") == [f"line {i}\n" for i in range(20)]
    assert _spools(spool) == [planted]


def test_a_spool_of_another_account_is_left_alone(tmp_path: Path, service: FakeLogService) -> None:
    spool = tmp_path / "spool"
    _dead_spool(spool, service.url, "job/acct")
    result = _lelog("recover", "--spool", str(spool), "--url", service.url, "--account-id", "other")
    assert result.returncode == 0, result.stderr
    assert "written for account 'acct', not 'other'" in result.stdout
    assert len(_spools(spool)) == 1


def test_a_running_writer_and_its_key_are_left_alone(tmp_path: Path, service: FakeLogService) -> None:
    spool = tmp_path / "spool"
    dead = _dead_spool(spool, service.url, "job/again")
    config = lelog.LogConfig(url=service.url, account_id="acct", token=TOKEN)
    writer = lelog.StreamWriter("job/again", config, spool_dir=spool, flush_interval=0.2)
    writer.write_line("the new run")
    assert wait_until(lambda: len(_spools(spool)) == 2, timeout=60)
    try:
        result = _recover(spool, service)
        assert result.returncode == 0, result.stderr
        assert f"a running writer (pid {os.getpid()}) holds this key now" in result.stdout
        assert f"its writer still runs (pid {os.getpid()})" in result.stdout
        assert len(_spools(spool)) == 2
    finally:
        assert writer.close().uploaded is True
    assert _spools(spool) == [dead]  # the clean close removed its own spool
    # The new run's stored log is newer than the dead run's spool: it stays, and so does the spool.
    result = _recover(spool, service)
    assert result.returncode == 0, result.stderr
    assert "left alone: the stored log is newer" in result.stdout
    assert _outs(service, "job/again") == ["the new run\n"]
    assert _spools(spool) == [dead]


def test_a_reused_pid_does_not_make_a_dead_writer_look_alive(tmp_path: Path, service: FakeLogService) -> None:
    spool = tmp_path / "spool"
    dead = _dead_spool(spool, service.url, "job/pid")
    obj = json.loads((dead / MANIFEST).read_bytes())
    me = lelog._spool.ProcessIdentity.current()
    if me.start_time is None:
        pytest.skip("no /proc: start times are unknown here")
    obj["owner"] = {"pid": me.pid, "start_time": me.start_time - 1, "boot_id": me.boot_id}
    (dead / MANIFEST).write_text(json.dumps(obj))
    result = _recover(spool, service)
    assert result.returncode == 0, result.stderr
    assert "recovered" in result.stdout
    assert _outs(service, "job/pid") == [f"line {i}\n" for i in range(20)]


def test_a_spool_whose_upload_fails_stays_for_the_next_try(tmp_path: Path, service: FakeLogService) -> None:
    spool = tmp_path / "spool"
    _dead_spool(spool, service.url, "job/retry")
    service.fail_next(1000, 500, method="POST", path="/blob/link/upload")
    service.fail_next(1000, 500, method="POST", path="/blob")
    result = _lelog(
        "recover", "--spool", str(spool), "--url", service.url, "--account-id", "acct", "--timeout", "1"
    )
    assert result.returncode == 1
    assert "FAILED" in result.stdout and "the spool stays for the next try" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    assert len(_spools(spool)) == 1 and service.is_open("job/retry")
    service.clear_faults()
    result = _recover(spool, service)
    assert result.returncode == 0, result.stderr
    assert _outs(service, "job/retry") == [f"line {i}\n" for i in range(20)]
    assert _spools(spool) == [] and not service.is_open("job/retry")


def test_of_two_dead_runs_of_a_key_the_newer_log_is_the_one_stored(
    tmp_path: Path, service: FakeLogService
) -> None:
    spool = tmp_path / "spool"
    older = _dead_spool(spool, service.url, "job/twice", lines=3, text="older")
    newer = _dead_spool(spool, service.url, "job/twice", lines=3, text="newer")
    older.rename(spool / "9-older")  # names sort the other way round
    newer.rename(spool / "0-newer")
    result = _recover(spool, service)
    assert result.returncode == 0, result.stderr
    assert result.stdout.index("(9-older)") < result.stdout.index("(0-newer)")
    # The newer run re-opened the stream: the older spool's stream is not its own any more.
    assert "(9-older): left alone: its live stream holds a line 0 that is not the spool's" in result.stdout
    assert _outs(service, "job/twice") == ["newer 0\n", "newer 1\n", "newer 2\n"]
    assert _spools(spool) == [spool / "9-older"]
    # Once the newer run's log is stored, the older spool never replaces it.
    again = _recover(spool, service)
    assert "(9-older): left alone: the stored log is newer" in again.stdout
    assert _outs(service, "job/twice") == ["newer 0\n", "newer 1\n", "newer 2\n"]


def test_a_spool_another_recovery_holds_is_left_alone(tmp_path: Path, service: FakeLogService) -> None:
    spool = tmp_path / "spool"
    dead = _dead_spool(spool, service.url, "job/busy")
    with open(dead / MANIFEST, "rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        result = _recover(spool, service)
    assert result.returncode == 0, result.stderr
    assert "another lelog recover is at it" in result.stdout
    assert _spools(spool) == [dead]


def test_what_is_not_a_spool_of_ours_is_left_alone(tmp_path: Path, service: FakeLogService) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "a-file").write_text("x")
    (spool / "no-manifest").mkdir()
    (spool / "bad-manifest").mkdir()
    (spool / "bad-manifest" / MANIFEST).write_text("{}")
    (spool / "a-link").symlink_to(tmp_path)
    (spool / ".x.removing").mkdir()  # an interrupted removal: finished silently
    result = _recover(spool, service)
    assert result.returncode == 0, result.stderr
    assert "not a directory" in result.stdout and "no manifest" in result.stdout
    assert "unreadable manifest" in result.stdout
    assert len(result.stdout.splitlines()) == 4
    assert not (spool / ".x.removing").exists()
    assert service.requests == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_another_users_spool_is_left_alone(tmp_path: Path, service: FakeLogService) -> None:
    spool = tmp_path / "spool"
    dead = _dead_spool(spool, service.url, "job/theirs")
    os.chown(dead, 12345, -1)
    result = _recover(spool, service)
    assert "another user owns it" in result.stdout
    assert _spools(spool) == [dead] and service.blob("job/theirs") is None


def test_skip_opening_stream_is_closed_with_a_snapshot_and_not_uploaded(
    tmp_path: Path, service: FakeLogService
) -> None:
    spool = tmp_path / "spool"
    with lelog.LogServiceClient(lelog.LogConfig(url=service.url, account_id="acct", token=TOKEN)) as client:
        client.open_stream("job/snap")  # the engine opened it
    _dead_spool(spool, service.url, "job/snap", skip_opening_stream=True)
    result = _recover(spool, service)
    assert result.returncode == 0, result.stderr
    assert "stream closed with a snapshot" in result.stdout
    assert service.requests_for("job/snap", method="POST", path="/blob") == []
    assert service.requests_for("job/snap", path="/blob/link/upload") == []
    assert _outs(service, "job/snap") == [f"line {i}\n" for i in range(20)]


def test_no_spool_directory_is_a_usage_error_with_a_service(tmp_path: Path) -> None:
    result = _lelog("recover", "--url", dead_url(), "--account-id", "acct")
    assert result.returncode == 2
    assert "no spool directory: give --spool DIR or set LELOG_SPOOL_DIR" in result.stderr
    # The file store needs none: it has its live files to look at.
    result = _lelog("recover", env=_env(LELOG_HOME=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "no spools or live files of dead writers to recover" in result.stderr


# -- the file store: a killed `lelog run` ----------------------------------------------------------


def test_a_killed_lelog_run_is_finished_into_the_file_store(tmp_path: Path, service: FakeLogService) -> None:
    spool, home = tmp_path / "spool", tmp_path / "home"
    command = textwrap.dedent(
        """
        import sys, time
        for i in range(50):
            print(f"out {i}", flush=True)
        time.sleep(600)
        """
    )
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lelog",
            "run",
            "--spool",
            str(spool),
            "--home",
            str(home),
            "--key",
            "ci/run",
            "--flush-interval",
            "0.2",
            "--",
            sys.executable,
            "-c",
            command,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
        cwd=str(ROOT),
        start_new_session=True,  # its own process group: the command dies with it
    )
    store = lelog.FileStore(home)
    try:
        assert wait_until(
            lambda: _spooled(spool) >= 50 and os.path.exists(store.live_path("ci/run")), timeout=60
        )
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(60)
    assert not os.path.exists(store.log_path("ci/run"))
    # A recovery configured for a service leaves a file-store spool alone...
    result = _recover(spool, service)
    assert "left alone: written for file:" in result.stdout
    # ...and one without a service finishes it: the stored log, and no live file left over.
    result = _lelog("recover", "--spool", str(spool), "--home", str(home), env=_env())
    assert result.returncode == 0, result.stderr
    assert f"recovered into file:{home}" in result.stdout
    assert [line.out for line in lelog._line.parse_ndjson(store.download("ci/run"))] == [
        f"out {i}\n" for i in range(50)
    ]
    assert not os.path.exists(store.live_path("ci/run"))
    assert _spools(spool) == []


_PRINT_THEN_SLEEP = textwrap.dedent(
    """
    import time
    for i in range(50):
        print(f"out {i}", flush=True)
    time.sleep(600)
    """
)


def _start_lelog_run(home: Path, key: str) -> subprocess.Popen[bytes]:
    """``lelog run`` without a spool, its command printing 50 lines and then sleeping."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "lelog", "run", "--home", str(home), "--key", key,
            "--flush-interval", "0.2", "--", sys.executable, "-c", _PRINT_THEN_SLEEP,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
        cwd=str(ROOT),
        start_new_session=True,  # its own process group: the command dies with it
    )  # fmt: skip


def _live_rows(path: str) -> int:
    try:
        with open(path, "rb") as fh:
            return fh.read().count(b"\n")
    except FileNotFoundError:
        return 0


def test_a_killed_lelog_run_without_a_spool_is_finished_into_the_file_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = lelog.FileStore(home)
    live = store.live_path("ci/killed")
    run = _start_lelog_run(home, "ci/killed")
    try:
        assert wait_until(lambda: _live_rows(live) >= 50, timeout=60)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(60)
    assert not os.path.exists(store.log_path("ci/killed"))
    with open(live, "ab") as fh:
        fh.write(b'{"level":"info","pos":50,"out":"torn')  # as if killed mid-append
    # LELOG_HOME, as `lelog run --home` resolved it; no spool anywhere.
    result = _lelog("recover", env=_env(LELOG_HOME=str(home)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"lelog recover: 'ci/killed' (live file): its writer is gone; recovered into file:{home}: "
        "50 lines stored, live file removed"
    ]
    assert not os.path.exists(live)
    shown = _lelog("cat", "--key", "ci/killed", "--home", str(home), env=_env())
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [f"out {i}" for i in range(50)]
    # Nothing is left to do a second time.
    again = _lelog("recover", "--home", str(home), env=_env())
    assert again.returncode == 0 and again.stdout == ""
    assert "no spools or live files of dead writers to recover" in again.stderr


def test_a_running_lelog_runs_live_file_is_left_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = lelog.FileStore(home)
    live = store.live_path("ci/running")
    run = _start_lelog_run(home, "ci/running")
    try:
        assert wait_until(lambda: _live_rows(live) >= 50, timeout=60)
        result = _lelog("recover", "--home", str(home), env=_env())
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            f"lelog recover: 'ci/running' (live file): left alone: a running writer (pid {run.pid}) holds this key now"
        ]
        assert _live_rows(live) >= 50 and not os.path.exists(store.log_path("ci/running"))
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(60)


_DYING_FILE_STORE_CHILD = """
import os, signal, time
import lelog
writer = lelog.StreamWriter({key!r}, lelog.FileStore({home!r}), spool_dir={spool!r}, flush_interval=0.2)
writer.open()
for i in range(20):
    writer.write_line(f"line {{i}}")
while writer.spool_stats.written < 20:
    time.sleep(0.02)
writer.flush(10)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_spool_is_not_finished_into_a_key_a_live_file_store_writer_holds(tmp_path: Path) -> None:
    spool, home = tmp_path / "spool", tmp_path / "home"
    code = _DYING_FILE_STORE_CHILD.format(key="ci/again", home=str(home), spool=str(spool))
    assert run_python(code, timeout=60).returncode == -signal.SIGKILL
    # A new run of the key, without a spool, holds it now (this process: the lock is fcntl's).
    store = lelog.FileStore(home)
    store.open_stream("ci/again")
    store.write("ci/again", [lelog.Line("the new run\n", 0, 1.0)])
    try:
        result = _lelog("recover", "--spool", str(spool), "--home", str(home), env=_env())
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 2 and f"left alone: process {os.getpid()} holds this key now" in lines[0]
        assert (
            lines[1] == "lelog recover: 'ci/again' (live file): left alone: its spool stays for the next try"
        )
        # The new run's stream is untouched, and nothing was stored over it.
        live = Path(store.live_path("ci/again")).read_bytes()
        assert [line.out for line in lelog._line.parse_ndjson(live)] == ["the new run\n"]
        assert len(_spools(spool)) == 1 and not os.path.exists(store.log_path("ci/again"))
    finally:
        store.close_stream("ci/again", snapshot=True)
        store.close()
    # Once the new run is done, the dead run's spool is finished (of two runs, the older
    # one's log is stored last here: recovery can only come after the run that held the key).
    result = _lelog("recover", "--spool", str(spool), "--home", str(home), env=_env())
    assert result.returncode == 0 and "recovered into file:" in result.stdout, result
    assert _spools(spool) == []
    assert [line.out for line in lelog._line.parse_ndjson(store.download("ci/again"))] == [
        f"line {i}\n" for i in range(20)
    ]


def _spooled(spool: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for d in _spools(spool) for p in d.glob("*.ndjson"))


def test_the_commands_document_the_spool() -> None:
    recover = _lelog("recover", "--help")
    assert recover.returncode == 0 and "--spool DIR" in recover.stdout and "LELOG_SPOOL_DIR" in recover.stdout
    run = _lelog("run", "--help")
    assert run.returncode == 0 and "--spool DIR" in run.stdout and "lelog recover" in run.stdout


def test_a_clean_lelog_run_leaves_no_spool(tmp_path: Path) -> None:
    spool, home = tmp_path / "spool", tmp_path / "home"
    result = _lelog(
        "run", "--spool", str(spool), "--home", str(home), "--key", "ci/ok", "--",
        sys.executable, "-c", "print('done')",
        env=_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert spool.is_dir() and _spools(spool) == []
    assert [line.out for line in lelog._line.parse_ndjson(lelog.FileStore(home).download("ci/ok"))] == [
        "done\n"
    ]


_JOINER = """
import os, lelog
config = lelog.LogConfig(url={url!r}, account_id="acct", token={token!r})
writer = lelog.StreamWriter("k", config, spool_dir={spool!r})
for i in range(3):
    writer.write_line(f"joiner {{i}}")
print(writer.flush(timeout=30), flush=True)
os._exit(0)  # killed, as far as its spool knows
"""


def test_the_spool_of_a_killed_writer_that_joined_a_writer_elsewhere_is_removed_not_stored(
    tmp_path: Path, service: FakeLogService
) -> None:
    """A writer that joined a stream a writer elsewhere holds leaves its lines to that writer:
    recovering its spool must never store them over that writer's log, or close its stream."""
    with lelog.LogServiceClient(lelog.LogConfig(url=service.url, account_id="acct", token=TOKEN)) as client:
        client.open_stream("k")
        client.write("k", [lelog.Line("elsewhere\n", 0, time.time() + 600)])  # newer than the joiner
        spool = tmp_path / "spool"
        result = run_python(_JOINER.format(url=service.url, token=TOKEN, spool=str(spool)), timeout=60)
        assert result.stdout.split() == ["True"], result.stderr
        assert "is being written by a writer this host cannot reach" in result.stderr
        assert len(_spools(spool)) == 1
        recovered = _recover(spool, service)
        assert recovered.returncode == 0, recovered.stderr
        assert (
            "nothing to store: its writer streamed into a stream a writer elsewhere holds" in recovered.stdout
        )
        assert _spools(spool) == [] and service.is_open("k") and service.blob("k") is None
        assert service.requests_for(key="k", method="DELETE") == []
