"""The ``lelog`` command, end to end in subprocesses, against the fake service and the file store."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from lelog import BlobNotFound, Line
from lelog._cli import main
from lelog._filestore import FileStore, encode_key
from tests.helpers import dead_url, wait_until, without_lelog_variables
from tests.service import FakeLogService
from tests.test_filestore import mount_tmpfs

ROOT = Path(__file__).resolve().parent.parent
KEY = "stage-1/build step"
#: For run and push: a live line shows within 0.1 s instead of 1 s (keeps the suite fast).
FAST = ["--flush-interval", "0.1"]
#: A close that is not about the deadline gets a generous one: a loaded machine never cuts it.
GENEROUS_CLOSE = 30

# A command that prints, then waits for the test to create the file named by argv[1].
GATED = """\
import os, sys, time
print("first line")
print("to stderr", file=sys.stderr)
deadline = time.time() + 30
while not os.path.exists(sys.argv[1]) and time.time() < deadline:
    time.sleep(0.01)
sys.stdout.write("last line without newline")
sys.exit(3)
"""

# A command that reports a SIGINT once and exits 130 (a second delivery is ignored).
INTERRUPTIBLE = """\
import os, signal, time
def stop(signum, frame):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("got SIGINT", flush=True)
    os._exit(130)
signal.signal(signal.SIGINT, stop)
print("ready", flush=True)
time.sleep(30)
"""


def lelog(*args: str) -> List[str]:
    return [sys.executable, "-m", "lelog", *args]


def outs_of(data: bytes) -> List[str]:
    return [json.loads(row)["out"] for row in data.splitlines()]


class Target:
    """Where ``lelog`` writes in a test: the flags to get there and how to look inside."""

    def __init__(self, flags: List[str], env: Dict[str, str]) -> None:
        self.flags = flags
        self.env = env

    def live(self, key: str) -> List[str]:
        raise NotImplementedError

    def stored(self, key: str) -> Optional[List[str]]:
        raise NotImplementedError

    def is_open(self, key: str) -> bool:
        raise NotImplementedError


class ServiceTarget(Target):
    def __init__(self, service: FakeLogService, env: Dict[str, str]) -> None:
        # The token comes from the environment: on the command line ps would show it.
        super().__init__(
            ["--url", service.url, "--account-id", service.account_id], dict(env, LELOG_TOKEN=service.token)
        )
        self.service = service

    def live(self, key: str) -> List[str]:
        return [line["out"] for line in self.service.all_written(key)]

    def stored(self, key: str) -> Optional[List[str]]:
        blob = self.service.blob_lines(key)
        return None if blob is None else [line["out"] for line in blob]

    def is_open(self, key: str) -> bool:
        return self.service.is_open(key)


class FilesTarget(Target):
    def __init__(self, home: Path, env: Dict[str, str]) -> None:
        super().__init__(["--home", str(home)], env)
        self.store = FileStore(home)

    def live(self, key: str) -> List[str]:
        try:
            with open(self.store.live_path(key), "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return []
        return outs_of(data[: data.rfind(b"\n") + 1])  # not a row still being appended

    def stored(self, key: str) -> Optional[List[str]]:
        try:
            data = self.store.download(key)
        except BlobNotFound:
            return None
        return outs_of(data)

    def is_open(self, key: str) -> bool:
        return os.path.exists(self.store.live_path(key))


@pytest.fixture
def env(tmp_path: Path) -> Dict[str, str]:
    """A clean environment: no LELOG_* from the outside, this checkout importable."""
    clean = without_lelog_variables()
    clean["PYTHONPATH"] = str(ROOT)
    return clean


@pytest.fixture(params=["service", "files"])
def target(request: pytest.FixtureRequest, tmp_path: Path, env: Dict[str, str]) -> Target:
    if request.param == "service":
        return ServiceTarget(request.getfixturevalue("service"), env)
    return FilesTarget(tmp_path / "logs", env)


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str], str]:
    def write(code: str) -> str:
        path = tmp_path / f"cmd{len(list(tmp_path.glob('cmd*.py')))}.py"
        path.write_text(code)
        return str(path)

    return write


def start(args: List[str], env: Dict[str, str], cwd: Path, **kwargs: object) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        env=env,
        cwd=str(cwd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )  # type: ignore[call-overload]


def sigint_as_a_terminal_gives_it() -> None:
    """A non-interactive shell starts background jobs with SIGINT ignored, and children inherit
    that; a terminal's foreground lelog has the default, which the Ctrl-C tests need."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(
    args: List[str], env: Dict[str, str], cwd: Path, *, input: bytes = b"", timeout: float = 30
) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=str(cwd), input=input, capture_output=True, timeout=timeout)


def run_all(cases: List[List[str]], env: Dict[str, str], cwd: Path) -> List[subprocess.CompletedProcess]:
    """``lelog`` with each argument list, all at once (small outputs: no pipe can fill)."""
    procs = [
        subprocess.Popen(
            lelog(*args),
            env=env,
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for args in cases
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one stderr line of a failed command (and proof that there is only one)."""
    text = result.stderr.decode()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert text.startswith("lelog") and ": error: " in text, text
    return text


# -- lelog run -----------------------------------------------------------------------------------


def test_run_streams_lines_while_the_command_runs_and_keeps_its_exit_status(
    target: Target, script: Callable[[str], str], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    proc = start(
        lelog("run", "--key", KEY, *target.flags, *FAST, "--", sys.executable, script(GATED), str(gate)),
        target.env,
        tmp_path,
    )
    try:
        assert wait_until(lambda: "first line\n" in target.live(KEY)), "no live line"
        assert proc.poll() is None  # the line arrived while the command was still running
        gate.touch()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 3
    assert out == b"first line\nlast line without newline"  # shown as the command wrote it
    assert b"to stderr\n" in err
    summary = err.decode().splitlines()[-1]
    assert summary.startswith("lelog: 3 lines sent → ") and "(0 dropped)" in summary
    stored = target.stored(KEY)
    assert stored is not None
    assert sorted(stored[:2]) == ["first line\n", "to stderr\n"]
    assert stored[2] == "last line without newline"  # the final partial line, kept as it was
    assert not target.is_open(KEY)


@pytest.mark.parametrize("target, to", [("service", "lelog"), ("files", "group")], indirect=["target"])
def test_ctrl_c_goes_to_the_command_and_the_stream_is_still_closed(
    to: str, target: Target, script: Callable[[str], str], tmp_path: Path
) -> None:
    proc = start(
        lelog("run", "--key", KEY, *target.flags, *FAST, "--", sys.executable, script(INTERRUPTIBLE)),
        target.env,
        tmp_path,
        start_new_session=True,
        preexec_fn=sigint_as_a_terminal_gives_it,
    )
    try:
        assert wait_until(lambda: "ready\n" in target.live(KEY))
        if to == "lelog":
            os.kill(proc.pid, signal.SIGINT)  # only lelog gets it: it must forward it
        else:
            os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert out == b"ready\ngot SIGINT\n"
    assert target.stored(KEY) == ["ready\n", "got SIGINT\n"]
    assert not target.is_open(KEY)


def test_a_command_killed_by_a_signal_exits_128_plus_the_signal(
    env: Dict[str, str], script: Callable[[str], str], tmp_path: Path
) -> None:
    proc = start(
        lelog(
            "run",
            "--key",
            "k",
            "--home",
            str(tmp_path),
            *FAST,
            "--",
            sys.executable,
            script("import time\nprint('ready', flush=True)\ntime.sleep(30)\n"),
        ),
        env,
        tmp_path,
    )
    try:
        assert wait_until(lambda: os.path.exists(FileStore(tmp_path).live_path("k")))
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        proc.terminate()  # SIGTERM to lelog: forwarded, the command dies of it
        proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    assert FileStore(tmp_path).download("k").count(b"ready") == 1


def test_a_command_printing_faster_than_the_store_takes_loses_nothing(
    env: Dict[str, str], tmp_path: Path
) -> None:
    # 120,000 lines at once: more than the writer's live queue and history hold.
    code = "import sys; sys.stdout.write(''.join(f'{i}\\n' for i in range(120000)))"
    result = run(
        lelog("run", "--key", "k", "--home", str(tmp_path), "--", sys.executable, "-c", code), env, tmp_path
    )
    assert result.returncode == 0
    assert result.stderr.decode().startswith("lelog: 120,000 lines sent → ")
    assert outs_of(FileStore(tmp_path).download("k")) == [f"{i}\n" for i in range(120_000)]


def test_a_partial_stdout_line_never_merges_with_stderr(
    env: Dict[str, str], script: Callable[[str], str], tmp_path: Path
) -> None:
    code = (
        "import sys, time\n"
        "sys.stdout.write('abc'); sys.stdout.flush(); time.sleep(0.2)\n"
        "sys.stderr.write('err\\n'); sys.stderr.flush(); time.sleep(0.2)\n"
        "sys.stdout.write('def\\n')\n"
    )
    result = run(
        lelog("run", "--key", "k", "--home", str(tmp_path), "--", sys.executable, script(code)), env, tmp_path
    )
    assert result.returncode == 0
    assert outs_of(FileStore(tmp_path).download("k")) == ["err\n", "abcdef\n"]


def test_a_background_process_holding_the_pipes_does_not_hang_run(
    env: Dict[str, str], script: Callable[[str], str], tmp_path: Path
) -> None:
    code = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "print(child.pid)\n"
    )
    started = time.monotonic()
    result = run(
        lelog("run", "--key", "k", "--home", str(tmp_path), "--", sys.executable, script(code)), env, tmp_path
    )
    os.kill(int(result.stdout), signal.SIGKILL)
    assert result.returncode == 0 and time.monotonic() - started < 10
    assert outs_of(FileStore(tmp_path).download("k")) == [result.stdout.decode()]


def test_run_without_a_service_stores_in_dot_lelog_for_cat(env: Dict[str, str], tmp_path: Path) -> None:
    """The README's quick start: no configuration at all."""
    result = run(
        lelog("run", "--key", "main-job", "--", sys.executable, "-c", "print('building'); print('done')"),
        env,
        tmp_path,
    )
    assert result.returncode == 0 and result.stdout == b"building\ndone\n"
    assert result.stderr.decode() == "lelog: 2 lines sent → .lelog/main-job.ndjson (0 dropped)\n"
    shown = run(lelog("cat", "--key", "main-job"), env, tmp_path)
    assert shown.returncode == 0 and shown.stdout == b"building\ndone\n"
    raw = run(lelog("cat", "--key", "main-job", "--json"), env, tmp_path)
    assert [json.loads(row)["pos"] for row in raw.stdout.splitlines()] == [0, 1]


def test_run_names_the_stream_after_the_program_by_default(env: Dict[str, str], tmp_path: Path) -> None:
    result = run(lelog("run", "--home", str(tmp_path), "-q", sys.executable, "-c", "print(1)"), env, tmp_path)
    assert result.returncode == 0 and result.stderr == b""
    assert FileStore(tmp_path).download(os.path.basename(sys.executable)).count(b'"out":"1\\n"') == 1


def test_run_against_a_missing_service_still_runs_the_command_and_says_so(
    env: Dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    result = run(
        lelog(
            "run",
            "--key",
            "k",
            "--url",
            dead_url(),
            "--account-id",
            "acct",
            "--close-timeout",
            "1",
            "--",
            sys.executable,
            "-c",
            "print('hi')",
        ),
        dict(env, LELOG_TOKEN="t"),
        tmp_path,
    )
    assert time.monotonic() - started < 15
    assert result.returncode == 0 and result.stdout == b"hi\n"
    err = result.stderr.decode()
    assert "Traceback" not in err
    summary = err.splitlines()[-1]
    assert summary.startswith("lelog: 0 of 1 line sent → http://127.0.0.1:")
    assert "storing the log FAILED" in summary and "last error:" in summary


# -- lelog push ----------------------------------------------------------------------------------


def test_push_streams_a_100k_line_file(target: Target, tmp_path: Path) -> None:
    text = "".join(f"line {i} of the build\n" for i in range(100_000)).encode()
    source = tmp_path / "build.log"
    source.write_bytes(text)
    started = time.monotonic()
    result = run(lelog("push", "--key", "big", *target.flags, *FAST, str(source)), target.env, tmp_path)
    assert time.monotonic() - started < 20
    assert result.returncode == 0, result.stderr
    assert "lelog: 100,000 lines sent → " in result.stderr.decode()
    shown = run(lelog("cat", "--key", "big", *target.flags), target.env, tmp_path)
    if isinstance(target, FilesTarget):
        assert shown.stdout == text  # the file store keeps the whole log
    else:
        # Every line was streamed live, none dropped; the stored log is the writer's
        # bounded history (5 MiB): the newest lines.
        assert target.live("big") == text.decode().splitlines(keepends=True)
        marker, kept = shown.stdout.split(b"\n", 1)  # the writer's eviction marker heads it
        assert marker.startswith(b"[lelog] ") and b"earlier lines left out" in marker
        assert text.endswith(kept) and len(kept) > len(text) // 3
        assert "the stored log keeps the last" in result.stderr.decode()


# -- lelog tail, lelog cat -----------------------------------------------------------------------


def test_tail_prints_lines_live_and_ends_when_the_stream_closes(
    target: Target, script: Callable[[str], str], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    runner = start(
        lelog("run", "--key", KEY, *target.flags, *FAST, "--", sys.executable, script(GATED), str(gate)),
        target.env,
        tmp_path,
    )
    tail: Optional[subprocess.Popen] = None
    reader: Optional[threading.Thread] = None
    seen: "queue.Queue[bytes]" = queue.Queue()
    try:
        assert wait_until(lambda: "first line\n" in target.live(KEY))
        tail = start(lelog("tail", "--key", KEY, *target.flags), target.env, tmp_path)
        reader = threading.Thread(target=lambda out: [seen.put(row) for row in out], args=(tail.stdout,))
        reader.start()
        first = {seen.get(timeout=10), seen.get(timeout=10)}
        assert first == {b"first line\n", b"to stderr\n"}
        assert runner.poll() is None and tail.poll() is None
        gate.touch()
        assert seen.get(timeout=10) == b"last line without newline\n"  # a live line
        assert tail.wait(timeout=20) == 0  # the run closed the stream: tail ended by itself
        assert runner.wait(timeout=20) == 3
    finally:
        runner.kill()
        runner.communicate()
        if tail is not None:
            tail.kill()
            tail.wait()
            if reader is not None:
                reader.join(5)  # it ends at the pipe's end
            for pipe in (tail.stdout, tail.stderr):
                if pipe is not None:
                    pipe.close()


def test_push_reads_standard_input_and_cat_prints_the_stored_log(target: Target, tmp_path: Path) -> None:
    pushed = run(
        lelog("push", "--key", KEY, *target.flags), target.env, tmp_path, input=b"one\r\ntwo\nno newline"
    )
    assert pushed.returncode == 0, pushed.stderr
    assert target.stored(KEY) == ["one\n", "two\n", "no newline"]
    shown, raw = run_all(
        [["cat", "--key", KEY, *target.flags], ["cat", "--key", KEY, *target.flags, "--json"]],
        target.env,
        tmp_path,
    )
    assert shown.returncode == 0 and shown.stdout == b"one\ntwo\nno newline\n"
    assert [json.loads(row)["out"] for row in raw.stdout.splitlines()] == ["one\n", "two\n", "no newline"]


def test_cat_of_a_log_the_service_does_not_have_is_one_error_line(
    service: FakeLogService, env: Dict[str, str], tmp_path: Path
) -> None:
    target = ServiceTarget(service, env)
    result = run(lelog("cat", "--key", "nothing here", *target.flags), target.env, tmp_path)
    assert result.returncode == 1
    assert "no stored log for key 'nothing here'" in error_line(result)


# -- configuration ------------------------------------------------------------------------------


def test_a_setup_request_file_configures_service_and_key(
    service: FakeLogService, env: Dict[str, str], tmp_path: Path
) -> None:
    setup = tmp_path / "setup.json"
    setup.write_text(
        json.dumps(
            {
                "le_log_key": "stage-123/lite-engine-logs",
                "log_config": {
                    "url": service.url,
                    "account_id": service.account_id,
                    "indirect_upload": True,
                    "skip_opening_stream": False,
                },
                "mtls_config": {"client_cert": "", "client_cert_key": ""},
                "secrets": ["hunter2"],
            }
        )
    )
    # The file wins over LELOG_URL; the token, missing from the file, comes from the env.
    env = dict(env, LELOG_URL=dead_url(), LELOG_ACCOUNT_ID="other", LELOG_TOKEN=service.token)
    result = run(
        lelog("run", "--config", str(setup), "--", sys.executable, "-c", "print('password hunter2')"),
        env,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    stored = service.blob_lines("stage-123/lite-engine-logs") or []
    assert [line["out"] for line in stored] == ["password **************\n"]  # secrets masked
    # A flag wins over the file.
    result = run(lelog("push", "--config", str(setup), "--key", "from-flag"), env, tmp_path, input=b"x\n")
    assert result.returncode == 0 and service.blob_lines("from-flag") is not None


def test_the_environment_alone_configures_everything(
    service: FakeLogService, env: Dict[str, str], tmp_path: Path
) -> None:
    env = dict(
        env,
        LELOG_URL=service.url,
        LELOG_ACCOUNT_ID=service.account_id,
        LELOG_TOKEN=service.token,
        LELOG_KEY="env-key",
    )
    result = run(lelog("push"), env, tmp_path, input=b"from env\n")
    assert result.returncode == 0, result.stderr
    assert [line["out"] for line in service.blob_lines("env-key") or []] == ["from env\n"]


def test_a_token_on_the_command_line_is_warned_about(
    service: FakeLogService, env: Dict[str, str], tmp_path: Path
) -> None:
    result = run(
        lelog(
            "push",
            "--key",
            "k",
            "--url",
            service.url,
            "--account-id",
            service.account_id,
            "--token",
            service.token,
        ),
        env,
        tmp_path,
        input=b"x\n",
    )
    assert result.returncode == 0
    assert "--token is visible to other users" in result.stderr.decode().splitlines()[0]


# -- mistakes: one line, the right status ---------------------------------------------------------


MISTAKES = [
    (["run", "--bogus", "--", "true"], 2, "unrecognized arguments: --bogus"),
    (["run"], 2, "no command to run"),
    (["run", "--key", "k", "--close-timeout", "-1", "--", "true"], 2, "positive number"),
    ([], 2, "choose a command"),
    (["cat"], 2, "no stream key"),
    (["tail", "--key", "k", "--url", "log-service:8080", "--account-id", "a"], 2, "no scheme"),
    (["cat", "--key", "k", "--url", "http://log-service", "--account-id", "a"], 2, "token is required"),
    (["cat", "--key", "k", "--config", "missing.json"], 2, "--config missing.json"),
    (["cat", "--key", "k", "--config", "bad.json"], 2, "not valid JSON"),
    (["cat", "--key", "k", "--config", "typo.json"], 2, "did you mean 'url'?"),
    (["run", "--key", "k", "--", "/no/such/program"], 127, "cannot run '/no/such/program'"),
    (["push", "--key", "k", "no-such-file.log"], 1, "cannot read no-such-file.log"),
    (["cat", "--key", "k"], 1, "no stored log for key 'k'"),
]


@pytest.fixture
def config_files(tmp_path: Path) -> Path:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "typo.json").write_text(json.dumps({"log_config": {"urll": "http://x"}}))
    return tmp_path


@pytest.mark.parametrize("args, status, says", MISTAKES)
def test_mistakes_are_one_error_line_and_the_right_status(
    args: List[str],
    status: int,
    says: str,
    config_files: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The whole matrix, in-process to keep the suite fast (the next test is end to end)."""
    monkeypatch.chdir(config_files)
    for name in [n for n in os.environ if n.startswith("LELOG_") and n != "LELOG_RUNTIME_DIR"]:
        monkeypatch.delenv(name)
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own exit
        code = exit_.code
    captured = capsys.readouterr()
    result = subprocess.CompletedProcess(args, code, captured.out.encode(), captured.err.encode())
    assert code == status
    assert says in error_line(result)


def test_mistakes_in_a_real_process_are_one_error_line_too(env: Dict[str, str], config_files: Path) -> None:
    cases = [MISTAKES[0], MISTAKES[4], MISTAKES[9], MISTAKES[10]]
    for (args, status, says), result in zip(cases, run_all([c[0] for c in cases], env, config_files)):
        assert (result.returncode, says in error_line(result)) == (status, True), (args, result)


def test_a_missing_service_is_one_error_line(env: Dict[str, str], tmp_path: Path) -> None:
    where = ["--key", "k", "--url", dead_url(), "--account-id", "acct", "--timeout", "1"]
    for result in run_all([["cat", *where], ["tail", *where]], dict(env, LELOG_TOKEN="t"), tmp_path):
        assert result.returncode == 1
        assert "no answer from the log service" in error_line(result)


@pytest.mark.parametrize("command", ["run", "push", "tail", "cat"])
def test_every_command_has_help_with_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"examples:\n  lelog {command}" in capsys.readouterr().out


def test_the_console_script_is_installed(env: Dict[str, str], tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "lelog"
    if not script.exists():
        pytest.skip("lelog is not installed in this environment (pip install -e .)")
    result = run([str(script), "--version"], env, tmp_path)
    assert result.returncode == 0 and result.stdout.startswith(b"lelog ")


# -- lelog run under pipes, long lines, secrets, concurrent runs ---------------------------------


def test_run_stops_reading_like_tee_when_its_output_is_closed(env: Dict[str, str], tmp_path: Path) -> None:
    """`lelog run -- yes | head -1`: yes gets SIGPIPE, the log is stored, lelog exits 141."""
    proc = start(lelog("run", "--key", "y", "--home", str(tmp_path), "--", "yes"), env, tmp_path)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"y\n"
        proc.stdout.close()  # as head does after its first line
        assert proc.wait(timeout=30) == 128 + signal.SIGPIPE  # a hang fails here
        err = proc.stderr.read().decode() if proc.stderr is not None else ""
    finally:
        proc.kill()
        proc.wait()
    assert "Traceback" not in err and "Exception ignored" not in err
    assert "lines sent →" in err.splitlines()[-1]
    stored = outs_of(FileStore(tmp_path).download("y"))
    assert 0 < len(stored) < 1_000_000 and set(stored) <= {"y\n", "y"}  # bounded: it stopped reading


def test_run_stops_in_a_shell_pipeline_with_head(env: Dict[str, str], tmp_path: Path) -> None:
    shell = (
        f"{' '.join(lelog('run', '--key', 'y', '-q', '--'))} yes | head -1; echo status ${{PIPESTATUS[0]}}"
    )
    result = run(["bash", "-c", shell], env, tmp_path, timeout=30)
    assert result.stdout == b"y\nstatus 141\n"
    assert FileStore(tmp_path / ".lelog").download("y").count(b"\n") < 1_000_000


def test_the_command_gets_no_lelog_variables_unless_asked(
    service: FakeLogService, env: Dict[str, str], tmp_path: Path
) -> None:
    target = ServiceTarget(service, dict(env, LELOG_KEY="from-env", LELOG_SECRETS='["s3cr3t-value"]'))
    code = "import os; print(sorted(k for k in os.environ if k.startswith('LELOG_')))"
    plain, passed = run_all(
        [
            ["run", *target.flags, "--", sys.executable, "-c", code],
            ["run", "--key", "passed", *target.flags, "--pass-lelog-env", "--", sys.executable, "-c", code],
        ],
        target.env,
        tmp_path,
    )
    assert plain.returncode == 0 and plain.stdout == b"[]\n"  # the terminal copy: the command's own
    assert passed.stdout == b"['LELOG_KEY', 'LELOG_RUNTIME_DIR', 'LELOG_SECRETS', 'LELOG_TOKEN']\n"
    assert target.stored("from-env") == ["[]\n"]


def test_stderr_lines_are_told_apart_in_the_stored_log(env: Dict[str, str], tmp_path: Path) -> None:
    code = "import sys; print('out'); sys.stdout.flush(); print('err', file=sys.stderr)"
    result = run(
        lelog("run", "--key", "k", "--home", str(tmp_path), "--", sys.executable, "-c", code), env, tmp_path
    )
    assert result.returncode == 0 and result.stdout == b"out\n"
    rows = {row["out"]: row for row in map(json.loads, FileStore(tmp_path).download("k").splitlines())}
    assert rows["out\n"]["args"] is None
    assert rows["err\n"]["args"] == {"stream": "stderr"} and rows["err\n"]["level"] == "info"


@pytest.mark.parametrize(
    "text", ["é" * 100_000, "日本語" * 40_000, "x" * 200_000], ids=["latin", "cjk", "ascii"]
)
def test_a_long_line_is_stored_whole_in_pieces_within_the_byte_limit(
    text: str, env: Dict[str, str], script: Callable[[str], str], tmp_path: Path
) -> None:
    path = tmp_path / "text"
    path.write_text(text, encoding="utf-8")
    code = f"import sys; sys.stdout.write(open({str(path)!r}, encoding='utf-8').read() + '\\n')"
    result = run(
        lelog("run", "--key", "k", "--home", str(tmp_path), "--", sys.executable, script(code)), env, tmp_path
    )
    assert result.returncode == 0 and result.stdout == (text + "\n").encode()  # unchanged on the terminal
    summary = result.stderr.decode().splitlines()[-1]
    assert "(0 dropped)" in summary and "truncated" not in summary
    stored = outs_of(FileStore(tmp_path).download("k"))
    assert "".join(piece[:-1] for piece in stored) == text  # every piece got a newline, nothing else
    assert all(len(piece.encode()) <= 71_680 for piece in stored)
    assert all(len(piece.encode()) > 71_680 - 4 for piece in stored[:-1])  # cut at the limit


def test_a_secret_across_the_forced_break_of_a_long_line_is_masked(
    env: Dict[str, str], script: Callable[[str], str], tmp_path: Path
) -> None:
    secret = "Sup3r-S3cret-Value"
    setup = tmp_path / "setup.json"
    setup.write_text(json.dumps({"secrets": [secret]}))
    line = "x" * (71_679 - 7) + secret + "y" * 200_000  # the first break falls inside it
    code = f"print({line!r})"
    result = run(
        lelog(
            "run",
            "--key",
            "k",
            "--home",
            str(tmp_path),
            "--config",
            str(setup),
            "--",
            sys.executable,
            script(code),
        ),
        env,
        tmp_path,
    )
    assert result.returncode == 0
    stored = FileStore(tmp_path).download("k").decode()
    for part in (secret, secret[:7], secret[7:]):
        assert part not in stored
    assert "**************" in stored


def test_a_second_run_on_a_key_shares_the_first_runs_stream_and_one_log_holds_both(
    env: Dict[str, str], script: Callable[[str], str], tmp_path: Path
) -> None:
    """Two runs of one key at once (two CI steps, a loop in two shells): the second joins
    the stream the first holds, and the last one out stores one log with every line."""
    gate = tmp_path / "gate"
    home = ["--home", str(tmp_path / "logs")]
    first = start(
        lelog("run", "--key", KEY, *home, *FAST, "--", sys.executable, script(GATED), str(gate)),
        env,
        tmp_path,
    )
    try:
        assert wait_until(lambda: os.path.exists(FileStore(tmp_path / "logs").live_path(KEY)))
        second = run(lelog("run", "--key", KEY, *home, "--", "echo", "second run"), env, tmp_path)
        gate.touch()
        _, first_err = first.communicate(timeout=30)
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 0 and first.returncode == 3
    assert second.stdout == b"second run\n"
    assert "stream shared with 1 other process on this host; the last one out stores the log" in (
        second.stderr.decode()
    )
    assert (
        "(0 dropped; stream shared with 1 other process on this host; "
        "the whole stream: 4 lines of 2 processes, 4 sent)" in first_err.decode()
    )
    rows = [json.loads(row) for row in FileStore(tmp_path / "logs").download(KEY).splitlines()]
    assert [row["pos"] for row in rows] == list(range(len(rows)))
    outs = [row["out"] for row in rows]
    assert sorted(outs) == sorted(
        ["first line\n", "to stderr\n", "second run\n", "last line without newline"]
    )


def test_a_run_on_a_key_a_writer_elsewhere_holds_streams_into_it_and_says_the_log_is_that_writers(
    env: Dict[str, str], tmp_path: Path
) -> None:
    """A writer out of this host's reach (another runtime directory) holds the key's live
    file, with a line stamped after this run began: the run joins it, never opens, stores
    or closes it, and its last line says so; ``--strict`` counts the log as not stored."""
    home = tmp_path / "logs"
    elsewhere = FileStore(home)
    elsewhere.open_stream(KEY)
    elsewhere.write(KEY, [Line("elsewhere\n", 0, time.time() + 600)])  # its clock: after our start
    result = run(
        lelog("run", "--key", KEY, "--home", str(home), "--strict", "--", "echo", "here"), env, tmp_path
    )
    assert result.returncode == 74, result.stderr
    assert "is being written by a writer this host cannot reach" in result.stderr.decode()
    assert "the stored log is that writer's)" in result.stderr.decode().splitlines()[-1]
    assert [line.out for line in FileStore(home).peek(KEY)] == ["elsewhere\n", "here\n"]
    assert not (home / (encode_key(KEY) + ".ndjson")).exists()  # nothing stored over it
    elsewhere.close()


def test_a_key_with_long_non_ascii_segments_is_stored_and_found(env: Dict[str, str], tmp_path: Path) -> None:
    key = "段階" * 15 + "/" + "構築" * 15 + "x" * 300
    result = run(lelog("run", "--key", key, "--home", str(tmp_path), "--", "echo", "built"), env, tmp_path)
    assert result.returncode == 0, result.stderr
    shown = run(lelog("cat", "--key", key, "--home", str(tmp_path)), env, tmp_path)
    assert shown.returncode == 0 and shown.stdout == b"built\n"


def test_push_of_a_directory_fails_before_anything_is_stored(env: Dict[str, str], tmp_path: Path) -> None:
    result = run(lelog("push", "--key", "k", "--home", str(tmp_path / "logs"), str(tmp_path)), env, tmp_path)
    assert result.returncode == 2 and "is a directory" in error_line(result)
    assert not (tmp_path / "logs").exists()


def test_a_bad_key_fails_before_the_command_runs(env: Dict[str, str], tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    result = run(
        lelog("run", "--key", "a\nb", "--home", str(tmp_path), "--", "touch", str(ran)), env, tmp_path
    )
    assert result.returncode == 2 and "control character" in error_line(result) and not ran.exists()


@pytest.mark.parametrize("key", ["", "  "])
def test_an_empty_key_is_a_usage_error_not_the_programs_name(
    env: Dict[str, str], tmp_path: Path, key: str
) -> None:
    ran = tmp_path / "ran"
    result = run(lelog("run", "--key", key, "--home", str(tmp_path), "--", "touch", str(ran)), env, tmp_path)
    assert result.returncode == 2 and "--key is " in error_line(result) and not ran.exists()
    assert not list(tmp_path.glob("touch*"))


def test_a_misspelt_variable_is_named_with_the_one_it_probably_means(
    env: Dict[str, str], tmp_path: Path
) -> None:
    result = run(
        lelog("run", "--key", "k", "--home", str(tmp_path), "--", sys.executable, "-c", "print(1)"),
        dict(env, LELOG_ACOUNT_ID="acct"),
        tmp_path,
    )
    assert result.returncode == 0
    warnings = [row for row in result.stderr.decode().splitlines() if "LELOG_ACOUNT_ID" in row]
    assert warnings == [
        "lelog: LELOG_ACOUNT_ID is not a variable lelog reads; did you mean LELOG_ACCOUNT_ID?"
    ]


def test_strict_fails_a_successful_command_whose_stored_log_left_out_its_oldest_lines(
    service: FakeLogService, env: Dict[str, str], tmp_path: Path
) -> None:
    # About 6 MiB of output: more than the history the writer uploads (5 MiB by default).
    code = "import sys\nfor i in range(3000): sys.stdout.write(f'line {i} ' + 'x' * 2000 + '\\n')"
    target = ServiceTarget(service, env)
    base = lelog("run", "--key", "big", *target.flags, "--close-timeout", str(GENEROUS_CLOSE))
    lax, strict = (
        run([*base, *flag, "--", sys.executable, "-c", code], target.env, tmp_path)
        for flag in ([], ["--strict"])
    )
    assert lax.returncode == 0, lax.stderr
    assert strict.returncode == 74, strict.stderr
    summary = strict.stderr.decode().splitlines()[-1]
    assert "0 dropped" in summary and "the stored log keeps the last" in summary
    stored = target.stored("big")
    assert stored is not None and stored[-1].startswith("line 2999 ") and not stored[0].startswith("line 0 ")


def test_secrets_given_as_a_json_list_in_the_environment_are_masked(
    env: Dict[str, str], tmp_path: Path
) -> None:
    result = run(
        lelog(
            "run",
            "--key",
            "k",
            "--home",
            str(tmp_path),
            "--",
            sys.executable,
            "-c",
            "print('pw hunter2hunter2')",
        ),
        dict(env, LELOG_SECRETS='["hunter2hunter2"]'),
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert outs_of(FileStore(tmp_path).download("k")) == ["pw **************\n"]


def test_strict_fails_a_successful_command_whose_log_lost_lines(env: Dict[str, str], tmp_path: Path) -> None:
    code = "for i in range(2000): print('line', i)"
    small = dict(env, LELOG_STORE_MAX_BYTES="8192")
    base = lelog("run", "--key", "k", "--home", str(tmp_path))
    lax, strict = (
        run([*base, *flag, "--", sys.executable, "-c", code], small, tmp_path) for flag in ([], ["--strict"])
    )
    assert lax.returncode == 0
    assert strict.returncode == 74
    assert "oldest (LELOG_STORE_MAX_BYTES)" in strict.stderr.decode().splitlines()[-1]
    rows = FileStore(tmp_path).download("k").splitlines()
    assert json.loads(rows[0])["args"]["lelog"] == "dropped" and json.loads(rows[-1])["out"] == "line 1999\n"
    ok = run([*base, "--strict", "--", sys.executable, "-c", "print(1)"], env, tmp_path)
    assert ok.returncode == 0


def test_a_full_disk_mid_run_is_counted_and_a_tail_sees_whole_rows_once(
    env: Dict[str, str], script: Callable[[str], str], tmp_path: Path
) -> None:
    home = tmp_path / "small"
    mount_tmpfs(home, "64k")  # or skip, saying why
    gate = tmp_path / "gate"
    code = (
        "import os, sys, time\n"
        "print('line 0', flush=True)\n"
        "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\n"
        "for i in range(1, 3000):\n"
        "    print('line', i, 'x' * 40, flush=True)\n"
        "    if i % 20 == 0: time.sleep(0.02)  # many small batches: the disk fills between two\n"
    )
    where = ["--key", "k", "--home", str(home)]
    procs: List[subprocess.Popen] = []
    try:
        runner = start(
            lelog(
                "run", *where, *FAST, "--close-timeout", "1", "--", sys.executable, script(code), str(gate)
            ),
            env,
            tmp_path,
        )
        procs.append(runner)
        assert wait_until(lambda: os.path.exists(FileStore(home).live_path("k")))
        tail = start(lelog("tail", *where), env, tmp_path)
        procs.append(tail)
        assert tail.stdout is not None
        first = tail.stdout.readline()  # the tail follows: now fill the disk
        gate.touch()
        _, run_err = runner.communicate(timeout=60)
        tail_out, tail_err = tail.communicate(timeout=60)
        tail_out = first + tail_out
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()
        subprocess.run(["umount", str(home)], check=False)
    assert runner.returncode == 0
    summary = run_err.decode().splitlines()[-1]
    assert "the disk is full" in summary and "dropped" in summary
    assert tail.returncode == 0, tail_err
    shown = tail_out.decode().splitlines()
    assert shown[0] == "line 0" and len(shown) == len(set(shown))
    assert all(row.startswith("line ") for row in shown)
    numbers = [int(row.split()[1]) for row in shown]
    assert numbers == sorted(numbers)


def test_a_line_that_masking_makes_too_long_is_cut_and_counted_in_the_summary(
    env: Dict[str, str], tmp_path: Path
) -> None:
    setup = tmp_path / "setup.json"
    setup.write_text(json.dumps({"secrets": ["ab"]}))
    code = "print('ab' * 30000)"  # 60 kB, but 420 kB once every "ab" is 14 asterisks
    result = run(
        lelog(
            "run",
            "--key",
            "k",
            "--home",
            str(tmp_path),
            "--config",
            str(setup),
            "--",
            sys.executable,
            "-c",
            code,
        ),
        env,
        tmp_path,
    )
    assert result.returncode == 0
    assert "1 cut at the line limit (71,680 bytes)" in result.stderr.decode().splitlines()[-1]
    (stored,) = outs_of(FileStore(tmp_path).download("k"))
    assert len(stored.encode()) <= 71_680 + len("... (log line truncated)")


def test_strict_fails_a_successful_command_whose_log_was_not_stored(
    env: Dict[str, str], tmp_path: Path
) -> None:
    where = ["--key", "k", "--url", dead_url(), "--account-id", "acct", "--close-timeout", "1"]
    result = run(
        lelog("run", *where, "--strict", "--", sys.executable, "-c", "print('hi')"),
        dict(env, LELOG_TOKEN="t"),
        tmp_path,
    )
    assert result.returncode == 74 and result.stdout == b"hi\n"
    assert "storing the log FAILED" in result.stderr.decode().splitlines()[-1]
