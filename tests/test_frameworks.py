"""lelog inside the frameworks programs run, configured as each one's docs say, with the real
libraries: uvicorn, Django, celery, loguru, structlog and OpenTelemetry.

What each must give: ``args`` with one text value per field the framework attaches (its
objects and presentation-only fields left out), an exception as lines of its own, and, with
``trace_context``, the active span's ids."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, Iterator

import pytest

import lelog
from lelog import ConfigError, StreamHandler
from lelog.integrations import loguru_sink
from tests.helpers import GENEROUS, run_python
from tests.service import FakeLogService

FAST = {"flush_interval": 0.05, "close_timeout": GENEROUS}


def plain(service: FakeLogService, **values: Any) -> dict[str, Any]:
    return {"url": service.url, "account_id": "acct", "token": "secret-token", **FAST, **values}


def stored(service: FakeLogService, key: str) -> list[dict[str, Any]]:
    rows = service.blob_lines(key)
    assert rows is not None, f"no stored log for {key}"
    return rows


@pytest.fixture
def app_logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A logger of this test's own at DEBUG, not propagating; its handlers closed at teardown."""
    logger = logging.getLogger(f"tests.frameworks.{request.node.name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
        handler.close()


# -- uvicorn, Django, celery: the fields they attach -----------------------------------------------

UVICORN = """
import copy, threading, httpx, uvicorn
from uvicorn.config import LOGGING_CONFIG

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

config = copy.deepcopy(LOGGING_CONFIG)  # uvicorn's own, plus lelog's handler
config["handlers"]["lelog"] = {"class": "lelog.StreamHandler", "key": "uvicorn/k", "url": SERVICE_URL,
                               "account_id": "acct", "token": "secret-token", "close_timeout": 30}
for name in ("uvicorn", "uvicorn.access"):
    config["loggers"][name]["handlers"].append("lelog")
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=config, lifespan="off"))

def request_then_stop():
    while not server.started:
        threading.Event().wait(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    httpx.get(f"http://127.0.0.1:{port}/hello")
    server.should_exit = True

threading.Thread(target=request_then_stop).start()
server.run()
"""


def test_uvicorn_lines_carry_no_color_message_and_no_escape_codes(service: FakeLogService) -> None:
    pytest.importorskip("uvicorn")
    result = run_python(UVICORN.replace("SERVICE_URL", repr(service.url)), timeout=120)
    assert result.returncode == 0, result.stderr
    rows = stored(service, "uvicorn/k")
    outs = [row["out"] for row in rows]
    assert any("Uvicorn running on" in out for out in outs), outs
    assert any("Started server process" in out for out in outs), outs
    assert any('GET /hello HTTP/1.1\\" 200' in out for out in outs), outs
    assert not any("color_message" in out or "\\u001b" in out or "\x1b" in out for out in outs), outs
    assert all("color_message" not in (row["args"] or {}) for row in rows)


DJANGO = """
import threading, httpx, django
from django.conf import settings

settings.configure(
    DEBUG=True, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="x",
    LOGGING={  # as Django's docs add a handler to django.server
        "version": 1, "disable_existing_loggers": False,
        "handlers": {"lelog": {"class": "lelog.StreamHandler", "key": "django/k", "url": SERVICE_URL,
                               "account_id": "acct", "token": "secret-token", "close_timeout": 30}},
        "loggers": {"django.server": {"handlers": ["lelog"], "level": "INFO", "propagate": False}},
    },
)
django.setup()
from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.urls import path

urlpatterns = [path("hello", lambda request: HttpResponse("ok"))]
server = WSGIServer(("127.0.0.1", 0), WSGIRequestHandler)  # what runserver serves with
server.set_app(get_wsgi_application())
serving = threading.Thread(target=server.handle_request)
serving.start()
httpx.get(f"http://127.0.0.1:{server.server_port}/hello")
serving.join()
server.server_close()
"""


def test_djangos_server_records_keep_their_data_and_leave_the_socket_out(service: FakeLogService) -> None:
    pytest.importorskip("django")
    result = run_python(DJANGO.replace("SERVICE_URL", repr(service.url)), timeout=120)
    assert result.returncode == 0, result.stderr
    (row,) = stored(service, "django/k")
    assert '\\"GET /hello HTTP/1.1\\" 200' in row["out"]
    assert set(row["args"]) == {"server_time", "status_code"} and row["args"]["status_code"] == "200"
    assert "socket" not in row["out"] and "request=" not in row["out"]


def test_celerys_task_data_arrives_as_json_text(service: FakeLogService) -> None:
    celery = pytest.importorskip("celery")
    app = celery.Celery("frameworks", set_as_current=False)
    app.conf.task_always_eager = True

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    trace_logger = logging.getLogger("celery.app.trace")
    handler = StreamHandler("celery/k", **plain(service))
    saved = trace_logger.level
    trace_logger.addHandler(handler)
    trace_logger.setLevel(logging.INFO)
    try:
        assert add.delay(2, 3).get() == 5
    finally:
        trace_logger.removeHandler(handler)
        trace_logger.setLevel(saved)
        handler.close()
    (row,) = stored(service, "celery/k")
    data = lelog_json(row["args"]["data"])
    assert data["name"] == "add" and data["return_value"] == "5" and data["args"] in ("(2, 3)", "[2, 3]")
    assert "succeeded in" in row["out"]


def lelog_json(text: str) -> Any:
    import json

    return json.loads(text)


# -- loguru ----------------------------------------------------------------------------------------


@pytest.fixture
def loguru_logger() -> Iterator[Any]:
    """loguru's global logger; the sinks a test adds are removed at teardown."""
    loguru = pytest.importorskip("loguru")
    added: list[int] = []
    real_add = loguru.logger.add

    class Logger:
        def __getattr__(self, name: str) -> Any:
            return getattr(loguru.logger, name)

        def add(self, sink: Any, **options: Any) -> int:
            sink_id = real_add(sink, **options)
            added.append(sink_id)
            return sink_id

    yield Logger()
    for sink_id in added:
        loguru.logger.remove(sink_id)


def _log_with_loguru(logger: Any) -> None:
    logger.bind(user_id=42, tags=["a", 1], conn=threading.Lock()).info("signed in as {}", "ann")
    try:
        1 / 0
    except ZeroDivisionError:
        logger.bind(user_id=42).exception("failed")


def _assert_loguru_rows(rows: list[dict[str, Any]], message_prefix: str = "") -> None:
    first, *error = rows
    assert first["level"] == "info"
    assert first["args"] == {"user_id": "42", "tags": '["a",1]'}  # one key per field; no lock
    assert first["out"].endswith(f'msg="{message_prefix}signed in as ann" user_id=42 tags="[\\"a\\",1]"\n')
    assert "extra" not in first["out"]
    head, *traceback = error
    assert head["out"].endswith(f'msg="{message_prefix}failed" user_id=42\n')
    assert traceback and all(row["level"] == "error" and row["args"] == {"user_id": "42"} for row in error)
    assert traceback[0]["out"] == "Traceback (most recent call last):\n"
    assert traceback[-1]["out"] == "ZeroDivisionError: division by zero\n"  # no stray empty row after it
    assert "Traceback" not in head["out"]  # the message, not the whole text escaped into msg


def test_loguru_sink_writes_fields_as_args_and_the_traceback_as_lines(
    service: FakeLogService, loguru_logger: Any
) -> None:
    sink = loguru_sink("loguru/sink", **plain(service))
    loguru_logger.add(sink, level="DEBUG")
    _log_with_loguru(loguru_logger)
    loguru_logger.success("done")
    sink.close()
    rows = stored(service, "loguru/sink")
    _assert_loguru_rows(rows[:-1])
    assert rows[-1]["level"] == "success" and rows[-1]["out"].endswith('msg="done"\n')
    assert sink.stats.sent == len(rows)


def test_loguru_sink_keeps_logurus_time_and_works_with_enqueue(
    service: FakeLogService, loguru_logger: Any
) -> None:
    sink = loguru_sink("loguru/enqueue", **plain(service))
    times: list[float] = []
    loguru_logger.add(lambda message: times.append(message.record["time"].timestamp()), level="DEBUG")
    loguru_logger.add(sink, level="DEBUG", enqueue=True)  # loguru calls the sink on its own thread
    loguru_logger.bind(step="build").info("queued")
    loguru_logger.complete()
    sink.close()
    (row,) = stored(service, "loguru/enqueue")
    assert row["args"] == {"step": "build"}
    assert row["time"] == lelog.Line("", 0, times[0]).time


def test_logger_add_with_a_stream_handler_gives_fields_as_args(
    service: FakeLogService, loguru_logger: Any
) -> None:
    handler = StreamHandler("loguru/handler", **plain(service))
    loguru_logger.add(handler, level="DEBUG", format="{message}")
    _log_with_loguru(loguru_logger)
    handler.close()
    _assert_loguru_rows(stored(service, "loguru/handler"))


def test_logger_add_with_loguru_s_default_format_keeps_the_traceback_apart(
    service: FakeLogService, loguru_logger: Any
) -> None:
    handler = StreamHandler("loguru/default", **plain(service))
    loguru_logger.add(handler, level="DEBUG")  # loguru's format: "<time> | INFO | <where> - <message>"
    _log_with_loguru(loguru_logger)
    handler.close()
    rows = stored(service, "loguru/default")
    assert " | INFO     | " in rows[0]["out"] and rows[0]["args"] == {"user_id": "42", "tags": '["a",1]'}
    assert rows[1]["out"].endswith(' - failed" user_id=42\n')
    assert rows[2]["out"] == "Traceback (most recent call last):\n"
    assert rows[-1]["out"] == "ZeroDivisionError: division by zero\n"


def test_loguru_s_propagate_handler_recipe_gives_fields_as_args(
    service: FakeLogService, loguru_logger: Any, app_logger: logging.Logger
) -> None:
    class PropagateHandler(logging.Handler):  # loguru's documented recipe, to app_logger
        def emit(self, record: logging.LogRecord) -> None:
            app_logger.handle(record)

    handler = StreamHandler("loguru/propagate", **plain(service))
    app_logger.addHandler(handler)
    loguru_logger.add(PropagateHandler(), level="DEBUG", format="{message}")
    _log_with_loguru(loguru_logger)
    handler.close()
    _assert_loguru_rows(stored(service, "loguru/propagate"))


# -- structlog -------------------------------------------------------------------------------------


@pytest.fixture
def structlog_mod() -> Iterator[Any]:
    structlog = pytest.importorskip("structlog")
    yield structlog
    structlog.reset_defaults()


def test_structlog_processor_formatter_gives_the_event_dicts_keys_as_args(
    service: FakeLogService, structlog_mod: Any, app_logger: logging.Logger
) -> None:
    structlog = structlog_mod
    structlog.configure(  # structlog's docs: rendering within logging, through ProcessorFormatter
        processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = StreamHandler("structlog/k", **plain(service))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.KeyValueRenderer(key_order=["event"]),
            ]
        )
    )
    app_logger.addHandler(handler)
    log = structlog.get_logger(app_logger.name).bind(user_id=42)
    log.info("signed in", tags=["a", 1], conn=threading.Lock())
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("failed")
    app_logger.info("foreign", extra={"step": "build"})  # a plain logging record, same formatter
    handler.close()
    rows = stored(service, "structlog/k")
    first = rows[0]
    assert first["args"] == {"user_id": "42", "tags": '["a",1]', "level": "info"}
    assert first["out"].startswith("event='signed in'") and "user_id=42" in first["out"]
    failed = [row for row in rows if row["args"] and "user_id" in row["args"] and row is not first]
    assert failed and all(row["args"] == {"user_id": "42", "level": "error"} for row in failed)
    assert rows[-1]["args"] == {"step": "build"}


def test_structlog_render_to_log_kwargs_gives_the_event_dicts_keys_as_args(
    service: FakeLogService, structlog_mod: Any, app_logger: logging.Logger
) -> None:
    structlog = structlog_mod
    structlog.configure(
        processors=[structlog.stdlib.render_to_log_kwargs],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = StreamHandler("structlog/kwargs", **plain(service))  # lelog's own format
    app_logger.addHandler(handler)
    structlog.get_logger(app_logger.name).bind(user_id=42).info("signed in", tags=["a"])
    handler.close()
    (row,) = stored(service, "structlog/kwargs")
    assert row["args"] == {"user_id": "42", "tags": '["a"]'}
    assert row["out"].endswith('msg="signed in" user_id=42 tags="[\\"a\\"]"\n')


# -- OpenTelemetry ---------------------------------------------------------------------------------


@pytest.fixture
def tracer() -> Any:
    """A tracer of the SDK, without setting the process-wide provider (settable only once)."""
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    return sdk_trace.TracerProvider().get_tracer("tests.frameworks")


def test_a_record_inside_a_span_carries_its_trace_and_span_ids(
    service: FakeLogService, tracer: Any, app_logger: logging.Logger
) -> None:
    from opentelemetry.trace import format_span_id, format_trace_id

    handler = StreamHandler("otel/k", trace_context=True, **plain(service))
    app_logger.addHandler(handler)
    app_logger.info("before")
    with tracer.start_as_current_span("work") as span:
        context = span.get_span_context()
        app_logger.info("inside", extra={"step": "build"})
        try:
            1 / 0
        except ZeroDivisionError:
            app_logger.exception("failed")
        other = threading.Thread(target=app_logger.info, args=("another thread",))  # not in the span
        other.start()
        other.join()
        app_logger.info("own ids win", extra={"trace_id": "mine"})
    app_logger.info("after")
    handler.close()
    ids = {"trace_id": format_trace_id(context.trace_id), "span_id": format_span_id(context.span_id)}
    assert len(ids["trace_id"]) == 32 and len(ids["span_id"]) == 16
    rows = {
        row["out"].split('msg="')[1].split('"')[0]: row
        for row in stored(service, "otel/k")
        if "msg=" in row["out"]
    }
    assert rows["before"]["args"] is None and rows["after"]["args"] is None
    assert rows["another thread"]["args"] is None
    assert rows["inside"]["args"] == {"step": "build", **ids}
    assert rows["inside"]["out"].endswith(
        f'msg="inside" step=build trace_id={ids["trace_id"]} span_id={ids["span_id"]}\n'
    )
    assert rows["failed"]["args"] == ids and f"trace_id={ids['trace_id']}" in rows["failed"]["out"]
    assert rows["own ids win"]["args"] == {"trace_id": "mine", "span_id": ids["span_id"]}


def test_trace_context_with_another_formatter_puts_the_ids_in_args(
    service: FakeLogService, tracer: Any, app_logger: logging.Logger
) -> None:
    handler = StreamHandler("otel/formatter", trace_context=True, **plain(service))
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    app_logger.addHandler(handler)
    with tracer.start_as_current_span("work") as span:
        app_logger.warning("inside")
    handler.close()
    (row,) = stored(service, "otel/formatter")
    assert row["out"] == "WARNING inside\n"
    assert row["args"]["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_trace_context_comes_from_the_environment_and_an_explicit_value_wins(
    service: FakeLogService, tracer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LELOG_TRACE_CONTEXT", "true")
    on = StreamHandler("otel/env-on", **plain(service))
    off = StreamHandler("otel/env-off", trace_context=False, **plain(service))
    record = logging.LogRecord("x", logging.INFO, "f.py", 1, "inside", None, None)
    with tracer.start_as_current_span("work"):
        on.handle(record)
        off.handle(record)
    on.close()
    off.close()
    assert set(stored(service, "otel/env-on")[0]["args"]) == {"trace_id", "span_id"}
    assert stored(service, "otel/env-off")[0]["args"] is None


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("maybe", None, "LELOG_TRACE_CONTEXT must be true or false"),
        (None, "yes", "trace_context must be true or false, got 'yes'"),
    ],
)
def test_a_bad_trace_context_is_a_config_error(
    service: FakeLogService, monkeypatch: pytest.MonkeyPatch, env: Any, value: Any, message: str
) -> None:
    if env is not None:
        monkeypatch.setenv("LELOG_TRACE_CONTEXT", env)
    with pytest.raises(ConfigError, match=message):
        StreamHandler("k", trace_context=value, **plain(service))


def test_trace_context_without_opentelemetry_installed_is_refused_when_built(service: FakeLogService) -> None:
    result = run_python(
        f"""
        import sys
        sys.modules["opentelemetry"] = None  # as if it were not installed
        import lelog
        try:
            lelog.StreamHandler("k", url={service.url!r}, account_id="acct", token="t", trace_context=True)
        except lelog.ConfigError as exc:
            print(exc)
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "install opentelemetry-api" in result.stdout


def test_trace_context_off_imports_no_opentelemetry(service: FakeLogService) -> None:
    result = run_python(
        f"""
        import logging, sys, lelog
        handler = lelog.StreamHandler("otel/off", url={service.url!r}, account_id="acct", token="secret-token")
        logging.getLogger().addHandler(handler)
        logging.getLogger().warning("one", extra={{"step": "x"}})
        handler.close()
        print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
        """,
        timeout=60,
        env={"LELOG_TRACE_CONTEXT": "false"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert len(stored(service, "otel/off")) == 1


def test_the_integrations_module_imports_no_framework() -> None:
    result = run_python(
        """
        import sys, lelog, lelog.integrations
        print(sorted(n for n in ("loguru", "structlog", "opentelemetry") if n in sys.modules))
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert "lelog.integrations" in sys.modules
