"""StreamHandler: plain-value construction (dictConfig, fileConfig, env), record to lines,
recursion, and flush/close under logging's own locks (docs/hazards.md#deadlock-under-logging-locks,
#no-thread-at-shutdown, #recursion, #side-effects-at-construction, #dictconfig-traps, #flush-semantics)."""

from __future__ import annotations

import json
import logging
import logging.config
import logging.handlers
import re
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

import lelog
from lelog import ConfigError, LogConfig, StreamHandler
from tests.helpers import GENEROUS, run_python
from tests.service import FakeLogService

# close() returns once it is done: a generous close_timeout costs nothing and keeps a loaded
# machine from cutting a close short.
FAST = {"flush_interval": 0.05, "close_timeout": GENEROUS}
TIME_RE = r'time="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"'


def plain(service: FakeLogService, **values: Any) -> dict[str, Any]:
    """Handler keyword values as dictConfig would hold them: plain JSON values only."""
    return {"url": service.url, "account_id": "acct", "token": "secret-token", **FAST, **values}


def outs(rows: list[dict] | None) -> list[str]:
    return [row["out"] for row in rows or []]


@pytest.fixture
def app_logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A logger of this test's own, not propagating; its handlers are closed at teardown."""
    logger = logging.getLogger(f"lelog_tests.{request.node.name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
        handler.close()


@pytest.fixture
def on_root() -> Iterator[Any]:
    """Attach a handler to the root logger at DEBUG; everything is restored at teardown."""
    root = logging.getLogger()
    saved = root.level
    attached: list[logging.Handler] = []

    def attach(handler: logging.Handler) -> logging.Handler:
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        attached.append(handler)
        return handler

    yield attach
    for handler in attached:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(saved)


def dict_config(logger: logging.Logger, handler: dict[str, Any], **extra: Any) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"stream": {"class": "lelog.StreamHandler", **handler}},
            "loggers": {logger.name: {"level": "DEBUG", "handlers": ["stream"], "propagate": False}},
            **extra,
        }
    )


def only_handler(logger: logging.Logger) -> StreamHandler:
    (handler,) = logger.handlers
    assert isinstance(handler, StreamHandler)
    return handler


# -- construction: plain values, no side effects (docs/hazards.md#side-effects-at-construction, #dictconfig-traps) ---


def test_dictconfig_from_a_plain_dict_makes_no_request_and_no_thread(
    service: FakeLogService, app_logger: logging.Logger
) -> None:
    threads = set(threading.enumerate())
    dict_config(app_logger, {"key": "dict/k", **plain(service)})
    assert set(threading.enumerate()) - threads == set()
    assert service.requests == []

    app_logger.info("hello %s", "world")
    app_logger.warning("careful")
    handler = only_handler(app_logger)
    handler.close()

    rows = service.blob_lines("dict/k")
    assert [row["level"] for row in rows] == ["info", "warning"]
    assert re.fullmatch(TIME_RE + r' level=info msg="hello world"\n', rows[0]["out"])
    assert rows[1]["out"].endswith('level=warning msg="careful"\n')
    assert handler.stats.sent == 2 and handler.stats.uploaded is True


@pytest.mark.parametrize("syntax", ["yaml", "json"])
def test_dictconfig_from_a_yaml_or_json_document_with_a_setup_request(
    service: FakeLogService, app_logger: logging.Logger, syntax: str
) -> None:
    text = textwrap.dedent(f"""
        version: 1
        disable_existing_loggers: false
        formatters:
          short: {{format: "%(levelname)s:%(message)s"}}
        handlers:
          stream:
            class: lelog.StreamHandler
            formatter: short
            exclude: [request_id]
            flush_interval: 0.05
            close_timeout: 2
            config:
              le_log_key: stage-1/from-{syntax}
              secrets: [hunter2]
              log_config: {{url: "{service.url}", account_id: acct, token: secret-token}}
        loggers:
          {app_logger.name}: {{level: DEBUG, handlers: [stream], propagate: false}}
    """)
    document = yaml.safe_load(text)
    if syntax == "json":
        document = json.loads(json.dumps(document))
    logging.config.dictConfig(document)
    assert service.requests == []

    app_logger.info("password is hunter2", extra={"request_id": "r-1", "user": "bob"})
    handler = only_handler(app_logger)
    assert handler.writer.key == f"stage-1/from-{syntax}"
    handler.close()

    (row,) = service.blob_lines(f"stage-1/from-{syntax}")
    assert row["out"] == "INFO:password is **************\n"
    assert row["args"] == {"user": "bob"}


def test_fileconfig_builds_the_handler(service: FakeLogService, tmp_path: Path) -> None:
    name = "lelog_tests.fileconfig"
    ini = tmp_path / "logging.ini"
    ini.write_text(
        textwrap.dedent(f"""
        [loggers]
        keys=root,app
        [handlers]
        keys=stream
        [formatters]
        keys=
        [logger_root]
        handlers=
        [logger_app]
        qualname={name}
        level=DEBUG
        propagate=0
        handlers=stream
        [handler_stream]
        class=lelog.StreamHandler
        args=("ini/k",)
        kwargs={{"url": "{service.url}", "account_id": "acct", "token": "secret-token", "flush_interval": 0.05}}
    """)
    )
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logging.config.fileConfig(ini, disable_existing_loggers=False)
    logger = logging.getLogger(name)
    try:
        assert service.requests == []
        logger.error("from ini")
        only_handler(logger).close()
    finally:
        for handler in logger.handlers[:]:
            logger.removeHandler(handler)
        root.handlers[:], root.level = saved
    assert outs(service.blob_lines("ini/k"))[0].endswith('level=error msg="from ini"\n')


def test_missing_values_come_from_the_environment(
    service: FakeLogService, app_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LELOG_URL", service.url)
    monkeypatch.setenv("LELOG_ACCOUNT_ID", "acct")
    monkeypatch.setenv("LELOG_TOKEN", "wrong-token")
    monkeypatch.setenv("LELOG_LE_LOG_KEY", "env/k")
    # The token in the config wins over the environment; the rest comes from it.
    dict_config(app_logger, {"config": {"token": "secret-token"}, **FAST})
    handler = only_handler(app_logger)
    assert handler.writer.key == "env/k"
    app_logger.info("configured by env")
    handler.close()
    assert outs(service.blob_lines("env/k"))[0].endswith('msg="configured by env"\n')


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"url": "log-service:8080", "account_id": "a", "token": "t"}, "url"),
        ({"url": "http://log-service:8080", "account_id": "a"}, "token"),
        (
            {"url": "http://log-service:8080", "account_id": "a", "token": "t", "flush_intervall": 1},
            "flush_interval",
        ),
        (
            {"url": "http://log-service:8080", "account_id": "a", "token": "t", "flush_interval": -1},
            "flush_interval",
        ),
        ({"config": {"log_config": {"url": "http://x", "acount_id": "a", "token": "t"}}}, "account_id"),
        ({"config": {"log_config": {}, "mtls_config": {"client_cert": "Zm9v"}}}, "client_cert"),
        ({"exclude": "request_id"}, "exclude"),
    ],
)
def test_configuration_errors_name_the_field(
    values: dict[str, Any], field: str, app_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LELOG_URL", "LELOG_ACCOUNT_ID", "LELOG_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=field):
        StreamHandler("k", **values)
    # dictConfig wraps it, keeping the ConfigError as the cause.
    with pytest.raises(ValueError, match="Unable to configure handler") as info:
        dict_config(app_logger, {"key": "k", **values})
    assert isinstance(info.value.__cause__, ConfigError) and field in str(info.value.__cause__)


def test_a_file_store_given_as_config_is_taken_as_a_writer_takes_it(
    tmp_path: Path, app_logger: logging.Logger
) -> None:
    store = lelog.FileStore(tmp_path)
    handler = StreamHandler("files/k", config=store, close_timeout=GENEROUS)
    app_logger.addHandler(handler)
    app_logger.warning("into the file store")
    app_logger.removeHandler(handler)
    handler.close()
    (row,) = store.download("files/k").splitlines()
    assert json.loads(row)["out"].endswith('level=warning msg="into the file store"\n')
    store.close()  # its owner closes it, as with StreamWriter


def test_a_backend_given_as_config_takes_no_service_values(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="config= is a FileStore, which has its own configuration: give token"
    ):
        StreamHandler("k", config=lelog.FileStore(tmp_path), token="t")


def test_a_missing_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LELOG_LE_LOG_KEY", raising=False)
    with pytest.raises(ConfigError, match="key"):
        StreamHandler(url="http://log-service:8080", account_id="a", token="t")


# -- record to lines -----------------------------------------------------------------------------


def test_a_traceback_follows_as_one_line_per_text_line(
    service: FakeLogService, app_logger: logging.Logger
) -> None:
    handler = StreamHandler("tb/k", **plain(service))
    app_logger.addHandler(handler)
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        app_logger.exception("it failed", extra={"step": 3})
    handler.close()

    rows = service.blob_lines("tb/k")
    assert rows[0]["out"].endswith('level=error msg="it failed" step=3\n')
    assert rows[1]["out"] == "Traceback (most recent call last):\n"
    assert rows[-2:][0]["out"] == "ValueError: boom\n" and rows[-1]["out"] == "second line\n"
    assert {row["level"] for row in rows} == {"error"}
    assert {row["time"] for row in rows} == {rows[0]["time"]}
    assert all(row["args"] == {"step": "3"} for row in rows)
    assert all("\n" not in row["out"][:-1] for row in rows)


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_extra_fields_arrive_as_string_args(service: FakeLogService, app_logger: logging.Logger) -> None:
    handler = StreamHandler("args/k", exclude=["hidden"], include=["bad"], **plain(service))
    app_logger.addHandler(handler)
    records: list[logging.LogRecord] = []
    app_logger.addFilter(lambda record: records.append(record) or True)
    app_logger.info(
        "with extras", extra={"n": 42, "ok": True, "who": "bob smith", "hidden": "x", "bad": _Unprintable()}
    )
    app_logger.info("no extras")
    handler.close()

    first, second = service.blob_lines("args/k")
    assert first["args"] == {"n": "42", "ok": "True", "who": "bob smith", "bad": "<unprintable _Unprintable>"}
    assert first["out"].endswith(
        'msg="with extras" n=42 ok=True who="bob smith" bad="<unprintable _Unprintable>"\n'
    )
    assert second["args"] is None
    assert first["time"] == lelog.Line("", 0, records[0].created).time


def test_extras_as_args_can_be_turned_off(service: FakeLogService, app_logger: logging.Logger) -> None:
    handler = StreamHandler("noargs/k", extras_as_args=False, **plain(service))
    app_logger.addHandler(handler)
    app_logger.info("x", extra={"n": 1})
    handler.close()
    (row,) = service.blob_lines("noargs/k")
    assert row["args"] is None and row["out"].endswith('msg="x" n=1\n')


def test_dual_logging_prints_one_masked_flat_json_object_per_record(
    service: FakeLogService, app_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = StreamHandler(
        "dual/k",
        config={"log_config": {"dual_logging_enabled": True}, "secrets": ["hunter2"]},
        **plain(service),
    )
    app_logger.addHandler(handler)
    app_logger.warning("token hunter2", extra={"step": "build", "level": "clash"})
    handler.close()

    (line,) = capsys.readouterr().out.splitlines()
    obj = json.loads(line)
    assert obj["level"] == "WARNING" and obj["key"] == "dual/k" and obj["step"] == "build"
    assert obj["message"].endswith('msg="token **************" step=build fields.level=clash')
    assert isinstance(obj["timestamp"], float)
    assert all(not isinstance(v, (dict, list)) for v in obj.values())
    assert outs(service.blob_lines("dual/k"))[0].endswith(
        'msg="token **************" step=build fields.level=clash\n'
    )


def test_a_filter_may_replace_the_record(service: FakeLogService, app_logger: logging.Logger) -> None:
    class Replacing(StreamHandler):
        def filter(self, record: logging.LogRecord) -> Any:  # what 3.12+ filters may return
            return logging.makeLogRecord({**record.__dict__, "msg": "replaced"})

    handler = Replacing("replace/k", **plain(service))
    app_logger.addHandler(handler)
    app_logger.info("original")
    handler.close()
    assert outs(service.blob_lines("replace/k"))[0].endswith('msg="replaced"\n')


# -- recursion (docs/hazards.md#recursion) ---------------------------------------------------------


def test_root_at_debug_with_httpx_logging_captures_only_the_programs_records(
    service: FakeLogService, on_root: Any
) -> None:
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        handler = on_root(StreamHandler("recursion/k", **plain(service)))
        for i in range(50):
            logging.getLogger("app").debug("line %d", i)
            if i % 10 == 0:
                assert handler.flush(GENEROUS)  # requests (and httpx's debug records) happen now
        handler.close()
    finally:
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    rows = service.blob_lines("recursion/k")
    assert [row["out"].split("msg=")[1] for row in rows] == [f'"line {i}"\n' for i in range(50)]
    assert outs(service.all_written("recursion/k")) == outs(rows)
    assert handler.stats.accepted == 50


def test_records_logged_from_inside_emit_are_kept_after_it_and_a_loop_is_counted(
    service: FakeLogService, on_root: Any
) -> None:
    """A filter or formatter that logs re-enters the handler on its own thread: those records
    are deferred until the outer record is written (kept, in order), and those they log in
    turn one level deeper; past that depth the chain is cut and counted, never lost silently
    (docs/writer.md#re-entry)."""

    class Chatty(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            logging.getLogger("formatter").warning("formatting %s", record.getMessage())
            return record.getMessage()

    handler = on_root(StreamHandler("reentry/k", **plain(service)))
    handler.setFormatter(Chatty())
    handler.addFilter(lambda record: logging.getLogger("filter").info("filtering") or True)
    logging.getLogger("app").info("record 0")
    stats = handler.writer.close()
    assert outs(service.blob_lines("reentry/k")) == [
        "record 0\n",
        "filtering\n",  # logged by the filter, deferred until "record 0" was written
        "formatting record 0\n",
        "filtering\n",  # logged while the deferred "filtering" record was handled
        "formatting filtering\n",
        "filtering\n",
        "formatting formatting record 0\n",
    ]
    # Each of the four records at the deepest level logged twice more: cut and counted.
    assert stats.dropped["reentrant"] == 8
    assert stats.accepted == stats.sent + stats.dropped_total == 15


# -- locks, flush and close (docs/hazards.md#deadlock-under-logging-locks, #flush-semantics) ------


def test_emit_does_not_take_the_handler_lock(service: FakeLogService, app_logger: logging.Logger) -> None:
    handler = StreamHandler("lock/k", **plain(service))
    app_logger.addHandler(handler)
    done = threading.Event()
    handler.acquire()  # as logging.shutdown() does while it flushes and closes
    try:
        thread = threading.Thread(target=lambda: (app_logger.info("while locked"), done.set()))
        thread.start()
        assert done.wait(GENEROUS), "emit blocked on the handler lock"
        thread.join()
        assert handler.flush(GENEROUS)  # flush under the handler lock completes
    finally:
        handler.release()
    assert outs(service.all_written("lock/k"))[0].endswith('msg="while locked"\n')


def test_flush_returns_true_only_once_everything_was_sent(
    service: FakeLogService, app_logger: logging.Logger
) -> None:
    handler = StreamHandler("flush/k", **{**plain(service), "flush_interval": 30.0})
    app_logger.addHandler(handler)
    for i in range(20):
        app_logger.info("n%d", i)
    assert service.all_written("flush/k") == []  # the 30 s interval has not passed
    assert handler.flush(GENEROUS) is True
    assert len(service.all_written("flush/k")) == 20


def test_close_twice_and_after_close_records_are_counted(
    service: FakeLogService, app_logger: logging.Logger
) -> None:
    handler = StreamHandler("twice/k", **plain(service))
    app_logger.addHandler(handler)
    app_logger.info("before")
    handler.close()
    requests = len(service.requests)
    app_logger.info("after")
    started = time.monotonic()
    handler.close()
    handler.flush()
    # Nothing is sent again, and nothing waits for close_timeout (GENEROUS) a second time.
    assert len(service.requests) == requests
    assert time.monotonic() - started < GENEROUS / 2
    assert handler.stats.dropped["after_close"] == 1
    assert len(service.blob_lines("twice/k")) == 1


def run_child(code: str, service: FakeLogService, key: str, close_timeout: float = 1.0) -> Any:
    """Run ``code`` in a fresh interpreter (a hang fails through the timeout).

    The child prints ``hooks-done <monotonic time>`` from an exit hook registered before
    ``lelog`` and ``logging`` are imported, so it runs after theirs: the time their exit
    hooks took can be told from the interpreter's own teardown.
    """
    header = f"""
        import atexit, time
        atexit.register(lambda: print("hooks-done", time.monotonic(), flush=True))
        import logging, logging.config, sys
        import lelog
        KEY = {key!r}
        CONFIG = dict(url={service.url!r}, account_id="acct", token="secret-token",
                      close_timeout={close_timeout!r}, flush_interval=0.05)
    """
    return run_python(textwrap.dedent(header) + textwrap.dedent(code), timeout=120.0)


def printed(result: Any) -> dict[str, float]:
    """The child's ``name value`` lines, as numbers."""
    return {name: float(value) for name, value in (line.split() for line in result.stdout.splitlines())}


def test_logging_shutdown_with_a_blackhole_service_returns_within_the_deadline(
    service: FakeLogService,
) -> None:
    # A slow test with its own margins: close_timeout is large enough that a second wait for
    # it stands out from the scheduling of a loaded machine.
    service.blackhole()
    close_timeout = 2.0
    result = run_child(
        """
        handler = lelog.StreamHandler(KEY, **CONFIG)
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.DEBUG)
        logging.getLogger("httpx").setLevel(logging.DEBUG)
        for i in range(3):
            logging.warning("line %d", i)
        # No pause for the worker: whether its open is already held by the blackhole or
        # still to come in the final sequence, the shutdown keeps the same deadline.
        started = time.monotonic()
        logging.shutdown()
        print("shutdown", time.monotonic() - started)
        logging.warning("after shutdown")
        print("exit", time.monotonic())
    """,
        service,
        "blackhole/k",
        close_timeout,
    )
    assert result.returncode == 0, result.stderr
    values = printed(result)
    # flush (<= close_timeout) then close (<= close_timeout); a hang ends only at the timeout.
    assert values["shutdown"] < 2 * close_timeout + 3.0
    # The exit hooks find the writer closed: none of them waits for close_timeout again.
    assert values["hooks-done"] - values["exit"] < close_timeout
    assert "Traceback" not in result.stderr


def test_exit_with_a_blackhole_service_takes_at_most_close_timeout(service: FakeLogService) -> None:
    # A slow test with its own margin: the exit hooks (lelog's, then logging.shutdown())
    # together wait for close_timeout once; twice would be a second budget.
    service.blackhole()
    close_timeout = 2.0
    result = run_child(
        """
        handler = lelog.StreamHandler(KEY, **CONFIG)
        logging.getLogger().addHandler(handler)
        for i in range(3):
            logging.warning("line %d", i)
        print("exit", time.monotonic(), flush=True)
    """,
        service,
        "exit/k",
        close_timeout,
    )
    assert result.returncode == 0, result.stderr
    values = printed(result)
    assert values["hooks-done"] - values["exit"] < 2 * close_timeout
    assert "Traceback" not in result.stderr


def test_shutdown_as_on_python_312_starts_no_thread(service: FakeLogService) -> None:
    # Python 3.12 refuses new threads once atexit callbacks run.  The child makes that so
    # on any version (an atexit callback registered after lelog's runs before its exit hook),
    # and records who tried: flush and close must not, and lines logged only at exit still
    # reach the service, drained on the exiting thread.
    result = run_child(
        """
        import atexit, threading, traceback
        used = lelog.StreamHandler(KEY + "-used", **CONFIG)
        late = lelog.StreamHandler(KEY + "-late", **CONFIG)
        logging.getLogger().addHandler(used)
        logging.getLogger().addHandler(late)
        logging.getLogger().removeHandler(late)
        logging.warning("before exit")
        attempts = []
        real_start = threading.Thread.start

        def refusing_start(self):
            attempts.append([frame.name for frame in traceback.extract_stack()])
            raise RuntimeError("can't create new thread at interpreter shutdown")

        def at_exit():
            threading.Thread.start = refusing_start
            logging.getLogger().addHandler(late)
            logging.warning("logged at exit")

        def report():
            print("attempts", len(attempts), flush=True)
            print("from-close-or-flush",
                  sum(1 for names in attempts if {"close", "flush", "shutdown", "close_all"} & set(names)),
                  flush=True)

        atexit.register(report)   # runs last
        atexit.register(at_exit)  # runs first
    """,
        service,
        "py312/k",
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "RuntimeError" not in result.stderr
    # One refused start: the late writer's lazy worker, from emit; none from flush or close.
    values = printed(result)
    assert (values["attempts"], values["from-close-or-flush"]) == (1, 0)

    def messages(key: str) -> list[str]:
        return [out.split("msg=")[1] for out in outs(service.blob_lines(key))]

    assert messages("py312/k-used") == ['"before exit"\n', '"logged at exit"\n']
    assert messages("py312/k-late") == ['"logged at exit"\n']


def test_dictconfig_reconfiguration_does_not_stall_or_lose_lines(service: FakeLogService) -> None:
    # dictConfig closes the old handlers while holding logging's module lock; the worker's
    # HTTP client needs that lock to log (isEnabledFor after a cache reset).  Waiting there
    # would stall for close_timeout and drop every pending line.  (With the default
    # disable_existing_loggers=True the httpx loggers are disabled and never take the lock.)
    result = run_child(
        """
        CONFIG.update(flush_interval=30.0, close_timeout=60.0)
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
            "handlers": {"s": {"class": "lelog.StreamHandler", "key": KEY, **CONFIG}},
            "root": {"level": "DEBUG", "handlers": ["s"]}})
        for i in range(5):
            logging.info("line %d", i)
        logging.getLogger("any").setLevel(logging.DEBUG)  # resets every isEnabledFor cache
        started = time.monotonic()
        logging.config.dictConfig({"version": 1, "root": {"level": "DEBUG", "handlers": []}})
        print("reconfigured", time.monotonic() - started, flush=True)
    """,
        service,
        "reconfig/k",
    )
    assert result.returncode == 0, result.stderr
    # Stalling would last close_timeout (60 s); the reconfiguration itself takes milliseconds.
    assert printed(result)["reconfigured"] < 20.0
    rows = service.blob_lines("reconfig/k")
    assert [row["out"].split("msg=")[1] for row in rows] == [f'"line {i}"\n' for i in range(5)]
    assert not service.is_open("reconfig/k")


def test_repr_and_the_class_dictconfig_needs() -> None:
    config = LogConfig(url="http://log-service:8080", account_id="a", token="t")
    handler = StreamHandler("repr/k", config=config, level="INFO")
    try:
        assert repr(handler) == "<StreamHandler 'repr/k' (INFO)>"
    finally:
        handler.close()
    # Python 3.12's dictConfig special-cases QueueHandler subclasses (docs/hazards.md#dictconfig-traps).
    assert not issubclass(lelog.StreamHandler, logging.handlers.QueueHandler)


IMPORTS_UNDER_CONFIGURATION = """
import importlib.abc, logging.config, os, sys, threading, time
import lelog

inside = threading.Event()


class Pause(importlib.abc.MetaPathFinder):
    # Holds another thread inside httpcore's import, as an app's first httpx request would.
    def find_spec(self, name, path, target=None):
        if name == "httpcore._sync.connection" and threading.current_thread().name == "importer":
            inside.set()
            time.sleep(1.0)
        return None


sys.meta_path.insert(0, Pause())
threading.Thread(target=lambda: __import__("httpcore"), name="importer", daemon=True).start()
inside.wait()
config = {"version": 1, "handlers": {"le": {"class": "lelog.StreamHandler", "key": "k", "url": "http://127.0.0.1:9",
          "account_id": "a", "token": "t"}}, "root": {"handlers": ["le"], "level": "INFO"}}
configuring = threading.Thread(target=logging.config.dictConfig, args=(config,), daemon=True)
configuring.start()
configuring.join(20)
print("configured" if not configuring.is_alive() else "stuck", flush=True)
os._exit(0)
"""


def test_dictconfig_never_waits_on_an_import_another_thread_has_under_way() -> None:
    """Building a handler under logging's module lock imports nothing that takes that lock
    (httpcore's modules do, as they are imported): a thread importing them meanwhile would
    wait for the lock, and the configuration for the import."""
    result = run_python(IMPORTS_UNDER_CONFIGURATION, timeout=60)
    assert result.stdout.split() == ["configured"], result.stderr
