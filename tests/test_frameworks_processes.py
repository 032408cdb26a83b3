"""Several processes of one program on one key, in the frameworks that make them, with the
real libraries: gunicorn's workers, uvicorn's, pytest-xdist's, a multiprocessing spawn pool
and celery's prefork pool.  Each process builds its own handler where the framework's docs
configure logging, and the host's processes on the key share one stream.

Judged from outside, by the fake service: the stored log holds every line exactly once,
``pos`` runs 0..n-1, the stream was opened once (one ``POST /stream``; again only after
every recycled worker had left at once, continuing the same log), at least two processes
wrote, and every process of the framework is gone within a bound of its usual stop.  Each
framework runs in a process group of its own, killed whole in ``finally``, and its processes
meet in a runtime directory of the test's own (``LELOG_RUNTIME_DIR``).

Every line the apps log ends with `` [pid N]``: the check counts the line without it, and
names the processes that wrote.  On a failure, the message gives the stored log's counts and
what each process's lelog said (the apps print their handler's stats summary when they end).
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from tests.helpers import GENEROUS, ROOT, wait_until
from tests.service import FakeLogService

KEY = "app/k"
#: The handler's options in every process: short pushes, and a close well inside the bound.
OPTIONS = {"flush_interval": 0.05, "close_timeout": 10}
#: From the stop signal (or the start, for a run that ends by itself) to the framework's last
#: process gone: the handlers' close budget and the framework's own shutdown (celery's, which
#: polls its broker, takes ~5 s), with room for a loaded machine.
EXIT_BOUND = 30.0


def handler_config(service: FakeLogService) -> dict[str, Any]:
    """lelog's handler as a ``dictConfig`` entry (``"class"``, as the README shows)."""
    return {
        "class": "lelog.StreamHandler",
        "key": KEY,
        "url": service.url,
        "account_id": "acct",
        "token": "secret-token",
        **OPTIONS,
    }


#: The start of an app module whose processes end through the interpreter's exit: each prints
#: its handlers' stats at exit.  Registered before lelog is imported, so it runs after lelog's
#: own exit hook (atexit runs last in, first out).
REPORT = """
import atexit as _atexit, logging as _logging, os as _os, sys as _sys

def _report():
    for _h in _logging.getLogger().handlers:
        if hasattr(_h, "stats"):
            print(f"lelog stats [pid {_os.getpid()}]: {_h.stats.summary()}", file=_sys.stderr, flush=True)

_atexit.register(_report)
"""


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return int(port)


def write(path: Path, text: str, **values: Any) -> None:
    """``text``, its ``NAME_`` placeholders replaced by ``repr(value)``, as a file."""
    text = textwrap.dedent(text)
    for name, value in values.items():
        text = text.replace(f"{name}_", repr(value))
    path.write_text(text)


def child_env(tmp_path: Path, service: FakeLogService, app_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a framework's processes: lelog and the app importable, a runtime
    directory of this test's own, and none of the outer pytest's or lelog's settings."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LELOG_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), str(app_dir)]),
        LELOG_RUNTIME_DIR=str(runtime),
        SERVICE_URL=service.url,
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def _group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid`` (Linux's /proc; elsewhere
    none are known)."""
    members = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
            members.append(int(entry))
    return members


class Framework:
    """A framework's command in a process group of its own, its output in a file."""

    def __init__(self, args: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        self.started = time.monotonic()
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                args, env=env, cwd=str(cwd), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, chars: int = 6000) -> str:
        return self.output()[-chars:]

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> float:
        """``sig`` to the main process, as a process manager stops the framework; then
        ``exited``.  Seconds it took."""
        self.started = time.monotonic()
        self.proc.send_signal(sig)
        return self.exited(f"after {sig.name}")

    def exited(self, what: str = "after it started") -> float:
        """Wait for the main process and every other process of the group to be gone, at most
        ``EXIT_BOUND`` seconds from ``started`` (else the test fails); seconds it took."""
        try:
            self.proc.wait(max(EXIT_BOUND - (time.monotonic() - self.started), 0.1))
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {EXIT_BOUND:g}s {what}:\n{self.tail()}", pytrace=False)
        left = EXIT_BOUND - (time.monotonic() - self.started)
        if not wait_until(lambda: not _group_members(self.proc.pid), timeout=max(left, 0.1)):
            pytest.fail(
                f"processes {_group_members(self.proc.pid)} still running {EXIT_BOUND:g}s {what}",
                pytrace=False,
            )
        return time.monotonic() - self.started

    def end(self) -> None:
        """Whatever is left of the group is killed (a test that failed half way)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(GENEROUS)
        except subprocess.TimeoutExpired:
            pass


def wait_for_http(port: int, server: Framework) -> None:
    """Until the server answers on ``port`` (the test fails if the server exits first)."""
    import httpx

    def answers() -> bool:
        if server.proc.poll() is not None:
            pytest.fail(f"the server exited ({server.proc.returncode}):\n{server.tail()}", pytrace=False)
        try:
            return httpx.get(f"http://127.0.0.1:{port}/up", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    assert wait_until(answers, timeout=GENEROUS), f"the server never answered:\n{server.tail()}"


def drive(port: int, count: int) -> None:
    """``count`` requests, one at a time, each on a connection of its own, so the workers
    share them as the kernel hands out the connections."""
    import httpx

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=GENEROUS) as client:
        for n in range(count):
            response = client.get("/", params={"n": n}, headers={"Connection": "close"})
            assert response.status_code == 200, response.text


#: A line's message as lelog's formatter writes it: logfmt, quoted with backslash escapes.
_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')
_PID = re.compile(r" \[pid (\d+)\]$")


def message(row: dict[str, Any]) -> str:
    out: str = row["out"]
    found = _MSG.search(out)
    return out.rstrip("\n") if found is None else re.sub(r"\\(.)", r"\1", found.group(1))


def lelog_lines(output: str) -> str:
    """What the processes said about lelog: their stats, and its warnings."""
    return "\n".join([line for line in output.splitlines() if "lelog" in line][-40:])


def assert_stored_once(
    service: FakeLogService,
    expected: list[str],
    output: str,
    identify: Callable[[str], Optional[str]] = lambda text: text,
    *,
    recycled: bool = False,
) -> tuple[list[str], set[int]]:
    """The stored log holds each of ``expected`` exactly once, ``pos`` runs 0..n-1, and the
    stream was opened once (``recycled``: workers that recycle may all be gone at once for a
    moment, and a new one opens the stream again, continuing the same log).  ``identify`` names a stored message, its `` [pid N]`` taken off
    (None: one of the framework's own lines, not counted); a name not expected fails too.
    Returns the stored messages and the pids that wrote the expected lines."""
    # Every process has exited: whatever was to be stored is stored.
    assert service.blob(KEY) is not None, (
        f"no log was stored for {KEY!r}; requests: "
        f"{[(r.method, r.path) for r in service.requests_for(key=KEY)]}\n{lelog_lines(output)}"
    )
    rows = service.blob_lines(KEY) or []
    stored = [message(row) for row in rows]
    names, writers = [], set()
    for text in stored:
        pid = _PID.search(text)
        name = identify(text[: pid.start()] if pid else text)
        if name is not None:
            names.append(name)
            writers.update([int(pid.group(1))] if pid else [])
    counts = collections.Counter(names)
    missing = [name for name in expected if counts[name] == 0]
    doubled = sorted(name for name, n in counts.items() if n > 1)
    strange = sorted(set(counts) - set(expected))
    opens = service.requests_for(key=KEY, method="POST", path="/stream")
    evidence = (
        f"{len(rows)} rows stored, {len(expected)} lines expected: {len(missing)} missing "
        f"(first {missing[:3]}), {len(doubled)} doubled (first {doubled[:3]}), "
        f"{len(strange)} unexpected (first {strange[:3]}); POST /stream x{len(opens)}; "
        f"stored lines written by {len(writers)} processes\n{lelog_lines(output)}"
    )
    assert not missing and not doubled and not strange, evidence
    assert [row["pos"] for row in rows] == list(range(len(rows))), evidence
    assert len(opens) == 1 or (recycled and opens), evidence
    return stored, writers


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    path = tmp_path / "app"
    path.mkdir()
    return path


# -- gunicorn ----------------------------------------------------------------------------------------

GUNICORN_APP = (
    REPORT
    + """
import logging, logging.config, os

# The app module configures logging (gunicorn leaves the app's logging to the app): without
# --preload every worker imports it and builds its own handler; with it, the master does,
# and the workers are its fork children.
logging.config.dictConfig({
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stream": HANDLER_},
    "root": {"level": "INFO", "handlers": ["stream"]},
})
log = logging.getLogger("app")

def application(environ, start_response):
    query = environ.get("QUERY_STRING", "")
    if query.startswith("n="):
        log.info("request %s [pid %d]", query[2:], os.getpid())
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""
)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param([], id="workers-import-the-app"),
        pytest.param(["--preload"], id="preload"),
        pytest.param(["--max-requests", "50"], id="workers-recycled"),
    ],
)
def test_gunicorn_workers_store_every_request_line_once(
    service: FakeLogService, tmp_path: Path, app_dir: Path, options: list[str]
) -> None:
    config = pytest.importorskip("gunicorn.config")
    pytest.importorskip("httpx")
    write(app_dir / "wsgiapp.py", GUNICORN_APP, HANDLER=handler_config(service))
    port, requests = free_port(), 300
    args = [sys.executable, "-m", "gunicorn", "--workers", "3", "--bind", f"127.0.0.1:{port}"]
    if any(setting.name == "control_socket_disable" for setting in config.KNOWN_SETTINGS):
        args.append("--no-control-socket")  # gunicorn 24+ would make one in $HOME
    server = Framework(
        [*args, *options, "wsgiapp:application"],
        env=child_env(tmp_path, service, app_dir),
        cwd=app_dir,
        log=tmp_path / "gunicorn.log",
    )
    try:
        wait_for_http(port, server)
        drive(port, requests)
        server.stop(signal.SIGTERM)
        assert server.proc.returncode == 0, server.tail()
        _, writers = assert_stored_once(
            service,
            [f"request {n}" for n in range(requests)],
            server.output(),
            recycled="--max-requests" in options,
        )
    finally:
        server.end()
    assert len(writers) >= 2, writers


# -- uvicorn ----------------------------------------------------------------------------------------

ASGI_APP = """
import logging, os

log = logging.getLogger("app")

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    query = scope["query_string"].decode()
    if query.startswith("n="):
        log.info("request %s [pid %d]", query[2:], os.getpid())
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def uvicorn_line(text: str) -> Optional[str]:
    """``request N``; ``access N`` for uvicorn's ``... "GET /?n=N HTTP/1.1" 200``; None for
    its other lines."""
    if text.startswith("request "):
        return text
    if "GET /?n=" in text:
        return "access " + text.split("GET /?n=", 1)[1].split(" ", 1)[0]
    return None


def test_uvicorn_workers_store_every_request_and_access_line_once(
    service: FakeLogService, tmp_path: Path, app_dir: Path
) -> None:
    pytest.importorskip("uvicorn")
    pytest.importorskip("httpx")
    write(app_dir / "asgiapp.py", ASGI_APP)
    # uvicorn's --log-config: the parent and each worker (a spawn child) run this dictConfig;
    # lelog takes the app's records and uvicorn's own (startup, access, shutdown).
    log_config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"stream": handler_config(service)},
        "loggers": {
            "app": {"handlers": ["stream"], "level": "INFO"},
            "uvicorn": {"handlers": ["stream"], "level": "INFO"},
            "uvicorn.access": {"handlers": ["stream"], "level": "INFO", "propagate": False},
        },
    }
    (app_dir / "logging.json").write_text(json.dumps(log_config))
    port, requests = free_port(), 200
    server = Framework(
        [sys.executable, "-m", "uvicorn", "--workers", "2", "--port", str(port)]
        + ["--log-config", "logging.json", "asgiapp:app"],
        env=child_env(tmp_path, service, app_dir),
        cwd=app_dir,
        log=tmp_path / "uvicorn.log",
    )
    try:
        wait_for_http(port, server)
        drive(port, requests)
        server.stop(signal.SIGTERM)
        assert server.proc.returncode == 0, server.tail()
        expected = [f"request {n}" for n in range(requests)] + [f"access {n}" for n in range(requests)]
        stored, _ = assert_stored_once(service, expected, server.output(), uvicorn_line)
    finally:
        server.end()
    # uvicorn's own lines name the three processes that wrote: each worker's first and last
    # lines, and the parent's, last of all.
    assert sum(text.startswith("Started server process") for text in stored) == 2, stored[:20]
    assert sum(text.startswith("Finished server process") for text in stored) == 2, stored[-20:]
    assert stored[-1].startswith("Stopping parent process"), stored[-20:]


# -- pytest-xdist -----------------------------------------------------------------------------------

XDIST_CONFTEST = """
import logging, os, lelog

# Every process of the run (the controller and each worker) imports this conftest and adds
# its own handler to the root logger.
handler = lelog.StreamHandler(
    KEY_, url=os.environ["SERVICE_URL"], account_id="acct", token="secret-token", **OPTIONS_
)
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
"""

XDIST_TESTS = """
import logging, os, pytest

@pytest.mark.parametrize("n", range(TESTS_))
def test_logs(n):
    for line in range(LINES_):
        logging.getLogger("app").info("%s test %d line %d [pid %d]", FILE_, n, line, os.getpid())
"""


def test_pytest_xdist_workers_store_every_test_line_once(
    service: FakeLogService, tmp_path: Path, app_dir: Path
) -> None:
    pytest.importorskip("xdist")
    tests, lines = 30, 5
    (app_dir / "pytest.ini").write_text("[pytest]\n")  # the inner run's rootdir, not this suite's
    write(app_dir / "conftest.py", XDIST_CONFTEST, KEY=KEY, OPTIONS=OPTIONS)
    for name in ("a", "b"):
        write(app_dir / f"test_{name}.py", XDIST_TESTS, TESTS=tests, LINES=lines, FILE=name)
    run = Framework(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "xdist", "-q", "-p", "no:cacheprovider"],
        env=child_env(tmp_path, service, app_dir, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"),
        cwd=app_dir,
        log=tmp_path / "pytest.log",
    )
    try:
        run.exited()
        assert run.proc.returncode == 0, run.tail()
        assert f"{2 * tests} passed" in run.output(), run.tail()
        expected = [f"{name} test {n} line {i}" for name in "ab" for n in range(tests) for i in range(lines)]
        _, writers = assert_stored_once(service, expected, run.output())
    finally:
        run.end()
    assert len(writers) == 2, writers  # the two workers


# -- multiprocessing, spawn -------------------------------------------------------------------------

SPAWN_JOB = (
    REPORT
    + """
import logging, logging.config, multiprocessing, os, time

# At the module's top level: every spawn child imports this module again (as __mp_main__)
# and builds its own handler.
logging.config.dictConfig({
    "version": 1,
    "handlers": {"stream": HANDLER_},
    "root": {"level": "INFO", "handlers": ["stream"]},
})
log = logging.getLogger("app")

def meet(barrier):
    barrier.wait(30)  # both children are up before the first task: both take tasks

def work(n):
    for line in range(LINES_):
        log.info("task %d line %d [pid %d]", n, line, os.getpid())
    time.sleep(0.01)

if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    if PARENT_FIRST_:
        log.info("parent before the pool")
    pool = context.Pool(2, initializer=meet, initargs=(context.Barrier(2),))
    pool.map(work, range(TASKS_), chunksize=1)
    pool.close()
    pool.join()
    log.info("parent after the pool")
"""
)


@pytest.mark.parametrize(
    "parent_first", [pytest.param(True, id="parent-logs-first"), pytest.param(False, id="children-log-first")]
)
def test_spawn_pool_children_configured_at_import_store_every_line_once(
    service: FakeLogService, tmp_path: Path, app_dir: Path, parent_first: bool
) -> None:
    tasks, lines = 20, 10
    write(
        app_dir / "spawnjob.py",
        SPAWN_JOB,
        HANDLER=handler_config(service),
        LINES=lines,
        TASKS=tasks,
        PARENT_FIRST=parent_first,
    )
    run = Framework(
        [sys.executable, "spawnjob.py"],
        env=child_env(tmp_path, service, app_dir),
        cwd=app_dir,
        log=tmp_path / "spawn.log",
    )
    try:
        run.exited()
        assert run.proc.returncode == 0, run.tail()
        expected = [f"task {n} line {line}" for n in range(tasks) for line in range(lines)]
        expected += ["parent before the pool"] * parent_first + ["parent after the pool"]
        stored, writers = assert_stored_once(service, expected, run.output())
    finally:
        run.end()
    assert len(writers) == 2, writers  # the two children
    assert stored[-1] == "parent after the pool"


# -- celery, prefork --------------------------------------------------------------------------------

CELERY_APP = """
import logging, os, sys, time
from celery import Celery, signals

# A broker that needs no server: kombu's filesystem transport; the results in files.
BASE = os.environ["CELERY_DIR"]
app = Celery("tasks")
app.conf.update(
    broker_url="filesystem://",
    broker_transport_options={
        "data_folder_in": BASE + "/queue",
        "data_folder_out": BASE + "/queue",
        "data_folder_processed": BASE + "/processed",
        "polling_interval": 0.05,
    },
    result_backend="file://" + BASE + "/results",
    worker_max_tasks_per_child=MAX_TASKS_,
)
log = logging.getLogger("app")
handler = None

@signals.worker_process_init.connect
def start_streaming(**_):
    # Each pool child builds its own handler, where celery sets up per-process resources.
    global handler
    import lelog
    handler = lelog.StreamHandler(
        KEY_, url=os.environ["SERVICE_URL"], account_id="acct", token="secret-token", **OPTIONS_
    )
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False

@signals.worker_process_shutdown.connect
def stop_streaming(**_):
    # Pool children leave by os._exit: no exit hook runs in them, this signal does.
    if handler is not None:
        if CLOSES_:
            handler.close()
        print(f"lelog stats [pid {os.getpid()}]: {handler.stats.summary()}", file=sys.stderr, flush=True)

@app.task(name="log_line")
def log_line(n):
    log.info("task %d [pid %d]", n, os.getpid())
    time.sleep(0.01)  # long enough for both children to take tasks
"""

CELERY_SEND = """
import sys, tasks

for result in [tasks.log_line.delay(n) for n in range(int(sys.argv[1]))]:
    result.get(timeout=float(sys.argv[2]), interval=0.02)
"""


@pytest.mark.parametrize(
    ("closes", "max_tasks"),
    [
        # Pool children leave by os._exit: lelog closes at worker_process_shutdown itself.
        pytest.param(False, None, id="handler-only-built-in-process-init"),
        pytest.param(False, 20, id="handler-only-built-in-process-init-children-recycled"),
        pytest.param(True, None, id="closed-in-process-shutdown"),
    ],
)
def test_celery_prefork_children_store_every_task_line_once(
    service: FakeLogService, tmp_path: Path, app_dir: Path, closes: bool, max_tasks: Optional[int]
) -> None:
    pytest.importorskip("celery")
    broker = tmp_path / "broker"
    for folder in ("queue", "processed", "results"):
        (broker / folder).mkdir(parents=True)
    write(app_dir / "tasks.py", CELERY_APP, KEY=KEY, OPTIONS=OPTIONS, CLOSES=closes, MAX_TASKS=max_tasks)
    write(app_dir / "send.py", CELERY_SEND)
    env = child_env(tmp_path, service, app_dir, CELERY_DIR=str(broker))
    worker = Framework(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool", "prefork", "-c", "2"]
        + ["--without-gossip", "--without-mingle", "--without-heartbeat", "-n", "worker@localhost"],
        env=env,
        cwd=app_dir,
        log=tmp_path / "celery.log",
    )
    try:
        count = 60
        sent = subprocess.run(
            [sys.executable, "send.py", str(count), str(GENEROUS)],
            env=env,
            cwd=str(app_dir),
            capture_output=True,
            text=True,
            timeout=GENEROUS * 2,
        )
        assert sent.returncode == 0, f"{sent.stdout}{sent.stderr}\n{worker.tail()}"
        worker.stop(signal.SIGTERM)  # celery's warm shutdown
        assert worker.proc.returncode == 0, worker.tail()
        _, writers = assert_stored_once(
            service, [f"task {n}" for n in range(count)], worker.output(), recycled=max_tasks is not None
        )
    finally:
        worker.end()
    assert len(writers) >= 2, writers
